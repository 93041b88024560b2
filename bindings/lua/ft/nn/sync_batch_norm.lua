-- ft.nn.sync_batch_norm: SyncBatchNorm, BatchNorm whose training statistics are those of the
-- global batch of a data-parallel run (ft.dist), as torch.nn.SyncBatchNorm. ft.nn re-exports it.
--
--   local model = ft.nn.SyncBatchNorm.convert(ft.models.new("resnet-s"))   -- every BatchNorm
--   local ddp = ft.dist.DataParallel(model)
--   local loss = F.cross_entropy(ddp(ft.dist.shard(x)), ft.dist.shard(y))  -- this rank's rows
--   loss:backward()                        -- gradients as one process on the whole batch
--
-- In training each layer adds up, per channel, its rank's sum of x, sum of x^2 and count of
-- values in one ft.dist.sum_across of a packed tensor [2C + 1], normalises with the global
-- mean and biased variance, and updates running_var with the unbiased global variance (count
-- N*H*W over all ranks), so every rank keeps the running statistics one process would. The
-- gradients come through autograd: sum_across's backward adds up the ranks' gradients of the
-- statistics, the cross-rank terms of BatchNorm's backward. The ranks may hold different
-- numbers of rows; every rank must run the same layers in the same order (as any collective).
-- In eval mode (or under bn_policy "eval") it is BatchNorm: running statistics, no exchange.
-- In a world of one it computes what BatchNorm computes, up to float32 rounding (the variance
-- is E[x^2] - mean^2 here, two passes in BatchNorm's kernel).
local ft = require "ft"

local base = require "ft.nn.module"
local layers = require "ft.nn.layers"

local check = ft.check
local BatchNorm = layers.BatchNorm

local M = {}

--- SyncBatchNorm(num_features, {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}):
-- BatchNorm over dim 2 (channels) of inputs [N,C], [N,C,L] or [N,C,H,W] with the statistics of
-- the global batch, summed over the ranks of ft.dist in training (see the top of this file).
-- The same parameters, buffers, options and printed form as ft.nn.BatchNorm.
local SyncBatchNorm = BatchNorm:extend("SyncBatchNorm")
M.SyncBatchNorm = SyncBatchNorm

--- bn:check_input(x): an error unless x is a tensor of at least 2 dims with num_features
-- channels at dim 2.
function SyncBatchNorm:check_input(x)
  if not ft.is_tensor(x) then
    error(("ft.nn.SyncBatchNorm: expected a tensor input, got %s"):format(check.show(x)), 3)
  end
  if x:dim() < 2 then
    error(("ft.nn.SyncBatchNorm: expected at least 2D input (got %dD input)"):format(x:dim()), 3)
  end
  if x:size(2) ~= self.num_features then
    error(("ft.nn.SyncBatchNorm: expected %d channels at dim 2, got input [%s]"):format(self.num_features,
      table.concat(x:shape(), ",")), 3)
  end
end

local function float32(t)
  if t ~= nil and t:dtype() ~= "float32" then return t:to("float32") end
  return t
end

-- running <- (1 - momentum) * running + momentum * value, in float32, written back in the
-- buffer's dtype.
local function blend(running, value, momentum)
  running:copy_(float32(running) * (1 - momentum) + value * momentum)
end

--- bn:forward(x) -> y (bn(x) calls it): in training, x normalised per channel with the mean and
-- biased variance of every rank's x (one ft.dist.sum_across), the running statistics updated
-- with the global mean and unbiased variance; in eval mode or under bn_policy "eval", BatchNorm's
-- forward (running statistics, nothing exchanged).
function SyncBatchNorm:forward(x)
  self:check_input(x)
  local training = self.training and self.bn_policy ~= "eval"
  -- Eval mode, or a frozen layer: BatchNorm's computation (running statistics, or without them
  -- this rank's batch statistics, as torch's SyncBatchNorm outside training).
  if not training then return BatchNorm.forward(self, x) end
  -- A checkpoint's recomputation exchanges and normalises as the first forward did (every rank
  -- recomputes) but does not update the running statistics a second time.
  local track = self.track_running_stats and not ft.autograd.is_recomputing()
  if track then self.num_batches_tracked:add_(1) end

  x = float32(x)
  local c = self.num_features
  local dims, view = { 1 }, { 1, c }
  for d = 3, x:dim() do
    dims[#dims + 1] = d
    view[d] = 1
  end
  local count = x:numel() // c
  local packed = ft.cat({ x:sum(dims), (x * x):sum(dims), ft.tensor({ count }) }, 1)
  local total = ft.dist.sum_across(packed)
  local n = total:narrow(1, 2 * c + 1, 1):item()
  if n <= 1 then
    error(("ft.nn.SyncBatchNorm: expected more than 1 value per channel when training, got %s " ..
      "over all ranks (this rank's input [%s])"):format(math.tointeger(n) or n, table.concat(x:shape(), ",")), 2)
  end
  local mean = total:narrow(1, 1, c) / n
  local var = (total:narrow(1, c + 1, c) / n - mean * mean):clamp(0)   -- biased
  local std = (var + self.eps):sqrt()
  local weight, bias = float32(self.weight), float32(self.bias)
  local scale = weight and weight / std or 1 / std
  -- Centred before scaling, as BatchNorm's kernel: the weight's gradient sums grad * (x - mean).
  local y = (x - mean:reshape(view)) * scale:reshape(view)
  if bias then y = y + bias:reshape(view) end

  if track then
    local momentum = self.momentum
    ft.no_grad(function()
      blend(self.running_mean, mean:detach(), momentum)
      blend(self.running_var, var:detach() * (n / (n - 1)), momentum)   -- unbiased
    end)
  end
  return y
end

-- True when m is an ft.nn.BatchNorm (or an instance of a subclass: BatchNorm1d, BatchNorm2d)
-- and not already a SyncBatchNorm.
local function is_plain_batch_norm(m)
  local mt = getmetatable(m)
  if mt == SyncBatchNorm.__instance_mt then return false end
  if mt == BatchNorm.__instance_mt then return true end
  local class = m.super
  while class do
    if class == SyncBatchNorm then return false end
    if class == BatchNorm then return true end
    class = rawget(class, "super")
  end
  return false
end

-- A SyncBatchNorm holding bn's options, parameters and buffers (the same tensors), mode and policy.
local function from_batch_norm(bn)
  local sync = SyncBatchNorm(bn.num_features, { eps = bn.eps, momentum = bn.momentum, affine = bn.affine,
    track_running_stats = bn.track_running_stats })
  for _, name in ipairs({ "weight", "bias" }) do sync:register_parameter(name, bn[name]) end
  for _, name in ipairs({ "running_mean", "running_var", "num_batches_tracked" }) do
    sync:register_buffer(name, bn[name], not bn._non_persistent[name])
  end
  sync.training = bn.training
  sync.bn_policy = rawget(bn, "bn_policy")
  return sync
end

--- SyncBatchNorm.convert(model) -> model: every BatchNorm, BatchNorm1d and BatchNorm2d in the
-- model's tree is replaced (m:add_module, under its name and at its place) by a SyncBatchNorm
-- with its options, its parameters and buffers (the same tensors, so an optimizer built
-- before still trains them and state_dict names do not change), its training flag and its
-- bn_policy; as torch.nn.SyncBatchNorm.convert_sync_batchnorm. A layer registered under two
-- names becomes one SyncBatchNorm under both. Returns model, or the new layer when model
-- itself is a BatchNorm. Convert before wrapping in ft.dist.DataParallel.
function SyncBatchNorm.convert(model)
  if not base.is_module(model) then
    check.fail("ft.nn.SyncBatchNorm.convert", "model", "an ft.nn.Module", model)
  end
  local made, seen = {}, {}
  local function convert(m)
    if is_plain_batch_norm(m) then
      made[m] = made[m] or from_batch_norm(m)
      return made[m]
    end
    if seen[m] then return m end
    seen[m] = true
    for name, child in m:named_children() do
      local new = convert(child)
      if new ~= child then m:add_module(name, new) end
    end
    return m
  end
  return convert(model)
end

return M
