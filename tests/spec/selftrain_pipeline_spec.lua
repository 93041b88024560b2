-- ft.selftrain.pipeline: the weak-supervision stages of scripts/self_train.lua, on a synthetic
-- task a linear model separates (class 1 when x[1] > 0, else 2; the weak labels are 20% wrong).
local ft = require "ft"
local pipeline = require "ft.selftrain.pipeline"

local function temp_dir()
  local path = os.tmpname()
  os.remove(path)
  ft.fs.mkdir(path)
  return path
end

local function settings(dir, over)
  local s = {out_dir = dir, seed = 1, batch_size = 16, steps = 60, gold_steps = 40, eval_every = 10,
    patience = 10, self_lr = 0.1, T = 10, xi = 0, lambda = 0.1, tau = 0, balance = "on", select = 1}
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

-- The task: n points, gold labels, weak labels (every fifth flipped).
local function task(n, seed)
  ft.manual_seed(seed)
  local x = ft.randn(n, 4)
  local gold = {}
  for i, v in ipairs(x:select(2, 1):totable()) do gold[i] = v > 0 and 1 or 2 end
  local weak = {}
  for i, g in ipairs(gold) do weak[i] = i % 5 == 0 and 3 - g or g end
  return x, gold, weak
end

local function batches(x, labels)
  local out = {}
  for first = 1, x:size(1), 50 do
    local n = math.min(50, x:size(1) - first + 1)
    out[#out + 1] = {x = x:narrow(1, first, n), y = ft.tensor(table.move(labels, first, first + n - 1, 1, {}),
      {dtype = "int64"})}
  end
  return out
end

local function context()
  local pool_x, pool_gold, weak = task(400, 1)
  local dev_x, dev_gold = task(100, 2)
  local test_x, test_gold = task(200, 3)
  local weak_y = ft.tensor(weak, {dtype = "int64"})
  local weak_stream, weak_batches = pipeline.endless({x = pool_x, y = weak_y}, 16, 1,
    function(x, y) return {x = x, y = y} end)
  return {
    new_model = function() return ft.nn.Linear(4, 2) end,
    forward = function(m, b) return m(b.x), b.x end,
    optimizer = function(m, lr) return ft.optim.SGD(m:parameters(), {lr = lr or 0.1}) end,
    weak = weak_stream, weak_batches = weak_batches,
    unlabelled = function()
      return (pipeline.endless({x = pool_x}, 16, 2, function(x) return {x = x} end))
    end,
    num_classes = 2, pool_size = 400,
    pool_batch = function(rows) return {x = pool_x:index_select(1, ft.tensor(rows, {dtype = "int64"}))} end,
    pool_gold = pool_gold,
    dev = batches(dev_x, dev_gold), test = batches(test_x, test_gold),
    dev_stream = pipeline.endless({x = dev_x, y = ft.tensor(dev_gold, {dtype = "int64"})}, 16, 3,
      function(x, y) return {x = x, y = y} end),
  }
end

describe("ft.selftrain.pipeline", function()
  it("checks its settings", function()
    assert.has_error(function() pipeline.new(settings("/tmp", {steps = nil, stepz = 3})) end,
      "ft.selftrain.pipeline.new: unknown option 'stepz' (valid options: T, balance, batch_size, epochs, "
      .. "eval_every, gold_steps, lambda, out_dir, patience, seed, select, self_lr, self_steps, steps, tau, xi); "
      .. "did you mean 'steps'?")
    local no_seed = settings("/tmp")
    no_seed.seed = nil
    local ok, err = pcall(pipeline.new, no_seed)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("setting 'seed' is missing", 1, true), err)
    assert.has_error(function() pipeline.new(settings("/tmp", {balance = "yes"})) end)
    assert.has_error(function() pipeline.new(settings("/tmp", {select = 0})) end)
    assert.has_error(function() pipeline.new(settings("/tmp", {select = 1.5})) end)
  end)

  it("runs the weak-label, COSINE, pseudo-label and gold stages, each logging its own file", function()
    local dir = temp_dir()
    local p = pipeline.new(settings(dir))
    local ctx = context()
    local rows = {}
    p:run_weak_methods(ctx, rows)
    p:run_gold(ctx, rows, 100, ctx.dev_stream)
    local keys = {}
    for i, r in ipairs(rows) do keys[i] = r.key end
    assert.same({"weak", "cosine", "pseudo", "gold"}, keys)
    for _, r in ipairs(rows) do
      -- a linear model learns the separable task from labels that are 80% right
      assert.truthy(r.info.test > 0.85, ("%s: test accuracy %g"):format(r.key, r.info.test))
      assert.truthy(ft.fs.exists(dir .. "/" .. r.key .. ".jsonl"), r.key .. ".jsonl missing")
    end
    assert.equal(40, rows[4].info.steps_run)
    -- self-training keeps the state with the best dev accuracy, never below its starting point
    assert.truthy(rows[2].info.dev >= rows[1].info.dev and rows[3].info.dev >= rows[1].info.dev)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
