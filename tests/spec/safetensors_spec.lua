-- safetensors (ft.safetensors.load / save / info). Expected values come from
-- tests/gen/safetensors.py (numpy and PyTorch, files laid out byte by byte), and
-- files written here are read back by an independent reader in Python (struct + json).
local ft = require "ft"
local H = require "helpers"

local FIXTURES = H.fixture("safetensors")
local GOLDEN = H.fixture("golden")
local expected = dofile(FIXTURES .. "/expected.lua")
local PYTHON = H.PYTHON

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("st") end
local read_bytes = H.read_bytes
local write_bytes = H.write_bytes
local file_exists = H.file_exists
local function has_python() return H.has_python("json, struct") end

-- ---- helpers --------------------------------------------------------------------------

-- Exact equality that also holds for NaN == NaN and tells -0.0 from 0.0.
local function same_number(a, b)
  if a ~= a or b ~= b then return a ~= a and b ~= b end
  if a == 0 and b == 0 and math.type(a) == "float" and math.type(b) == "float" then
    return 1 / a == 1 / b
  end
  return a == b and math.type(a) == math.type(b)
end

local function assert_exact(actual, want, what)
  assert.are.equal(#want, #actual, what .. ": number of values")
  for i = 1, #want do
    if not same_number(actual[i], want[i]) then
      error(("%s: value %d is %s (%s), expected %s (%s)"):format(what, i, tostring(actual[i]),
            math.type(actual[i]), tostring(want[i]), math.type(want[i])), 2)
    end
  end
end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The data offsets of a written file, by name, and its header length (read by hand).
local function header_length(bytes)
  return (string.unpack("<I8", bytes))
end

-- A reader written from the format's description, independent of ftlua: checks the
-- layout (header length a multiple of 8 padded with spaces, tensors tiling the data,
-- optionally the reference writer's order) and prints the contents as a Lua table.
local PY_READER = [==[
import json, math, struct, sys

path, check_layout = sys.argv[1], sys.argv[2] == "layout"
blob = open(path, "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
text = blob[8:8 + n].decode("utf-8")
header = json.loads(text)
data = blob[8 + n:]
meta = header.pop("__metadata__", {})
entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])
size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2}
pos = 0
for name, e in entries:
    begin, end = e["data_offsets"]
    assert begin == pos, "tensor %s starts at %d, expected %d" % (name, begin, pos)
    count = math.prod(e["shape"])
    assert end - begin == count * size[e["dtype"]], "size of %s" % name
    pos = end
assert pos == len(data), "the tensors cover %d of %d bytes" % (pos, len(data))
if check_layout:
    assert n % 8 == 0, "header length %d is not a multiple of 8" % n
    assert text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))), "padding"
    assert text.rstrip(" ").endswith("}"), "the header ends with padding other than spaces"
    order = [name for name, _ in entries]
    want = sorted(order, key=lambda name: (-size[header[name]["dtype"]], name))
    assert order == want, "layout order %s, expected %s" % (order, want)

def lua_string(s):
    return '"' + "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else
                         "".join("\\%03d" % b for b in c.encode()) for c in s) + '"'

def lua_number(v):
    if isinstance(v, int):
        return "math.mininteger" if v == -2 ** 63 else str(v)
    if math.isnan(v):
        return "0/0"
    if math.isinf(v):
        return "1/0" if v > 0 else "-1/0"
    return repr(float(v))

def values(e):
    begin, end = e["data_offsets"]
    chunk, k = data[begin:end], math.prod(e["shape"])
    dtype = e["dtype"]
    if dtype == "BF16":
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack("<%dH" % k, chunk)]
    code = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i"}[dtype]
    return list(struct.unpack("<%d%s" % (k, code), chunk))

