-- ft.pref.reward_trainer: training a reward model with the Bradley-Terry loss (ft.pref.reward_loss)
-- as TRL's RewardTrainer does, over the pair batches DPOTrainer takes, on the skeleton the
-- preference trainers share (ft.pref.trainer's Trainer: AdamW, gradient accumulation, the loop,
-- the progress line and the JSONL log).
--
--   local rm = ft.pref.RewardModel(ft.models.from_pretrained(dir))   -- body + score head
--   ft.peft.lora(rm, {target = {"c_attn"}, r = 8, modules_to_save = {"score"}})
--   local result, trainer = ft.pref.train_reward(rm, train_batches, {lr = 1e-4, epochs = 1,
--     log_path = "run/metrics.jsonl", eval_batches = held_out})
--   print(trainer:evaluate(held_out).accuracy)                        -- chosen scored higher
--
-- The model: an ft.pref.RewardModel, or any callable model(ids, {attention_mask =}) returning
-- {rewards = [B]} (or {logits = [B, 1]}, or the tensor itself). Each side of a pair is scored at
-- its last real token: the batch's chosen_attention_mask / rejected_attention_mask (1 on real
-- tokens) go to the model; a batch without them gets one that is 1 up to the side's last
-- completion token (its mask), so right padding is never scored. A batch may carry margin (a
-- tensor [B] or a number: how much better chosen is), subtracted inside the loss as TRL does.
-- What trains is what requires a gradient: with LoRA, the adapters and the modules named in
-- modules_to_save (the score head); without an adapter, every parameter.
local ft = require "ft"
local check = require "ft.check"
local T = require "ft.pref.trainer"
local reward = require "ft.pref.reward"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local OPTIONS = { "center_rewards_coefficient", "gradient_accumulation_steps", "disable_dropout", "data_parallel" }
for _, k in ipairs(T.OPTIMIZER_OPTIONS) do OPTIONS[#OPTIONS + 1] = k end

local RewardTrainer = T.class("pairs")
--- RewardTrainer: one object per run of reward-model training; ft.pref.RewardTrainer(rm, opts)
-- makes one (ft.pref.train_reward makes one and runs fit). opts: center_rewards_coefficient
-- (ft.pref.reward_loss's; none by default, TRL's suggestion is 0.01); the optimizer: lr (5e-5,
-- the default TRL's RewardConfig keeps from TrainingArguments), weight_decay, betas, eps (AdamW
-- over the trainable parameters) or optimizer, scheduler, max_grad_norm (1.0; false: none);
-- gradient_accumulation_steps (1); disable_dropout (true: every Dropout of rm to p = 0);
-- data_parallel (true: under mpirun the ranks share every batch). step, evaluate and fit are
-- ft.pref.trainer's Trainer's (unit "pairs"); the metrics are reward_loss's (TRL's): loss,
-- accuracy (the fraction of pairs whose chosen reward is the larger), margin (mean chosen -
-- rejected), rewards_chosen, rewards_rejected, mean_reward, min_reward, max_reward.
-- Fields: model (the reward model), net (ft.dist.DataParallel(model) when shared), optimizer,
-- scheduler, history.
M.RewardTrainerClass = RewardTrainer
RewardTrainer.REDUCE = { min_reward = "min", max_reward = "max" }

local function new_reward(where, rm, opts)
  opts = ft.check_options(where, opts, OPTIONS)
  check.func(where, "rm", check.required(where, "rm", rm))
  local coef = check.number(where, "center_rewards_coefficient", opts.center_rewards_coefficient, nil, { min = 0 })
  local accum = check.integer(where, "gradient_accumulation_steps", opts.gradient_accumulation_steps, 1, { min = 1 })
  local disable = check.boolean(where, "disable_dropout", opts.disable_dropout, true)
  local opt, sched, clip = T.optimizer_of(where, rm, opts, { lr = 5e-5,
    frozen = "the reward model has no trainable parameter (with an adapter, name its head in modules_to_save, "
      .. "e.g. ft.peft.lora(rm, {target = ..., modules_to_save = {\"score\"}}))" })
  if disable then T.disable_dropout(rm) end
  local net, shared = T.data_parallel(where, rm, opts.data_parallel)
  return setmetatable({
    where = where, model = rm, net = net, shared = shared, optimizer = opt, scheduler = sched,
    max_grad_norm = clip,
    center_rewards_coefficient = coef, accumulation = accum, history = {},
  }, RewardTrainer)
