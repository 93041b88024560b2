--- ft.selftrain.pipeline: the two-stage weak-supervision pipeline of scripts/self_train.lua,
-- shared by its text and vision tasks: stage 1 (cross-entropy on weak labels,
-- ft.selftrain.fit_weak), stage 2 (COSINE or pseudo-labelling from the stage-1 model on the
-- unlabelled pool, optionally with class-balanced batches), and the gold-only reference; each
-- keeps its state at the best dev accuracy and logs to <out_dir>/<method>.jsonl.
--
--   local pipeline = require "ft.selftrain.pipeline"
--   local p = pipeline.new{out_dir = run.dir, seed = 1, batch_size = 16, steps = 300, eval_every = 25,
--                          patience = 4, self_lr = 1e-4, T = 50, xi = 0, lambda = 0.1, tau = 0,
--                          balance = "on", select = 0.3, gold_steps = 150}
--   p:run_weak_methods(ctx, rows)      -- rows gets {key = "weak" | "cosine" | "pseudo", name =, info =}
--   p:run_gold(ctx, rows, dev_size, dev_stream)
--
-- ctx describes the task (see run_weak_methods below); nothing here knows a data format.
local ft = require "ft"

local st, P, F = ft.selftrain, ft.progress, ft.nn.functional
local log = P.log

local pipeline = {}

local function pct(v) return v and ("%.2f%%"):format(100 * v) or "-" end


--- pipeline.copy_state(model) -> a copy of the model's state dict (its own storage).
local function copy_state(model) return ft.clone_state_dict((model:state_dict())) end

--- pipeline.endless(dataset, batch_size, seed, make) -> next_batch, batches_per_pass: an
-- endless stream of batches over a dataset {x = [N,...], y = [N]}: shuffled passes, each batch
-- turned into the task's batch by make(x, y).
local function endless(dataset, batch_size, seed, make)
  local loader = ft.data.loader(dataset, { batch_size = batch_size, shuffle = true, seed = seed })
  local it = loader:iter()
  return function()
    local x, y = it()
    if x == nil then
      it = loader:iter()
      x, y = it()
    end
    return make(x, y)
  end, #loader
end

--- pipeline.accuracy(model, forward, batches) -> the accuracy of model on an array of batches
-- with gold labels batch.y (forward(model, batch) -> logits).
local function accuracy(model, forward, batches)
  return ft.train.evaluate(model, batches, function(m, b)
    return ft.train.classification_metrics((forward(m, b)), b.y)
  end).accuracy
end

-- The ft.train.Logger of one method: <out_dir>/<key>.jsonl.
local function method_logger(args, key, total)
  return ft.train.Logger({ path = ("%s/%s.jsonl"):format(args.out_dir, key), total = total, every = 10,
    unit = "examples" })
end

-- The methods below take a task's context ctx = {new_model(), forward(m, batch) -> logits,
-- features, optimizer(model, lr), augment (nil, or batch -> the batch the training model
-- sees), weak (endless weakly labelled batches, batch.y), weak_batches
-- (batches per pass), unlabelled() (a new endless stream of batches of the whole pool),
-- num_classes, pool_size, pool_batch(rows) (the batch of those pool rows), pool_gold (nil, or
-- the pool's hidden labels: only logged, never used), dev, test (arrays of batches with
-- gold y)}.

-- Stage 1: cross-entropy on the weak labels, keeping the state with the best dev accuracy.
local function fit_weak(args, ctx, steps)
  ft.manual_seed(args.seed + 11)
  local model = ctx.new_model()
  local logger = method_logger(args, "weak", steps)
  local t0 = ft.clock()
  local history = st.fit_weak({
    model = model, optimizer = ctx.optimizer(model), batches = ctx.weak, forward = ctx.forward,
    augment = ctx.augment,
    targets = function(b) return b.y end, steps = steps, clip_grad_norm = 1.0,
    evaluate = function(m) return accuracy(m, ctx.forward, ctx.dev) end,
    eval_every = args.eval_every, patience = args.patience,
    callback = function(r)
      logger:step(r.step, { loss = r.loss }, args.batch_size)
      if r.score then logger:record(r.step, { dev_accuracy = r.score }) end
    end,
  })
  logger:close()
  return model, { best_step = history.best_step, steps_run = #history, dev = history.best_score,
    seconds = ft.clock() - t0 }