out = ["return {", "  header_length = %d," % n, "  metadata = {"]
out += ["    [%s] = %s," % (lua_string(k), lua_string(v)) for k, v in sorted(meta.items())]
out += ["  },", "  order = {%s}," % ", ".join(lua_string(name) for name, _ in entries), "  tensors = {"]
for name, e in entries:
    out.append("    [%s] = {dtype = %s, shape = {%s}, values = {%s}}," % (
        lua_string(name), lua_string(e["dtype"]), ", ".join(map(str, e["shape"])),
        ", ".join(lua_number(v) for v in values(e))))
out += ["  },", "}"]
print("\n".join(out))
]==]

-- Reads path with the Python reader; returns its table.
local function python_read(dir, path, check_layout)
  local script = dir .. "/read_safetensors.py"
  write_bytes(script, PY_READER)
  local ok, out = run(PYTHON .. " " .. quote(script) .. " " .. quote(path) .. " " ..
                      (check_layout and "layout" or "any"))
  assert(ok, "the Python reader failed:\n" .. out)
  return assert(load(out, "python output", "t", {math = math}))()
end

-- ---- reading ------------------------------------------------------------------------------

describe("ft.safetensors.load", function()
  local path = FIXTURES .. "/dtypes.safetensors"

  it("decodes every dtype (floats in their own dtype, integers as int64) as PyTorch and numpy wrote them", function()
    local tensors, meta = ft.safetensors.load(path)
    assert.are.same(keys(expected.tensors), keys(tensors))
    for name, want in pairs(expected.tensors) do
      local t = tensors[name]
      assert.are.equal(want.dtype, t:dtype(), name)
      assert.are.same(want.shape, t:shape(), name)
      assert_exact((H.flat(t)), want.values, name .. " (" .. want.stored .. ")")
    end
    assert.are.same(expected.metadata, meta)
  end)

  it("returns integer tensors as stored: 0-based ids are not shifted", function()
    local tensors = ft.safetensors.load(path)
    assert.are.same({0, 255, 128}, tensors.u8:totable())
    assert.are.equal(50256, tensors.i64:totable()[6])
    assert.are.equal(math.mininteger, tensors.i64:totable()[1])
  end)

  it("loads only the tensors asked for", function()
    local tensors, meta = ft.safetensors.load(path, {names = {"f16", "i32"}})
    assert.are.same({"f16", "i32"}, keys(tensors))
    assert.are.same({{-2147483648, 2147483647}, {0, -7}}, tensors.i32:totable())
    assert.are.equal("pt", meta.format)
    H.assert_mentions(H.error_of(ft.safetensors.load, path, {names = {"f16", "nope"}}),
                      "ft.safetensors.load: '" .. path .. "' has no tensor 'nope'")
    H.assert_mentions(H.error_of(ft.safetensors.load, path, {name = {"f16"}}),
                      "ft.safetensors.load: unknown option 'name' (valid options: dtype, mmap, names); did you mean 'names'?")
  end)

  it("lists names, dtypes, shapes and offsets with info, without decoding", function()
    local info, meta = ft.safetensors.info(path)
    assert.are.same(keys(expected.tensors), keys(info))
    for name, want in pairs(expected.tensors) do
      assert.are.equal(want.stored, info[name].dtype, name)
      assert.are.same(want.shape, info[name].shape, name)
    end
    assert.are.equal(info.empty.data_offsets[1], info.empty.data_offsets[2])
    assert.are.same(expected.metadata, meta)
    -- A dtype ftlua cannot decode is still listed.
    local other = ft.safetensors.info(FIXTURES .. "/unsupported_dtype.safetensors")
    assert.are.same({dtype = "F8_E4M3", shape = {4}, data_offsets = {8, 12}}, other.fp8)
  end)

  it("names a dtype it cannot decode, and loads the other tensors on request", function()
    local bad = FIXTURES .. "/unsupported_dtype.safetensors"
    assert.are.equal("ft.safetensors.load: '" .. bad .. "': tensor 'fp8' has dtype F8_E4M3, which ftlua does "
                     .. "not decode (it reads F64, F32, F16 and BF16 as float64, float32, float16 and bfloat16, and "
                     .. "I64, I32, I16, I8, U64, U32, U16, U8 and BOOL as int64)", H.error_of(ft.safetensors.load, bad))
    assert.are.same({0, 1}, ft.safetensors.load(bad, {names = {"ok"}}).ok:totable())
  end)

  it("reports a missing file", function()
    assert.are.equal("ft.safetensors.load: cannot open 'no/such.safetensors': No such file or directory",
                     H.error_of(ft.safetensors.load, "no/such.safetensors"))
    assert.are.equal("ft.safetensors.info: cannot open '" .. FIXTURES .. "': Is a directory",
                     H.error_of(ft.safetensors.info, FIXTURES))
  end)

  describe("files written by HuggingFace's safetensors library", function()
    local cases = {
      {file = "hf_gpt2/reference.safetensors", names = {"input_ids", "input_ids2", "logits", "logits2", "loss2"}},
      {file = "peft_lora_gpt2/adapter_model.safetensors", meta = {format = "pt"}},
    }
    for _, case in ipairs(cases) do
      it("loads " .. case.file .. " as an independent reader decodes it", function()
        local path = GOLDEN .. "/" .. case.file
        if not file_exists(path) then pending("fixture " .. path .. " is not there") end
        if not has_python() then pending(PYTHON .. " is not installed") end
        local dir = make_tmpdir()
        local want = python_read(dir, path, false)
        os.execute("rm -rf " .. quote(dir))
        local tensors, meta = ft.safetensors.load(path)
        assert.are.same(keys(want.tensors), keys(tensors))
        if case.names then assert.are.same(case.names, keys(tensors)) end
        for name, w in pairs(want.tensors) do
          local t = tensors[name]
          assert.are.equal(w.dtype:sub(1, 1) == "F" and "float32" or "int64", t:dtype(), name)
          assert.are.same(w.shape, t:shape(), name)
          assert_exact((H.flat(t)), w.values, name)
        end
        assert.are.same(want.metadata, meta)
        if case.meta then assert.are.same(case.meta, meta) end
      end)
    end
  end)
end)

