--- ft.train: the building blocks training recipes share. A recipe keeps its own step
-- function; these pieces do the bookkeeping around it.
--
--   local train = ft.train
--   local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-3})
--   local result = train.loop{
--     epochs = 3, loader = ft.data.loader(ds, {batch_size = 64, shuffle = true, seed = 1}),
--     step = function(batch)                         -- batch = {x = ..., y = ...}
--       return train.step(opt, function() return F.cross_entropy(model(batch.x), batch.y) end,
--                         {clip = 1.0})
--     end,
--     evaluate = function()
--       local m = train.evaluate(model, val_loader, function(m, b)
--         return train.classification_metrics(m(b.x), b.y)
--       end)
--       return {val_loss = m.loss, val_accuracy = m.accuracy}
--     end,
--     model = model, optimizer = opt,
--     checkpoint = "run/checkpoint.h5", checkpoint_every = 100, resume = true,
--     logger = train.Logger{path = "run/metrics.jsonl", every = 10},
--     early_stopping = train.EarlyStopping{metric = "val_accuracy", patience = 3},
--   }
--
-- Pieces: evaluate and the metric helpers (here), step / accumulate (one optimizer
-- update, with gradient accumulation), EarlyStopping (here), Logger (ft.train_log),
-- save_checkpoint / load_checkpoint (ft.train_checkpoint) and loop (ft.train_loop).
local ft = require "ft"

local train = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function to_number(v)
  if ft.is_tensor(v) then return v:item() end
  return v
end

-- ---- batches -----------------------------------------------------------------------------

--- train.batches(source) -> iterator over batches, one value each. source: a loader
-- (batches {x = x, y = y}, also as {x, y}), an array of batches, or a function called
-- until it returns nil (two results x, y become {x = x, y = y} as for a loader).
function train.batches(source)
  if type(source) == "function" then
    return function()
      local a, b = source()
      if a ~= nil and b ~= nil then return {a, b, x = a, y = b} end
      return a
    end
  elseif type(source) == "table" and type(source.iter) == "function" then
    local it = source:iter()
    return function()
      local x, y = it()
      if x == nil then return nil end
      return {x, y, x = x, y = y}
    end
  elseif type(source) == "table" then
    local i = 0
    return function()
      i = i + 1
      return source[i]
    end
  end
  error("ft.train: batches must be a loader, an array of batches or an iterator function, got "
        .. type(source), 3)
end

-- ---- evaluation --------------------------------------------------------------------------

-- Every module's training flag, to put back exactly (a frozen BatchNorm may stay in eval).
local function save_modes(model)
  local modes = {}
  if type(model.named_modules) == "function" then
    for _, m in model:named_modules() do modes[m] = m.training end
  end
  return modes
end

local function restore_modes(modes)
  for m, training in pairs(modes) do rawset(m, "training", training) end
end

-- Derived metrics from the summed per-batch numbers.
local function summarise(totals)
  local out = {}
  for k, v in pairs(totals) do out[k] = v end
  local n = totals.tokens or totals.count
  if n and n > 0 then
    if totals.loss_sum then out.loss = totals.loss_sum / n end
    if totals.correct then out.accuracy = totals.correct / n end
    if totals.tokens and out.loss then out.perplexity = math.exp(out.loss) end
  end
  return out
end

--- train.evaluate(model, batches, fn) -> metrics
-- Runs fn(model, batch) over every batch under ft.no_grad with the model in eval mode
-- (each module's previous mode is restored afterwards, also on errors). fn returns the
-- batch's sums: {loss_sum =, correct =, count =} (classification) or {loss_sum =,
-- correct =, tokens =} (language modelling), plus any other numbers. The result holds the
-- totals and, where they apply, loss = loss_sum / n, accuracy = correct / n (n = tokens,
-- else count) and perplexity = exp(loss) (when tokens are counted).
function train.evaluate(model, batches, fn)
  if type(model) ~= "table" or type(model.eval) ~= "function" then
    error("ft.train.evaluate: model must be a module, got " .. type(model), 2)
  end
  if type(fn) ~= "function" then
    error("ft.train.evaluate: fn must be a function(model, batch) -> {loss_sum =, correct =, count =}, got "
          .. type(fn), 2)
  end
  local next_batch = train.batches(batches)
  local modes = save_modes(model)
  model:eval()
  local totals, n_batches = {}, 0
  local ok, err = pcall(ft.no_grad, function()
    for batch in next_batch do
      n_batches = n_batches + 1
      local m = fn(model, batch)
      if type(m) ~= "table" then
        error(("ft.train.evaluate: fn returned a %s for batch %d; expected a table such as "
               .. "{loss_sum =, correct =, count =}"):format(type(m), n_batches), 0)
      end
      for k, v in pairs(m) do
        if k == "loss" or k == "accuracy" or k == "perplexity" then
          error(("ft.train.evaluate: fn returned '%s' for batch %d; return sums (loss_sum, correct, "
                 .. "count or tokens) and evaluate derives %s"):format(k, n_batches, k), 0)
        end
        v = to_number(v)
        if type(v) ~= "number" then
          error(("ft.train.evaluate: fn returned %s = %s for batch %d; expected a number")
                :format(tostring(k), type(v), n_batches), 0)
        end
        totals[k] = (totals[k] or 0) + v
      end
    end
  end)
  restore_modes(modes)
  if not ok then error(err, 0) end
  if n_batches == 0 then error("ft.train.evaluate: batches yielded no batch", 2) end
  return summarise(totals)
