#!/usr/bin/env bash
# The README's shell example of "The `tpembed` command" runs as written: extracted from README.md
# (so the two cannot drift apart), with build/tools/tpembed and mpirun standing for this build's
# binary and mpirun, in a directory holding the model.safetensors that `tpembed demo` writes.
# $1: the tpembed binary; $2: the mpirun command; $3: README.md.
set -euo pipefail
tpembed=$(realpath "$1")
mpirun=$2
readme=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/lib.sh"

# The first ```sh block after the section's heading.
example=$(awk '/^## The `tpembed` command/ {section = 1} section && /^```sh$/ {inside = 1; next}
               inside && /^```$/ {exit} inside {print}' "$readme")
[[ -n $example ]] || { echo "FAIL: README.md's 'The tpembed command' has no sh block"; exit 1; }
example=${example//build\/tools\/tpembed/$tpembed}
example=${example//mpirun /$mpirun }
echo "$example"

"$tpembed" demo --vocab 50 --hidden 12 --tokens 8 --keep "$work" >/dev/null
cd "$work"
check "the README's quantize and lookup" 0 "looked up 3 ids in embed_i4.safetensors 'model.embed_tokens.weight' (i4 [50, 12], scales 'model.embed_tokens.weight_scale') on cpu, tp 2, sharding dim 1" -- \
  bash -euo pipefail -c "$example"
finish