-- ---- corrupt files ---------------------------------------------------------------------------

describe("ft.safetensors on corrupt files", function()
  local function err(name)
    local path = FIXTURES .. "/" .. name
    local msg = H.error_of(ft.safetensors.load, path)
    -- The header is validated before anything is decoded: info fails the same way.
    assert.are.equal(msg:gsub("^ft%.safetensors%.load", "ft.safetensors.info"), H.error_of(ft.safetensors.info, path))
    return msg, "ft.safetensors.load: '" .. path .. "'"
  end

  it("reports a file shorter than the 8-byte header length", function()
    local msg, at = err("bad_truncated.safetensors")
    assert.are.equal(at .. " is too short to be a safetensors file: 5 bytes, and the header length alone takes 8", msg)
  end)

  it("reports a header length beyond the end of the file", function()
    local msg, at = err("bad_header_past_end.safetensors")
    assert.are.equal(at .. ": the header length 1000 runs past the end of the file (100 bytes)", msg)
  end)

  it("reports data_offsets past the end of the data", function()
    local msg, at = err("bad_offsets_past_end.safetensors")
    assert.are.equal(at .. ": tensor 'h.0.attn.c_attn.weight' has data_offsets [0, 1000] past the end of the "
                     .. "data (900 bytes)", msg)
  end)

  it("reports an unknown dtype string", function()
    local msg, at = err("bad_dtype.safetensors")
    H.assert_mentions(msg, at .. ": tensor 'w' has an unknown dtype 'F33' (the format knows F64, F32, F16, BF16")
  end)

  it("reports a header that is not JSON", function()
    local msg, at = err("bad_not_json.safetensors")
    H.assert_mentions(msg, at .. ": the header is not valid JSON (error near byte ", "json}')")
  end)

  it("reports a header that is JSON but not an object", function()
    local msg, at = err("bad_not_object.safetensors")
    assert.are.equal(at .. ": the header is not a JSON object", msg)
  end)

  it("reports text after the header's object other than padding", function()
    local msg, at = err("bad_trailing.safetensors")
    assert.are.equal(at .. ": the header has text after its JSON object: 'xyz'", msg)
  end)

  it("reports a tensor entry without a required field", function()
    local msg, at = err("bad_missing_field.safetensors")
    assert.are.equal(at .. ": tensor 'w' has no 'shape' in the header", msg)
  end)

  it("reports data_offsets that are not two integers", function()
    local msg, at = err("bad_offsets_type.safetensors")
    assert.are.equal(at .. ": tensor 'w' has 'data_offsets' that are not two non-negative integers [begin, end]", msg)
  end)

  it("reports data_offsets that end before they begin", function()
    local msg, at = err("bad_offsets_reversed.safetensors")
    assert.are.equal(at .. ": tensor 'w' has data_offsets [8, 0] that end before they begin", msg)
  end)

  it("reports a negative dimension", function()
    local msg, at = err("bad_shape.safetensors")
    assert.are.equal(at .. ": tensor 'w' has a 'shape' entry that is not a non-negative integer", msg)
  end)

  it("reports a byte size that does not match shape x dtype", function()
    local msg, at = err("bad_size_mismatch.safetensors")
    assert.are.equal(at .. ": tensor 'w' of dtype F32 and shape [2,3] needs 24 bytes, but its data_offsets "
                     .. "[0, 20] hold 20", msg)
  end)

  it("reports a hole in the data", function()
    local msg, at = err("bad_hole.safetensors")
    assert.are.equal(at .. ": bytes 8 to 16 of the data belong to no tensor (a hole before tensor 'b', "
                     .. "data_offsets [16, 24]); the tensors must cover the data without gaps", msg)
  end)

  it("reports overlapping tensors", function()
    local msg, at = err("bad_overlap.safetensors")
    assert.are.equal(at .. ": tensors 'a' (data_offsets [0, 8]) and 'b' ([4, 12]) overlap", msg)
  end)

  it("reports data that no tensor covers at the end", function()
    local msg, at = err("bad_extra_data.safetensors")
    assert.are.equal(at .. ": the data has 12 bytes but the tensors cover only the first 8 (extra bytes "
                     .. "after tensor 'a')", msg)
  end)

  it("reports metadata values that are not strings", function()
    local msg, at = err("bad_metadata.safetensors")
    assert.are.equal(at .. ": '__metadata__' entry 'epoch' is not a string", msg)
  end)

  it("reports a name given twice", function()
    local msg, at = err("bad_duplicate.safetensors")
    assert.are.equal(at .. ": tensor 'a' appears twice in the header", msg)
  end)
end)

