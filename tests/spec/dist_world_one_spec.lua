-- What the data-parallel pieces of ft.data, ft.train, ft.progress and ft.recipe do in a world
-- of one (outside mpirun): exactly what they did before. A sharded loader is the plain one,
-- batch for batch and draw for draw; checkpoints hold no per-rank RNG; recipes keep stdout;
-- nothing joins the world before a distributed feature is used. The distributed behaviour
-- itself is tested under mpirun by tests/sh/dist_train_loop.sh.
local ft = require "ft"
local H = require "helpers"

local ftlua = os.getenv("FTLUA") or "build/ftlua"

-- N samples whose x row and y label both encode the sample number.
local function dataset(n)
  local xs, ys = {}, {}
  for i = 1, n do
    xs[i] = {i, -i}
    ys[i] = i
  end
  return {x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"})}
end

-- One epoch's batches as strings of the x bits, and the generator's state after it.
local function epoch(loader)
  local out = {}
  for x, y in loader:iter() do
    out[#out + 1] = table.concat(x:reshape(-1):totable(), ",") .. "|" .. (y and table.concat(y:totable(), ",") or "")
  end
  return out, ft.get_rng_state():totable()
end

describe("ft.data.loader with shard = true in a world of one", function()
  it("is the plain loader, batch for batch and draw for draw", function()
    assert.equal(1, ft.dist.world_size())
    local cases = {
      {n = 10, batch_size = 4},
      {n = 10, batch_size = 4, drop_last = true},
      {n = 23, batch_size = 6, shuffle = true, seed = 5},
      {n = 23, batch_size = 6, shuffle = true, seed = 5, drop_last = true},
      {n = 23, batch_size = 5, shuffle = true},
      {n = 23, batch_size = 5, shuffle = true, drop_last = true},
      {n = 1, batch_size = 3, shuffle = true},
    }
    for _, c in ipairs(cases) do
      local ds = dataset(c.n)
      local opts = {batch_size = c.batch_size, shuffle = c.shuffle, seed = c.seed, drop_last = c.drop_last}
      local plain = ft.data.loader(ds, opts)
      opts.shard = true
      local sharded = ft.data.loader(ds, opts)
      assert.equal(#plain, #sharded)
      for e = 1, 3 do
        ft.manual_seed(40 + e)
        local a, rng_a = epoch(plain)
        ft.manual_seed(40 + e)
        local b, rng_b = epoch(sharded)
        assert.same(a, b)
        assert.same(rng_a, rng_b)
      end
      assert.equal(plain.epoch, sharded.epoch)
    end
  end)

  it("resumes with loader.epoch and applies the transform as the plain one does", function()
    local function transform(x, y) return x * 10, y + 100 end
    local plain = ft.data.loader(dataset(9), {batch_size = 2, shuffle = true, seed = 1, transform = transform})
    local sharded = ft.data.loader(dataset(9), {batch_size = 2, shuffle = true, seed = 1, transform = transform,
      shard = true})
    plain.epoch, sharded.epoch = 4, 4
    assert.same((epoch(plain)), (epoch(sharded)))
    local xs = {}
    for x in ft.data.loader({x = ft.zeros(5, 2)}, {batch_size = 2, shard = true}):iter() do xs[#xs + 1] = x:size(1) end
    assert.same({2, 2, 1}, xs)
  end)

  it("checks the shard option", function()
    H.assert_mentions(H.error_of(ft.data.loader, dataset(3), {shard = "yes"}),
      "ft.data.loader: shard must be true or false, got 'yes'")
    H.assert_mentions(H.error_of(ft.data.loader, dataset(3), {shards = true}),
      "ft.data.loader: unknown option 'shards'", "did you mean 'shard'?")
  end)

  it("never joins the world without shard, and requiring the training modules joins nothing", function()
    local cmd = H.quote(ftlua) .. [[ -e '
      local _ = ft.progress, ft.train, ft.recipe
      for x in ft.data.loader({x = ft.zeros(4, 1)}, {batch_size = 2, shuffle = true}):iter() do end
      print(ft._dist.initialized())']]
    local ok, out = H.run(cmd)
    assert.is_true(ok, out)
    assert.equal("false\n", out)
  end)
end)

describe("ft.train checkpoints in a world of one", function()
  local dir
  before_each(function() dir = H.make_tmpdir("dist-one") end)
  after_each(function() os.execute("rm -rf " .. H.quote(dir)) end)

  it("hold the datasets they held before (no rng_ranks)", function()
    local model = ft.nn.Linear(3, 2)
    ft.train.save_checkpoint(dir .. "/ck.h5", {model = model, step = 2})
    local names = {}
    for k in pairs(ft.load(dir .. "/ck.h5")) do names[#names + 1] = k end
    table.sort(names)
    assert.same({"model.bias", "model.weight", "rng"}, names)
  end)

  it("restore rank 0's generator from a checkpoint that several ranks wrote", function()
    ft.manual_seed(3)
    local rank0 = ft.get_rng_state():clone()
    ft.train.save_checkpoint(dir .. "/ck.h5", {step = 1})
    -- What a run of 2 ranks writes: rng_ranks, one row per rank (row 2 another stream).
    local flat, meta = ft.load(dir .. "/ck.h5")
    ft.manual_seed(99)
    flat.rng_ranks = ft.cat({rank0:reshape(1, 4), ft.get_rng_state():reshape(1, 4)}, 1)
    meta.format = nil   -- ft.save writes its own
    ft.save(dir .. "/ck.h5", flat, {metadata = meta})
    ft.rand(3)
    ft.train.load_checkpoint(dir .. "/ck.h5")
    assert.same(rank0:totable(), ft.get_rng_state():totable())
  end)
end)

describe("ft.progress and ft.train.Logger in a world of one", function()
  it("print and write as before", function()
    local dir = H.make_tmpdir("dist-one")
    local cmd = H.quote(ftlua) .. " -e " .. H.quote(([[
      local log = ft.train.Logger{path = %q, total = 2, every = 1}
      log:step(1, {loss = 1.5})
      log:record(2, {val = 2})
      log:log("note %%d", 7)
      log:close()
      io.write(ft.fs.read(%q))]]):format(dir .. "/m.jsonl", dir .. "/m.jsonl")) .. " 2>/dev/null"
    local ok, out = H.run(cmd)
    os.execute("rm -rf " .. H.quote(dir))
    assert.is_true(ok, out)
    assert.truthy(out:find("^step 1/2  loss 1.5\nstep 2/2  val 2\nnote 7\n{", 1), out)
    assert.truthy(out:find('"loss":1.5', 1, true), out)
    assert.truthy(out:find('"val":2', 1, true), out)
  end)
end)

describe("ft.recipe in a world of one", function()
  it("parse keeps print, io.write and io.stdout", function()
    local print0, write0, stdout0 = print, io.write, io.stdout
    local args = ft.recipe.parse(require("argparse")("demo.lua", "A demo."), {})
    assert.is_table(args)
    assert.equal(print0, print)
    assert.equal(write0, io.write)
    assert.equal(stdout0, io.stdout)
  end)

  it("global_batch: the batch flag, or per-rank batch times the world size", function()
    local R = ft.recipe
    assert.equal(8, R.global_batch(8, nil))
    assert.equal(3, R.global_batch(nil, 3))
    assert.equal(16, R.global_batch(nil, nil, {default = 16}))
    assert.equal(12, R.global_batch(nil, 3, {world_size = 4}))
    assert.equal(12, R.global_batch(12, nil, {world_size = 4}))
    H.assert_mentions(H.error_of(R.global_batch, 8, 2), "--batch-size and --per-rank-batch both set the batch")
    H.assert_mentions(H.error_of(R.global_batch, 10, nil, {world_size = 4}),
      "--batch-size 10 (the global batch) does not divide among 4 ranks; give a multiple of 4, or --per-rank-batch")
    H.assert_mentions(H.error_of(R.global_batch, nil, nil), "give --batch-size (the global batch) or --per-rank-batch")
    assert.equal(10, R.global_batch(10, nil, {world_size = 4, uneven = true}))
    H.assert_mentions(H.error_of(R.global_batch, 3, nil, {world_size = 4, uneven = true}),
      "--batch-size 3 (the global batch) leaves some of the 4 ranks no row; give at least 4, or --per-rank-batch")
    H.assert_mentions(H.error_of(R.global_batch, 6, 1, {flag = "--sft-batch-size", per_rank_flag = "--sft-per-rank"}),
      "--sft-batch-size and --sft-per-rank both set the batch")
    H.assert_mentions(H.error_of(R.global_batch, 0, nil), "batch_size must be a positive integer")
    H.assert_mentions(H.error_of(R.global_batch, 4, nil, {worlds = 2}), "unknown option 'worlds'")
  end)

  it("global_batch with a parser: one line on stderr, exit status 2", function()
    local cmd = H.quote(ftlua) .. [[ -e '
      local parser = require("argparse")("demo.lua", "A demo.")
      ft.recipe.global_batch(6, nil, {world_size = 4, parser = parser})
      print("NOT REACHED")']]
    local ok, out, code = H.run(cmd)
    assert.is_falsy(ok)
    assert.equal(2, code)
    assert.equal("demo.lua: --batch-size 6 (the global batch) does not divide among 4 ranks; give a multiple of 4, "
      .. "or --per-rank-batch (see --help)\n", out)
  end)
end)
