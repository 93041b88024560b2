#!/bin/bash
# ft.optim.ZeroRedundancy under mpirun (tests/dist/zero.lua): on 2 ranks against one process with
# plain AdamW on the whole batch and against DataParallel with plain AdamW, the partition (each
# parameter's state on one rank), constraints, a rank owning nothing, the state dict round trip
# with a plain AdamW, and the refusals; then a checkpoint saved on 2 ranks resumed on 3.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
mpi_run 2 tests/dist/zero.lua save "$tmp/zero.h5" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "tests/dist/zero.lua under mpirun -np 2"; }
cat "$tmp/log"
grep -q "all ZeroRedundancy checks passed on 2 ranks" "$tmp/log" || fail "the script did not finish on 2 ranks"
[ -s "$tmp/zero.h5" ] || fail "no checkpoint written on 2 ranks"
mpi_run 3 tests/dist/zero.lua resume "$tmp/zero.h5" > "$tmp/log3" 2>&1 || { cat "$tmp/log3"; fail "tests/dist/zero.lua resume under mpirun -np 3"; }
cat "$tmp/log3"
grep -q "resumed from" "$tmp/log3" || fail "the 3-rank run did not resume the checkpoint"
grep -q "all ZeroRedundancy checks passed on 3 ranks" "$tmp/log3" || fail "the script did not finish on 3 ranks"
