-- Vision Transformer as HuggingFace's ViTForImageClassification: same module tree and
-- parameter names (vit.embeddings.cls_token, vit.embeddings.patch_embeddings.projection.weight,
-- vit.encoder.layer.0.attention.attention.query.weight, vit.layernorm.weight, classifier.weight
-- ...), same numerics: patch embedding by a strided convolution, a CLS token, learned position
-- embeddings, pre-LN encoder layers with an exact-GELU MLP, a final LayerNorm and a linear
-- classifier on the CLS token. No pooler (HF leaves it out of the classification model).
--
--   local vit = require "ft.models.vit"
--   local model = vit.ViTForImageClassification(vit.config("vit-s"))
--   local out = model(x, {labels = y})   -- x [B,C,H,W] float, y int64 [B] 1-based
--   out.logits [B, num_labels], out.loss
--
-- Config keys read: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
-- image_size, patch_size, num_channels, hidden_act, layer_norm_eps, qkv_bias,
-- hidden_dropout_prob, attention_probs_dropout_prob, initializer_range, and the number of
-- labels from id2label (or num_labels). Images must have the configured size (no
-- interpolation of the position embeddings).
--
-- Presets (vit.config(name, overrides)):
--   "vit-s"  for 28x28 grey images (Fashion-MNIST): patch 4 (49 patches + CLS), hidden 192,
--            6 layers, 3 heads, intermediate 768, 10 labels, dropout 0.
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local nn = ft.nn

local M = {}

local PRESETS = {
  ["vit-s"] = {
    image_size = 28, patch_size = 4, num_channels = 1, hidden_size = 192, num_hidden_layers = 6,
    num_attention_heads = 3, intermediate_size = 768, num_labels = 10, hidden_act = "gelu",
    layer_norm_eps = 1e-12, qkv_bias = true, hidden_dropout_prob = 0.0,
    attention_probs_dropout_prob = 0.0, initializer_range = 0.02,
  },
}

-- HF writes the label count as id2label {"0": "LABEL_0", ...} and label2id.
local function label_maps(n)
  local id2label, label2id = {}, {}
  for i = 0, n - 1 do
    id2label[tostring(i)] = "LABEL_" .. i
    label2id["LABEL_" .. i] = i
  end
  return id2label, label2id
end

-- The keys a ViT config may override (what read_config reads, plus HF's metadata).
M.CONFIG_KEYS = models.config_keys({ "image_size", "patch_size", "num_channels", "hidden_size",
  "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_labels", "id2label", "label2id",
  "hidden_act", "layer_norm_eps", "qkv_bias", "hidden_dropout_prob", "attention_probs_dropout_prob",
  "initializer_range" })

--- vit.config(preset, overrides) -> an HF-style config table for a preset, with overrides
-- applied (unknown keys are errors; num_labels becomes id2label/label2id as HF saves it).
function M.config(name, overrides)
  local preset = PRESETS[name]
  if not preset then error(("vit.config: unknown preset '%s'"):format(tostring(name)), 2) end
  common.check_options("vit.config", overrides, M.CONFIG_KEYS)
  local config = common.copy_config(preset, overrides)
  config.architectures = { "ViTForImageClassification" }
  config.model_type = "vit"
  if config.num_labels then
    local n = config.num_labels
    if math.type(n) ~= "integer" or n < 0 or n > common.LIMITS.labels then
      error(("vit.config: num_labels must be an integer in [0, %d], got %s"):format(common.LIMITS.labels,
        tostring(n)), 2)
    end
    config.id2label, config.label2id = label_maps(n)
    config.num_labels = nil
  end
  return config
end

-- ---- layers ----------------------------------------------------------------------------------

local PatchEmbeddings = nn.Module:extend("ViTPatchEmbeddings")

function PatchEmbeddings:init(c)
  self.image_size, self.num_channels = c.image_size, c.num_channels
  self.projection = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, { stride = c.patch_size })
end

-- [B,C,H,W] -> [B, N, hidden]
function PatchEmbeddings:forward(x)
  local s = x:shape()
  if #s ~= 4 or s[2] ~= self.num_channels or s[3] ~= self.image_size or s[4] ~= self.image_size then
    error(("ViTForImageClassification: pixel_values [%s], expected [B,%d,%d,%d]"):format(table.concat(s, ","),
      self.num_channels, self.image_size, self.image_size), 4)
  end
  return self.projection(x):flatten(3):transpose(2, 3)
end

local Embeddings = nn.Module:extend("ViTEmbeddings")

