-- ft.models: the one registry of model definitions, HuggingFace checkpoints in and out, and
-- the pieces the definitions (ft/models/gpt2.lua, gpt2_classifier.lua, llama.lua, vit.lua,
-- resnet.lua) share.
--
--   local model = ft.models.from_pretrained("path/to/hf_dir")     -- config.json + safetensors
--   local out = model:forward(ids, {labels = ids})                -- ids: int64 [B,T], 1-based
--   local ids2 = model:generate(ids, {max_new_tokens = 20, temperature = 0.8, top_k = 40, seed = 1})
--   ft.models.save_pretrained(model, "out_dir")                   -- transformers loads it
--   local tiny = ft.models.new("gpt-s")                           -- a from-scratch preset
--   local net = ft.models.new("resnet-s", {num_classes = 4})       -- any registered preset
--
-- The registry (ft.models.architectures, .model_types, .presets):
--   family               architectures (config.json "architectures")        presets
--   GPT-2                GPT2LMHeadModel (model_type gpt2)                   gpt-s
--   GPT-2 classifier     GPT2ForSequenceClassification                       -
--   Llama family         LlamaForCausalLM, MistralForCausalLM,               llama-s
--                        Qwen2ForCausalLM (llama, mistral, qwen2)
--   ViT                  ViTForImageClassification (vit)                     vit-s
--   torchvision ResNets  ResNet (torchvision_resnet)                         resnet-s, resnet18,
--                                                                            resnet34, resnet50
-- The family modules are fields too (ft.models.resnet.resnet18{num_classes = 10}, loaded on first
-- use). ft.models.new(preset, overrides) and ft.models.new(config, overrides) build any of them
-- (overrides: config keys of that family; an unknown key is an error), from_pretrained(dir)
-- loads any of them from a folder save_pretrained wrote (or transformers, for the HF ones).
--
-- Configs are checked before anything is built: types, ranges (ft.models.LIMITS), divisibility
-- (n_embd % n_head ...), positive epsilons, known activations; the model's size against the
-- machine's memory; and in from_pretrained every tensor's name and shape against the weight
-- files' headers, so a config that does not fit its weights is an error naming config.json, the
-- key and the value, not an allocation.
--
-- Token ids are 1-based in Lua (HF id i is ft id i + 1); labels use -100 for "ignore", as HF.
-- Parameter names are HF's (transformer.h.0.attn.c_attn.weight, model.layers.0.self_attn.
-- q_proj.weight ...), so a model's state_dict maps one to one to the checkpoint's tensors.
local ft = require "ft"
local F = require "ft.nn.functional"

local M = {}

-- ---- config access ----------------------------------------------------------------------

local function is_null(v)
  if v == nil then return true end
  local json = ft.json
  return json ~= nil and v == json.null
end

-- A reader over an HF config table whose errors name the field: "field 'n_embd' is missing".
-- JSON null counts as absent. Integers may arrive as floats (96.0) and are converted.
local Reader = {}
Reader.__index = Reader

--- models.config_reader(config, what) -> a reader whose methods (int, num, positive, prob, str,
-- bool, raw) fetch checked config fields; errors read "<what>: config field 'n_head' ...".
function M.config_reader(config, what)
  if type(config) ~= "table" then error(("%s: config must be a table, got %s"):format(what, type(config)), 3) end
  return setmetatable({ config = config, what = what }, Reader)
end

--- Raises "<what>: <msg formatted with ...>".
function Reader:fail(msg, ...) error(self.what .. ": " .. msg:format(...), 0) end

--- The raw value of config field `key` (JSON null counts as absent: default).
function Reader:raw(key, default)
  local v = self.config[key]
  if is_null(v) then return default end
  return v
end

--- The integer config field `key` (default when absent), checked to lie in [lo, hi] when given.
function Reader:int(key, default, lo, hi)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  local i = math.type(v) and math.tointeger(v)
  if not i then self:fail("config field '%s' must be an integer, got %s", key, tostring(v)) end
  if (lo and i < lo) or (hi and i > hi) then
    self:fail("config field '%s' must be an integer in [%d, %d], got %s", key, lo or math.mininteger,
      hi or math.maxinteger, tostring(v))
  end
  return i
end

--- The number config field `key`: finite, and in [lo, hi] when given.
function Reader:num(key, default, lo, hi)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    self:fail("config field '%s' must be a finite number, got %s", key, tostring(v))
  end
  if (lo and v < lo) or (hi and v > hi) then
    self:fail("config field '%s' must be a number in [%s, %s], got %s", key, tostring(lo or -math.huge),
      tostring(hi or math.huge), tostring(v))
  end
  return v
end

