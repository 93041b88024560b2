-- The training machinery under mpirun (tests/sh/dist_train_loop.sh, which runs it with 2 ranks,
-- each rank's stdout in its own file): the sharded loader against the plain one, ft.train.loop
-- with DataParallel against one process on the whole batch and an interrupted run resumed
-- against one that ran straight through, what rank 0 alone writes, the checkpoint's RNG per
-- rank, and ft.recipe's run folder and silenced stdout. arg[1]: an empty folder every rank sees.
local ft = require "ft"
local T = require "common"

local dist, rank, world = T.dist, T.rank, T.world
assert(world >= 2, "run under mpirun with at least 2 ranks")
local base = assert(arg[1], "usage: train_loop.lua <empty shared folder>")

-- ---- every write a rank other than 0 attempts is recorded ---------------------------------
local writes = {}
if rank ~= 0 then
  local function spy(tbl, key, is_write)
    local real = tbl[key]
    tbl[key] = function(...)
      if is_write(...) then writes[#writes + 1] = key .. " " .. tostring((...)) end
      return real(...)
    end
  end
  spy(io, "open", function(path, mode) return path ~= "/dev/null" and (mode or "r"):find("[wa+]") ~= nil end)
  spy(os, "remove", function() return true end)
  spy(os, "rename", function() return true end)
  spy(os, "execute", function(cmd) return cmd ~= nil and (cmd:find("mkdir", 1, true) or cmd:find("rm", 1, true)) end)
  spy(ft, "save", function() return true end)
  spy(ft, "_remove_stale", function() return true end)
end

local function listing(dir)
  local names = {}
  for name in pairs(ft._listdir(dir)) do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, " ")
end

-- ---- (a) the sharded loader against the plain one -----------------------------------------
local function dataset(n)
  local ids = ft.arange(1, n + 1)
  return {x = ft.stack({ids, -ids}, 2), y = ids:to("int64")}
end

-- The single process's epoch as this rank should see it: the plain loader's batches joined
-- into the epoch's order, padded with its first entries up to a multiple of the world size
-- (drop_last = false), cut into global batches, and of each global batch the rows rank+1,
-- rank+1+W ... Returns the global batches and this rank's shares (arrays of sample ids).
local function expected(plain, batch_size, drop_last)
  local order = {}
  for _, y in plain:iter() do
    for _, v in ipairs(y:totable()) do order[#order + 1] = v end
  end
  local n = #order
  if not drop_last then
    for i = n + 1, (n + world - 1) // world * world do order[i] = order[(i - 1) % n + 1] end
  end
  local global, share = {}, {}
  for b = 1, #plain do
    local g, s = {}, {}
    for j = (b - 1) * batch_size + 1, math.min(b * batch_size, #order) do g[#g + 1] = order[j] end
    for j = rank + 1, #g, world do s[#s + 1] = g[j] end
    global[b], share[b] = g, s
  end
  return global, share
end

local function same(a, b) return table.concat(a, ",") == table.concat(b, ",") end
local function sorted(t)
  local c = table.move(t, 1, #t, 1, {})
  table.sort(c)
  return c
end

local function check_sharded(what, n, batch_size, opts)
  local ds = dataset(n)
  local o = {batch_size = batch_size, shuffle = opts.shuffle ~= false, seed = opts.seed, drop_last = opts.drop_last}
  local plain = ft.data.loader(ds, o)
  o.shard = true
  local sharded = ft.data.loader(ds, o)
  assert(#sharded == #plain, what .. ": #loader differs from the single process's")
  for epoch = 1, 2 do
    -- Unseeded: every rank's generator differs, and the epoch is rank 0's draw.
    local seed0 = 1000 * epoch
    ft.manual_seed(seed0 + 77 * rank)
    local it = sharded:iter()
    local after = ft.get_rng_state()
    ft.manual_seed(seed0 + 77 * rank)
    if not opts.seed and o.shuffle then ft.rand(1) end
    assert(after:eq(ft.get_rng_state()):sum():item() == 4, what .. ": the generator did not move on as one draw")
    local batches = {}
    for x, y in it do
      assert(x:select(2, 1):to("int64"):eq(y):sum():item() == y:numel(), what .. ": x and y rows disagree")
      batches[#batches + 1] = y
    end
    ft.manual_seed(seed0)
    local global, share = expected(plain, batch_size, o.drop_last)
    assert(#batches == #sharded, what .. (": %d batches but #loader %d"):format(#batches, #sharded))
    for b, y in ipairs(batches) do
      assert(same(y:totable(), share[b]), ("%s: rank %d's batch %d of epoch %d is {%s}, expected {%s}")
        :format(what, rank, b, epoch, table.concat(y:totable(), ","), table.concat(share[b], ",")))
      local union = dist.all_gather(y):totable()
      assert(same(sorted(union), sorted(global[b])), ("%s: the ranks' batch %d is not the single process's")
        :format(what, b))
    end
  end
  T.say("ok   sharded loader, %s: %d batches of %d per rank, the ranks' batches together are the single process's",
    what, #sharded, batch_size // world)
end

check_sharded("n divides, seeded", 6 * world, 2 * world, {seed = 5})
check_sharded("n does not divide, seeded, padded", 6 * world + 1, 3 * world, {seed = 5})
check_sharded("n does not divide, seeded, drop_last", 6 * world + 1, 3 * world, {seed = 5, drop_last = true})
check_sharded("n does not divide, unseeded, padded", 6 * world + 1, 3 * world, {})
check_sharded("n does not divide, unseeded, drop_last", 6 * world + 1, 3 * world, {drop_last = true})
check_sharded("one sample, padded to every rank", 1, world, {})
check_sharded("in order", 4 * world + 1, 2 * world, {shuffle = false})

do -- loader.epoch resumes
  local ds = dataset(5 * world)
  local a = ft.data.loader(ds, {batch_size = world, shuffle = true, seed = 3, shard = true})
  a:iter()
  local second = {}
  for _, y in a:iter() do second[#second + 1] = table.concat(y:totable(), ",") end
  local b = ft.data.loader(ds, {batch_size = world, shuffle = true, seed = 3, shard = true})
  b.epoch = 1
  local resumed = {}
  for _, y in b:iter() do resumed[#resumed + 1] = table.concat(y:totable(), ",") end
  assert(same(second, resumed), "loader.epoch = 1 does not give the second epoch")
  T.say("ok   sharded loader: loader.epoch = 1 yields the second epoch")
end

T.fails(function() ft.data.loader(dataset(8), {batch_size = world + 1, shard = true}) end,
  ("batch_size %d (the global batch, with shard = true) does not divide among world_size %d ranks")
    :format(world + 1, world), "a global batch that does not divide")
T.fails(function() ft.data.loader(dataset(8), {batch_size = world, shuffle = true, seed = rank, shard = true}) end,
  "differ between ranks", "loaders seeded apart")
T.fails(function() ft.data.loader(dataset(8 + rank), {batch_size = world, shard = true}) end,
  "differ between ranks", "datasets of different sizes")

-- ---- (b) ft.train.loop with DataParallel ---------------------------------------------------
local N, L, STEPS = 6 * world, 16, 10
local B = 2 * world -- the global batch: 3 batches per epoch, 10 steps cross 4 epochs
ft.manual_seed(11)
local windows = {x = ft.randint(1, 64, {N, L + 1})}

-- Trains a fresh GPT for STEPS steps (o.ddp: DataParallel and a sharded loader, else one
-- process on the whole batch). o.init: the initialisation's seed; o.dir: the run folder
-- (checkpoint every 3 steps, logger); o.stop_at; o.dropout. Returns the model and the loop's result.
local function train(o)
  local model = T.gpt(o.init, o.dropout and {resid_pdrop = o.dropout, embd_pdrop = o.dropout} or nil)
  local net = o.ddp and ft.dist.DataParallel(model) or model
  local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-3, weight_decay = 0.01})
  ft.manual_seed(3) -- the training stream (unseeded shuffles), the same on every rank
  local loader = ft.data.loader(windows, {batch_size = B, shuffle = true, shard = o.ddp})
  local run = {
    steps = STEPS, loader = loader, model = model, optimizer = opt, stop_at = o.stop_at,
    step = function(batch)
      local loss = T.lm_loss(net, batch.x)
      loss:backward()
      opt:step()
      opt:zero_grad()
      return loss
    end,
  }
  if o.dir then
    run.checkpoint, run.checkpoint_every, run.resume = o.dir .. "/ckpt.h5", 3, true
    run.logger = ft.train.Logger{path = o.dir .. "/metrics.jsonl", total = STEPS, every = 1}
  end
  local result = ft.train.loop(run)
  if run.logger then run.logger:close() end
  return model, result
end

local function losses(path)
  local out = {}
  for _, r in ipairs(ft.recipe.read_jsonl(path)) do
    if r.loss then out[#out + 1] = ("%d:%a"):format(r.step, r.loss) end
  end
  return table.concat(out, " ")
end

-- Every rank ends with the same parameters, bit for bit.
local function same_on_every_rank(model, what)
  local words = {}
  for name, p in model:named_parameters() do words[#words + 1] = ("%s %a"):format(name, p:sum():item()) end
  dist.check_same(what, words)
end

for _, dropout in ipairs({false, 0.1}) do
  local tag = dropout and ("dropout " .. dropout) or "no dropout"
  local straight_dir = ("%s/straight-%s"):format(base, dropout and "dropout" or "plain")
  local resumed_dir = ("%s/resumed-%s"):format(base, dropout and "dropout" or "plain")
  local straight, r1 = train{ddp = true, init = 100 + rank, dir = straight_dir, dropout = dropout}
  assert(r1.stopped == "done" and r1.step == STEPS, tag .. ": the uninterrupted run did not finish")
  local _, r2 = train{ddp = true, init = 100 + rank, dir = resumed_dir, dropout = dropout, stop_at = 5}
  assert(r2.stopped == "stop_at" and r2.step == 5, tag .. ": the run did not stop after step 5")
  local resumed, r3 = train{ddp = true, init = 900 + rank, dir = resumed_dir, dropout = dropout}
  assert(r3.resumed_from == 5 and r3.step == STEPS, tag .. ": the run did not resume from step 5")
  same_on_every_rank(straight, tag .. ": the parameters after the uninterrupted run")
  same_on_every_rank(resumed, tag .. ": the parameters after the resumed run")
  T.within(T.max_param_diff(resumed, straight), 0, tag .. ": killed after step 5 and resumed against straight through")
  if rank == 0 then
    local a, b = losses(straight_dir .. "/metrics.jsonl"), losses(resumed_dir .. "/metrics.jsonl")
    assert(a == b, tag .. ": the metrics files differ:\n" .. a .. "\n" .. b)
    assert(select(2, a:gsub("%d+:", "")) == STEPS, tag .. ": the metrics file does not hold " .. STEPS .. " steps")
    for _, dir in ipairs({straight_dir, resumed_dir}) do
      assert(listing(dir) == "ckpt.h5 metrics.jsonl", dir .. " holds " .. listing(dir))
    end
    T.say("ok   %s: the metrics files agree step for step and each run folder holds ckpt.h5 metrics.jsonl", tag)
  end
  if not dropout then
    local single = train{ddp = false, init = 100}
    T.within(T.max_param_diff(straight, single), 1e-5, "DataParallel on 2 shards against one process on the whole batch")
  end
end

-- ---- (c) the checkpoint's RNG: every rank's own ---------------------------------------------
do
  local path = base .. "/rng/ckpt.h5"
  ft.manual_seed(50 + rank) -- streams apart on purpose
  local mine = ft.get_rng_state():clone()
  local first = dist.broadcast(mine:clone(), 0)
  ft.train.save_checkpoint(path, {step = 1})
  ft.rand(7)
  ft.train.load_checkpoint(path)
  assert(ft.get_rng_state():eq(mine):sum():item() == 4, "load_checkpoint did not restore this rank's own generator")
  local flat = ft.load(path)
  assert(flat.rng:eq(first):sum():item() == 4, "the checkpoint's rng is not rank 0's")
  assert(flat.rng_ranks:size(1) == world and flat.rng_ranks[rank + 1]:eq(mine):sum():item() == 4,
    "rng_ranks does not hold this rank's generator in its row")
  T.say("ok   checkpoint: rng is rank 0's generator, each rank restores its own from rng_ranks")
  T.fails(function() ft.train.save_checkpoint("/dev/null/ckpt.h5", {step = 1}) end,
    "ft.train.save_checkpoint: cannot create directory /dev/null", "a save that fails on rank 0 fails on every rank")
end

-- ---- (d) ft.recipe under mpirun ------------------------------------------------------------
local R = ft.recipe
do
  local parser = require("argparse")("demo.lua", "A demo.")
  parser:option("--per-rank-batch"):convert(R.integer{min = 1})
  local args = R.parse(parser, {"--per-rank-batch", "3"})
  assert(R.global_batch(nil, args.per_rank_batch) == 3 * world, "global_batch of --per-rank-batch 3")
  T.fails(function() R.global_batch(world + 1) end, ("does not divide among %d ranks"):format(world),
    "a global batch that does not divide")
  local root = base .. "/runs"
  local a = R.run(parser, nil, {root = root})
  local b = R.run(parser, nil, {root = root})
  dist.check_same("the run folders", {a.dir, b.dir})
  assert(a.dir ~= b.dir and ft.fs.is_dir(a.dir) and ft.fs.is_dir(b.dir), "the run folders are not there")
  dist.barrier()
  if rank == 0 then
    local names = {}
    for name in pairs(ft._listdir(root .. "/demo")) do names[#names + 1] = name end
    assert(#names == 2, ("two runs made %d folders: %s"):format(#names, listing(root .. "/demo")))
  end
  T.say("ok   recipe.run: rank 0 made each run's folder, every rank has its name")
  b:finish()
  -- Rank 0 prints; on the others these writes must not reach stdout (dist_train_loop.sh checks).
  print("stdout of rank " .. rank .. ": print")
  io.write("stdout of rank " .. rank .. ": io.write\n")
  io.stdout:write("stdout of rank " .. rank .. ": io.stdout:write\n")
  io.stdout:flush()
end

-- ---- what rank 1 wrote ------------------------------------------------------------------------
local found = dist.all_gather(ft.tensor({#writes}, {dtype = "int64"})):totable()
for r, count in ipairs(found) do
  if count > 0 then
    local theirs = dist.broadcast_value(writes, r - 1)
    error(("rank %d wrote files: %s"):format(r - 1, table.concat(theirs, "; ")))
  end
end
T.say("ok   no rank but 0 opened a file for writing, saved, made or removed a file")
T.say("all train-loop checks passed on %d ranks", world)
