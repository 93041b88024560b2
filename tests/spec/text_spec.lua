-- ft.text: the fortunes reader, the split by entry, byte streams and their batches, and a
-- smoke run of scripts/pretrain_text.lua.
-- The tests on the real corpus need Debian's fortunes package (or FT_FORTUNES_DIR); without
-- it they are marked pending. The reader's format tests use files written here.
local ft = require "ft"
local H = require "helpers"

local FORTUNES_DIR = os.getenv("FT_FORTUNES_DIR") or "/usr/share/games/fortunes"
local HELD_OUT = { "computers", "politics", "science", "songs-poems" }   -- as scripts/pretrain_text.lua

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("text") end
local write = H.write_bytes

local exists = H.file_exists

local function have_fortunes()
  return exists(FORTUNES_DIR .. "/fortunes") or exists(FORTUNES_DIR .. "/wisdom")
end

local function need_fortunes()
  if not have_fortunes() then
    pending("the fortunes corpus is not in " .. FORTUNES_DIR .. ": apt-get install fortunes (or set FT_FORTUNES_DIR)")
    return false
  end
  return true
end

-- Number of entries strfile(1) counted when it built <category>.dat (the str_numstr field of
-- its big-endian header), an independent count to check the reader against.
local function strfile_count(category)
  local f = io.open(FORTUNES_DIR .. "/" .. category .. ".dat", "rb")
  if not f then return nil end
  local header = f:read(24)
  f:close()
  local _, numstr = string.unpack(">I4I4", header)
  return numstr
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("ft.text fortune files", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("splits entries on lines holding a single %", function()
    write(dir .. "/a", "%\nfirst\n  line two\n%\n\n%\n50% off\n%%\nlast, no final separator\n")
    assert.are.same({ "first\n  line two", "50% off\n%%\nlast, no final separator" },
      ft.text.read_fortune_file(dir .. "/a"))
    write(dir .. "/b", "one\r\n%\r\ntwo\r\n%\r\n")
    assert.are.same({ "one", "two" }, ft.text.read_fortune_file(dir .. "/b"))
  end)

  it("lists categories without index files, .u8 links or duplicate links", function()
    write(dir .. "/beta", "b1\n%\nb2\n%\n")
    write(dir .. "/alpha", "a1\n%\n")
    write(dir .. "/alpha.dat", "\0\0\0\2")
    os.execute("ln -s alpha " .. quote(dir .. "/alpha.u8"))
    os.execute("ln -s beta " .. quote(dir .. "/gamma"))   -- the same file under another name
    assert.are.same({ "alpha", "beta" }, ft.text.fortune_categories({ dir = dir }))
    assert.are.same({ alpha = { "a1" }, beta = { "b1", "b2" } }, ft.text.fortunes({ dir = dir }))
    assert.are.same({ beta = { "b1", "b2" } }, ft.text.fortunes({ dir = dir, exclude = { "alpha" } }))
    assert.are.same({ alpha = { "a1" } }, ft.text.fortunes({ dir = dir, categories = { "alpha" } }))
    assert.matches("no category 'delta'", error_of(ft.text.fortunes, { dir = dir, categories = { "delta" } }))
  end)

  it("says how to get the corpus when it is missing", function()
    local err = error_of(ft.text.fortunes, { dir = dir .. "/nonexistent" })
    assert.matches("apt%-get install fortunes", err)
    assert.matches("nonexistent", err)
  end)
end)

