-- Every differentiable op's backward against central finite differences.
--
-- The scalar is L = sum_k sum(out_k * g_k) with fixed random g_k; its value for the
-- finite differences is summed in Lua (double precision) from the float32 outputs.
-- Inputs are small and well conditioned: away from kinks (relu, abs, clamp), ties (max,
-- max_pool) and singularities (log, sqrt, div), so that float32 differences with
-- eps = 1e-2 * max(1, |x|) are accurate to well within the tolerance:
--     max |analytic - numeric| <= 2e-2 * max(1, max |numeric|).
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional

local RTOL = 2e-2

-- Deterministic input values from Lua's own generator (independent of ft's RNG).
math.randomseed(20240601)

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

local function gen(shape, f)
  local v = {}
  for i = 1, numel(shape) do v[i] = f(i) end
  return {shape = shape, values = v}
end

local function gauss()
  -- Box-Muller; clipped to keep values moderate
  local u1, u2 = 1 - math.random(), math.random()
  local z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
  return math.max(-2.5, math.min(2.5, z))
end

local function normal(shape) return gen(shape, gauss) end
local function positive(shape) return gen(shape, function() return 0.5 + 1.5 * math.random() end) end
-- |x| in [0.3, 1.5]: safe for abs, relu, division
local function away(shape)
  return gen(shape, function()
    local m = 0.3 + 1.2 * math.random()
    return math.random() < 0.5 and -m or m
  end)
end
-- distinct values 0.1 apart: no ties within +-eps for max and max_pool
local function distinct(shape)
  local n = numel(shape)
  local perm = {}
  for i = 1, n do perm[i] = i end
  for i = n, 2, -1 do
    local j = math.random(i)
    perm[i], perm[j] = perm[j], perm[i]
  end
  return gen(shape, function(i) return (perm[i] - n / 2) * 0.1 end)
end

local function ints(nested) return ft.tensor(nested, {dtype = "int64"}) end

