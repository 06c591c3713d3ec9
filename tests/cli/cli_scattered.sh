#!/usr/bin/env bash
# Sequence-parallel layouts through the tpembed command: `lookup --output-layout scattered` over
# mpirun np 2, 3 and 4 (token counts that do not divide, fewer ids than ranks, no ids, both sharding
# dims and vocab exchanges, --scatter-dim 1 of shaped ids, scattered input, tp groups): each rank's
# file equals its chunk of the unsharded lookup (compare_chunks.py: numpy.array_split, bit for bit);
# every bad value is refused, on every rank; ranks given different layouts all stop; bench-tp's
# scattered rows run and match.
# $1: the tpembed binary; $2: the mpirun command.
set -euo pipefail
tpembed=$1
mpirun=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$here/lib.sh"

"$tpembed" demo --vocab 31 --hidden 6 --tokens 8 --keep "$work/ckpt" >/dev/null
table=$work/ckpt/model.safetensors
lookup="$tpembed lookup --table $table"

# scattered NAME NP DIM "LOOKUP OPTIONS" ["SCATTERED-ONLY OPTIONS"]: the unsharded lookup (one
# process), then the scattered one over NP ranks; file t must be chunk t of the unsharded output.
scattered() {
  local name=$1 np=$2 dim=$3 options=$4 only=${5:-} files=() r out code=0
  rm -f "$work"/part.* "$work/whole.safetensors"
  timeout 60 $lookup $options --out "$work/whole.safetensors" >/dev/null
  out=$(timeout 60 $mpirun -np "$np" $lookup $options $only --output-layout scattered --scatter-dim "$dim" \
          --out "$work/part.safetensors" 2>&1) || code=$?
  for ((r = 0; r < np; ++r)); do files+=("$work/part.rank$r.safetensors"); done
  if [[ $code -ne 0 ]] || ! grep -qF "output scattered along dim $dim" <<<"$out"; then
    fail "$name (exit $code)"; echo "$out" | tail -15; return
  fi
  if out=$(python3 "$here/compare_chunks.py" "$work/whole.safetensors" "$dim" "${files[@]}" 2>&1); then
    pass "$name"
  else
    fail "$name"; echo "$out"
  fi
}

ids5="0,30,-1,17,5" ids7="3,1,4,1,5,9,26"
scattered "np 2, 5 ids, vocab shards (owned rows)" 2 0 "--ids $ids5"
scattered "np 2, 5 ids, vocab shards, all-reduce (reduce-scatter)" 2 0 "--ids $ids5 --vocab-exchange all_reduce"
scattered "np 2, 5 ids, hidden shards" 2 0 "--ids $ids5 --sharding-dim 1"
scattered "np 3, 7 ids, vocab shards, equal placement" 3 0 "--ids $ids7 --placement equal"
scattered "np 3, 7 ids, hidden shards, all-reduce" 3 0 "--ids $ids7 --sharding-dim 1"
scattered "np 3, 2 ids: fewer ids than ranks" 3 0 "--ids 7,31"
scattered "np 3, 1 id, hidden shards" 3 0 "--ids 30 --sharding-dim 1"
: >"$work/no_ids.txt"
scattered "np 2, no ids" 2 0 "--ids-file $work/no_ids.txt"
scattered "np 3, ids [2, 5] along dim 1" 3 1 "--ids 0,1,2,3,4,5,6,7,8,9 --ids-shape 2,5"
scattered "np 3, ids [2, 5] along dim 1, hidden shards" 3 1 "--ids 0,1,2,3,4,5,6,7,8,9 --ids-shape 2,5 --sharding-dim 1"
scattered "np 2, ids [3, 2] along dim 0" 2 0 "--ids 9,8,7,6,5,4 --ids-shape 3,2 --vocab-exchange all_reduce"
scattered "np 2, scattered input" 2 0 "--ids $ids5" "--input-layout scattered"
scattered "np 3, scattered input, all-reduce" 3 0 "--ids $ids7 --vocab-exchange all_reduce" "--input-layout scattered"
scattered "np 3, scattered input, hidden shards" 3 0 "--ids $ids7 --sharding-dim 1" "--input-layout scattered"
scattered "np 3, scattered input, ids [2, 5] along dim 1" 3 1 "--ids 0,1,2,3,4,5,6,7,8,9 --ids-shape 2,5" "--input-layout scattered"