function Embeddings:init(c)
  local n_patches = (c.image_size // c.patch_size) ^ 2
  self.cls_token = nn.Parameter(ft.zeros(1, 1, c.hidden_size))
  self.patch_embeddings = PatchEmbeddings(c)
  self.position_embeddings = nn.Parameter(ft.zeros(1, math.tointeger(n_patches) + 1, c.hidden_size))
  self.dropout = nn.Dropout(c.hidden_dropout_prob)
end

function Embeddings:forward(pixel_values)
  local x = self.patch_embeddings(pixel_values)   -- [B,N,C]
  local B, C = x:size(1), x:size(3)
  x = ft.cat({ self.cls_token:expand(B, 1, C), x }, 2)
  return self.dropout(x + self.position_embeddings)
end

local SelfAttention = nn.Module:extend("ViTSelfAttention")

function SelfAttention:init(c)
  self.n_heads, self.head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
  self.dropout_p = c.attention_probs_dropout_prob
  self.query = nn.Linear(c.hidden_size, c.hidden_size, { bias = c.qkv_bias })
  self.key = nn.Linear(c.hidden_size, c.hidden_size, { bias = c.qkv_bias })
  self.value = nn.Linear(c.hidden_size, c.hidden_size, { bias = c.qkv_bias })
end

-- [B,T,C] -> [B,T,C]
function SelfAttention:forward(x)
  local B, T, C = x:size(1), x:size(2), x:size(3)
  local H, hd = self.n_heads, self.head_dim
  local function heads(t) return t:reshape(B, T, H, hd):transpose(2, 3) end
  local y = common.attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
    { scale = 1 / math.sqrt(hd), dropout_p = self.dropout_p, training = self.training })
  return y:transpose(2, 3):reshape(B, T, C)
end

