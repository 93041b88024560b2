#!/usr/bin/env bash
# ftlua as a drop-in for the stock lua interpreter: options, the arg table, stdin as a
# script, exit statuses, error messages, LUA_INIT, package.path, and busted running under it.
set -u

FTLUA=${FTLUA:-build/ftlua}
if [ ! -x "$FTLUA" ]; then
    echo "FAIL: no ftlua executable at $FTLUA"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    echo "FAIL: $1"
    failures=$((failures + 1))
}

# check NAME EXPECTED_OUTPUT COMMAND...: runs the command, compares its stdout.
check() {
    local name=$1 expected=$2 got
    shift 2
    got=$("$@" 2>"$tmp/stderr")
    [ "$got" = "$expected" ] || fail "$name: expected [$expected], got [$got] (stderr: $(cat "$tmp/stderr"))"
}

check "-e" "2" "$FTLUA" -e 'print(1+1)'
check "-e joined" "3" "$FTLUA" -e'print(1+2)'
check "several -e in order" "$(printf 'a\nb')" "$FTLUA" -e 'print("a")' -e 'print("b")'
check "ft is preloaded" "true	true	table" "$FTLUA" -e 'print(ft ~= nil, require("ft") == ft, type(ft))'
check "ft.ones works" "6" "$FTLUA" -e 'print(ft.ones(2, 3):numel())'

