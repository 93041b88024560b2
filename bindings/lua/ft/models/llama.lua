-- Llama-family decoders as HuggingFace's LlamaForCausalLM, MistralForCausalLM and
-- Qwen2ForCausalLM: same module tree and parameter names (model.embed_tokens.weight,
-- model.layers.0.self_attn.q_proj.weight, model.layers.0.mlp.gate_proj.weight, model.norm.weight,
-- lm_head.weight), same numerics: RMSNorm pre-norm blocks, rotary position embeddings
-- (rotate_half convention), grouped-query attention (num_key_value_heads), SiLU-gated MLP.
--
--   local llama = require "ft.models.llama"
--   local model = llama.LlamaForCausalLM(llama.config("llama-s"))
--   local out = model(ids, {labels = ids})     -- ids int64 [B,T], 1-based (HF id + 1)
--
-- Config keys read: vocab_size, hidden_size, intermediate_size, num_hidden_layers,
-- num_attention_heads, num_key_value_heads (default: num_attention_heads), head_dim
-- (default hidden_size / num_attention_heads), rope_theta (top level or in rope_parameters;
-- only the default rope type), rms_norm_eps, hidden_act, attention_bias (Llama; Qwen2 always
-- has q/k/v biases), mlp_bias, attention_dropout, tie_word_embeddings, initializer_range.
-- Sliding-window attention as transformers applies it: Mistral when sliding_window is set;
-- Qwen2 when use_sliding_window is true, on layers from max_window_layers on (or as an
-- explicit layer_types list says). Query t then sees keys s with t - window < s <= t.
--
-- Presets (llama.config(name, overrides)):
--   "llama-s"  byte-level decoder for experiments: vocab 256, 6 layers, hidden 384,
--              intermediate 1024, 6 heads (2 key/value heads), context 256, RoPE theta 1e4.
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local generate = require("ft.models.generate").generate
local nn = ft.nn
local F = nn.functional

local M = {}

local PRESETS = {
  ["llama-s"] = {
    vocab_size = 256, hidden_size = 384, intermediate_size = 1024, num_hidden_layers = 6,
    num_attention_heads = 6, num_key_value_heads = 2, max_position_embeddings = 256,
    rope_theta = 10000.0, rms_norm_eps = 1e-5, hidden_act = "silu", attention_bias = false,
    mlp_bias = false, attention_dropout = 0.0, initializer_range = 0.02, tie_word_embeddings = false,
  },
}