-- dense + dropout; the residual is added by the layer (HF's ViTSelfOutput).
local SelfOutput = nn.Module:extend("ViTSelfOutput")

function SelfOutput:init(c)
  self.dense = nn.Linear(c.hidden_size, c.hidden_size)
  self.dropout = nn.Dropout(c.hidden_dropout_prob)
end

function SelfOutput:forward(x) return self.dropout(self.dense(x)) end

local Attention = nn.Module:extend("ViTAttention")

function Attention:init(c)
  self.attention = SelfAttention(c)
  self.output = SelfOutput(c)
end

function Attention:forward(x) return self.output(self.attention(x)) end

local Intermediate = nn.Module:extend("ViTIntermediate")

function Intermediate:init(c)
  self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
  self.act = c.act
end

function Intermediate:forward(x) return self.act(self.dense(x)) end

-- dense + dropout + the residual (HF's ViTOutput).
local Output = nn.Module:extend("ViTOutput")

function Output:init(c)
  self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
  self.dropout = nn.Dropout(c.hidden_dropout_prob)
end

function Output:forward(x, residual) return self.dropout(self.dense(x)) + residual end

local Layer = nn.Module:extend("ViTLayer")

function Layer:init(c)
  self.attention = Attention(c)
  self.intermediate = Intermediate(c)
  self.output = Output(c)
  self.layernorm_before = nn.LayerNorm(c.hidden_size, { eps = c.layer_norm_eps })
  self.layernorm_after = nn.LayerNorm(c.hidden_size, { eps = c.layer_norm_eps })
end

function Layer:forward(x)
  x = self.attention(self.layernorm_before(x)) + x
  return self.output(self.intermediate(self.layernorm_after(x)), x)
end

local Encoder = nn.Module:extend("ViTEncoder")

function Encoder:init(c)
  self.layer = nn.ModuleList()
  for _ = 1, c.num_hidden_layers do self.layer:append(Layer(c)) end
end

function Encoder:forward(x)
  for i = 1, #self.layer do x = self.layer[i](x) end
  return x
end

-- ---- the model ---------------------------------------------------------------------------------

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

--- ViTForImageClassification.read_config(config) -> the checked config (types, ranges,
-- hidden_size % num_attention_heads, image_size % patch_size, a known activation).
local function read_config(config)
  local L = common.LIMITS
  local r = common.config_reader(config, "ViTForImageClassification")
  local c = {
    hidden_size = r:int("hidden_size", nil, 1, L.width), num_hidden_layers = r:int("num_hidden_layers", nil, 1, L.layers),
    num_attention_heads = r:int("num_attention_heads", nil, 1, L.heads),
    intermediate_size = r:int("intermediate_size", nil, 1, L.inner),
    image_size = r:int("image_size", nil, 1, L.image), patch_size = r:int("patch_size", nil, 1, L.image),
    num_channels = r:int("num_channels", 3, 1, L.channels), hidden_act = r:str("hidden_act", "gelu"),
    layer_norm_eps = r:positive("layer_norm_eps", 1e-12, 1), qkv_bias = r:bool("qkv_bias", true),
    hidden_dropout_prob = r:prob("hidden_dropout_prob", 0.0),
    attention_probs_dropout_prob = r:prob("attention_probs_dropout_prob", 0.0),
    initializer_range = r:num("initializer_range", 0.02, 0, 10),
  }
  local id2label = r:raw("id2label")
  if id2label ~= nil and type(id2label) ~= "table" then
    r:fail("config field 'id2label' must be an object, got %s", tostring(id2label))
  end
  c.num_labels = r:int("num_labels", id2label and count_keys(id2label) or 2, 0, L.labels)
  if c.hidden_size % c.num_attention_heads ~= 0 then
    r:fail("hidden_size %d is not a multiple of num_attention_heads %d", c.hidden_size, c.num_attention_heads)
  end
  if c.image_size % c.patch_size ~= 0 then
    r:fail("image_size %d is not a multiple of patch_size %d", c.image_size, c.patch_size)
  end
  c.act = common.activation(c.hidden_act, r, "hidden_act")
  return c
end

--- ViTForImageClassification.tensor_shapes(c) -> name -> shape of a checked config's model,
-- computed without building anything.
local function tensor_shapes(c)
  local H, I, p = c.hidden_size, c.intermediate_size, c.patch_size
  local n = (c.image_size // p) ^ 2
  local out = {
    ["vit.embeddings.cls_token"] = { 1, 1, H },
    ["vit.embeddings.position_embeddings"] = { 1, math.tointeger(n) + 1, H },
    ["vit.embeddings.patch_embeddings.projection.weight"] = { H, c.num_channels, p, p },
    ["vit.embeddings.patch_embeddings.projection.bias"] = { H },
    ["vit.layernorm.weight"] = { H }, ["vit.layernorm.bias"] = { H },
  }
  for i = 0, c.num_hidden_layers - 1 do
    local l = "vit.encoder.layer." .. i .. "."
    local function linear(name, o, m, bias)
      out[l .. name .. ".weight"] = { o, m }
      if bias then out[l .. name .. ".bias"] = { o } end
    end
    linear("attention.attention.query", H, H, c.qkv_bias)
    linear("attention.attention.key", H, H, c.qkv_bias)
    linear("attention.attention.value", H, H, c.qkv_bias)
    linear("attention.output.dense", H, H, true)
    linear("intermediate.dense", I, H, true)
    linear("output.dense", H, I, true)
    out[l .. "layernorm_before.weight"], out[l .. "layernorm_before.bias"] = { H }, { H }
    out[l .. "layernorm_after.weight"], out[l .. "layernorm_after.bias"] = { H }, { H }
  end
  if c.num_labels > 0 then
    out["classifier.weight"], out["classifier.bias"] = { c.num_labels, H }, { c.num_labels }
  end
  return out, {}
end

--- ViTModel(c): the ViT body (embeddings, encoder, final LayerNorm) of a checked config;
-- body(pixel_values [B,C,H,W]) -> [B, N+1, hidden].
local ViTModel = nn.Module:extend("ViTModel")
M.ViTModel = ViTModel

function ViTModel:init(c)
  self.embeddings = Embeddings(c)
  self.encoder = Encoder(c)
  self.layernorm = nn.LayerNorm(c.hidden_size, { eps = c.layer_norm_eps })
end

-- [B,C,H,W] -> [B, N+1, hidden]
function ViTModel:forward(pixel_values)
  return self.layernorm(self.encoder(self.embeddings(pixel_values)))
end

--- ViTForImageClassification(config): HF's ViT classifier from an HF config table (config.json
-- decoded, or vit.config()); model(pixel_values, {labels =}) -> {logits =, loss =}.
local ViTForImageClassification = nn.Module:extend("ViTForImageClassification")
M.ViTForImageClassification = ViTForImageClassification
ViTForImageClassification.hf_architecture = "ViTForImageClassification"
ViTForImageClassification.hf_model_type = "vit"
ViTForImageClassification.base_model_prefix = "vit"
ViTForImageClassification.ignore_on_load = { "^vit%.pooler%." }
ViTForImageClassification.config_keys = M.CONFIG_KEYS
ViTForImageClassification.read_config = read_config
ViTForImageClassification.tensor_shapes = tensor_shapes

--- ViTForImageClassification(config): config is an HF config table (config.json decoded, or
-- vit.config()). HF's initialisation: normal(0, initializer_range) weights (HF truncates at
-- 2 std), zero biases.
function ViTForImageClassification:init(config)
  local c = read_config(config)
  self.config = config
  self.num_labels = c.num_labels
  self.vit = ViTModel(c)
  self.classifier = c.num_labels > 0 and nn.Linear(c.hidden_size, c.num_labels) or nn.Identity()
  for name, p in self:named_parameters() do
    if name:match("%.bias$") then
      nn.init.zeros_(p)
    elseif not name:match("layernorm") then
      nn.init.normal_(p, 0, c.initializer_range)
    end
  end
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the encoder blocks.
function ViTForImageClassification:checkpoint_modules() return self.vit.encoder.layer end

--- model(pixel_values [B,C,H,W], {labels=}) -> {logits = [B, num_labels], loss =}
-- labels: int64 class ids 1..num_labels (cross-entropy) or, with one label, float targets (MSE).
function ViTForImageClassification:forward(pixel_values, opts)
  local h = self.vit(pixel_values)
  local out = { logits = self.classifier(h:select(2, 1)) }
  local labels = opts and opts.labels
  if labels then
    if labels:dtype() == "int64" then
      out.loss = ft.nn.functional.cross_entropy(out.logits, labels)
    else
      out.loss = ft.nn.functional.mse_loss(out.logits:reshape(-1), labels:reshape(-1))
    end
  end
  return out
end

return M
