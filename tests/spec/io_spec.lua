-- File formats: HDF5 checkpoints (ft.save / ft.load), PNG (ft.image), IDX (ft._idx_read).
-- Expected values come from tests/gen/io.py (PNGs encoded byte by byte, HDF5
-- written by h5py) and from h5py itself at test time.
local ft = require "ft"
local H = require "helpers"

local FIXTURES = assert(os.getenv("FT_FIXTURES"), "FT_FIXTURES is not set") .. "/io"
local expected = dofile(FIXTURES .. "/expected.lua")
local PYTHON = H.PYTHON

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("io") end
local read_bytes = H.read_bytes
local write_bytes = H.write_bytes

-- ---- helpers --------------------------------------------------------------------------

local function listdir(dir)
  local names = {}
  for name in pairs(ft._listdir(dir)) do names[#names + 1] = name end
  table.sort(names)
  return names
end

local function flatten(t, out)
  out = out or {}
  if type(t) ~= "table" then
    out[#out + 1] = t
    return out
  end
  for _, v in ipairs(t) do flatten(v, out) end
  return out
end

local function values(t)
  return flatten(t:totable())
end

local function assert_values(actual, want, tol, what)
  assert.are.equal(#want, #actual, (what or "") .. ": number of values")
  for i = 1, #want do
    if math.abs(actual[i] - want[i]) > (tol or 0) then
      error(("%s: value %d is %s, expected %s"):format(what or "", i, tostring(actual[i]), tostring(want[i])), 2)
    end
  end
end

local function has_h5py()
  return (run(PYTHON .. " -c 'import h5py, numpy'"))
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Literal substring search (file names contain magic characters like '-' and '.').
local function assert_contains(haystack, needle)
  if not haystack:find(needle, 1, true) then
    error(("expected %q to contain %q"):format(haystack, needle), 2)
  end
end

-- ---- HDF5 checkpoints ----------------------------------------------------------------

describe("ft.save / ft.load", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("chmod -R u+w " .. quote(dir) .. "; rm -rf " .. quote(dir)) end)

  it("round-trips float32 and int64 tensors of every rank under dotted names", function()
    local sd = {
      ["layer1.0.conv1.weight"] = ft.randn(4, 3, 3, 3),
      ["layer1.0.conv1.bias"] = ft.randn(4),
      ["layer1.0.bn1.num_batches_tracked"] = ft.tensor(7, {dtype = "int64"}),   -- 0-dim
      ["fc.weight"] = ft.randn(10, 8),
      ["ids"] = ft.tensor({{1, -2, 3}, {2 ^ 40, 5, 6}}, {dtype = "int64"}),
      ["deep"] = ft.randn(2, 1, 3, 1, 2),
      ["empty"] = ft.zeros(0, 3),
    }
    local path = dir .. "/ck.h5"
    ft.save(path, sd)
    local back = ft.load(path)
    local n = 0
    for name, t in pairs(back) do
      n = n + 1
      local want = assert(sd[name], "unexpected name " .. name)
      assert.are.same(want:shape(), t:shape(), name)
      assert.are.equal(want:dtype(), t:dtype(), name)
      if t:numel() > 0 then assert_values(values(t), values(want), 0, name) end
    end
    assert.are.equal(7, n)
    assert.are.equal("int64", back["layer1.0.bn1.num_batches_tracked"]:dtype())
    assert.are.equal(7, back["layer1.0.bn1.num_batches_tracked"]:item())
    assert.are.equal(math.tointeger(2 ^ 40), back.ids:totable()[2][1])
  end)

  it("writes one dataset per tensor with dots as groups, as h5ls shows", function()
    local path = dir .. "/ck.h5"
    ft.save(path, {["layer1.0.conv1.weight"] = ft.zeros(2, 2), ["fc.bias"] = ft.zeros(3)})
    local ok, out = run("h5ls -r " .. quote(path))
    if not ok and out:find("not found") then pending("h5ls (Debian hdf5-tools) is not installed") end
    assert.is_true(ok, out)
    assert.truthy(out:find("/layer1/0/conv1/weight%s+Dataset {2, 2}"), out)
    assert.truthy(out:find("/fc/bias%s+Dataset {3}"), out)
  end)

  it("flattens nested tables with dots and saves non-contiguous tensors by value", function()
    local w = ft.tensor({{1, 2, 3}, {4, 5, 6}})
    local path = dir .. "/nested.h5"
    ft.save(path, {layer1 = {[0] = {conv1 = {weight = w:t()}}}, head = {w}})
    local back = ft.load(path)
    assert.are.same({3, 2}, back["layer1.0.conv1.weight"]:shape())
    assert.are.same({{1, 4}, {2, 5}, {3, 6}}, back["layer1.0.conv1.weight"]:totable())
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, back["head.1"]:totable())
  end)

  it("stores metadata as attributes on / and returns them", function()
    local path = dir .. "/meta.h5"
    local config = '{"model": "resnet18", "num_classes": 10}'
    ft.save(path, {w = ft.ones(2)}, {metadata = {step = 1200, lr = 0.125, config = config, name = "run-1"}})
    local tensors, meta = ft.load(path)
    assert.are.same({1, 1}, tensors.w:totable())
    assert.are.equal("ftlua-1", meta.format)
    assert.are.equal(1200, meta.step)
    assert.are.equal("integer", math.type(meta.step))
    assert.are.equal(0.125, meta.lr)
    assert.are.equal(config, meta.config)
    assert.are.equal("run-1", meta.name)
  end)

  it("rejects bad metadata and reserved keys", function()
    local path = dir .. "/bad.h5"
    assert_contains(error_of(ft.save, path, {w = ft.ones(1)}, {metadata = {opts = {1, 2}}}), "metadata 'opts' is a table")
    assert_contains(error_of(ft.save, path, {w = ft.ones(1)}, {metadata = {format = "x"}}), "reserved")
    assert.are.same({}, listdir(dir))
  end)

  it("takes m:state_dict()'s second result, the names in order, where its options go", function()
    local m = ft.nn.Linear(2, 3)
    ft.save(dir .. "/sd.h5", m:state_dict())
    ft.safetensors.save(dir .. "/sd.safetensors", m:state_dict())
    local a, b = ft.load(dir .. "/sd.h5"), ft.safetensors.load(dir .. "/sd.safetensors")
    for _, t in ipairs({ a, b }) do
      assert.are.same({ 3, 2 }, t.weight:shape())
      assert.are.same({ 3 }, t.bias:shape())
    end
    -- a list holding anything else is still an options table, and checked
    H.assert_mentions(error_of(ft.save, dir .. "/sd.h5", m:state_dict(), { "weight", 3 }), "ft.save: option keys")
  end)

  it("names its metadata option as ft.safetensors.save does and checks its options", function()
    local path = dir .. "/opts.h5"
    ft.save(path, {w = ft.ones(1)}, { metadata = {step = 3}})
    assert.are.equal(3, select(2, ft.load(path)).step)
    H.assert_mentions(error_of(ft.save, path, {w = ft.ones(1)}, {metdata = {step = 1}}),
      "ft.save: unknown option 'metdata'", "did you mean 'metadata'?")
    H.assert_mentions(error_of(ft.save, path, {w = ft.ones(1)}, {meta = {b = 2}}),
      "ft.save: unknown option 'meta' (valid options: metadata)")
    assert_contains(error_of(ft.save, path, {w = ft.ones(1)}, {metadata = "x"}),
      "ft.save: option 'metadata' must be a table")
    assert_contains(error_of(ft.save, path, {w = ft.ones(1)}, "metadata"), "ft.save: options must be a table")
    assert.are.equal(3, select(2, ft.load(path)).step)
  end)

  it("rejects names that cannot become HDF5 paths", function()
    local path = dir .. "/names.h5"
    assert_contains(error_of(ft.save, path, {a = ft.ones(1), ["a.b"] = ft.ones(1)}), "'a' and 'a.b' conflict")
    assert_contains(error_of(ft.save, path, {["a..b"] = ft.ones(1)}), "invalid tensor name 'a..b'")
    assert_contains(error_of(ft.save, path, {["a/b"] = ft.ones(1)}), "invalid tensor name 'a/b'")
    assert_contains(error_of(ft.save, path, {["a.b"] = ft.ones(1), a = {b = ft.ones(1)}}), "'a.b' is given twice")
    assert.are.same({}, listdir(dir))
  end)

  it("leaves the previous file untouched when a value is not a tensor", function()
    local path = dir .. "/ck.h5"
    ft.save(path, {w = ft.full({3}, 5)})
    local before = read_bytes(path)
    local err = error_of(ft.save, path, {w = ft.ones(3), opt = {lr = 0.1}})
    assert_contains(err, "ft.save: the value at 'opt.lr' is a number")
    assert.are.equal(before, read_bytes(path))
    assert.are.same({5, 5, 5}, ft.load(path).w:totable())
    assert.are.same({"ck.h5"}, listdir(dir))
  end)

  it("leaves the previous file untouched when the disk refuses the data", function()
    -- A file size limit (as a full disk would) stops the second, larger checkpoint.
    local path = dir .. "/ck.h5"
    ft.save(path, {w = ft.full({3}, 5)})
    local before = read_bytes(path)
    local script = dir .. "/big.lua"
    write_bytes(script, ([[
      local ft = require "ft"
      local ok, err = pcall(ft.save, %q, {w = ft.zeros(1000, 1000)})
      io.write(tostring(ok), " ", tostring(err))
    ]]):format(path))
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local ok, out = run("bash -c " .. quote("trap '' XFSZ; ulimit -f 1024; " .. quote(ftlua) .. " " .. quote(script)))
    assert.is_true(ok, out)
    assert_contains(out, "false ft.save: cannot write '" .. path .. "': File too large")
    assert.are.equal(before, read_bytes(path))
    assert.are.same({"big.lua", "ck.h5"}, listdir(dir))
  end)

  it("raises a clear error for a folder that cannot be written", function()
    local err = error_of(ft.save, dir .. "/no/such/dir/ck.h5", {w = ft.ones(1)})
    assert_contains(err, "ft.save: cannot write '" .. dir .. "/no/such/dir/ck.h5': No such file or directory")
    os.execute("mkdir " .. quote(dir .. "/ro") .. " && chmod a-w " .. quote(dir .. "/ro"))
    local ok = pcall(ft.save, dir .. "/ro/ck.h5", {w = ft.ones(1)})
    if ok then pending("running as root: permissions do not stop writes") end
    assert_contains(error_of(ft.save, dir .. "/ro/ck.h5", {w = ft.ones(1)}), "Permission denied")
  end)

  it("reports a missing file", function()
    local ok, err = pcall(ft.load, "x.h5")
    assert.is_false(ok)
    assert.are.equal("ft.load: cannot open 'x.h5': No such file or directory", err)
  end)

  it("reports a truncated file, naming it", function()
    local path = FIXTURES .. "/truncated.h5"
    local err = error_of(ft.load, path)
    assert_contains(err, "ft.load: cannot read '" .. path .. "': corrupt or truncated HDF5 file")
    assert_contains(err, "truncated file")
  end)

  it("reports a corrupt file, naming it", function()
    local path = FIXTURES .. "/corrupt.h5"
    assert_contains(error_of(ft.load, path), "ft.load: cannot read '" .. path .. "'")
  end)

  it("reports a file that is not HDF5, naming it", function()
    local path = FIXTURES .. "/not_hdf5.h5"
    assert.are.equal("ft.load: '" .. path .. "' is not an HDF5 file (no HDF5 signature)", error_of(ft.load, path))
  end)

  it("refuses a string attribute whose global heap would send libhdf5 into an endless walk", function()
    -- h5py_plain.h5's one global heap collection, with its free space (after the first
    -- object) claiming 0 bytes: libhdf5 1.10 walks such a collection forever.
    local bytes = H.read_bytes(FIXTURES .. "/h5py_plain.h5")
    local at = assert(bytes:find("GCOL", 1, true))
    local free_size = at + 48 + 8   -- 1-based: the free space object's size field
    assert.are.equal(0, string.unpack("<I2", bytes, at + 48), "the free space object is where it was")
    local path = H.make_tmpdir("io") .. "/heap_loop.h5"
    H.write_bytes(path, bytes:sub(1, free_size - 1) .. string.pack("<I8", 0) .. bytes:sub(free_size + 8))
    assert_contains(error_of(ft.load, path), "the file's global heap is corrupt")
  end)

  it("loads a file written by h5py (committed fixture)", function()
    local tensors, meta = ft.load(FIXTURES .. "/h5py_plain.h5")
    local n = 0
    for name, want in pairs(expected.h5) do
      n = n + 1
      local t = assert(tensors[name], "missing " .. name)
      assert.are.equal(want.dtype, t:dtype(), name)
      assert.are.same(want.shape, t:shape(), name)
      assert_values(values(t), want.values, 0, name)
    end
    for _ in pairs(tensors) do n = n - 1 end
    assert.are.equal(0, n)
    for k, v in pairs(expected.h5_meta) do assert.are.equal(v, meta[k], k) end
    assert.is_nil(meta.vector)   -- array attributes are skipped
  end)

  describe("h5py interop", function()
    it("loads what h5py writes", function()
      if not has_h5py() then pending("h5py is not importable by " .. PYTHON .. " (Debian python3-h5py)") end
      local path = dir .. "/from_h5py.h5"
      local py = dir .. "/write.py"
      write_bytes(py, [==[
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f["encoder/layers/0/attn/q_proj/weight"] = np.arange(12, dtype=np.float64).reshape(3, 4) / 3
    f["encoder/layers/0/attn/q_proj/bias"] = np.array([1.5, -2.5], dtype=np.float32)
    f.create_dataset("tokens", data=np.array([[3, 1], [4, 1]], dtype=np.int32), compression="gzip")
    f["big"] = np.array([2**40, -7], dtype=np.int64)
    f["mask"] = np.array([0, 1, 255], dtype=np.uint8)
    f["scalar"] = np.float32(2.5)
    f.attrs["epoch"] = 3
    f.attrs["tag"] = "h5py"
]==])
      local ok, out = run(PYTHON .. " " .. quote(py) .. " " .. quote(path))
      assert.is_true(ok, out)
      local t, meta = ft.load(path)
      local w = t["encoder.layers.0.attn.q_proj.weight"]
      assert.are.equal("float64", w:dtype())   -- h5py's float64, kept
      assert.are.same({3, 4}, w:shape())
      assert_values(values(w), {0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 3, 10 / 3, 11 / 3}, 1e-6, "weight")
      assert.are.same({1.5, -2.5}, t["encoder.layers.0.attn.q_proj.bias"]:totable())
      assert.are.equal("int64", t.tokens:dtype())
      assert.are.same({{3, 1}, {4, 1}}, t.tokens:totable())
      assert.are.same({math.tointeger(2 ^ 40), -7}, t.big:totable())
      assert.are.equal("int64", t.mask:dtype())
      assert.are.same({0, 1, 255}, t.mask:totable())
      assert.are.same({}, t.scalar:shape())
      assert.are.equal(2.5, t.scalar:item())
      assert.are.equal(3, meta.epoch)
      assert.are.equal("h5py", meta.tag)
    end)

    it("writes what h5py reads, at the dotted paths", function()
      if not has_h5py() then pending("h5py is not importable by " .. PYTHON .. " (Debian python3-h5py)") end
      local path = dir .. "/for_h5py.h5"
      ft.save(path, {
        ["layer1.0.conv1.weight"] = ft.tensor({{{0.5, -1}, {2, 3.25}}}),
        ["labels"] = ft.tensor({1, 10, 3}, {dtype = "int64"}),
        ["step_count"] = ft.tensor(12, {dtype = "int64"}),
      }, { metadata = {step = 7, config = '{"lr": 0.1}', lr = 0.25}})
      local py = dir .. "/read.py"
      write_bytes(py, [==[
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
names = []
f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
assert sorted(names) == ["labels", "layer1/0/conv1/weight", "step_count"], names
w = f["layer1/0/conv1/weight"]
assert w.dtype == np.float32 and w.shape == (1, 2, 2), (w.dtype, w.shape)
assert (w[()] == np.array([[[0.5, -1], [2, 3.25]]], dtype=np.float32)).all(), w[()]
assert w.compression is None
l = f["labels"]
assert l.dtype == np.int64 and list(l[()]) == [1, 10, 3], l[()]
assert f["step_count"].shape == () and f["step_count"][()] == 12
assert f.attrs["format"] == "ftlua-1", f.attrs["format"]
assert f.attrs["step"] == 7 and f.attrs["lr"] == 0.25
assert f.attrs["config"] == '{"lr": 0.1}', f.attrs["config"]
print("OK")
]==])
      local ok, out = run(PYTHON .. " " .. quote(py) .. " " .. quote(path))
      assert.is_true(ok, out)
      assert_contains(out, "OK")
    end)
  end)
end)

