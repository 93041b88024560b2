-- GPT-2 with a sequence-classification head, as HuggingFace's GPT2ForSequenceClassification:
-- the same body (transformer.*, so a GPT2LMHeadModel checkpoint's body loads one to one) and a
-- bias-free linear `score` [num_labels, n_embd] on one pooled hidden state per sequence.
--
--   local clf = require "ft.models.gpt2_classifier"
--   local lm = ft.text.load_checkpoint("models/gpt_fortunes.h5")
--   local model = clf.from_lm(lm, 4, {pooling = "mean"})        -- new head, lm's body
--   local out = model(batch.input_ids, {attention_mask = batch.attention_mask, labels = y})
--   out.logits [B, num_labels], out.loss (mean cross-entropy, labels 1-based), out.features [B, d]
--
-- Pooling (config.classifier_pooling, not an HF field):
--   "last"  the hidden state of each row's last real token (attention_mask = 1), HF's choice:
--           in a causal model it is the one position that has seen the whole sequence.
--   "mean"  the mean of the hidden states over the real tokens. scripts/self_train.lua uses it
--           (chosen beforehand, not tuned): a topic shows in words anywhere in a text, and a
--           text cut to its first bytes usually ends mid-word, where the last position's state
--           is about finishing that word.
-- Without attention_mask every token is real. Padding may be on either side.
--
-- The number of classes is config.num_labels, else the size of config.id2label, else 2 (HF's
-- default). ft.models registers the architecture, so ft.models.new and
-- ft.models.from_pretrained build it from a config naming GPT2ForSequenceClassification.
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local gpt2 = require "ft.models.gpt2"
local nn = ft.nn
local F = nn.functional

local M = {}

local POOLINGS = { last = true, mean = true }

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function num_labels_of(config)
  if config.num_labels ~= nil then return config.num_labels end
  if type(config.id2label) == "table" then
    local n = 0
    for _ in pairs(config.id2label) do n = n + 1 end
    if n > 0 then return n end
  end
  return 2
end

--- GPT2ForSequenceClassification(config): HF's GPT-2 sequence classifier from an HF GPT-2 config plus
-- num_labels and classifier_pooling; model(ids, opts) -> {logits =, loss =, features =}.
local Cls = nn.Module:extend("GPT2ForSequenceClassification")
M.GPT2ForSequenceClassification = Cls
Cls.hf_architecture = "GPT2ForSequenceClassification"
Cls.peft_task_type = "SEQ_CLS"
Cls.hf_model_type = "gpt2"
Cls.base_model_prefix = "transformer"
Cls.ignore_on_load = { "%.attn%.bias$", "%.attn%.masked_bias$", "^lm_head%.weight$" }

Cls.config_keys = models.config_keys(table.move(gpt2.CONFIG_KEYS, 1, #gpt2.CONFIG_KEYS, 1,
  { "num_labels", "id2label", "label2id", "classifier_pooling" }))

--- Cls.read_config(config) -> the checked GPT-2 config plus num_labels and pooling.
function Cls.read_config(config)
  local where = "GPT2ForSequenceClassification"
  local c = gpt2.read_config(config, where)
  local n = num_labels_of(config)
  if math.type(n) ~= "integer" or n < 1 or n > common.LIMITS.labels then
    error(("%s: config field 'num_labels' must be an integer in [1, %d], got %s"):format(where,
      common.LIMITS.labels, tostring(n)), 0)
  end
  local pooling = config.classifier_pooling or "last"
  if not POOLINGS[pooling] then
    error(("%s: config field 'classifier_pooling' must be 'last' or 'mean', got '%s'"):format(where,
      tostring(pooling)), 0)
  end
  c.num_labels, c.pooling = n, pooling
  return c
end

--- Cls.tensor_shapes(c) -> name -> shape: the GPT-2 body and score.weight [num_labels, n_embd].
function Cls.tensor_shapes(c)
  local out = gpt2.body_shapes(c, {})
  out["score.weight"] = { c.num_labels, c.n_embd }
  return out, {}
end

--- GPT2ForSequenceClassification(config): config is an HF GPT-2 config table, plus
-- num_labels and classifier_pooling ("last" by default, as HF).
function Cls:init(config)
  local c = Cls.read_config(config)
  local n, pooling = c.num_labels, c.pooling
  self.config = common.copy_config(config, { num_labels = n, classifier_pooling = pooling })
  self.num_labels, self.pooling = n, pooling
  -- The body and its config checks come from gpt2.lua's LM; its lm_head is dropped.
  local lm = gpt2.GPT2LMHeadModel(config)
  self.max_positions = lm.max_positions
  self.transformer = lm.transformer
  self.score = nn.Linear(self.transformer.wte.embedding_dim, n, { bias = false })
  nn.init.normal_(self.score.weight, 0, c.initializer_range)
end

function Cls:extra_repr() return ("num_labels=%d, pooling=%s"):format(self.num_labels, self.pooling) end

-- Row b's positions 1..T as {real = {j, ...}} from a mask [B,T]; checks every row has a token.
local function real_positions(mask)
  local rows = mask:totable()
  for b, row in ipairs(rows) do
    local any = false
    for _, v in ipairs(row) do
      if v ~= 0 then any = true break end
    end
    if not any then
      error(("GPT2ForSequenceClassification: row %d of attention_mask has no real token"):format(b), 4)
    end
  end
  return rows
end

--- pool(hidden [B,T,d], attention_mask [B,T] or nil) -> [B,d] with the model's pooling.
function Cls:pool(h, mask)
  local B, T, d = h:size(1), h:size(2), h:size(3)
  if mask == nil then
    if self.pooling == "mean" then return h:mean(2) end
    return h:select(2, T)
  end
  local rows = real_positions(mask)
  if self.pooling == "mean" then
    local m = mask:float():view(B, T, 1)
    return (h * m):sum(2) / m:sum(2)
  end
  local idx = {}
  for b, row in ipairs(rows) do
    local last = 0
    for j, v in ipairs(row) do if v ~= 0 then last = j end end
    idx[b] = (b - 1) * T + last
  end
  return h:reshape(B * T, d):index_select(1, ft.tensor(idx, { dtype = "int64" }))
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the decoder blocks.
function Cls:checkpoint_modules() return self.transformer.h end

--- model(input_ids [B,T] int64 1-based, {attention_mask = [B,T], labels = int64 [B] 1-based,
-- position_ids =, inputs_embeds =}) -> {logits = [B,num_labels], loss =, features = [B,d]}
-- features is the pooled hidden state the score reads (for contrastive self-training).
function Cls:forward(input_ids, opts)
  opts = opts or {}
  if input_ids and input_ids:dim() == 1 then input_ids = input_ids:reshape(1, -1) end
  local mask = opts.attention_mask
  if mask ~= nil then
    local n = input_ids or opts.inputs_embeds
    if not ft.is_tensor(mask) or mask:dim() ~= 2 or mask:size(1) ~= n:size(1) or mask:size(2) ~= n:size(2) then
      error(("GPT2ForSequenceClassification: attention_mask must be [%d,%d] like the inputs, got %s"):format(
        n:size(1), n:size(2), ft.is_tensor(mask) and shape_str(mask) or type(mask)), 2)
    end
  end
  local h = self.transformer(input_ids, { attention_mask = mask, position_ids = opts.position_ids,
    inputs_embeds = opts.inputs_embeds })
  local features = self:pool(h, mask)
  local out = { logits = self.score(features), features = features }
  if opts.labels ~= nil then
    local y = opts.labels
    if not ft.is_tensor(y) or y:dtype() ~= "int64" or y:dim() ~= 1 or y:size(1) ~= out.logits:size(1) then
      error(("GPT2ForSequenceClassification: labels must be int64 [%d] (1-based classes), got %s"):format(
        out.logits:size(1), ft.is_tensor(y) and (y:dtype() .. " " .. shape_str(y)) or type(y)), 2)
    end
    out.loss = F.cross_entropy(out.logits, y)
  end
  return out
end

--- from_lm(lm, num_labels, {pooling = "last"}) -> classifier whose body IS lm.transformer (the
-- same modules and tensors, no copy) under a new score head. lm: a GPT2LMHeadModel, e.g. from
-- ft.text.load_checkpoint. Dropout follows lm's config.
function M.from_lm(lm, num_labels, opts)
  opts = common.check_options("gpt2_classifier.from_lm", opts, { "pooling" })
  if type(lm) ~= "table" or type(lm.config) ~= "table" or lm.transformer == nil then
    error("gpt2_classifier.from_lm: expected a GPT2LMHeadModel (with .config and .transformer)", 2)
  end
  local config = common.copy_config(lm.config, { num_labels = num_labels,
    classifier_pooling = opts.pooling or "last", architectures = { "GPT2ForSequenceClassification" } })
  local ok, model = pcall(Cls, config)
  if not ok then error("gpt2_classifier.from_lm: " .. tostring(model), 2) end
  model.transformer = lm.transformer
  model:train(lm.training)
  return model
end

return M
