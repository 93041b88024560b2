-- Ops and layers on bfloat16 / float16 / float64 operands: they compute in float32. Forward
-- values and gradients against torch computing with the rounded values upcast
-- (tests/fixtures/half/ops.safetensors from tests/gen/half.py); the gradient of a half weight
-- is torch's, rounded once to the weight's dtype. The half-weight linear is also checked
-- against the float32-weight one within the bound the dtype's unit roundoff gives, and over
-- several blocks of its tiled kernel against sums Lua computes exactly.
local ft = require "ft"
local H = require "helpers"

local F = ft.nn.functional
local ops = ft.safetensors.load(H.fixture("half/ops.safetensors"))

local HALVES = { bf16 = "bfloat16", f16 = "float16" }
local UNIT = { bf16 = 2 ^ -8, f16 = 2 ^ -11 }   -- unit roundoff: half the spacing relative to the value
local RTOL = 1e-5

local function case(name) return H.case_of(ops, name) end

-- A half leaf of dtype dt holding the (exactly representable) values of t.
local function half_leaf(t, dt)
  local h = ft.tensor(t, { dtype = dt })
  h.requires_grad = true
  return h
end

-- A half gradient equal to torch's rounded one, except where the fixture marks the rounding
-- ambiguous (the exact value within float32 error of a midpoint): there either neighbour.
local function assert_half_grad(actual, expected, amb, dt, what)
  assert.are.equal(dt, actual:dtype(), what .. ": dtype")
  assert.same(expected:shape(), actual:shape(), what .. ": shape")
  local a, e, m = H.flat(actual:to("float32")), H.flat(expected), H.flat(amb)
  local key = dt == "bfloat16" and "bf16" or "f16"
  for i = 1, #e do
    local ok = a[i] == e[i] or (m[i] == 1 and math.abs(a[i] - e[i]) <= 4 * UNIT[key] * math.abs(e[i]))
    if not ok then error(("%s: element %d is %.9g, torch's rounding %.9g"):format(what, i, a[i], e[i]), 2) end
  end
end

local function max_abs_diff(a, b)
  local fa, fb = H.flat(a), H.flat(b)
  local m = 0
  for i = 1, #fa do m = math.max(m, math.abs(fa[i] - fb[i])) end
  return m
end