-- ---- PNG --------------------------------------------------------------------------------

describe("ft.image", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  local names = {}
  for name in pairs(expected.png) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it("loads " .. name .. ".png as C x H x W in [0,1]", function()
      local want = expected.png[name]
      local img = ft.image.load(FIXTURES .. "/" .. name .. ".png")
      assert.are.equal("float32", img:dtype())
      assert.are.same(want.shape, img:shape())
      local scaled = {}
      for i, v in ipairs(want.values) do scaled[i] = v / want.max end
      assert_values(values(img), scaled, 1e-6, name)
    end)
  end

  it("round-trips 8-bit values exactly for C = 1, 3, 4 and [H,W]", function()
    for _, shape in ipairs{{1, 5, 7}, {3, 4, 6}, {4, 3, 2}, {6, 5}} do
      local q = (ft.rand(table.unpack(shape)) * 255 + 0.5):totable()
      local function quantize(t)
        if type(t) == "number" then return math.floor(t) / 255 end
        local out = {}
        for i, v in ipairs(t) do out[i] = quantize(v) end
        return out
      end
      local img = ft.tensor(quantize(q))
      local path = dir .. "/img.png"
      ft.image.save(path, img)
      local back = ft.image.load(path)
      local want_shape = #shape == 2 and {1, shape[1], shape[2]} or shape
      assert.are.same(want_shape, back:shape())
      assert_values(values(back), values(img), 1e-6, table.concat(shape, "x"))
    end
  end)

  it("clamps to [0,1] and rounds to the nearest 8-bit level", function()
    local path = dir .. "/clamp.png"
    ft.image.save(path, ft.tensor({{-0.5, 1.7, 0.3 / 255, 0.6 / 255, 0.5, 0 / 0}}))
    local got = values(ft.image.load(path))
    assert_values(got, {0, 1, 0, 1 / 255, 128 / 255, 0}, 1e-6, "clamped")
  end)

  it("writes PNGs that another decoder reads", function()
    local ok = run(PYTHON .. " -c 'import PIL'")
    if not ok then pending("PIL is not importable by " .. PYTHON .. " (Debian python3-pil)") end
    local path = dir .. "/rgb.png"
    ft.image.save(path, ft.tensor({{{0, 1}}, {{1, 0}}, {{0.2, 0.4}}}))   -- [3,1,2]
    local out
    ok, out = run(PYTHON .. " -c " .. quote("import sys; from PIL import Image; im = Image.open(sys.argv[1]); "
      .. "print(im.mode, im.size, list(im.getdata()))") .. " " .. quote(path))
    assert.is_true(ok, out)
    assert_contains(out, "RGB (2, 1) [(0, 255, 51), (255, 0, 102)]")
  end)

  it("replaces files atomically and keeps the old one on failure", function()
    local path = dir .. "/a.png"
    ft.image.save(path, ft.ones(1, 2, 2))
    local before = read_bytes(path)
    assert_contains(error_of(ft.image.save, path, ft.ones(5, 2, 2)), "ft.image.save: cannot save '" .. path .. "'")
    assert_contains(error_of(ft.image.save, path, ft.ones(2, 2):long()), "float32")
    assert.are.equal(before, read_bytes(path))
    assert.are.same({"a.png"}, listdir(dir))
    assert_contains(error_of(ft.image.save, dir .. "/missing/a.png", ft.ones(2, 2)),
                    "cannot write '" .. dir .. "/missing/a.png': No such file or directory")
  end)

  it("reports a truncated PNG, naming it", function()
    local path = FIXTURES .. "/truncated.png"
    local err = error_of(ft.image.load, path)
    assert_contains(err, "ft.image.load: cannot decode '" .. path .. "'")
  end)

  it("reports a PNG with a bad checksum, naming it", function()
    local path = FIXTURES .. "/bad_crc.png"
    local err = error_of(ft.image.load, path)
    assert_contains(err, "ft.image.load: cannot decode '" .. path .. "'")
    assert_contains(err, "CRC")
  end)

  it("reports a PNG with corrupt image data, naming it", function()
    local path = FIXTURES .. "/bad_data.png"
    assert_contains(error_of(ft.image.load, path), "ft.image.load: cannot decode '" .. path .. "'")
  end)

  it("reports a file that is not a PNG, naming it", function()
    local path = FIXTURES .. "/not_a.png"
    assert.are.equal("ft.image.load: '" .. path .. "' is not a PNG file (no PNG signature)", error_of(ft.image.load, path))
    assert.are.equal("ft.image.load: cannot open 'nope.png': No such file or directory", error_of(ft.image.load, "nope.png"))
  end)
end)

