#!/usr/bin/env bash
# The install tree: `cmake --install` of the build into a temporary prefix, and a luarocks build
# of the rockspec into a temporary tree, each used from outside the checkout (a temporary
# working folder, an environment without the source or build paths): stock lua5.4 with the
# prefix's LUA_PATH/LUA_CPATH requires ft, builds the registry's presets and loads an HF folder;
# the installed ftlua finds only the installed library; installed recipes answer --help and
# find their default checkpoint beside them. Everything happens under one temporary folder,
# which is all this test removes.
set -u

src=${FT_SOURCE_DIR:-$(pwd)}
build=${FT_BUILD_DIR:-$src/build}
if [ ! -f "$build/cmake_install.cmake" ]; then
    echo "FAIL: no CMake build at $build (set FT_BUILD_DIR)"
    exit 1
fi
src=$(cd "$src" && pwd -P)
build=$(cd "$build" && pwd -P)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ftlua-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/work" "$tmp/home"
failures=0

fail() {
    echo "FAIL: $1"
    failures=$((failures + 1))
}

# A sanitizer build's ft.so needs the sanitizer runtimes loaded first in a stock lua5.4 (whose
# own allocations LeakSanitizer cannot attribute: leak checks stay with the ftlua runs).
preload=""
if [ "${FT_SANITIZE:-0}" = "1" ]; then
    for lib in libasan.so libubsan.so; do
        path=$(${CC:-cc} -print-file-name=$lib)
        [ -e "$path" ] && preload="$preload${preload:+:}$path"
    done
fi

# clean CMD...: runs CMD in the temporary working folder with a minimal environment, so that
# nothing points at the checkout or the build (no LUA_PATH unless given with `env`).
clean() {
    (cd "$tmp/work" && env -i PATH=/usr/bin:/bin HOME="$tmp/home" OMP_NUM_THREADS=2 \
        ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS} ${UBSAN_OPTIONS:+UBSAN_OPTIONS=$UBSAN_OPTIONS} "$@")
}

# An HF checkpoint folder outside the checkout (the golden GPT-2 of the specs).
golden="$tmp/hf_gpt2"
cp -r "$src/tests/fixtures/golden/hf_gpt2" "$golden"

