-- ft.dist.data_parallel: ft.dist.DataParallel(model [, {bucket_mb = 25, broadcast = true,
-- overlap = true}]) -> ddp, data-parallel training as PyTorch's DistributedDataParallel does it.
--
--   local ddp = ft.dist.DataParallel(model)
--   local loss = F.cross_entropy(ddp(x), y)   -- called like the model, on this rank's share
--   loss:backward()                           -- gradients averaged over the ranks as it runs
--   opt:step()
--
-- At construction every rank checks that its model has the same parameters and buffers (names,
-- shapes, dtypes) as rank 0's, then takes rank 0's values (broadcast = false skips that when
-- every rank loaded the same weights). A forward under grad mode arms the gradient reducer for
-- the next backward: the trainable parameters' gradients are packed into buckets of about
-- bucket_mb MiB, in reverse registration order, and each bucket's all-reduce starts as soon as
-- the last of its gradients is complete, while backward goes on; backward returns once every
-- bucket is averaged (overlap = false starts them all at the end of backward instead, to
-- measure what the overlap saves). Only parameters that require grad travel (a LoRA run sends its adapters).
-- Gradient accumulation: run all micro-batches but the last inside ddp:no_sync(fn), whose
-- gradients then accumulate locally and are averaged with the last one's.
--
-- Randomness: ft's global generator is the stream every rank shares (initialisation, batch
-- sampling, shuffling, augmentation drawn for the whole global batch), so a forward never
-- advances it by its own draws: with several ranks it runs on a stream of its own, seeded from
-- the shared state and the rank, so that dropout differs between ranks (as each rank's rows
-- differ) and the shared stream stays the same everywhere; when the forward drew anything the
-- shared stream then moves on by one draw, the same on every rank, so the next forward's
-- masks are new. A checkpoint of the shared state therefore resumes every rank exactly.
--
-- Anything else (ddp:parameters(), ddp:train(), ddp:state_dict() ...) is the model's own;
-- ddp.module is the model. In a world of one nothing is communicated and the generator is
-- left alone: the wrapped model computes exactly what the bare one does.
local ft = require "ft"

local check = ft.check

local shuffle = require "ft.data.shuffle"

local WHERE = "ft.dist.DataParallel"

local DataParallel = {}

local methods = {}

local function describe(name, t)
  if not ft.is_tensor(t) then return name .. " (" .. tostring(type(t)) .. ")" end
  return ("%s [%s] %s%s"):format(name, table.concat(t:shape(), ","), t:dtype(), t.requires_grad and " trainable" or "")
end

