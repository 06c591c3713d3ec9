#!/usr/bin/env bash
# One full pass on the GPU machine (run through the device tool from the repository root):
# builds with -j16 for sm_90, runs every test (GPU ones included), compute-sanitizer memcheck and
# racecheck on a reduced GPU matrix, the CUDA benchmark against PyTorch, and dumps the kernels'
# resource usage and SASS. Logs go to $OUT (or ./device-out): the tables as .md/.json, every other
# log packed into logs.tar.gz (the device tool brings back a few files only).
# STEPS picks parts (default all): tests sanitizer sass cli python tp bench backward (PYTESTS: the python
# step's pytest paths; PY_TP_BENCH=0 skips its bench_tp_torch run), e.g. STEPS="tests tp";
# also (not in the default): gputests (the GPU test binaries alone), ncu (Nsight Compute counters of
# every table dtype's lookup and the Triton peer's, bench/profile_lookup.py). TARGETS limits the
# build to those targets (with STEPS that need no others); CTEST_LABELS limits the tests step to
# those CTest labels (a regex, e.g. "gpu|agreement").
# With 2 or more GPUs, ctest also runs the NCCL tests of one GPU per rank, the thread-per-GPU and the
# dead-rank tests, and `tp` adds bench-tp over NCCL and the PyTorch comparison on every GPU.
set -uo pipefail
steps=" ${STEPS:-tests sanitizer sass cli python tp bench backward} "
want() { [[ $steps == *" $1 "* ]]; }
out=${OUT:-$PWD/device-out}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
step() { echo; echo "=== $* ($(date -u +%T))"; }
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
(( $(nvidia-smi -L | wc -l) > 1 )) && nvidia-smi topo -m
nvcc --version | tail -1; cmake --version | head -1; which mpirun python3
# What the GPU machine lacks travels in .device/ (git-ignored, carried): GoogleTest's sources, and
# header-only nlohmann-json and CLI11 with their CMake configs under .device/prefix.
gtest=()
[[ -d .device/googletest ]] && gtest=(-DTPEMBED_GTEST_SOURCE=$PWD/.device/googletest)
[[ -d .device/prefix ]] && gtest+=(-DCMAKE_PREFIX_PATH=$PWD/.device/prefix)
step "build"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${gtest[@]}" >"$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
targets=()
for target in ${TARGETS:-}; do targets+=(--target "$target"); done
cmake --build build-gpu -j16 "${targets[@]}" >"$out/build.log" 2>&1 || { grep -E "error" -A5 "$out/build.log" | head -60; exit 1; }
if want gputests; then
step "GPU tests"
for t in cuda/test_codes_cuda cuda/test_embedding_cuda cuda/test_lookup_params_cuda cuda/test_lookup_split_cuda cuda/test_large_table_cuda \
         gradient/test_gradient_cuda; do
  [[ -x build-gpu/tests/$t ]] || continue
  t=${t#*/}; build-gpu/tests/*/$t >"$out/$t.log" 2>&1
  echo "$t: exit $? ($(grep -E '^\[  PASSED|^\[  FAILED' "$out/$t.log" | tr '\n' ' '))"
  grep -E "^\[  FAILED|Failure|mismatch|Expected" -A3 "$out/$t.log" | head -30
done
for np in 2 3; do
  [[ -x build-gpu/tests/gradient/test_gradient_mpi_gpu ]] || break
  timeout 300 mpirun -np $np build-gpu/tests/gradient/test_gradient_mpi_gpu >"$out/test_gradient_mpi_gpu_np$np.log" 2>&1
  echo "test_gradient_mpi_gpu np $np: exit $? ($(grep -E '^\[  PASSED|^\[  FAILED' "$out/test_gradient_mpi_gpu_np$np.log" | head -1))"
done
fi
if want tests; then
step "tests (all, GPU included)"
labels=(); [[ -n ${CTEST_LABELS:-} ]] && labels=(-L "$CTEST_LABELS")
(cd build-gpu && ctest --output-on-failure -j4 --timeout ${CTEST_TIMEOUT:-300} "${labels[@]}") >"$out/ctest.log" 2>&1
grep -E "tests passed|tests failed|Failed|Skipped|\*\*\*|Failure|first difference" "$out/ctest.log" | tail -25
fi
if want sanitizer; then
step "compute-sanitizer"
filter='Dtypes/EmbeddingCuda.*i64_to_bf16*:IdShapes/*:Widths/*:EmbeddingCudaOp.*:EmbeddingCudaGraph.*'
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/tests/cuda/test_embedding_cuda \
    --gtest_filter="$filter" >"$out/sanitizer_$tool.log" 2>&1
  echo "$tool: exit $? ($(grep -cE '^\[       OK' "$out/sanitizer_$tool.log") tests OK; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tail -1))"
  compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/tests/cuda/test_lookup_params_cuda \
    >"$out/sanitizer_shards_$tool.log" 2>&1
  echo "$tool, shard lookups: exit $? ($(grep -cE '^\[       OK' "$out/sanitizer_shards_$tool.log") tests OK)"
done
# The backward: sort, tiles, fix-up, zero rows; hot rows across many tiles, padding, graphs.
gfilter='Matrix/GradientCuda.*skewed*:Matrix/GradientCuda.*one_row*:Matrix/GradientCuda.*padding*:GradientCudaGraph.*:GradientCudaLayer.*'
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/tests/gradient/test_gradient_cuda \
    --gtest_filter="$gfilter" >"$out/sanitizer_gradient_$tool.log" 2>&1
  echo "$tool, backward: exit $? ($(grep -cE '^\[       OK' "$out/sanitizer_gradient_$tool.log") tests OK; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_gradient_$tool.log" | tail -1))"
