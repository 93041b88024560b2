-- Quantising while loading and building (ft.models.from_pretrained / ft.models.new with
-- {quantize =}, ft.quant.build, ft.nn.init.defer), and LoRA merges into a quantised base
-- ({quantized = "requantize" | "dequantize"}).
--
-- The streaming paths are checked against the two-step path they replace (load or build in
-- float32, then ft.quant.quantize, itself checked bit for bit against bitsandbytes' NumPy
-- reimplementation in quant_spec): the logits must be the same bits. Their memory is checked
-- on the process's resident size: the peak (VmHWM, reset through /proc/self/clear_refs) while a
-- model of about 80 MB in float32 loads must stay a fraction of that.
local ft = require "ft"
local H = require "helpers"

local nn = ft.nn
local Q = ft._quant
local lora = require "ft.peft.lora"

local LLAMA = H.fixture("golden/hf_llama")
local GPT2 = H.fixture("golden/hf_gpt2")
local KINDS = { "nf4", "nf4_fp32", "int8" }

local function ids() return ft.tensor({ { 5, 9, 100, 3, 77, 1, 256, 42 } }, { dtype = "int64" }) end

local bits_equal, ints_equal = H.assert_bits_equal, H.assert_equal_ints

-- Two quantised weights hold the same stored values and scales.
local function same_qweight(a, b, what)
  assert.equal(b:kind(), a:kind(), what .. ": kind")
  ints_equal(a:codes(), b:codes(), what .. " codes")
  bits_equal(a:scales(), b:scales(), what .. " scales")
  if a:kind() == "nf4" then ints_equal(a:absmax_codes(), b:absmax_codes(), what .. " absmax codes") end
end

local function logits_of(model, x)
  model:eval()
  return ft.no_grad(function() return model(x).logits end)
end

