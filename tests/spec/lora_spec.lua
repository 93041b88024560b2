-- ft.peft.lora: LoRA / DoRA layers checked against independent math written out in this file
-- (plain Lua loops over t:totable() values, and dense convolutions on kernels composed here),
-- finite differences, and exact comparisons where the math promises equality.
local ft = require "ft"
local H = require "helpers"
local lora = require "ft.peft.lora"
local peft = require "ft.peft"
local A = require "ft.peft.registry"
local gpt2 = require "ft.models.gpt2"

local nn = ft.nn
local F = nn.functional

-- ---- helpers ---------------------------------------------------------------------------------

local function identical(a, b, what)
  assert.same(a:shape(), b:shape(), what)
  local fa, fb = H.flat(a), H.flat(b)
  for i = 1, #fa do
    if fa[i] ~= fb[i] then
      error(("%s: element %d is %.9g, expected exactly %.9g"):format(what, i, fa[i], fb[i]), 2)
    end
  end
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function run(model, x) return ft.no_grad(function() return model(x) end) end

-- One layer of each kind in a Sequential (target "0"), and an input for it.
local function make(kind)
  ft.manual_seed(7)
  if kind == "linear" then return nn.Sequential(nn.Linear(6, 5)), ft.randn(3, 6) end
  if kind == "conv1d" then return nn.Sequential(gpt2.Conv1D(5, 6, 0.3)), ft.randn(2, 3, 6) end
  if kind == "conv2d" then
    return nn.Sequential(nn.Conv2d(3, 4, 3, { padding = 2, dilation = 2 })), ft.randn(2, 3, 7, 7)
  end
  return nn.Sequential(nn.Embedding(9, 5)), ft.tensor({ { 1, 4, 9 }, { 2, 2, 7 } }, { dtype = "int64" })
end

local KINDS = { "linear", "conv1d", "conv2d", "embedding" }

-- Gives the adapter's zero-initialised factors random values (and DoRA magnitudes a nudge),
-- so that it changes the layer's output.
local function randomise(model, name)
  ft.no_grad(function()
    for key, t in pairs(peft.adapter_state_dict(model, name)) do
      if key:find("lora_B", 1, true) or key:find("lora_embedding_A", 1, true) then
        t:normal_(0, 0.5)
      elseif key:find("lora_magnitude_vector", 1, true) then
        t:mul_(ft.rand(t:shape()) * 0.4 + 0.8)
      end
    end
  end)
end

-- Matrices as nested Lua tables.
local function rows(t) return t:totable() end

-- The adapted layer's factors as [out][k] and [k][fan_in] tables, whatever the layer kind
-- (Embedding: B [dim][r], A [r][num]; Conv2d: B [out][r], A [r][in*kh*kw]).
local function factors(layer, name)
  if layer._modules.lora_embedding_A then
    return rows(layer.lora_embedding_B[name]), rows(layer.lora_embedding_A[name])
  end
  local a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
  return rows(b:reshape(b:size(1), -1)), rows(a:reshape(a:size(1), -1))
end

-- The base weight as [out][fan_in] rows (what DoRA normalises).
local function out_rows(kind, w)
  if kind == "linear" then return rows(w) end
  if kind == "conv2d" then return rows(w:reshape(w:size(1), -1)) end
  return rows(w:t():contiguous())
end

-- The weight the adapter makes, written out: W + s B A, and with DoRA each output unit's row
-- rescaled to magnitude m. Returned in the base layer's layout.
local function expected_weight(kind, layer, name, scale, dora)
  local W = layer.weight
  local V = out_rows(kind, W)
  local B, Am = factors(layer, name)
  for o = 1, #V do
    for i = 1, #V[o] do
      local s = 0
      for k = 1, #Am do s = s + B[o][k] * Am[k][i] end
      V[o][i] = V[o][i] + scale * s
    end
  end
  if dora then
    local m = layer.lora_magnitude_vector[name].weight:totable()
    for o = 1, #V do
      local n = 0
      for i = 1, #V[o] do n = n + V[o][i] ^ 2 end
      n = math.sqrt(n)
      for i = 1, #V[o] do V[o][i] = V[o][i] * m[o] / n end
    end
  end
  local t = ft.tensor(V)
  if kind == "linear" then return t end
  if kind == "conv2d" then return t:reshape(W:shape()) end
  return t:t():contiguous()
