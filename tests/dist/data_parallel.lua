-- ft.dist's collectives and DataParallel under mpirun (tests/sh/dist_data_parallel.sh): N ranks,
-- each with its share of every batch, must end with the parameters one process reaches on the
-- whole batch (float32 rounding apart: the mean over B rows is the mean of N means of B/N).
local ft = require "ft"
local T = require "common"

local dist, rank, world = T.dist, T.rank, T.world
assert(world >= 2, "run under mpirun with at least 2 ranks")

-- ---- collectives ------------------------------------------------------------------------
do
  local t = ft.tensor({rank + 1, 10 * (rank + 1)})
  dist.all_reduce(t)
  local n = world * (world + 1) / 2
  assert(t[1]:item() == n and t[2]:item() == 10 * n, "all_reduce sum")
  local a = dist.all_reduce(ft.tensor({rank + 1.0}), {op = "avg"})
  assert(math.abs(a[1]:item() - (world + 1) / 2) < 1e-6, "all_reduce avg")
  assert(dist.all_reduce(ft.tensor({rank}, {dtype = "int64"}), {op = "max"})[1]:item() == world - 1, "max")
  assert(dist.all_reduce(ft.tensor({rank + 5.0}, {dtype = "float64"}), {op = "min"})[1]:item() == 5, "min")
  local b = dist.broadcast(ft.full({3}, rank):to("bfloat16"), world - 1)
  assert(b:to("float32"):eq(world - 1):sum():item() == 3, "broadcast of bfloat16 from the last rank")
  local g = dist.all_gather(ft.full({1, 2}, rank))
  assert(g:size(1) == world and g:size(2) == 2 and g[world][2]:item() == world - 1, "all_gather")
  local s = dist.reduce_scatter(ft.arange(1, 2 * world + 1):reshape(world, 2))
  assert(s:size(1) == 1 and s[1][1]:item() == world * (2 * rank + 1), "reduce_scatter: this rank's row, summed")
  assert(dist.broadcast_value({name = "run-" .. rank, n = rank}, 0).name == "run-0", "broadcast_value")
  T.say("ok   collectives: all_reduce (sum, avg, max, min), broadcast, all_gather, reduce_scatter, broadcast_value")
  T.fails(function() dist.all_reduce(ft.zeros(4, 4):t()) end, "must be contiguous", "all_reduce of a transposed view")
  T.fails(function() dist.all_reduce(ft.zeros(2):to("bfloat16")) end, "bfloat16 tensors cannot be reduced",
    "all_reduce of bfloat16")
  T.fails(function() dist.reduce_scatter(ft.zeros(world + 1)) end, "must divide by the world size",
    "reduce_scatter of an indivisible dim")
  T.fails(function() dist.all_reduce(ft.zeros(2), {op = "mean"}) end, "'sum', 'avg', 'max' or 'min'",
    "an unknown reduction")
  T.fails(function() dist.all_reduce(ft.zeros(2), {opp = "sum"}) end, "unknown option 'opp'", "a misspelled option")
  T.fails(function() dist.check_same("the options", {lr = 0.1 * (rank + 1)}) end, "rank 1 has", "options that differ")
  dist.check_same("the options", {lr = 0.1})
end

-- ---- the differentiable sum across ranks --------------------------------------------------
do
  local x = ft.tensor({1, rank + 2}, {requires_grad = true})
  local y = dist.sum_across(x)
  local loss = (y * ft.tensor({rank + 1, 1})):sum()
  loss:backward()
  -- every rank's input gets the gradient of the sum of all ranks' losses
  assert(x.grad[1]:item() == world * (world + 1) / 2 and x.grad[2]:item() == world, "sum_across gradient")
  T.say("ok   sum_across: values and gradient")
end

-- ---- DataParallel against one process on the whole batch ---------------------------------
local B, L, STEPS = 4 * world, 16, 10
ft.manual_seed(7)
local batches = {}
for s = 1, STEPS do batches[s] = ft.randint(1, 64, {B, L + 1}) end
local mine = T.rows(B)