-- ---- IDX --------------------------------------------------------------------------------

describe("ft._idx_read", function()
  it("reads gzip-compressed and plain IDX files", function()
    local want = expected.idx.images
    for _, name in ipairs{"images-idx3-ubyte.gz", "images-idx3-ubyte"} do
      local t = ft._idx_read(FIXTURES .. "/" .. name)
      assert.are.equal("float32", t:dtype())
      assert.are.same(want.shape, t:shape())
      assert_values(values(t), want.values, 0, name)
    end
    local scaled = ft._idx_read(FIXTURES .. "/images-idx3-ubyte.gz", {scale = 1 / 255})
    local w = {}
    for i, v in ipairs(want.values) do w[i] = v / 255 end
    assert_values(values(scaled), w, 1e-6, "scaled")
    local labels = ft._idx_read(FIXTURES .. "/labels-idx1-ubyte.gz", {dtype = "int64", offset = 1})
    assert.are.equal("int64", labels:dtype())
    local l = {}
    for i, v in ipairs(expected.idx.labels.values) do l[i] = v + 1 end
    assert.are.same(l, labels:totable())
  end)

  it("reports a truncated plain file with expected and actual sizes", function()
    local path = FIXTURES .. "/truncated-idx3-ubyte"
    assert.are.equal("ft._idx_read: '" .. path .. "' is truncated: the header says [3,4,5] values of 1 byte "
                     .. "= 60 bytes of data, the file has 53", error_of(ft._idx_read, path))
  end)

  it("reports a truncated gzip file with expected and actual sizes", function()
    local path = FIXTURES .. "/truncated-idx3-ubyte.gz"
    local err = error_of(ft._idx_read, path)
    assert_contains(err, "ft._idx_read: '" .. path .. "' is truncated: the header says [3,4,5] values of 1 byte = 60 bytes of data, the file has ")
  end)

  it("reports a corrupt gzip file, naming it", function()
    local path = FIXTURES .. "/bad_crc-idx3-ubyte.gz"
    assert_contains(error_of(ft._idx_read, path), "ft._idx_read: cannot read '" .. path .. "': corrupt gzip data")
  end)

  it("reports a bad magic number and data the header does not describe", function()
    local path = FIXTURES .. "/bad_magic-idx3-ubyte"
    assert.are.equal("ft._idx_read: '" .. path .. "' is not an IDX file (bad magic number)", error_of(ft._idx_read, path))
    path = FIXTURES .. "/trailing-idx3-ubyte"
    assert_contains(error_of(ft._idx_read, path), "'" .. path .. "' has more data than its header says ([3,4,5] = 60 bytes)")
    assert.are.equal("ft._idx_read: cannot open 'none.gz': No such file or directory", error_of(ft._idx_read, "none.gz"))
  end)

  it("refuses bytes after the gzip stream and checks its options", function()
    local gz = H.read_bytes(FIXTURES .. "/images-idx3-ubyte.gz")
    local tmp = make_tmpdir()
    local path = tmp .. "/tail-idx3-ubyte.gz"
    H.write_bytes(path, gz .. "tail")
    assert_contains(error_of(ft._idx_read, path), "'" .. path .. "' has 4 bytes of trailing garbage after its gzip data")
    H.write_bytes(path, gz .. gz)   -- concatenated members are one stream: twice the data
    assert_contains(error_of(ft._idx_read, path), "has more data than its header says")
    H.assert_mentions(error_of(ft._idx_read, FIXTURES .. "/images-idx3-ubyte.gz", {scael = 2}),
                      "ft._idx_read: unknown option 'scael'", "did you mean 'scale'?")
    run("rm -rf '" .. tmp .. "'")
  end)
end)
