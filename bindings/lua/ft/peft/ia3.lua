-- ft.ia3: (IA)3 adapters (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better
-- and Cheaper than In-Context Learning"), with PEFT's semantics: learned vectors l, initialised
-- to ones so that a fresh adapter changes nothing, that rescale activations:
--   output scaling  y = base(x) * l     attention keys and values (l per output feature)
--   input scaling   y = base(x * l)     feed-forward modules: the MLP's inner activation
-- On a Conv2d, l holds one value per channel, broadcast over [N,C,H,W].
--
--   ft.ia3.attach(model)                           -- defaults for GPT-2, Llama, ViT, ResNet
--   ft.ia3.attach(model, {target = {"k_proj", "v_proj", "down_proj"}, feedforward = {"down_proj"}})
--
-- Options (the saved config; attach(model, config) recreates the adapter):
--   name         adapter name, default "default"
--   target       module names or Lua patterns (ft.adapters A.matches) to adapt
--   feedforward  the subset of target that gets input scaling (default: none)
--   fused_qkv    the subset of target whose output is [q | k | v] (GPT-2's c_attn): only the
--                k and v thirds are scaled, l has 2/3 of the output size
-- Each adapted module gets the child <module>.ia3_l (one vector per adapter name), e.g.
-- transformer.h.0.attn.c_attn.ia3_l.default, and an instance forward that applies the active
-- adapters (ft.peft.set_adapter / disable take effect at once).
local ft = require "ft"
local A = require "ft.peft.registry"
local nn = require "ft.nn"

local M = {}

local LLAMA = { target = { "k_proj", "v_proj", "down_proj" }, feedforward = { "down_proj" } }

-- Default targets by model type (config.model_type, or "resnet" for ResNets).
M.defaults = {
  llama = LLAMA, mistral = LLAMA, qwen2 = LLAMA,
  gpt2 = { target = { "c_attn", "mlp.c_proj" }, feedforward = { "mlp.c_proj" }, fused_qkv = { "c_attn" } },
  -- Only the MLP's output dense (layer.<i>.output.dense) takes the inner activation; the plain
  -- suffix "output.dense" would also hit attention.output.dense.
  vit = {
    target = { "attention.attention.key", "attention.attention.value", "layer%.%d+%.output%.dense$" },
    feedforward = { "layer%.%d+%.output%.dense$" },
  },
  resnet = { target = { "conv%d+$", "downsample%.0$" } },
}

local OPTIONS = { name = true, target = true, feedforward = true, fused_qkv = true }

local function model_type(model)
  if model.__name == "ResNet" then return "resnet" end
  local config = model.config
  return type(config) == "table" and config.model_type or nil
end

local function as_list(v, what)
  if v == nil then return {} end
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then
    error(("ft.ia3.attach: option %s must be a string or a list of strings, got %s"):format(what, type(v)), 3)
  end
  local out = {}
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      error(("ft.ia3.attach: option %s[%d] must be a string, got %s"):format(what, i, type(s)), 3)
    end
    out[i] = s
  end
  return out
end

-- The options with defaults filled in (JSON-able).
local function resolve(model, opts)
  if type(opts) ~= "table" then error("ft.ia3.attach: options must be a table, got " .. type(opts), 3) end
  for k in pairs(opts) do
    if not OPTIONS[k] then error(("ft.ia3.attach: unknown option '%s'"):format(tostring(k)), 3) end
  end
  local config = { name = opts.name or "default" }
  local defaults = {}
  if opts.target == nil then
    local kind = model_type(model)
    defaults = kind and M.defaults[kind]
    if not defaults then
      error(("ft.ia3.attach: no default target modules for %s%s; pass the option target"):format(
        model.__name, kind and (" (model_type '" .. kind .. "')") or ""), 3)
    end
  end
  config.target = as_list(opts.target or defaults.target, "target")
  config.feedforward = as_list(opts.feedforward or (opts.target == nil and defaults.feedforward) or nil, "feedforward")
  config.fused_qkv = as_list(opts.fused_qkv or (opts.target == nil and defaults.fused_qkv) or nil, "fused_qkv")
  if #config.target == 0 then error("ft.ia3.attach: option target is empty", 3) end
  return config
end

-- Input and output sizes of a module ia3 can adapt, and whether l goes on dim 2 (channels).
local function features(m)
  local class = m.__name
  if class == "Conv2d" then return m.in_channels, m.out_channels, true end
  if class == "Conv1D" then return m.nx, m.nf, false end   -- GPT-2's transposed linear
  if class == "Linear" or (m.in_features and m.out_features) then return m.in_features, m.out_features, false end
  return nil
end

-- The scaling an adapter contributes, shaped to broadcast against the input or output.
local function scaling(st, l)
  if st.fused then
    local ones = st.ones
    if not ones then
      ones = ft.ones(st.out // 3)
      rawset(st, "ones", ones)
    end
    return ft.cat({ ones, l }, 1)
  end
  if st.channels then return l:view(1, l:numel(), 1, 1) end
  return l
end

local function ia3_forward(self, x, ...)
  local st = rawget(self, "_ia3")
  if not st then   -- every adapter was removed while another wrapper still calls this one
    return getmetatable(self).__index(self, "forward")(self, x, ...)
  end
  local vectors = self._modules.ia3_l
  local x_scale, y_scale
  for _, name in ipairs(st.order) do
    if A.is_active(st.reg, name) then
      local s = scaling(st, vectors._parameters[name])
      if st.input[name] then
        x_scale = x_scale and x_scale * s or s
      else
        y_scale = y_scale and y_scale * s or s
      end
    end
  end
  if x_scale then x = x * x_scale end
  local y = st.base(self, x, ...)
  if y_scale then y = y * y_scale end
  return y
end

-- Holds one vector per adapter name (PEFT's ia3_l ParameterDict).
local Vectors = nn.Module:extend("ParameterDict")

function Vectors:extra_repr()
  local lines = {}
  for _, name in ipairs(self._parameter_names) do
    local p = self._parameters[name]
    lines[#lines + 1] = ("(%s): Parameter containing: [float32 of size %s]"):format(name,
      table.concat(p:shape(), "x"))
  end
  return table.concat(lines, "\n")
end

--- attach(model, opts) -> name. See the top of this file for the options.
function M.attach(model, opts)
  local config = resolve(model, opts or {})
  local name = config.name
  local modules = A.find_modules(model, config.target)
  if #modules == 0 then
    error(("ft.ia3.attach: target %s matches no module of %s"):format(ft.json.encode(config.target),
      model.__name), 2)
  end
  local targeted = {}
  for _, e in ipairs(modules) do targeted[e[1]] = true end
  for _, list in ipairs({ "feedforward", "fused_qkv" }) do
    for _, e in ipairs(A.find_modules(model, config[list])) do
      if not targeted[e[1]] then
        error(("ft.ia3.attach: %s module %s is not among the target modules (%s must be a subset of target)")
          :format(list, e[1], list), 2)
      end
    end
  end

  -- Check every module before changing anything.
  local plan = {}
  for i, e in ipairs(modules) do
    local path, m = e[1], e[2]
    local n_in, n_out, channels = features(m)
    if not n_in then
      error(("ft.ia3.attach: module %s is a %s; (IA)3 adapts Linear, Conv1D and Conv2d layers"):format(path,
        m.__name), 2)
    end
    local input = A.matches(path, config.feedforward)
    local fused = A.matches(path, config.fused_qkv)
    if input and fused then
      error(("ft.ia3.attach: module %s cannot be both feedforward and fused_qkv"):format(path), 2)
    end
    if fused and n_out % 3 ~= 0 then
      error(("ft.ia3.attach: fused_qkv module %s has %d outputs, not a multiple of 3"):format(path, n_out), 2)
    end
    local st = rawget(m, "_ia3")
    if st and (st.fused ~= fused or st.channels ~= channels) then
      error(("ft.ia3.attach: module %s is adapted by another ia3 adapter with a different fused_qkv setting")
        :format(path), 2)
    end
    local size = input and n_in or fused and (2 * n_out // 3) or n_out
    plan[i] = { m = m, input = input, fused = fused, channels = channels and not fused, size = size, out = n_out }
  end

  local reg = A.add(model, name, "ia3", config)
  -- As PEFT: the base model is frozen; only the new vectors train.
  for _, p in ipairs(model:parameters()) do p.requires_grad = false end
  for _, e in ipairs(plan) do
    local m = e.m
    local st = rawget(m, "_ia3")
    if not st then
      st = { reg = reg, order = {}, input = {}, fused = e.fused, channels = e.channels, out = e.out,
        previous = rawget(m, "forward") }
      st.base = m.forward
      rawset(m, "_ia3", st)
      m.ia3_l = Vectors()
      rawset(m, "forward", ia3_forward)
    end
    st.order[#st.order + 1] = name
    st.input[name] = e.input
    m.ia3_l:register_parameter(name, ft.ones(e.size))
  end
  return name
end

-- Modules carrying adapter name, as {path, module}.
local function adapted(model, name)
  local out = {}
  for path, m in model:named_modules() do
    local st = rawget(m, "_ia3")
    if st and st.input[name] ~= nil then out[#out + 1] = { path, m } end
  end
  return out
end

--- The adapter's vectors keyed as in model:state_dict() (detached aliases).
function M.state_dict(model, name)
  A.get(model, name)
  local out = {}
  for _, e in ipairs(adapted(model, name)) do
    out[e[1] .. ".ia3_l." .. name] = e[2].ia3_l._parameters[name]:detach()
  end
  return out
end

--- Takes adapter name's vectors off the model; a module left without any gets its plain forward back.
function M.remove(model, name)
  A.get(model, name)
  for _, e in ipairs(adapted(model, name)) do
    local m = e[2]
    local st = rawget(m, "_ia3")
    m.ia3_l:register_parameter(name, nil)
    st.input[name] = nil
    for i, n in ipairs(st.order) do
      if n == name then table.remove(st.order, i); break end
    end
    if #st.order == 0 then
      m.ia3_l = nil
      if rawget(m, "forward") == ia3_forward then rawset(m, "forward", st.previous) end
      rawset(m, "_ia3", nil)
    end
  end
end

--- Folds adapter name into the base weights (Linear, Conv1D and Conv2d; fused thirds too) and
-- removes it, as PEFT's merge_and_unload: the model then computes the same without the vectors.
function M.merge_and_unload(model, name)
  name = name or "default"
  A.get(model, name)
  ft.no_grad(function()
    for _, e in ipairs(adapted(model, name)) do
      local m = e[2]
      local st = rawget(m, "_ia3")
      local l = m.ia3_l._parameters[name]
      local s = st.fused and ft.cat({ ft.ones(st.out // 3), l }, 1) or l
      local class = m.__name
      if st.input[name] then
        -- base(x * l): scale the weight's input dimension.
        local w = class == "Conv2d" and s:view(1, -1, 1, 1) or class == "Conv1D" and s:view(-1, 1) or s:view(1, -1)
        m.weight:copy_(m.weight * w)
      else
        local w = class == "Conv2d" and s:view(-1, 1, 1, 1) or class == "Conv1D" and s:view(1, -1) or s:view(-1, 1)
        m.weight:copy_(m.weight * w)
        if m.bias then m.bias:copy_(m.bias * s) end
      end
    end
  end)
  M.remove(model, name)
  A.remove(model, name)
  return model
end

return M