-- Trains `model` (wrapped by DataParallel when ddp) for STEPS steps; micro > 1 accumulates.
local function train(model, use_ddp, opts)
  opts = opts or {}
  local micro = opts.micro or 1
  local ddp = use_ddp and ft.dist.DataParallel(model, {bucket_mb = opts.bucket_mb or 0.01}) or model
  local params = {}
  for _, p in ipairs(model:parameters()) do if p.requires_grad then params[#params + 1] = p end end
  local opt = ft.optim.AdamW(params, {lr = 1e-3, weight_decay = 0.01})
  local first_grads
  for s = 1, STEPS do
    local rows = use_ddp and batches[s]:index_select(1, mine) or batches[s]
    local per = rows:size(1) // micro
    for m = 1, micro do
      local part = rows:narrow(1, (m - 1) * per + 1, per)
      local function pass()
        local loss = T.lm_loss(ddp, part) / micro
        loss:backward()
      end
      if use_ddp and m < micro then ddp:no_sync(pass) else pass() end
    end
    if s == 1 then
      first_grads = {}
      for i, p in ipairs(params) do first_grads[i] = p.grad:clone() end
    end
    opt:step()
    opt:zero_grad()
  end
  return first_grads, use_ddp and ddp or nil
end

local function grad_diff(a, b)
  local worst, scale = 0, 0
  for i = 1, #a do
    worst = math.max(worst, (a[i] - b[i]):abs():max():item())
    scale = math.max(scale, b[i]:abs():max():item())
  end
  return worst / scale
end

local function compare(what, build, opts)
  local model = build(100 + rank) -- every rank its own initialisation: DataParallel takes rank 0's
  local grads, ddp = train(model, true, opts)
  local ref = build(100)
  local ref_grads = train(ref, false, {micro = 1})
  T.within(grad_diff(grads, ref_grads), 1e-5, what .. ": first step's gradients, relative to their largest")
  T.within(T.max_param_diff(model, ref), 1e-5, what .. ": parameters after " .. STEPS .. " AdamW steps")
  return ddp
end

local ddp = compare("full fine-tuning", T.gpt)
local tl = ddp:timeline()
assert(#tl.buckets > 1, "several buckets at bucket_mb = 0.01")
assert(tl.buckets[1].started < tl.backward_end, "the first bucket's all-reduce starts before backward ends")
for i = 2, #tl.buckets do
  assert(tl.buckets[i].started >= tl.buckets[i - 1].started, "buckets start in order")
end
T.say("ok   overlap: bucket 1 of %d started at %.4f s, backward ended at %.4f s", #tl.buckets, tl.buckets[1].started,
  tl.backward_end)

compare("LoRA", function(seed)
  local m = T.gpt(seed)
  ft.peft.lora(m, {target = {"c_attn", "c_proj"}, r = 4, alpha = 8})
  return m
end)

compare("gradient accumulation (2 micro-batches, no_sync on the first)", T.gpt, {micro = 2})
compare("one bucket for everything", T.gpt, {bucket_mb = 25})

-- ---- what DataParallel refuses -------------------------------------------------------------
T.fails(function() ft.dist.DataParallel(T.gpt(1, {n_embd = 32 + 16 * rank, n_head = 2})) end,
  "rank 0 has 'transformer.wte.weight [64,32] float32 trainable', rank 1 has 'transformer.wte.weight [64,48] float32 trainable'",
  "models of different shapes")
T.fails(function() ft.dist.DataParallel(T.gpt(1), {bucket_mb = 0}) end, "bucket_mb", "a bucket size of 0")
T.fails(function() ft.dist.DataParallel(T.gpt(1), {bucket = 1}) end, "unknown option 'bucket'", "a misspelled option")

-- A parameter no rank's forward reaches keeps no gradient, as in one process.
do
  local m = T.gpt(1)
  local extra = ft.nn.Parameter(ft.zeros(3))
  m:register_parameter("unused", extra)
  local d = ft.dist.DataParallel(m)
  T.lm_loss(d, batches[1]:index_select(1, mine)):backward()
  assert(extra.grad == nil, "an unused parameter got a gradient")
  assert(m.transformer.wte.weight.grad ~= nil, "a used parameter got no gradient")
  T.say("ok   a parameter no rank uses keeps no gradient")
end

-- Randomness: dropout differs between ranks, the shared generator stays the same everywhere.
do
  local m = T.gpt(5, {resid_pdrop = 0.5})
  local d = ft.dist.DataParallel(m)
  local ids = ft.tensor({{1, 2, 3, 4, 5, 6, 7, 8}}, {dtype = "int64"})
  local before = ft.get_rng_state()
  local out = d(ids)
  local logits = out.logits or out
  local all = dist.all_gather(logits:reshape(1, -1))
  assert((all[1] - all[2]):abs():max():item() > 1e-3, "the ranks drew the same dropout masks")
  local states = dist.all_gather(ft.get_rng_state():reshape(1, 4)):totable()
  for r = 2, world do
    for k = 1, 4 do assert(states[r][k] == states[1][k], "the shared generator differs between ranks") end
  end
  assert(ft.get_rng_state():eq(before):sum():item() < 4, "the shared generator did not move on")
  d(ids)
  local again = d(ids)
  assert(((again.logits or again) - logits):abs():max():item() > 1e-3, "the next forward drew the same masks")
  m:eval()
  local s0 = ft.get_rng_state()
  d(ids)
  assert(ft.get_rng_state():eq(s0):sum():item() == 4, "a forward without dropout moved the shared generator")
  T.say("ok   dropout differs between ranks; the shared generator agrees and moves on only when the forward drew")
end

-- global_mean: losses over different item counts average as the mean over all items.
do
  local m = T.gpt(1)
  local d = ft.dist.DataParallel(m)
  local ids = batches[1]:index_select(1, mine)
  local n = (rank + 1) * 4 -- this rank's tokens in the loss: the first n positions of its first row
  local function masked_loss(model, rows, count)
    local logits = model(rows:narrow(2, 1, L))
    logits = (logits.logits or logits)[1]:narrow(1, 1, count)
    return ft.nn.functional.cross_entropy(logits, rows[1]:narrow(1, 2, count))
  end
  local scaled, mean = d:global_mean(masked_loss(d, ids, n), n)
  scaled:backward()
  local ref = T.gpt(1)
  local total, value = 0, 0
  for r = 0, world - 1 do
    local rows = batches[1]:index_select(1, ft.tensor({r + 1}, {dtype = "int64"}))
    local count = (r + 1) * 4
    local loss = masked_loss(ref, rows, count)
    value = value + loss:item() * count
    total = total + count
    ;(loss * count):backward()
  end
  for _, p in ipairs(ref:parameters()) do p.grad:mul_(1 / total) end
  T.within(math.abs(mean - value / total), 1e-6, "global_mean's value against the mean over every rank's tokens")
  local worst, scale = 0, 0
  local theirs = {}
  for name, p in ref:named_parameters() do theirs[name] = p.grad end
  for name, p in m:named_parameters() do
    worst = math.max(worst, (p.grad - theirs[name]):abs():max():item())
    scale = math.max(scale, theirs[name]:abs():max():item())
  end
  T.within(worst / scale, 1e-5, "global_mean's gradients against one process on every rank's tokens")
end

-- shard: this rank's strided rows.
do
  local x = ft.arange(1, 4 * world + 1):reshape(2 * world, 2)
  local part = dist.shard({x = x, label = "kept"})
  assert(part.label == "kept" and part.x:size(1) == 2 and part.x[1][1]:item() == 2 * rank + 1, "shard rows")
  local odd, count = dist.shard(ft.arange(1, world + 2))
  assert(count == (rank == 0 and 2 or 1) and odd:numel() == count and odd[1]:item() == rank + 1, "uneven shares")
  T.fails(function() dist.shard(ft.zeros(world - 1)) end, "leaves some of the", "a batch smaller than the world")
  T.fails(function() dist.shard({a = ft.zeros(world), b = ft.zeros(2 * world)}) end, "rows", "tensors of different rows")
  T.say("ok   shard: strided rows, other values kept, refusals")
end

T.say("all DataParallel checks passed on %d ranks", world)
