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
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTPEMBED_SANITIZE=ON -DTPEMBED_CUDA=OFF)
  # OpenMPI's own allocations are not ours to chase; errors and UB still fail the run.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cmake -S "$root" -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)"
# The Python module (README "Use it from Python"): built by pip, tested on NumPy and over 2 MPI ranks;
# test_agreement_mpi.py (in the first run) launches its own mpirun jobs of 2-4 ranks that disagree.
if [[ ${1:-} != --sanitize ]]; then
  cd "$root"
  python3 -m pip install --quiet --root-user-action=ignore --no-build-isolation --no-deps .
  python3 -m pytest python/tests -q --color=no
  timeout 600 mpirun -np 2 --oversubscribe --allow-run-as-root \
    python3 -m pytest python/tests/test_parallel_mpi.py -q --color=no
fi