end

-- The layer's base computation with weight w (and its own bias and options).
local function base_op(kind, layer, x, w)
  if kind == "linear" then return F.linear(x, w, layer.bias) end
  if kind == "conv1d" then return F.linear(x, w:t(), layer.bias) end
  if kind == "conv2d" then
    return F.conv2d(x, w, layer.bias, { padding = layer.padding, dilation = layer.dilation, stride = layer.stride })
  end
  return F.embedding(x, w)
end

-- Per output unit norms of W, written out.
local function unit_norms(kind, w)
  local out = {}
  for o, row in ipairs(out_rows(kind, w)) do
    local n = 0
    for _, v in ipairs(row) do n = n + v * v end
    out[o] = math.sqrt(n)
  end
  return ft.tensor(out)
end

-- ---- fresh adapters ---------------------------------------------------------------------------

describe("a fresh LoRA adapter", function()
  for _, kind in ipairs(KINDS) do
    for _, dora in ipairs({ false, true }) do
      local what = kind .. (dora and " DoRA" or " LoRA")
      it("is an exact no-op on " .. what, function()
        local model, x = make(kind)
        local before = run(model, x)
        lora.attach(model, { target = "0", r = 3, alpha = 6, dora = dora })
        identical(run(model, x), before, what .. " output")
        model:train()
        identical(run(model, x), before, what .. " output in training mode")
      end)
    end
  end

  it("has PEFT's names, shapes and initialisation", function()
    local model = make("linear")
    lora.attach(model, { target = "0", r = 3, alpha = 6, name = "ad" })
    local sd = model:state_dict()
    assert.same({ 3, 6 }, sd["0.lora_A.ad.weight"]:shape())
    assert.same({ 5, 3 }, sd["0.lora_B.ad.weight"]:shape())
    assert.equal(0, H.max_abs(sd["0.lora_B.ad.weight"]))
    -- kaiming_uniform(a = sqrt 5): U(-1/sqrt(in), 1/sqrt(in))
    local bound = 1 / math.sqrt(6)
    assert.is_true(H.max_abs(sd["0.lora_A.ad.weight"]) <= bound)
    assert.is_true(H.max_abs(sd["0.lora_A.ad.weight"]) > bound / 3)

    local emb = make("embedding")
    lora.attach(emb, { target = "0", r = 2 })
    local esd = emb:state_dict()
    assert.same({ 2, 9 }, esd["0.lora_embedding_A.default"]:shape())
    assert.same({ 5, 2 }, esd["0.lora_embedding_B.default"]:shape())
    assert.equal(0, H.max_abs(esd["0.lora_embedding_A.default"]))
    assert.is_true(H.max_abs(esd["0.lora_embedding_B.default"]) > 0.5)

    local conv = make("conv2d")
    lora.attach(conv, { target = "0", r = 2, init = "gaussian" })
    local la = conv[1].lora_A.default
    assert.same({ 2, 3, 3, 3 }, la.weight:shape())
    assert.same({ 2, 2 }, la.dilation)
    assert.same({ 2, 2 }, la.padding)
    assert.same({ 4, 2, 1, 1 }, conv[1].lora_B.default.weight:shape())
    -- N(0, (1/r)^2): the sample std of 54 values is near 0.5
    local v = H.flat(la.weight)
    local s = 0
    for _, x in ipairs(v) do s = s + x * x end
    local std = math.sqrt(s / #v)
    assert.is_true(std > 0.3 and std < 0.7, "gaussian init std " .. std)
  end)

  for _, kind in ipairs(KINDS) do
    it("starts DoRA's magnitude at the weight norm of each output unit (" .. kind .. ")", function()
      local model = make(kind)
      lora.attach(model, { target = "0", r = 2, dora = true })
      H.assert_close(model[1].lora_magnitude_vector.default.weight, unit_norms(kind, model[1].weight), 1e-6,
        kind .. " magnitude")
    end)
  end
end)

-- ---- the adapted computation ----------------------------------------------------------------------

describe("an adapted layer", function()
  for _, kind in ipairs(KINDS) do
    for _, dora in ipairs({ false, true }) do
      local what = kind .. (dora and " DoRA" or " LoRA")
      it("computes the base layer with W + scale B A (" .. what .. ")", function()
        local model, x = make(kind)
        lora.attach(model, { target = "0", r = 2, alpha = 5, dora = dora })
        randomise(model, "default")
        local layer = model[1]
        local w = expected_weight(kind, layer, "default", 2.5, dora)
        H.assert_close(run(model, x), ft.no_grad(function() return base_op(kind, layer, x, w) end), 1e-5, what)
      end)

      it("merges, forwards the same, and unmerges back (" .. what .. ")", function()
        local model, x = make(kind)
        lora.attach(model, { target = "0", r = 2, alpha = 5, dora = dora })
        randomise(model, "default")
        local layer = model[1]
        local w0 = layer.weight:clone()
        local y = run(model, x)
        local want_w = expected_weight(kind, layer, "default", 2.5, dora)
        lora.merge(model)
        assert.same({ "default" }, lora.merged_adapters(model))
        H.assert_close(layer.weight, want_w, 1e-5, what .. " merged weight")
        H.assert_close(run(model, x), y, 1e-5, what .. " merged output")
        lora.unmerge(model)
        assert.same({}, lora.merged_adapters(model))
        H.assert_close(layer.weight, w0, 1e-6, what .. " weight after unmerge")
        H.assert_close(run(model, x), y, 1e-5, what .. " output after unmerge")
      end)
    end
  end

  it("equals the dense convolution with the composed kernel, dilation 2 included", function()
    local model, x = make("conv2d")
    local base = run(model, x)
    lora.attach(model, { target = "0", r = 2, alpha = 2 })
    randomise(model, "default")
    local layer = model[1]
    -- K[o][i][h][w] = sum_k B[o][k] A[k][i][h][w]
    local B = rows(layer.lora_B.default.weight:reshape(4, 2))
    local Aw = layer.lora_A.default.weight:totable()
    local K = {}
    for o = 1, 4 do
      K[o] = {}
      for i = 1, 3 do
        K[o][i] = {}
        for h = 1, 3 do
          K[o][i][h] = {}
          for w = 1, 3 do
            local s = 0
            for k = 1, 2 do s = s + B[o][k] * Aw[k][i][h][w] end
            K[o][i][h][w] = s
          end
        end
      end
    end
    local dense = F.conv2d(x, ft.tensor(K), nil, { padding = 2, dilation = 2 })
    H.assert_close(run(model, x) - base, dense, 1e-5, "conv LoRA delta")
  end)

  it("scales by alpha / sqrt(r) with rslora", function()
    local model, x = make("linear")
    lora.attach(model, { target = "0", r = 4, alpha = 8, rslora = true })
    assert.equal(4, lora.layers(model, "default")[1].scale)
    randomise(model, "default")
    local w = expected_weight("linear", model[1], "default", 4, false)
    H.assert_close(run(model, x), F.linear(x, w, model[1].bias), 1e-5, "rslora output")
    local plain = make("linear")
    lora.attach(plain, { target = "0", r = 4, alpha = 8 })
    assert.equal(2, lora.layers(plain, "default")[1].scale)
  end)

  it("keeps a JSON-able config that recreates the adapter", function()
    local model = make("conv2d")
    lora.attach(model, { target = { "0" }, r = 3, alpha = 2, dora = true, rslora = true, dropout = 0.2,
      bias = "all", rank_pattern = { ["0"] = 2 } })
    local config = ft.json.decode(ft.json.encode(A.get(model, "default").config))
    assert.same({ "0" }, config.target)
    assert.is_true(config.fan_in_fan_out == false and config.init == true)
    local again = make("conv2d")
    lora.attach(again, config)
    assert.same(lora.layers(model, "default"), lora.layers(again, "default"))
    assert.same(sorted_keys(peft.adapter_state_dict(model, "default")), sorted_keys(peft.adapter_state_dict(again, "default")))
  end)

  it("takes per-layer ranks and alphas from rank_pattern and alpha_pattern", function()
    local model = gpt2.GPT2LMHeadModel(gpt2.config("gpt-s", { n_layer = 2, n_embd = 24, n_head = 2 }))
    lora.attach(model, { target = { "c_attn", "c_proj" }, r = 4, alpha = 8,
      rank_pattern = { ["h.1.attn.c_attn"] = 2, ["c_proj"] = 6 }, alpha_pattern = { ["mlp.c_proj"] = 3 } })
    local got = {}
    for _, l in ipairs(lora.layers(model, "default")) do got[l.path] = { l.r, l.alpha } end
    assert.same({ 4, 8 }, got["transformer.h.0.attn.c_attn"])
    assert.same({ 2, 8 }, got["transformer.h.1.attn.c_attn"])
    assert.same({ 6, 8 }, got["transformer.h.0.attn.c_proj"])
    assert.same({ 6, 3 }, got["transformer.h.1.mlp.c_proj"])
    assert.same({ 2, 24 }, model.transformer.h[2].attn.c_attn.lora_A.default.weight:shape())
  end)

  it("recomputes DoRA's base term on the dropped-out input while training", function()
    -- With dropout p, every output is base(x) + (g - 1) W xd + g s B A xd for one mask:
    -- xd = x * mask / (1 - p). Recover the mask from one input row and check it explains y.
    local model = nn.Sequential(nn.Linear(1, 3))
    lora.attach(model, { target = "0", r = 1, alpha = 1, dora = true, dropout = 0.5 })
    randomise(model, "default")
    model:train()
    local layer = model[1]
    local x = ft.tensor({ { 2.0 } })
    local y = run(model, x):totable()[1]
    local W, b = layer.weight:totable(), layer.bias:totable()
    local a1, b1 = layer.lora_A.default.weight:item(), layer.lora_B.default.weight:totable()
    local m = layer.lora_magnitude_vector.default.weight:totable()
    local function predict(xd)
      local out = {}
      for o = 1, 3 do
        local v = W[o][1] + b1[o][1] * a1
        local g = m[o] / math.abs(v)
        out[o] = (W[o][1] * 2 + b[o]) + (g - 1) * W[o][1] * xd + g * b1[o][1] * a1 * xd
      end
      return out
    end
    local best = math.huge
    for _, xd in ipairs({ 0, 4 }) do
      local p, err = predict(xd), 0
      for o = 1, 3 do err = math.max(err, math.abs(p[o] - y[o])) end
      best = math.min(best, err)
    end
    assert.is_true(best < 1e-5, "DoRA training output is explained by no dropout mask: " .. best)
  end)
end)

-- ---- merging safely, several adapters ----------------------------------------------------------------

describe("ft.peft.lora merge", function()
  it("with safe = true refuses NaN and leaves every weight bit-identical", function()
    local model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    lora.attach(model, { target = { "0", "1" }, r = 2 })
    randomise(model, "default")
    ft.no_grad(function() model[2].lora_B.default.weight:copy_(ft.tensor({ { 0 / 0, 1 }, { 1, 1 } })) end)
    local w0, w1 = model[1].weight:clone(), model[2].weight:clone()
    local err = H.error_of(lora.merge, model, { safe = true })
    H.assert_mentions(err, "'default'", "1", "NaN")
    identical(model[1].weight, w0, "first layer weight")
    identical(model[2].weight, w1, "second layer weight")
    assert.same({}, lora.merged_adapters(model))
    err = H.error_of(lora.safe_merge, model)
    H.assert_mentions(err, "NaN")
  end)

  it("switches, enables, disables and merges several adapters", function()
    local model, x = make("linear")
    local layer = model[1]
    local base = run(model, x)
    lora.attach(model, { target = "0", r = 2, name = "a" })
    lora.attach(model, { target = "0", r = 3, alpha = 4, name = "b" })
    randomise(model, "a")
    randomise(model, "b")
    local wa = expected_weight("linear", layer, "a", 4, false)
    local wb = expected_weight("linear", layer, "b", 4 / 3, false)
    local da, db = F.linear(x, wa) - F.linear(x, layer.weight), F.linear(x, wb) - F.linear(x, layer.weight)
    H.assert_close(run(model, x), base + da, 1e-5, "first adapter active")
    peft.set_adapter(model, "b")
    H.assert_close(run(model, x), base + db, 1e-5, "after set_adapter b")
    assert.is_true(layer.lora_A.b.weight.requires_grad)
    assert.is_false(layer.lora_A.a.weight.requires_grad, "only the active adapter trains")
    peft.disable(model)
    identical(run(model, x), base, "disabled")
    peft.enable(model)
    H.assert_close(run(model, x), base + db, 1e-5, "enabled again")
    peft.enable(model, "a")
    H.assert_close(run(model, x), base + da, 1e-5, "switched to a")
    A.registry(model).active = { a = true, b = true }
    local both = run(model, x)
    H.assert_close(both, base + da + db, 1e-5, "both active")
    lora.merge(model)
    assert.same({ "a", "b" }, lora.merged_adapters(model))
    H.assert_close(run(model, x), both, 1e-5, "both merged")
    lora.unmerge(model)
    H.assert_close(run(model, x), both, 1e-5, "both unmerged")
    peft.delete_adapter(model, "a")
    assert.is_nil(model:state_dict()["0.lora_A.a.weight"])
    H.assert_close(run(model, x), base + db, 1e-5, "after deleting a")
    peft.delete_adapter(model, "b")
    assert.is_nil(rawget(layer, "forward"))
    local keys = {}
    for k in pairs(model:state_dict()) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "0.bias", "0.weight" }, keys)
    H.assert_close(run(model, x), base, 1e-6, "plain again (the weight went through merge and unmerge)")
  end)

  it("unmerges when adapters are disabled, as PEFT, and merge_and_unload leaves a plain model", function()
    local model, x = make("conv1d")
    local base = run(model, x)
    lora.attach(model, { target = "0", r = 2, dora = true })
    randomise(model, "default")
    local y = run(model, x)
    lora.merge(model)
    peft.disable(model)
    H.assert_close(run(model, x), base, 1e-6, "disabled after merge")
    assert.same({}, lora.merged_adapters(model))
    peft.enable(model)
    lora.merge_and_unload(model)
    assert.same({}, peft.adapters(model))
    assert.is_nil(rawget(model[1], "forward"))
    assert.is_nil(model[1]._modules.lora_A)
    H.assert_close(run(model, x), y, 1e-5, "merged and unloaded")
  end)
