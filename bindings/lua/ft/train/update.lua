--- ft.train.step / accumulate / split_batch: one optimizer update around a recipe's loss
-- function (ft.train re-exports them).
--
--   local loss, norm = ft.train.step(opt, function() return F.cross_entropy(model(x), y) end, {clip = 1.0})
--   local parts, sizes = ft.train.split_batch(batch, 4)
--   local mean = ft.train.accumulate(opt, parts, function(b) return loss_of(b) end, {sizes = sizes})
local ft = require "ft"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- Options of step and accumulate, checked: clip a finite number > 0, scheduler with a step method.
local function update_options(where, opts, extra)
  local valid = {"clip", "scheduler"}
  if extra then valid[#valid + 1] = extra end
  opts = ft.check_options(where, opts, valid)
  ft.check.number(where, "clip", opts.clip, nil, {above = 0})
  if opts.scheduler ~= nil and (type(opts.scheduler) ~= "table" or type(opts.scheduler.step) ~= "function") then
    ft.check.fail(where, "scheduler", "a scheduler (with a step method)", opts.scheduler)
  end
  return opts
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

--- train.finish_update(opt, {clip =, scheduler =}) -> grad_norm: the end of every update, once
-- the gradients are in: clipping (clip = max norm over all the optimizer's parameters),
-- opt:step() and scheduler:step(). Returns the norm before clipping (nil without clip).
function M.finish_update(opt, opts)
  local norm
  if opts.clip then norm = ft.optim.clip_grad_norm(optimizer_params(opt), opts.clip) end
  opt:step()
  if opts.scheduler then opts.scheduler:step() end
  return norm
end
local update = M.finish_update

--- train.step(opt, loss_fn [, {clip = max_norm, scheduler = sched}]) -> loss, grad_norm
-- One update: zero_grad, loss_fn() -> loss tensor, backward, clip (optional), opt:step(),
-- scheduler:step() (optional). Returns the loss as a number and the gradient norm before
-- clipping (nil without clip).
function M.step(opt, loss_fn, opts)
  opts = update_options("ft.train.step", opts)
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
function M.accumulate(opt, micro_batches, loss_fn, opts)
  opts = update_options("ft.train.accumulate", opts, "sizes")
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
    for i, n in ipairs(sizes) do
      total_size = total_size + ft.check.number("ft.train.accumulate", ("sizes[%d]"):format(i), n, nil, {above = 0})
    end
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
function M.split_batch(batch, k)
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

return M
