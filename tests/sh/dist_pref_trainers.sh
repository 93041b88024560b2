#!/bin/bash
# ft.pref's DPO, KTO, reward and GRPO trainers under mpirun with 2 ranks against one process on
# the whole batch (uneven shares, gradient accumulation, KTO's KL point over every rank,
# evaluation with a batch smaller than the world, GRPO's prompts dealt out to the ranks)
# (tests/dist/pref_trainers.lua).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
mpi_run 2 tests/dist/pref_trainers.lua > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "tests/dist/pref_trainers.lua under mpirun -np 2"; }
cat "$tmp/log"
grep -q "all ft.pref trainer checks passed on 2 ranks" "$tmp/log" || fail "the script did not finish"