end

--- ft.pref.RewardTrainer(rm, opts) -> trainer (see RewardTrainer): trainer:step(batch),
-- trainer:evaluate(batches) (held-out accuracy ...), trainer:fit(data, fit_opts).
function M.RewardTrainer(rm, opts) return new_reward("ft.pref.RewardTrainer", rm, opts) end

-- An attention mask 1 up to each row's last completion token (mask ~= 0), int64 [B, T].
local function through_last(mask)
  local rows = mask:totable()
  local out = {}
  for b, row in ipairs(rows) do
    local last = 0
    for t, v in ipairs(row) do if v ~= 0 then last = t end end
    local r = {}
    for t = 1, #row do r[t] = t <= last and 1 or 0 end
    out[b] = r
  end
  return ft.tensor(out, { dtype = "int64" })
end

--- trainer:read(batch) -> the checked pair batch (ft.pref.trainer.read_batch), each side with an
-- attention mask (the batch's, else 1 through its last completion token) and margin (float32
-- [B], when the batch has one).
function RewardTrainer:read(batch)
  local where = self.where
  local raw = T.unwrap(batch)
  local b = T.read_batch(where, raw)
  for _, side in ipairs { "chosen", "rejected" } do
    local name = side .. "_attention_mask"
    if b[name] == nil then b[name] = through_last(b[side .. "_mask"]) end
  end
  local margin = raw.margin
  if type(margin) == "number" then
    margin = ft.full({ b.size }, check.number(where, "batch.margin", margin))
  end
  if margin ~= nil then
    if not ft.is_tensor(margin) or margin:dim() ~= 1 or margin:size(1) ~= b.size or margin:dtype() == "int64" then
      error(("%s: batch.margin must be a number or a float tensor [%d] (one per pair), got %s"):format(where, b.size,
        ft.is_tensor(margin) and (margin:dtype() .. " " .. shape_str(margin)) or check.show(margin)), 0)
    end
    b.margin = margin:float():detach()
  end
  return b
end

--- trainer:rewards(ids, attention_mask) -> rewards [B] (with the model's graph): the reward model
-- on ids; its result's rewards (or logits [B, 1], or the tensor itself), checked to be one value
-- per row.
function RewardTrainer:rewards(ids, att)
  local out = self.net(ids, { attention_mask = att })
  local r = out
  if type(out) == "table" and not ft.is_tensor(out) then r = out.rewards or out.logits end
  local B = ids:size(1)
  if ft.is_tensor(r) and r:dim() == 2 and r:size(2) == 1 then r = r:reshape(B) end
  if not ft.is_tensor(r) or r:dim() ~= 1 or r:size(1) ~= B then
    error(("%s: the reward model must return {rewards = [%d]} (one reward per row of ids %s), got %s"):format(
      self.where, B, shape_str(ids), ft.is_tensor(r) and shape_str(r) or check.show(out)), 0)
  end
  return r
end

--- trainer:loss(batch) -> loss (with the model's graph), metrics of a checked batch (read): the
-- rewards of both sides and ft.pref.reward_loss (margin and center_rewards_coefficient applied).
function RewardTrainer:loss(b)
  local rc = self:rewards(b.chosen_ids, b.chosen_attention_mask)
  local rr = self:rewards(b.rejected_ids, b.rejected_attention_mask)
  return reward.reward_loss { chosen = rc, rejected = rr, margin = b.margin,
    center_rewards_coefficient = self.center_rewards_coefficient }
end

--- ft.pref.train_reward(rm, data [, opts]) -> result, trainer: RewardTrainer(rm, opts) and
-- trainer:fit(data, opts) (ft.pref.trainer's Trainer:fit): opts holds both tables' keys, e.g.
-- {lr = 1e-4, weight_decay = 0, steps = 200, log_path = "run/rm.jsonl", log_every = 10,
-- eval_batches = held_out}; trainer:evaluate(held_out).accuracy is the held-out accuracy.
function M.train_reward(rm, data, opts)
  return T.train_with("ft.pref.train_reward", new_reward, OPTIONS, rm, data, opts)
end

return M
