--- ft.train.evaluate and the metric helpers (ft.train re-exports them).
--
--   local m = ft.train.evaluate(model, test)                 -- a dataset {x =, y =}: accuracy, loss
--   local m = ft.train.evaluate(model, loader, function(model, batch)
--     return ft.train.classification_metrics(model(batch.x), batch.y)
--   end)
--   print(m.accuracy, m.loss)
local ft = require "ft"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function to_number(v)
  if ft.is_tensor(v) then return v:item() end
  return v
end

-- ---- batches -----------------------------------------------------------------------------

--- train.batches(source) -> iterator over batches, one value each. source: a loader
-- (batches {x = x, y = y}, also as {x, y}), an array of batches, or a function called
-- until it returns nil (two results x, y become {x = x, y = y} as for a loader).
function M.batches(source)
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

-- A dataset table {x = tensor, y = tensor} (not a loader, not an array of batches).
local function is_dataset(v)
  return type(v) == "table" and ft.is_tensor(v.x) and v[1] == nil and type(v.iter) ~= "function"
end

-- A dataset's batches, in order: {x =, y =} views of batch_size rows.
local function dataset_batches(ds, batch_size)
  local n = ds.x:dim() > 0 and ds.x:size(1) or 0
  if ft.is_tensor(ds.y) and (ds.y:dim() == 0 or ds.y:size(1) ~= n) then
    error(("ft.train.evaluate: dataset.x has %d samples but dataset.y has shape %s"):format(n, shape_str(ds.y)), 3)
  end
  local start = 1
  return function()
    if start > n then return nil end
    local len = math.min(batch_size, n - start + 1)
    local b = {x = ds.x:narrow(1, start, len), y = ds.y and ds.y:narrow(1, start, len)}
    start = start + len
    return b
  end
end

-- The default evaluator: classification, the model's output (or its .logits) [N,C] against
-- batch.y [N].
local function classification(model, batch)
  if not ft.is_tensor(batch.y) then
    error("ft.train.evaluate: the default evaluator needs labelled batches {x =, y = int64 class ids}; "
          .. "pass fn(model, batch) for anything else", 0)
  end
  local out = model(batch.x)
  if type(out) == "table" and ft.is_tensor(out.logits) then out = out.logits end
  return M.classification_metrics(out, batch.y)
end

--- train.evaluate(model, data [, fn] [, {batch_size = 256}]) -> metrics
-- Runs fn(model, batch) over every batch of data under ft.no_grad with the model in eval
-- mode (each module's previous mode is restored afterwards, also on errors). data: a
-- dataset {x =, y =} (batched in order, batch_size rows at a time), a loader, an array of
-- batches or a function returning batches (see train.batches). fn returns the batch's sums:
-- {loss_sum =, correct =, count =} (classification) or {loss_sum =, correct =, tokens =}
-- (language modelling), plus any other numbers. The result holds the totals and, where
-- they apply, loss = loss_sum / n, accuracy = correct / n (n = tokens, else count) and
-- perplexity = exp(loss) (when tokens are counted).
-- Without fn, the default classification evaluator: logits = model(batch.x) (or its
-- .logits field), scored against batch.y (int64 class ids 1..C) with
-- classification_metrics, so the result is {accuracy =, loss = mean cross-entropy,
-- correct =, count =, loss_sum =}.
function M.evaluate(model, batches, fn, opts)
  if type(fn) == "table" and opts == nil then fn, opts = nil, fn end
  opts = ft.check_options("ft.train.evaluate", opts, {"batch_size"})
  if type(model) ~= "table" or type(model.eval) ~= "function" then
    error("ft.train.evaluate: model must be a module, got " .. type(model), 2)
  end
  if fn ~= nil and type(fn) ~= "function" then
    error("ft.train.evaluate: fn must be a function(model, batch) -> {loss_sum =, correct =, count =}, got "
          .. type(fn), 2)
  end
  fn = fn or classification
  local batch_size = ft.check.integer("ft.train.evaluate", "batch_size", opts.batch_size, 256, {min = 1})
  if opts.batch_size ~= nil and not is_dataset(batches) then
    error("ft.train.evaluate: batch_size applies to a dataset {x =, y =}; a loader or batches bring their own", 2)
  end
  if is_dataset(batches) then batches = dataset_batches(batches, batch_size) end
  local next_batch = M.batches(batches)
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
function M.correct(logits, targets)
  check_targets("correct", logits, targets, true)
  return count_equal(logits:argmax(2), targets)
end

--- train.accuracy(logits [N,C], targets [N]) -> fraction of rows whose argmax is the target.
function M.accuracy(logits, targets)
  check_targets("accuracy", logits, targets, true)
  return count_equal(logits:argmax(2), targets) / targets:size(1)
end

--- train.classification_metrics(logits [N,C], targets [N] [, {label_smoothing =}])
-- -> {loss_sum = summed cross-entropy, correct =, count = N}: a batch's share for evaluate.
function M.classification_metrics(logits, targets, opts)
  opts = ft.check_options("ft.train.classification_metrics", opts, {"label_smoothing"})
  check_targets("classification_metrics", logits, targets, true)
  local loss = ft.nn.functional.cross_entropy(logits, targets,
    {reduction = "sum", label_smoothing = opts and opts.label_smoothing})
  return {loss_sum = loss:item(), correct = count_equal(logits:argmax(2), targets), count = targets:size(1)}
end

--- train.token_metrics(logits [..., V], targets [...] [, {ignore_index =}])
-- -> {loss_sum =, correct =, tokens =}: next-token sums over the targets that are not
-- ignore_index, for evaluate (which then reports perplexity).
function M.token_metrics(logits, targets, opts)
  opts = ft.check_options("ft.train.token_metrics", opts, {"ignore_index"})
  ft.check.integer("ft.train.token_metrics", "ignore_index", opts.ignore_index)
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

return M
