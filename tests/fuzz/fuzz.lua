-- The loaders' fuzz driver: seeded mutations of every loader's fixtures, each case loaded in a
-- forked child with a time limit and an address-space limit (tests/fuzz/isolate.c), and every
-- result sorted into one of
--   ok       loaded, and the result is sane (see `sane` below)
--   error    a clean Lua error naming the loader
--   crash    the child died of a signal (or a sanitizer report: exit code 99)
--   hang     the child ran past the time limit
--   bomb     a small file made the child allocate a lot (peak RSS over the limit, or an
--            "out of memory" / "cannot allocate" error: the loader tried before checking)
--   bogus    loaded, but the result cannot be what the file holds (too many elements for the
--            file's size, values out of the format's range, invalid UTF-8 ...)
--   unclean  an error that is not a string naming the loader (e.g. a raw Lua error)
--
-- Run by tests/sh/fuzz_loaders.sh:  ftlua tests/fuzz/fuzz.lua
-- Environment: FT_FUZZ_CASES (default 300), FT_FUZZ_SEED (default 1), FT_FUZZ_KEEP (a folder
-- where failing cases are copied), FT_FUZZ_TIMEOUT (seconds per case, default 10),
-- FT_FUZZ_MEM_MB (address-space limit per child; 0 = none, the default under sanitizers),
-- FT_FUZZ_RSS_MB (peak RSS above the idle child's counted as a bomb, default 200),
-- FT_FUZZ_ONLY (one kind: h5, safetensors, safetensors_mmap, png, idx, json).
local ft = require "ft"
local isolate = require "isolate"

local fixtures = os.getenv("FT_FIXTURES") or "tests/fixtures"
local cases = tonumber(os.getenv("FT_FUZZ_CASES") or "300")
local seed = tonumber(os.getenv("FT_FUZZ_SEED") or "1")
local keep = os.getenv("FT_FUZZ_KEEP")
local timeout = tonumber(os.getenv("FT_FUZZ_TIMEOUT") or (os.getenv("FT_SANITIZE") == "1" and "60" or "10"))
local sanitize = os.getenv("FT_SANITIZE") == "1" or os.getenv("FT_SANITIZE") == "ON"
local mem_mb = tonumber(os.getenv("FT_FUZZ_MEM_MB") or (sanitize and "0" or "3072"))
local rss_mb = tonumber(os.getenv("FT_FUZZ_RSS_MB") or "200")
local only = os.getenv("FT_FUZZ_ONLY")

local work = os.tmpname()
os.remove(work)
ft.fs.mkdir(work)

-- ---- seeds --------------------------------------------------------------------------------

local function fixture(name) return fixtures .. "/" .. name end

-- Files made here so that every loader's richer paths are covered (metadata attributes,
-- nested groups, int64, scalars, F16/BF16/F64 and the float16/bfloat16/float64 datasets of
-- HDF5, gzip).
local function make_seeds()
  local h5 = work .. "/seed_ft.h5"
  ft.save(h5, { a = { b = ft.tensor({ { 0, 1, 2 }, { 3, 4, 5 } }), c = ft.tensor({ 1, 2, 3 }, { dtype = "int64" }) },
                s = ft.tensor(2.5), e = ft.zeros(0, 3) },
          { metadata = { config = '{"n": 1}', step = 7, lr = 0.5 } })
  local st = work .. "/seed_ft.safetensors"
  ft.safetensors.save(st, { w = ft.tensor({ { 0, 1, 2, 3 }, { 4, 5, 6, 7 }, { 8, 9, 10, 11 } }), ids = ft.tensor({ 5, 6 }, { dtype = "int64" }) },
                      { metadata = { format = "pt" } })
  local st16 = work .. "/seed_bf16.safetensors"
  ft.safetensors.save(st16, { w = ft.tensor({ { 0, 1.5, -2, 3 }, { 4, 5, 6e-3, 7e4 } }), v = ft.ones(3) }, { dtype = "BF16" })
  local h5_16 = work .. "/seed_dtypes.h5"
  ft.save(h5_16, ft.safetensors.load(fixture("io_dtype/torch_dtypes.safetensors")), { metadata = { step = 1 } })
  local json = work .. "/seed.json"
  ft.fs.write(json, '{"a": [1, -2.5e3, true, false, null, {"b": "\\u00e9\\ud83d\\ude00\\n\\"x\\""}],'
                 .. ' "big": 18446744073709551615, "s": "ol\195\169", "e": {}, "z": []}')
  return h5, st, st16, json, h5_16
