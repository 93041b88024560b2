#!/bin/bash
# A rank that raises a Lua error, and a rank killed with SIGKILL, in the middle of a distributed
# training step: every rank must end within 30 s, with the failed rank's message (or mpirun's
# notice of the killed process) and a non-zero exit status, never a hang (tests/dist/faults.lua).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
for mode in error kill; do
  start=$(date +%s)
  status=0
  mpi_run 2 tests/dist/faults.lua "$mode" > "$tmp/$mode.log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  cat "$tmp/$mode.log"
  [ "$status" -ne 0 ] || fail "$mode: the job exited with status 0"
  [ "$status" -ne 124 ] || fail "$mode: the job hung (killed by the 300 s timeout)"
  [ "$elapsed" -le 30 ] || fail "$mode: the job took $elapsed s to end (at most 30)"
  grep -q "step 2" "$tmp/$mode.log" || fail "$mode: training did not start"
  ! grep -q "NOT REACHED" "$tmp/$mode.log" || fail "$mode: a rank went on"
  if [ "$mode" = error ]; then
    grep -q "\[rank 1\] tests/dist/faults.lua:.*injected failure on the last rank at step 3" "$tmp/$mode.log" ||
      fail "error: the failed rank's message is missing"
  else
    grep -qi "signal 9\|killed" "$tmp/$mode.log" || fail "kill: no message names the killed process"
  fi
  echo "ok   $mode on rank 1: every rank ended in $elapsed s (status $status)"
done