done
# peer_rows across processes (CUDA IPC): 2 ranks on the GPU, each under memcheck.
mpirun -np 2 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/tests/cuda/test_tp_mpi_gpu \
  --gtest_filter='*peer_rows*:TensorParallelPeerRows.*' >"$out/sanitizer_peer_rows.log" 2>&1
echo "memcheck, peer_rows over 2 ranks: exit $? ($(grep -c 'OK \]' "$out/sanitizer_peer_rows.log") tests OK on rank 0; $(grep -E 'ERROR SUMMARY' "$out/sanitizer_peer_rows.log" | sort | uniq -c | tr '\n' ' '))"
fi
if want sass; then
step "kernel resources and SASS"
obj=build-gpu/CMakeFiles/tpembed.dir/src/cuda
for f in lookup_float_tables lookup_quantized_tables; do
  cuobjdump -res-usage $obj/$f.cu.o >>"$out/res_usage.txt" 2>&1
  cuobjdump -sass $obj/$f.cu.o >>"$out/sass.txt" 2>&1
done
echo "global loads/stores by width (all kernels):"; grep -oE "(LDG|STG|LD|ST)\.E[.A-Z0-9]*" "$out/sass.txt" | sort | uniq -c
echo "registers per kernel (count of kernels):"; grep -oE "REG:[0-9]+" "$out/res_usage.txt" | sort | uniq -c
echo "kernels with stack or local memory:"; grep -cE "STACK:[1-9]|LOCAL:[1-9]" "$out/res_usage.txt"
gzip -f "$out/sass.txt"
fi
rm -f "$out/configure.log"
if want cli; then
step "tpembed command on the GPU"
(cd build-gpu && mpirun -np 2 tools/tpembed verify --device cuda --vocab 4099 --hidden 512 --tokens 3000) 2>&1 | tail -22
build-gpu/tools/tpembed bench --device cuda --hidden 4096 --tokens 1,128,8192 --dtype bf16,i8 2>&1 | tail -12
fi
step "python module (PyTorch on CUDA)"
if want python && [[ -d .device/wheels ]]; then
  mkdir -p /tmp/pylibs && for w in .device/wheels/*.whl; do python3 -m zipfile -e "$w" /tmp/pylibs; done
  export PYTHONPATH=/tmp/pylibs
  cmake -S . -B build-gpu-py -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DTPEMBED_PYTHON=ON \
    -DTPEMBED_BUILD_TESTS=OFF -DTPEMBED_BUILD_BENCH=OFF -DTPEMBED_BUILD_TOOLS=OFF \
    -DPython_EXECUTABLE="$(command -v python3)" -DCMAKE_PREFIX_PATH="$PWD/.device/prefix;/tmp/pylibs" >"$out/py_configure.log" 2>&1 \
    && cmake --build build-gpu-py --target _tpembed -j16 >"$out/py_build.log" 2>&1 \
    || { echo "python module build failed:"; tail -n 20 "$out/py_configure.log" "$out/py_build.log"; }
  PYTHONPATH=build-gpu-py/python:/tmp/pylibs python3 -m pytest ${PYTESTS:-python/tests} -q --color=no -rfEs \
    >"$out/pytest.log" 2>&1
  echo "pytest: exit $?"; grep -E "^(FAILED|ERROR) " "$out/pytest.log" | head -20; tail -n 1 "$out/pytest.log"
  grep -E "^_{5,} .* _{5,}$" -A60 "$out/pytest.log" | grep -E "^E |Error|^_{5,}" | head -40
  # mpi4py travels as its source (it must be built against this machine's MPI).
  for sdist in .device/sdists/mpi4py-*.tar.gz; do
    [[ -f $sdist ]] && python3 -m pip install --quiet --no-index --no-build-isolation --no-deps --target /tmp/pylibs \
      "$sdist" >"$out/mpi4py_build.log" 2>&1 || echo "mpi4py did not build: $(tail -3 "$out/mpi4py_build.log")"
  done
  PYTHONPATH=build-gpu-py/python:/tmp/pylibs:python/tests timeout 600 mpirun -np 2 \
    python3 -m pytest python/tests/test_parallel_mpi.py -q --color=no -rs -p no:cacheprovider 2>&1 | tail -8
  [[ ${PY_TP_BENCH:-1} == 1 ]] && step "tensor-parallel lookup against PyTorch's seed op (2 ranks; one GPU each where there are 2)" && \
  PYTHONPATH=build-gpu-py/python:/tmp/pylibs timeout 600 mpirun -np 2 python3 bench/bench_tp_torch.py \
    --tokens ${TP_TOKENS:-1,16,64,128,1024,8192,32768} 2>&1 | tee "$out/bench_tp_torch_np2.md" | tail -30
fi
gpus=$(nvidia-smi -L | wc -l)
if want tp && (( gpus == 1 )); then
step "tensor-parallel benchmark on one GPU (MPI ranks share it; tp 1 over NCCL)"
(cd build-gpu && mpirun -np 2 tools/tpembed bench-tp --device cuda --comm mpi --hidden 8192 \
  --tokens ${TP_TOKENS:-1,16,128,1024,8192,32768}) 2>&1 | tee "$out/bench_tp_np2.md" | tail -24
(cd build-gpu && mpirun -np 4 tools/tpembed bench-tp --device cuda --comm mpi --hidden 8192 \
  --tokens ${TP_TOKENS:-1,16,128,1024,8192,32768}) 2>&1 | tee "$out/bench_tp_np4.md" | tail -24
for np in 2 4; do  # the sequence-parallel layout (issue 15): each rank ends with its chunk of tokens
  (cd build-gpu && mpirun -np $np tools/tpembed bench-tp --device cuda --comm mpi --hidden 8192 --output-layout scattered \
    --tokens ${TP_TOKENS:-1,16,128,1024,8192,32768}) 2>&1 | tee "$out/bench_tp_scattered_np$np.md" | tail -24
done
(cd build-gpu && tools/tpembed bench-tp --device cuda --comm nccl --hidden 8192 --tokens 1,128,8192) 2>&1 \
  | tee "$out/bench_tp_nccl1.md" | tail -8
fi
if want tp && (( gpus >= 2 )); then
step "tensor-parallel benchmark over NCCL, one process per GPU ($gpus GPUs)"
for np in 2 4 8; do
  (( np > gpus )) && break
  (cd build-gpu && mpirun -np $np tools/tpembed bench-tp --device cuda --comm nccl --hidden 8192 \
    --tokens ${TP_TOKENS:-1,16,64,128,1024,8192,32768}) 2>&1 | tee "$out/bench_tp_nccl$np.md" | tail -32
done
if want python && (( gpus > 2 )); then  # (2 GPUs: the python step already ran it on both)
  PYTHONPATH=build-gpu-py/python:/tmp/pylibs timeout 900 mpirun -np $gpus python3 bench/bench_tp_torch.py \
    --tokens ${TP_TOKENS:-1,16,64,128,1024,8192,32768} 2>&1 | tee "$out/bench_tp_torch_np$gpus.md" | tail -32
fi
fi
if want ncu; then
step "Nsight Compute: every table dtype -> bf16, H 8192, 32768 tokens (tpembed, then the Triton peer)"
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_issued.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active
ncu --clock-control none --nvtx --nvtx-include "profile/" --metrics $metrics --csv \
  python3 bench/profile_lookup.py --lib build-gpu/bench/libtpembed_bench_capi.so ${NCU_ARGS:-} >"$out/ncu.csv" 2>"$out/ncu.err"
python3 bench/ncu_table.py "$out/ncu.csv" | tee "$out/ncu.md"
fi
if want bench; then
step "benchmark"
python3 bench/bench_cuda_lookup.py --lib build-gpu/bench/libtpembed_bench_capi.so --json "$out/bench_cuda.json" \
  ${BENCH_ARGS:-} 2>&1 | tee "$out/bench_cuda.md"
fi
if want backward; then
step "the gradient against PyTorch's embedding backward (through the python step's module)"
if [[ -d build-gpu-py/python/tpembed ]]; then
  PYTHONPATH=build-gpu-py/python:/tmp/pylibs python3 bench/bench_backward.py --json "$out/bench_backward.json" \
    ${BACKWARD_ARGS:-} 2>&1 | tee "$out/bench_backward.md"
else
  echo "bench_backward.py skipped: no build-gpu-py/python (the python step builds the module)"
fi
fi
(cd "$out" && find . -maxdepth 1 -type f ! -name '*.md' ! -name '*.json' ! -name logs.tar.gz -printf '%P\n' \
  | tar czf logs.tar.gz -T - --remove-files 2>/dev/null)
step "done"
