-- ft.optim.ZeroRedundancy in a world of one process: it is the inner optimizer, bit for bit,
-- schedules and constraints included, and its state dicts are the plain optimizer's. (Several
-- ranks: tests/dist/zero.lua, run under mpirun by tests/sh/dist_zero.sh.)
local ft = require "ft"
local H = require "helpers"

local STEPS = 10

local function tiny_gpt(seed)
  ft.manual_seed(seed)
  return ft.models.new("gpt-s", {n_layer = 1, n_embd = 16, n_head = 2, n_positions = 16, vocab_size = 32,
    attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0})
end

ft.manual_seed(3)
local BATCHES = {}
for s = 1, 2 * STEPS do BATCHES[s] = ft.randint(1, 32, {2, 9}) end

local function loss_of(model, s)
  local ids = BATCHES[s]
  local out = model(ids:narrow(2, 1, 8))
  local logits = out.logits or out
  return ft.nn.functional.cross_entropy(logits:reshape(-1, 32), ids:narrow(2, 2, 8):reshape(-1))
end

-- Two param groups: matrices with weight decay, the rest (biases, norms) without, at a lower lr.
local function groups(model)
  local decay, other = {}, {}
  for _, p in ipairs(model:parameters()) do
    if p:dim() >= 2 then decay[#decay + 1] = p else other[#other + 1] = p end
  end
  return {{params = decay, weight_decay = 0.1}, {params = other, weight_decay = 0, lr = 5e-3}}
end

-- Trains model with opt (and sched, stepped after every step) over batches from..to.
local function train(model, opt, sched, from, to)
  for s = from, to do
    opt:zero_grad()
    loss_of(model, s):backward()
    opt:step()
    if sched then sched:step() end
  end
end

local function assert_same_params(a, b, what)
  local theirs = {}
  for name, p in b:named_parameters() do theirs[name] = p end
  for name, p in a:named_parameters() do H.assert_bits_equal(p, theirs[name], what .. ": " .. name) end
end

-- Every key of a in b and back, each tensor bit for bit.
local function assert_same_state_dict(a, b, what)
  for k, t in pairs(a) do
    assert(b[k] ~= nil, what .. ": " .. k .. " missing")
    H.assert_bits_equal(t, b[k], what .. ": " .. k)
  end
  for k in pairs(b) do assert(a[k] ~= nil, what .. ": extra key " .. k) end
end

local CASES = {
  {"AdamW with a cosine schedule", ft.optim.AdamW, {lr = 1e-2, weight_decay = 0.05}, function(opt)
    return ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = STEPS, eta_min = 1e-4})
  end},
  {"Adam (amsgrad) with warmup then StepLR", ft.optim.Adam, {lr = 1e-2, amsgrad = true}, function(opt)
    local after = ft.optim.lr_scheduler.StepLR(opt, {step_size = 2, gamma = 0.5})
    return ft.optim.lr_scheduler.LinearWarmup(opt, {warmup_steps = 3, after = after})
  end},
  {"SGD with Nesterov momentum and a one-cycle schedule (momentum cycled)", ft.optim.SGD,
    {lr = 0.1, momentum = 0.9, nesterov = true}, function(opt)
    return ft.optim.lr_scheduler.OneCycleLR(opt, {max_lr = 0.2, total_steps = STEPS + 1})
  end},
}