-- The keys a Llama-family config may override (what read_config reads, plus HF's metadata).
M.CONFIG_KEYS = models.config_keys({ "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
  "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta",
  "rope_parameters", "rope_scaling", "rms_norm_eps", "hidden_act", "attention_bias", "mlp_bias",
  "attention_dropout", "initializer_range", "tie_word_embeddings", "sliding_window", "use_sliding_window",
  "max_window_layers", "layer_types", "use_cache" })

--- llama.config(preset, overrides) -> an HF-style config table for a preset, with overrides
-- applied (unknown keys are errors).
function M.config(name, overrides)
  local preset = PRESETS[name]
  if not preset then error(("llama.config: unknown preset '%s'"):format(tostring(name)), 2) end
  common.check_options("llama.config", overrides, M.CONFIG_KEYS)
  local config = common.copy_config(preset)
  config.architectures = { "LlamaForCausalLM" }
  config.model_type = "llama"
  return common.copy_config(config, overrides)
end

-- ---- layers ---------------------------------------------------------------------------------

--- RMSNorm(d, eps): x / sqrt(mean(x^2) + eps) * weight over the last dim.
local RMSNorm = nn.Module:extend("LlamaRMSNorm")
M.RMSNorm = RMSNorm

function RMSNorm:init(d, eps)
  self.d, self.eps = d, eps
  self.weight = nn.Parameter(ft.ones(d))
end

function RMSNorm:forward(x) return F.rms_norm(x, self.d, self.weight, { eps = self.eps }) end

function RMSNorm:extra_repr() return ("%d, eps=%s"):format(self.d, nn._repr(self.eps)) end

-- Rounds to the nearest float32, so tables match HF's float32 computation.
local function f32(x) return (string.unpack("f", string.pack("f", x))) end

-- Rotary tables cos, sin [n, D] for positions 0..n-1, as HF's default rope: inv_freq[i] =
-- theta^(-2i/D) and emb = cat(freqs, freqs), everything rounded as float32 would be.
local function rope_tables(n, D, theta)
  local inv = {}
  for i = 1, D // 2 do inv[i] = f32(1 / f32(theta ^ f32(2 * (i - 1) / D))) end
  local cos, sin = {}, {}
  for p = 1, n do
    local c, s = {}, {}
    for i = 1, D // 2 do
      local angle = f32((p - 1) * inv[i])
      c[i], s[i] = math.cos(angle), math.sin(angle)
      c[i + D // 2], s[i + D // 2] = c[i], s[i]
    end
    cos[p], sin[p] = c, s
  end
  return ft.tensor(cos), ft.tensor(sin)
end

-- x * cos + rotate_half(x) * sin for cos/sin that are not one [T, D] table (per-row positions).
local function rope_explicit(x, cos, sin)
  local D = x:size(-1)
  local x1, x2 = x:narrow(-1, 1, D // 2), x:narrow(-1, D // 2 + 1, D // 2)
  return x * cos + ft.cat({ -x2, x1 }, -1) * sin
end

-- Adds the sliding window to an additive mask (or nil): with S keys of which the last T are
-- the queries' own, query t (position t + S - T) sees keys s with pos - window < s <= pos.
-- -> [1,1,T,S], or the padding mask [B,1,1,S] broadcast to [B,1,T,S].
local function window_mask(mask, T, S, window)
  local rows = {}
  for t = 1, T do
    local row, first = {}, t + S - T - window + 1
    for s = 1, S do row[s] = s < first and -1e30 or 0 end
    rows[t] = row
  end
  local w = ft.tensor(rows):reshape(1, 1, T, S)
  return mask and (mask + w) or w
end

--- Attention(c, window): the grouped-query self-attention of a block (q/k/v/o_proj), with rotary
-- embeddings, the KV cache and the sliding window (nil: full causal); shared with ft.models.mixtral.
local Attention = nn.Module:extend("LlamaAttention")
M.Attention = Attention

-- window: the sliding-window size of this layer, or nil for full causal attention.
function Attention:init(c, window)
  self.n_heads, self.n_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
  self.window = window
  self.dropout_p = c.attention_dropout
  local qkv_bias = c.qkv_bias
  self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, { bias = qkv_bias })
  self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, { bias = qkv_bias })
  self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, { bias = qkv_bias })
  self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, { bias = c.o_bias })
end

-- x [B,T,C]; rope = {cos, sin} for the T positions; cache {k, v} [B,Hkv,P,hd] or nil;
-- mask additive [B,1,1,P+T] or nil. -> [B,T,C], {k, v} [B,Hkv,P+T,hd]
-- Temporaries that are not returned are closed as the forward returns (as in MLP:forward).
function Attention:forward(x, rope, cache, mask)
  local B, T = x:size(1), x:size(2)
  local H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
  local qp <close> = self.q_proj(x):reshape(B, T, H, hd):transpose(2, 3)     -- [B,H,T,hd]
  local kp <close> = self.k_proj(x):reshape(B, T, Hkv, hd):transpose(2, 3)   -- [B,Hkv,T,hd]
  local v = self.v_proj(x):reshape(B, T, Hkv, hd):transpose(2, 3)
  local q <close> = rope.apply(qp, rope.cos, rope.sin)
  local k = rope.apply(kp, rope.cos, rope.sin)
  if cache then
    k = ft.cat({ cache[1], k }, 3)
    v = ft.cat({ cache[2], v }, 3)
  end
  if self.window and k:size(3) > self.window then mask = window_mask(mask, T, k:size(3), self.window) end
  local y <close> = common.attention(q, k, v, { causal = true, attn_mask = mask, scale = 1 / math.sqrt(hd),
    dropout_p = self.dropout_p, training = self.training })
  local merged <close> = y:transpose(2, 3):reshape(B, T, H * hd)
  return self.o_proj(merged), { k, v }
end

local MLP = nn.Module:extend("LlamaMLP")

function MLP:init(c)
  self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, { bias = c.mlp_bias })
  self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, { bias = c.mlp_bias })
  self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, { bias = c.mlp_bias })
  self.gated_act = c.gated_act
end