end

local seed_h5, seed_st, seed_st16, seed_json, seed_h5_16 = make_seeds()

local pngs = {}
for name, kind in pairs(ft._listdir(fixture("io"))) do
  if kind == "file" and name:match("%.png$") and not name:match("^bad") and not name:match("^not")
     and not name:match("^truncated") then
    pngs[#pngs + 1] = fixture("io/" .. name)
  end
end
table.sort(pngs)

local targets = {
  { kind = "h5", seeds = { fixture("io/h5py_plain.h5"), seed_h5, fixture("nn_functional.h5"), seed_h5_16,
                           fixture("io_dtype/h5py_dtypes.h5") } },
  { kind = "safetensors", seeds = { fixture("safetensors/dtypes.safetensors"), seed_st, seed_st16,
                                    fixture("golden/hf_vit/reference.safetensors"),
                                    fixture("golden/peft_lora_gpt2/adapter_model.safetensors"),
                                    fixture("io_dtype/torch_dtypes.safetensors") } },
  -- The mapped path: tensors over the file's pages (misaligned ones copied), every value read.
  { kind = "safetensors_mmap", seeds = { fixture("io_dtype/torch_dtypes.safetensors"),
                                         fixture("io_dtype/misaligned.safetensors"),
                                         fixture("safetensors/dtypes.safetensors"), seed_st16 } },
  { kind = "png", seeds = pngs },
  { kind = "idx", seeds = { fixture("io/images-idx3-ubyte"), fixture("io/images-idx3-ubyte.gz"),
                            fixture("io/labels-idx1-ubyte.gz") } },
  { kind = "json", seeds = { fixture("golden/hf_gpt2/config.json"), fixture("golden/hf_llama/config.json"),
                             fixture("golden/hf_vit/config.json"),
                             fixture("golden/peft_lora_gpt2/adapter_config.json"), seed_json } },
}
if only then
  local kept = {}
  for _, t in ipairs(targets) do if t.kind == only then kept[#kept + 1] = t end end
  assert(#kept == 1, "FT_FUZZ_ONLY: unknown kind " .. only)
  targets = kept
end
for _, t in ipairs(targets) do
  t.bytes = {}
  for i, path in ipairs(t.seeds) do t.bytes[i] = ft.fs.read(path) end
end

-- ---- mutations (math.random is seeded: the same seed gives the same cases) ------------------

local R = math.random
local interesting8 = { 0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20 }
local interesting = { 0, 1, 2, 3, 7, 8, 16, 255, 256, 1000, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000,
                      0xffffffff, 0x100000000, 30000, 1 << 40, math.maxinteger, -1, -2 }

local function pack_int(v, width, big)
  local fmt = (big and ">" or "<") .. "i" .. width
  if width < 8 then v = v & ((1 << (8 * width)) - 1); fmt = (big and ">" or "<") .. "I" .. width end
  return string.pack(fmt, v)
end

local mutators = {
  bitflip = function(s)
    for _ = 1, R(1, 8) do
      local i = R(1, #s)
      s = s:sub(1, i - 1) .. string.char(s:byte(i) ~ (1 << R(0, 7))) .. s:sub(i + 1)
    end
    return s
  end,
  byteset = function(s)
    for _ = 1, R(1, 8) do
      local i = R(1, #s)
      local v = R() < 0.7 and interesting8[R(#interesting8)] or R(0, 255)
      s = s:sub(1, i - 1) .. string.char(v) .. s:sub(i + 1)
    end
    return s
  end,
  truncate = function(s) return s:sub(1, R(0, #s - 1)) end,
  size_field = function(s)   -- an integer field set to an interesting value, either byte order
    local width = ({ 2, 4, 8 })[R(3)]
    if #s < width then return s .. "\0" end
    local i = R(0, (#s - width) // width) * width + 1
    if R() < 0.3 then i = R(1, #s - width + 1) end
    local v = interesting[R(#interesting)]
    if R() < 0.3 then v = #s * R(1, 4) + R(-8, 8) end
    return s:sub(1, i - 1) .. pack_int(v, width, R() < 0.5) .. s:sub(i + width)
  end,
  number_text = function(s)   -- a number written in text (JSON, a safetensors header)
    local starts = {}
    for pos in s:gmatch("()%d+") do
      starts[#starts + 1] = pos
      if #starts > 4000 then break end
    end
    if #starts == 0 then return s end
    local i = starts[R(#starts)]
    local j = s:find("[^%d]", i) or #s + 1
    local repl = ({ "0", "-1", "1e308", "18446744073709551616", "9223372036854775807", "2147483648", "3.5",
                    "1e-400", "-0", "00", tostring(R(0, 1 << 20)), "99999999999999999999999" })[R(12)]
    return s:sub(1, i - 1) .. repl .. s:sub(j)
  end,
  duplicate = function(s)   -- a slice copied elsewhere (a chunk or a header entry twice)
    local a = R(1, #s)
    local b = math.min(#s, a + R(0, 64 + #s // 8))
    local at = R(1, #s + 1)
    return s:sub(1, at - 1) .. s:sub(a, b) .. s:sub(at)
  end,
  remove = function(s)
    local a = R(1, #s)
    local b = math.min(#s, a + R(0, 32))
    return s:sub(1, a - 1) .. s:sub(b + 1)
  end,
  append = function(s)
    local junk = {}
    for k = 1, R(1, 64) do junk[k] = string.char(R(0, 255)) end
    return s .. table.concat(junk)
  end,
  text_bytes = function(s)   -- JSON-shaped damage: quotes, escapes, control and non-UTF-8 bytes
    local pieces = { '"', "\\", "\\u", "\\ud800", "\\udc00", "\\u12", "\0", "\1", "\n", "\255", "\192\128",
                     "\237\160\128", "\244\144\128\128", "[", "]", "{", "}", ",", ":", "[[[[[[[[" }
    local i = R(1, #s + 1)
    return s:sub(1, i - 1) .. pieces[R(#pieces)] .. s:sub(i)
  end,
  deep = function(s)   -- deep nesting
    local n = R(100, 5000)
    return ("["):rep(n) .. s .. ("]"):rep(R() < 0.5 and n or 0)
  end,
}
local names = {}
for name in pairs(mutators) do names[#names + 1] = name end
table.sort(names)

local function mutate(kind, s)
  local used = {}
  local rounds = R() < 0.6 and 1 or R(2, 3)   -- mostly one change: more cases get past the header
  for _ = 1, rounds do
    local name
    repeat name = names[R(#names)] until kind == "json" or (name ~= "deep" and name ~= "text_bytes") or R() < 0.2
    if #s == 0 then s = "\0" end
    s = mutators[name](s)
    used[#used + 1] = name
  end
  return s, table.concat(used, "+")
end

-- ---- loading and sanity checks (run in the child) ------------------------------------------

local prefixes = { h5 = "ft.load", safetensors = "ft.safetensors.load", safetensors_mmap = "ft.safetensors.load",
                   png = "ft.image.load",
                   idx = "ft._idx_read", json = "ft.json.decode" }

local function numel_of(tensors)
  local n = 0
  for _, t in pairs(tensors) do n = n + t:numel() end
  return n
end

local function valid_utf8_tree(v, depth)
  if depth > 2000 then return false end
  if type(v) == "string" then return utf8.len(v) ~= nil end
  if type(v) == "table" then
    for k, x in pairs(v) do
      if not valid_utf8_tree(k, depth + 1) or not valid_utf8_tree(x, depth + 1) then return false end
    end
  end
  return true
end

local DTYPES = { float32 = true, int64 = true, bfloat16 = true, float16 = true, float64 = true }

-- nil when sane, else why not. size: the file's size in bytes.
local function sane(kind, path, size, a, b)
  if kind == "h5" or kind == "safetensors" or kind == "safetensors_mmap" then
    if type(a) ~= "table" or type(b) ~= "table" then return "did not return tensors and metadata" end
    -- every element takes at least one byte of the file (checkpoints are uncompressed)
    local n = numel_of(a)
    if n > size then return ("%d elements from a %d-byte file"):format(n, size) end
    for name, t in pairs(a) do
      if type(name) ~= "string" or name == "" then return "a tensor without a name" end
      if utf8.len(name) == nil then return "a tensor name that is not UTF-8" end
      if not DTYPES[t:dtype()] then return "dtype " .. t:dtype() end
    end
    for k, v in pairs(b) do
      if type(k) ~= "string" then return "a metadata key that is not a string" end
      if type(v) == "string" and #v > size then return "metadata longer than the file" end
    end
  elseif kind == "png" then
    if type(a) ~= "userdata" then return "not a tensor" end
    local shape = a:shape()
    if #shape ~= 3 or shape[1] < 1 or shape[1] > 4 then return "shape " .. table.concat(shape, "x") end
    -- deflate expands at most 1032:1; one bit per sample at worst, four channels
    if a:numel() > 1032 * 8 * 4 * size then return ("%d values from a %d-byte PNG"):format(a:numel(), size) end
    local lo, hi = a:min():item(), a:max():item()
    if not (lo >= 0 and hi <= 1) then return ("values in [%g, %g], not [0, 1]"):format(lo, hi) end
  elseif kind == "idx" then
    local head = ft.fs.read(path)
    local gz = head:sub(1, 2) == "\31\139"
    local bound = gz and 1032 * size or size   -- every value takes at least a byte of the data
    if a:numel() > bound then return ("%d values from a %d-byte file"):format(a:numel(), size) end
    if not gz and head:byte(3) == 0x08 and a:numel() > 0 then
      local lo, hi = a:min():item(), a:max():item()
      if lo < 0 or hi > 255 then return ("ubyte values in [%g, %g]"):format(lo, hi) end
    end
  elseif kind == "json" then
    if not valid_utf8_tree(a, 0) then return "a string that is not UTF-8" end
    local ok, text = pcall(ft.json.encode, a)
    if ok then
      local again = ft.json.encode(ft.json.decode(text))
      if again ~= text then return "does not round-trip: " .. text:sub(1, 80) end
    elseif not tostring(text):find("ft.json.encode", 1, true) then
      return "cannot re-encode: " .. tostring(text)
    end
  end
  return nil
end

local loaders = {
  h5 = function(p) return ft.load(p) end,
  safetensors = function(p) return ft.safetensors.load(p) end,
  safetensors_mmap = function(p)
    local a, b = ft.safetensors.load(p, { mmap = true })
    for _, t in pairs(a) do t:totable() end        -- touch every mapped page
    ft.safetensors.load(p, { dtype = "float32" })   -- and convert while reading
    return a, b
  end,
  png = function(p) return ft.image.load(p) end,
  idx = function(p) return ft._idx_read(p) end,
  json = function(p) return ft.json.decode(ft.fs.read(p)) end,
}

local function check(kind, path, size)
  local ok, a, b = pcall(loaders[kind], path)
  if not ok then
    if type(a) ~= "string" or not a:find(prefixes[kind], 1, true) then return 3, "unclean: " .. tostring(a) end
    if a:find("out of memory", 1, true) or a:find("cannot allocate", 1, true) then return 4, a end
    return 1, a
  end
  local why = sane(kind, path, size, a, b)
  if why then return 2, why end
  return 0, ""
end

-- ---- the run ------------------------------------------------------------------------------

-- A child doing nothing: its peak RSS is the baseline a case's is measured against.
local idle = isolate.run(function() return 0, "" end, { timeout = timeout, mem_mb = mem_mb })
assert(idle.status == "exit" and idle.code == 0, "isolate: an idle child failed")
local base_kb = idle.maxrss_kb

-- Every seed must load as it is: otherwise its mutations test nothing beyond the first check.
for _, target in ipairs(targets) do
  for i, path in ipairs(target.seeds) do
    local code, msg = check(target.kind, path, #target.bytes[i])
    if code ~= 0 then
      print(("fuzz: seed %s does not load cleanly: %s"):format(path, msg))
      os.exit(1)
    end
  end
end

math.randomseed(seed)
local counts = { ok = 0, error = 0, crash = 0, hang = 0, bomb = 0, bogus = 0, unclean = 0 }
local per_kind, failures = {}, {}
local worst_rss, slowest, slowest_case = 0, 0, ""
local per_target = math.max(1, cases // #targets)
local total = 0
for _, target in ipairs(targets) do
  per_kind[target.kind] = { ok = 0, error = 0, bad = 0 }
  for c = 1, per_target do
    local k = R(#target.bytes)
    local bytes, how = mutate(target.kind, target.bytes[k])
    local ext = target.seeds[k]:match("(%.[%w]+)$") or ""
    if target.seeds[k]:match("%.gz$") then ext = ".gz" end
    local path = ("%s/case_%s_%d%s"):format(work, target.kind, c, ext)
    ft.fs.write(path, bytes)
    local r = isolate.run(function() return check(target.kind, path, #bytes) end,
                          { timeout = timeout, mem_mb = mem_mb })
    local rss = (r.maxrss_kb - base_kb) // 1024
    worst_rss = math.max(worst_rss, rss)
    if r.seconds > slowest then
      slowest = r.seconds
      slowest_case = ("%s case %d (%s of %s)"):format(target.kind, c, how, target.seeds[k])
    end
    local verdict
    if r.status == "timeout" then verdict = "hang"
    elseif r.status == "signal" then verdict = "crash"
    elseif r.code == 99 then verdict = "crash"   -- a sanitizer report (ASAN_OPTIONS exitcode=99)
    elseif r.code == 0 then verdict = "ok"
    elseif r.code == 1 then verdict = "error"
    elseif r.code == 2 then verdict = "bogus"
    elseif r.code == 4 then verdict = "bomb"
    else verdict = "unclean" end
    if (verdict == "ok" or verdict == "error") and rss > rss_mb then
      verdict = "bomb"
      r.output = ("peak RSS %d MB over the idle child's (%s)"):format(rss, r.output)
    end
    counts[verdict] = counts[verdict] + 1
    local pk = per_kind[target.kind]
    if verdict == "ok" then pk.ok = pk.ok + 1 elseif verdict == "error" then pk.error = pk.error + 1 else pk.bad = pk.bad + 1 end
    total = total + 1
    if verdict ~= "ok" and verdict ~= "error" then
      local kept = ""
      if keep then
        ft.fs.mkdir(keep)
        kept = ("%s/%s_%d_seed%d%s"):format(keep, target.kind, c, seed, ext)
        ft.fs.write(kept, bytes)
      end
      failures[#failures + 1] = ("%s %s case %d (%s of %s, %d bytes)%s: %s %s"):format(
        verdict, target.kind, c, how, target.seeds[k], #bytes, kept ~= "" and (" kept as " .. kept) or "",
        r.status == "signal" and ("signal " .. r.signal) or "", (r.output or ""):sub(1, 300))
    end
    os.remove(path)
  end
end

os.execute("rm -rf '" .. work .. "'")
print(("fuzz: %d cases (seed %d): %d loaded, %d clean errors, %d crashes, %d hangs, %d memory bombs, "
       .. "%d bogus results, %d unclean errors; worst peak RSS +%d MB, slowest case %.2f s")
      :format(total, seed, counts.ok, counts.error, counts.crash, counts.hang, counts.bomb, counts.bogus,
              counts.unclean, worst_rss, slowest))
local kinds = {}
for kind, pk in pairs(per_kind) do kinds[#kinds + 1] = ("%s %d/%d/%d"):format(kind, pk.ok, pk.error, pk.bad) end
table.sort(kinds)
print("fuzz: per loader (loaded/clean errors/failures): " .. table.concat(kinds, ", "))
print("fuzz: slowest case: " .. slowest_case)
for _, f in ipairs(failures) do print("FAIL " .. f) end
os.exit(#failures == 0 and 0 or 1)