end

local function check_targets(name, logits, targets, classes_dim)
  if not ft.is_tensor(logits) or not ft.is_tensor(targets) then
    error(("ft.train.%s: expected logits and targets tensors"):format(name), 3)
  end
  if targets:dtype() ~= "int64" then
    error(("ft.train.%s: targets must be int64 class ids (1-based), got %s"):format(name, targets:dtype()), 3)
  end
  if classes_dim and (logits:dim() ~= 2 or targets:dim() ~= 1 or logits:size(1) ~= targets:size(1)) then
    error(("ft.train.%s: expected logits [N,C] and targets [N], got logits %s and targets %s")
          :format(name, shape_str(logits), shape_str(targets)), 3)
  end
end

local function count_equal(a, b)
  return math.tointeger(a:eq(b):sum():item()) or a:eq(b):sum():item()
end

--- train.correct(logits [N,C], targets [N]) -> number of rows whose argmax is the target.
function train.correct(logits, targets)
  check_targets("correct", logits, targets, true)
  return count_equal(logits:argmax(2), targets)
end

--- train.accuracy(logits [N,C], targets [N]) -> fraction of rows whose argmax is the target.
function train.accuracy(logits, targets)
  check_targets("accuracy", logits, targets, true)
  return count_equal(logits:argmax(2), targets) / targets:size(1)
end

--- train.classification_metrics(logits [N,C], targets [N] [, {label_smoothing =}])
-- -> {loss_sum = summed cross-entropy, correct =, count = N}: a batch's share for evaluate.
function train.classification_metrics(logits, targets, opts)
  check_targets("classification_metrics", logits, targets, true)
  local loss = ft.nn.functional.cross_entropy(logits, targets,
    {reduction = "sum", label_smoothing = opts and opts.label_smoothing})
  return {loss_sum = loss:item(), correct = count_equal(logits:argmax(2), targets), count = targets:size(1)}
end

--- train.token_metrics(logits [..., V], targets [...] [, {ignore_index =}])
-- -> {loss_sum =, correct =, tokens =}: next-token sums over the targets that are not
-- ignore_index, for evaluate (which then reports perplexity).
function train.token_metrics(logits, targets, opts)
  check_targets("token_metrics", logits, targets, false)
  local V = logits:size(-1)
  if logits:numel() ~= targets:numel() * V then
    error(("ft.train.token_metrics: logits %s do not match targets %s (expected logits [..., V] with "
           .. "the targets' leading shape)"):format(shape_str(logits), shape_str(targets)), 2)
  end
  local flat_logits, flat_targets = logits:reshape(-1, V), targets:reshape(-1)
  local ignore = opts and opts.ignore_index
  local loss = ft.nn.functional.cross_entropy(flat_logits, flat_targets,
    {reduction = "sum", ignore_index = ignore})
  local hits = flat_logits:argmax(2):eq(flat_targets)
  local tokens = flat_targets:numel()
  if ignore then
    local ignored = flat_targets:eq(ignore)
    tokens = tokens - ignored:sum():item()
    hits = hits * (1 - ignored)
  end
  local correct = hits:sum():item()
  return {loss_sum = loss:item(), correct = math.tointeger(correct) or correct,
          tokens = math.tointeger(tokens) or tokens}
end

-- ---- one optimizer update ------------------------------------------------------------------

