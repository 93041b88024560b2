-- ft.data: Fashion-MNIST, image folders, and the batch loader.
-- The Fashion-MNIST tests need Debian's dataset-fashion-mnist package (or
-- FT_FASHION_MNIST_DIR); without it they are marked pending.
local ft = require "ft"
local H = require "helpers"

local FIXTURES = assert(os.getenv("FT_FIXTURES"), "FT_FIXTURES is not set") .. "/io"
local expected = dofile(FIXTURES .. "/expected.lua")
local FASHION_DIR = os.getenv("FT_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
local CLASSES = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("data") end

local exists = H.file_exists

local error_of = H.error_of
local assert_contains = H.assert_mentions

-- The first label byte of an IDX label file, read with gzip and od (not with ft).
local function first_label(path)
  local ok, out = run("gzip -dc " .. quote(path) .. " | od -An -tu1 -j8 -N1")
  assert(ok, out)
  return assert(tonumber(out:match("%d+")), out)
end

local function need_fashion_mnist()
  if not exists(FASHION_DIR .. "/train-labels-idx1-ubyte.gz") then
    pending("Fashion-MNIST not found in " .. FASHION_DIR .. ": apt-get install dataset-fashion-mnist")
  end
end

describe("ft.data.fashion_mnist", function()
  it("loads the 60000 training images with labels 1..10", function()
    need_fashion_mnist()
    local ds = ft.data.fashion_mnist{split = "train"}
    assert.are.same({60000, 1, 28, 28}, ds.x:shape())
    assert.are.equal("float32", ds.x:dtype())
    assert.are.same({60000}, ds.y:shape())
    assert.are.equal("int64", ds.y:dtype())
    assert.are.equal(0, ds.x:min():item())
    assert.are.equal(1, ds.x:max():item())
    local counts = {}
    for _, label in ipairs(ds.y:totable()) do counts[label] = (counts[label] or 0) + 1 end
    for label = 1, 10 do assert.are.equal(6000, counts[label], "class " .. label) end
    local first = first_label(FASHION_DIR .. "/train-labels-idx1-ubyte.gz") + 1
    assert.are.equal(first, ds.y:totable()[1])
    assert.are.same(CLASSES, ds.classes)
    assert.are.equal("Ankle boot", ds.classes[ds.y:totable()[1]])
  end)

  it("loads the 10000 test images", function()
    need_fashion_mnist()
    local ds = ft.data.fashion_mnist{split = "test"}
    assert.are.same({10000, 1, 28, 28}, ds.x:shape())
    assert.are.same({10000}, ds.y:shape())
    local y = ds.y:totable()
    for i = 1, #y do
      if y[i] < 1 or y[i] > 10 then error("label " .. y[i] .. " at " .. i .. " is outside 1..10") end
    end
    assert.are.equal(first_label(FASHION_DIR .. "/t10k-labels-idx1-ubyte.gz") + 1, y[1])
  end)

  it("reads a folder given by dir= (gzip-compressed or plain files)", function()
    local dir = FIXTURES .. "/fashion_mini"
    for split, key in pairs{train = "fashion_mini_train", test = "fashion_mini_t10k"} do
      local want = expected.idx[key]
      local ds = ft.data.fashion_mnist{split = split, dir = dir}
      assert.are.same({want.shape[1], 1, 28, 28}, ds.x:shape())
      local labels = {}
      for i, v in ipairs(want.labels) do labels[i] = v + 1 end
      assert.are.same(labels, ds.y:totable())
      local row = ds.x:select(1, 1):select(1, 1):select(1, 1):totable()
      for i, v in ipairs(want.first_pixels) do
        assert.is_true(math.abs(row[i] - v / 255) < 1e-6, "pixel " .. i)
      end
    end
  end)

  it("reads FT_FASHION_MNIST_DIR", function()
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local ok, out = run("FT_FASHION_MNIST_DIR=" .. quote(FIXTURES .. "/fashion_mini") .. " " .. quote(ftlua)
      .. " -e " .. quote("local ds = ft.data.fashion_mnist{split = 'train'}; io.write(ds.x:size(1), ' ', ds.y:totable()[1])"))
    assert.is_true(ok, out)
    assert.are.equal("3 10", out)
  end)

  it("says how to get the data when it is missing", function()
    local err = error_of(ft.data.fashion_mnist, {split = "train", dir = "/nonexistent"})
    assert_contains(err, "not found in '/nonexistent'")
    assert_contains(err, "dataset-fashion-mnist")
    assert_contains(err, "dir=")
    assert_contains(error_of(ft.data.fashion_mnist, {split = "valid"}), "split must be 'train' or 'test'")
  end)

  it("refuses misspelt options instead of loading the training split", function()
    local dir = FIXTURES .. "/fashion_mini"
    assert_contains(error_of(ft.data.fashion_mnist, {spilt = "test", dir = dir}),
      "ft.data.fashion_mnist: unknown option 'spilt'", "did you mean 'split'?")
    assert_contains(error_of(ft.data.fashion_mnist, {split = "test", dri = dir}), "unknown option 'dri'")
    assert_contains(error_of(ft.data.fashion_mnist, {dir = 7}), "ft.data.fashion_mnist: dir must be a non-empty string, got 7")
  end)

  it("refuses a label file with labels outside 0..9, naming the file", function()
    local dir = make_tmpdir()
    local n = 3
    H.write_bytes(dir .. "/t10k-images-idx3-ubyte", string.pack(">I4I4I4I4", 0x803, n, 28, 28) .. string.rep("\0", n * 28 * 28))
    H.write_bytes(dir .. "/t10k-labels-idx1-ubyte", string.pack(">I4I4", 0x801, n) .. string.char(3, 10, 1))
    local err = error_of(ft.data.fashion_mnist, {split = "test", dir = dir})
    assert_contains(err, "ft.data.fashion_mnist: '" .. dir .. "/t10k-labels-idx1-ubyte' holds label 10 at position 2",
      "labels are 0..9")
    H.write_bytes(dir .. "/t10k-labels-idx1-ubyte", string.pack(">I4I4", 0x801, n) .. string.char(3, 9, 0))
    assert.are.same({4, 10, 1}, ft.data.fashion_mnist{split = "test", dir = dir}.y:totable())
  end)
end)

describe("ft.data.image_folder", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  -- dir/<class>/<name>.png holding a constant image of value v/255.
  local function put(class, name, v, shape)
    os.execute("mkdir -p " .. quote(dir .. "/" .. class))
    ft.image.save(dir .. "/" .. class .. "/" .. name, ft.full(shape or {3, 4, 5}, v / 255))
  end

  it("labels images by sorted class folder, 1-based", function()
    put("dog", "b.png", 20)
    put("dog", "a.png", 10)
    put("cat", "x.PNG", 30)
    put("zebra", "1.png", 40)
    put(".hidden", "h.png", 50)
    os.execute("mkdir " .. quote(dir .. "/empty"))
    local f = io.open(dir .. "/dog/notes.txt", "w")
    f:write("not an image")
    f:close()
    local ds = ft.data.image_folder(dir)
    assert.are.same({"cat", "dog", "empty", "zebra"}, ds.classes)
    assert.are.same({4, 3, 4, 5}, ds.x:shape())
    assert.are.equal("int64", ds.y:dtype())
    assert.are.same({1, 2, 2, 4}, ds.y:totable())
    local firsts = {}
    for i = 1, 4 do firsts[i] = math.floor(ds.x:select(1, i):max():item() * 255 + 0.5) end
    assert.are.same({30, 10, 20, 40}, firsts)
  end)

  it("applies a transform to each image", function()
    put("a", "1.png", 255, {1, 4, 4})
    put("b", "1.png", 0, {1, 4, 4})
    local ds = ft.data.image_folder(dir, {transform = function(img) return img:reshape(16) * 2 end})
    assert.are.same({2, 16}, ds.x:shape())
    assert.are.equal(2, ds.x:max():item())
  end)

  it("names the file whose shape differs", function()
    put("a", "1.png", 1, {3, 4, 4})
    put("b", "2.png", 1, {3, 5, 4})
    local err = error_of(ft.data.image_folder, dir)
    assert_contains(err, dir .. "/b/2.png' has shape [3,5,4]")
    assert_contains(err, dir .. "/a/1.png' has shape [3,4,4]")
  end)

  it("reports a folder without classes or images", function()
    assert_contains(error_of(ft.data.image_folder, dir), "no class subfolders in '" .. dir .. "'")
    os.execute("mkdir " .. quote(dir .. "/a"))
    assert_contains(error_of(ft.data.image_folder, dir), "no .png images")
    assert_contains(error_of(ft.data.image_folder, dir .. "/missing"), "cannot open '" .. dir .. "/missing'")
  end)
end)

describe("ft.data.loader", function()
  -- N samples whose x row and y label both encode the sample number.
  local function dataset(n)
    local xs, ys = {}, {}
    for i = 1, n do
      xs[i] = {i, -i}
      ys[i] = i
    end
    return {x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"})}
  end

  local function epoch(loader)
    local order, sizes = {}, {}
    for x, y in loader:iter() do
      sizes[#sizes + 1] = x:size(1)
      local xs, ys = x:totable(), y:totable()
      for i = 1, #ys do
        assert.are.equal(ys[i], xs[i][1])      -- x and y stay aligned
        assert.are.equal(-ys[i], xs[i][2])
        order[#order + 1] = ys[i]
      end
    end
    return order, sizes
  end

  it("yields batches in order without shuffling, the last one short", function()
    local loader = ft.data.loader(dataset(10), {batch_size = 4})
    assert.are.equal(3, #loader)
    local order, sizes = epoch(loader)
    assert.are.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, order)
    assert.are.same({4, 4, 2}, sizes)
  end)

  it("drops the short batch with drop_last", function()
    local loader = ft.data.loader(dataset(10), {batch_size = 4, drop_last = true})
    assert.are.equal(2, #loader)
    local order, sizes = epoch(loader)
    assert.are.same({4, 4}, sizes)
    assert.are.same({1, 2, 3, 4, 5, 6, 7, 8}, order)
  end)

  it("shuffles reproducibly per seed, differently each epoch, visiting every sample once", function()
    local a = ft.data.loader(dataset(100), {batch_size = 8, shuffle = true, seed = 42})
    local b = ft.data.loader(dataset(100), {batch_size = 8, shuffle = true, seed = 42})
    local c = ft.data.loader(dataset(100), {batch_size = 8, shuffle = true, seed = 43})
    local a1, b1, c1 = epoch(a), epoch(b), epoch(c)
    local a2, b2 = epoch(a), epoch(b)
    assert.are.same(a1, b1)
    assert.are.same(a2, b2)
    assert.are_not.same(a1, a2)
    assert.are_not.same(a1, c1)
    for _, order in ipairs{a1, a2, c1} do
      local sorted = table.move(order, 1, #order, 1, {})
      table.sort(sorted)
      for i = 1, 100 do assert.are.equal(i, sorted[i]) end
    end
    local seq = {}
    for i = 1, 100 do seq[i] = i end
    assert.are_not.same(seq, a1)
    -- Resuming: setting the epoch counter replays that epoch.
    local r = ft.data.loader(dataset(100), {batch_size = 8, shuffle = true, seed = 42})
    r.epoch = 1
    assert.are.same(a2, epoch(r))
  end)

  it("follows ft.manual_seed when no seed is given", function()
    ft.manual_seed(7)
    local a = epoch(ft.data.loader(dataset(50), {batch_size = 5, shuffle = true}))
    ft.manual_seed(7)
    local b = epoch(ft.data.loader(dataset(50), {batch_size = 5, shuffle = true}))
    assert.are.same(a, b)
  end)

  it("applies the batch transform", function()
    local loader = ft.data.loader(dataset(6), {batch_size = 3, transform = function(x, y) return x * 10, y + 100 end})
    local xs, ys = {}, {}
    for x, y in loader:iter() do
      xs[#xs + 1] = x:totable()[1][1]
      ys[#ys + 1] = y:totable()[1]
    end
    assert.are.same({10, 40}, xs)
    assert.are.same({101, 104}, ys)
  end)

  it("yields x alone for a dataset without labels", function()
    local n = 0
    for x, y in ft.data.loader({x = ft.zeros(5, 2)}, {batch_size = 2}):iter() do
      n = n + x:size(1)
      assert.is_nil(y)
    end
    assert.are.equal(5, n)
  end)

  it("rejects bad options", function()
    assert_contains(error_of(ft.data.loader, dataset(3), {batch_size = 0}), "batch_size must be a positive integer")
    assert_contains(error_of(ft.data.loader, {x = ft.zeros(3), y = ft.zeros(2)}), "3 samples but dataset.y has 2")
    assert_contains(error_of(ft.data.loader, {}), "expected a dataset table")
  end)

  it("refuses misspelt and out-of-range options", function()
    assert_contains(error_of(ft.data.loader, dataset(3), {batchsize = 64}),
      "ft.data.loader: unknown option 'batchsize'", "did you mean 'batch_size'?")
    assert_contains(error_of(ft.data.loader, dataset(3), {batch_size = 2.5}),
      "ft.data.loader: batch_size must be a positive integer, got 2.5")
    assert_contains(error_of(ft.data.loader, dataset(3), {batch_size = -1}), "got -1")
    assert_contains(error_of(ft.data.loader, dataset(3), {shuffle = "yes"}),
      "ft.data.loader: shuffle must be true or false, got 'yes'")
    assert_contains(error_of(ft.data.loader, dataset(3), {seed = 0.5}), "ft.data.loader: seed must be an integer")
    assert_contains(error_of(ft.data.loader, dataset(3), {transform = 1}),
      "ft.data.loader: transform must be a function, got 1")
    assert_contains(error_of(ft.data.loader, dataset(3), "fast"), "ft.data.loader: options must be a table")
    -- the batch size given is the one used
    local sizes = {}
    for x in ft.data.loader(dataset(5), {batch_size = 4}):iter() do sizes[#sizes + 1] = x:size(1) end
    assert.are.same({4, 1}, sizes)
  end)
end)

describe("ft.data subsets and splits", function()
  -- n samples cycling through the labels 1..k; x holds the sample number so that samples can
  -- be traced through a subset.
  local function labelled(n, k, names)
    local xs, ys = {}, {}
    for i = 1, n do
      xs[i] = {i}
      ys[i] = (i - 1) % k + 1
    end
    return {x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"}), classes = names}
  end

  local function ids(ds)
    local out = {}
    for i, row in ipairs(ds.x:totable()) do out[i] = math.tointeger(row[1]) end
    return out
  end

  local function count(list)
    local c = {}
    for _, v in ipairs(list) do c[v] = (c[v] or 0) + 1 end
    return c
  end

  it("subset keeps the given classes in dataset order, relabelled in the given order", function()
    local ds = labelled(12, 4, {"a", "b", "c", "d"})
    local s = ft.data.subset(ds, {3, 1}, {relabel = true})
    assert.are.same({1, 3, 5, 7, 9, 11}, ids(s))
    assert.are.same({2, 1, 2, 1, 2, 1}, s.y:totable())
    assert.are.same({"c", "a"}, s.classes)
    local kept = ft.data.subset(ds, {3, 1})
    assert.are.same({1, 3, 1, 3, 1, 3}, kept.y:totable())
    assert.are.same({"a", "b", "c", "d"}, kept.classes)
    assert.are.same({"a", "b", "c", "d"}, ds.classes)   -- the source is untouched
    local nameless = ft.data.subset(labelled(6, 3), {2}, {relabel = true})
    assert.are.same({1, 1}, nameless.y:totable())
    assert.is_nil(nameless.classes)
  end)

  it("subset names the class that is wrong", function()
    local ds = labelled(6, 3, {"a", "b", "c"})
    assert_contains(error_of(ft.data.subset, ds, {4}), "class 4 is not a label of this dataset (labels are 1..3)")
    assert_contains(error_of(ft.data.subset, ds, {2, 2}), "class 2 'b' is listed twice")
    assert_contains(error_of(ft.data.subset, ds, {}), "classes must be a non-empty array")
    local two = ft.data.subset(ds, {1, 2})
    assert_contains(error_of(ft.data.subset, two, {3}), "class 3 'c' has no samples in this dataset (4 samples)")
    assert_contains(error_of(ft.data.subset, {x = ft.zeros(3)}, {1}), "expected a labelled dataset")
  end)

  it("per_class draws n samples of every class, seeded, and returns the rest", function()
    local ds = labelled(40, 4, {"a", "b", "c", "d"})
    local shots, rest = ft.data.per_class(ds, 3, {seed = 7})
    assert.are.same({3, 3, 3, 3}, count(shots.y:totable()))
    assert.are.same({7, 7, 7, 7}, count(rest.y:totable()))
    assert.are.same({"a", "b", "c", "d"}, shots.classes)
    -- together they are the dataset, each sample once, both in dataset order
    local all = ids(shots)
    for _, v in ipairs(ids(rest)) do all[#all + 1] = v end
    table.sort(all)
    for i = 1, 40 do assert.are.equal(i, all[i]) end
    local s = ids(shots)
    for i = 2, #s do assert.is_true(s[i - 1] < s[i]) end
    -- labels stay with their samples
    for i, row in ipairs(shots.x:totable()) do assert.are.equal((row[1] - 1) % 4 + 1, shots.y:totable()[i]) end
    -- the same seed gives the same draw, another seed another
    assert.are.same(s, ids((ft.data.per_class(ds, 3, {seed = 7}))))
    assert.are_not.same(s, ids((ft.data.per_class(ds, 3, {seed = 8}))))
    ft.manual_seed(3)
    local a = ids((ft.data.per_class(ds, 2)))
    ft.manual_seed(3)
    assert.are.same(a, ids((ft.data.per_class(ds, 2))))
  end)

  it("per_class names a class with too few samples", function()
    local ds = ft.data.subset(labelled(12, 4, {"a", "b", "c", "d"}), {1, 2, 4})
    assert_contains(error_of(ft.data.per_class, ds, 1), "class 3 'c' has 0 samples, fewer than the 1 asked for")
    assert_contains(error_of(ft.data.per_class, labelled(12, 4), 4), "class 1 has 3 samples, fewer than the 4 asked for")
    assert_contains(error_of(ft.data.per_class, labelled(12, 4), 0), "n must be a positive integer, got 0")
    assert_contains(error_of(ft.data.per_class, labelled(12, 4), 1, {seed = "x"}), "seed must be an integer")
    local _, rest = ft.data.per_class(labelled(8, 4), 2, {seed = 1})
    assert.are.same({0, 1}, rest.x:shape())
    assert.are.same({0}, rest.y:shape())
  end)

  it("split holds out a fraction or a count, seeded, as named parts", function()
    local ds = labelled(50, 5, {"a", "b", "c", "d", "e"})
    local parts = ft.data.split(ds, 0.2, {seed = 1})
    local train, val = parts.train, parts.val
    assert.are.equal(40, train.y:size(1))
    assert.are.equal(10, val.y:size(1))
    assert.are.same(ds.classes, val.classes)
    local all = ids(train)
    for _, v in ipairs(ids(val)) do all[#all + 1] = v end
    table.sort(all)
    for i = 1, 50 do assert.are.equal(i, all[i]) end
    assert.are.same(ids(val), ids(ft.data.split(ds, 0.2, {seed = 1}).val))
    assert.are_not.same(ids(val), ids(ft.data.split(ds, 0.2, {seed = 2}).val))
    local p2 = ft.data.split(ds, 7, {seed = 1})
    local t2, v2 = p2.train, p2.val
    assert.are.same({43, 7}, {t2.y:size(1), v2.y:size(1)})
    for i, row in ipairs(v2.x:totable()) do assert.are.equal((row[1] - 1) % 5 + 1, v2.y:totable()[i]) end
  end)

  it("split returns one table, and says so when it is read as a dataset", function()
    local ds = labelled(20, 2)
    local a, b = ft.data.split(ds, 5, {seed = 3})
    assert.is_nil(b)
    assert.are.same({"train", "val"}, ft.tables.sorted_keys(a))
    assert_contains(error_of(function() return a.x end), "ft.data.split returns one table {train =, val =}",
      "parts.train and parts.val")
    assert_contains(error_of(ft.data.split, ds, 5, {sed = 3}), "ft.data.split: unknown option 'sed'",
      "did you mean 'seed'?")
    assert_contains(error_of(ft.data.split, ds, 5, {seed = 1.5}), "ft.data.split: seed must be an integer, got 1.5")
  end)

  it("split rejects sizes that leave a part empty", function()
    local ds = labelled(10, 2)
    assert_contains(error_of(ft.data.split, ds, 10), "a validation part of 10 samples (fraction 10) out of 10 leaves no training samples")
    assert_contains(error_of(ft.data.split, ds, 0.01), "leaves it empty")
    assert_contains(error_of(ft.data.split, ds, 1.5), "fraction must be in (0, 1) or a sample count >= 1, got 1.5")
    assert_contains(error_of(ft.data.split, ds, 0), "fraction must be in (0, 1)")
  end)

  it("concat joins datasets with the same classes", function()
    local ds = labelled(10, 2, {"a", "b"})
    local shots, rest = ft.data.per_class(ds, 2, {seed = 1})
    local both = ft.data.concat{shots, rest}
    assert.are.equal(10, both.y:size(1))
    local got = ids(both)
    for i, v in ipairs(ids(shots)) do assert.are.equal(v, got[i]) end
    assert.are.same({"a", "b"}, both.classes)
    local unlabelled = ft.data.concat{{x = ft.zeros(2, 1)}, {x = ft.ones(3, 1)}}
    assert.are.same({5, 1}, unlabelled.x:shape())
    assert.is_nil(unlabelled.y)
    assert_contains(error_of(ft.data.concat, {ds, labelled(4, 2, {"a", "c"})}), "dataset 2 names its classes differently")
    assert_contains(error_of(ft.data.concat, {ds, {x = ft.zeros(2, 3), y = ds.y:narrow(1, 1, 2), classes = ds.classes}}),
      "dataset 2 has samples of shape [3] but dataset 1 has [1]")
    assert_contains(error_of(ft.data.concat, {ds, {x = ft.zeros(2, 1), classes = ds.classes}}), "dataset 2 lacks labels")
  end)

  it("picks the six clothing classes of Fashion-MNIST", function()
    need_fashion_mnist()
    local test = ft.data.fashion_mnist{split = "test"}
    local six = ft.data.subset(test, {1, 2, 3, 4, 5, 7}, {relabel = true})
    assert.are.same({"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"}, six.classes)
    assert.are.same({1000, 1000, 1000, 1000, 1000, 1000}, count(six.y:totable()))
    local shots, pool = ft.data.per_class(six, 10, {seed = 1})
    assert.are.same({10, 10, 10, 10, 10, 10}, count(shots.y:totable()))
    assert.are.equal(5940, pool.y:size(1))
  end)
end)
