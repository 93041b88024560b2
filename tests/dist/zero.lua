-- ft.optim.ZeroRedundancy under mpirun (tests/sh/dist_zero.sh): N ranks, each with its share of
-- every batch and the optimizer state of its own partition, must end with the parameters one
-- process reaches with plain AdamW on the whole batch (within float32 rounding), and with exactly
-- the parameters of DataParallel with a plain AdamW on every rank; its state dict is the plain
-- optimizer's and moves between the two.
--
--   ftlua zero.lua                      the checks
--   ftlua zero.lua save FILE            ... then rank 0 writes a checkpoint taken after 5 steps
--   ftlua zero.lua resume FILE          ... then resumes FILE (saved on any number of ranks) and
--                                       continues, against one process resuming it on the whole batch
local ft = require "ft"
local T = require "common"

local dist, rank, world = T.dist, T.rank, T.world
assert(world >= 2, "run under mpirun with at least 2 ranks")
local mode, file = arg[1], arg[2]

local B, L, STEPS, HALF = 4 * world, 16, 10, 5
ft.manual_seed(7)
local batches = {}
for s = 1, STEPS do batches[s] = ft.randint(1, 64, {B, L + 1}) end
local mine = T.rows(B)
local OPTIONS = {lr = 1e-3, weight_decay = 0.01}

-- Two param groups: matrices with weight decay, the rest without and at half the lr.
local function groups(model)
  local decay, other = {}, {}
  for _, p in ipairs(model:parameters()) do
    if p:dim() >= 2 then decay[#decay + 1] = p else other[#other + 1] = p end
  end
  return {{params = decay}, {params = other, weight_decay = 0, lr = OPTIONS.lr / 2}}
end

-- Steps from..to of training: net is the model or its DataParallel; sharded: this rank's rows.
local function train(net, opt, sched, sharded, from, to)
  for s = from, to do
    local rows = sharded and batches[s]:index_select(1, mine) or batches[s]
    opt:zero_grad()
    T.lm_loss(net, rows):backward()
    opt:step()
    if sched then sched:step() end
  end
end

local function cosine(opt) return ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = STEPS, eta_min = 1e-4}) end

-- Each rank its own initialisation: DataParallel takes rank 0's.
local function zero_run()
  local model = T.gpt(100 + rank)
  local ddp = ft.dist.DataParallel(model)
  local opt = ft.optim.ZeroRedundancy(groups(model), ft.optim.AdamW, OPTIONS)
  return model, ddp, opt, cosine(opt)
end

local function state_diff(a, b)
  local worst = 0
  for k, t in pairs(a) do
    assert(b[k] ~= nil, "state dict key " .. k .. " missing from the reference")
    worst = math.max(worst, (t - b[k]):abs():max():item())
  end
  for k in pairs(b) do assert(a[k] ~= nil, "state dict key " .. k .. " missing") end
  return worst
end

-- ---- against one process on the whole batch, and against DataParallel + plain AdamW ----------
local model, ddp, zero, sched = zero_run()
train(ddp, zero, sched, true, 1, STEPS)

local ref = T.gpt(100)
local ref_opt = ft.optim.AdamW(groups(ref), OPTIONS)
train(ref, ref_opt, cosine(ref_opt), false, 1, STEPS)
T.within(T.max_param_diff(model, ref), 1e-5,
  ("ZeroRedundancy(AdamW) on %d ranks against one process on the whole batch: parameters after %d steps (cosine lr)")
  :format(world, STEPS))

local plain_model = T.gpt(100 + rank)
local plain_ddp = ft.dist.DataParallel(plain_model)
local plain = ft.optim.AdamW(groups(plain_model), OPTIONS)
train(plain_ddp, plain, cosine(plain), true, 1, STEPS)
T.within(T.max_param_diff(model, plain_model), 0, "against DataParallel with a plain AdamW on every rank")
T.within(state_diff(zero:state_dict(), plain:state_dict()), 0,
  "the gathered state dict against the plain AdamW's on every rank")