describe("ft.text.fortunes (Debian's fortunes package)", function()
  it("finds the categories and reads non-empty entries", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    assert.is_true(#cats >= 1)
    local seen = {}
    for _, name in ipairs(cats) do
      assert.is_nil(name:find("%."), "an index or link file listed: " .. name)
      assert.is_nil(seen[name])
      seen[name] = true
    end
    local corpus = ft.text.fortunes()
    assert.are.same(cats, ft.text.categories(corpus))
    for name, entries in pairs(corpus) do
      assert.is_true(#entries > 0, name .. " has no entries")
      local want = strfile_count(name)
      if want then assert.are.equal(want, #entries, name .. ": strfile counted " .. want) end
      for i, e in ipairs(entries) do
        assert.is_truthy(e:find("%S"), ("%s entry %d is blank"):format(name, i))
        assert.is_nil(e:find("\n%%\n"), ("%s entry %d holds a separator line"):format(name, i))
        assert.is_nil(e:find("%s$"), ("%s entry %d ends in whitespace"):format(name, i))
      end
    end
  end)

  it("has the categories held out from pretraining", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    if not contains(cats, "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    for _, name in ipairs(HELD_OUT) do assert.is_true(contains(cats, name), name) end
  end)
end)

describe("ft.text.split", function()
  local entries = {}
  for i = 1, 2000 do entries[i] = "entry number " .. i end
  entries[#entries + 1] = "entry number 7"   -- a duplicate

  it("is deterministic, disjoint and complete, and keeps the order", function()
    local tr1, va1 = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    local tr2, va2 = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    assert.are.same(tr1, tr2)
    assert.are.same(va1, va2)
    assert.are.equal(#entries, #tr1 + #va1)
    assert.is_true(#va1 > 140 and #va1 < 260, "validation size " .. #va1)
    local in_val = {}
    for _, e in ipairs(va1) do in_val[e] = true end
    for _, e in ipairs(tr1) do assert.is_nil(in_val[e], "in both: " .. e) end
    -- order kept: the train list is the input with the validation entries taken out
    local rest = {}
    for _, e in ipairs(entries) do if not in_val[e] then rest[#rest + 1] = e end end
    assert.are.same(rest, tr1)
  end)

  it("does not depend on the order of the list", function()
    local reversed = {}
    for i = #entries, 1, -1 do reversed[#reversed + 1] = entries[i] end
    local _, va = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    local _, vr = ft.text.split(reversed, { val_fraction = 0.1, seed = 3 })
    table.sort(va)
    table.sort(vr)
    assert.are.same(va, vr)
  end)

  it("changes with the seed and covers the extremes", function()
    local _, a = ft.text.split(entries, { val_fraction = 0.1, seed = 1 })
    local _, b = ft.text.split(entries, { val_fraction = 0.1, seed = 2 })
    assert.are_not.same(a, b)
    local tr0, va0 = ft.text.split(entries, { val_fraction = 0, seed = 1 })
    assert.are.equal(#entries, #tr0)
    assert.are.equal(0, #va0)
    local tr1, va1 = ft.text.split(entries, { val_fraction = 1, seed = 1 })
    assert.are.equal(0, #tr1)
    assert.are.equal(#entries, #va1)
    assert.matches("val_fraction", error_of(ft.text.split, entries, { val_fraction = 2 }))
  end)
end)

describe("ft.text.byte_dataset", function()
  local entries = { "The quick brown fox", "jumps over", "the lazy dog." }
  local stream = table.concat(entries, "\0") .. "\0"

  it("joins the entries with the separator after each one, as byte ids", function()
    local ds = ft.text.byte_dataset(entries, { context = 8 })
    assert.are.equal("int64", ds.ids:dtype())
    assert.are.equal(#stream, ds.ids:numel())
    local ids = ds.ids:totable()
    for i = 1, #stream do assert.are.equal(stream:byte(i) + 1, ids[i]) end
    local nl = ft.text.byte_dataset(entries, { context = 8, separator = "\n%\n" })
    assert.are.equal(#table.concat(entries, "\n%\n") + 3, #nl)
    assert.matches("fewer than one window", error_of(ft.text.byte_dataset, { "ab" }, { context = 8 }))
  end)

  it("samples x, y int64 [B,T] windows with y the next bytes", function()
    local T, B = 8, 64
    local ds = ft.text.byte_dataset(entries, { context = T })
    ft.manual_seed(11)
    local x, y = ds:batch(B)
    assert.are.same({ B, T }, x:shape())
    assert.are.same({ B, T }, y:shape())
    assert.are.equal("int64", x:dtype())
    assert.are.equal("int64", y:dtype())
    local xs, ys = x:totable(), y:totable()
    local starts = {}
    for b = 1, B do
      for t = 1, T do
        assert.is_true(xs[b][t] >= 1 and xs[b][t] <= 256)
        if t < T then assert.are.equal(xs[b][t + 1], ys[b][t]) end
      end
      -- x followed by y's last byte is a window of T + 1 bytes of the stream
      local bytes = {}
      for t = 1, T do bytes[t] = xs[b][t] - 1 end
      bytes[T + 1] = ys[b][T] - 1
      local window = string.char(table.unpack(bytes))
      local at = stream:find(window, 1, true)
      assert.is_truthy(at, "not a window of the stream: " .. window)
      starts[at] = true
    end
    local distinct = 0
    for _ in pairs(starts) do distinct = distinct + 1 end
    assert.is_true(distinct > 10, "offsets are not random")
    -- the same seed draws the same batch
    ft.manual_seed(11)
    local x2, y2 = ds:batch(B)
    assert.are.same(xs, x2:totable())
    assert.are.same(ys, y2:totable())
  end)

  it("walks every non-overlapping window in order for evaluation", function()
    local T = 8
    local ds = ft.text.byte_dataset(entries, { context = T })
    local n = (#stream - 1) // T
    assert.are.equal(n, ds:num_windows())
    local k = 0
    for x, y in ds:windows(2) do
      assert.is_true(x:size(1) <= 2)
      for _, row in ipairs(x:totable()) do
        local start = k * T + 1
        for t = 1, T do assert.are.equal(stream:byte(start + t - 1) + 1, row[t]) end
        k = k + 1
      end
      assert.are.same(x:shape(), y:shape())
    end
    assert.are.equal(n, k)
    local m = 0
    for x in ds:windows(16, { max_windows = 3 }) do m = m + x:size(1) end
    assert.are.equal(3, m)
  end)
end)

describe("ft.text.fortune_datasets", function()
  it("leaves the held-out categories out of both splits", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    if not contains(cats, "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    local train, val, info = ft.text.fortune_datasets({ context = 64, held_out = HELD_OUT, seed = 1 })
    for _, name in ipairs(HELD_OUT) do assert.is_false(contains(info.categories, name), name) end
    assert.are.equal(#cats - #HELD_OUT, #info.categories)
    -- the two streams hold exactly the other categories' entries, each plus a separator byte
    local corpus = ft.text.fortunes({ exclude = HELD_OUT })
    local bytes, count = 0, 0
    for _, entries in pairs(corpus) do
      for _, e in ipairs(entries) do bytes, count = bytes + #e + 1, count + 1 end
    end
    assert.are.equal(count, info.train_entries + info.val_entries)
    assert.are.equal(bytes, #train + #val)
    assert.is_true(info.val_entries > 0.02 * count and info.val_entries < 0.1 * count)
    -- deterministic
    local _, val2, info2 = ft.text.fortune_datasets({ context = 64, held_out = HELD_OUT, seed = 1 })
    assert.are.equal(info.val_entries, info2.val_entries)
    assert.are.same(val.ids:totable(), val2.ids:totable())
    assert.matches("held%-out category 'nonsense'",
      error_of(ft.text.fortune_datasets, { context = 64, held_out = { "nonsense" } }))
  end)
end)

describe("scripts/pretrain_text.lua", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("trains a tiny model for 20 steps and writes a reloadable checkpoint", function()
    if not need_fortunes() then return end
    if not contains(ft.text.fortune_categories(), "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local src = os.getenv("FT_SOURCE_DIR") or "."
    local out = dir .. "/run/gpt_tiny.h5"
    local ok, log = run(quote(ftlua) .. " " .. quote(src .. "/scripts/pretrain_text.lua")
      .. " --config tiny --steps 20 --context 32 --batch-size 4 --eval-every 10 --eval-windows 8"
      .. " --sample-length 16 --threads 2 --out " .. quote(out) .. " </dev/null")
    assert.is_true(ok, log)
    assert.matches("RESULT steps=20 tokens_per_sec=[%d.]+ train_loss=[%d.]+ val_loss=[%d.]+", log)
    assert.matches("val loss after reloading", log)
    assert.is_true(exists(out), "no checkpoint at " .. out)

    local sd, meta = ft.load(out)
    assert.are.equal(20, math.tointeger(meta.step))
    assert.are.same(HELD_OUT, ft.json.decode(meta.held_out))
    assert.are.equal("\0", ft.json.decode(meta.separator))
    local config = ft.json.decode(meta.config)
    assert.are.equal(2, config.n_layer)
    assert.are.equal(256, config.vocab_size)
    local model = ft.models.new(config)
    model:load_state_dict(sd)
    model:eval()
    local logits = ft.no_grad(function() return model(ft.tensor({ { 1, 85, 105, 102 } }, { dtype = "int64" })).logits end)
    assert.are.same({ 1, 4, 256 }, logits:shape())
    -- the loss it reports is below the uniform guess of log(256)
    local val_loss = tonumber(log:match("val_loss=([%d.]+)"))
    assert.is_true(val_loss < math.log(256), "val loss " .. tostring(val_loss))
  end)
end)
