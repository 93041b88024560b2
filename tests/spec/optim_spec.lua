-- ft.optim against torch.optim: tests/gen/optim.py records a 2-layer MLP's
-- parameters, fixed gradients for three steps and torch's parameters after each step.
local ft = require "ft"
local H = require "helpers"

local F = ft.load(H.fixture("optim.h5"))
local NAMES = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
local TOL = 1e-6

-- Same settings as OPTIMIZERS in the generator; groups name parameters by NAMES.
local CASES = {
  sgd = {"SGD", nil, {lr = 0.1}},
  sgd_momentum = {"SGD", nil, {lr = 0.1, momentum = 0.9}},
  sgd_nesterov = {"SGD", nil, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01}},
  sgd_dampening = {"SGD", nil, {lr = 0.05, momentum = 0.9, dampening = 0.5, weight_decay = 1e-3}},
  adam = {"Adam", nil, {lr = 1e-2}},
  adam_wd = {"Adam", nil, {lr = 1e-2, betas = {0.8, 0.99}, eps = 1e-6, weight_decay = 0.1}},
  adam_amsgrad = {"Adam", nil, {lr = 1e-2, amsgrad = true}},
  adamw = {"AdamW", nil, {lr = 1e-2, weight_decay = 0.1}},
  adamw_amsgrad = {"AdamW", nil, {lr = 1e-2, weight_decay = 0.05, amsgrad = true}},
  groups_sgd = {"SGD", {
    {names = {"fc1.weight", "fc1.bias"}, lr = 0.1, weight_decay = 0.01},
    {names = {"fc2.weight", "fc2.bias"}, lr = 0.02},
  }, {lr = 0.05, momentum = 0.9}},
  groups_adamw = {"AdamW", {
    {names = {"fc1.weight", "fc2.weight"}, weight_decay = 0.1},
    {names = {"fc1.bias", "fc2.bias"}, weight_decay = 0.0, lr = 5e-3},
  }, {lr = 1e-2}},
}

local function copy(t)
  return H.from_flat(H.flat(t), t:shape())
end

-- Fresh leaf parameters holding the fixture's initial values, by name.
local function make_params(source)
  local ps = {}
  for _, n in ipairs(NAMES) do
    local p = copy(source and source[n] or F["init." .. n])
    p.requires_grad = true
    ps[n] = p
  end
  return ps
end

local function set_grads(ps, k)
  for _, n in ipairs(NAMES) do
    local g = F["grads." .. k .. "." .. n]
    ps[n].grad = g and copy(g) or nil
  end
end

local function make_optimizer(case, ps)
  local kind, groups, defaults = table.unpack(CASES[case])
  if not groups then
    local list = {}
    for i, n in ipairs(NAMES) do list[i] = ps[n] end
    return ft.optim[kind](list, defaults)
  end
  local gs = {}
  for g, spec in ipairs(groups) do
    local group = {params = {}}
    for k, v in pairs(spec) do
      if k ~= "names" then group[k] = v end
    end
    for i, n in ipairs(spec.names) do group.params[i] = ps[n] end
    gs[g] = group
  end
  return ft.optim[kind](gs, defaults)
end

-- Every element within tol (absolute) of the expected tensor.
local function assert_near(actual, expected, tol, what)
  local a, ashape = H.flat(actual)
  local e, eshape = H.flat(expected)
  assert(H.shape_str(ashape) == H.shape_str(eshape),
         string.format("%s: shape %s, expected %s", what, H.shape_str(ashape), H.shape_str(eshape)))
  for i = 1, #e do
    local d = math.abs(a[i] - e[i])
    if not (d <= tol) then
      error(string.format("%s: element %d is %.9g, expected %.9g (diff %.3g > %.3g)",
                          what, i, a[i], e[i], d, tol), 2)
    end
  end
end

local function assert_same(a, b, what)
  assert_near(a, b, 0, what)
end

