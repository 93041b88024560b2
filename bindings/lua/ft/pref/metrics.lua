-- ft.pref.metrics: the numbers the preference losses report with their loss, named as TRL
-- logs them with "/" written "_" ("rewards/chosen" is rewards_chosen), as plain Lua numbers
-- (no graph), ready for ft.train.Logger.
--
--   local metrics = require "ft.pref.metrics"
--   local m = metrics.pairs(beta * (pc - rc), beta * (pr - rr), pc, pr)
--   print(m.rewards_accuracies)
local M = {}

--- metrics.mean(t) -> the mean of a tensor's elements as a Lua number (no graph); nil when t
-- is empty (TRL then logs nothing).
function M.mean(t)
  if t:numel() == 0 then return nil end
  return t:detach():mean():item()
end

--- metrics.pairs(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps) -> the table
-- of TRL's paired trainers (DPO, CPO/SimPO, ORPO): rewards_chosen, rewards_rejected (batch
-- means), rewards_accuracies (the fraction of pairs whose chosen reward is the larger),
-- rewards_margins (mean of chosen minus rejected), logps_chosen, logps_rejected (means).
function M.pairs(rc, rr, lc, lr)
  rc, rr = rc:detach(), rr:detach()
  return {
    rewards_chosen = M.mean(rc), rewards_rejected = M.mean(rr),
    rewards_accuracies = M.mean(rc:gt(rr)), rewards_margins = M.mean(rc - rr),
    logps_chosen = M.mean(lc), logps_rejected = M.mean(lr),
  }
end

return M
