-- ft.nn.SyncBatchNorm in a world of one (one process, no mpirun): it must compute what
-- ft.nn.BatchNorm computes (outputs, gradients of input, weight and bias, running statistics)
-- up to float32 rounding in training, and exactly in eval mode; SyncBatchNorm.convert must
-- replace every BatchNorm of a ResNet-S and keep its outputs; bad options are errors.
-- tests/dist/sync_batch_norm.lua checks it across ranks under mpirun.
local ft = require "ft"
local H = require "helpers"

local nn = ft.nn

-- A BatchNorm and a SyncBatchNorm with the same options and the same random weight and bias.
local function pair(c, opts)
  local ref, sync = nn.BatchNorm(c, opts), nn.SyncBatchNorm(c, opts)
  if ref.weight then
    local w, b = ft.randn(c), ft.randn(c)
    ft.no_grad(function()
      for _, m in ipairs({ ref, sync }) do
        m.weight:copy_(w)
        m.bias:copy_(b)
      end
    end)
  end
  return ref, sync
end

-- Runs both layers on the same input and output gradient; checks output and gradients.
local function step(ref, sync, shape, what)
  local x = ft.randn(table.unpack(shape)) * 2 + 3
  local gy = ft.randn(table.unpack(shape))
  local xr, xs = x:clone(), x:clone()
  xr.requires_grad, xs.requires_grad = true, true
  local yr, ys = ref(xr), sync(xs)
  ;(yr * gy):sum():backward()
  ;(ys * gy):sum():backward()
  H.assert_close(ys, yr, 1e-5, what .. ": output")
  H.assert_close(xs.grad, xr.grad, 1e-5, what .. ": input gradient")
  if ref.weight then
    H.assert_close(sync.weight.grad, ref.weight.grad, 1e-5, what .. ": weight gradient")
    H.assert_close(sync.bias.grad, ref.bias.grad, 1e-5, what .. ": bias gradient")
  end
end

local function check_stats(ref, sync, what)
  H.assert_close(sync.running_mean, ref.running_mean, 1e-5, what .. ": running_mean")
  H.assert_close(sync.running_var, ref.running_var, 1e-5, what .. ": running_var")
  H.assert_equal_ints(sync.num_batches_tracked, ref.num_batches_tracked, what .. ": num_batches_tracked")
end

describe("SyncBatchNorm in a world of one", function()
  for _, shape in ipairs({ { 16, 5 }, { 6, 5, 7 }, { 4, 5, 6, 6 } }) do
    local what = ("[%s]"):format(table.concat(shape, ","))
    it("trains as BatchNorm on " .. what .. ": outputs, gradients, running statistics", function()
      ft.manual_seed(1)
      local ref, sync = pair(5, { momentum = 0.3 })
      for s = 1, 3 do
        step(ref, sync, shape, what .. " step " .. s)
        check_stats(ref, sync, what .. " step " .. s)
        ref.weight.grad, ref.bias.grad, sync.weight.grad, sync.bias.grad = nil, nil, nil, nil
      end
      assert.equal(3, sync.num_batches_tracked:item())
    end)
  end

  it("without affine parameters or running statistics, as BatchNorm", function()
    ft.manual_seed(2)
    local ref, sync = pair(4, { affine = false })
    step(ref, sync, { 8, 4, 3, 3 }, "affine = false")
    check_stats(ref, sync, "affine = false")
    assert.is_nil(sync.weight)
    ref, sync = pair(4, { track_running_stats = false })
    step(ref, sync, { 8, 4 }, "track_running_stats = false")
    assert.is_nil(sync.running_mean)
    -- in eval mode without running statistics: this rank's batch statistics, as BatchNorm
    ref:eval()
    sync:eval()
    local x = ft.randn(8, 4)
    H.assert_bits_equal(sync(x), ref(x), "eval mode without running statistics")
  end)

  it("uses the running statistics in eval mode exactly as BatchNorm, and bn_policy 'eval' too", function()
    ft.manual_seed(3)
    local ref, sync = pair(3)
    step(ref, sync, { 6, 3, 4, 4 }, "training")
    sync:load_state_dict(ref:state_dict())
    local x = ft.randn(5, 3, 4, 4) * 2 + 3
    ref:eval()
    sync:eval()
    H.assert_bits_equal(sync(x), ref(x), "eval mode")
    sync:train()
    sync.bn_policy = "eval"
    local before = ft.clone_state_dict(sync:state_dict())
    H.assert_bits_equal(sync(x), ref(x), "training under bn_policy 'eval'")
    for k, t in pairs(before) do
      H.assert_bits_equal(sync:state_dict()[k]:to("float32"), t:to("float32"), k .. " under bn_policy 'eval'")
    end
    sync.bn_policy = "train"
    sync(x)
    assert.equal(2, sync.num_batches_tracked:item())
  end)

  it("is a BatchNorm with BatchNorm's names and printed form", function()
    local sync = nn.SyncBatchNorm(8, { eps = 1e-3 })
    assert.equal("SyncBatchNorm(8, eps=0.001, momentum=0.1, affine=True, track_running_stats=True)", tostring(sync))
    local _, keys = sync:state_dict()
    assert.same({ "weight", "bias", "running_mean", "running_var", "num_batches_tracked" }, keys)
    assert.equal(nn.BatchNorm, nn.SyncBatchNorm.super)
  end)

  it("refuses bad options and inputs", function()
    H.assert_mentions(H.error_of(nn.SyncBatchNorm, 3, { epss = 1 }), "ft.nn.SyncBatchNorm", "epss", "'eps'")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm, 0), "ft.nn.SyncBatchNorm", "num_features")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm), "ft.nn.SyncBatchNorm", "num_features")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm, 3, { momentum = 2 }), "momentum", "[0, 1]")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm, 3, { eps = 0 }), "eps")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm, 3, { affine = "yes" }), "affine")
    local sync = nn.SyncBatchNorm(3)
    H.assert_mentions(H.error_of(function() return sync(ft.randn(3)) end), "SyncBatchNorm", "at least 2D", "1D")
    H.assert_mentions(H.error_of(function() return sync(ft.randn(2, 4)) end), "3 channels", "[2,4]")
    H.assert_mentions(H.error_of(function() return sync({}) end), "expected a tensor")
    H.assert_mentions(H.error_of(function() return sync(ft.randn(1, 3)) end), "more than 1 value per channel")
  end)
