#!/usr/bin/env bash
# Stock lua5.4 loading ft.so with 2 threads exits with the script's own status. When lua
# closes its state it unloads C modules; ft.so stays loaded (so do libgomp and OpenBLAS
# with it), so idle OpenMP threads never run unmapped code: this used to end in SIGSEGV,
# status 139, after any multi-threaded op. The crash depended on thread timing, so each
# case runs several times.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

lua54=${LUA54:-lua5.4}
command -v "$lua54" >/dev/null || fail "no stock $lua54 interpreter on PATH (Debian package lua5.4)"
build=${FT_BUILD_DIR:-build}
[ -e "$build/ft.so" ] || fail "no ft.so in $build (set FT_BUILD_DIR)"
export LUA_CPATH="$build/?.so;;"
export LUA_PATH=${LUA_PATH:-"bindings/lua/?.lua;;"}
export OMP_NUM_THREADS=2
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  # ft.so is built with ASan + UBSan and stock lua is not: their runtimes must come first.
  export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
fi
repeats=${FT_EXIT_REPEATS:-5}

# expect NAME STATUS OUTPUT ARGS...: runs lua5.4 ARGS $repeats times; each run must exit
# with STATUS and print OUTPUT on stdout.
expect() {
  local name=$1 status=$2 output=$3 got code
  shift 3
  for ((i = 1; i <= repeats; i++)); do
    code=0
    got=$("$lua54" "$@" 2>"$tmp/stderr") || code=$?
    [ "$code" = "$status" ] || fail "$name (run $i): exit status $code, expected $status; stderr: $(cat "$tmp/stderr")"
    [ "$got" = "$output" ] || fail "$name (run $i): printed [$got], expected [$output]"
  done
}

expect "matmul (OpenBLAS threads)" 0 "300 300" -e '
  local ft = require "ft"
  local x = ft.randn(300, 300)
  local y = x:matmul(x)
  print(y:size(1) .. " " .. y:size(2))'

expect "elementwise after set_num_threads(2) (OpenMP threads)" 0 "2 true" -e '
  local ft = require "ft"
  ft.set_num_threads(2)
  local x = ft.randn(1000, 1000)
  print(ft.get_num_threads() .. " " .. tostring((x:exp() + x):numel() == 1000000))'

cat > "$tmp/train.lua" <<'LUA'
local ft = require "ft"
local nn, F = ft.nn, ft.nn.functional
local model = nn.Sequential{ nn.Conv2d(1, 8, 3, {padding = 1}), nn.ReLU(), nn.Flatten(),
  nn.Linear(8 * 28 * 28, 10) }
local opt = ft.optim.SGD(model:parameters(), {lr = 0.01})
local x, y = ft.randn(16, 1, 28, 28), ft.randint(1, 10, {16})
for _ = 1, 3 do
  local loss = F.cross_entropy(model(x), y)
  opt:zero_grad()
  loss:backward()
  opt:step()
end
print("trained")
LUA
expect "a training script" 0 "trained" "$tmp/train.lua"

# os.exit(status, true) closes the state (and so unloads C modules) before exiting.
expect "os.exit(3, true)" 3 "" -e '
  local ft = require "ft"
  local x = ft.randn(300, 300)
  x = x:matmul(x)
  os.exit(3, true)'

expect "an error after a multi-threaded op" 1 "" -e '
  local ft = require "ft"
  local x = ft.randn(300, 300)
  x = x:matmul(x)
  error("stopping here")'
grep -q "stopping here" "$tmp/stderr" || fail "the error message is not on stderr: $(cat "$tmp/stderr")"

echo "ok: stock $lua54 exits cleanly after multi-threaded ops ($repeats runs per case)"
