#!/usr/bin/env bash
# End-to-end test of the tpembed command. $1: the binary; $2: the mpirun command ("" without MPI).
set -euo pipefail
tpembed=$1
mpirun=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
ranks() { if [[ -n $mpirun ]]; then echo "$mpirun -np $1"; fi; }
check() {  # check NAME EXPECTED_STATUS NEEDLE -- COMMAND...
  local name=$1 status=$2 needle=$3; shift 4
  local out code=0
  out=$("$@" 2>&1) || code=$?
  if [[ $code -ne $status ]] || ! grep -qF -- "$needle" <<<"$out"; then
    echo "FAIL: $name (exit $code, expected $status; wanted '$needle')"; echo "$out" | tail -15; failed=$((failed + 1))
  else
    echo "ok: $name"; passed=$((passed + 1))
  fi
}

# The main job, over 3 ranks, keeping its checkpoints for the steps below.
check "demo over 3 ranks" 0 "PASS: on every rank" -- $(ranks 3) "$tpembed" demo --vocab 301 --hidden 48 --tokens 200 --keep "$work/ckpt"
test -f "$work/ckpt/model.safetensors"

# quantize, then look the same ids up unsharded and sharded both ways: the outputs must be identical.
check "quantize to int4" 0 "RMS" -- "$tpembed" quantize --table "$work/ckpt/model.safetensors" --to i4 --scale-dtype bf16 --out "$work/q4.safetensors"
ids="0,1,150,300,-1,301,7"
check "lookup int4 on one rank" 0 "wrote tensor 'embeddings'" -- "$tpembed" lookup --table "$work/q4.safetensors" --ids "$ids" --out-dtype bf16 --out "$work/one.safetensors"
if [[ -n $mpirun ]]; then
  check "lookup int4, hidden-parallel over 2 ranks" 0 "2 ids out of range" -- $(ranks 2) "$tpembed" lookup --table "$work/q4.safetensors" --ids "$ids" --out-dtype bf16 --sharding-dim 1 --out "$work/two.safetensors"
  cmp "$work/one.safetensors" "$work/two.safetensors" && echo "ok: sharded output equals unsharded" || { echo "FAIL: outputs differ"; failed=$((failed + 1)); }
  check "lookup bf16, vocab-parallel equal shards over 2 ranks" 0 "out bf16 [3, 48]" -- $(ranks 2) "$tpembed" lookup --table "$work/ckpt" --ids 5,6,7 --placement equal
  check "lookup with the owned-row exchange" 0 "owned_rows exchange): out bf16 [3, 48]" -- $(ranks 2) "$tpembed" lookup --table "$work/ckpt" --ids 5,6,-7 --vocab-exchange owned_rows
  check "peer rows need GPU tables, said on every rank" 1 "peer_rows vocab exchange cannot run" -- $(ranks 2) "$tpembed" lookup --table "$work/ckpt" --ids 5 --vocab-exchange peer_rows
  check "an unknown exchange is refused" 105 "--vocab-exchange: ring not in" -- "$tpembed" lookup --table "$work/ckpt" --ids 5 --vocab-exchange ring
  check "bench-tp over 2 ranks" 0 "matched the all-reduce bit for bit" -- $(ranks 2) "$tpembed" bench-tp --device cpu --vocab 500 --hidden 64 --tokens 1,300 --repeats 2
  check "verify over 2 ranks" 0 "PASS: 0 of" -- $(ranks 2) "$tpembed" verify --vocab 97 --hidden 24 --tokens 50 --dtypes bf16,i4
fi

# Errors a user meets: each names what was wrong.
check "missing tensor lists those present" 1 "model.embed_tokens.weight" -- "$tpembed" lookup --table "$work/q4.safetensors" --tensor nope --ids 1 --out-dtype bf16
check "quantised table needs --out-dtype" 1 "--out-dtype" -- "$tpembed" lookup --table "$work/q4.safetensors" --ids 1
check "bad id token" 1 "'x3' (item 2" -- "$tpembed" lookup --table "$work/ckpt/model.safetensors" --ids 1,x3
check "strict mode names the bad id" 1 "id -1 at position 4" -- "$tpembed" lookup --table "$work/ckpt/model.safetensors" --ids "$ids" --strict
check "not a checkpoint" 1 "$work/ids.txt" -- bash -c "echo 1 2 3 > '$work/ids.txt'; '$tpembed' lookup --table '$work/ids.txt' --ids 1"
check "ids from a file" 0 "looked up 3 ids" -- "$tpembed" lookup --table "$work/ckpt/model.safetensors" --ids-file "$work/ids.txt"
check "bench-tp refuses NCCL without GPUs" 1 "--comm nccl needs the CUDA backend" -- "$tpembed" bench-tp --device cpu --comm nccl --tokens 1
check "help explains with an example" 0 "Example:" -- "$tpembed" lookup --help
check "unknown option" 109 "--nonsense" -- "$tpembed" lookup --table "$work/ckpt/model.safetensors" --ids 1 --nonsense

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
