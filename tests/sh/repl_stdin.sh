#!/usr/bin/env bash
# A REPL session piped into ftlua (stdin not a terminal): no banner or prompts, results of
# expressions printed (also after a statement on the same line, several results told
# apart), multi-line statements, errors that do not end the session, tensors printed with
# their values, shape and dtype (3-dim ones as labelled slices), help(), exit status 0.
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

# The lines of stdout between the marker lines "<$1>" and "</$1>".
section() { sed -n "/^<$1>\$/,/^<\\/$1>\$/p" "$tmp/out" | sed '1d;$d'; }

expect_section() {
    local got
    got=$(section "$1")
    [ "$got" = "$2" ] || fail "$1: expected [$2], got [$got]"
}

# The numbers in a printed tensor, one per line, with the shape and dtype text removed.
tensor_numbers() {
    sed -e 's/float32//g; s/int64//g' -e 's/\[[0-9, ]*\]//g; s/([0-9, ]*)//g; s/[0-9]\+x[0-9x]\+//g' |
        grep -oE -- '-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?' |
        awk '{ printf "%g\n", $1 }'
}

cat >"$tmp/session.lua" <<'EOF'
print("<expr>")
1 + 2
print("</expr>")
print("<multi>")
function double(x)
  local y = x
  return 2 * y
end
double(21)
print("</multi>")
print("<error>")
error("boom in the session")
print("after the error")
print("</error>")
print("<results>")
1, "two", nil
=3 * 5
local hidden = 7
print("</results>")
print("<table>")
{1, 2, x = 3, [10] = "ten", nested = {4, {5}}}
print("</table>")
print("<ones>")
ft.ones(2, 3)
print("</ones>")
print("<values>")
ft.tensor({{1.5, -2}, {3, 4}})
print("</values>")
print("<tensor_in_table>")
{w = ft.zeros(2, 3)}
print("</tensor_in_table>")
print("<stmt_expr>")
x = 41; x + 1
s = "a;b"; s
y = 2; y = y * 3; y
print("</stmt_expr>")
print("<two_tensors>")
return ft.ones(2), ft.zeros(2)
print("</two_tensors>")
print("<slices>")
ft.arange(1, 9):reshape(2, 2, 2)
print("</slices>")
print("<help>")
help(ft.zeros)
print("</help>")
print("<help_unknown>")
help("ft.nn.Linearr")
print("</help_unknown>")
print("<help_usage>")
help
print("</help_usage>")
print("<incomplete_then_eof>")
for i = 1,
EOF

"$FTLUA" <"$tmp/session.lua" >"$tmp/out" 2>"$tmp/err"
status=$?

[ "$status" -eq 0 ] || fail "exit status $status, expected 0 (stderr: $(cat "$tmp/err"))"
grep -q 'ft>' "$tmp/out" && fail "prompts were printed although stdin is not a terminal"
grep -qi 'ftlua 0\.1' "$tmp/out" "$tmp/err" && fail "the banner was printed although stdin is not a terminal"

expect_section expr "3"
expect_section multi "42"
expect_section error "after the error"
grep -q 'boom in the session' "$tmp/err" || fail "the error message is not on stderr"
grep -q 'stack traceback' "$tmp/err" || fail "the error has no traceback"
grep -q 'boom in the session' "$tmp/out" && fail "the error message went to stdout"
expect_section results "$(printf '1\ttwo\tnil\n15')"
expect_section table '{1, 2, [10] = "ten", nested = {4, {...}}, x = 3}'
expect_section tensor_in_table '{w = tensor[2,3] float32}'

# A statement and an expression on one line: the expression's value is printed.
expect_section stmt_expr "$(printf '42\na;b\n6')"
# Two multi-line results are told apart: each under its position.
expect_section two_tensors "$(printf '[1]\n 1. 1.\n[float32 tensor of shape [2]]\n\n[2]\n 0. 0.\n[float32 tensor of shape [2]]')"
expect_section slices "$(printf '(1,.,.) =\n 1 2\n 3 4\n\n(2,.,.) =\n 5 6\n 7 8\n[int64 tensor of shape [2,2,2]]')"
# help is defined in the REPL: the doc of a C function, an unknown name, the usage.
section help | grep -qF 'ft.zeros(d1, d2, ...' || fail "help(ft.zeros) did not print its doc: [$(section help)]"
section help_unknown | grep -qF "ft.nn has no field 'Linearr' (did you mean 'Linear'?)" ||
    fail "help of a misspelled name did not say so: [$(section help_unknown)]"
section help_usage | grep -qF 'help(x) prints the documentation of x' ||
    fail "help alone did not print its usage: [$(section help_usage)]"

ones=$(section ones)
echo "$ones" | grep -q 'float32' || fail "ft.ones(2, 3) does not show its dtype: [$ones]"
echo "$ones" | grep -Eq '\[2, ?3\]|2x3|\(2, ?3\)' || fail "ft.ones(2, 3) does not show its shape: [$ones]"
[ "$(echo "$ones" | tensor_numbers | tr '\n' ' ')" = "1 1 1 1 1 1 " ] ||
    fail "ft.ones(2, 3) does not show six ones: [$ones]"

values=$(section values)
echo "$values" | grep -Eq '\[2, ?2\]|2x2|\(2, ?2\)' || fail "a 2x2 tensor does not show its shape: [$values]"
[ "$(echo "$values" | tensor_numbers | tr '\n' ' ')" = "1.5 -2 3 4 " ] ||
    fail "ft.tensor({{1.5, -2}, {3, 4}}) does not show 1.5 -2 3 4 in order: [$values]"

# A statement left open at end of input is reported, and the session still ends cleanly.
grep -q "<eof>" "$tmp/err" || fail "an unfinished statement at end of input was not reported"

# Each line is its own chunk: a local does not survive to the next line (as in lua).
printf 'local z = 1\nprint(z)\n' | "$FTLUA" >"$tmp/out2" 2>&1
[ "$(cat "$tmp/out2")" = "nil" ] || fail "a local leaked into the next line: $(cat "$tmp/out2")"

# An empty session ends with status 0 and prints nothing.
"$FTLUA" </dev/null >"$tmp/out3" 2>&1
[ $? -eq 0 ] || fail "an empty session did not exit with status 0"
[ -s "$tmp/out3" ] && fail "an empty session printed: $(cat "$tmp/out3")"

if [ "$failures" -ne 0 ]; then
    echo "---- stdout ----"
    cat "$tmp/out"
    echo "---- stderr ----"
    cat "$tmp/err"
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: piped REPL session"