-- ---- writing -------------------------------------------------------------------------------

describe("ft.safetensors.save", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  local function sample()
    local w = ft.tensor({{1.5, -0.0, 1 / 0}, {-1 / 0, 0 / 0, 3.4028234663852886e+38}})
    return {
      ["transformer.h.0.attn.c_attn.weight"] = w,
      ["transformer.h.0.attn.c_attn.bias"] = ft.tensor({1.401298464324817e-45, -2.75, 0.1}),
      ["transposed"] = ft.tensor({{1, 2, 3}, {4, 5, 6}}):t(),          -- not contiguous
      ["scalar"] = ft.tensor({7.25}):reshape({}),
      ["empty"] = ft.zeros(0, 3),
      ["deep"] = ft.randn(2, 1, 3, 1, 2),
      ["ids"] = ft.tensor({math.mininteger, math.maxinteger, (1 << 53) + 1, 0, -1}, {dtype = "int64"}),
      ["step"] = ft.tensor({12}, {dtype = "int64"}):reshape({}),
      ["name with spaces, \"quotes\" and ünïcödé"] = ft.ones(2),
    }
  end

  it("round-trips float32 (F32) and int64 (I64) tensors bit for bit", function()
    local sd = sample()
    local path = dir .. "/model.safetensors"
    ft.safetensors.save(path, sd)
    local back = ft.safetensors.load(path)
    assert.are.same(keys(sd), keys(back))
    for name, want in pairs(sd) do
      local t = back[name]
      assert.are.equal(want:dtype(), t:dtype(), name)
      assert.are.same(want:shape(), t:shape(), name)
      assert_exact((H.flat(t)), (H.flat(want)), name)
    end
    local info = ft.safetensors.info(path)
    assert.are.equal("I64", info.ids.dtype)
    assert.are.equal("F32", info.transposed.dtype)
  end)

  it("flattens nested tables with dots, as ft.save does", function()
    local path = dir .. "/nested.safetensors"
    ft.safetensors.save(path, {layer1 = {[0] = {conv1 = {weight = ft.ones(2, 2)}}}, head = {ft.zeros(1)}})
    assert.are.same({"head.1", "layer1.0.conv1.weight"}, keys(ft.safetensors.load(path)))
  end)

  for _, case in ipairs({{"F16", "f16"}, {"BF16", "bf16"}}) do
    local dtype, key = case[1], case[2]
    it("rounds float32 to " .. dtype .. " to nearest even, as PyTorch does", function()
      local r = expected.rounding
      local path = dir .. "/half.safetensors"
      local ids = ft.tensor({1, 2, 3}, {dtype = "int64"})
      ft.safetensors.save(path, {x = H.from_flat(r.values, {#r.values}), ids = ids}, {dtype = dtype})
      local back = ft.safetensors.load(path)
      assert_exact((H.flat(back.x)), r[key], dtype .. " values")
      assert.are.same({1, 2, 3}, back.ids:totable())   -- integers stay I64
      local info = ft.safetensors.info(path)
      assert.are.equal(dtype, info.x.dtype)
      assert.are.equal("I64", info.ids.dtype)
      -- The stored bits themselves (any NaN will do where PyTorch has one).
      local bytes = read_bytes(path)
      local base = 8 + header_length(bytes) + info.x.data_offsets[1]
      for i, want in ipairs(r[key .. "_bits"]) do
        local bits = string.unpack("<I2", bytes, base + 1 + 2 * (i - 1))
        local nan_mask = dtype == "F16" and 0x7c00 or 0x7f80
        local is_nan = (bits & nan_mask) == nan_mask and (bits & ~nan_mask & 0x7fff) ~= 0
        if r.values[i] ~= r.values[i] then
          assert.is_true(is_nan, ("value %d: NaN stored as 0x%04x"):format(i, bits))
        else
          assert.are.equal(want, bits, ("value %d (%.9g): 0x%04x, expected 0x%04x"):format(i, r.values[i], bits, want))
        end
      end
    end)
  end

  it("writes files that an independent reader reads back, in the reference layout", function()
    if not has_python() then pending(PYTHON .. " is not installed") end
    local sd = sample()
    local path = dir .. "/model.safetensors"
    local meta = {format = "pt", ["note \"q\""] = "ünïcödé\n", number = 3}
    ft.safetensors.save(path, sd, {metadata = meta})
    local got = python_read(dir, path, true)
    assert.are.same({format = "pt", ["note \"q\""] = "ünïcödé\n", number = "3"}, got.metadata)
    assert.are.same(keys(sd), keys(got.tensors))
    for name, want in pairs(sd) do
      local t = got.tensors[name]
      assert.are.equal(want:dtype() == "int64" and "I64" or "F32", t.dtype, name)
      assert.are.same(want:shape(), t.shape, name)
      assert_exact(t.values, (H.flat(want)), name)
    end
    -- F16 and BF16 too.
    for _, dtype in ipairs({"F16", "BF16"}) do
      local half = dir .. "/" .. dtype .. ".safetensors"
      local r = expected.rounding
      ft.safetensors.save(half, {x = H.from_flat(r.values, {#r.values}), ids = ft.tensor({5}, {dtype = "int64"})},
                          {dtype = dtype})
      local back = python_read(dir, half, true)
      assert.are.same({"ids", "x"}, back.order)   -- 8-byte elements first
      assert.are.equal(dtype, back.tensors.x.dtype)
      assert_exact(back.tensors.x.values, r[dtype:lower()], dtype)
    end
  end)

  it("pads the header with spaces to a multiple of 8 bytes", function()
    for n = 1, 9 do
      local path = dir .. "/pad.safetensors"
      ft.safetensors.save(path, {[("w"):rep(n)] = ft.ones(1)})
      local bytes = read_bytes(path)
      local len = header_length(bytes)
      assert.are.equal(0, len % 8, "header length " .. len)
      local header = bytes:sub(9, 8 + len)
      assert.truthy(header:match("^{.*} *$"), header)
      assert.are.equal(8 + len + 4, #bytes)
    end
  end)

  it("writes an empty table and metadata alone", function()
    local path = dir .. "/empty.safetensors"
    ft.safetensors.save(path, {}, {metadata = {format = "pt"}})
    local tensors, meta = ft.safetensors.load(path)
    assert.are.same({}, tensors)
    assert.are.same({format = "pt"}, meta)
  end)

  it("rejects bad options, names and metadata, writing nothing", function()
    local path = dir .. "/bad.safetensors"
    local one = {w = ft.ones(1)}
    H.assert_mentions(H.error_of(ft.safetensors.save, path, one, {dtype = "I32"}),
                      "ft.safetensors.save: option 'dtype' must be a float dtype", "got 'I32'")
    H.assert_mentions(H.error_of(ft.safetensors.save, path, one, {meta = {a = "b"}}),
                      "ft.safetensors.save: unknown option 'meta' (valid options: dtype, metadata)")
    H.assert_mentions(H.error_of(ft.safetensors.save, path, one, {metadata = {cfg = {1}}}),
                      "ft.safetensors.save: metadata 'cfg' is a table; the format stores strings")
    H.assert_mentions(H.error_of(ft.safetensors.save, path, {__metadata__ = ft.ones(1)}),
                      "ft.safetensors.save: cannot write '" .. path .. "': the name '__metadata__' is reserved")
    H.assert_mentions(H.error_of(ft.safetensors.save, path, {["\xff"] = ft.ones(1)}), "is not valid UTF-8")
    H.assert_mentions(H.error_of(ft.safetensors.save, path, {w = ft.ones(1), opt = {lr = 0.1}}),
                      "ft.safetensors.save: the value at 'opt.lr' is a number")
    H.assert_mentions(H.error_of(ft.safetensors.save, dir .. "/no/such/dir/x.safetensors", one),
                      "ft.safetensors.save: cannot write '" .. dir .. "/no/such/dir/x.safetensors': No such file or directory")
    assert.is_false(file_exists(path))
  end)

  it("leaves the previous file untouched when the disk refuses the data", function()
    -- A file size limit (as a full disk would) stops the second, larger file.
    local path = dir .. "/model.safetensors"
    ft.safetensors.save(path, {w = ft.full({3}, 5)})
    local before = read_bytes(path)
    local script = dir .. "/big.lua"
    write_bytes(script, ([[
      local ft = require "ft"
      local ok, err = pcall(ft.safetensors.save, %q, {w = ft.zeros(1000, 1000)})
      io.write(tostring(ok), " ", tostring(err))
    ]]):format(path))
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local ok, out = run("bash -c " .. quote("trap '' XFSZ; ulimit -f 1024; " .. quote(ftlua) .. " " .. quote(script)))
    assert.is_true(ok, out)
    H.assert_mentions(out, "false ft.safetensors.save: cannot write '" .. path .. "': File too large")
    assert.are.equal(before, read_bytes(path))
    local ls = select(2, run("ls " .. quote(dir)))
    assert.are.equal("big.lua\nmodel.safetensors\n", ls)
  end)
end)
