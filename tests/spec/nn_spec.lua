-- ft.nn: the Module API, the layers, ft.nn.functional's own logic and the ResNet builder,
-- checked against PyTorch (fixtures from tests/gen/nn.py).
local ft = require "ft"
local H = require "helpers"
local resnet = require "ft.models.resnet"

local nn = ft.nn
local F = nn.functional

local function keys_of(iter)
  local names = {}
  for name in iter do names[#names + 1] = name end
  return names
end

-- Fixture groups: prefix "grad" -> {["conv1.weight"] = t, ...}
local function with_prefix(flat, prefix)
  local out = {}
  for k, v in pairs(flat) do
    local rest = k:match("^" .. prefix:gsub("%.", "%%.") .. "%.(.+)$")
    if rest then out[rest] = v end
  end
  return out
end

-- torch's 0-based class ids -> Lua's 1-based; torch's ignore value -100 stays -100.
local function labels(t)
  local v, shape = H.flat(t)
  for i = 1, #v do v[i] = math.tointeger(v[i] == -100 and -100 or v[i] + 1) end
  return H.from_flat(v, shape, "int64")
end

describe("ft.nn.Module", function()
  local Block = nn.Module:extend("Block")
  function Block:init(d)
    self.fc = nn.Linear(d, d)
    self.scale = nn.Parameter(ft.ones(d))
    self:register_buffer("count", ft.zeros(1))
    self.norm = nn.LayerNorm(d)
    self.note = "plain field"
  end
  function Block:forward(x) return self.norm(self.fc(x):relu() * self.scale + x) end

  it("registers parameters, buffers and submodules in assignment order", function()
    local b = Block(4)
    assert.same({ "scale", "fc.weight", "fc.bias", "norm.weight", "norm.bias" }, keys_of(b:named_parameters()))
    assert.same({ "count" }, keys_of(b:named_buffers()))
    assert.same({ "", "fc", "norm" }, keys_of(b:named_modules()))
    local children = b:children()
    assert.equal(2, #children)
    assert.equal(b.fc, children[1])
    assert.equal("plain field", b.note)
    assert.equal(5, #b:parameters())
    assert.equal(4 * 4 + 4 + 4 + 4 + 4, b:num_parameters())
    local sd, order = b:state_dict()
    assert.same({ "scale", "count", "fc.weight", "fc.bias", "norm.weight", "norm.bias" }, order)
    assert.same({ 4, 4 }, sd["fc.weight"]:shape())
  end)

  it("is callable and runs forward", function()
    local b = Block(4)
    local y = b(ft.randn(3, 4))
    assert.same({ 3, 4 }, y:shape())
  end)

  it("replaces and removes registered members", function()
    local b = Block(4)
    b.fc = nn.Linear(4, 4, { bias = false })
    assert.same({ "scale", "fc.weight", "norm.weight", "norm.bias" }, keys_of(b:named_parameters()))
    b.norm = nil
    assert.same({ "", "fc" }, keys_of(b:named_modules()))
    b:register_parameter("extra", ft.zeros(2))
    assert.same({ "scale", "extra", "fc.weight" }, keys_of(b:named_parameters()))
    local msg = H.error_of(function() b.scale = ft.ones(4) end)
    H.assert_mentions(msg, "scale", "parameter")
  end)

  it("keeps frozen parameters in parameters() and freezes with requires_grad_", function()
    local m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    m[1]:requires_grad_(false)
    assert.equal(4, #m:parameters())
    assert.is_false(m[1].weight.requires_grad)
    assert.is_true(m[3].weight.requires_grad)
    assert.equal(4, m:num_parameters({ trainable = true }))
  end)

  it("switches train/eval recursively and applies functions to every module", function()
    local m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5)))
    assert.is_true(m[2][1].training)
    m:eval()
    assert.is_false(m.training)
    assert.is_false(m[2][1].training)
    m:train()
    assert.is_true(m[2][1].training)
    local names = {}
    m:apply(function(mod) names[#names + 1] = mod.__name end)
    assert.same({ "Linear", "Dropout", "Sequential", "Sequential" }, names)
  end)

  it("zero_grad drops gradients", function()
    local m = nn.Linear(3, 2)
    m(ft.randn(4, 3)):sum():backward()
    assert.is_not_nil(m.weight.grad)
    m:zero_grad()
    assert.is_nil(m.weight.grad)
    assert.is_nil(m.bias.grad)
  end)

  it("prints the module tree as torch does", function()
    local m = nn.Sequential(nn.Conv2d(1, 8, 3, { padding = 1, bias = false }), nn.BatchNorm2d(8), nn.ReLU(),
      nn.MaxPool2d(2), nn.Sequential(nn.Linear(8, 2), nn.GELU({ approximate = "tanh" })), nn.LayerNorm(2),
      nn.Dropout(0.25), nn.Conv2d(4, 8, { 3, 5 }, { stride = 2, groups = 2, dilation = { 1, 2 } }),
      nn.AdaptiveAvgPool2d({ 1, 1 }), nn.Embedding(10, 3), nn.AvgPool2d(2))
    -- repr() of the same torch.nn.Sequential
    local expected = [[
Sequential(
  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (2): ReLU()
  (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (4): Sequential(
    (0): Linear(in_features=8, out_features=2, bias=True)
    (1): GELU(approximate='tanh')
  )
  (5): LayerNorm((2,), eps=1e-05, elementwise_affine=True)
  (6): Dropout(p=0.25, inplace=False)
  (7): Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), dilation=(1, 2), groups=2)
  (8): AdaptiveAvgPool2d(output_size=(1, 1))
  (9): Embedding(10, 3)
  (10): AvgPool2d(kernel_size=2, stride=2, padding=0)
)]]
    assert.equal(expected, tostring(m))
  end)

  it("initialises as torch does and reproducibly from the seed", function()
    ft.manual_seed(7)
    local a = nn.Linear(100, 50)
    ft.manual_seed(7)
    local b = nn.Linear(100, 50)
    H.assert_close(a.weight, b.weight, 0, "same seed")
    -- kaiming_uniform(a=sqrt(5)) and the bias both give U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    local bound = 1 / math.sqrt(100)
    assert.is_true(H.max_abs(a.weight) <= bound)
    assert.is_true(H.max_abs(a.weight) > 0.9 * bound)
    assert.is_true(H.max_abs(a.bias) <= bound)
    local bn = nn.BatchNorm2d(3)
    assert.same({ 1, 1, 1 }, bn.weight:totable())
    assert.same({ 0, 0, 0 }, bn.running_mean:totable())
    assert.same({ 1, 1, 1 }, bn.running_var:totable())
    assert.equal("int64", bn.num_batches_tracked:dtype())
    assert.same({}, bn.num_batches_tracked:shape())
  end)
end)

describe("BatchNorm2d train/eval", function()
  it("uses batch statistics and updates running ones only in training", function()
    ft.manual_seed(3)
    local bn = nn.BatchNorm2d(2)
    local x = ft.randn(8, 2, 3, 3) * 3 + 5
    local y = bn(x)
    -- normalised per channel: mean ~ 0
    assert.is_true(H.max_abs(y:mean({ 1, 3, 4 })) < 1e-4)
    assert.equal(1, bn.num_batches_tracked:item())
    local rm = bn.running_mean:totable()
    assert.is_true(math.abs(rm[1] - 0.5) < 0.25)   -- 0.9 * 0 + 0.1 * ~5
    bn:eval()
    local y_eval = bn(x)
    assert.equal(1, bn.num_batches_tracked:item())
    H.assert_close(bn.running_mean, ft.tensor(rm), 0, "running mean unchanged in eval")
    -- eval normalises with the running statistics, far from batch statistics here
    assert.is_true(H.max_abs(y_eval:mean({ 1, 3, 4 })) > 1)
  end)
end)

describe("ResNet-S", function()
  it("has 696,042 parameters and torchvision's state_dict names and shapes", function()
    local model = resnet.resnet_s({ num_classes = 10 })
    assert.equal(696042, model:num_parameters())
    local expected = {}
    for line in io.lines(H.fixture("nn_resnet_s_keys.txt")) do
      local name, shape = line:match("^(%S+) (.*)$")
      if name == "parameters" then
        assert.equal(tonumber(shape), model:num_parameters())
      else
        expected[#expected + 1] = name .. " [" .. shape .. "]"
      end
    end
    local sd, order = model:state_dict()
    local got = {}
    for i, k in ipairs(order) do got[i] = k .. " " .. H.shape_str(sd[k]:shape()) end
    assert.same(expected, got)
    assert.equal("int64", sd["layer2.0.bn1.num_batches_tracked"]:dtype())
    assert.is_not_nil(sd["layer3.0.downsample.0.weight"])
  end)

  it("load_state_dict lists missing and unexpected keys, and names mis-shaped ones", function()
    local model = resnet.resnet_s({ widths = { 8, 16, 32 } })
    local sd = model:state_dict()
    sd["fc.bias"] = nil
    sd["layer1.0.bn1.running_var"] = nil
    sd["head.weight"] = ft.zeros(2)
    local msg = H.error_of(function() model:load_state_dict(sd) end)
    H.assert_mentions(msg, 'Missing key(s) in state_dict: "layer1.0.bn1.running_var", "fc.bias".',
      'Unexpected key(s) in state_dict: "head.weight".')

    local missing, unexpected = model:load_state_dict(sd, { strict = false })
    assert.same({ "layer1.0.bn1.running_var", "fc.bias" }, missing)
    assert.same({ "head.weight" }, unexpected)

    local before = model.fc.weight:totable()
    local bad = model:state_dict()
    bad["fc.weight"] = ft.zeros(5, 32)
    bad["conv1.weight"] = ft.zeros(8, 1, 3, 3)   -- right shape, must not be copied either
    msg = H.error_of(function() model:load_state_dict(bad, { strict = false }) end)
    H.assert_mentions(msg, "fc.weight", "[5,32]", "[10,32]")
    assert.same(before, model.fc.weight:totable())
    assert.is_true(H.max_abs(model.conv1.weight) > 0)
  end)

  local state = ft.load(H.fixture("nn_resnet_state.h5"))
  local io_ = ft.load(H.fixture("nn_resnet_io.h5"))

  local function fixture_model()
    local model = resnet.resnet_s({ widths = { 4, 8, 16 } })
    model:load_state_dict(state)
    return model
  end

  it("matches torch in eval mode", function()
    local model = fixture_model():eval()
    local out = ft.no_grad(function() return model(io_.input) end)
    H.assert_close(out, io_.output_eval, 1e-4, "eval output")
  end)

  it("matches torch in training mode: output, loss, gradients and running statistics", function()
    local model = fixture_model():train()
    local out = model(io_.input)
    H.assert_close(out, io_.output_train, 1e-4, "train output")
    local loss = F.cross_entropy(out, labels(io_.target))
    H.assert_close(loss, io_.loss, 1e-4, "loss")
    loss:backward()
    local grads = with_prefix(io_, "grad")
    local n = 0
    for name, p in model:named_parameters() do
      assert.is_not_nil(grads[name], name)
      assert.is_not_nil(p.grad, "no gradient for " .. name)
      H.assert_close(p.grad, grads[name], 1e-4, "grad " .. name)
      n = n + 1
    end
    assert.equal(#model:parameters(), n)
    for name, b in pairs(with_prefix(io_, "after")) do
      local mine = model:state_dict()[name]
      if b:dtype() == "int64" then H.assert_equal_ints(mine, b, name)
      else H.assert_close(mine, b, 1e-4, name) end
    end
  end)

  it("learns: a few SGD steps on random data lower the loss", function()
    ft.manual_seed(11)
    local model = resnet.resnet_s({ widths = { 4, 8, 8 } })
    local x = ft.randn(16, 1, 28, 28)
    local y = ft.randint(1, 10, { 16 })
    local first, last
    for step = 1, 10 do
      local loss = F.cross_entropy(model(x), y)
      if step == 1 then first = loss:item() end
      last = loss:item()
      model:zero_grad()
      loss:backward()
      ft.no_grad(function()
        for _, p in ipairs(model:parameters()) do p:add_(p.grad, -0.2) end
      end)
    end
    assert.is_true(last < 0.8 * first, ("loss %.4f -> %.4f"):format(first, last))
  end)
end)

describe("ft.nn.functional", function()
  local cases = {}
  for key, t in pairs(ft.load(H.fixture("nn_functional.h5"))) do
    local case, name = key:match("^f%.([^.]+)%.([^.]+)$")
    cases[case] = cases[case] or {}
    cases[case][name] = t
  end

  local function leaf(t)
    local c = t:clone()
    c.requires_grad = true
    return c
  end

  it("cross_entropy: 1-based targets, ignore_index in Lua's numbering, label smoothing", function()
    local c = cases.ce_smooth_ignore
    local logits = leaf(c.logits)
    local loss = F.cross_entropy(logits, labels(c.target), { ignore_index = 3, label_smoothing = 0.1 })
    H.assert_close(loss, c.loss, 1e-5, "loss")
    loss:backward()
    H.assert_close(logits.grad, c.grad_logits, 1e-5, "grad")
  end)

  it("cross_entropy: defaults (mean, ignore_index -100) and reduction none", function()
    local c = cases.ce_default
    local logits = leaf(c.logits)
    local target = labels(c.target)
    local loss = F.cross_entropy(logits, target)
    H.assert_close(loss, c.loss, 1e-5, "loss")
    loss:backward()
    H.assert_close(logits.grad, c.grad_logits, 1e-5, "grad")
    H.assert_close(F.cross_entropy(c.logits, target, { reduction = "none" }), c.loss_none, 1e-5, "none")
  end)

  it("cross_entropy: K-dimensional targets", function()
    local c = cases.ce_kdim
    local logits = leaf(c.logits)
    local loss = F.cross_entropy(logits, labels(c.target), { reduction = "sum" })
    H.assert_close(loss, c.loss, 1e-5, "loss")
    loss:backward()
    H.assert_close(logits.grad, c.grad_logits, 1e-5, "grad")
  end)

  it("cross_entropy: class probabilities as targets", function()
    local c = cases.ce_soft
    local logits = leaf(c.logits)
    local loss = F.cross_entropy(logits, c.probs, { label_smoothing = 0.2 })
    H.assert_close(loss, c.loss, 1e-5, "loss")
    loss:backward()
    H.assert_close(logits.grad, c.grad_logits, 1e-5, "grad")
  end)

  it("cross_entropy: a target out of range is an error naming the op", function()
    local msg = H.error_of(F.cross_entropy, ft.randn(2, 3), ft.tensor({ 1, 4 }, { dtype = "int64" }))
    H.assert_mentions(msg, "ft.cross_entropy")
  end)

  it("embedding: 1-based ids, gradient to the weight", function()
    local c = cases.embedding
    local w = leaf(c.weight)
    local out = F.embedding(labels(c.ids), w)
    H.assert_close(out, c.out, 1e-6, "out")
    ;(out * c.g):sum():backward()
    H.assert_close(w.grad, c.grad_weight, 1e-5, "grad")
    local e = nn.Embedding(7, 3)
    e:load_state_dict({ weight = c.weight })
    H.assert_close(e(labels(c.ids)), c.out, 1e-6, "module")
  end)

  it("pad, rms_norm, gelu(tanh)", function()
    H.assert_close(F.pad(cases.pad.x, { 1, 2, 0, 1 }, 0.5), cases.pad.out, 1e-6, "pad")
    H.assert_close(F.pad(cases.pad.x, { -1, 1 }), cases.pad.out_crop, 1e-6, "pad crop")
    local r = cases.rms_norm
    H.assert_close(F.rms_norm(r.x, 8, r.weight, { eps = 1e-6 }), r.out, 1e-5, "rms_norm")
    H.assert_close(F.gelu(cases.gelu_tanh.x, { approximate = "tanh" }), cases.gelu_tanh.out, 1e-5, "gelu")
    H.assert_close(nn.GELU("tanh")(cases.gelu_tanh.x), cases.gelu_tanh.out, 1e-5, "GELU module")
  end)

  it("scaled_dot_product_attention: causal (top-left aligned) and additive masks", function()
    local c = cases.sdpa
    local q, k, v = leaf(c.q), leaf(c.k), leaf(c.v)
    local out = F.scaled_dot_product_attention(q, k, v, { causal = true })
    H.assert_close(out, c.out_causal, 1e-5, "causal")
    ;(out * c.g):sum():backward()
    H.assert_close(q.grad, c.grad_q, 1e-4, "grad q")
    H.assert_close(k.grad, c.grad_k, 1e-4, "grad k")
    H.assert_close(v.grad, c.grad_v, 1e-4, "grad v")
    H.assert_close(F.scaled_dot_product_attention(c.q, c.k, c.v, { attn_mask = c.mask }), c.out_mask, 1e-5, "mask")
  end)

  it("conv2d padding='same', pooling stride defaults", function()
    local c = cases.conv_same
    H.assert_close(F.conv2d(c.x, c.weight, { padding = "same", dilation = 2 }), c.out, 1e-5, "conv same")
    local p = cases.max_pool_default_stride
    H.assert_close(F.max_pool2d(p.x, 2), p.out, 1e-6, "max_pool2d")
    H.assert_close(nn.MaxPool2d(2)(p.x), p.out, 1e-6, "MaxPool2d")
    H.assert_close(F.avg_pool2d(p.x, 3, { padding = 1, count_include_pad = false }), p.out_avg, 1e-6, "avg_pool2d")
    local msg = H.error_of(F.conv2d, c.x, c.weight, { padding = "same", stride = 2 })
    H.assert_mentions(msg, "ft.conv2d", "same")
  end)

  it("raises errors naming the op and the shapes", function()
    local msg = H.error_of(F.conv2d, ft.randn(1, 3, 8, 8), ft.randn(4, 2, 3, 3))
    H.assert_mentions(msg, "ft.conv2d")
    msg = H.error_of(F.layer_norm, ft.randn(2, 5), 4)
    H.assert_mentions(msg, "ft.layer_norm", "[4]", "[2,5]")
    msg = H.error_of(function() nn.BatchNorm2d(3)(ft.randn(2, 3)) end)
    H.assert_mentions(msg, "BatchNorm2d", "4D")
  end)
end)
