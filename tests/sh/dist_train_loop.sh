#!/bin/bash
# The training machinery under mpirun with 2 ranks (tests/dist/train_loop.lua): the sharded
# loader against the plain one, ft.train.loop with DataParallel against one process on the
# whole batch, a run killed after step 5 and resumed against one straight through, rank 0
# alone writing files and printing, and ft.recipe's run folders. Each rank's stdout goes to a
# file of its own: rank 1's must be empty. Then a run folder that rank 0 cannot make ends every
# rank, with one message.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
export LUA_PATH="$PWD/tests/dist/?.lua;${LUA_PATH:-bindings/lua/?.lua;;}"
real_ftlua=$(cd "$(dirname "$ftlua")" && pwd)/$(basename "$ftlua")

# Runs ftlua with this rank's stdout in $tmp/stdout.<rank>.
cat > "$tmp/ftlua-rank" <<EOF
#!/bin/sh
exec "$real_ftlua" "\$@" > "$tmp/stdout.\${OMPI_COMM_WORLD_RANK:-0}"
EOF
chmod +x "$tmp/ftlua-rank"

mkdir "$tmp/shared"
status=0
ftlua="$tmp/ftlua-rank" mpi_run 2 tests/dist/train_loop.lua "$tmp/shared" 2> "$tmp/stderr" || status=$?
cat "$tmp/stdout.0" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  cat "$tmp/stderr"
  fail "tests/dist/train_loop.lua under mpirun -np 2 (status $status)"
fi
grep -q "all train-loop checks passed on 2 ranks" "$tmp/stdout.0" || fail "the script did not finish"

# Rank 0 printed the logger's lines, the resume and the run folders; rank 1 printed nothing.
grep -q "^step 10/10  loss" "$tmp/stdout.0" || fail "rank 0 printed no logger line for step 10"
grep -q "^resumed from .*/resumed-plain/ckpt.h5 at step 5" "$tmp/stdout.0" || fail "rank 0 did not print the resume"
[ "$(grep -c "^demo.lua: writing to run folder" "$tmp/stdout.0")" -eq 2 ] || fail "rank 0 did not print each run folder once"
[ "$(grep -c "^demo.lua: wrote in" "$tmp/stdout.0")" -eq 1 ] || fail "run:finish did not print once on rank 0"
for how in print io.write io.stdout:write; do
  grep -qx "stdout of rank 0: $how" "$tmp/stdout.0" || fail "rank 0's $how did not reach stdout"
done
[ -e "$tmp/stdout.1" ] || fail "rank 1's stdout file is missing"
if [ -s "$tmp/stdout.1" ]; then
  cat "$tmp/stdout.1"
  fail "rank 1 printed on stdout"
fi
echo "ok   rank 1 printed nothing on stdout; rank 0 printed the logger, the resume and the run folders once"

# --out names a file: rank 0 refuses, every rank ends with status 2, and the message shows once.
touch "$tmp/a-file"
status=0
mpi_run 2 -e "
local parser = require('argparse')('demo.lua', 'A demo.')
ft.recipe.parse(parser, {})
ft.recipe.run(parser, '$tmp/a-file')
print('NOT REACHED')" > "$tmp/refused" 2>&1 || status=$?
cat "$tmp/refused"
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "a refused run folder: status $status (expected an exit, not a hang)"
! grep -q "NOT REACHED" "$tmp/refused" || fail "a rank went on without a run folder"
[ "$(grep -c "demo.lua: --out $tmp/a-file is a file" "$tmp/refused")" -eq 1 ] || fail "the refusal is not printed once"
echo "ok   a run folder rank 0 cannot make ends every rank (status $status), the message printed once"