--- llama.gated_mlp(gated_act, gate, up, down, x) -> down(gated_act(gate(x), up(x))), where
-- gated_act(g, u) is act(g) * u (common.gated_activation): the gated MLP of Llama's blocks and
-- of Mixtral's experts. The [..., intermediate] temporaries are closed (freed) as it returns,
-- not left to the collector: they are the largest tensors of a block (autograd keeps its own
-- references).
function M.gated_mlp(gated_act, gate, up, down, x)
  local g <close> = gate(x)
  local u <close> = up(x)
  local gated <close> = gated_act(g, u)
  return down(gated)
end

function MLP:forward(x) return M.gated_mlp(self.gated_act, self.gate_proj, self.up_proj, self.down_proj, x) end

--- DecoderLayer(c, window): one pre-norm block (self_attn, mlp, the two RMSNorms); forward(x,
-- rope, cache, mask) -> x, present, extra. A family whose feed-forward differs
-- (ft.models.mixtral) sets c.decoder_layer to a subclass overriding feed_forward; what that
-- returns second (extra) is collected per layer by LlamaModel:forward.
local DecoderLayer = nn.Module:extend("LlamaDecoderLayer")
M.DecoderLayer = DecoderLayer

function DecoderLayer:init(c, window)
  self.self_attn = Attention(c, window)
  self.mlp = MLP(c)
  self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
  self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
end

--- layer:feed_forward(h) -> the block's MLP output (and nothing else for Llama).
function DecoderLayer:feed_forward(h) return self.mlp(h) end

-- Temporaries closed as the forward returns (as in gated_mlp).
function DecoderLayer:forward(x, rope, cache, mask)
  local h <close> = self.input_layernorm(x)
  local a <close>, present = self.self_attn(h, rope, cache, mask)
  local mid <close> = x + a
  local h2 <close> = self.post_attention_layernorm(mid)
  local m <close>, extra = self:feed_forward(h2)
  return mid + m, present, extra
end

-- ---- the model -------------------------------------------------------------------------------------

