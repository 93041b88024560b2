--- ft.optim: optimizers (SGD, Adam, AdamW), parameter constraints, gradient clipping and
-- learning-rate schedules.
--
-- The update loops are fused C kernels (ft._optim); this file holds what PyTorch keeps
-- in Python: param groups, per-parameter state, state dicts and schedules.
--
--   local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-3, weight_decay = 0.01})
--   local sched = ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = steps})
--   for step = 1, steps do
--     opt:zero_grad()
--     loss_fn():backward()
--     ft.optim.clip_grad_norm(model:parameters(), 1.0)
--     opt:step()
--     sched:step()
--   end
--
-- State dicts are flat tables of tensors so that ft.save / ft.load store them as they
-- are: "state.<i>.<name>" (i counts parameters over all groups, from 1) and
-- "param_groups.<g>.<option>". A number is stored as a float32 tensor whose elements
-- add up (in double precision) to its exact value: one element when float32 holds it,
-- else its float32 rounding followed by the correction terms.
local ft = require "ft"
local C = ft._optim

local M = {}

-- ---- numbers <-> tensors ------------------------------------------------------------

local function f32(x) return (string.unpack("f", string.pack("f", x))) end

local function number_to_tensor(x)
  if type(x) == "boolean" then x = x and 1 or 0 end
  local hi = f32(x)
  if hi == x or hi ~= hi or math.abs(hi) == math.huge then return ft.tensor({hi}) end
  local mid = f32(x - hi)
  local lo = f32(x - hi - mid)
  if lo == 0 then return ft.tensor({hi, mid}) end
  return ft.tensor({hi, mid, lo})
end

local function tensor_to_number(v, key)
  if type(v) == "number" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  if not C.is_tensor(v) then
    error(string.format("state dict entry '%s' must be a tensor or a number, got %s", key, type(v)), 0)
  end
  local values = v:totable()
  if type(values) == "number" then return values end
  local sum = 0.0
  for i = 1, #values do
    if type(values[i]) ~= "number" then
      error(string.format("state dict entry '%s' must be a 1-D tensor of numbers", key), 0)
    end
    sum = sum + values[i]
  end
  return sum
end

local function tensor_to_integer(v, key)
  local x = tensor_to_number(v, key)
  local n = math.tointeger(x)
  if not n then error(string.format("state dict entry '%s' must hold an integer, got %s", key, x), 0) end
  return n
end

M.number_to_tensor = number_to_tensor
M.tensor_to_number = tensor_to_number

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

local function same_shape(a, b)
  local sa, sb = a:shape(), b:shape()
  if #sa ~= #sb then return false end
  for i = 1, #sa do
    if sa[i] ~= sb[i] then return false end
  end
  return true
end

-- ---- Optimizer: param groups, state, state dicts ------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

