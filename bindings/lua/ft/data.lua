-- Datasets and mini-batches.
--
-- A dataset is a plain table {x = tensor [N, ...], y = int64 tensor [N] of 1-based class
-- labels, classes = {name, ...}} so that classes[y[i]] names the class of sample i.
--
--   local train = ft.data.fashion_mnist{split = "train"}
--   local loader = ft.data.loader(train, {batch_size = 64, shuffle = true, seed = 1})
--   for epoch = 1, 10 do
--     for x, y in loader:iter() do ... end   -- one epoch; x [64,1,28,28], y [64]
--   end
--   print(#loader)                            -- batches per epoch
--
--   local six = ft.data.subset(train, {1, 2, 3, 4, 5, 7}, {relabel = true})   -- labels 1..6
--   local fit, val = ft.data.split(six, 5000, {seed = 1})                     -- 5000 held out
--   local shots, pool = ft.data.per_class(fit, 10, {seed = 1})                -- 10 per class
--
-- Batches are gathered with index_select (one copy in C per batch), so a batch never
-- aliases the dataset's storage.
local ft = require "ft"

local data = {}

local FASHION_MNIST_CLASSES = {
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}
local FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"   -- Debian's dataset-fashion-mnist

local exists = require("ft.fs").exists

local function copy(list)
  return table.move(list, 1, #list, 1, {})
end

local function shape_str(shape)
  return "[" .. table.concat(shape, ",") .. "]"
end

-- ---- Fashion-MNIST ----------------------------------------------------------------

--- ft.data.fashion_mnist{split = "train"|"test", dir = path?}
-- x [N,1,28,28] float32 in [0,1], y [N] int64 labels 1..10 (the files' 0..9 plus one).
-- dir defaults to $FT_FASHION_MNIST_DIR, then /usr/share/datasets/fashion-mnist. Both the
-- gzip-compressed files and uncompressed ones are read.
function data.fashion_mnist(opts)
  opts = opts or {}
  local split = opts.split or "train"
  local prefix = ({train = "train", test = "t10k"})[split]
  if not prefix then
    error(("ft.data.fashion_mnist: split must be 'train' or 'test', got '%s'"):format(tostring(split)), 2)
  end
  local dir = opts.dir or os.getenv("FT_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
  local function find(base)
    for _, name in ipairs{base .. ".gz", base} do
      if exists(dir .. "/" .. name) then return dir .. "/" .. name end
    end
  end
  local images = find(prefix .. "-images-idx3-ubyte")
  local labels = find(prefix .. "-labels-idx1-ubyte")
  if not images or not labels then
    error(("ft.data.fashion_mnist: %s-images-idx3-ubyte.gz and %s-labels-idx1-ubyte.gz not found in '%s'; "
           .. "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
           .. "or pass dir= (or set FT_FASHION_MNIST_DIR) to a folder holding them"):format(prefix, prefix, dir), 2)
  end
  local x = ft._idx_read(images, {dtype = "float32", scale = 1 / 255})
  local y = ft._idx_read(labels, {dtype = "int64", offset = 1})
  if x:dim() ~= 3 or y:dim() ~= 1 or x:size(1) ~= y:size(1) then
    error(("ft.data.fashion_mnist: '%s' holds images %s but '%s' holds labels %s; expected [N,H,W] and [N]")
          :format(images, shape_str(x:shape()), labels, shape_str(y:shape())), 2)
  end
  return {x = x:reshape(x:size(1), 1, x:size(2), x:size(3)), y = y, classes = copy(FASHION_MNIST_CLASSES)}
end

-- ---- image folders ------------------------------------------------------------------

local function sorted_entries(dir, kind, filter)
  local names = {}
  for name, k in pairs(ft._listdir(dir)) do
    if k == kind and name:sub(1, 1) ~= "." and (not filter or filter(name)) then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

--- ft.data.image_folder(dir, {transform = function(img) return img end})
-- dir/<class>/<image>.png, one subfolder per class: labels follow the sorted folder names
-- (1-based), classes = the folder names. Images are loaded with ft.image.load ([C,H,W] in
-- [0,1]), passed through transform if given, and must then all share one shape.
function data.image_folder(dir, opts)
  opts = opts or {}
  local transform = opts.transform
  local classes = sorted_entries(dir, "directory")
  if #classes == 0 then
    error(("ft.data.image_folder: no class subfolders in '%s' (expected %s/<class>/<image>.png)"):format(dir, dir), 2)
  end
  local images, labels, shape, first = {}, {}, nil, nil
  for label, class in ipairs(classes) do
    local folder = dir .. "/" .. class
    for _, name in ipairs(sorted_entries(folder, "file", function(n) return n:lower():match("%.png$") end)) do
      local path = folder .. "/" .. name
      local img = ft.image.load(path)
      if transform then img = transform(img) end
      local s = img:shape()
      if not shape then
        shape, first = s, path
      elseif not same_shape(s, shape) then
        error(("ft.data.image_folder: '%s' has shape %s but '%s' has shape %s; all images must share a shape "
               .. "(resize them, or pass a transform that does)"):format(path, shape_str(s), first, shape_str(shape)), 2)
      end
      images[#images + 1] = img
      labels[#labels + 1] = label
    end
  end
  if #images == 0 then
    error(("ft.data.image_folder: no .png images in the class folders of '%s'"):format(dir), 2)
  end
  return {x = ft.stack(images, 1), y = ft.tensor(labels, {dtype = "int64"}), classes = classes}
end

-- ---- seeded shuffles ----------------------------------------------------------------------

-- splitmix64: a small, well-mixed generator on Lua's wrapping 64-bit integers.
local GOLDEN = 0x9E3779B97F4A7C15

local function mix(z)
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- A permutation of 1..n (Fisher-Yates) determined by seed alone.
local function permutation(n, seed)
  local p = {}
  for i = 1, n do p[i] = i end
  local state = mix(seed)
  for i = n, 2, -1 do
    state = state + GOLDEN
    local j = (mix(state) >> 11) % i + 1   -- 53 random bits, non-negative
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- ---- subsets and splits ------------------------------------------------------------------

local function check_dataset(ds, where)
  if type(ds) ~= "table" or not ft.is_tensor(ds.x) or not ft.is_tensor(ds.y) then
    error(("ft.data.%s: expected a labelled dataset {x = tensor, y = int64 tensor}"):format(where), 3)
  end
  local n = ds.x:size(1)
  if ds.y:dim() ~= 1 or ds.y:size(1) ~= n or ds.y:dtype() ~= "int64" then
    error(("ft.data.%s: dataset.y must be int64 [%d] (one label per sample of x %s), got %s %s"):format(where, n,
      shape_str(ds.x:shape()), ds.y:dtype(), shape_str(ds.y:shape())), 3)
  end
  return n
end

local function check_seed(seed, where)
  if seed ~= nil and math.type(seed) ~= "integer" then
    error(("ft.data.%s: seed must be an integer, got %s"):format(where, tostring(seed)), 3)
  end
  -- Without a seed the draw follows ft's global generator (so ft.manual_seed reproduces it).
  return seed or math.floor(ft.rand(1):item() * 2 ^ 53)
end

local function class_name(ds, label)
  local name = ds.classes and ds.classes[label]
  return name and ("%d '%s'"):format(label, name) or tostring(label)
end

-- The samples at the given 1-based positions (a Lua array), as a new dataset with the same
-- class names.
local function take(ds, positions)
  local out = {}
  if #positions == 0 then
    local shape = ds.x:shape()
    shape[1] = 0
    out.x, out.y = ft.zeros(shape), ft.zeros({0}, {dtype = "int64"})
  else
    local idx = ft.tensor(positions, {dtype = "int64"})
    out.x, out.y = ds.x:index_select(1, idx), ds.y:index_select(1, idx)
  end
  if ds.classes then out.classes = copy(ds.classes) end
  return out
end

-- The sample positions of each label: {[label] = {i, ...}} in dataset order.
local function positions_by_label(ds)
  local by_label = {}
  for i, label in ipairs(ds.y:totable()) do
    local list = by_label[label]
    if not list then list = {}; by_label[label] = list end
    list[#list + 1] = i
  end
  return by_label
end

--- ft.data.subset(ds, classes, {relabel = false}) --> dataset
-- Keeps the samples whose label is one of `classes` (1-based labels), in dataset order. With
-- relabel, the label classes[k] becomes k, and the class names follow (classes[k]'s name
-- becomes name k); without, labels and class names are kept. Every requested class must be a
-- valid label with at least one sample.
function data.subset(ds, classes, opts)
  check_dataset(ds, "subset")
  opts = opts or {}
  if type(classes) ~= "table" or #classes == 0 then
    error("ft.data.subset: classes must be a non-empty array of 1-based labels", 2)
  end
  local rank = {}
  for k, label in ipairs(classes) do
    if math.type(label) ~= "integer" or label < 1 or (ds.classes and label > #ds.classes) then
      error(("ft.data.subset: class %s is not a label of this dataset (labels are 1..%s)"):format(tostring(label),
        ds.classes and #ds.classes or "N"), 2)
    end
    if rank[label] then error(("ft.data.subset: class %s is listed twice"):format(class_name(ds, label)), 2) end
    rank[label] = k
  end
  local by_label = positions_by_label(ds)
  for _, label in ipairs(classes) do
    if not by_label[label] then
      error(("ft.data.subset: class %s has no samples in this dataset (%d samples)"):format(class_name(ds, label),
        ds.y:size(1)), 2)
    end
  end
  local keep = {}
  for i, label in ipairs(ds.y:totable()) do
    if rank[label] then keep[#keep + 1] = i end
  end
  local out = take(ds, keep)
  if opts.relabel then
    local y = out.y:totable()
    for i = 1, #y do y[i] = rank[y[i]] end
    out.y = ft.tensor(y, {dtype = "int64"})
    if ds.classes then
      out.classes = {}
      for k, label in ipairs(classes) do out.classes[k] = ds.classes[label] end
    end
  end
  return out
end

--- ft.data.per_class(ds, n, {seed = nil}) --> chosen, rest
-- Draws n samples of every class (few-shot training sets): chosen holds n x (number of
-- classes) samples, rest the others (e.g. an unlabelled pool), both in dataset order. The
-- classes are 1..#ds.classes when the dataset names them, else the labels present. The draw
-- depends on the seed alone (without one, on ft's global generator).
function data.per_class(ds, n, opts)
  check_dataset(ds, "per_class")
  opts = opts or {}
  if math.type(n) ~= "integer" or n < 1 then
    error(("ft.data.per_class: n must be a positive integer, got %s"):format(tostring(n)), 2)
  end
  local seed = check_seed(opts.seed, "per_class")
  local by_label = positions_by_label(ds)
  local labels = {}
  if ds.classes then
    for label = 1, #ds.classes do labels[label] = label end
  else
    for label in pairs(by_label) do labels[#labels + 1] = label end
    table.sort(labels)
  end
  local chosen = {}
  for _, label in ipairs(labels) do
    local list = by_label[label] or {}
    if #list < n then
      error(("ft.data.per_class: class %s has %d samples, fewer than the %d asked for"):format(class_name(ds, label),
        #list, n), 2)
    end
    local p = permutation(#list, seed ~ mix(label * GOLDEN))
    for k = 1, n do chosen[list[p[k]]] = true end
  end
  local picked, rest = {}, {}
  for i = 1, ds.y:size(1) do
    if chosen[i] then picked[#picked + 1] = i else rest[#rest + 1] = i end
  end
  return take(ds, picked), take(ds, rest)
end

--- ft.data.split(ds, fraction, {seed = nil}) --> train, validation
-- A random split: validation gets `fraction` of the samples (0 < fraction < 1, rounded) or,
-- given an integer >= 1, that many; train the rest. Both keep dataset order. The draw
-- depends on the seed alone (without one, on ft's global generator).
function data.split(ds, fraction, opts)
  local n = check_dataset(ds, "split")
  opts = opts or {}
  local held
  if math.type(fraction) == "integer" and fraction >= 1 then
    held = fraction
  elseif type(fraction) == "number" and fraction > 0 and fraction < 1 then
    held = math.floor(fraction * n + 0.5)
  else
    error(("ft.data.split: fraction must be in (0, 1) or a sample count >= 1, got %s"):format(tostring(fraction)), 2)
  end
  if held < 1 or held >= n then
    error(("ft.data.split: a validation part of %d samples (fraction %s) out of %d leaves %s"):format(held,
      tostring(fraction), n, held < 1 and "it empty" or "no training samples"), 2)
  end
  local p = permutation(n, check_seed(opts.seed, "split"))
  local in_val = {}
  for k = 1, held do in_val[p[k]] = true end
  local train, val = {}, {}
  for i = 1, n do
    if in_val[i] then val[#val + 1] = i else train[#train + 1] = i end
  end
  return take(ds, train), take(ds, val)
end

--- ft.data.concat{ds1, ds2, ...} --> dataset
-- The samples of all datasets in order. They must share the sample shape and the class
-- names (or all have none); datasets without y give a dataset without y.
function data.concat(list)
  if type(list) ~= "table" or #list == 0 then
    error("ft.data.concat: expected a non-empty array of datasets", 2)
  end
  local first = list[1]
  local xs, ys = {}, {}
  for i, ds in ipairs(list) do
    if type(ds) ~= "table" or not ft.is_tensor(ds.x) then
      error(("ft.data.concat: dataset %d is not a dataset table {x = tensor, y = tensor}"):format(i), 2)
    end
    local a, b = ds.x:shape(), first.x:shape()
    table.remove(a, 1)
    table.remove(b, 1)
    if not same_shape(a, b) then
      error(("ft.data.concat: dataset %d has samples of shape %s but dataset 1 has %s"):format(i, shape_str(a),
        shape_str(b)), 2)
    end
    if (ds.y == nil) ~= (first.y == nil) then
      error(("ft.data.concat: dataset %d %s labels but dataset 1 %s"):format(i, ds.y and "has" or "lacks",
        first.y and "has" or "does not"), 2)
    end
    if (ds.classes == nil) ~= (first.classes == nil)
        or (ds.classes and table.concat(ds.classes, "\0") ~= table.concat(first.classes, "\0")) then
      error(("ft.data.concat: dataset %d names its classes differently from dataset 1"):format(i), 2)
    end
    xs[i], ys[i] = ds.x, ds.y
  end
  local out = {x = ft.cat(xs, 1)}
  if first.y then out.y = ft.cat(ys, 1) end
  if first.classes then out.classes = copy(first.classes) end
  return out
end

-- ---- batches ------------------------------------------------------------------------

local Loader = {}
Loader.__index = Loader

--- ft.data.loader(dataset, {batch_size = 1, shuffle = false, seed = nil, drop_last = false,
---                          transform = function(x, y) return x, y end})
-- Iterate with `for x, y in loader:iter() do ... end`; each call of iter() is one epoch.
-- With shuffle, epoch e visits the samples in a permutation drawn from (seed, e): the
-- same seed gives the same sequence of epochs, and each epoch differs from the last.
-- Without a seed, each epoch's permutation is drawn from ft's global generator (so
-- ft.manual_seed makes it reproducible). loader.epoch counts the epochs started; set it
-- to resume a run. A dataset without y yields x alone (and transform gets y = nil).
function data.loader(dataset, opts)
  opts = opts or {}
  if type(dataset) ~= "table" or dataset.x == nil then
    error("ft.data.loader: expected a dataset table {x = tensor, y = tensor}", 2)
  end
  local n = dataset.x:size(1)
  if dataset.y ~= nil and dataset.y:size(1) ~= n then
    error(("ft.data.loader: dataset.x has %d samples but dataset.y has %d"):format(n, dataset.y:size(1)), 2)
  end
  local batch_size = opts.batch_size or 1
  if math.type(batch_size) ~= "integer" or batch_size < 1 then
    error(("ft.data.loader: batch_size must be a positive integer, got %s"):format(tostring(batch_size)), 2)
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error(("ft.data.loader: seed must be an integer, got %s"):format(tostring(opts.seed)), 2)
  end
  return setmetatable({
    dataset = dataset,
    n = n,
    batch_size = batch_size,
    shuffle = opts.shuffle or false,
    seed = opts.seed,
    drop_last = opts.drop_last or false,
    transform = opts.transform,
    epoch = 0,
  }, Loader)
end

function Loader:__len()
  if self.drop_last then return self.n // self.batch_size end
  return (self.n + self.batch_size - 1) // self.batch_size
end

-- The sample order of the next epoch, as a 1-based int64 tensor [n].
function Loader:_order()
  if not self.shuffle then
    if not self._sequential then
      local seq = {}
      for i = 1, self.n do seq[i] = i end
      self._sequential = ft.tensor(seq, {dtype = "int64"})
    end
    return self._sequential
  end
  local seed
  if self.seed then
    seed = self.seed ~ mix(self.epoch * GOLDEN)
  else
    seed = math.floor(ft.rand(1):item() * 2 ^ 53)
  end
  return ft.tensor(permutation(self.n, seed), {dtype = "int64"})
end

--- loader:iter() --> iterator over the batches (x, y) of one epoch.
function Loader:iter()
  self.epoch = self.epoch + 1
  local order = self:_order()
  local ds, bs, n, transform = self.dataset, self.batch_size, self.n, self.transform
  local count, b = #self, 0
  return function()
    b = b + 1
    if b > count then return nil end
    local start = (b - 1) * bs + 1
    local idx = order:narrow(1, start, math.min(bs, n - start + 1))
    local x = ds.x:index_select(1, idx)
    local y = ds.y and ds.y:index_select(1, idx)
    if transform then x, y = transform(x, y) end
    return x, y
  end
end

return data
