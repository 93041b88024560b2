#!/usr/bin/env bash
# The interactive REPL on a real terminal (driven through tmux): banner and prompt, tab
# completion through lazily loaded submodules, printed results, errors that keep the
# session alive, multi-line input, Ctrl-C, Ctrl-D and the history file.
set -u

FTLUA=${FTLUA:-build/ftlua}
case $FTLUA in /*) ;; *) FTLUA=$PWD/$FTLUA ;; esac

if ! command -v tmux >/dev/null 2>&1; then
    echo "SKIP: tmux is not installed (Debian package tmux)"
    exit 0
fi
if [ ! -x "$FTLUA" ]; then
    echo "FAIL: no ftlua executable at $FTLUA"
    exit 1
fi

tmp=$(mktemp -d)
sock=$tmp/tmux.sock
session=ftlua
failures=0
trap 'tmux -S "$sock" kill-server >/dev/null 2>&1; rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $1"
    echo "---- screen ----"
    screen
    echo "----------------"
    failures=$((failures + 1))
}

screen() { tmux -S "$sock" capture-pane -p -t "$session" 2>/dev/null; }

# Waits (at most ~10 s) until the screen holds a line matching the extended regex $1.
wait_for() {
    for _ in $(seq 100); do
        if screen | grep -Eq -- "$1"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Waits until the last non-empty line of the screen is exactly the prompt.
wait_prompt() {
    for _ in $(seq 100); do
        if [ "$(screen | grep -v '^[[:space:]]*$' | tail -n 1)" = "ft>" ]; then return 0; fi
        sleep 0.1
    done
    return 1
}

type_line() { tmux -S "$sock" send-keys -t "$session" -l -- "$1"; }
key() { tmux -S "$sock" send-keys -t "$session" "$@"; }
clear_screen() { tmux -S "$sock" send-keys -t "$session" C-l; sleep 0.2; tmux -S "$sock" clear-history -t "$session"; }

start_session() {
    # HOME points to the temp dir so the default history file (~/.ftlua_history) is used.
    tmux -S "$sock" new-session -d -s "$session" -x 120 -y 40 \
        "env -u FTLUA_HISTORY HOME='$tmp' TERM=xterm '$FTLUA'; echo ftlua-exit-status=\$?; sleep 30"
    wait_prompt || fail "no 'ft> ' prompt after start"
}

start_session
screen | grep -q 'ftlua 0\.1' || fail "no banner with the version"
screen | grep -Eq 'Lua 5\.4' || fail "banner does not name Lua 5.4"
screen | grep -Eq '[0-9]+ threads?' || fail "banner does not give the thread count"
screen | grep -q 'help()' || fail "banner does not mention help()"

# Completion through the lazily loaded ft.nn (its names come from its module loader).
type_line 'ft.nn.Con'
key Tab
wait_for '^ft> ft\.nn\.Conv2d' || fail "ft.nn.Con<Tab> did not complete to ft.nn.Conv2d"
key C-u
# Completion of globals and library fields.
type_line 'string.for'
key Tab
wait_for '^ft> string\.format' || fail "string.for<Tab> did not complete to string.format"
key C-u
# Methods through a metatable's __index table (colon path).
type_line 's = "abc"'
key Enter
wait_prompt || fail "no prompt after an assignment"
type_line 's:upp'
key Tab
wait_for '^ft> s:upper' || fail "s:upp<Tab> did not complete to s:upper"
type_line '()'
key Enter
wait_for '^ABC$' || fail "s:upper() did not print ABC"
wait_prompt || fail "no prompt after s:upper()"

# Methods of a module instance through its class chain (Linear -> Module), and its parameters.
clear_screen
type_line 'm = ft.nn.Linear(4, 2)'
key Enter
wait_prompt || fail "no prompt after building a Linear"
type_line 'm:named_pa'
key Tab
wait_for '^ft> m:named_parameters' || fail "m:named_pa<Tab> did not complete to m:named_parameters"
key C-u
type_line 'm:reset_p'
key Tab
wait_for '^ft> m:reset_parameters' || fail "m:reset_p<Tab> did not complete to m:reset_parameters (Linear's own method)"
key C-u
# after ':' only methods: the field in_features is no candidate
type_line 'm:in_f'
key Tab
sleep 0.5
screen | grep -q 'm:in_features' && fail "m:in_f<Tab> offered the field in_features as a method"
key C-u
type_line 'm.wei'
key Tab
wait_for '^ft> m\.weight' || fail "m.wei<Tab> did not complete to m.weight"
key C-u
# ft's Lua submodules before they are loaded (found on package.path, not listed in C).
type_line 'package.loaded["ft.selftrain"]'
key Enter
wait_for '^nil$' || fail "ft.selftrain was loaded before the completion test"
wait_prompt || fail "no prompt after checking package.loaded"
type_line 'ft.selft'
key Tab
wait_for '^ft> ft\.selftrain' || fail "ft.selft<Tab> did not complete to the unloaded submodule ft.selftrain"
key C-u

# help in the REPL.
clear_screen
type_line 'help(ft.nn.Linear)'
key Enter
wait_for 'Linear\(in_features, out_features' || fail "help(ft.nn.Linear) did not print the class doc"
wait_prompt || fail "no prompt after help"

# A statement then an expression on one line.
clear_screen
type_line 'x = 20; x + 1'
key Enter
wait_for '^21$' || fail "x = 20; x + 1 did not print 21"
wait_prompt || fail "no prompt after x = 20; x + 1"

# An expression result.
clear_screen
type_line '6 * 7'
key Enter
wait_for '^42$' || fail "6 * 7 did not print 42"
wait_prompt || fail "no prompt after 6 * 7"

# An error is reported and the prompt comes back.
clear_screen
type_line 'error("boom")'
key Enter
wait_for 'boom' || fail "the error message was not shown"
wait_for 'stack traceback' || fail "the error had no traceback"
wait_prompt || fail "no prompt after an error"

# A multi-line statement with the continuation prompt.
clear_screen
type_line 'function tenfold(x)'
key Enter
wait_for '^>>' || fail "no continuation prompt '>> '"
type_line 'return 10 * x'
key Enter
type_line 'end'
key Enter
wait_prompt || fail "no prompt after a multi-line function"
type_line 'tenfold(4)'
key Enter
wait_for '^40$' || fail "tenfold(4) did not print 40"
wait_prompt || fail "no prompt after tenfold(4)"

# Ctrl-C stops a running statement; Ctrl-C at the prompt drops the line.
clear_screen
type_line 'while true do end'
key Enter
sleep 0.3
key C-c
wait_for 'interrupted!' || fail "Ctrl-C did not interrupt a running loop"
wait_prompt || fail "no prompt after interrupting"
type_line 'this line is dropped'
key C-c
wait_prompt || fail "Ctrl-C at the prompt did not give a fresh prompt"
type_line '1 + 1'
key Enter
wait_for '^2$' || fail "the session did not survive Ctrl-C at the prompt"
wait_prompt || fail "no prompt after 1 + 1"

# Ctrl-D leaves with status 0 (the pane's shell then prints the status).
key C-d
wait_for '^ftlua-exit-status=0$' || fail "Ctrl-D did not end the session with status 0"
tmux -S "$sock" kill-server >/dev/null 2>&1

hist=$tmp/.ftlua_history
if [ ! -f "$hist" ]; then
    fail "no history file at \$HOME/.ftlua_history"
else
    for line in '6 * 7' 'error("boom")' 'function tenfold(x)' 'return 10 * x' 'tenfold(4)'; do
        grep -qxF -- "$line" "$hist" || fail "history file lacks the line: $line"
    done
    grep -qF 'this line is dropped' "$hist" && fail "a line dropped with Ctrl-C went to the history"
fi

# A new session recalls the last line with Up.
start_session
key Up
wait_for '^ft> 1 \+ 1' || fail "Up in a new session did not recall the last line from the history"
key C-u C-d
wait_for '^ftlua-exit-status=0$' || fail "the second session did not end with Ctrl-D"

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: REPL on a terminal"
