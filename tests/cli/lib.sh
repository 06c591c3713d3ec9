# Helpers for the CLI test scripts: sourced after setting $tpembed and $mpirun ("" without MPI).
passed=0 failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
pass() { echo "ok: $*"; passed=$((passed + 1)); }

# check NAME EXPECTED_STATUS NEEDLE -- COMMAND...: one process; its exit status and a line of output.
check() {
  local name=$1 status=$2 needle=$3; shift 4
  local out code=0
  out=$(timeout 60 "$@" 2>&1) || code=$?
  if [[ $code -ne $status ]] || ! grep -qF -- "$needle" <<<"$out"; then
    fail "$name (exit $code, expected $status; wanted '$needle')"; echo "$out" | tail -15
  else
    pass "$name"
  fi
}

# check_every_rank NAME NP NEEDLE -- MPIRUN_ARGS...: `mpirun MPIRUN_ARGS` (one or more app contexts
# of NP ranks in all) must end within 60 s, exit non-zero, and every rank 0..NP-1 must print NEEDLE
# on its stderr.
check_every_rank() {
  local name=$1 np=$2 needle=$3; shift 4
  local out code=0 r missing=""
  out=$(timeout 60 $mpirun --tag-output "$@" 2>&1) || code=$?
  if [[ $code -eq 124 ]]; then fail "$name: HANG (killed after 60 s)"; echo "$out" | tail -15; return; fi
  for ((r = 0; r < np; ++r)); do
    grep -E "^\[[0-9]+,$r\]<stderr>:" <<<"$out" | grep -qF -- "$needle" || missing+=" $r"
  done
  if [[ $code -eq 0 || -n $missing ]]; then
    fail "$name (exit $code; ranks without '$needle':${missing:- none})"; echo "$out" | tail -15
  else
    pass "$name"
  fi
}

finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}
