set -uo pipefail
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DTPEMBED_GTEST_SOURCE=$PWD/.device/googletest >/dev/null 2>&1
cmake --build build-gpu -j16 >$OUT/build.log 2>&1 || { grep error -A5 $OUT/build.log | head -40; exit 1; }
for w in 1 0; do TPEMBED_X_WIDE=$w build-gpu/tests/cuda/test_embedding_cuda 2>&1 | tail -1; done
compute-sanitizer --tool memcheck build-gpu/tests/cuda/test_embedding_cuda --gtest_filter='Widths/*' 2>&1 | tail -2
compute-sanitizer --tool racecheck build-gpu/tests/cuda/test_embedding_cuda --gtest_filter='Widths/*' 2>&1 | tail -1
for v in "1 0" "0 0" "1 4" "1 8"; do set -- $v; echo "## WIDE=$1 GRID_CAP=$2"
TPEMBED_X_WIDE=$1 TPEMBED_X_GRID_CAP=$2 python3 bench/bench_cuda_lookup.py --lib build-gpu/bench/libtpembed_bench_capi.so --cases bf16,i8,fp8_e4m3,i4 --tokens 16,128,8192,32768 --repeats 30 2>&1 | grep -E "^\|" | grep -v -- "---" | awk -F'|' '{printf "%s|%s|%s|%s|%s|%s\n",$2,$3,$4,$7,$10,$13}'
done
