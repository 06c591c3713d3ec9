#!/usr/bin/env bash
# Hostile and careless input to one tpembed process: bad checkpoints (0-d or short scales, a NUL in
# a name, an index entry that leaves its directory), outputs that must not be replaced, FIFOs,
# non-finite tables to quantise, and option values; each gets a clear error, never a crash or hang.
# $1: the tpembed binary; $2: make_checkpoints.py.
set -euo pipefail
tpembed=$1
make_checkpoints=$2
mpirun=""
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/lib.sh"

"$tpembed" demo --vocab 10 --hidden 4 --tokens 8 --keep "$work/ckpt" >/dev/null
python3 "$make_checkpoints" "$work/made"
table=$work/ckpt/model.safetensors
made=$work/made

# Scales that do not fit their table: a clear ShapeError, not a crash or zero rows.
check "0-d scale tensor" 1 "has shape [] (0-d) but table 'model.embed_tokens.weight' has 4 rows" -- \
  "$tpembed" lookup --table "$made/scale_0d.safetensors" --ids 1 --out-dtype f32
check "short scale tensor" 1 "has shape [3] but table 'model.embed_tokens.weight' has 4 rows: it needs one scale per row, shape [4]" -- \
  "$tpembed" lookup --table "$made/scale_short.safetensors" --ids 3 --out-dtype f32
check "2-D scale tensor" 1 "error (shape_mismatch)" -- \
  "$tpembed" lookup --table "$made/scale_2d.safetensors" --ids 1 --out-dtype f32
check "scales that fit" 0 "looked up 1 ids" -- "$tpembed" lookup --table "$made/with_scale.safetensors" --ids 3 --out-dtype f32
check "--scale-tensor naming the table" 1 "names the table itself" -- \
  "$tpembed" lookup --table "$made/with_scale.safetensors" --ids 1 --out-dtype f32 --scale-tensor model.embed_tokens.weight
# A quantised table without its scales, an int4 table whose file does not record its columns: the
# messages name the CLI's options (--scale-tensor, --int4-columns), not the C++ or Python names.
check "quantised table without scales" 1 "is i8 and needs its row scales: pass --scale-tensor (the checkpoint has no 'model.embed_tokens.weight_scale')" -- \
  "$tpembed" lookup --table "$made/no_scale.safetensors" --ids 1 --out-dtype f32
check "int4 columns unknown" 1 "which tpembed reads as packed int4: pass --int4-columns (the logical column count)" -- \
  "$tpembed" lookup --table "$made/int4_plain.safetensors" --ids 1 --out-dtype f32
check "int4 columns given" 0 "i4 [4, 3], scales 'model.embed_tokens.weight_scale'" -- \
  "$tpembed" lookup --table "$made/int4_plain.safetensors" --ids 1 --out-dtype f32 --int4-columns 3
check "--int4-columns that do not fit the rows" 1 "--int4-columns = 5 does not fit rows of 2 bytes (expected 3 or 4)" -- \
  "$tpembed" lookup --table "$made/int4_plain.safetensors" --ids 1 --out-dtype f32 --int4-columns 5
check "--int4-columns for a table that is not U8" 1 "has dtype BF16; --int4-columns applies only to U8 tensors" -- \
  "$tpembed" lookup --table "$table" --ids 1 --int4-columns 4
out=$("$tpembed" lookup --table "$made/int4_plain.safetensors" --ids 1 --out-dtype f32 2>&1 || true)
if grep -qE "as_int4_columns|hidden=|scale_tensor" <<<"$out"; then
  fail "the int4 message names another interface's option: $out"
else
  pass "the int4 message names only the CLI's option"
fi
check "a name with a NUL byte is shown whole" 1 "'a\\x00b'" -- "$tpembed" lookup --table "$made/nul_name.safetensors" --ids 1
check "--int4-columns -3" 105 "--int4-columns: '-3' is not a positive integer" -- \
  "$tpembed" lookup --table "$table" --ids 1 --int4-columns -3

# --out: only a regular, writable file that is not the input is replaced; its mode is kept.
out_refused() {  # out_refused NAME NEEDLE PATH
  check "--out $1" 1 "$2" -- "$tpembed" lookup --table "$table" --ids 1 --out "$3"
}
out_refused "/dev/null" "/dev/null: is a character device" /dev/null
out_refused "/dev/full" "/dev/full: is a character device" /dev/full
mkfifo "$work/fifo"
out_refused "a FIFO" "is a FIFO" "$work/fifo"
out_refused "a directory" "is a directory" "$work/ckpt"
ln -s "$work/target.safetensors" "$work/link.safetensors"
out_refused "a symbolic link" "is a symbolic link" "$work/link.safetensors"
[[ ! -e $work/target.safetensors ]] && pass "the link's target was not created" || fail "the link's target was created"
touch "$work/readonly.safetensors" && chmod 0444 "$work/readonly.safetensors"
out_refused "a read-only file" "is read-only (mode 0444)" "$work/readonly.safetensors"
out_refused "the input checkpoint" "is the input file" "$table"
out_refused "the input through another path" "is the input file '$table'" "$work/ckpt/../ckpt/./model.safetensors"
ln "$table" "$work/hardlink.safetensors"
out_refused "a hard link to the input" "is the input file" "$work/hardlink.safetensors"
out_refused "in a missing directory" "directory '$work/none' does not exist" "$work/none/out.safetensors"
[[ ! -e $work/none ]] && pass "--out created no directory" || fail "--out created $work/none"
touch "$work/mine.safetensors" && chmod 0600 "$work/mine.safetensors"
check "--out replaces a regular file" 0 "wrote tensor 'embeddings'" -- \
  "$tpembed" lookup --table "$table" --ids 1 --out "$work/mine.safetensors"