end

-- The predicted class and its probability for every pool example (ctx.pool_batch(rows) ->
-- batch of those rows).
local function predict_pool(model, ctx)
  local preds, confidence = {}, {}
  model:eval()
  ft.no_grad(function()
    for first = 1, ctx.pool_size, 256 do
      local rows = {}
      for r = first, math.min(first + 255, ctx.pool_size) do rows[#rows + 1] = r end
      local top, class = ctx.forward(model, ctx.pool_batch(rows)):softmax(2):max(2)
      top = top:totable()
      for i, c in ipairs(class:totable()) do preds[#preds + 1], confidence[#confidence + 1] = c, top[i] end
    end
  end)
  return preds, confidence
end

-- The pool rows each predicted class keeps for self-training: its --select fraction of most
-- confident predictions (class-balanced selection, as in class-balanced self-training: one
-- threshold for all classes keeps mostly the class the model is surest of).
local function select_rows(args, preds, confidence, num_classes)
  local by_class = {}
  for c = 1, num_classes do by_class[c] = {} end
  for r, c in ipairs(preds) do table.insert(by_class[c], r) end
  for c = 1, num_classes do
    local rows = by_class[c]
    table.sort(rows, function(a, b) return confidence[a] > confidence[b] end)
    for i = #rows, math.ceil(args.select * #rows) + 1, -1 do rows[i] = nil end
  end
  return by_class
end

-- Endless class-balanced batches of the pool: each batch takes an equal share of every class
-- with rows in by_class, each class's rows in a fresh seeded order on every pass. Against confirmation bias: self-training on plain batches lets
-- the classes the model is most confident about take over the others.
local function balanced_stream(args, ctx, by_class, seed)
  local classes = {}
  for c = 1, ctx.num_classes do
    if #by_class[c] > 0 then classes[#classes + 1] = c end
  end
  -- A seeded generator (xorshift64) for the passes' orders: independent of ft's generator.
  local state = (seed * 0x9E3779B97F4A7C15) ~ 0x2545F4914F6CDD1D
  local function draw(k)
    state = state ~ (state << 13); state = state ~ (state >> 7); state = state ~ (state << 17)
    return (state >> 11) % k + 1
  end
  local order, pos = {}, {}
  local function next_row(c)
    if not order[c] or pos[c] > #order[c] then
      local o = table.move(by_class[c], 1, #by_class[c], 1, {})
      for i = #o, 2, -1 do
        local j = draw(i)
        o[i], o[j] = o[j], o[i]
      end
      order[c], pos[c] = o, 1
    end
    local r = order[c][pos[c]]
    pos[c] = pos[c] + 1
    return r
  end
  local turn = 0
  return function()
    local rows = {}
    for _ = 1, args.batch_size do
      turn = turn % #classes + 1
      rows[#rows + 1] = next_row(classes[turn])
    end
    return ctx.pool_batch(rows)
  end
end

-- Stage 2: COSINE or pseudo-labelling from the stage-1 state on the unlabelled pool. The dev
-- accuracy of the starting state counts as step 0, so the kept state is never worse on dev.
local function self_train(args, ctx, key, start_state, steps, batches)
  ft.manual_seed(args.seed + (key == "cosine" and 21 or 31))
  local model = ctx.new_model()
  model:load_state_dict(start_state)
  local teacher = ctx.new_model()
  local logger = method_logger(args, key, steps)
  local t0 = ft.clock()
  local es = ft.train.EarlyStopping({ metric = "dev_accuracy", mode = "max", patience = args.patience, model = model })
  es:update(accuracy(model, ctx.forward, ctx.dev), 0)
  local opts = {
    model = model, teacher = teacher, batches = batches, forward = ctx.forward, augment = ctx.augment,
    optimizer = ctx.optimizer(model, args.self_lr), steps = steps, T = args.T, clip_grad_norm = 1.0,
    callback = function(r, m)
      logger:step(r.step, { loss = r.loss or 0 / 0, kept = r.kept }, args.batch_size)
      if r.step % args.eval_every == 0 or r.step == steps then
        local acc = accuracy(m, ctx.forward, ctx.dev)
        local _, stop = es:update(acc, r.step)
        logger:record(r.step, { dev_accuracy = acc })
        return { dev_accuracy = acc, stop = stop }
      end
    end,
  }
  local history
  if key == "cosine" then
    opts.xi, opts.lambda = args.xi, args.lambda
    history = st.cosine(opts)
  else
    opts.tau = args.tau
    history = st.pseudo_label(opts)
  end
  logger:close()
  es:restore_best()
  local kept, skipped = 0, 0
  for _, r in ipairs(history) do
    kept = kept + r.kept
    if r.skipped then skipped = skipped + 1 end
  end
  return model, { best_step = es.best_step, steps_run = #history, dev = es.best, seconds = ft.clock() - t0,
    teacher_updates = history.teacher_updates, mean_kept = #history > 0 and kept / #history or 0,
    skipped_steps = skipped }
end

-- Weak-label fine-tuning, then COSINE and pseudo-labelling from it; adds to `rows`.
local function run_weak_methods(args, ctx, rows)
  local steps = args.steps
  if args.epochs then steps = args.epochs * ctx.weak_batches end
  local self_steps = args.self_steps or steps
  log("== weak-label fine-tuning: up to %d steps of %d, dev every %d (patience %d)", steps, args.batch_size,
    args.eval_every, args.patience)
  local weak_model, info = fit_weak(args, ctx, steps)
  info.test = accuracy(weak_model, ctx.forward, ctx.test)
  rows[#rows + 1] = { key = "weak", name = "weak-label fine-tune", info = info }
  log("weak-label fine-tune: best dev %s at step %s; test %s", pct(info.dev), tostring(info.best_step), pct(info.test))
  local start = copy_state(weak_model)
  local by_class
  if args.balance == "on" then
    local preds, confidence = predict_pool(weak_model, ctx)
    by_class = select_rows(args, preds, confidence, ctx.num_classes)
    local counts, right = {}, {}
    for c = 1, ctx.num_classes do
      counts[c], right[c] = #by_class[c], 0
      for _, r in ipairs(by_class[c]) do
        if ctx.pool_gold and ctx.pool_gold[r] == c then right[c] = right[c] + 1 end
      end
      right[c] = counts[c] > 0 and pct(right[c] / counts[c]) or "-"
    end
    log("pool rows per class the weak-label model predicts (top %g by confidence) for balanced batches: %s%s",
      args.select, table.concat(counts, ", "),
      ctx.pool_gold and "; their accuracy against the hidden labels " .. table.concat(right, ", ") or "")
  end
  weak_model = nil
  collectgarbage()
  for _, m in ipairs({ { "cosine", "COSINE" }, { "pseudo", "pseudo-labelling" } }) do
    log("== %s from the weak-label model: up to %d steps on the unlabelled pool, lr %g, teacher every %d steps",
      m[2], self_steps, args.self_lr, args.T)
    local batches = by_class and balanced_stream(args, ctx, by_class, args.seed + 1) or ctx.unlabelled()
    local model, r = self_train(args, ctx, m[1], start, self_steps, batches)
    r.test = accuracy(model, ctx.forward, ctx.test)
    rows[#rows + 1] = { key = m[1], name = m[2], info = r }
    log("%s: best dev %s at step %d; test %s", m[2], pct(r.dev), r.best_step, pct(r.test))
    collectgarbage()
  end
end

-- Reference: supervised on the gold dev set alone (dev_stream: endless batches of it with y),
-- a fixed --gold-steps from the pretrained model, since no other labels are left to choose
-- with; adds to `rows`.
local function run_gold(args, ctx, rows, dev_size, dev_stream)
  log("== gold-only supervised: %d steps on the %d dev examples", args.gold_steps, dev_size)
  ft.manual_seed(args.seed + 41)
  local model = ctx.new_model()
  local opt = ctx.optimizer(model)
  local logger = method_logger(args, "gold", args.gold_steps)
  local t0 = ft.clock()
  model:train()
  for step = 1, args.gold_steps do
    local b = dev_stream()
    local loss = ft.train.step(opt, function() return F.cross_entropy((ctx.forward(model, b)), b.y) end,
      { clip = 1.0 })
    logger:step(step, { loss = loss }, args.batch_size)
  end
  logger:close()
  local info = { steps_run = args.gold_steps, dev = accuracy(model, ctx.forward, ctx.dev),
    test = accuracy(model, ctx.forward, ctx.test), seconds = ft.clock() - t0, note = "trained on dev" }
  rows[#rows + 1] = { key = "gold", name = "gold-only supervised", info = info }
  log("gold-only supervised: test %s (its dev accuracy is training accuracy)", pct(info.test))
end

-- ---- the object ----------------------------------------------------------------------------

local SETTINGS = {"out_dir", "seed", "batch_size", "steps", "epochs", "self_steps", "gold_steps", "eval_every",
  "patience", "self_lr", "T", "xi", "lambda", "tau", "balance", "select"}
local REQUIRED = {"out_dir", "seed", "batch_size", "steps", "gold_steps", "eval_every", "patience", "self_lr", "T",
  "xi", "lambda", "tau", "balance", "select"}

local Pipeline = {}
Pipeline.__index = Pipeline

--- pipeline.new(settings) -> p: the pipeline with the recipe's settings (out_dir, seed,
-- batch_size, steps, epochs (optional: overrides steps, in passes over the weak labels),
-- self_steps (optional, default steps), gold_steps, eval_every, patience, self_lr, T, xi,
-- lambda, tau, balance ("on" | "off"), select (in (0, 1])).
function pipeline.new(settings)
  settings = ft.check_options("ft.selftrain.pipeline.new", settings, SETTINGS)
  for _, k in ipairs(REQUIRED) do
    if settings[k] == nil then error(("ft.selftrain.pipeline.new: setting '%s' is missing"):format(k), 2) end
  end
  if settings.balance ~= "on" and settings.balance ~= "off" then
    error(("ft.selftrain.pipeline.new: balance must be 'on' or 'off', got %s"):format(tostring(settings.balance)), 2)
  end
  if not (type(settings.select) == "number" and settings.select > 0 and settings.select <= 1) then
    error(("ft.selftrain.pipeline.new: select must be in (0, 1], got %s"):format(tostring(settings.select)), 2)
  end
  local args = {}
  for k, v in pairs(settings) do args[k] = v end
  return setmetatable({args = args}, Pipeline)
end

--- p:run_weak_methods(ctx, rows): weak-label fine-tuning, then COSINE and pseudo-labelling from
-- it; appends a row {key =, name =, info = {dev =, test =, best_step =, steps_run =, seconds =}}
-- per method to rows.
function Pipeline:run_weak_methods(ctx, rows) return run_weak_methods(self.args, ctx, rows) end

--- p:run_gold(ctx, rows, dev_size, dev_stream): the gold-only reference (gold_steps on the dev
-- set's endless batches dev_stream); appends its row to rows.
function Pipeline:run_gold(ctx, rows, dev_size, dev_stream) return run_gold(self.args, ctx, rows, dev_size, dev_stream) end

--- p:logger(key, total) -> the ft.train.Logger writing <out_dir>/<key>.jsonl.
function Pipeline:logger(key, total) return method_logger(self.args, key, total) end

pipeline.copy_state, pipeline.endless, pipeline.accuracy = copy_state, endless, accuracy

return pipeline
