-- ft.models: HuggingFace transformer checkpoints in and out, the architecture registry,
-- and the pieces the model definitions (ft/models/gpt2.lua, llama.lua, vit.lua, resnet.lua) share.
--
--   local model = ft.models.from_pretrained("path/to/hf_dir")     -- config.json + safetensors
--   local out = model:forward(ids, {labels = ids})                -- ids: int64 [B,T], 1-based
--   local ids2 = model:generate(ids, {max_new_tokens = 20, temperature = 0.8, top_k = 40, seed = 1})
--   ft.models.save_pretrained(model, "out_dir")                   -- transformers loads it
--   local tiny = ft.models.new("gpt-s")                           -- a from-scratch preset
--   local net = ft.models.new("resnet-s", {num_classes = 4})       -- any registered preset
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

function M.config_reader(config, what)
  if type(config) ~= "table" then error(("%s: config must be a table, got %s"):format(what, type(config)), 3) end
  return setmetatable({ config = config, what = what }, Reader)
end

function Reader:fail(msg, ...) error(self.what .. ": " .. msg:format(...), 0) end

function Reader:raw(key, default)
  local v = self.config[key]
  if is_null(v) then return default end
  return v
end

function Reader:int(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  local i = math.type(v) and math.tointeger(v)
  if not i then self:fail("config field '%s' must be an integer, got %s", key, tostring(v)) end
  return i
end

function Reader:num(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "number" then self:fail("config field '%s' must be a number, got %s", key, tostring(v)) end
  return v
end

function Reader:str(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "string" then self:fail("config field '%s' must be a string, got %s", key, tostring(v)) end
  return v
end

function Reader:bool(key, default)
  local v = self:raw(key, default)
  if v == nil then self:fail("config field '%s' is missing", key) end
  if type(v) ~= "boolean" then self:fail("config field '%s' must be true or false, got %s", key, tostring(v)) end
  return v
end

-- A deep copy of a config table (JSON null and ft.json's array marks kept), with overrides
-- applied on top.
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

-- The input embeddings [B,T,C]: embedding(input_ids), or inputs_embeds as given (HF's rule:
-- exactly one of the two).
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

local function as_set(v)
  if v == nil or is_null(v) then return nil end
  local set = {}
  if type(v) == "table" then for _, x in ipairs(v) do set[x] = true end else set[v] = true end
  return set
end

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

--- model:generate(ids [T] or [B,T] int64 1-based, opts) -> int64 [B, T + new] (prompt first).
-- opts: max_new_tokens=20, temperature (0 or nil: greedy), top_k=, top_p=, seed= (calls
-- ft.manual_seed), eos_token_id= (an id or a list; a finished row continues with
-- pad_token_id, default the first eos id), attention_mask= [B,T] for left-padded prompts.
-- Uses the key/value cache; runs without autograd and in eval mode (restored afterwards).
function M.generate(model, input_ids, opts)
  opts = opts or {}
  local ids = input_ids
  if not ft.is_tensor(ids) or ids:dtype() ~= "int64" then error("generate: input ids must be an int64 tensor", 2) end
  ids = ids:clone()   -- the result never aliases the caller's tensor
  if ids:dim() == 1 then ids = ids:reshape(1, -1) end
  local B, T = ids:size(1), ids:size(2)
  local max_new = opts.max_new_tokens or 20
  local temperature = opts.temperature or 0
  local greedy = temperature == 0
  local eos = as_set(opts.eos_token_id)
  local pad = opts.pad_token_id
  if pad == nil and eos then pad = type(opts.eos_token_id) == "table" and opts.eos_token_id[1] or opts.eos_token_id end
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
          next_ids[b] = draw(sampling_probs(row, temperature, opts.top_k, opts.top_p))
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

--- Registers an architecture: M.register("GPT2LMHeadModel", {module = "ft.models.gpt2", model_type = "gpt2"}).
-- The module must export a constructor under the architecture's name taking an HF config.
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
M.register("ResNet", { module = "ft.models.resnet", model_type = "resnet",
  presets = { "resnet-s", "resnet18", "resnet34", "resnet50" } })

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function supported()
  return ("supported architectures: %s (model_type %s)"):format(table.concat(sorted_keys(M.architectures), ", "),
    table.concat(sorted_keys(M.model_types), ", "))
end

-- The architecture a config asks for: the first of "architectures" that is registered,
-- else the default one of "model_type".
local function architecture_of(config)
  local archs = config.architectures
  if type(archs) == "table" then
    for _, a in ipairs(archs) do
      if M.architectures[a] then return a end
    end
  end
  local mt = config.model_type
  if type(mt) == "string" and M.model_types[mt] then return M.model_types[mt] end
  local asked = type(archs) == "table" and #archs > 0 and table.concat(archs, ", ") or "none"
  error(("unsupported architecture %s (model_type %s); %s"):format(asked, tostring(is_null(mt) and "none" or mt),
    supported()), 0)
end

--- The config table of a preset (a fresh copy; overrides are applied on top), e.g.
-- ft.models.config("gpt-s", {n_layer = 2}).
function M.config(name, overrides)
  local module = M.presets[name]
  if not module then
    error(("ft.models.config: unknown preset '%s'; presets: %s"):format(tostring(name),
      table.concat(sorted_keys(M.presets), ", ")), 2)
  end
  return require(module).config(name, overrides)
end

local function build(config)
  local arch = architecture_of(config)
  local spec = M.architectures[arch]
  local class = require(spec.module)[arch]
  return class(config)
end

--- A new randomly initialised model from a preset name or an HF config table.
function M.new(name_or_config, overrides)
  local config = name_or_config
  if type(config) == "string" then config = M.config(config, overrides)
  elseif overrides then config = M.copy_config(config, overrides) end
  local ok, model = pcall(build, config)
  if not ok then error("ft.models.new: " .. tostring(model), 2) end
  return model
end

-- ---- reading and writing checkpoints ----------------------------------------------------------

local fs = require "ft.fs"
local file_exists = fs.exists

local function read_json(path, where)
  local f, err = io.open(path, "rb")
  if not f then error(("%s: cannot read %s"):format(where, err), 0) end   -- err names the path
  local text = f:read("a")
  f:close()
  local ok, value = pcall(ft.json.decode, text)
  if not ok then error(("%s: %s is not valid JSON: %s"):format(where, path, tostring(value)), 0) end
  if type(value) ~= "table" or value == ft.json.null then
    error(("%s: %s must hold a JSON object"):format(where, path), 0)
  end
  return value
end

-- name -> tensor from model.safetensors or the shards of model.safetensors.index.json,
-- and a description of where they came from (for error messages).
local function read_weights(dir, where)
  local single = dir .. "/model.safetensors"
  if file_exists(single) then return ft.safetensors.load(single), single end
  local index_path = dir .. "/model.safetensors.index.json"
  if not file_exists(index_path) then
    error(("%s: no model.safetensors or model.safetensors.index.json in %s"):format(where, dir), 0)
  end
  local index = read_json(index_path, where)
  local map = index.weight_map
  if type(map) ~= "table" then error(("%s: %s has no weight_map"):format(where, index_path), 0) end
  local shards, out = {}, {}
  for name, file in pairs(map) do
    if not shards[file] then shards[file] = ft.safetensors.load(dir .. "/" .. file) end
    local t = shards[file][name]
    if t == nil then
      error(("%s: %s maps %s to %s, which does not hold it"):format(where, index_path, name, file), 0)
    end
    out[name] = t
  end
  for file, tensors in pairs(shards) do
    for name, t in pairs(tensors) do
      if out[name] == nil then out[name] = t end   -- unlisted tensors count as unexpected below
    end
    shards[file] = nil
  end
  return out, index_path
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

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

--- Copies an HF-named state dict into the model, strictly: every tensor of the model must be
-- there with its shape, and nothing else (tied copies such as GPT-2's lm_head.weight may be
-- absent). Checkpoints saved from the base model (without the "transformer." / "model."
-- prefix) and buffers HF itself skips (the class's ignore_on_load patterns) are accepted.
-- `source` names the file in error messages.
function M.load_hf_state_dict(model, sd, source, where)
  where = where or "ft.models.load_hf_state_dict"
  source = source or "the state dict"
  local own, keys = model:state_dict({ keep_vars = true })
  local tied = tied_of(model)
  local src = {}
  for k, v in pairs(sd) do src[k] = v end

  local prefix = model.base_model_prefix
  if prefix then
    local has_prefix = false
    for k in pairs(src) do
      if k:sub(1, #prefix + 1) == prefix .. "." then has_prefix = true; break end
    end
    if not has_prefix then
      local renamed = {}
      for k, v in pairs(src) do
        renamed[own[k] == nil and own[prefix .. "." .. k] ~= nil and prefix .. "." .. k or k] = v
      end
      src = renamed
    end
  end
  for k in pairs(src) do
    for _, pattern in ipairs(model.ignore_on_load or {}) do
      if k:find(pattern) then src[k] = nil; break end
    end
  end
  for alias, target in pairs(tied) do
    if src[target] == nil then src[target] = src[alias] end
    src[alias] = nil
  end

  local missing, unexpected, problems = {}, {}, {}
  for _, k in ipairs(keys) do
    if not tied[k] then
      local t = src[k]
      if t == nil then
        missing[#missing + 1] = k
      elseif not ft.is_tensor(t) then
        problems[#problems + 1] = ("%s is a %s, not a tensor"):format(k, type(t))
      elseif shape_str(t) ~= shape_str(own[k]) or t:dtype() ~= own[k]:dtype() then
        problems[#problems + 1] = ("tensor %s has shape %s (%s) in %s, the model expects %s (%s)"):format(k,
          shape_str(t), t:dtype(), source, shape_str(own[k]), own[k]:dtype())
      end
    end
  end
  for k in pairs(src) do
    if own[k] == nil then unexpected[#unexpected + 1] = k end
  end
  if #missing > 0 then
    table.insert(problems, 1, ("missing tensor(s) in %s: %s"):format(source, short_list(missing)))
  end
  if #unexpected > 0 then
    problems[#problems + 1] = ("unexpected tensor(s) in %s: %s"):format(source, short_list(unexpected))
  end
  if #problems > 0 then error(where .. ": " .. table.concat(problems, "; "), 0) end
  ft.no_grad(function()
    for _, k in ipairs(keys) do
      if not tied[k] then own[k]:copy_(src[k]) end
    end
  end)
  return model
end

--- Loads an HF model folder: config.json picks the architecture ("architectures", else
-- "model_type"), model.safetensors (or the shards of model.safetensors.index.json) holds the
-- weights, loaded strictly. Returns the model in eval mode; model.config is the config table.
function M.from_pretrained(dir, opts)
  local where = "ft.models.from_pretrained"
  if type(dir) ~= "string" then error(where .. ": a directory path expected", 2) end
  dir = dir:gsub("/+$", "")
  local config_path = dir .. "/config.json"
  local config = read_json(config_path, where)
  local ok, model = pcall(build, config)
  if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(model)), 0) end
  local sd, source = read_weights(dir, where)
  M.load_hf_state_dict(model, sd, source, where)
  model:eval()
  return model
end

--- Writes config.json and model.safetensors (HF names and layouts, tied copies left out as
-- HF does) into dir, created if needed, so that transformers' from_pretrained loads it.
function M.save_pretrained(model, dir)
  local where = "ft.models.save_pretrained"
  if type(model) ~= "table" or type(model.config) ~= "table" then
    error(where .. ": the model has no HF config (build it with ft.models or a models/ constructor)", 2)
  end
  dir = dir:gsub("/+$", "")
  fs.mkdir(dir, where)
  local config = M.copy_config(model.config)
  config.architectures = { model.hf_architecture }
  config.model_type = model.hf_model_type
  local tied = tied_of(model)
  local sd, keys = model:state_dict()
  local out = {}
  for _, k in ipairs(keys) do
    if not tied[k] then out[k] = sd[k] end
  end
  -- transformers rejects safetensors metadata without a known "format".
  ft.safetensors.save(dir .. "/model.safetensors", out, { metadata = { format = "pt" } })
  ft.json.write(dir .. "/config.json", config, { indent = true })
  return dir
end

return M
