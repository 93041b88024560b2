-- ft.train: evaluation, optimizer steps with gradient accumulation, early stopping, the
-- logger, checkpoints and the resumable loop. Expected numbers are computed here in plain
-- Lua (doubles), or come from a second run of the same training (resume tests).
local ft = require "ft"
local H = require "helpers"

local nn, F, train = ft.nn, ft.nn.functional, ft.train

local FTLUA = os.getenv("FTLUA") or "build/ftlua"

-- Flat values of every entry of a state dict, for exact comparisons.
local function snapshot(sd)
  local out = {}
  for k, t in pairs(sd) do out[k] = (H.flat(t)) end
  return out
end

local function assert_same_snapshot(actual, expected, what)
  for k, values in pairs(expected) do
    local got = actual[k]
    assert(got, what .. ": missing " .. k)
    assert.are.equal(#values, #got, what .. ": size of " .. k)
    for i = 1, #values do
      if got[i] ~= values[i] then
        error(("%s: %s[%d] is %.9g, expected exactly %.9g"):format(what, k, i, got[i], values[i]), 2)
      end
    end
  end
  for k in pairs(actual) do assert(expected[k], what .. ": unexpected " .. k) end
end

local function max_diff(a, b)
  local worst = 0
  for k, values in pairs(a) do
    for i = 1, #values do worst = math.max(worst, math.abs(values[i] - b[k][i])) end
  end
  return worst
end

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  return lines
end

local function file_size(path)
  return #H.read_bytes(path)
end

-- ---- evaluation ------------------------------------------------------------------------------

-- A Linear(2, 3) with known weights, and the expected numbers computed by hand.
local W = {{1, -1}, {0.5, 2}, {-1, 0}}
local B = {0.1, -0.2, 0.3}

local function known_linear()
  local m = nn.Linear(2, 3)
  ft.no_grad(function()
    m.weight:copy_(ft.tensor(W))
    m.bias:copy_(ft.tensor(B))
  end)
  return m
end

-- Cross-entropy and argmax of one input row, in doubles.
local function reference(x, y)
  local z, best = {}, 1
  for c = 1, 3 do
    z[c] = W[c][1] * x[1] + W[c][2] * x[2] + B[c]
    if z[c] > z[best] then best = c end
  end
  local sum = 0
  for c = 1, 3 do sum = sum + math.exp(z[c] - z[best]) end
  local nll = z[best] + math.log(sum) - z[y]
  return nll, best == y
end

local X = {{1, 2}, {0, 1}, {-1, 0.5}, {2, -1}, {0.3, 0.3}}
local Y = {2, 1, 3, 1, 3}

describe("ft.train.evaluate", function()
  local expected_loss, expected_acc
  setup(function()
    local loss, correct = 0, 0
    for i = 1, #X do
      local nll, hit = reference(X[i], Y[i])
      loss = loss + nll
      if hit then correct = correct + 1 end
    end
    expected_loss, expected_acc = loss / #X, correct / #X
    -- the data is chosen so that accuracy is neither 0 nor 1
    assert(expected_acc > 0 and expected_acc < 1, "accuracy " .. expected_acc)
  end)

  local function metrics_fn(m, b) return train.classification_metrics(m(b.x), b.y) end

  it("averages loss and accuracy over batches of different sizes", function()
    local model = known_linear()
    local x, y = ft.tensor(X), ft.tensor(Y, {dtype = "int64"})
    local batches = {
      {x = x:narrow(1, 1, 3), y = y:narrow(1, 1, 3)},
      {x = x:narrow(1, 4, 2), y = y:narrow(1, 4, 2)},
    }
    local m = train.evaluate(model, batches, metrics_fn)
    assert.is_true(math.abs(m.loss - expected_loss) < 1e-5, ("loss %.8g, expected %.8g"):format(m.loss, expected_loss))
    assert.are.equal(expected_acc, m.accuracy)
    assert.are.equal(5, m.count)
    assert.is_nil(m.perplexity)
    -- a loader and an iterator function give the same numbers
    local from_loader = train.evaluate(model, ft.data.loader({x = x, y = y}, {batch_size = 2}), metrics_fn)
    assert.is_true(math.abs(from_loader.loss - expected_loss) < 1e-5)
    assert.are.equal(expected_acc, from_loader.accuracy)
    local served = false
    local from_fn = train.evaluate(model, function()
      if served then return nil end
      served = true
      return x, y
    end, metrics_fn)
    assert.is_true(math.abs(from_fn.loss - expected_loss) < 1e-5)
    assert.are.equal(5, from_fn.count)
  end)

  it("runs without gradients in eval mode and restores every module's mode", function()
    local lin, drop = known_linear(), nn.Dropout(0.9)
    local model = nn.Sequential{lin, drop}
    model:train()
    drop:eval()   -- a submodule kept in eval mode on purpose stays so
    local calls = 0
    train.evaluate(model, {{x = ft.tensor(X), y = ft.tensor(Y, {dtype = "int64"})}}, function(m, b)
      calls = calls + 1
      assert.is_false(ft.is_grad_enabled())
      assert.is_false(m.training)
      assert.is_false(lin.training)
      local out = m(b.x)
      assert.is_false(out.requires_grad)
      return train.classification_metrics(out, b.y)
    end)
    assert.are.equal(1, calls)
    assert.is_true(model.training)
    assert.is_true(lin.training)
    assert.is_false(drop.training)
    assert.is_true(ft.is_grad_enabled())
    -- also after an error inside fn
    H.error_of(function() train.evaluate(model, {1}, function() error("boom") end) end)
    assert.is_true(model.training)
    assert.is_true(ft.is_grad_enabled())
  end)

  it("reports token loss, accuracy and perplexity, skipping ignored targets", function()
    local model = known_linear()
    -- two sequences of three positions; one target ignored
    local xs = {{X[1], X[2], X[3]}, {X[4], X[5], {0.7, -0.2}}}
    local ys = {{Y[1], Y[2], Y[3]}, {Y[4], Y[5], -100}}
    local loss, correct, n = 0, 0, 0
    for b = 1, 2 do
      for t = 1, 3 do
        if ys[b][t] ~= -100 then
          local nll, hit = reference(xs[b][t], ys[b][t])
          loss, n = loss + nll, n + 1
          if hit then correct = correct + 1 end
        end
      end
    end
    local m = train.evaluate(model, {{x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"})}}, function(mod, b)
      return train.token_metrics(mod(b.x), b.y, {ignore_index = -100})
    end)
    assert.are.equal(5, m.tokens)
    assert.is_true(math.abs(m.loss - loss / n) < 1e-5)
    assert.is_true(math.abs(m.perplexity - math.exp(loss / n)) < 1e-4 * math.exp(loss / n))
    assert.are.equal(correct / n, m.accuracy)
  end)

  it("offers accuracy helpers and explains bad per-batch results", function()
    local logits = ft.tensor({{0.1, 2, 0}, {3, 0, 0}, {0, 0, 1}, {0, 5, 0}})
    local y = ft.tensor({2, 1, 1, 3}, {dtype = "int64"})
    assert.are.equal(2, train.correct(logits, y))
    assert.are.equal(0.5, train.accuracy(logits, y))
    H.assert_mentions(H.error_of(train.accuracy, logits, ft.tensor({1, 2}, {dtype = "int64"})), "[4,3]", "[2]")
    local model = known_linear()
    local batches = {{x = ft.tensor(X), y = ft.tensor(Y, {dtype = "int64"})}}
    H.assert_mentions(H.error_of(train.evaluate, model, batches, function() return {loss = 1} end), "loss_sum")
    H.assert_mentions(H.error_of(train.evaluate, model, batches, function() return 3 end), "number", "batch 1")
    H.assert_mentions(H.error_of(train.evaluate, model, {}, metrics_fn), "no batch")
  end)
end)

-- ---- optimizer steps -----------------------------------------------------------------------------

describe("ft.train.step and accumulate", function()
  local x, y, init
  before_each(function()
    ft.manual_seed(11)
    x, y = ft.randn(12, 4), ft.randint(1, 3, {12})
    init = nn.Linear(4, 3):state_dict()
  end)

  local function fresh()
    local m = nn.Linear(4, 3)
    m:load_state_dict(init)
    return m, ft.optim.SGD(m:parameters(), {lr = 0.5, momentum = 0.9})
  end

  local function loss_of(m) return function(b) return F.cross_entropy(m(b.x), b.y) end end

  -- Two updates with the whole batch, and two with micro-batches.
  local function run_big(opts)
    local m, opt = fresh()
    local losses, norms = {}, {}
    for i = 1, 2 do
      losses[i], norms[i] = train.step(opt, function() return loss_of(m)({x = x, y = y}) end, opts)
    end
    return snapshot(m:state_dict()), losses, norms
  end

  local function run_accumulated(k, opts)
    local m, opt = fresh()
    local parts, sizes = train.split_batch({x = x, y = y}, k)
    local losses, norms = {}, {}
    local o = {clip = opts.clip, sizes = opts.use_sizes and sizes or nil}
    for i = 1, 2 do losses[i], norms[i] = train.accumulate(opt, parts, loss_of(m), o) end
    return snapshot(m:state_dict()), losses, norms, sizes
  end

  it("equals one big batch for a mean loss (equal micro-batches)", function()
    local big, big_losses = run_big({})
    local acc, acc_losses = run_accumulated(3, {})
    assert.is_true(max_diff(big, acc) < 1e-6, "max difference " .. max_diff(big, acc))
    for i = 1, 2 do assert.is_true(math.abs(big_losses[i] - acc_losses[i]) < 1e-6) end
    -- the updates moved the weights: the comparison is not between untouched copies
    local m0 = snapshot(fresh():state_dict())
    assert.is_true(max_diff(big, m0) > 1e-2)
  end)

  it("equals one big batch for unequal micro-batches when given their sizes", function()
    local big = run_big({})
    local acc, _, _, sizes = run_accumulated(5, {use_sizes = true})
    assert.are.same({3, 3, 2, 2, 2}, sizes)
    assert.is_true(max_diff(big, acc) < 1e-6, "max difference " .. max_diff(big, acc))
    -- plain 1/k weights would not: the test can tell the two apart
    local unweighted = run_accumulated(5, {})
    assert.is_true(max_diff(big, unweighted) > 1e-5)
  end)

  it("clips the accumulated gradient like the big batch's", function()
    local big, _, big_norms = run_big({clip = 0.05})
    local acc, _, acc_norms = run_accumulated(4, {clip = 0.05})
    assert.is_true(big_norms[1] > 0.05, "the clipping is active")
    for i = 1, 2 do assert.is_true(math.abs(big_norms[i] - acc_norms[i]) < 1e-5 * big_norms[i]) end
    assert.is_true(max_diff(big, acc) < 1e-6, "max difference " .. max_diff(big, acc))
  end)

  it("steps the scheduler and takes a count of micro-batches", function()
    local m, opt = fresh()
    local sched = ft.optim.lr_scheduler.StepLR(opt, {step_size = 1, gamma = 0.5})
    local seen = {}
    local loss = train.accumulate(opt, 2, function(i)
      seen[#seen + 1] = i
      return F.cross_entropy(m(x), y)
    end, {scheduler = sched})
    assert.are.same({1, 2}, seen)
    assert.are.equal("number", type(loss))
    assert.are.equal(0.25, opt.param_groups[1].lr)
    H.assert_mentions(H.error_of(train.accumulate, opt, {x}, function() return ft.ones(2) end), "micro-batch 1", "[2]")
    H.assert_mentions(H.error_of(train.step, {}, function() end), "optimizer")
  end)
end)

-- ---- early stopping -------------------------------------------------------------------------------

describe("ft.train.EarlyStopping", function()
  it("follows a sequence of values (max mode, patience 2)", function()
    local es = train.EarlyStopping{metric = "val_accuracy", mode = "max", patience = 2}
    local seq = {
      {0.50, true, false}, {0.60, true, false}, {0.60, false, false}, {0.65, true, false},
      {0.64, false, false}, {0.63, false, true},
    }
    for i, s in ipairs(seq) do
      local improved, stop = es:update({val_accuracy = s[1], val_loss = 9}, i * 10)
      assert.are.equal(s[2], improved, "improved at update " .. i)
      assert.are.equal(s[3], stop, "should_stop at update " .. i)
    end
    assert.are.equal(0.65, es.best)
    assert.are.equal(40, es.best_step)
    H.assert_mentions(H.error_of(es.update, es, {val_loss = 1}), "val_accuracy")
  end)

  it("needs more than min_delta to improve, in min mode, and never improves on NaN", function()
    local es = train.EarlyStopping{metric = "val_loss", mode = "min", patience = 3, min_delta = 0.1}
    assert.is_true((es:update(1.0, 1)))
    assert.is_false((es:update(0.95, 2)))   -- better, but by less than min_delta
    assert.is_false((es:update(0 / 0, 3)))
    assert.is_true((es:update(0.85, 4)))
    assert.are.equal(0.85, es.best)
    assert.are.equal(0, es.wait)
    H.assert_mentions(H.error_of(train.EarlyStopping, {mode = "up"}), "mode")
    H.assert_mentions(H.error_of(train.EarlyStopping, {patience = 0}), "patience")
  end)

  it("keeps a copy of the best weights and restores them", function()
    ft.manual_seed(5)
    local model = nn.Linear(3, 2)
    local es = train.EarlyStopping{metric = "acc", mode = "max", patience = 5, model = model}
    es:update(0.7, 1)
    local best = snapshot(model:state_dict())
    ft.no_grad(function() model.weight:fill_(3) end)
    es:update(0.6, 2)
    assert_same_snapshot(snapshot(es.best_state), best, "snapshot unchanged by later training")
    es:restore_best()
    assert_same_snapshot(snapshot(model:state_dict()), best, "restored")
    local state = es:state_dict()
    assert.are.same({metric = "acc", best = 0.7, best_step = 1, wait = 1, stopped = false, updates = 2}, state)
    local again = train.EarlyStopping{metric = "acc", mode = "max", patience = 5}
    again:load_state_dict(ft.json.decode(ft.json.encode(state)))
    assert.are.equal(0.7, again.best)
    assert.are.equal(1, again.wait)
  end)
end)

-- ---- logger ---------------------------------------------------------------------------------------

describe("ft.train.Logger", function()
  it("writes one valid JSON line per step and record, and log lines every N steps", function()
    local dir = H.make_tmpdir("train")
    local script = dir .. "/log.lua"
    H.write_bytes(script, [[
      local L = ft.train.Logger{path = arg[1] .. "/run/metrics.jsonl", total = 5, every = 2, unit = "images"}
      for s = 1, 5 do L:step(s, {loss = 1 / s, lr = 0.1}, 4) end
      L:record(5, {val_loss = 0 / 0, val_accuracy = 0.5})
      L:log("done %d", 5)
      print("BYTES " .. L:state_dict().bytes)
      L:close()
    ]])
    local ok, out = H.run(H.quote(FTLUA) .. " " .. H.quote(script) .. " " .. H.quote(dir) .. " 2>/dev/null")
    assert.is_true(ok, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(6, #lines, out)
    assert.truthy(lines[1]:match("^step 2/5  loss 0%.5  lr 0%.1  %d+ images/s  ETA %d+:%d%d$"), lines[1])
    assert.truthy(lines[2]:match("^step 4/5  loss 0%.25 "), lines[2])
    assert.truthy(lines[3]:match("^step 5/5  loss 0%.2 "), lines[3])
    assert.truthy(lines[4]:match("^step 5/5  val_accuracy 0%.5  val_loss nan"), lines[4])
    assert.are.equal("done 5", lines[5])

    local path = dir .. "/run/metrics.jsonl"
    assert.are.equal("BYTES " .. file_size(path), lines[6])
    local json = read_lines(path)
    assert.are.equal(6, #json)
    for i = 1, 5 do
      local obj = ft.json.decode(json[i])
      assert.are.equal(i, obj.step)
      assert.are.equal(1 / i, obj.loss)
      assert.are.equal(0.1, obj.lr)
      assert.is_true(obj.time >= 0)
    end
    local rec = ft.json.decode(json[6])
    assert.are.equal(ft.json.null, rec.val_loss)
    assert.are.equal(0.5, rec.val_accuracy)
    assert.are.equal(5, rec.step)
  end)

  it("keeps the lines up to a saved position when restored, and continues the clock", function()
    local dir = H.make_tmpdir("train")
    local path = dir .. "/m.jsonl"
    local L = train.Logger{path = path, every = 1000}
    L:step(1, {loss = 1})
    L:step(2, {loss = 2})
    local state = L:state_dict()
    L:step(3, {loss = 3})   -- written after the "checkpoint": dropped on resume
    L:close()
    assert.are.equal(3, #read_lines(path))
    local R = train.Logger{path = path, every = 1000}
    R:load_state_dict({bytes = state.bytes, elapsed = 100})
    R:step(3, {loss = 30})
    R:close()
    local json = read_lines(path)
    assert.are.equal(3, #json)
    assert.are.same({1, 2, 30}, {ft.json.decode(json[1]).loss, ft.json.decode(json[2]).loss, ft.json.decode(json[3]).loss})
    assert.is_true(ft.json.decode(json[3]).time >= 100)
    -- a new logger on the same path starts the file afresh
    local N = train.Logger{path = path, every = 1000}
    N:step(1, {loss = 5})
    N:close()
    assert.are.equal(1, #read_lines(path))
  end)
end)

-- ---- checkpoints --------------------------------------------------------------------------------

describe("ft.train checkpoints", function()
  local function setup_run(seed)
    ft.manual_seed(seed)
    local model = nn.Sequential{nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.3), nn.Linear(4, 2)}
    local opt = ft.optim.AdamW(model:parameters(), {lr = 0.01})
    local sched = ft.optim.lr_scheduler.StepLR(opt, {step_size = 2, gamma = 0.5})
    return model, opt, sched
  end

  local function steps(model, opt, sched, n)
    model:train()
    for _ = 1, n do
      local x, y = ft.randn(6, 3), ft.randint(1, 2, {6})
      train.step(opt, function() return F.cross_entropy(model(x), y) end, {scheduler = sched})
    end
  end

  it("restores model, buffers, optimizer, scheduler, RNG, step, epoch and extra state", function()
    local dir = H.make_tmpdir("train")
    local path = dir .. "/sub/ckpt.h5"
    local model, opt, sched = setup_run(3)
    steps(model, opt, sched, 3)
    train.save_checkpoint(path, {model = model, optimizer = opt, scheduler = sched, step = 3, epoch = 2,
      extra = {note = "x", list = {1, 2}}, tensors = {best = {["0.weight"] = ft.ones(2)}, flag = ft.zeros(1)}})
    local saved = snapshot(model:state_dict())
    local saved_lr = opt.param_groups[1].lr
    local next_rand = H.flat(ft.rand(4))
    steps(model, opt, sched, 2)
    local continued = snapshot(model:state_dict())

    local model2, opt2, sched2 = setup_run(99)
    assert.is_true(max_diff(snapshot(model2:state_dict()), saved) > 1e-3)
    local stale = ("%s.tmp-%d-4"):format(path, H.dead_pid())   -- what a killed save leaves
    H.write_bytes(stale, "partial")
    local ck = train.load_checkpoint(path, {model = model2, optimizer = opt2, scheduler = sched2})
    assert.is_false(H.file_exists(stale), "a killed save's temporary file is removed on resume")
    assert.are.equal(3, ck.step)
    assert.are.equal(2, ck.epoch)
    assert.are.equal("x", ck.extra.note)
    assert.are.same({1, 2}, {ck.extra.list[1], ck.extra.list[2]})
    assert.are.same({1, 1}, H.flat(ck.tensors.best["0.weight"]))
    assert.are.same({0}, H.flat(ck.tensors.flag))
    assert_same_snapshot(snapshot(model2:state_dict()), saved, "loaded weights")
    assert.are.equal(3, model2:state_dict()["1.num_batches_tracked"]:item())
    assert.are.equal(3, sched2.last_epoch)
    assert.are.equal(saved_lr, opt2.param_groups[1].lr)
    assert.are.same(next_rand, H.flat(ft.rand(4)))
    -- training on from the checkpoint repeats the original run exactly (Adam moments, RNG)
    steps(model2, opt2, sched2, 2)
    assert_same_snapshot(snapshot(model2:state_dict()), continued, "continued")
  end)

  it("explains files and parts it cannot restore", function()
    local dir = H.make_tmpdir("train")
    local model = nn.Linear(2, 2)
    ft.save(dir .. "/plain.h5", model:state_dict())
    H.assert_mentions(H.error_of(train.load_checkpoint, dir .. "/plain.h5", {model = model}),
      "not a training checkpoint")
    train.save_checkpoint(dir .. "/ck.h5", {model = model, step = 1})
    local opt = ft.optim.SGD(model:parameters(), {lr = 0.1})
    H.assert_mentions(H.error_of(train.load_checkpoint, dir .. "/ck.h5", {model = model, optimizer = opt}),
      "no optimizer state")
    H.assert_mentions(H.error_of(train.load_checkpoint, dir .. "/ck.h5", {model = nn.Linear(3, 2)}), "weight", "[2,2]")
    H.assert_mentions(H.error_of(train.save_checkpoint, dir .. "/ck.h5", {step = 1.5}), "step")
  end)

  it("keeps the previous checkpoint when a write fails", function()
    local dir = H.make_tmpdir("train")
    local path = dir .. "/ckpt.h5"
    train.save_checkpoint(path, {model = nn.Linear(2, 2), step = 3, extra = {tag = "old"}})
    local before = H.read_bytes(path)
    local function check_intact(what)
      assert.are.equal(before, H.read_bytes(path), what .. ": the checkpoint changed")
      assert.are.equal("old", train.load_checkpoint(path).extra.tag, what)
    end

    -- refused before writing: extra that JSON cannot hold
    H.assert_mentions(H.error_of(train.save_checkpoint, path, {step = 4, extra = {f = print}}), "extra")
    check_intact("bad extra")

    -- the write itself fails: the file grows past the process's size limit (EFBIG)
    local script = dir .. "/big.lua"
    H.write_bytes(script, [[
      local ok, err = pcall(ft.train.save_checkpoint, arg[1], {model = ft.nn.Linear(300, 300), step = 4})
      print(ok, err)
    ]])
    local cmd = ("(trap '' XFSZ; ulimit -f 64; exec %s %s %s)"):format(H.quote(FTLUA), H.quote(script), H.quote(path))
    local ok, out = H.run(cmd)
    assert.is_true(ok, out)
    H.assert_mentions(out, "false", "ft.train.save_checkpoint", "File too large")
    check_intact("failed write")
    local ok_ls, listing = H.run("ls " .. H.quote(dir))
    assert.is_true(ok_ls)
    assert.is_nil(listing:find("tmp", 1, true), "a temporary file was left: " .. listing)

    -- the process dies in the middle of the write (SIGXFSZ)
    -- (the shell's own report of the signal goes to the captured output too)
    ok = H.run(("exec 2>&1; (ulimit -f 64; exec %s %s %s)"):format(H.quote(FTLUA), H.quote(script), H.quote(path)))
    assert.is_not_true(ok)
    check_intact("process killed while writing")
  end)
end)

-- ---- the loop ------------------------------------------------------------------------------------

describe("ft.train.loop", function()
  it("checks its options", function()
    local step = function() return 0 end
    H.assert_mentions(H.error_of(train.loop, {steps = 2, epochs = 1, loader = {1}, step = step}), "steps and epochs")
    H.assert_mentions(H.error_of(train.loop, {steps = 2, loader = {1}, step = step, lr = 1}), "'lr'")
    H.assert_mentions(H.error_of(train.loop, {steps = 2, loader = {1}, step = step, resume = true}), "checkpoint")
    H.assert_mentions(H.error_of(train.loop, {steps = 2, step = step}), "loader")
    H.assert_mentions(H.error_of(train.loop, {steps = 0, loader = {1}, step = step}), "steps")
  end)

  it("walks epochs of an array in order and evaluates at each epoch's end", function()
    local seen, evals = {}, {}
    local r = train.loop{epochs = 2, loader = {"a", "b", "c"},
      step = function(batch, step)
        seen[#seen + 1] = batch .. step
        return step / 10
      end,
      evaluate = function(step)
        evals[#evals + 1] = step
        return {score = step}
      end}
    assert.are.same({"a1", "b2", "c3", "a4", "b5", "c6"}, seen)
    assert.are.same({3, 6}, evals)
    assert.are.equal("done", r.stopped)
    assert.are.equal(6, r.step)
    assert.are.equal(2, r.epoch)
    assert.are.same({score = 6}, r.metrics)
  end)

  it("stops early, checkpoints, and a resumed run stays stopped", function()
    local dir = H.make_tmpdir("train")
    local scores = {[2] = 0.5, [4] = 0.6, [6] = 0.55, [8] = 0.58, [10] = 0.9}
    local calls = 0
    local function run()
      return train.loop{steps = 20, next_batch = function(step) return step end,
        step = function() calls = calls + 1 return 1 end,
        evaluate = function(step) return {acc = scores[step] or 0} end, eval_every = 2,
        early_stopping = train.EarlyStopping{metric = "acc", mode = "max", patience = 2},
        checkpoint = dir .. "/ck.h5", resume = true}
    end
    local r = run()
    assert.are.equal("early_stopping", r.stopped)
    assert.are.equal(8, r.step)
    assert.are.equal(8, calls)
    assert.are.equal(8, train.load_checkpoint(dir .. "/ck.h5").step)
    local again = run()
    assert.are.equal(8, calls, "no step after resuming a stopped run")
    assert.are.equal("early_stopping", again.stopped)
    assert.are.equal(8, again.resumed_from)
  end)

  it("resumes a random-batch run exactly, with the recipe's own state", function()
    local dir = H.make_tmpdir("train")
    local function run(record, opts)
      local o = {steps = 6, next_batch = function() return ft.randn(3) end,
        step = function(batch, step)
          record[step] = H.flat(batch)
          opts.state.calls = (opts.state.calls or 0) + 1
          return 0
        end}
      for k, v in pairs(opts) do o[k] = v end
      return train.loop(o)
    end
    ft.manual_seed(5)
    local straight = {}
    run(straight, {state = {}})

    ft.manual_seed(5)
    local first, second = {}, {}
    local state = {}
    local r = run(first, {state = state, checkpoint = dir .. "/ck.h5", stop_at = 3})
    assert.are.equal("stop_at", r.stopped)
    assert.are.equal(3, r.step)
    ft.manual_seed(12345)   -- whatever the RNG holds now, resuming restores it
    local resumed_state = {calls = 999, stale = true}
    r = run(second, {state = resumed_state, checkpoint = dir .. "/ck.h5", resume = true})
    assert.are.equal(3, r.resumed_from)
    assert.are.equal(6, r.step)
    for s = 1, 3 do assert.are.same(straight[s], first[s]) end
    for s = 4, 6 do assert.are.same(straight[s], second[s], "step " .. s) end
    assert.is_nil(second[3])
    assert.are.same({calls = 6}, resumed_state)
  end)

  describe("killed and resumed in fresh processes", function()
    -- Linear + dropout trained on an unseeded shuffled loader (the epoch order comes from
    -- the global RNG), with a schedule, clipping, evaluation, early-stopping snapshots,
    -- the logger and the recipe's state. Prints the final numbers at full precision.
    local SCRIPT = [[
      local F, train = ft.nn.functional, ft.train
      local dir, stop_at, resume = arg[1], tonumber(arg[2]), arg[3] == "resume"
      ft.set_num_threads(2)
      ft.manual_seed(7)
      local N = 36
      local ds = {x = ft.randn(N, 6), y = ft.randint(1, 3, {N})}
      local model = ft.nn.Sequential{ft.nn.Linear(6, 16), ft.nn.ReLU(), ft.nn.Dropout(0.3), ft.nn.Linear(16, 3)}
      local opt = ft.optim.AdamW(model:parameters(), {lr = 0.02})
      local sched = ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = 20})
      local loader = ft.data.loader(ds, {batch_size = 8, shuffle = true})   -- 5 batches per epoch
      local es = train.EarlyStopping{metric = "loss", mode = "min", patience = 100, model = model}
      local state = {samples = 0}
      local kill = tonumber(os.getenv("FT_TEST_KILL_AT") or "")
      local r = train.loop{
        steps = 20, loader = loader, model = model, optimizer = opt, scheduler = sched, state = state,
        step = function(b, step)
          if step == kill then os.exit(1) end
          state.samples = state.samples + b.x:size(1)
          model:train()
          return train.step(opt, function() return F.cross_entropy(model(b.x), b.y) end,
            {clip = 1.0, scheduler = sched})
        end,
        evaluate = function()
          return train.evaluate(model, {{x = ds.x, y = ds.y}}, function(m, b)
            return train.classification_metrics(m(b.x), b.y)
          end)
        end,
        eval_every = 3, early_stopping = es,
        checkpoint = dir .. "/ckpt.h5", checkpoint_every = 4, resume = resume, stop_at = stop_at,
        logger = train.Logger{path = dir .. "/metrics.jsonl", total = 20, every = 100},
      }
      ft.save(dir .. "/final.h5", model:state_dict())
      ft.save(dir .. "/best.h5", es.best_state)
      print(("RESULT %s %d %.17g %.17g %d %d"):format(r.stopped, r.step, r.metrics.loss, es.best, es.best_step,
        state.samples))
    ]]

    local dir, script
    setup(function()
      dir = H.make_tmpdir("train")
      script = dir .. "/run.lua"
      H.write_bytes(script, SCRIPT)
    end)

    local function run(sub, stop_at, resume, env)
      local d = dir .. "/" .. sub
      os.execute("mkdir -p " .. H.quote(d))
      local cmd = ("%s%s %s %s %s %s"):format(env or "", H.quote(FTLUA), H.quote(script), H.quote(d),
        stop_at and tostring(stop_at) or "none", resume and "resume" or "fresh")
      local ok, out, code = H.run(cmd)
      return ok, out, code, d
    end

    local function result_line(out) return out:match("RESULT [^\n]*") end

    -- JSONL lines without the wall-clock time.
    local function timeless_lines(path)
      local lines = {}
      for i, line in ipairs(read_lines(path)) do
        local obj = ft.json.decode(line)
        obj.time = nil
        lines[i] = ft.json.encode(obj)
      end
      return lines
    end

    local straight
    setup(function()
      local ok, out, _, d = run("straight", nil, false)
      assert(ok, out)
      straight = {result = result_line(out), final = snapshot(ft.load(d .. "/final.h5")),
        best = snapshot(ft.load(d .. "/best.h5")), metrics = timeless_lines(d .. "/metrics.jsonl")}
      assert(straight.result, out)
    end)

    local function assert_like_straight(d, out)
      assert.are.equal(straight.result, result_line(out))
      assert_same_snapshot(snapshot(ft.load(d .. "/final.h5")), straight.final, "final parameters")
      assert_same_snapshot(snapshot(ft.load(d .. "/best.h5")), straight.best, "best snapshot")
      assert.are.same(straight.metrics, timeless_lines(d .. "/metrics.jsonl"))
    end

    it("trains 8 steps, then a new process resumes to 20: bit-identical to a straight run", function()
      assert.truthy(straight.result:match("^RESULT done 20 "), straight.result)
      assert.are.equal(20 + 7, #straight.metrics, "20 step lines and 7 evaluations (every 3 steps and the last)")
      local ok, out, _, d = run("paused", 8, false)
      assert.is_true(ok, out)
      assert.truthy(out:match("RESULT stop_at 8 "), out)
      assert.are.equal(8, train.load_checkpoint(d .. "/ckpt.h5", {rng = false}).step)
      ok, out = run("paused", nil, true)
      assert.is_true(ok, out)
      H.assert_mentions(out, "resumed from", "at step 8")
      assert_like_straight(d, out)
    end)

    it("is killed inside step 11, resumes from the step-8 checkpoint: bit-identical", function()
      local ok, out, code, d = run("killed", nil, false, "FT_TEST_KILL_AT=11 ")
      assert.is_not_true(ok, out)
      assert.are.equal(1, code)
      assert.is_nil(result_line(out))
      assert.are.equal(8, train.load_checkpoint(d .. "/ckpt.h5", {rng = false}).step)
      assert.are.equal(10 + 3, #read_lines(d .. "/metrics.jsonl"), "lines up to step 10 were written")
      ok, out = run("killed", nil, true)
      assert.is_true(ok, out)
      assert_like_straight(d, out)
    end)

    it("differs when the resumed run does not restore the RNG (the comparison can fail)", function()
      -- Control: training on from the step-8 weights with a different RNG stream.
      local _, out, _, d = run("control", 8, false)
      assert.truthy(out:match("RESULT stop_at 8 "), out)
      local ck = dir .. "/control/ckpt.h5"
      local flat, meta = ft.load(ck)
      ft.manual_seed(999)
      flat.rng = ft.get_rng_state()
      meta.format = nil   -- written by ft.save itself
      ft.save(ck, flat, {metadata = meta})
      local ok
      ok, out = run("control", nil, true)
      assert.is_true(ok, out)
      assert.are_not.equal(straight.result, result_line(out))
      assert.is_true(max_diff(snapshot(ft.load(d .. "/final.h5")), straight.final) > 0)
    end)
  end)
end)
