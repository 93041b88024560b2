-- Models over half-precision weights: m:to(dtype) converts in place, layers compute in float32,
-- so a bfloat16 model must give exactly what the float32 model with bfloat16-rounded weights
-- gives (the only difference is where the weights are stored), and LoRA adapters train in
-- float32 over the half base.
local ft = require "ft"
local H = require "helpers"

local models, peft = ft.models, ft.peft

local LLAMA = H.fixture("golden") .. "/hf_llama"
local ids = ft.safetensors.load(LLAMA .. "/reference.safetensors").input_ids + 1

local function max_abs(t) return ft.no_grad(function() return t:abs():max():item() end) end

-- A float32 model whose weights are rounded to dtype (stored as float32 again).
local function rounded_copy(dtype)
  local m = models.from_pretrained(LLAMA)
  ft.no_grad(function()
    for _, p in ipairs(m:parameters()) do p:copy_(p:to(dtype)) end
  end)
  return m
end

for _, dtype in ipairs({ "bfloat16", "float16" }) do
  describe("m:to('" .. dtype .. "') on a Llama", function()
    local full = models.from_pretrained(LLAMA)
    local half = models.from_pretrained(LLAMA):to(dtype)
    local rounded = rounded_copy(dtype)

    it("converts every float parameter in place and keeps ties", function()
      for name, p in half:named_parameters() do assert.are.equal(dtype, p:dtype(), name) end
      local emb, head = half.model.embed_tokens.weight, half.lm_head.weight
      assert.are.equal(rawequal(full.model.embed_tokens.weight, full.lm_head.weight), rawequal(emb, head))
      local bytes = 0
      for _, p in ipairs(half:parameters()) do bytes = bytes + p:nbytes() end
      local full_bytes = 0
      for _, p in ipairs(full:parameters()) do full_bytes = full_bytes + p:nbytes() end
      assert.are.equal(full_bytes / 2, bytes)
    end)

    it("computes in float32: logits equal the float32 model with rounded weights", function()
      local a = ft.no_grad(function() return half(ids) end)
      local b = ft.no_grad(function() return rounded(ids) end)
      local c = ft.no_grad(function() return full(ids) end)
      a, b, c = a.logits or a, b.logits or b, c.logits or c
      assert.are.equal("float32", a:dtype())
      local scale = max_abs(c)
      assert.is_true(max_abs(a - b) <= 1e-5 * scale, "half storage = float32 compute on rounded weights")
      -- and the rounding is there, of the size the dtype's unit roundoff gives
      local gap = max_abs(a - c) / scale
      assert.is_true(gap > 0, "the half model is not bit-identical to the float32 one")
      assert.is_true(gap < (dtype == "bfloat16" and 0.05 or 0.01), ("relative gap %.3g"):format(gap))
    end)

    it("trains a float32 LoRA over the half base with the gradients of the rounded model", function()
      local function lora_grads(m)
        ft.manual_seed(7)
        peft.lora(m, { target = { "q_proj", "v_proj" }, r = 2, alpha = 4 })
        for name, p in m:named_parameters() do
          if name:find("lora_B") then ft.no_grad(function() p:copy_(ft.randn(table.unpack(p:shape())) * 0.1) end) end
        end
        local out = m(ids, { labels = ids })
        out.loss:backward()
        local grads = {}
        for name, p in m:named_parameters() do
          if p.requires_grad then grads[name] = p.grad end
        end
        return grads, out.loss:item()
      end
      local hg, hloss = lora_grads(models.from_pretrained(LLAMA):to(dtype))
      local rg, rloss = lora_grads(rounded_copy(dtype))
      assert.is_true(math.abs(hloss - rloss) <= 1e-5 * math.abs(rloss))
      local n = 0
      for name, g in pairs(rg) do
        n = n + 1
        assert.is_not_nil(hg[name], name)
        assert.are.equal("float32", hg[name]:dtype(), name)
        assert.is_true(max_abs(hg[name] - g) <= 1e-4 * max_abs(g) + 1e-7, name)
      end
      assert.is_true(n >= 4, "the LoRA A and B of two projections train")
    end)

    it("keeps adapters float32 when converting after attaching them", function()
      local m = models.from_pretrained(LLAMA)
      peft.lora(m, { target = "q_proj", r = 2, alpha = 4 })
      m:to(dtype)
      for name, p in m:named_parameters() do
        assert.are.equal(name:find("lora_") and "float32" or dtype, p:dtype(), name)
      end
      local trainable = {}
      for _, p in ipairs(m:parameters()) do
        if p.requires_grad then trainable[#trainable + 1] = p end
      end
      local opt = ft.optim.AdamW(trainable, { lr = 1e-3 })
      m(ids, { labels = ids }).loss:backward()
      opt:step()
      H.assert_mentions(H.error_of(function() ft.optim.AdamW(m:parameters(), { lr = 1e-3 }) end),
        dtype, "float32")
    end)
  end)
end

describe("LoRA merges over half and quantised bases", function()
  local function trained_lora(m)
    ft.manual_seed(3)
    peft.lora(m, { target = "q_proj", r = 2, alpha = 4 })
    for name, p in m:named_parameters() do
      if name:find("lora_B") then ft.no_grad(function() p:copy_(ft.randn(table.unpack(p:shape())) * 0.05) end) end
    end
    return m
  end

  local function delta_of(layer)
    local a = layer.lora_A.default.weight
    local b = layer.lora_B.default.weight
    return ft.no_grad(function() return b:matmul(a) * 2 end)   -- alpha / r = 2
  end

  it("rounds a merge into a bfloat16 base once: W' = bf16(W + scale B A)", function()
    local m = trained_lora(models.from_pretrained(LLAMA):to("bfloat16"))
    local layer = m.model.layers[1].self_attn.q_proj
    local w = layer.weight:to("float32"):clone()
    local expected = ft.no_grad(function() return (w + delta_of(layer)):to("bfloat16") end)
    local before = ft.no_grad(function() return m(ids).logits end)
    peft.merge(m)
    assert.are.equal("bfloat16", layer.weight:dtype())
    assert.are.equal(0, max_abs(layer.weight:to("float32") - expected:to("float32")))
    local after = ft.no_grad(function() return m(ids).logits end)
    assert.is_true(max_abs(after - before) <= 0.05 * max_abs(before))
  end)

  it("dequantises an NF4 base into a bfloat16 merged layer on request, and refuses without a choice", function()
    local m = trained_lora(models.from_pretrained(LLAMA, { quantize = "nf4" }))
    local layer = m.model.layers[1].self_attn.q_proj
    H.assert_mentions(H.error_of(function() peft.merge(m) end), "requantize", "dequantize", "no weight was changed")
    local w = ft.no_grad(function() return layer.weight:dequantize() + delta_of(layer) end)
    peft.merge(m, { quantized = "dequantize", dtype = "bfloat16" })
    assert.are.equal("bfloat16", layer.weight:dtype())
    assert.are.equal(0, max_abs(layer.weight:to("float32") - w:to("bfloat16"):to("float32")))
    H.assert_mentions(H.error_of(function() peft.merge(m, { quantized = "dequantize", dtype = "int8" }) end),
      "dtype", "bfloat16")
  end)
end)

describe("from_pretrained and save_pretrained in the file's dtype", function()
  local function bf16_folder()
    local dir = H.make_tmpdir("half_model")
    models.save_pretrained(models.from_pretrained(LLAMA):to("bfloat16"), dir)
    return dir
  end

  it("writes a bfloat16 model as BF16 and reads it back as bfloat16, bit for bit", function()
    local dir = bf16_folder()
    for name, info in pairs(ft.safetensors.info(dir .. "/model.safetensors")) do
      assert.are.equal("BF16", info.dtype, name)
    end
    local m = models.from_pretrained(dir)
    local ref = models.from_pretrained(LLAMA):to("bfloat16")
    local sd = ref:state_dict()
    for name, p in pairs(m:state_dict()) do
      assert.are.equal("bfloat16", p:dtype(), name)
      assert.are.equal(0, max_abs(p:to("float32") - sd[name]:to("float32")), name)
    end
    local f32 = models.from_pretrained(dir, { dtype = "float32" })
    for name, p in pairs(f32:state_dict()) do
      assert.are.equal("float32", p:dtype(), name)
      assert.are.equal(0, max_abs(p - sd[name]:to("float32")), name)
    end
    H.assert_mentions(H.error_of(models.from_pretrained, dir, { dtype = "int8" }), "ft.models.from_pretrained",
      "dtype", "bfloat16", "int8")
    H.assert_mentions(H.error_of(models.save_pretrained, m, dir, { dtype = "int64" }), "ft.models.save_pretrained",
      "dtype", "int64")
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("uses the weights straight from the file's mapping, and a write never reaches the file", function()
    local dir = bf16_folder()
    collectgarbage()
    local before = ft.live_bytes()
    local m = models.from_pretrained(dir)
    collectgarbage()   -- the placeholders the build allocated
    local bytes = 0
    for _, p in ipairs(m:parameters()) do bytes = bytes + p:nbytes() end
    assert.is_true(ft.live_bytes() - before < bytes / 10, "no copy of the weights")
    local w = m.model.layers[1].mlp.up_proj.weight
    local original = w:to("float32")
    ft.no_grad(function() w:fill_(3) end)
    assert.are.equal(3, w[1][1]:item())
    local again = models.from_pretrained(dir)
    assert.are.equal(0, max_abs(again.model.layers[1].mlp.up_proj.weight:to("float32") - original))
    m, again = nil, nil
    collectgarbage()
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("ft.models.new with a dtype", function()
  it("builds the weights of new followed by m:to, bit for bit, and checks the option", function()
    local cfg = ft.json.read(LLAMA .. "/config.json")
    ft.manual_seed(5)
    local a = models.new(cfg, nil, { dtype = "bfloat16" })
    ft.manual_seed(5)
    local b = models.new(cfg):to("bfloat16")
    local sb, n = b:state_dict(), 0
    for name, t in pairs(a:state_dict()) do
      n = n + 1
      assert.are.equal(sb[name]:dtype(), t:dtype(), name)
      assert.are.equal(0, max_abs(t:to("float32") - sb[name]:to("float32")), name)
    end
    assert.is_true(n > 10)
    H.assert_mentions(H.error_of(models.new, cfg, nil, { dtype = "int64" }), "ft.models.new", "dtype", "int64")
    -- with quantize, dtype is that of the weights left unquantised (quant_load_spec)
    assert.are.equal("bfloat16", models.new(cfg, nil, { dtype = "bfloat16", quantize = "nf4" })
      .model.embed_tokens.weight:dtype())
  end)
end)

describe("m:to", function()
  it("rejects a dtype that is not a float dtype", function()
    local m = ft.nn.Linear(2, 3)
    H.assert_mentions(H.error_of(function() m:to("int64") end), "ft.nn.Module:to", "dtype", "bfloat16")
    H.assert_mentions(H.error_of(function() m:to("bf16") end), "ft.nn.Module:to", "bf16")
    assert.are.equal("float64", m:to("float64").weight:dtype())
    assert.are.equal("float32", m:to("float32").bias:dtype())
  end)
end)