describe("ft.optim.ZeroRedundancy in a world of one", function()
  for _, case in ipairs(CASES) do
    local what, class, options, schedule = case[1], case[2], case[3], case[4]
    it("is the plain optimizer bit for bit: " .. what, function()
      local a, b = tiny_gpt(5), tiny_gpt(5)
      local plain = class(groups(a), options)
      local zero = ft.optim.ZeroRedundancy(groups(b), class, options)
      local sa, sb = schedule(plain), schedule(zero)
      train(a, plain, sa, 1, STEPS)
      train(b, zero, sb, 1, STEPS)
      assert_same_params(b, a, what)
      assert.are.same(sa:get_last_lr(), sb:get_last_lr())
      assert.are.equal(plain.param_groups[1].lr, zero.param_groups[1].lr)
      assert_same_state_dict(zero:state_dict(), plain:state_dict(), what .. ": state dict")
      zero:step() -- the inner optimizer takes the outer groups' options at every step
      assert.are.equal(zero.param_groups[2].lr, zero.optim.param_groups[2].lr)
    end)
  end

  it("owns every parameter; the inner optimizer holds the state", function()
    local model = tiny_gpt(1)
    local zero = ft.optim.ZeroRedundancy(model:parameters(), ft.optim.AdamW, {lr = 1e-3})
    local owners = zero:partition()
    assert.are.equal(#model:parameters(), #owners)
    for _, r in ipairs(owners) do assert.are.equal(0, r) end
    train(model, zero, nil, 1, 1)
    for _, p in ipairs(model:parameters()) do
      assert.is_true(ft.is_tensor(zero.optim.state[p].exp_avg))
    end
    assert.are.equal(zero.param_groups[1].params[1], zero.optim.param_groups[1].params[1])
    assert.matches("^ft.optim.ZeroRedundancy%(AdamW%) %(rank 0 of 1: %d+ of %d+ parameters", tostring(zero))
  end)

  it("wraps a built optimizer, its state and its schedule", function()
    local a, b = tiny_gpt(2), tiny_gpt(2)
    local plain = ft.optim.AdamW(groups(a), {lr = 1e-2})
    local built = ft.optim.AdamW(groups(b), {lr = 1e-2})
    local sa = ft.optim.lr_scheduler.CosineAnnealingLR(plain, {T_max = 2 * STEPS})
    local sb = ft.optim.lr_scheduler.CosineAnnealingLR(built, {T_max = 2 * STEPS})
    train(a, plain, sa, 1, 3)
    train(b, built, sb, 1, 3)
    local zero = ft.optim.ZeroRedundancy(built)
    train(a, plain, sa, 4, STEPS)
    train(b, zero, sb, 4, STEPS) -- the schedule made on the built optimizer drives the wrapper
    assert_same_params(b, a, "wrapped after 3 steps")
    assert.are.equal(1e-2, zero.defaults.lr)
  end)

  it("passes step(closure)'s result on and honours constraints", function()
    local a, b = tiny_gpt(4), tiny_gpt(4)
    local function clamp(p) p:copy_(p:clamp(-0.05, 0.05)) end
    ft.optim.constrain(a.transformer.wte.weight, clamp)
    ft.optim.constrain(b.transformer.wte.weight, clamp)
    local plain = ft.optim.AdamW(a:parameters(), {lr = 5e-2})
    local zero = ft.optim.ZeroRedundancy(b:parameters(), ft.optim.AdamW, {lr = 5e-2})
    for s = 1, 3 do
      plain:step(function() plain:zero_grad(); local l = loss_of(a, s); l:backward(); return l end)
      local loss = zero:step(function() zero:zero_grad(); local l = loss_of(b, s); l:backward(); return l end)
      assert.is_true(ft.is_tensor(loss))
    end
    assert_same_params(b, a, "with a constraint")
    local f32 = string.unpack("f", string.pack("f", 0.05))
    assert.are.equal(f32, b.transformer.wte.weight:abs():max():item()) -- the clamp bit
    ft.optim.constrain(a.transformer.wte.weight, nil)
    ft.optim.constrain(b.transformer.wte.weight, nil)
  end)

  it("zero_grad drops or zeroes every gradient", function()
    local model = tiny_gpt(1)
    local zero = ft.optim.ZeroRedundancy(model:parameters(), ft.optim.SGD, {lr = 0.1})
    loss_of(model, 1):backward()
    zero:zero_grad({set_to_none = false})
    for _, p in ipairs(model:parameters()) do assert.are.equal(0, p.grad:abs():max():item()) end
    zero:zero_grad()
    for _, p in ipairs(model:parameters()) do assert.is_nil(p.grad) end
  end)

  it("moves checkpoints to and from the plain optimizer", function()
    local a, b, c = tiny_gpt(6), tiny_gpt(6), tiny_gpt(6)
    local zero = ft.optim.ZeroRedundancy(groups(a), ft.optim.AdamW, {lr = 1e-2})
    local plain = ft.optim.AdamW(groups(b), {lr = 1e-2})
    train(a, zero, nil, 1, 4)
    train(b, plain, nil, 1, 4)
    local sd = zero:state_dict()
    assert_same_state_dict(sd, plain:state_dict(), "after 4 steps")
    -- ZeRO's state into a fresh plain optimizer, and the plain one's into a fresh ZeRO
    local restored_plain = ft.optim.AdamW(groups(c), {lr = 1})
    restored_plain:load_state_dict(sd)
    local d = tiny_gpt(6)
    local restored_zero = ft.optim.ZeroRedundancy(groups(d), ft.optim.AdamW, {lr = 1})
    restored_zero:load_state_dict(plain:state_dict())
    assert.are.equal(1e-2, restored_zero.param_groups[1].lr)
    local trained = {}
    for name, p in a:named_parameters() do trained[name] = p end
    for _, m in ipairs({c, d}) do
      for name, p in m:named_parameters() do ft.no_grad(function() p:copy_(trained[name]) end) end
    end
    train(a, zero, nil, 5, STEPS)
    train(c, restored_plain, nil, 5, STEPS)
    train(d, restored_zero, nil, 5, STEPS)
    assert_same_params(c, a, "a plain optimizer resumed from ZeroRedundancy's state")
    assert_same_params(d, a, "ZeroRedundancy resumed from a plain optimizer's state")
  end)

  it("adds param groups", function()
    local a, b = tiny_gpt(8), tiny_gpt(8)
    local ga, gb = groups(a), groups(b)
    local plain = ft.optim.Adam({ga[1]}, {lr = 1e-2})
    local zero = ft.optim.ZeroRedundancy({gb[1]}, ft.optim.Adam, {lr = 1e-2})
    plain:add_param_group(ga[2])
    zero:add_param_group(gb[2])
    assert.are.equal(2, #zero.param_groups)
    assert.are.equal(#a:parameters(), #zero:partition())
    train(a, plain, nil, 1, 3)
    train(b, zero, nil, 1, 3)
    assert_same_params(b, a, "after add_param_group")
    H.assert_mentions(H.error_of(function() zero:add_param_group({params = {b.transformer.wte.weight}}) end),
      "ft.optim.ZeroRedundancy:add_param_group", "more than once")
  end)

  it("names what is wrong", function()
    local ps = tiny_gpt(1):parameters()
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(ps, ft.nn.Linear, {lr = 1}) end),
      "ft.optim.ZeroRedundancy: optimizer must be ft.optim.SGD, ft.optim.Adam or ft.optim.AdamW", "got a table")
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(ps, "AdamW", {lr = 1}) end),
      "optimizer must be", "got 'AdamW'")
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(ps) end), "optimizer must be", "got nil")
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(ps, ft.optim.AdamW, {lrr = 1}) end),
      "ft.optim.ZeroRedundancy: ft.optim.AdamW: unknown option 'lrr'", "did you mean 'lr'?")
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(ps, ft.optim.SGD, {}) end), "lr is required")
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy({}, ft.optim.SGD, {lr = 1}) end),
      "empty parameter list")
    local built = ft.optim.SGD(ps, {lr = 1})
    H.assert_mentions(H.error_of(function() ft.optim.ZeroRedundancy(built, ft.optim.SGD) end),
      "given a built optimizer, it takes no optimizer class or options")
    local zero = ft.optim.ZeroRedundancy(ps, ft.optim.AdamWClass, {lr = 1e-3})
    zero.param_groups[1].lr = -1
    H.assert_mentions(H.error_of(function() zero:step() end), "ft.optim.ZeroRedundancy(AdamW): invalid lr -1")
    zero.param_groups[1].lr = 1e-3
    H.assert_mentions(H.error_of(function() zero:step(5) end), "closure")
    H.assert_mentions(H.error_of(function() zero:zero_grad({none = true}) end), "unknown option 'none'")
    H.assert_mentions(H.error_of(function() zero:load_state_dict(5) end), "expected a table, got number")
    local other = ft.optim.AdamW({ps[1], ps[2]}, {lr = 1e-3})
    H.assert_mentions(H.error_of(function() zero:load_state_dict(other:state_dict()) end),
      "ft.optim.ZeroRedundancy:load_state_dict", "param group 1 has 2 parameters in the state dict but "
        .. #ps .. " in the optimizer")
    local sd = zero:state_dict()
    sd["state.1.exp_avg"] = ft.zeros(3)
    H.assert_mentions(H.error_of(function() zero:load_state_dict(sd) end), "state.1.exp_avg has shape [3]")
  end)
end)
