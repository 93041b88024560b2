#!/usr/bin/env bash
# tests/spec/memory_spec.lua under stock lua5.4 with ft.so from LUA_CPATH: tensor memory must
# stay flat under its default (incremental) collector too, where ftlua's is generational.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

lua54=${LUA54:-lua5.4}
command -v "$lua54" >/dev/null || fail "no stock $lua54 interpreter on PATH (Debian package lua5.4)"
busted=$(command -v busted) || fail "no busted on PATH (Debian package lua-busted)"
build=${FT_BUILD_DIR:-build}
[ -e "$build/ft.so" ] || fail "no ft.so in $build (set FT_BUILD_DIR)"
export LUA_CPATH="$build/?.so;;"
export LUA_PATH=${LUA_PATH:-"bindings/lua/?.lua;tests/spec/?.lua;;"}
# ftlua makes idle OpenMP threads sleep rather than spin; stock lua gets the same here, so
# that the spec does not crawl on a busy machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  # ft.so is built with ASan + UBSan and stock lua is not: their runtimes must come first.
  export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
fi

"$lua54" "$busted" --output=TAP tests/spec/memory_spec.lua > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "memory_spec.lua under $lua54"; }
cat "$tmp/out"
grep -q "^ok 1 " "$tmp/out" || fail "the training-loop test did not run"
echo "ok: memory_spec.lua passes under stock $lua54"
