-- ft.models as the one registry: every family through ft.models.new / from_pretrained, configs
-- checked before anything is built (types, ranges, divisibility, the weight files' headers),
-- and strict options for generate, new, from_pretrained, save_pretrained and the builders.
local ft = require "ft"
local H = require "helpers"

local models = ft.models
local gpt2 = require "ft.models.gpt2"
local llama = require "ft.models.llama"
local vit = require "ft.models.vit"
local resnet = require "ft.models.resnet"
local clf = require "ft.models.gpt2_classifier"

local GOLDEN = H.fixture("golden")

local function copy_model(name)
  local dir = H.make_tmpdir("models_" .. name)
  for _, f in ipairs({ "config.json", "model.safetensors" }) do
    H.write_bytes(dir .. "/" .. f, H.read_bytes(GOLDEN .. "/" .. name .. "/" .. f))
  end
  return dir
end

local function rmdir(dir) H.run("rm -rf " .. H.quote(dir)) end

-- from_pretrained on a copy of a golden folder whose config.json got `edit`; returns the error.
local function config_error(name, edit)
  local dir = copy_model(name)
  local config = ft.json.read(dir .. "/config.json")
  edit(config)
  ft.json.write(dir .. "/config.json", config)
  local ok, err = pcall(models.from_pretrained, dir)
  rmdir(dir)
  assert(not ok, "from_pretrained accepted the edited config")
  return tostring(err), dir
end

-- Peak resident memory of this process in kB (VmHWM), or nil off Linux.
local function peak_rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

-- name -> "[shape]" of a built model's state dict, tied copies left out.
local function built_shapes(model)
  local sd, keys = model:state_dict()
  local tied = model.tied_weights and model:tied_weights() or {}
  local out = {}
  for _, k in ipairs(keys) do
    if not tied[k] then out[k] = H.shape_str(sd[k]:shape()) end
  end
  return out
end

local function planned_shapes(class, config)
  local shapes = class.tensor_shapes(class.read_config(config))
  local out = {}
  for k, s in pairs(shapes) do out[k] = H.shape_str(s) end
  return out
end

describe("tensor_shapes (what from_pretrained checks before allocating)", function()
  local cases = {
    { "gpt2 tied", gpt2.GPT2LMHeadModel, gpt2.config("gpt-s", { n_layer = 2, n_embd = 32, n_head = 4 }) },
    { "gpt2 untied, n_inner", gpt2.GPT2LMHeadModel,
      gpt2.config("gpt-s", { n_layer = 1, n_embd = 16, n_head = 2, n_inner = 24, tie_word_embeddings = false }) },
    { "llama", llama.LlamaForCausalLM, llama.config("llama-s", { num_hidden_layers = 2, hidden_size = 32,
      intermediate_size = 48, num_attention_heads = 4, num_key_value_heads = 2 }) },
    { "llama biases, tied, head_dim", llama.LlamaForCausalLM, llama.config("llama-s", { num_hidden_layers = 1,
      hidden_size = 32, intermediate_size = 40, num_attention_heads = 4, num_key_value_heads = 1, head_dim = 6,
      attention_bias = true, mlp_bias = true, tie_word_embeddings = true }) },
    { "qwen2", llama.Qwen2ForCausalLM, llama.config("llama-s", { num_hidden_layers = 1, hidden_size = 32,
      intermediate_size = 40, num_attention_heads = 4, num_key_value_heads = 2 }) },
    { "vit", vit.ViTForImageClassification, vit.config("vit-s", { num_hidden_layers = 2, hidden_size = 24,
      num_attention_heads = 3, intermediate_size = 40, num_labels = 4, patch_size = 7 }) },
    { "vit headless, no qkv bias", vit.ViTForImageClassification, vit.config("vit-s", { num_hidden_layers = 1,
      hidden_size = 12, num_attention_heads = 3, intermediate_size = 20, num_labels = 0, qkv_bias = false,
      num_channels = 3 }) },
    { "gpt2 classifier", clf.GPT2ForSequenceClassification, models.copy_config(gpt2.config("gpt-s",
      { n_layer = 1, n_embd = 16, n_head = 2 }), { architectures = { "GPT2ForSequenceClassification" }, num_labels = 3 }) },
    { "resnet-s", resnet.ResNet, resnet.config("resnet-s", { widths = { 4, 8, 8 }, num_classes = 4 }) },
    { "resnet18 narrow", resnet.ResNet, resnet.config("resnet18", { widths = { 4, 4, 8, 8 }, num_classes = 3 }) },
    { "resnet50 narrow", resnet.ResNet, resnet.config("resnet50", { widths = { 2, 4, 4, 4 }, num_classes = 5 }) },
  }
  for _, case in ipairs(cases) do
    it("equals the built model's state dict: " .. case[1], function()
      local class, config = case[2], case[3]
      assert.same(built_shapes(class(config)), planned_shapes(class, config))
    end)
  end
end)

describe("config.json validation", function()
  it("refuses absurd sizes, naming config.json, the key and the value", function()
    local msg, dir = config_error("hf_gpt2", function(c) c.n_embd = 1 << 62 end)
    H.assert_mentions(msg, dir .. "/config.json", "n_embd", tostring(1 << 62))
    msg = config_error("hf_gpt2", function(c) c.n_layer = 1 << 31 end)
    H.assert_mentions(msg, "config.json", "n_layer", "2147483648")
    msg = config_error("hf_llama", function(c) c.vocab_size = 0 end)
    H.assert_mentions(msg, "config.json", "vocab_size", "0")
  end)

  it("refuses negative heads, epsilons and dropout out of [0, 1]", function()
    H.assert_mentions(config_error("hf_gpt2", function(c) c.n_head = -2 end), "config.json", "n_head", "-2")
    H.assert_mentions(config_error("hf_gpt2", function(c) c.layer_norm_epsilon = -1e-5 end), "layer_norm_epsilon")
    H.assert_mentions(config_error("hf_llama", function(c) c.rms_norm_eps = 0 end), "rms_norm_eps")
    H.assert_mentions(config_error("hf_llama", function(c) c.num_key_value_heads = -1 end), "num_key_value_heads")
    H.assert_mentions(config_error("hf_vit", function(c) c.layer_norm_eps = -1 end), "layer_norm_eps")
    H.assert_mentions(config_error("hf_gpt2", function(c) c.attn_pdrop = 1.5 end), "attn_pdrop", "1.5")
    H.assert_mentions(config_error("hf_vit", function(c) c.patch_size = -4 end), "patch_size", "-4")
    H.assert_mentions(config_error("hf_llama", function(c) c.rope_parameters.rope_theta = -10 end), "rope_theta")
  end)

  it("checks divisibility, activation names and types", function()
    H.assert_mentions(config_error("hf_gpt2", function(c) c.n_head = 5 end), "n_embd", "96", "n_head", "5")
    H.assert_mentions(config_error("hf_llama", function(c) c.num_key_value_heads = 3 end), "num_key_value_heads")
    H.assert_mentions(config_error("hf_gpt2", function(c) c.activation_function = "swishy" end),
      "activation_function", "swishy", "gelu_new")
    H.assert_mentions(config_error("hf_gpt2", function(c) c.n_layer = 2.5 end), "n_layer", "integer", "2.5")
    H.assert_mentions(config_error("hf_gpt2", function(c) c.tie_word_embeddings = "yes" end), "tie_word_embeddings")
  end)

  it("checks the weights' names and shapes against the config before allocating the model", function()
    -- 4 layers in the config, 3 in the file
    local msg = config_error("hf_gpt2", function(c) c.n_layer = 4 end)
    H.assert_mentions(msg, "missing", "transformer.h.3.attn.c_attn.weight", "model.safetensors", "config.json")
    msg = config_error("hf_gpt2", function(c) c.n_positions = 32 end)
    H.assert_mentions(msg, "transformer.wpe.weight", "[64,96]", "[32,96]", "config.json")
    -- A config that asks for a 1.6 GB embedding: refused from the header, nothing allocated.
    local before = peak_rss_kb()
    msg = config_error("hf_gpt2", function(c) c.vocab_size = 1 << 22 end)
    H.assert_mentions(msg, "transformer.wte.weight", "[256,96]", "[4194304,96]")
    local after = peak_rss_kb()
    if before then assert(after - before < 200 * 1024, ("peak RSS grew by %d kB"):format(after - before)) end
  end)

  it("refuses a model larger than the machine's memory in ft.models.new", function()
    local msg = H.error_of(models.new, "gpt-s", { vocab_size = 1 << 24, n_embd = 1 << 16, n_head = 64 })
    H.assert_mentions(msg, "ft.models.new", "parameters", "memory")
    msg = H.error_of(models.new, "gpt-s", { n_layer = 1 << 31 })
    H.assert_mentions(msg, "ft.models.new", "n_layer", "2147483648")
  end)

  it("does not take an HF ResNet config for a torchvision one", function()
    local dir = H.make_tmpdir("models_hfresnet")
    H.write_bytes(dir .. "/config.json", '{"architectures": ["ResNetForImageClassification"], "model_type": "resnet"}')
    H.assert_mentions(H.error_of(models.from_pretrained, dir), "unsupported architecture",
      "ResNetForImageClassification", "ResNet")
    rmdir(dir)
  end)
end)

describe("strict options in ft.models", function()
  local model = models.from_pretrained(GOLDEN .. "/hf_gpt2")
  local prompt = ft.tensor({ { 5, 6, 7 } }, { dtype = "int64" })

  it("generate refuses unknown options and out-of-range values", function()
    H.assert_mentions(H.error_of(model.generate, model, prompt, { max_new_token = 2 }),
      "generate", "unknown option 'max_new_token'", "did you mean 'max_new_tokens'?")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { max_new_tokens = -1 }), "max_new_tokens", "-1")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { max_new_tokens = 0 }), "max_new_tokens")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { max_new_tokens = 2.5 }), "max_new_tokens", "2.5")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { top_k = -5, temperature = 1 }), "top_k", "-5")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { top_p = 0, temperature = 1 }), "top_p")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { top_p = 1.5, temperature = 1 }), "top_p", "1.5")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { temperature = -1 }), "temperature", "-1")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { temperature = 0 / 0 }), "temperature")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { eos_token_id = 0 }), "eos_token_id", "1-based")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { eos_token_id = 257 }), "eos_token_id", "257")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { pad_token_id = -1, eos_token_id = 3 }),
      "pad_token_id")
    H.assert_mentions(H.error_of(model.generate, model, prompt, { seed = "x" }), "seed")
    H.assert_mentions(H.error_of(model.generate, model, prompt,
      { attention_mask = ft.ones({ 1, 4 }, { dtype = "int64" }) }), "attention_mask", "[1,3]", "[1,4]")
    -- the valid forms still work
    assert.same({ 1, 5 }, model:generate(prompt, { max_new_tokens = 2, top_k = 0, temperature = 1, seed = 1,
      eos_token_id = { 3, 4 }, pad_token_id = 3 }):shape())
  end)

  it("ft.models.new and ft.models.config refuse unknown config keys, naming the nearest", function()
    H.assert_mentions(H.error_of(models.new, "gpt-s", { n_layers = 1 }),
      "ft.models.new", "unknown option 'n_layers'", "did you mean 'n_layer'?")
    H.assert_mentions(H.error_of(models.new, "llama-s", { num_hidden_layer = 1 }),
      "ft.models.new", "'num_hidden_layer'", "did you mean 'num_hidden_layers'?")
    H.assert_mentions(H.error_of(models.new, "vit-s", { hiden_size = 8 }), "'hiden_size'", "did you mean 'hidden_size'?")
    H.assert_mentions(H.error_of(models.new, "resnet-s", { num_clases = 4 }),
      "ft.models.new", "'num_clases'", "did you mean 'num_classes'?")
    H.assert_mentions(H.error_of(models.config, "gpt-s", { n_lyer = 1 }), "ft.models.config", "'n_lyer'")
    local config = models.config("gpt-s", { n_layer = 1 })
    H.assert_mentions(H.error_of(models.new, config, { n_embd_ = 8 }), "ft.models.new", "'n_embd_'")
    -- Mistral-only keys are fine for a Llama-family preset; resnet-s keeps num_classes
    assert.equal(4, models.new("llama-s", { num_hidden_layers = 1, sliding_window = 4,
      architectures = { "MistralForCausalLM" } }).model.layers[1].self_attn.window)
    assert.same({ 4, 128 }, models.new("resnet-s", { num_classes = 4 }).fc.weight:shape())
  end)

  it("the families' own config functions refuse unknown keys", function()
    H.assert_mentions(H.error_of(gpt2.config, "gpt-s", { n_embed = 8 }), "gpt2.config", "did you mean 'n_embd'?")
    H.assert_mentions(H.error_of(llama.config, "llama-s", { rms_norm_epsilon = 1e-6 }), "llama.config",
      "'rms_norm_epsilon'")
    H.assert_mentions(H.error_of(vit.config, "vit-s", { num_label = 3 }), "vit.config", "did you mean 'num_labels'?")
    H.assert_mentions(H.error_of(vit.config, "vit-s", { num_labels = -3 }), "vit.config", "num_labels", "-3")
    H.assert_mentions(H.error_of(resnet.config, "resnet18", { widht = { 1 } }), "resnet.config", "'widht'")
  end)

  it("resnet builders refuse unknown keys and bad values", function()
    H.assert_mentions(H.error_of(resnet.resnet_s, { num_clases = 4 }),
      "resnet.resnet_s", "unknown option 'num_clases'", "did you mean 'num_classes'?")
    H.assert_mentions(H.error_of(resnet.resnet18, { width = { 4, 4, 8, 8 } }), "resnet.resnet18", "'width'")
    H.assert_mentions(H.error_of(resnet.resnet_s, { num_classes = 0 }), "num_classes", "0")
    H.assert_mentions(H.error_of(resnet.resnet_s, { widths = { 8, 8 } }), "layers", "widths")
    H.assert_mentions(H.error_of(resnet.resnet_s, { layers = { 2, 0, 2 } }), "layers", "entry 2", "0")
    H.assert_mentions(H.error_of(resnet.resnet_s, { stem = "tiny" }), "stem", "tiny")
    H.assert_mentions(H.error_of(resnet.resnet_s, { block = "wide" }), "block", "wide")
    H.assert_mentions(H.error_of(resnet.resnet_s, { layers = { 1 << 40, 2, 2 } }), "layers", tostring(1 << 40))
    -- the shipped checkpoints record {"arch": "resnet_s", "num_classes": 6}: the builder's own arch is fine
    assert.same({ 6, 8 }, resnet.resnet_s({ arch = "resnet_s", num_classes = 6, widths = { 4, 8, 8 } }).fc.weight:shape())
    H.assert_mentions(H.error_of(resnet.resnet_s, { arch = "resnet18" }), "resnet.resnet_s", "resnet18")
    H.assert_mentions(H.error_of(resnet.ResNet, { layers = { 1 }, widths = { 4 }, num_classes = 2, extra = 1 }),
      "ResNet", "unknown option 'extra'")
    local path = os.tmpname()
    ft.safetensors.save(path, (resnet.resnet18({ widths = { 4, 8, 8, 8 }, num_classes = 3 }):state_dict()))
    H.assert_mentions(H.error_of(resnet.from_safetensors, path, { arch = "resnet18", widths = { 4, 8, 8, 8 },
      num_class = 3 }), "resnet.from_safetensors", "'num_class'", "did you mean 'num_classes'?")
    os.remove(path)
  end)

  it("from_pretrained, save_pretrained and from_lm refuse unknown options", function()
    H.assert_mentions(H.error_of(models.from_pretrained, GOLDEN .. "/hf_gpt2", { dtyp = "bfloat16" }),
      "ft.models.from_pretrained", "unknown option 'dtyp'", "did you mean 'dtype'")
    local dir = H.make_tmpdir("models_save")
    H.assert_mentions(H.error_of(models.save_pretrained, model, dir, { safe_serialization = true }),
      "ft.models.save_pretrained", "unknown option 'safe_serialization'")
    assert.is_false(H.file_exists(dir .. "/config.json"))
    rmdir(dir)
    H.assert_mentions(H.error_of(clf.from_lm, model, 2, { poolng = "mean" }),
      "gpt2_classifier.from_lm", "did you mean 'pooling'?")
  end)