--- ft.dist.DataParallel(model [, {bucket_mb = 25, broadcast = true, overlap = true}]) -> ddp: the
-- model, trained data-parallel (see the top of this file).
local function new(model, opts)
  local dist = ft.dist
  if type(model) ~= "table" or type(model.named_parameters) ~= "function" then
    error(WHERE .. ": expected an ft.nn.Module, got " .. check.show(model), 2)
  end
  opts = ft.check_options(WHERE, opts, {"bucket_mb", "broadcast", "overlap"})
  local bucket_mb = check.number(WHERE, "bucket_mb", opts.bucket_mb, 25, {above = 0})
  local broadcast = check.boolean(WHERE, "broadcast", opts.broadcast, true)
  local overlap = check.boolean(WHERE, "overlap", opts.overlap, true)

  local states, described, trainable, names = {}, {}, {}, {}
  for name, p in model:named_parameters() do
    states[#states + 1] = p
    described[#described + 1] = describe(name, p)
    if ft.is_tensor(p) and p.requires_grad then
      trainable[#trainable + 1] = p
      names[#names + 1] = name
    end
  end
  for name, b in model:named_buffers() do
    states[#states + 1] = b
    described[#described + 1] = describe(name, b)
  end
  dist.check_same("the model's parameters and buffers", described)

  local self = {module = model, _sync = true}
  if dist.world_size() > 1 then
    if broadcast then
      for _, t in ipairs(states) do
        if ft.is_tensor(t) then dist.broadcast(t, 0) end
      end
    end
    if #trainable > 0 then
      self._reducer = ft._dist.reducer(trainable, names, math.floor(bucket_mb * 2 ^ 20))
      self._reducer:set_overlap(overlap)
      self._names = names
    end
  end
  return setmetatable(self, DataParallel)
end

--- ddp(...) -> the model's output: model(...), arming the gradient reducer for the backward
-- that follows when grad mode is on (and not inside ddp:no_sync).
function DataParallel:__call(...)
  local reducer = rawget(self, "_reducer")
  if not reducer then return self.module(...) end
  if rawget(self, "_sync") and ft.is_grad_enabled() then reducer:arm() end
  local shared = ft.get_rng_state()
  local words = shared:totable()
  local seed = shuffle.mix((ft.dist.rank() + 1) * shuffle.GOLDEN)
  for _, w in ipairs(words) do seed = shuffle.mix(seed ~ w) end
  ft.manual_seed(seed)
  local own = ft.get_rng_state():totable()
  local results = table.pack(pcall(self.module, ...))
  local after = ft.get_rng_state():totable()
  ft.set_rng_state(shared)
  if after[1] ~= own[1] or after[2] ~= own[2] or after[3] ~= own[3] or after[4] ~= own[4] then ft.rand(1) end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- ddp:no_sync(fn, ...) -> fn(...)'s results: inside fn, forwards do not arm the reducer, so
-- the backward passes accumulate gradients locally (all micro-batches of an accumulated step
-- but the last).
function methods:no_sync(fn, ...)
  check.func(WHERE .. ":no_sync", "fn", fn)
  local previous = rawget(self, "_sync")
  rawset(self, "_sync", false)
  local results = table.pack(pcall(fn, ...))
  rawset(self, "_sync", previous)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- ddp:global_mean(loss, count) -> scaled_loss, mean: for a loss that is the mean over this
-- rank's count items (tokens, examples) when the ranks' counts differ: scaled_loss (loss *
-- world_size * count / total count) makes the gradients DataParallel averages those of the mean
-- over every rank's items, as one process computes it on the whole batch; mean (a number) is
-- that global mean's value, the same on every rank, for logs. One all-reduce of two numbers.
function methods:global_mean(loss, count)
  if not ft.is_tensor(loss) then check.fail(WHERE .. ":global_mean", "loss", "a tensor", loss) end
  check.number(WHERE .. ":global_mean", "count", count, nil, {min = 0})
  local world = ft.dist.world_size()
  local value = loss:item()
  if world == 1 then return loss, value end
  local sums = ft.dist.all_reduce(ft.tensor({value * count, count}, {dtype = "float64"})):totable()
  if sums[2] == 0 then error(WHERE .. ":global_mean: no rank has any item (every count is 0)", 2) end
  return loss * (world * count / sums[2]), sums[1] / sums[2]
end

--- ddp:timeline() -> the last reduction as seconds since its forward began: {backward_start,
-- first_gradient, backward_end, reduced, buckets = {{params = {names}, bytes, started, done}}};
-- nil in a world of one.
function methods:timeline()
  local reducer = rawget(self, "_reducer")
  if not reducer then return nil end
  local out = reducer:times()
  out.buckets = reducer:buckets()
  for _, b in ipairs(out.buckets) do
    for i, k in ipairs(b.params) do b.params[i] = self._names[k] end
  end
  return out
end

DataParallel.__index = function(self, key)
  local m = methods[key]
  if m ~= nil then return m end
  local module = rawget(self, "module")
  local v = module[key]
  if type(v) == "function" then -- the model's method, called on the model
    return function(first, ...)
      if first == self then return v(module, ...) end
      return v(first, ...)
    end
  end
  return v
end

-- Fields set on ddp are the model's (ddp.training = false is model.training = false).
DataParallel.__newindex = function(self, key, value) rawget(self, "module")[key] = value end

DataParallel.__tostring = function(self) return "ft.dist.DataParallel(" .. tostring(self.module) .. ")" end

return new
