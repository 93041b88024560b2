-- ft.pref.grpo_sampler: GRPO's online loop (Shao et al. 2024) as TRL's GRPOTrainer runs it: G
-- completions per prompt sampled from the policy (model:generate, with the key/value cache),
-- scored by a reward function or a reward model, group-normalised advantages
-- (ft.pref.group_advantages), and num_iterations updates of the clipped objective
-- (ft.pref.grpo_loss) against the sampling policy's log-probs, with an optional k3 KL to the
-- reference (the policy with its adapters disabled, or ref_model).
--
--   peft.lora(policy, {target = {"c_attn", "c_proj"}, r = 8})
--   local function reward(prompt_ids, completion_ids, info)      -- Lua arrays of 1-based ids
--     return #completion_ids <= 10 and 1 or 0
--   end
--   local result = ft.pref.train_grpo(policy, prompts, reward, {num_generations = 8,
--     max_new_tokens = 32, temperature = 1.0, eos_token_id = eos, lr = 1e-5, steps = 100,
--     log_path = "run/grpo.jsonl"})
--
-- Rows (b - 1) * G + 1 .. b * G of a step are prompt b's completions. A completion ends at its
-- first EOS, which it keeps (the EOS is scored, as TRL's completion mask does); what the
-- sampler put after it is padding. Prompts of different lengths are left-padded, with their
-- attention mask and the positions counted from it in the log-prob passes as in sampling.
-- Log-probs are of the logits divided by the sampling temperature, as TRL computes them.
--
-- The trainer samples each prompt of a step on a stream of its own, seeded from ft's generator
-- and the prompt's place in the step (the generator then moves on by one draw), so what a
-- prompt's completions are does not depend on the other prompts. Under mpirun (data_parallel,
-- the default) that lets the ranks share a step: rank r samples, scores and trains on prompts
-- r + 1, r + 1 + W, ... through ft.dist.DataParallel; the rewards, token counts and ends of
-- every row are summed over the ranks, so the advantages, the loss's normalisation, the update
-- and the metrics are one process's on the whole step.
local ft = require "ft"
local nn = require "ft.nn"
local check = require "ft.check"
local logps_mod = require "ft.pref.logps"
local grpo = require "ft.pref.grpo"
local common = require "ft.models.common"
local shuffle = require "ft.data.shuffle"
local T = require "ft.pref.trainer"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- A prompt (int64 tensor [n] or [1, n], or a Lua array of ids) -> a Lua array of ids in 1..V.
local function prompt_ids(where, i, p, vocab)
  local ids
  if ft.is_tensor(p) then
    if p:dtype() ~= "int64" or not (p:dim() == 1 or (p:dim() == 2 and p:size(1) == 1)) then
      error(("%s: prompts[%d] must be an int64 tensor [n] (or [1, n]) or an array of token ids, got %s %s"):format(
        where, i, p:dtype(), shape_str(p)), 0)
    end
    ids = p:reshape(-1):totable()
  elseif type(p) == "table" then
    ids = p
  else
    check.fail(where, ("prompts[%d]"):format(i), "an int64 tensor or an array of token ids", p)
  end
  if #ids == 0 then error(("%s: prompts[%d] is empty; a prompt needs at least one token"):format(where, i), 0) end
  local out = {}
  for t, id in ipairs(ids) do
    local v = math.tointeger(id)
    if not v or v < 1 or (vocab and v > vocab) then
      error(("%s: prompts[%d][%d] is %s, not a token id in 1..%s (ids are 1-based)"):format(where, i, t,
        tostring(id), vocab and tostring(vocab) or "vocab"), 0)
    end
    out[t] = v
  end
  return out
end

-- eos_token_id (an id or a list) -> a set and the first id; nil when none.
local function eos_set(where, v, vocab)
  if v == nil then return nil end
  local list = type(v) == "table" and v or { v }
  if #list == 0 then check.fail(where, "eos_token_id", "a token id or a non-empty list of them", v) end
  local set = {}
  for i, id in ipairs(list) do
    local n = math.tointeger(id)
    if not n or n < 1 or (vocab and n > vocab) then
      error(("%s: eos_token_id[%d] is %s, not a token id in 1..%s"):format(where, i, tostring(id),
        vocab and tostring(vocab) or "vocab"), 0)
    end
    set[n] = true
  end
  return set, math.tointeger(list[1]), list
end