local function quantized_paths(model)
  local out = {}
  for _, e in ipairs(ft.quant.modules(model)) do out[#out + 1] = e[1] end
  return out
end

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local v = tonumber(f:read("a"):match(field .. ":%s*(%d+)"))
  f:close()
  return v
end

-- The growth of the resident peak while fn runs, in bytes (VmHWM reset first).
local function resident_peak_growth(fn)
  collectgarbage()
  collectgarbage()
  ft.empty_cache()
  local f = assert(io.open("/proc/self/clear_refs", "w"), "cannot reset the resident peak")
  f:write("5")
  f:close()
  local before = status_kb("VmRSS")
  assert.is_true(status_kb("VmHWM") <= before + 1024, "VmHWM was not reset")
  local result = fn()
  return (status_kb("VmHWM") - before) * 1024, result
end

local function tmpdir()
  local path = H.make_tmpdir("quant-load")
  return path
end

local function rmdir(path) os.execute("rm -rf '" .. path .. "'") end

-- A Llama-family model of about 80 MB in float32 (embedding small: the projections dominate).
local BIG = {
  architectures = { "LlamaForCausalLM" }, model_type = "llama", vocab_size = 256, hidden_size = 512,
  intermediate_size = 1536, num_hidden_layers = 6, num_attention_heads = 8, num_key_value_heads = 4,
  max_position_embeddings = 64, rms_norm_eps = 1e-5, tie_word_embeddings = false,
}

describe("ft.models.from_pretrained with quantize", function()
  for _, kind in ipairs(KINDS) do
    it(("quantises a Llama folder while loading (%s): logits bit for bit those of from_pretrained + "
      .. "ft.quant.quantize"):format(kind), function()
      local a = ft.models.from_pretrained(LLAMA, { quantize = kind })
      local b = ft.models.from_pretrained(LLAMA)
      ft.quant.quantize(b, kind, { modules = ft.quant.default_modules(b) })
      assert.same(quantized_paths(b), quantized_paths(a))
      for _, e in ipairs(ft.quant.modules(a)) do assert.equal(kind, e[2]) end
      same_qweight(a.model.layers[2].mlp.down_proj.weight, b.model.layers[2].mlp.down_proj.weight, "down_proj")
      bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
      -- and it is a quantised model, not the float32 one
      local c = ft.models.from_pretrained(LLAMA)
      assert.is_true((logits_of(a, ids()) - logits_of(c, ids())):abs():max():item() > 1e-4)
    end)
  end

  it("quantises by default every Linear of the decoder blocks, not lm_head, not the embedding", function()
    local m = ft.models.from_pretrained(LLAMA, { quantize = "nf4" })
    local paths = quantized_paths(m)
    assert.equal(3 * 7, #paths)
    for _, p in ipairs(paths) do assert.matches("^model%.layers%.%d+%.", p) end
    assert.is_nil(ft.quant.is_quantized(m.lm_head))
    assert.equal("float32", m.lm_head.weight:dtype())
    assert.equal("float32", m.model.embed_tokens.weight:dtype())
    assert.same(paths, ft.quant.default_modules(ft.models.from_pretrained(LLAMA)))
    assert.is_false(m.training)
    assert.equal(LLAMA, m.name_or_path)
  end)

  it("quantises only the requested modules; the others are the file's values", function()
    local m = ft.models.from_pretrained(LLAMA, { quantize = "int8", modules = { "q_proj", "v_proj" } })
    local paths = quantized_paths(m)
    assert.equal(6, #paths)
    for _, p in ipairs(paths) do assert.matches("[qv]_proj$", p) end
    local file = ft.safetensors.load(LLAMA .. "/model.safetensors")
    bits_equal(m.model.layers[1].self_attn.k_proj.weight, file["model.layers.0.self_attn.k_proj.weight"], "k_proj")
    bits_equal(m.model.embed_tokens.weight, file["model.embed_tokens.weight"], "embedding")
    bits_equal(m.model.norm.weight, file["model.norm.weight"], "norm")
    local b = ft.models.from_pretrained(LLAMA)
    ft.quant.quantize(b, "int8", { modules = { "q_proj", "v_proj" } })
    bits_equal(logits_of(m, ids()), logits_of(b, ids()), "logits")
    -- lm_head may be chosen explicitly
    local h = ft.models.from_pretrained(LLAMA, { quantize = "nf4", modules = "lm_head" })
    assert.same({ "lm_head" }, quantized_paths(h))
  end)

  it("quantises GPT-2's Conv1D layers (weight [in, out], its transpose stored)", function()
    local a = ft.models.from_pretrained(GPT2, { quantize = "nf4" })
    local b = ft.models.from_pretrained(GPT2)
    ft.quant.quantize(b, "nf4", { modules = ft.quant.default_modules(b) })
    local paths = quantized_paths(a)
    assert.equal(4 * 3, #paths)   -- c_attn, c_proj, c_fc, c_proj in each of the 3 blocks
    bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
    local w = a.transformer.h[1].attn.c_attn.weight
    local dense = ft.models.from_pretrained(GPT2).transformer.h[1].attn.c_attn.weight
    assert.same(dense:shape(), w:shape())
    assert.is_true(w:transposed())
    -- the stored [out, in] layout is the quantisation of the transpose, bit for bit
    same_qweight(w, Q.quantize(dense:t(), "nf4"), "c_attn")
    bits_equal(w:dequantize(), Q.quantize(dense:t(), "nf4"):dequantize():t(), "c_attn dequantised")
    -- dequantising gives the Conv1D layer its [in, out] weight and its own forward back
    ft.quant.dequantize(a)
    assert.same({}, ft.quant.modules(a))
    assert.same(dense:shape(), a.transformer.h[1].attn.c_attn.weight:shape())
    H.assert_close(logits_of(a, ids()), logits_of(b, ids()), 1e-5, "logits after dequantize")
  end)

  it("quantises a Qwen2 folder (q/k/v biases) as from_pretrained + quantize", function()
    local dir = tmpdir()
    ft.manual_seed(21)
    local src = ft.models.new({ architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 300,
      hidden_size = 64, intermediate_size = 128, num_hidden_layers = 2, num_attention_heads = 4,
      num_key_value_heads = 2, tie_word_embeddings = true })
    ft.models.save_pretrained(src, dir)
    local a = ft.models.from_pretrained(dir, { quantize = "nf4" })
    local b = ft.models.from_pretrained(dir)
    ft.quant.quantize(b, "nf4", { modules = ft.quant.default_modules(b) })
    rmdir(dir)
    assert.equal(2 * 7, #ft.quant.modules(a))
    assert.is_not_nil(a.model.layers[1].self_attn.q_proj.bias)
    -- the tied lm_head still is the embedding
    assert.equal(a.model.embed_tokens.weight, a.lm_head.weight)
    bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
  end)

  it("never holds the float32 model: the resident peak while loading stays a fraction of it", function()
    local dir = tmpdir()
    ft.manual_seed(22)
    local src = ft.models.new(BIG)
    local float_bytes = 4 * src:num_parameters()
    assert.is_true(float_bytes > 70e6, "model of " .. float_bytes .. " bytes")
    ft.models.save_pretrained(src, dir)
    src = nil
    local growth, model = resident_peak_growth(function()
      return ft.models.from_pretrained(dir, { quantize = "nf4" })
    end)
    rmdir(dir)
    local q = ft.quant.memory(model)
    -- the quantised projections (about 1/8), one float32 layer (3 MB) and the small rest
    assert(growth < 0.35 * float_bytes, ("the resident peak grew by %.1f MB loading a %.1f MB model"):format(
      growth / 1e6, float_bytes / 1e6))
    assert(growth > 0.5 * q.total_bytes, "the measure sees the model itself")
    -- and nothing float32 is left behind: the live tensors are the model's
    collectgarbage()
    collectgarbage()
    assert(ft.live_bytes() < q.total_bytes + 8e6, ("%d live bytes for a model of %d"):format(ft.live_bytes(),
      q.total_bytes))
    -- the float32 load, for comparison, holds the whole model
    local dense_growth = resident_peak_growth(function() return ft.models.new(BIG) end)
    assert(dense_growth > 0.9 * float_bytes, "the float32 build's growth " .. dense_growth)
  end)

  it("with dtype, keeps the unquantised weights in it: from_pretrained + quantize + m:to(dtype)", function()
    local a = ft.models.from_pretrained(LLAMA, { quantize = "nf4", dtype = "bfloat16" })
    local b = ft.models.from_pretrained(LLAMA, { quantize = "nf4" }):to("bfloat16")
    assert.same(quantized_paths(b), quantized_paths(a))
    assert.equal("bfloat16", a.lm_head.weight:dtype())
    assert.equal("bfloat16", a.model.embed_tokens.weight:dtype())
    assert.equal("bfloat16", a.model.norm.weight:dtype())
    assert.equal("nf4", a.model.layers[1].self_attn.q_proj.weight:dtype())
    bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf4", dtype = "int8" }), "dtype",
      "int8")
  end)

  it("rejects bad options before loading anything", function()
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf5" }), "ft.models.from_pretrained",
      "quantize", "nf5", "nf4, int8, nf4_fp32")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = 4 }), "quantize", "4")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantise = "nf4" }), "unknown option 'quantise'",
      "did you mean 'quantize'")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { modules = "q_proj" }), "modules",
      "needs option 'quantize'")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf4", modules = "embed_tokens" }),
      "model.embed_tokens", "Embedding", "Linear")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf4", modules = "nope" }), "nope",
      "match no module")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf4", modules = { 1 } }),
      "modules[1]", "number")
    H.assert_mentions(H.error_of(ft.models.from_pretrained, LLAMA, { quantize = "nf4", modules = 3 }),
      "modules must be")
  end)
