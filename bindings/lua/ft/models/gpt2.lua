-- GPT-2 as HuggingFace's GPT2LMHeadModel: same module tree and parameter names
-- (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, transformer.ln_f.bias ...),
-- same numerics (pre-LN blocks, gelu_new = tanh GELU, attention scaled by 1/sqrt(head_dim),
-- causal), so HF checkpoints load one to one (see ft.models.from_pretrained).
--
--   local gpt2 = require "ft.models.gpt2"
--   local model = gpt2.GPT2LMHeadModel(gpt2.config("gpt-s"))
--   local out = model(ids, {labels = ids})          -- ids int64 [B,T], 1-based (HF id + 1)
--   out.logits [B,T,V], out.loss (next-token, HF's shift), out.past_key_values
--
-- Presets (gpt2.config(name, overrides)):
--   "gpt-s"  byte-level GPT for experiments: vocab 256, 6 layers, n_embd 384, 6 heads,
--            context 256, dropout 0.1, tied lm_head.
--
-- HF's Conv1D layers keep their layout: weight [in, out], y = x @ W + b.
-- lm_head shares transformer.wte.weight when tie_word_embeddings is true (the default); the
-- tied copy is not written to or expected in checkpoints.
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local generate = require("ft.models.generate").generate
local nn = ft.nn
local F = nn.functional

local M = {}

-- HF GPT2Config defaults for the fields a preset leaves out.
local DEFAULTS = {
  activation_function = "gelu_new", attn_pdrop = 0.1, embd_pdrop = 0.1, resid_pdrop = 0.1,
  layer_norm_epsilon = 1e-5, initializer_range = 0.02, scale_attn_weights = true,
  scale_attn_by_inverse_layer_idx = false, tie_word_embeddings = true, use_cache = true,
}

local PRESETS = {
  ["gpt-s"] = { vocab_size = 256, n_positions = 256, n_embd = 384, n_layer = 6, n_head = 6 },
}

-- The keys a GPT-2 config may override (what read_config reads, plus HF's metadata).
M.CONFIG_KEYS = models.config_keys({ "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
  "activation_function", "attn_pdrop", "embd_pdrop", "resid_pdrop", "layer_norm_epsilon", "initializer_range",
  "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings", "use_cache" })

--- gpt2.config(preset, overrides) -> an HF-style config table for a preset, with overrides
-- applied (unknown keys are errors).
function M.config(name, overrides)
  local preset = PRESETS[name]
  if not preset then error(("gpt2.config: unknown preset '%s'"):format(tostring(name)), 2) end
  common.check_options("gpt2.config", overrides, M.CONFIG_KEYS)
  local config = common.copy_config(DEFAULTS, preset)
  config.architectures = { "GPT2LMHeadModel" }
  config.model_type = "gpt2"
  return common.copy_config(config, overrides)
end

-- ---- Conv1D: HF's transposed linear layer ---------------------------------------------------

--- Conv1D(nf, nx): weight [nx, nf] (in, out), bias [nf]; y = x @ W + b. Argument order as HF.
local Conv1D = nn.Module:extend("Conv1D")
M.Conv1D = Conv1D

function Conv1D:init(nf, nx, std)
  self.nf, self.nx = nf, nx
  self.weight = nn.Parameter(ft.zeros(nx, nf))
  self.bias = nn.Parameter(ft.zeros(nf))
  nn.init.normal_(self.weight, 0, std or 0.02)
end

-- The transposed view goes to sgemm as is (no copy).
function Conv1D:forward(x) return F.linear(x, self.weight:t(), self.bias) end

function Conv1D:extra_repr() return ("nf=%d, nx=%d"):format(self.nf, self.nx) end

-- ---- blocks -----------------------------------------------------------------------------------

local Attention = nn.Module:extend("GPT2Attention")

function Attention:init(c, layer_idx)
  self.n_head, self.n_embd = c.n_head, c.n_embd
  self.head_dim = c.n_embd // c.n_head
  self.c_attn = Conv1D(3 * c.n_embd, c.n_embd, c.initializer_range)
  -- HF scales the residual projections' init by 1/sqrt(2 * n_layer).
  self.c_proj = Conv1D(c.n_embd, c.n_embd, c.initializer_range / math.sqrt(2 * c.n_layer))
  self.attn_dropout = nn.Dropout(c.attn_pdrop)
  self.resid_dropout = nn.Dropout(c.resid_pdrop)
  self.scale = c.scale_attn_weights and 1 / math.sqrt(self.head_dim) or 1
  if c.scale_attn_by_inverse_layer_idx then self.scale = self.scale / layer_idx end
end

-- x [B,T,C]; cache {k, v} of [B,H,P,hd] or nil; mask additive [B,1,1,P+T] or nil.
-- -> [B,T,C], {k, v} of [B,H,P+T,hd]
function Attention:forward(x, cache, mask)
  local B, T, C = x:size(1), x:size(2), x:size(3)
  local H, hd = self.n_head, self.head_dim
  local qkv = self.c_attn(x)   -- [B,T,3C]
  local function heads(i) return qkv:narrow(3, i * C + 1, C):reshape(B, T, H, hd):transpose(2, 3) end
  local q, k, v = heads(0), heads(1), heads(2)   -- [B,H,T,hd]
  if cache then
    k = ft.cat({ cache[1], k }, 3)
    v = ft.cat({ cache[2], v }, 3)
  end
  local y = common.attention(q, k, v, { causal = true, attn_mask = mask, scale = self.scale,
    dropout_p = self.attn_dropout.p, training = self.training })
  y = y:transpose(2, 3):reshape(B, T, C)
  return self.resid_dropout(self.c_proj(y)), { k, v }
end

local MLP = nn.Module:extend("GPT2MLP")

function MLP:init(c)
  self.c_fc = Conv1D(c.n_inner, c.n_embd, c.initializer_range)
  self.c_proj = Conv1D(c.n_embd, c.n_inner, c.initializer_range / math.sqrt(2 * c.n_layer))
  self.act = c.act
  self.dropout = nn.Dropout(c.resid_pdrop)
end

function MLP:forward(x) return self.dropout(self.c_proj(self.act(self.c_fc(x)))) end

local Block = nn.Module:extend("GPT2Block")

function Block:init(c, layer_idx)
  self.ln_1 = nn.LayerNorm(c.n_embd, { eps = c.layer_norm_epsilon })
  self.attn = Attention(c, layer_idx)
  self.ln_2 = nn.LayerNorm(c.n_embd, { eps = c.layer_norm_epsilon })
  self.mlp = MLP(c)
end

function Block:forward(x, cache, mask)
  local a, present = self.attn(self.ln_1(x), cache, mask)
  x = x + a
  return x + self.mlp(self.ln_2(x)), present
end

-- ---- the model --------------------------------------------------------------------------------

--- gpt2.read_config(config [, what]) -> the checked GPT-2 config (types, ranges, n_embd % n_head,
-- a known activation); raises "<what, default GPT2LMHeadModel>: config field '...' ...".
local function read_config(config, what)
  local L = common.LIMITS
  local r = common.config_reader(config, what or "GPT2LMHeadModel")
  local c = {
    vocab_size = r:int("vocab_size", nil, 1, L.vocab), n_positions = r:int("n_positions", nil, 1, L.positions),
    n_embd = r:int("n_embd", nil, 1, L.width), n_layer = r:int("n_layer", nil, 1, L.layers),
    n_head = r:int("n_head", nil, 1, L.heads),
    activation_function = r:str("activation_function", "gelu_new"),
    attn_pdrop = r:prob("attn_pdrop", 0.1), embd_pdrop = r:prob("embd_pdrop", 0.1),
    resid_pdrop = r:prob("resid_pdrop", 0.1), layer_norm_epsilon = r:positive("layer_norm_epsilon", 1e-5, 1),
    initializer_range = r:num("initializer_range", 0.02, 0, 10),
    scale_attn_weights = r:bool("scale_attn_weights", true),
    scale_attn_by_inverse_layer_idx = r:bool("scale_attn_by_inverse_layer_idx", false),
    tie_word_embeddings = r:bool("tie_word_embeddings", true),
  }
  c.n_inner = r:int("n_inner", 4 * c.n_embd, 1, L.inner)
  if c.n_embd % c.n_head ~= 0 then
    r:fail("n_embd %d is not a multiple of n_head %d", c.n_embd, c.n_head)
  end
  c.act = common.activation(c.activation_function, r, "activation_function")
  return c
end
M.read_config = read_config

--- gpt2.body_shapes(c, out) -> out with the GPT2Model tensors (transformer.*: name -> shape) of
-- a checked config c, computed without building anything.
function M.body_shapes(c, out)
  local C, I = c.n_embd, c.n_inner
  out["transformer.wte.weight"] = { c.vocab_size, C }
  out["transformer.wpe.weight"] = { c.n_positions, C }
  for i = 0, c.n_layer - 1 do
    local h = "transformer.h." .. i .. "."
    out[h .. "ln_1.weight"], out[h .. "ln_1.bias"] = { C }, { C }
    out[h .. "attn.c_attn.weight"], out[h .. "attn.c_attn.bias"] = { C, 3 * C }, { 3 * C }
    out[h .. "attn.c_proj.weight"], out[h .. "attn.c_proj.bias"] = { C, C }, { C }
    out[h .. "ln_2.weight"], out[h .. "ln_2.bias"] = { C }, { C }
    out[h .. "mlp.c_fc.weight"], out[h .. "mlp.c_fc.bias"] = { C, I }, { I }
    out[h .. "mlp.c_proj.weight"], out[h .. "mlp.c_proj.bias"] = { I, C }, { C }
  end
  out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = { C }, { C }
  return out
end

--- GPT2Model(c): the GPT-2 body (wte, wpe, blocks, ln_f) of a checked config (gpt2.read_config);
-- body(input_ids, opts) -> hidden states [B,T,C], presents.
local GPT2Model = nn.Module:extend("GPT2Model")
M.GPT2Model = GPT2Model

function GPT2Model:init(c)
  self.n_positions = c.n_positions
  self.wte = nn.Embedding(c.vocab_size, c.n_embd)
  self.wpe = nn.Embedding(c.n_positions, c.n_embd)
  nn.init.normal_(self.wte.weight, 0, c.initializer_range)
  nn.init.normal_(self.wpe.weight, 0, c.initializer_range)
  self.drop = nn.Dropout(c.embd_pdrop)
  self.h = nn.ModuleList()
  for i = 1, c.n_layer do self.h:append(Block(c, i)) end
  self.ln_f = nn.LayerNorm(c.n_embd, { eps = c.layer_norm_epsilon })
end

--- (input_ids [B,T], {past_key_values=, attention_mask= [B,P+T], position_ids= (1-based),
-- inputs_embeds= [B,T,C]}) -> hidden states [B,T,C], presents (one {k, v} per layer)
-- inputs_embeds replaces wte(input_ids) (input_ids is then nil); positions are added as usual.
function GPT2Model:forward(input_ids, opts)
  opts = opts or {}
  local past = opts.past_key_values
  local P = past and past[1][1]:size(3) or 0
  local embeds = common.input_embeddings(self.wte, input_ids, opts.inputs_embeds, "GPT2Model")
  local T = embeds:size(2)
  if P + T > self.n_positions then
    error(("GPT2Model: %d positions exceed n_positions %d"):format(P + T, self.n_positions), 3)
  end
  local positions = opts.position_ids or ft.arange(P + 1, P + T + 1)
  local x = self.drop(embeds + self.wpe(positions))
  local mask = common.padding_mask(opts.attention_mask)
  local presents = {}
  for i = 1, #self.h do
    x, presents[i] = self.h[i](x, past and past[i], mask)
  end
  return self.ln_f(x), presents
end

--- GPT2LMHeadModel(config): HF's GPT-2 language model from an HF config table (config.json decoded,
-- or gpt2.config()); model(ids, opts) -> {logits =, loss =, past_key_values =}.
local GPT2LMHeadModel = nn.Module:extend("GPT2LMHeadModel")
M.GPT2LMHeadModel = GPT2LMHeadModel
GPT2LMHeadModel.hf_architecture = "GPT2LMHeadModel"
GPT2LMHeadModel.peft_task_type = "CAUSAL_LM"   -- what PEFT's adapter_config.json names the task
GPT2LMHeadModel.hf_model_type = "gpt2"
GPT2LMHeadModel.base_model_prefix = "transformer"
-- Causal-mask buffers of older checkpoints, which HF also skips.
GPT2LMHeadModel.ignore_on_load = { "%.attn%.bias$", "%.attn%.masked_bias$" }

GPT2LMHeadModel.read_config = read_config
GPT2LMHeadModel.config_keys = M.CONFIG_KEYS

--- GPT2LMHeadModel.tensor_shapes(c) -> name -> shape of a checked config's model (tied copy
-- left out), and the tied names (alias -> target).
function GPT2LMHeadModel.tensor_shapes(c)
  local out = M.body_shapes(c, {})
  if c.tie_word_embeddings then return out, { ["lm_head.weight"] = "transformer.wte.weight" } end
  out["lm_head.weight"] = { c.vocab_size, c.n_embd }
  return out, {}