local function tmpfile()
  local path = os.tmpname()
  os.remove(path)
  return path .. ".h5"
end

describe("ft.optim steps match torch.optim", function()
  local order = {}
  for case in pairs(CASES) do order[#order + 1] = case end
  table.sort(order)
  for _, case in ipairs(order) do
    it(case .. " over three steps (step 2 has no grad for fc2.bias)", function()
      local ps = make_params()
      local opt = make_optimizer(case, ps)
      for k = 1, 3 do
        set_grads(ps, k)
        opt:step()
        for _, n in ipairs(NAMES) do
          assert_near(ps[n], F[case .. ".step" .. k .. "." .. n], TOL,
                      case .. " step " .. k .. " " .. n)
        end
      end
    end)
  end

  it("reads each group's lr at every step (schedules write group.lr)", function()
    local ps = make_params()
    local opt = make_optimizer("sgd_momentum", ps)
    opt.param_groups[1].lr = 0
    set_grads(ps, 1)
    opt:step()
    for _, n in ipairs(NAMES) do assert_same(ps[n], F["init." .. n], n .. " with lr 0") end
  end)

  it("runs a closure before the update and returns its result", function()
    local ps = make_params()
    local opt = make_optimizer("sgd", ps)
    local called = false
    local loss = opt:step(function()
      called = true
      set_grads(ps, 1)
      return 42
    end)
    assert.is_true(called)
    assert.are.equal(42, loss)
    for _, n in ipairs(NAMES) do assert_near(ps[n], F["sgd.step1." .. n], TOL, n) end
  end)
end)

describe("zero_grad", function()
  it("drops the gradients (set_to_none, as torch)", function()
    local ps = make_params()
    local opt = make_optimizer("adam", ps)
    set_grads(ps, 1)
    opt:step()
    opt:zero_grad()
    for _, n in ipairs(NAMES) do assert.is_nil(ps[n].grad, n) end
    -- a step without gradients changes nothing
    local before = {}
    for _, n in ipairs(NAMES) do before[n] = copy(ps[n]) end
    opt:step()
    for _, n in ipairs(NAMES) do assert_same(ps[n], before[n], n) end
  end)

  it("fills the gradients with zeros when set_to_none is false", function()
    local ps = make_params()
    local opt = make_optimizer("sgd", ps)
    set_grads(ps, 1)
    opt:zero_grad(false)
    for _, n in ipairs(NAMES) do
      assert.is_not_nil(ps[n].grad, n)
      assert.are.equal(0, H.max_abs(ps[n].grad))
    end
    opt:zero_grad({set_to_none = true})
    for _, n in ipairs(NAMES) do assert.is_nil(ps[n].grad, n) end
  end)
end)

describe("clip_grad_norm", function()
  -- as CLIPS in the generator: gradient set, max_norm, norm_type
  local CLIPS = {
    l2 = {1, 1.0, 2}, l1 = {1, 2.0, 1}, inf = {1, 0.5, math.huge}, p3 = {1, 0.5, 3},
    unclipped = {1, 100.0, 2}, l2_partial = {2, 1.0, 2},
  }
  for case, c in pairs(CLIPS) do
    it("matches torch.nn.utils.clip_grad_norm_ (" .. case .. ")", function()
      local ps = make_params()
      set_grads(ps, c[1])
      local list = {}
      for i, n in ipairs(NAMES) do list[i] = ps[n] end
      local total = ft.optim.clip_grad_norm(list, c[2], c[3])
      local expected = H.flat(F["clip." .. case .. ".total"])[1]
      assert(math.abs(total - expected) <= 1e-6 * expected,
             string.format("total norm %.9g, expected %.9g", total, expected))
      for _, n in ipairs(NAMES) do
        local want = F["clip." .. case .. "." .. n]
        if want then
          assert_near(ps[n].grad, want, TOL, case .. " grad " .. n)
        else
          assert.is_nil(ps[n].grad, n)
        end
      end
    end)
  end

  it("accepts \"inf\", a single tensor, and an empty list", function()
    local ps = make_params()
    set_grads(ps, 1)
    local list = {}
    for i, n in ipairs(NAMES) do list[i] = ps[n] end
    local total = ft.optim.clip_grad_norm(list, 1e9, "inf")
    local expected = H.flat(F["clip.inf.total"])[1]
    assert(math.abs(total - expected) <= 1e-6 * expected)
    local one = ft.optim.clip_grad_norm(ps["fc2.bias"], 1e9)
    local sq = 0
    for _, v in ipairs(H.flat(ps["fc2.bias"].grad)) do sq = sq + v * v end
    assert(math.abs(one - math.sqrt(sq)) <= 1e-6 * one)
    assert.are.equal(0, ft.optim.clip_grad_norm({}, 1.0))
  end)
end)

describe("optimizer state_dict", function()
  local function run_split(case, split_after, through_file)
    -- uninterrupted
    local ps = make_params()
    local opt = make_optimizer(case, ps)
    for k = 1, 3 do
      set_grads(ps, k)
      opt:step()
    end
    -- interrupted after `split_after` steps, resumed in a fresh optimizer
    local qs = make_params()
    local first = make_optimizer(case, qs)
    for k = 1, split_after do
      set_grads(qs, k)
      first:step()
    end
    local sd = first:state_dict()
    if through_file then
      local path = tmpfile()
      ft.save(path, sd)
      sd = ft.load(path)
      os.remove(path)
    end
    local rs = make_params(qs)
    local second = make_optimizer(case, rs)
    second:load_state_dict(sd)
    for k = split_after + 1, 3 do
      set_grads(rs, k)
      second:step()
    end
    for _, n in ipairs(NAMES) do
      assert_same(rs[n], ps[n], case .. " resumed " .. n)
      assert_near(rs[n], F[case .. ".step3." .. n], TOL, case .. " resumed vs torch " .. n)
    end
  end

  for _, case in ipairs({"sgd_nesterov", "sgd_dampening", "adam_wd", "adamw_amsgrad", "groups_adamw",
                         "groups_sgd"}) do
    it("round-trips through ft.save/ft.load: " .. case .. " resumes as if uninterrupted", function()
      run_split(case, 1, true)
    end)
  end

  it("round-trips in memory, after the step without fc2.bias grad", function()
    run_split("adam", 2, false)
  end)

  it("names its entries state.<i>.<buffer> and param_groups.<g>.<option>", function()
    local ps = make_params()
    local opt = make_optimizer("groups_adamw", ps)
    set_grads(ps, 1)
    opt:step()
    local sd = opt:state_dict()
    for i = 1, 4 do
      assert.is_true(H.is_tensor(sd["state." .. i .. ".exp_avg"]), "state." .. i .. ".exp_avg")
      assert.is_true(H.is_tensor(sd["state." .. i .. ".exp_avg_sq"]))
      assert.are.equal(1, ft.optim.tensor_to_number(sd["state." .. i .. ".step"]))
    end
    -- parameter 2 is fc2.weight (group 1 lists fc1.weight, fc2.weight)
    assert.are.same({3, 6}, sd["state.2.exp_avg"]:shape())
    assert.are.equal(5e-3, ft.optim.tensor_to_number(sd["param_groups.2.lr"]))
    assert.are.equal(0.999, ft.optim.tensor_to_number(sd["param_groups.1.betas.2"]))
    assert.are.equal(2, ft.optim.tensor_to_number(sd["param_groups.1.num_params"]))
  end)

  it("restores group options exactly, including a scheduled lr", function()
    local ps = make_params()
    local opt = make_optimizer("adam_wd", ps)
    opt.param_groups[1].lr = 0.0073412345678912345
    local path = tmpfile()
    ft.save(path, opt:state_dict())
    local other = make_optimizer("adam", make_params())
    other:load_state_dict(ft.load(path))
    os.remove(path)
    local g = other.param_groups[1]
    assert.are.equal(0.0073412345678912345, g.lr)
    assert.are.same({0.8, 0.99}, g.betas)
    assert.are.equal(1e-6, g.eps)
    assert.are.equal(0.1, g.weight_decay)
    assert.are.equal(false, g.amsgrad)
  end)

  it("stores numbers exactly as float32 tensors", function()
    for _, x in ipairs({0, 1, -3, 0.1, 1e-3, 1 / 3, 2 ^ 30 + 1, -7.25e-5, 123456789, 0.9999}) do
      local t = ft.optim.number_to_tensor(x)
      assert.are.equal("float32", t:dtype())
      assert.are.equal(x, ft.optim.tensor_to_number(t))
    end
  end)

  it("does not share buffers with the state dict it loaded", function()
    local ps = make_params()
    local opt = make_optimizer("sgd_momentum", ps)
    set_grads(ps, 1)
    opt:step()
    local sd = opt:state_dict()
    local other = make_optimizer("sgd_momentum", make_params(ps))
    other:load_state_dict(sd)
    local before = copy(sd["state.1.momentum_buffer"])
    local q = other.param_groups[1].params
    for i, n in ipairs(NAMES) do
      local g = F["grads.2." .. n]
      q[i].grad = g and copy(g) or nil
    end
    other:step()
    assert_same(sd["state.1.momentum_buffer"], before, "the loaded state dict's buffer")
  end)
end)

describe("errors", function()
  local function params_list()
    local ps = make_params()
    local list = {}
    for i, n in ipairs(NAMES) do list[i] = ps[n] end
    return list, ps
  end

  it("rejects a non-tensor in params, naming its position", function()
    local list = params_list()
    list[3] = "fc2.weight"
    local msg = H.error_of(ft.optim.SGD, list, {lr = 0.1})
    H.assert_mentions(msg, "ft.optim.SGD", "params[3]", "not a tensor", "string")
    local _, ps = params_list()
    msg = H.error_of(ft.optim.AdamW, {{params = {ps["fc1.weight"]}}, {params = {ps["fc1.bias"], 7}}})
    H.assert_mentions(msg, "param_groups[2].params[2]", "not a tensor", "number")
    msg = H.error_of(ft.optim.clip_grad_norm, {ps["fc1.weight"], {}}, 1.0)
    H.assert_mentions(msg, "params[2]", "not a tensor")
  end)

  it("rejects bad lists and options", function()
    local list, ps = params_list()
    H.assert_mentions(H.error_of(ft.optim.Adam, {}), "empty parameter list")
    H.assert_mentions(H.error_of(ft.optim.Adam, ps["fc1.weight"]), "array of tensors")
    H.assert_mentions(H.error_of(ft.optim.SGD, list), "lr is required")
    H.assert_mentions(H.error_of(ft.optim.SGD, list, {lr = 0.1, weight_deacy = 0.1}),
                      "unknown option 'weight_deacy'")
    H.assert_mentions(H.error_of(ft.optim.SGD, list, {lr = 0.1, momentum = 0.9, nesterov = true,
                                                      dampening = 0.1}), "nesterov")
    H.assert_mentions(H.error_of(ft.optim.Adam, list, {betas = {0.9, 1.5}}), "beta", "index 2")
    H.assert_mentions(H.error_of(ft.optim.SGD, list, {lr = -1}), "lr")
    H.assert_mentions(H.error_of(ft.optim.SGD, {list[1], list[2], list[1]}, {lr = 0.1}),
                      "params[3]", "more than once")
    local nonleaf = list[1] * 2
    H.assert_mentions(H.error_of(ft.optim.SGD, {nonleaf}, {lr = 0.1}), "params[1]", "leaf")
  end)

  it("load_state_dict names a shape mismatch and changes nothing", function()
    local ps = make_params()
    local opt = make_optimizer("adam", ps)
    set_grads(ps, 1)
    opt:step()
    local sd = opt:state_dict()
    -- same parameter count, but the first one transposed: [6,4] -> [4,6]
    local other_ps = {ft.zeros(4, 6), ft.zeros(6), ft.zeros(3, 6), ft.zeros(3)}
    for _, p in ipairs(other_ps) do p.requires_grad = true end
    local other = ft.optim.Adam(other_ps, {lr = 0.5})
    local msg = H.error_of(other.load_state_dict, other, sd)
    H.assert_mentions(msg, "load_state_dict", "state.1.exp_a", "[6,4]", "[4,6]", "parameter 1")
    assert.are.equal(0.5, other.param_groups[1].lr)
    assert.is_nil(next(other.state))
  end)

  it("load_state_dict names a mismatch in the number of parameters or groups", function()
    local ps = make_params()
    local opt = make_optimizer("sgd_momentum", ps)
    set_grads(ps, 1)
    opt:step()
    local sd = opt:state_dict()
    local fewer = ft.optim.SGD({ft.zeros(6, 4), ft.zeros(6), ft.zeros(3, 6)}, {lr = 0.1, momentum = 0.9})
    H.assert_mentions(H.error_of(fewer.load_state_dict, fewer, sd), "param group 1", "4 parameters",
                      "3 in the optimizer")
    local two_groups = make_optimizer("groups_sgd", make_params())
    H.assert_mentions(H.error_of(two_groups.load_state_dict, two_groups, sd), "1 param groups",
                      "optimizer has 2")
  end)
end)

-- ---- learning-rate schedules ------------------------------------------------------------

local S = ft.optim.lr_scheduler
local GROUP_LRS = {0.1, 0.01}

local function sched_optimizer(kind)
  local groups = {}
  for g, lr in ipairs(GROUP_LRS) do
    local p = ft.zeros(2)
    p.requires_grad = true
    groups[g] = {params = {p}, lr = lr}
  end
  if kind == "adam" then return ft.optim.Adam(groups) end
  return ft.optim.SGD(groups, {lr = 0.1, momentum = 0.9})
end

local function momentum_of(group)
  return group.betas and group.betas[1] or group.momentum
end

-- Rows of the fixture's [steps + 1, groups] table against the schedule's values.
local function check_schedule(case, opt, sched, with_momentum)
  local want = F["sched." .. case .. ".lr"]:totable()
  local want_m = with_momentum and F["sched." .. case .. ".momentum"]:totable()
  for row = 1, #want do
    if row > 1 then sched:step() end
    local got = sched:get_last_lr()
    for g = 1, #GROUP_LRS do
      local e = want[row][g]
      assert(math.abs(got[g] - e) <= 1e-6 * math.abs(e) + 1e-9,
             string.format("%s step %d group %d: lr %.9g, expected %.9g", case, row - 1, g, got[g], e))
      assert.are.equal(got[g], opt.param_groups[g].lr)
      if want_m then
        local m = momentum_of(opt.param_groups[g])
        assert(math.abs(m - want_m[row][g]) <= 1e-6,
               string.format("%s step %d group %d: momentum %.9g, expected %.9g", case, row - 1, g,
                             m, want_m[row][g]))
      end
    end
  end
end

describe("lr_scheduler values match torch", function()
  it("StepLR", function()
    local opt = sched_optimizer()
    check_schedule("steplr", opt, S.StepLR(opt, {step_size = 3, gamma = 0.5}))
  end)

  it("CosineAnnealingLR (past T_max)", function()
    local opt = sched_optimizer()
    check_schedule("cosine", opt, S.CosineAnnealingLR(opt, {T_max = 10, eta_min = 1e-3}))
  end)

  it("LinearWarmup alone (torch's LinearLR)", function()
    local opt = sched_optimizer()
    check_schedule("linear", opt, S.LinearWarmup(opt, {warmup_steps = 5, start_factor = 0.25}))
  end)

  it("LinearWarmup then cosine (torch's SequentialLR)", function()
    local opt = sched_optimizer()
    local cosine = S.CosineAnnealingLR(opt, {T_max = 15, eta_min = 1e-4})
    check_schedule("warmup_cosine", opt,
                   S.LinearWarmup(opt, {warmup_steps = 5, start_factor = 0.25, after = cosine}))
  end)

  it("OneCycleLR with SGD momentum", function()
    local opt = sched_optimizer()
    check_schedule("onecycle", opt, S.OneCycleLR(opt, {max_lr = {0.1, 0.05}, total_steps = 20}), true)
  end)

  it("OneCycleLR three-phase linear with Adam's beta1", function()
    local opt = sched_optimizer("adam")
    check_schedule("onecycle3_adam", opt,
                   S.OneCycleLR(opt, {max_lr = 0.1, total_steps = 20, three_phase = true,
                                      anneal_strategy = "linear", pct_start = 0.25}), true)
  end)

  it("LinearWarmup's default start_factor is 1 / warmup_steps", function()
    local opt = sched_optimizer()
    S.LinearWarmup(opt, {warmup_steps = 4})
    assert(math.abs(opt.param_groups[1].lr - 0.1 / 4) < 1e-15)
  end)

  it("OneCycleLR refuses to step past total_steps", function()
    local opt = sched_optimizer()
    local sched = S.OneCycleLR(opt, {max_lr = 0.1, total_steps = 3})
    for _ = 1, 3 do sched:step() end
    H.assert_mentions(H.error_of(sched.step, sched), "total_steps")
  end)

  it("rejects bad options", function()
    local opt = sched_optimizer()
    H.assert_mentions(H.error_of(S.StepLR, opt, {}), "step_size")
    H.assert_mentions(H.error_of(S.StepLR, opt, {step_size = 2, gama = 0.1}), "unknown option 'gama'")
    H.assert_mentions(H.error_of(S.CosineAnnealingLR, {}, {T_max = 3}), "optimizer")
  end)
end)

describe("lr_scheduler state_dict", function()
  local function resume(make, split, total)
    local opt = sched_optimizer()
    local sched = make(opt)
    local straight = {}
    for s = 1, total do
      sched:step()
      straight[s] = sched:get_last_lr()
    end

    local opt1 = sched_optimizer()
    local sched1 = make(opt1)
    for _ = 1, split do sched1:step() end
    local path, opath = tmpfile(), tmpfile()
    ft.save(path, sched1:state_dict())
    ft.save(opath, opt1:state_dict())

    local opt2 = sched_optimizer()
    local sched2 = make(opt2)
    opt2:load_state_dict(ft.load(opath))
    sched2:load_state_dict(ft.load(path))
    os.remove(path)
    os.remove(opath)
    assert.are.same(straight[split], sched2:get_last_lr())
    for s = split + 1, total do
      sched2:step()
      assert.are.same(straight[s], sched2:get_last_lr(), "step " .. s)
      assert.are.same(straight[s], {opt2.param_groups[1].lr, opt2.param_groups[2].lr})
    end
  end

  it("resumes StepLR and CosineAnnealingLR exactly", function()
    resume(function(o) return S.StepLR(o, {step_size = 3, gamma = 0.5}) end, 7, 15)
    resume(function(o) return S.CosineAnnealingLR(o, {T_max = 10, eta_min = 1e-3}) end, 7, 15)
  end)

  it("resumes LinearWarmup with its following schedule, and OneCycleLR", function()
    local function warm(o)
      return S.LinearWarmup(o, {warmup_steps = 5, after = S.CosineAnnealingLR(o, {T_max = 10})})
    end
    resume(warm, 3, 15)
    resume(warm, 8, 15)
    resume(function(o) return S.OneCycleLR(o, {max_lr = 0.2, total_steps = 20}) end, 6, 19)
  end)
end)