for key, dt in pairs(HALVES) do
  describe(dt .. " weights", function()
    it("linear: forward, input, weight and bias gradients as torch with the rounded weight", function()
      local c = case("linear_" .. key)
      local x = c.x:clone():requires_grad_()
      local w = half_leaf(c.w, dt)
      local b = c.b:clone():requires_grad_()
      local y = F.linear(x, w, b)
      assert.are.equal("float32", y:dtype())
      H.assert_close(y, c.y, RTOL, "y")
      y:backward(c.gy)
      H.assert_close(x.grad, c.dx, RTOL, "dx")
      H.assert_close(b.grad, c.db, RTOL, "db")
      assert_half_grad(w.grad, c.dw, c.dw_amb, dt, "dw")
      -- only the weight, only the input
      local w2 = half_leaf(c.w, dt)
      F.linear(c.x, w2):backward(c.gy)
      assert_half_grad(w2.grad, c.dw, c.dw_amb, dt, "dw alone")
      local x2 = c.x:clone():requires_grad_()
      F.linear(x2, ft.tensor(c.w, { dtype = dt })):backward(c.gy)
      H.assert_close(x2.grad, c.dx, RTOL, "dx alone")
      -- a transposed view of a half weight (strided rows)
      local wt = ft.tensor(c.w:t(), { dtype = dt }):t()
      assert.is_false(wt:is_contiguous())
      H.assert_close(F.linear(c.x, wt, c.b), c.y, RTOL, "y through a strided weight")
      -- a half input and bias are promoted
      local xh = ft.tensor(c.x, { dtype = "float64" })
      H.assert_close(F.linear(xh, ft.tensor(c.w, { dtype = dt }), ft.tensor(c.b, { dtype = "float64" })), c.y, RTOL,
        "y with float64 input and bias")
    end)

    it("linear: differs from the float32 weight's output within the unit-roundoff bound, and visibly", function()
      local c = case("linear_" .. key)
      local yh = F.linear(c.x, ft.tensor(c.w32, { dtype = dt }), c.b)   -- the float32 weight rounded here
      local y32 = F.linear(c.x, c.w32, c.b)
      -- |x (w_h - w)^T| <= u * |x| |w|^T elementwise; both outputs also carry float32 sums
      -- (at most in * 2^-24 * |x| |w|^T each)
      local n_in = c.x:size(2)
      local bound = H.flat(c.abs_xw)
      local d_ref, d_own = H.flat(yh), H.flat(y32)
      local ref = H.flat(c.y32)
      local widest = 0
      for i = 1, #bound do
        local allowed = (UNIT[key] + 2 * n_in * 2 ^ -24) * bound[i]
        local against_torch = math.abs(d_ref[i] - ref[i])
        assert(against_torch <= allowed, ("element %d: |y_half - y_float32| = %.3g, bound %.3g"):format(i, against_torch, allowed))
        widest = math.max(widest, math.abs(d_ref[i] - d_own[i]) / bound[i])
      end
      assert(widest > 0, "the half weight's output is bit-identical to the float32 one: no rounding seen")
      assert(widest <= UNIT[key] + 2 * n_in * 2 ^ -24)
      assert(max_abs_diff(yh, y32) > 0)
    end)

    it("matmul with a half operand on either side: forward and gradients", function()
      local c = case("matmul_" .. key)
      local a = c.a:clone():requires_grad_()
      local b = half_leaf(c.b, dt)
      local y = a:matmul(b)
      assert.are.equal("float32", y:dtype())
      H.assert_close(y, c.y, RTOL, "a @ b")
      y:backward(c.gy)
      H.assert_close(a.grad, c.da, RTOL, "da")
      assert_half_grad(b.grad, c.db, c.db_amb, dt, "db")
      local l = half_leaf(c.l, dt)
      local r = c.r:clone():requires_grad_()
      local yl = ft.matmul(l, r)
      H.assert_close(yl, c.yl, RTOL, "l @ r")
      yl:backward(c.gl)
      assert_half_grad(l.grad, c.dl, c.dl_amb, dt, "dl")
      H.assert_close(r.grad, c.dr, RTOL, "dr")
    end)

    it("embedding: gathers rows widened exactly; its gradient sums in float32 into the half table", function()
      local c = case("embedding_" .. key)
      local w = half_leaf(c.w, dt)
      local y = F.embedding(H.plus1(c.idx), w)
      assert.are.equal("float32", y:dtype())
      H.assert_close(y, c.y, 0, "rows")
      y:backward(c.gy)
      assert_half_grad(w.grad, c.dw, c.dw_amb, dt, "dw")
    end)

    it("conv2d: forward and gradients as torch with the rounded weight", function()
      local c = case("conv2d_" .. key)
      local x = c.x:clone():requires_grad_()
      local w = half_leaf(c.w, dt)
      local b = c.b:clone():requires_grad_()
      local y = F.conv2d(x, w, b, { stride = 2, padding = 1 })
      assert.are.equal("float32", y:dtype())
      H.assert_close(y, c.y, RTOL, "y")
      y:backward(c.gy)
      H.assert_close(x.grad, c.dx, RTOL, "dx")
      H.assert_close(b.grad, c.db, RTOL, "db")
      assert_half_grad(w.grad, c.dw, c.dw_amb, dt, "dw")
    end)

    it("layer_norm and rms_norm with half weight and bias", function()
      local c = case("norm_" .. key)
      local x = c.x:clone():requires_grad_()
      local w, b = half_leaf(c.w, dt), half_leaf(c.b, dt)
      local y = F.layer_norm(x, 8, w, b, { eps = 1e-5 })
      assert.are.equal("float32", y:dtype())
      H.assert_close(y, c.ln_y, RTOL, "layer_norm")
      y:backward(c.gy)
      H.assert_close(x.grad, c.ln_dx, RTOL, "layer_norm dx")
      assert_half_grad(w.grad, c.ln_dw, c.ln_dw_amb, dt, "layer_norm dw")
      assert_half_grad(b.grad, c.ln_db, c.ln_db_amb, dt, "layer_norm db")
      local x2 = c.x:clone():requires_grad_()
      local w2 = half_leaf(c.w, dt)
      local y2 = F.rms_norm(x2, 8, w2, { eps = 1e-6 })
      H.assert_close(y2, c.rms_y, RTOL, "rms_norm")
      y2:backward(c.gy)
      H.assert_close(x2.grad, c.rms_dx, RTOL, "rms_norm dx")
      assert_half_grad(w2.grad, c.rms_dw, c.rms_dw_amb, dt, "rms_norm dw")
    end)

    -- values k/8 and k/16: products and their sums are exact in float32, bfloat16 and float16.
    -- The widening buffer holds 2^18 floats: [600, 1001] is cut into 3 blocks of 200 whole rows,
    -- [400, 2050] into 2 x 3 blocks of 200 rows by 684 (or 682) columns.
    for _, size in ipairs({ { 1001, 600 }, { 2050, 400 } }) do
      it(("linear over blocks of a [%d, %d] weight matches sums computed exactly"):format(size[2], size[1]), function()
        local n_in, n_out, m = size[1], size[2], 3
        local function wv(o, j) return ((o * 7 + j * 13) % 17 - 8) / 8 end
        local function xv(r, j) return ((r * 5 + j * 3) % 11 - 5) / 16 end
        local function gv(r, o) return ((r * 3 + o) % 7 - 3) / 8 end
        local wt, xt, gt = {}, {}, {}
        for o = 1, n_out do
          local row = {}
          for j = 1, n_in do row[j] = wv(o, j) end
          wt[o] = row
        end
        for r = 1, m do
          local row, grow = {}, {}
          for j = 1, n_in do row[j] = xv(r, j) end
          for o = 1, n_out do grow[o] = gv(r, o) end
          xt[r], gt[r] = row, grow
        end
        local w = ft.tensor(wt, { dtype = dt, requires_grad = true })
        local x = ft.tensor(xt, { requires_grad = true })
        local y = F.linear(x, w)
        y:backward(ft.tensor(gt))
        local yv, dxv, dwv = y:totable(), x.grad:totable(), w.grad:to("float32"):totable()
        for r = 1, m do
          for o = 1, n_out do
            local s = 0
            for j = 1, n_in do s = s + xt[r][j] * wt[o][j] end
            assert(yv[r][o] == s, ("y[%d][%d] = %.9g, exactly %.9g"):format(r, o, yv[r][o], s))
          end
          for j = 1, n_in do
            local s = 0
            for o = 1, n_out do s = s + gt[r][o] * wt[o][j] end
            assert(dxv[r][j] == s, ("dx[%d][%d] = %.9g, exactly %.9g"):format(r, j, dxv[r][j], s))
          end
        end
        local cols = {}
        for j = 1, 8 do cols[#cols + 1] = j end
        for j = 9, n_in, 29 do cols[#cols + 1] = j end
        for j = 680, 690 do cols[#cols + 1] = j end   -- across a column block's edge
        cols[#cols + 1] = n_in
        for o = 1, n_out do
          for _, j in ipairs(cols) do
            local s = 0
            for r = 1, m do s = s + gt[r][o] * xt[r][j] end
            assert(dwv[o][j] == s, ("dw[%d][%d] = %.9g, exactly %.9g"):format(o, j, dwv[o][j], s))
          end
        end
      end)
    end
  end)
end

describe("a large half weight", function()
  it("is never widened whole: linear forward and backward hold a block of it in float32 at most", function()
    local w = ft.zeros(4096, 1024, { dtype = "bfloat16" })   -- 8 MiB; 16 MiB in float32
    local x = ft.randn(8, 1024, { requires_grad = true })
    local g = ft.randn(8, 4096)
    collectgarbage()
    ft.reset_peak_bytes()
    local before = ft.live_bytes()
    F.linear(x, w):backward(g)
    assert(ft.peak_bytes() - before < 3 * 2 ^ 20, ("%.1f MiB more at the peak"):format((ft.peak_bytes() - before) / 2 ^ 20))
    w.requires_grad = true                                   -- its gradient: bfloat16, built a block at a time
    collectgarbage()
    ft.reset_peak_bytes()
    before = ft.live_bytes()
    F.linear(x, w):backward(g)
    assert.are.equal("bfloat16", w.grad:dtype())
    assert(ft.peak_bytes() - before < 8 * 2 ^ 20 + 3 * 2 ^ 20, ("%.1f MiB more at the peak"):format((ft.peak_bytes() - before) / 2 ^ 20))
  end)
end)

describe("a frozen bfloat16 base with float32 adapters", function()
  it("trains the adapters with AdamW, the base untouched and without a gradient", function()
    ft.manual_seed(3)
    local w = (ft.randn(6, 10) * 0.3):to("bfloat16")     -- the frozen base
    local before = w:clone()
    local a = (ft.randn(2, 10) * 0.1):requires_grad_()   -- LoRA's A [r, in] and B [out, r]
    local b = ft.zeros(6, 2, { requires_grad = true })
    local x, target = ft.randn(16, 10), ft.randn(16, 6)
    local opt = ft.optim.AdamW({ a, b }, { lr = 0.05 })
    local first, last
    for step = 1, 60 do
      opt:zero_grad()
      local y = F.linear(x, w) + F.linear(F.linear(x, a), b)
      local loss = F.mse_loss(y, target)
      loss:backward()
      if step == 1 then first = loss:item() end
      last = loss:item()
      opt:step()
    end
    assert(last < 0.8 * first, ("loss %.4f -> %.4f"):format(first, last))
    assert.is_nil(w.grad)
    assert.are.equal("bfloat16", w:dtype())
    assert.are.same(before:totable(), w:totable())
  end)
end)

describe("op promotion", function()
  for _, key in ipairs({ "bf16", "f16", "f64" }) do
    local dt = HALVES[key] or "float64"
    it("elementwise ops, reductions, softmax and comparisons on " .. dt .. " compute in float32", function()
      local c = case("promote_" .. key)
      local a = ft.tensor(key == "f64" and c.a64 or c.a, { dtype = dt })
      assert.are.equal(dt, a:dtype())
      local results = {
        add = a + c.b, mul_scalar = a * 1.5, exp = a:exp(), sigmoid = a:sigmoid(), sum = a:sum(),
        mean1 = a:mean(2), max1 = (a:max(2)), softmax = a:softmax(2), log_softmax = ft.log_softmax(a, 1),
        gt = a:gt(c.b), pow2 = a ^ 2,
      }
      for name, r in pairs(results) do
        assert.are.equal("float32", r:dtype(), name)
        H.assert_close(r, c[name], RTOL, name)
      end
      H.assert_close(c.b + a, c.add, RTOL, "float32 + " .. dt)
      local _, idx = a:max(2)
      assert.are.equal("int64", idx:dtype())
    end)

    it("gradients flow back into a " .. dt .. " leaf in its dtype", function()
      local c = case("promote_" .. key)
      local a = ft.tensor(key == "f64" and c.a64 or c.a, { dtype = dt, requires_grad = true })
      a:exp():backward(c.gy)
      assert.are.equal(dt, a.grad:dtype())
      local a2 = ft.tensor(key == "f64" and c.a64 or c.a, { dtype = dt, requires_grad = true })
      local prod = a2 * c.b
      prod:backward(c.gy)
      if key == "f64" then
        H.assert_close(a.grad:to("float32"), c.d_exp, RTOL, "d exp")
        H.assert_close(a2.grad:to("float32"), c.d_mul, RTOL, "d mul")
      else
        assert_half_grad(a.grad, c.d_exp, c.d_exp_amb, dt, "d exp")
        assert_half_grad(a2.grad, c.d_mul, c.d_mul_amb, dt, "d mul")
      end
    end)
  end

  it("mixed dtypes compute in float32", function()
    local x = ft.tensor({ 1.5, -2, 3.25 }, { dtype = "bfloat16" })
    local y = ft.tensor({ 0.5, 4, -1 }, { dtype = "float16" })
    local z = ft.tensor({ 2, 3, 4 }, { dtype = "float64" })
    local i = ft.tensor({ 1, 2, 3 }, { dtype = "int64" })
    for name, r in pairs({ ["bf16 + f16"] = x + y, ["f16 * f64"] = y * z, ["int64 - bf16"] = i - x,
      ["bf16 / int64"] = x / i, ["where"] = ft.where(ft.tensor({ 1, 0, 1 }), x, z) }) do
      assert.are.equal("float32", r:dtype(), name)
    end
    assert.are.same({ 2, 2, 2.25 }, (x + y):totable())
    assert.are.same({ 1, 12, -4 }, (y * z):totable())
    assert.are.same({ -0.5, 4, -0.25 }, (i - x):totable())
    assert.are.same({ 1.5, 3, 3.25 }, ft.where(ft.tensor({ 1, 0, 1 }), x, z):totable())
    -- in-place arithmetic on a half tensor computes in float32 and rounds back into it
    local h = ft.tensor({ 1, 2, 3 }, { dtype = "bfloat16" })
    h:add_(ft.tensor({ 2 ^ -9, 0.5, 0.25 }))   -- 1 + 2^-9 rounds back to 1
    h:mul_(2)
    assert.are.equal("bfloat16", h:dtype())
    assert.are.same({ 2, 5, 6.5 }, h:totable())
  end)

  it("dropout, pooling, attention and losses take half inputs and return float32", function()
    local x = ft.tensor({ { { { 1, 2 }, { 3, 4 } } } }, { dtype = "bfloat16" })
    assert.are.same({ { { { 4 } } } }, F.max_pool2d(x, 2):totable())
    assert.are.equal("float32", F.avg_pool2d(x, 2):dtype())
    assert.are.equal("float32", F.dropout(x, 0.5, false):dtype())
    local logits = ft.tensor({ { 2, 0, -1 } }, { dtype = "float16" })
    local loss = F.cross_entropy(logits, ft.tensor({ 1 }, { dtype = "int64" }))
    assert.are.equal("float32", loss:dtype())
    local want = -(2 - math.log(math.exp(2) + 1 + math.exp(-1)))
    assert(math.abs(loss:item() - want) < 1e-6)
    local q = ft.ones(1, 1, 2, 4, { dtype = "bfloat16" })
    assert.are.equal("float32", F.scaled_dot_product_attention(q, q, q):dtype())
  end)

  it("batch_norm reads and updates running statistics held in bfloat16", function()
    local x = ft.tensor({ { 1, 2 }, { 3, 6 } })
    local rm, rv = ft.zeros(2, { dtype = "bfloat16" }), ft.ones(2, { dtype = "bfloat16" })
    local y = F.batch_norm(x, rm, rv, { training = true, momentum = 0.5 })
    assert.are.equal("float32", y:dtype())
    assert.are.equal("bfloat16", rm:dtype())
    assert.are.same({ 1, 2 }, rm:totable())          -- 0.5 * batch mean {2, 4}
    assert.are.same({ 1.5, 4.5 }, rv:totable())      -- 0.5 * 1 + 0.5 * unbiased var {2, 8}
  end)
end)
