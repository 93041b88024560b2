-- The matmul precision (ft.set_matmul_precision). Under "bfloat16", a product with a bfloat16
-- weight rounds its other operand to bfloat16 and multiplies exactly with float32 sums: the
-- forward and the input gradient against torch rounding the activations (and output gradients)
-- and multiplying in float64 (tests/fixtures/half/bf16_products.safetensors from
-- tests/gen/half.py), the weight as given or transposed, grouped products; quantised linears
-- against the float32 product of their operands rounded to bfloat16; a bfloat16 model within
-- bfloat16's error of the float32 computation; the setting, the environment variable and their
-- errors. Where the CPU has no bfloat16 kernel, "bfloat16" must compute exactly as "float32".
local ft = require "ft"
local H = require "helpers"

local F = ft.nn.functional
local fx = ft.safetensors.load(H.fixture("half/bf16_products.safetensors"))
local has_kernel = ft.kernels().matmul_bf16 ~= nil
-- float32 sums of K exact products against float64 ones: K * 2^-24 of the magnitudes' sum at
-- most, well inside 1e-5 of the scale at these sizes
local RTOL = 1e-5

local function case(name) return H.case_of(fx, name) end

-- fn() under the matmul precision p, restoring the previous one even when fn fails.
local function with_precision(p, fn)
  local previous = ft.set_matmul_precision(p)
  local ok, a, b = pcall(fn)
  ft.set_matmul_precision(previous)
  if not ok then error(a, 0) end
  return a, b
end

-- y and dx of F.linear(x, w, b) with the output gradient g, under precision p.
local function linear_run(p, x, w, b, g)
  return with_precision(p, function()
    local xl = x:clone():requires_grad_()
    local y = F.linear(xl, w, b)
    y:backward(g)
    return y:detach(), xl.grad
  end)
end

