-- ft.models.common: what the model definitions (gpt2, gpt2_classifier, llama, vit, resnet)
-- share: reading and checking their HF config tables, and the transformer pieces (activations,
-- attention, input embeddings, padding masks, the next-token loss).
--
--   local common = require "ft.models.common"
--   local r = common.config_reader(config, "GPT2LMHeadModel")
--   local n_embd = r:int("n_embd", nil, 1, common.LIMITS.width)   -- errors name the field
--   local act = common.activation(r:str("activation_function", "gelu_new"), r, "activation_function")
--   local y = common.attention(q, k, v, {causal = true, scale = 1 / math.sqrt(head_dim)})
--
-- ft.models re-exports these under its own name (ft.models.copy_config, ft.models.LIMITS ...).
local ft = require "ft"
local F = require "ft.nn.functional"

local M = {}

-- ---- config access ----------------------------------------------------------------------

--- common.is_null(v) -> whether a config value counts as absent: nil or JSON null (ft.json.null).
function M.is_null(v)
  if v == nil then return true end
  local json = ft.json
  return json ~= nil and v == json.null
end
local is_null = M.is_null

-- A reader over an HF config table whose errors name the field: "field 'n_embd' is missing".
-- JSON null counts as absent. Integers may arrive as floats (96.0) and are converted.
local Reader = {}
Reader.__index = Reader

--- common.config_reader(config, what) -> a reader whose methods (int, num, positive, prob, str,
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

--- common.copy_config(config, overrides) -> a deep copy of a config table (JSON null and
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

--- common.check_options(where, opts, valid, level) -> opts (or {}): ft.check_options, its error
-- raised at `level` as error() counts it from the function calling this (1: that function's
-- caller; 0: no position), so a misspelled option points at the user's line.
function M.check_options(where, opts, valid, level)
  local ok, res = pcall(ft.check_options, where, opts, valid)
  if not ok then error(res, level == 0 and 0 or (level or 1) + 2) end
  return res
end

-- ---- limits -----------------------------------------------------------------------------

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

-- The gated forms act(gate) * up that the core computes in one op.
local GATED = { silu = F.silu_mul, swish = F.silu_mul }

--- The gated activation (gate, up) -> act(gate) * up of the gated MLPs, for HF's activation
-- `name` (checked as M.activation checks it): F.silu_mul for silu / swish, one pass that keeps
-- only gate and up for backward; otherwise act(gate) * up with act's output freed at once.
function M.gated_activation(name, reader, field)
  local act = M.activation(name, reader, field)
  local fused = GATED[name]
  if fused then return fused end
  return function(gate, up)
    local a <close> = act(gate)
    return a * up
  end
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

--- common.input_embeddings(embedding, input_ids, inputs_embeds, what) -> [B,T,C]:
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
  local B, T, V = logits:size(1), logits:size(2), logits:size(3)
  if labels:dim() == 1 and B == 1 then labels = labels:reshape(1, -1) end
  if labels:dim() ~= 2 or labels:size(1) ~= B or labels:size(2) ~= T then
    error(("ft.models: labels [%s] do not match logits [%s]"):format(table.concat(labels:shape(), ","),
      table.concat(logits:shape(), ",")), 3)
  end
  -- Shift the labels, not the logits (no [B*T, V] copy, no second gradient); the last scores none.
  local shifted = ft.cat({ labels:narrow(2, 2, T - 1), ft.full({ B, 1 }, -100, { dtype = "int64" }) }, 2)
  return F.cross_entropy(logits:reshape(-1, V), shifted:reshape(-1), { ignore_index = -100 })
end

-- Floats of one chunk's logits in chunked_lm_loss, at most (32 MiB): every chunk reads the
-- whole lm_head weight (three times: forward, recompute, backward), so chunks are kept few.
local LOSS_CHUNK_FLOATS = 1 << 23

--- common.chunked_lm_loss(h, head, labels) -> the loss causal_lm_loss(head(h), labels) gives,
-- without ever holding the logits [B,T,V] or their gradient: h [B,T,C] (the final hidden
-- states) goes through head (the lm_head module) a chunk of positions at a time (equal
-- chunks of at most 32 MiB of logits), each chunk's summed cross-entropy under
-- ft.autograd.checkpoint, so backward recomputes that chunk's logits instead of keeping them;
-- the sum is divided by the number of labels that are not -100, as the mean is. Costs one
-- more lm_head forward (about 12 % of a Qwen2.5-0.5B LoRA step); the loss equals
-- causal_lm_loss's up to float rounding (summation order). model(ids, {labels =, skip_logits
-- = true}) uses it (Liger's fused linear cross-entropy does the same, in one kernel).
function M.chunked_lm_loss(h, head, labels)
  local B, T, C = h:size(1), h:size(2), h:size(3)
  if labels:dim() == 1 and B == 1 then labels = labels:reshape(1, -1) end
  if labels:dim() ~= 2 or labels:size(1) ~= B or labels:size(2) ~= T then
    error(("ft.models: labels [%s] do not match the hidden states [%s]"):format(table.concat(labels:shape(), ","),
      table.concat(h:shape(), ",")), 3)
  end
  local shifted = ft.cat({ labels:narrow(2, 2, T - 1), ft.full({ B, 1 }, -100, { dtype = "int64" }) }, 2):reshape(-1)
  local flat = h:reshape(B * T, C)
  local vocab = head.out_features or head.weight:size(1)
  local n, most = B * T, math.max(1, LOSS_CHUNK_FLOATS // vocab)
  local chunks = (n + most - 1) // most
  local rows = (n + chunks - 1) // chunks   -- equal chunks
  local function chunk_loss(x, y)
    local logits <close> = head(x)   -- freed at once (autograd keeps what backward needs)
    return F.cross_entropy(logits, y, { ignore_index = -100, reduction = "sum" })
  end
  local total
  for i = 1, n, rows do
    local len = math.min(rows, n - i + 1)
    local part = ft.autograd.checkpoint(chunk_loss, flat:narrow(1, i, len), shifted:narrow(1, i, len))
    total = total and total + part or part
  end
  return total / shifted:ne(-100):sum():item()
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

return M
