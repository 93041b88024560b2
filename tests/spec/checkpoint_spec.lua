-- Gradient checkpointing: ft.autograd.checkpoint and Module:gradient_checkpointing_enable, and
-- BatchNorm (ResNet stages) under it: running statistics updated once a step.
-- Gradients with checkpointing must equal those without, bit for bit: the recomputation runs
-- the same kernels on the same inputs with the same generator state, and the incoming
-- gradients reach it unchanged.
local ft = require "ft"
local nn, F = ft.nn, ft.nn.functional

-- name -> gradient (a copy) of every parameter that has one; then clears them.
local function grads_of(model)
  local out = {}
  for name, p in model:named_parameters() do
    if p.grad then out[name] = p.grad:clone() end
  end
  model:zero_grad()
  return out
end

local function assert_same_grads(a, b)
  local n = 0
  for name, g in pairs(a) do
    assert(b[name], "no gradient for " .. name .. " with checkpointing")
    assert.same(g:shape(), b[name]:shape())
    local diff = (g - b[name]):abs():max():item()
    assert(diff == 0, ("%s differs by %g"):format(name, diff))
    n = n + 1
  end
  for name in pairs(b) do assert(a[name], "unexpected gradient for " .. name) end
  assert.is_true(n > 0)
end

local Block = nn.Module:extend("TestBlock")
function Block:init(d, p)
  self.fc1 = nn.Linear(d, 2 * d)
  self.fc2 = nn.Linear(2 * d, d)
  self.norm = nn.LayerNorm(d)
  self.drop = nn.Dropout(p or 0)
end
function Block:forward(x) return self.norm(x + self.drop(self.fc2(self.fc1(x):gelu()))) end

local Stack = nn.Module:extend("TestStack")
function Stack:init(n, d, p)
  self.blocks = nn.ModuleList()
  for _ = 1, n do self.blocks:append(Block(d, p)) end
  self.head = nn.Linear(d, 1)
end
function Stack:forward(x)
  for i = 1, #self.blocks do x = self.blocks[i](x) end
  return self.head(x)
end
function Stack:checkpoint_modules() return self.blocks end

-- Gradients of one forward/backward of model on x, the generator seeded first.
local function run(model, x, seed)
  ft.manual_seed(seed or 5)
  model(x):sum():backward()
  return grads_of(model)
end

