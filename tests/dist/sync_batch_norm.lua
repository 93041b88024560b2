-- ft.nn.SyncBatchNorm under mpirun (tests/sh/dist_sync_batch_norm.sh): with each rank holding
-- its rows of every batch, SyncBatchNorm layers must compute what BatchNorm computes in one
-- process on the whole batch: outputs, gradients (input, weight, bias) and running statistics,
-- for 2-D, 3-D and 4-D inputs and shares of different sizes; and a ResNet-S converted with
-- SyncBatchNorm.convert and trained under DataParallel must end where one process with plain
-- BatchNorm ends on the whole batch, while the same ResNet with plain BatchNorm under
-- DataParallel must not (each rank normalises with its own rows' statistics). With gradient
-- checkpointing of the stages the SyncBatchNorm ResNet-S must train exactly as without it.
local ft = require "ft"
local T = require "common"

local nn, F = ft.nn, ft.nn.functional
local dist, rank, world = T.dist, T.rank, T.world
assert(world >= 2, "run under mpirun with at least 2 ranks")

local function max_diff(a, b) return (a:to("float32") - b:to("float32")):abs():max():item() end

-- max |a - b| / max |b|: a difference relative to the reference's scale.
local function rel_diff(a, b) return max_diff(a, b) / math.max(b:abs():max():item(), 1e-30) end

-- The largest |a - b| over the buffers (running statistics, batch counts) of two models.
local function max_buffer_diff(a, b)
  local theirs = {}
  for name, t in b:named_buffers() do theirs[name] = t end
  local worst, n = 0, 0
  for name, t in a:named_buffers() do
    assert(theirs[name], "buffer " .. name .. " missing from the reference")
    worst = math.max(worst, max_diff(t, theirs[name]))
    n = n + 1
  end
  assert(n > 0, "no buffers compared")
  return worst
end

-- ---- one layer: this rank's rows against one process on the whole batch ---------------------
-- N = 2 * world + 1 rows, strided, so rank 0 holds one row more than the others.
do
  local C = 3
  for _, shape in ipairs({ { 2 * world + 1, C }, { 2 * world + 1, C, 5 }, { 2 * world + 1, C, 4, 3 } }) do
    local what = ("SyncBatchNorm on [%s]"):format(table.concat(shape, ","))
    ft.manual_seed(11)
    local x = ft.randn(table.unpack(shape)) * 2 + 3
    local gy = ft.randn(table.unpack(shape))
    local weight, bias = ft.randn(C), ft.randn(C)
    local idx = {}
    for i = rank + 1, shape[1], world do idx[#idx + 1] = i end
    idx = ft.tensor(idx, { dtype = "int64" })

    local ref = nn.BatchNorm(C, { momentum = 0.3 })
    local sync = nn.SyncBatchNorm(C, { momentum = 0.3 })
    ft.no_grad(function()
      for _, m in ipairs({ ref, sync }) do
        m.weight:copy_(weight)
        m.bias:copy_(bias)
      end
    end)
    local x_ref = x:clone()
    x_ref.requires_grad = true
    local x_mine = x:index_select(1, idx)
    x_mine.requires_grad = true
    local worst = {}
    for step = 1, 2 do -- the second step starts from running statistics the first updated
      local y_ref, y = ref(x_ref), sync(x_mine)
      ;(y_ref * gy):sum():backward()
      ;(y * gy:index_select(1, idx)):sum():backward()
      local function note(key, v) worst[key] = math.max(worst[key] or 0, v) end
      note("output", rel_diff(y, y_ref:index_select(1, idx)))
      note("input gradient", rel_diff(x_mine.grad, x_ref.grad:index_select(1, idx)))
      -- each rank's weight and bias gradients are its rows' share: their sum is the whole batch's
      note("weight gradient", rel_diff(dist.all_reduce(sync.weight.grad:clone()), ref.weight.grad))
      note("bias gradient", rel_diff(dist.all_reduce(sync.bias.grad:clone()), ref.bias.grad))
      note("running_mean", max_diff(sync.running_mean, ref.running_mean))
      note("running_var", max_diff(sync.running_var, ref.running_var))
      assert(sync.num_batches_tracked:item() == step, "num_batches_tracked")
    end
    for _, key in ipairs({ "output", "input gradient", "weight gradient", "bias gradient" }) do
      T.within(worst[key], 1e-5, what .. ": " .. key .. " relative to one process's largest")
    end
    T.within(worst.running_mean, 1e-5, what .. ": running_mean")
    T.within(worst.running_var, 1e-5, what .. ": running_var")
    -- eval mode uses the running statistics, the same on every rank: no exchange
    sync:eval()
    ref:eval()
    T.within(max_diff(sync(x_mine), ref(x_ref):index_select(1, idx)), 1e-5, what .. ": eval-mode output")
  end
end

-- ---- a ResNet-S trained data-parallel ------------------------------------------------------
local B, STEPS, CLASSES = 4 * world, 10, 10
ft.manual_seed(7)
local batches = {}
for s = 1, STEPS do
  batches[s] = { x = ft.randn(B, 1, 12, 12) * 0.5 + 0.2, y = ft.randint(1, CLASSES, { B }) }
end
local mine = T.rows(B)

-- A small ResNet-S (3 stages of one BasicBlock, widths 8, 16, 32: 9 BatchNorm2d layers).
local function resnet(seed, sync)
  ft.manual_seed(seed)
  local m = ft.models.new("resnet-s", { widths = { 8, 16, 32 }, layers = { 1, 1, 1 }, num_classes = CLASSES })
  if sync then m = nn.SyncBatchNorm.convert(m) end
  return m
end

-- Trains model for STEPS steps of SGD (momentum 0.9): under DataParallel on this rank's rows,
-- or alone on the whole batch. Returns the first step's gradients.
local function train(model, use_ddp)
  local net = use_ddp and ft.dist.DataParallel(model) or model
  local params = model:parameters()
  local opt = ft.optim.SGD(params, { lr = 0.05, momentum = 0.9 })
  local first
  for s = 1, STEPS do
    local x, y = batches[s].x, batches[s].y
    if use_ddp then x, y = x:index_select(1, mine), y:index_select(1, mine) end
    F.cross_entropy(net(x), y):backward()
    if s == 1 then
      first = {}
      for i, p in ipairs(params) do first[i] = p.grad:clone() end
    end
    opt:step()
    opt:zero_grad()
  end
  return first
end

local function grad_diff(a, b)
  local worst, scale = 0, 0
  for i = 1, #a do
    worst = math.max(worst, max_diff(a[i], b[i]))
    scale = math.max(scale, b[i]:abs():max():item())
  end
  return worst / scale
end

local ref = resnet(100, false)
local ref_grads = train(ref, false)

-- every rank its own initialisation: DataParallel takes rank 0's parameters and buffers
local model = resnet(100 + rank, true)
local n_sync, n_plain = 0, 0
for _, m in model:named_modules() do
  if m.__name == "SyncBatchNorm" then n_sync = n_sync + 1 end
  if m.__name == "BatchNorm2d" then n_plain = n_plain + 1 end
end
assert(n_sync == 9 and n_plain == 0, ("convert left %d SyncBatchNorm and %d BatchNorm2d layers"):format(n_sync, n_plain))
local grads = train(model, true)
T.within(grad_diff(grads, ref_grads), 1e-5, "SyncBatchNorm ResNet-S: first step's gradients, relative to their largest")
T.within(T.max_param_diff(model, ref), 1e-5, "SyncBatchNorm ResNet-S: parameters after " .. STEPS .. " SGD steps")
T.within(max_buffer_diff(model, ref), 1e-5, "SyncBatchNorm ResNet-S: running statistics after " .. STEPS .. " steps")
assert(model.layer2[1].downsample[2].num_batches_tracked:item() == STEPS, "num_batches_tracked")
model:eval()
ref:eval()
T.within(max_diff(model(batches[1].x), ref(batches[1].x)), 1e-5, "SyncBatchNorm ResNet-S: eval-mode logits")

-- Gradient checkpointing of its stages: every rank reruns each stage's exchanges in backward,
-- and the rerun leaves the running statistics alone: the run without checkpointing, exactly.
local checkpointed = resnet(100 + rank, true)
checkpointed:gradient_checkpointing_enable()
local checkpointed_grads = train(checkpointed, true)
T.within(grad_diff(checkpointed_grads, grads), 0, "checkpointed SyncBatchNorm ResNet-S: first step's gradients")
T.within(T.max_param_diff(checkpointed, model), 0, "checkpointed SyncBatchNorm ResNet-S: parameters after " ..
  STEPS .. " steps")
T.within(max_buffer_diff(checkpointed, model), 0, "checkpointed SyncBatchNorm ResNet-S: running statistics")
assert(checkpointed.layer2[1].downsample[2].num_batches_tracked:item() == STEPS, "num_batches_tracked, checkpointed")

-- The control: plain BatchNorm under DataParallel normalises with each rank's own rows.
local plain = resnet(100 + rank, false)
train(plain, true)
local param_gap, buffer_gap = T.max_param_diff(plain, ref), max_buffer_diff(plain, ref)
local stats = {}
for name, t in plain:named_buffers() do
  if name:match("running_") then stats[#stats + 1] = t:reshape(1, -1) end
end
local gathered = dist.all_gather(ft.cat(stats, 2))
local rank_gap = max_diff(gathered[1], gathered[2])
if not (param_gap > 1e-3 and buffer_gap > 1e-3 and rank_gap > 1e-3) then
  error(("rank %d: plain BatchNorm under DataParallel came within %.3g (parameters), %.3g (running "
    .. "statistics) of one process and %.3g of the other rank: the comparison cannot tell"):format(rank,
    param_gap, buffer_gap, rank_gap))
end
T.say("ok   plain BatchNorm under DataParallel differs from one process: parameters by %.3g, running "
  .. "statistics by %.3g; the ranks' running statistics differ by %.3g", param_gap, buffer_gap, rank_gap)

T.say("all SyncBatchNorm checks passed on %d ranks", world)
