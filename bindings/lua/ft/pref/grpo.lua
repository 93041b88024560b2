-- ft.pref.grpo: the functional pieces of GRPO (Shao et al. 2024) as TRL's GRPOTrainer computes
-- them: group-relative advantages from the rewards of G completions per prompt, and the
-- clipped policy-gradient loss over per-token log-probs with a k3 KL penalty. Sampling the
-- completions and scoring them is the caller's part.
--
--   local ids, mask = ...                    -- B*G rows: prompt + sampled completion, mask on it
--   local old = ft.no_grad(ft.pref.token_logps, policy, ids)        -- at sampling time
--   local ref = ft.pref.with_reference(policy, ft.pref.token_logps, policy, ids)
--   local adv = ft.pref.group_advantages(rewards, G)
--   local new = ft.pref.token_logps(policy, ids)                    -- [B*G, T-1], with its graph
--   local loss, m = ft.pref.grpo_loss{logps_new = new, logps_old = old, logps_ref = ref,
--     advantages = adv, mask = mask:narrow(2, 2, T - 1), beta = 0.04}
--
-- Per token, with ratio = exp(new - old) (or, importance_sampling_level = "sequence", exp of
-- the masked mean of new - old over the row: GSPO), A the row's advantage:
--   loss_t = -min(ratio A, clamp(ratio, 1 - epsilon, 1 + epsilon_high) A)
--            + beta (exp(ref - new) - (ref - new) - 1)
-- reduced over the mask by loss_type (TRL's names; TRL's default is "dapo"):
--   "grpo"     per-row mean over its tokens, then the mean over rows
--   "bnpo"     sum over every token / number of tokens in this batch
--   "dapo"     sum over every token / num_items_in_batch (the tokens of the whole accumulated
--              batch; default: this batch's, which makes it "bnpo")
--   "dr_grpo"  sum over every token / (rows * max_completion_length; default the mask's width)
local ft = require "ft"
local check = require "ft.check"
local metrics = require "ft.pref.metrics"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

--- ft.pref.group_advantages(rewards, G [, {scale = "group"}]) -> advantages [N], stats: GRPO's
-- advantages of N = B * G rewards (a float tensor [N] or a Lua array; rows b*G+1 .. b*G+G are
-- the completions of prompt b): reward minus its group's mean, divided by std + 1e-4 with
-- scale "group" (or true: the group's std) or "batch" (the std of all N), not divided with
-- "none" (or false). std is unbiased, as torch.std; a group of one has std 0. No graph.
-- stats (TRL's): reward (mean), reward_std (std of all N), frac_reward_zero_std (the fraction
-- of rows whose std is 0: their group gives no signal).
function M.group_advantages(rewards, G, opts)
  local where = "ft.pref.group_advantages"
  opts = ft.check_options(where, opts, { "scale" })
  local scale = opts.scale
  if scale == nil or scale == true then scale = "group" elseif scale == false then scale = "none" end
  scale = check.one_of(where, "scale", scale, "group", { "group", "batch", "none" })
  if type(rewards) == "table" and not ft.is_tensor(rewards) then
    for i, v in ipairs(rewards) do
      if type(v) ~= "number" or v ~= v then
        error(("%s: rewards[%d] must be a number, got %s"):format(where, i, check.show(v)), 0)
      end
    end
    rewards = ft.tensor(rewards)
  end
  if not ft.is_tensor(rewards) or rewards:dim() ~= 1 or rewards:dtype() == "int64" or rewards:numel() == 0 then
    check.fail(where, "rewards", "a float tensor [batch * G] or an array of numbers", rewards)
  end
  rewards = rewards:detach():float()
  local N = rewards:size(1)
  G = check.integer(where, "G", check.required(where, "G", G), nil, { min = 1 })
  if N % G ~= 0 then
    error(("%s: %d rewards do not split into groups of G = %d"):format(where, N, G), 0)
  end
  local groups = rewards:view(N // G, G)
  local mean = groups:mean(2, true):expand(N // G, G):reshape(N)
  local function std_of(t, dim)   -- unbiased; 0 for a single value, as TRL
    if (dim and t:size(dim) or t:numel()) < 2 then return dim and ft.zeros(t:size(1), 1) or ft.tensor(0) end
    if dim then return t:std(dim, true) end
    return t:std()
  end
  local group_std = std_of(groups, 2):expand(N // G, G):reshape(N)
  local std = scale == "batch" and std_of(rewards):expand(N) or group_std
  local adv = rewards - mean
  if scale ~= "none" then adv = adv / (std + 1e-4) end
  local zero = 0
  for _, v in ipairs(std:totable()) do if math.abs(v) <= 1e-8 then zero = zero + 1 end end
  return adv, {
    reward = metrics.mean(rewards), reward_std = std_of(rewards):item(), frac_reward_zero_std = zero / N,
  }
end

local LOSS_TYPES = { "grpo", "bnpo", "dapo", "dr_grpo" }
local OPTIONS = { "logps_new", "logps_old", "logps_ref", "advantages", "mask", "epsilon", "epsilon_high",
  "beta", "loss_type", "importance_sampling_level", "num_items_in_batch", "max_completion_length" }

-- A float tensor [B, T] like like (nil allowed when optional).
local function check_matrix(where, name, v, like)
  if not ft.is_tensor(v) or v:dim() ~= 2 or v:dtype() == "int64" then
    error(("%s: %s must be a float tensor [batch, completion tokens], got %s"):format(where, name,
      ft.is_tensor(v) and (v:dtype() .. " " .. shape_str(v)) or check.show(v)), 0)
  end
  if like and (v:size(1) ~= like:size(1) or v:size(2) ~= like:size(2)) then
    error(("%s: %s is %s but logps_new is %s"):format(where, name, shape_str(v), shape_str(like)), 0)
  end
  return v:dtype() == "float32" and v or v:float()
end

--- ft.pref.grpo_loss{logps_new =, logps_old =, logps_ref =, advantages =, mask =, epsilon = 0.2,
-- epsilon_high = epsilon, beta = 0.04, loss_type = "dapo", importance_sampling_level = "token",
-- num_items_in_batch =, max_completion_length =} -> loss, metrics: GRPO's clipped objective
-- (see the module's header). logps_new [B, T] per-token log-probs with the policy's graph
-- (ft.pref.token_logps narrowed to the completion); logps_old (at sampling; default
-- logps_new detached: ratio 1) and logps_ref [B, T] are detached; advantages [B] (or [B, T]);
-- mask [B, T] 0/1 (float or int64) on the completion tokens. beta >= 0 weighs the k3 KL to
-- the reference and needs logps_ref when > 0; the default 0.04 is the GRPO paper's (TRL's
-- GRPOConfig now defaults to beta = 0). metrics (TRL's): kl (masked mean of the per-token KL, when beta > 0),
-- clip_ratio_low_mean, clip_ratio_high_mean, clip_ratio_region_mean (the fraction of tokens
-- clipped below with A < 0, above with A > 0, either).
function M.grpo_loss(opts)
  local where = "ft.pref.grpo_loss"
  opts = ft.check_options(where, check.required(where, "the options table", opts), OPTIONS)
  local new = check_matrix(where, "logps_new", check.required(where, "logps_new", opts.logps_new))
  local B, T = new:size(1), new:size(2)
  local old = opts.logps_old and check_matrix(where, "logps_old", opts.logps_old, new):detach() or new:detach()
  local mask = check.required(where, "mask", opts.mask)
  if ft.is_tensor(mask) and mask:dtype() == "int64" then mask = mask:float() end
  mask = check_matrix(where, "mask", mask, new):detach()
  for b, row in ipairs(mask:totable()) do
    for t, v in ipairs(row) do
      if v ~= 0 and v ~= 1 then
        error(("%s: mask[%d][%d] is %s; a mask holds 0 and 1 only"):format(where, b, t, tostring(v)), 0)
      end
    end
  end
  local adv = check.required(where, "advantages", opts.advantages)
  if not ft.is_tensor(adv) or adv:dtype() == "int64"
      or not ((adv:dim() == 1 and adv:size(1) == B) or (adv:dim() == 2 and adv:size(1) == B and adv:size(2) == T)) then
    error(("%s: advantages must be a float tensor [%d] (or [%d,%d]) like logps_new's rows, got %s"):format(where,
      B, B, T, ft.is_tensor(adv) and (adv:dtype() .. " " .. shape_str(adv)) or check.show(adv)), 0)
  end
  adv = adv:detach():float()
  if adv:dim() == 1 then adv = adv:reshape(B, 1) end
  local eps_low = check.number(where, "epsilon", opts.epsilon, 0.2, { min = 0 })
  local eps_high = check.number(where, "epsilon_high", opts.epsilon_high, eps_low, { min = 0 })
  local beta = check.number(where, "beta", opts.beta, 0.04, { min = 0 })
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "dapo", LOSS_TYPES)
  local level = check.one_of(where, "importance_sampling_level", opts.importance_sampling_level, "token",
    { "token", "sequence" })
  local ref
  if beta > 0 then
    if opts.logps_ref == nil then
      error(where .. ": beta > 0 weighs the KL to the reference: pass logps_ref (or beta = 0)", 0)
    end
    ref = check_matrix(where, "logps_ref", opts.logps_ref, new):detach()
  elseif opts.logps_ref ~= nil then
    check_matrix(where, "logps_ref", opts.logps_ref, new)
  end
  local tokens = mask:sum():item()
  local items = check.number(where, "num_items_in_batch", opts.num_items_in_batch, nil, { above = 0 })
  if items ~= nil and loss_type ~= "dapo" then
    error(("%s: num_items_in_batch is the normaliser of loss_type 'dapo', not '%s'"):format(where, loss_type), 0)
  end
  local max_len = check.integer(where, "max_completion_length", opts.max_completion_length, nil, { min = 1 })
  if max_len ~= nil and loss_type ~= "dr_grpo" then
    error(("%s: max_completion_length is the normaliser of loss_type 'dr_grpo', not '%s'"):format(where,
      loss_type), 0)
  end

  local log_ratio = new - old
  local log_w = log_ratio
  if level == "sequence" then
    log_w = ((log_ratio * mask):sum(2, true) / mask:sum(2, true):clamp(1, nil))
  end
  local coef1 = log_w:exp()
  local coef2 = coef1:clamp(1 - eps_low, 1 + eps_high)
  local l1, l2 = coef1 * adv, coef2 * adv
  local per_token = -ft.where(l1:le(l2), l1, l2)     -- min(l1, l2)
  local kl
  if beta > 0 then
    local d = ref - new
    kl = d:exp() - d - 1
    per_token = per_token + kl * beta
  end
  local loss
  local masked = per_token * mask
  if loss_type == "grpo" then
    loss = (masked:sum(2) / mask:sum(2):clamp(1, nil)):mean()
  elseif loss_type == "bnpo" then
    loss = masked:sum() / math.max(tokens, 1)
  elseif loss_type == "dapo" then
    loss = masked:sum() / math.max(items or tokens, 1)
  else
    loss = masked:sum() / (B * (max_len or T))
  end

  -- metrics: masked means over tokens ([B, 1] sequence-level values count once per row)
  local function masked_mean(x)
    x = x:detach()
    if x:size(2) == 1 then return x:mean():item() end
    return (x * mask):sum():item() / math.max(tokens, 1)
  end
  local c = coef1:detach()
  local neg, pos = adv:lt(0), adv:gt(0)
  local low = c:lt(1 - eps_low) * neg
  local high = c:gt(1 + eps_high) * pos
  local m = {
    clip_ratio_low_mean = masked_mean(low), clip_ratio_high_mean = masked_mean(high),
    clip_ratio_region_mean = masked_mean((low + high):clamp(0, 1)),
  }
  if kl then m.kl = masked_mean(kl) end
  return loss, m
end

return M