-- L(inputs) in double precision from the float32 outputs.
local function loss_value(outs, gs)
  local s = 0
  for k, o in ipairs(outs) do
    local ov = H.flat(o)
    local gv = gs[k]
    assert(#ov == #gv, "output size changed between calls")
    for i = 1, #ov do s = s + ov[i] * gv[i] end
  end
  return s
end

local function as_list(out)
  if H.is_tensor(out) then return {out} end
  return out
end

local function tensors_of(inputs)
  local t = {}
  for k, spec in pairs(inputs) do t[k] = H.from_flat(spec.values, spec.shape) end
  return t
end

-- inputs: name -> {shape=, values=} (all differentiated); fn(tensors) -> output(s).
local function check(name, inputs, fn)
  it(name, function()
    -- analytic gradients
    local leaves = tensors_of(inputs)
    for _, t in pairs(leaves) do t.requires_grad = true end
    local outs = as_list(fn(leaves))
    local gs, loss = {}, nil
    for k, o in ipairs(outs) do
      gs[k] = normal(o:shape()).values
      local term = (o * H.from_flat(gs[k], o:shape())):sum()
      loss = loss and loss + term or term
    end
    loss:backward()

    -- numeric gradients, one input element at a time
    for k, spec in pairs(inputs) do
      local numeric = {}
      local v = spec.values
      for i = 1, #v do
        local orig = v[i]
        local eps = 1e-2 * math.max(1, math.abs(orig))
        v[i] = orig + eps
        local fp = loss_value(as_list(fn(tensors_of(inputs))), gs)
        v[i] = orig - eps
        local fm = loss_value(as_list(fn(tensors_of(inputs))), gs)
        v[i] = orig
        numeric[i] = (fp - fm) / (2 * eps)
      end
      local grad = leaves[k].grad
      assert(grad ~= nil, name .. ": no gradient reached input " .. k)
      H.assert_close(grad, H.from_flat(numeric, spec.shape), RTOL, name .. " grad of " .. k)
    end
  end)
end

describe("finite differences: elementwise", function()
  check("add", {a = normal{4, 1, 3}, b = normal{5, 1}}, function(a) return a.a + a.b end)
  check("sub", {a = normal{4, 1, 3}, b = normal{5, 1}}, function(a) return a.a - a.b end)
  check("mul", {a = normal{4, 1, 3}, b = normal{5, 1}}, function(a) return a.a * a.b end)
  check("div", {a = normal{4, 1, 3}, b = away{5, 1}}, function(a) return a.a / a.b end)
  check("mul_transposed", {a = normal{3, 4}, b = normal{4, 3}},
        function(a) return a.a:t() * a.b end)
  check("pow_tensor", {a = positive{3, 4}, b = normal{4}}, function(a) return a.a ^ a.b end)
  check("pow_scalar", {a = normal{3, 4}}, function(a) return a.a ^ 3 end)
  check("pow_scalar_frac", {a = positive{3, 4}}, function(a) return a.a ^ -1.5 end)
  check("scalar_arith", {a = away{3, 4}},
        function(a) return (2.5 - a.a) * 3 + a.a / 4 + 2 / a.a + (1 + a.a) - 0.5 end)
  check("neg", {x = normal{3, 4}}, function(a) return -a.x end)
  check("exp", {x = normal{3, 4}}, function(a) return a.x:exp() end)
  check("log", {x = positive{3, 4}}, function(a) return a.x:log() end)
  check("sqrt", {x = positive{3, 4}}, function(a) return a.x:sqrt() end)
  check("abs", {x = away{3, 4}}, function(a) return a.x:abs() end)
  check("tanh", {x = normal{3, 4}}, function(a) return a.x:tanh() end)
  check("sigmoid", {x = normal{3, 4}}, function(a) return a.x:sigmoid() end)
  check("relu", {x = away{3, 4}}, function(a) return a.x:relu() end)
  check("gelu", {x = normal{3, 4}}, function(a) return F.gelu(a.x) end)
  check("gelu_tanh", {x = normal{3, 4}}, function(a) return F.gelu(a.x, {approximate = "tanh"}) end)
  check("silu", {x = normal{3, 4}}, function(a) return F.silu(a.x) end)
  -- |x| >= 0.3, so bounds inside (-0.3, 0.3) or beyond 1.5 are never within eps of x
  check("clamp", {x = away{4, 5}}, function(a) return a.x:clamp(-0.2, 0.25) * a.x:clamp(-0.25, 2) end)
end)

describe("finite differences: reductions", function()
  check("sum_all", {x = normal{3, 4, 2}}, function(a) return a.x:sum() end)
  check("sum_dim", {x = normal{3, 4, 2}}, function(a) return a.x:sum(2) end)
  check("sum_keepdim", {x = normal{3, 4, 2}}, function(a) return a.x:sum(-1, true) end)
  check("mean_all", {x = normal{3, 4, 2}}, function(a) return a.x:mean() end)
  check("mean_dim", {x = normal{3, 4, 2}}, function(a) return a.x:mean(1, true) end)
  check("max_dim", {x = distinct{4, 5}}, function(a) return (a.x:max(2)) end)
  check("max_all", {x = distinct{3, 4}}, function(a) return a.x:max() end)
  check("min_dim", {x = distinct{4, 5}}, function(a) return (a.x:min(1, true)) end)
  check("softmax", {x = normal{3, 4, 5}}, function(a) return F.softmax(a.x, 2) end)
  check("log_softmax", {x = normal{3, 5}}, function(a) return F.log_softmax(a.x, -1) end)
end)

describe("finite differences: matrix products", function()
  check("matmul_2d", {a = normal{3, 4}, b = normal{4, 5}}, function(a) return a.a:matmul(a.b) end)
  check("matmul_1d_2d", {a = normal{4}, b = normal{4, 3}}, function(a) return a.a:matmul(a.b) end)
  check("matmul_2d_1d", {a = normal{3, 4}, b = normal{4}}, function(a) return a.a:matmul(a.b) end)
  check("matmul_batched", {a = normal{2, 3, 4}, b = normal{4, 2}},
        function(a) return a.a:matmul(a.b) end)
  check("matmul_bcast_batch", {a = normal{2, 1, 2, 3}, b = normal{3, 3, 2}},
        function(a) return a.a:matmul(a.b) end)
  check("matmul_transposed", {a = normal{4, 3}, b = normal{5, 4}},
        function(a) return a.a:t():matmul(a.b:t()) end)
end)

describe("finite differences: shape ops and views", function()
  check("cat", {a = normal{2, 3}, b = normal{2, 2}}, function(a) return ft.cat({a.a, a.b}, 2) end)
  check("stack", {a = normal{2, 3}, b = normal{2, 3}}, function(a) return ft.stack({a.a, a.b}, 2) end)
  check("split", {x = normal{5, 2}}, function(a)
    local r = table.pack(a.x:split(2, 1))
    if r.n == 1 and not H.is_tensor(r[1]) then return r[1] end
    r.n = nil
    return r
  end)
  check("index_select", {x = normal{5, 3}},
        function(a) return a.x:index_select(1, ints{5, 1, 5, 3}) end)
  check("index_add", {x = normal{5, 3}, s = normal{4, 3}},
        function(a) return a.x:index_add(1, ints{5, 1, 5, 3}, a.s) end)
  check("index_add dim 2", {x = normal{3, 4}, s = normal{3, 2}},
        function(a) return a.x:index_add(2, ints{4, 4}, a.s) end)
  check("gather", {x = normal{3, 4}},
        function(a) return a.x:gather(2, ints{{1, 4}, {2, 2}, {4, 3}}) end)
  check("masked_fill", {x = normal{3, 4}}, function(a)
    return a.x:masked_fill(ft.tensor{{1, 0, 0, 1}, {0, 0, 1, 0}, {1, 1, 0, 0}}, -2)
  end)
  check("where", {a = normal{3, 4}, b = normal{4}}, function(a)
    return ft.where(ft.tensor{{1, 0, 0, 1}, {0, 0, 1, 0}, {1, 1, 0, 0}}, a.a, a.b)
  end)
  check("transpose", {x = normal{2, 3, 4}}, function(a) return a.x:transpose(1, 3) * 1 end)
  check("permute", {x = normal{2, 3, 4}}, function(a) return a.x:permute(3, 1, 2):contiguous() end)
  check("narrow", {x = normal{5, 3}}, function(a) return a.x:narrow(1, 2, 3) end)
  check("select", {x = normal{3, 4}}, function(a) return a.x:select(2, 2) end)
  check("expand", {x = normal{3, 1}}, function(a) return a.x:expand(3, 4) end)
  check("reshape", {x = normal{2, 3, 2}}, function(a) return a.x:transpose(1, 3):reshape(12) end)
  check("view", {x = normal{2, 6}}, function(a) return a.x:view(3, 4) end)
  check("squeeze_unsqueeze", {x = normal{3, 1, 2}},
        function(a) return a.x:squeeze(2):unsqueeze(1) end)
end)

describe("finite differences: layers", function()
  check("linear", {x = normal{2, 3, 4}, w = normal{3, 4}, b = normal{3}},
        function(a) return F.linear(a.x, a.w, a.b) end)
  check("conv2d", {x = normal{1, 2, 5, 5}, w = normal{3, 2, 3, 3}, b = normal{3}},
        function(a) return F.conv2d(a.x, a.w, a.b, {padding = 1}) end)
  check("conv2d_strided", {x = normal{1, 4, 7, 7}, w = normal{4, 2, 3, 3}, b = normal{4}},
        function(a)
          return F.conv2d(a.x, a.w, a.b, {stride = 2, padding = 1, dilation = 2, groups = 2})
        end)
  check("conv2d_nobias_rect", {x = normal{1, 2, 6, 5}, w = normal{3, 2, 2, 3}},
        function(a) return F.conv2d(a.x, a.w, {stride = {2, 1}, padding = {1, 0}}) end)
  check("linear_nobias", {x = normal{3, 4}, w = normal{2, 4}},
        function(a) return F.linear(a.x, a.w) end)
  check("lora_add", {r = normal{2, 3, 5}, x = normal{2, 3, 4}, a = normal{2, 4}, b = normal{5, 2}},
        function(a) return F.lora_add(a.r, a.x, a.a, a.b, 0.75) end)
  -- consume: the delta added in the buffer of an op's output, whose node still passes the gradient
  check("lora_add_consume", {r = normal{2, 3, 5}, x = normal{2, 3, 4}, a = normal{2, 4}, b = normal{5, 2}},
        function(a) return F.lora_add(a.r * 1.5, a.x, a.a, a.b, 0.75, true) end)
  -- groups of 2, 0 (no rows: a zero weight gradient) and 3 rows
  check("grouped_linear", {x = normal{5, 4}, w = normal{3, 2, 4}},
        function(a) return F.grouped_linear(a.x, a.w, {2, 0, 3}) end)
  check("pad", {x = normal{2, 3, 4}}, function(a) return F.pad(a.x, {1, 2, -1, 1}, 0.5) end)
  check("sdpa", {q = normal{2, 3, 4}, k = normal{2, 4, 4}, v = normal{2, 4, 2}},
        function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v) end)
  check("max_pool2d", {x = distinct{1, 2, 5, 5}},
        function(a) return F.max_pool2d(a.x, 3, {stride = 2, padding = 1}) end)
  check("avg_pool2d", {x = normal{1, 2, 5, 5}},
        function(a) return F.avg_pool2d(a.x, 3, {stride = 2, padding = 1}) end)
  check("adaptive_avg_pool2d", {x = normal{1, 2, 7, 5}},
        function(a) return F.adaptive_avg_pool2d(a.x, {3, 2}) end)
  check("batch_norm_train", {x = normal{3, 2, 2, 2}, w = positive{2}, b = normal{2}},
        function(a)
          return F.batch_norm(a.x, ft.zeros(2), ft.ones(2), a.w, a.b, {training = true})
        end)
  check("batch_norm_eval", {x = normal{3, 2, 2, 2}, w = positive{2}, b = normal{2}},
        function(a)
          return F.batch_norm(a.x, ft.tensor{0.1, -0.2}, ft.tensor{0.8, 1.5}, a.w, a.b,
                              {training = false, eps = 1e-5})
        end)
  check("layer_norm", {x = normal{2, 3, 4}, w = positive{4}, b = normal{4}},
        function(a) return F.layer_norm(a.x, {4}, a.w, a.b, {eps = 1e-5}) end)
  check("rms_norm", {x = normal{2, 3, 4}, w = positive{4}},
        function(a) return F.rms_norm(a.x, {4}, a.w, {eps = 1e-6}) end)
  check("sdpa_causal", {q = normal{2, 3, 4}, k = normal{2, 3, 4}, v = normal{2, 3, 2}},
        function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v, {causal = true}) end)
  check("embedding", {w = normal{5, 3}},
        function(a) return F.embedding(ints{{2, 5}, {2, 1}}, a.w) end)
  check("dropout_seeded", {x = normal{4, 5}}, function(a)
    ft.manual_seed(11)  -- the same mask on every call
    return F.dropout(a.x, 0.4, true)
  end)
end)

describe("finite differences: losses", function()
  local target = ints{1, 3, 2, 3}
  check("cross_entropy", {x = normal{4, 3}},
        function(a) return F.cross_entropy(a.x, target) end)
  check("cross_entropy_sum_smooth", {x = normal{4, 3}},
        function(a) return F.cross_entropy(a.x, target, {reduction = "sum", label_smoothing = 0.1}) end)
  check("cross_entropy_ignore", {x = normal{4, 3}},
        function(a) return F.cross_entropy(a.x, target, {ignore_index = 3}) end)
  check("cross_entropy_none", {x = normal{4, 3}},
        function(a) return F.cross_entropy(a.x, target, {reduction = "none"}) end)
  check("cross_entropy_nd", {x = normal{2, 3, 4}},
        function(a) return F.cross_entropy(a.x, ints{{1, 2, 3, 3}, {2, 2, 1, 3}}) end)
  check("mse_loss", {x = normal{3, 4}, y = normal{3, 4}},
        function(a) return F.mse_loss(a.x, a.y) end)
  check("mse_loss_sum", {x = normal{3, 4}, y = normal{3, 4}},
        function(a) return F.mse_loss(a.x, a.y, {reduction = "sum"}) end)
end)
