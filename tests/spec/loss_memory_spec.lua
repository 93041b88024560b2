-- Cross-entropy reads its logits where they are: a strided view gives the same numbers as a
-- contiguous copy, bit for bit, and the causal LM loss over [B, T, V] logits allocates no
-- second [B*T, V] float32 block in forward and one gradient's worth in backward.
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional
local common = require "ft.models.common"

-- Every element equal (==), the shapes too.
local function assert_identical(actual, expected, what)
  assert.are.same(expected:shape(), actual:shape(), what .. ": shape")
  local a, e = H.flat(actual), H.flat(expected)
  for i = 1, #e do
    if a[i] ~= e[i] then
      error(("%s: element %d is %.9g, expected %.9g"):format(what, i, a[i], e[i]), 2)
    end
  end
end

-- Labels 1..V [B, T] with a few -100 (HF's ignored positions).
local function labels_of(B, T, V)
  local rows = ft.randint(1, V, { B, T }):totable()
  rows[1][2] = -100
  rows[B][T - 1] = -100
  return ft.tensor(rows, { dtype = "int64" })
end

local OPTIONS = {
  {},
  { reduction = "sum" },
  { reduction = "none" },
  { label_smoothing = 0.1 },
  { ignore_index = 3, label_smoothing = 0.2, reduction = "sum" },
  { ignore_index = 3, reduction = "none" },
}

describe("cross_entropy on strided logits", function()
  -- [N, C] rows with a stride: the first C columns of a wider block, gradient included.
  it("a row-strided [N, C] view equals its contiguous copy bit for bit", function()
    ft.manual_seed(3)
    local N, C = 9, 17
    local target = ft.randint(1, C, { N })
    for _, opts in ipairs(OPTIONS) do
      local wide = ft.randn(N, C + 5)
      wide.requires_grad = true
      local view = wide:narrow(2, 3, C)
      assert.is_false(view:is_contiguous())
      local copy = view:detach():contiguous()
      copy.requires_grad = true
      local lv, lc = F.cross_entropy(view, target, opts), F.cross_entropy(copy, target, opts)
      assert_identical(lv, lc, "loss")
      lv:sum():backward()
      lc:sum():backward()
      assert_identical(wide.grad:narrow(2, 3, C), copy.grad, "gradient")
      H.assert_close(wide.grad:narrow(2, 1, 2), ft.zeros(N, 2), 0, "gradient outside the view")
    end
  end)

  it("a transposed [N, C] view and a permuted [N, C, d] view match their copies", function()
    ft.manual_seed(4)
    local N, C, D = 6, 11, 4
    local t2 = ft.randint(1, C, { N })
    local t3 = ft.randint(1, C, { N, D })
    for _, opts in ipairs(OPTIONS) do
      local base = ft.randn(C, N)
      base.requires_grad = true
      local copy = base:detach():t():contiguous()
      copy.requires_grad = true
      local lv, lc = F.cross_entropy(base:t(), t2, opts), F.cross_entropy(copy, t2, opts)
      H.assert_close(lv, lc, 1e-6, "transposed loss")
      lv:sum():backward()
      lc:sum():backward()
      H.assert_close(base.grad:t(), copy.grad, 1e-6, "transposed gradient")

      local b3 = ft.randn(N, D, C)
      b3.requires_grad = true
      local c3 = b3:detach():permute(1, 3, 2):contiguous()
      c3.requires_grad = true
      local l3, m3 = F.cross_entropy(b3:permute(1, 3, 2), t3, opts), F.cross_entropy(c3, t3, opts)
      H.assert_close(l3, m3, 1e-6, "permuted loss")
      l3:sum():backward()
      m3:sum():backward()
      H.assert_close(b3.grad:permute(1, 3, 2), c3.grad, 1e-6, "permuted gradient")
    end
  end)
end)

describe("causal_lm_loss", function()
  it("equals cross-entropy over the contiguous shifted logits, bit for bit", function()
    ft.manual_seed(5)
    local B, T, V = 3, 7, 50
    local logits = ft.randn(B, T, V)
    logits.requires_grad = true
    local labels = labels_of(B, T, V)
    local shifted = logits:detach():narrow(2, 1, T - 1):contiguous():reshape(-1, V)
    shifted.requires_grad = true
    local expected = F.cross_entropy(shifted, labels:narrow(2, 2, T - 1):contiguous():reshape(-1),
                                     { ignore_index = -100 })
    local loss = common.causal_lm_loss(logits, labels)
    assert_identical(loss, expected, "loss")
    loss:backward()
    expected:backward()
    assert_identical(logits.grad:narrow(2, 1, T - 1):reshape(-1, V), shifted.grad, "gradient")
    assert_identical(logits.grad:narrow(2, T, 1), ft.zeros(B, 1, V), "gradient of the last position")
  end)

  it("takes 1-D labels for one sequence and gives NaN when nothing is scored", function()
    ft.manual_seed(6)
    local logits = ft.randn(1, 5, 8)
    local labels = labels_of(1, 5, 8)
    assert_identical(common.causal_lm_loss(logits, labels:reshape(-1)), common.causal_lm_loss(logits, labels),
                     "1-D labels")
    local none = common.causal_lm_loss(logits, ft.full({ 1, 5 }, -100, { dtype = "int64" })):item()
    assert.is_true(none ~= none)
  end)

  -- Logits as an LM head makes them ([B, T, D] @ W^T, W frozen): the loss's own allocations
  -- are what the peak counters see above the logits.
  for _, B in ipairs({ 1, 2 }) do
    it(("allocates no second copy of [%d, 128, 32000] logits in forward, one gradient in backward"):format(B),
      function()
      ft.manual_seed(7)
      local T, V, D = 128, 32000, 8
      local h = ft.randn(B, T, D)
      h.requires_grad = true
      local W = ft.randn(V, D)
      local logits = F.linear(h, W)
      local labels = labels_of(B, T, V)
      local one = logits:numel() * 4
      collectgarbage()
      collectgarbage()
      local base = ft.live_bytes()
      ft.reset_peak_bytes()
      local loss = common.causal_lm_loss(logits, labels)
      local forward = ft.peak_bytes() - base
      assert.is_true(forward < 0.1 * one,
        ("forward peaked %d bytes above the logits' %d"):format(forward, one))
      local after = ft.live_bytes()
      ft.reset_peak_bytes()
      loss:backward()
      local backward = ft.peak_bytes() - after
      assert.is_true(backward < 1.1 * one,
        ("backward peaked %d bytes above forward, one gradient is %d"):format(backward, one))
      assert.is_true(backward >= one, "backward wrote the logits' gradient")
    end)
  end
end)
