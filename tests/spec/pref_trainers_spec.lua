-- The KTO and reward-model trainers (ft.pref.kto_trainer, ft.pref.reward_trainer) on tiny GPTs:
-- one KTO step against the step written out by hand (log-probs, the KL point, kto_loss, AdamW),
-- gradient accumulation against the whole batch, the adapters-disabled reference against a
-- frozen copy, the reward trainer's loss against -logsigmoid(r_c - r_r) by hand, a reward model
-- learning a marker token, what trains under LoRA + modules_to_save, the JSONL log, and the
-- errors for bad input.
local ft = require "ft"
local H = require "helpers"
local pref = ft.pref
local peft = ft.peft

local V = 16
local MARK = 7
local CONFIG = { vocab_size = V, n_layer = 2, n_embd = 32, n_head = 2, n_positions = 32 }

local function tiny(seed, extra)
  ft.manual_seed(seed)
  local c = {}
  for k, v in pairs(CONFIG) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return ft.models.new("gpt-s", c)
end

-- tiny(seed) with LoRA (B nudged off 0 so that the policy differs from its base) and a frozen
-- copy of the base taken before the adapter went on.
local function policy_and_base(seed, nudge)
  local base = tiny(seed)
  local copy = tiny(seed + 100)
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

local function randints(lo, hi, n)   -- n integers in lo..hi (ft.randint includes hi)
  if n == 0 then return {} end
  return ft.randint(lo, hi, { n }):totable()
end

-- B unpaired examples (a 2..4-token prompt, a 1..3-token completion, labels alternating from
-- desirable, the last one flipped so that the counts differ), as ft.pref.load_unpaired makes them.
local function unpaired_examples(B, seed)
  ft.manual_seed(seed)
  local out = {}
  for i = 1, B do
    local np, nc = 2 + ft.randint(0, 2, { 1 }):item(), 1 + ft.randint(0, 2, { 1 }):item()
    out[i] = { prompt_ids = randints(1, V, np), completion_ids = randints(1, V, nc),
      label = (i % 2 == 1) ~= (i == B), pad_id = 1, where = "example " .. i }
  end
  return out
end

local function kto_batch(B, seed) return pref.collate_unpaired(unpaired_examples(B, seed), { kl = true }) end

