-- ft.pref: preference tuning, the functional core of TRL's trainers: the log-probs a model
-- gives to completions (with and without its adapters), the losses of DPO (and IPO, hinge,
-- robust DPO), SimPO, ORPO, KTO, reward models, and GRPO's advantages and clipped loss, each
-- with the metrics TRL logs. Every loss takes one options table, checked strictly, and
-- returns loss (a scalar with its graph), metrics (Lua numbers).
--
--   local pref = ft.pref
--   peft.lora(policy, {target = {"c_attn", "c_proj"}, r = 8})      -- its reference: the base
--   pref.disable_dropout(policy)                                   -- as TRL does by default
--   local pc, nc = pref.logps(policy, chosen.input_ids, chosen.mask)
--   local pr, nr = pref.logps(policy, rejected.input_ids, rejected.mask)
--   local rc = pref.reference_logps(policy, chosen.input_ids, chosen.mask)
--   local rr = pref.reference_logps(policy, rejected.input_ids, rejected.mask)
--   local loss, m = pref.dpo_loss{policy_chosen = pc, policy_rejected = pr, ref_chosen = rc,
--     ref_rejected = rr, chosen_tokens = nc, rejected_tokens = nr, beta = 0.1}
--   loss:backward(); opt:step()
--   print(m.rewards_accuracies, m.rewards_margins)      -- TRL's rewards/accuracies ...
--
-- The room: ft.pref.logps (logps, token_logps, reference_logps, with_reference,
-- disable_dropout), ft.pref.dpo, ft.pref.simpo, ft.pref.orpo, ft.pref.kto, ft.pref.reward
-- (reward_loss, RewardModel), ft.pref.grpo (group_advantages, grpo_loss), ft.pref.data
-- (read_jsonl, load_pairs, load_unpaired, collate_pairs, collate_unpaired, batches: JSONL
-- preference records tokenized, truncated and masked as TRL does, in padded batches);
-- ft.pref.inputs, ft.pref.metrics and ft.pref.stable are what they share. The trainers run
-- them as TRL's do (AdamW, gradient accumulation, the loop, the JSONL log): train_dpo /
-- DPOTrainer (pairs), train_kto / KTOTrainer (unpaired examples), train_reward / RewardTrainer
-- (a reward model on pairs), train_grpo / GRPOTrainer (sampled completions). Masks are the
-- completion's tokens in ids' columns (ft.text.collate's labels ~= -100 give one, and
-- ft.pref.collate_pairs' chosen_mask / rejected_mask are); token t is scored by the logits at
-- t - 1, as HF and TRL shift them.
local pref = {}

for _, part in ipairs { "ft.pref.logps", "ft.pref.dpo", "ft.pref.simpo", "ft.pref.orpo", "ft.pref.kto",
  "ft.pref.reward", "ft.pref.grpo", "ft.pref.data" } do
  for k, v in pairs(require(part)) do pref[k] = v end
end

-- Training: ft.pref.trainer (train_dpo, DPOTrainer, precompute_reference, load_reference, and
-- the step / evaluate / fit skeleton every trainer here shares), ft.pref.kto_trainer
-- (train_kto, KTOTrainer: unpaired examples), ft.pref.reward_trainer (train_reward,
-- RewardTrainer: a reward model on pairs) and ft.pref.grpo_sampler (train_grpo, GRPOTrainer,
-- sample_completions, score_completions).
local trainer = require "ft.pref.trainer"
pref.train_dpo, pref.DPOTrainer = trainer.train_dpo, trainer.DPOTrainer
pref.precompute_reference, pref.load_reference = trainer.precompute_reference, trainer.load_reference
local kto_trainer = require "ft.pref.kto_trainer"
pref.train_kto, pref.KTOTrainer = kto_trainer.train_kto, kto_trainer.KTOTrainer
local reward_trainer = require "ft.pref.reward_trainer"
pref.train_reward, pref.RewardTrainer = reward_trainer.train_reward, reward_trainer.RewardTrainer
local grpo_sampler = require "ft.pref.grpo_sampler"
pref.train_grpo, pref.GRPOTrainer = grpo_sampler.train_grpo, grpo_sampler.GRPOTrainer
pref.sample_completions, pref.score_completions = grpo_sampler.sample_completions, grpo_sampler.score_completions

-- The judges of scripts/preference.lua: n-gram classifiers of text (ft.pref.judge).
pref.judge = require "ft.pref.judge"

return pref
