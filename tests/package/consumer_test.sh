#!/usr/bin/env bash
# tpembed as a C++ dependency (README "Use it from C++"): examples/lookup, a program that looks ids
# up with the public API and checks them against hand-computed values (on 1 rank, then on 2 mpirun
# ranks, vocab- and hidden-parallel), built the ways a project takes tpembed:
#   1. static package: the library installed into a temporary prefix, the example configured with
#      find_package(tpembed CONFIG) against it, built and run;
#   2. add_subdirectory of the source tree, as a shared library (-DBUILD_SHARED_LIBS=ON), built and run;
#      that build is then installed (the example has no install rules: what lands in the prefix is
#      tpembed's package alone) and
#   3. shared package: the example against that prefix with find_package, built and run; the
#      shared library must export tpembed's public API and none of its internals (nm -D);
#   4. the package refuses what it cannot give: a version of another major, a missing component.
#
#   tests/package/consumer_test.sh             builds the static library alone (no tests, tools or
#                                               benchmarks) for step 1
#   tests/package/consumer_test.sh BUILD_DIR    installs BUILD_DIR's static library for step 1
#                                               instead (scripts/test.sh passes build/: nothing is
#                                               compiled again, and that build's engines, CUDA and
#                                               NCCL included where it has them, are what the
#                                               installed package must find again)
# The CUDA backend is left out of the builds made here when no GPU is visible (CUDA compiles are
# slow, and nothing could run them). Measured on the 2-core CI machine: with BUILD_DIR 77 s, nearly
# all of it compiling the shared library once (scripts/test.sh runs it beside ctest, where it adds
# about 30 s); without, 2m53s (the static library is compiled too).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
reuse_build=${1:-}
work=$(mktemp -d /tmp/pkg-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=$(( $(nproc) < 2 ? $(nproc) : 2 ))
mpi_flags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
library_flags=(-DCMAKE_BUILD_TYPE=Release -DTPEMBED_BUILD_TESTS=OFF -DTPEMBED_BUILD_TOOLS=OFF
               -DTPEMBED_BUILD_BENCH=OFF)
if ! grep -q '^GPU' <<<"$(nvidia-smi -L 2>/dev/null)"; then
  library_flags+=(-DTPEMBED_CUDA=OFF)
fi
started=$SECONDS
step() { echo "=== consumer test: $* (at $((SECONDS - started)) s)"; }
quiet() {  # runs a command, showing its output only when it fails
  local log=$work/step.log
  "$@" >"$log" 2>&1 || { cat "$log"; echo "consumer test: failed: $*"; return 1; }
}

# run_example BUILD: the example on one rank, then on two mpirun ranks (where tpembed has MPI).
run_example() {
  "$1/lookup_example"
  if grep -q '^-- tpembed: MPI ON' "$1/configure.log"; then
    mpirun -np 2 "${mpi_flags[@]}" "$1/lookup_example" --mpi
  fi
}

# example_against PREFIX BUILD: the example configured with find_package against PREFIX.
example_against() {
  cmake -S "$root/examples/lookup" -B "$2" -DCMAKE_PREFIX_PATH="$1" >"$2.configure.log" 2>&1 \
    || { cat "$2.configure.log"; return 1; }
  mv "$2.configure.log" "$2/configure.log"
  grep -E '^-- tpembed( .* from|: MPI)' "$2/configure.log"
  quiet cmake --build "$2" -j"$jobs"
  run_example "$2"
}

step "1. static package"
if [[ -n $reuse_build ]]; then
  quiet cmake --install "$reuse_build" --prefix "$work/static"
else
  quiet cmake -S "$root" -B "$work/build-static" "${library_flags[@]}"
  quiet cmake --build "$work/build-static" -j"$jobs"
  quiet cmake --install "$work/build-static" --prefix "$work/static"
fi
example_against "$work/static" "$work/example-static"

step "2. add_subdirectory of the source tree, shared library"
quiet cmake -S "$root/examples/lookup" -B "$work/example-tree" -DTPEMBED_SOURCE_DIR="$root" \
  -DBUILD_SHARED_LIBS=ON "${library_flags[@]}"
cp "$work/step.log" "$work/example-tree/configure.log"
grep -E '^-- tpembed: MPI .*, shared' "$work/example-tree/configure.log"
quiet cmake --build "$work/example-tree" -j"$jobs"
run_example "$work/example-tree"
quiet cmake --install "$work/example-tree" --prefix "$work/shared"

step "3. shared package"
library=$(ls "$work"/shared/lib*/libtpembed.so)
example_against "$work/shared" "$work/example-shared"
# (ldd's output is read whole first: `ldd | grep -q` under pipefail fails whenever grep exits at its
# match before ldd has finished writing.)
linked=$(ldd "$work/example-shared/lookup_example")
grep -q "$work/shared/.*libtpembed.so" <<<"$linked" \
  || { echo "the example does not load the installed libtpembed.so:"; echo "$linked"; exit 1; }
# Exported: the public API (tpembed::embedding, ParallelEmbedding, the error types' typeinfo, ...).
# Hidden: the namespaces declared in src/ only, and the private dependencies' code (nlohmann).
exported=$(nm -D --defined-only -C "$library")
for symbol in 'tpembed::embedding(' 'tpembed::ParallelEmbedding::forward(' 'tpembed::make_mpi_communicator(' \
              'typeinfo for tpembed::OutOfRangeError' 'tpembed::SafetensorsCheckpoint::'; do
  grep -qF "$symbol" <<<"$exported" || { echo "libtpembed.so does not export $symbol"; exit 1; }
done
internals=$(grep -E 'tpembed::(op|cuda_runtime|cuda_kernels|fingerprint|cpu|io)::|nlohmann' <<<"$exported" || true)
if [[ -n $internals ]]; then
  echo "libtpembed.so exports internals:"; head -20 <<<"$internals"; exit 1
fi
echo "libtpembed.so exports $(wc -l <<<"$exported") symbols, none of them internal"

step "4. what the package refuses"
# refused PREFIX REASON ARGUMENTS...: configuring the example against PREFIX with ARGUMENTS must
# fail, saying REASON (a regular expression).
refused() {
  if cmake -S "$root/examples/lookup" -B "$work/refused" -DCMAKE_PREFIX_PATH="$1" "${@:3}" >"$work/refused.log" 2>&1; then
    echo "find_package(tpembed) accepted ${*:3}"; exit 1
  fi
  grep -m1 -E "$2" "$work/refused.log" | sed 's/^ */  refused as expected: /' \
    || { cat "$work/refused.log"; echo "find_package(tpembed) refused ${*:3}, but not saying '$2'"; exit 1; }
  rm -rf "$work/refused"
}
refused "$work/shared" 'requested version "1.0"' -DTPEMBED_EXAMPLE_VERSION=1.0
# A component the shared package lacks (the first engine that is OFF), else one that does not exist.
features=$(grep -m1 '^-- tpembed: MPI' "$work/example-shared/configure.log")
missing=Fortran
[[ $features =~ (MPI|CUDA|NCCL)\ OFF ]] && missing=${BASH_REMATCH[1]}
refused "$work/shared" "lacks the required component\\(s\\) $missing" -DTPEMBED_EXAMPLE_COMPONENTS="$missing"

step "passed"
