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
-- else its float32 rounding followed by the correction terms (ft.optim.numbers).
--
-- The room: ft.optim.numbers (numbers in state dicts), ft.optim.lr_scheduler (schedules,
-- also ft.optim.lr_scheduler), ft.optim.zero (ZeroRedundancy: state sharded over the ranks).
local ft = require "ft"
local C = ft._optim

local M = {}
local numbers = require "ft.optim.numbers"
local number_to_tensor, tensor_to_number = numbers.number_to_tensor, numbers.tensor_to_number
local tensor_to_integer = numbers.tensor_to_integer

M.number_to_tensor = number_to_tensor
M.tensor_to_number = tensor_to_number

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

local same_shape = require("ft.tables").same_shape

-- ---- Optimizer: param groups, state, state dicts ------------------------------------

--- ft.optim.Optimizer: what SGD, Adam and AdamW share: param_groups (each group's options,
-- read at every step, so schedules just write group.lr), per-parameter state, step,
-- zero_grad and state dicts.
local Optimizer = {}
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

local function copy_value(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = x end
  return c
end

--- ft.optim.new_optimizer(class, params, options) -> an optimizer of class (M.SGDClass ...):
-- params is an array of tensors or of param groups ({params = {...}, lr = ..., ...}); options
-- override the class defaults (an unknown option is an error).
function M.new_optimizer(class, params, options)
  local name = class.name
  if type(params) ~= "table" or C.is_tensor(params) then
    error(string.format("ft.optim.%s: params must be an array of tensors or of param groups, got %s",
                        name, C.is_tensor(params) and "a tensor" or type(params)), 3)
  end
  if options ~= nil and type(options) ~= "table" then
    error(string.format("ft.optim.%s: options must be a table, got %s", name, type(options)), 3)
  end
  local valid = {}
  for k in pairs(class.defaults) do valid[#valid + 1] = k end
  if class.lr_required then valid[#valid + 1] = "lr" end
  ft.check_options("ft.optim." .. name, options, valid)
  local defaults = {}
  for k, v in pairs(class.defaults) do defaults[k] = copy_value(v) end
  for k, v in pairs(options or {}) do defaults[k] = copy_value(v) end
  local self = setmetatable({defaults = defaults, param_groups = {}, state = {}, _ids = {}}, class)
  if #params == 0 then error(string.format("ft.optim.%s: got an empty parameter list", name), 3) end
  if type(params[1]) == "table" and not C.is_tensor(params[1]) then
    for g = 1, #params do self:_add_group(params[g], g, 4) end
  else
    self:_add_group({params = params}, nil, 4)
  end
  return self
end

--- opt:add_param_group(group): adds {params = {...}, <options>}; options not given take the
-- optimizer's defaults.
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

--- opt:step([closure]) runs closure (if given, e.g. to recompute the loss), one update, then
-- the parameters' constraints (ft.optim.constrain); returns the closure's result. Each
-- group's options are read now, so schedules just write group.lr.
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

--- opt:zero_grad([set_to_none = true]) drops every gradient (set_to_none, as torch) or fills
-- them with zeros. Takes a boolean or {set_to_none = bool}.
function Optimizer:zero_grad(set_to_none)
  local where = "ft.optim." .. self.name .. ":zero_grad"
  if type(set_to_none) == "table" then
    set_to_none = ft.check_options(where, set_to_none, {"set_to_none"}).set_to_none
  end
  set_to_none = ft.check.boolean(where, "set_to_none", set_to_none, true)
  for _, group in ipairs(self.param_groups) do C.zero_grad(group.params, set_to_none) end
end

--- opt:state_dict() -> a flat name -> tensor table (see the top of this file). State tensors
-- are the live buffers, as in torch: save them (ft.save) or copy them before stepping on.
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

--- optim.read_state_dict(param_groups, sd) -> options, states, params: a state dict made by
-- state_dict() (possibly through ft.save / ft.load) read and checked against param_groups (the
-- same groups with the same numbers and shapes of parameters): options[g] holds group g's
-- options (and num_params), states[i] the state of the i-th parameter in group order, params
-- those parameters. A mismatch raises a message naming it (without a position), so that a
-- caller can prefix its own name; nothing is changed.
function M.read_state_dict(param_groups, sd)
  local params, group_of = {}, {}
  for g, group in ipairs(param_groups) do
    for _, p in ipairs(group.params) do
      params[#params + 1] = p
      group_of[#params] = g
    end
  end
  local options, states = {}, {}
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
  if n_groups ~= #param_groups then
    error(string.format("the state dict has %d param groups but the optimizer has %d",
                        n_groups, #param_groups), 0)
  end
  for g, group in ipairs(param_groups) do
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
  return options, states, params
end

--- optim.set_group_options(param_groups, options): each group's options from read_state_dict's
-- options (booleans stored as numbers become booleans again).
function M.set_group_options(param_groups, options)
  for g, group in ipairs(param_groups) do
    for k, v in pairs(options[g]) do
      if k ~= "num_params" then
        if type(group[k]) == "boolean" then v = v ~= 0 end
        group[k] = v
      end
    end
  end
end

--- opt:load_state_dict(sd) restores a state dict made by state_dict() (possibly through
-- ft.save / ft.load). The optimizer must have the same groups with the same numbers and
-- shapes of parameters; otherwise an error names the mismatch and nothing is changed.
function Optimizer:load_state_dict(sd)
  local name = "ft.optim." .. self.name .. ".load_state_dict"
  if type(sd) ~= "table" then error(name .. ": expected a table, got " .. type(sd), 2) end
  local ok, options, states, params = pcall(M.read_state_dict, self.param_groups, sd)
  if not ok then error(name .. ": " .. tostring(options), 2) end
  M.set_group_options(self.param_groups, options)
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

-- Declares an optimizer class (ft.optim.<name> below builds its instances).
local function optimizer_class(name, defaults, check_group, update, lr_required)
  local class = setmetatable({
    name = name, defaults = defaults, lr_required = lr_required,
    _check_group = check_group, _update = update,
  }, {__index = Optimizer})
  class.__index = class
  class.__tostring = Optimizer.__tostring
  return class
end

local function check_nonneg(group, keys)
  for _, k in ipairs(keys) do
    local v = group[k]
    if type(v) ~= "number" then return string.format("%s must be a number, got %s", k, type(v)) end
    if not (v >= 0) or v == math.huge then return string.format("invalid %s %s (must be >= 0 and finite)", k, v) end
  end
  for _, k in ipairs({"nesterov", "amsgrad", "maximize"}) do
    local v = group[k]
    if v ~= nil and type(v) ~= "boolean" then
      return string.format("%s must be true or false, got %s", k, tostring(v))
    end
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

--- ft.optim.SGDClass: the class of ft.optim.SGD's optimizers (for new_optimizer and isinstance checks).
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

--- ft.optim.AdamClass: the class of ft.optim.Adam's optimizers.
M.AdamClass = optimizer_class("Adam",
  {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false, maximize = false},
  check_adam_group,
  function(group, states) C.adam_step(group.params, states, group, false) end)

--- ft.optim.AdamWClass: the class of ft.optim.AdamW's optimizers.
M.AdamWClass = optimizer_class("AdamW",
  {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false},
  check_adam_group,
  function(group, states) C.adam_step(group.params, states, group, true) end)

--- ft.optim.SGD(params, {lr=, momentum=0, dampening=0, nesterov=false, weight_decay=0,
-- maximize=false}): SGD with momentum, dampening, Nesterov momentum and weight decay
-- (torch.optim.SGD). params: an array of tensors or of param groups {params =, lr =, ...}.
function M.SGD(params, options) return M.new_optimizer(M.SGDClass, params, options) end

--- ft.optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, amsgrad=false,
-- maximize=false}): Adam (torch.optim.Adam); weight_decay is an L2 term added to the gradient.
function M.Adam(params, options) return M.new_optimizer(M.AdamClass, params, options) end

--- ft.optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2,
-- amsgrad=false, maximize=false}): AdamW (torch.optim.AdamW), decoupled weight decay
-- p = p * (1 - lr * weight_decay).
function M.AdamW(params, options) return M.new_optimizer(M.AdamWClass, params, options) end

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
  ft.check.number("ft.optim.clip_grad_norm", "max_norm", max_norm, nil, {min = 0})
  if norm_type ~= "inf" and norm_type ~= math.huge then
    ft.check.number("ft.optim.clip_grad_norm", "norm_type", norm_type, nil, {above = 0})
  end
  return C.clip_grad_norm(params, max_norm, norm_type or 2)
end
M.lr_scheduler = require "ft.optim.lr_scheduler"
--- ft.optim.ZeroRedundancy(params, optimizer, options) -> opt: optimizer state sharded over the
-- ranks (ZeRO-1; ft.optim.zero).
M.ZeroRedundancy = require "ft.optim.zero"

return M
