-- ft.pref.orpo: ORPO's loss (Hong et al. 2024), supervised fine-tuning plus an odds-ratio
-- preference term, without a reference model, as TRL's ORPOTrainer defines it.
--
--   local pc, nc = ft.pref.logps(policy, chosen.input_ids, chosen.mask)
--   local pr, nr = ft.pref.logps(policy, rejected.input_ids, rejected.mask)
--   local loss, m = ft.pref.orpo_loss{policy_chosen = pc, policy_rejected = pr,
--     chosen_tokens = nc, rejected_tokens = nr, beta = 0.1}
--
-- With the mean log-probs a = policy_chosen / chosen_tokens, b likewise, and
-- log odds(p) = a - log(1 - exp(a)) (computed with log1mexp, exact also for a near 0):
--   loss = NLL - beta * mean(logsig(log odds(chosen) - log odds(rejected)))
-- where beta is ORPO's lambda and NLL the chosen completions' negative log-likelihood per
-- token over the batch, -sum(policy_chosen) / sum(chosen_tokens). TRL now takes that NLL over
-- the prompt and the completion (its labels are the whole chosen sequence); pass that value as
-- nll (e.g. model(ids, {labels = ids}).loss) to match it.
local ft = require "ft"
local check = require "ft.check"
local inputs = require "ft.pref.inputs"
local stable = require "ft.pref.stable"
local metrics_of = require("ft.pref.metrics").pairs

local M = {}

local OPTIONS = { "policy_chosen", "policy_rejected", "chosen_tokens", "rejected_tokens", "beta", "nll" }

-- Refuses mean log-probs above 0 (a probability above 1): the odds would be NaN.
local function check_nonpositive(where, name, t)
  local hi = t:detach():max():item()
  if hi > 0 then
    error(("%s: %s holds a mean log-prob of %g > 0; log-probs are <= 0"):format(where, name, hi), 0)
  end
end

--- ft.pref.orpo_loss{policy_chosen =, policy_rejected =, chosen_tokens =, rejected_tokens =,
-- beta = 0.1, nll =} -> loss, metrics. Inputs: [B] summed log-probs and token counts
-- (ft.pref.logps); nll (a scalar tensor with its graph) replaces the default chosen NLL (see
-- the module's header). metrics: rewards_chosen, rewards_rejected, rewards_accuracies,
-- rewards_margins (rewards beta * mean log-prob), logps_chosen, logps_rejected (mean log-probs
-- per token), nll_loss, log_odds_ratio (mean logsig of the log odds ratio) and
-- log_odds_chosen (mean log odds ratio), as TRL logs them.
function M.orpo_loss(opts)
  local where = "ft.pref.orpo_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts), OPTIONS)
  local pc = inputs.vector(where, "policy_chosen", opts.policy_chosen)
  local pr = inputs.vector(where, "policy_rejected", opts.policy_rejected, pc, "policy_chosen")
  local nc = inputs.counts(where, "chosen_tokens", opts.chosen_tokens, pc, "policy_chosen")
  local nr = inputs.counts(where, "rejected_tokens", opts.rejected_tokens, pc, "policy_chosen")
  local beta = inputs.beta(where, opts.beta, 0.1)
  local nll = opts.nll
  if nll ~= nil and (not ft.is_tensor(nll) or nll:numel() ~= 1) then
    check.fail(where, "nll", "a scalar tensor (the chosen NLL, with its graph)", nll)
  end

  local a, b = pc / nc, pr / nr
  check_nonpositive(where, "policy_chosen / chosen_tokens", a)
  check_nonpositive(where, "policy_rejected / rejected_tokens", b)
  local log_odds = (a - b) - (stable.log1mexp(a) - stable.log1mexp(b))
  local ratio = stable.logsigmoid(log_odds)
  if nll == nil then nll = -pc:sum() / nc:sum() else nll = nll:reshape({}) end
  local loss = nll - ratio:mean() * beta
  local metrics = metrics_of(a * beta, b * beta, a, b)
  metrics.nll_loss = nll:detach():item()
  metrics.log_odds_ratio = ratio:detach():mean():item()
  metrics.log_odds_chosen = log_odds:detach():mean():item()
  return loss, metrics
end

return M
