-- ft.pref.simpo: SimPO's loss (Meng et al. 2024), reference-free preference optimisation over
-- length-normalised log-probs, as TRL's CPOTrainer computes it with loss_type = "simpo".
--
--   local pc, nc = ft.pref.logps(policy, chosen.input_ids, chosen.mask)
--   local pr, nr = ft.pref.logps(policy, rejected.input_ids, rejected.mask)
--   local loss, m = ft.pref.simpo_loss{policy_chosen = pc, policy_rejected = pr,
--     chosen_tokens = nc, rejected_tokens = nr, beta = 2.0, gamma = 0.5}
--
-- With the mean log-probs a = policy_chosen / chosen_tokens and b = policy_rejected /
-- rejected_tokens, z = beta (a - b) - gamma and e the label smoothing, each pair's loss is
-- -(1 - e) logsig(z) - e logsig(-z). gamma is TRL's simpo_gamma: the target reward margin
-- itself, in reward units (TRL subtracts simpo_gamma / beta from a - b before scaling by beta);
-- the SimPO paper's code takes gamma_beta_ratio = gamma / beta instead. cpo_alpha > 0 adds
-- CPO's behaviour-cloning term, cpo_alpha times the NLL of the chosen completions (mean per
-- token over the batch), as TRL's CPOTrainer does (it recommends cpo_alpha = 0 for SimPO).
local ft = require "ft"
local check = require "ft.check"
local inputs = require "ft.pref.inputs"
local stable = require "ft.pref.stable"
local metrics_of = require("ft.pref.metrics").pairs

local M = {}

local OPTIONS = { "policy_chosen", "policy_rejected", "chosen_tokens", "rejected_tokens", "beta", "gamma",
  "label_smoothing", "cpo_alpha", "nll" }

--- ft.pref.simpo_loss{policy_chosen =, policy_rejected =, chosen_tokens =, rejected_tokens =,
-- beta = 2.0, gamma = 0.5, label_smoothing = 0, cpo_alpha = 0, nll =} -> loss, metrics. Inputs:
-- [B] summed log-probs and token counts (ft.pref.logps); the loss is over their means (see the
-- module's header; gamma >= 0 is TRL's simpo_gamma, the margin in reward units); nll (a scalar
-- tensor with its graph) replaces the chosen NLL that cpo_alpha weighs. metrics:
-- rewards_chosen, rewards_rejected, rewards_accuracies, rewards_margins with the rewards beta *
-- mean log-prob, logps_chosen, logps_rejected (mean log-probs per token, as TRL logs them for
-- SimPO) and nll_loss (the chosen NLL per token; 0 when cpo_alpha is 0, as TRL).
function M.simpo_loss(opts)
  local where = "ft.pref.simpo_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts), OPTIONS)
  local pc = inputs.vector(where, "policy_chosen", opts.policy_chosen)
  local pr = inputs.vector(where, "policy_rejected", opts.policy_rejected, pc, "policy_chosen")
  local nc = inputs.counts(where, "chosen_tokens", opts.chosen_tokens, pc, "policy_chosen")
  local nr = inputs.counts(where, "rejected_tokens", opts.rejected_tokens, pc, "policy_chosen")
  local beta = inputs.beta(where, opts.beta, 2.0)
  local gamma = check.number(where, "gamma", opts.gamma, 0.5, { min = 0 })
  local e = inputs.label_smoothing(where, opts.label_smoothing)
  local alpha = check.number(where, "cpo_alpha", opts.cpo_alpha, 0, { min = 0 })
  if opts.nll ~= nil and (not ft.is_tensor(opts.nll) or opts.nll:numel() ~= 1) then
    check.fail(where, "nll", "a scalar tensor (the chosen NLL, with its graph)", opts.nll)
  end

  local a, b = pc / nc, pr / nr
  local z = (a - b) * beta - gamma
  local losses = -stable.logsigmoid(z) * (1 - e)
  if e > 0 then losses = losses - stable.logsigmoid(-z) * e end
  local loss = losses:mean()
  local nll = ft.tensor(0)
  if alpha > 0 then
    nll = opts.nll and opts.nll:reshape({}) or -pc:sum() / nc:sum()
    loss = loss + nll * alpha
  end
  local metrics = metrics_of(a * beta, b * beta, a, b)
  metrics.nll_loss = nll:detach():item()
  return loss, metrics
end

return M