describe("bfloat16 matmul precision", function()
  it("starts at float32 and reports itself in ft.kernels()", function()
    assert.are.equal("float32", ft.get_matmul_precision())
    assert.are.equal("float32", ft.kernels().matmul_precision)
    with_precision("bfloat16", function()
      assert.are.equal("bfloat16", ft.get_matmul_precision())
      assert.are.equal("bfloat16", ft.kernels().matmul_precision)
    end)
  end)

  for _, name in ipairs({ "small", "wide" }) do
    it(name .. ": linear's forward and input gradient as torch rounding the other operand", function()
      local c = case(name)
      local w = c.w:to("bfloat16")
      local y, dx = linear_run("bfloat16", c.x, w, c.b, c.g)
      local y32, dx32 = linear_run("float32", c.x, w, c.b, c.g)
      if not has_kernel then
        H.assert_bits_equal(y, y32, "no bfloat16 kernel: float32 forward")
        H.assert_bits_equal(dx, dx32, "no bfloat16 kernel: float32 input gradient")
        return
      end
      H.assert_close(y, c.y, RTOL, name .. " forward")
      H.assert_close(dx, c.dx, RTOL, name .. " input gradient")
      -- the rounding happened: the float32 product is far from the rounded one
      assert.is_true(H.max_abs(y - y32) > 100 * RTOL * math.max(1, H.max_abs(c.y)), "activations were rounded")
    end)
  end

  it("reads a transposed (column-major) weight through its strides", function()
    local c = case("small")
    local wt = c.w:t():contiguous():to("bfloat16"):t()   -- [out, in] with strides (1, out)
    assert.are.same({ 1, 129 }, { wt:stride(1), wt:stride(2) })
    local y, dx = linear_run("bfloat16", c.x, wt, c.b, c.g)
    local ya, dxa = linear_run("bfloat16", c.x, c.w:to("bfloat16"), c.b, c.g)
    H.assert_close(y, ya, RTOL, "forward, transposed weight")
    H.assert_close(dx, dxa, RTOL, "input gradient, transposed weight")
    if has_kernel then H.assert_close(y, c.y, RTOL, "forward against torch") end
  end)

  it("grouped_linear: each group as torch, an empty group included", function()
    local c = case("grouped")
    local w = c.w:to("bfloat16")
    local y, dx = with_precision("bfloat16", function()
      local xl = c.x:clone():requires_grad_()
      local out = F.grouped_linear(xl, w, { 10, 0, 30 })
      out:backward(c.g)
      return out:detach(), xl.grad
    end)
    if has_kernel then
      H.assert_close(y, c.y, RTOL, "grouped forward")
      H.assert_close(dx, c.dx, RTOL, "grouped input gradient")
    else
      H.assert_bits_equal(y, with_precision("float32", function()
        return ft.no_grad(function() return F.grouped_linear(c.x, w, { 10, 0, 30 }) end)
      end), "no bfloat16 kernel: float32 grouped forward")
    end
  end)

  it("leaves float32 and float16 weights alone", function()
    local c = case("small")
    for _, dtype in ipairs({ "float32", "float16" }) do
      local w = c.w:to(dtype)
      local y, dx = linear_run("bfloat16", c.x, w, c.b, c.g)
      local y32, dx32 = linear_run("float32", c.x, w, c.b, c.g)
      H.assert_bits_equal(y, y32, dtype .. " weight forward")
      H.assert_bits_equal(dx, dx32, dtype .. " weight input gradient")
    end
  end)

  for _, kind in ipairs({ "nf4", "int8" }) do
    it(kind .. " linear: the product of the operands rounded to bfloat16, over several tiles", function()
      ft.manual_seed(5)
      -- 600 rows of 4096: 256 rows a dequantisation tile, so three tiles and two accumulations
      local q = ft._quant.quantize(ft.randn(600, 4096) * 0.05, kind, false)
      local x, b, g = ft.randn(19, 4096), ft.randn(600), ft.randn(19, 600)
      local y, dx = with_precision("bfloat16", function()
        local xl = x:clone():requires_grad_()
        local out = ft._quant.linear(xl, q, b)
        out:backward(g)
        return out:detach(), xl.grad
      end)
      local wr = q:dequantize():to("bfloat16")
      local ye, dxe = linear_run("float32", has_kernel and x:to("bfloat16"):to("float32") or x, wr, b,
        has_kernel and g:to("bfloat16"):to("float32") or g)
      if has_kernel then
        H.assert_close(y, ye, RTOL, kind .. " forward")
        H.assert_close(dx, dxe, RTOL, kind .. " input gradient")
      else
        H.assert_bits_equal(y, ft.no_grad(function() return ft._quant.linear(x, q, b) end), "float32 forward")
      end
    end)
  end

  it("a bfloat16 Llama: logits and LoRA gradients within bfloat16's error of float32 compute", function()
    local dir = H.fixture("golden") .. "/hf_llama"
    local ids = ft.safetensors.load(dir .. "/reference.safetensors").input_ids + 1
    local function run(p)
      ft.manual_seed(3)
      local m = ft.models.from_pretrained(dir, { dtype = "bfloat16" })
      ft.peft.lora(m, { target = { "q_proj", "v_proj" }, r = 4 })
      for _, prm in ipairs(m:parameters()) do
        if prm.requires_grad then ft.no_grad(function() prm:normal_(0, 0.05) end) end
      end
      return with_precision(p, function()
        local out = m(ids, { labels = ids })
        out.loss:backward()
        local grads = {}
        for name, prm in m:named_parameters() do
          if prm.requires_grad then grads[name] = prm.grad end
        end
        return out.logits:detach(), grads
      end)
    end
    local l16, g16 = run("bfloat16")
    local l32, g32 = run("float32")
    local scale = H.max_abs(l32)
    local gap = H.max_abs(l16 - l32) / scale
    if not has_kernel then
      assert.are.equal(0, gap)
      return
    end
    -- activations rounded to bfloat16 (unit roundoff 2^-9) through a few layers
    assert.is_true(gap > 1e-5 and gap < 3e-2, ("logits differ by %.3g of their scale"):format(gap))
    local n = 0
    for name, g in pairs(g32) do
      local d = H.max_abs(g16[name] - g) / math.max(H.max_abs(g), 1e-12)
      assert.is_true(d < 5e-2, ("%s: gradient off by %.3g of its scale"):format(name, d))
      n = n + 1
    end
    assert.is_true(n > 0, "no trainable parameters compared")
  end)

  it("refuses an unknown precision, naming it and the valid ones", function()
    H.assert_mentions(H.error_of(ft.set_matmul_precision, "fp16"), "set_matmul_precision", "'fp16'",
      "float32", "bfloat16")
    assert.are.equal("float32", ft.get_matmul_precision())
  end)

  it("FT_MATMUL_PRECISION sets the start value; a bad one fails every linear, naming it", function()
    local ftlua = os.getenv("FTLUA") or "build/ftlua"
    local probe = H.quote("local ft = require 'ft'; io.write(ft.get_matmul_precision(), ' ', " ..
      "tostring(select(2, pcall(ft.nn.functional.linear, ft.ones(2, 3), ft.ones(4, 3)))))")
    local ok, out = H.run("FT_MATMUL_PRECISION=bfloat16 " .. ftlua .. " -e " .. probe)
    assert.is_true(ok, out)
    assert.is_truthy(out:find("^bfloat16 "), out)
    ok, out = H.run("FT_MATMUL_PRECISION=half " .. ftlua .. " -e " .. probe)
    assert.is_true(ok, out)
    H.assert_mentions(out, "invalid", "linear", "FT_MATMUL_PRECISION=half", "float32, bfloat16")
  end)
end)