end)

-- ---- training --------------------------------------------------------------------------------------

describe("training a LoRA adapter", function()
  local function tiny_gpt()
    ft.manual_seed(3)
    return gpt2.GPT2LMHeadModel(gpt2.config("gpt-s", { n_layer = 2, n_embd = 24, n_head = 2, n_positions = 16,
      attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 }))
  end

  it("trains only the adapter: AdamW leaves the base weights bit-identical", function()
    local model = tiny_gpt()
    lora.attach(model, { target = { "c_attn", "c_proj" }, r = 4, alpha = 8, dropout = 0.1 })
    for k, p in model:named_parameters() do
      assert.equal(k:find(".lora_", 1, true) ~= nil, p.requires_grad, k)
    end
    local before = {}
    for k, p in model:named_parameters() do before[k] = p:clone() end
    local opt = ft.optim.AdamW(model:parameters(), { lr = 1e-2, weight_decay = 0.1 })
    local ids = ft.randint(1, 257, { 2, 8 })
    for _ = 1, 2 do
      opt:zero_grad()
      model(ids, { labels = ids }).loss:backward()
      opt:step()
    end
    for k, p in model:named_parameters() do
      if k:find(".lora_", 1, true) then
        if k:find("lora_B", 1, true) then assert.is_true(H.max_abs(p) > 0, k .. " trained") end
      else
        identical(p, before[k], k)
      end
    end
  end)

  it("trains biases and modules_to_save as asked", function()
    local model = tiny_gpt()
    lora.attach(model, { target = "c_attn", r = 2, bias = "lora_only", modules_to_save = { "ln_f" } })
    local sd = peft.adapter_state_dict(model, "default")
    assert.is_not_nil(sd["transformer.h.0.attn.c_attn.bias"])
    assert.is_nil(sd["transformer.h.0.attn.c_proj.bias"])
    assert.is_not_nil(sd["transformer.ln_f.weight"])
    assert.is_true(model.transformer.h[1].attn.c_attn.bias.requires_grad)
    assert.is_false(model.transformer.h[1].attn.c_proj.bias.requires_grad)
    assert.is_true(model.transformer.ln_f.weight.requires_grad)
    lora.attach(model, { target = "c_fc", r = 2, bias = "all", name = "second" })
    sd = peft.adapter_state_dict(model, "second")
    assert.is_not_nil(sd["transformer.h.1.ln_2.bias"])
    assert.is_not_nil(sd["transformer.h.0.attn.c_proj.bias"])
    assert.is_true(model.transformer.h[1].ln_2.bias.requires_grad)
    -- The first adapter's modules_to_save still trains after the second froze the base.
    assert.is_true(model.transformer.ln_f.weight.requires_grad)
    peft.delete_adapter(model, "second")
    assert.is_false(model.transformer.h[1].ln_2.bias.requires_grad)
    assert.is_true(model.transformer.h[1].attn.c_attn.bias.requires_grad)
  end)

  -- Central differences of loss = sum(y * c), which is linear in each factor on its own.
  local function check_fd(kind, keys, dora)
    local model, x = make(kind)
    lora.attach(model, { target = "0", r = 2, alpha = 3, dora = dora })
    randomise(model, "default")
    local c = ft.randn(run(model, x):shape())
    local function loss() return (model(x) * c):sum() end
    loss():backward()
    local sd = peft.adapter_state_dict(model, "default")
    for _, key in ipairs(keys) do
      local p = sd[key]
      local values, shape = H.flat(p)
      local fd = {}
      for i = 1, #values do
        local function at(v)
          local copy = { table.unpack(values) }
          copy[i] = v
          ft.no_grad(function() p:copy_(H.from_flat(copy, shape)) end)
          return ft.no_grad(loss):item()
        end
        local eps = 1e-2
        fd[i] = (at(values[i] + eps) - at(values[i] - eps)) / (2 * eps)
        at(values[i])
      end
      H.assert_close(p.grad, H.from_flat(fd, shape), 2e-3, kind .. " " .. key .. " gradient")
    end
  end

  it("gives lora_A and lora_B the gradients of finite differences", function()
    check_fd("linear", { "0.lora_A.default.weight", "0.lora_B.default.weight" })
    check_fd("conv1d", { "0.lora_A.default.weight", "0.lora_B.default.weight" })
    check_fd("conv2d", { "0.lora_A.default.weight", "0.lora_B.default.weight" })
    check_fd("embedding", { "0.lora_embedding_A.default", "0.lora_embedding_B.default" })
  end)

  it("treats DoRA's weight norm as a constant in A's and B's gradients", function()
    -- y = ... + g * s * B A x with g = m / ||W + s B A|| held fixed: A and B get the plain
    -- LoRA gradients of the loss whose output weights c are multiplied by g.
    local dora, x = make("linear")
    lora.attach(dora, { target = "0", r = 2, alpha = 3, dora = true })
    randomise(dora, "default")
    local plain = make("linear")
    lora.attach(plain, { target = "0", r = 2, alpha = 3 })
    local sd, psd = peft.adapter_state_dict(dora, "default"), peft.adapter_state_dict(plain, "default")
    for _, k in ipairs({ "0.lora_A.default.weight", "0.lora_B.default.weight" }) do
      ft.no_grad(function() psd[k]:copy_(sd[k]) end)
    end
    local V = expected_weight("linear", dora[1], "default", 1.5, false):totable()
    local m = sd["0.lora_magnitude_vector.default.weight"]:totable()
    local g = {}
    for o, row in ipairs(V) do
      local n = 0
      for _, v in ipairs(row) do n = n + v * v end
      g[o] = m[o] / math.sqrt(n)
    end
    local c = ft.randn(3, 5)
    local loss = (dora(x) * c):sum()
    loss:backward()
    loss = (plain(x) * (c * ft.tensor(g))):sum()
    loss:backward()
    for _, k in ipairs({ "0.lora_A.default.weight", "0.lora_B.default.weight" }) do
      H.assert_close(sd[k].grad, psd[k].grad, 1e-5, k .. " gradient")
    end
  end)

  it("gives DoRA's magnitude the gradient of finite differences", function()
    check_fd("linear", { "0.lora_magnitude_vector.default.weight" }, true)
    check_fd("conv2d", { "0.lora_magnitude_vector.default.weight" }, true)
    check_fd("embedding", { "0.lora_magnitude_vector.default.weight" }, true)
  end)
end)

