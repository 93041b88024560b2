--- ft.data.loader(dataset, {batch_size = 1, shuffle = false, seed = nil, drop_last = false,
---                          transform = function(x, y) return x, y end}) -> loader
-- Iterate with `for x, y in loader:iter() do ... end`; each call of iter() is one epoch;
-- #loader is the number of batches per epoch.
-- With shuffle, epoch e visits the samples in a permutation drawn from (seed, e): the
-- same seed gives the same sequence of epochs, and each epoch differs from the last.
-- Without a seed, each epoch's permutation is drawn from ft's global generator (so
-- ft.manual_seed makes it reproducible). loader.epoch counts the epochs started; set it
-- to resume a run. A dataset without y yields x alone (and transform gets y = nil).
-- Batches are gathered with index_select (one copy in C per batch), so a batch never
-- aliases the dataset's storage.
local ft = require "ft"

local shuffle = require "ft.data.shuffle"

local WHERE = "ft.data.loader"

local Loader = {}
Loader.__index = Loader

--- ft.data.loader(dataset, {batch_size = 1, shuffle = false, seed =, drop_last = false,
-- transform =}) -> loader: `for x, y in loader:iter() do ... end` is one epoch; #loader is
-- the number of batches per epoch (see the top of this file).
local function new_loader(dataset, opts)
  opts = ft.check_options(WHERE, opts, {"batch_size", "shuffle", "seed", "drop_last", "transform"})
  if type(dataset) ~= "table" or not ft.is_tensor(dataset.x) then
    error(WHERE .. ": expected a dataset table {x = tensor, y = tensor}", 2)
  end
  if dataset.x:dim() == 0 then error(WHERE .. ": dataset.x must have a sample dimension (dim 1), got a scalar", 2) end
  local n = dataset.x:size(1)
  if dataset.y ~= nil and (not ft.is_tensor(dataset.y) or dataset.y:dim() == 0 or dataset.y:size(1) ~= n) then
    error(("%s: dataset.x has %d samples but dataset.y %s"):format(WHERE, n,
      ft.is_tensor(dataset.y) and dataset.y:dim() > 0 and ("has " .. dataset.y:size(1)) or "is not a tensor of them"), 2)
  end
  local check = ft.check
  local seed = opts.seed
  if seed ~= nil and math.type(seed) ~= "integer" then check.fail(WHERE, "seed", "an integer", seed) end
  return setmetatable({
    dataset = dataset,
    n = n,
    batch_size = check.integer(WHERE, "batch_size", opts.batch_size, 1, {min = 1}),
    shuffle = check.boolean(WHERE, "shuffle", opts.shuffle, false),
    seed = seed,
    drop_last = check.boolean(WHERE, "drop_last", opts.drop_last, false),
    transform = check.func(WHERE, "transform", opts.transform),
    epoch = 0,
  }, Loader)
end

--- #loader: the number of batches per epoch (the last one short unless drop_last).
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
    seed = self.seed ~ shuffle.mix(self.epoch * shuffle.GOLDEN)
  else
    seed = math.floor(ft.rand(1):item() * 2 ^ 53)
  end
  return ft.tensor(shuffle.permutation(self.n, seed), {dtype = "int64"})
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

return new_loader
