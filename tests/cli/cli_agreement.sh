#!/usr/bin/env bash
# Every rank agrees or fails together: bad input on one rank of mpirun (or on all) stops every rank
# before the first collective, with the failing rank's message, within a time limit (a hang fails).
# $1: the tpembed binary; $2: the mpirun command; $3: make_checkpoints.py.
set -euo pipefail
tpembed=$1
mpirun=$2
make_checkpoints=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/lib.sh"

# Checkpoints: a bf16 table of 10 rows and one of 20 (4 columns), hand-made ones, a corrupt copy.
"$tpembed" demo --vocab 10 --hidden 4 --tokens 8 --keep "$work/ten" >/dev/null
"$tpembed" demo --vocab 20 --hidden 4 --tokens 8 --keep "$work/twenty" >/dev/null
python3 "$make_checkpoints" "$work/made"
ten=$work/ten/model.safetensors
head -c 100 "$ten" >"$work/corrupt.safetensors"
lookup="$tpembed lookup"

# An empty column range on the last ranks (4 columns, 6 ranks, equal shards): refused on every rank.
check_every_rank "np 6: equal hidden shards of 4 columns" 6 "has 4 columns, which do not divide by tp_size 6: equal hidden shards need a column count that does; use --placement packed" -- \
  -np 6 $lookup --table "$ten" --ids 1,2 --sharding-dim 1 --placement equal
check_every_rank "np 3: equal hidden shards of 4 columns" 3 "error (shape_mismatch)" -- \
  -np 3 $lookup --table "$ten" --ids 1,2 --sharding-dim 1 --placement equal
# A rank that cannot parse its ids, open its table, find its tensor or its scales.
check_every_rank "np 2: one rank's ids do not parse" 2 "rank 1: --ids: 'x' (item 2" -- \
  -np 1 $lookup --table "$ten" --ids 1,2 : -np 1 $lookup --table "$ten" --ids 1,x
check_every_rank "np 3: one rank's checkpoint is corrupt" 3 "rank 2: $work/corrupt.safetensors" -- \
  -np 2 $lookup --table "$ten" --ids 1 : -np 1 $lookup --table "$work/corrupt.safetensors" --ids 1
check_every_rank "np 2: one rank's table has no scales" 2 "rank 1: $work/made/no_scale.safetensors" -- \
  -np 1 $lookup --table "$work/made/with_scale.safetensors" --ids 1 --out-dtype f32 : \
  -np 1 $lookup --table "$work/made/no_scale.safetensors" --ids 1 --out-dtype f32
check_every_rank "np 2: a tensor no rank has" 2 "no tensor named 'nope'" -- \
  -np 2 $lookup --table "$ten" --ids 1 --tensor nope
check_every_rank "np 2: a 0-d scale tensor" 2 "scale tensor 'model.embed_tokens.weight_scale' has shape [] (0-d)" -- \
  -np 2 $lookup --table "$work/made/scale_0d.safetensors" --ids 1 --out-dtype f32
# Options that ranks must share, given differently (MPMD).
check_every_rank "np 2: --strict on one rank only" 2 "rank 0: lookup --strict=true; rank 1: lookup" -- \
  -np 1 $lookup --table "$ten" --ids 1 --strict : -np 1 $lookup --table "$ten" --ids 1
check_every_rank "np 3: --tp on some ranks only" 3 "ranks 0,1: lookup --tp=3; rank 2: lookup" -- \
  -np 2 $lookup --table "$ten" --ids 1 --tp 3 : -np 1 $lookup --table "$ten" --ids 1
check_every_rank "np 2: different subcommands" 2 "the ranks were started with different options" -- \
  -np 1 $lookup --table "$ten" --ids 1 : -np 1 "$tpembed" verify --vocab 10
# Different ids of the same count, different checkpoints: refused, never summed into wrong rows.
check_every_rank "np 2: different ids of the same count" 2 "disagree on the ids: rank 0: 2 ids: 1, 2; rank 1: 2 ids: 1, 3" -- \
  -np 1 $lookup --table "$ten" --ids 1,2 : -np 1 $lookup --table "$ten" --ids 1,3
echo 2 1 >"$work/ids.txt"
check_every_rank "np 2: ids from a file differ from --ids" 2 "disagree on the ids" -- \
  -np 1 $lookup --table "$ten" --ids 1,2 : -np 1 $lookup --table "$ten" --ids-file "$work/ids.txt"