-- ---- errors ------------------------------------------------------------------------------------------

describe("ft.peft.lora errors", function()
  it("names a target that matches nothing and the layers it could adapt", function()
    local model = make("linear")
    local err = H.error_of(lora.attach, model, { target = { "q_proj", "v_proj" } })
    H.assert_mentions(err, "'q_proj'", "'v_proj'", "matches no module", "0")
  end)

  it("names a matched module LoRA cannot adapt and its class", function()
    local model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    local err = H.error_of(lora.attach, model, { target = { "0", "1" } })
    H.assert_mentions(err, "module 1", "LayerNorm", "target '1'")
    assert.same({}, peft.adapters(model))
    assert.is_true(model[1].weight.requires_grad)
  end)

  it("refuses grouped convolutions, unknown options and bad values", function()
    local model = nn.Sequential(nn.Conv2d(4, 4, 3, { groups = 2 }))
    H.assert_mentions(H.error_of(lora.attach, model, { target = "0" }), "groups = 2")
    local lin = make("linear")
    H.assert_mentions(H.error_of(lora.attach, lin, { target = "0", lora_alpha = 16 }), "lora_alpha", "'alpha'")
    H.assert_mentions(H.error_of(lora.attach, lin, { target = "0", r = 0 }), "'r'")
    H.assert_mentions(H.error_of(lora.attach, lin, { r = 2 }), "'target' is required")
    H.assert_mentions(H.error_of(lora.attach, lin, { target = "0", bias = "some" }), "'bias'")
    H.assert_mentions(H.error_of(lora.attach, lin, { target = "0", modules_to_save = { "head" } }), "'head'")
    lora.attach(lin, { target = "0" })
    H.assert_mentions(H.error_of(lora.attach, lin, { target = "0" }), "already has an adapter named 'default'")
    H.assert_mentions(H.error_of(lora.merge, lin, { names = { "nope" } }), "'nope'")
  end)
end)

