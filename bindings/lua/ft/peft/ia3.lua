-- ft.peft.ia3: (IA)3 adapters (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better
-- and Cheaper than In-Context Learning"), with PEFT's semantics: learned vectors l, initialised
-- to ones so that a fresh adapter changes nothing, that rescale activations:
--   output scaling  y = base(x) * l     attention keys and values (l per output feature)
--   input scaling   y = base(x * l)     feed-forward modules: the MLP's inner activation
-- On a Conv2d, l holds one value per channel, broadcast over [N,C,H,W].
--
--   ft.peft.ia3(model)                             -- defaults for GPT-2, Llama, ViT, ResNet
--   ft.peft.ia3(model, {target = {"k_proj", "v_proj", "down_proj"}, feedforward = {"down_proj"}})
--
-- Options (the saved config; attach(model, config) recreates the adapter):
--   name         adapter name, default "default"
--   target       module names or Lua patterns (ft.peft.registry matches) to adapt
--   feedforward  the subset of target that gets input scaling (default: none)
--   fused_qkv    the subset of target whose output is [q | k | v] (GPT-2's c_attn): only the
--                k and v thirds are scaled, l has 2/3 of the output size
-- Each adapted module gets the child <module>.ia3_l (one vector per adapter name), e.g.
-- transformer.h.0.attn.c_attn.ia3_l.default, and joins the module's forward chain
-- (ft.peft.registry): ft.peft.set_adapter / disable take effect at once. On a layer that also
-- carries LoRA adapters, the vector scales the layer's input or output with the LoRA deltas.
-- merge folds a vector into the weights (and bias, for output scaling), unmerge divides it out
-- again; merge_and_unload folds and removes.
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

--- The options of attach (ft.peft.ia3).
M.options = { "name", "target", "feedforward", "fused_qkv" }
local WHERE = "ft.peft.ia3"

local function model_type(model)
  if model.__name == "ResNet" then return "resnet" end
  local config = model.config
  return type(config) == "table" and config.model_type or nil
end

local function as_list(v, what)
  if v == nil then return {} end
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then
    error(("ft.peft.ia3: option %s must be a string or a list of strings, got %s"):format(what, type(v)), 3)
  end
  local out = {}
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      error(("ft.peft.ia3: option %s[%d] must be a string, got %s"):format(what, i, type(s)), 3)
    end
    out[i] = s
  end
  return out
end

-- The options with defaults filled in (JSON-able).
local function resolve(model, opts)
  if type(opts) ~= "table" then error("ft.peft.ia3: options must be a table, got " .. type(opts), 3) end
  ft.check_options(WHERE, opts, M.options)
  local config = { name = opts.name or "default" }
  local defaults = {}
  if opts.target == nil then
    local kind = model_type(model)
    defaults = kind and M.defaults[kind]
    if not defaults then
      error(("ft.peft.ia3: no default target modules for %s%s; pass the option target"):format(
        model.__name, kind and (" (model_type '" .. kind .. "')") or ""), 3)
    end
  end
  config.target = as_list(opts.target or defaults.target, "target")
  config.feedforward = as_list(opts.feedforward or (opts.target == nil and defaults.feedforward) or nil, "feedforward")
  config.fused_qkv = as_list(opts.fused_qkv or (opts.target == nil and defaults.fused_qkv) or nil, "fused_qkv")
  if #config.target == 0 then error("ft.peft.ia3: option target is empty", 3) end
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
      st.ones = ones
    end
    return ft.cat({ ones, l }, 1)
  end
  if st.channels then return l:view(1, l:numel(), 1, 1) end
  return l
end

--- M.forward(m, name, inner, x, ...): adapter name's link in m's forward chain: inner (the
-- layer, with any LoRA deltas) on x * l (feed-forward modules) or inner(x) * l; nothing while
-- the vector is merged into the weights.
function M.forward(m, name, inner, x, ...)
  local st = rawget(m, "_ia3")
  if st.merged[name] then return inner(x, ...) end
  local s = scaling(st, m.ia3_l._parameters[name])
  if st.input[name] then return inner(x * s, ...) end
  return inner(x, ...) * s
end

-- Holds one vector per adapter name (PEFT's ia3_l ParameterDict).
local Vectors = nn.Module:extend("ParameterDict")

--- One line per vector: its adapter name and size.
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
    error(("ft.peft.ia3: target %s matches no module of %s"):format(ft.json.encode(config.target),
      model.__name), 2)
  end
  local targeted = {}
  for _, e in ipairs(modules) do targeted[e[1]] = true end
  for _, list in ipairs({ "feedforward", "fused_qkv" }) do
    for _, e in ipairs(A.find_modules(model, config[list])) do
      if not targeted[e[1]] then
        error(("ft.peft.ia3: %s module %s is not among the target modules (%s must be a subset of target)")
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
      error(("ft.peft.ia3: module %s is a %s; (IA)3 adapts Linear, Conv1D and Conv2d layers"):format(path,
        m.__name), 2)
    end
    local input = A.matches(path, config.feedforward)
    local fused = A.matches(path, config.fused_qkv)
    if input and fused then
      error(("ft.peft.ia3: module %s cannot be both feedforward and fused_qkv"):format(path), 2)
    end
    if fused and n_out % 3 ~= 0 then
      error(("ft.peft.ia3: fused_qkv module %s has %d outputs, not a multiple of 3"):format(path, n_out), 2)
    end
    local st = rawget(m, "_ia3")
    if st and (st.fused ~= fused or st.channels ~= channels) then
      error(("ft.peft.ia3: module %s is adapted by another ia3 adapter with a different fused_qkv setting")
        :format(path), 2)
    end
    local size = input and n_in or fused and (2 * n_out // 3) or n_out
    plan[i] = { m = m, input = input, fused = fused, channels = channels and not fused, size = size, out = n_out }
  end

  -- As PEFT: the base model is frozen; the new vectors train.
  A.freeze_base(model)
  A.add(model, name, "ia3", config, WHERE)
  for _, e in ipairs(plan) do
    local m = e.m
    local st = rawget(m, "_ia3")
    if not st then
      -- per layer: which adapters scale the input, which are merged, and the layer's layout
      st = { input = {}, merged = {}, fused = e.fused, channels = e.channels, out = e.out }
      rawset(m, "_ia3", st)
      m.ia3_l = Vectors()
    end
    st.input[name] = e.input
    m.ia3_l:register_parameter(name, ft.ones(e.size))
    A.join(model, m, name)
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
  A.get(model, name, WHERE)
  local out = {}
  for _, e in ipairs(adapted(model, name)) do
    out[e[1] .. ".ia3_l." .. name] = e[2].ia3_l._parameters[name]:detach()
  end
  return out
end

-- The full-size scaling of adapter name on layer m, and the shapes that apply it to the weight
-- and bias: output scaling multiplies the weight's output units and the bias, input scaling
-- the weight's input units.
local function weight_factor(m, st, name)
  local l = m.ia3_l._parameters[name]:detach()
  local s = st.fused and ft.cat({ ft.ones(st.out // 3), l }, 1) or l
  local class = m.__name
  if st.input[name] then
    return class == "Conv2d" and s:view(1, -1, 1, 1) or class == "Conv1D" and s:view(-1, 1) or s:view(1, -1), nil
  end
  return class == "Conv2d" and s:view(-1, 1, 1, 1) or class == "Conv1D" and s:view(1, -1) or s:view(-1, 1), s
end

-- Folds adapter name into layer m (divide = true: takes it out again).
local function fold(m, st, name, divide)
  local w, b = weight_factor(m, st, name)
  ft.no_grad(function()
    if divide then
      m.weight:copy_(m.weight / w)
      if b and m.bias then m.bias:copy_(m.bias / b) end
    else
      m.weight:copy_(m.weight * w)
      if b and m.bias then m.bias:copy_(m.bias * b) end
    end
  end)
end

-- A vector on a layer with LoRA adapters also scales their deltas, so it cannot be folded into
-- the weight alone: the error names the layer and the LoRA adapter.
local function check_foldable(model, path, m, name, where)
  for _, other in ipairs(A.chain(m)) do
    local entry = A.registry(model).adapters[other]
    if entry and entry.kind ~= "ia3" then
      error(("%s: cannot merge (IA)3 adapter '%s' into %s: its vector also scales %s adapter '%s' there; "
        .. "merge_and_unload the model (which folds both), or delete one of them first"):format(where, name, path,
        entry.kind, other), 0)
    end
  end
end

--- M.check_merge(model, names, opts): raises the error a merge of names would raise (a layer
-- shared with another kind; with opts.safe, a NaN or Inf vector), changing nothing.
function M.check_merge(model, names, opts, where)
  where = where or "ft.peft.merge"
  for _, name in ipairs(names) do
    A.get(model, name, where)
    for _, e in ipairs(adapted(model, name)) do
      local path, m = e[1], e[2]
      if not rawget(m, "_ia3").merged[name] then
        check_foldable(model, path, m, name, where)
        local l = m.ia3_l._parameters[name]:detach()
        if l:eq(0):sum():item() > 0 then
          error(("%s: (IA)3 adapter '%s' has a zero in its vector on %s: the merge could not be undone "
            .. "(merge_and_unload folds it for good)"):format(where, name, path), 0)
        end
      end
    end
  end
  if opts and opts.safe then M.check_finite(model, names, where) end
end

--- M.check_finite(model, names, where): an error naming the first adapter of names whose vector
-- holds NaN or Inf.
function M.check_finite(model, names, where)
  for _, name in ipairs(names) do
    for _, e in ipairs(adapted(model, name)) do
      local l = e[2].ia3_l._parameters[name]:detach()
      if (l - l):ne(0):sum():item() > 0 then
        error(("%s: merging adapter '%s' into %s gives NaN or Inf weights; no weight was changed"):format(where,
          name, e[1]), 0)
      end
    end
  end
end

--- M.merge_adapters(model, names [, opts]): folds the vectors of adapters names into the weights;
-- forward then skips them. Errors (see check_merge) leave every weight as it was. Returns model.
function M.merge_adapters(model, names, opts)
  if type(names) == "string" then names = { names } end
  M.check_merge(model, names, opts)
  for _, name in ipairs(names) do
    for _, e in ipairs(adapted(model, name)) do
      local st = rawget(e[2], "_ia3")
      if not st.merged[name] then
        fold(e[2], st, name, false)
        st.merged[name] = true
      end
    end
  end
  return model
end

--- M.unmerge(model [, names]): divides the merged vectors names (default: all) out of the weights.
function M.unmerge(model, names)
  if type(names) == "string" then names = { names } end
  local set
  if names then
    set = {}
    for _, n in ipairs(names) do set[n] = true end
  end
  for _, m in ipairs(model:modules()) do
    local st = rawget(m, "_ia3")
    if st then
      for n in pairs(st.merged) do
        if not set or set[n] then
          fold(m, st, n, true)
          st.merged[n] = nil
        end
      end
    end
  end
  return model
end

--- Names of the adapters merged into layer m.
function M.merged_on(m)
  local st = rawget(m, "_ia3")
  local out = {}
  if st then
    for n in pairs(st.merged) do out[#out + 1] = n end
    table.sort(out)
  end
  return out
end

--- Names of the (IA)3 adapters merged into some layer of model.
function M.merged(model)
  local seen, out = {}, {}
  for _, m in ipairs(model:modules()) do
    for _, n in ipairs(M.merged_on(m)) do
      if not seen[n] then seen[n] = true; out[#out + 1] = n end
    end
  end
  return out
end

--- Takes adapter name's vectors off the model (a merged one is divided out first); a module
-- left without any leaves its forward chain for good.
function M.remove(model, name)
  A.get(model, name, WHERE)
  for _, e in ipairs(adapted(model, name)) do
    local m = e[2]
    local st = rawget(m, "_ia3")
    if st.merged[name] then
      fold(m, st, name, true)
      st.merged[name] = nil
    end
    m.ia3_l:register_parameter(name, nil)
    st.input[name] = nil
    A.leave(m, name)
    if next(st.input) == nil then
      m.ia3_l = nil
      rawset(m, "_ia3", nil)
    end
  end
end

--- Folds adapter name into the base weights (Linear, Conv1D and Conv2d; fused thirds too) and
-- removes it, as PEFT's merge_and_unload: the model then computes the same without the vectors.
-- A layer shared with a LoRA adapter is an error (ft.peft.merge_and_unload folds both).
function M.merge_and_unload(model, name)
  name = name or "default"
  A.get(model, name, "ft.peft.merge_and_unload")
  for _, e in ipairs(adapted(model, name)) do
    check_foldable(model, e[1], e[2], name, "ft.peft.merge_and_unload")
  end
  for _, e in ipairs(adapted(model, name)) do
    local st = rawget(e[2], "_ia3")
    if not st.merged[name] then fold(e[2], st, name, false) end
    st.merged[name] = nil   -- folded for good: remove must not divide it out
  end
  M.remove(model, name)
  A.remove(model, name)
  return model
end

return M
