-- ft.nn.SyncBatchNorm in a world of one: BatchNorm's numbers (the statistics are summed over one
-- rank; the variance is E[x^2] - mean^2, so up to float32 rounding), and convert, which swaps
-- every BatchNorm of a model in place. Several ranks: tests/dist/sync_batch_norm.lua.
local ft = require "ft"
local H = require "helpers"

local function twin(c, opts)
  ft.manual_seed(4)
  local bn = ft.nn.BatchNorm(c, opts)
  local sync = ft.nn.SyncBatchNorm(c, opts)
  if bn.weight then
    ft.no_grad(function()
      bn.weight:copy_(ft.rand(c) + 0.5)
      bn.bias:copy_(ft.randn(c))
      sync.weight:copy_(bn.weight)
      sync.bias:copy_(bn.bias)
    end)
  end
  return bn, sync
end

local function grads(layer, x, g)
  local xi = x:clone()
  xi.requires_grad = true
  local y = layer(xi)
  ;(y * g):sum():backward()
  return y, xi.grad, layer.weight and layer.weight.grad, layer.bias and layer.bias.grad
end

describe("ft.nn.SyncBatchNorm in a world of one", function()
  for _, shape in ipairs({ { 6, 3 }, { 4, 3, 5 }, { 2, 3, 4, 4 } }) do
    it("computes BatchNorm's output, gradients and running statistics for " .. H.shape_str(shape), function()
      local bn, sync = twin(3)
      ft.manual_seed(9)
      local x = ft.randn(shape) * 2 + 1
      local g = ft.randn(shape)
      for _ = 1, 2 do
        local a = { grads(bn, x, g) }
        local b = { grads(sync, x, g) }
        for i = 1, 4 do H.assert_close(b[i], a[i], 1e-5, ("result %d"):format(i)) end
        bn:zero_grad()
        sync:zero_grad()
      end
      H.assert_close(sync.running_mean, bn.running_mean, 1e-6, "running_mean")
      H.assert_close(sync.running_var, bn.running_var, 1e-5, "running_var")
      assert.are.equal(bn.num_batches_tracked:item(), sync.num_batches_tracked:item())
      bn:eval()
      sync:eval()
      H.assert_close(sync(x), bn(x), 1e-5, "eval mode (running statistics equal up to rounding)")
    end)
  end

  it("follows bn_policy 'eval' and works without affine parameters", function()
    local bn, sync = twin(3, { affine = false })
    local x = ft.randn(4, 3)
    bn.bn_policy, sync.bn_policy = "eval", "eval"
    H.assert_bits_equal(sync(x), bn(x), "bn_policy eval")
    assert.are.equal(0, sync.num_batches_tracked:item())
    bn.bn_policy, sync.bn_policy = nil, nil
    H.assert_close(sync(x), bn(x), 1e-5, "no affine")
  end)

  it("convert swaps every BatchNorm of a ResNet-S and keeps its numbers", function()
    ft.manual_seed(2)
    local model = ft.models.new("resnet-s", { widths = { 8, 16, 32 }, layers = { 1, 1, 1 }, num_classes = 3 })
    local x = ft.randn(4, 1, 16, 16)
    model:eval()
    local before = model(x)
    local params = model:parameters()
    local n_bn = 0
    for _, m in model:named_modules() do if m.__name == "BatchNorm2d" then n_bn = n_bn + 1 end end
    assert.is_true(n_bn > 0)
    assert.are.equal(model, ft.nn.SyncBatchNorm.convert(model))
    local n_sync = 0
    for _, m in model:named_modules() do
      assert.are_not.equal("BatchNorm2d", m.__name)
      if m.__name == "SyncBatchNorm" then n_sync = n_sync + 1 end
    end
    assert.are.equal(n_bn, n_sync)
    local after = model:parameters()
    for i, p in ipairs(params) do assert.are.equal(p, after[i], "the same parameter tensors") end
    H.assert_bits_equal(model(x), before, "eval output after convert")
  end)

  it("names what is wrong", function()
    H.assert_mentions(H.error_of(function() ft.nn.SyncBatchNorm(3)(ft.randn(4, 5)) end), "expected 3 channels at dim 2")
    H.assert_mentions(H.error_of(function() ft.nn.SyncBatchNorm(3)(ft.randn(1, 3)) end),
      "expected more than 1 value per channel")
    H.assert_mentions(H.error_of(function() ft.nn.SyncBatchNorm(3, { momentun = 0.1 }) end), "unknown option 'momentun'")
    H.assert_mentions(H.error_of(function() ft.nn.SyncBatchNorm.convert({}) end), "an ft.nn.Module")
  end)
end)
