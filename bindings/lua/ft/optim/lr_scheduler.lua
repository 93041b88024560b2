--- ft.optim.lr_scheduler: learning-rate schedules (StepLR, CosineAnnealingLR, LinearWarmup,
-- OneCycleLR), as torch.optim.lr_scheduler; also ft.optim.lr_scheduler.
--
--   local sched = ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = steps})
--   for step = 1, steps do ... opt:step(); sched:step() end
local ft = require "ft"

local numbers = require "ft.optim.numbers"
local number_to_tensor, tensor_to_number = numbers.number_to_tensor, numbers.tensor_to_number
local tensor_to_integer = numbers.tensor_to_integer

--
-- As torch.optim.lr_scheduler: creating a scheduler records each group's initial_lr
-- (once per optimizer) and applies the schedule's value at step 0; every sched:step()
-- advances its own counter and writes group.lr. Values come from closed forms of the
-- step count, so a schedule never drifts and resumes exactly from its state dict.

local Scheduler = {}
Scheduler.__index = Scheduler

local function scheduler_class(name, fields)
  local class = setmetatable({name = name, fields = fields}, {__index = Scheduler})
  class.__index = class
  class.__tostring = Scheduler.__tostring
  return class
end

local function check_optimizer(opt, name)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then
    error(string.format("ft.optim.lr_scheduler.%s: expected an optimizer, got %s", name, type(opt)), 3)
  end
end

-- Unknown keys fail through the shared checker; allowed is a set name -> true.
local function check_options(options, allowed, name)
  return ft.check_options("ft.optim.lr_scheduler." .. name, options, allowed)
end

-- A finite number option within range, or its default.
local function number_option(options, key, default, range, name)
  return ft.check.number("ft.optim.lr_scheduler." .. name, key, options[key], default, range)
end

-- Common set-up: base lrs from each group's initial_lr, then the step-0 value.
local function start(self, opt)
  self.optimizer = opt
  self.base_lrs = {}
  for g, group in ipairs(opt.param_groups) do
    if group.initial_lr == nil then group.initial_lr = group.lr end
    self.base_lrs[g] = group.initial_lr
  end
  self.last_epoch = -1
  self:step()
  return self
end

-- Advances the schedule by one step and writes the new lr of every group.
function Scheduler:step()
  self.last_epoch = self.last_epoch + 1
  self:_apply(self:_lrs_at(self.last_epoch))
end

function Scheduler:_apply(lrs)
  self._last_lr = {}
  for g, group in ipairs(self.optimizer.param_groups) do
    if lrs[g] ~= nil then group.lr = lrs[g] end
    self._last_lr[g] = group.lr
  end
end

-- The lrs of the groups set by the last step (a new array).
function Scheduler:get_last_lr()
  local out = {}
  for g, lr in ipairs(self._last_lr) do out[g] = lr end
  return out
end

-- Flat name -> tensor table: "last_epoch", "base_lrs.<g>", "last_lr.<g>", the
-- schedule's options, and "after.<...>" for a wrapped schedule.
function Scheduler:state_dict()
  local sd = {last_epoch = number_to_tensor(self.last_epoch)}
  for g, lr in ipairs(self.base_lrs) do sd["base_lrs." .. g] = number_to_tensor(lr) end
  for g, lr in ipairs(self._last_lr) do sd["last_lr." .. g] = number_to_tensor(lr) end
  for _, k in ipairs(self.fields) do
    local v = self[k]
    if type(v) == "number" or type(v) == "boolean" then sd[k] = number_to_tensor(v) end
  end
  if self.after then
    for k, v in pairs(self.after:state_dict()) do sd["after." .. k] = v end
  end
  return sd
end

