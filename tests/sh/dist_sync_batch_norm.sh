#!/bin/bash
# ft.nn.SyncBatchNorm under mpirun with 2 ranks: single layers (2-D, 3-D, 4-D inputs, uneven
# shares) and a ResNet-S converted with SyncBatchNorm.convert and trained under DataParallel,
# against one process with plain BatchNorm on the whole batch; plain BatchNorm under
# DataParallel must differ (tests/dist/sync_batch_norm.lua).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
mpi_run 2 tests/dist/sync_batch_norm.lua > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "tests/dist/sync_batch_norm.lua under mpirun -np 2"; }
cat "$tmp/log"
grep -q "all SyncBatchNorm checks passed on 2 ranks" "$tmp/log" || fail "the script did not finish"