[[ $(stat -c %a "$work/mine.safetensors") == 600 ]] && pass "the replaced file kept mode 0600" \
  || fail "the replaced file has mode $(stat -c %a "$work/mine.safetensors")"
check "quantize --out the input" 1 "is the input file" -- "$tpembed" quantize --table "$table" --out "$table"

# --ids-file and --table that are not regular files are refused at once (a FIFO would block).
check "--ids-file a FIFO" 105 "--ids-file: '$work/fifo' is not a regular file" -- \
  "$tpembed" lookup --table "$table" --ids-file "$work/fifo"
check "--table a FIFO" 1 "is not a regular file" -- "$tpembed" lookup --table "$work/fifo" --ids 1
check "--ids-file a directory" 105 "--ids-file: '$work/ckpt' is a directory; give a file of ids" -- \
  "$tpembed" lookup --table "$table" --ids-file "$work/ckpt"
check "demo --keep naming a file" 1 "--keep '$table' exists and is not a directory" -- \
  "$tpembed" demo --vocab 10 --hidden 4 --keep "$table"

# An index entry that is a symbolic link out of the checkpoint's directory is refused like "../".
mkdir "$work/sharded" "$work/elsewhere"
cp "$table" "$work/elsewhere/outside.safetensors"
ln -s "$work/elsewhere/outside.safetensors" "$work/sharded/part.safetensors"
echo '{"weight_map": {"model.embed_tokens.weight": "part.safetensors"}}' >"$work/sharded/model.safetensors.index.json"
check "index entry linking outside its directory" 1 "which is not a file inside the checkpoint's directory (through a symbolic link" -- \
  "$tpembed" lookup --table "$work/sharded" --ids 1
rm "$work/sharded/part.safetensors" && cp "$table" "$work/sharded/part.safetensors"
check "index entry inside its directory" 0 "looked up 1 ids" -- "$tpembed" lookup --table "$work/sharded" --ids 1

# quantize refuses non-finite tables (naming the first bad row and column) and a scale named as the table.
check "quantize a table holding Inf" 1 "row 1, column 0 holds inf" -- \
  "$tpembed" quantize --table "$made/inf.safetensors" --out "$work/q.safetensors"
check "quantize a table holding NaN" 1 "row 2, column 1 holds nan" -- \
  "$tpembed" quantize --table "$made/nan.safetensors" --out "$work/q.safetensors"
[[ ! -e $work/q.safetensors ]] && pass "no file written for a non-finite table" || fail "a file was written"
check "quantize refuses an int4 table by its stored dtype" 1 "is stored as U8[4, 2]; quantize takes a 2-D f32, f16 or bf16 table" -- \
  "$tpembed" quantize --table "$made/int4_plain.safetensors" --out "$work/q.safetensors"
check "quantize refuses an int8 table" 1 "is stored as I8[4, 3]; quantize takes a 2-D f32, f16 or bf16 table" -- \
  "$tpembed" quantize --table "$made/with_scale.safetensors" --out "$work/q.safetensors"
check "--scale-name equal to --tensor" 1 "--scale-name 'model.embed_tokens.weight' must name a tensor other than the table" -- \
  "$tpembed" quantize --table "$table" --scale-name model.embed_tokens.weight --out "$work/q.safetensors"

# Option values: readable ranges, and what was skipped or not checked.
check "--vocab 0 in words" 105 "--vocab: '0' is not a positive integer" -- "$tpembed" demo --vocab 0
out=$("$tpembed" demo --vocab 0 2>&1 || true)
grep -q "1797693" <<<"$out" && fail "the range message shows a double: $out" || pass "no double range in the message"
check "--tokens -1 in words" 105 "--tokens: '-1' is not an integer of at least 0" -- "$tpembed" verify --tokens -1
check "verify with nothing to check" 1 "nothing to check here: skipped the tensor-parallel paths (one rank" -- \
  "$tpembed" verify --vocab 10 --hidden 4 --tokens 4 --dtypes bf16 --device cpu
check "demo --keep under a missing directory" 1 "its parent directory does not exist" -- \
  "$tpembed" demo --vocab 10 --hidden 4 --keep "$work/none/a/b"
[[ ! -e $work/none ]] && pass "demo --keep created nothing" || fail "demo --keep created $work/none"
check "a table past 2^63 bytes" 1 "the generated table f32[3, 9223372036854775807] would take more than 2^63 bytes" -- \
  "$tpembed" demo --vocab 3 --hidden 9223372036854775807
# Out of memory says how much: a 25.6 GB table under a 4 GiB address-space limit.
if [[ ${TPEMBED_SANITIZED:-0} != 1 ]]; then
  check "out of memory names the size" 1 "out of memory: cannot allocate 25600000000 bytes" -- \
    bash -c "ulimit -v 4000000; exec '$tpembed' demo --vocab 100000000 --hidden 64"
fi

finish
