-- bfloat16, float16 and float64 through safetensors (ft.safetensors.load / save, the mmap
-- path) and HDF5 (ft.save / ft.load). Values and bits come from tests/gen/io_dtype.py
-- (PyTorch tensors and conversions, files written byte by byte or by h5py). The bits of a
-- loaded tensor are read from the data of a safetensors file it is saved to in its own dtype,
-- so a round trip is compared with the generator's bytes, never with ftlua's own output.
local ft = require "ft"
local H = require "helpers"

local FIXTURES = H.fixture("io_dtype")
local expected = dofile(FIXTURES .. "/expected.lua")
local quote = H.quote

-- ---- helpers ----------------------------------------------------------------------------

-- Exact equality that holds for NaN == NaN and tells -0.0 from 0.0.
local function same_number(a, b)
  if a ~= a or b ~= b then return a ~= a and b ~= b end
  if a == 0 and b == 0 then return 1 / a == 1 / b end
  return a == b
end

local function assert_values(actual, want, what)
  assert.are.equal(#want, #actual, what .. ": number of values")
  for i = 1, #want do
    if not same_number(actual[i], want[i]) then
      error(("%s: value %d is %s, expected %s"):format(what, i, tostring(actual[i]), tostring(want[i])), 2)
    end
  end
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- The data bytes of each tensor of a safetensors file, as hex, read by hand; and the header.
local function file_bits(path)
  local bytes = H.read_bytes(path)
  local n = string.unpack("<I8", bytes)
  local info = ft.safetensors.info(path)
  local out = {}
  for name, e in pairs(info) do
    out[name] = hex(bytes:sub(8 + n + e.data_offsets[1] + 1, 8 + n + e.data_offsets[2]))
  end
  return out, info, n
end

local dir
local function tmp(name) return dir .. "/" .. name end

-- The bits of tensor t in its own dtype (saved alone as a safetensors file).
local function bits_of(t)
  local path = tmp("bits.safetensors")
  ft.safetensors.save(path, {x = t})
  local bits, info = file_bits(path)
  os.remove(path)
  return bits.x, info.x.dtype
end

-- Bits (hex) of values of `size` bytes equal, except that any NaN matches any NaN: PyTorch
-- itself gives bfloat16 NaN as 0x7FC0 or 0xFFFF depending on its code path.
local NAN_BITS = {[2] = {0x7c00, 0x03ff}, [4] = {0x7f800000, 0x007fffff}, [8] = {0x7ff0000000000000, 0x000fffffffffffff}}
local function assert_bits_nan_any(got, want, dtype, what)
  local size = ({bfloat16 = 2, float16 = 2, float32 = 4, float64 = 8})[dtype]
  assert.are.equal(#want, #got, what .. ": number of bytes")
  local function is_nan(h, bf16)
    local v = 0
    for k = #h - 1, 1, -2 do v = (v << 8) | tonumber(h:sub(k, k + 1), 16) end   -- little-endian
    local exp, man = table.unpack(NAN_BITS[size])
    if bf16 then exp, man = 0x7f80, 0x007f end
    return v & exp == exp and v & man ~= 0
  end
  for i = 1, #want, 2 * size do
    local g, w = got:sub(i, i + 2 * size - 1), want:sub(i, i + 2 * size - 1)
    if g ~= w and not (is_nan(g, dtype == "bfloat16") and is_nan(w, dtype == "bfloat16")) then
      error(("%s: value %d has bits %s, expected %s (little-endian)"):format(what, (i - 1) // (2 * size) + 1, g, w), 2)
    end
  end
end

-- Checks tensor t against a generator entry {dtype =, shape =, values =, bits =}.
local function assert_tensor(t, want, what)
  assert.are.equal(want.dtype, t:dtype(), what .. ": dtype")
  assert.are.same(want.shape, t:shape(), what .. ": shape")
  assert_values((H.flat(t)), want.values, what)
  assert.are.equal(want.bits, (bits_of(t)), what .. ": bits")
end

-- Lines of /proc/self/maps naming path (a mapping of the file).
local function mappings_of(path)
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:sub(-#path) == path then n = n + 1 end
  end
  return n
end

-- Bytes ft holds (its own allocations, not mappings) after a full collection.
local function held_bytes()
  collectgarbage()
  collectgarbage()
  return ft.live_bytes()
end

local function copy_file(from, to)
  H.write_bytes(to, H.read_bytes(from))
  return to
end

before_each(function() dir = H.make_tmpdir("iodt") end)
after_each(function()
  collectgarbage("restart")
  os.execute("rm -rf " .. quote(dir))
end)

local TORCH = FIXTURES .. "/torch_dtypes.safetensors"
local MISALIGNED = FIXTURES .. "/misaligned.safetensors"

-- ---- safetensors ----------------------------------------------------------------------------

describe("ft.safetensors with bfloat16, float16 and float64", function()
  it("reads PyTorch's BF16, F16, F32, F64 and I64 tensors in their own dtype, bit for bit", function()
    local tensors, meta = ft.safetensors.load(TORCH)
    assert.are.same(sorted_keys(expected.tensors), sorted_keys(tensors))
    for name, want in pairs(expected.tensors) do assert_tensor(tensors[name], want, name) end
    assert.are.same({format = "pt"}, meta)
    -- info is unchanged: the format's names
    local info = ft.safetensors.info(TORCH)
    for name, want in pairs(expected.tensors) do assert.are.equal(want.stored, info[name].dtype, name) end
  end)

  it("writes each tensor in its own dtype, in the reference layout, bytes as PyTorch's", function()
    local path = tmp("round.safetensors")
    ft.safetensors.save(path, ft.safetensors.load(TORCH), {metadata = {format = "pt"}})
    local bits, info, n = file_bits(path)
    assert.are.equal(0, n % 8)
    for name, want in pairs(expected.tensors) do
      assert.are.equal(want.stored, info[name].dtype, name)
      assert.are.same(want.shape, info[name].shape, name)
      assert.are.equal(want.bits, bits[name], name .. ": bits on disk")
    end
    -- the generator's layout (larger elements first, then by name): the same offsets
    local want = ft.safetensors.info(TORCH)
    for name in pairs(expected.tensors) do assert.are.same(want[name].data_offsets, info[name].data_offsets, name) end
  end)

  it("converts float tensors while reading with {dtype = ...}, rounding as PyTorch does", function()
    for source, targets in pairs(expected.converted) do
      for target, want in pairs(targets) do
        local t = ft.safetensors.load(TORCH, {names = {source, "ids"}, dtype = target})
        local what = source .. " read as " .. target
        assert.are.equal(target, t[source]:dtype(), what)
        assert_values((H.flat(t[source])), want.values, what)
        assert_bits_nan_any((bits_of(t[source])), want.bits, target, what)
        assert.are.equal("int64", t.ids:dtype(), "integers stay int64")
        assert.are.equal(expected.tensors.ids.bits, (bits_of(t.ids)))
      end
    end
    -- ftlua's other names of dtypes
    assert.are.equal("float16", ft.safetensors.load(TORCH, {names = {"f32"}, dtype = "half"}).f32:dtype())
    assert.are.equal("float64", ft.safetensors.load(TORCH, {names = {"f32"}, dtype = "double"}).f32:dtype())
    assert.are.equal("float32", ft.safetensors.load(TORCH, {names = {"bf16"}, dtype = "float"}).bf16:dtype())
  end)

  it("converts float tensors on saving: a dtype for all of them, or one per tensor", function()
    local t = ft.safetensors.load(TORCH)
    local path = tmp("conv.safetensors")
    for _, case in ipairs({{"BF16", "bfloat16"}, {"bfloat16", "bfloat16"}, {"F16", "float16"}, {"half", "float16"},
                           {"F64", "float64"}, {"F32", "float32"}}) do
      ft.safetensors.save(path, {f32 = t.f32, f64 = t.f64, ids = t.ids}, {dtype = case[1]})
      local bits, info = file_bits(path)
      assert_bits_nan_any(bits.f32, expected.converted.f32[case[2]].bits, case[2], case[1] .. " f32")
      assert_bits_nan_any(bits.f64, expected.converted.f64[case[2]].bits, case[2], case[1] .. " f64")
      assert.are.equal("I64", info.ids.dtype)
      assert.are.equal(expected.tensors.ids.bits, bits.ids)
    end
    ft.safetensors.save(path, t, {dtype = {f64 = "F16", bf16 = "float32", ids = "I64", f16 = "F16"}})
    local bits, info = file_bits(path)
    assert.are.equal("F16", info.f64.dtype)
    assert.are.equal(expected.converted.f64.float16.bits, bits.f64)
    assert.are.equal("F32", info.bf16.dtype)
    assert.are.equal(expected.converted.bf16.float32.bits, bits.bf16)
    for _, name in ipairs({"f16", "f32", "bf16_2d", "f16_scalar", "f64_empty", "ids"}) do   -- their own
      assert.are.equal(expected.tensors[name].stored, info[name].dtype, name)
      assert.are.equal(expected.tensors[name].bits, bits[name], name)
    end
  end)

  it("refuses a dtype the format or the tensor does not allow, naming the tensor and the dtype", function()
    local t = ft.safetensors.load(TORCH, {names = {"f32", "ids"}})
    local path = tmp("bad.safetensors")
    local at = "ft.safetensors.save: cannot write '" .. path .. "': "
    local function save_err(opts) return H.error_of(ft.safetensors.save, path, t, opts) end
    assert.are.equal(at .. "tensor 'ids' is int64 and cannot be stored as BF16 (int64 tensors are stored as I64)",
                     save_err({dtype = {ids = "BF16"}}))
    assert.are.equal(at .. "tensor 'f32' is float32 and cannot be stored as I64 (float tensors are stored as "
                     .. "F64, F32, F16 or BF16)", save_err({dtype = {f32 = "int64"}}))
    assert.are.equal(at .. "tensor 'f32' cannot be stored as 'F33', which is not a dtype of the format (ftlua "
                     .. "writes F64, F32, F16, BF16 and I64)", save_err({dtype = {f32 = "F33"}}))
    assert.are.equal(at .. "tensor 'f32' cannot be stored as I32 (ftlua writes F64, F32, F16, BF16 and I64)",
                     save_err({dtype = {f32 = "I32"}}))
    H.assert_mentions(save_err({dtype = {w = "F16"}}),
                      "ft.safetensors.save: option 'dtype' names tensor 'w', which is not among the tensors")
    H.assert_mentions(save_err({dtype = "I64"}), "ft.safetensors.save: option 'dtype' must be a float dtype",
                      "int64 ones are stored as I64", "got 'I64'")
    H.assert_mentions(save_err({dtype = "F8_E4M3"}), "must be a float dtype", "got 'F8_E4M3'")
    H.assert_mentions(save_err({dtype = 16}), "option 'dtype' must be a dtype name or a table", "got number")
    assert.is_false(H.file_exists(path))

    local function load_err(opts) return H.error_of(ft.safetensors.load, TORCH, opts) end
    H.assert_mentions(load_err({dtype = "int64"}), "ft.safetensors.load: option 'dtype' converts the float "
                      .. "tensors, so it must be a float dtype", "got 'int64'")
    assert.are.equal("ft.safetensors.load: option 'dtype': unknown dtype 'float8' (float32, bfloat16, float16 or "
                     .. "float64)", load_err({dtype = "float8"}))
    H.assert_mentions(load_err({dtype = true}), "ft.safetensors.load: option 'dtype' must be a dtype name, got boolean")
    H.assert_mentions(load_err({mmap = "yes"}), "ft.safetensors.load: option 'mmap' must be a boolean, got string")
    H.assert_mentions(load_err({mmapp = true}), "unknown option 'mmapp'", "did you mean 'mmap'?")
  end)

  it("keeps integer dtypes as int64, and refuses a U64 value past INT64_MAX, mapped or not", function()
    local path = FIXTURES .. "/u64_big.safetensors"
    local msg = "ft.safetensors.load: '" .. path .. "': tensor 'counts' (U64) holds 9223372036854775813 at element 1, "
                .. "which does not fit int64"
    assert.are.equal(msg, H.error_of(ft.safetensors.load, path))
    assert.are.equal(msg, H.error_of(ft.safetensors.load, path, {mmap = true}))
    assert.are.equal(msg, H.error_of(ft.safetensors.load, path, {dtype = "float32"}))
    local m = ft.safetensors.load(MISALIGNED, {names = {"b_pad"}, dtype = "bfloat16"})
    assert.are.equal("int64", m.b_pad:dtype())
  end)
end)

-- ---- the mmap path ---------------------------------------------------------------------------

describe("ft.safetensors.load with mmap", function()
  it("gives the tensors of a copying load without copying them", function()
    local base = held_bytes()
    collectgarbage("stop")
    local mapped = ft.safetensors.load(TORCH, {mmap = true})
    assert.are.equal(base, ft.live_bytes(), "bytes allocated for mapped tensors")
    for name, want in pairs(expected.tensors) do assert_tensor(mapped[name], want, name) end
    collectgarbage("restart")
  end)

  it("maps copy-on-write: writing a tensor changes neither the file nor another load", function()
    local path = copy_file(TORCH, tmp("cow.safetensors"))
    local before = H.read_bytes(path)
    local a = ft.safetensors.load(path, {mmap = true})
    local b = ft.safetensors.load(path, {mmap = true})
    a.bf16:fill_(7)
    a.f64:fill_(-1.5)
    a.ids:fill_(3)
    for _, v in ipairs((H.flat(a.bf16))) do assert.are.equal(7, v) end
    assert.are.same({3, 3, 3, 3, 3}, a.ids:totable())
    assert.are.equal(before, H.read_bytes(path), "the file changed")
    for _, name in ipairs({"bf16", "f64", "ids"}) do
      assert_tensor(b[name], expected.tensors[name], "the other load's " .. name)
      assert_tensor(ft.safetensors.load(path)[name], expected.tensors[name], "a fresh load's " .. name)
    end
  end)

  it("unmaps the file when the last tensor over it is released, and loads it again", function()
    local path = copy_file(TORCH, tmp("release.safetensors"))
    local t = ft.safetensors.load(path, {mmap = true})
    assert.is_true(mappings_of(path) > 0, "not mapped")
    local view = t.bf16_2d:narrow(1, 2, 2)   -- a view keeps the storage, so the mapping
    local want = H.flat(t.bf16_2d)
    t = nil
    collectgarbage()
    collectgarbage()
    assert.is_true(mappings_of(path) > 0, "unmapped while a view of a tensor is alive")
    local got = H.flat(view)
    for i = 1, #got do assert.are.equal(want[i + 5], got[i]) end
    view = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, mappings_of(path), "still mapped after every tensor went")
    local again = ft.safetensors.load(path, {mmap = true})
    assert_tensor(again.f16, expected.tensors.f16, "f16 loaded again")
    -- a copying load leaves no mapping behind
    again = nil
    collectgarbage()
    local copied = ft.safetensors.load(path)
    assert.are.equal(0, mappings_of(path))
    assert_tensor(copied.bf16, expected.tensors.bf16, "bf16 copied")
  end)

  it("copies the tensors whose data is not aligned to their element size", function()
    local base = held_bytes()
    collectgarbage("stop")
    local t = ft.safetensors.load(MISALIGNED, {mmap = true})
    local copied = 0
    local size = {float64 = 8, int64 = 8, float32 = 4, float16 = 2, bfloat16 = 2}
    for name, want in pairs(expected.misaligned) do
      if not want.aligned then copied = copied + #want.values * size[want.dtype] end
      if want.stored == "U8" then copied = copied + #want.values * 8 end   -- decoded to int64
    end
    assert.are.equal(copied, ft.live_bytes() - base, "bytes copied")
    collectgarbage("restart")
    for name, want in pairs(expected.misaligned) do
      assert_tensor(t[name], want, name .. (want.aligned and " (mapped)" or " (copied)"))
    end
    local plain = ft.safetensors.load(MISALIGNED)
    for name, want in pairs(expected.misaligned) do assert_tensor(plain[name], want, name .. " (no mmap)") end
  end)

  it("maps what needs no conversion and converts the rest with {dtype = ...}", function()
    local base = held_bytes()
    collectgarbage("stop")
    local t = ft.safetensors.load(TORCH, {mmap = true, dtype = "bfloat16"})
    local converted = 0
    for name, want in pairs(expected.tensors) do
      if want.stored ~= "BF16" and want.stored ~= "I64" then converted = converted + 2 * #want.values end
    end
    assert.are.equal(converted, ft.live_bytes() - base, "bytes of the converted tensors")
    collectgarbage("restart")
    for source, targets in pairs(expected.converted) do
      assert.are.equal("bfloat16", t[source]:dtype(), source)
      assert_bits_nan_any((bits_of(t[source])), targets.bfloat16.bits, "bfloat16", source)
    end
    assert.are.equal("int64", t.ids:dtype())
  end)

  it("checks the whole header first: every corrupt file fails as without mmap", function()
    local bad = H.fixture("safetensors")
    local n = 0
    for name in pairs(ft._listdir(bad)) do
      if name:match("^bad_.*%.safetensors$") then
        local path = bad .. "/" .. name
        local plain = H.error_of(ft.safetensors.load, path)
        assert.are.equal(plain, H.error_of(ft.safetensors.load, path, {mmap = true}), name)
        n = n + 1
      end
    end
    assert.is_true(n >= 15, "corrupt fixtures found: " .. n)
    local unsupported = H.fixture("safetensors") .. "/unsupported_dtype.safetensors"
    H.assert_mentions(H.error_of(ft.safetensors.load, unsupported, {mmap = true}), "tensor 'fp8' has dtype F8_E4M3")
  end)

  it("keeps the mapped values when the file is saved over (the writer renames)", function()
    local path = copy_file(TORCH, tmp("over.safetensors"))
    local mapped = ft.safetensors.load(path, {mmap = true})
    ft.safetensors.save(path, {f16 = ft.safetensors.load(TORCH, {names = {"f64"}, dtype = "float16"}).f64})
    assert_tensor(mapped.f16, expected.tensors.f16, "the mapped f16")
    assert.are.equal(expected.converted.f64.float16.bits, (bits_of(ft.safetensors.load(path).f16)))
  end)
end)

-- ---- HDF5 --------------------------------------------------------------------------------------

describe("ft.save / ft.load with bfloat16, float16 and float64", function()
  it("round-trips every dtype bit for bit", function()
    for _, mmap in ipairs({false, true}) do
      local path = tmp("round.h5")
      ft.save(path, ft.safetensors.load(TORCH, {mmap = mmap}), {metadata = {step = 3}})
      local back, meta = ft.load(path)
      assert.are.same(sorted_keys(expected.tensors), sorted_keys(back))
      for name, want in pairs(expected.tensors) do assert_tensor(back[name], want, name) end
      assert.are.equal(3, meta.step)
    end
  end)

  it("reads what h5py wrote (float16 and float64 of either byte order, bfloat16) in its own dtype", function()
    local tensors, meta = ft.load(FIXTURES .. "/h5py_dtypes.h5")
    assert.are.same(sorted_keys(expected.h5py), sorted_keys(tensors))
    for name, want in pairs(expected.h5py) do assert_tensor(tensors[name], want, name) end
    assert.are.equal("written by h5py", meta.note)
  end)

  it("names the dataset and the layout of a float type it does not read", function()
    local path = FIXTURES .. "/h5py_float24.h5"
    assert.are.equal("ft.load: dataset '/weights24' in '" .. path .. "' is a float of a layout ftlua does not "
                     .. "read: 24 bits: sign bit 23, 7 exponent bits at 16 with bias 63, 16 mantissa bits at 0, "
                     .. "implied leading 1, little-endian (it reads IEEE float16, float32 and float64, and "
                     .. "bfloat16: 16 bits, sign bit 15, 8 exponent bits at 7 with bias 127, 7 mantissa bits at 0)",
                     H.error_of(ft.load, path))
  end)
end)