local function optimizer_params(opt)
  local params = {}
  for _, group in ipairs(opt.param_groups) do
    for _, p in ipairs(group.params) do params[#params + 1] = p end
  end
  return params
end

local function check_optimizer(opt, name)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" or type(opt.step) ~= "function" then
    error(("ft.train.%s: expected an optimizer (ft.optim.*), got %s"):format(name, type(opt)), 3)
  end
end

local function check_loss(loss, name, where)
  if not ft.is_tensor(loss) or loss:numel() ~= 1 then
    error(("ft.train.%s: loss_fn must return a one-element loss tensor%s, got %s")
          :format(name, where, ft.is_tensor(loss) and "a tensor of shape " .. shape_str(loss) or type(loss)), 3)
  end
end

-- Clipping (opts.clip = max norm, over all the optimizer's parameters), the update and
-- the schedule (opts.scheduler). Returns the norm before clipping when clipping.
local function update(opt, opts)
  local norm
  if opts.clip then norm = ft.optim.clip_grad_norm(optimizer_params(opt), opts.clip) end
  opt:step()
  if opts.scheduler then opts.scheduler:step() end
  return norm
end

--- train.step(opt, loss_fn [, {clip = max_norm, scheduler = sched}]) -> loss, grad_norm
-- One update: zero_grad, loss_fn() -> loss tensor, backward, clip (optional), opt:step(),
-- scheduler:step() (optional). Returns the loss as a number and the gradient norm before
-- clipping (nil without clip).
function train.step(opt, loss_fn, opts)
  opts = opts or {}
  check_optimizer(opt, "step")
  opt:zero_grad()
  local loss = loss_fn()
  check_loss(loss, "step", "")
  loss:backward()
  local norm = update(opt, opts)
  return loss:item(), norm
end

--- train.accumulate(opt, micro_batches, loss_fn [, {clip =, scheduler =, sizes =}])
--  -> mean loss, grad_norm
-- One update from several micro-batches: zero_grad, then for each micro-batch
-- loss_fn(micro_batch, i) -> mean loss, scaled by 1/k (or by sizes[i] / sum(sizes) when
-- the micro-batches differ in size) and backpropagated; then clip, step and schedule as
-- train.step. For mean losses this equals one step on the whole batch. micro_batches is
-- an array, or a count k (loss_fn(i, i) then draws its own batch).
function train.accumulate(opt, micro_batches, loss_fn, opts)
  opts = opts or {}
  check_optimizer(opt, "accumulate")
  local k = type(micro_batches) == "number" and micro_batches or (type(micro_batches) == "table" and #micro_batches)
  if not k or math.type(k) ~= "integer" or k < 1 then
    error("ft.train.accumulate: micro_batches must be a non-empty array or a positive integer count", 2)
  end
  local sizes = opts.sizes
  local total_size = 0
  if sizes then
    if type(sizes) ~= "table" or #sizes ~= k then
      error(("ft.train.accumulate: sizes must hold one number per micro-batch (%d)"):format(k), 2)
    end
    for _, n in ipairs(sizes) do total_size = total_size + n end
  end
  opt:zero_grad()
  local mean = 0
  for i = 1, k do
    local mb = type(micro_batches) == "table" and micro_batches[i] or i
    local loss = loss_fn(mb, i)
    check_loss(loss, "accumulate", " for micro-batch " .. i)
    local w = sizes and sizes[i] / total_size or 1 / k
    ;(loss * w):backward()
    mean = mean + loss:item() * w
  end
  return mean, update(opt, opts)
end

--- train.split_batch(batch, k) -> micro_batches, sizes
-- Splits a batch (a tensor, or a table of tensors such as {x =, y =}) along dim 1 into k
-- nearly equal parts (views, no copy); sizes[i] = rows of part i, for accumulate's sizes.
function train.split_batch(batch, k)
  local first = ft.is_tensor(batch) and batch or (type(batch) == "table" and (batch.x or batch[1]))
  if not ft.is_tensor(first) then
    error("ft.train.split_batch: batch must be a tensor or a table of tensors ({x =, y =})", 2)
  end
  local n = first:size(1)
  if math.type(k) ~= "integer" or k < 1 or k > n then
    error(("ft.train.split_batch: k must be an integer in 1..%d (the batch's rows), got %s"):format(n, tostring(k)), 2)
  end
  local parts, sizes, start = {}, {}, 1
  for i = 1, k do
    local len = n // k + (i <= n % k and 1 or 0)
    if ft.is_tensor(batch) then
      parts[i] = batch:narrow(1, start, len)
    else
      local part = {}
      for key, t in pairs(batch) do
        if ft.is_tensor(t) then
          if t:size(1) ~= n then
            error(("ft.train.split_batch: batch.%s has %d rows but the batch has %d"):format(tostring(key), t:size(1), n), 2)
          end
          part[key] = t:narrow(1, start, len)
        else
          part[key] = t
        end
      end
      parts[i] = part
    end
    sizes[i] = len
    start = start + len
  end
  return parts, sizes
end

-- ---- early stopping --------------------------------------------------------------------------

local EarlyStopping = {}
EarlyStopping.__index = EarlyStopping

--- train.EarlyStopping{metric = "val_loss", mode = "min" | "max", patience = 3, min_delta = 0,
---                     model = m}
-- es:update(value or metrics, step) -> improved, should_stop. A value improves when it beats
-- the best by more than min_delta. should_stop once `patience` updates in a row did not
-- improve. Fields: best, best_step, wait, stopped. With a model, each improvement keeps a
-- copy of its state dict (best_state); es:restore_best() loads it back.
function train.EarlyStopping(opts)
  opts = opts or {}
  local mode = opts.mode or "min"
  if mode ~= "min" and mode ~= "max" then
    error("ft.train.EarlyStopping: mode must be \"min\" or \"max\", got " .. tostring(mode), 2)
  end
  local patience = opts.patience or 3
  if math.type(patience) ~= "integer" or patience < 1 then
    error("ft.train.EarlyStopping: patience must be a positive integer, got " .. tostring(patience), 2)
  end
  local min_delta = opts.min_delta or 0
  if type(min_delta) ~= "number" or min_delta < 0 then
    error("ft.train.EarlyStopping: min_delta must be a number >= 0, got " .. tostring(min_delta), 2)
  end
  if opts.model ~= nil and type(opts.model.state_dict) ~= "function" then
    error("ft.train.EarlyStopping: model must be a module", 2)
  end
  return setmetatable({metric = opts.metric or "val_loss", mode = mode, patience = patience,
    min_delta = min_delta, model = opts.model, wait = 0, stopped = false, updates = 0}, EarlyStopping)
end

function EarlyStopping:_improves(value)
  if value ~= value then return false end   -- NaN never improves
  if self.best == nil then return true end
  if self.mode == "max" then return value > self.best + self.min_delta end
  return value < self.best - self.min_delta
end

function EarlyStopping:update(value, step)
  if type(value) == "table" then
    local v = value[self.metric]
    if v == nil then
      error(("ft.train.EarlyStopping: the metrics have no '%s'"):format(self.metric), 2)
    end
    value = v
  end
  value = to_number(value)
  if type(value) ~= "number" then
    error(("ft.train.EarlyStopping: %s must be a number, got %s"):format(self.metric, type(value)), 2)
  end
  self.updates = self.updates + 1
  local improved = self:_improves(value)
  if improved then
    self.best, self.best_step, self.wait = value, step or self.updates, 0
    if self.model then
      local sd = {}
      ft.no_grad(function()
        for k, t in pairs((self.model:state_dict())) do sd[k] = t:detach():clone() end
      end)
      self.best_state = sd
    end
  else
    self.wait = self.wait + 1
  end
  if self.wait >= self.patience then self.stopped = true end
  return improved, self.stopped
end

--- es:restore_best([model]) loads the best snapshot into model (default: the es's model).
function EarlyStopping:restore_best(model)
  model = model or self.model
  if not self.best_state then
    error("ft.train.EarlyStopping: no best state to restore (give model = m to keep snapshots)", 2)
  end
  model:load_state_dict(self.best_state)
end

--- es:state_dict() -> JSON-able table (for checkpoints); es:load_state_dict(t).
-- The best snapshot is tensors: checkpoints store it separately.
function EarlyStopping:state_dict()
  return {metric = self.metric, best = self.best, best_step = self.best_step, wait = self.wait,
          stopped = self.stopped, updates = self.updates}
end

function EarlyStopping:load_state_dict(t)
  if type(t) ~= "table" then error("ft.train.EarlyStopping: load_state_dict expects a table", 2) end
  if t.metric ~= nil and t.metric ~= self.metric then
    error(("ft.train.EarlyStopping: the saved state tracks '%s' but this one tracks '%s'"):format(t.metric, self.metric), 2)
  end
  self.best, self.best_step = t.best, t.best_step
  self.wait, self.stopped, self.updates = t.wait or 0, t.stopped or false, t.updates or 0
end

-- ---- the other pieces ------------------------------------------------------------------------

train.Logger = require("ft.train.log").Logger
local checkpoint = require "ft.train.checkpoint"
train.save_checkpoint = checkpoint.save
train.load_checkpoint = checkpoint.load
train.loop = require "ft.train.loop"

return train