end)

describe("SyncBatchNorm.convert", function()
  local function small_resnet(seed)
    ft.manual_seed(seed)
    return ft.models.new("resnet-s", { widths = { 4, 8, 8 }, layers = { 2, 1, 1 } })
  end

  local function batch_norm_names(model, class)
    local names = {}
    for name, m in model:named_modules() do
      if m.__name == class then names[#names + 1] = name end
    end
    return names
  end

  it("replaces every BatchNorm of a ResNet-S, keeping tensors, modes, policies and outputs", function()
    local ref, model = small_resnet(5), small_resnet(5)
    local bn_names = batch_norm_names(model, "BatchNorm2d")
    assert.equal(11, #bn_names)   -- stem, 4 blocks x 2, 2 downsamples (layer2.0.downsample.1 ...)
    local tensors, keys_before = model:state_dict({ keep_vars = true })
    model.layer3[1].bn2:eval()
    ft.peft.bn_policy(model, { "^layer1%.0" }, "eval")
    local opt = ft.optim.SGD(model:parameters(), { lr = 0.1 })   -- built before the conversion

    assert.equal(model, nn.SyncBatchNorm.convert(model))
    assert.same(bn_names, batch_norm_names(model, "SyncBatchNorm"))
    assert.same({}, batch_norm_names(model, "BatchNorm2d"))
    local after, keys_after = model:state_dict({ keep_vars = true })
    assert.same(keys_before, keys_after)
    for _, k in ipairs(keys_before) do assert(rawequal(tensors[k], after[k]), k .. " is not the same tensor") end
    assert.is_false(model.layer3[1].bn2.training)
    assert.is_true(model.layer3[1].bn1.training)
    assert.equal("eval", model.layer1[1].bn1.bn_policy)
    assert.is_nil(model.layer2[1].bn1.bn_policy)
    assert.equal(0.1, model.layer2[1].downsample[2].momentum)
    assert.is_true(tostring(model):find("(1): SyncBatchNorm(8, eps=1e-05", 1, true) ~= nil)

    -- training mode: the same outputs and gradients (float32 rounding), the same statistics
    ref.layer3[1].bn2:eval()
    ft.peft.bn_policy(ref, { "^layer1%.0" }, "eval")
    ft.manual_seed(9)
    local x = ft.randn(6, 1, 10, 10)
    local y = ft.randint(1, 10, { 6 })
    local lr, ls = ft.nn.functional.cross_entropy(ref(x), y), ft.nn.functional.cross_entropy(model(x), y)
    H.assert_close(ls, lr, 1e-5, "training-mode loss")
    lr:backward()
    ls:backward()
    local ref_params = {}
    for name, p in ref:named_parameters() do ref_params[name] = p end
    for name, p in model:named_parameters() do
      H.assert_close(p.grad, ref_params[name].grad, 1e-5, name .. " gradient")
    end
    local ref_sd = ref:state_dict()
    for _, k in ipairs(keys_after) do H.assert_close(after[k]:to("float32"), ref_sd[k]:to("float32"), 1e-5, k) end
    opt:step()   -- the optimizer made before the conversion trains the converted model
    assert.is_true(H.max_abs(after["fc.weight"] - ref_sd["fc.weight"]) > 0)

    -- eval mode: exactly BatchNorm's computation
    model:load_state_dict(ref_sd)
    ref:eval()
    model:eval()
    H.assert_bits_equal(model(x), ref(x), "eval-mode logits")
  end)

  it("converts a bare BatchNorm, a layer under two names once, and leaves SyncBatchNorm alone", function()
    local bn = nn.BatchNorm1d(3, { eps = 1e-3, momentum = 0.2, affine = false })
    bn:eval()
    local sync = nn.SyncBatchNorm.convert(bn)
    assert.equal("SyncBatchNorm", sync.__name)
    assert.is_true(rawequal(bn.running_var, sync.running_var))
    assert.equal(1e-3, sync.eps)
    assert.equal(0.2, sync.momentum)
    assert.is_false(sync.affine)
    assert.is_nil(sync.weight)
    assert.is_false(sync.training)

    local shared = nn.BatchNorm2d(2)
    local seq = nn.Sequential(shared, nn.ReLU(), shared, nn.SyncBatchNorm(2))
    local kept = seq[4]
    nn.SyncBatchNorm.convert(seq)
    assert.equal("SyncBatchNorm", seq[1].__name)
    assert.equal(seq[1], seq[3])
    assert.equal(kept, seq[4])
    assert.equal("ReLU", seq[2].__name)
    assert.equal(seq, nn.SyncBatchNorm.convert(seq))
    assert.equal(kept, seq[4])
  end)

  it("refuses what is not a module", function()
    H.assert_mentions(H.error_of(nn.SyncBatchNorm.convert, {}), "ft.nn.SyncBatchNorm.convert", "ft.nn.Module")
    H.assert_mentions(H.error_of(nn.SyncBatchNorm.convert, nil), "ft.nn.SyncBatchNorm.convert")
  end)
end)
