-- ft.quant: 4-bit (NF4) and 8-bit frozen base weights for QLoRA-style fine-tuning.
--
--   local model = ft.models.from_pretrained(dir)        -- a Llama-family model (nn.Linear layers)
--   ft.quant.quantize(model, "nf4", { modules = { "q_proj", "v_proj" } })  -- default: every Linear
--   ft.peft.lora(model, { target = { "q_proj", "v_proj" }, r = 8 })  -- LoRA trains over them
--   print(ft.quant.memory(model).bytes_per_param)         -- about 0.516 for NF4
--
-- A quantised nn.Linear keeps its class, its bias and its printed form; its weight becomes a
-- frozen quantised weight (w:size(1), w:shape() and w:dim() work; w:dequantize() gives the
-- float32 values) and its forward the quantised matmul, which dequantises a block of rows at a
-- time. Adapters join its forward chain as on any Linear: LoRA adds its delta to the quantised
-- base. Quantise before attaching adapters.
--
-- Kinds: "nf4" (bitsandbytes' NF4: blocks of 64 weights, 4-bit NormalFloat indices, an absmax
-- per block, double-quantised as QLoRA does: 8-bit codes of the absmaxes less their mean, a
-- float32 scale per 256 of them; 0.5 + (1 + 4/256)/64 ~ 0.516 bytes per weight), "nf4_fp32"
-- (the same with float32 absmaxes; 0.5625 bytes per weight) and "int8" (one absmax scale per
-- output row, round to nearest in [-127, 127]; 1 + 4/in bytes per weight). The weights are not in
-- state_dict while quantised. Merging an adapter into a quantised weight is an error: call
-- ft.quant.dequantize(model) first (float32 layers; merge there, quantise again to requantise).
local ft = require "ft"
local nn = require "ft.nn"
local A = require "ft.peft.registry"

local C = ft._quant
local quant = {}

local WHERE = "ft.quant"
local KINDS = { nf4 = true, int8 = true, nf4_fp32 = true }

local function fail(fmt, ...) error(WHERE .. ": " .. fmt:format(...), 0) end

