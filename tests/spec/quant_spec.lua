-- ft.quant and ft._quant: NF4 / int8 frozen weights. Quantisation is checked bit for bit
-- against tests/fixtures/quant/nf4.safetensors (tests/gen/quant.py, an independent NumPy /
-- PyTorch implementation of bitsandbytes' NF4 and of QLoRA's double quantisation); the quantised linear against the dense layer
-- on the dequantised weight, within a float32 rounding bound; LoRA over a quantised Linear
-- against LoRA over the dense dequantised Linear.
local ft = require "ft"
local H = require "helpers"

local nn = ft.nn
local F = nn.functional
local Q = ft._quant

local fixture = ft.safetensors.load(H.fixture("quant/nf4.safetensors"))
local NAMES = { "gauss", "odd", "edges", "wide", "ladder", "big" }

local bits_equal, ints_equal = H.assert_bits_equal, H.assert_equal_ints

-- |a - b| <= bound elementwise (tensors of one shape).
local function within(a, b, bound, what)
  local fa, fb, fbound = H.flat(a), H.flat(b), H.flat(bound)
  assert.equal(#fb, #fa, what .. ": size")
  for i = 1, #fa do
    local d = math.abs(fa[i] - fb[i])
    if not (d <= fbound[i]) then
      error(("%s: element %d is %.9g, expected %.9g within %.3g"):format(what, i, fa[i], fb[i], fbound[i]), 2)
    end
  end
end

-- The rounding bound of a float32 dot product of length k computed in any order:
-- k * 2^-23 * sum |x_i| |w_i| (plus the bias term), a little wider than gamma_k.
local function dot_bound(x, w, b, k)
  local s = x:abs():matmul(w:abs():t())
  if b then s = s + b:abs() end
  return s * (k * 2 ^ -23) + 1e-30
end

describe("ft._quant NF4", function()
  for _, name in ipairs(NAMES) do
    it("quantises " .. name .. " as bitsandbytes with float32 absmaxes: indices, absmaxes, dequantised values bit for bit", function()
      local q = Q.quantize(fixture[name .. ".w"], "nf4_fp32")
      assert.equal("nf4_fp32", q:kind())
      ints_equal(q:codes(), fixture[name .. ".nf4_codes"], name .. " indices")
      bits_equal(q:scales(), fixture[name .. ".nf4_absmax"], name .. " absmax")
      bits_equal(q:dequantize(), fixture[name .. ".nf4_deq"], name .. " dequantised")
      assert.equal(0, q:offset())
      H.assert_mentions(H.error_of(q.absmax2, q), "nf4_fp32", "no quantised absmaxes")
    end)

    it("double-quantises the absmaxes of " .. name .. " as QLoRA: codes, offset, absmax2, absmaxes, weights bit for bit", function()
      local q = Q.quantize(fixture[name .. ".w"], "nf4")
      assert.equal("nf4", q:kind())
      ints_equal(q:codes(), fixture[name .. ".nf4_codes"], name .. " indices")
      ints_equal(q:absmax_codes(), fixture[name .. ".dq_codes"], name .. " absmax codes")
      assert.equal(string.pack("<f", H.flat(fixture[name .. ".dq_offset"])[1]), string.pack("<f", q:offset()))
      bits_equal(q:absmax2(), fixture[name .. ".dq_absmax2"], name .. " absmax2")
      bits_equal(q:scales(), fixture[name .. ".dq_absmax"], name .. " dequantised absmax")
      bits_equal(q:dequantize(), fixture[name .. ".dq_deq"], name .. " dequantised")
    end)
  end

  it("builds bitsandbytes' signed dynamic map bit for bit", function()
    bits_equal(Q.dynamic_map(), fixture.dynamic_map, "dynamic map")
    local m = H.flat(Q.dynamic_map())
    assert.equal(0, m[128])
    assert.equal(1, m[256])
    for i = 2, 256 do assert.is_true(m[i - 1] < m[i]) end
  end)

  it("spans the whole dynamic map on a ladder of absmaxes, and rebuilds a lone block's absmax exactly", function()
    local seen = {}
    for _, c in ipairs(H.flat(Q.quantize(fixture["ladder.w"], "nf4"):absmax_codes())) do seen[c] = true end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.is_true(n > 100, "distinct codes: " .. n)
    -- one block: absmax - mean = 0, absmax2 = 0, 0 * inf = NaN -> code 0; absmax = -1 * 0 + offset
    local w = ft.randn(1, 64)
    local q, r = Q.quantize(w, "nf4"), Q.quantize(w, "nf4_fp32")
    assert.same({ 0 }, H.flat(q:absmax_codes()))
    bits_equal(q:scales(), r:scales(), "lone absmax")
    bits_equal(q:dequantize(), r:dequantize(), "lone block")
  end)

  it("stores the 16 levels of bitsandbytes (exact levels map to themselves)", function()
    local e = Q.quantize(fixture["edges.w"], "nf4_fp32")
    local codes, deq = H.flat(e:codes()), H.flat(e:dequantize())
    local levels = H.flat(fixture.levels)
    for i = 1, 16 do
      assert.equal(i - 1, codes[64 + i])
      assert.equal(string.pack("<f", levels[i]), string.pack("<f", deq[64 + i]))
    end
    -- a value on a midpoint takes the lower level, the next float above it the upper one
    for i = 1, 15 do
      assert.equal(i - 1, codes[64 + 16 + i])
      assert.equal(i, codes[64 + 31 + i])
      assert.equal(i - 1, codes[64 + 46 + i])
    end
  end)

  it("packs two indices per byte and one absmax per 64 weights (8-bit, or float32 for nf4_fp32)", function()
    local w = ft.randn(7, 37)
    assert.equal(130 + 5 * 4, Q.quantize(w, "nf4_fp32"):nbytes())
    local q = Q.quantize(w, "nf4")     -- 259 weights: 130 bytes, 5 blocks: 5 codes, 1 absmax2, offset
    assert.equal(130 + 5 + 4 + 4, q:nbytes())
    assert.same({ 7, 37 }, q:shape())
    assert.equal(7, q:size(1))
    assert.equal(37, q:size(-1))
    assert.equal(2, q:dim())
    assert.equal(259, q:numel())
    assert.is_false(q.requires_grad)
    assert.matches("nf4 %[7, 37%]", tostring(q))
  end)
end)

describe("ft._quant int8", function()
  for _, name in ipairs(NAMES) do
    it("quantises " .. name .. " per row: values, scales, dequantised values bit for bit", function()
      local q = Q.quantize(fixture[name .. ".w"], "int8")
      ints_equal(q:codes(), fixture[name .. ".int8_codes"], name .. " values")
      bits_equal(q:scales(), fixture[name .. ".int8_scale"], name .. " scales")
      bits_equal(q:dequantize(), fixture[name .. ".int8_deq"], name .. " dequantised")
    end)
  end

  it("holds values in [-127, 127] and one float32 scale per row", function()
    local q = Q.quantize(ft.randn(9, 50) * 3, "int8")
    assert.equal(9 * 50 + 9 * 4, q:nbytes())
    local codes = q:codes():totable()
    for _, row in ipairs(codes) do
      local m = 0
      for _, v in ipairs(row) do
        assert.is_true(v >= -127 and v <= 127)
        m = math.max(m, math.abs(v))
      end
      assert.equal(127, m)   -- the row's absmax maps to +-127
    end
  end)
end)

describe("ft._quant.linear", function()
  -- in = 4096: 64 rows per dequantised block, so 150 rows take three blocks (the last partial)
  local cases = { { "nf4", 3, 37, 5 }, { "nf4", 6, 4096, 150 }, { "nf4_fp32", 3, 37, 5 }, { "int8", 4, 4096, 150 }, { "int8", 2, 300, 3 } }
  for _, c in ipairs(cases) do
    local kind, M, nin, nout = c[1], c[2], c[3], c[4]
    it(("%s [%d, %d] @ [%d, %d]^T: forward equals x @ dequant(W)^T + b within float32 rounding"):format(
      kind, M, nin, nout, nin), function()
      ft.manual_seed(7)
      local q = Q.quantize(ft.randn(nout, nin) * 0.05, kind)
      local w = q:dequantize()
      local x, b = ft.randn(M, nin), ft.randn(nout)
      local y = Q.linear(x, q, b)
      within(y, F.linear(x, w, b), dot_bound(x, w, b, nin) * 2, "forward")
      within(Q.linear(x, q), F.linear(x, w), dot_bound(x, w, nil, nin) * 2, "forward without bias")
    end)

    it(("%s [%d, %d]: input and bias gradients equal the dense layer's"):format(kind, nin, nout), function()
      ft.manual_seed(8)
      local q = Q.quantize(ft.randn(nout, nin) * 0.05, kind)
      local w = q:dequantize()
      local x = ft.randn(2, M, nin)
      local b = ft.randn(nout)
      local g = ft.randn(2, M, nout)
      local xq, bq = x:detach(), b:detach()
      xq.requires_grad, bq.requires_grad = true, true
      Q.linear(xq, q, bq):backward(g)
      local xd, bd = x:detach(), b:detach()
      xd.requires_grad, bd.requires_grad = true, true
      F.linear(xd, w, bd):backward(g)
      -- dx = g @ W: a dot product of length out
      local bound = (g:abs():reshape(-1, nout):matmul(w:abs()) * (nout * 2 ^ -22) + 1e-30):reshape(2, M, nin)
      within(xq.grad, xd.grad, bound, "dx")
      H.assert_close(bq.grad, bd.grad, 1e-5, "db")
    end)
  end

  it("input gradient matches finite differences", function()
    ft.manual_seed(9)
    local q = Q.quantize(ft.randn(4, 70) * 0.1, "nf4")
    local x = ft.randn(3, 70)
    local x1 = x:detach()
    x1.requires_grad = true
    local c = ft.randn(3, 4)
    local loss = (Q.linear(x1, q) * c):sum()
    loss:backward()
    local grad = H.flat(x1.grad)
    local base = H.flat(x)
    local eps = 1e-2
    for _, i in ipairs({ 1, 17, 70, 71, 140, 210 }) do
      local function f(delta)
        local v = { table.unpack(base) }
        v[i] = v[i] + delta
        return (Q.linear(H.from_flat(v, { 3, 70 }), q) * c):sum():item()
      end
      local fd = (f(eps) - f(-eps)) / (2 * eps)
      assert(math.abs(fd - grad[i]) <= 1e-3 * math.max(1, math.abs(fd)), ("d/dx[%d]: %g vs %g"):format(i, grad[i], fd))
    end
  end)

  it("never holds the whole weight in float32", function()
    local q = Q.quantize(ft.randn(4096, 4096) * 0.02, "nf4")   -- 64 MiB as float32, 4 MiB tiles
    local x = ft.randn(4, 4096)
    x.requires_grad = true
    collectgarbage()
    ft.reset_peak_bytes()
    local before = ft.live_bytes()
    local y = Q.linear(x, q)
    y:sum():backward()
    local extra = ft.peak_bytes() - before
    assert(extra < 8 * 2 ^ 20, ("forward + backward used %d bytes beyond the weight"):format(extra))
  end)

  it("promotes a bfloat16 input or bias (a bfloat16 model's) to float32, gradients in their dtype", function()
    local q = Q.quantize(ft.randn(6, 8), "int8")
    local x, b = ft.randn(3, 8), ft.randn(6)
    local xh, bh = x:to("bfloat16"):requires_grad_(), b:to("bfloat16"):requires_grad_()
    local y = Q.linear(xh, q, bh)
    H.assert_bits_equal(y:detach(), Q.linear(xh:detach():to("float32"), q, bh:detach():to("float32")), "forward")
    y:sum():backward()
    assert.are.equal("bfloat16", xh.grad:dtype())
    assert.are.equal("bfloat16", bh.grad:dtype())
    H.assert_bits_equal(bh.grad:to("float32"), ft.full({ 6 }, 3), "bias gradient")
  end)

  it("raises clear errors", function()
    local q = Q.quantize(ft.randn(5, 8), "nf4")
    H.assert_mentions(H.error_of(Q.linear, ft.randn(2, 7), q), "[2,7]", "[5, 8]")
    H.assert_mentions(H.error_of(Q.linear, ft.randn(2, 8), q, ft.randn(4)), "bias", "[4]")
    H.assert_mentions(H.error_of(Q.quantize, ft.randn(2, 3, 4), "nf4"), "[out, in]", "[2,3,4]")
    H.assert_mentions(H.error_of(Q.quantize, ft.randn(4), "int8"), "[out, in]")
    H.assert_mentions(H.error_of(Q.quantize, ft.randn(2, 3), "fp4"), "fp4", "nf4, int8")
    H.assert_mentions(H.error_of(Q.quantize, ft.tensor({ { 1, 0 / 0 } }), "nf4"), "non-finite")
    H.assert_mentions(H.error_of(Q.quantize, ft.zeros(0, 3), "nf4"), "no elements")
    H.assert_mentions(H.error_of(Q.quantize, ft.tensor({ { 1, 2 } }, { dtype = "int64" }), "nf4"), "float32")
  end)
end)

describe("ft.quant on models", function()
  local function mlp()
    ft.manual_seed(3)
    return nn.Sequential(nn.Linear(37, 16), nn.ReLU(), nn.Linear(16, 5))
  end

  -- The same model with dense float32 weights equal to m's dequantised ones.
  local function dense_twin(m)
    local d = mlp()
    ft.no_grad(function()
      for _, i in ipairs({ 1, 3 }) do
        local w = m[i].weight
        d[i].weight:copy_(ft.quant.is_quantized(m[i]) and w:dequantize() or w)
        d[i].bias:copy_(m[i].bias)
      end
    end)
    return d
  end

  it("replaces the weights of the chosen Linear layers", function()
    local m = mlp()
    ft.quant.quantize(m, "nf4", { modules = "0" })
    assert.equal("nf4", ft.quant.is_quantized(m[1]))
    assert.is_nil(ft.quant.is_quantized(m[3]))
    assert.same({ { "0", "nf4" } }, ft.quant.modules(m))
    local names = {}
    for k in m:named_parameters() do names[#names + 1] = k end
    assert.same({ "0.bias", "2.weight", "2.bias" }, names)
    assert.matches("quant=nf4", tostring(m))
    local x = ft.randn(4, 37)
    local d = dense_twin(m)
    H.assert_close(m(x), d(x), 1e-5, "forward")
  end)

  it("reports bytes per quantised weight", function()
    local m = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 128, { bias = false }))
    ft.quant.quantize(m, "nf4")
    local mem = ft.quant.memory(m)
    assert.equal(256 * 384, mem.quantized_params)
    -- double quantisation, per layer: 4 bits, a byte per 64 weights, a float32 per 256 blocks,
    -- the offset (65536 weights: 1024 blocks, 4 absmax2; 32768: 512 blocks, 2)
    local expect = ((32768 + 1024 + 4 * 4 + 4) + (16384 + 512 + 2 * 4 + 4)) / (256 * 384)
    assert.equal(expect, mem.bytes_per_param)
    assert.is_true(mem.bytes_per_param <= 0.55, "bytes per param " .. mem.bytes_per_param)
    local m4 = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 128, { bias = false }))
    ft.quant.quantize(m4, "nf4_fp32")
    -- single quantisation: 4 bits + a float32 absmax per 64 weights
    assert.equal(0.5625, ft.quant.memory(m4).bytes_per_param)
    assert.equal(256 * 4, mem.dense_bytes)
    assert.equal(mem.quantized_bytes + mem.dense_bytes, ft.quant.nbytes(m))
    local m8 = nn.Sequential(nn.Linear(256, 256))
    ft.quant.quantize(m8, "int8")
    assert.equal(1 + 4 / 256, ft.quant.memory(m8).bytes_per_param)
  end)

  it("LoRA over a quantised Linear has the gradients of LoRA over the dense dequantised Linear, and trains", function()
    local m = mlp()
    ft.quant.quantize(m, "nf4")
    local d = dense_twin(m)
    ft.manual_seed(11)
    ft.peft.lora(m, { target = { "0", "2" }, r = 4, alpha = 8 })
    ft.manual_seed(11)
    ft.peft.lora(d, { target = { "0", "2" }, r = 4, alpha = 8 })
    -- non-zero B so that every LoRA tensor gets a gradient
    ft.no_grad(function()
      for _, i in ipairs({ 1, 3 }) do
        local b = ft.randn(m[i].lora_B.default.weight:shape()) * 0.1
        m[i].lora_B.default.weight:copy_(b)
        d[i].lora_B.default.weight:copy_(b)
      end
    end)
    local x, target = ft.randn(8, 37), ft.randn(8, 5)
    local pm, pd = {}, {}
    for k, p in m:named_parameters() do if p.requires_grad then pm[k] = p end end
    for k, p in d:named_parameters() do if p.requires_grad then pd[k] = p end end
    assert.same({ "0.lora_A.default.weight", "0.lora_B.default.weight", "2.lora_A.default.weight",
      "2.lora_B.default.weight" }, (function()
        local ks = {}
        for k in pairs(pm) do ks[#ks + 1] = k end
        table.sort(ks)
        return ks
      end)())
    F.mse_loss(m(x), target):backward()
    F.mse_loss(d(x), target):backward()
    for k, p in pairs(pm) do H.assert_close(p.grad, pd[k].grad, 1e-4, k) end

    local opt = ft.optim.AdamW(m:parameters(), { lr = 1e-2 })
    local first, last
    for step = 1, 30 do
      opt:zero_grad()
      local loss = F.mse_loss(m(x), target)
      loss:backward()
      opt:step()
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    assert(last < first * 0.8, ("loss %g -> %g"):format(first, last))
    assert.equal("nf4", ft.quant.is_quantized(m[1]))
  end)

  it("refuses to merge LoRA into a quantised weight without a choice; dequantise, merge, requantise works", function()
    local m = mlp()
    ft.quant.quantize(m, "int8", { modules = { "0" } })
    ft.peft.lora(m, { target = "0", r = 2 })
    local err = H.error_of(ft.peft.merge, m)
    H.assert_mentions(err, "layer 0", "quantised (int8)", 'quantized = "requantize"', 'quantized = "dequantize"')
    H.assert_mentions(H.error_of(ft.peft.merge_and_unload, m), "quantised")
    ft.quant.dequantize(m)
    assert.is_nil(ft.quant.is_quantized(m[1]))
    local x = ft.randn(3, 37)
    local before = m(x)
    ft.peft.merge(m)
    H.assert_close(m(x), before, 1e-5, "merged forward")
    ft.quant.quantize(m, "int8", { modules = "0" })
    assert.equal("int8", ft.quant.is_quantized(m[1]))
  end)

  it("refuses a merge before changing any layer when one adapted layer is quantised", function()
    local m = mlp()
    ft.quant.quantize(m, "int8", { modules = { "2" } })
    ft.peft.lora(m, { target = { "0", "2" }, r = 2, init = false })
    local dense_before = m[1].weight:clone()
    H.assert_mentions(H.error_of(ft.peft.merge, m), "layer 2", "quantised (int8", "no weight was changed")
    assert.equal(0, (m[1].weight - dense_before):abs():max():item(), "the dense layer was merged before the error")
    assert.same({}, ft.peft.merged_adapters(m))
  end)

  it("refuses layers it cannot quantise, naming them", function()
    ft.manual_seed(4)
    local m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    H.assert_mentions(H.error_of(ft.quant.quantize, m, "nf4", { modules = "0" }), "module 0", "Conv2d", "nn.Linear")
    local e = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    H.assert_mentions(H.error_of(ft.quant.quantize, e, "nf4", { modules = { "0", "1" } }), "module 0", "Embedding")
    assert.is_nil(ft.quant.is_quantized(e[2]))   -- nothing changed
    H.assert_mentions(H.error_of(ft.quant.quantize, e, "nf4", { modules = "head" }), "head", "match no module")
    H.assert_mentions(H.error_of(ft.quant.quantize, e, "q4"), "unknown quantisation kind", "nf4, int8")
    H.assert_mentions(H.error_of(ft.quant.quantize, e, "nf4", { module = "1" }), "module", "modules")
    -- default: every Linear, the others untouched
    ft.quant.quantize(m, "nf4")
    assert.same({ { "2", "nf4" } }, ft.quant.modules(m))
  end)

  it("refuses to quantise under adapters, other kinds over quantised layers, and writes to the weight", function()
    local m = mlp()
    ft.peft.lora(m, { target = "0", r = 2 })
    H.assert_mentions(H.error_of(ft.quant.quantize, m, "nf4", { modules = "0" }), "module 0", "before attaching adapters")
    local m2 = mlp()
    ft.quant.quantize(m2, "nf4")
    H.assert_mentions(H.error_of(ft.quant.quantize, m2, "int8"), "quantised as nf4 already")
    H.assert_mentions(H.error_of(ft.peft.lora, m2, { target = "0", r = 2, dora = true }), "quantised (nf4)")
    H.assert_mentions(H.error_of(function() m2[1].weight.foo = 1 end), "frozen", "foo")
    m2[1].weight.requires_grad = false   -- freezing code may say so
  end)
end)
