#!/usr/bin/env bash
# Builds tpembed with its tests and runs them all (CPU, MPI with 1-4 ranks; GPU tests run where a
# GPU is present and skip, saying so, where none is).
#   scripts/test.sh             Release build in build/
#   scripts/test.sh --sanitize  AddressSanitizer + UndefinedBehaviorSanitizer build in build-sanitize/
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/deps.sh"
build=${TPEMBED_BUILD_DIR:-$root/build}
flags=(-DCMAKE_BUILD_TYPE=Release)
if [[ ${1:-} == --sanitize ]]; then
  build=${TPEMBED_BUILD_DIR:-$root/build-sanitize}
  # CUDA off here: the sanitizers watch host code, and this also builds the no-CUDA variant.
  # -O1 -g1 (line tables): what the sanitizers' reports need, and quicker to compile than -O2 -g.
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DTPEMBED_SANITIZE=ON
         -DTPEMBED_CUDA=OFF)
  # OpenMPI's own allocations are not ours to chase; errors and UB still fail the run.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
# PyTorch's download (about 5 GB on a fresh machine, mostly waiting on the network and the disk)
# goes on beside the build; the Python tests wait for it.
torch_install=
if [[ ${1:-} != --sanitize ]]; then
  torch_log=$(mktemp)
  tpembed_torch_install >"$torch_log" 2>&1 &
  torch_install=$!
fi
cmake -S "$root" -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
gpu_visible() { grep -q '^GPU' <<<"$(nvidia-smi -L 2>/dev/null)"; }  # (not a pipe: under pipefail a grep -q that exits at its match can fail it)
# tpembed as a C++ dependency (README "Use it from C++"): examples/lookup against this build's
# installed static package, through add_subdirectory as a shared library, and against that shared
# package, on 1 and 2 MPI ranks. Alone it takes about 80 s on the 2-core CI machine (one library
# compile); it runs niced beside ctest, which mostly waits on MPI ranks (about 1/4 of the CPU busy),
# so it adds about 30 s to the run.
consumer_test=
if [[ ${1:-} != --sanitize ]]; then
  consumer_log=$build/consumer_test.log
  nice -n 19 "$root/tests/package/consumer_test.sh" "$build" >"$consumer_log" 2>&1 &
  consumer_test=$!
fi
ctest_status=0
ctest --output-on-failure -j"$(nproc)" || ctest_status=$?
if [[ -n $consumer_test ]]; then
  consumer_status=0
  wait "$consumer_test" || consumer_status=$?
  cat "$consumer_log"
  ((consumer_status == 0)) || { echo "tests/package/consumer_test.sh failed"; exit 1; }
fi
((ctest_status == 0)) || exit "$ctest_status"
# The Python module (README "Use it from Python"): built by pip, tested on NumPy and over 2 MPI ranks;
# test_agreement_mpi.py (in the first run) launches its own mpirun jobs of 2-4 ranks that disagree.
if [[ ${1:-} != --sanitize ]]; then
  cd "$root"
  # pip builds the library again for the module (in build-python/); with no GPU visible it leaves the
  # CUDA backend out, whose tests would only skip: on the 2-core CI machine that build takes 1m43s
  # instead of 3m02s (the CUDA kernels are not compiled a second time).
  pip_flags=()
  gpu_visible || pip_flags+=(-C cmake.define.TPEMBED_CUDA=OFF)
  python3 -m pip install --quiet --root-user-action=ignore --no-build-isolation --no-deps "${pip_flags[@]}" .
  torch_status=0
  wait "$torch_install" || torch_status=$?
  cat "$torch_log"
  ((torch_status == 0)) || { echo "installing torch and transformers (scripts/deps.sh) failed"; exit 1; }
  python3 -m pytest python/tests -q --color=no
  timeout 600 mpirun -np 2 --oversubscribe --allow-run-as-root \
    python3 -m pytest python/tests/test_parallel_mpi.py -q --color=no
fi