--- llama.read_config(config, class) -> the checked config of the Llama structure; class supplies
-- the family's defaults (hf_architecture, default_rope_theta, qkv_bias_always, sliding_windows).
-- Families built on it (ft.models.mixtral) read their own fields after it.
local function read_config(config, class)
  local L = common.LIMITS
  local r = common.config_reader(config, class.hf_architecture)
  local c = {
    vocab_size = r:int("vocab_size", nil, 1, L.vocab), hidden_size = r:int("hidden_size", nil, 1, L.width),
    intermediate_size = r:int("intermediate_size", nil, 1, L.inner),
    num_hidden_layers = r:int("num_hidden_layers", nil, 1, L.layers),
    num_attention_heads = r:int("num_attention_heads", nil, 1, L.heads),
    rms_norm_eps = r:positive("rms_norm_eps", 1e-6, 1), hidden_act = r:str("hidden_act", "silu"),
    mlp_bias = r:bool("mlp_bias", false), attention_dropout = r:prob("attention_dropout", 0.0),
    initializer_range = r:num("initializer_range", 0.02, 0, 10),
    tie_word_embeddings = r:bool("tie_word_embeddings", false),
    max_position_embeddings = r:int("max_position_embeddings", 2048, 1, L.positions),
  }
  c.num_key_value_heads = r:int("num_key_value_heads", c.num_attention_heads, 1, c.num_attention_heads)
  if r:raw("head_dim") == nil and c.hidden_size % c.num_attention_heads ~= 0 then
    r:fail("hidden_size %d is not a multiple of num_attention_heads %d (and head_dim is not given)", c.hidden_size,
      c.num_attention_heads)
  end
  c.head_dim = r:int("head_dim", c.hidden_size // c.num_attention_heads, 1, L.width)
  if c.num_attention_heads % c.num_key_value_heads ~= 0 then
    r:fail("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.num_attention_heads,
      c.num_key_value_heads)
  end
  if c.head_dim % 2 ~= 0 then r:fail("head_dim %d must be even for rotary embeddings", c.head_dim) end
  if class.qkv_bias_always then
    c.qkv_bias, c.o_bias = true, false
  else
    c.qkv_bias = r:bool("attention_bias", false)
    c.o_bias = c.qkv_bias
  end
  -- rope_theta: top level (older configs) or in rope_parameters / rope_scaling (newer ones).
  local params = r:raw("rope_parameters") or r:raw("rope_scaling")
  local rope_type = "default"
  local theta = r:raw("rope_theta")
  if type(params) == "table" then
    rope_type = params.rope_type or params.type or "default"
    if params.rope_theta ~= nil then theta = params.rope_theta end
  end
  if rope_type ~= "default" then
    r:fail("rope type '%s' is not supported (only 'default')", tostring(rope_type))
  end
  c.rope_theta = theta or class.default_rope_theta
  if type(c.rope_theta) ~= "number" or not (c.rope_theta > 0 and c.rope_theta < math.huge) then
    r:fail("config field 'rope_theta' must be a positive number, got %s", tostring(c.rope_theta))
  end
  c.gated_act = common.gated_activation(c.hidden_act, r, "hidden_act")
  c.windows = class.sliding_windows(r, c.num_hidden_layers)
  return c
end
M.read_config = read_config

--- LlamaModel(c): the decoder body (embed_tokens, layers, norm) of a checked config;
-- body(input_ids, opts) -> hidden states [B,T,C], presents, extras. The layers are
-- c.decoder_layer (default DecoderLayer) built as Layer(c, window).
local LlamaModel = nn.Module:extend("LlamaModel")
M.LlamaModel = LlamaModel

function LlamaModel:init(c)
  self.head_dim, self.rope_theta = c.head_dim, c.rope_theta
  -- Built without the layers' default initialisation, which HF's below replaces (each
  -- parameter is drawn once).
  nn.init.skip(function()
    self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
    self.layers = nn.ModuleList()
    local Layer = c.decoder_layer or DecoderLayer
    for i = 1, c.num_hidden_layers do self.layers:append(Layer(c, c.windows[i])) end
    self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
  end)
  nn.init.normal_(self.embed_tokens.weight, 0, c.initializer_range)
  for _, m in self:named_modules() do
    if m.__name == "Linear" then
      nn.init.normal_(m.weight, 0, c.initializer_range)
      if m.bias then nn.init.zeros_(m.bias) end
    elseif m.init_weights then   -- layers with their own parameters (Mixtral's fused experts)
      m:init_weights(c.initializer_range)
    end
  end
end

--- body:rope_cache(n) -> cos, sin [n, hd] for positions 0..n-1, cached and grown by doubling
-- (plain fields, not buffers: HF keeps them out of checkpoints too).
function LlamaModel:rope_cache(n)
  if not self._rope_cos or self._rope_cos:size(1) < n then
    local size = math.max(n, 2 * (self._rope_cos and self._rope_cos:size(1) or 32))
    self._rope_cos, self._rope_sin = rope_tables(size, self.head_dim, self.rope_theta)
  end
  return self._rope_cos, self._rope_sin
end

--- (input_ids [B,T], {past_key_values=, attention_mask= [B,P+T], position_ids= 1-based [T] or [B,T],
-- inputs_embeds= [B,T,C]}) -> hidden states [B,T,C], presents (one {k, v} per layer), extras
-- (what each layer's forward returned third, e.g. Mixtral's router logits; empty for Llama)
-- inputs_embeds replaces embed_tokens(input_ids) (input_ids is then nil); rotary positions as usual.
function LlamaModel:forward(input_ids, opts)
  opts = opts or {}
  local past = opts.past_key_values
  local P = past and past[1][1]:size(3) or 0
  local x = common.input_embeddings(self.embed_tokens, input_ids, opts.inputs_embeds, "LlamaModel")
  local T = x:size(2)
  local rope
  local pos = opts.position_ids
  if pos == nil then
    local cos, sin = self:rope_cache(P + T)
    rope = { cos = cos:narrow(1, P + 1, T), sin = sin:narrow(1, P + 1, T), apply = F.rope or rope_explicit }
  else
    local cos, sin = self:rope_cache(pos:max():item())
    local flat = pos:reshape(-1)
    cos, sin = cos:index_select(1, flat), sin:index_select(1, flat)
    if pos:dim() == 1 then
      rope = { cos = cos, sin = sin, apply = F.rope or rope_explicit }
    else   -- per-row positions [B,T] -> [B,1,T,hd], broadcast over the heads
      local B = pos:size(1)
      rope = { cos = cos:reshape(B, 1, T, -1), sin = sin:reshape(B, 1, T, -1), apply = rope_explicit }
    end
  end
  local mask = common.padding_mask(opts.attention_mask)
  local presents, extras = {}, {}
  for i = 1, #self.layers do
    x, presents[i], extras[i] = self.layers[i](x, rope, past and past[i], mask)
  end
  return self.norm(x), presents, extras
end

--- LlamaForCausalLM(config): HF's Llama language model from an HF config table (config.json
-- decoded, or llama.config()); model(ids, opts) -> {logits =, loss =, past_key_values =}.
local LlamaForCausalLM = nn.Module:extend("LlamaForCausalLM")
M.LlamaForCausalLM = LlamaForCausalLM
LlamaForCausalLM.hf_architecture = "LlamaForCausalLM"
LlamaForCausalLM.hf_model_type = "llama"
LlamaForCausalLM.peft_task_type = "CAUSAL_LM"   -- what PEFT's adapter_config.json names the task
LlamaForCausalLM.base_model_prefix = "model"
LlamaForCausalLM.default_rope_theta = 10000.0
LlamaForCausalLM.ignore_on_load = { "rotary_emb%.inv_freq$" }

LlamaForCausalLM.config_keys = M.CONFIG_KEYS
--- LlamaForCausalLM.read_config(config [, class]) -> the checked config (types, ranges, head
-- divisibility, positive epsilon and rope theta, a known activation, the sliding windows) with
-- class's defaults (default LlamaForCausalLM; Mistral and Qwen2 inherit it, Mixtral replaces it).
LlamaForCausalLM.read_config = function(config, class) return read_config(config, class or LlamaForCausalLM) end

--- LlamaForCausalLM.tensor_shapes(c) -> name -> shape of a checked config's model (tied copy
-- left out), and the tied names (alias -> target).
function LlamaForCausalLM.tensor_shapes(c)
  local H, I, hd = c.hidden_size, c.intermediate_size, c.head_dim
  local q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
  local out = { ["model.embed_tokens.weight"] = { c.vocab_size, H }, ["model.norm.weight"] = { H } }
  for i = 0, c.num_hidden_layers - 1 do
    local p = "model.layers." .. i .. "."
    local function linear(name, o, n, bias)
      out[p .. name .. ".weight"] = { o, n }
      if bias then out[p .. name .. ".bias"] = { o } end
    end
    linear("self_attn.q_proj", q, H, c.qkv_bias)
    linear("self_attn.k_proj", kv, H, c.qkv_bias)
    linear("self_attn.v_proj", kv, H, c.qkv_bias)
    linear("self_attn.o_proj", H, q, c.o_bias)
    linear("mlp.gate_proj", I, H, c.mlp_bias)
    linear("mlp.up_proj", I, H, c.mlp_bias)
    linear("mlp.down_proj", H, I, c.mlp_bias)
    out[p .. "input_layernorm.weight"], out[p .. "post_attention_layernorm.weight"] = { H }, { H }
  end
  if c.tie_word_embeddings then return out, { ["lm_head.weight"] = "model.embed_tokens.weight" } end
  out["lm_head.weight"] = { c.vocab_size, H }
  return out, {}
