--- ft.data.subsets: parts of labelled datasets (ft.data re-exports these).
--
--   local six = ft.data.subset(train, {1, 2, 3, 4, 5, 7}, {relabel = true})   -- labels 1..6
--   local parts = ft.data.split(six, 5000, {seed = 1})     -- parts.val: 5000 held out, parts.train: the rest
--   local shots, pool = ft.data.per_class(parts.train, 10, {seed = 1})        -- 10 per class, the rest
--   local both = ft.data.concat{shots, parts.val}
--
-- Results are new datasets (samples gathered with index_select), in dataset order, with the
-- class names copied.
local ft = require "ft"

local shuffle = require "ft.data.shuffle"
local same_shape = require("ft.tables").same_shape

local M = {}

local function copy(list) return table.move(list, 1, #list, 1, {}) end

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

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
function M.subset(ds, classes, opts)
  check_dataset(ds, "subset")
  opts = ft.check_options("ft.data.subset", opts, {"relabel"})
  local relabel = ft.check.boolean("ft.data.subset", "relabel", opts.relabel, false)
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
  if relabel then
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
function M.per_class(ds, n, opts)
  check_dataset(ds, "per_class")
  opts = ft.check_options("ft.data.per_class", opts, {"seed"})
  if math.type(n) ~= "integer" or n < 1 then
    error(("ft.data.per_class: n must be a positive integer, got %s"):format(tostring(n)), 2)
  end
  local seed = shuffle.seed(opts.seed, "ft.data.per_class")
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
    local p = shuffle.permutation(#list, seed ~ shuffle.mix(label * shuffle.GOLDEN))
    for k = 1, n do chosen[list[p[k]]] = true end
  end
  local picked, rest = {}, {}
  for i = 1, ds.y:size(1) do
    if chosen[i] then picked[#picked + 1] = i else rest[#rest + 1] = i end
  end
  return take(ds, picked), take(ds, rest)
end

-- The result of split: {train =, val =}. Reading a dataset field from it (the old
-- `local train, val = ft.data.split(...)` form) is an error that says what changed.
local SplitParts = {__index = function(_, k)
  if k == "x" or k == "y" or k == "classes" then
    error("ft.data.split returns one table {train =, val =}: write `local parts = ft.data.split(...)` and use "
          .. "parts.train and parts.val (read ." .. k .. " of the result)", 2)
  end
end}

--- ft.data.split(ds, fraction, {seed = nil}) --> {train = dataset, val = dataset}
-- A random split: val gets `fraction` of the samples (0 < fraction < 1, rounded) or, given an
-- integer >= 1, that many; train the rest. Both keep dataset order. The draw depends on the
-- seed alone (without one, on ft's global generator). To draw k random samples of a dataset:
-- ft.data.split(ds, k, {seed = s}).val.
function M.split(ds, fraction, opts)
  local n = check_dataset(ds, "split")
  opts = ft.check_options("ft.data.split", opts, {"seed"})
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
  local p = shuffle.permutation(n, shuffle.seed(opts.seed, "ft.data.split"))
  local in_val = {}
  for k = 1, held do in_val[p[k]] = true end
  local train, val = {}, {}
  for i = 1, n do
    if in_val[i] then val[#val + 1] = i else train[#train + 1] = i end
  end
  return setmetatable({train = take(ds, train), val = take(ds, val)}, SplitParts)
end

--- ft.data.concat{ds1, ds2, ...} --> dataset
-- The samples of all datasets in order. They must share the sample shape and the class
-- names (or all have none); datasets without y give a dataset without y.
function M.concat(list)
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

return M
