--- ft.train.EarlyStopping: stops a run once a metric stops improving, keeping the best
-- weights (ft.train re-exports it).
--
--   local es = ft.train.EarlyStopping{metric = "val_accuracy", mode = "max", patience = 3, model = model}
--   local improved, stop = es:update(metrics, step)
--   if stop then es:restore_best() end
local ft = require "ft"

local clone_state_dict = require("ft.state_dict").clone

local M = {}

local function to_number(v)
  if ft.is_tensor(v) then return v:item() end
  return v
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
function M.EarlyStopping(opts)
  local where = "ft.train.EarlyStopping"
  opts = ft.check_options(where, opts, {"metric", "mode", "patience", "min_delta", "model"})
  local check = ft.check
  local mode = check.one_of(where, "mode", opts.mode, "min", {"min", "max"})
  local patience = check.integer(where, "patience", opts.patience, 3, {min = 1})
  local min_delta = check.number(where, "min_delta", opts.min_delta, 0, {min = 0})
  local metric = check.string(where, "metric", opts.metric, "val_loss")
  if opts.model ~= nil and (type(opts.model) ~= "table" or type(opts.model.state_dict) ~= "function") then
    error("ft.train.EarlyStopping: model must be a module", 2)
  end
  return setmetatable({metric = metric, mode = mode, patience = patience,
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
      self.best_state = ft.no_grad(function()
        return clone_state_dict((self.model:state_dict()), "ft.train.EarlyStopping")
      end)
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

return M
