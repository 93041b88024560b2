-- ft.quant: 4-bit (NF4) and 8-bit frozen base weights for QLoRA-style fine-tuning.
--
--   local model = ft.models.from_pretrained(dir, {quantize = "nf4"})  -- quantised while loading
--   local model = ft.models.new(config, nil, {quantize = "nf4"})      -- random weights, the same way
--   ft.quant.quantize(model, "nf4", { modules = { "q_proj", "v_proj" } })  -- a model built already
--   ft.peft.lora(model, { target = { "q_proj", "v_proj" }, r = 8 })  -- LoRA trains over them
--   print(ft.quant.memory(model).bytes_per_param)         -- about 0.516 for NF4
--
-- A quantised nn.Linear (or GPT-2's Conv1D) keeps its class, its bias and its printed form;
-- its weight becomes a frozen quantised weight (w:size(1), w:shape() and w:dim() work, in the
-- layer's own layout; w:dequantize() gives the float32 values) and its forward the quantised
-- matmul, which dequantises a block of rows at a time. A Conv1D weight is [in, out]: its
-- transpose is stored, the [out, in] layout the kernel multiplies by. Adapters join its
-- forward chain as on any Linear: LoRA adds its delta to the quantised base. Quantise before
-- attaching adapters.
--
-- Kinds: "nf4" (bitsandbytes' NF4: blocks of 64 weights, 4-bit NormalFloat indices, an absmax
-- per block, double-quantised as QLoRA does: 8-bit codes of the absmaxes less their mean, a
-- float32 scale per 256 of them; 0.5 + (1 + 4/256)/64 ~ 0.516 bytes per weight), "nf4_fp32"
-- (the same with float32 absmaxes; 0.5625 bytes per weight) and "int8" (one absmax scale per
-- output row, round to nearest in [-127, 127]; 1 + 4/in bytes per weight). The weights are not in
-- state_dict while quantised.
--
-- Quantising while building. ft.models.from_pretrained(dir, {quantize =, modules =}) and
-- ft.models.new(config, overrides, {quantize =, modules =}) (and ft.quant.build for any module
-- tree) never hold the float32 model: the module tree is built with untouched weights (no
-- resident memory), then each selected layer in turn is read from the file (or initialised),
-- quantised and its float32 copy freed before the next. Peak memory is about the quantised
-- model plus one float32 layer, plus what stays float32: the embeddings, lm_head, the norms
-- and the biases. By default the layers quantised are the Linear (Conv1D) layers of the
-- decoder blocks (ft.quant.default_modules): as with bitsandbytes through transformers, the
-- output layer lm_head (tied to the input embedding or not) and the embeddings stay float32.
--
-- Merging LoRA into a quantised layer (require("ft.peft.lora").merge(model, opts) and
-- merge_and_unload) needs a choice, opts.quantized = "requantize" or "dequantize"; without it
-- the merge is refused, the error naming both:
--   "requantize"  W' = quantize(dequant(W) + scale B A), of the layer's kind: the model stays
--                 as small; unmerging requantises dequant(W') - scale B A (lossy again).
--   "dequantize"  the merged layer becomes a plain Linear with the float32 weight
--                 dequant(W) + scale B A (option dtype, "float32" the one choice today).
-- What each costs, measured by scripts/bench/quant_merge_accuracy.lua on the shipped GPT
-- (models/gpt_fortunes.h5: 4 blocks of 192, its 16 c_attn/c_proj/c_fc layers quantised) with
-- a LoRA adapter (r 8 on those layers) trained 60 steps on the songs-poems fortunes, over 4 x 128
-- held-out bytes, each merge against the unmerged model (quantised base + adapter):
--                         max |logit diff|  mean     held-out loss (unmerged; quantised base)
--   nf4,  requantize          1.92         0.225     1.7476 (1.7405; 1.8393)
--   nf4,  dequantize          1.7e-5       1.9e-6    1.7405
--   int8, requantize          0.125        0.016     1.7274 (1.7273; 1.8447)
--   int8, dequantize          1.9e-5       1.9e-6    1.7273
-- For scale, the NF4 base itself is 1.72 max / 0.25 mean away from the float32 model (int8:
-- 0.18 / 0.02). A requantised NF4 merge rounds every merged weight again, an error as large as
-- the quantisation itself: it gave back 7 % of what the adapter gained (0.007 of 0.099 in
-- loss); int8's finer grid loses nothing measurable. The dequantised merge is exact (float32
-- rounding) but the merged layers are float32 again: the model's weights 7.5 MB, not 1.35 (NF4).
local ft = require "ft"
local nn = require "ft.nn"
local A = require "ft.peft.registry"

local C = ft._quant
local quant = {}

local WHERE = "ft.quant"
local KINDS = { nf4 = true, int8 = true, nf4_fp32 = true }
local KIND_LIST = "nf4, int8, nf4_fp32"

local function fail(fmt, ...) error(WHERE .. ": " .. fmt:format(...), 0) end

-- The layer classes that can be quantised: class name -> layout of the weight.
local LAYOUTS = { Linear = "linear", Conv1D = "conv1d" }

-- "linear" ([out, in] weight), "conv1d" ([in, out]) or nil: the quantisable kind of module m,
-- from the class names on its class chain (a class derived from Linear is a Linear).
local function layer_kind(m)
  if LAYOUTS[m.__name] then return LAYOUTS[m.__name] end
  local class = m.super
  while class do
    if LAYOUTS[class.__name] then return LAYOUTS[class.__name] end
    class = class.super
  end
  return nil
end

--- ft.quant.check_kind(kind, where) -> kind: raises "<where>: unknown quantisation kind ..."
-- naming the kinds, unless kind is "nf4", "nf4_fp32" or "int8".
function quant.check_kind(kind, where)
  if not KINDS[kind] then
    error(("%s: unknown quantisation kind %s (kinds: %s)"):format(where, type(kind) == "string"
      and "'" .. kind .. "'" or tostring(kind), KIND_LIST), 0)
  end
  return kind
end

--- The forward of a quantised layer: the quantised matmul while its weight is quantised,
-- the float32 one after ft.quant.dequantize (adapter chains keep calling this).
local function quant_forward(self, x)
  local w = self.weight
  if C.is_qweight(w) then return C.linear(x, w, self.bias) end
  if layer_kind(self) == "conv1d" then return nn.functional.linear(x, w:t(), self.bias) end
  return nn.functional.linear(x, w, self.bias)
end

--- ft.quant.is_quantized(m) -> the kind ("nf4" | "nf4_fp32" | "int8") of module m's quantised weight, or nil.
function quant.is_quantized(m)
  local w = rawget(m, "weight")
  if w ~= nil and C.is_qweight(w) then return w:kind() end
  return nil
end

--- ft.quant.set_weight(m, w, kind, label): gives layer m (an nn.Linear or a Conv1D) the
-- quantised weight of kind made from the float tensor w (any float dtype), in the layer's own
-- layout ([out, in]; [in, out] for Conv1D); label names it in errors (the layer's path). A
-- float32 layer becomes a quantised one (its weight parameter dropped, the quantised matmul
-- as its forward); a quantised layer only gets the new weight (its adapter chain stays).
-- The step ft.quant.quantize, the quantising loaders and a requantising merge share.
function quant.set_weight(m, w, kind, label)
  local layout = layer_kind(m)
  if not layout then
    fail("module %s is a %s; only nn.Linear and Conv1D layers can be quantised", label, m.__name)
  end
  local q = C.quantize(w, kind, layout == "conv1d")
  q:set_label(label)
  if quant.is_quantized(m) then
    rawset(m, "weight", q)
    return
  end
  local base_repr = m.extra_repr
  m.weight = nil
  rawset(m, "weight", q)
  if rawget(m, "_peft_chain") == nil then rawset(m, "forward", quant_forward) end
  rawset(m, "extra_repr", function(self)
    local w = rawget(self, "weight")
    return base_repr(self) .. (C.is_qweight(w) and ", quant=" .. w:kind() or "")
  end)
end

--- ft.quant.dense_weight(m) -> layer m's weight as a float32 tensor in its own layout: the
-- dequantised values of a quantised layer, the weight (detached) of a float32 one.
function quant.dense_weight(m)
  local w = m.weight
  if C.is_qweight(w) then return w:dequantize() end
  return w:detach()
end

-- The modules of model that `modules` selects (PEFT's matching rule; nil: `default`, a
-- function of the model giving the paths, or every quantisable layer), as {path, module}. A
-- selected module that cannot be quantised is an error naming it.
local function selected(model, modules, where, default)
  local out = {}
  if modules == nil and default then modules = default(model) end
  if modules == nil then
    for path, m in model:named_modules() do
      if not A.is_adapter_path(path) and (layer_kind(m) or quant.is_quantized(m)) then
        out[#out + 1] = { path, m }
      end
    end
    return out
  end
  if type(modules) ~= "string" and type(modules) ~= "table" then
    error(("%s: modules must be a name, a pattern or a list of them, got %s"):format(where, type(modules)), 0)
  end
  if type(modules) == "table" then
    for i, v in ipairs(modules) do
      if type(v) ~= "string" then
        error(("%s: modules[%d] is a %s; modules must be a name, a pattern or a list of them"):format(where, i,
          type(v)), 0)
      end
    end
    if #modules == 0 then return out end
  end
  for _, e in ipairs(A.find_modules(model, modules)) do
    local path, m = e[1], e[2]
    if not layer_kind(m) then
      error(("%s: module %s is a %s; only nn.Linear and Conv1D layers can be quantised"):format(where, path,
        m.__name), 0)
    end
    out[#out + 1] = e
  end
  if #out == 0 then
    error(("%s: modules %s match no module of the model"):format(where,
      type(modules) == "table" and table.concat(modules, ", ") or modules), 0)
  end
  return out
end

--- ft.quant.default_modules(model) -> the paths of the layers quantised by default while
-- loading or building (from_pretrained, ft.models.new, ft.quant.build): every nn.Linear and
-- Conv1D inside the model's decoder blocks (model:checkpoint_modules()), so lm_head and the
-- embeddings stay float32 as bitsandbytes leaves them; for a model without blocks, every
-- Linear and Conv1D. Layers whose path ends with a name of the model's class field
-- float_modules stay float32 too (Mixtral's routers, "gate": a discrete choice that
-- quantisation error would flip).
function quant.default_modules(model)
  local paths = {}
  local blocks = type(model.checkpoint_modules) == "function" and model:checkpoint_modules() or nil
  local prefix
  if blocks then
    for path, m in model:named_modules() do
      if m == blocks then prefix = path .. "."; break end
    end
  end
  for path, m in model:named_modules() do
    local kept = false
    for _, name in ipairs(model.float_modules or {}) do
      if path == name or path:sub(-#name - 1) == "." .. name then kept = true end
    end
    if layer_kind(m) and not kept and not A.is_adapter_path(path) and (not prefix or path:sub(1, #prefix) == prefix) then
      paths[#paths + 1] = path
    end
  end
  return paths
end

--- ft.quant.quantize(model, kind, {modules = names or patterns}) -> model: replaces the weights
-- of the selected layers (default: every nn.Linear and Conv1D, adapters' own layers excepted)
-- by frozen quantised weights of kind "nf4", "nf4_fp32" or "int8". modules follow PEFT's
-- target rule (a plain name matches a dotted suffix, anything else is a Lua pattern). A
-- selected module that is neither (Conv2d, Embedding ...) is an error naming it; so is a
-- layer with adapters attached before it was quantised. Layers already quantised with kind are
-- left as they are.
function quant.quantize(model, kind, opts)
  local where = WHERE .. ".quantize"
  if not nn.is_module(model) then error(where .. ": a ft.nn model expected", 2) end
  quant.check_kind(kind, where)
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
    quant.set_weight(m, m.weight:detach(), kind, path ~= "" and path or model.__name)
  end
  return model
end

--- ft.quant.dequantize(model, {modules = names or patterns}) -> model: gives the quantised
-- layers (default: all) float32 weights again, the dequantised values, frozen (requires_grad
-- false), and their float32 forward. ft.quant.quantize requantises them.
function quant.dequantize(model, opts)
  local where = WHERE .. ".dequantize"
  if not nn.is_module(model) then error(where .. ": a ft.nn model expected", 2) end
  opts = ft.check_options(where, opts, { "modules" })
  for _, e in ipairs(selected(model, opts.modules, where)) do quant.dequantize_module(e[2]) end
  return model
end

--- ft.quant.dequantize_module(m [, dtype = "float32" [, w]]) -> m: layer m, if quantised,
-- gets a plain weight as a frozen parameter, the dequantised values or w (a float32 tensor
-- of the layer's shape: a dequantising merge's dequant(W) + delta) in dtype ("float32",
-- "bfloat16" or "float16", rounded once), and its plain forward back (a layer with adapters
-- keeps its chain, which then runs the dense matmul).
function quant.dequantize_module(m, dtype, w)
  if dtype ~= nil and dtype ~= "float32" and dtype ~= "bfloat16" and dtype ~= "float16" then
    fail("dequantize: dtype must be \"float32\", \"bfloat16\" or \"float16\", got %s", tostring(dtype))
  end
  if not quant.is_quantized(m) then return m end
  w = w or m.weight:dequantize()
  if dtype and dtype ~= "float32" then w = w:to(dtype) end
  rawset(m, "weight", nil)
  m.weight = nn.Parameter(w, false)
  rawset(m, "extra_repr", nil)
  if rawget(m, "forward") == quant_forward then rawset(m, "forward", nil) end
  return m
end

--- ft.quant.weight_bytes(shape, kind) -> the bytes a quantised weight of that 2-D shape holds
-- (what w:nbytes() will say), worked out without quantising: for sizing a model beforehand.
function quant.weight_bytes(shape, kind)
  local rows, cols = shape[1], shape[2]
  local n = rows * cols
  if kind == "int8" then return n + 4 * rows end
  local blocks = (n + 63) // 64
  local values = (n + 1) // 2
  if kind == "nf4_fp32" then return values + 4 * blocks end
  return values + blocks + 4 * ((blocks + 255) // 256) + 4
end

--- ft.quant.build(fn, kind, {modules = names or patterns}) -> model: builds the model fn()
-- returns (fn: a function, or a callable such as a module class) with its selected layers
-- (default: ft.quant.default_modules) quantised as kind, without the float32 model ever
-- existing: fn runs under ft.nn.init.defer, so its weights are allocated but never written
-- (untouched pages), then the recorded initialisations run in their order, a selected
-- layer's into a float32 buffer of its own that is quantised and freed as soon as its last
-- initialisation ran. The random numbers drawn, and so the weights, are those of fn() followed
-- by ft.quant.quantize(model, kind, {modules = ...}) (bit for bit). opts.check, a function
-- (model, targets {path, module}) called before any weight is written, may refuse the plan
-- (ft.models.new checks the size against the machine's memory there).
function quant.build(fn, kind, opts)
  local where = WHERE .. ".build"
  quant.check_kind(kind, where)
  opts = ft.check_options(where, opts, { "modules", "check" })
  if opts.check ~= nil and type(opts.check) ~= "function" then
    error(where .. ": option 'check' must be a function, got " .. type(opts.check), 0)
  end
  return quant.build_as(where, fn, kind, opts.modules, opts.check)
end

--- ft.quant.build_as(where, fn, kind, modules, check, dtype) -> model: ft.quant.build with its
-- options as arguments and errors starting with where (ft.models.new builds through it).
-- dtype ("bfloat16", ...: optional) is that of the float weights left unquantised, each
-- initialised in float32 on its own and converted, so no float32 copy of them all exists.
function quant.build_as(where, fn, kind, modules, check, dtype)
  ft.empty_cache()   -- weights allocated next must be fresh pages, not reused (resident) blocks
  local records, model = nn.init.defer(fn)
  if not nn.is_module(model) then error(where .. ": fn must return a ft.nn model, got " .. type(model), 0) end
  local targets = selected(model, modules, where, quant.default_modules)
  if check then check(model, targets) end
  local target_of = {}
  for _, e in ipairs(targets) do
    if not quant.is_quantized(e[2]) then target_of[e[2].weight] = e end
  end
  local converted = function(t) return dtype ~= nil and t:dtype() ~= "int64" and t:dtype() ~= dtype end
  nn.init.replay(records, function(t) return target_of[t] ~= nil or converted(t) end, function(t, buf)
    local e = target_of[t]
    if e then
      quant.set_weight(e[2], buf, kind, e[1])
      target_of[t] = nil
    else
      ft.no_grad(function() t:set_(buf:to(dtype)) end)
    end
  end)
  -- Selected layers that no initialiser wrote keep the values fn() left them.
  for t, e in pairs(target_of) do quant.set_weight(e[2], t:detach(), kind, e[1]) end
  target_of = nil   -- it holds the replaced weights
  collectgarbage()
  collectgarbage()   -- the unwritten float32 weights the quantised ones replace
  ft.empty_cache()
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
  for _, p in model:named_parameters() do db, dn = db + p:nbytes(), dn + p:numel() end
  for _, b in model:named_buffers() do db = db + b:nbytes() end
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

--- ft.quant.select(model, modules, where) -> array of {path, module}: the layers `modules`
-- selects (nil: ft.quant.default_modules), checked as ft.quant.quantize checks them (errors
-- start with where). The loaders use it to plan which tensors to quantise.
function quant.select(model, modules, where)
  return selected(model, modules, where or WHERE .. ".select", quant.default_modules)
end

return quant