-- The model's generation_config eos ids (0-based there) as a 1-based list, or nil.
local function config_eos(model)
  local gc = type(model) == "table" and model.generation_config
  local v = type(gc) == "table" and gc.eos_token_id
  if math.tointeger(v) then return { v + 1 } end
  if type(v) == "table" and #v > 0 then
    local out = {}
    for i, id in ipairs(v) do out[i] = math.tointeger(id) and id + 1 end
    return out
  end
  return nil
end

local SAMPLE_OPTIONS = { "max_new_tokens", "temperature", "top_k", "top_p", "eos_token_id", "pad_token_id" }

--- ft.pref.sample_completions(model, prompts, G [, {max_new_tokens = 64, temperature = 1.0,
-- top_k =, top_p =, eos_token_id =, pad_token_id =}]) -> rollout: G sampled completions of each
-- prompt (an array of int64 tensors [n] or Lua arrays of 1-based ids), one model:generate call
-- for all B * G rows (key/value cache, left-padded prompts). eos_token_id: an id or a list
-- (default the model's generation_config's); pad_token_id: what fills the left padding and the
-- tail after an EOS (default the first EOS, else 1). rollout: ids [N, P + C] int64 (N = B * G,
-- P the longest prompt, C the completion columns), attention_mask [N, P + C] float32 (0 on
-- padding, also after an EOS), position_ids [N, P + C] (counted from the mask) or nil when no
-- prompt is padded, completion_mask [N, C] (1 up to and with the first EOS), prompt_length (P),
-- completion_length (C), G, prompts (the id arrays), prompt_of (row -> prompt index), eos
-- ([N] booleans: the row ended with an EOS), completions (row -> Lua array of the completion's
-- ids before its EOS).
function M.sample_completions(model, prompts, G, opts)
  local where = "ft.pref.sample_completions"
  opts = ft.check_options(where, opts, SAMPLE_OPTIONS)
  return M._sample(where, model, prompts, G, opts)
end

