-- Preference tuning (ft.pref) against PyTorch: every loss, loss type and option combination of
-- tests/fixtures/pref/cases.json (tests/gen/pref.py computes them with torch from the published
-- formulas, as TRL's trainers write them) in value, gradient and metrics; log-probs of tokens
-- against torch's log_softmax and gather on the GPT-2 golden logits; central differences of
-- the DPO and ORPO losses; a LoRA policy whose reference is its base; the reward model; and
-- the errors for bad inputs.
local ft = require "ft"
local H = require "helpers"
local pref = ft.pref
local peft = ft.peft

local RTOL = 1e-5
local cases = ft.json.read(H.fixture("pref/cases.json"))
local tensors = ft.safetensors.load(H.fixture("pref/cases.safetensors"))
local golden = ft.safetensors.load(H.fixture("pref/logps.safetensors"))

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function assert_number(got, want, what)
  assert(type(got) == "number", ("%s: expected a number, got %s"):format(what, type(got)))
  local tol = RTOL * math.max(1, math.abs(want))
  if not (math.abs(got - want) <= tol) then
    error(("%s: %.9g, expected %.9g (allowed %.3g)"):format(what, got, want, tol), 2)
  end
end

-- Every expected metric close, and no metric the reference does not have (nil where TRL logs none).
local function assert_metrics(got, want, what)
  for _, k in ipairs(sorted_keys(want)) do assert_number(got[k], want[k], what .. " metric " .. k) end
  for _, k in ipairs(sorted_keys(got)) do
    assert(want[k] ~= nil, ("%s: unexpected metric %s = %s"):format(what, k, tostring(got[k])))
  end
end

-- The options of a case: its scalars, and fresh leaves of its tensors (grads: requiring grad).
local function case_options(name, c)
  local opts, leaves = {}, {}
  for k, v in pairs(c.options) do opts[k] = v end
  local wants_grad = {}
  for _, g in ipairs(c.grads or {}) do wants_grad[g] = true end
  for _, k in ipairs(c.inputs or {}) do
    local t = ft.tensor(tensors[name .. "." .. k])
    if wants_grad[k] then t.requires_grad = true end
    opts[k], leaves[k] = t, t
  end
  return opts, leaves
end

-- ---- the torch references ----------------------------------------------------------------

describe("ft.pref losses against torch", function()
  for _, name in ipairs(sorted_keys(cases)) do
    local c = cases[name]
    if c.fn ~= "group_advantages" then
      it(name, function()
        local opts, leaves = case_options(name, c)
        local loss, m = pref[c.fn](opts)
        assert.same({}, loss:shape())
        assert_number(loss:item(), c.loss, name .. " loss")
        assert_metrics(m, c.metrics, name)
        loss:backward()
        for _, g in ipairs(c.grads) do
          assert(leaves[g].grad, name .. ": no gradient for " .. g)
          H.assert_close(leaves[g].grad, tensors[name .. ".grad." .. g], RTOL, name .. " d loss / d " .. g)
        end
      end)
    end
  end
end)

describe("ft.pref.group_advantages", function()
  for _, scale in ipairs({ "group", "batch", "none" }) do
    it("scale = " .. scale .. " as TRL", function()
      local name = "advantages_" .. scale
      local c = cases[name]
      local adv, stats = pref.group_advantages(tensors[name .. ".rewards"], c.G, { scale = scale })
      H.assert_close(adv, tensors[name .. ".advantages"], RTOL, name)
      assert_metrics(stats, c.stats, name)
      assert.is_false(adv.requires_grad)
    end)
  end

  it("takes true / false for group / none, and a Lua array", function()
    local r = tensors["advantages_group.rewards"]
    local list = H.flat(r)
    H.assert_close(pref.group_advantages(list, 4, { scale = true }), tensors["advantages_group.advantages"], RTOL,
      "scale = true")
    H.assert_close(pref.group_advantages(r, 4, { scale = false }), tensors["advantages_none.advantages"], RTOL,
      "scale = false")
    H.assert_close(pref.group_advantages(r, 4), tensors["advantages_group.advantages"], RTOL, "default")
  end)
end)

-- ---- central differences ---------------------------------------------------------------------

-- d loss / d x[i] by central differences in float32, summed in Lua; h keeps log-probs below 0.
local function numeric_grad(name, input)
  local c = cases[name]
  local base = H.flat(tensors[name .. "." .. input])
  local shape = tensors[name .. "." .. input]:shape()
  local out = {}
  for i = 1, #base do
    local h = math.min(1e-2, math.abs(base[i]) / 4)
    local function at(delta)
      local opts = case_options(name, c)
      local v = { table.unpack(base) }
      v[i] = v[i] + delta
      opts[input] = H.from_flat(v, shape)
      return ft.no_grad(function() return pref[c.fn](opts):item() end)
    end
    out[i] = (at(h) - at(-h)) / (2 * h)
  end
  return H.from_flat(out, shape)
end

describe("ft.pref gradients by central differences", function()
  -- (orpo_near_zero is left to the torch reference: near log p = 0 the curvature is too high
  -- for float32 differences; the stable functions are checked in double precision below)
  for _, name in ipairs({ "dpo_sigmoid_b0p3_ls0p3", "dpo_robust_b0p5_ls0p4", "dpo_ipo_b0p5_ls0p0",
    "dpo_sigmoid_at_reference", "dpo_hinge_b0p5_ls0p0", "orpo_b0p1", "orpo_b0p5",
    "simpo_b2p0_g0p5_ls0p2_a0p0" }) do
    it(name, function()
      local c = cases[name]
      local opts, leaves = case_options(name, c)
      pref[c.fn](opts):backward()
      for _, g in ipairs(c.grads) do
        H.assert_close(leaves[g].grad, numeric_grad(name, g), 2e-3, name .. " d loss / d " .. g)
      end
    end)
  end
end)

describe("ft.pref.stable against double precision", function()
  local stable = require "ft.pref.stable"

  -- value and derivative of f at each x, both in double precision
  local function check_fn(fn, xs, value, deriv, what)
    local x = ft.tensor(xs, { requires_grad = true })
    local y = fn(x)
    y:sum():backward()
    local got, grad = H.flat(y), H.flat(x.grad)
    for i, v in ipairs(xs) do
      local want, dwant = value(v), deriv(v)
      local tol = 2e-6 * math.max(1e-30, math.abs(want)) + 1e-37
      assert(math.abs(got[i] - want) <= tol, ("%s(%g) = %.9g, expected %.9g"):format(what, v, got[i], want))
      local dtol = 2e-6 * math.abs(dwant) + 1e-37
      assert(math.abs(grad[i] - dwant) <= dtol, ("%s'(%g) = %.9g, expected %.9g"):format(what, v, grad[i], dwant))
    end
  end

  -- log(1 + u) and log(1 - e^x) in double, by series where they cancel
  local function log1p(u)
    if math.abs(u) < 1e-5 then return u - u * u / 2 + u * u * u / 3 end
    return math.log(1 + u)
  end
  local function expm1(x)
    if math.abs(x) < 1e-5 then return x + x * x / 2 + x * x * x / 6 end
    return math.exp(x) - 1
  end

  it("logsigmoid", function()
    check_fn(stable.logsigmoid, { -100, -20, -3, -1e-3, 0, 1e-6, 0.5, 4, 17, 30, 80 },
      function(x) return math.min(x, 0) - log1p(math.exp(-math.abs(x))) end,
      function(x) return 1 / (1 + math.exp(x)) end, "logsigmoid")
  end)

  it("log1p", function()
    check_fn(stable.log1p, { -0.9, -0.3, -1e-3, -1e-5, -1e-8, 0, 1e-9, 1e-6, 5e-4, 0.2, 3, 1e6 },
      log1p, function(u) return 1 / (1 + u) end, "log1p")
  end)

  it("log1mexp", function()
    check_fn(stable.log1mexp, { -80, -12, -3, -0.7, -0.5001, -0.5, -0.4999, -0.1, -1e-3, -1e-5, -1e-7 },
      function(x) if x < -0.7 then return log1p(-math.exp(x)) end return math.log(-expm1(x)) end,
      function(x) return math.exp(x) / expm1(x) end, "log1mexp")
  end)
end)

-- ---- log-probs of tokens ---------------------------------------------------------------------

describe("ft.pref.logps", function()
  local ids = H.plus1(golden.input_ids)
  local mask = golden.mask

  it("is torch's log_softmax and gather with HF's shift, and its gradient", function()
    local logits = ft.tensor(ft.safetensors.load(H.fixture("golden/hf_gpt2/reference.safetensors")).logits2)
    logits.requires_grad = true
    local lp, n = pref.logps(function() return logits end, ids, mask)
    H.assert_close(lp, golden.logps, RTOL, "logps")
    H.assert_close(n, golden.counts, 0, "counts")
    assert.equal("float32", n:dtype())
    local weighted = (lp * golden.weights):sum()
    weighted:backward()
    H.assert_close(logits.grad, golden.grad_logits, RTOL, "d logps / d logits")
    -- a table with .logits, an int64 mask: the same numbers
    local lp2 = pref.logps(function() return { logits = logits } end, ids, mask:long())
    H.assert_close(lp2, golden.logps, RTOL, "logps from {logits =}")
  end)

  it("token_logps gives every token's log-prob, at a temperature too", function()
    local logits = ft.safetensors.load(H.fixture("golden/hf_gpt2/reference.safetensors")).logits2
    local model = function() return logits end
    H.assert_close(pref.token_logps(model, ids), golden.token_logps, RTOL, "token_logps")
    H.assert_close(pref.token_logps(model, ids, { temperature = 0.7 }), golden.token_logps_t07, RTOL,
      "token_logps at temperature 0.7")
  end)

  it("of the GPT-2 golden model matches torch on HF's logits", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    local lp, n = pref.logps(model, ids, mask)
    assert.is_true(lp.requires_grad)
    -- the model's logits agree with transformers' to 1e-4 each: a sum over 17 tokens to ~2e-3
    H.assert_close(lp, golden.logps, 2e-5, "logps of the model")
    H.assert_close(n, golden.counts, 0, "counts")
  end)

  it("keeps no [B, T, V] copy of the logits", function()
    ft.manual_seed(5)
    local B, T, V = 4, 64, 1000
    local logits = ft.randn(B, T, V, { requires_grad = true })
    local tok = ft.randint(1, V, { B, T })
    local m = ft.ones(B, T)
    local before = ft.live_bytes()
    ft.reset_peak_bytes()
    local lp = pref.logps(function() return logits end, tok, m)
    local peak = ft.peak_bytes() - before
    local one = B * T * V * 4
    assert(peak < one / 10, ("logps peaked %d bytes above the logits' %d"):format(peak, one))
    lp:sum():backward()
    assert.same({ B, T, V }, logits.grad:shape())
  end)
end)

-- ---- the reference of a LoRA policy ------------------------------------------------------------

describe("a LoRA policy's reference", function()
  local ids = H.plus1(golden.input_ids)
  local mask = golden.mask

  local function identical(a, b, what)
    local fa, fb = H.flat(a), H.flat(b)
    assert.equal(#fb, #fa, what)
    for i = 1, #fa do
      if fa[i] ~= fb[i] then error(("%s: element %d is %.9g, expected %.9g"):format(what, i, fa[i], fb[i]), 2) end
    end
  end

  it("is the base model's log-probs exactly, with the adapters disabled", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    local base = ft.no_grad(pref.logps, model, ids, mask)
    local name = peft.lora(model, { target = { "c_attn", "c_proj" }, r = 4, alpha = 8 })
    model:train()
    -- fresh: B = 0, the policy is its reference
    identical(ft.no_grad(pref.logps, model, ids, mask), base, "fresh LoRA policy")
    identical((pref.reference_logps(model, ids, mask)), base, "reference of a fresh policy")
    -- after a step the policy moves, its reference does not
    for pname, p in model:named_parameters() do
      if pname:find("lora_B", 1, true) then ft.no_grad(function() p:copy_(ft.randn(p:shape()) * 0.05) end) end
    end
    local moved = ft.no_grad(pref.logps, model, ids, mask)
    assert(H.max_abs(moved - base) > 1e-3, "the adapter changes the log-probs")
    local ref, n = pref.reference_logps(model, ids, mask)
    identical(ref, base, "reference after a step")
    H.assert_close(n, golden.counts, 0, "counts")
    assert.is_false(ref.requires_grad)
    -- the adapters and the training mode are back
    assert.same({ name }, peft.active_adapters(model))
    assert.is_true(model.training)
    identical(ft.no_grad(pref.logps, model, ids, mask), moved, "policy after the reference pass")
    -- the same through with_reference, and from a separate reference model
    identical(pref.with_reference(model, pref.logps, model, ids, mask), base, "with_reference")
    local frozen = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    identical((pref.reference_logps(model, ids, mask, { reference_model = frozen })), base, "reference_model")
  end)

  it("refuses a model without adapters and one with merged adapters", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    H.assert_mentions(H.error_of(pref.reference_logps, model, ids, mask), "ft.pref.with_reference", "no adapter")
    peft.lora(model, { target = { "c_attn" }, r = 2 })
    peft.merge(model)
    H.assert_mentions(H.error_of(pref.reference_logps, model, ids, mask), "merged", "default")
  end)

  it("restores the adapters when the function fails", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    local name = peft.lora(model, { target = { "c_attn" }, r = 2 })
    H.assert_mentions(H.error_of(pref.with_reference, model, function() error("boom", 0) end), "boom")
    assert.same({ name }, peft.active_adapters(model))
  end)

  it("disable_dropout zeroes every Dropout", function()
    local model = ft.models.new("gpt-s")
    local n = pref.disable_dropout(model)
    assert.equal(3 * 6 + 1, n)
    for _, m in model:named_modules() do
      if m.__name == "Dropout" then assert.equal(0, m.p) end
    end
  end)
end)

-- ---- the reward model ----------------------------------------------------------------------------

describe("ft.pref.RewardModel", function()
  local ids = H.plus1(golden.input_ids)

  it("scores the last real token on the LM's body, HF's keys, and trains", function()
    ft.manual_seed(7)
    local lm = ft.models.from_pretrained(H.fixture("golden/hf_gpt2"))
    local rm = pref.RewardModel(lm)
    assert.equal(lm.transformer, rm.transformer)
    assert.same({ 1, 96 }, rm.score.weight:shape())
    local sd = rm:state_dict()
    assert.is_not_nil(sd["score.weight"])
    assert.is_not_nil(sd["transformer.wte.weight"])
    assert.is_nil(sd["lm_head.weight"])
    -- a right-padded row scores as the row alone (a causal model; the last real token)
    local full = ids:narrow(1, 1, 1):narrow(2, 1, 18)
    local alone = ft.no_grad(function() return rm(full).rewards end)
    local padded = ft.cat({ full, ft.ones(1, 6, { dtype = "int64" }) }, 2)
    local am = ft.cat({ ft.ones(1, 18), ft.zeros(1, 6) }, 2)
    local out = ft.no_grad(function() return rm(padded, { attention_mask = am }) end)
    assert.same({ 1, 1 }, out.logits:shape())
    H.assert_close(out.rewards, alone, 1e-5, "reward of the padded row")
    -- the score is score.weight . hidden state of that token
    local h = ft.no_grad(function() return lm.transformer(full) end)
    local want = (h:select(2, 18) * rm.score.weight):sum()
    H.assert_close(alone, want:reshape(1), 1e-5, "score of the last hidden state")
    -- LoRA on it, the Bradley-Terry loss, gradients to the adapter and the head
    peft.lora(rm, { target = { "c_attn" }, r = 2, modules_to_save = { "score" } })
    local rc = rm(ids, { attention_mask = ft.ones(2, 24) }).rewards
    local rr = rm(ids:narrow(2, 1, 12)).rewards
    local loss = pref.reward_loss{ chosen = rc, rejected = rr }
    loss:backward()
    assert.is_not_nil(rm.score.weight.grad)
    local lora_grads = 0
    for pname, p in rm:named_parameters() do
      if pname:find("lora_", 1, true) and p.grad then lora_grads = lora_grads + 1 end
    end
    assert(lora_grads > 0, "no gradient reached the LoRA parameters")
  end)

  it("refuses what is not a language model and a row without tokens", function()
    H.assert_mentions(H.error_of(pref.RewardModel, ft.nn.Linear(2, 2)), "ft.pref.RewardModel", "base_model_prefix")
    local rm = pref.RewardModel(ft.models.from_pretrained(H.fixture("golden/hf_gpt2")))
    H.assert_mentions(H.error_of(rm, ids, { attention_mask = ft.zeros(2, 24) }), "row 1", "no real token")
    H.assert_mentions(H.error_of(rm, ids, { attention_mask = ft.ones(2, 5) }), "attention_mask", "[2,24]")
    H.assert_mentions(H.error_of(rm, ids, { attenton_mask = ft.ones(2, 24) }), "attenton_mask", "attention_mask")
  end)
end)

-- ---- bad inputs ------------------------------------------------------------------------------------

describe("ft.pref bad inputs", function()
  local pc, pr = ft.tensor({ -10, -20, -5 }), ft.tensor({ -12, -18, -6 })
  local rc, rr = ft.tensor({ -11, -19, -5 }), ft.tensor({ -11, -19, -5 })
  local function dpo(extra)
    local o = { policy_chosen = pc, policy_rejected = pr, ref_chosen = rc, ref_rejected = rr }
    for k, v in pairs(extra or {}) do o[k] = v end
    return function() return pref.dpo_loss(o) end
  end

  it("names an unknown option and the nearest one", function()
    H.assert_mentions(H.error_of(dpo { lable_smoothing = 0.1 }), "ft.pref.dpo_loss", "lable_smoothing",
      "label_smoothing")
    H.assert_mentions(H.error_of(pref.simpo_loss, { policy_chosen = pc, policy_rejected = pr, chosen_tokens = 3,
      rejected_tokens = 3, gama = 1 }), "ft.pref.simpo_loss", "gama", "gamma")
    H.assert_mentions(H.error_of(pref.logps, function() end, ft.ones(1, 3, { dtype = "int64" }), ft.ones(1, 3),
      { attention = 1 }), "ft.pref.logps", "attention")
    H.assert_mentions(H.error_of(pref.group_advantages, { 1, 2 }, 2, { scaled = true }), "scaled", "scale")
  end)

  it("checks beta, label_smoothing and loss_type", function()
    H.assert_mentions(H.error_of(dpo { beta = 0 }), "ft.pref.dpo_loss", "beta", "> 0", "0")
    H.assert_mentions(H.error_of(dpo { beta = -1 }), "beta")
    H.assert_mentions(H.error_of(dpo { label_smoothing = 0.5 }), "label_smoothing", "0.5")
    H.assert_mentions(H.error_of(dpo { label_smoothing = -0.1 }), "label_smoothing")
    H.assert_mentions(H.error_of(dpo { label_smoothing = 0.1, loss_type = "hinge" }), "label_smoothing", "hinge")
    H.assert_mentions(H.error_of(dpo { loss_type = "sigmod" }), "loss_type", "sigmod", "sigmoid")
    H.assert_mentions(H.error_of(pref.orpo_loss, { policy_chosen = pc, policy_rejected = pr, chosen_tokens = 3,
      rejected_tokens = 3, beta = 0 }), "ft.pref.orpo_loss", "beta")
    H.assert_mentions(H.error_of(pref.kto_loss, { policy = pc, reference = rc, labels = { true, false, true },
      kl = 0, beta = -0.1 }), "ft.pref.kto_loss", "beta")
    H.assert_mentions(H.error_of(pref.grpo_loss, { logps_new = ft.zeros(2, 3), advantages = ft.zeros(2),
      mask = ft.ones(2, 3), beta = -1 }), "ft.pref.grpo_loss", "beta")
  end)

  it("names mismatched batch sizes with their shapes", function()
    H.assert_mentions(H.error_of(dpo { policy_rejected = ft.tensor({ -1, -2 }) }), "policy_rejected", "[2]",
      "policy_chosen", "[3]")
    H.assert_mentions(H.error_of(dpo { ref_chosen = ft.zeros(4) }), "ref_chosen", "[4]", "[3]")
    H.assert_mentions(H.error_of(dpo { loss_type = "ipo", chosen_tokens = ft.tensor({ 1, 2 }), rejected_tokens = 3 }),
      "chosen_tokens", "[2]", "[3]")
    H.assert_mentions(H.error_of(pref.kto_loss, { policy = pc, reference = rc, labels = { true }, kl = 0 }),
      "labels", "1", "[3]")
    H.assert_mentions(H.error_of(pref.reward_loss, { chosen = ft.zeros(2), rejected = ft.zeros(3) }), "rejected",
      "[3]", "chosen", "[2]")
    H.assert_mentions(H.error_of(pref.grpo_loss, { logps_new = ft.zeros(2, 3), advantages = ft.zeros(2),
      mask = ft.ones(2, 4), beta = 0 }), "mask", "[2,4]", "[2,3]")
    H.assert_mentions(H.error_of(pref.grpo_loss, { logps_new = ft.zeros(2, 3), advantages = ft.zeros(3),
      mask = ft.ones(2, 3), beta = 0 }), "advantages", "[2]")
  end)

  it("checks tensors, counts, masks and labels", function()
    H.assert_mentions(H.error_of(dpo { policy_chosen = ft.tensor({ 1, 2, 3 }, { dtype = "int64" }) }),
      "policy_chosen", "float tensor", "int64")
    H.assert_mentions(H.error_of(dpo { policy_chosen = 3 }), "policy_chosen", "float tensor")
    H.assert_mentions(H.error_of(dpo { ref_rejected = false }), "ref_rejected")
    H.assert_mentions(H.error_of(dpo { policy_chosen = ft.zeros(3, 2) }), "policy_chosen", "[3,2]")
    H.assert_mentions(H.error_of(dpo { loss_type = "ipo", chosen_tokens = { 3, 0, 2 }, rejected_tokens = 1 }),
      "chosen_tokens[2]", ">= 1", "0")
    H.assert_mentions(H.error_of(dpo { loss_type = "ipo", rejected_tokens = 1 }), "chosen_tokens", "required")
    H.assert_mentions(H.error_of(pref.orpo_loss, { policy_chosen = ft.tensor({ 0.5, -1, -1 }), policy_rejected = pr,
      chosen_tokens = 1, rejected_tokens = 1 }), "log-prob", "> 0")
    H.assert_mentions(H.error_of(pref.kto_loss, { policy = pc, reference = rc, labels = { true, "yes", false },
      kl = 0 }), "labels[2]", "yes")
    H.assert_mentions(H.error_of(pref.kto_loss, { policy = pc, reference = rc, labels = { true, false, true } }),
      "kl", "required")
    H.assert_mentions(H.error_of(pref.kto_loss, { policy = pc, reference = rc, labels = { true, false, true },
      kl = 1, loss_type = "apo_zero_unpaired" }), "kl", "apo_zero_unpaired")
    local ids = ft.ones(2, 4, { dtype = "int64" })
    local model = function() return ft.zeros(2, 4, 5) end
    H.assert_mentions(H.error_of(pref.logps, model, ids, ft.tensor({ { 0, 1, 2, 1 }, { 0, 1, 1, 1 } })), "mask[1][3]",
      "2")
    H.assert_mentions(H.error_of(pref.logps, model, ids, ft.ones(2, 3)), "mask", "[2,3]", "[2,4]")
    H.assert_mentions(H.error_of(pref.logps, model, ft.ones(2, 4), ft.ones(2, 4)), "ids", "int64")
    H.assert_mentions(H.error_of(pref.logps, model, ft.ones(2, 1, { dtype = "int64" }), ft.ones(2, 1)), "ids",
      "at least 2")
    H.assert_mentions(H.error_of(pref.logps, model, ids), "mask", "required")
    H.assert_mentions(H.error_of(pref.logps, function() return ft.zeros(2, 3, 5) end, ids, ft.ones(2, 4)),
      "logits [2, 4, vocab]", "[2,3,5]")
    H.assert_mentions(H.error_of(pref.logps, model, ids * 6, ft.ones(2, 4)), "ids", "6", "1..5")
    H.assert_mentions(H.error_of(pref.token_logps, model, ids, { temperature = 0 }), "temperature")
  end)

  it("checks GRPO's options and group sizes", function()
    local base = { logps_new = ft.zeros(2, 3), advantages = ft.zeros(2), mask = ft.ones(2, 3) }
    local function grpo(extra)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return function() return pref.grpo_loss(o) end
    end
    H.assert_mentions(H.error_of(grpo {}), "logps_ref", "beta")
    H.assert_mentions(H.error_of(grpo { beta = 0, loss_type = "ppo" }), "loss_type", "ppo", "dapo")
    H.assert_mentions(H.error_of(grpo { beta = 0, mask = ft.tensor({ { 1, 0, 3 }, { 1, 1, 1 } }) }), "mask[1][3]")
    H.assert_mentions(H.error_of(grpo { beta = 0, num_items_in_batch = 10, loss_type = "grpo" }),
      "num_items_in_batch", "dapo")
    H.assert_mentions(H.error_of(grpo { beta = 0, max_completion_length = 10 }), "max_completion_length", "dr_grpo")
    H.assert_mentions(H.error_of(grpo { beta = 0, importance_sampling_level = "seq" }), "importance_sampling_level")
    H.assert_mentions(H.error_of(pref.group_advantages, { 1, 2, 3 }, 2), "3 rewards", "G = 2")
    H.assert_mentions(H.error_of(pref.group_advantages, { 1, 2 }, 0), "G")
    H.assert_mentions(H.error_of(pref.group_advantages, { 1, 2 }, 2, { scale = "batchwise" }), "scale", "batchwise")
    -- logps_old defaults to logps_new detached: every ratio 1, nothing clipped
    local new = ft.tensor({ { -1, -2, -3 }, { -0.5, -1, -2 } }, { requires_grad = true })
    local loss, m = pref.grpo_loss{ logps_new = new, advantages = ft.tensor({ 1, -1 }), mask = ft.ones(2, 3),
      beta = 0 }
    assert_number(loss:item(), 0, "loss at ratio 1 with advantages summing to 0")
    assert.equal(0, m.clip_ratio_region_mean)
    assert.is_nil(m.kl)
    loss:backward()
    H.assert_close(new.grad, ft.tensor({ { -1, -1, -1 }, { 1, 1, 1 } }) / 6, RTOL, "d loss / d logps_new")
    -- an int64 mask is the float one
    local m64 = ft.tensor({ { 1, 1, 0 }, { 1, 0, 0 } }, { dtype = "int64" })
    local a = pref.grpo_loss{ logps_new = new, advantages = ft.tensor({ 1, -1 }), mask = m64, beta = 0 }
    local b = pref.grpo_loss{ logps_new = new, advantages = ft.tensor({ 1, -1 }), mask = m64:float(), beta = 0 }
    assert.equal(b:item(), a:item())
  end)
end)
