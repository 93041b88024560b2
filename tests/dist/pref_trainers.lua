-- ft.pref's trainers under mpirun (tests/sh/dist_pref_trainers.sh): DPOTrainer (sigmoid, ipo,
-- simpo), KTOTrainer and RewardTrainer share every batch between the ranks, GRPOTrainer every
-- step's prompts, and must end with the parameters, and report the metrics, of one process on
-- the whole batch (the same trainer with data_parallel = false, run on every rank from the same
-- start).
local ft = require "ft"
local T = require "common"

local pref, peft = ft.pref, ft.peft
local rank, world = T.rank, T.world
assert(world >= 2, "run under mpirun with at least 2 ranks")

local V, STEPS, TOL, LR = 16, 5, 1e-5, 1e-3

local function tiny(seed)
  ft.manual_seed(seed)
  return ft.models.new("gpt-s", {vocab_size = V, n_layer = 2, n_embd = 32, n_head = 2, n_positions = 32})
end

-- tiny(seed) with LoRA, its B nudged off 0 so that the policy differs from its reference.
local function policy(seed)
  local m = tiny(seed)
  ft.manual_seed(seed + 1)
  peft.lora(m, {target = {"c_attn", "c_proj", "c_fc"}, r = 4, alpha = 8})
  ft.no_grad(function()
    for name, p in m:named_parameters() do
      if name:find("lora_B", 1, true) then p:copy_(ft.randn(p:shape()) * 0.05) end
    end
  end)
  return m
end

local function reward_model(seed)
  local rm = pref.RewardModel(tiny(seed), {initializer_range = 0.1})
  ft.manual_seed(seed + 1)
  peft.lora(rm, {target = {"c_attn", "c_proj", "c_fc"}, r = 4, alpha = 8, modules_to_save = {"score"}})
  return rm
end

local function ints(lo, hi, n) return ft.randint(lo, hi, {n}):totable() end

