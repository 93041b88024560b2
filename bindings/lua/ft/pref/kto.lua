-- ft.pref.kto: KTO's loss (Ethayarajh et al. 2024), preference tuning from unpaired examples
-- labelled desirable or undesirable, as TRL's KTOTrainer defines it.
--
--   local lp = ft.pref.logps(policy, batch.input_ids, batch.mask)            -- [B]
--   local ref = ft.pref.reference_logps(policy, batch.input_ids, batch.mask)
--   -- the KL reference point: the same prompts with mismatched completions (TRL pairs
--   -- prompt i with completion i - 1 of the batch, cyclically)
--   local kl_lp = ft.no_grad(ft.pref.logps, policy, kl.input_ids, kl.mask)
--   local kl_ref = ft.pref.reference_logps(policy, kl.input_ids, kl.mask)
--   local loss, m = ft.pref.kto_loss{policy = lp, reference = ref, labels = batch.labels,
--     kl = kl_lp - kl_ref, beta = 0.1}
--
-- With r = policy - reference per example and z0 = max(0, mean(kl)) (detached):
--   desirable     desirable_weight   * (1 - sigmoid(beta (r - z0)))
--   undesirable   undesirable_weight * (1 - sigmoid(beta (z0 - r)))
-- and the loss is the mean over the batch. loss_type "apo_zero_unpaired" (TRL's other KTO
-- loss) uses 1 - sigmoid(beta r) and sigmoid(beta r) and no KL term.
local ft = require "ft"
local check = require "ft.check"
local inputs = require "ft.pref.inputs"
local metrics = require "ft.pref.metrics"

local M = {}

local OPTIONS = { "policy", "reference", "labels", "kl", "beta", "desirable_weight", "undesirable_weight",
  "loss_type" }

-- labels (booleans, 0/1 numbers or a 0/1 tensor [B]) -> float32 [B] of 1 (desirable) and 0.
local function check_labels(where, labels, like)
  check.required(where, "labels", labels)
  local B = like:size(1)
  local values
  if ft.is_tensor(labels) then
    if labels:dim() ~= 1 or labels:size(1) ~= B then
      error(("%s: labels is %s but policy is %s: one label per example"):format(where,
        inputs.shape_str(labels), inputs.shape_str(like)), 0)
    end
    values = labels:totable()
  elseif type(labels) == "table" then
    values = labels
    if #values ~= B then
      error(("%s: labels has %d entries but policy is %s"):format(where, #values, inputs.shape_str(like)), 0)
    end
  else
    check.fail(where, "labels", "an array of booleans or a 0/1 tensor [batch]", labels)
  end
  local out = {}
  for i = 1, B do
    local v = values[i]
    if v == true or v == 1 then out[i] = 1
    elseif v == false or v == 0 then out[i] = 0
    else
      error(("%s: labels[%d] must be true/false (or 1/0), got %s"):format(where, i, check.show(v)), 0)
    end
  end
  return ft.tensor(out)
end

-- The KL reference point: mean of a tensor (or a number), clamped at 0, as a Lua number.
local function check_kl(where, kl)
  local v
  if type(kl) == "number" then
    v = check.number(where, "kl", kl)
  elseif ft.is_tensor(kl) and kl:numel() > 0 and kl:dtype() ~= "int64" then
    v = kl:detach():mean():item()
    if v ~= v or v == math.huge or v == -math.huge then check.fail(where, "kl", "finite", kl) end
  else
    check.fail(where, "kl", "a number or a non-empty float tensor (policy minus reference log-probs of "
      .. "mismatched pairs)", kl)
  end
  return math.max(v, 0)
end

--- ft.pref.kto_loss{policy =, reference =, labels =, kl =, beta = 0.1, desirable_weight = 1,
-- undesirable_weight = 1, loss_type = "kto"} -> loss, metrics. policy, reference: [B] summed
-- log-probs (reference detached); labels: booleans (true = desirable) or a 0/1 tensor [B];
-- kl: the KL reference point, a tensor of policy-minus-reference summed log-probs of
-- mismatched pairs (its mean is taken) or that mean as a number; clamped at 0 and detached
-- (required for "kto", refused for "apo_zero_unpaired"). metrics: kl, and, as TRL logs them,
-- rewards_chosen / logps_chosen (means over the desirable examples; nil when none),
-- rewards_rejected / logps_rejected (over the undesirable ones), rewards_margins (their
-- difference, when both exist), with the rewards beta * (policy - reference).
function M.kto_loss(opts)
  local where = "ft.pref.kto_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts), OPTIONS)
  local lp = inputs.vector(where, "policy", opts.policy)
  local ref = inputs.reference(where, "reference", opts.reference, lp, "policy")
  local y = check_labels(where, opts.labels, lp)
  local beta = inputs.beta(where, opts.beta, 0.1)
  local wd = check.number(where, "desirable_weight", opts.desirable_weight, 1, { min = 0 })
  local wu = check.number(where, "undesirable_weight", opts.undesirable_weight, 1, { min = 0 })
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "kto", { "kto", "apo_zero_unpaired" })
  local z0 = 0
  if loss_type == "kto" then
    z0 = check_kl(where, check.required(where, "kl", opts.kl))
  elseif opts.kl ~= nil then
    error(where .. ": kl is not used by loss_type 'apo_zero_unpaired'", 0)
  end

  local r = lp - ref
  local good, bad
  if loss_type == "kto" then
    good = 1 - ((r - z0) * beta):sigmoid()
    bad = 1 - ((z0 - r) * beta):sigmoid()
  else
    good = 1 - (r * beta):sigmoid()
    bad = (r * beta):sigmoid()
  end
  local losses = ft.where(y, good * wd, bad * wu)
  local m = { kl = z0 }
  local rewards = (r * beta):detach()
  local yv = y:totable()
  local idx = { {}, {} }
  for i, v in ipairs(yv) do table.insert(idx[v == 1 and 1 or 2], i) end
  local function mean_at(t, list)
    if #list == 0 then return nil end
    return metrics.mean(t:detach():index_select(1, ft.tensor(list, { dtype = "int64" })))
  end
  m.rewards_chosen, m.logps_chosen = mean_at(rewards, idx[1]), mean_at(lp, idx[1])
  m.rewards_rejected, m.logps_rejected = mean_at(rewards, idx[2]), mean_at(lp, idx[2])
  if m.rewards_chosen and m.rewards_rejected then m.rewards_margins = m.rewards_chosen - m.rewards_rejected end
  return losses:mean(), m
end

return M