describe("F.lora_add with consume", function()
  -- result [M, out] from an op, as a layer's output is; x [M, in], A [r, in], B [out, r]
  local M, nin, nout, r = 64, 32, 4096, 4
  local function operands(seed)
    ft.manual_seed(seed)
    local x, w = ft.randn(M, nin):requires_grad_(), ft.randn(nout, nin)
    local a, b = ft.randn(r, nin):requires_grad_(), ft.randn(nout, r):requires_grad_()
    return x, w, a, b
  end

  it("adds the delta in result's buffer, gives the same values and gradients, and closes result", function()
    local x1, w1, a1, b1 = operands(7)
    local x2, w2, a2, b2 = operands(7)
    local want = F.lora_add(F.linear(x1, w1), x1, a1, b1, 0.5)
    local result = F.linear(x2, w2)
    local before = ft.live_bytes()
    ft.reset_peak_bytes()
    local got = F.lora_add(result, x2, a2, b2, 0.5, true)
    -- only low = x A^T [M, r] is new (1 KiB): the [M, out] output is result's buffer (1 MiB),
    -- where a copy would have held both at once
    local new_bytes = ft.peak_bytes() - before
    assert(new_bytes < 4 * M * nout / 100, ("%d new bytes"):format(new_bytes))
    H.assert_mentions(H.error_of(function() return result:sum() end), "closed")
    H.assert_mentions(H.error_of(F.lora_add, got, x2, a2, b2, 0.5, "yes"), "boolean expected")
    identical(got, want, "output")
    local g = ft.randn(M, nout)
    want:mul(g):sum():backward()
    got:mul(g):sum():backward()
    for _, p in ipairs { { x1, x2, "x" }, { a1, a2, "A" }, { b1, b2, "B" } } do identical(p[2].grad, p[1].grad, p[3]) end
  end)

  it("copies when something else holds result's buffer", function()
    local x, w, a, b = operands(8)
    local result = F.linear(x, w)
    local view = result:reshape(M * nout)
    local kept = H.flat(view)
    local out = F.lora_add(result, x, a, b, 0.5, true)
    assert.same(kept, H.flat(view))   -- the view still reads the layer's output
    identical(out, F.lora_add(F.linear(x, w), x, a, b, 0.5), "output beside a view")
    local same, a_out = F.linear(x, w), ft.randn(r, nout)   -- result as x too: x A^T must read it unchanged
    identical(F.lora_add(same, same, a_out, b, 0.5, true):detach(),
      F.lora_add(F.linear(x, w), F.linear(x, w), a_out, b, 0.5):detach(), "result as x")
  end)
end)