-- True when module m is an nn.Linear or of a class derived from it (LoRA's test too: a class
-- named Linear on m's class chain).
local function is_linear_module(m)
  if m.__name == "Linear" then return true end
  local class = m.super
  while class do
    if class.__name == "Linear" then return true end
    class = class.super
  end
  return false
end

--- The forward of a quantised Linear: the quantised matmul while its weight is quantised,
-- the float32 one after ft.quant.dequantize (adapter chains keep calling this).
local function quant_forward(self, x)
  local w = self.weight
  if C.is_qweight(w) then return C.linear(x, w, self.bias) end
  return nn.functional.linear(x, w, self.bias)
end

local function quant_extra_repr(self)
  return nn.Linear.extra_repr(self) .. ", quant=" .. self.weight:kind()
end

--- ft.quant.is_quantized(m) -> the kind ("nf4" | "nf4_fp32" | "int8") of module m's quantised weight, or nil.
function quant.is_quantized(m)
  local w = rawget(m, "weight")
  if w ~= nil and C.is_qweight(w) then return w:kind() end
  return nil
end

-- The modules of model that opts.modules selects (PEFT's matching rule; default every Linear),
-- as {path, module}. A selected module that is no Linear is an error naming it.
local function selected(model, modules, where)
  local out = {}
  if modules == nil then
    for path, m in model:named_modules() do
      if not A.is_adapter_path(path) and (is_linear_module(m) or quant.is_quantized(m)) then
        out[#out + 1] = { path, m }
      end
    end
    return out
  end
  if type(modules) ~= "string" and type(modules) ~= "table" then
    error(("%s: modules must be a name, a pattern or a list of them, got %s"):format(where, type(modules)), 0)
  end
  for _, e in ipairs(A.find_modules(model, modules)) do
    local path, m = e[1], e[2]
    if not is_linear_module(m) then
      error(("%s: module %s is a %s; only nn.Linear layers can be quantised"):format(where, path, m.__name), 0)
    end
    out[#out + 1] = e
  end
  if #out == 0 then
    error(("%s: modules %s match no module of the model"):format(where,
      type(modules) == "table" and table.concat(modules, ", ") or modules), 0)
  end
  return out
end

--- ft.quant.quantize(model, kind, {modules = names or patterns}) -> model: replaces the weights
-- of the selected nn.Linear layers (default: every Linear, adapters' own layers excepted) by
-- frozen quantised weights of kind "nf4", "nf4_fp32" or "int8". modules follow PEFT's target rule (a plain
-- name matches a dotted suffix, anything else is a Lua pattern). A selected module that is not
-- a Linear (Conv2d, Embedding, Conv1D ...) is an error naming it; so is a layer with adapters
-- attached before it was quantised. Layers already quantised with kind are left as they are.
function quant.quantize(model, kind, opts)
  local where = WHERE .. ".quantize"
  if not nn.is_module(model) then error(where .. ": a ft.nn model expected", 2) end
  if not KINDS[kind] then
    error(("%s: unknown kind %s (kinds: nf4, int8, nf4_fp32)"):format(where, tostring(kind)), 2)
  end
  opts = ft.check_options(where, opts, { "modules" })
  local plan = {}
  for _, e in ipairs(selected(model, opts.modules, where)) do
    local path, m = e[1], e[2]
    local have = quant.is_quantized(m)
    if have and have ~= kind then
      fail("quantize: module %s is quantised as %s already; ft.quant.dequantize it first", path, have)
    end
    local forward = rawget(m, "forward")
    local chain = rawget(m, "_peft_chain")
    -- The quantised matmul must be the base of the layer's adapter chain (attached after).
    if not have and ((chain and chain.base ~= quant_forward) or (not chain and forward ~= nil
        and forward ~= quant_forward)) then
      fail("quantize: module %s has adapters or its own forward; quantise the model before attaching adapters", path)
    end
    if not have then plan[#plan + 1] = { path, m } end
  end
  for _, e in ipairs(plan) do
    local path, m = e[1], e[2]
    local q = C.quantize(m.weight:detach(), kind)
    q:set_label(path ~= "" and path or model.__name)
    m.weight = nil
    rawset(m, "weight", q)
    if rawget(m, "_peft_chain") == nil then rawset(m, "forward", quant_forward) end
    rawset(m, "extra_repr", quant_extra_repr)
  end
  return model
end

--- ft.quant.dequantize(model, {modules = names or patterns}) -> model: gives the quantised
-- layers (default: all) float32 weights again, the dequantised values, frozen (requires_grad
-- false). Use it before merging an adapter; ft.quant.quantize requantises the merged layers.
function quant.dequantize(model, opts)
  local where = WHERE .. ".dequantize"
  if not nn.is_module(model) then error(where .. ": a ft.nn model expected", 2) end
  opts = ft.check_options(where, opts, { "modules" })
  for _, e in ipairs(selected(model, opts.modules, where)) do
    local m = e[2]
    if quant.is_quantized(m) then
      local w = m.weight:dequantize()
      rawset(m, "weight", nil)
      m.weight = nn.Parameter(w, false)
      rawset(m, "extra_repr", nil)
      if rawget(m, "forward") == quant_forward then rawset(m, "forward", nil) end
    end
  end
  return model
end

--- ft.quant.memory(model) -> {quantized_bytes, quantized_params, bytes_per_param, dense_bytes,
-- dense_params, total_bytes}: the bytes the quantised weights hold (packed values and scales)
-- per weight they stand for, and the float32 parameters and buffers beside them.
function quant.memory(model)
  local qb, qn = 0, 0
  for _, m in model:named_modules() do
    if quant.is_quantized(m) then
      qb, qn = qb + m.weight:nbytes(), qn + m.weight:numel()
    end
  end
  local db, dn = 0, 0
  for _, p in model:named_parameters() do db, dn = db + 4 * p:numel(), dn + p:numel() end
  for _, b in model:named_buffers() do db = db + (b:dtype() == "int64" and 8 or 4) * b:numel() end
  return { quantized_bytes = qb, quantized_params = qn, bytes_per_param = qn > 0 and qb / qn or 0,
    dense_bytes = db, dense_params = dn, total_bytes = qb + db }
end

--- ft.quant.nbytes(model) -> the bytes of the model's weights: quantised weights (packed values
-- and scales) plus float32 parameters and buffers.
function quant.nbytes(model) return quant.memory(model).total_bytes end

--- ft.quant.modules(model) -> array of {path, kind} of the quantised layers, in module order.
function quant.modules(model)
  local out = {}
  for path, m in model:named_modules() do
    local k = quant.is_quantized(m)
    if k then out[#out + 1] = { path, k } end
  end
  return out
end

return quant
