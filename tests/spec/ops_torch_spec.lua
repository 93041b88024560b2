-- Every differentiable op against PyTorch (tests/gen/op.py -> fixtures/ops.h5).
--
-- For each case the inputs become fresh leaves (requires_grad where the fixture has a
-- grad_<input>), the op runs through the public Lua API, and the forward output and the
-- gradients of sum(out * g) are compared with the reference:
--     max abs error <= 1e-5 * max(1, max abs of the reference).
-- Inputs named "*_T" are passed transposed (x_T:t()): non-contiguous operands.
-- Integer tensors in the fixture are 0-based; H.plus1 makes the 1-based Lua ones.
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional

local RTOL = 1e-5
local cases = H.load_cases("ops.h5")

local function is_output_name(k)
  return k == "out" or k == "g" or k:match("^out_%d+$") or k:match("^g_%d+$")
      or k:match("^grad_") or k == "indices" or k:match("_after$")
end

-- Builds the inputs of a case: leaves[k] are the tensors gradients are taken for,
-- args[k] what the op receives (the transpose for "*_T").
local function inputs_of(c)
  local args, leaves = {}, {}
  for k, v in pairs(c) do
    if not is_output_name(k) then
      local leaf = v:detach()
      if c["grad_" .. k] then leaf.requires_grad = true end
      leaves[k] = leaf
      args[k] = k:match("_T$") and leaf:t() or leaf
    end
  end
  return args, leaves
end

local function compare_output(actual, expected, what)
  if expected:dtype() == "int64" then
    H.assert_equal_ints(actual, H.plus1(expected), what)
  else
    H.assert_close(actual, expected, RTOL, what)
  end
end

