-- ft.peft.ia3: (IA)3 adapters. A fresh adapter is an exact no-op; the scaling of outputs (keys,
-- values, conv channels), inputs (feed-forward) and GPT-2's fused k/v thirds is checked
-- against sums written out in plain Lua; only the vectors train.
local ft = require "ft"
local H = require "helpers"
local resnet = require "ft.models.resnet"

local peft = ft.peft
local ia3 = require "ft.peft.ia3"
local A = require "ft.peft.registry"

local function tiny_gpt2()
  ft.manual_seed(11)
  return ft.models.new(ft.models.config("gpt-s", { n_layer = 2, n_embd = 64, n_head = 2 })):eval()
end

local function tiny_llama()
  return ft.models.from_pretrained(H.fixture("golden/hf_llama")):eval()
end

local function max_diff(a, b)
  local x, y = H.flat(a), H.flat(b)
  assert.equal(#x, #y)
  local worst = 0
  for i = 1, #x do worst = math.max(worst, math.abs(x[i] - y[i])) end
  return worst
end

-- Sets every vector of adapter name to values in [0.5, 1.5).
local function randomise(model, name)
  ft.no_grad(function()
    for _, t in pairs(peft.adapter_state_dict(model, name or "default")) do t:copy_(ft.rand(t:shape()) + 0.5) end
  end)
end

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- rows of y = x @ M^T (+ b) with M given as weight rows [out][in]; x a flat [n, in] array.
local function linear_rows(x, n, w, b)
  local out = {}
  local n_in = #w[1]
  for r = 1, n do
    for j = 1, #w do
      local s = b and b[j] or 0
      for i = 1, n_in do s = s + x[(r - 1) * n_in + i] * w[j][i] end
      out[#out + 1] = s
    end
  end
  return out
end

local function transpose(m)
  local t = {}
  for i = 1, #m[1] do
    t[i] = {}
    for j = 1, #m do t[i][j] = m[j][i] end
  end
  return t
end

describe("ft.peft.ia3 defaults", function()
  it("adapts GPT-2's c_attn (k and v thirds) and mlp.c_proj (input)", function()
    local model = tiny_gpt2()
    local ids = ft.tensor({ { 3, 9, 200, 41, 7 } }, { dtype = "int64" })
    local before = model(ids).logits
    assert.equal("default", peft.ia3(model))
    assert.equal(0, max_diff(model(ids).logits, before))
    local sd = peft.adapter_state_dict(model, "default")
    assert.same({
      "transformer.h.0.attn.c_attn.ia3_l.default", "transformer.h.0.mlp.c_proj.ia3_l.default",
      "transformer.h.1.attn.c_attn.ia3_l.default", "transformer.h.1.mlp.c_proj.ia3_l.default",
    }, keys_of(sd))
    assert.same({ 128 }, sd["transformer.h.0.attn.c_attn.ia3_l.default"]:shape())   -- 2 * n_embd
    assert.same({ 256 }, sd["transformer.h.0.mlp.c_proj.ia3_l.default"]:shape())    -- n_inner
    for _, t in pairs(sd) do
      for _, v in ipairs(H.flat(t)) do assert.equal(1, v) end
    end
  end)

  it("adapts Llama's k_proj, v_proj and down_proj (input), an exact no-op at first", function()
    local model = tiny_llama()
    local ids = ft.tensor({ { 1, 50, 2, 99, 7, 13 } }, { dtype = "int64" })
    local before = model(ids).logits
    peft.ia3(model)
    assert.equal(0, max_diff(model(ids).logits, before))
    local sd = peft.adapter_state_dict(model, "default")
    assert.equal(9, #keys_of(sd))
    assert.same({ 32 }, sd["model.layers.2.self_attn.k_proj.ia3_l.default"]:shape())   -- 2 kv heads x 16
    assert.same({ 344 }, sd["model.layers.0.mlp.down_proj.ia3_l.default"]:shape())
    assert.is_nil(sd["model.layers.0.self_attn.q_proj.ia3_l.default"])
  end)

  it("adapts a ResNet's convolutions per output channel, an exact no-op at first", function()
    ft.manual_seed(2)
    local model = resnet.resnet_s():eval()
    local x = ft.randn(2, 1, 28, 28)
    local before = model(x)
    peft.ia3(model)
    assert.equal(0, max_diff(model(x), before))
    local sd = peft.adapter_state_dict(model, "default")
    -- conv1, 4 convs in each stage, the downsample convs of stages 2 and 3
    assert.equal(1 + 12 + 2, #keys_of(sd))
    assert.same({ 64 }, sd["layer2.0.downsample.0.ia3_l.default"]:shape())
    assert.same({ 32 }, sd["conv1.ia3_l.default"]:shape())
  end)

  it("adapts a ViT's key, value and MLP output (not the attention output)", function()
    ft.manual_seed(4)
    local model = ft.models.new(ft.models.config("vit-s", { num_hidden_layers = 1, hidden_size = 48,
      num_attention_heads = 3, intermediate_size = 96 })):eval()
    local x = ft.randn(2, 1, 28, 28)
    local before = model(x).logits
    peft.ia3(model)
    assert.equal(0, max_diff(model(x).logits, before))
    local sd = peft.adapter_state_dict(model, "default")
    assert.same({
      "vit.encoder.layer.0.attention.attention.key.ia3_l.default",
      "vit.encoder.layer.0.attention.attention.value.ia3_l.default",
      "vit.encoder.layer.0.output.dense.ia3_l.default",
    }, keys_of(sd))
    assert.same({ 96 }, sd["vit.encoder.layer.0.output.dense.ia3_l.default"]:shape())
  end)
end)

describe("ft.peft.ia3 scaling", function()
  it("scales a Linear's outputs (keys) and inputs (down_proj), as written out by hand", function()
    local model = tiny_llama()
    peft.ia3(model)
    randomise(model)
    local layer = model.model.layers[1]

    local k_proj = layer.self_attn.k_proj
    local l = H.flat(k_proj.ia3_l.default)
    local x = ft.randn(2, 128)
    local want = linear_rows(H.flat(x), 2, k_proj.weight:totable())
    for i = 1, #want do want[i] = want[i] * l[(i - 1) % 32 + 1] end
    H.assert_close(k_proj(x), H.from_flat(want, { 2, 32 }), 1e-5, "k_proj")

    local down = layer.mlp.down_proj
    local ld = H.flat(down.ia3_l.default)
    local h = ft.randn(2, 344)
    local scaled = H.flat(h)
    for i = 1, #scaled do scaled[i] = scaled[i] * ld[(i - 1) % 344 + 1] end
    local want_down = linear_rows(scaled, 2, down.weight:totable())
    H.assert_close(down(h), H.from_flat(want_down, { 2, 128 }), 1e-5, "down_proj")
  end)

  it("scales only the k and v thirds of GPT-2's fused c_attn, and the MLP input of mlp.c_proj", function()
    local model = tiny_gpt2()
    peft.ia3(model)
    randomise(model)
    local attn = model.transformer.h[2].attn.c_attn
    local l = H.flat(attn.ia3_l.default)
    local x = ft.randn(3, 64)
    -- Conv1D: weight [in, out], y = x @ W + b
    local want = linear_rows(H.flat(x), 3, transpose(attn.weight:totable()), attn.bias:totable())
    for i = 1, #want do
      local j = (i - 1) % 192 + 1
      if j > 64 then want[i] = want[i] * l[j - 64] end   -- q (first third) unscaled
    end
    local y = attn(x)
    H.assert_close(y, H.from_flat(want, { 3, 192 }), 1e-5, "c_attn")

    -- d sum(y) / d l[j] = sum over rows of the unscaled output j + 64
    y:sum():backward()
    local base = linear_rows(H.flat(x), 3, transpose(attn.weight:totable()), attn.bias:totable())
    local grad = {}
    for j = 1, 128 do
      grad[j] = 0
      for r = 1, 3 do grad[j] = grad[j] + base[(r - 1) * 192 + 64 + j] end
    end
    H.assert_close(attn.ia3_l.default.grad, H.from_flat(grad, { 128 }), 1e-5, "grad of l")

    local proj = model.transformer.h[1].mlp.c_proj
    local lp = H.flat(proj.ia3_l.default)
    local h = ft.randn(2, 256)
    local scaled = H.flat(h)
    for i = 1, #scaled do scaled[i] = scaled[i] * lp[(i - 1) % 256 + 1] end
    local want_proj = linear_rows(scaled, 2, transpose(proj.weight:totable()), proj.bias:totable())
    H.assert_close(proj(h), H.from_flat(want_proj, { 2, 64 }), 1e-5, "mlp.c_proj")
  end)

  it("scales a Conv2d output per channel over [N,C,H,W]", function()
    ft.manual_seed(6)
    local model = resnet.resnet_s({ widths = { 4, 4, 4 } }):eval()
    local conv = model.layer1[1].conv2
    local x = ft.randn(2, 4, 5, 5)
    local base = H.flat(conv(x))
    peft.ia3(model)
    randomise(model)
    local l = H.flat(conv.ia3_l.default)
    local want = {}
    for i, v in ipairs(base) do want[i] = v * l[((i - 1) // 25) % 4 + 1] end
    H.assert_close(conv(x), H.from_flat(want, { 2, 4, 5, 5 }), 1e-6, "conv2d")
  end)

  it("follows disable, set_adapter and remove", function()
    local model = tiny_gpt2()
    local ids = ft.tensor({ { 3, 9, 200, 41 } }, { dtype = "int64" })
    local base = model(ids).logits
    local base_keys = keys_of(model:state_dict())
    peft.ia3(model, { name = "a" })
    peft.ia3(model, { name = "b", target = { "c_attn" }, fused_qkv = { "c_attn" } })
    randomise(model, "a")
    randomise(model, "b")
    local with_a = model(ids).logits
    assert.is_true(max_diff(with_a, base) > 1e-3)
    peft.disable(model)
    assert.equal(0, max_diff(model(ids).logits, base))
    peft.set_adapter(model, "b")
    local with_b = model(ids).logits
    assert.is_true(max_diff(with_b, with_a) > 1e-3)
    assert.is_false(model.transformer.h[1].attn.c_attn.ia3_l.a.requires_grad)
    assert.is_true(model.transformer.h[1].attn.c_attn.ia3_l.b.requires_grad)
    peft.delete_adapter(model, "b")
    assert.is_nil(model.transformer.h[1].attn.c_attn.ia3_l.b)
    peft.delete_adapter(model, "a")
    assert.same(base_keys, keys_of(model:state_dict()))
    assert.is_nil(rawget(model.transformer.h[1].attn.c_attn, "forward"))
    assert.is_nil(model.transformer.h[1].attn.c_attn.ia3_l)
    assert.equal(0, max_diff(model(ids).logits, base))
  end)
end)

describe("ft.peft.ia3 training", function()
  it("freezes the base model: only the vectors train and get gradients", function()
    local model = tiny_llama()
    model:train()
    peft.ia3(model)
    local names = {}
    for _, e in ipairs(peft.trainable_parameters(model)) do
      assert.truthy(e[1]:match("%.ia3_l%.default$"), e[1])
      names[#names + 1] = e[1]
    end
    assert.equal(9, #names)
    -- per layer: k 32 + v 32 + down_proj 344
    assert.truthy(peft.summary(model, { print = false }):find("^trainable params: 1,224 ||"))
    local ids = ft.tensor({ { 1, 50, 2, 99, 7, 13 } }, { dtype = "int64" })
    model(ids, { labels = ids }).loss:backward()
    for name, p in model:named_parameters() do
      if name:match("%.ia3_l%.") then
        assert.is_not_nil(p.grad, name)
      else
        assert.is_nil(p.grad, name)
      end
    end
  end)

  it("merge_and_unload folds the vectors into the weights", function()
    for _, build in ipairs({ tiny_gpt2, tiny_llama }) do
      local model = build()
      local ids = ft.tensor({ { 3, 9, 100, 41, 2 } }, { dtype = "int64" })
      peft.ia3(model)
      randomise(model)
      local adapted = model(ids).logits
      peft.merge_and_unload(model)
      assert.same({}, peft.adapters(model))
      H.assert_close(model(ids).logits, adapted, 1e-4, model.__name .. " merged")
    end
    ft.manual_seed(8)
    local model = resnet.resnet_s({ widths = { 4, 8, 8 } }):eval()
    local x = ft.randn(2, 1, 28, 28)
    peft.ia3(model, { target = { "conv%d$", "downsample%.0$" }, feedforward = { "layer2%.1%.conv2$" } })
    randomise(model)
    local adapted = model(x)
    ia3.merge_and_unload(model)
    H.assert_close(model(x), adapted, 1e-4, "resnet merged")
  end)

  it("recreates the adapter from its saved config", function()
    local model = tiny_gpt2()
    peft.ia3(model, { name = "x" })
    local config = A.get(model, "x").config
    assert.same({ "c_attn", "mlp.c_proj" }, config.target)
    local copy = tiny_gpt2()
    ia3.attach(copy, ft.json.decode(ft.json.encode(config)))
    assert.same(keys_of(peft.adapter_state_dict(model, "x")), keys_of(peft.adapter_state_dict(copy, "x")))
  end)
end)

describe("ft.peft.ia3 errors", function()
  it("names what is wrong", function()
    local model = tiny_gpt2()
    H.assert_mentions(H.error_of(ia3.attach, model, { rank = 4 }), "unknown option 'rank'")
    H.assert_mentions(H.error_of(ia3.attach, model, { target = "q_proj" }), "matches no module", "q_proj")
    H.assert_mentions(H.error_of(ia3.attach, model, { target = "c_attn", feedforward = "c_fc" }),
      "feedforward module transformer.h.0.mlp.c_fc is not among the target modules")
    H.assert_mentions(H.error_of(ia3.attach, model, { target = "ln_1" }), "transformer.h.0.ln_1", "LayerNorm")
    local plain = ft.nn.Sequential(ft.nn.Linear(2, 2))
    H.assert_mentions(H.error_of(ia3.attach, plain), "no default target modules for Sequential")
    -- nothing was attached by the failures
    assert.same({}, peft.adapters(model))
    assert.equal(#model:parameters(), #peft.trainable_parameters(model))
    peft.ia3(model)
    H.assert_mentions(H.error_of(ia3.attach, model), "already has an adapter named 'default'")
  end)
end)