local function copy_value(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = x end
  return c
end

-- Creates an optimizer of `class`: params is an array of tensors or of param groups
-- ({params = {...}, lr = ..., ...}); options override class defaults.
function M.new_optimizer(class, params, options)
  local name = class.name
  if type(params) ~= "table" or C.is_tensor(params) then
    error(string.format("ft.optim.%s: params must be an array of tensors or of param groups, got %s",
                        name, C.is_tensor(params) and "a tensor" or type(params)), 3)
  end
  if options ~= nil and type(options) ~= "table" then
    error(string.format("ft.optim.%s: options must be a table, got %s", name, type(options)), 3)
  end
  local defaults = {}
  for k, v in pairs(class.defaults) do defaults[k] = copy_value(v) end
  for k, v in pairs(options or {}) do
    if class.defaults[k] == nil and not (k == "lr" and class.lr_required) then
      error(string.format("ft.optim.%s: unknown option '%s'", name, tostring(k)), 3)
    end
    defaults[k] = copy_value(v)
  end
  local self = setmetatable({defaults = defaults, param_groups = {}, state = {}, _ids = {}}, class)
  if #params == 0 then error(string.format("ft.optim.%s: got an empty parameter list", name), 3) end
  if type(params[1]) == "table" and not C.is_tensor(params[1]) then
    for g = 1, #params do self:_add_group(params[g], g, 4) end
  else
    self:_add_group({params = params}, nil, 4)
  end
  return self
end

-- Adds a param group (options not given take the optimizer's defaults).
function Optimizer:add_param_group(group)
  self:_add_group(group, #self.param_groups + 1, 3)
end

function Optimizer:_add_group(group, g, level)
  local name = self.name
  local where = g and string.format("param_groups[%d]", g) or "params"
  if type(group) ~= "table" or (type(group.params) ~= "table" and not C.is_tensor(group.params)) then
    error(string.format("ft.optim.%s: %s must be a table with a 'params' array", name, where), level)
  end
  local new = {}
  for k, v in pairs(group) do new[k] = copy_value(v) end
  local list = group.params
  if C.is_tensor(list) then list = {list} end
  new.params = {}
  local ids = {}
  for i = 1, #list do
    local p = list[i]
    local problem = C.param_problem(p)
    local pos = g and string.format("%s.params[%d]", where, i) or string.format("params[%d]", i)
    if problem then error(string.format("ft.optim.%s: %s %s", name, pos, problem), level) end
    local id = C.id(p)
    if self._ids[id] or ids[id] then
      error(string.format("ft.optim.%s: %s appears more than once in the parameter groups", name, pos), level)
    end
    ids[id] = true
    new.params[i] = p
  end
  if #new.params == 0 then
    error(string.format("ft.optim.%s: %s has no parameters", name, where), level)
  end
  for k, v in pairs(self.defaults) do
    if new[k] == nil then new[k] = copy_value(v) end
  end
  if new.lr == nil then error(string.format("ft.optim.%s: lr is required (%s)", name, where), level) end
  local problem = self._check_group(new)
  if problem then error(string.format("ft.optim.%s: %s: %s", name, where, problem), level) end
  for id in pairs(ids) do self._ids[id] = true end
  self.param_groups[#self.param_groups + 1] = new
end

-- The per-parameter state tables of a group, created empty on first use.
function Optimizer:_states(group)
  local states = {}
  for i, p in ipairs(group.params) do
    local s = self.state[p]
    if not s then
      s = {}
      self.state[p] = s
    end
    states[i] = s
  end
  return states
end

-- ---- parameter constraints ----------------------------------------------------------
-- param -> fn(param). Weak keys: a parameter that is dropped takes its constraint along.
local constraints = setmetatable({}, {__mode = "k"})

--- ft.optim.constrain(param, fn): after every optimizer step that updates param (it has a
-- grad), fn(param) runs under no_grad and may rewrite param in place, e.g. project it back
-- onto a constraint set (ft.reft keeps its rotations orthonormal this way). fn = nil
-- removes the constraint. One constraint per parameter; a new fn replaces the old one.
function M.constrain(param, fn)
  if not C.is_tensor(param) then
    error("ft.optim.constrain: param must be a tensor, got " .. type(param), 2)
  end
  if fn ~= nil and type(fn) ~= "function" then
    error("ft.optim.constrain: fn must be a function or nil, got " .. type(fn), 2)
  end
  constraints[param] = fn
end

-- Runs the constraints of the parameters the last update changed (those with a grad).
local function apply_constraints(groups)
  if next(constraints) == nil then return end
  ft.no_grad(function()
    for _, group in ipairs(groups) do
      for _, p in ipairs(group.params) do
        local fn = constraints[p]
        if fn and p.grad ~= nil then fn(p) end
      end
    end
  end)
end

-- Runs closure (if given, e.g. to recompute the loss) and then one update, then the
-- parameters' constraints (ft.optim.constrain); returns the closure's result. Each group's
-- options are read now, so schedules just write group.lr.
function Optimizer:step(closure)
  local loss
  if closure then loss = closure() end
  for _, group in ipairs(self.param_groups) do
    local problem = self._check_group(group)
    if problem then error(string.format("ft.optim.%s: %s", self.name, problem), 2) end
    self._update(group, self:_states(group))
  end
  apply_constraints(self.param_groups)
  return loss
end

-- Drops every gradient (set_to_none, the default, as torch) or fills them with zeros.
-- Accepts a boolean or {set_to_none = bool}.
function Optimizer:zero_grad(set_to_none)
  if type(set_to_none) == "table" then set_to_none = set_to_none.set_to_none end
  if set_to_none == nil then set_to_none = true end
  for _, group in ipairs(self.param_groups) do C.zero_grad(group.params, set_to_none) end
end

-- A flat name -> tensor table (see the top of this file). State tensors are the live
-- buffers, as in torch: save them (ft.save) or copy them before stepping on.
function Optimizer:state_dict()
  local sd = {}
  local index = 0
  for g, group in ipairs(self.param_groups) do
    local prefix = "param_groups." .. g .. "."
    for k, v in pairs(group) do
      if k ~= "params" and type(k) == "string" then
        if type(v) == "number" or type(v) == "boolean" then
          sd[prefix .. k] = number_to_tensor(v)
        elseif type(v) == "table" then  -- betas
          for j, x in ipairs(v) do
            if type(x) == "number" then sd[prefix .. k .. "." .. j] = number_to_tensor(x) end
          end
        end
      end
    end
    sd[prefix .. "num_params"] = number_to_tensor(#group.params)
    for _, p in ipairs(group.params) do
      index = index + 1
      for k, v in pairs(self.state[p] or {}) do
        if C.is_tensor(v) then
          sd["state." .. index .. "." .. k] = v
        elseif type(v) == "number" then
          sd["state." .. index .. "." .. k] = number_to_tensor(v)
        end
      end
    end
  end
  return sd
end

-- Restores a state dict made by state_dict() (possibly through ft.save/ft.load). The
-- optimizer must have the same groups with the same numbers and shapes of parameters;
-- otherwise an error names the mismatch and nothing is changed.
function Optimizer:load_state_dict(sd)
  local name = "ft.optim." .. self.name .. ".load_state_dict"
  if type(sd) ~= "table" then error(name .. ": expected a table, got " .. type(sd), 2) end
  local params, group_of = {}, {}
  for g, group in ipairs(self.param_groups) do
    for _, p in ipairs(group.params) do
      params[#params + 1] = p
      group_of[#params] = g
    end
  end

  local options, states = {}, {}
  local ok, err = pcall(function()
    -- parse
    local n_groups, max_state, state_key = 0, 0, {}
    for key, v in pairs(sd) do
      if type(key) ~= "string" then error("unexpected key " .. tostring(key), 0) end
      local g, opt = key:match("^param_groups%.(%d+)%.(.+)$")
      local i, field = key:match("^state%.(%d+)%.([^.]+)$")
      if g then
        g = tonumber(g)
        n_groups = math.max(n_groups, g)
        options[g] = options[g] or {}
        local base, j = opt:match("^(.+)%.(%d+)$")
        if base then
          options[g][base] = options[g][base] or {}
          options[g][base][tonumber(j)] = tensor_to_number(v, key)
        else
          options[g][opt] = tensor_to_number(v, key)
        end
      elseif i then
        i = tonumber(i)
        max_state = math.max(max_state, i)
        states[i] = states[i] or {}
        state_key[i] = state_key[i] or {}
        state_key[i][field] = key
        if field == "step" then
          states[i].step = tensor_to_integer(v, key)
        elseif C.is_tensor(v) then
          states[i][field] = v
        else
          states[i][field] = tensor_to_number(v, key)
        end
      else
        error(string.format("unexpected key '%s'", key), 0)
      end
    end
    -- check against this optimizer: groups, their sizes, then each state's shapes
    if n_groups ~= #self.param_groups then
      error(string.format("the state dict has %d param groups but the optimizer has %d",
                          n_groups, #self.param_groups), 0)
    end
    for g, group in ipairs(self.param_groups) do
      local n = options[g] and options[g].num_params
      if n == nil then error(string.format("param group %d has no 'num_params' entry", g), 0) end
      if n ~= #group.params then
        error(string.format("param group %d has %d parameters in the state dict but %d in the optimizer",
                            g, n, #group.params), 0)
      end
    end
    if max_state > #params then
      error(string.format("the state dict has state for parameter %d but the optimizer has %d parameters",
                          max_state, #params), 0)
    end
    for i = 1, max_state do
      local fields = {}
      for field in pairs(states[i] or {}) do fields[#fields + 1] = field end
      table.sort(fields)
      for _, field in ipairs(fields) do
        local v, p = states[i][field], params[i]
        if C.is_tensor(v) and not same_shape(v, p) then
          error(string.format("%s has shape %s but parameter %d (in param group %d) has shape %s",
                              state_key[i][field], shape_str(v), i, group_of[i], shape_str(p)), 0)
        end
      end
    end
  end)
  if not ok then error(name .. ": " .. tostring(err), 2) end

  -- everything checked: replace options and state
  for g, group in ipairs(self.param_groups) do
    for k, v in pairs(options[g]) do
      if k ~= "num_params" then
        if type(group[k]) == "boolean" then v = v ~= 0 end
        group[k] = v
      end
    end
  end
  self.state = {}
  for i, p in ipairs(params) do
    local s = {}
    for k, v in pairs(states[i] or {}) do
      s[k] = C.is_tensor(v) and C.copy(v) or v
    end
    self.state[p] = s
  end
end

function Optimizer:__tostring()
  local n = 0
  for _, group in ipairs(self.param_groups) do n = n + #group.params end
  return string.format("ft.optim.%s (%d param groups, %d parameters)", self.name, #self.param_groups, n)
end

-- Declares an optimizer class: M[name](params, options).
local function optimizer_class(name, defaults, check_group, update, lr_required)
  local class = setmetatable({
    name = name, defaults = defaults, lr_required = lr_required,
    _check_group = check_group, _update = update,
  }, {__index = Optimizer})
  class.__index = class
  class.__tostring = Optimizer.__tostring
  M[name] = function(params, options)
    local opt = M.new_optimizer(class, params, options)
    return opt
  end
  return class
end

local function check_nonneg(group, keys)
  for _, k in ipairs(keys) do
    local v = group[k]
    if type(v) ~= "number" then return string.format("%s must be a number, got %s", k, type(v)) end
    if not (v >= 0) then return string.format("invalid %s %s (must be >= 0)", k, v) end
  end
end

local function check_adam_group(group)
  local problem = check_nonneg(group, {"lr", "eps", "weight_decay"})
  if problem then return problem end
  local b = group.betas
  if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
    return "betas must be {beta1, beta2}"
  end
  for j = 1, 2 do
    if not (b[j] >= 0 and b[j] < 1) then
      return string.format("invalid beta parameter at index %d: %s (must be in [0, 1))", j, b[j])
    end
  end
end

--- SGD with momentum, dampening, Nesterov momentum and weight decay (torch.optim.SGD).
-- ft.optim.SGD(params, {lr=, momentum=0, dampening=0, nesterov=false, weight_decay=0})
M.SGDClass = optimizer_class("SGD",
  {momentum = 0, dampening = 0, weight_decay = 0, nesterov = false, maximize = false},
  function(group)
    local problem = check_nonneg(group, {"lr", "momentum", "dampening", "weight_decay"})
    if problem then return problem end
    if group.nesterov and (group.momentum <= 0 or group.dampening ~= 0) then
      return "nesterov momentum requires a momentum and zero dampening"
    end
  end,
  function(group, states) C.sgd_step(group.params, states, group) end,
  true)

--- Adam (torch.optim.Adam): weight_decay is an L2 term added to the gradient.
-- ft.optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, amsgrad=false})
M.AdamClass = optimizer_class("Adam",
  {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false, maximize = false},
  check_adam_group,
  function(group, states) C.adam_step(group.params, states, group, false) end)

--- AdamW (torch.optim.AdamW): decoupled weight decay, p = p * (1 - lr * weight_decay).
-- ft.optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2, amsgrad=false})
M.AdamWClass = optimizer_class("AdamW",
  {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false},
  check_adam_group,
  function(group, states) C.adam_step(group.params, states, group, true) end)

--- Scales all gradients together so that their norm is at most max_norm
-- (torch.nn.utils.clip_grad_norm_); returns the total norm before clipping.
-- params: a tensor or an array of tensors; norm_type: a number > 0 or "inf" / math.huge.
function M.clip_grad_norm(params, max_norm, norm_type)
  if C.is_tensor(params) then params = {params} end
  if type(params) ~= "table" then
    error("ft.optim.clip_grad_norm: params must be a tensor or an array of tensors, got " .. type(params), 2)
  end
  if type(max_norm) ~= "number" then
    error("ft.optim.clip_grad_norm: max_norm must be a number, got " .. type(max_norm), 2)
  end
  return C.clip_grad_norm(params, max_norm, norm_type or 2)
end

-- ---- learning-rate schedules ------------------------------------------------------------
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

local function check_options(options, allowed, name)
  if options ~= nil and type(options) ~= "table" then
    error(string.format("ft.optim.lr_scheduler.%s: options must be a table, got %s", name, type(options)), 3)
  end
  for k in pairs(options or {}) do
    if not allowed[k] then
      error(string.format("ft.optim.lr_scheduler.%s: unknown option '%s'", name, tostring(k)), 3)
    end
  end
  return options or {}
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
  self.gamma = options.gamma or 0.1
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
  self.eta_min = options.eta_min or 0
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
  self.three_phase = options.three_phase or false
  self.div_factor = options.div_factor or 25
  self.final_div_factor = options.final_div_factor or 1e4
  if options.cycle_momentum == nil then self.cycle_momentum = true else self.cycle_momentum = options.cycle_momentum end

  -- per-group value: a number, or an array with one value per group
  local function per_group(v, what, g)
    if type(v) == "table" then
      if #v ~= #opt.param_groups then
        error(string.format("ft.optim.lr_scheduler.OneCycleLR: expected %d values for %s, got %d",
                            #opt.param_groups, what, #v), 3)
      end
      return v[g]
    end
    return v
  end
  if options.max_lr == nil then error("ft.optim.lr_scheduler.OneCycleLR: max_lr is required", 2) end
  for g, group in ipairs(opt.param_groups) do
    local max_lr = per_group(options.max_lr, "max_lr", g)
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
      local hi = per_group(options.max_momentum or 0.95, "max_momentum", g)
      local lo = per_group(options.base_momentum or 0.85, "base_momentum", g)
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

M.lr_scheduler = S

return M
