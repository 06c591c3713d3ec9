#!/usr/bin/env bash
# The main job on the embedded default: builds tpembed and runs `tpembed demo` over 4 MPI ranks
# (a generated table, quantised, sharded by vocab and by hidden, checked against the unsharded
# lookup). Extra arguments go to the demo, e.g. scripts/run.sh --vocab 32000 --hidden 1024.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/deps.sh"
build=${TPEMBED_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target tpembed_cli
ranks=${TPEMBED_RANKS:-4}
mpi_flags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
exec mpirun -np "$ranks" "${mpi_flags[@]}" "$build/tools/tpembed" demo "$@"