end

--- LlamaForCausalLM(config): config is an HF config table (config.json decoded, or llama.config()).
-- Returns the checked config (class.read_config's), for subclasses that build on it.
function LlamaForCausalLM:init(config)
  local c = self.read_config(config, self)   -- class fields (defaults, biases) come through self
  self.config = config
  self.tied = c.tie_word_embeddings
  self.model = LlamaModel(c)
  self.lm_head = nn.init.skip(nn.Linear, c.hidden_size, c.vocab_size, { bias = false })
  if self.tied then
    self.lm_head.weight = self.model.embed_tokens.weight
  else
    nn.init.normal_(self.lm_head.weight, 0, c.initializer_range)
  end
  return c
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the decoder blocks.
function LlamaForCausalLM:checkpoint_modules() return self.model.layers end

--- Names of tied copies -> the parameter they share (left out of saved checkpoints).
function LlamaForCausalLM:tied_weights()
  return self.tied and { ["lm_head.weight"] = "model.embed_tokens.weight" } or {}
end

--- model(input_ids [B,T] int64 1-based, {labels=, attention_mask=, past_key_values=,
-- use_cache=, position_ids=, inputs_embeds=, skip_logits=}) -> {logits = [B,T,V], loss =,
-- past_key_values =}
-- model(nil, {inputs_embeds = [B,T,C]}) runs on given embeddings instead of token ids (HF's inputs_embeds).
-- skip_logits = true (with labels) returns the loss only, computed a chunk of positions at a
-- time (common.chunked_lm_loss): neither the logits nor their gradient ever exist whole, which
-- for a large vocabulary is most of a training step's transient memory.
function LlamaForCausalLM:forward(input_ids, opts)
  opts = opts or {}
  if input_ids and input_ids:dim() == 1 then input_ids = input_ids:reshape(1, -1) end
  local h, presents, extras = self.model(input_ids, opts)
  local out
  if opts.skip_logits then
    if not opts.labels then
      error(("%s: skip_logits = true needs labels (it returns the loss only)"):format(self.hf_architecture), 2)
    end
    out = { loss = common.chunked_lm_loss(h, self.lm_head, opts.labels) }
  else
    out = { logits = self.lm_head(h) }
    if opts.labels then out.loss = common.causal_lm_loss(out.logits, opts.labels) end
  end
  if opts.use_cache then out.past_key_values = presents end
  self:add_outputs(out, extras, opts)
  return out
end

--- model:add_outputs(out, extras, opts): what a family adds to the forward's result from the
-- layers' extras (Mixtral: router logits and the aux loss); nothing for Llama.
function LlamaForCausalLM:add_outputs() end

LlamaForCausalLM.generate = generate

--- Per-layer sliding windows (nil = full attention): Llama has none.
function LlamaForCausalLM.sliding_windows(r, n_layers) return {} end

-- An explicit layer_types list ("sliding_attention" / "full_attention") decides per layer.
local function windows_from_layer_types(r, n_layers, window)
  local types = r:raw("layer_types")
  if type(types) ~= "table" then return nil end
  local out = {}
  for i = 1, n_layers do
    if types[i] == "sliding_attention" then out[i] = window end
  end
  return out
end

--- Mistral: Llama's structure without biases, with sliding-window attention when configured.
local MistralForCausalLM = LlamaForCausalLM:extend("MistralForCausalLM")
M.MistralForCausalLM = MistralForCausalLM
MistralForCausalLM.hf_architecture = "MistralForCausalLM"
MistralForCausalLM.hf_model_type = "mistral"
--- MistralForCausalLM.read_config(config) -> the checked config, with Mistral's sliding windows.
MistralForCausalLM.read_config = function(config) return read_config(config, MistralForCausalLM) end

--- Mistral's windows: sliding_window on every layer (or as layer_types says).
function MistralForCausalLM.sliding_windows(r, n_layers)
  if r:raw("sliding_window") == nil then return {} end
  local window = r:int("sliding_window", nil, 1, common.LIMITS.positions)
  local out = windows_from_layer_types(r, n_layers, window)
  if out then return out end
  out = {}
  for i = 1, n_layers do out[i] = window end
  return out
end

--- Qwen2: biases on q/k/v (not o_proj) whatever attention_bias says.
local Qwen2ForCausalLM = LlamaForCausalLM:extend("Qwen2ForCausalLM")
M.Qwen2ForCausalLM = Qwen2ForCausalLM
Qwen2ForCausalLM.hf_architecture = "Qwen2ForCausalLM"
Qwen2ForCausalLM.hf_model_type = "qwen2"
Qwen2ForCausalLM.qkv_bias_always = true
--- Qwen2ForCausalLM.read_config(config) -> the checked config, with q/k/v biases and Qwen2's windows.
Qwen2ForCausalLM.read_config = function(config) return read_config(config, Qwen2ForCausalLM) end

--- Qwen2's windows: with use_sliding_window, from max_window_layers on (or as layer_types says).
function Qwen2ForCausalLM.sliding_windows(r, n_layers)
  if r:raw("sliding_window") == nil or not r:bool("use_sliding_window", false) then return {} end
  local window = r:int("sliding_window", nil, 1, common.LIMITS.positions)
  local out = windows_from_layer_types(r, n_layers, window)
  if out then return out end
  local from = r:int("max_window_layers", n_layers, 0, common.LIMITS.layers)   -- 0-based layer index where windows start
  out = {}
  for i = from + 1, n_layers do out[i] = window end
  return out
end

return M
