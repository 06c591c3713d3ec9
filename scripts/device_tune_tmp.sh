set -uo pipefail
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DTPEMBED_GTEST_SOURCE=$PWD/.device/googletest >/dev/null 2>&1
cmake --build build-gpu -j16 >$OUT/build.log 2>&1 || { grep error -A5 $OUT/build.log | head -40; exit 1; }
for b in 128 256 512; do TPEMBED_X_BLOCK=$b build-gpu/tests/cuda/test_embedding_cuda 2>&1 | tail -1; done
for b in 256 128 512 256; do echo "## BLOCK=$b"
TPEMBED_X_BLOCK=$b python3 bench/bench_cuda_lookup.py --lib build-gpu/bench/libtpembed_bench_capi.so --cases bf16,i8,i4 --tokens 16,1024,8192,32768 --repeats 40 2>&1 | grep -E "^\|" | grep -v -- "---" | awk -F'|' '{printf "%s|%s|%s|%s|%s|%s\n",$2,$3,$4,$7,$10,$13}'
done