end

--- GPT2LMHeadModel(config): config is an HF config table (config.json decoded, or gpt2.config()).
function GPT2LMHeadModel:init(config)
  local c = read_config(config)
  self.config = config
  self.max_positions = c.n_positions
  self.tied = c.tie_word_embeddings
  self.transformer = GPT2Model(c)
  self.lm_head = nn.Linear(c.n_embd, c.vocab_size, { bias = false })
  if self.tied then
    self.lm_head.weight = self.transformer.wte.weight
  else
    nn.init.normal_(self.lm_head.weight, 0, c.initializer_range)
  end
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the decoder blocks.
function GPT2LMHeadModel:checkpoint_modules() return self.transformer.h end

--- Names of tied copies -> the parameter they share (left out of saved checkpoints).
function GPT2LMHeadModel:tied_weights()
  return self.tied and { ["lm_head.weight"] = "transformer.wte.weight" } or {}
end

--- model(input_ids [B,T] int64 1-based, {labels=, attention_mask=, past_key_values=,
-- use_cache=, position_ids=, inputs_embeds=, skip_logits=}) -> {logits = [B,T,V], loss =,
-- past_key_values =}
-- model(nil, {inputs_embeds = [B,T,C]}) runs on given embeddings instead of token ids (HF's inputs_embeds).
-- skip_logits = true (with labels) returns the loss only, computed a chunk of positions at a
-- time (ft.models.common.chunked_lm_loss): the logits and their gradient never exist whole.
function GPT2LMHeadModel:forward(input_ids, opts)
  opts = opts or {}
  if input_ids and input_ids:dim() == 1 then input_ids = input_ids:reshape(1, -1) end
  local h, presents = self.transformer(input_ids, opts)
  if opts.skip_logits then
    if not opts.labels then error("GPT2LMHeadModel: skip_logits = true needs labels (it returns the loss only)", 2) end
    local out = { loss = common.chunked_lm_loss(h, self.lm_head, opts.labels) }
    if opts.use_cache then out.past_key_values = presents end
    return out
  end
  local out = { logits = self.lm_head(h) }
  if opts.labels then out.loss = common.causal_lm_loss(out.logits, opts.labels) end
  if opts.use_cache then out.past_key_values = presents end
  return out
end

GPT2LMHeadModel.generate = generate

return M