function M._sample(where, model, prompts, G, opts)
  if type(model) ~= "table" or type(model.generate) ~= "function" then
    check.fail(where, "model", "a language model with generate (ft.models)", model)
  end
  if type(prompts) ~= "table" or ft.is_tensor(prompts) or #prompts == 0 then
    check.fail(where, "prompts", "a non-empty array of prompts (int64 tensors or arrays of token ids)", prompts)
  end
  G = check.integer(where, "G", check.required(where, "G", G), nil, { min = 1 })
  local vocab = T.vocab_size(model)
  local max_new = check.integer(where, "max_new_tokens", opts.max_new_tokens, 64, { min = 1 })
  local temperature = check.number(where, "temperature", opts.temperature, 1.0, { above = 0 })
  local top_k = check.integer(where, "top_k", opts.top_k, nil, { min = 0 })
  local top_p = check.number(where, "top_p", opts.top_p, nil, { above = 0, max = 1 })
  local eos, first_eos, eos_list = eos_set(where, opts.eos_token_id or config_eos(model), vocab)
  local pad = opts.pad_token_id
  if pad ~= nil then
    pad = check.integer(where, "pad_token_id", pad, nil, { min = 1, max = vocab or math.maxinteger })
  else
    pad = first_eos or 1
  end

  local ids_of, P = {}, 0
  for i, p in ipairs(prompts) do
    ids_of[i] = prompt_ids(where, i, p, vocab)
    P = math.max(P, #ids_of[i])
  end
  local B = #ids_of
  local rows, mask_rows, prompt_of, padded = {}, {}, {}, false
  for b = 1, B do
    local p = ids_of[b]
    local row, mrow = {}, {}
    for t = 1, P - #p do row[t], mrow[t] = pad, 0 end
    for t = 1, #p do row[P - #p + t], mrow[P - #p + t] = p[t], 1 end
    if #p < P then padded = true end
    for g = 1, G do
      local r = (b - 1) * G + g
      rows[r], mask_rows[r], prompt_of[r] = row, mrow, b
    end
  end
  local N = B * G
  local prompt_t = ft.tensor(rows, { dtype = "int64" })
  local prompt_mask = ft.tensor(mask_rows)
  local out = model:generate(prompt_t, { max_new_tokens = max_new, temperature = temperature, top_k = top_k,
    top_p = top_p, eos_token_id = eos_list, pad_token_id = pad, attention_mask = padded and prompt_mask or nil })
  local C = out:size(2) - P
  local completion = out:narrow(2, P + 1, C)
  local cmask, ended, completions = {}, {}, {}
  for r, row in ipairs(completion:totable()) do
    local m, ids, stop = {}, {}, false
    for t, id in ipairs(row) do
      if stop then
        m[t] = 0
      else
        m[t] = 1
        if eos and eos[id] then stop = true else ids[#ids + 1] = id end
      end
    end
    cmask[r], ended[r], completions[r] = m, stop, ids
  end
  local completion_mask = ft.tensor(cmask)
  local attention = ft.cat({ prompt_mask, completion_mask }, 2)
  return {
    ids = out, attention_mask = attention, position_ids = padded and common.positions_from_mask(attention,
      P + C) or nil, completion_mask = completion_mask, prompt_length = P, completion_length = C, G = G,
    prompts = ids_of, prompt_of = prompt_of, eos = ended, completions = completions, size = N,
    temperature = temperature, pad = pad,
  }
end

-- A reward model (ft.pref.RewardModel, or any module whose output has .rewards).
local function is_reward_model(r)
  return nn.is_module(r) and nn.is_module(rawget(r, "score") or r.score)
end

-- reward (a function, a reward model or an array of them) -> the array of scorers.
local function reward_list(where, reward, weights)
  local list
  if type(reward) == "table" and not nn.is_module(reward) and getmetatable(reward) == nil then
    list = reward
    if #list == 0 then check.fail(where, "reward_fn", "a function, a reward model or a non-empty array of them", reward) end
  else
    list = { reward }
  end
  for i, r in ipairs(list) do
    if not (is_reward_model(r) or type(r) == "function" or (type(r) == "table" and getmetatable(r)
        and getmetatable(r).__call)) then
      check.fail(where, #list > 1 and ("reward_fn[%d]"):format(i) or "reward_fn",
        "a function(prompt_ids, completion_ids, info) -> number or a reward model (ft.pref.RewardModel)", r)
    end
  end
  if weights ~= nil then
    if type(weights) ~= "table" or #weights ~= #list then
      error(("%s: reward_weights must hold one number per reward function (%d)"):format(where, #list), 0)
    end
    for i, w in ipairs(weights) do check.number(where, ("reward_weights[%d]"):format(i), w) end
  end
  return list
end

--- ft.pref.score_completions(reward_fn, rollout [, {reward_weights =}]) -> rewards [N] float32,
-- per_function (array of [N] tensors): each row's reward. reward_fn: a function(prompt_ids,
-- completion_ids, info) -> a finite number (Lua arrays of 1-based ids, the completion without
-- its EOS; info = {row =, prompt_index =, generation =, eos = ended with an EOS, ids = the row's
-- prompt and completion as a Lua array}), a reward model (ft.pref.RewardModel: scores each row's
-- prompt and completion through its last real token, in eval mode without a graph), or an array
-- of these, summed with reward_weights (default 1 each), as TRL's reward_funcs.
function M.score_completions(reward_fn, rollout, opts)
  local where = "ft.pref.score_completions"
  opts = ft.check_options(where, opts, { "reward_weights" })
  return M._score(where, reward_list(where, reward_fn, opts.reward_weights), opts.reward_weights, rollout)
end

function M._score(where, list, weights, roll)
  local N = roll.size
  local per, total = {}, {}
  for i = 1, N do total[i] = 0 end
  local full
  for k, r in ipairs(list) do
    local values
    if is_reward_model(r) then
      local out = T.frozen(r, function() return r(roll.ids, { attention_mask = roll.attention_mask }) end)
      local rw = type(out) == "table" and out.rewards
      if not ft.is_tensor(rw) or rw:numel() ~= N then
        error(("%s: the reward model must return {rewards = [%d]}, got %s"):format(where, N,
          ft.is_tensor(rw) and shape_str(rw) or check.show(out)), 0)
      end
      values = rw:reshape(N):float():totable()
    else
      full = full or roll.ids:totable()
      values = {}
      local G = roll.G
      for row = 1, N do
        local b = roll.prompt_of[row]
        local at = roll.rows and roll.rows[row] or row   -- the row's place in the whole step
        local info = { row = at, prompt_index = b, generation = (at - 1) % G + 1, eos = roll.eos[row], ids = full[row] }
        local v = r(roll.prompts[b], roll.completions[row], info)
        if type(v) ~= "number" or v ~= v or math.abs(v) == math.huge then
          error(("%s: %s returned %s for row %d (prompt %d, generation %d); a reward is a finite number"):format(
            where, #list > 1 and ("reward_fn[%d]"):format(k) or "reward_fn", check.show(v), row, b,
            info.generation), 0)
        end
        values[row] = v
      end
    end
    local w = weights and weights[k] or 1
    for i = 1, N do total[i] = total[i] + w * values[i] end
    per[k] = ft.tensor(values)
  end
  return ft.tensor(total), per
end

-- ---- the trainer -----------------------------------------------------------------------------

local TRAINER_OPTIONS = { "num_generations", "prompts_per_step", "beta", "epsilon", "epsilon_high", "loss_type",
  "importance_sampling_level", "scale_rewards", "num_iterations", "ref_model", "reward_weights",
  "gradient_accumulation_steps", "disable_dropout", "data_parallel" }
for _, k in ipairs(SAMPLE_OPTIONS) do TRAINER_OPTIONS[#TRAINER_OPTIONS + 1] = k end
for _, k in ipairs(T.OPTIMIZER_OPTIONS) do TRAINER_OPTIONS[#TRAINER_OPTIONS + 1] = k end

local GRPOTrainer = {}
GRPOTrainer.__index = GRPOTrainer
--- GRPOTrainer: GRPO on one policy; ft.pref.GRPOTrainer(policy, reward_fn, opts) makes one
-- (ft.pref.train_grpo makes one and runs fit). reward_fn: see ft.pref.score_completions.
-- opts: num_generations (G, 8, >= 2), prompts_per_step (1); sampling: max_new_tokens (64),
-- temperature (1.0, > 0), top_k, top_p, eos_token_id, pad_token_id (ft.pref.sample_completions);
-- the loss (ft.pref.grpo_loss): beta (0, TRL's default: no KL; > 0 needs a reference: ref_model
-- or the policy's adapters), epsilon (0.2), epsilon_high, loss_type ("dapo"),
-- importance_sampling_level ("token"); scale_rewards ("group", "batch" or "none":
-- ft.pref.group_advantages); num_iterations (mu, 1: updates per sampled batch, the ratio taken
-- against the sampling policy's log-probs); reward_weights; the optimizer: lr (1e-6),
-- weight_decay, betas, eps or optimizer, scheduler, max_grad_norm (1.0; false: none);
-- gradient_accumulation_steps (1: the B * G rows cut into that many micro-batches per update,
-- normalised so that the loss is the whole batch's); disable_dropout (true); data_parallel
-- (true: under mpirun the ranks share each step's prompts, see the top of this file). Fields:
-- policy, net (what runs the policy's training forward: ft.dist.DataParallel(policy) when
-- shared), shared, optimizer, scheduler, G, history.
M.GRPOTrainerClass = GRPOTrainer

local function new_grpo(where, policy, reward_fn, opts)
  opts = ft.check_options(where, opts, TRAINER_OPTIONS)
  if type(policy) ~= "table" or type(policy.generate) ~= "function" then
    check.fail(where, "policy", "a language model with generate (ft.models)", policy)
  end
  local rewards = reward_list(where, check.required(where, "reward_fn", reward_fn), opts.reward_weights)
  local G = check.integer(where, "num_generations", opts.num_generations, 8, { min = 2 })
  local per_step = check.integer(where, "prompts_per_step", opts.prompts_per_step, 1, { min = 1 })
  local beta = check.number(where, "beta", opts.beta, 0, { min = 0 })
  local eps = check.number(where, "epsilon", opts.epsilon, 0.2, { min = 0 })
  local eps_high = check.number(where, "epsilon_high", opts.epsilon_high, eps, { min = 0 })
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "dapo", { "grpo", "bnpo", "dapo", "dr_grpo" })
  local level = check.one_of(where, "importance_sampling_level", opts.importance_sampling_level, "token",
    { "token", "sequence" })
  local scale = opts.scale_rewards
  if scale == true then scale = "group" elseif scale == false then scale = "none" end
  scale = check.one_of(where, "scale_rewards", scale, "group", { "group", "batch", "none" })
  local mu = check.integer(where, "num_iterations", opts.num_iterations, 1, { min = 1 })
  local accum = check.integer(where, "gradient_accumulation_steps", opts.gradient_accumulation_steps, 1, { min = 1 })
  local disable = check.boolean(where, "disable_dropout", opts.disable_dropout, true)
  local sample = {}
  for _, k in ipairs(SAMPLE_OPTIONS) do sample[k] = opts[k] end
  -- check the sampling options now (a bad one would otherwise surface at the first step)
  local vocab = T.vocab_size(policy)
  check.integer(where, "max_new_tokens", opts.max_new_tokens, nil, { min = 1 })
  check.number(where, "temperature", opts.temperature, nil, { above = 0 })
  check.integer(where, "top_k", opts.top_k, nil, { min = 0 })
  check.number(where, "top_p", opts.top_p, nil, { above = 0, max = 1 })
  eos_set(where, opts.eos_token_id, vocab)
  check.integer(where, "pad_token_id", opts.pad_token_id, nil, { min = 1, max = vocab or math.maxinteger })

  for i, r in ipairs(rewards) do
    local rv = is_reward_model(r) and T.vocab_size(r)
    if rv and vocab and rv ~= vocab then
      error(("%s: the reward model%s reads a vocabulary of %d tokens but the policy's has %d: it must share the "
        .. "policy's tokenizer"):format(where, #rewards > 1 and (" reward_fn[" .. i .. "]") or "", rv, vocab), 0)
    end
  end
  local ref, kind = nil, "none"
  if opts.ref_model ~= nil then
    if beta == 0 then
      error(where .. ": ref_model is the reference of the KL term, which beta = 0 turns off; set beta > 0 or drop ref_model", 0)
    end
    ref = T.check_reference_model(where, policy, opts.ref_model)
    kind = "model"
  elseif beta > 0 then
    if not T.has_adapters(policy) then
      error(where .. ": beta > 0 weighs the KL to the reference, but the policy has no adapter to disable: "
        .. "pass ref_model (a frozen copy of the starting model) or beta = 0", 0)
    end
    kind = "adapters"
  end
  local opt, sched, clip = T.optimizer_of(where, policy, opts)
  local net, shared = T.data_parallel(where, policy, opts.data_parallel)
  if disable then
    logps_mod.disable_dropout(policy)
    for _, r in ipairs(rewards) do if nn.is_module(r) then logps_mod.disable_dropout(r) end end
    if ref and type(ref.named_modules) == "function" then logps_mod.disable_dropout(ref) end
  end
  return setmetatable({
    where = where, policy = policy, net = net, shared = shared, rewards = rewards,
    reward_weights = opts.reward_weights, G = G,
    prompts_per_step = per_step, beta = beta, epsilon = eps, epsilon_high = eps_high, loss_type = loss_type,
    level = level, scale = scale, num_iterations = mu, accumulation = accum, sample_opts = sample,
    ref_model = ref, reference_kind = kind, optimizer = opt, scheduler = sched, max_grad_norm = clip,
    history = {},
  }, GRPOTrainer)
end

--- ft.pref.GRPOTrainer(policy, reward_fn, opts) -> trainer (see GRPOTrainer): trainer:step(prompts),
-- trainer:fit(prompts, fit_opts).
function M.GRPOTrainer(policy, reward_fn, opts) return new_grpo("ft.pref.GRPOTrainer", policy, reward_fn, opts) end

-- The rows first .. first + len - 1 of a rollout, as the model's inputs: a function(ids) -> logits
-- of model (with the rollout's mask and positions when prompts are padded) and the ids.
local function rows_forward(model, roll, first, len)
  local ids = roll.ids:narrow(1, first, len)
  if roll.position_ids == nil then return function(x) return model(x) end, ids end
  local fwd = { attention_mask = roll.attention_mask:narrow(1, first, len),
    position_ids = roll.position_ids:narrow(1, first, len) }
  return function(x) return model(x, fwd) end, ids
end

--- grpo_sampler.completion_logps(model, rollout [, first = 1, len = N]) -> [len, C]: the
-- per-token log-probs (with model's graph, unless under no_grad) of the completion columns of
-- rollout's rows first .. first + len - 1 (ft.pref.sample_completions), from logits divided by
-- the sampling temperature, with the rollout's attention mask and positions when prompts are
-- left-padded; entry [r][t] scores completion token t of row r (mask it with completion_mask).
local function completion_logps(model, roll, first, len)
  first = first or 1
  len = len or roll.size - first + 1
  local fn, ids = rows_forward(model, roll, first, len)
  local all = logps_mod.token_logps(fn, ids, { temperature = roll.temperature })
  return all:narrow(2, roll.prompt_length, roll.completion_length)
end
M.completion_logps = completion_logps

-- The step's prompts in which (their places in the step), each sampled on a stream of its own:
-- seeded from ft's generator and the prompt's place, so that what a prompt's completions are
-- does not depend on the rank that samples it or on the prompts sampled with it. ft's
-- generator then moves on by one draw, the same on every rank. -> one rollout per prompt.
local function sample_each(where, policy, ids_of, which, G, opts)
  local shared = ft.get_rng_state()
  local seed = shuffle.mix(shuffle.GOLDEN)
  for _, w in ipairs(shared:totable()) do seed = shuffle.mix(seed ~ w) end
  local rolls = {}
  local ok, err = pcall(function()
    for k, b in ipairs(which) do
      ft.manual_seed(shuffle.mix(seed ~ (b * shuffle.GOLDEN)))
      rolls[k] = M._sample(where, policy, { ids_of[b] }, G, opts)
    end
  end)
  ft.set_rng_state(shared)
  ft.rand(1)
  if not ok then error(err, 0) end
  return rolls
end

-- One rollout of the prompts in which, laid out as one process's rollout of the whole step
-- would be: rows in prompt order, each prompt left-padded to P (the step's longest prompt),
-- each completion right-padded to C (the longest of the step) with pad and mask 0. rows[r] is
-- row r's place in the whole step, prompt_of[r] its prompt's.
local function merge(rolls, which, ids_of, P, C, G)
  local ids, attention, cmask, prompt_of, rows, ended, completions = {}, {}, {}, {}, {}, {}, {}
  local pad = rolls[1].pad
  for k, roll in ipairs(rolls) do
    local b, p, c = which[k], roll.prompt_length, roll.completion_length
    local r_ids, r_mask = roll.ids:totable(), roll.completion_mask:totable()
    for g = 1, G do
      local row, am, cm = {}, {}, {}
      for t = 1, P - p do row[t], am[t] = pad, 0 end
      for t = 1, p do row[P - p + t], am[P - p + t] = r_ids[g][t], 1 end
      for t = 1, C do
        local m = t <= c and r_mask[g][t] or 0
        row[P + t], am[P + t], cm[t] = t <= c and r_ids[g][p + t] or pad, m, m
      end
      local n = #ids + 1
      ids[n], attention[n], cmask[n] = row, am, cm
      prompt_of[n], rows[n], ended[n], completions[n] = b, (b - 1) * G + g, roll.eos[g], roll.completions[g]
    end
  end
  local padded = false
  for _, prompt in ipairs(ids_of) do padded = padded or #prompt < P end
  local mask = ft.tensor(attention)
  return {
    ids = ft.tensor(ids, { dtype = "int64" }), attention_mask = mask,
    position_ids = padded and common.positions_from_mask(mask, P + C) or nil, completion_mask = ft.tensor(cmask),
    prompt_length = P, completion_length = C, G = G, prompts = ids_of, prompt_of = prompt_of, rows = rows,
    eos = ended, completions = completions, size = #ids, temperature = rolls[1].temperature, pad = pad,
  }
end

-- Each row of the whole step (N of them) as {reward, completion tokens, 1 if it reached
-- max_new_tokens without an EOS, reward of each function (with several)}: this rank's rows
-- filled in, summed over the ranks when they share the step.
local function step_rows(shared, roll, N, rewards, per)
  local K = #per > 1 and #per or 0
  local all = {}
  for i = 1, N do
    local r = {}
    for j = 1, 3 + K do r[j] = 0 end
    all[i] = r
  end
  local rw, tokens = rewards:totable(), roll.completion_mask:sum(2):totable()
  local by_fn = {}
  for k = 1, K do by_fn[k] = per[k]:totable() end
  for i, at in ipairs(roll.rows) do
    local r = all[at]
    r[1], r[2], r[3] = rw[i], tokens[i], roll.eos[i] and 0 or 1
    for k = 1, K do r[3 + k] = by_fn[k][i] end
  end
  if not shared then return all end
  return ft.dist.all_reduce(ft.tensor(all, { dtype = "float64" })):totable()
end

-- The sums of named numbers over the ranks (names in sorted order: the same on every rank).
local function summed(shared, sums)
  if not shared then return sums end
  local names, values = {}, {}
  for key in pairs(sums) do names[#names + 1] = key end
  table.sort(names)
  for i, key in ipairs(names) do values[i] = sums[key] end
  local total = ft.dist.all_reduce(ft.tensor(values, { dtype = "float64" })):totable()
  local out = {}
  for i, key in ipairs(names) do out[key] = total[i] end
  return out
end

--- trainer:step(prompts) -> metrics: one GRPO round on an array of prompts (int64 tensors or
-- arrays of ids): G completions each (each prompt on its own stream, see the top of this file),
-- their rewards and advantages, the sampling policy's log-probs (when num_iterations > 1) and
-- the reference's (beta > 0), then num_iterations optimizer updates. Shared between ranks,
-- each takes its prompts (at least one each: prompts >= ranks) and the numbers are one
-- process's on the whole step. metrics (TRL's, "/" written "_"): reward, reward_std,
-- frac_reward_zero_std, reward_<k> (the mean of reward function k, with several), loss, kl
-- (beta > 0), clip_ratio_low_mean, clip_ratio_high_mean, clip_ratio_region_mean (means over
-- the updates), completion_length (mean tokens, EOS included), completions_clipped_ratio (the
-- fraction that reached max_new_tokens without an EOS), grad_norm (the last update's),
-- completions (N). Also appended to trainer.history.
function GRPOTrainer:step(prompts)
  local where, policy, G = self.where, self.policy, self.G
  if type(prompts) ~= "table" or ft.is_tensor(prompts) or #prompts == 0 then
    check.fail(where, "prompts", "a non-empty array of prompts (int64 tensors or arrays of token ids)", prompts)
  end
  local vocab = T.vocab_size(policy)
  local ids_of, P = {}, 0
  for i, p in ipairs(prompts) do
    ids_of[i] = prompt_ids(where, i, p, vocab)
    P = math.max(P, #ids_of[i])
  end
  local B, world, rank = #ids_of, 1, 0
  if self.shared then
    world, rank = ft.dist.world_size(), ft.dist.rank()
    if B < world then
      error(("%s: a step of %d prompts leaves some of the %d ranks nothing: the ranks share each step's prompts, "
        .. "so give at least %d (prompts_per_step), or data_parallel = false"):format(where, B, world, world), 0)
    end
  end
  local which = {}
  for b = rank + 1, B, world do which[#which + 1] = b end
  local rolls = sample_each(where, policy, ids_of, which, G, self.sample_opts)
  local C = 0
  for _, r in ipairs(rolls) do C = math.max(C, r.completion_length) end
  if self.shared then
    C = math.tointeger(ft.dist.all_reduce(ft.tensor({ C }, { dtype = "float64" }), { op = "max" }):totable()[1])
  end
  local roll = merge(rolls, which, ids_of, P, C, G)
  local rewards, per = M._score(where, self.rewards, self.reward_weights, roll)

  -- the whole step's rewards, token counts and ends; this rank's advantages from them
  local N = B * G
  local all = step_rows(self.shared, roll, N, rewards, per)
  local all_rewards, total_tokens, clipped = {}, 0, 0
  for i, r in ipairs(all) do
    all_rewards[i] = r[1]
    total_tokens, clipped = total_tokens + r[2], clipped + r[3]
  end
  local all_adv, stats = grpo.group_advantages(ft.tensor(all_rewards), G, { scale = self.scale })
  all_adv = all_adv:totable()
  local mine = {}
  for i, at in ipairs(roll.rows) do mine[i] = all_adv[at] end
  local adv = ft.tensor(mine)

  local n, k = roll.size, self.accumulation
  if k > n then
    error(("%s: gradient_accumulation_steps = %d exceeds the step's %d completions%s"):format(where, k, n,
      self.shared and " on this rank" or ""), 0)
  end
  local cmask = roll.completion_mask
  -- micro-batches of rows, and what each needs that does not change over the iterations
  local parts, start = {}, 1
  for i = 1, k do
    local len = n // k + (i <= n % k and 1 or 0)
    local p = { first = start, len = len, mask = cmask:narrow(1, start, len), adv = adv:narrow(1, start, len) }
    p.tokens = p.mask:sum():item()
    if self.num_iterations > 1 then
      p.old = T.frozen(policy, completion_logps, policy, roll, start, len)
    end
    if self.reference_kind == "adapters" then
      p.ref = logps_mod.with_reference(policy, completion_logps, policy, roll, start, len)
    elseif self.reference_kind == "model" then
      p.ref = T.frozen(self.ref_model, completion_logps, self.ref_model, roll, start, len)
    end
    parts[i] = p
    start = start + len
  end
  -- each micro-batch's weight makes the sum of their losses (over every rank's) the whole step's
  local function weight(p)
    if self.loss_type == "dapo" then return 1 end
    if self.loss_type == "bnpo" then return p.tokens / math.max(total_tokens, 1) end
    return p.len / N
  end
  local sums, norm = {}, nil
  policy:train()
  for _ = 1, self.num_iterations do
    norm = T.update(self.optimizer, self.scheduler, self.max_grad_norm, function()
      for i, p in ipairs(parts) do
        local function run()
          local new = completion_logps(self.net, roll, p.first, p.len)
          local loss, m = grpo.grpo_loss {
            logps_new = new, logps_old = p.old, logps_ref = p.ref, advantages = p.adv, mask = p.mask,
            beta = self.beta, epsilon = self.epsilon, epsilon_high = self.epsilon_high, loss_type = self.loss_type,
            importance_sampling_level = self.level,
            num_items_in_batch = self.loss_type == "dapo" and math.max(total_tokens, 1) or nil,
            max_completion_length = self.loss_type == "dr_grpo" and roll.completion_length or nil,
          }
          local w = weight(p)
          -- DataParallel averages the ranks' gradients: world undoes that into their sum
          ;(loss * (w * world)):backward()
          sums.loss = (sums.loss or 0) + loss:item() * w
          -- token-level metrics: each micro-batch's share of the tokens
          local tw = p.tokens / math.max(total_tokens, 1)
          for key, v in pairs(m) do sums[key] = (sums[key] or 0) + v * tw end
        end
        if self.shared and i < #parts then self.net:no_sync(run) else run() end
      end
    end)
  end
  local out = {}
  for key, v in pairs(summed(self.shared, sums)) do out[key] = v / self.num_iterations end
  out.reward, out.reward_std, out.frac_reward_zero_std = stats.reward, stats.reward_std, stats.frac_reward_zero_std
  for f = 1, #per > 1 and #per or 0 do
    local s = 0
    for _, r in ipairs(all) do s = s + r[3 + f] end
    out["reward_" .. f] = s / N
  end
  out.completion_length = total_tokens / N
  out.completions_clipped_ratio = clipped / N
  out.grad_norm = norm
  out.completions = N
  self.history[#self.history + 1] = out
  return out
end

--- trainer:fit(prompts [, opts]) -> {step =, stopped =, last = the last step's metrics, history =,
-- resumed_from =}: ft.train.loop over rounds; round s takes prompts_per_step prompts in order
-- from position (s - 1) * prompts_per_step, cycling through prompts. opts: steps (default: one
-- pass over the prompts), log_path (JSONL), log_every (10), logger (an ft.train.Logger, or
-- false), checkpoint, checkpoint_every, resume, stop_at (as ft.train.loop; a resumed run
-- continues the RNG, so the sampling too).
function GRPOTrainer:fit(prompts, opts)
  local where = self.where
  opts = ft.check_options(where, opts, { "steps", "log_path", "log_every", "logger", "checkpoint",
    "checkpoint_every", "resume", "stop_at" })
  if type(prompts) ~= "table" or ft.is_tensor(prompts) or #prompts == 0 then
    check.fail(where, "prompts", "a non-empty array of prompts (int64 tensors or arrays of token ids)", prompts)
  end
  local vocab = T.vocab_size(self.policy)
  for i, p in ipairs(prompts) do prompt_ids(where, i, p, vocab) end
  local n, P = #prompts, self.prompts_per_step
  local steps = check.integer(where, "steps", opts.steps, (n + P - 1) // P, { min = 1 })
  local logger, own = T.logger_of(where, opts, steps, "completions")
  local last
  local ok, res = pcall(require "ft.train.loop", {
    steps = steps, logger = logger, model = self.policy, optimizer = self.optimizer, scheduler = self.scheduler,
    checkpoint = opts.checkpoint, checkpoint_every = opts.checkpoint_every, resume = opts.resume,
    stop_at = opts.stop_at,
    next_batch = function(step)
      local batch = {}
      for j = 1, P do batch[j] = prompts[((step - 1) * P + j - 1) % n + 1] end
      return batch
    end,
    step = function(batch)
      last = self:step(batch)
      local m = {}
      for key, v in pairs(last) do m[key] = v end
      m.items = m.completions
      return m
    end,
  })
  if own and logger then logger:close() end
  if not ok then error(res, 0) end
  res.last, res.history = last, self.history
  return res
end

--- ft.pref.train_grpo(policy, prompts, reward_fn [, opts]) -> result, trainer:
-- GRPOTrainer(policy, reward_fn, opts) and trainer:fit(prompts, opts); opts holds both tables'
-- keys (see GRPOTrainer and trainer:fit), e.g. {num_generations = 8, max_new_tokens = 32,
-- eos_token_id = eos, beta = 0.04, num_iterations = 2, lr = 1e-5, steps = 200,
-- log_path = "run/grpo.jsonl"}.
function M.train_grpo(policy, prompts, reward_fn, opts)
  local where = "ft.pref.train_grpo"
  local fit_keys = { "steps", "log_path", "log_every", "logger", "checkpoint", "checkpoint_every", "resume", "stop_at" }
  local all = {}
  for _, key in ipairs(TRAINER_OPTIONS) do all[#all + 1] = key end
  for _, key in ipairs(fit_keys) do all[#all + 1] = key end
  opts = ft.check_options(where, opts, all)
  local topts, fopts = {}, {}
  for _, key in ipairs(TRAINER_OPTIONS) do topts[key] = opts[key] end
  for _, key in ipairs(fit_keys) do fopts[key] = opts[key] end
  local trainer = new_grpo(where, policy, reward_fn, topts)
  return trainer:fit(prompts, fopts), trainer
end

return M