-- fn(args) returns the output (a tensor or an array of tensors) and optionally a table
-- of extra results compared with the fixture datasets of the same name.
local registered = {}
local function case(name, fn)
  registered[name] = true
  it(name, function()
    local c = assert(cases[name], "no fixture case " .. name .. " in ops.h5")
    local args, leaves = inputs_of(c)
    local out, extra = fn(args)
    local outs = H.is_tensor(out) and {out} or out
    local suffix = function(k) return #outs == 1 and "" or "_" .. k end
    local loss
    for k, o in ipairs(outs) do
      compare_output(o, assert(c["out" .. suffix(k)], "fixture lacks out" .. suffix(k)),
                     name .. " out" .. suffix(k))
      local g = c["g" .. suffix(k)]
      if g then
        local term = (o * g):sum()
        loss = loss and loss + term or term
      end
    end
    assert.is_nil(c["out_" .. (#outs + 1)], name .. ": the op returned too few outputs")
    for k, v in pairs(extra or {}) do
      compare_output(v, assert(c[k], "fixture lacks " .. k), name .. " " .. k)
    end
    local any_grad = false
    for k in pairs(leaves) do
      if c["grad_" .. k] then any_grad = true end
    end
    if any_grad then
      assert.is_true(loss.requires_grad, name .. ": output does not require grad")
      loss:backward()
      for k, leaf in pairs(leaves) do
        local expected = c["grad_" .. k]
        if expected then
          assert(leaf.grad ~= nil, name .. ": no gradient reached input " .. k)
          H.assert_close(leaf.grad, expected, RTOL, name .. " grad_" .. k)
        end
      end
    end
  end)
end

describe("elementwise binary ops match PyTorch", function()
  case("add_bcast", function(a) return a.a + a.b end)
  case("sub_bcast", function(a) return a.a - a.b end)
  case("mul_bcast", function(a) return a.a * a.b end)
  case("div_bcast", function(a) return a.a / a.b end)
  case("add_T", function(a) return a.a_T + a.b end)
  case("sub_T", function(a) return a.a - a.b_T end)
  case("mul_T", function(a) return a.a_T * a.b end)
  case("div_T", function(a) return a.a / a.b_T end)
  case("mul_T_bcast", function(a) return a.a_T * a.b end)
  case("pow_tensor", function(a) return a.a ^ a.b end)
  case("pow_tensor_bcast", function(a) return a.a ^ a.b end)
end)

describe("ops with a number on either side match PyTorch", function()
  case("add_scalar", function(a) return a.a + 2.5 end)
  case("radd_scalar", function(a) return 2.5 + a.a end)
  case("sub_scalar", function(a) return a.a - 2.5 end)
  case("rsub_scalar", function(a) return 2.5 - a.a end)
  case("mul_scalar", function(a) return a.a * 3 end)
  case("rmul_scalar", function(a) return 3 * a.a end)
  case("div_scalar", function(a) return a.a / 4 end)
  case("rdiv_scalar", function(a) return 2 / a.a end)
  case("pow_scalar_2", function(a) return a.a ^ 2 end)
  case("pow_scalar_3", function(a) return a.a ^ 3 end)
  case("pow_scalar_half", function(a) return a.a ^ 0.5 end)
  case("pow_scalar_neg", function(a) return a.a ^ -1.5 end)
end)

describe("elementwise unary ops match PyTorch", function()
  case("neg", function(a) return -a.x end)
  case("exp", function(a) return a.x:exp() end)
  case("log", function(a) return a.x:log() end)
  case("sqrt", function(a) return a.x:sqrt() end)
  case("abs", function(a) return a.x:abs() end)
  case("tanh", function(a) return a.x:tanh() end)
  case("sigmoid", function(a) return a.x:sigmoid() end)
  case("relu", function(a) return a.x:relu() end)
  case("gelu", function(a) return F.gelu(a.x) end)
  case("gelu_tanh", function(a) return F.gelu(a.x, {approximate = "tanh"}) end)
  case("silu", function(a) return F.silu(a.x) end)
  case("clamp", function(a) return a.x:clamp(-0.5, 0.7) end)
  case("clamp_min", function(a) return a.x:clamp(-0.5) end)
  case("relu_T", function(a) return a.x_T:relu() end)
  case("exp_T", function(a) return a.x_T:exp() end)
end)

-- sigmoid and SiLU over their whole range, held per element: at most 2 ulp of the float64
-- reference for the output (1e-36 absolute below float32's normal range, where float32 itself
-- underflows); the gradients, computed from the saved float32 output as PyTorch computes them,
-- also carry that output's rounding near saturation: 8 ulp plus 2^-23 |g|.
describe("sigmoid and SiLU match PyTorch to the ulp from underflow to saturation", function()
  local ULP = 2 ^ -23
  local function check(name, fn)
    case(name, fn)
    it(name .. ", per element", function()
      local c = cases[name]
      local x = c.x:clone():requires_grad_()
      local y = fn({ x = x })
      ;(y * c.g):sum():backward()
      local xs, ys, es = H.flat(c.x), H.flat(y), H.flat(c.out)
      local gs, dxs, des = H.flat(c.g), H.flat(x.grad), H.flat(c.grad_x)
      for i = 1, #xs do
        local err = math.abs(ys[i] - es[i])
        assert(err <= 2 * ULP * math.abs(es[i]) + 1e-36,
               ("%s(%.9g) = %.9g, PyTorch %.9g"):format(name, xs[i], ys[i], es[i]))
        err = math.abs(dxs[i] - des[i])
        assert(err <= 8 * ULP * math.abs(des[i]) + ULP * math.abs(gs[i]) + 1e-36,
               ("%s'(%.9g) g = %.9g, PyTorch %.9g"):format(name, xs[i], dxs[i], des[i]))
      end
    end)
  end
  check("sigmoid_wide", function(a) return a.x:sigmoid() end)
  check("silu_wide", function(a) return F.silu(a.x) end)
end)

describe("silu_mul (the gated MLP's silu(gate) * up) matches PyTorch", function()
  case("silu_mul", function(a) return F.silu_mul(a.gate, a.up) end)
  case("silu_mul_broadcast", function(a) return F.silu_mul(a.gate, a.up) end)
  case("silu_mul_T", function(a) return F.silu_mul(a.gate_T, a.up) end)
  it("names the shapes that do not broadcast", function()
    local ok, err = pcall(F.silu_mul, ft.randn(2, 3), ft.randn(4))
    assert.is_false(ok)
    assert.matches("silu_mul: shapes %[2,3%] and %[4%] cannot broadcast", err)
  end)
end)

describe("reductions match PyTorch", function()
  case("sum_all", function(a) return a.x:sum() end)
  case("sum_dim2", function(a) return a.x:sum(2) end)
  case("sum_dim3_keepdim", function(a) return a.x:sum(3, true) end)
  case("sum_dim_neg1", function(a) return a.x:sum(-1) end)
  case("sum_T", function(a) return a.x_T:sum(1) end)
  case("mean_all", function(a) return a.x:mean() end)
  case("mean_dim1", function(a) return a.x:mean(1) end)
  case("mean_dim_neg1_keepdim", function(a) return a.x:mean(-1, true) end)
  case("max_dim2", function(a)
    local values, indices = a.x:max(2)
    return values, {indices = indices}
  end)
  case("max_dim1_keepdim", function(a)
    local values, indices = a.x:max(1, true)
    return values, {indices = indices}
  end)
  case("max_all", function(a) return a.x:max() end)
  case("min_dim2", function(a)
    local values, indices = a.x:min(2)
    return values, {indices = indices}
  end)
  case("min_all", function(a) return a.x:min() end)
  case("argmax_dim2", function(a) return a.x:argmax(2) end)
  case("argmax_dim_neg1", function(a) return a.x:argmax(-1) end)
  case("softmax_dim2", function(a) return F.softmax(a.x, 2) end)
  case("softmax_dim_neg1", function(a) return F.softmax(a.x, -1) end)
  case("log_softmax_dim2", function(a) return F.log_softmax(a.x, 2) end)
  case("log_softmax_dim_neg1", function(a) return F.log_softmax(a.x, -1) end)
  case("log_softmax_large", function(a) return F.log_softmax(a.x, -1) end)
end)

describe("matrix products match PyTorch", function()
  case("matmul_2d", function(a) return a.a:matmul(a.b) end)
  case("matmul_1d_2d", function(a) return a.a:matmul(a.b) end)
  case("matmul_2d_1d", function(a) return a.a:matmul(a.b) end)
  case("matmul_1d_1d", function(a) return a.a:matmul(a.b) end)
  case("matmul_batched", function(a) return a.a:matmul(a.b) end)
  case("matmul_bcast_batch", function(a) return a.a:matmul(a.b) end)
  case("matmul_T", function(a) return a.a:matmul(a.b_T) end)
  case("matmul_TT", function(a) return a.a_T:matmul(a.b_T) end)
end)

describe("shape ops match PyTorch", function()
  case("cat_dim1", function(a) return ft.cat({a.a, a.b}, 1) end)
  case("cat_dim_neg1", function(a) return ft.cat({a.a, a.b}, -1) end)
  case("cat_three", function(a) return ft.cat({a.a, a.b, a.c}, 2) end)
  case("stack_dim2", function(a) return ft.stack({a.a, a.b}, 2) end)
  case("stack_dim1", function(a) return ft.stack({a.a, a.b}, 1) end)
  -- split's pieces: multiple results or one array of them
  local function pieces(...)
    local r = table.pack(...)
    if r.n == 1 and not H.is_tensor(r[1]) then return r[1] end
    r.n = nil
    return r
  end
  case("split_dim1", function(a) return pieces(a.x:split(3, 1)) end)
  case("split_dim2", function(a) return pieces(a.x:split(2, 2)) end)
  case("index_select_dim1", function(a) return a.x:index_select(1, H.plus1(a.index)) end)
  case("index_select_dim2", function(a) return a.x:index_select(2, H.plus1(a.index)) end)
  case("gather_dim2", function(a) return a.x:gather(2, H.plus1(a.index)) end)
  case("gather_dim1", function(a) return a.x:gather(1, H.plus1(a.index)) end)
  case("masked_fill", function(a) return a.x:masked_fill(a.mask, -1.5) end)
  case("masked_fill_bcast", function(a) return a.x:masked_fill(a.mask, 2) end)
  case("where", function(a) return ft.where(a.cond, a.a, a.b) end)
  case("where_bcast", function(a) return ft.where(a.cond, a.a, a.b) end)
end)

describe("views match PyTorch", function()
  case("transpose", function(a) return a.x:transpose(1, 3) end)
  case("permute", function(a) return a.x:permute(3, 1, 2) end)
  case("narrow", function(a) return a.x:narrow(1, 2, 3) end)
  case("select", function(a) return a.x:select(2, 3) end)
  case("expand", function(a) return a.x:expand(3, 4) end)
  case("reshape", function(a) return a.x:reshape(4, 6) end)
  case("reshape_T", function(a) return a.x_T:reshape(12) end)
  case("unsqueeze", function(a) return a.x:unsqueeze(2) end)
  case("squeeze", function(a) return a.x:squeeze(2) end)
  case("contiguous_T", function(a) return a.x_T:contiguous() end)
  case("clone_T", function(a) return a.x_T:clone() end)
end)

describe("layers match PyTorch", function()
  case("linear", function(a) return F.linear(a.x, a.w, a.b) end)
  case("linear_nobias", function(a) return F.linear(a.x, a.w) end)
  case("conv2d", function(a) return F.conv2d(a.x, a.w) end)
  case("conv2d_bias", function(a) return F.conv2d(a.x, a.w, a.b, {padding = 1}) end)
  case("conv2d_strided", function(a)
    return F.conv2d(a.x, a.w, a.b, {stride = 2, padding = 1, dilation = 2, groups = 2})
  end)
  case("conv2d_rect", function(a)
    return F.conv2d(a.x, a.w, a.b, {stride = {2, 1}, padding = {1, 0}})
  end)
  case("conv2d_winograd", function(a) return F.conv2d(a.x, a.w, a.b, {padding = 1}) end)
  case("max_pool2d", function(a) return F.max_pool2d(a.x, 2) end)
  case("max_pool2d_pad", function(a) return F.max_pool2d(a.x, 3, {stride = 2, padding = 1}) end)
  case("avg_pool2d", function(a) return F.avg_pool2d(a.x, 2) end)
  case("avg_pool2d_pad", function(a) return F.avg_pool2d(a.x, 3, {stride = 2, padding = 1}) end)
  case("adaptive_avg_pool2d", function(a) return F.adaptive_avg_pool2d(a.x, 3) end)
  case("adaptive_avg_pool2d_rect", function(a) return F.adaptive_avg_pool2d(a.x, {2, 3}) end)
  case("adaptive_avg_pool2d_1", function(a) return F.adaptive_avg_pool2d(a.x, 1) end)
  local function bn(training)
    return function(a)
      local y = F.batch_norm(a.x, a.running_mean, a.running_var, a.weight, a.bias,
                             {training = training, momentum = 0.1, eps = 1e-5})
      local extra = nil
      if training then
        extra = {running_mean_after = a.running_mean, running_var_after = a.running_var}
      end
      return y, extra
    end
  end
  case("batch_norm_train", bn(true))
  case("batch_norm_train_2d", bn(true))
  case("batch_norm_eval", bn(false))
  case("layer_norm", function(a) return F.layer_norm(a.x, {8}, a.weight, a.bias, {eps = 1e-5}) end)
  case("layer_norm_2dims", function(a)
    return F.layer_norm(a.x, {3, 4}, a.weight, a.bias, {eps = 1e-5})
  end)
  case("rms_norm", function(a) return F.rms_norm(a.x, {8}, a.weight, {eps = 1e-6}) end)
  case("pad", function(a) return F.pad(a.x, {1, 2, -1, 1}, 0.5) end)
  case("sdpa", function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v) end)
  case("sdpa_causal", function(a)
    return F.scaled_dot_product_attention(a.q, a.k, a.v, {causal = true})
  end)
  case("embedding", function(a) return F.embedding(H.plus1(a.index), a.weight) end)
end)

describe("losses match PyTorch", function()
  local function ce(opts)
    return function(a) return F.cross_entropy(a.logits, H.plus1(a.target), opts) end
  end
  case("cross_entropy_mean", ce())
  case("cross_entropy_sum", ce({reduction = "sum"}))
  case("cross_entropy_none", ce({reduction = "none"}))
  case("cross_entropy_smooth", ce({label_smoothing = 0.1}))
  case("cross_entropy_smooth_sum", ce({label_smoothing = 0.1, reduction = "sum"}))
  -- ignore_index is a class id, so 1-based in Lua (2 in the 0-based fixture)
  case("cross_entropy_ignore", ce({ignore_index = 3}))
  case("cross_entropy_ignore_none", ce({ignore_index = 3, reduction = "none"}))
  case("cross_entropy_ignore_smooth", ce({ignore_index = 3, label_smoothing = 0.1}))
  case("cross_entropy_nd", ce())
  case("cross_entropy_nd_none", ce({reduction = "none"}))
  case("cross_entropy_large", ce())
  case("mse_loss", function(a) return F.mse_loss(a.input, a.target) end)
  case("mse_loss_sum", function(a) return F.mse_loss(a.input, a.target, {reduction = "sum"}) end)
  case("mse_loss_none", function(a) return F.mse_loss(a.input, a.target, {reduction = "none"}) end)
end)

describe("the fixture file", function()
  it("has a spec case for every generated case", function()
    -- Keeps the generator and this spec in step.
    local missing = {}
    for name in pairs(cases) do
      if not registered[name] then missing[#missing + 1] = name end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)

describe("dropout", function()
  it("zeroes about p of the elements and scales the rest by 1/(1-p)", function()
    ft.manual_seed(7)
    local n, p = 20000, 0.3
    local y = F.dropout(ft.ones(n), p, true)
    local zeros, kept_ok = 0, true
    for _, v in ipairs((H.flat(y))) do
      if v == 0 then
        zeros = zeros + 1
      elseif math.abs(v - 1 / (1 - p)) > 1e-5 then
        kept_ok = false
      end
    end
    -- binomial std of the zero fraction: sqrt(p(1-p)/n) ~ 0.0032; allow 5 sigma
    assert.is_true(math.abs(zeros / n - p) < 0.016, "zero fraction " .. zeros / n)
    assert.is_true(kept_ok, "kept elements are not scaled by 1/(1-p)")
  end)

  it("backward passes the gradient through the kept elements only", function()
    ft.manual_seed(3)
    local x = ft.ones(1000)
    x.requires_grad = true
    local y = F.dropout(x, 0.5, true)
    y:sum():backward()
    local yv, gv = H.flat(y), H.flat(x.grad)
    for i = 1, #yv do
      assert.are.equal(yv[i], gv[i]) -- both 0 or both 2
    end
  end)

  it("is the identity with p = 0 and in eval mode", function()
    local x = ft.randn(4, 5)
    H.assert_close(F.dropout(x, 0, true), x, 0, "p = 0")
    H.assert_close(F.dropout(x, 0.5, false), x, 0, "eval")
  end)
end)
