-- Preference training (ft.pref.trainer, ft.pref.grpo_sampler) on a tiny GPT with LoRA: the
-- reference of a PEFT policy (adapters disabled) against an explicit frozen copy of its base,
-- precomputed (saved, reloaded) reference log-probs against live ones, DPO learning a toy
-- preference, GRPO raising a token's reward, the sampler's masks and left padding, the JSONL
-- log, and the errors for bad input.
local ft = require "ft"
local H = require "helpers"
local pref = ft.pref
local peft = ft.peft
local sampler = require "ft.pref.grpo_sampler"

local V = 16
local CONFIG = { vocab_size = V, n_layer = 2, n_embd = 32, n_head = 2, n_positions = 32 }

-- A tiny GPT-2 from a seed (initializer_range: how far from uniform its logits start).
local function tiny(seed, extra)
  ft.manual_seed(seed)
  local c = {}
  for k, v in pairs(CONFIG) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return ft.models.new("gpt-s", c)
end

-- The model of tiny(seed) with LoRA (B nudged off 0 with nudge, so that policy and base differ),
-- and a frozen copy of its base taken before the adapter went on.
local function policy_and_base(seed, nudge, extra)
  local base = tiny(seed, extra)
  local copy = tiny(seed + 100, extra)
  copy:load_state_dict(base:clone_state_dict())
  ft.manual_seed(seed + 1)
  peft.lora(base, { target = { "c_attn", "c_proj", "c_fc" }, r = 4, alpha = 8 })
  if nudge then
    ft.no_grad(function()
      for name, p in base:named_parameters() do
        if name:find("lora_B", 1, true) then p:copy_(ft.randn(p:shape()) * nudge) end
      end
    end)
  end
  return base, copy
end