# Two tp groups of 2 (np 4, --tp 2): ranks 0,1 and ranks 2,3 each hold chunks 0 and 1.
rm -f "$work"/part.* "$work/whole.safetensors"
$lookup --ids "$ids5" --out "$work/whole.safetensors" >/dev/null
check "np 4, --tp 2: scattered in two groups" 0 "output scattered along dim 0" -- \
  $mpirun -np 4 $lookup --ids "$ids5" --tp 2 --output-layout scattered --out "$work/part.safetensors"
for group in "0 1" "2 3"; do
  set -- $group
  if out=$(python3 "$here/compare_chunks.py" "$work/whole.safetensors" 0 "$work/part.rank$1.safetensors" \
             "$work/part.rank$2.safetensors" 2>&1); then
    pass "np 4, --tp 2: ranks $1,$2 hold chunks 0,1"
  else
    fail "np 4, --tp 2: ranks $1,$2"; echo "$out"
  fi
done
# The comparison itself tells chunks apart: rank 0's and rank 1's files swapped must fail.
python3 "$here/compare_chunks.py" "$work/whole.safetensors" 0 "$work/part.rank1.safetensors" \
  "$work/part.rank0.safetensors" >/dev/null 2>&1 && fail "compare_chunks.py accepts swapped chunks" \
  || pass "compare_chunks.py refuses swapped chunks"
# Without --out, rank 0 prints its own chunk's rows; bad ids are counted over the whole ids.
check "np 2: rank 0 prints its chunk, bad ids of every chunk counted" 0 "2 ids out of range" -- \
  $mpirun -np 2 $lookup --ids 5,-1,6,99 --output-layout scattered
check "np 2: the chunks are listed" 0 "rank 1: tp rank 1: [2, 4) of dim 0, out [2, 6]" -- \
  $mpirun -np 2 $lookup --ids 5,-1,6,99 --output-layout scattered
check_every_rank "np 2: --strict with a bad id in rank 1's chunk" 2 "out of range" -- \
  -np 2 $lookup --ids 5,6,7,99 --output-layout scattered --strict

# Bad values, each refused (on every rank under mpirun).
check "an unknown --output-layout" 105 "--output-layout: sharded not in {replicated,scattered}" -- \
  $lookup --ids 1 --output-layout sharded
check "an unknown --input-layout" 105 "--input-layout: chunked not in {replicated,scattered}" -- \
  $lookup --ids 1 --output-layout scattered --input-layout chunked
check "a negative --scatter-dim" 105 "--scatter-dim: '-1' is not an integer from 0 to" -- \
  $lookup --ids 1 --output-layout scattered --scatter-dim -1
check_every_rank "np 2: a --scatter-dim past the ids' dimensions" 2 \
  "--scatter-dim 1 is not a dimension of the ids, of shape [3] (dimensions 0 to 0)" -- \
  -np 2 $lookup --ids 1,2,3 --output-layout scattered --scatter-dim 1
check_every_rank "np 3: --scatter-dim 2 of 2-d ids" 3 "--scatter-dim 2 is not a dimension of the ids, of shape [2, 2]" -- \
  -np 3 $lookup --ids 1,2,3,4 --ids-shape 2,2 --output-layout scattered --scatter-dim 2
check_every_rank "np 2: scattered input with a replicated output" 2 \
  "--input-layout scattered needs --output-layout scattered" -- \
  -np 2 $lookup --ids 1,2,3 --input-layout scattered
check "scattered input with a replicated output, one process" 1 "--input-layout scattered needs --output-layout scattered" -- \
  $lookup --ids 1,2,3 --input-layout scattered
check_every_rank "np 2: --ids-shape that does not hold the ids" 2 "--ids-shape [2, 2] holds 4 ids, but 3 ids were given" -- \
  -np 2 $lookup --ids 1,2,3 --ids-shape 2,2 --output-layout scattered
# Layout options are shared: an MPMD launch where one rank passes another value stops every rank.
check_every_rank "np 2: --output-layout on one rank only" 2 \
  "rank 0: lookup --output-layout=scattered; rank 1: lookup --output-layout=replicated" -- \
  -np 1 $lookup --ids 1,2 --output-layout scattered : -np 1 $lookup --ids 1,2 --output-layout replicated