end)

describe("ft.models.new and ft.quant.build with quantize", function()
  it("builds a random Llama with quantised layers bit for bit as new + quantize", function()
    local config = ft.models.config("llama-s", { num_hidden_layers = 2 })
    for _, kind in ipairs(KINDS) do
      ft.manual_seed(5)
      local a = ft.models.new(config, nil, { quantize = kind })
      ft.manual_seed(5)
      local b = ft.models.new(config)
      ft.quant.quantize(b, kind, { modules = ft.quant.default_modules(b) })
      assert.same(quantized_paths(b), quantized_paths(a))
      bits_equal(logits_of(a, ids()), logits_of(b, ids()), kind .. " logits")
    end
    ft.manual_seed(6)
    ft.models.new(config, nil, { quantize = "nf4" })
    local after_a = ft.randn(3)
    ft.manual_seed(6)
    ft.models.new(config)
    bits_equal(after_a, ft.randn(3), "random numbers drawn after the build")
  end)

  it("with dtype, builds the unquantised weights in it: new + quantize + m:to(dtype)", function()
    local config = ft.models.config("llama-s", { num_hidden_layers = 2 })
    ft.manual_seed(8)
    local a = ft.models.new(config, nil, { quantize = "int8", dtype = "bfloat16" })
    ft.manual_seed(8)
    local b = ft.models.new(config, nil, { quantize = "int8" }):to("bfloat16")
    assert.equal("bfloat16", a.model.embed_tokens.weight:dtype())
    assert.equal("int8", a.model.layers[1].mlp.up_proj.weight:dtype())
    bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
  end)

  it("builds GPT-S with quantised Conv1D layers and a preset's overrides", function()
    ft.manual_seed(7)
    local a = ft.models.new("gpt-s", { n_layer = 2 }, { quantize = "int8", modules = { "c_fc", "c_attn" } })
    ft.manual_seed(7)
    local b = ft.models.new("gpt-s", { n_layer = 2 })
    ft.quant.quantize(b, "int8", { modules = { "c_fc", "c_attn" } })
    assert.equal(4, #ft.quant.modules(a))
    bits_equal(logits_of(a, ids()), logits_of(b, ids()), "logits")
  end)

  it("never holds the float32 model while building", function()
    local growth, model = resident_peak_growth(function() return ft.models.new(BIG, nil, { quantize = "nf4" }) end)
    local float_bytes = 4 * ft.quant.memory(model).quantized_params + ft.quant.memory(model).dense_bytes
    assert.is_true(float_bytes > 70e6, "model of " .. float_bytes .. " bytes")
    assert(growth < 0.3 * float_bytes, ("the resident peak grew by %.1f MB building a %.1f MB model"):format(
      growth / 1e6, float_bytes / 1e6))
  end)

  it("ft.quant.build quantises any module tree as it is initialised", function()
    local function make()
      return nn.ModuleList({ nn.Linear(70, 40), nn.Embedding(5, 4), nn.Linear(40, 10) })
    end
    ft.manual_seed(8)
    local a = ft.quant.build(make, "nf4")
    ft.manual_seed(8)
    local b = make()
    ft.quant.quantize(b, "nf4", { modules = { "0", "2" } })
    assert.same({ "0", "2" }, quantized_paths(a))   -- a tree without blocks: every Linear
    same_qweight(a[1].weight, b[1].weight, "layer 0")
    same_qweight(a[3].weight, b[3].weight, "layer 2")
    bits_equal(a[1].bias, b[1].bias, "bias")
    bits_equal(a[2].weight, b[2].weight, "embedding")
    local x = ft.randn(3, 70)
    bits_equal(a[3](a[1](x)), b[3](b[1](x)), "forward")
    ft.manual_seed(8)
    assert.same({ "2" }, quantized_paths(ft.quant.build(make, "int8", { modules = "2" })))
    H.assert_mentions(H.error_of(ft.quant.build, make, "nf3"), "ft.quant.build", "nf3")
    H.assert_mentions(H.error_of(ft.quant.build, make, "nf4", { modules = "1" }), "module 1", "Embedding")
    H.assert_mentions(H.error_of(ft.quant.build, make, "nf4", { module = "0" }), "unknown option 'module'")
    H.assert_mentions(H.error_of(ft.quant.build, function() return 1 end, "nf4"), "ft.nn model")
  end)

  it("ft.nn.init.defer records the initialisers in order; running them gives the values of a plain build", function()
    ft.manual_seed(9)
    local records, m = nn.init.defer(nn.Linear, 6, 3)
    assert.equal(2, #records)   -- kaiming-uniform weight, uniform bias
    assert.equal(m.weight, records[1].tensor)
    assert.equal(m.bias, records[2].tensor)
    local target = ft.zeros(3, 6)
    records[1].run(target)
    records[2].run()
    ft.manual_seed(9)
    local plain = nn.Linear(6, 3)
    bits_equal(target, plain.weight, "weight run into another tensor")
    bits_equal(m.bias, plain.bias, "bias")
    -- nothing recorded under skip, inside or around
    local none = nn.init.defer(nn.init.skip, nn.Linear, 6, 3)
    assert.equal(0, #none)
    assert.equal(0, #nn.init.skip(nn.init.defer, nn.Linear, 6, 3))
    H.assert_mentions(H.error_of(nn.init.defer, 3), "ft.nn.init.defer", "a function")
    H.assert_mentions(H.error_of(nn.init.defer, function() error("boom", 0) end), "boom")
    -- initialisers apply again afterwards
    local w = nn.init.constant_(ft.zeros(2), 3)
    assert.same({ 3, 3 }, w:totable())
  end)

  it("rejects bad options", function()
    H.assert_mentions(H.error_of(ft.models.new, "llama-s", nil, { quantize = "fp4" }), "ft.models.new", "fp4", "nf4")
    H.assert_mentions(H.error_of(ft.models.new, "llama-s", nil, { modules = "q_proj" }), "needs option 'quantize'")
    H.assert_mentions(H.error_of(ft.models.new, "llama-s", nil, { quantize = "nf4", modules = "norm" }),
      "model.norm", "LlamaRMSNorm")
    H.assert_mentions(H.error_of(ft.models.new, "llama-s", nil, { quantise = "nf4" }), "did you mean 'quantize'")
  end)

  it("checks the size against the machine's memory at the quantised size", function()
    -- about 9e12 parameters: past any machine in float32 and in NF4; refused before anything is built
    local huge = ft.models.config("llama-s", { hidden_size = 32768, intermediate_size = 131072,
      num_hidden_layers = 512, num_attention_heads = 256, num_key_value_heads = 256 })
    H.assert_mentions(H.error_of(ft.models.new, huge), "as float32", "more than this machine's memory")
    local err = H.error_of(ft.models.new, huge, nil, { quantize = "nf4" })
    H.assert_mentions(err, "GiB", "more than this machine's memory")
    assert.is_nil(err:find("as float32", 1, true))
  end)
end)

describe("the next-token loss without the logits (skip_logits)", function()
  -- vocab 20000: at most 419 positions a chunk, so 2 x 300 positions take two of 300
  local config = ft.models.config("llama-s", { num_hidden_layers = 1, vocab_size = 20000, hidden_size = 64,
    intermediate_size = 128, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 512 })

  local function step(skip)
    ft.manual_seed(3)
    local m = ft.models.new(config, nil, { quantize = "nf4" })
    ft.peft.lora(m, { target = { "q_proj", "lm_head" }, r = 4, init = false })
    m:train()
    local x = ft.randint(1, 20000, { 2, 300 })
    local labels = ft.cat({ ft.full({ 2, 7 }, -100, { dtype = "int64" }), x:narrow(2, 8, 293) }, 2)
    collectgarbage()
    ft.reset_peak_bytes()
    local before = ft.live_bytes()
    local out = m(x, { labels = labels, skip_logits = skip })
    out.loss:backward()
    local grads = {}
    for k, p in m:named_parameters() do
      if p.requires_grad then grads[k] = p.grad end
    end
    return out, grads, ft.peak_bytes() - before
  end

  it("gives the loss and gradients of the full logits, never holding them", function()
    local full, g_full, peak_full = step(false)
    local chunked, g_chunked, peak_chunked = step(true)
    assert.is_nil(chunked.logits)
    H.assert_close(chunked.loss, full.loss, 1e-6, "loss")
    assert.equal(4, (function()
      local n = 0
      for _ in pairs(g_full) do n = n + 1 end
      return n
    end)())
    for k, g in pairs(g_full) do H.assert_close(g_chunked[k], g, 1e-5, k) end
    -- the full loss holds the logits and their gradient at once; the chunked one a chunk's
    -- (half the positions) of each, never the whole logits and their gradient together
    local logits_bytes = 4 * 2 * 300 * 20000   -- 48 MB
    assert(peak_full >= 2 * logits_bytes, ("full logits: peak %d bytes"):format(peak_full))
    assert(peak_chunked < 1.25 * logits_bytes, ("chunked: peak %d bytes, the logits are %d"):format(peak_chunked,
      logits_bytes))
  end)

  it("needs labels; GPT-2 has it too", function()
    local m = ft.models.new("gpt-s", { n_layer = 1 })
    m:eval()
    H.assert_mentions(H.error_of(m.forward, m, ids(), { skip_logits = true }), "skip_logits", "labels")
    local out = m(ids(), { labels = ids(), skip_logits = true })
    H.assert_close(out.loss, m(ids(), { labels = ids() }).loss, 1e-6, "loss")
  end)
end)

describe("LoRA merges into a quantised base", function()
  -- A model with quantised layers and a LoRA adapter whose B is not zero.
  local function adapted(kind, layers)
    ft.manual_seed(12)
    local m = nn.Sequential(nn.Linear(70, 40), nn.ReLU(), nn.Linear(40, 10))
    ft.quant.quantize(m, kind)
    ft.peft.lora(m, { target = layers or { "0", "2" }, r = 4, alpha = 8, init = false })
    return m
  end

  -- scale * B A of layer m's adapter, as [out, in].
  local function delta(m) return m.lora_B.default.weight:matmul(m.lora_A.default.weight) * (8 / 4) end

  it("refuses without a choice, naming both, and changes nothing", function()
    local m = adapted("nf4")
    local before = m[1].weight:dequantize()
    for _, fn in ipairs({ lora.merge, lora.merge_and_unload, ft.peft.merge, ft.peft.merge_and_unload }) do
      local err = H.error_of(fn, m)
      H.assert_mentions(err, "layer 0", "quantised (nf4)", 'quantized = "requantize"', 'quantized = "dequantize"',
        "no weight was changed")
    end
    bits_equal(m[1].weight:dequantize(), before, "weight")
    assert.same({}, lora.merged(m))
  end)

  for _, kind in ipairs(KINDS) do
    it(("requantize (%s): the layer stays quantised and is quantize(dequant(W) + delta) exactly"):format(kind),
      function()
      local m = adapted(kind)
      local w0, w2 = m[1].weight:dequantize(), m[3].weight:dequantize()
      local d0, d2 = delta(m[1]), delta(m[3])
      local x = ft.randn(5, 70)
      local unmerged = m(x)
      lora.merge(m, { quantized = "requantize" })
      assert.equal(kind, ft.quant.is_quantized(m[1]))
      assert.equal(kind, ft.quant.is_quantized(m[3]))
      same_qweight(m[1].weight, Q.quantize(w0 + d0, kind), "layer 0")
      same_qweight(m[3].weight, Q.quantize(w2 + d2, kind), "layer 2")
      assert.same({ "default" }, lora.merged(m))
      -- forward skips the merged adapter: the quantised matmul of the merged weight only
      bits_equal(m(x), Q.linear(Q.linear(x, m[1].weight, m[1].bias):relu(), m[3].weight, m[3].bias), "forward")
      assert.is_true((m(x) - unmerged):abs():max():item() < 1)
      -- unmerging requantises dequant(W') - delta
      local merged = m[1].weight:dequantize()
      lora.unmerge(m)
      same_qweight(m[1].weight, Q.quantize(merged - d0, kind), "unmerged layer 0")
      -- merge_and_unload leaves a plain quantised model
      lora.merge_and_unload(m, { quantized = "requantize" })
      assert.same({}, ft.peft.adapters(m))
      assert.equal(kind, ft.quant.is_quantized(m[1]))
      assert.is_nil(m[1]._modules.lora_A)
    end)

    it(("dequantize (%s): the layer becomes a float32 Linear holding dequant(W) + delta"):format(kind), function()
      local m = adapted(kind)
      local w0, d0 = m[1].weight:dequantize(), delta(m[1])
      local x = ft.randn(5, 70)
      local unmerged = m(x)
      lora.merge(m, { quantized = "dequantize", dtype = "float32" })
      assert.is_nil(ft.quant.is_quantized(m[1]))
      assert.is_true(nn.is_parameter(m[1].weight))
      assert.equal("float32", m[1].weight:dtype())
      assert.is_false(m[1].weight.requires_grad)
      bits_equal(m[1].weight, w0 + d0, "merged weight")
      H.assert_close(m(x), unmerged, 1e-5, "forward")
      -- unmerge: float32 again, the base values back within rounding
      lora.unmerge(m)
      H.assert_close(m[1].weight, w0, 1e-6, "unmerged")
      local n = adapted(kind)
      lora.merge_and_unload(n, { quantized = "dequantize" })
      assert.same({}, ft.quant.modules(n))
      assert.same({}, ft.peft.adapters(n))
      assert.is_nil(tostring(n):find("quant=", 1, true))
    end)
  end

  it("merges into a quantised Conv1D in its [in, out] layout", function()
    for _, mode in ipairs({ "requantize", "dequantize" }) do
      ft.manual_seed(13)
      local m = ft.models.new("gpt-s", { n_layer = 1 }, { quantize = "nf4" })
      m:eval()
      ft.peft.lora(m, { target = "c_fc", r = 4, alpha = 8, init = false })
      local layer = m.transformer.h[1].mlp.c_fc
      local w0 = layer.weight:dequantize()   -- [in, out]
      local d = delta(layer)                 -- [out, in]
      local unmerged = logits_of(m, ids())
      lora.merge(m, { quantized = mode })
      if mode == "requantize" then
        same_qweight(layer.weight, Q.quantize(w0 + d:t(), "nf4", true), "c_fc")
        assert.same(w0:shape(), layer.weight:shape())
      else
        bits_equal(layer.weight, w0 + d:t(), "c_fc")
        H.assert_close(logits_of(m, ids()), unmerged, 1e-4, "logits")
      end
    end
  end)

  it("a layer quantised with an unmerged adapter elsewhere: only the adapted quantised layers change", function()
    local m = adapted("int8", { "0" })
    local q2 = m[3].weight
    lora.merge(m, { quantized = "dequantize" })
    assert.is_nil(ft.quant.is_quantized(m[1]))
    assert.equal(q2, m[3].weight)   -- no adapter there: untouched, still quantised
  end)

  it("checks the merge options", function()
    local m = adapted("nf4")
    H.assert_mentions(H.error_of(lora.merge, m, { quantized = "requant" }), "quantized", "requantize", "dequantize",
      "requant")
    H.assert_mentions(H.error_of(lora.merge, m, { quantized = "dequantize", dtype = "float64" }), "dtype", "float32",
      "bfloat16", "float64")
    H.assert_mentions(H.error_of(lora.merge, m, { quantized = "requantize", dtype = "float32" }), "dtype",
      'quantized = "dequantize"')
    H.assert_mentions(H.error_of(lora.merge, m, { quantize = "requantize" }), "did you mean 'quantized'")
    assert.same({}, lora.merged(m))
  end)
end)