--- A positive finite number (epsilons, rope theta): > 0 and <= hi (default 1e30).
function Reader:positive(key, default, hi)
  local v = self:num(key, default)
  if v <= 0 or v > (hi or 1e30) then
    self:fail("config field '%s' must be a positive number%s, got %s", key,
      hi and (" at most " .. tostring(hi)) or "", tostring(v))
  end
  return v
end

--- A probability (dropout rates): a number in [0, 1].
function Reader:prob(key, default) return self:num(key, default, 0, 1) end

--- The string config field `key` (default when absent).
function Reader:str(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "string" then self:fail("config field '%s' must be a string, got %s", key, tostring(v)) end
  return v
end

--- The boolean config field `key` (default when absent).
function Reader:bool(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "boolean" then self:fail("config field '%s' must be true or false, got %s", key, tostring(v)) end
  return v
end

--- models.copy_config(config, overrides) -> a deep copy of a config table (JSON null and
-- ft.json's array marks kept), with overrides applied on top.
function M.copy_config(config, overrides)
  local function copy(v)
    if type(v) ~= "table" or (ft.json and v == ft.json.null) then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = copy(x) end
    return setmetatable(out, getmetatable(v))
  end
  local out = copy(config)
  for k, v in pairs(overrides or {}) do out[k] = copy(v) end
  return out
end

--- models._check_options(where, opts, valid, level) -> opts (or {}): ft.check_options, its error
-- raised at `level` as error() counts it from the function calling this (1: that function's
-- caller; 0: no position), so a misspelled option points at the user's line.
function M._check_options(where, opts, valid, level)
  local ok, res = pcall(ft.check_options, where, opts, valid)
  if not ok then error(res, level == 0 and 0 or (level or 1) + 2) end
  return res
end

-- ---- limits and sizes -------------------------------------------------------------------

--- Upper bounds of config values, far above any released model and low enough that nothing
-- absurd gets built: a config outside them is an error, not an allocation.
M.LIMITS = {
  layers = 1024,              -- n_layer, num_hidden_layers, blocks per ResNet stage
  width = 1 << 16,            -- n_embd, hidden_size, head_dim, ResNet widths
  inner = 1 << 20,            -- n_inner, intermediate_size
  heads = 1 << 12,            -- n_head, num_attention_heads, num_key_value_heads
  vocab = 1 << 24,            -- vocab_size
  positions = 1 << 24,        -- n_positions, max_position_embeddings, sliding_window
  image = 1 << 14,            -- image_size, patch_size
  channels = 1 << 12,         -- num_channels, in_channels
  labels = 1 << 20,           -- num_labels, num_classes
}

-- HF metadata keys every family keeps in its config (accepted as overrides).
M.COMMON_CONFIG_KEYS = { "architectures", "model_type", "bos_token_id", "eos_token_id", "pad_token_id" }

--- models.config_keys(list) -> the list plus COMMON_CONFIG_KEYS: the override keys of a family.
function M.config_keys(list)
  local out = table.move(list, 1, #list, 1, {})
  for _, k in ipairs(M.COMMON_CONFIG_KEYS) do out[#out + 1] = k end
  return out
end

-- The number of elements of a shape, or nil when it does not fit in an integer.
local function numel_of(shape)
  local n = 1
  for _, d in ipairs(shape) do
    if d < 0 or (d > 0 and n > math.maxinteger // d) then return nil end
    n = n * d
  end
  return n
end

-- Bytes of memory this machine has (MemTotal), or nil when unknown.
local function machine_memory()
  local f = io.open("/proc/meminfo", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local kb = text:match("MemTotal:%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024 or nil
end

--- models.check_size(shapes, what): raises when the tensors of `shapes` (name -> shape) hold
-- more float32 bytes than this machine's memory. Returns the element count.
function M.check_size(shapes, what)
  local total = 0
  for name, shape in pairs(shapes) do
    local n = numel_of(shape)
    if n == nil or total > math.maxinteger - n then
      error(("%s: tensor %s [%s] is too large"):format(what, name, table.concat(shape, ",")), 0)
    end
    total = total + n
  end
  local memory = machine_memory() or (1 << 40)
  if total > memory // 4 then
    error(("%s: the model would hold %d parameters (%.1f GiB as float32), more than this machine's memory "
      .. "(%.1f GiB)"):format(what, total, total * 4 / 2 ^ 30, memory / 2 ^ 30), 0)
  end
  return total
end

-- ---- shared layers ----------------------------------------------------------------------

local ACTIVATIONS = {
  gelu = function(x) return F.gelu(x) end,
  gelu_new = function(x) return F.gelu(x, "tanh") end,
  gelu_pytorch_tanh = function(x) return F.gelu(x, "tanh") end,
  relu = function(x) return x:relu() end,
  silu = function(x) return F.silu(x) end,
  swish = function(x) return F.silu(x) end,
  quick_gelu = function(x) return x * (x * 1.702):sigmoid() end,
  tanh = function(x) return x:tanh() end,
}

--- The activation function HF names `name` (hidden_act / activation_function).
function M.activation(name, reader, field)
  local fn = ACTIVATIONS[name]
  if not fn then
    local names = {}
    for k in pairs(ACTIVATIONS) do names[#names + 1] = k end
    table.sort(names)
    reader:fail("config field '%s' is '%s'; supported: %s", field, tostring(name), table.concat(names, ", "))
  end
  return fn
end

--- Attention of the model definitions: q [B,Hq,T,D], k and v [B,Hkv,S,D] (Hkv divides Hq)
-- -> [B,Hq,T,D]. opts: {causal=, attn_mask= (additive, broadcast to [B,Hq,T,S]), scale=,
-- dropout_p=, training=}. causal aligns the diagonal bottom-right, so that with a KV cache of
-- S - T earlier positions query t sees keys s <= t + S - T. Attention dropout only in training.
function M.attention(q, k, v, opts)
  return F.scaled_dot_product_attention(q, k, v, {
    causal = opts.causal and "lower_right" or false, attn_mask = opts.attn_mask, scale = opts.scale,
    dropout_p = opts.training and opts.dropout_p or 0,
  })
end

--- models.input_embeddings(embedding, input_ids, inputs_embeds, what) -> [B,T,C]:
-- embedding(input_ids), or inputs_embeds as given (HF's rule: exactly one of the two).
function M.input_embeddings(embedding, input_ids, inputs_embeds, what)
  if inputs_embeds == nil then
    if input_ids == nil then error(what .. ": input_ids or opts.inputs_embeds is required", 4) end
    return embedding(input_ids)
  end
  if input_ids ~= nil then error(what .. ": pass input_ids or opts.inputs_embeds, not both", 4) end
  local d = embedding.embedding_dim
  if not ft.is_tensor(inputs_embeds) or inputs_embeds:dim() ~= 3 or inputs_embeds:size(3) ~= d then
    local shape = ft.is_tensor(inputs_embeds) and "[" .. table.concat(inputs_embeds:shape(), ",") .. "]"
      or type(inputs_embeds)
    error(("%s: inputs_embeds must be [batch, seq, %d], got %s"):format(what, d, shape), 4)
  end
  return inputs_embeds
end

--- HF's attention_mask [B, S] (1 = attend, 0 = padding) -> an additive float mask [B,1,1,S].
-- A large finite negative (not -inf) keeps rows that see only padding finite, as HF does.
function M.padding_mask(attention_mask)
  if attention_mask == nil then return nil end
  if attention_mask:dim() ~= 2 then
    error("ft.models: attention_mask must be [batch, seq], got [" .. table.concat(attention_mask:shape(), ",") .. "]", 3)
  end
  local m = attention_mask:float()
  return ((1 - m) * -1e30):reshape(m:size(1), 1, 1, m:size(2))
end

--- Next-token loss as HF computes it: position t predicts label t+1, mean over the labels
-- that are not -100. logits [B,T,V], labels int64 [B,T] (1-based).
function M.causal_lm_loss(logits, labels)
  local T, V = logits:size(2), logits:size(3)
  if labels:dim() == 1 and logits:size(1) == 1 then labels = labels:reshape(1, -1) end
  if labels:dim() ~= 2 or labels:size(1) ~= logits:size(1) or labels:size(2) ~= T then
    error(("ft.models: labels [%s] do not match logits [%s]"):format(table.concat(labels:shape(), ","),
      table.concat(logits:shape(), ",")), 3)
  end
  local lg = logits:narrow(2, 1, T - 1):reshape(-1, V)
  local lb = labels:narrow(2, 2, T - 1):reshape(-1)
  return F.cross_entropy(lg, lb, { ignore_index = -100 })
end

--- 1-based positions [B, T] of the last T of the S tokens covered by attention_mask [B, S]
-- (left padding: a row's first real token is position 1), as HF's generate derives them.
function M.positions_from_mask(attention_mask, T)
  local rows = attention_mask:totable()
  local out = {}
  for b, row in ipairs(rows) do
    local count, pos = 0, {}
    for j, m in ipairs(row) do
      if m ~= 0 then count = count + 1 end
      pos[j] = math.max(count, 1)
    end
    out[b] = table.move(pos, #pos - T + 1, #pos, 1, {})
  end
  return ft.tensor(out, { dtype = "int64" })
end

-- ---- generation -------------------------------------------------------------------------

-- HF's warpers in HF's order on one row of logits (a Lua array): temperature, top-k, top-p.
-- Returns the probabilities.
local function sampling_probs(row, temperature, top_k, top_p)
  local V = #row
  for i = 1, V do row[i] = row[i] / temperature end
  if top_k and top_k > 0 and top_k < V then
    local sorted = table.move(row, 1, V, 1, {})
    table.sort(sorted, function(a, b) return a > b end)
    local kth = sorted[top_k]
    for i = 1, V do if row[i] < kth then row[i] = -math.huge end end   -- ties with the k-th stay
  end
  local max = -math.huge
  for i = 1, V do if row[i] > max then max = row[i] end end
  local probs, total = {}, 0
  for i = 1, V do
    probs[i] = math.exp(row[i] - max)
    total = total + probs[i]
  end
  for i = 1, V do probs[i] = probs[i] / total end
  if top_p and top_p < 1 then
    -- Ascending order; drop tokens while the cumulative mass stays <= 1 - top_p, never the top one.
    local order = {}
    for i = 1, V do order[i] = i end
    table.sort(order, function(a, b) return probs[a] < probs[b] end)
    local cum, kept = 0, 0
    for n = 1, V - 1 do
      local i = order[n]
      cum = cum + probs[i]
      if cum <= 1 - top_p then probs[i] = 0 end
    end
    for i = 1, V do kept = kept + probs[i] end
    for i = 1, V do probs[i] = probs[i] / kept end
  end
  return probs
end

local function draw(probs)
  local u, cum = ft.rand(1):item(), 0
  local last = 1
  for i = 1, #probs do
    if probs[i] > 0 then
      cum = cum + probs[i]
      last = i
      if u < cum then return i end
    end
  end
  return last   -- rounding left u above the total
end

local GENERATE_OPTIONS = { "max_new_tokens", "temperature", "top_k", "top_p", "seed", "eos_token_id",
  "pad_token_id", "attention_mask" }

-- An option that must be an integer in [lo, hi] (or absent).
local function int_option(opts, key, lo, hi)
  local v = opts[key]
  if v == nil then return nil end
  local i = math.type(v) and math.tointeger(v)
  if not i or i < lo or i > hi then
    error(("generate: option '%s' must be an integer in [%d, %d], got %s"):format(key, lo, hi, tostring(v)), 4)
  end
  return i
end

-- A token id (1-based) or a list of them: a set of ids, and the first id.
local function token_ids_option(opts, key, vocab)
  local v = opts[key]
  if v == nil or is_null(v) then return nil end
  local list = type(v) == "table" and v or { v }
  if #list == 0 then error(("generate: option '%s' must be a token id or a non-empty list of them"):format(key), 4) end
  local set = {}
  for _, id in ipairs(list) do
    local i = math.type(id) and math.tointeger(id)
    if not i or i < 1 or (vocab and i > vocab) then
      error(("generate: option '%s' holds %s, not a token id in [1, %s] (ids are 1-based)"):format(key,
        tostring(id), vocab and tostring(vocab) or "vocab"), 4)
    end
    set[i] = true
  end
  return set, math.tointeger(list[1])
end

--- model:generate(ids [T] or [B,T] int64 1-based, opts) -> int64 [B, T + new] (prompt first).
-- opts: max_new_tokens=20 (>= 1), temperature (0 or nil: greedy; else > 0), top_k= (>= 0; 0:
-- off), top_p= (in (0, 1]), seed= (calls ft.manual_seed), eos_token_id= (an id or a list; a
-- finished row continues with pad_token_id, default the first eos id), attention_mask= [B,T] for
-- left-padded prompts. Unknown options and out-of-range values are errors.
-- Uses the key/value cache; runs without autograd and in eval mode (restored afterwards).
function M.generate(model, input_ids, opts)
  opts = M._check_options("generate", opts, GENERATE_OPTIONS)
  local ids = input_ids
  if not ft.is_tensor(ids) or ids:dtype() ~= "int64" then error("generate: input ids must be an int64 tensor", 2) end
  if ids:dim() ~= 1 and ids:dim() ~= 2 then
    error(("generate: input ids must be [T] or [B,T], got [%s]"):format(table.concat(ids:shape(), ",")), 2)
  end
  ids = ids:clone()   -- the result never aliases the caller's tensor
  if ids:dim() == 1 then ids = ids:reshape(1, -1) end
  local B, T = ids:size(1), ids:size(2)
  local vocab = model.config and math.tointeger(model.config.vocab_size)
  local max_new = int_option(opts, "max_new_tokens", 1, M.LIMITS.positions) or 20
  local temperature = opts.temperature or 0
  if type(temperature) ~= "number" or not (temperature >= 0 and temperature < math.huge) then
    error(("generate: option 'temperature' must be a finite number >= 0, got %s"):format(tostring(temperature)), 2)
  end
  local top_k = int_option(opts, "top_k", 0, math.maxinteger)
  local top_p = opts.top_p
  if top_p ~= nil and (type(top_p) ~= "number" or not (top_p > 0 and top_p <= 1)) then
    error(("generate: option 'top_p' must be a number in (0, 1], got %s"):format(tostring(top_p)), 2)
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error(("generate: option 'seed' must be an integer, got %s"):format(tostring(opts.seed)), 2)
  end
  local greedy = temperature == 0
  local eos, first_eos = token_ids_option(opts, "eos_token_id", vocab)
  local pad = opts.pad_token_id
  if pad ~= nil then _, pad = token_ids_option(opts, "pad_token_id", vocab) else pad = first_eos end
  local mask0 = opts.attention_mask
  if mask0 ~= nil and (not ft.is_tensor(mask0) or mask0:dim() ~= 2 or mask0:size(1) ~= B or mask0:size(2) ~= T) then
    error(("generate: option 'attention_mask' must be a [%d,%d] tensor like the ids, got %s"):format(B, T,
      ft.is_tensor(mask0) and "[" .. table.concat(mask0:shape(), ",") .. "]" or type(mask0)), 2)
  end
  if model.max_positions and T + max_new > model.max_positions then
    error(("generate: %d prompt + %d new tokens exceed the model's %d positions"):format(T, max_new,
      model.max_positions), 2)
  end
  if opts.seed then ft.manual_seed(opts.seed) end
  local was_training = model.training
  model:eval()
  local ok, result = pcall(ft.no_grad, function()
    local out_ids, step_input, past = ids, ids, nil
    local mask = opts.attention_mask
    local finished, n_finished = {}, 0
    for _ = 1, max_new do
      local fwd = { past_key_values = past, use_cache = true }
      if mask then
        fwd.attention_mask = mask
        fwd.position_ids = M.positions_from_mask(mask, step_input:size(2))
      end
      local out = model:forward(step_input, fwd)
      past = out.past_key_values
      local logits = out.logits:select(2, out.logits:size(2))   -- [B, V]
      local next_ids
      if greedy then
        next_ids = logits:argmax(2):totable()
      else
        next_ids = {}
        for b, row in ipairs(logits:totable()) do
          next_ids[b] = draw(sampling_probs(row, temperature, top_k, top_p))
        end
      end
      for b = 1, B do
        if finished[b] then
          next_ids[b] = pad
        elseif eos and eos[next_ids[b]] then
          finished[b] = true
          n_finished = n_finished + 1
        end
      end
      step_input = ft.tensor(next_ids, { dtype = "int64" }):reshape(B, 1)
      out_ids = ft.cat({ out_ids, step_input }, 2)
      if mask then mask = ft.cat({ mask, ft.ones({ B, 1 }, { dtype = mask:dtype() }) }, 2) end
      if n_finished == B then break end
    end
    return out_ids
  end)
  if was_training then model:train() end
  if not ok then error(result, 0) end
  return result
end

-- ---- registry ---------------------------------------------------------------------------

-- architecture -> {module = Lua module defining it, model_type = HF model_type}
M.architectures = {}
-- model_type -> default architecture
M.model_types = {}
-- preset name -> Lua module whose config(name) builds it
M.presets = {}

--- Registers an architecture: M.register("GPT2LMHeadModel", {module = "ft.models.gpt2",
-- model_type = "gpt2", presets = {"gpt-s"}}). The module exports a class under the architecture's
-- name, built from a config table, with read_config(config) -> checked config, tensor_shapes(c)
-- -> name -> shape (and tied alias -> target), config_keys (the override keys), and
-- config(preset, overrides) for its presets.
function M.register(architecture, spec)
  M.architectures[architecture] = spec
  if spec.model_type and not M.model_types[spec.model_type] then M.model_types[spec.model_type] = architecture end
  for _, name in ipairs(spec.presets or {}) do M.presets[name] = spec.module end
end

M.register("GPT2LMHeadModel", { module = "ft.models.gpt2", model_type = "gpt2", presets = { "gpt-s" } })
M.register("GPT2ForSequenceClassification", { module = "ft.models.gpt2_classifier" })
M.register("LlamaForCausalLM", { module = "ft.models.llama", model_type = "llama", presets = { "llama-s" } })
M.register("MistralForCausalLM", { module = "ft.models.llama", model_type = "mistral" })
M.register("Qwen2ForCausalLM", { module = "ft.models.llama", model_type = "qwen2" })
M.register("ViTForImageClassification", { module = "ft.models.vit", model_type = "vit", presets = { "vit-s" } })
-- torchvision's structure and names, not HF's ResNetForImageClassification (model_type "resnet").
M.register("ResNet", { module = "ft.models.resnet", model_type = "torchvision_resnet",
  presets = { "resnet-s", "resnet18", "resnet34", "resnet50" } })

local sorted_keys = require("ft.tables").sorted_keys

local function supported()
  return ("supported architectures: %s (model_type %s)"):format(table.concat(sorted_keys(M.architectures), ", "),
    table.concat(sorted_keys(M.model_types), ", "))
end

-- The architecture a config asks for: the first of "architectures" that is registered,
-- else the default one of "model_type".
local function architecture_of(config)
  if type(config) ~= "table" then error("a config table expected, got " .. type(config), 0) end
  local archs = config.architectures
  local asked = {}
  if type(archs) == "table" then
    for _, a in ipairs(archs) do
      if M.architectures[a] then return a end
      asked[#asked + 1] = tostring(a)
    end
  end
  local mt = config.model_type
  if type(mt) == "string" and M.model_types[mt] then return M.model_types[mt] end
  error(("unsupported architecture %s (model_type %s); %s"):format(#asked > 0 and table.concat(asked, ", ") or "none",
    tostring(is_null(mt) and "none" or mt), supported()), 0)
end

local function class_of(arch)
  return require(M.architectures[arch].module)[arch]
end

-- Checks overrides of a config against the keys its family reads.
local function check_overrides(where, overrides, config)
  if overrides == nil then return end
  if type(overrides) ~= "table" then error(("%s: overrides must be a table, got %s"):format(where, type(overrides)), 0) end
  local ok, arch = pcall(architecture_of, config)
  if not ok then return end   -- reported when the model is built
  local keys = class_of(arch).config_keys
  if keys then M._check_options(where, overrides, keys, 0) end
end

-- The config of a preset with overrides applied; errors without a position (callers add theirs).
local function preset_config(name, overrides, where)
  local module = M.presets[name]
  if not module then
    error(("%s: unknown preset '%s'; presets: %s"):format(where, tostring(name),
      table.concat(sorted_keys(M.presets), ", ")), 0)
  end
  local family = require(module)
  check_overrides(where, overrides, family.config(name))
  return family.config(name, overrides)
end

--- ft.models.config(preset, overrides) -> the config table of a preset (a fresh copy) with
-- overrides applied, e.g. ft.models.config("gpt-s", {n_layer = 2}). Overrides are config keys of
-- the preset's family; an unknown one is an error naming it.
function M.config(name, overrides)
  local ok, config = pcall(preset_config, name, overrides, "ft.models.config")
  if not ok then error(config, 2) end
  return config
end

-- What a config builds, worked out without allocating: the class, the checked config, the
-- tensors (name -> shape, tied copies left out) and the tied names (alias -> target).
local function plan(config)
  local class = class_of(architecture_of(config))
  local c = class.read_config(config)
  local shapes, tied = class.tensor_shapes(c)
  M.check_size(shapes, class.hf_architecture or "model")
  return class, shapes, tied or {}
end

--- ft.models.new(preset or config, overrides) -> a new randomly initialised model, from a preset
-- name (ft.models.presets) or an HF-style config table (its "architectures" / "model_type" picks
-- the class). The config is checked before anything is allocated.
function M.new(name_or_config, overrides)
  local where = "ft.models.new"
  local config = name_or_config
  local ok, err = pcall(function()
    if type(config) == "string" then
      config = preset_config(config, overrides, where)
    else
      check_overrides(where, overrides, config)
      if overrides then config = M.copy_config(config, overrides) end
    end
  end)
  if not ok then error(err, 2) end
  local built, model = pcall(function()
    local class = plan(config)
    return class(config)
  end)
  if not built then error(where .. ": " .. tostring(model), 2) end
  return model
end

-- ---- reading and writing checkpoints ----------------------------------------------------------

local fs = require "ft.fs"
local file_exists = fs.exists

-- config.json and index files are small: a bigger one is refused before it is read.
local MAX_JSON_BYTES = 64 << 20

local function read_json(path, where)
  local f, err = io.open(path, "rb")
  if not f then error(("%s: cannot read %s"):format(where, err), 0) end   -- err names the path
  local size = f:seek("end")
  f:close()
  if size == nil then error(("%s: cannot read %s"):format(where, path), 0) end
  if size > MAX_JSON_BYTES then
    error(("%s: %s is %d bytes, more than the %d a JSON config may have"):format(where, path, size, MAX_JSON_BYTES), 0)
  end
  local text = fs.read(path)
  local ok, value = pcall(ft.json.decode, text)
  if not ok then error(("%s: %s is not valid JSON: %s"):format(where, path, tostring(value)), 0) end
  if type(value) ~= "table" or value == ft.json.null then
    error(("%s: %s must hold a JSON object"):format(where, path), 0)
  end
  return value
end

-- The weight files of a folder: {path, ...}, a description for messages, and for sharded
-- checkpoints the index's weight_map (name -> file).
local function weight_files(dir, where)
  local single = dir .. "/model.safetensors"
  if file_exists(single) then return { single }, single end
  local index_path = dir .. "/model.safetensors.index.json"
  if not file_exists(index_path) then
    error(("%s: no model.safetensors or model.safetensors.index.json in %s"):format(where, dir), 0)
  end
  local map = read_json(index_path, where).weight_map
  if type(map) ~= "table" then error(("%s: %s has no weight_map"):format(where, index_path), 0) end
  local files, seen = {}, {}
  for name, file in pairs(map) do
    if type(name) ~= "string" or type(file) ~= "string" or file:find("/", 1, true) or file == ".." then
      error(("%s: %s maps %s to %s, not a file name in the folder"):format(where, index_path, tostring(name),
        tostring(file)), 0)
    end
    if not seen[file] then
      seen[file] = true
      files[#files + 1] = dir .. "/" .. file
    end
  end
  table.sort(files)
  return files, index_path, map
end

-- name -> shape from the weight files' headers (nothing loaded), checked against the index.
local function weight_shapes(dir, files, source, map, where)
  local out, origin = {}, {}
  for _, path in ipairs(files) do
    local ok, info = pcall(ft.safetensors.info, path)
    if not ok then error(("%s: %s"):format(where, tostring(info)), 0) end
    for name, entry in pairs(info) do
      if out[name] ~= nil then
        error(("%s: tensor %s is in both %s and %s"):format(where, name, origin[name], path), 0)
      end
      out[name], origin[name] = entry.shape, path
    end
  end
  for name, file in pairs(map or {}) do
    if origin[name] ~= dir .. "/" .. file then
      error(("%s: %s maps %s to %s, which does not hold it"):format(where, source, name, file), 0)
    end
  end
  return out
end

-- name -> tensor from the weight files (model.safetensors or the shards of the index).
local function read_weights(files)
  local out = {}
  for _, path in ipairs(files) do
    for name, t in pairs(ft.safetensors.load(path)) do out[name] = t end
  end
  return out
end

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

local function tied_of(model)
  return model.tied_weights and model:tied_weights() or {}
end

local function short_list(names)
  table.sort(names)
  if #names > 12 then
    return table.concat(names, ", ", 1, 12) .. (", ... (%d in all)"):format(#names)
  end
  return table.concat(names, ", ")
end

-- A checkpoint's names as the model's: checkpoints saved from the base model (without the
-- class's base_model_prefix) are renamed, buffers HF itself skips (ignore_on_load patterns)
-- dropped, tied copies folded onto their target. src: name -> value; expects(name) says whether
-- the model has a tensor of that name. Returns a new table.
local function as_model_names(class, src, expects, tied)
  local out = {}
  for k, v in pairs(src) do out[k] = v end
  local prefix = class.base_model_prefix
  if prefix then
    local has_prefix = false
    for k in pairs(out) do
      if k:sub(1, #prefix + 1) == prefix .. "." then has_prefix = true; break end
    end
    if not has_prefix then
      local renamed = {}
      for k, v in pairs(out) do
        renamed[not expects(k) and expects(prefix .. "." .. k) and prefix .. "." .. k or k] = v
      end
      out = renamed
    end
  end
  for k in pairs(out) do
    for _, pattern in ipairs(class.ignore_on_load or {}) do
      if k:find(pattern) then out[k] = nil; break end
    end
  end
  for alias, target in pairs(tied) do
    if out[target] == nil then out[target] = out[alias] end
    out[alias] = nil
  end
  return out
end

-- Compares src (name -> shape array, model names) with the expected shapes; raises one error
-- listing the missing, mis-shaped and unexpected tensors.
local function check_names_and_shapes(expected, src, source, where, against)
  local missing, unexpected, problems = {}, {}, {}
  for _, k in ipairs(sorted_keys(expected)) do
    local shape = src[k]
    if shape == nil then
      missing[#missing + 1] = k
    elseif shape_str(shape) ~= shape_str(expected[k]) then
      problems[#problems + 1] = ("tensor %s has shape %s in %s, %s expects %s"):format(k, shape_str(shape), source,
        against, shape_str(expected[k]))
    end
  end
  for k in pairs(src) do
    if expected[k] == nil then unexpected[#unexpected + 1] = k end
  end
  if #missing > 0 then
    table.insert(problems, 1, ("missing tensor(s) in %s (%s has them): %s"):format(source, against,
      short_list(missing)))
  end
  if #unexpected > 0 then
    problems[#problems + 1] = ("unexpected tensor(s) in %s (%s has none of them): %s"):format(source, against,
      short_list(unexpected))
  end
  if #problems > 0 then error(where .. ": " .. table.concat(problems, "; "), 0) end
end

--- ft.models.load_hf_state_dict(model, sd, source, where): copies an HF-named state dict into the
-- model, strictly: every tensor of the model must be there with its shape and dtype, and nothing
-- else (tied copies such as GPT-2's lm_head.weight may be absent). Checkpoints saved from the
-- base model (without the "transformer." / "model." prefix) and buffers HF itself skips (the
-- class's ignore_on_load patterns) are accepted. `source` names the file in error messages.
function M.load_hf_state_dict(model, sd, source, where)
  where = where or "ft.models.load_hf_state_dict"
  source = source or "the state dict"
  local own, keys = model:state_dict({ keep_vars = true })
  local tied = tied_of(model)
  local src = as_model_names(model, sd, function(k) return own[k] ~= nil end, tied)
  local expected, shapes = {}, {}
  for _, k in ipairs(keys) do
    if not tied[k] then expected[k] = own[k]:shape() end
  end
  local problems = {}
  for k, t in pairs(src) do
    if not ft.is_tensor(t) then
      problems[#problems + 1] = ("%s is a %s, not a tensor"):format(k, type(t))
    else
      shapes[k] = t:shape()
      if expected[k] and shape_str(shapes[k]) == shape_str(expected[k]) and t:dtype() ~= own[k]:dtype() then
        problems[#problems + 1] = ("tensor %s is %s in %s, the model expects %s"):format(k, t:dtype(), source,
          own[k]:dtype())
      end
    end
  end
  if #problems > 0 then error(where .. ": " .. table.concat(problems, "; "), 0) end
  check_names_and_shapes(expected, shapes, source, where, "the model")
  ft.no_grad(function()
    for _, k in ipairs(keys) do
      if not tied[k] then own[k]:copy_(src[k]) end
    end
  end)
  return model
end

--- ft.models.from_pretrained(dir, opts) -> model: loads an HF model folder. config.json picks the
-- architecture ("architectures", else "model_type") and is checked first; model.safetensors (or
-- the shards of model.safetensors.index.json) must hold exactly the model's tensors, with their
-- shapes, which is checked from the files' headers before the model is allocated. Returns the
-- model in eval mode; model.config is the config table. opts: none yet (an options table with
-- any key is an error).
function M.from_pretrained(dir, opts)
  local where = "ft.models.from_pretrained"
  M._check_options(where, opts, {})
  if type(dir) ~= "string" then error(where .. ": a directory path expected, got " .. type(dir), 2) end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local config_path = dir .. "/config.json"
  local config = read_json(config_path, where)
  local ok, class, shapes, tied = pcall(plan, config)
  if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(class)), 0) end
  local files, source, map = weight_files(dir, where)
  local in_file = weight_shapes(dir, files, source, map, where)
  local expects = function(k) return shapes[k] ~= nil or tied[k] ~= nil end
  check_names_and_shapes(shapes, as_model_names(class, in_file, expects, tied), source, where,
    "the model of " .. config_path)
  local model
  ok, model = pcall(class, config)
  if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(model)), 0) end
  M.load_hf_state_dict(model, read_weights(files), source, where)
  model:eval()
  return model
end

--- ft.models.save_pretrained(model, dir, opts) -> dir: writes config.json and model.safetensors
-- (HF names and layouts, tied copies left out as HF does) into dir, created if needed, so that
-- transformers' from_pretrained (and ft.models.from_pretrained) loads it. Other files of dir (a
-- tokenizer's) stay. opts: none yet (an options table with any key is an error).
function M.save_pretrained(model, dir, opts)
  local where = "ft.models.save_pretrained"
  M._check_options(where, opts, {})
  if type(model) ~= "table" or type(model.config) ~= "table" or not model.hf_architecture then
    error(where .. ": the model has no HF config (build it with ft.models.new or from_pretrained)", 2)
  end
  if type(dir) ~= "string" or dir == "" then error(where .. ": a directory path expected, got " .. type(dir), 2) end
  dir = dir:gsub("/+$", "")
  local config = M.copy_config(model.config)
  config.architectures = { model.hf_architecture }
  config.model_type = model.hf_model_type
  local tied = tied_of(model)
  local sd, keys = model:state_dict()
  local out = {}
  for _, k in ipairs(keys) do
    if not tied[k] then out[k] = sd[k] end
  end
  fs.mkdir(dir, where)
  -- transformers rejects safetensors metadata without a known "format".
  ft.safetensors.save(dir .. "/model.safetensors", out, { metadata = { format = "pt" } })
  ft.json.write(dir .. "/config.json", config, { indent = true })
  return dir
end

-- The family modules as fields, loaded on first use: ft.models.resnet is require "ft.models.resnet"
-- (resnet_s, resnet18 ..., from_safetensors), likewise gpt2, gpt2_classifier, llama, vit.
local FAMILIES = { gpt2 = true, gpt2_classifier = true, llama = true, vit = true, resnet = true }
setmetatable(M, {
  __index = function(t, key)
    if not FAMILIES[key] then return nil end
    local family = require("ft.models." .. key)
    rawset(t, key, family)
    return family
  end,
})

return M
