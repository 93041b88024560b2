-- ft.peft.lora: LoRA and DoRA adapters with HuggingFace PEFT's semantics (LoraLayer), so
-- adapters trained by PEFT load and compute the same numbers (see ft.peft.format for PEFT's files).
-- One adapter kind of ft.peft.registry; users reach it as ft.peft.lora(model, opts).
--
--   local lora = require "ft.peft.lora"
--   lora.attach(model, {target = {"c_attn", "c_proj"}, r = 8, alpha = 16, dropout = 0.05})
--   ... train (only the adapter's tensors require grad) ...
--   lora.merge(model)            -- W += scale * B A in every adapted layer; lora.unmerge undoes it
--   lora.merge_and_unload(model) -- merged, adapter layers removed: a plain model again
--
-- Functions: attach(model, opts) -> name; forward (its link in a module's forward chain);
-- state_dict(model, name); remove(model, name); merge(model, {names =, safe =});
-- safe_merge(model, opts); unmerge(model [, names]); merged(model); merge_and_unload(model, opts);
-- unload(model); merged_adapters(model); layers(model, name).
-- Switching adapters on and off is ft.peft's (set_adapter, enable, disable, delete_adapter).
--
-- Options of attach (PEFT's LoraConfig field in brackets):
--   target (target_modules, required)  a name or list: a plain name matches a whole dotted
--             suffix of a module path ("c_proj" hits "transformer.h.0.attn.c_proj"), any other
--             string is a Lua pattern (ft.peft.registry matches)
--   exclude (exclude_modules)  the same kind of names, left out
--   r = 8, alpha = 8 (lora_alpha)  scale = alpha / r, or alpha / sqrt(r) with rslora = true
--   dropout = 0 (lora_dropout)  on the adapter's input only
--   dora = false (use_dora)  weight-decomposed LoRA
--   init = true | "gaussian" | false (init_lora_weights)  A kaiming-uniform(a = sqrt 5) or
--             N(0, (1/r)^2), B zeros (an exact no-op at start); false keeps both random
--   bias = "none" | "all" | "lora_only"  which biases train with the adapter
--   modules_to_save = {names}  modules trained in full and saved with the adapter
--   rank_pattern = {name = r}, alpha_pattern = {name = alpha}  per-module overrides; names
--             match as target does (the longest matching name wins)
--   fan_in_fan_out  recorded only: the layer decides (true for GPT-2's Conv1D, weight
--             [in, out]; false for Linear), as PEFT corrects the option per layer
--   name = "default"
--
-- Layers: ft.nn.Linear, GPT-2's Conv1D, ft.nn.Conv2d (groups = 1) and ft.nn.Embedding. The
-- adapted module keeps its parameters and gets PEFT's children: lora_A.<name> and
-- lora_B.<name> (Linear, or Conv2d: A with the base's kernel, stride, padding and dilation,
-- B 1x1), lora_dropout.<name>, for Embedding the parameters lora_embedding_A.<name> [r, num]
-- (zeros) and lora_embedding_B.<name> [dim, r] (N(0, 1)), and with DoRA
-- lora_magnitude_vector.<name>.weight, one magnitude per output unit ([out]; per embedding
-- dimension for Embedding, as PEFT).
--
-- DoRA forward as PEFT: mag = m / ||W + scale B A|| (the norm detached, per output unit),
--   y = base(x) + (mag - 1) * (base(x) - bias) + mag * scale * B(A(x))
-- where, with dropout active in training, base(x) - bias is recomputed on the dropped-out x.
-- Embedding: y = mag * base(ids) + mag * scale * (A^T[ids] B^T).
--
-- target_parameters = {names} (PEFT's target_parameters): 3-D parameters [E, out, in] of
-- stacked experts (Mixtral's fused mlp.experts.gate_up_proj / down_proj), each named by a
-- dotted suffix of its path; with target, or alone. Each gets lora_A.<name>.<param> (Linear
-- in -> r*E, weight [r*E, in]) and lora_B.<name>.<param> (r*E -> out, weight [out, r*E]), a
-- rank-r adapter per expert as PEFT's ParamWrapper: delta[e] = scale * B_e A_e with A_e =
-- A:reshape(E, r, in)[e] and B_e = B:reshape(out, r, E)[:, :, e]; forward computes the module
-- with W + delta in place of W (so every expert's GEMM stays one GEMM), and merge adds delta
-- to W. No dropout and no DoRA there (PEFT refuses both).
--
-- modules_to_save: the listed modules are shared by every adapter naming them (PEFT keeps a
-- copy per adapter): their parameters train and belong to the adapter's state_dict, and
-- switching adapters off does not switch those modules back.
local ft = require "ft"
local A = require "ft.peft.registry"
local nn = ft.nn
local F = nn.functional

local lora = {}

local CONTAINERS = { "lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B",
  "lora_magnitude_vector" }

-- Containers keyed by adapter name (PEFT's ModuleDict / ParameterDict); they have no forward.
local ModuleDict = nn.Module:extend("ModuleDict")
local ParameterDict = nn.Module:extend("ParameterDict")
local Magnitude = nn.Module:extend("LoraMagnitude")
--- Magnitude(m): DoRA's magnitude vector m as the parameter weight.
function Magnitude:init(m) self.weight = nn.Parameter(m) end

local WHERE = "ft.peft.lora"
local function fail(fmt, ...) error(WHERE .. ": " .. fmt:format(...), 0) end

local function describe(names)
  if type(names) == "string" then return ("'%s'"):format(names) end
  local q = {}
  for i, n in ipairs(names) do q[i] = ("'%s'"):format(tostring(n)) end
  return "{" .. table.concat(q, ", ") .. "}"
end

-- ---- layer kinds ---------------------------------------------------------------------------------

-- The class names along m's class chain, most derived first.
local function class_names(m)
  local out, class = { m.__name }, m.super
  while class do
    out[#out + 1] = class.__name
    class = class.super
  end
  return out
end

local KIND_OF_CLASS = { Linear = "linear", Conv1D = "conv1d", Conv2d = "conv2d", Embedding = "embedding" }

--- The LoRA kind of module m ("linear", "conv1d", "conv2d", "embedding") or nil.
local function kind_of(m)
  for _, n in ipairs(class_names(m)) do
    if KIND_OF_CLASS[n] then return KIND_OF_CLASS[n] end
  end
end
lora.kind_of = kind_of

-- in_features, out_features of an adapted layer (PEFT's: num_embeddings, embedding_dim for Embedding).
local function features(m, kind)
  local w = m.weight
  if kind == "linear" or kind == "conv2d" then return w:size(2), w:size(1) end
  return w:size(1), w:size(2)   -- Conv1D [in, out], Embedding [num, dim]
end

-- The base weight as [out, fan_in]: one row per output unit, the rows DoRA normalises.
-- (Embedding: one row per embedding dimension, as PEFT's fan_in_fan_out DoRA layer.)
local function out_major(kind, w)
  if kind == "linear" then return w end
  if kind == "conv2d" then return w:reshape(w:size(1), -1) end
  return w:t()
end

-- Back from [out, fan_in] to the layout of a weight of the given shape.
local function from_out_major(kind, v, shape)
  if kind == "linear" then return v end
  if kind == "conv2d" then return v:reshape(shape) end
  return v:t()
end

-- B A as [out, fan_in], unscaled (for Conv2d the kernel of the composed convolution, flattened).
local function lora_product(m, kind, name)
  if kind == "embedding" then return m.lora_embedding_B[name]:matmul(m.lora_embedding_A[name]) end
  local a, b = m.lora_A[name].weight, m.lora_B[name].weight
  return b:reshape(b:size(1), -1):matmul(a:reshape(a:size(1), -1))
end

local function row_norm(v) return (v * v):sum(2):sqrt() end

-- ||W + scale B A|| per output unit, without gradient (DoRA treats it as a constant).
local function weight_norm(m, kind, name, scale)
  return ft.no_grad(function()
    return row_norm(out_major(kind, m.weight:detach()) + lora_product(m, kind, name):detach() * scale)
  end)
end

local function magnitude(m, name) return m.lora_magnitude_vector[name].weight end

-- ---- creating one adapter on one layer -----------------------------------------------------------

local function container(m, key, class)
  local c = m._modules[key]
  if not c then
    c = class()
    m[key] = c
  end
  return c
end

-- The per-expert LoRA pair of 3-D parameter p [E, out, in] of m (target_parameters).
local function create_param_layers(m, name, a)
  local la_all, lb_all = ModuleDict(), ModuleDict()
  for _, p in ipairs(a.params) do
    local w = m._parameters[p]
    local E, out_f, in_f = w:size(1), w:size(2), w:size(3)
    local la = nn.Linear(in_f, a.r * E, { bias = false })
    local lb = nn.Linear(a.r * E, out_f, { bias = false })
    if a.init == true then
      nn.init.kaiming_uniform_(la.weight, { a = math.sqrt(5) })
    elseif a.init == "gaussian" then
      nn.init.normal_(la.weight, 0, 1 / a.r)
    end
    if a.init ~= false then nn.init.zeros_(lb.weight) end
    la_all[p], lb_all[p] = la, lb
  end
  container(m, "lora_A", ModuleDict)[name] = la_all
  container(m, "lora_B", ModuleDict)[name] = lb_all
  for _, key in ipairs({ "lora_A", "lora_B" }) do nn.Module.train(m._modules[key], m.training) end
end

-- Adds adapter name (settings a = {r, alpha, scale, dora, dropout, init}) to layer m.
local function create_layers(m, kind, name, a)
  if kind == "params" then return create_param_layers(m, name, a) end
  local in_f, out_f = features(m, kind)
  local r = a.r
  if kind == "embedding" then
    local ea, eb = ft.zeros(r, in_f), ft.randn(out_f, r)
    if a.init == false then ea = ft.randn(r, in_f) end
    nn.Module.register_parameter(container(m, "lora_embedding_A", ParameterDict), name, ea)
    nn.Module.register_parameter(container(m, "lora_embedding_B", ParameterDict), name, eb)
  else
    local la, lb
    if kind == "conv2d" then
      la = nn.Conv2d(in_f, r, m.kernel_size, { stride = m.stride, padding = m.padding,
        dilation = m.dilation, bias = false })
      lb = nn.Conv2d(r, out_f, 1, { bias = false })
    else
      la = nn.Linear(in_f, r, { bias = false })
      lb = nn.Linear(r, out_f, { bias = false })
    end
    if a.init == true then
      nn.init.kaiming_uniform_(la.weight, { a = math.sqrt(5) })
    elseif a.init == "gaussian" then
      nn.init.normal_(la.weight, 0, 1 / r)
    end
    if a.init ~= false then nn.init.zeros_(lb.weight) end
    container(m, "lora_A", ModuleDict)[name] = la
    container(m, "lora_B", ModuleDict)[name] = lb
  end
  container(m, "lora_dropout", ModuleDict)[name] = a.dropout > 0 and nn.Dropout(a.dropout) or nn.Identity()
  if a.dora then
    -- m = ||W + scale B A||: the adapter starts as the base layer.
    container(m, "lora_magnitude_vector", ModuleDict)[name] = Magnitude(weight_norm(m, kind, name, a.scale))
  end
  for _, key in ipairs(CONTAINERS) do
    local c = m._modules[key]
    if c then nn.Module.train(c, m.training) end
  end
end

-- ---- forward -----------------------------------------------------------------------------------

-- base(x) without its bias, on input x (DoRA with dropout recomputes it on the dropped-out x).
local function base_without_bias(m, kind, x)
  if kind == "linear" then return F.linear(x, m.weight) end
  if kind == "conv1d" then return F.linear(x, m.weight:t()) end
  return F.conv2d(x, m.weight, nil, { stride = m.stride, padding = m.padding, dilation = m.dilation,
    groups = m.groups })
end

-- result + this adapter's contribution, for Linear, Conv1D and Conv2d; result (the rest of the
-- chain's output, used by nothing else) may be closed by the call.
local function add_dense(m, kind, name, a, x, result)
  local drop = m.lora_dropout[name]
  local la, lb = m.lora_A[name], m.lora_B[name]
  if not a.dora then
    local xd = drop(x)
    if kind ~= "conv2d" and xd:dtype() == "float32" and result:dtype() == "float32" then
      -- one op, the delta added in result's own buffer: no [..., out] temporaries or copies
      return F.lora_add(result, xd, la.weight, lb.weight, a.scale, true)
    end
    -- the [..., out] temporaries freed at once rather than by the collector
    local low <close> = la(xd)
    local up <close> = lb(low)
    local delta <close> = up * a.scale
    return result + delta
  end
  local mag = magnitude(m, name) / weight_norm(m, kind, name, a.scale)
  local base
  if a.dropout == 0 or not m.training then
    base = result
    if m.bias then base = base - (kind == "conv2d" and m.bias:reshape(1, -1, 1, 1) or m.bias) end
  else
    x = drop(x)
    base = base_without_bias(m, kind, x)
  end
  if kind == "conv2d" then mag = mag:reshape(1, -1, 1, 1) end
  return result + (mag - 1) * base + mag * lb(la(x)) * a.scale
end

local function add_embedding(m, name, a, ids, result)
  local ea, eb = m.lora_embedding_A[name], m.lora_embedding_B[name]
  local delta = F.linear(F.embedding(ids, ea:t()), eb) * a.scale
  if not a.dora then return result + delta end
  local mag = magnitude(m, name) / weight_norm(m, "embedding", name, a.scale)
  return mag * result + mag * delta
end

local unmerge_module

-- delta [E, out, in] of 3-D parameter p of m for adapter name: scale * B_e A_e per expert.
local function param_delta(m, name, p, a)
  local w = m._parameters[p]
  local E, out_f, in_f = w:size(1), w:size(2), w:size(3)
  local A3 <close> = m.lora_A[name][p].weight:reshape(E, a.r, in_f)
  local B3 <close> = m.lora_B[name][p].weight:reshape(out_f, a.r, E):permute(3, 1, 2)
  local prod <close> = B3:matmul(A3)
  return prod * a.scale
end

-- The rest of m's chain run with W + delta in place of each adapted parameter W (restored after,
-- also when it fails).
local function forward_with_deltas(m, name, a, inner, ...)
  local saved = {}
  for _, p in ipairs(a.params) do
    local w = m._parameters[p]
    saved[p] = w
    m._parameters[p] = w + param_delta(m, name, p, a)
  end
  local out = table.pack(pcall(inner, ...))
  for p, w in pairs(saved) do m._parameters[p] = w end
  if not out[1] then error(out[2], 0) end
  return table.unpack(out, 2, out.n)
end

--- lora.forward(m, name, inner, x, ...): adapter name's link in layer m's forward chain: the
-- rest of the chain (other LoRA adapters added earlier, then the layer) plus this adapter's
-- delta, unless it is merged into the weight.
function lora.forward(m, name, inner, x, ...)
  local st = rawget(m, "_lora")
  local a = st.adapters[name]
  if st.kind == "params" then
    if a.merged then return inner(x, ...) end
    return forward_with_deltas(m, name, a, inner, x, ...)
  end
  local result = inner(x, ...)
  if a.merged then return result end
  if st.kind == "embedding" then return add_embedding(m, name, a, x, result) end
  local out = add_dense(m, st.kind, name, a, x, result)
  do local consumed <close> = result end   -- the base output: freed now (if add_dense has not)
  return out
end

-- ---- merging ------------------------------------------------------------------------------------

-- The weight w (base layout) with adapter name merged in; for DoRA also the norm to keep.
local function merged_weight(m, st, name, w)
  local a, kind = st.adapters[name], st.kind
  if kind == "params" then
    local out = {}
    for _, p in ipairs(a.params) do out[p] = w[p] + param_delta(m, name, p, a):detach() end
    return out
  end
  local delta = lora_product(m, kind, name):detach() * a.scale
  if not a.dora then return w + from_out_major(kind, delta, w:shape()) end
  local v = out_major(kind, w) + delta
  local norm = row_norm(v)
  local factor = magnitude(m, name):detach() / norm
  return from_out_major(kind, v * factor:unsqueeze(2), w:shape()), norm
end

local function unmerged_weight(m, st, name, w)
  local a, kind = st.adapters[name], st.kind
  if kind == "params" then
    local out = {}
    for _, p in ipairs(a.params) do out[p] = w[p] - param_delta(m, name, p, a):detach() end
    return out
  end
  local delta = lora_product(m, kind, name):detach() * a.scale
  if not a.dora then return w - from_out_major(kind, delta, w:shape()) end
  local factor = magnitude(m, name):detach() / a.merge_norm
  return from_out_major(kind, out_major(kind, w) / factor:unsqueeze(2) - delta, w:shape())
end

local function all_finite(t)
  if not ft.is_tensor(t) then   -- the adapted parameters of a target_parameters layer
    for _, v in pairs(t) do
      if not all_finite(v) then return false end
    end
    return true
  end
  return (t - t):ne(0):sum():item() == 0   -- NaN - NaN and Inf - Inf are NaN
end

-- The layer's weight as float32 values in its own layout (a quantised base dequantised); for
-- target_parameters, its adapted parameters (name -> tensor).
local function dense_weight(m, st)
  if st and st.kind == "params" then
    local out = {}
    for p in pairs(st.params) do out[p] = m._parameters[p] end
    return out
  end
  return require("ft.quant").dense_weight(m)
end

-- Writes w into layer m's weight; a quantised base (ft.quant) is requantised from w, keeping
-- its kind (the requantising merge and its unmerge).
local function set_weight(m, w)
  if not ft.is_tensor(w) then
    ft.no_grad(function()
      for p, v in pairs(w) do m._parameters[p]:copy_(v) end
    end)
    return
  end
  local q = rawget(m, "weight")
  if ft._quant.is_qweight(q) then return require("ft.quant").set_weight(m, w, q:kind(), q:label() or m.__name) end
  ft.no_grad(function() m.weight:copy_(w) end)
end

--- Takes every merged adapter of layer m out of its weight again (last merged first).
function unmerge_module(m)
  local st = rawget(m, "_lora")
  ft.no_grad(function()
    while #st.merged > 0 do
      local name = table.remove(st.merged)
      local a = st.adapters[name]
      set_weight(m, unmerged_weight(m, st, name, dense_weight(m, st)))
      a.merged, a.merge_norm = false, nil
    end
  end)
end

local function apply_merge(p)
  if p.dequantize then
    require("ft.quant").dequantize_module(p.m, p.dtype, p.w)
  else
    set_weight(p.m, p.w)
  end
  for _, s in ipairs(p.steps) do
    local a = p.st.adapters[s.name]
    a.merged, a.merge_norm = true, s.norm
    p.st.merged[#p.st.merged + 1] = s.name
  end
end

--- The adapted layers of model as an array of {path, module, state}.
local function adapted_layers(model)
  local out = {}
  for path, m in model:named_modules() do
    local st = rawget(m, "_lora")
    if st then out[#out + 1] = { path, m, st } end
  end
  return out
end
lora.adapted_layers = adapted_layers

local function lora_names(model) return A.names_of_kind(model, "lora") end

-- Merges adapters names (in that order) into layer m's weight, skipping merged ones.
local function merge_into(m, st, names)
  ft.no_grad(function()
    for _, n in ipairs(names) do
      local a = st.adapters[n]
      if a and not a.merged then
        local w, norm = merged_weight(m, st, n, dense_weight(m, st))
        set_weight(m, w)
        a.merged, a.merge_norm = true, norm
        st.merged[#st.merged + 1] = n
      end
    end
  end)
end

-- Takes the adapters in the set drop out of layer m's weight; the other merged ones stay
-- merged (merges are undone last first, the others done again in their order).
local function unmerge_some(m, drop)
  local st = rawget(m, "_lora")
  local again, any = {}, false
  for _, n in ipairs(st.merged) do
    if drop[n] then any = true else again[#again + 1] = n end
  end
  if not any then return end
  unmerge_module(m)
  merge_into(m, st, again)
end

-- The adapters to merge: opts.names, or the active LoRA adapters.
local function names_to_merge(model, names, where)
  local reg = A.registry(model)
  if names == nil then
    local out = {}
    for _, n in ipairs(lora_names(model)) do
      if reg.active[n] then out[#out + 1] = n end
    end
    return out
  end
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do
    local entry = reg.adapters[n]
    if not entry or entry.kind ~= "lora" then
      error(("%s: no LoRA adapter named '%s' (LoRA adapters on this model: %s)"):format(where, tostring(n),
        #lora_names(model) > 0 and table.concat(lora_names(model), ", ") or "none"), 0)
    end
  end
  return names
end

-- The merge options and their checks.
local MERGE_OPTIONS = { "names", "safe", "where", "quantized", "dtype" }
local QUANTIZED_CHOICES = { requantize = true, dequantize = true }
local MERGED_DTYPES = { float32 = true, bfloat16 = true, float16 = true }

local function check_merge_options(opts, where)
  opts = ft.check_options(where, opts, MERGE_OPTIONS)
  if opts.quantized ~= nil and not QUANTIZED_CHOICES[opts.quantized] then
    error(("%s: option 'quantized' must be \"requantize\" or \"dequantize\", got %s"):format(where,
      tostring(opts.quantized)), 0)
  end
  if opts.dtype ~= nil then
    if opts.quantized ~= "dequantize" then
      error(("%s: option 'dtype' is the dtype of a dequantised merged layer; it needs quantized = "
        .. "\"dequantize\""):format(where), 0)
    end
    if not MERGED_DTYPES[opts.dtype] then
      error(("%s: option 'dtype' must be \"float32\", \"bfloat16\" or \"float16\" (the dtype a dequantised "
        .. "merged layer gets), got %s"):format(where, tostring(opts.dtype)), 0)
    end
  end
  return opts
end

--- Merges adapters into the base weights: W += scale * B A (DoRA: W = m / ||W + dW|| * (W + dW)).
-- opts: {names = the active LoRA adapters, safe = false, quantized =, dtype =}. A merged
-- adapter is skipped by forward. safe = true computes every merged weight first and raises an
-- error naming the module and adapter when one holds NaN or Inf, leaving every weight untouched.
-- A layer quantised by ft.quant takes a merge only with a choice, made for every such layer:
--   quantized = "requantize": W' = quantize(dequant(W) + scale B A) of the layer's kind: the
--     layer stays quantised (as small), every weight rounded again; an unmerge requantises
--     dequant(W') - scale B A (lossy again, as PEFT's 4-bit layers).
--   quantized = "dequantize": the layer becomes a plain Linear (Conv1D) with the weight
--     dequant(W) + scale B A in dtype ("float32", exact, 4 bytes a weight; "bfloat16" or
--     "float16", rounded once, 2 bytes); an unmerge leaves it in that dtype.
-- A half-precision base (m:to("bfloat16")) takes the merge in float32 and rounds once into its
-- dtype; an unmerge subtracts and rounds again (not exact, as in PEFT).
-- Without the choice the merge is refused before any weight changes, the error naming both.
-- What each costs in accuracy: ft.quant's doc.
function lora.merge(model, opts)
  local where = opts and opts.where or "ft.peft.merge"
  opts = check_merge_options(opts, where)
  local function refuse(fmt, ...) error(where .. ": " .. fmt:format(...), 0) end
  local names = names_to_merge(model, opts.names, where)
  -- DoRA normalises the weight the other adapters of its layer change: no merge there is exact.
  for _, e in ipairs(adapted_layers(model)) do
    local st, dora, other = e[3], nil, nil
    for n, a in pairs(st.adapters) do
      if a.dora and not dora then dora = n else other = other or n end
    end
    if dora and other then
      for _, n in ipairs(names) do
        if st.adapters[n] and not st.adapters[n].merged then
          refuse("layer %s carries DoRA adapter '%s' and LoRA adapter '%s': DoRA normalises the weight the "
            .. "other one changes, so merging either is not exact; delete one of them first", e[1], dora, other)
        end
      end
    end
  end
  -- A quantised base (ft.quant) takes a merge only with a choice: refused before any layer changes.
  if opts.quantized == nil then
    for _, e in ipairs(adapted_layers(model)) do
      if ft._quant.is_qweight(rawget(e[2], "weight")) then
        for _, n in ipairs(names) do
          if e[3].adapters[n] and not e[3].adapters[n].merged then
            refuse("layer %s is quantised (%s) by ft.quant: merging adapter '%s' into it needs a choice: "
              .. "{quantized = \"requantize\"} (dequantise, add the delta, quantise again: the layer stays %s, "
              .. "its weights rounded again) or {quantized = \"dequantize\"} (the merged layer becomes a float32 "
              .. "%s, exact); or keep the adapter unmerged; no weight was changed", e[1], e[2].weight:kind(), n,
              e[2].weight:kind(), e[2].__name)
          end
        end
      end
    end
  end
  local plans = {}
  for _, e in ipairs(adapted_layers(model)) do
    local path, m, st = e[1], e[2], e[3]
    local w, steps = dense_weight(m, st), {}
    ft.no_grad(function()
      for _, name in ipairs(names) do
        local a = st.adapters[name]
        if a and not a.merged then
          local norm
          w, norm = merged_weight(m, st, name, w)
          if opts.safe and not all_finite(w) then
            refuse("merging adapter '%s' into %s gives NaN or Inf weights; no weight was changed", name, path)
          end
          steps[#steps + 1] = { name = name, norm = norm }
        end
      end
    end)
    if #steps > 0 then
      local plan = { m = m, st = st, steps = steps, w = w,
        dequantize = opts.quantized == "dequantize" and ft._quant.is_qweight(rawget(m, "weight")), dtype = opts.dtype }
      -- A safe merge writes only once every layer passed; an unsafe one writes each at once.
      if opts.safe then plans[#plans + 1] = plan else apply_merge(plan) end
    end
  end
  for _, p in ipairs(plans) do apply_merge(p) end
  return model
end

--- lora.merge_adapters(model, names [, {safe =, quantized =, dtype =}]): the registry's merge
-- (lora.merge of names).
function lora.merge_adapters(model, names, opts)
  opts = opts or {}
  return lora.merge(model, { names = names, safe = opts.safe, where = opts.where, quantized = opts.quantized,
    dtype = opts.dtype })
end

--- lora.merge with safe = true.
function lora.safe_merge(model, opts)
  local o = { safe = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  return lora.merge(model, o)
end

--- lora.unmerge(model [, names]): takes the merged adapters names (default: every one) out of
-- the base weights again. Returns model.
function lora.unmerge(model, names)
  if type(names) == "string" then names = { names } end
  local drop
  if names then
    drop = {}
    for _, n in ipairs(names) do drop[n] = true end
  end
  for _, e in ipairs(adapted_layers(model)) do
    if drop then unmerge_some(e[2], drop) else unmerge_module(e[2]) end
  end
  return model
end

--- Names of the adapters merged into layer m (last merged last).
function lora.merged_on(m)
  local st = rawget(m, "_lora")
  if not st then return {} end
  return { table.unpack(st.merged) }
end

--- Names of the adapters merged into some layer of model.
function lora.merged(model)
  local seen, out = {}, {}
  for _, e in ipairs(adapted_layers(model)) do
    for _, n in ipairs(e[3].merged) do
      if not seen[n] then seen[n] = true; out[#out + 1] = n end
    end
  end
  return out
end
lora.merged_adapters = lora.merged

-- ---- options -------------------------------------------------------------------------------------

--- The options of attach (ft.peft.lora).
lora.options = { "target", "target_parameters", "exclude", "r", "alpha", "dropout", "rslora", "dora", "init", "bias",
  "modules_to_save", "rank_pattern", "alpha_pattern", "fan_in_fan_out", "name" }
local PEFT_NAMES = { target_modules = "target", exclude_modules = "exclude", lora_alpha = "alpha",
  lora_dropout = "dropout", use_rslora = "rslora", use_dora = "dora", init_lora_weights = "init" }

local function is_name_list(v)
  if type(v) == "string" then return true end
  if type(v) ~= "table" or #v == 0 then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
  end
  return true
end

local function check_pattern_table(v, key, integer)
  if v == nil then return {} end
  if type(v) ~= "table" then fail("option '%s' must be a table name -> value, got %s", key, type(v)) end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" then fail("option '%s' has a %s key; keys are module names", key, type(k)) end
    local ok = type(x) == "number" and x > 0 and (not integer or x == math.floor(x))
    if not ok then
      fail("option '%s': value for '%s' must be a positive %s, got %s", key, k,
        integer and "integer" or "number", tostring(x))
    end
    out[k] = integer and math.tointeger(x) or x
  end
  return out
end

-- The options with defaults filled in (the config kept in the registry: JSON-able).
local function read_options(opts)
  if type(opts) ~= "table" then fail("options must be a table, got %s", type(opts)) end
  for k in pairs(opts) do
    if PEFT_NAMES[k] then fail("unknown option '%s' (PEFT's name; ft.peft.lora calls it '%s')", k, PEFT_NAMES[k]) end
  end
  ft.check_options(WHERE, opts, lora.options)
  local c = {}
  c.name = opts.name == nil and "default" or opts.name
  if opts.target == nil and opts.target_parameters == nil then
    fail("option 'target' is required (a module name or a list of names), or 'target_parameters'")
  end
  if opts.target ~= nil and not is_name_list(opts.target) then fail("option 'target' must be a name or a list of names") end
  c.target = opts.target
  if opts.target_parameters ~= nil then
    if not is_name_list(opts.target_parameters) then
      fail("option 'target_parameters' must be a parameter name or a list of names")
    end
    c.target_parameters = type(opts.target_parameters) == "string" and { opts.target_parameters }
      or { table.unpack(opts.target_parameters) }
  end
  if opts.exclude ~= nil and not is_name_list(opts.exclude) then
    fail("option 'exclude' must be a name or a list of names")
  end
  c.exclude = opts.exclude
  c.r = opts.r == nil and 8 or opts.r
  if math.type(c.r) ~= "integer" then c.r = type(c.r) == "number" and math.tointeger(c.r) or c.r end
  if math.type(c.r) ~= "integer" or c.r <= 0 then fail("option 'r' must be a positive integer, got %s", tostring(opts.r)) end
  c.alpha = opts.alpha == nil and 8 or opts.alpha
  if type(c.alpha) ~= "number" then fail("option 'alpha' must be a number, got %s", tostring(c.alpha)) end
  c.dropout = opts.dropout == nil and 0 or opts.dropout
  if type(c.dropout) ~= "number" or c.dropout < 0 or c.dropout >= 1 then
    fail("option 'dropout' must be a number in [0, 1), got %s", tostring(c.dropout))
  end
  for _, k in ipairs({ "rslora", "dora" }) do
    c[k] = opts[k]
    if c[k] == nil then c[k] = false end
    if type(c[k]) ~= "boolean" then fail("option '%s' must be true or false, got %s", k, tostring(c[k])) end
  end
  c.init = opts.init == nil and true or opts.init
  if c.init ~= true and c.init ~= false and c.init ~= "gaussian" then
    fail("option 'init' must be true, false or \"gaussian\", got %s", tostring(c.init))
  end
  c.bias = opts.bias or "none"
  if c.bias ~= "none" and c.bias ~= "all" and c.bias ~= "lora_only" then
    fail("option 'bias' must be \"none\", \"all\" or \"lora_only\", got %s", tostring(c.bias))
  end
  if opts.modules_to_save ~= nil and not is_name_list(opts.modules_to_save) then
    fail("option 'modules_to_save' must be a name or a list of names")
  end
  c.modules_to_save = opts.modules_to_save
  c.rank_pattern = check_pattern_table(opts.rank_pattern, "rank_pattern", true)
  c.alpha_pattern = check_pattern_table(opts.alpha_pattern, "alpha_pattern", false)
  if opts.fan_in_fan_out ~= nil and type(opts.fan_in_fan_out) ~= "boolean" then
    fail("option 'fan_in_fan_out' must be true or false")
  end
  c.fan_in_fan_out = opts.fan_in_fan_out
  if c.target_parameters and (c.dropout > 0 or c.dora) then
    fail("option 'target_parameters' does not go with %s (as in PEFT: the delta is added to the weight, "
      .. "not computed from the input)", c.dora and "dora = true" or "dropout > 0")
  end
  return c
end

--- The value of the longest pattern name matching path, or default.
local function pattern_value(patterns, path, default)
  local best, value
  for key, v in pairs(patterns) do
    if A.matches(path, key) and (not best or #key > #best or (#key == #best and key < best)) then
      best, value = key, v
    end
  end
  if best then return value end
  return default
end
lora.pattern_value = pattern_value

-- ---- trainable tensors ---------------------------------------------------------------------------

local is_adapter_path = A.is_adapter_path

local function ends_with_bias(name) return name == "bias" or name:sub(-5) == ".bias" end

--- Model state_dict key -> tensor of what adapter config trains besides its own layers: the
-- parameters and buffers of modules_to_save, and the biases that bias asks for.
local function extra_tensors(model, config, name)
  local out = {}
  if config.modules_to_save then
    for _, e in ipairs(A.find_modules(model, config.modules_to_save)) do
      local sd = e[2]:state_dict({ prefix = e[1], keep_vars = true })
      for k, t in pairs(sd) do
        if not is_adapter_path(k) then out[k] = t end
      end
    end
  end
  if config.bias == "all" then
    for k, p in model:named_parameters() do
      if ends_with_bias(k) and not is_adapter_path(k) then out[k] = p end
    end
  elseif config.bias == "lora_only" then
    for _, e in ipairs(adapted_layers(model)) do
      if e[3].adapters[name] and e[2].bias then
        out[(e[1] == "" and "" or e[1] .. ".") .. "bias"] = e[2].bias
      end
    end
  end
  return out
end
lora.extra_tensors = extra_tensors

-- Sets requires_grad on the parameters among tensors (state_dict aliases are matched by key).
local function set_trainable(model, keys, flag)
  for k, p in model:named_parameters() do
    if keys[k] then p.requires_grad = flag end
  end
end

-- Keys claimed by the LoRA adapters of model other than skip.
local function claimed_keys(model, skip)
  local reg, keys = A.registry(model), {}
  for _, n in ipairs(lora_names(model)) do
    if n ~= skip then
      for k in pairs(extra_tensors(model, reg.adapters[n].config, n)) do keys[k] = true end
    end
  end
  return keys
end

--- The adapter's tensors keyed as in model:state_dict(): its lora_* parameters, plus
-- modules_to_save and the biases it trains. These are the parameters themselves (leaf
-- tensors, outside any graph), so setting requires_grad on them reaches the model.
function lora.state_dict(model, name)
  local entry = A.get(model, name, WHERE)
  if entry.kind ~= "lora" then fail("adapter '%s' is a %s adapter, not LoRA", name, entry.kind) end
  local out = extra_tensors(model, entry.config, name)
  for _, e in ipairs(adapted_layers(model)) do
    local path, m, st = e[1], e[2], e[3]
    if st.adapters[name] then
      local sd = m:state_dict({ prefix = path, keep_vars = true })
      local p = path == "" and "" or path .. "."
      for k, t in pairs(sd) do
        local rest = k:sub(#p + 1)
        local c, n = rest:match("^(lora_[%w_]+)%.([^.]+)")
        if c and n == name then out[k] = t end
      end
    end
  end
  return out
end

-- ---- attach and remove -------------------------------------------------------------------------------

-- Short names of the layers LoRA could adapt, for the "matches nothing" error.
local function candidates(model)
  local seen, out = {}, {}
  for path, m in model:named_modules() do
    local short = path:match("([^.]+)$")
    if short and short:match("^%d+$") then short = path end   -- list items: the whole path
    if short and kind_of(m) and not is_adapter_path(path) and not seen[short] then
      seen[short] = true
      out[#out + 1] = short
    end
  end
  table.sort(out)
  return table.concat(out, ", ")
end

-- The modules with parameters named by target_parameters (a dotted suffix of the parameter's
-- path): array of {path, module, names in the module's parameter order}. Each must be 3-D.
local function target_parameters(model, names)
  local out, hit = {}, {}
  for path, m in model:named_modules() do
    if not is_adapter_path(path) then
      local params = {}
      for _, pn in ipairs(m._parameter_names) do
        local full = (path == "" and "" or path .. ".") .. pn
        for _, t in ipairs(names) do
          if full == t or full:sub(-#t - 1) == "." .. t then
            local w = m._parameters[pn]
            if w:dim() ~= 3 then
              fail("target_parameters: %s is %d-D; LoRA on parameters adapts 3-D stacked expert weights [E, out, in] "
                .. "(use target for a layer)", full, w:dim())
            end
            params[#params + 1] = pn
            hit[t] = true
            break
          end
        end
      end
      if #params > 0 then out[#out + 1] = { path, m, params } end
    end
  end
  for _, t in ipairs(names) do
    if not hit[t] then fail("target_parameters: '%s' matches no parameter of the model (%s)", t, model.__name) end
  end
  return out
end

local function matched_by(path, target)
  if type(target) == "string" then return target end
  for _, t in ipairs(target) do
    if A.matches(path, t) then return t end
  end
end

--- Adds a LoRA adapter to every module matching opts.target (see the options above).
-- Freezes the base model; the new adapter's tensors (and what modules_to_save / bias ask for)
-- train. Returns the adapter's name. opts may be a config kept by the registry.
function lora.attach(model, opts)
  if type(model) ~= "table" or not nn.is_module(model) then fail("attach: a ft.nn model expected") end
  local c = read_options(opts or {})
  local name = c.name
  A.check_new_name(model, name, WHERE)
  local found = c.target and A.find_modules(model, c.target, c.exclude) or {}
  if c.target and #found == 0 then
    fail("target %s matches no module of the model (%s); layers LoRA can adapt: %s", describe(c.target),
      model.__name, candidates(model))
  end
  local plan, any_conv1d = {}, false
  for _, e in ipairs(c.target_parameters and target_parameters(model, c.target_parameters) or {}) do
    local path, m, params = e[1], e[2], e[3]
    local st = rawget(m, "_lora")
    if st and (st.kind ~= "params" or not ft.tables.same_array(st.order, params)) then
      fail("module %s already carries LoRA adapters on %s; every adapter there must target the same parameters "
        .. "(as in PEFT)", path, st.kind == "params" and table.concat(st.order, ", ") or "its weight")
    end
    plan[#plan + 1] = { path, m, "params", { r = c.r, alpha = c.alpha,
      scale = c.rslora and c.alpha / math.sqrt(c.r) or c.alpha / c.r, dora = false, dropout = 0, init = c.init,
      merged = false, params = params } }
  end
  for _, e in ipairs(found) do
    local path, m = e[1], e[2]
    local kind = kind_of(m)
    if not kind then
      fail("module %s (%s) matches target '%s', but LoRA adapts only Linear, Conv1D, Conv2d and Embedding layers",
        path, m.__name, matched_by(path, c.target))
    end
    if kind == "conv2d" and m.groups ~= 1 then
      fail("module %s (Conv2d) has groups = %d; LoRA supports only convolutions with groups = 1", path, m.groups)
    end
    -- A merged (IA)3 vector would have to scale the new deltas too; DoRA normalises the weight
    -- that merged adapters changed.
    for _, n in ipairs(A.merged_on(m)) do
      if c.dora or not (rawget(m, "_lora") and rawget(m, "_lora").adapters[n]) then
        fail("module %s has adapter '%s' merged into its weight; unmerge it before adding a%s adapter there",
          path, n, c.dora and " DoRA" or " LoRA")
      end
    end
    any_conv1d = any_conv1d or kind == "conv1d"
    local r = pattern_value(c.rank_pattern, path, c.r)
    local alpha = pattern_value(c.alpha_pattern, path, c.alpha)
    plan[#plan + 1] = { path, m, kind, { r = r, alpha = alpha, scale = c.rslora and alpha / math.sqrt(r) or alpha / r,
      dora = c.dora, dropout = kind == "embedding" and 0 or c.dropout, init = c.init, merged = false } }
  end
  if c.modules_to_save then
    for _, n in ipairs(type(c.modules_to_save) == "string" and { c.modules_to_save } or c.modules_to_save) do
      if #A.find_modules(model, n) == 0 then fail("modules_to_save: '%s' matches no module of the model", n) end
    end
  end
  if c.fan_in_fan_out == nil then c.fan_in_fan_out = any_conv1d end

  -- Freeze the base (what other adapters train through modules_to_save / bias stays).
  A.freeze_base(model)
  A.add(model, name, "lora", c, WHERE)
  for _, e in ipairs(plan) do
    local m, kind, a = e[2], e[3], e[4]
    create_layers(m, kind, name, a)
    local st = rawget(m, "_lora")
    if not st then
      -- per layer: each adapter's settings and merge state, and the merge order
      st = { kind = kind, adapters = {}, merged = {} }
      if kind == "params" then   -- the adapted parameters, as a set and in the module's order
        st.order, st.params = a.params, {}
        for _, p in ipairs(a.params) do st.params[p] = true end
      end
      rawset(m, "_lora", st)
    end
    st.adapters[name] = a
    A.join(model, m, name)
  end
  set_trainable(model, extra_tensors(model, c, name), true)
  return name
end

-- Drops adapter name from layer m; keep_merged leaves a merged adapter's delta in the weight.
local function remove_from_layer(m, name, keep_merged)
  local st = rawget(m, "_lora")
  local a = st.adapters[name]
  if not a then return end
  local remerge = {}
  if a.merged and not keep_merged then
    for _, n in ipairs(st.merged) do
      if n ~= name then remerge[#remerge + 1] = n end
    end
    unmerge_module(m)
  elseif a.merged then
    for i, n in ipairs(st.merged) do
      if n == name then table.remove(st.merged, i); break end
    end
  end
  for _, key in ipairs(CONTAINERS) do
    local c = m._modules[key]
    if c then
      c[name] = nil
      if #c._module_names == 0 and #c._parameter_names == 0 then m[key] = nil end
    end
  end
  st.adapters[name] = nil
  A.leave(m, name)
  if next(st.adapters) == nil then
    rawset(m, "_lora", nil)
    return
  end
  merge_into(m, st, remerge)
end

--- Takes adapter name's layers off the model (a merged adapter is unmerged first); the
-- modules_to_save and biases only it trained are frozen again. The registry entry is the
-- caller's (ft.peft.delete_adapter removes it).
function lora.remove(model, name, opts)
  local entry = A.get(model, name, WHERE)
  if entry.kind ~= "lora" then fail("adapter '%s' is a %s adapter, not LoRA", name, entry.kind) end
  local others = claimed_keys(model, name)
  local mine = extra_tensors(model, entry.config, name)
  for k in pairs(others) do mine[k] = nil end
  set_trainable(model, mine, false)
  for _, e in ipairs(adapted_layers(model)) do remove_from_layer(e[2], name, opts and opts.keep_merged) end
end

--- Merges the adapters (opts as lora.merge: names, safe, quantized, dtype) and removes every
-- LoRA adapter: the model is the plain base model again, with the merged weights (a quantised
-- layer requantised or dequantised as quantized says). Returns model.
function lora.merge_and_unload(model, opts)
  opts = opts or {}
  lora.merge(model, { names = opts.names, safe = opts.safe, where = opts.where or "ft.peft.merge_and_unload",
    quantized = opts.quantized, dtype = opts.dtype })
  for _, n in ipairs(lora_names(model)) do
    lora.remove(model, n, { keep_merged = true })
    A.remove(model, n)
  end
  return model
end

--- Removes every LoRA adapter without merging (PEFT's unload). Returns model.
function lora.unload(model)
  lora.unmerge(model)
  for _, n in ipairs(lora_names(model)) do
    lora.remove(model, n)
    A.remove(model, n)
  end
  return model
end

--- Settings of adapter name on each layer: array of {path, kind, r, alpha, scale, dora}.
function lora.layers(model, name)
  local out = {}
  for _, e in ipairs(adapted_layers(model)) do
    local a = e[3].adapters[name]
    if a then
      out[#out + 1] = { path = e[1], kind = e[3].kind, r = a.r, alpha = a.alpha, scale = a.scale, dora = a.dora,
        merged = a.merged }
    end
  end
  return out
end

return lora
