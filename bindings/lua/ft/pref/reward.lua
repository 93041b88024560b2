-- ft.pref.reward: reward models for RLHF, as TRL's RewardTrainer trains them: a scalar score
-- head on a language model's body, and the Bradley-Terry pairwise loss.
--
--   local lm = ft.models.from_pretrained(dir)
--   local rm = ft.pref.RewardModel(lm)                    -- lm's body + score [1, hidden]
--   ft.peft.lora(rm, {target = {"c_attn"}, r = 8, modules_to_save = {"score"}})   -- the head trains
--   local rc = rm(chosen.input_ids, {attention_mask = chosen.attention_mask}).rewards
--   local rr = rm(rejected.input_ids, {attention_mask = rejected.attention_mask}).rewards
--   local loss, m = ft.pref.reward_loss{chosen = rc, rejected = rr}
--
-- The score reads each sequence's last real token (the last position where attention_mask is
-- 1; the last position without a mask), the rule of ft.models.gpt2_classifier's "last" pooling
-- and HF's sequence classifiers: in a causal model it is the one position that has seen the
-- whole sequence. Padding may be on either side.
local ft = require "ft"
local nn = require "ft.nn"
local check = require "ft.check"
local common = require "ft.models.common"
local inputs = require "ft.pref.inputs"
local metrics = require "ft.pref.metrics"
local stable = require "ft.pref.stable"

local M = {}

--- ft.pref.reward_loss{chosen =, rejected =, margin =, center_rewards_coefficient =} -> loss,
-- metrics: -mean(logsig(chosen - rejected - margin)) over the pairs, plus
-- center_rewards_coefficient * mean((chosen + rejected)^2) when given (it keeps the rewards
-- centred at 0), as TRL's RewardTrainer. chosen, rejected: rewards [B] (or [B, 1], a reward
-- model's logits); margin: a number or a tensor [B] (how much better chosen is; detached).
-- metrics (TRL's): accuracy (fraction of pairs with chosen > rejected), margin (mean chosen -
-- rejected), mean_reward, min_reward, max_reward (over both), rewards_chosen, rewards_rejected.
function M.reward_loss(opts)
  local where = "ft.pref.reward_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts),
    { "chosen", "rejected", "margin", "center_rewards_coefficient" })
  local rc = inputs.vector(where, "chosen", opts.chosen)
  local rr = inputs.vector(where, "rejected", opts.rejected, rc, "chosen")
  local margin = opts.margin
  if type(margin) == "number" then
    margin = check.number(where, "margin", margin)
  elseif margin ~= nil then
    margin = inputs.reference(where, "margin", margin, rc, "chosen")
  end
  local coef = check.number(where, "center_rewards_coefficient", opts.center_rewards_coefficient, nil, { min = 0 })

  local d = rc - rr
  if margin ~= nil then d = d - margin end
  local loss = -stable.logsigmoid(d):mean()
  if coef ~= nil then loss = loss + (rc + rr):square():mean() * coef end
  local all = ft.cat({ rc:detach(), rr:detach() }, 1)
  local m = {
    accuracy = metrics.mean(rc:detach():gt(rr:detach())), margin = metrics.mean(rc - rr),
    mean_reward = metrics.mean(all), min_reward = all:min():item(), max_reward = all:max():item(),
    rewards_chosen = metrics.mean(rc), rewards_rejected = metrics.mean(rr),
  }
  return loss, m
end

-- ---- the reward model ------------------------------------------------------------------------

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

