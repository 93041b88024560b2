-- ft.pref.dpo: Direct Preference Optimization's loss (Rafailov et al. 2023) and its variants,
-- as TRL's DPOTrainer defines them, over summed completion log-probs of the policy and the
-- reference model.
--
--   local pc, nc = ft.pref.logps(policy, chosen.input_ids, chosen.mask)
--   local pr, nr = ft.pref.logps(policy, rejected.input_ids, rejected.mask)
--   local rc = ft.pref.reference_logps(policy, chosen.input_ids, chosen.mask)
--   local rr = ft.pref.reference_logps(policy, rejected.input_ids, rejected.mask)
--   local loss, m = ft.pref.dpo_loss{policy_chosen = pc, policy_rejected = pr, ref_chosen = rc,
--     ref_rejected = rr, chosen_tokens = nc, rejected_tokens = nr, beta = 0.1}
--   loss:backward(); print(m.rewards_accuracies, m.rewards_margins)
--
-- With D = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected) per pair and e the
-- label smoothing, the loss types are (each averaged over the batch):
--   "sigmoid"  -(1 - e) logsig(beta D) - e logsig(-beta D)   (DPO; e > 0 is conservative DPO,
--              cDPO, as TRL had it: TRL's current sigmoid loss is the e = 0 case)
--   "robust"   (-(1 - e) logsig(beta D) + e logsig(-beta D)) / (1 - 2e)   (Robust DPO)
--   "hinge"    relu(1 - beta D)                                           (SLiC)
--   "ipo"      (D' - 1 / (2 beta))^2, D' the same difference with each completion's log-ratio
--              divided by its token count (TRL's length normalisation for IPO)
local ft = require "ft"
local check = require "ft.check"
local inputs = require "ft.pref.inputs"
local stable = require "ft.pref.stable"
local metrics_of = require("ft.pref.metrics").pairs

local M = {}

local LOSS_TYPES = { "sigmoid", "robust", "hinge", "ipo" }
local OPTIONS = { "policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected", "chosen_tokens",
  "rejected_tokens", "beta", "loss_type", "label_smoothing" }

--- ft.pref.dpo_loss{policy_chosen =, policy_rejected =, ref_chosen =, ref_rejected =,
-- chosen_tokens =, rejected_tokens =, beta = 0.1, loss_type = "sigmoid", label_smoothing = 0}
-- -> loss (a scalar with the policy's graph), metrics. Inputs are [B] summed log-probs
-- (ft.pref.logps) and token counts (needed by "ipo" only); the reference ones are detached.
-- loss_type: "sigmoid", "robust", "hinge" or "ipo" (see the module's header); label_smoothing
-- in [0, 0.5) applies to "sigmoid" and "robust" only. metrics (Lua numbers): rewards_chosen,
-- rewards_rejected, rewards_accuracies, rewards_margins, logps_chosen, logps_rejected, with the
-- rewards beta * (policy - reference) of the summed log-probs, as TRL logs them.
function M.dpo_loss(opts)
  local where = "ft.pref.dpo_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts), OPTIONS)
  local pc = inputs.vector(where, "policy_chosen", opts.policy_chosen)
  local pr = inputs.vector(where, "policy_rejected", opts.policy_rejected, pc, "policy_chosen")
  local rc = inputs.reference(where, "ref_chosen", opts.ref_chosen, pc, "policy_chosen")
  local rr = inputs.reference(where, "ref_rejected", opts.ref_rejected, pc, "policy_chosen")
  local beta = inputs.beta(where, opts.beta, 0.1)
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "sigmoid", LOSS_TYPES)
  local e = inputs.label_smoothing(where, opts.label_smoothing)
  if e > 0 and (loss_type == "hinge" or loss_type == "ipo") then
    error(("%s: label_smoothing applies to the 'sigmoid' and 'robust' losses, not '%s'"):format(where,
      loss_type), 0)
  end

  local chosen_ratio, rejected_ratio = pc - rc, pr - rr
  local losses
  if loss_type == "ipo" then
    local nc = inputs.counts(where, "chosen_tokens", opts.chosen_tokens, pc, "policy_chosen")
    local nr = inputs.counts(where, "rejected_tokens", opts.rejected_tokens, pc, "policy_chosen")
    local d = chosen_ratio / nc - rejected_ratio / nr
    losses = (d - 1 / (2 * beta)):square()
  else
    -- the counts are optional here, but still checked when given
    if opts.chosen_tokens ~= nil then inputs.counts(where, "chosen_tokens", opts.chosen_tokens, pc, "policy_chosen") end
    if opts.rejected_tokens ~= nil then
      inputs.counts(where, "rejected_tokens", opts.rejected_tokens, pc, "policy_chosen")
    end
    local z = (chosen_ratio - rejected_ratio) * beta
    if loss_type == "sigmoid" then
      losses = -stable.logsigmoid(z) * (1 - e)
      if e > 0 then losses = losses - stable.logsigmoid(-z) * e end
    elseif loss_type == "robust" then
      losses = (-stable.logsigmoid(z) * (1 - e) + stable.logsigmoid(-z) * e) / (1 - 2 * e)
    else -- hinge
      losses = (1 - z):relu()
    end
  end
  local metrics = metrics_of(chosen_ratio * beta, rejected_ratio * beta, pc, pr)
  return losses:mean(), metrics
end

return M
