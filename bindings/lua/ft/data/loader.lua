--- ft.data.loader(dataset, {batch_size = 1, shuffle = false, seed = nil, drop_last = false,
---                          transform = function(x, y) return x, y end, shard = false}) -> loader
-- Iterate with `for x, y in loader:iter() do ... end`; each call of iter() is one epoch;
-- #loader is the number of batches per epoch.
-- With shuffle, epoch e visits the samples in a permutation drawn from (seed, e): the
-- same seed gives the same sequence of epochs, and each epoch differs from the last.
-- Without a seed, each epoch's permutation is drawn from ft's global generator (so
-- ft.manual_seed makes it reproducible). loader.epoch counts the epochs started; set it
-- to resume a run. A dataset without y yields x alone (and transform gets y = nil).
-- Batches are gathered with index_select (one copy in C per batch), so a batch never
-- aliases the dataset's storage.
--
-- shard = true: data-parallel training under mpirun (ft.dist), as PyTorch's
-- DistributedSampler does it. batch_size is the global batch, split among the world_size W
-- ranks (it must divide by W), and each rank yields batches of batch_size / W rows. Every
-- epoch's permutation is the one a single process draws (from (seed, epoch), or without a
-- seed from rank 0's global generator: every rank draws, so the generators move on alike,
-- and rank 0's draw is broadcast); rank r (0-based) takes positions r+1, r+1+W, r+1+2W ...
-- of it. So rank r's batch b is the strided share (rows r+1, r+1+W ...) of the single
-- process's batch b, and the ranks' batches b together are exactly that batch. drop_last =
-- false pads the permutation by repeating its first entries up to a multiple of W, so the
-- last global batch also holds up to W - 1 samples of the epoch's first one, and every rank
-- gets as many rows as the others;
-- drop_last = true drops the short last batch on every rank. #loader (the batches per epoch
-- on each rank) is the single process's #loader. A rank's mean loss averaged by
-- ft.dist.DataParallel is the mean over the global batch only when the ranks' batches have
-- equal sizes, as they have here (the padded last batch counts its repeated samples again;
-- drop_last = true leaves only full batches; a loss over counts that differ between ranks,
-- such as tokens, needs ddp:global_mean). Building a sharded loader with W > 1 is a
-- collective: every rank builds it, with the same dataset size and options (checked).
-- Without shard, or in a world of one, the loader is the plain one, batch for batch.
local ft = require "ft"

local shuffle = require "ft.data.shuffle"

local WHERE = "ft.data.loader"

local Loader = {}
Loader.__index = Loader

--- ft.data.loader(dataset, {batch_size = 1, shuffle = false, seed =, drop_last = false,
-- transform =, shard = false}) -> loader: `for x, y in loader:iter() do ... end` is one epoch;
-- #loader is the number of batches per epoch (see the top of this file; shard: this rank's
-- share of each global batch under mpirun).
local function new_loader(dataset, opts)
  opts = ft.check_options(WHERE, opts, {"batch_size", "shuffle", "seed", "drop_last", "transform", "shard"})
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
  local self = setmetatable({
    dataset = dataset,
    n = n,
    batch_size = check.integer(WHERE, "batch_size", opts.batch_size, 1, {min = 1}),
    shuffle = check.boolean(WHERE, "shuffle", opts.shuffle, false),
    seed = seed,
    drop_last = check.boolean(WHERE, "drop_last", opts.drop_last, false),
    transform = check.func(WHERE, "transform", opts.transform),
    epoch = 0,
  }, Loader)
  if check.boolean(WHERE, "shard", opts.shard, false) then
    local world = ft.dist.world_size()
    if self.batch_size % world ~= 0 then
      error(("%s: batch_size %d (the global batch, with shard = true) does not divide among world_size %d ranks; "
        .. "give a multiple of %d"):format(WHERE, self.batch_size, world, world), 2)
    end
    if world > 1 then
      ft.dist.check_same("ft.data.loader's dataset size and options (shard = true)",
        {n = n, batch_size = self.batch_size, shuffle = self.shuffle, seed = seed or false,
         drop_last = self.drop_last})
      self._world, self._rank = world, ft.dist.rank()
    end
  end
  return self
end

--- #loader: the number of batches per epoch (the last one short unless drop_last); with
-- shard, this rank's, which is the single process's count.
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
    -- Every rank drew (its generator moves on as rank 0's does); rank 0's draw is the epoch's.
    if self._world then seed = math.tointeger(ft.dist.broadcast_value(seed, 0)) end
  end
  return ft.tensor(shuffle.permutation(self.n, seed), {dtype = "int64"})
end

-- This rank's share of the epoch's order: positions rank+1, rank+1+W ... of the order,
-- padded (drop_last = false: its first entries repeated up to a multiple of W) or cut to
-- the full global batches (drop_last = true).
local function rank_share(order, n, count, bs, world, rank, drop_last)
  local used
  if drop_last then
    used = count * bs
  else
    used = (n + world - 1) // world * world
  end
  if used == 0 then return order end
  local parts, have = {}, 0
  while have < used do   -- the order, then its start again (as often as it takes when n < W)
    local take = math.min(n, used - have)
    parts[#parts + 1] = order:narrow(1, 1, take)
    have = have + take
  end
  local padded = #parts == 1 and parts[1] or ft.cat(parts, 1)
  return padded:reshape(used // world, world):select(2, rank + 1):contiguous()
end

--- loader:iter() --> iterator over the batches (x, y) of one epoch (with shard, this rank's
-- share of each).
function Loader:iter()
  self.epoch = self.epoch + 1
  local order = self:_order()
  local ds, bs, n, transform = self.dataset, self.batch_size, self.n, self.transform
  local count, b = #self, 0
  if self._world then
    order = rank_share(order, n, count, bs, self._world, self._rank, self.drop_last)
    bs, n = bs // self._world, order:size(1)
  end
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