# The check run by stock lua5.4 and by the installed ftlua: where every module comes from, the
# registry's presets, from_pretrained on the golden folder, a shipped checkpoint.
cat >"$tmp/check.lua" <<'LUA'
local lua_dir, data_dir, golden, forbidden = ...
local ft = require "ft"
local function fail(fmt, ...) io.stderr:write(fmt:format(...), "\n"); os.exit(1) end
local function under(path, dir) return path ~= nil and path:sub(1, #dir + 1) == dir .. "/" end

for _, d in ipairs({ forbidden:match("^(.-);(.*)$") }) do
  if package.path:find(d, 1, true) or package.cpath:find(d, 1, true) then
    fail("package.path/cpath names %s: %s | %s", d, package.path, package.cpath)
  end
end

local gpt = ft.models.new("gpt-s")
local shape = gpt.transformer.wte.weight:shape()
if shape[1] ~= 256 or shape[2] ~= 384 or #gpt.transformer.h ~= 6 then fail("gpt-s has the wrong shape") end
local net = ft.models.new("resnet-s", { num_classes = 4 })
local logits = ft.no_grad(function() return net:eval()(ft.randn(2, 1, 28, 28)) end)
if logits:size(1) ~= 2 or logits:size(2) ~= 4 then fail("resnet-s logits [%s]", table.concat(logits:shape(), ",")) end

local model = ft.models.from_pretrained(golden)
local ref = ft.safetensors.load(golden .. "/reference.safetensors")
local got = ft.no_grad(function() return model(ref.input_ids + 1).logits end)
local err = ft.no_grad(function() return (got - ref.logits):abs():max():item() end)
if not (err <= 1e-4) then fail("from_pretrained logits differ from transformers' by %g", err) end

local sd, meta = ft.load(data_dir .. "/models/resnet_s_clothing.h5")
local shipped = ft.models.new("resnet-s", { num_classes = ft.json.decode(meta.config).num_classes })
shipped:load_state_dict(sd)

-- every ft module in use was found under the installed Lua folder
local n = 0
for name in pairs(package.loaded) do
  if name:match("^ft%.") then
    local file = package.searchpath(name, package.path)
    if not under(file, lua_dir) then fail("module %s comes from %s, not from %s", name, tostring(file), lua_dir) end
    n = n + 1
  end
end
if n < 5 then fail("only %d ft modules loaded", n) end
local source = debug.getinfo(ft.models.new, "S").source
if not under(source:sub(2), lua_dir) then fail("ft.models.new is defined in %s", source) end
print("ok " .. n)
io.stdout:flush()   -- the result shows even if the process then dies on exit
LUA
cp "$tmp/check.lua" "$tmp/work/check.lua"

# check_tree NAME BIN_DIR CMOD_DIR LUA_DIR DATA_DIR SOURCE: the checks on one installed tree
# (SOURCE: the tree of files it was built from).
check_tree() {
    local name=$1 bin=$2 cmod=$3 lua_dir=$4 data=$5 from=$6 out status
    local forbidden="$src;$build"

    for f in "$bin/ftlua" "$cmod/ft.so" "$data/models/README.md" "$data/models/TEXT.md"; do
        [ -e "$f" ] || fail "$name: $f is not installed"
    done
    for f in $(cd "$from/bindings/lua" && find ft -name '*.lua' | sort); do
        [ -f "$lua_dir/$f" ] || fail "$name: $lua_dir/$f is not installed"
    done
    for f in $(cd "$from" && ls models/*.h5 scripts/*.lua); do
        cmp -s "$from/$f" "$data/$f" || fail "$name: $data/$f is not installed (or differs)"
    done

    out=$(clean LUA_PATH="$lua_dir/?.lua;;" LUA_CPATH="$cmod/?.so;;" ${preload:+LD_PRELOAD=$preload} ${preload:+ASAN_OPTIONS=detect_leaks=0} \
        lua5.4 check.lua "$lua_dir" "$data" "$golden" "$forbidden" 2>&1)
    status=$?
    [ $status -eq 0 ] && [[ $out == ok* ]] || fail "$name: stock lua5.4 (exit status $status): $out"
    out=$(clean LUA_PATH="$lua_dir/?.lua;;" LUA_CPATH="$cmod/?.so;;" ${preload:+LD_PRELOAD=$preload} ${preload:+ASAN_OPTIONS=detect_leaks=0} \
        lua5.4 -e 'local ft = require "ft"; print(package.searchpath("ft", package.cpath))' 2>&1)
    [ "$out" = "$cmod/ft.so" ] || fail "$name: stock lua5.4 loads ft from [$out], not $cmod/ft.so"

    # The installed ftlua, with no LUA_PATH at all: it must find the installed Lua half itself.
    out=$(clean "$bin/ftlua" check.lua "$lua_dir" "$data" "$golden" "$forbidden" 2>&1)
    status=$?
    [ $status -eq 0 ] && [[ $out == ok* ]] || fail "$name: installed ftlua (exit status $status): $out"
    out=$(clean "$bin/ftlua" -e 'print(package.path)' 2>&1)
    [[ $out == "$lua_dir/?.lua;"* ]] || fail "$name: the installed ftlua's package.path does not start with $lua_dir: $out"
    case "$out" in *"$src"*) fail "$name: the installed ftlua's package.path names the checkout: $out" ;; esac
    out=$(clean "$bin/ftlua" --help 2>&1)
    [ $? -eq 0 ] || fail "$name: ftlua --help exited with an error"
    [[ $out == usage:* ]] || fail "$name: ftlua --help printed no usage: $out"

    # Installed recipes answer --help (argparse from the system's Lua path).
    local recipes=0 script
    for script in "$data"/scripts/*.lua; do
        grep -q 'require "argparse"\|require("argparse")' "$script" || continue
        recipes=$((recipes + 1))
        out=$(clean "$bin/ftlua" "$script" --help 2>&1)
        [ $? -eq 0 ] || fail "$name: $script --help exited with an error: $out"
        [[ $out == Usage:* ]] || fail "$name: $script --help printed no usage: $out"
    done
    [ "$recipes" -ge 3 ] || fail "$name: only $recipes recipes found in $data/scripts"
}

# The build's copy of the installed runner, not yet installed, has no Lua half to find: it
# does not fall back on the checkout.
out=$(clean "$build/install-bin/ftlua" -e 'print(1)' 2>&1)
[ $? -ne 0 ] || fail "the uninstalled install-bin/ftlua found a Lua half: $out"
grep -q "module 'ft.tensor' not found" <<<"$out" || fail "install-bin/ftlua without a prefix: $out"
grep -q "no file '$src/" <<<"$out" && fail "install-bin/ftlua searched the checkout: $out"

# ---- cmake --install ------------------------------------------------------------------------
prefix="$tmp/prefix"
if ! cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
    fail "cmake --install failed: $(tail -5 "$tmp/install.log")"
else
    check_tree "cmake --install" "$prefix/bin" "$prefix/lib/lua/5.4" "$prefix/share/lua/5.4" "$prefix/share/ftlua" "$src"

    # An installed recipe finds its default checkpoint beside it (<scripts>/../models) from any folder.
    if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        out=$(clean "$prefix/bin/ftlua" "$prefix/share/ftlua/scripts/finetune_vision.lua" --method head \
            --labels-per-class 4 --val-per-class 4 --epochs 1 --batch-size 8 --test-limit 40 --threads 2 \
            --out "$tmp/work/run" 2>&1)
        [ $? -eq 0 ] || fail "the installed finetune_vision.lua failed: $out"
        grep -q "$prefix/share/ftlua/scripts/../models/resnet_s_clothing.h5" <<<"$out" ||
            fail "the installed finetune_vision.lua did not start from the installed checkpoint: $out"
    else
        echo "note: Fashion-MNIST not installed (dataset-fashion-mnist); skipping the installed recipe run"
    fi

    # The prefix is relocatable: moved elsewhere, its ftlua finds its own Lua half.
    mv "$prefix" "$tmp/moved"
    out=$(clean "$tmp/moved/bin/ftlua" -e 'print(package.searchpath("ft.models", package.path))' 2>&1)
    [ "$out" = "$tmp/moved/share/lua/5.4/ft/models.lua" ] || fail "a moved prefix's ftlua finds ft.models at [$out]"
fi

# ---- luarocks ---------------------------------------------------------------------------------
# Under the sanitizers this part is skipped: the rock is a Release build, the same as the plain
# suite's, and checking it twice would only cost time.
if [ "${FT_SANITIZE:-0}" = "1" ]; then
    echo "note: sanitizer build; the luarocks install is checked by the plain suite"
elif ! command -v luarocks >/dev/null 2>&1; then
    echo "note: luarocks not installed (Debian package luarocks); skipping the rockspec checks"
else
    # A copy of the checkout's files (tracked and new, not the ignored build folders): luarocks
    # builds in the folder it runs in.
    mkdir -p "$tmp/src"
    if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$src" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$tmp/src"
    else
        (cd "$src" && tar -cf - --exclude='./build*' --exclude=./runs .) | tar -xf - -C "$tmp/src"
    fi
    tree="$tmp/tree"
    if ! (cd "$tmp/src" && env HOME="$tmp/home" CMAKE_BUILD_PARALLEL_LEVEL=2 \
          luarocks --lua-version 5.4 --tree "$tree" make ftlua-scm-1.rockspec) >"$tmp/rock.log" 2>&1; then
        fail "luarocks make failed: $(tail -20 "$tmp/rock.log")"
    else
        rock=$(ls -d "$tree"/lib/luarocks/rocks-5.4/ftlua/*/ 2>/dev/null | head -1)
        check_tree "luarocks" "$tree/bin" "$tree/lib/lua/5.4" "$tree/share/lua/5.4" "${rock%/}/share/ftlua" "$tmp/src"
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: install tree"
