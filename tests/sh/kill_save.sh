#!/bin/bash
# Kill-during-save: for ft.save (HDF5), ft.safetensors.save and ft.peft.save (a LoRA adapter
# in PEFT's folder layout), a writer that keeps replacing version A by version B and back is
# killed with SIGKILL at a random moment, many times. After each kill the file (or folder) must
# load and hold exactly A or exactly B, never a mix or a part; and after the next save no
# temporary file is left. FT_KILL_ROUNDS sets the kills per format (default 12); FT_KILL_SEED
# the random delays.
set -euo pipefail
cd "${FT_SOURCE_DIR:-$(dirname "$0")/../..}"
build=${FT_BUILD_DIR:-build}
ftlua=${FTLUA:-$build/ftlua}
rounds=${FT_KILL_ROUNDS:-12}
RANDOM=${FT_KILL_SEED:-7}
export LUA_PATH="${LUA_PATH:-bindings/lua/?.lua;;}" LUA_CPATH="${LUA_CPATH:-$build/?.so;;}"
export OMP_NUM_THREADS=1
work=$(mktemp -d /tmp/ftlua-kill-XXXXXX)
trap 'rm -rf "$work"' EXIT

cat > "$work/writer.lua" <<'EOF'
-- writer.lua FORMAT PATH MODE [VERSION]
--   MODE write VERSION : one save of version A or B
--   MODE loop          : saves B, A, B, A ... until killed ("started" once the first is done)
--   MODE check         : prints the version PATH holds, or "BAD <why>"
local ft = require "ft"
local fmt, path, mode, version = arg[1], arg[2], arg[3], arg[4]
local value = { A = 1, B = 2 }

local function tensors(v)   -- 4 MB + a small one: a save takes a few milliseconds
  return { ["layer.weight"] = ft.full({ 1024, 1024 }, v), ["layer.bias"] = ft.full({ 7 }, v * 10) }
end

local model, name
local function lora_model(v)
  model = ft.nn.Sequential(ft.nn.Linear(512, 512))
  local r = v == 1 and 4 or 8
  name = ft.peft.lora(model, { target = { "0" }, r = r, alpha = 2 * r })
  for pname, p in model:named_parameters() do
    if pname:find("lora_", 1, true) then ft.no_grad(function() p:fill_(v) end) end
  end
end

local function save(v)
  if fmt == "h5" then
    ft.save(path, tensors(v), { metadata = { version = v } })
  elseif fmt == "safetensors" then
    ft.safetensors.save(path, tensors(v), { metadata = { version = tostring(v) } })
  else
    lora_model(v)
    ft.peft.save(model, path, { format = "peft", name = name })
  end
end

-- The version a tensor table holds: every value of every tensor must agree.
local function version_of(t, want_names)
  local found
  for _, n in ipairs(want_names) do
    local x = t[n]
    if not x then return nil, "missing tensor " .. n end
    local lo, hi = x:min():item(), x:max():item()
    if lo ~= hi then return nil, n .. " holds a mix of values" end
    local v = n:find("bias") and lo / 10 or lo
    if found and found ~= v then return nil, "tensors of different versions" end
    found = v
  end
  return found
end

if mode == "write" then
  save(value[version])
elseif mode == "loop" then
  local v = 2
  save(v)
  io.stderr:write("started\n")
  while true do v = 3 - v; save(v) end
elseif mode == "check" then
  local ok, res = pcall(function()
    if fmt == "h5" or fmt == "safetensors" then
      local t, meta = (fmt == "h5" and ft.load or ft.safetensors.load)(path)
      local v, why = version_of(t, { "layer.weight", "layer.bias" })
      if not v then return "BAD " .. why end
      if tonumber(meta.version) ~= v then return "BAD metadata of version " .. tostring(meta.version) .. " with tensors of " .. v end
      return v == 1 and "A" or "B"
    end
    -- PEFT folder: the config's rank and the weights' must be one version
    local cfg = ft.json.read(path .. "/adapter_config.json")
    local t = ft.safetensors.load(path .. "/adapter_model.safetensors")
    local names = {}
    for n, x in pairs(t) do
      names[#names + 1] = n
      if n:find("lora_A") and x:shape()[1] ~= cfg.r then
        return ("BAD config r=%d with lora_A of rank %d"):format(cfg.r, x:shape()[1])
      end
    end
    local v = 0
    for _, n in ipairs(names) do
      local x = t[n]
      local lo, hi = x:min():item(), x:max():item()
      if lo ~= hi or (v ~= 0 and lo ~= v) then return "BAD weights of mixed versions" end
      v = lo
    end
    if (v == 1 and cfg.r ~= 4) or (v == 2 and cfg.r ~= 8) then return "BAD weights of one version, config of another" end
    return v == 1 and "A" or "B"
  end)
  print(ok and res or ("BAD " .. tostring(res)))
end
EOF

temps() { find "$work" -maxdepth 1 -name "$(basename "$1").tmp-*" | wc -l; }

fail=0
for fmt in h5 safetensors peft; do
  case $fmt in h5) path=$work/ck.h5 ;; safetensors) path=$work/ck.safetensors ;; peft) path=$work/adapter ;; esac
  if [ "$fmt" = peft ] && ! grep -q "replace_dir" bindings/lua/ft/peft/format.lua; then
    echo "kill_save: SKIP peft: ft.peft.save does not replace its folder with ft.fs.replace_dir yet"
    continue
  fi
  "$ftlua" "$work/writer.lua" "$fmt" "$path" write A
  seen_a=0 seen_b=0 left=0
  for ((k = 1; k <= rounds; k++)); do
    "$ftlua" "$work/writer.lua" "$fmt" "$path" loop 2>"$work/started" &
    pid=$!
    # wait until the writer is past start-up and its first save, then a random delay
    for _ in $(seq 200); do grep -q started "$work/started" && break; sleep 0.02; done
    sleep "0.$(printf '%03d' $((RANDOM % 400)))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    got=$("$ftlua" "$work/writer.lua" "$fmt" "$path" check)
    case $got in
      A) seen_a=$((seen_a + 1)) ;;
      B) seen_b=$((seen_b + 1)) ;;
      *) echo "kill_save: FAIL $fmt round $k: $got"; fail=1 ;;
    esac
    left=$((left + $(temps "$path")))
  done
  # the next save removes what the killed writers left
  "$ftlua" "$work/writer.lua" "$fmt" "$path" write A
  after=$(temps "$path")
  got=$("$ftlua" "$work/writer.lua" "$fmt" "$path" check)
  echo "kill_save: $fmt: $rounds kills, old contents $seen_a times, new $seen_b times;" \
       "temporaries left by kills: $left, after the next save: $after"
  if [ "$after" != 0 ] || [ "$got" != A ]; then
    echo "kill_save: FAIL $fmt: after the next save: $after temporaries, contents $got"
    ls -la "$work"
    fail=1
  fi
done
exit $fail
