--- ft.wise: WiSE-FT weight-space ensembling (Wortsman et al., "Robust fine-tuning of
-- zero-shot models"): theta = (1 - alpha) * theta0 + alpha * theta1.
--
--   local sd = ft.wise(zero_shot:state_dict(), finetuned:state_dict(), 0.5)
--   model:load_state_dict(sd)
--   -- keep the new head as trained, interpolate the backbone only:
--   local sd = ft.wise(sd0, sd1, 0.5, {exclude = {"^fc%."}})
--   -- evaluate a range of mixing coefficients:
--   local rows = ft.wise.sweep(sd0, sd1, {0, 0.25, 0.5, 0.75, 1}, function(m, alpha)
--     return {accuracy = accuracy_of(m)}
--   end, {model = model})
--
-- Every key is interpolated, buffers included (BatchNorm running statistics). Integer
-- buffers (num_batches_tracked) are counters, not weights: they come from theta1. At
-- alpha = 0 and alpha = 1 the result is a copy of that endpoint, bit for bit. Results are
-- new tensors: they never share storage with the inputs.
local ft = require "ft"

local wise = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function is_module(v)
  return type(v) == "table" and type(v.state_dict) == "function" and type(v.load_state_dict) == "function"
end

-- A state dict from a state dict or a module; `which` names the argument in errors.
local function as_state_dict(v, which)
  if is_module(v) then return (v:state_dict()) end
  if type(v) ~= "table" then
    error(("ft.wise: %s must be a state dict (name -> tensor) or a module, got %s"):format(which, type(v)), 3)
  end
  for k, t in pairs(v) do
    if not ft.is_tensor(t) then
      error(("ft.wise: %s['%s'] is a %s, not a tensor"):format(which, tostring(k), type(t)), 3)
    end
  end
  return v
end

local sorted_keys = require("ft.tables").sorted_keys
local clone_state_dict = require("ft.state_dict").clone

local function list_str(keys, max)
  max = max or 10
  local shown = {}
  for i = 1, math.min(#keys, max) do shown[i] = "'" .. keys[i] .. "'" end
  local s = table.concat(shown, ", ")
  if #keys > max then s = s .. (", ... (%d in all)"):format(#keys) end
  return s
end

-- The same keys, and the same shape and kind of dtype for each key.
local function check_compatible(sd0, sd1)
  local only0, only1 = {}, {}
  for _, k in ipairs(sorted_keys(sd0)) do
    if sd1[k] == nil then only0[#only0 + 1] = k end
  end
  for _, k in ipairs(sorted_keys(sd1)) do
    if sd0[k] == nil then only1[#only1 + 1] = k end
  end
  if #only0 > 0 or #only1 > 0 then
    local parts = {}
    if #only0 > 0 then parts[#parts + 1] = "only in sd0: " .. list_str(only0) end
    if #only1 > 0 then parts[#parts + 1] = "only in sd1: " .. list_str(only1) end
    error("ft.wise: the state dicts have different keys; " .. table.concat(parts, "; "), 3)
  end
  for _, k in ipairs(sorted_keys(sd0)) do
    local a, b = sd0[k], sd1[k]
    if shape_str(a) ~= shape_str(b) then
      error(("ft.wise: '%s' has shape %s in sd0 but %s in sd1"):format(k, shape_str(a), shape_str(b)), 3)
    end
    if a:dtype() ~= b:dtype() then
      error(("ft.wise: '%s' is %s in sd0 but %s in sd1"):format(k, a:dtype(), b:dtype()), 3)
    end
  end
end

-- selected(key) -> true when the key is interpolated. opts.keys: an array of keys or a
-- predicate; opts.exclude: a Lua pattern or an array of them (matched anywhere in the key).
local function selector(opts, sd)
  local keys, exclude = opts.keys, opts.exclude
  local include
  if keys == nil then
    include = function() return true end
  elseif type(keys) == "function" then
    include = keys
  elseif type(keys) == "table" then
    local set, unknown = {}, {}
    for _, k in ipairs(keys) do
      if sd[k] == nil then unknown[#unknown + 1] = tostring(k) end
      set[k] = true
    end
    if #unknown > 0 then
      error("ft.wise: keys names entries the state dicts do not have: " .. list_str(unknown), 3)
    end
    include = function(k) return set[k] == true end
  else
    error("ft.wise: option keys must be an array of keys or a function(key) -> boolean, got " .. type(keys), 3)
  end
  if type(exclude) == "string" then exclude = {exclude} end
  if exclude ~= nil and type(exclude) ~= "table" then
    error("ft.wise: option exclude must be a Lua pattern or an array of patterns, got " .. type(exclude), 3)
  end
  return function(k)
    for _, pattern in ipairs(exclude or {}) do
      if k:find(pattern) then return false end
    end
    return include(k) and true or false
  end
end

local function check_alpha(alpha)
  if type(alpha) ~= "number" or alpha ~= alpha or math.abs(alpha) == math.huge then
    error("ft.wise: alpha must be a finite number, got " .. tostring(alpha), 3)
  end
end

local function interpolate(sd0, sd1, alpha, opts)
  opts = ft.check_options("ft.wise", opts, {"keys", "exclude"})
  check_alpha(alpha)
  sd0, sd1 = as_state_dict(sd0, "sd0"), as_state_dict(sd1, "sd1")
  check_compatible(sd0, sd1)
  local selected = selector(opts, sd0)
  local out = {}
  ft.no_grad(function()
    for k, a in pairs(sd0) do
      local b = sd1[k]
      if not selected(k) then
        out[k] = b:detach():clone()
      elseif alpha == 0 then
        out[k] = a:detach():clone()
      elseif alpha == 1 or a:dtype() ~= "float32" then
        out[k] = b:detach():clone()
      else
        out[k] = a:detach() * (1 - alpha) + b:detach() * alpha
      end
    end
  end)
  return out
end

--- ft.wise(sd0, sd1, alpha [, {keys = array | function(key) -> bool, exclude = pattern(s)}])
-- -> a new state dict. sd0 and sd1 are state dicts or modules with the same keys and
-- shapes. Keys left out by keys/exclude are copied from sd1 (the fine-tuned endpoint).
function wise.interpolate(sd0, sd1, alpha, opts)
  return interpolate(sd0, sd1, alpha, opts)
end

--- ft.wise.sweep(sd0, sd1, alphas, evaluate_fn [, {model = m, keys =, exclude =}])
-- -> array of {alpha = a, <metrics>}, one per alpha in order. With a model, each
-- interpolated state dict is loaded into it and evaluate_fn(model, alpha) is called; the
-- model's own weights are put back afterwards (also when evaluate_fn raises an error).
-- Without one, evaluate_fn(state_dict, alpha). evaluate_fn returns a table of metrics or
-- a number (stored as value).
-- sd0 and sd1 may be the model's own live state dict (model:state_dict() aliases its
-- weights): with a model, the sweep interpolates from copies of both taken at the start, so
-- loading one alpha never changes the endpoints of the next.
function wise.sweep(sd0, sd1, alphas, evaluate_fn, opts)
  opts = ft.check_options("ft.wise.sweep", opts, {"model", "keys", "exclude"})
  if type(alphas) ~= "table" or #alphas == 0 then
    error("ft.wise.sweep: alphas must be a non-empty array of numbers", 2)
  end
  for i, alpha in ipairs(alphas) do
    if type(alpha) ~= "number" or alpha ~= alpha or math.abs(alpha) == math.huge then
      error(("ft.wise.sweep: alphas[%d] must be a finite number, got %s"):format(i, ft.check.show(alpha)), 2)
    end
  end
  if type(evaluate_fn) ~= "function" then
    error("ft.wise.sweep: evaluate_fn must be a function(model_or_state_dict, alpha), got " .. type(evaluate_fn), 2)
  end
  local model = opts.model
  if model ~= nil and not is_module(model) then
    error("ft.wise.sweep: option model must be a module, got " .. type(model), 2)
  end
  sd0, sd1 = as_state_dict(sd0, "sd0"), as_state_dict(sd1, "sd1")
  local original
  if model then
    -- Loading into the model writes its live tensors, which sd0 or sd1 may be: copy first.
    check_compatible(sd0, sd1)
    original = ft.no_grad(function() return clone_state_dict((model:state_dict()), "ft.wise.sweep") end)
    sd0 = ft.no_grad(function() return clone_state_dict(sd0, "ft.wise.sweep") end)
    sd1 = ft.no_grad(function() return clone_state_dict(sd1, "ft.wise.sweep") end)
  end

  local results = {}
  local ok, err = pcall(function()
    for i, alpha in ipairs(alphas) do
      local sd = interpolate(sd0, sd1, alpha, {keys = opts.keys, exclude = opts.exclude})
      local metrics
      if model then
        model:load_state_dict(sd)
        metrics = evaluate_fn(model, alpha)
      else
        metrics = evaluate_fn(sd, alpha)
      end
      local row = {alpha = alpha}
      if type(metrics) == "number" then
        row.value = metrics
      elseif type(metrics) == "table" then
        for k, v in pairs(metrics) do
          if k ~= "alpha" then row[k] = v end
        end
      elseif metrics ~= nil then
        error(("ft.wise.sweep: evaluate_fn returned a %s for alpha %s; expected a table of metrics or a number")
              :format(type(metrics), tostring(alpha)), 0)
      end
      results[i] = row
    end
  end)
  if model then model:load_state_dict(original) end
  if not ok then error(err, 0) end
  return results
end

return setmetatable(wise, {
  __call = function(_, sd0, sd1, alpha, opts) return interpolate(sd0, sd1, alpha, opts) end,
})
