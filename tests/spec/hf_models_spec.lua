-- ft.models against HuggingFace: tiny random checkpoints saved by transformers, with the
-- logits, losses and gradients transformers computed (tests/fixtures/golden/, see the README
-- next to the golden folders' origin). Also checkpoint round trips, strict loading errors,
-- KV-cache generation and the from-scratch presets.
local ft = require "ft"
local H = require "helpers"

local models = ft.models

local GOLDEN = H.fixture("golden")

local function golden(name) return GOLDEN .. "/" .. name end

local function ref_of(name) return ft.safetensors.load(golden(name) .. "/reference.safetensors") end

-- Golden token ids are 0-based int32 read raw as int64: + 1 for the 1-based API.
local function ids1(t) return t + 1 end

local function keys(tbl)
  local out = {}
  for k in pairs(tbl) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function max_abs_diff(a, b)
  return ft.no_grad(function() return (a - b):abs():max():item() end)
end

local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
  return path
end

local function rmdir(path) os.execute("rm -rf '" .. path .. "'") end

local function copy_file(src, dst)
  local f = assert(io.open(src, "rb"))
  local data = f:read("a")
  f:close()
  f = assert(io.open(dst, "wb"))
  f:write(data)
  f:close()
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A temp copy of a golden folder's config.json and model.safetensors.
local function copy_model(name)
  local dir = tmpdir()
  copy_file(golden(name) .. "/config.json", dir .. "/config.json")
  copy_file(golden(name) .. "/model.safetensors", dir .. "/model.safetensors")
  return dir
end

-- Exact equality of two tensors (shape and every value).
local function assert_identical(a, b, what)
  assert.same(a:shape(), b:shape(), what)
  local fa, fb = H.flat(a), H.flat(b)
  for i = 1, #fa do
    if fa[i] ~= fb[i] then error(("%s: element %d is %.9g, expected %.9g"):format(what, i, fa[i], fb[i]), 2) end
  end
end

-- ---- golden numbers ------------------------------------------------------------------------

for _, name in ipairs({ "hf_gpt2", "hf_llama" }) do
  describe(name .. " (transformers reference)", function()
    local model = models.from_pretrained(golden(name))
    local ref = ref_of(name)

    it("loads in eval mode with the HF config and names", function()
      assert.is_false(model.training)
      assert.equal("table", type(model.config))
      local file = ft.safetensors.load(golden(name) .. "/model.safetensors")
      local sd = model:state_dict()
      for _, k in ipairs(keys(file)) do
        assert.is_not_nil(sd[k], k)
        assert_identical(sd[k], file[k], k)
      end
    end)

    it("computes the reference logits", function()
      local out = ft.no_grad(function() return model(ids1(ref.input_ids)) end)
      assert.same({ 1, 16, 256 }, out.logits:shape())
      local d = max_abs_diff(out.logits, ref.logits)
      assert(d <= 1e-4, ("logits max abs error %g"):format(d))
      out = ft.no_grad(function() return model(ids1(ref.input_ids2)) end)
      d = max_abs_diff(out.logits, ref.logits2)
      assert(d <= 1e-4, ("logits2 max abs error %g"):format(d))
    end)

    it("computes the reference loss and every parameter gradient", function()
      local grads = ft.safetensors.load(golden(name) .. "/grads.safetensors")
      model:train()
      model:zero_grad()
      local ids = ids1(ref.input_ids2)
      local out = model(ids, { labels = ids })
      local d = math.abs(out.loss:item() - ref.loss2:item())
      assert(d <= 1e-5, ("loss2 %.8g, reference %.8g"):format(out.loss:item(), ref.loss2:item()))
      out.loss:backward()
      model:eval()
      local checked = 0
      for pname, p in model:named_parameters() do
        local g = grads[pname .. ".grad"]
        assert.is_not_nil(g, "no reference gradient for " .. pname)
        assert.is_not_nil(p.grad, "no gradient for " .. pname)
        local scale = H.max_abs(g)
        local err = max_abs_diff(p.grad, g)
        assert(err <= 1e-3 * scale, ("%s: gradient max abs error %g, reference scale %g"):format(pname, err, scale))
        checked = checked + 1
      end
      assert.equal(#keys(grads), checked)
      model:zero_grad()
    end)

    it("generates greedily with the KV cache as repeated full forwards do", function()
      local prompt = ids1(ref.input_ids):narrow(2, 1, 5)
      local n = 10
      local got = model:generate(prompt, { max_new_tokens = n })
      assert.same({ 1, 5 + n }, got:shape())
      local seq = prompt
      ft.no_grad(function()
        for _ = 1, n do
          local logits = model(seq).logits
          local next_id = logits:select(2, seq:size(2)):argmax(2):reshape(1, 1)
          seq = ft.cat({ seq, next_id }, 2)
        end
      end)
      H.assert_equal_ints(got, seq, "generated ids")
    end)

    it("gives the same logits with the cache as without", function()
      local ids = ids1(ref.input_ids2)
      ft.no_grad(function()
        local full = model(ids).logits
        local first = model(ids:narrow(2, 1, 10), { use_cache = true })
        local past = first.past_key_values
        assert.equal(3, #past)
        local step = model(ids:narrow(2, 11, 1), { past_key_values = past, use_cache = true })
        local rest = model(ids:narrow(2, 12, 13), { past_key_values = step.past_key_values })
        assert(max_abs_diff(step.logits, full:narrow(2, 11, 1)) <= 1e-4, "one cached step")
        assert(max_abs_diff(rest.logits, full:narrow(2, 12, 13)) <= 1e-4, "a cached block of 13")
      end)
    end)

    it("generates a left-padded batch row as it generates the row alone", function()
      local long = ids1(ref.input_ids2):narrow(1, 1, 1):narrow(2, 1, 8):clone()
      local short = ids1(ref.input_ids2):narrow(1, 2, 1):narrow(2, 1, 5):clone()
      local batch = ft.cat({ long, ft.cat({ ft.ones({ 1, 3 }, { dtype = "int64" }), short }, 2) }, 1)
      local mask = ft.tensor({ { 1, 1, 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 1, 1, 1, 1, 1 } }, { dtype = "int64" })
      local got = model:generate(batch, { max_new_tokens = 6, attention_mask = mask })
      local alone_long = model:generate(long, { max_new_tokens = 6 })
      local alone_short = model:generate(short, { max_new_tokens = 6 })
      H.assert_equal_ints(got:narrow(1, 1, 1):narrow(2, 9, 6), alone_long:narrow(2, 9, 6), "row 1")
      H.assert_equal_ints(got:narrow(1, 2, 1):narrow(2, 9, 6), alone_short:narrow(2, 6, 6), "row 2")
    end)

    it("round-trips through save_pretrained bit for bit", function()
      local dir = tmpdir()
      models.save_pretrained(model, dir)
      local saved = ft.safetensors.load(dir .. "/model.safetensors")
      local original = ft.safetensors.load(golden(name) .. "/model.safetensors")
      assert.same(keys(original), keys(saved))   -- no tied lm_head copy for GPT-2
      local again = models.from_pretrained(dir)
      local a, b = model:state_dict(), again:state_dict()
      assert.same(keys(a), keys(b))
      for _, k in ipairs(keys(a)) do assert_identical(b[k], a[k], k) end
      assert.same(ft.json.read(golden(name) .. "/config.json"), ft.json.read(dir .. "/config.json"))
      local x = ids1(ref.input_ids)
      ft.no_grad(function() assert_identical(again(x).logits, model(x).logits, "logits after the round trip") end)
      rmdir(dir)
    end)
  end)
end

describe("hf_vit (transformers reference)", function()
  it("computes the reference logits", function()
    local model = models.from_pretrained(golden("hf_vit"))
    local ref = ref_of("hf_vit")
    local out = ft.no_grad(function() return model(ref.pixel_values) end)
    assert.same({ 3, 10 }, out.logits:shape())
    local d = max_abs_diff(out.logits, ref.logits)
    assert(d <= 1e-4, ("logits max abs error %g"):format(d))
  end)

  it("round-trips through save_pretrained bit for bit", function()
    local model = models.from_pretrained(golden("hf_vit"))
    local dir = tmpdir()
    models.save_pretrained(model, dir)
    local again = models.from_pretrained(dir)
    local a, b = model:state_dict(), again:state_dict()
    assert.same(keys(a), keys(b))
    for _, k in ipairs(keys(a)) do assert_identical(b[k], a[k], k) end
    rmdir(dir)
  end)
end)

-- ---- strict loading and config errors ---------------------------------------------------------------

describe("ft.models.from_pretrained errors", function()
  it("names the supported architectures for an unknown one", function()
    local dir = copy_model("hf_gpt2")
    write_file(dir .. "/config.json", '{"architectures": ["BertForMaskedLM"], "model_type": "bert"}')
    local msg = H.error_of(models.from_pretrained, dir)
    H.assert_mentions(msg, "config.json", "BertForMaskedLM", "bert", "GPT2LMHeadModel", "LlamaForCausalLM",
      "ViTForImageClassification")
    rmdir(dir)
  end)

  it("falls back on model_type when the architecture is not listed", function()
    local dir = copy_model("hf_gpt2")
    local config = ft.json.read(dir .. "/config.json")
    config.architectures = { "GPT2Model" }
    ft.json.write(dir .. "/config.json", config)
    local model = models.from_pretrained(dir)
    assert.equal("GPT2LMHeadModel", model.hf_architecture)
    rmdir(dir)
  end)

  it("reports a config.json that is not JSON, naming the file", function()
    local dir = copy_model("hf_gpt2")
    write_file(dir .. "/config.json", '{"model_type": "gpt2", "n_embd": ')
    local msg = H.error_of(models.from_pretrained, dir)
    H.assert_mentions(msg, dir .. "/config.json", "JSON")
    rmdir(dir)
  end)

  it("reports a missing config.json", function()
    local dir = tmpdir()
    H.assert_mentions(H.error_of(models.from_pretrained, dir), dir .. "/config.json")
    rmdir(dir)
  end)

  it("reports a config lacking a required field, naming the file and the field", function()
    local dir = copy_model("hf_llama")
    local config = ft.json.read(dir .. "/config.json")
    config.hidden_size = nil
    ft.json.write(dir .. "/config.json", config)
    H.assert_mentions(H.error_of(models.from_pretrained, dir), dir .. "/config.json", "hidden_size")
    config.hidden_size = "wide"
    ft.json.write(dir .. "/config.json", config)
    H.assert_mentions(H.error_of(models.from_pretrained, dir), dir .. "/config.json", "hidden_size", "integer")
    rmdir(dir)
  end)

  it("reports a missing tensor by name", function()
    local dir = copy_model("hf_gpt2")
    local sd = ft.safetensors.load(dir .. "/model.safetensors")
    sd["transformer.h.1.mlp.c_fc.bias"] = nil
    ft.safetensors.save(dir .. "/model.safetensors", sd)
    H.assert_mentions(H.error_of(models.from_pretrained, dir), "missing", "transformer.h.1.mlp.c_fc.bias",
      "model.safetensors")
    rmdir(dir)
  end)

  it("reports an unexpected tensor by name", function()
    local dir = copy_model("hf_llama")
    local sd = ft.safetensors.load(dir .. "/model.safetensors")
    sd["model.layers.0.extra.weight"] = ft.zeros(3)
    ft.safetensors.save(dir .. "/model.safetensors", sd)
    H.assert_mentions(H.error_of(models.from_pretrained, dir), "unexpected", "model.layers.0.extra.weight")
    rmdir(dir)
  end)

  it("reports a mis-shaped tensor with both shapes", function()
    local dir = copy_model("hf_gpt2")
    local sd = ft.safetensors.load(dir .. "/model.safetensors")
    sd["transformer.wpe.weight"] = ft.zeros(32, 96)
    ft.safetensors.save(dir .. "/model.safetensors", sd)
    H.assert_mentions(H.error_of(models.from_pretrained, dir), "transformer.wpe.weight", "[32,96]", "[64,96]")
    rmdir(dir)
  end)

  it("reports a folder without weights", function()
    local dir = tmpdir()
    copy_file(golden("hf_gpt2") .. "/config.json", dir .. "/config.json")
    H.assert_mentions(H.error_of(models.from_pretrained, dir), "model.safetensors", dir)
    rmdir(dir)
  end)
end)

describe("ft.models.from_pretrained variants", function()
  it("loads sharded checkpoints through model.safetensors.index.json", function()
    local dir = tmpdir()
    copy_file(golden("hf_llama") .. "/config.json", dir .. "/config.json")
    local sd = ft.safetensors.load(golden("hf_llama") .. "/model.safetensors")
    local shards, map = { {}, {} }, {}
    for i, k in ipairs(keys(sd)) do
      local n = i % 2 + 1
      shards[n][k] = sd[k]
      map[k] = ("model-%05d-of-00002.safetensors"):format(n)
    end
    for n = 1, 2 do ft.safetensors.save(("%s/model-%05d-of-00002.safetensors"):format(dir, n), shards[n]) end
    ft.json.write(dir .. "/model.safetensors.index.json", { metadata = { total_size = 0 }, weight_map = map })
    local model = models.from_pretrained(dir)
    local own = model:state_dict()
    for _, k in ipairs(keys(sd)) do assert_identical(own[k], sd[k], k) end
    rmdir(dir)
  end)

  it("loads GPT-2 checkpoints saved from the base model (no transformer. prefix, old attn buffers)", function()
    local dir = tmpdir()
    copy_file(golden("hf_gpt2") .. "/config.json", dir .. "/config.json")
    local sd = ft.safetensors.load(golden("hf_gpt2") .. "/model.safetensors")
    local base = {}
    for k, v in pairs(sd) do base[k:gsub("^transformer%.", "")] = v end
    base["h.0.attn.bias"] = ft.ones(1, 1, 64, 64)
    ft.safetensors.save(dir .. "/model.safetensors", base)
    local model = models.from_pretrained(dir)
    assert_identical(model:state_dict()["transformer.wte.weight"], sd["transformer.wte.weight"], "wte")
    rmdir(dir)
  end)
end)

-- ---- sampling ----------------------------------------------------------------------------------------

describe("generate sampling", function()
  local model = models.from_pretrained(golden("hf_gpt2"))
  local prompt = ids1(ref_of("hf_gpt2").input_ids):narrow(2, 1, 4)

  it("is reproducible with a seed and differs across seeds", function()
    local opts = { max_new_tokens = 12, temperature = 1.0, top_k = 50, top_p = 0.95, seed = 7 }
    local a = model:generate(prompt, opts)
    local b = model:generate(prompt, opts)
    H.assert_equal_ints(a, b, "same seed")
    local differs = false
    for seed = 8, 12 do
      opts.seed = seed
      local c = model:generate(prompt, opts)
      if H.flat(c)[5] ~= H.flat(a)[5] or H.flat(c)[10] ~= H.flat(a)[10] then differs = true end
    end
    assert.is_true(differs)
  end)

  it("reduces to greedy with top_k = 1 or a tiny top_p", function()
    local greedy = model:generate(prompt, { max_new_tokens = 8 })
    H.assert_equal_ints(model:generate(prompt, { max_new_tokens = 8, temperature = 0.7, top_k = 1, seed = 1 }),
      greedy, "top_k 1")
    H.assert_equal_ints(model:generate(prompt, { max_new_tokens = 8, temperature = 0.7, top_p = 1e-6, seed = 1 }),
      greedy, "top_p tiny")
  end)

  it("keeps to the top-k tokens", function()
    -- With top_k = 3 the first sampled token is one of the 3 most likely after the prompt.
    local logits = ft.no_grad(function() return model(prompt).logits:select(2, 4):reshape(-1) end)
    local row = logits:totable()
    local order = {}
    for i = 1, #row do order[i] = i end
    table.sort(order, function(x, y) return row[x] > row[y] end)
    local allowed = { [order[1]] = true, [order[2]] = true, [order[3]] = true }
    for seed = 1, 20 do
      local got = model:generate(prompt, { max_new_tokens = 1, temperature = 2.0, top_k = 3, seed = seed })
      assert.is_true(allowed[H.flat(got)[5]], "token outside the top 3")
    end
  end)

  it("stops at eos_token_id and pads finished rows", function()
    local greedy = model:generate(prompt, { max_new_tokens = 8 })
    local third = H.flat(greedy)[7]
    local got = model:generate(prompt, { max_new_tokens = 8, eos_token_id = third })
    local flat = H.flat(got)
    assert.equal(third, flat[#flat])
    assert.is_true(#flat <= 7)
  end)

  it("refuses to run past the position table", function()
    H.assert_mentions(H.error_of(model.generate, model, prompt, { max_new_tokens = 100 }), "64")
  end)

  -- The greedy reply's ids and the position of its first new token that repeats no earlier
  -- new one (past the second): an eos there stops the reply exactly there.
  local function greedy_and_stop()
    local greedy = H.flat(model:generate(prompt, { max_new_tokens = 8 }))
    local seen = { [greedy[5]] = true, [greedy[6]] = true }
    for j = 7, 12 do
      if not seen[greedy[j]] then return greedy, j end
      seen[greedy[j]] = true
    end
    error("the greedy reply repeats two tokens")
  end

  it("takes its defaults from generation_config (0-based eos ids, a list) and the caller's options over them", function()
    local greedy, stop = greedy_and_stop()
    local unused = 1
    for _, id in ipairs(greedy) do if id == unused then unused = unused + 1 end end
    for _, id in ipairs(greedy) do assert(id ~= unused, "pick another unused id") end
    local saved = model.generation_config
    model.generation_config = { eos_token_id = { unused - 1, greedy[stop] - 1 }, max_new_tokens = 8 }
    local ok, err = pcall(function()
      local flat = H.flat(model:generate(prompt))
      assert.equal(stop, #flat)                                -- stopped at the listed eos
      assert.equal(greedy[stop], flat[stop])
      assert.equal(6, #H.flat(model:generate(prompt, { max_new_tokens = 2 })))   -- the caller's wins
      model.generation_config = { do_sample = true, temperature = 0.7, top_k = 1 }
      H.assert_equal_ints(model:generate(prompt, { max_new_tokens = 8 }), model:generate(prompt, { max_new_tokens = 8,
        temperature = 0 }), "sampling from the config with top_k 1 is greedy")
    end)
    model.generation_config = saved
    assert(ok, err)
  end)

  it("streams the text of the first row as it comes, stopping at the tokenizer's eos", function()
    local tok = ft.tokenizer.bytes()
    local greedy, stop = greedy_and_stop()
    tok.eos_id = greedy[stop]
    local pieces = {}
    local flat = H.flat(model:generate(prompt, { max_new_tokens = 8, tokenizer = tok,
      stream = function(text) pieces[#pieces + 1] = text end }))
    assert.equal(stop, #flat)
    local new = table.move(greedy, 5, stop - 1, 1, {})
    local text = table.concat(pieces)
    -- bytes that are not UTF-8 on their own may be held back, but all the text arrives, once
    assert.equal(tok:decode(new), text)
    assert.is_true(#pieces >= 1)
    H.assert_mentions(H.error_of(model.generate, model, prompt, { stream = true }), "needs option 'tokenizer'")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { tokenizer = 3 }), "option 'tokenizer'")
  end)
end)

-- ---- from-scratch presets and the Llama family ---------------------------------------------------------

describe("ft.models presets", function()
  it("builds gpt-s with the documented shape", function()
    local config = models.config("gpt-s")
    assert.same({ 256, 256, 384, 6, 6 }, { config.vocab_size, config.n_positions, config.n_embd, config.n_layer,
      config.n_head })
    local model = models.new("gpt-s", { n_layer = 1 })
    assert.same({ 256, 384 }, model.transformer.wte.weight:shape())
    assert.same({ 384, 3 * 384 }, model.transformer.h[1].attn.c_attn.weight:shape())
    assert.equal(model.transformer.wte.weight, model.lm_head.weight)
    local ids = ft.randint(1, 256, { 2, 10 })
    local out = model(ids, { labels = ids })
    assert.same({ 2, 10, 256 }, out.logits:shape())
    -- an untrained byte model is close to uniform: loss near log(256)
    assert(math.abs(out.loss:item() - math.log(256)) < 0.5, "initial loss " .. out.loss:item())
    out.loss:backward()
    assert.is_not_nil(model.transformer.wte.weight.grad)
  end)

  it("saves and reloads a from-scratch model", function()
    for _, name in ipairs({ "gpt-s", "llama-s" }) do
      local model = models.new(name, name == "gpt-s" and { n_layer = 1 } or { num_hidden_layers = 1 })
      local dir = tmpdir()
      models.save_pretrained(model, dir)
      local again = models.from_pretrained(dir)
      local a, b = model:state_dict(), again:state_dict()
      for _, k in ipairs(keys(a)) do assert_identical(b[k], a[k], k) end
      rmdir(dir)
    end
  end)

  it("builds llama-s and vit-s", function()
    local llama = models.new("llama-s", { num_hidden_layers = 1 })
    assert.same({ 128, 384 }, llama.model.layers[1].self_attn.k_proj.weight:shape())
    local ids = ft.randint(1, 256, { 1, 12 })
    assert.same({ 1, 12, 256 }, llama(ids).logits:shape())
    local vit = models.new("vit-s", { num_hidden_layers = 1 })
    assert.same({ 1, 50, 192 }, vit.vit.embeddings.position_embeddings:shape())
    local x = ft.randn(2, 1, 28, 28)
    local out = vit(x, { labels = ft.tensor({ 3, 10 }, { dtype = "int64" }) })
    assert.same({ 2, 10 }, out.logits:shape())
    out.loss:backward()
    assert.is_not_nil(vit.vit.embeddings.cls_token.grad)
    H.assert_mentions(H.error_of(vit, ft.randn(1, 1, 32, 32)), "[1,1,32,32]")
  end)

  it("names unknown presets", function()
    H.assert_mentions(H.error_of(models.config, "gpt-xxl"), "gpt-xxl", "gpt-s", "llama-s", "vit-s")
  end)

  it("builds Qwen2 with q/k/v biases and Mistral without, equal to Llama when biases are zero", function()
    local base = models.config("llama-s", { num_hidden_layers = 1, hidden_size = 64, intermediate_size = 96,
      num_attention_heads = 4, num_key_value_heads = 2 })
    local qwen_config = models.copy_config(base, { architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2" })
    local qwen = models.new(qwen_config)
    local names = {}
    for n in qwen:named_parameters() do names[n] = true end
    assert.is_true(names["model.layers.0.self_attn.q_proj.bias"])
    assert.is_true(names["model.layers.0.self_attn.v_proj.bias"])
    assert.is_nil(names["model.layers.0.self_attn.o_proj.bias"])
    local mistral = models.new(models.copy_config(base, { architectures = { "MistralForCausalLM" } }))
    assert.equal("MistralForCausalLM", mistral.hf_architecture)
    local llama = models.new(base)
    mistral:load_state_dict(llama:state_dict())
    local sd = llama:state_dict()
    for n, p in qwen:named_parameters() do
      if n:match("_proj%.bias$") then sd[n] = ft.zeros(p:shape()) end
    end
    qwen:load_state_dict(sd)
    local ids = ft.randint(1, 256, { 1, 9 })
    ft.no_grad(function()
      local ref = llama(ids).logits
      assert_identical(mistral(ids).logits, ref, "mistral")
      assert_identical(qwen(ids).logits, ref, "qwen2 with zero biases")
      qwen.model.layers[1].self_attn.k_proj.bias:fill_(0.5)
      qwen.model.layers[1].self_attn.q_proj.bias:fill_(0.5)
      assert(max_abs_diff(qwen(ids).logits, ref) > 1e-4, "biases have no effect")
    end)
  end)

  it("ties Llama's lm_head when tie_word_embeddings is true", function()
    local model = models.new("llama-s", { num_hidden_layers = 1, tie_word_embeddings = true })
    assert.equal(model.model.embed_tokens.weight, model.lm_head.weight)
    local dir = tmpdir()
    models.save_pretrained(model, dir)
    assert.is_nil(ft.safetensors.load(dir .. "/model.safetensors")["lm_head.weight"])
    local again = models.from_pretrained(dir)
    assert.equal(again.model.embed_tokens.weight, again.lm_head.weight)
    rmdir(dir)
  end)
end)

describe("sliding-window attention", function()
  local llama = require "ft.models.llama"

  -- One layer, so position t's output depends only on the window of tokens ending at t;
  -- rotary embeddings are relative, so running that window alone must give the same logits.
  local function one_layer(arch, overrides)
    ft.manual_seed(3)
    local cfg = llama.config("llama-s", overrides)
    local model = llama[arch](cfg)
    model:eval()
    return model
  end

  it("Mistral: each position sees exactly the last sliding_window tokens", function()
    local model = one_layer("MistralForCausalLM", { num_hidden_layers = 1, sliding_window = 4 })
    local ids = ft.randint(1, 256, { 1, 10 })
    local full = ft.no_grad(function() return model(ids).logits end)
    for t = 4, 10 do
      local alone = ft.no_grad(function() return model(ids:narrow(2, t - 3, 4)).logits end):select(2, 4)
      assert.is_true(max_abs_diff(alone, full:select(2, t)) < 1e-4, "position " .. t)
    end
    local unwindowed = one_layer("LlamaForCausalLM", { num_hidden_layers = 1 })
    unwindowed:load_state_dict(model:state_dict())
    local plain = ft.no_grad(function() return unwindowed(ids).logits end)
    assert.is_true(max_abs_diff(plain, full) > 1e-2, "the window changed nothing")
  end)

  it("Mistral: KV-cached greedy generation equals uncached past the window", function()
    local model = one_layer("MistralForCausalLM", { num_hidden_layers = 2, sliding_window = 3 })
    local ids = ft.randint(1, 256, { 1, 5 })
    local generated = model:generate(ids, { max_new_tokens = 6 })
    local seq = ids
    for _ = 1, 6 do
      local logits = ft.no_grad(function() return model(seq).logits end)
      local next_id = logits:select(2, seq:size(2)):argmax(2):reshape(1, 1)
      seq = ft.cat({ seq, next_id }, 2)
    end
    assert.are.same(seq:totable(), generated:totable())
  end)

  it("Qwen2: windows only with use_sliding_window, from max_window_layers on", function()
    local off = one_layer("Qwen2ForCausalLM", { num_hidden_layers = 2, sliding_window = 4 })
    assert.is_nil(off.model.layers[1].self_attn.window)
    local on = one_layer("Qwen2ForCausalLM",
      { num_hidden_layers = 2, sliding_window = 4, use_sliding_window = true, max_window_layers = 1 })
    assert.is_nil(on.model.layers[1].self_attn.window)
    assert.are.equal(4, on.model.layers[2].self_attn.window)
  end)
end)