--- RewardModel(lm [, {initializer_range =}]): a reward model on lm's body: lm[lm.base_model_prefix]
-- (GPT2LMHeadModel's transformer, LlamaForCausalLM's model: the same modules and tensors, no
-- copy) and a new bias-free Linear score [1, hidden] initialised N(0, initializer_range) (default
-- lm.config.initializer_range, else 0.02), as HF's *ForSequenceClassification with num_labels =
-- 1; state_dict keys are HF's ("transformer.h.0...", "score.weight"). rm(input_ids [B, T],
-- {attention_mask =}) -> {logits = [B, 1], rewards = [B]}: the score of each row's last real
-- token (see the module's header). Gradient checkpointing checkpoints lm's blocks. With an
-- adapter, name the head in modules_to_save so that it trains (PEFT does so for SEQ_CLS).
local RewardModel = nn.Module:extend("RewardModel")
M.RewardModel = RewardModel
RewardModel.peft_task_type = "SEQ_CLS"   -- what PEFT's adapter_config.json names the task

function RewardModel:init(lm, opts)
  local where = "ft.pref.RewardModel"
  opts = ft.check_options(where, opts, { "initializer_range" })
  local prefix = type(lm) == "table" and lm.base_model_prefix
  local body = prefix and lm[prefix]
  local head = nn.is_module(lm) and lm.lm_head
  if not nn.is_module(body) or not (nn.is_module(head) and ft.is_tensor(head.weight)) then
    error(where .. ": expected a language model with base_model_prefix, its body and lm_head "
      .. "(GPT2LMHeadModel, LlamaForCausalLM, ... from ft.models)", 0)
  end
  local hidden = head.weight:size(2)
  local config = type(lm.config) == "table" and lm.config or {}
  local std = check.number(where, "initializer_range", opts.initializer_range,
    type(config.initializer_range) == "number" and config.initializer_range or 0.02, { min = 0 })
  rawset(self, "base_model_prefix", prefix)
  self.config = common.copy_config(config, { num_labels = 1 })
  self[prefix] = body
  self.score = nn.Linear(hidden, 1, { bias = false })
  nn.init.normal_(self.score.weight, 0, std)
  if type(lm.checkpoint_modules) == "function" then rawset(self, "_blocks", lm:checkpoint_modules()) end
  self:train(lm.training)
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the language model's blocks.
function RewardModel:checkpoint_modules() return rawget(self, "_blocks") end

function RewardModel:extra_repr() return "num_labels=1, pooling=last" end

-- Row b's last position with attention_mask ~= 0, as 1-based flat indices into [B*T].
local function last_real(mask, T, where)
  local idx = {}
  for b, row in ipairs(mask:totable()) do
    local last = 0
    for j, v in ipairs(row) do if v ~= 0 then last = j end end
    if last == 0 then error(("%s: row %d of attention_mask has no real token"):format(where, b), 0) end
    idx[b] = (b - 1) * T + last
  end
  return ft.tensor(idx, { dtype = "int64" })
end

function RewardModel:forward(input_ids, opts)
  local where = "ft.pref.RewardModel"
  opts = ft.check_options(where, opts, { "attention_mask" })
  if ft.is_tensor(input_ids) and input_ids:dim() == 1 then input_ids = input_ids:reshape(1, -1) end
  if not ft.is_tensor(input_ids) or input_ids:dim() ~= 2 then
    check.fail(where, "input_ids", "an int64 tensor [batch, seq]", input_ids)
  end
  local B, T = input_ids:size(1), input_ids:size(2)
  local mask = opts.attention_mask
  if mask ~= nil and (not ft.is_tensor(mask) or mask:dim() ~= 2 or mask:size(1) ~= B or mask:size(2) ~= T) then
    error(("%s: attention_mask must be [%d,%d] like input_ids, got %s"):format(where, B, T,
      ft.is_tensor(mask) and shape_str(mask) or check.show(mask)), 0)
  end
  local h = self[self.base_model_prefix](input_ids, { attention_mask = mask })
  local d = h:size(3)
  local pooled
  if mask == nil then
    pooled = h:select(2, T)
  else
    pooled = h:reshape(B * T, d):index_select(1, last_real(mask, T, where))
  end
  local logits = self.score(pooled)
  return { logits = logits, rewards = logits:reshape(B) }
end

return M