check_every_rank "np 3: --scatter-dim differs on one rank" 3 "rank 2: lookup --ids-shape=2,2 --output-layout=scattered --scatter-dim=1" -- \
  -np 2 $lookup --ids 1,2,3,4 --ids-shape 2,2 --output-layout scattered : \
  -np 1 $lookup --ids 1,2,3,4 --ids-shape 2,2 --output-layout scattered --scatter-dim 1
check_every_rank "np 2: --input-layout on one rank only" 2 "the ranks were started with different options" -- \
  -np 1 $lookup --ids 1,2 --output-layout scattered --input-layout scattered : -np 1 $lookup --ids 1,2 --output-layout scattered
check "--help says the rule" 0 "torch.tensor_split's rule" -- $lookup --help

# verify checks every rank's chunk of the scattered layout against the unsharded reference.
out=$(timeout 120 $mpirun -np 3 "$tpembed" verify --vocab 97 --hidden 24 --tokens 50 --dtypes bf16,i8 2>&1) && code=0 || code=$?
scattered_rows=$(grep -E '^cpu tp=3 .*scattered +(bf16|i8) -> ' <<<"$out" | grep -c "PASS (bit-exact on every rank)" || true)
if [[ $code -eq 0 && $scattered_rows -eq 12 ]] && grep -qE "^PASS: 0 of [0-9]+ checks failed" <<<"$out"; then  # 24 on the CPU, more with CUDA rows
  pass "np 3: verify's scattered paths"
else
  fail "np 3: verify's scattered paths (exit $code, $scattered_rows of 12 scattered rows passed)"; echo "$out" | tail -15
fi

# bench-tp in the scattered layout (CPU over MPI, small sizes): every row is reported, and the vocab
# exchanges match the reduce-scatter bit for bit.
out=$(timeout 120 $mpirun -np 2 "$tpembed" bench-tp --device cpu --vocab 500 --hidden 64 --tokens 1,3,300 --repeats 2 \
        --output-layout scattered 2>&1) && code=0 || code=$?
rows=$(grep -cE '^\| (1|3|300) \| (vocab, reduce-scatter|vocab, owned rows all-to-all|hidden, all-to-all) \| wall \|' <<<"$out" || true)
if [[ $code -eq 0 && $rows -eq 9 ]] && grep -qF "matched the reduce-scatter bit for bit on every rank" <<<"$out" \
    && ! grep -q MISMATCH <<<"$out"; then
  pass "np 2: bench-tp --output-layout scattered"
else
  fail "np 2: bench-tp --output-layout scattered (exit $code, $rows of 9 rows)"; echo "$out" | tail -15
fi
# The owned-row all-to-all's wire bytes at 300 tokens are the larger of the rows received and sent:
# never more than the chunk (150 rows of 128 bytes) nor the whole output.
owned_bytes=$(grep -E '^\| 300 \| vocab, owned rows all-to-all' <<<"$out" | awk -F'|' '{print $6 + 0}')
reduce_bytes=$(grep -E '^\| 300 \| vocab, reduce-scatter' <<<"$out" | awk -F'|' '{print $6 + 0}')
[[ ${reduce_bytes:-0} -eq 19200 && ${owned_bytes:-0} -gt 0 && ${owned_bytes:-0} -le 19200 ]] \
  && pass "bench-tp scattered wire bytes: reduce-scatter (tp-1)/tp of 300x64 bf16, owned rows within it" \
  || fail "bench-tp scattered wire bytes: reduce-scatter ${reduce_bytes:-?}, owned rows ${owned_bytes:-?}"
check "bench-tp refuses an unknown --output-layout" 105 "--output-layout: chunks not in {replicated,scattered}" -- \
  "$tpembed" bench-tp --device cpu --tokens 1 --output-layout chunks
check_every_rank "np 2: bench-tp --output-layout on one rank only" 2 "the ranks were started with different options" -- \
  -np 1 "$tpembed" bench-tp --device cpu --vocab 50 --hidden 8 --tokens 3 --output-layout scattered : \
  -np 1 "$tpembed" bench-tp --device cpu --vocab 50 --hidden 8 --tokens 3

finish
