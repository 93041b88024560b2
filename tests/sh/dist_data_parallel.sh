#!/bin/bash
# ft.dist under mpirun with 2 ranks: the collectives, and DataParallel against one process on
# the whole batch (full fine-tuning, LoRA, gradient accumulation, one bucket or many), the
# overlap of bucket all-reduces with backward, and the refusals (tests/dist/data_parallel.lua).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
mpi_run 2 tests/dist/data_parallel.lua > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "tests/dist/data_parallel.lua under mpirun -np 2"; }
cat "$tmp/log"
grep -q "all DataParallel checks passed on 2 ranks" "$tmp/log" || fail "the script did not finish"