check_every_rank "np 2: ranks opened different checkpoints" 2 "disagree on the table: rank 0: 'model.embed_tokens.weight' bf16 [10, 4]" -- \
  -np 1 $lookup --table "$ten" --ids 1 : -np 1 $lookup --table "$work/twenty" --ids 1
# A copy of the same checkpoint under another path is the same table.
cp "$ten" "$work/copy.safetensors"
check "np 2: a copy of the checkpoint on one rank" 0 "looked up 2 ids" -- \
  $mpirun -np 1 $lookup --table "$ten" --ids 1,2 : -np 1 $lookup --table "$work/copy.safetensors" --ids 1,2
# Parse errors (before MPI is set up): on one rank, and on all.
check_every_rank "np 2: a CLI11 range error on one rank" 2 "rank 1: error: --tp: 'x' is not an integer from 0 to" -- \
  -np 1 $lookup --table "$ten" --ids 1 : -np 1 $lookup --table "$ten" --ids 1 --tp x
check_every_rank "np 3: a missing file on one rank" 3 "rank 2: error: --table: Path does not exist" -- \
  -np 2 $lookup --table "$ten" --ids 1 : -np 1 $lookup --table "$work/absent" --ids 1
check_every_rank "np 2: an unknown option on every rank" 2 "ranks 0,1: error: The following argument was not expected: --nonsense" -- \
  -np 2 $lookup --table "$ten" --ids 1 --nonsense
check_every_rank "np 2: --help on one rank only" 2 "rank 1: --help" -- \
  -np 1 $lookup --table "$ten" --ids 1 : -np 1 $lookup --help
check "np 2: --help on every rank" 0 "Example:" -- $mpirun -np 2 $lookup --help
[[ $(timeout 60 $mpirun -np 2 $lookup --help | grep -c "Example:") == 1 ]] && pass "--help is printed once" \
  || fail "--help is printed more than once"
# --out may differ per rank: rank 0's is written; the writer's failure is every rank's.
check "np 2: --out on rank 0 only" 0 "wrote tensor 'embeddings'" -- \
  $mpirun -np 1 $lookup --table "$ten" --ids 1,2 --out "$work/out0.safetensors" : -np 1 $lookup --table "$ten" --ids 1,2
check "np 2: --out on rank 1 only" 0 "looked up 2 ids" -- \
  $mpirun -np 1 $lookup --table "$ten" --ids 1,2 : -np 1 $lookup --table "$ten" --ids 1,2 --out "$work/out1.safetensors"
[[ -f $work/out0.safetensors && ! -e $work/out1.safetensors ]] && pass "only rank 0's --out is written" \
  || fail "--out files: $(ls "$work")"
check_every_rank "np 2: --out into a missing directory" 2 "directory '$work/missing' does not exist" -- \
  -np 2 $lookup --table "$ten" --ids 1 --out "$work/missing/out.safetensors"
check_every_rank "np 2: demo --keep under a missing directory" 2 "its parent directory does not exist" -- \
  -np 2 "$tpembed" demo --vocab 10 --hidden 4 --keep "$work/missing/a/b"
[[ ! -e $work/missing ]] && pass "demo --keep created nothing" || fail "demo --keep created $work/missing"
# verify: the CUDA paths only where every rank has a GPU, and it says what it skipped. Where every
# rank sees a GPU (and the build has CUDA) the CUDA rows run; then one rank hidden from its GPU
# must make verify skip them, saying so.
verify=("$tpembed" verify --vocab 31 --hidden 8 --tokens 10 --dtypes bf16)
# (the output is read whole: grep -q would close the pipe under a still-writing mpirun)
verify_out=$(timeout 120 $mpirun -np 2 "${verify[@]}" 2>&1 || true)
if grep -q "^cuda " <<<"$verify_out"; then
  check "np 2: verify skips the CUDA paths when one rank has no GPU" 0 "skipped: the CUDA paths" -- \
    $mpirun -np 1 "${verify[@]}" : -np 1 env CUDA_VISIBLE_DEVICES= "${verify[@]}"
else
  check "np 2: verify says what it skipped" 0 "skipped: the CUDA paths" -- $mpirun -np 2 "${verify[@]}"
fi

finish