-- Toy pairs: a random prompt (3..6 tokens) and a random 1..3-token completion that ends in 7
-- (chosen) or 9 (rejected), right-padded with 1 to one width, with attention masks.
local function toy_batch(B, seed)
  ft.manual_seed(seed)
  local rows = {}
  local T = 0
  for b = 1, B do
    local np, nc = 3 + ft.randint(0, 3, { 1 }):item(), 1 + ft.randint(0, 2, { 1 }):item()
    local p = ft.randint(1, V, { np }):totable()
    local c = nc > 1 and ft.randint(1, V, { nc - 1 }):totable() or {}
    rows[b] = { p = p, c = c }
    T = math.max(T, np + nc)
  end
  local out = {}
  for _, side in ipairs { { "chosen", 7 }, { "rejected", 9 } } do
    local ids, mask, att = {}, {}, {}
    for b, r in ipairs(rows) do
      local seq = {}
      for _, v in ipairs(r.p) do seq[#seq + 1] = v end
      for _, v in ipairs(r.c) do seq[#seq + 1] = v end
      seq[#seq + 1] = side[2]
      ids[b], mask[b], att[b] = {}, {}, {}
      for t = 1, T do
        ids[b][t] = seq[t] or 1
        mask[b][t] = (t > #r.p and t <= #seq) and 1 or 0
        att[b][t] = t <= #seq and 1 or 0
      end
    end
    out[side[1] .. "_ids"] = ft.tensor(ids, { dtype = "int64" })
    out[side[1] .. "_mask"] = ft.tensor(mask)
    out[side[1] .. "_attention_mask"] = ft.tensor(att, { dtype = "int64" })
  end
  return out
end

local function toy_batches(n, B, seed)
  local out = {}
  for i = 1, n do out[i] = toy_batch(B, seed + i) end
  return out
end

-- The trainable parameters by name, as flat Lua arrays.
local function trainable(model)
  local out = {}
  for _, np in ipairs(peft.trainable_parameters(model)) do out[np[1]] = H.flat(np[2]) end
  return out
end

local max_diff = H.max_param_diff

local function assert_same_metrics(a, b, tol, what)
  for k, v in pairs(a) do
    assert(type(b[k]) == "number", ("%s: metric %s missing"):format(what, k))
    if math.abs(v - b[k]) > tol then
      error(("%s: metric %s is %.9g vs %.9g"):format(what, k, v, b[k]), 2)
    end
  end
end

local METRICS = { "loss", "rewards_chosen", "rewards_rejected", "rewards_accuracies", "rewards_margins",
  "logps_chosen", "logps_rejected" }

-- ---- the reference -------------------------------------------------------------------------------

describe("ft.pref.train_dpo's reference", function()
  local batches = toy_batches(3, 6, 10)

  it("of a PEFT policy (adapters disabled) equals an explicit frozen copy of its base", function()
    local p1, base1 = policy_and_base(1, 0.2)
    local p2, base2 = policy_and_base(1, 0.2)
    local t1 = pref.DPOTrainer(p1, { beta = 0.1, lr = 1e-2 })
    local t2 = pref.DPOTrainer(p2, { beta = 0.1, lr = 1e-2, ref_model = base2 })
    assert.equal("adapters", t1.reference_kind)
    assert.equal("model", t2.reference_kind)
    local e1, e2 = t1:evaluate(batches), t2:evaluate(batches)
    -- the nudged adapter makes the policy differ from its reference: rewards are not 0
    assert(math.abs(e1.rewards_margins) > 1e-3 and math.abs(e1.rewards_chosen) > 1e-3, "policy equals its reference")
    for _, k in ipairs(METRICS) do assert(e1[k] ~= nil, "metric " .. k) end
    assert_same_metrics(e1, e2, 1e-6, "evaluate")
    for i = 1, 3 do
      assert_same_metrics(t1:step(batches[i]), t2:step(batches[i]), 1e-6, "step " .. i)
    end
    assert(max_diff(trainable(p1), trainable(p2)) <= 1e-6, "parameters after 3 steps")
    -- and the frozen copy is the base: its log-probs are the reference the adapters-off pass gives
    local b = batches[1]
    local live = pref.reference_logps(p1, b.chosen_ids, b.chosen_mask, { attention_mask = b.chosen_attention_mask })
    local frozen = pref.reference_logps(p1, b.chosen_ids, b.chosen_mask,
      { attention_mask = b.chosen_attention_mask, reference_model = base1 })
    H.assert_close(live, frozen, 1e-6, "reference log-probs")
  end)

  it("precomputed, saved and reloaded, trains to the same parameters as live references", function()
    local dir = H.make_tmpdir("pref_trainer")
    local p1 = policy_and_base(2)
    local p2, base2 = policy_and_base(2)
    local steps = 5
    local live = pref.train_dpo(p1, batches, { beta = 0.1, lr = 1e-2, steps = steps, logger = false })
    local store = pref.precompute_reference(p2, batches)
    assert.equal(18, store.count)
    assert.equal("adapters disabled", store.source)
    -- the frozen base gives the same store
    local store2 = pref.precompute_reference(base2, batches)
    assert.equal("reference model", store2.source)
    assert.equal(store.fingerprint, store2.fingerprint)
    H.assert_close(store2.chosen, store.chosen, 1e-6, "chosen of both stores")
    local path = store:save(dir .. "/ref.safetensors")
    local loaded = pref.load_reference(path, { batches = batches })
    assert.equal(store.fingerprint, loaded.fingerprint)
    H.assert_close(loaded.rejected, store.rejected, 0, "reloaded rejected")
    local pre, trainer = pref.train_dpo(p2, batches, { beta = 0.1, lr = 1e-2, steps = steps, reference = loaded,
      logger = false })
    assert.equal("store", trainer.reference_kind)
    for i = 1, steps do assert_same_metrics(live.history[i], pre.history[i], 0, "step " .. i) end
    local d = max_diff(trainable(p1), trainable(p2))
    assert(d == 0, ("parameters differ by %g"):format(d))
    assert(max_diff(trainable(p1), trainable(policy_and_base(2))) > 1e-3, "training moved the adapters")
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("takes iterators of batches, in another order than the store's", function()
    local p = policy_and_base(3)
    local function iter(list, reverse)
      local i = 0
      return function()
        i = i + 1
        return list[reverse and #list + 1 - i or i]
      end
    end
    local store = pref.precompute_reference(p, iter(batches))
    assert.equal(18, store.count)
    local res = pref.train_dpo(p, iter(batches, true), { reference = store, epochs = 2, lr = 1e-3, logger = false })
    assert.equal(6, res.step)
    assert.equal(6, res.last.pairs)
  end)

  it("finds a pair by its tokens whatever the batching and the padding", function()
    local p = policy_and_base(3, 0.1)
    local store = pref.precompute_reference(p, batches)
    -- the 6 pairs of batch 2 in two batches of 3, with two more columns of padding
    local b = batches[2]
    local function part(first)
      local out = {}
      for k, t in pairs(b) do
        local rows = t:narrow(1, first, 3)
        out[k] = ft.cat({ rows, ft.zeros({ 3, 2 }, { dtype = rows:dtype() }) + (k:find("_ids") and 1 or 0) }, 2)
      end
      return out
    end
    local rc, rr = store:lookup(b)
    local rc1, rr1 = store:lookup(part(1))
    local rc2, rr2 = store:lookup(part(4))
    H.assert_close(ft.cat({ rc1, rc2 }, 1), rc, 0, "chosen by fingerprint")
    H.assert_close(ft.cat({ rr1, rr2 }, 1), rr, 0, "rejected by fingerprint")
    -- the stored values are the reference's log-probs of that batch
    local want = pref.reference_logps(p, b.chosen_ids, b.chosen_mask, { attention_mask = b.chosen_attention_mask })
    H.assert_close(rc, want, 1e-6, "stored chosen log-probs")
    -- the same tokens with another completion boundary are another example
    local moved = part(1)
    moved.chosen_mask = moved.chosen_mask:clone()
    ft.no_grad(function() moved.chosen_mask:narrow(2, 1, 1):fill_(1) end)
    H.assert_mentions(H.error_of(store.lookup, store, moved), "pair 1", "not in the reference store", "18 examples")
  end)
end)

-- ---- learning --------------------------------------------------------------------------------

describe("ft.pref.train_dpo", function()
  it("learns a toy preference: accuracy and margin rise; JSONL log with TRL's metrics", function()
    local dir = H.make_tmpdir("pref_trainer")
    local policy = policy_and_base(4)
    local train, held_out = toy_batches(6, 8, 100), toy_batches(2, 8, 200)
    local trainer = pref.DPOTrainer(policy, { beta = 0.1, lr = 1e-2 })
    local before = trainer:evaluate(held_out)
    assert.equal(0, before.rewards_margins)     -- a fresh adapter: the policy is its reference
    local result = trainer:fit(train, { epochs = 3, log_path = dir .. "/metrics.jsonl", log_every = 1000,
      eval_batches = held_out, eval_every = 6 })
    assert.equal(18, result.step)
    local after = trainer:evaluate(held_out)
    assert(after.rewards_accuracies >= 0.9, ("held-out accuracy %g"):format(after.rewards_accuracies))
    assert(after.rewards_margins > 0.05, ("held-out margin %g"):format(after.rewards_margins))
    assert(after.loss < before.loss - 0.02, ("loss %g -> %g"):format(before.loss, after.loss))
    assert(result.history[18].rewards_margins > result.history[1].rewards_margins)
    local lines = {}
    for line in io.lines(dir .. "/metrics.jsonl") do lines[#lines + 1] = ft.json.decode(line) end
    assert.equal(18 + 3, #lines)        -- every step, and 3 evaluations
    for _, k in ipairs(METRICS) do assert(type(lines[1][k]) == "number", "JSONL lacks " .. k) end
    assert(type(lines[1].grad_norm) == "number" and type(lines[1].lr) == "number")
    local evals = 0
    for _, l in ipairs(lines) do if l.eval_rewards_accuracies then evals = evals + 1 end end
    assert.equal(3, evals)
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("accumulates gradients: two micro-batches make the update of the whole batch", function()
    -- orpo's and cpo_alpha's NLL is a mean per token over the whole batch, not per micro-batch.
    -- Plain SGD makes the update linear in the gradient: AdamW's first steps move each weight by
    -- about lr whatever the size of its gradient, so a near-zero gradient's rounding (which differs
    -- between BLAS kernels) would show up in full.
    local batches = toy_batches(2, 6, 300)
    local cases = { { loss_type = "sigmoid" }, { loss_type = "orpo" }, { loss_type = "simpo", cpo_alpha = 0.5 } }
    for _, o in ipairs(cases) do
      local p1, p2 = policy_and_base(5, 0.1), policy_and_base(5, 0.1)
      local function run(policy, accumulation)
        local params = {}
        for _, np in ipairs(peft.trainable_parameters(policy)) do params[#params + 1] = np[2] end
        return pref.train_dpo(policy, batches, { steps = 3, logger = false, loss_type = o.loss_type,
          cpo_alpha = o.cpo_alpha, gradient_accumulation_steps = accumulation, max_grad_norm = false,
          optimizer = ft.optim.SGD(params, { lr = 1.0 }) })
      end
      local r1, r2 = run(p1, 1), run(p2, 2)
      for i = 1, 3 do assert_same_metrics(r1.history[i], r2.history[i], 1e-5, o.loss_type .. " step " .. i) end
      -- against how far the adapters moved: a per-micro-batch normalisation would be off by a
      -- fraction of that, float32 rounding of the two summation orders by about 1e-6 of it
      local d = max_diff(trainable(p1), trainable(p2))
      local moved = max_diff(trainable(p1), trainable(policy_and_base(5, 0.1)))
      assert(moved > 1e-2, ("%s: training moved the adapters by only %g"):format(o.loss_type, moved))
      assert(d <= 1e-5 * moved, ("%s: parameters differ by %g after moving %g"):format(o.loss_type, d, moved))
    end
  end)

  it("runs every loss type, reference-free ones without a reference", function()
    local batch = toy_batch(4, 400)
    local policy = policy_and_base(6, 0.1)
    for _, lt in ipairs { "sigmoid", "robust", "hinge", "ipo", "simpo", "orpo" } do
      local trainer = pref.DPOTrainer(policy, { loss_type = lt, lr = 1e-3, label_smoothing =
        (lt == "robust" or lt == "simpo") and 0.1 or nil })
      assert.equal((lt == "simpo" or lt == "orpo") and "none" or "adapters", trainer.reference_kind)
      local m = trainer:step(batch)
      assert(m.loss == m.loss and math.abs(m.loss) < math.huge, lt .. " loss " .. tostring(m.loss))
      if lt == "orpo" then assert(type(m.log_odds_ratio) == "number") end
    end
    -- a policy without adapters trains in full against a frozen reference model
    local full, ref = tiny(7), tiny(7)
    local m = pref.DPOTrainer(full, { ref_model = ref, lr = 1e-3 }):step(batch)
    assert.equal(0, m.rewards_margins)
  end)
end)

-- ---- GRPO --------------------------------------------------------------------------------------

describe("ft.pref.train_grpo", function()
  local EOS = V
  local function prompts_of(n, seed)
    ft.manual_seed(seed)
    local out = {}
    for i = 1, n do out[i] = ft.randint(1, V, { 2 + i % 3 }) end
    return out
  end

  it("raises the reward of a token over a few dozen steps", function()
    local policy = policy_and_base(8, nil, { initializer_range = 0.3 })
    local seen = 0
    local function reward(prompt, completion, info)
      assert(type(prompt) == "table" and type(completion) == "table" and info.row >= 1)
      seen = seen + 1
      local n = 0
      for _, id in ipairs(completion) do if id == 5 then n = n + 1 end end
      return n / math.max(#completion, 1)
    end
    local steps = 30
    ft.manual_seed(9)
    local result = pref.train_grpo(policy, prompts_of(6, 1), reward, { num_generations = 8, prompts_per_step = 2,
      max_new_tokens = 6, eos_token_id = EOS, lr = 1e-2, steps = steps, logger = false, beta = 0.04,
      num_iterations = 2 })
    assert.equal(steps * 16, seen)
    local h = result.history
    local function mean(a, b)
      local s = 0
      for i = a, b do s = s + h[i].reward end
      return s / (b - a + 1)
    end
    local first, last = mean(1, 5), mean(steps - 4, steps)
    assert(last > first + 0.25, ("mean reward %g over the first 5 steps, %g over the last 5"):format(first, last))
    for _, k in ipairs { "reward", "reward_std", "frac_reward_zero_std", "loss", "kl", "clip_ratio_region_mean",
      "clip_ratio_low_mean", "clip_ratio_high_mean", "completion_length", "completions_clipped_ratio", "grad_norm" } do
      assert(type(h[steps][k]) == "number", "metric " .. k)
    end
    assert(h[steps].kl > 0, "the policy moved away from its reference")
  end)

  it("samples G completions per prompt, masked up to their EOS, left-padding the prompts", function()
    local policy = policy_and_base(10, 0.3, { initializer_range = 0.3 })
    pref.disable_dropout(policy)          -- the trainers do; the log-probs below compare two passes
    local prompts = { { 3, 4, 5, 6 }, ft.tensor({ 2, 8 }, { dtype = "int64" }) }
    ft.manual_seed(11)
    local roll = pref.sample_completions(policy, prompts, 6, { max_new_tokens = 8, eos_token_id = { EOS, 12 },
      pad_token_id = 1, temperature = 1.5 })
    assert.equal(12, roll.size)
    assert.equal(4, roll.prompt_length)
    local C = roll.completion_length
    assert.same({ 12, 4 + C }, roll.ids:shape())
    assert.same({ 12, C }, roll.completion_mask:shape())
    local ids, cm, att = roll.ids:totable(), roll.completion_mask:totable(), roll.attention_mask:totable()
    local ended = 0
    for r = 1, 12 do
      local b = (r - 1) // 6 + 1
      assert.equal(b, roll.prompt_of[r])
      -- prompt 2 is left-padded by two
      if b == 2 then assert.same({ 1, 1, 2, 8 }, { ids[r][1], ids[r][2], ids[r][3], ids[r][4] }) end
      assert.same({ b == 2 and 0 or 1, 1 }, { att[r][1], att[r][4] })
      local stop, before = false, {}
      for t = 1, C do
        local id = ids[r][4 + t]
        assert.equal(stop and 0 or 1, cm[r][t], ("row %d token %d"):format(r, t))
        assert.equal(cm[r][t], att[r][4 + t])
        if stop then assert.equal(1, id) end
        if not stop then
          if id == EOS or id == 12 then stop = true else before[#before + 1] = id end
        end
      end
      assert.same(before, roll.completions[r])
      assert.equal(stop, roll.eos[r])
      if stop then ended = ended + 1 end
    end
    assert(ended > 0 and ended < 12, ("%d of 12 rows ended with an EOS: the test needs both kinds"):format(ended))
    -- the padded rows' log-probs are those of the row alone, unpadded (mask and positions)
    local lp = ft.no_grad(sampler.completion_logps, policy, roll)
    for _, r in ipairs { 7, 12 } do
      local alone = roll.ids:narrow(1, r, 1):narrow(2, 3, 2 + C)
      local want = ft.no_grad(pref.token_logps, policy, alone, { temperature = 1.5 }):narrow(2, 2, C)
      H.assert_close(lp:narrow(1, r, 1) * roll.completion_mask:narrow(1, r, 1),
        want * roll.completion_mask:narrow(1, r, 1), 1e-5, "row " .. r .. " log-probs")
    end
  end)

  it("accumulates gradients: micro-batches make the whole batch's update, for every loss type", function()
    local prompts = prompts_of(2, 3)
    local function reward(_, c)
      local n = 0
      for _, id in ipairs(c) do if id == 5 or id == 6 then n = n + 1 end end
      return n
    end
    for _, lt in ipairs { "dapo", "bnpo", "grpo", "dr_grpo" } do
      local runs = {}
      for i, k in ipairs { 1, 3 } do
        local policy = policy_and_base(20, 0.2, { initializer_range = 0.3 })
        ft.manual_seed(21)
        local res = pref.train_grpo(policy, prompts, reward, { num_generations = 4, prompts_per_step = 2,
          max_new_tokens = 5, eos_token_id = EOS, lr = 1e-2, steps = 2, logger = false, loss_type = lt, beta = 0.1,
          num_iterations = 2, gradient_accumulation_steps = k })
        runs[i] = { res = res, params = trainable(policy) }
      end
      for s = 1, 2 do
        assert_same_metrics(runs[1].res.history[s], runs[2].res.history[s], 1e-5, lt .. " step " .. s)
      end
      local d = max_diff(runs[1].params, runs[2].params)
      assert(d <= 1e-5, ("%s: parameters differ by %g"):format(lt, d))
    end
  end)

  it("checkpoints and resumes exactly (the sampling too)", function()
    local dir = H.make_tmpdir("pref_trainer")
    local prompts = prompts_of(3, 4)
    local function reward(_, c) return #c > 0 and (c[1] == 3 and 1 or 0) or 0 end
    local function run(extra)
      local policy = policy_and_base(22, nil, { initializer_range = 0.3 })
      ft.manual_seed(23)
      local o = { num_generations = 4, max_new_tokens = 4, eos_token_id = EOS, lr = 1e-2, steps = 4, logger = false,
        beta = 0.05, num_iterations = 2 }
      for k, v in pairs(extra or {}) do o[k] = v end
      local res = pref.train_grpo(policy, prompts, reward, o)
      return res, trainable(policy)
    end
    local _, straight = run()
    local ck = dir .. "/grpo.h5"
    local first = run { checkpoint = ck, resume = true, stop_at = 2 }
    assert.equal("stop_at", first.stopped)
    local second, resumed = run { checkpoint = ck, resume = true }
    assert.equal(2, second.resumed_from)
    assert.equal(4, second.step)
    assert.equal(0, max_diff(straight, resumed))
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("takes a reward model and several reward functions with weights", function()
    local policy = policy_and_base(12, nil, { initializer_range = 0.3 })
    local rm = pref.RewardModel(tiny(13))
    rm:eval()                             -- the scorer runs it in eval mode (no dropout)
    local prompts = prompts_of(2, 2)
    local roll = pref.sample_completions(policy, prompts, 3, { max_new_tokens = 4, eos_token_id = EOS })
    local total, per = pref.score_completions({ rm, function(_, c) return #c end }, roll,
      { reward_weights = { 2, 0.5 } })
    local direct = ft.no_grad(function() return rm(roll.ids, { attention_mask = roll.attention_mask }).rewards end)
    H.assert_close(per[1], direct, 1e-6, "reward model scores")
    local lens = {}
    for r = 1, 6 do lens[r] = #roll.completions[r] end
    H.assert_close(total, direct * 2 + ft.tensor(lens) * 0.5, 1e-5, "weighted sum")
    local res = pref.train_grpo(policy, prompts, { rm, function() return 1 end }, { num_generations = 3,
      max_new_tokens = 4, eos_token_id = EOS, lr = 1e-3, steps = 2, logger = false, gradient_accumulation_steps = 2,
      loss_type = "grpo" })
    assert(type(res.last.reward_1) == "number" and type(res.last.reward_2) == "number")
  end)
end)

-- ---- bad input ---------------------------------------------------------------------------------

describe("ft.pref trainers' bad input", function()
  local batch = toy_batch(4, 500)

  it("names beta, the loss options and the reference choices", function()
    local policy = policy_and_base(14)
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { beta = 0 }), "ft.pref.DPOTrainer", "beta", "> 0", "0")
    H.assert_mentions(H.error_of(pref.train_dpo, policy, { batch }, { beta = -1 }), "ft.pref.train_dpo", "beta")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { bata = 0.1 }), "bata", "beta")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { loss_type = "kto" }), "loss_type", "kto")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { gamma = 1 }), "gamma", "simpo", "sigmoid")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { loss_type = "hinge", label_smoothing = 0.1 }),
      "label_smoothing", "hinge")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { loss_type = "simpo", ref_model = tiny(1) }), "simpo",
      "ref_model")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { ref_model = policy }), "ref_model", "policy itself")
    local store = pref.precompute_reference(policy, { batch })
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { ref_model = tiny(1), reference = store }), "one reference")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { reference = {} }), "reference", "ReferenceStore")
    H.assert_mentions(H.error_of(pref.DPOTrainer, tiny(1), {}), "no adapter", "ref_model")
    H.assert_mentions(H.error_of(pref.DPOTrainer, tiny(1), { ref_model = tiny(2), disable_dropout = 1 }),
      "disable_dropout")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { optimizer = ft.optim.SGD({ ft.zeros(1) }, { lr = 1 }),
      lr = 1e-3 }), "lr", "optimizer")
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { lr = 0 }), "lr", "> 0")
  end)

  it("names both vocabulary sizes of a mismatched reference model", function()
    local policy = policy_and_base(15)
    local other = tiny(1, { vocab_size = 24 })
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { ref_model = other }), "ref_model", "24", "16",
      "vocabulary")
    H.assert_mentions(H.error_of(pref.train_grpo, policy, { { 1, 2 } }, function() return 0 end,
      { beta = 0.1, ref_model = other }), "ft.pref.train_grpo", "24", "16")
    local store = pref.precompute_reference(other, { batch })
    H.assert_mentions(H.error_of(pref.DPOTrainer, policy, { reference = store }), "24", "16")
    H.assert_mentions(H.error_of(pref.train_grpo, policy, { { 1, 2 } }, pref.RewardModel(other)), "reward model",
      "24", "16")
  end)

  it("checks batches and the store against the data", function()
    local policy = policy_and_base(16)
    local trainer = pref.DPOTrainer(policy, { lr = 1e-3 })
    local function without(key)
      local b = {}
      for k, v in pairs(batch) do if k ~= key then b[k] = v end end
      return b
    end
    H.assert_mentions(H.error_of(trainer.step, trainer, without("rejected_mask")), "batch.rejected_mask", "required")
    local short = without("rejected_ids")
    short.rejected_ids = batch.rejected_ids:narrow(1, 1, 3)
    short.rejected_mask = batch.rejected_mask:narrow(1, 1, 3)
    short.rejected_attention_mask = nil
    H.assert_mentions(H.error_of(trainer.step, trainer, short), "rejected_ids", "[3,", "[4,", "one row per pair")
    local wide = without("chosen_mask")
    wide.chosen_mask = ft.ones(4, 2)
    H.assert_mentions(H.error_of(trainer.step, trainer, wide), "chosen_mask", "[4,2]")
    local floats = without("chosen_ids")
    floats.chosen_ids = batch.chosen_ids:float()
    H.assert_mentions(H.error_of(trainer.step, trainer, floats), "chosen_ids", "int64", "float32")
    H.assert_mentions(H.error_of(trainer.fit, trainer, batch), "one batch")
    H.assert_mentions(H.error_of(trainer.fit, trainer, {}), "empty")
    H.assert_mentions(H.error_of(trainer.fit, trainer, { batch }, { steps = 1, epochs = 1 }), "steps or epochs")
    local t5 = pref.DPOTrainer(policy, { gradient_accumulation_steps = 5 })
    H.assert_mentions(H.error_of(t5.step, t5, batch), "gradient_accumulation_steps = 5", "4 pairs")
    -- a store used with other data: count and fingerprint
    local store = pref.precompute_reference(policy, { batch })
    local other = toy_batch(4, 501)
    local t2 = pref.DPOTrainer(policy, { reference = store })
    H.assert_mentions(H.error_of(t2.fit, t2, { batch, other }, { logger = false }), "holds 4 examples", "has 8",
      "fingerprint", "precompute_reference")
    H.assert_mentions(H.error_of(t2.fit, t2, { other }, { logger = false }), "holds 4 examples", "has 4",
      "other token ids")
    H.assert_mentions(H.error_of(t2.step, t2, other), "pair 1", "not in the reference store")
    H.assert_mentions(H.error_of(pref.precompute_reference, policy, {}), "empty")
    H.assert_mentions(H.error_of(pref.precompute_reference, policy, { batch }, { adapters = false }), "adapters",
      "disable_adapters")
  end)

  it("refuses files that are not stores", function()
    local dir = H.make_tmpdir("pref_trainer")
    H.assert_mentions(H.error_of(pref.load_reference, dir .. "/none.safetensors"), "no file")
    ft.safetensors.save(dir .. "/w.safetensors", { w = ft.zeros(2) })
    H.assert_mentions(H.error_of(pref.load_reference, dir .. "/w.safetensors"), "not a reference store")
    local f = assert(io.open(dir .. "/junk.safetensors", "wb"))
    f:write("junk")
    f:close()
    H.assert_mentions(H.error_of(pref.load_reference, dir .. "/junk.safetensors"), "cannot read")
    local store = pref.precompute_reference(policy_and_base(17), { batch })
    store:save(dir .. "/s.safetensors")
    H.assert_mentions(H.error_of(pref.load_reference, dir .. "/s.safetensors", { batches = { toy_batch(4, 502) } }),
      "ft.pref.load_reference", "fingerprint")
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("checks GRPO's options, prompts and rewards", function()
    local policy = policy_and_base(18)
    local prompts = { { 1, 2, 3 } }
    local function r() return 0 end
    local function grpo(p, rf, o) return function() return pref.train_grpo(policy, p, rf, o) end end
    H.assert_mentions(H.error_of(grpo(prompts, r, { num_generations = 1 })), "num_generations", ">= 2")
    H.assert_mentions(H.error_of(grpo(prompts, r, { temperature = 0 })), "temperature", "> 0")
    H.assert_mentions(H.error_of(grpo(prompts, r, { num_generation = 4 })), "num_generation", "num_generations")
    H.assert_mentions(H.error_of(grpo(prompts, r, { loss_type = "ppo" })), "loss_type", "ppo")
    H.assert_mentions(H.error_of(grpo(prompts, r, { ref_model = tiny(1) })), "ref_model", "beta = 0")
    H.assert_mentions(H.error_of(pref.train_grpo, tiny(1), prompts, r, { beta = 0.1 }), "no adapter", "ref_model")
    H.assert_mentions(H.error_of(pref.train_grpo, function() end, prompts, r), "policy", "generate")
    H.assert_mentions(H.error_of(grpo(prompts, "reward")), "reward_fn", "function")
    H.assert_mentions(H.error_of(grpo(prompts, { r, r }, { reward_weights = { 1 } })), "reward_weights", "2")
    H.assert_mentions(H.error_of(grpo({ { 1, 0, 3 } }, r, { logger = false })), "prompts[1][2]", "0", "1..16")
    H.assert_mentions(H.error_of(grpo({ { 1, 17 } }, r, { logger = false })), "prompts[1][2]", "17")
    H.assert_mentions(H.error_of(grpo({ {} }, r, { logger = false })), "prompts[1]", "empty")
    H.assert_mentions(H.error_of(grpo({}, r, { logger = false })), "prompts")
    H.assert_mentions(H.error_of(grpo(prompts, r, { eos_token_id = 99 })), "eos_token_id", "99")
    H.assert_mentions(H.error_of(grpo(prompts, function() return nil end, { num_generations = 2, max_new_tokens = 2,
      logger = false, steps = 1 })), "reward_fn returned nil", "row 1", "prompt 1", "generation 1")
    H.assert_mentions(H.error_of(grpo(prompts, function(_, _, info) return info.row == 2 and 0 / 0 or 1 end,
      { num_generations = 2, max_new_tokens = 2, logger = false, steps = 1 })), "row 2", "finite number")
    H.assert_mentions(H.error_of(grpo(prompts, r, { num_generations = 2, max_new_tokens = 2, logger = false,
      steps = 1, gradient_accumulation_steps = 3 })), "gradient_accumulation_steps", "2 completions")
  end)
end)
