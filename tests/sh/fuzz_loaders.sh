#!/bin/bash
# Fuzzes every loader (ft.load, ft.safetensors.load, ft.image.load, ft._idx_read, ft.json.decode)
# with seeded mutations of their fixtures, each case in a forked child with a time and memory
# limit (tests/fuzz/fuzz.lua). Fails on any crash, hang, memory bomb, bogus result or unclean
# error. FT_FUZZ_CASES=5000 runs more (default 300); FT_FUZZ_SEED picks another corpus.
set -euo pipefail
cd "${FT_SOURCE_DIR:-$(dirname "$0")/../..}"
build=${FT_BUILD_DIR:-build}
ftlua=${FTLUA:-$build/ftlua}
out=$build/fuzz
mkdir -p "$out"

# The isolation helper: a small Lua C module built beside the build's ft.so, with the same
# sanitizers as the build.
flags=(-O1 -g -fPIC -shared -Wall -Wextra)
if [ "${FT_SANITIZE:-0}" = 1 ] || [ "${FT_SANITIZE:-}" = ON ]; then
  flags+=(-fsanitize=address,undefined -fno-omit-frame-pointer)
fi
if [ ! "$out/isolate.so" -nt tests/fuzz/isolate.c ]; then
  cc "${flags[@]}" $(pkg-config --cflags lua5.4) -o "$out/isolate.so" tests/fuzz/isolate.c
fi

export LUA_CPATH="$out/?.so;${LUA_CPATH:-;;}"
export LUA_PATH="${LUA_PATH:-bindings/lua/?.lua;;}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1   # the driver forks: no thread pools
# A sanitizer report ends the child with code 99 (a crash to the driver); huge allocations
# fail instead of aborting, so that the driver sees them as memory bombs.
export ASAN_OPTIONS="exitcode=99:allocator_may_return_null=1:max_allocation_size_mb=2048:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="exitcode=99:halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export FT_FUZZ_CASES=${FT_FUZZ_CASES:-300}
exec "$ftlua" tests/fuzz/fuzz.lua