describe("ft.autograd.checkpoint", function()
  it("gives the gradients of the plain call, for one or several outputs and inputs", function()
    ft.manual_seed(1)
    local W = ft.randn(4, 4); W.requires_grad = true
    local x = ft.randn(3, 4); x.requires_grad = true
    local function f(a, scale) return a:matmul(W):tanh(), a * scale end
    local y, z = f(x, 2);
    ((y * y):sum() + (z * z):sum()):backward()
    local gw, gx = W.grad:clone(), x.grad:clone()
    W.grad, x.grad = nil, nil
    local y2, z2 = ft.autograd.checkpoint(f, x, 2)
    assert.is_true(y2.requires_grad and z2.requires_grad)
    assert.equal(0, (y2 - y):abs():max():item());
    ((y2 * y2):sum() + (z2 * z2):sum()):backward()
    assert.equal(0, (W.grad - gw):abs():max():item())
    assert.equal(0, (x.grad - gx):abs():max():item())
  end)

  it("passes gradients to more inputs than one graph node holds, non-tensor arguments through", function()
    local xs = {}
    for i = 1, 9 do
      xs[i] = ft.randn(2, i)
      xs[i].requires_grad = i ~= 4 -- one in the middle needs none
    end
    local function f(tag, ...)
      assert.equal("tag", tag)
      local s = 0
      for i, t in ipairs({ ... }) do s = s + (t * i):sum() end
      return s, "extra"
    end
    local out, extra = ft.autograd.checkpoint(f, "tag", table.unpack(xs))
    assert.equal("extra", extra)
    out:backward()
    for i = 1, 9 do
      if i == 4 then assert.is_nil(xs[i].grad)
      else assert.equal(0, (xs[i].grad - i):abs():max():item()) end
    end
  end)

  it("is the plain call without grad mode", function()
    local x = ft.randn(2, 2); x.requires_grad = true
    local y = ft.no_grad(ft.autograd.checkpoint, function(a) return a * 3 end, x)
    assert.is_false(y.requires_grad)
  end)

  it("reaches the parameters inside fn when no input requires grad", function()
    local lin = nn.Linear(4, 3)
    local x = ft.randn(5, 4)
    lin(x):sum():backward()
    local want = lin.weight.grad:clone()
    lin.weight.grad, lin.bias.grad = nil, nil
    ft.autograd.checkpoint(function(a) return lin(a) end, x):sum():backward()
    assert.equal(0, (lin.weight.grad - want):abs():max():item())
  end)

  it("raises a clear error when fn fails during the recomputation, and recovers", function()
    local x = ft.randn(2, 2); x.requires_grad = true
    local y = ft.autograd.checkpoint(function(a)
      if ft.is_grad_enabled() then error("recompute broke") end
      return a * 2
    end, x)
    local ok, err = pcall(function() y:sum():backward() end)
    assert.is_false(ok)
    assert.matches("ft.autograd.checkpoint: recomputing fn in backward failed: .*recompute broke", err)
    assert.is_true(ft.is_grad_enabled())
    -- a fn that returns another shape the second time
    local calls = 0
    local z = ft.autograd.checkpoint(function(a)
      calls = calls + 1
      return calls == 1 and a * 2 or a:sum()
    end, x)
    ok, err = pcall(function() z:sum():backward() end)
    assert.is_false(ok)
    assert.matches("shape %[%] in the recomputation but %[2,2%] in the forward", err)
    -- errors in the forward propagate as they are
    ok, err = pcall(ft.autograd.checkpoint, function() error("forward broke") end, x)
    assert.is_false(ok)
    assert.matches("forward broke", err)
    ft.autograd.checkpoint(function(a) return a * 2 end, x):sum():backward()
    assert.equal(0, (x.grad - 2):abs():max():item())
  end)

  it("refuses to reach, from the recomputation, a graph the outer backward is running", function()
    local w = ft.randn(3); w.requires_grad = true
    local captured = w * 2 -- made outside fn, used inside it: its graph belongs to the outer pass
    local x = ft.randn(3); x.requires_grad = true
    local y = ft.autograd.checkpoint(function(a) return a * captured end, x)
    local ok, err = pcall(function() (y + captured):sum():backward() end)
    assert.is_false(ok)
    assert.matches("reached the other's graph through mul", err)
    -- passed as an argument, it gets its gradient
    w.grad, x.grad = nil, nil
    captured = w * 2
    y = ft.autograd.checkpoint(function(a, c) return a * c end, x, captured);
    (y + captured):sum():backward()
    assert.equal(0, (w.grad - (x + 1) * 2):abs():max():item())
  end)

  it("refuses a second backward through it unless the first retained the graph", function()
    local x = ft.randn(2, 2); x.requires_grad = true
    local y = ft.autograd.checkpoint(function(a) return a * a end, x):sum()
    y:backward({ retain_graph = true })
    y:backward()
    assert.equal(0, (x.grad - x * 4):abs():max():item())
    assert.has_error(function() y:backward() end)
  end)

  it("restores the generator state for the recomputation and leaves it as without checkpointing", function()
    local x = ft.randn(64, 64); x.requires_grad = true
    local function f(a) return F.dropout(a, 0.5, true) * 3 end
    ft.manual_seed(3)
    f(x):sum():backward()
    local want, after = x.grad:clone(), ft.rand(1):item()
    x.grad = nil
    ft.manual_seed(3)
    local y = ft.autograd.checkpoint(f, x)
    ft.rand(5) -- draws between forward and backward do not change the masks
    y:sum():backward()
    assert.equal(0, (x.grad - want):abs():max():item())
    ft.manual_seed(3)
    ft.autograd.checkpoint(f, x):sum():backward()
    assert.equal(after, ft.rand(1):item())
  end)

  it("is_recomputing: false in the forward, true in the recomputation (nested too), false after", function()
    local seen = {}
    local function inner(a)
      seen[#seen + 1] = "inner " .. tostring(ft.autograd.is_recomputing())
      return a:tanh()
    end
    local function outer(a)
      seen[#seen + 1] = "outer " .. tostring(ft.autograd.is_recomputing())
      return ft.autograd.checkpoint(inner, a * 2)
    end
    assert.is_false(ft.autograd.is_recomputing())
    local x = ft.randn(3); x.requires_grad = true
    local y = ft.autograd.checkpoint(outer, x)
    assert.same({ "outer false", "inner false" }, seen)
    seen = {}
    y:sum():backward()
    -- the outer rerun (and the inner checkpoint's forward in it), then the inner one's rerun
    assert.same({ "outer true", "inner true", "inner true" }, seen)
    assert.is_false(ft.autograd.is_recomputing())
    -- a recomputation that fails leaves it false
    local z = ft.autograd.checkpoint(function(a)
      if ft.autograd.is_recomputing() then error("second run") end
      return a * 2
    end, x)
    assert.is_false(pcall(function() z:sum():backward() end))
    assert.is_false(ft.autograd.is_recomputing())
  end)
end)

describe("Module:gradient_checkpointing_enable", function()
  it("gives the same gradients for a block stack, with and without dropout", function()
    for _, p in ipairs({ 0, 0.3 }) do
      ft.manual_seed(0)
      local model = Stack(4, 8, p)
      local x = ft.randn(6, 8)
      local want = run(model, x)
      assert.is_false(model.is_gradient_checkpointing)
      assert.equal(model, model:gradient_checkpointing_enable())
      assert.is_true(model.is_gradient_checkpointing)
      assert_same_grads(want, run(model, x))
      -- inputs that require grad get the same gradient too
      x.requires_grad = true
      ft.manual_seed(5)
      model(x):sum():backward()
      local gx = x.grad:clone()
      model:gradient_checkpointing_disable()
      assert.is_false(model.is_gradient_checkpointing)
      x.grad = nil
      ft.manual_seed(5)
      model(x):sum():backward()
      assert.equal(0, (x.grad - gx):abs():max():item())
      grads_of(model)
    end
  end)

  it("checkpoints only in training with grad mode on, and disable restores the forward", function()
    local model = Stack(2, 4)
    local block = model.blocks[1]
    model:gradient_checkpointing_enable()
    assert.is_not_nil(rawget(block, "forward"))
    local y = model(ft.randn(2, 4))
    assert.is_true(y.requires_grad)
    model:eval()
    local calls = 0
    local real = ft.autograd.checkpoint
    ft.autograd.checkpoint = function(...) calls = calls + 1; return real(...) end
    model(ft.randn(2, 4))
    model:train()
    ft.no_grad(function() model(ft.randn(2, 4)) end)
    assert.equal(0, calls)
    model(ft.randn(2, 4))
    assert.equal(2, calls)
    ft.autograd.checkpoint = real
    model:gradient_checkpointing_disable()
    assert.is_nil(rawget(block, "forward"))
  end)

  it("wraps the decoder layers of a tiny Llama, with and without attention dropout", function()
    for _, p in ipairs({ 0, 0.2 }) do
      ft.manual_seed(8)
      local model = ft.models.new("llama-s", { num_hidden_layers = 2, hidden_size = 32, intermediate_size = 48,
        num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64, attention_dropout = p })
      model:train()
      local ids = ft.randint(1, 256, { 2, 12 })
      local function step()
        ft.manual_seed(11)
        model(ids, { labels = ids }).loss:backward()
        return grads_of(model)
      end
      local want = step()
      model:gradient_checkpointing_enable()   -- the class's checkpoint_modules: its decoder layers
      assert.is_true(model.is_gradient_checkpointing)
      assert.is_not_nil(rawget(model.model.layers[1], "forward"))
      assert_same_grads(want, step())
      model:gradient_checkpointing_disable()
      assert_same_grads(want, step())
    end
  end)

  it("knows the blocks of GPT-2, its classifier and ViT", function()
    local gpt = ft.models.new("gpt-s", { n_layer = 2 })
    assert.equal(gpt.transformer.h, gpt:checkpoint_modules())
    local vit = ft.models.new("vit-s")
    assert.equal(vit.vit.encoder.layer, vit:checkpoint_modules())
    gpt:train()
    local ids = ft.randint(1, 256, { 2, 8 })
    local function step()
      ft.manual_seed(3)
      gpt(ids, { labels = ids }).loss:backward()
      return grads_of(gpt)
    end
    local want = step()
    gpt:gradient_checkpointing_enable()
    assert_same_grads(want, step())
  end)

  it("composes with LoRA on a frozen base (block inputs that require no grad)", function()
    ft.manual_seed(8)
    local model = ft.models.new("llama-s", { num_hidden_layers = 2, hidden_size = 32, intermediate_size = 48,
      num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64 })
    model:requires_grad_(false)
    ft.peft.lora(model, { target = { "q_proj", "v_proj", "down_proj" }, r = 4, alpha = 8, dropout = 0.1,
      init = false })
    model:train()
    local ids = ft.randint(1, 256, { 2, 10 })
    local function step()
      ft.manual_seed(12)
      model(ids, { labels = ids }).loss:backward()
      return grads_of(model)
    end
    local want = step()
    local n = 0
    for name in pairs(want) do
      assert.matches("lora_", name)
      n = n + 1
    end
    assert.equal(12, n) -- A and B of 3 layers in 2 blocks
    model:gradient_checkpointing_enable({ modules = model.model.layers })
    assert_same_grads(want, step())
  end)

  it("lowers the peak memory of a deep stack", function()
    -- The working set: a full collection before every Lua instruction frees each tensor as
    -- soon as nothing reaches it (as tests/spec/memory_spec.lua measures it).
    local function peak(checkpointing)
      ft.manual_seed(0)
      local model = Stack(16, 32)
      if checkpointing then model:gradient_checkpointing_enable() end
      local x = ft.randn(1024, 32)
      collectgarbage()
      collectgarbage()
      ft.reset_peak_bytes()
      debug.sethook(function() collectgarbage() end, "", 1)
      local ok, err = pcall(function() model(x):sum():backward() end)
      debug.sethook()
      assert(ok, err)
      local bytes = ft.peak_bytes()
      model:zero_grad()
      return bytes
    end
    local plain, checkpointed = peak(false), peak(true)
    print(("peak tensor bytes of 16 blocks: %.2f MiB plain, %.2f MiB checkpointed"):format(plain / 2 ^ 20,
      checkpointed / 2 ^ 20))
    assert.is_true(checkpointed < 0.5 * plain)
  end)

  it("names what is missing", function()
    local plain = nn.Sequential { nn.Linear(2, 2) }
    assert.has_error(function() plain:gradient_checkpointing_enable() end,
      "ft.nn.Module:gradient_checkpointing_enable: Sequential does not say which modules to checkpoint " ..
      "(it has no checkpoint_modules method); pass them: {modules = {...}}")
    assert.has_error(function() plain:gradient_checkpointing_enable({ modules = { 3 } }) end,
      "ft.nn.Module:gradient_checkpointing_enable: modules[1] is a number, not a module")
    assert.error_matches(function() plain:gradient_checkpointing_enable({ module = {} }) end, "did you mean 'modules'")
    plain:gradient_checkpointing_enable({ modules = { plain[1] } })
    assert.is_true(plain.is_gradient_checkpointing)
  end)
end)

-- BatchNorm updates its running statistics in a training forward; the recomputation must not
-- update them again (torch.utils.checkpoint does), and must normalise as the forward did.
describe("BatchNorm and ResNet stages under gradient checkpointing", function()
  local H = require "helpers"

  -- name -> a copy of every buffer (running_mean, running_var, num_batches_tracked).
  local function buffers_of(model)
    local out = {}
    for name, t in model:named_buffers() do out[name] = t:clone() end
    return out
  end

  local function assert_same_buffers(a, b)
    local n = 0
    for name, t in pairs(a) do
      assert(b[name], "no buffer " .. name .. " with checkpointing")
      if t:dtype() == "int64" then H.assert_equal_ints(b[name], t, name)
      else H.assert_bits_equal(b[name], t, name) end
      n = n + 1
    end
    for name in pairs(b) do assert(a[name], "unexpected buffer " .. name) end
    assert.is_true(n > 0)
  end

  -- A ResNet-S with narrow stages (3 stages of 2 BasicBlocks, widths 8, 16, 32: 15 BatchNorm2d
  -- layers), the same weights for the same seed, in training mode.
  local function resnet()
    ft.manual_seed(21)
    local m = ft.models.resnet.resnet_s({ widths = { 8, 16, 32 } })
    m:train()
    return m
  end

  -- One training step on 4 images 1x16x16: the input's gradient (nil when it needs none).
  local function step(model, input_grad)
    ft.manual_seed(22)
    local x = ft.randn(4, 1, 16, 16)
    x.requires_grad = input_grad
    F.cross_entropy(model(x), ft.randint(1, 10, { 4 })):backward()
    return x.grad
  end

  for _, layer in ipairs({ "BatchNorm2d", "SyncBatchNorm" }) do
    it(layer .. " normalises as the forward did and updates its statistics once", function()
      ft.manual_seed(3)
      local ref, bn = nn[layer](5, { momentum = 0.3 }), nn[layer](5, { momentum = 0.3 })
      local x = ft.randn(4, 5, 3, 3) * 2 + 1
      ref(x)
      local outputs = {}
      local y = ft.autograd.checkpoint(function(a)
        local out = bn(a)
        outputs[#outputs + 1] = out:detach():clone()
        return out
      end, x)
      y:sum():backward()
      assert.equal(2, #outputs)
      H.assert_bits_equal(outputs[2], outputs[1], "the recomputation's output")
      assert.equal(1, bn.num_batches_tracked:item())
      H.assert_bits_equal(bn.running_mean, ref.running_mean, "running_mean")
      H.assert_bits_equal(bn.running_var, ref.running_var, "running_var")
      assert.is_not_nil(bn.weight.grad)
    end)
  end

  it("ResNet's checkpoint_modules are its stages", function()
    local model = resnet()
    local stages = model:checkpoint_modules()
    assert.equal(3, #stages)
    for i = 1, 3 do assert.equal(model["layer" .. i], stages[i]) end
  end)

  it("ResNet-S in training: the same gradients and running statistics, updated once", function()
    local plain, checkpointed = resnet(), resnet()
    assert_same_buffers(buffers_of(plain), buffers_of(checkpointed))
    local gx = step(plain, true)
    checkpointed:gradient_checkpointing_enable()
    local gx2 = step(checkpointed, true)
    H.assert_bits_equal(gx2, gx, "input gradient")
    assert_same_grads(grads_of(plain), grads_of(checkpointed))
    local stats = buffers_of(checkpointed)
    assert_same_buffers(buffers_of(plain), stats)
    assert.equal(1, stats["layer2.1.bn2.num_batches_tracked"]:item())
    -- a second step still matches
    step(plain, false)
    step(checkpointed, false)
    assert_same_grads(grads_of(plain), grads_of(checkpointed))
    assert_same_buffers(buffers_of(plain), buffers_of(checkpointed))
  end)

  it("ResNet-S with a frozen prefix: stem and layer1 frozen by ft.peft, or the stem by requires_grad", function()
    for _, how in ipairs({ "peft", "requires_grad" }) do
      local plain, checkpointed = resnet(), resnet()
      for _, m in ipairs({ plain, checkpointed }) do
        if how == "peft" then
          ft.peft.freeze(m, { "^conv1$", "^bn1$", "^layer1$" }) -- their BatchNorm: bn_policy "eval"
        else
          m.conv1:requires_grad_(false)
          m.bn1:requires_grad_(false) -- still trains its statistics
        end
      end
      local before = buffers_of(plain)
      step(plain, false) -- layer1's input requires no grad
      checkpointed:gradient_checkpointing_enable()
      local calls, real = 0, ft.autograd.checkpoint
      ft.autograd.checkpoint = function(...) calls = calls + 1; return real(...) end
      local ok, err = pcall(step, checkpointed, false)
      ft.autograd.checkpoint = real
      assert(ok, err)
      -- a frozen layer1 on an input that needs no grad keeps no graph: it is not checkpointed
      assert.equal(how == "peft" and 2 or 3, calls)
      local want = grads_of(plain)
      assert.is_nil(want["conv1.weight"])
      assert.is_not_nil(want["layer2.0.conv1.weight"])
      if how == "peft" then assert.is_nil(want["layer1.0.conv1.weight"]) end
      assert_same_grads(want, grads_of(checkpointed))
      local stats = buffers_of(checkpointed)
      assert_same_buffers(buffers_of(plain), stats)
      local frozen = how == "peft" and 0 or 1
      assert.equal(frozen, stats["layer1.0.bn1.num_batches_tracked"]:item())
      H.assert_equal_ints(stats["bn1.num_batches_tracked"], before["bn1.num_batches_tracked"] + frozen, how)
      assert.equal(1, stats["layer3.1.bn2.num_batches_tracked"]:item())
    end
  end)

  it("ResNet-S in eval mode or under ft.no_grad: checkpointing changes nothing", function()
    local plain, checkpointed = resnet(), resnet()
    checkpointed:gradient_checkpointing_enable()
    ft.manual_seed(23)
    local x = ft.randn(4, 1, 16, 16)
    local calls, real = 0, ft.autograd.checkpoint
    ft.autograd.checkpoint = function(...) calls = calls + 1; return real(...) end
    local ok, err = pcall(function()
      -- training mode without grad mode: batch statistics, running statistics updated once
      local y_plain = ft.no_grad(function() return plain(x) end)
      local y = ft.no_grad(function() return checkpointed(x) end)
      H.assert_bits_equal(y, y_plain, "output under ft.no_grad")
      assert_same_buffers(buffers_of(plain), buffers_of(checkpointed))
      plain:eval()
      checkpointed:eval()
      local before = buffers_of(checkpointed)
      y_plain, y = plain(x), checkpointed(x)
      H.assert_bits_equal(y, y_plain, "output in eval mode")
      assert_same_buffers(before, buffers_of(checkpointed))
    end)
    ft.autograd.checkpoint = real
    assert(ok, err)
    assert.equal(0, calls)
  end)
end)