end)

describe("one registry for every family", function()
  it("builds every preset through ft.models.new", function()
    local small = {
      ["gpt-s"] = { n_layer = 1, n_embd = 16, n_head = 2 },
      ["llama-s"] = { num_hidden_layers = 1, hidden_size = 16, intermediate_size = 24, num_attention_heads = 2,
        num_key_value_heads = 1 },
      ["vit-s"] = { num_hidden_layers = 1, hidden_size = 12, num_attention_heads = 3, intermediate_size = 16 },
      ["resnet-s"] = { widths = { 4, 4, 8 } },
      resnet18 = { widths = { 2, 2, 4, 4 } }, resnet34 = { widths = { 2, 2, 4, 4 } },
      resnet50 = { widths = { 2, 2, 2, 2 } },
      ["moe-s"] = { num_hidden_layers = 1, hidden_size = 16, intermediate_size = 8, num_attention_heads = 2,
        num_key_value_heads = 1, num_local_experts = 3 },
    }
    local names = ft.tables.sorted_keys(models.presets)
    assert.same({ "gpt-s", "llama-s", "moe-s", "resnet-s", "resnet18", "resnet34", "resnet50", "vit-s" }, names)
    for _, name in ipairs(names) do
      local m = models.new(name, small[name])
      local arch = models.config(name).architectures[1]
      assert.equal(arch, m.hf_architecture, name)
    end
  end)

  it("round-trips a ResNet and a GPT-2 classifier through save_pretrained / from_pretrained", function()
    local net = models.new("resnet-s", { num_classes = 4, widths = { 4, 4, 8 } }):eval()
    local lm = models.new("gpt-s", { n_layer = 1, n_embd = 16, n_head = 2 })
    local classifier = clf.from_lm(lm, 3, { pooling = "mean" }):eval()
    for _, case in ipairs({ { net, ft.randn(2, 1, 28, 28) }, { classifier, ft.tensor({ { 3, 4, 5 } }, { dtype = "int64" }) } }) do
      local m, x = case[1], case[2]
      local dir = H.make_tmpdir("models_roundtrip")
      models.save_pretrained(m, dir)
      local again = models.from_pretrained(dir)
      assert.equal(m.__name, again.__name)
      local a = ft.no_grad(function() return m(x) end)
      local b = ft.no_grad(function() return again(x) end)
      a, b = a.logits or a, b.logits or b
      H.assert_close(b, a, 0, m.__name .. " after the round trip")
      rmdir(dir)
    end
  end)

  it("documents every architecture and preset in ft.models' header", function()
    local path = package.searchpath("ft.models", package.path)
    local header = {}
    for line in io.lines(path) do
      if not line:match("^%-%-") then break end
      header[#header + 1] = line
    end
    local text = table.concat(header, "\n")
    for arch, spec in pairs(models.architectures) do
      H.assert_mentions(text, arch)
      if spec.model_type then H.assert_mentions(text, spec.model_type) end
    end
    for name in pairs(models.presets) do H.assert_mentions(text, name) end
  end)
end)

describe("ft.nn.init.skip (building without random initialisation)", function()
  local init = ft.nn.init
  local function same_state(a, b) return table.concat(a:totable(), ",") == table.concat(b:totable(), ",") end

  it("builds layers without touching the generator, and the initialisers are no-ops inside", function()
    ft.manual_seed(11)
    local before = ft.get_rng_state()
    local t = ft.ones(4)
    local built = init.skip(function()
      assert.is_true(init.skipping())
      init.normal_(t); init.uniform_(t); init.zeros_(t); init.kaiming_uniform_(ft.ones(3, 2))
      return { ft.nn.Linear(6, 5), ft.nn.Embedding(7, 3), ft.nn.Conv2d(2, 3, 3), ft.nn.LayerNorm(4) }
    end)
    assert.is_false(init.skipping())
    assert.is_true(same_state(ft.get_rng_state(), before), "the generator moved under skip")
    H.assert_close(t, ft.ones(4), 0, "a tensor initialised under skip")
    assert.equal("Linear", built[1].__name)
    assert.same({ 5, 6 }, built[1].weight:shape())
    H.assert_close(built[4].weight, ft.ones(4), 0, "LayerNorm's ones")
    -- Outside skip the same layer draws again.
    ft.nn.Linear(6, 5)
    assert.is_false(same_state(ft.get_rng_state(), before))
  end)

  it("passes arguments and results through, nests, and restores the initialisers on error", function()
    local a, b = init.skip(function(x, y) return x + y, "ok" end, 1, 2)
    assert.equal(3, a); assert.equal("ok", b)
    init.skip(function() init.skip(function() end); assert.is_true(init.skipping()) end)
    assert.is_false(init.skipping())
    local ok, err = pcall(init.skip, function() error({ code = 7 }) end)
    assert.is_false(ok); assert.equal(7, err.code)   -- re-raised as it was
    ok, err = pcall(init.skip, function() init.skip(function() error("boom") end) end)
    assert.is_false(ok); H.assert_mentions(tostring(err), "boom")
    assert.is_false(init.skipping())
    local t = init.normal_(ft.zeros(64))
    assert.is_true(t:abs():sum():item() > 0, "normal_ after a failed skip")
    H.assert_mentions(H.error_of(init.skip, 42), "ft.nn.init.skip", "fn")
  end)

  it("keeps Embedding's draws those of ft.randn", function()
    ft.manual_seed(5)
    local e = ft.nn.Embedding(9, 4)
    ft.manual_seed(5)
    H.assert_close(e.weight, ft.randn(9, 4), 0, "Embedding weight")
  end)

  it("ft.models.new still initialises every parameter, once, as HF does", function()
    ft.manual_seed(3)
    local m = models.new("llama-s", { num_hidden_layers = 1, hidden_size = 64, intermediate_size = 96,
      num_attention_heads = 4, num_key_value_heads = 2, vocab_size = 300 })
    local sd, keys = m:state_dict()
    for _, k in ipairs(keys) do
      local t = sd[k]
      if k:match("norm%.weight$") then
        H.assert_close(t, ft.ones(t:shape()), 0, k)
      else
        local std = (t:pow(2):mean():item()) ^ 0.5
        assert(std > 0.015 and std < 0.025, k .. " has std " .. std .. ", not about 0.02")
      end
    end
    local tied = models.new("llama-s", { num_hidden_layers = 1, tie_word_embeddings = true })
    assert.equal(tied.model.embed_tokens.weight, tied.lm_head.weight)
  end)

  it("from_pretrained builds under skip: the generator does not move and the logits are the file's", function()
    local cfg = { num_hidden_layers = 2, hidden_size = 32, intermediate_size = 48, num_attention_heads = 4,
      num_key_value_heads = 2 }
    for _, config in ipairs({ models.config("llama-s", cfg),
        models.copy_config(models.config("llama-s", cfg), { architectures = { "Qwen2ForCausalLM" },
          model_type = "qwen2", tie_word_embeddings = true }) }) do
      local m = models.new(config):eval()
      local dir = H.make_tmpdir("models_skip")
      models.save_pretrained(m, dir)
      ft.manual_seed(1)
      local before = ft.get_rng_state()
      local again = models.from_pretrained(dir)
      assert.is_true(same_state(ft.get_rng_state(), before), "from_pretrained drew random numbers")
      assert.is_false(init.skipping())
      local ids = ft.tensor({ { 1, 5, 9, 200 } }, { dtype = "int64" })
      local a = ft.no_grad(function() return m(ids).logits end)
      local b = ft.no_grad(function() return again(ids).logits end)
      H.assert_close(b, a, 0, config.architectures[1] .. " logits after from_pretrained")
      rmdir(dir)
    end
  end)

  it("leaves the initialisers working when from_pretrained fails", function()
    local dir = copy_model("hf_llama")
    local config = ft.json.read(dir .. "/config.json")
    config.hidden_act = "no_such_act"
    ft.json.write(dir .. "/config.json", config)
    assert.is_false(pcall(models.from_pretrained, dir))
    rmdir(dir)
    assert.is_false(init.skipping())
  end)
end)