-- ---- the partition: whole parameters, the same on every rank, each owned once -------------
do
  local owners = zero:partition()
  dist.check_same("the partition", owners)
  local params = {}
  for _, g in ipairs(zero.param_groups) do for _, p in ipairs(g.params) do params[#params + 1] = p end end
  assert(#owners == #params, "an owner for every parameter")
  local index = {}
  for i, p in ipairs(params) do index[p] = i end
  local inner = assert(zero.optim, "this rank owns no parameter")
  local held = ft.zeros(#params, {dtype = "int64"})
  local elements, state_elements = {}, 0
  for r = 1, world do elements[r] = 0 end
  for i, p in ipairs(params) do elements[owners[i] + 1] = elements[owners[i] + 1] + p:numel() end
  for _, group in ipairs(inner.param_groups) do
    for _, p in ipairs(group.params) do
      assert(owners[index[p]] == rank, "the inner optimizer has a parameter of another rank")
    end
  end
  for p, s in pairs(inner.state) do
    local i = assert(index[p], "state for a tensor that is no parameter")
    assert(owners[i] == rank, ("rank %d holds state for parameter %d of rank %d"):format(rank, i, owners[i]))
    if s.exp_avg then
      held[i] = 1
      state_elements = state_elements + s.exp_avg:numel() + s.exp_avg_sq:numel()
    end
  end
  dist.all_reduce(held)
  for i = 1, #params do
    assert(held[i]:item() == 1, ("parameter %d has state on %d ranks"):format(i, held[i]:item()))
  end
  local total, largest = 0, 0
  for _, p in ipairs(params) do total = total + p:numel(); largest = math.max(largest, p:numel()) end
  assert(state_elements == 2 * elements[rank + 1], "this rank's Adam state is two moments of its partition")
  for r = 1, world do
    assert(elements[r] <= total / world + largest, "an unbalanced partition")
  end
  T.say("ok   partition: %d parameters, each with state on exactly one rank; elements per rank %s of %d",
    #params, table.concat(elements, ", "), total)
end

-- ---- constraints run on the owner and reach every rank ---------------------------------------
do
  local function clamp(p) p:copy_(p:clamp(-0.03, 0.03)) end
  local a, b = T.gpt(100 + rank), T.gpt(100 + rank)
  local da, db = ft.dist.DataParallel(a), ft.dist.DataParallel(b)
  ft.optim.constrain(a.transformer.wte.weight, clamp)
  ft.optim.constrain(b.transformer.wte.weight, clamp)
  local za = ft.optim.ZeroRedundancy(a:parameters(), ft.optim.AdamW, {lr = 1e-2})
  local pb = ft.optim.AdamW(b:parameters(), {lr = 1e-2})
  train(da, za, nil, true, 1, 3)
  train(db, pb, nil, true, 1, 3)
  T.within(T.max_param_diff(a, b), 0, "with a constraint, against DataParallel with a plain AdamW")
  local bound = string.unpack("f", string.pack("f", 0.03))
  assert(a.transformer.wte.weight:abs():max():item() == bound, "the constraint did not bite")
  ft.optim.constrain(a.transformer.wte.weight, nil)
  ft.optim.constrain(b.transformer.wte.weight, nil)
end

-- ---- more ranks than parameters: a rank that owns nothing ---------------------------------
do
  local function one(seed)
    ft.manual_seed(seed)
    return ft.nn.Parameter(ft.randn(5))
  end
  local p, q = one(3), one(3)
  local z = ft.optim.ZeroRedundancy({p}, ft.optim.SGD, {lr = 0.1, momentum = 0.9})
  local o = ft.optim.SGD({q}, {lr = 0.1, momentum = 0.9})
  assert((z.optim == nil) == (rank ~= 0), "parameter 1 is rank 0's; the others own nothing")
  for s = 1, 3 do
    p.grad = ft.full({5}, s * 0.5)
    q.grad = ft.full({5}, s * 0.5)
    z:step()
    o:step()
  end
  T.within((p - q):abs():max():item(), 0, "a single parameter on rank 0, the other ranks owning nothing")
  T.within(state_diff(z:state_dict(), o:state_dict()), 0, "its state dict, gathered from rank 0")
end

-- ---- the state dict round trip: ZeRO on these ranks <-> a plain AdamW in this process -------
local function copy_params(dst, src)
  local theirs = {}
  for name, p in src:named_parameters() do theirs[name] = p end
  ft.no_grad(function()
    for name, p in dst:named_parameters() do p:copy_(theirs[name]) end
  end)
end

do
  local m, d, z, s = zero_run()
  train(d, z, s, true, 1, HALF)
  local sd = z:state_dict() -- every rank gets the full state

  -- ZeRO -> a plain AdamW in this process, continuing on the whole batch
  local solo = T.gpt(1)
  copy_params(solo, m)
  local solo_opt = ft.optim.AdamW(groups(solo), {lr = 1})
  local solo_sched = cosine(solo_opt) -- made before the loads, as when resuming in torch
  solo_opt:load_state_dict(sd)
  solo_sched:load_state_dict(s:state_dict())

  -- a plain AdamW in this process -> ZeRO on these ranks
  local back, back_ddp, back_opt, back_sched = zero_run()
  copy_params(back, m)
  back_opt:load_state_dict(solo_opt:state_dict())
  back_sched:load_state_dict(s:state_dict())

  train(d, z, s, true, HALF + 1, STEPS)
  train(solo, solo_opt, solo_sched, false, HALF + 1, STEPS)
  train(back_ddp, back_opt, back_sched, true, HALF + 1, STEPS)
  T.within(T.max_param_diff(solo, m), 1e-5,
    ("a plain AdamW in one process resumed from ZeRO's state on %d ranks, against ZeRO going on"):format(world))
  T.within(T.max_param_diff(back, m), 0, "ZeRO resumed from the plain AdamW's state, against ZeRO going on")

  if mode == "save" then
    if rank == 0 then
      local out = {}
      for k, v in pairs(sd) do out["optimizer." .. k] = v end
      for k, v in pairs(s:state_dict()) do out["scheduler." .. k] = v end
      for k, v in pairs(m:state_dict()) do out["model." .. k] = v end
      ft.save(file, out)
    end
    dist.barrier()
    T.say("ok   saved the state after %d steps on %d ranks to %s", HALF, world, file)
  end
end

-- ---- resuming a checkpoint saved on any number of ranks ------------------------------------
if mode == "resume" then
  local saved = ft.load(file)
  local part = {optimizer = {}, scheduler = {}, model = {}}
  for k, v in pairs(saved) do
    local head, rest = k:match("^(%a+)%.(.+)$")
    part[head][rest] = v
  end
  local m, d, z, s = zero_run()
  m:load_state_dict(part.model)
  z:load_state_dict(part.optimizer)
  s:load_state_dict(part.scheduler)
  local solo = T.gpt(1)
  solo:load_state_dict(part.model)
  local solo_opt = ft.optim.AdamW(groups(solo), {lr = 1})
  local solo_sched = cosine(solo_opt)
  solo_opt:load_state_dict(part.optimizer)
  solo_sched:load_state_dict(part.scheduler)
  train(d, z, s, true, HALF + 1, STEPS)
  train(solo, solo_opt, solo_sched, false, HALF + 1, STEPS)
  T.within(T.max_param_diff(m, solo), 1e-5,
    ("ZeRO on %d ranks resumed from %s, against one process resuming it on the whole batch"):format(world, file))
end

-- ---- what ZeroRedundancy refuses --------------------------------------------------------------
do
  local ps = T.gpt(1):parameters()
  T.fails(function() ft.optim.ZeroRedundancy(ps, ft.nn.Linear, {lr = 1}) end,
    "ft.optim.ZeroRedundancy: optimizer must be ft.optim.SGD, ft.optim.Adam or ft.optim.AdamW", "a class that is no optimizer")
  T.fails(function() ft.optim.ZeroRedundancy(ps, ft.optim.AdamW, {betas1 = 0.9}) end,
    "ft.optim.ZeroRedundancy: ft.optim.AdamW: unknown option 'betas1'", "a misspelled option")
  T.fails(function() ft.optim.ZeroRedundancy(T.gpt(1, {n_embd = 32 + 16 * rank}):parameters(), ft.optim.AdamW) end,
    "the optimizer's parameters differ between ranks: rank 0 has 'param_groups[1] [64,32] float32', rank 1 has "
    .. "'param_groups[1] [64,48] float32'", "parameters of different shapes on the ranks")
  local z = ft.optim.ZeroRedundancy(ps, ft.optim.AdamW)
  local sd = z:state_dict()
  sd["param_groups.1.num_params"] = ft.tensor({1})
  T.fails(function() z:load_state_dict(sd) end,
    "ft.optim.ZeroRedundancy:load_state_dict: param group 1 has 1 parameters in the state dict", "a state dict of another model")
end

T.say("all ZeroRedundancy checks passed on %d ranks", world)