-- Restores the counters and options saved by state_dict(); as torch, the optimizer's
-- lrs are restored by the optimizer's own state dict, not here.
function Scheduler:load_state_dict(sd)
  local name = "ft.optim.lr_scheduler." .. self.name .. ".load_state_dict"
  if type(sd) ~= "table" then error(name .. ": expected a table, got " .. type(sd), 2) end
  local new = {base_lrs = {}, _last_lr = {}}
  local after = {}
  local ok, err = pcall(function()
    local known = {}
    for _, k in ipairs(self.fields) do known[k] = true end
    for key, v in pairs(sd) do
      local list, g = tostring(key):match("^([%w_]+)%.(%d+)$")
      local rest = tostring(key):match("^after%.(.+)$")
      if key == "last_epoch" then
        new.last_epoch = tensor_to_integer(v, key)
      elseif rest then
        if not self.after then error("the state dict has 'after' entries but this schedule has none", 0) end
        after[rest] = v
      elseif list == "base_lrs" then
        new.base_lrs[tonumber(g)] = tensor_to_number(v, key)
      elseif list == "last_lr" then
        new._last_lr[tonumber(g)] = tensor_to_number(v, key)
      elseif known[key] then
        local x = tensor_to_number(v, key)
        if type(self[key]) == "boolean" then x = x ~= 0 end
        new[key] = x
      else
        error(string.format("unexpected key '%s'", tostring(key)), 0)
      end
    end
    if new.last_epoch == nil then error("missing 'last_epoch'", 0) end
    local n = #self.optimizer.param_groups
    if #new.base_lrs ~= n then
      error(string.format("the state dict has %d base lrs but the optimizer has %d param groups",
                          #new.base_lrs, n), 0)
    end
  end)
  if not ok then error(name .. ": " .. tostring(err), 2) end
  if self.after then self.after:load_state_dict(after) end
  for k, v in pairs(new) do self[k] = v end
end

function Scheduler:__tostring()
  return string.format("ft.optim.lr_scheduler.%s (step %d)", self.name, self.last_epoch)
end

local function positive_integer(x, what, name)
  local n = type(x) == "number" and math.tointeger(x)
  if not n or n < 1 then
    error(string.format("ft.optim.lr_scheduler.%s: %s must be a positive integer, got %s",
                        name, what, tostring(x)), 3)
  end
  return n
end

local S = {}

--- StepLR: lr = base_lr * gamma ^ floor(step / step_size).
-- ft.optim.lr_scheduler.StepLR(opt, {step_size=, gamma=0.1})
local StepLR = scheduler_class("StepLR", {"step_size", "gamma"})
function StepLR:_lrs_at(t)
  local f = self.gamma ^ (t // self.step_size)
  local lrs = {}
  for g, base in ipairs(self.base_lrs) do lrs[g] = base * f end
  return lrs
end
function S.StepLR(opt, options)
  check_optimizer(opt, "StepLR")
  options = check_options(options, {step_size = true, gamma = true}, "StepLR")
  local self = setmetatable({}, StepLR)
  self.step_size = positive_integer(options.step_size, "step_size", "StepLR")
  self.gamma = number_option(options, "gamma", 0.1, {above = 0}, "StepLR")
  start(self, opt)
  return self
end

--- CosineAnnealingLR: lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2.
-- ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max=, eta_min=0})
local CosineAnnealingLR = scheduler_class("CosineAnnealingLR", {"T_max", "eta_min"})
function CosineAnnealingLR:_lrs_at(t)
  local c = (1 + math.cos(math.pi * t / self.T_max)) / 2
  local lrs = {}
  for g, base in ipairs(self.base_lrs) do lrs[g] = self.eta_min + (base - self.eta_min) * c end
  return lrs
end
function S.CosineAnnealingLR(opt, options)
  check_optimizer(opt, "CosineAnnealingLR")
  options = check_options(options, {T_max = true, eta_min = true}, "CosineAnnealingLR")
  local self = setmetatable({}, CosineAnnealingLR)
  self.T_max = positive_integer(options.T_max, "T_max", "CosineAnnealingLR")
  self.eta_min = number_option(options, "eta_min", 0, {min = 0}, "CosineAnnealingLR")
  start(self, opt)
  return self
end

--- LinearWarmup: torch's LinearLR ramp, factor = start_factor + (1 - start_factor) * step /
-- warmup_steps, reaching base_lr at warmup_steps; then the `after` schedule runs (its
-- step 0 at warmup_steps), as torch's SequentialLR(LinearLR, after) does. Only call
-- step() of the warmup; it drives `after`. start_factor defaults to 1 / warmup_steps.
-- ft.optim.lr_scheduler.LinearWarmup(opt, {warmup_steps=, start_factor=, after=})
local LinearWarmup = scheduler_class("LinearWarmup", {"warmup_steps", "start_factor"})
function LinearWarmup:_lrs_at(t)
  if t >= self.warmup_steps and self.after then
    self.after.last_epoch = t - self.warmup_steps
    local lrs = self.after:_lrs_at(self.after.last_epoch)
    self.after:_apply(lrs)
    return lrs
  end
  local w = self.warmup_steps
  local f = self.start_factor + (1 - self.start_factor) * math.min(t, w) / w
  local lrs = {}
  for g, base in ipairs(self.base_lrs) do lrs[g] = base * f end
  return lrs
end
function S.LinearWarmup(opt, options)
  check_optimizer(opt, "LinearWarmup")
  options = check_options(options, {warmup_steps = true, start_factor = true, after = true}, "LinearWarmup")
  local self = setmetatable({}, LinearWarmup)
  self.warmup_steps = positive_integer(options.warmup_steps, "warmup_steps", "LinearWarmup")
  self.start_factor = options.start_factor or 1 / self.warmup_steps
  if not (type(self.start_factor) == "number" and self.start_factor >= 0 and self.start_factor <= 1) then
    error("ft.optim.lr_scheduler.LinearWarmup: start_factor must be in [0, 1], got "
          .. tostring(self.start_factor), 2)
  end
  local after = options.after
  if after ~= nil then
    if type(after) ~= "table" or type(after._lrs_at) ~= "function" then
      error("ft.optim.lr_scheduler.LinearWarmup: after must be a scheduler, got " .. type(after), 2)
    end
    if after.optimizer ~= opt then
      error("ft.optim.lr_scheduler.LinearWarmup: after must schedule the same optimizer", 2)
    end
    self.after = after
  end
  start(self, opt)
  return self
end

--- OneCycleLR (torch's, two or three phases): lr from max_lr / div_factor up to max_lr
-- over pct_start of total_steps, then down to initial_lr / final_div_factor; with
-- cycle_momentum the momentum (or Adam's beta1) moves the opposite way.
-- ft.optim.lr_scheduler.OneCycleLR(opt, {max_lr=, total_steps= (or epochs= and
--   steps_per_epoch=), pct_start=0.3, anneal_strategy="cos", cycle_momentum=true,
--   base_momentum=0.85, max_momentum=0.95, div_factor=25, final_div_factor=1e4,
--   three_phase=false})
local OneCycleLR = scheduler_class("OneCycleLR",
  {"total_steps", "pct_start", "cycle_momentum", "div_factor", "final_div_factor", "three_phase", "use_beta1"})

local function anneal(strategy, a, b, pct)
  if strategy == "linear" then return (b - a) * pct + a end
  return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)
end

function OneCycleLR:_phases()
  local n, pct = self.total_steps, self.pct_start
  if self.three_phase then
    return {
      {pct * n - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
      {2 * pct * n - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"},
      {n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"},
    }
  end
  return {
    {pct * n - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
    {n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"},
  }
end

function OneCycleLR:_lrs_at(t)
  if t > self.total_steps then
    error(string.format("ft.optim.lr_scheduler.OneCycleLR: tried to step %d times; total_steps is %d",
                        t + 1, self.total_steps), 3)
  end
  local phases = self:_phases()
  local lrs = {}
  for g, group in ipairs(self.optimizer.param_groups) do
    local start_step = 0
    for i, ph in ipairs(phases) do
      if t <= ph[1] or i == #phases then
        local pct = (t - start_step) / (ph[1] - start_step)
        lrs[g] = anneal(self.anneal_strategy, group[ph[2]], group[ph[3]], pct)
        if self.cycle_momentum then
          local m = anneal(self.anneal_strategy, group[ph[4]], group[ph[5]], pct)
          if self.use_beta1 then group.betas = {m, group.betas[2]} else group.momentum = m end
        end
        break
      end
      start_step = ph[1]
    end
  end
  return lrs
end

function S.OneCycleLR(opt, options)
  local name = "OneCycleLR"
  check_optimizer(opt, name)
  options = check_options(options, {max_lr = true, total_steps = true, epochs = true,
    steps_per_epoch = true, pct_start = true, anneal_strategy = true, cycle_momentum = true,
    base_momentum = true, max_momentum = true, div_factor = true, final_div_factor = true,
    three_phase = true}, name)
  local self = setmetatable({}, OneCycleLR)
  if options.total_steps ~= nil then
    self.total_steps = positive_integer(options.total_steps, "total_steps", name)
  elseif options.epochs ~= nil and options.steps_per_epoch ~= nil then
    self.total_steps = positive_integer(options.epochs, "epochs", name)
                       * positive_integer(options.steps_per_epoch, "steps_per_epoch", name)
  else
    error("ft.optim.lr_scheduler.OneCycleLR: give total_steps, or epochs and steps_per_epoch", 2)
  end
  self.pct_start = options.pct_start or 0.3
  if not (type(self.pct_start) == "number" and self.pct_start >= 0 and self.pct_start <= 1) then
    error("ft.optim.lr_scheduler.OneCycleLR: pct_start must be in [0, 1], got " .. tostring(self.pct_start), 2)
  end
  self.anneal_strategy = options.anneal_strategy or "cos"
  if self.anneal_strategy ~= "cos" and self.anneal_strategy ~= "linear" then
    error("ft.optim.lr_scheduler.OneCycleLR: anneal_strategy must be \"cos\" or \"linear\", got "
          .. tostring(self.anneal_strategy), 2)
  end
  local where = "ft.optim.lr_scheduler." .. name
  self.three_phase = ft.check.boolean(where, "three_phase", options.three_phase, false)
  self.div_factor = number_option(options, "div_factor", 25, {above = 0}, name)
  self.final_div_factor = number_option(options, "final_div_factor", 1e4, {above = 0}, name)
  self.cycle_momentum = ft.check.boolean(where, "cycle_momentum", options.cycle_momentum, true)

  -- per-group value: a number, or an array with one value per group
  local function per_group(v, what, g, range)
    if type(v) == "table" then
      if #v ~= #opt.param_groups then
        error(string.format("ft.optim.lr_scheduler.OneCycleLR: expected %d values for %s, got %d",
                            #opt.param_groups, what, #v), 3)
      end
      return ft.check.number(where, what .. "[" .. g .. "]", v[g], nil, range)
    end
    return ft.check.number(where, what, v, nil, range)
  end
  if options.max_lr == nil then error("ft.optim.lr_scheduler.OneCycleLR: max_lr is required", 2) end
  for g, group in ipairs(opt.param_groups) do
    local max_lr = per_group(options.max_lr, "max_lr", g, {above = 0})
    group.initial_lr = max_lr / self.div_factor
    group.max_lr = max_lr
    group.min_lr = group.initial_lr / self.final_div_factor
  end
  if self.cycle_momentum then
    local defaults = opt.defaults or {}
    if defaults.momentum == nil and defaults.betas == nil then
      error("ft.optim.lr_scheduler.OneCycleLR: cycle_momentum needs an optimizer with momentum or betas", 2)
    end
    self.use_beta1 = defaults.betas ~= nil
    for g, group in ipairs(opt.param_groups) do
      local hi = per_group(options.max_momentum or 0.95, "max_momentum", g, {min = 0, max = 1})
      local lo = per_group(options.base_momentum or 0.85, "base_momentum", g, {min = 0, max = 1})
      if self.use_beta1 then group.betas = {hi, group.betas[2]} else group.momentum = hi end
      group.max_momentum = hi
      group.base_momentum = lo
    end
  else
    self.use_beta1 = false
  end
  start(self, opt)
  return self
end
return S
