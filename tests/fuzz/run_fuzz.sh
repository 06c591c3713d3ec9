#!/usr/bin/env bash
# Fuzzes the safetensors header parser (and the readers behind it) with libFuzzer, for a bounded time.
#
#   tests/fuzz/run_fuzz.sh [SECONDS]   configure build-fuzz/ with clang, build the fuzzer, run it for
#                                      SECONDS (default 60) on tests/fuzz/corpus/; exits nonzero on a
#                                      crash, leak or timeout, the input saved in build-fuzz/fuzz-artifacts/
#   tests/fuzz/run_fuzz.sh --merge     add to tests/fuzz/corpus/ a small set of the inputs found so
#                                      far (build-fuzz/fuzz-found/) that reach code the corpus does not
#                                      (edges only, greedy set cover); keep the corpus to dozens of files
#
# The committed corpus is only read by a run, never written, and every file in it also runs in the
# normal ctest suite (test_fuzz_corpus). Needs clang with libFuzzer (Debian: clang libclang-rt-dev).
# TPEMBED_FUZZ_BUILD names another build dir; TPEMBED_FUZZ_JOBS the build's parallelism (2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${TPEMBED_FUZZ_BUILD:-$root/build-fuzz}"
corpus="$root/tests/fuzz/corpus"
found="$build/fuzz-found"
fuzzer="$build/tests/fuzz/fuzz_safetensors_header"

CC="${CC:-clang}" CXX="${CXX:-clang++}" cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTPEMBED_FUZZ=ON -DTPEMBED_CUDA=OFF -DTPEMBED_MPI=OFF -DTPEMBED_BUILD_BENCH=OFF \
  -DTPEMBED_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" --target fuzz_safetensors_header -j "${TPEMBED_FUZZ_JOBS:-2}"
mkdir -p "$found" "$build/fuzz-artifacts"

if [[ "${1:-}" == "--merge" ]]; then
  before=$(ls "$corpus" | wc -l)
  "$fuzzer" -set_cover_merge=1 -use_counters=0 -max_len=4096 "$corpus" "$found"
  echo "tpembed fuzz: corpus grew from $before to $(ls "$corpus" | wc -l) inputs"
  exit 0
fi

seconds="${1:-60}"
# New inputs go to $found (the first directory); the committed corpus seeds the run.
exec "$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -dict="$root/tests/fuzz/safetensors.dict" -artifact_prefix="$build/fuzz-artifacts/" \
  -print_final_stats=1 "$found" "$corpus"
