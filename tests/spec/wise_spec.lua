-- ft.wise: WiSE-FT weight interpolation. Expected values are computed here in Lua doubles
-- from t:totable(), never with the tensor ops under test.
local ft = require "ft"
local H = require "helpers"

local nn = ft.nn

-- Linear -> BatchNorm1d -> Linear: parameters, float buffers and the int64 counter.
local function make_model(seed, batches)
  ft.manual_seed(seed)
  local m = nn.Sequential{nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)}
  m:train()
  ft.no_grad(function()
    for _ = 1, batches do m(ft.randn(5, 3)) end   -- moves the running statistics
  end)
  return m
end

local function snapshot(sd)
  local out = {}
  for k, t in pairs(sd) do out[k] = {values = (H.flat(t)), shape = t:shape(), dtype = t:dtype()} end
  return out
end

-- Every value equal (==), shapes and dtypes too.
local function assert_bit_equal(t, expected, what)
  assert(H.is_tensor(t), what .. ": not a tensor")
  assert.are.equal(expected.dtype, t:dtype(), what .. " dtype")
  assert.are.same(expected.shape, t:shape(), what .. " shape")
  local v = H.flat(t)
  assert.are.equal(#expected.values, #v, what .. " size")
  for i = 1, #v do
    if v[i] ~= expected.values[i] then
      error(("%s: element %d is %.9g, expected exactly %.9g"):format(what, i, v[i], expected.values[i]), 2)
    end
  end
end

local function keys_of(sd)
  local keys = {}
  for k in pairs(sd) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

describe("ft.wise", function()
  local m0, m1, sd0, sd1, s0, s1
  before_each(function()
    m0, m1 = make_model(1, 1), make_model(2, 3)
    sd0, sd1 = m0:state_dict(), m1:state_dict()
    s0, s1 = snapshot(sd0), snapshot(sd1)
  end)

  it("covers parameters and buffers, including the int64 counter", function()
    assert.are.same({"0.bias", "0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean",
      "1.running_var", "1.weight", "2.bias", "2.weight"}, keys_of(ft.wise(sd0, sd1, 0.5)))
    assert.are.equal("int64", sd0["1.num_batches_tracked"]:dtype())
    assert.are.equal(1, sd0["1.num_batches_tracked"]:item())
    assert.are.equal(3, sd1["1.num_batches_tracked"]:item())
  end)

  it("returns bit-exact copies of the endpoints at alpha 0 and 1", function()
    for _, case in ipairs({{0, s0}, {1, s1}}) do
      local out = ft.wise(sd0, sd1, case[1])
      for k, expected in pairs(case[2]) do assert_bit_equal(out[k], expected, ("alpha %d: %s"):format(case[1], k)) end
    end
  end)

  it("returns new tensors that do not share storage with the inputs", function()
    local out = ft.wise(sd0, sd1, 1)
    out["0.weight"]:fill_(123)
    out["1.running_mean"]:fill_(123)
    assert_bit_equal(sd1["0.weight"], s1["0.weight"], "sd1 0.weight after writing to the result")
    assert_bit_equal(sd1["1.running_mean"], s1["1.running_mean"], "sd1 running_mean after writing to the result")
    local half = ft.wise(sd0, sd1, 0.5)
    half["0.bias"]:fill_(7)
    assert_bit_equal(sd0["0.bias"], s0["0.bias"], "sd0 0.bias")
  end)

  it("interpolates every float entry as (1 - alpha) * theta0 + alpha * theta1", function()
    for _, alpha in ipairs({0.5, 0.3, 1.25}) do
      local out = ft.wise(sd0, sd1, alpha)
      for k, a in pairs(s0) do
        if a.dtype == "float32" then
          local b = s1[k]
          local expected = {}
          for i = 1, #a.values do expected[i] = (1 - alpha) * a.values[i] + alpha * b.values[i] end
          H.assert_close(out[k], H.from_flat(expected, a.shape), 1e-6, ("alpha %g: %s"):format(alpha, k))
        end
      end
      -- the running statistics really moved: the check above is not comparing equal inputs
      assert.is_true(math.abs(s0["1.running_var"].values[1] - s1["1.running_var"].values[1]) > 1e-3)
      assert.are.equal(3, out["1.num_batches_tracked"]:item(), "int64 buffers come from theta1")
      assert.are.equal("int64", out["1.num_batches_tracked"]:dtype())
    end
  end)

  it("takes modules as well as state dicts", function()
    local out = ft.wise(m0, m1, 0)
    for k, expected in pairs(s0) do assert_bit_equal(out[k], expected, k) end
    local via_fn = ft.wise.interpolate(sd0, sd1, 1)
    for k, expected in pairs(s1) do assert_bit_equal(via_fn[k], expected, k) end
  end)

  it("names the keys when the key sets differ", function()
    local a, b = {}, {}
    for k, t in pairs(sd0) do a[k] = t end
    for k, t in pairs(sd1) do b[k] = t end
    a["extra.weight"] = ft.zeros(2)
    b["2.bias"] = nil
    local msg = H.error_of(function() return ft.wise(a, b, 0.5) end)
    H.assert_mentions(msg, "ft.wise", "only in sd0", "'2.bias'", "'extra.weight'")
    assert.is_nil(msg:find("'0.weight'", 1, true))
    b["2.bias"], a["extra.weight"] = sd1["2.bias"], nil
    b["head.weight"] = ft.zeros(1)
    H.assert_mentions(H.error_of(function() return ft.wise(a, b, 0.5) end), "only in sd1", "'head.weight'")
  end)

  it("names the key and both shapes when shapes differ", function()
    local b = {}
    for k, t in pairs(sd1) do b[k] = t end
    b["2.weight"] = ft.zeros(3, 4)
    H.assert_mentions(H.error_of(function() return ft.wise(sd0, b, 0.5) end), "'2.weight'", "[2,4]", "[3,4]")
  end)

  it("rejects a bad alpha, keys the state dicts lack, and non-tensor entries", function()
    H.assert_mentions(H.error_of(function() return ft.wise(sd0, sd1, "half") end), "alpha")
    H.assert_mentions(H.error_of(function() return ft.wise(sd0, sd1, 0 / 0) end), "alpha")
    H.assert_mentions(H.error_of(function() return ft.wise(sd0, sd1, 0.5, {keys = {"nope.weight"}}) end),
      "'nope.weight'")
    H.assert_mentions(H.error_of(function() return ft.wise({w = 1}, {w = ft.zeros(1)}, 0.5) end), "sd0['w']")
  end)

  it("interpolates only the selected keys and takes the others from sd1", function()
    local alpha = 0.25
    local function check(out, selected, what)
      for k, a in pairs(s0) do
        if selected[k] and a.dtype == "float32" then
          local expected = {}
          for i = 1, #a.values do expected[i] = (1 - alpha) * a.values[i] + alpha * s1[k].values[i] end
          H.assert_close(out[k], H.from_flat(expected, a.shape), 1e-6, what .. ": " .. k)
        else
          assert_bit_equal(out[k], s1[k], what .. ": " .. k .. " (from sd1)")
        end
      end
    end
    local backbone = {["0.weight"] = true, ["0.bias"] = true, ["1.weight"] = true, ["1.bias"] = true,
      ["1.running_mean"] = true, ["1.running_var"] = true, ["1.num_batches_tracked"] = true}
    check(ft.wise(sd0, sd1, alpha, {exclude = {"^2%."}}), backbone, "exclude")
    check(ft.wise(sd0, sd1, alpha, {exclude = "^2%."}), backbone, "exclude (one pattern)")
    check(ft.wise(sd0, sd1, alpha, {keys = function(k) return not k:match("^2%.") end}), backbone, "predicate")
    check(ft.wise(sd0, sd1, alpha, {keys = {"0.weight", "1.running_var"}}),
      {["0.weight"] = true, ["1.running_var"] = true}, "key list")
    check(ft.wise(sd0, sd1, alpha, {keys = {"0.weight", "1.running_var"}, exclude = {"running"}}),
      {["0.weight"] = true}, "key list minus exclude")
  end)

  describe("sweep", function()
    it("evaluates each interpolation in the model and puts the model's weights back", function()
      local target = make_model(3, 2)
      local original = snapshot(target:state_dict())
      local x = ft.randn(6, 3)
      local seen = {}
      local rows = ft.wise.sweep(sd0, sd1, {0, 0.5, 1}, function(m, alpha)
        assert.are.equal(target, m)
        seen[#seen + 1] = alpha
        local sd = m:state_dict()
        if alpha == 0 then assert_bit_equal(sd["0.weight"], s0["0.weight"], "alpha 0 loaded") end
        if alpha == 1 then assert_bit_equal(sd["1.running_var"], s1["1.running_var"], "alpha 1 loaded") end
        m:eval()
        local out = ft.no_grad(function() return m(x) end)
        return {first = out:totable()[1][1], w = H.flat(sd["0.weight"])[1]}
      end, {model = target})
      assert.are.same({0, 0.5, 1}, seen)
      assert.are.equal(3, #rows)
      for i, alpha in ipairs({0, 0.5, 1}) do
        assert.are.equal(alpha, rows[i].alpha)
        local expected_w = (1 - alpha) * s0["0.weight"].values[1] + alpha * s1["0.weight"].values[1]
        assert.is_true(math.abs(rows[i].w - expected_w) < 1e-6, "row " .. i .. " weight")
        assert.are.equal("number", type(rows[i].first))
      end
      for k, expected in pairs(original) do assert_bit_equal(target:state_dict()[k], expected, "restored " .. k) end
    end)

    it("restores the model's weights when evaluate_fn fails", function()
      local target = make_model(3, 2)
      local original = snapshot(target:state_dict())
      local msg = H.error_of(function()
        ft.wise.sweep(sd0, sd1, {0.5, 1}, function(_, alpha)
          if alpha == 1 then error("evaluation broke") end
          return {}
        end, {model = target})
      end)
      H.assert_mentions(msg, "evaluation broke")
      for k, expected in pairs(original) do assert_bit_equal(target:state_dict()[k], expected, "restored " .. k) end
    end)

    it("passes the state dict without a model, and the subset options through", function()
      local rows = ft.wise.sweep(sd0, sd1, {0.5}, function(sd, alpha)
        assert.are.equal(0.5, alpha)
        assert_bit_equal(sd["2.weight"], s1["2.weight"], "excluded head")
        return 42
      end, {exclude = {"^2%."}})
      assert.are.same({{alpha = 0.5, value = 42}}, rows)
    end)

    it("is safe when sd1 is the model's own live state dict", function()
      -- sd0: a snapshot of the start; then "fine-tune"; sd1 = model:state_dict() aliases the weights.
      local model = make_model(5, 0)
      local sd0 = ft.clone_state_dict(model:state_dict())
      ft.no_grad(function()
        for _, p in ipairs(model:parameters()) do p:add_(ft.randn(p:shape())) end
      end)
      local x = ft.randn(4, 3)
      model:eval()
      local function score(m) return ft.no_grad(function() return m(x):sum():item() end) end
      local s1_score = score(model)
      local tuned = snapshot(model:state_dict())
      local rows = ft.wise.sweep(sd0, model:state_dict(), {0, 0.5, 1}, function(m) return score(m) end,
        {model = model})
      local start = make_model(5, 0)
      start:eval()
      assert.are.equal(score(start), rows[1].value)          -- alpha 0: the start
      assert.are.equal(s1_score, rows[3].value)              -- alpha 1: the tuned model, not the start
      assert.are_not.equal(rows[1].value, rows[3].value)
      assert.are_not.equal(rows[1].value, rows[2].value)
      for k, expected in pairs(tuned) do assert_bit_equal(model:state_dict()[k], expected, "restored " .. k) end
    end)

    it("is safe when sd0 is the model's own live state dict", function()
      local model = make_model(6, 1)
      local sd1 = ft.clone_state_dict(make_model(7, 1):state_dict())
      local s0 = snapshot(model:state_dict())
      local rows = ft.wise.sweep(model:state_dict(), sd1, {1, 0}, function(m)
        return H.flat(m:state_dict()["0.weight"])[1]
      end, {model = model})
      assert.are.equal(H.flat(sd1["0.weight"])[1], rows[1].value)
      assert.are.equal(s0["0.weight"].values[1], rows[2].value)
    end)

    it("refuses misspelt options and bad alphas", function()
      H.assert_mentions(H.error_of(ft.wise.sweep, sd0, sd1, {0.5}, function() return 1 end, {modle = make_model(1, 0)}),
        "ft.wise.sweep: unknown option 'modle'", "did you mean 'model'?")
      H.assert_mentions(H.error_of(ft.wise.sweep, sd0, sd1, {0.5, 0 / 0}, function() return 1 end),
        "ft.wise.sweep: alphas[2] must be a finite number")
      H.assert_mentions(H.error_of(ft.wise, sd0, sd1, 0.5, {exlude = "^2%."}),
        "ft.wise: unknown option 'exlude'", "did you mean 'exclude'?")
      H.assert_mentions(H.error_of(ft.wise.interpolate, sd0, sd1, 0.5, {key = {"0.weight"}}),
        "ft.wise: unknown option 'key'", "did you mean 'keys'?")
    end)
  end)
end)

describe("ft.clone_state_dict", function()
  it("copies every tensor so that later changes to the model do not reach it", function()
    local model = make_model(2, 1)
    local live = model:state_dict()
    local before = snapshot(live)
    local copy = ft.clone_state_dict(live)
    local own = model:clone_state_dict()
    assert.are.same(keys_of(live), keys_of(copy))
    assert.are.same(keys_of(live), keys_of(own))
    ft.no_grad(function()
      for _, p in ipairs(model:parameters()) do p:fill_(7) end
      model:state_dict()["1.running_mean"]:fill_(7)
    end)
    for k, expected in pairs(before) do
      assert_bit_equal(copy[k], expected, "ft.clone_state_dict " .. k)
      assert_bit_equal(own[k], expected, "Module:clone_state_dict " .. k)
      assert.is_false(copy[k].requires_grad)
    end
    assert.are.equal(7, H.flat(live["0.weight"])[1])   -- state_dict() itself is live
  end)

  it("names what is not a state dict", function()
    H.assert_mentions(H.error_of(ft.clone_state_dict, 3), "ft.clone_state_dict: a state dict (table name -> tensor) expected, got number")
    H.assert_mentions(H.error_of(ft.clone_state_dict, {w = 1}), "ft.clone_state_dict: entry 'w' is a number, not a tensor")
  end)
end)