-- n pairs of random prompts (2..4 tokens) and completions (1..3 tokens, chosen and rejected of
-- different lengths), in batches of B: uneven rows per rank when B does not divide.
local function pair_batches(n, B, seed)
  ft.manual_seed(seed)
  local ex = {}
  for i = 1, n * B do
    ex[i] = {prompt_ids = ints(1, V, 2 + i % 3), chosen_ids = ints(1, V, 1 + i % 3),
      rejected_ids = ints(1, V, 1 + (i + 1) % 3), pad_id = 1}
  end
  local list = {}
  for b in pref.batches(ex, {batch_size = B}) do list[#list + 1] = b end
  return list
end

local function unpaired_batches(n, B, seed)
  ft.manual_seed(seed)
  local ex = {}
  for i = 1, n * B do
    ex[i] = {prompt_ids = ints(1, V, 2 + i % 3), completion_ids = ints(1, V, 1 + i % 3),
      label = i % 3 ~= 0, pad_id = 1}
  end
  local list = {}
  for b in pref.batches(ex, {batch_size = B, kl = true}) do list[#list + 1] = b end
  return list
end

local function same_metrics(a, b, what)
  local n = 0
  for k, v in pairs(b) do
    if type(v) == "number" then
      if type(a[k]) ~= "number" then error(("rank %d: %s: metric %s missing"):format(rank, what, k)) end
      if math.abs(a[k] - v) > TOL * math.max(1, math.abs(v)) then
        error(("rank %d: %s: metric %s is %.9g shared, %.9g in one process"):format(rank, what, k, a[k], v))
      end
      n = n + 1
    end
  end
  assert(n > 3, what .. ": too few metrics")
end

-- make(data_parallel) -> trainer (from the same start each time); data: batches. Runs both and
-- compares parameters, the last step's metrics and an evaluation.
local function check(what, make, data, held)
  local alone, shared = make(false), make(true)
  assert(not alone.shared and shared.shared, what .. ": data_parallel")
  local a = alone:fit(data, {steps = STEPS, logger = false})
  local s = shared:fit(data, {steps = STEPS, logger = false})
  T.within(T.max_param_diff(shared.model, alone.model), TOL, what .. ": parameters after " .. STEPS .. " steps")
  same_metrics(s.last, a.last, what .. ": last step's metrics")
  same_metrics(shared:evaluate(held), alone:evaluate(held), what .. ": evaluation")
end

local pairs6 = pair_batches(3, 6, 11)
local pairs7 = pair_batches(3, 7, 12)          -- 7 rows: 4 and 3 per rank
local held = pair_batches(2, 5, 13)
held[#held + 1] = pair_batches(1, 1, 14)[1]   -- a batch smaller than the world: rank 0 alone

for _, case in ipairs {
  {loss_type = "sigmoid", data = pairs6},
  {loss_type = "sigmoid", data = pairs7, gradient_accumulation_steps = 2},
  {loss_type = "ipo", data = pairs7},
  {loss_type = "simpo", data = pairs6, gradient_accumulation_steps = 3},
  {loss_type = "simpo", data = pairs7, cpo_alpha = 0.5},        -- the NLL is per token of the whole batch
  {loss_type = "orpo", data = pairs7, gradient_accumulation_steps = 2},
} do
  check(("DPOTrainer %s, %d pairs a batch, %d micro-batches"):format(case.loss_type, case.data[1].chosen_ids:size(1),
    case.gradient_accumulation_steps or 1), function(dp)
    return pref.DPOTrainer(policy(3), {loss_type = case.loss_type, lr = LR, data_parallel = dp,
      gradient_accumulation_steps = case.gradient_accumulation_steps, cpo_alpha = case.cpo_alpha})
  end, case.data, held)
end

-- KTO: the KL point is the mean over every rank's KL rows
local kto7, kto_held = unpaired_batches(3, 7, 21), unpaired_batches(2, 6, 22)
check("KTOTrainer, 7 examples a batch, 2 micro-batches", function(dp)
  return pref.KTOTrainer(policy(5), {lr = LR, data_parallel = dp, gradient_accumulation_steps = 2})
end, kto7, kto_held)
check("KTOTrainer, kl_scope micro_batch", function(dp)
  return pref.KTOTrainer(policy(5), {lr = LR, data_parallel = dp, kl_scope = "micro_batch",
    gradient_accumulation_steps = 2})
end, unpaired_batches(3, 8, 23), kto_held)

check("RewardTrainer, 7 pairs a batch, centred", function(dp)
  return pref.RewardTrainer(reward_model(7), {lr = LR, data_parallel = dp, center_rewards_coefficient = 0.01})
end, pairs7, held)

-- GRPO: rank r samples, scores and trains on prompts r + 1, r + 1 + W, ... of each step
local function prompts_of(n, seed)
  ft.manual_seed(seed)
  local out = {}
  for i = 1, n do out[i] = ints(1, V, 2 + i % 3) end   -- lengths differ: left padding
  return out
end
local EOS = V
-- the share of 5s in the completion, and the row's generation (a wrongly placed row shows)
local function fives(_, completion, info)
  local n = 0
  for _, id in ipairs(completion) do if id == 5 then n = n + 1 end end
  return n / math.max(#completion, 1) + 0.01 * info.generation
end
local grpo_prompts = prompts_of(6, 41)
for _, case in ipairs {
  {what = "dapo, beta 0.04, 2 updates a step, 3 prompts a step (2 and 1 per rank)", prompts_per_step = 3, beta = 0.04,
    num_iterations = 2},
  {what = "grpo, 2 micro-batches, batch-scaled rewards, a reward model beside a function", prompts_per_step = 2,
    loss_type = "grpo", gradient_accumulation_steps = 2, scale_rewards = "batch", reward_model = true},
  {what = "bnpo, sequence-level ratios, 4 prompts a step", prompts_per_step = 4, loss_type = "bnpo",
    importance_sampling_level = "sequence", num_iterations = 2},
} do
  local function run(dp)
    local rewards = fives
    if case.reward_model then
      local rm = pref.RewardModel(tiny(43), {initializer_range = 0.5})
      rm:eval()
      rewards = {rm, fives}
    end
    local trainer = pref.GRPOTrainer(policy(9), rewards, {num_generations = 4, prompts_per_step = case.prompts_per_step,
      max_new_tokens = 5, eos_token_id = EOS, lr = 1e-2, beta = case.beta, loss_type = case.loss_type,
      num_iterations = case.num_iterations, gradient_accumulation_steps = case.gradient_accumulation_steps,
      scale_rewards = case.scale_rewards, importance_sampling_level = case.importance_sampling_level,
      data_parallel = dp})
    ft.manual_seed(42)
    return trainer, trainer:fit(grpo_prompts, {steps = STEPS, logger = false})
  end
  local alone, a = run(false)
  local shared, s = run(true)
  assert(shared.shared and not alone.shared, "GRPO data_parallel")
  local what = "GRPOTrainer " .. case.what
  T.within(T.max_param_diff(shared.policy, alone.policy), TOL, what .. ": parameters after " .. STEPS .. " steps")
  for step = 1, STEPS do same_metrics(s.history[step], a.history[step], what .. ": step " .. step .. "'s metrics") end
end
T.fails(function()
  pref.GRPOTrainer(policy(9), fives, {num_generations = 2, max_new_tokens = 2, lr = LR}):step({grpo_prompts[1]})
end, "a step of 1 prompts leaves some of the 2 ranks nothing", "a GRPO step with fewer prompts than ranks")

T.fails(function()
  pref.DPOTrainer(policy(3), {lr = LR}):step(pair_batches(1, 1, 30)[1])
end, "a batch of 1 pairs leaves some of the 2 ranks nothing", "a training batch smaller than the world")
T.fails(function()
  pref.DPOTrainer(policy(3), {lr = LR, gradient_accumulation_steps = 4}):step(pairs6[1])
end, "gradient_accumulation_steps = 4 exceeds the batch's 3 pairs of this rank's share", "more micro-batches than rows")

T.say("all ft.pref trainer checks passed on %d ranks", world)