-- Pairs: a random 2..4-token prompt, a random 2..3-token completion; chosen has MARK at a random
-- place of it, rejected has none (tokens drawn from 1..V without MARK); right padded with 1.
local function marker_pairs(n, seed)
  ft.manual_seed(seed)
  local pool = {}
  for t = 1, V do if t ~= MARK then pool[#pool + 1] = t end end
  local function draw(k)
    local out = {}
    for i, j in ipairs(randints(1, #pool, k)) do out[i] = pool[j] end
    return out
  end
  local out = {}
  for i = 1, n do
    local np, nc = 2 + ft.randint(0, 2, { 1 }):item(), 2 + ft.randint(0, 1, { 1 }):item()
    local rejected = draw(nc)
    local chosen = {}
    for j, v in ipairs(rejected) do chosen[j] = v end
    chosen[ft.randint(1, nc, { 1 }):item()] = MARK
    out[i] = { prompt_ids = draw(np), chosen_ids = chosen, rejected_ids = rejected, pad_id = 1 }
  end
  return out
end

local function pair_batches(n, B, seed)
  local list = {}
  for b in pref.batches(marker_pairs(n * B, seed), { batch_size = B }) do list[#list + 1] = b end
  return list
end

local params, max_diff = H.param_values, H.max_param_diff

local function changed(before, after)
  local names = {}
  for name, va in pairs(before) do
    local vb = after[name]
    for i = 1, #va do
      if va[i] ~= vb[i] then names[#names + 1] = name break end
    end
  end
  table.sort(names)
  return names
end

local function assert_same_metrics(a, b, tol, what)
  local n = 0
  for k, v in pairs(a) do
    assert(type(b[k]) == "number", ("%s: metric %s missing"):format(what, k))
    if math.abs(v - b[k]) > tol then error(("%s: metric %s is %.9g vs %.9g"):format(what, k, v, b[k]), 2) end
    n = n + 1
  end
  assert(n > 0, what .. ": no metrics")
end

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end
local function softplus(x) return x > 0 and x + math.log(1 + math.exp(-x)) or math.log(1 + math.exp(x)) end

-- ---- KTO -------------------------------------------------------------------------------------

describe("ft.pref.KTOTrainer", function()
  it("makes the step written out by hand: log-probs, KL point, KTO loss, AdamW", function()
    local batch = kto_batch(6, 10)
    local p1 = policy_and_base(1, 0.2)
    local p2 = policy_and_base(1, 0.2)
    local beta, lr, wd, wu = 0.5, 1e-2, 1.5, 0.7
    local trainer = pref.KTOTrainer(p1, { beta = beta, lr = lr, desirable_weight = wd, undesirable_weight = wu,
      max_grad_norm = false })
    assert.equal("adapters", trainer.reference_kind)
    local m = trainer:step(batch)

    -- by hand, on the twin policy (with its dropout off, as the trainer's default)
    pref.disable_dropout(p2)
    local named = {}
    for name, p in p2:named_parameters() do if p.requires_grad then named[#named + 1] = p end end
    local opt = ft.optim.AdamW(named, { lr = lr, weight_decay = 0, betas = { 0.9, 0.999 }, eps = 1e-8 })
    opt:zero_grad()
    local lp = pref.logps(p2, batch.ids, batch.mask, { attention_mask = batch.attention_mask })
    local ref = pref.reference_logps(p2, batch.ids, batch.mask, { attention_mask = batch.attention_mask })
    local kl_lp = ft.no_grad(pref.logps, p2, batch.kl_ids, batch.kl_mask, { attention_mask = batch.kl_attention_mask })
    local kl_ref = pref.reference_logps(p2, batch.kl_ids, batch.kl_mask, { attention_mask = batch.kl_attention_mask })
    local loss = pref.kto_loss { policy = lp, reference = ref, labels = batch.labels, kl = kl_lp - kl_ref,
      beta = beta, desirable_weight = wd, undesirable_weight = wu }
    loss:backward()
    opt:step()

    -- the loss in Lua numbers, from the log-probs
    local lpv, refv, y = lp:totable(), ref:totable(), batch.labels:totable()
    local kls, klr = kl_lp:totable(), kl_ref:totable()
    local z0 = 0
    for i = 1, #kls do z0 = z0 + (kls[i] - klr[i]) / #kls end
    z0 = math.max(0, z0)
    local want, good, bad, n_good, n_bad = 0, 0, 0, 0, 0
    for i = 1, #lpv do
      local r = lpv[i] - refv[i]
      if y[i] == 1 then
        want = want + wd * (1 - sigmoid(beta * (r - z0)))
        good, n_good = good + beta * r, n_good + 1
      else
        want = want + wu * (1 - sigmoid(beta * (z0 - r)))
        bad, n_bad = bad + beta * r, n_bad + 1
      end
    end
    want = want / #lpv
    assert(n_good == 3 and n_bad == 3 or n_good ~= n_bad, "labels")
    assert(math.abs(m.loss - want) < 1e-5, ("loss %.9g, by hand %.9g"):format(m.loss, want))
    assert(math.abs(m.kl - z0) < 1e-6, ("kl %.9g, by hand %.9g"):format(m.kl, z0))
    assert(math.abs(m.rewards_chosen - good / n_good) < 1e-5, "rewards_chosen")
    assert(math.abs(m.rewards_rejected - bad / n_bad) < 1e-5, "rewards_rejected")
    assert(math.abs(m.rewards_margins - (good / n_good - bad / n_bad)) < 1e-5, "rewards_margins")
    assert.equal(n_good, m.count_chosen)
    assert.equal(n_bad, m.count_rejected)
    assert.equal(6, m.examples)
    assert(math.abs(m.rewards_chosen) > 1e-3, "the nudged policy equals its reference")
    local d = max_diff(params(p1, true), params(p2, true))
    assert(d <= 1e-6, ("parameters differ from the hand-made step by %g"):format(d))
    assert(max_diff(params(p1, true), params(policy_and_base(1, 0.2), true)) > 1e-4, "the step moved nothing")
  end)

  it("with the KL point of the whole batch, two micro-batches make the whole batch's update", function()
    -- on batch 1 the first half's KL rows have a negative mean (see the next test): a KL point
    -- per micro-batch would differ
    local batches = { kto_batch(6, 30), kto_batch(6, 21) }
    local p1, p2 = policy_and_base(3, 1.0), policy_and_base(3, 1.0)
    local r1 = pref.train_kto(p1, batches, { lr = 1e-2, steps = 3, logger = false })
    local r2 = pref.train_kto(p2, batches, { lr = 1e-2, steps = 3, logger = false, gradient_accumulation_steps = 2 })
    for i = 1, 3 do assert_same_metrics(r1.history[i], r2.history[i], 1e-5, "step " .. i) end
    assert(r1.history[1].kl > 0 or r1.history[2].kl > 0, "a KL point of 0 tests nothing")
    local d = max_diff(params(p1, true), params(p2, true))
    assert(d <= 1e-5, ("parameters differ by %g"):format(d))
  end)

  it("with kl_scope = 'micro_batch' takes each micro-batch's own KL point (TRL's)", function()
    local batch = kto_batch(6, 30)
    local p = policy_and_base(3, 1.0)
    local trainer = pref.KTOTrainer(p, { lr = 1e-3, kl_scope = "micro_batch", gradient_accumulation_steps = 2 })
    -- the two halves' KL points, by hand, before the step
    local kl = ft.no_grad(pref.logps, p, batch.kl_ids, batch.kl_mask, { attention_mask = batch.kl_attention_mask })
      - pref.reference_logps(p, batch.kl_ids, batch.kl_mask, { attention_mask = batch.kl_attention_mask })
    local v = kl:totable()
    local function point(a, b)
      local s = 0
      for i = a, b do s = s + v[i] end
      return math.max(0, s / (b - a + 1))
    end
    local whole, halves = point(1, 6), (point(1, 3) + point(4, 6)) / 2
    -- halves of one size differ from the whole only through the clamp at 0: here one half's
    -- mean is negative
    assert(math.abs(whole - halves) > 1e-3, "both scopes give one point: the test cannot tell them apart")
    local m = trainer:step(batch)
    assert(math.abs(m.kl - halves) < 1e-5, ("kl %.9g, micro-batch points %.9g, batch point %.9g"):format(m.kl,
      halves, whole))
  end)

  it("with adapters disabled as reference equals an explicit frozen copy", function()
    local batches = { kto_batch(6, 40), kto_batch(6, 41) }
    local p1 = policy_and_base(4, 0.2)
    local p2, base2 = policy_and_base(4, 0.2)
    local t1 = pref.KTOTrainer(p1, { lr = 1e-2 })
    local t2 = pref.KTOTrainer(p2, { lr = 1e-2, ref_model = base2 })
    assert.equal("model", t2.reference_kind)
    local e1, e2 = t1:evaluate(batches), t2:evaluate(batches)
    assert(math.abs(e1.rewards_chosen) > 1e-3, "policy equals its reference")
    assert.equal(12, e1.examples)
    assert_same_metrics(e1, e2, 1e-6, "evaluate")
    for i = 1, 3 do
      local b = batches[(i - 1) % 2 + 1]
      assert_same_metrics(t1:step(b), t2:step(b), 1e-6, "step " .. i)
    end
    assert(max_diff(params(p1, true), params(p2, true)) <= 1e-6, "parameters after 3 steps")
  end)

  it("trains from ft.pref.batches, writing TRL's KTO metrics to the JSONL log", function()
    local dir = H.make_tmpdir("pref_trainers")
    local p = policy_and_base(5)
    local examples = unpaired_examples(12, 50)
    local batches = pref.batches(examples, { batch_size = 4, kl = true })
    local result, trainer = pref.train_kto(p, batches, { beta = 0.1, lr = 1e-2, weight_decay = 0.01, steps = 4,
      log_path = dir .. "/metrics.jsonl", log_every = 2 })
    assert.equal(4, result.step)
    assert(type(result.last.loss) == "number" and result.last.loss == result.last.loss)
    assert.equal(4, #trainer.history)
    local lines = {}
    for line in io.lines(dir .. "/metrics.jsonl") do lines[#lines + 1] = ft.json.decode(line) end
    assert.equal(4, #lines)
    for _, k in ipairs { "loss", "kl", "rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected",
      "count_chosen", "count_rejected", "grad_norm", "lr" } do
      assert(type(lines[1][k]) == "number", "JSONL lacks " .. k)
    end
    -- a fresh adapter is its reference: the first step's rewards are 0
    assert.equal(0, lines[1].rewards_chosen)
    assert(lines[4].rewards_chosen ~= 0, "training moved nothing")
    -- apo_zero_unpaired needs no KL rows
    local plain = pref.collate_unpaired(examples)
    local m = pref.KTOTrainer(p, { loss_type = "apo_zero_unpaired", lr = 1e-3 }):step(plain)
    assert(m.kl == 0 and m.loss == m.loss)
    H.run("rm -rf " .. H.quote(dir))
  end)
end)

-- ---- the reward model ---------------------------------------------------------------------------

-- A reward model on tiny(seed), with LoRA on its body and the score head in modules_to_save;
-- head_std: the head's initial spread (0: every reward 0 until it trains).
local function lora_rm(seed, head_std)
  local rm = pref.RewardModel(tiny(seed), { initializer_range = head_std })
  ft.manual_seed(seed + 1)
  peft.lora(rm, { target = { "c_attn", "c_proj", "c_fc" }, r = 4, alpha = 8, modules_to_save = { "score" } })
  return rm
end

describe("ft.pref.RewardTrainer", function()
  it("has the loss -mean(logsigmoid(r_c - r_r)) by hand, with margins and centring", function()
    local batch = pair_batches(1, 6, 60)[1]
    local rm = lora_rm(6)
    local trainer = pref.RewardTrainer(rm, { lr = 1e-3 })
    ft.manual_seed(61)
    batch.margin = ft.rand({ 6 })
    local rc = ft.no_grad(function()
      return rm(batch.chosen_ids, { attention_mask = batch.chosen_attention_mask }).rewards
    end):totable()
    local rr = ft.no_grad(function()
      return rm(batch.rejected_ids, { attention_mask = batch.rejected_attention_mask }).rewards
    end):totable()
    local margin = batch.margin:totable()
    local function by_hand(use_margin, coef)
      local loss, acc, diff, centre = 0, 0, 0, 0
      for i = 1, 6 do
        local d = rc[i] - rr[i]
        loss = loss + softplus(-(d - (use_margin and margin[i] or 0))) / 6
        acc = acc + (d > 0 and 1 or 0) / 6
        diff = diff + d / 6
        centre = centre + (rc[i] + rr[i]) ^ 2 / 6
      end
      return loss + (coef or 0) * centre, acc, diff
    end
    local e = trainer:evaluate({ batch })
    local want, acc, diff = by_hand(true)
    assert(math.abs(e.loss - want) < 1e-6, ("loss %.9g, by hand %.9g"):format(e.loss, want))
    assert(math.abs(e.accuracy - acc) < 1e-9 and math.abs(e.margin - diff) < 1e-6, "accuracy, margin")
    assert.equal(6, e.pairs)
    batch.margin = nil
    local plain = trainer:evaluate({ batch })
    assert(math.abs(plain.loss - by_hand(false)) < 1e-6, "loss without margin")
    assert(math.abs(plain.loss - e.loss) > 1e-4, "the margin changed nothing")
    local centred = pref.RewardTrainer(rm, { lr = 1e-3, center_rewards_coefficient = 0.5 }):evaluate({ batch })
    assert(math.abs(centred.loss - by_hand(false, 0.5)) < 1e-6, "centred loss")
    -- the step reports the loss before its update, and a batch without attention masks is read
    -- at its last completion token (the same tokens here: right padding)
    batch.chosen_attention_mask, batch.rejected_attention_mask = nil, nil
    local m = trainer:step(batch)
    assert(math.abs(m.loss - by_hand(false)) < 1e-6, ("step loss %.9g"):format(m.loss))
  end)

  it("learns a marker token: held-out accuracy rises above 0.9 in 40 steps", function()
    local dir = H.make_tmpdir("pref_trainers")
    local rm = lora_rm(7, 0)      -- a zero head: chance level, every pair a tie
    local train, held_out = pair_batches(8, 8, 70), pair_batches(4, 8, 80)
    local before_params = params(rm)
    local trainer = pref.RewardTrainer(rm, { lr = 3e-2, weight_decay = 0 })
    local before = trainer:evaluate(held_out)
    assert(math.abs(before.loss - math.log(2)) < 1e-6, ("loss before %g"):format(before.loss))
    assert.equal(0, before.margin)
    assert.equal(0, before.accuracy)     -- ties: no chosen reward is the larger
    local result = trainer:fit(train, { steps = 40, log_path = dir .. "/rm.jsonl", log_every = 10,
      eval_batches = held_out, eval_every = 20 })
    assert.equal(40, result.step)
    local lines = {}
    for line in io.lines(dir .. "/rm.jsonl") do lines[#lines + 1] = ft.json.decode(line) end
    for _, k in ipairs { "loss", "accuracy", "margin", "rewards_chosen", "rewards_rejected", "min_reward",
      "max_reward", "mean_reward", "grad_norm", "pairs" } do
      assert(type(lines[1][k]) == "number", "JSONL lacks " .. k)
    end
    local after = trainer:evaluate(held_out)
    assert.equal(32, after.pairs)
    assert(after.accuracy > 0.9, ("held-out accuracy %g"):format(after.accuracy))
    assert(after.margin > 0.5, ("held-out margin %g"):format(after.margin))
    assert(after.loss < before.loss - 0.3, ("loss %g -> %g"):format(before.loss, after.loss))
    local evals = 0
    for _, l in ipairs(lines) do if l.eval_accuracy then evals = evals + 1 end end
    assert.equal(2, evals)
    -- only the adapter and the head trained
    local moved = changed(before_params, params(rm))
    local head, lora = false, false
    for _, name in ipairs(moved) do
      assert(name:find("lora_", 1, true) or name == "score.weight", "a frozen parameter moved: " .. name)
      head = head or name == "score.weight"
      lora = lora or name:find("lora_A", 1, true) ~= nil
    end
    assert(head and lora, "the score head and the adapter both train")
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("accumulates gradients: two micro-batches make the whole batch's update", function()
    local batches = pair_batches(2, 6, 90)
    local rm1, rm2 = lora_rm(9), lora_rm(9)
    local r1 = pref.train_reward(rm1, batches, { lr = 1e-2, steps = 3, logger = false })
    local r2 = pref.train_reward(rm2, batches, { lr = 1e-2, steps = 3, logger = false,
      gradient_accumulation_steps = 2 })
    for i = 1, 3 do assert_same_metrics(r1.history[i], r2.history[i], 1e-5, "step " .. i) end
    local d = max_diff(params(rm1, true), params(rm2, true))
    assert(d <= 1e-5, ("accumulated parameters differ by %g"):format(d))
  end)

  it("trains every parameter without an adapter", function()
    local rm = pref.RewardModel(tiny(10))
    local before = params(rm)
    pref.train_reward(rm, pair_batches(2, 6, 95), { lr = 1e-3, steps = 2, logger = false })
    local moved, n, body = changed(before, params(rm)), 0, 0
    for _ in pairs(before) do n = n + 1 end
    for _, name in ipairs(moved) do if name:find("transformer.h.", 1, true) then body = body + 1 end end
    assert(body > 0 and #moved >= n - 2, ("%d of %d parameters moved"):format(#moved, n))
  end)
end)

-- ---- bad input ------------------------------------------------------------------------------------

describe("ft.pref KTO and reward trainers' bad input", function()
  it("names the batch type, the option and the value", function()
    local policy = policy_and_base(11)
    local pairs_batch = pair_batches(1, 4, 100)[1]
    local unpaired = kto_batch(4, 101)
    local kt = pref.KTOTrainer(policy, { lr = 1e-3 })
    H.assert_mentions(H.error_of(kt.step, kt, pairs_batch), "ft.pref.KTOTrainer", "pairs", "chosen_ids", "unpaired")
    H.assert_mentions(H.error_of(pref.train_kto, policy, { pairs_batch }, { steps = 1, logger = false }),
      "ft.pref.train_kto", "pairs")
    local rt = pref.RewardTrainer(lora_rm(12), { lr = 1e-3 })
    H.assert_mentions(H.error_of(rt.step, rt, unpaired), "ft.pref.RewardTrainer", "unpaired", "chosen_ids")
    H.assert_mentions(H.error_of(rt.evaluate, rt, { unpaired }), "unpaired", "KTOTrainer")
    local dt = pref.DPOTrainer(policy, { lr = 1e-3 })
    H.assert_mentions(H.error_of(dt.step, dt, unpaired), "ft.pref.DPOTrainer", "unpaired")
    -- the KL rows
    local no_kl = pref.collate_unpaired(unpaired_examples(4, 102))
    H.assert_mentions(H.error_of(kt.step, kt, no_kl), "kl_ids", "kl = true")
    local short = kto_batch(4, 103)
    short.labels = ft.tensor({ 1, 0, 1 })
    H.assert_mentions(H.error_of(kt.step, kt, short), "batch.labels", "[4]", "[3]")
    local t5 = pref.KTOTrainer(policy, { gradient_accumulation_steps = 5 })
    H.assert_mentions(H.error_of(t5.step, t5, unpaired), "gradient_accumulation_steps = 5", "4 examples")
    -- options
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { beta = 0 }), "ft.pref.KTOTrainer", "beta", "> 0")
    H.assert_mentions(H.error_of(pref.train_kto, policy, { unpaired }, { beta = -1 }), "ft.pref.train_kto", "beta")
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { bata = 0.1 }), "bata", "beta")
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { loss_type = "sigmoid" }), "loss_type", "sigmoid")
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { loss_type = "apo_zero_unpaired", kl_scope = "batch" }),
      "kl_scope", "apo_zero_unpaired")
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { desirable_weight = -1 }), "desirable_weight")
    H.assert_mentions(H.error_of(pref.train_kto, policy, { unpaired }, { stpes = 3 }), "stpes", "steps")
    H.assert_mentions(H.error_of(pref.KTOTrainer, tiny(1), {}), "no adapter", "ref_model")
    H.assert_mentions(H.error_of(pref.RewardTrainer, lora_rm(13), { beta = 0.1 }), "ft.pref.RewardTrainer", "beta")
    H.assert_mentions(H.error_of(pref.train_reward, lora_rm(13), { pairs_batch }, { center_rewards_coeficient = 1 }),
      "center_rewards_coeficient", "center_rewards_coefficient")
    H.assert_mentions(H.error_of(pref.RewardTrainer, lora_rm(13), { center_rewards_coefficient = -1 }),
      "center_rewards_coefficient")
    local frozen = pref.RewardModel(tiny(14))
    for _, p in frozen:named_parameters() do p.requires_grad = false end
    H.assert_mentions(H.error_of(pref.RewardTrainer, frozen, {}), "no trainable parameter", "modules_to_save")
    pairs_batch.margin = ft.zeros({ 3 })
    H.assert_mentions(H.error_of(rt.step, rt, pairs_batch), "batch.margin", "[4]")
    H.assert_mentions(H.error_of(rt.step, rt, { chosen_ids = ft.zeros({ 2, 3 }) }), "chosen_ids", "int64")
  end)

  it("names both vocabulary sizes of a KTO ref_model of another vocabulary", function()
    local policy = policy_and_base(15)
    local other = tiny(1, { vocab_size = 24 })
    H.assert_mentions(H.error_of(pref.KTOTrainer, policy, { ref_model = other }), "ft.pref.KTOTrainer", "ref_model",
      "24", "16", "vocabulary")
    H.assert_mentions(H.error_of(pref.train_kto, policy, { kto_batch(4, 104) }, { ref_model = policy }), "ref_model",
      "policy itself")
  end)
end)