cat >"$tmp/args.lua" <<'EOF'
print(arg[0]:match("[^/]*$"), arg[1], arg[2], #arg, select("#", ...), ...)
print(arg[-1] ~= nil)
EOF
check "script args" "$(printf 'args.lua\ta\tb c\t2\t2\ta\tb c\ntrue')" "$FTLUA" "$tmp/args.lua" a "b c"
echo 'print(arg[-1], arg[-2] == arg[-2] and arg[-2]:match("[^/]*$"), arg[-3])' >"$tmp/neg.lua"
check "interpreter args at negative indices" "$(printf -- '-W\t%s\tnil' "${FTLUA##*/}")" "$FTLUA" -W "$tmp/neg.lua"
check "-- stops options" "$(printf 'args.lua\t-e\tnil\t1\t1\t-e\ntrue')" "$FTLUA" -e 'x=1' -- "$tmp/args.lua" -e
check "-- then script" "$(printf 'args.lua\t-v\tnil\t1\t1\t-v\ntrue')" "$FTLUA" -- "$tmp/args.lua" -v

check "stdin with -" "true" sh -c "echo 'print(ft ~= nil)' | '$FTLUA' -"
check "stdin with - keeps locals" "5" sh -c "printf 'local z = 5\nprint(z)\n' | '$FTLUA' -"
check "stdin with - and args" "x" sh -c "echo 'print(arg[1])' | '$FTLUA' - x"
check "-l sets a global" "table" "$FTLUA" -l string -e 'print(type(string))'
check "-l g=mod" "function" "$FTLUA" -l s=string -e 'print(type(s.format))'
check "-i after -e reads stdin" "$(printf '5\n6')" sh -c "printf 'x\nx + 1\n' | '$FTLUA' -e 'x = 5' -i"

check "LUA_INIT" "7" env LUA_INIT='y = 7' "$FTLUA" -e 'print(y)'
check "LUA_INIT_5_4 first" "8" env LUA_INIT='y = 7' LUA_INIT_5_4='y = 8' "$FTLUA" -e 'print(y)'
echo 'y = 9' >"$tmp/init.lua"
check "LUA_INIT=@file" "9" env LUA_INIT="@$tmp/init.lua" "$FTLUA" -e 'print(y)'
check "-E ignores LUA_INIT" "nil" env LUA_INIT='y = 7' "$FTLUA" -E -e 'print(y)'

# package.path: the user's LUA_PATH first, the project's Lua directories appended.
mkdir -p "$tmp/mods"
echo 'return "user module"' >"$tmp/mods/usermod.lua"
check "LUA_PATH kept first" "true" env LUA_PATH="$tmp/mods/?.lua" "$FTLUA" \
    -e "print(package.path:sub(1, #'$tmp/mods/?.lua') == '$tmp/mods/?.lua')"
check "LUA_PATH module" "user module" env LUA_PATH="$tmp/mods/?.lua" "$FTLUA" -e 'print((require "usermod"))'
check "project dir appended" "true" env LUA_PATH="$tmp/mods/?.lua" "$FTLUA" \
    -e 'print(package.path:find("bindings/lua/?.lua", 1, true) ~= nil)'
check "ft.nn loads through package.path" "table" env -u LUA_PATH "$FTLUA" -e 'print(type(ft.nn))'
# The library's directory comes before Lua's default path (a copy of ft in /usr/local/share/lua
# must not shadow it), after the user's own entries.
check "library before the default path" "true" env -u LUA_PATH -u LUA_PATH_5_4 "$FTLUA" \
    -e 'local lib = package.path:find("bindings/lua/?.lua", 1, true); local sys = package.path:find("/usr/share/lua/5.4/?.lua", 1, true); print(lib ~= nil and sys ~= nil and lib < sys)'
check "LUA_PATH ;; expands around the library" "true" env LUA_PATH="$tmp/mods/?.lua;;" "$FTLUA" \
    -e "local p = package.path; local u, l, s = p:find('$tmp/mods/?.lua', 1, true), p:find('bindings/lua/?.lua', 1, true), p:find('/usr/share/lua/5.4/?.lua', 1, true); print(u == 1 and l ~= nil and s ~= nil and l < s)"

# Exit statuses and error messages.
"$FTLUA" -e 'os.exit(3)'
[ $? -eq 3 ] || fail "os.exit(3) did not exit with 3"
"$FTLUA" -e 'os.exit(true)'
[ $? -eq 0 ] || fail "os.exit(true) did not exit with 0"

printf 'local function inner()\n  error("script failed here")\nend\ninner()\n' >"$tmp/bad.lua"
"$FTLUA" "$tmp/bad.lua" >"$tmp/out" 2>"$tmp/err"
status=$?
[ $status -ne 0 ] || fail "a failing script exited with status 0"
grep -q 'bad.lua:2: script failed here' "$tmp/err" || fail "no script error on stderr: $(cat "$tmp/err")"
grep -q 'stack traceback' "$tmp/err" || fail "no traceback for a script error"
grep -q "in local 'inner'\|in function 'inner'\|in upvalue 'inner'" "$tmp/err" ||
    fail "the traceback does not name the failing function: $(cat "$tmp/err")"
[ -s "$tmp/out" ] && fail "a script error wrote to stdout"

"$FTLUA" -e 'error({})' 2>"$tmp/err"
[ $? -ne 0 ] || fail "error({}) exited with status 0"
grep -q 'error object is a table value' "$tmp/err" || fail "non-string error not described: $(cat "$tmp/err")"

"$FTLUA" -e 'local _ = ft.ones(2, 3) + ft.ones(4)' 2>"$tmp/err"
[ $? -ne 0 ] || fail "a tensor shape error exited with status 0"
grep -q 'ft\.' "$tmp/err" || fail "a tensor error does not name the ft op: $(cat "$tmp/err")"

"$FTLUA" "$tmp/missing.lua" 2>"$tmp/err"
[ $? -ne 0 ] || fail "a missing script exited with status 0"
grep -q 'cannot open' "$tmp/err" || fail "a missing script is not reported: $(cat "$tmp/err")"

"$FTLUA" -e 'x = = 1' 2>"$tmp/err"
[ $? -ne 0 ] || fail "a syntax error in -e exited with status 0"
grep -q 'command line' "$tmp/err" || fail "a syntax error in -e is not reported: $(cat "$tmp/err")"

"$FTLUA" -x >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] || fail "an unknown option exited with status 0"
grep -q "unrecognized option '-x'" "$tmp/err" || fail "an unknown option is not reported"
grep -q 'usage:' "$tmp/err" || fail "no usage for an unknown option"
"$FTLUA" -e >/dev/null 2>"$tmp/err"
[ $? -ne 0 ] || fail "-e without its argument exited with status 0"
grep -q "'-e' needs argument" "$tmp/err" || fail "-e without argument is not reported"

# --help (and -h): usage on stdout with the REPL and script notes, status 0, nothing run.
for opt in --help -h; do
    out=$("$FTLUA" $opt -e 'print("ran")' </dev/null 2>"$tmp/err")
    [ $? -eq 0 ] || fail "$opt did not exit with status 0 (stderr: $(cat "$tmp/err"))"
    echo "$out" | head -1 | grep -q '^usage: .*ftlua \[options\] \[script \[args\]\]' || fail "$opt: no usage line: [$out]"
    echo "$out" | grep -q -- '-e stat' || fail "$opt: the options are not listed: [$out]"
    echo "$out" | grep -q 'REPL' || fail "$opt: the REPL is not described: [$out]"
    echo "$out" | grep -q 'script.lua args' || fail "$opt: running scripts is not described: [$out]"
    echo "$out" | grep -q '^ran$' && fail "$opt ran the -e chunk"
    [ -s "$tmp/err" ] && fail "$opt wrote to stderr: $(cat "$tmp/err")"
done
echo 'print(arg[1])' >"$tmp/first.lua"
check "a script's --help is the script's" "--help" "$FTLUA" -e 'x=1' "$tmp/first.lua" --help
out=$("$FTLUA" -x 2>&1 >/dev/null)
echo "$out" | grep -q -- '--help' || fail "the usage after a bad option does not list --help"

out=$("$FTLUA" -v </dev/null)
[ $? -eq 0 ] || fail "-v did not exit with status 0"
echo "$out" | grep -q 'ftlua 0\.1' || fail "-v does not show the ftlua version: [$out]"
echo "$out" | grep -q 'Lua 5\.4' || fail "-v does not show the Lua version: [$out]"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "-v printed more than the version line: [$out]"
check "-v then a script runs it" "$(printf '%s\nx' "$out")" "$FTLUA" -v -e 'print("x")'

# busted runs under ftlua (ctest runs every spec this way).
if command -v busted >/dev/null 2>&1; then
    busted_bin=$(command -v busted)
    cat >"$tmp/pass_spec.lua" <<'EOF'
describe("ftlua", function()
  it("has ft", function() assert.is_table(ft); assert.are.equal(ft, require "ft") end)
  it("runs tensor code", function() assert.are.equal(6, ft.ones(2, 3):numel()) end)
end)
EOF
    cat >"$tmp/fail_spec.lua" <<'EOF'
describe("ftlua", function()
  it("fails", function() assert.are.equal(1, 2) end)
end)
EOF
    (cd "$tmp" && "$FTLUA" "$busted_bin" --output=TAP pass_spec.lua >"$tmp/busted_out" 2>&1)
    [ $? -eq 0 ] || fail "busted on a passing spec failed: $(cat "$tmp/busted_out")"
    grep -q '^ok 2' "$tmp/busted_out" || fail "busted did not run both tests: $(cat "$tmp/busted_out")"
    (cd "$tmp" && "$FTLUA" "$busted_bin" --output=TAP fail_spec.lua >"$tmp/busted_out" 2>&1)
    [ $? -ne 0 ] || fail "busted on a failing spec exited with status 0"
else
    echo "note: busted not installed (Debian package lua-busted); skipping the busted checks"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: ftlua command line"
