-- ft.peft_format against HuggingFace PEFT: the LoRA adapter PEFT saved for hf_gpt2
-- (tests/fixtures/golden/peft_lora_gpt2, with the logits PEFT computed with it and after
-- merge_and_unload) loads and reproduces them; adapters written here have PEFT's file layout
-- (compared with the files PEFT wrote) and load again in a fresh process.
local ft = require "ft"
local H = require "helpers"
local lora = require "ft.peft.lora"
local peft = require "ft.peft"
local P = require "ft.peft.format"

local GOLDEN = H.fixture("golden")
local BASE = GOLDEN .. "/hf_gpt2"
local ADAPTER = GOLDEN .. "/peft_lora_gpt2"

local ref = ft.safetensors.load(ADAPTER .. "/reference.safetensors")
local ids = ref.input_ids + 1   -- 0-based token ids read raw from the file

local function logits(model) return ft.no_grad(function() return model(ids).logits end) end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function identical(a, b, what)
  assert.same(a:shape(), b:shape(), what)
  local fa, fb = H.flat(a), H.flat(b)
  for i = 1, #fa do
    if fa[i] ~= fb[i] then error(("%s: element %d is %.9g, expected exactly %.9g"):format(what, i, fa[i], fb[i]), 2) end
  end
end

-- A temp copy of the golden adapter folder, with config fields replaced (ft.json.null deletes).
local function adapter_copy(changes, tensors)
  local dir = H.make_tmpdir("peft")
  local cfg = ft.json.read(ADAPTER .. "/adapter_config.json")
  for k, v in pairs(changes or {}) do cfg[k] = v end
  H.write_bytes(dir .. "/adapter_config.json", ft.json.encode(cfg, { indent = 2 }))
  if tensors then
    ft.safetensors.save(dir .. "/adapter_model.safetensors", tensors)
  else
    H.write_bytes(dir .. "/adapter_model.safetensors", H.read_bytes(ADAPTER .. "/adapter_model.safetensors"))
  end
  return dir
end

local function rmdir(dir) os.execute("rm -rf " .. H.quote(dir)) end

describe("the PEFT LoRA adapter of hf_gpt2", function()
  it("loads and reproduces PEFT's logits, merged and unmerged", function()
    local model = ft.models.from_pretrained(BASE)
    assert.equal("default", P.load(model, ADAPTER))
    assert.same({ "default" }, peft.adapters(model))
    local layers = lora.layers(model, "default")
    assert.equal(9, #layers)   -- attn.c_attn, attn.c_proj and mlp.c_proj of 3 blocks
    for _, l in ipairs(layers) do
      assert.equal(4, l.r)
      assert.equal(2, l.scale)
    end
    H.assert_close(logits(model), ref.logits, 1e-4, "adapter logits")
    lora.merge(model)
    H.assert_close(logits(model), ref.merged_logits, 1e-4, "merged logits")
    lora.unmerge(model)
    H.assert_close(logits(model), ref.logits, 1e-4, "unmerged logits")
    lora.merge_and_unload(model)
    assert.same({}, peft.adapters(model))
    for k in pairs(model:state_dict()) do assert.is_nil(k:find("lora_", 1, true), k) end
    H.assert_close(logits(model), ref.merged_logits, 1e-4, "logits after merge_and_unload")
  end)

  it("loads under another name, and switches off", function()
    local model = ft.models.from_pretrained(BASE)
    local base = logits(model)
    assert.equal("mine", P.load(model, ADAPTER, { name = "mine" }))
    H.assert_close(logits(model), ref.logits, 1e-4, "adapter logits")
    peft.disable(model)
    identical(logits(model), base, "disabled")
  end)

  it("reads target_modules as a Python regular expression, and rank and alpha patterns", function()
    local model = ft.models.from_pretrained(BASE)
    local dir = adapter_copy({
      target_modules = [[transformer\.h\.\d+\.(attn\.c_(attn|proj)|mlp\.c_proj)]],
      r = 8, rank_pattern = { [ [[c_(attn|proj)]] ] = 4 },
      lora_alpha = 16, alpha_pattern = { ["c_attn"] = 8, [ [[h\.[0-9]\.(attn|mlp)\.c_proj]] ] = 8 },
    })
    P.load(model, dir)
    H.assert_close(logits(model), ref.logits, 1e-4, "adapter logits")
    rmdir(dir)
  end)
end)

describe("ft.peft.format.save", function()
  it("writes PEFT's adapter_config.json and tensor names", function()
    local model = ft.models.from_pretrained(BASE)
    lora.attach(model, { target = { "c_attn", "c_proj" }, r = 4, alpha = 8 })
    local dir = H.make_tmpdir("peft")
    P.save(model, dir, "default", { task_type = "CAUSAL_LM" })
    -- Same options as PEFT's: the same file, byte for byte (keys sorted, 2-space indent).
    assert.equal(H.read_bytes(ADAPTER .. "/adapter_config.json"), H.read_bytes(dir .. "/adapter_config.json"))
    local ours = ft.safetensors.info(dir .. "/adapter_model.safetensors")
    local theirs = ft.safetensors.info(ADAPTER .. "/adapter_model.safetensors")
    assert.same(sorted_keys(theirs), sorted_keys(ours))
    for k, e in pairs(theirs) do assert.same(e.shape, ours[k].shape, k) end
    rmdir(dir)
  end)

  it("records, through ft.peft.save, the folder the base came from and the task, as AutoPeft needs", function()
    local model = ft.models.from_pretrained(BASE)
    ft.peft.lora(model, { target = "c_attn", r = 2 })
    local dir = H.make_tmpdir("peft")
    ft.peft.save(model, dir, { format = "peft" })
    local cfg = ft.json.read(dir .. "/adapter_config.json")
    assert.equal(BASE, cfg.base_model_name_or_path)
    assert.equal("CAUSAL_LM", cfg.task_type)
    ft.peft.save(model, dir, { format = "peft", base_model_name_or_path = "org/name", task_type = "SEQ_CLS" })
    cfg = ft.json.read(dir .. "/adapter_config.json")
    assert.same({ "org/name", "SEQ_CLS" }, { cfg.base_model_name_or_path, cfg.task_type })
    rmdir(dir)
  end)

  it("keeps the golden key set and value types for other options", function()
    local model = ft.models.from_pretrained(BASE)
    lora.attach(model, { target = "h%.%d+%.mlp%.c_fc", r = 2, alpha = 3, dropout = 0.1, dora = true,
      rslora = true, bias = "all", modules_to_save = { "ln_f" }, init = "gaussian" })
    local dir = H.make_tmpdir("peft")
    P.save(model, dir)
    local golden = ft.json.read(ADAPTER .. "/adapter_config.json")
    local cfg = ft.json.read(dir .. "/adapter_config.json")
    assert.same(sorted_keys(golden), sorted_keys(cfg))
    assert.equal(0.1, cfg.lora_dropout)
    assert.equal("gaussian", cfg.init_lora_weights)
    assert.is_true(cfg.use_dora and cfg.use_rslora)
    assert.equal(ft.json.null, cfg.task_type)
    -- A Lua pattern cannot go to PEFT: the adapted layers are listed instead.
    assert.same({ "transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc", "transformer.h.2.mlp.c_fc" },
      cfg.target_modules)
    assert.same({ "ln_f" }, cfg.modules_to_save)
    local keys = ft.safetensors.info(dir .. "/adapter_model.safetensors")
    assert.same({ 96 * 4 }, keys["base_model.model.transformer.h.0.mlp.c_fc.lora_magnitude_vector"].shape)
    assert.is_not_nil(keys["base_model.model.transformer.h.0.mlp.c_fc.base_layer.bias"])
    assert.is_not_nil(keys["base_model.model.transformer.h.0.attn.c_attn.bias"])
    assert.is_not_nil(keys["base_model.model.transformer.ln_f.weight"])
    assert.is_nil(keys["base_model.model.transformer.h.0.mlp.c_fc.bias"])
    rmdir(dir)
  end)

  it("exports an adapter that a fresh process loads to identical logits", function()
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local model = ft.models.from_pretrained(BASE)
    ft.manual_seed(11)
    lora.attach(model, { target = { "c_attn", "c_fc" }, r = 3, alpha = 5, dora = true,
      rank_pattern = { c_fc = 2 }, bias = "lora_only", modules_to_save = { "ln_f" } })
    ft.no_grad(function()
      for k, t in pairs(peft.adapter_state_dict(model, "default")) do
        if k:find("lora_B", 1, true) or k:find("bias", 1, true) or k:find("ln_f", 1, true) then
          t:add_(ft.randn(t:shape()) * 0.1)
        end
      end
    end)
    local want = logits(model)
    local dir = H.make_tmpdir("peft")
    P.save(model, dir)
    local script = dir .. "/reload.lua"
    H.write_bytes(script, ([[
local P = require "ft.peft.format"
local model = ft.models.from_pretrained(%q)
P.load(model, %q)
local ids = ft.safetensors.load(%q).input_ids + 1
ft.safetensors.save(%q, {logits = ft.no_grad(function() return model(ids).logits end)})
]]):format(BASE, dir, ADAPTER .. "/reference.safetensors", dir .. "/out.safetensors"))
    local ok, out = H.run(H.quote(ftlua) .. " " .. H.quote(script))
    assert(ok, out)
    identical(ft.safetensors.load(dir .. "/out.safetensors").logits, want, "logits in a fresh process")
    rmdir(dir)
  end)

  it("writes Conv2d and Embedding adapters under PEFT's names and loads them back", function()
    local nn = ft.nn
    local function build()
      ft.manual_seed(5)
      return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4)), nn.Sequential(nn.Conv2d(2, 3, 3, { dilation = 2 }))
    end
    local emb, conv = build()
    lora.attach(emb, { target = { "0", "1" }, r = 2, dora = true })
    lora.attach(conv, { target = "0", r = 2, dora = true })
    for _, m in ipairs({ emb, conv }) do
      ft.no_grad(function()
        for _, t in pairs(peft.adapter_state_dict(m, "default")) do t:add_(ft.randn(t:shape()) * 0.3) end
      end)
    end
    local x_ids, x_img = ft.tensor({ { 1, 5, 10 } }, { dtype = "int64" }), ft.randn(1, 2, 6, 6)
    local want_e, want_c = emb(x_ids), conv(x_img)
    local de, dc = H.make_tmpdir("peft"), H.make_tmpdir("peft")
    P.save(emb, de)
    P.save(conv, dc)
    local ke, kc = ft.safetensors.info(de .. "/adapter_model.safetensors"),
      ft.safetensors.info(dc .. "/adapter_model.safetensors")
    assert.same({ "base_model.model.0.lora_embedding_A", "base_model.model.0.lora_embedding_B",
      "base_model.model.0.lora_magnitude_vector", "base_model.model.1.lora_A.weight",
      "base_model.model.1.lora_B.weight", "base_model.model.1.lora_magnitude_vector" }, sorted_keys(ke))
    assert.same({ 1, 3, 1, 1 }, kc["base_model.model.0.lora_magnitude_vector"].shape)
    local emb2, conv2 = build()
    P.load(emb2, de)
    P.load(conv2, dc)
    identical(emb2(x_ids), want_e, "embedding model reloaded")
    identical(conv2(x_img), want_c, "conv model reloaded")
    rmdir(de)
    rmdir(dc)
  end)

  it("leaves the folder's earlier files intact when writing fails", function()
    local model = ft.models.from_pretrained(BASE)
    lora.attach(model, { target = "c_attn", r = 2 })
    local dir = H.make_tmpdir("peft")
    P.save(model, dir)
    local cfg, weights = H.read_bytes(dir .. "/adapter_config.json"), H.read_bytes(dir .. "/adapter_model.safetensors")
    ft.no_grad(function() model.transformer.h[1].attn.c_attn.lora_B.default.weight:fill_(1) end)
    -- A folder inside the adapter's folder makes the save fail before anything is written: the
    -- folder is replaced as a whole, which would lose it.
    assert(os.execute("mkdir " .. H.quote(dir .. "/.adapter_config.json.tmp")))
    local err = H.error_of(P.save, model, dir)
    H.assert_mentions(err, ".adapter_config.json.tmp")
    assert.equal(cfg, H.read_bytes(dir .. "/adapter_config.json"))
    assert.equal(weights, H.read_bytes(dir .. "/adapter_model.safetensors"))
    assert.is_false(H.file_exists(dir .. "/.adapter_model.safetensors.tmp"))
    H.assert_mentions(H.error_of(P.save, model, dir, { task_type = 5 }), "task_type")
    rmdir(dir)
  end)
end)

describe("ft.peft.format.load errors", function()
  local model = ft.models.from_pretrained(BASE)
  local base = logits(model)

  -- The model must come out of a failed load as it went in.
  local function untouched()
    assert.same({}, peft.adapters(model))
    for k, p in model:named_parameters() do assert.is_true(p.requires_grad, k) end
    identical(logits(model), base, "logits after the failed load")
  end

  it("names the tensor, both shapes and the file on a shape mismatch", function()
    local dir = adapter_copy({ r = 8 })
    local err = H.error_of(P.load, model, dir)
    H.assert_mentions(err, dir .. "/adapter_model.safetensors",
      "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", "[4,96]", "[8,96]")
    untouched()
    rmdir(dir)
  end)

  it("names missing and unexpected tensors", function()
    local tensors = ft.safetensors.load(ADAPTER .. "/adapter_model.safetensors")
    tensors["base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"] = nil
    tensors["base_model.model.transformer.h.0.attn.c_attn.lora_C.weight"] = ft.zeros(2)
    local dir = adapter_copy({}, tensors)
    local err = H.error_of(P.load, model, dir)
    H.assert_mentions(err, "missing key(s): base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight",
      "unexpected key(s): base_model.model.transformer.h.0.attn.c_attn.lora_C.weight")
    untouched()
    rmdir(dir)
  end)

  it("names a missing file, a target that matches nothing and unsupported settings", function()
    local dir = H.make_tmpdir("peft")
    H.write_bytes(dir .. "/adapter_config.json", H.read_bytes(ADAPTER .. "/adapter_config.json"))
    H.assert_mentions(H.error_of(P.load, model, dir), "missing file " .. dir .. "/adapter_model.safetensors")
    H.assert_mentions(H.error_of(P.load, model, dir .. "/nowhere"), "missing file " .. dir .. "/nowhere/adapter_config.json")
    rmdir(dir)
    for _, case in ipairs({
      { { target_modules = { "q_proj" } }, "matches no module" },
      { { target_modules = "q_proj|v_proj" }, "matches no module" },
      { { target_modules = "(?=c_attn).*" }, "(?=" },
      { { peft_type = "IA3" }, "peft_type" },
      { { layers_to_transform = { 0 } }, "layers_to_transform" },
      { { target_modules = { "ln_1" } }, "LayerNorm" },
    }) do
      dir = adapter_copy(case[1])
      local err = H.error_of(P.load, model, dir)
      H.assert_mentions(err, dir .. "/adapter_config.json", case[2])
      untouched()
      rmdir(dir)
    end
  end)
end)

describe("ft.peft.format.fullmatcher", function()
  local cases = {
    { [[.*\.(q_proj|v_proj)]], { "model.layers.0.self_attn.q_proj", "v_proj", "a.k_proj", "a.q_projx", ".v_proj" } },
    { [[transformer\.h\.[0-2]\.attn\.c_attn]], { "transformer.h.1.attn.c_attn", "transformer.h.3.attn.c_attn",
      "transformer.h.1.attn.c_attnx" } },
    { [[(.*\.)?(c_attn)]], { "c_attn", "a.c_attn", "ac_attn", "a.b.c_attn" } },
    { [[a+?b*c{2,3}[^x-z]\d\w\s?$]], { "abccd1_", "aaccc19a", "abbcx1a", "ac" } },
    { [[^x(?:ab|cd){2}y?]], { "xabcd", "xcdcdy", "xab", "xabcdab" } },
    { [[h\.\d+\.(attn|mlp)\.c_proj|lm_head]], { "h.10.mlp.c_proj", "lm_head", "h..attn.c_proj" } },
  }
  local expected = {
    { true, false, false, false, true },
    { true, false, false },
    { true, true, false, true },
    { true, true, false, false },
    { true, true, false, false },
    { true, true, false },
  }

  it("matches whole strings as Python's re.fullmatch", function()
    for i, case in ipairs(cases) do
      local match = P.fullmatcher(case[1])
      for j, s in ipairs(case[2]) do
        assert.equal(expected[i][j], match(s), ("%s on %q"):format(case[1], s))
      end
    end
  end)

  it("agrees with Python's re module", function()
    if not H.has_python("re, json") then return pending("python3 is not available") end
    local dir = H.make_tmpdir("peft")
    H.write_bytes(dir .. "/cases.json", ft.json.encode(cases))
    local ok, out = H.run(H.PYTHON .. " -c " .. H.quote(
      "import json, re, sys\n" ..
      "cases = json.load(open(sys.argv[1]))\n" ..
      "print(json.dumps([[re.fullmatch(p, s) is not None for s in ss] for p, ss in cases]))") ..
      " " .. H.quote(dir .. "/cases.json"))
    assert(ok, out)
    assert.same(expected, ft.json.decode(out))
    rmdir(dir)
  end)

  it("names the syntax it does not support", function()
    H.assert_mentions(H.error_of(P.fullmatcher, "(?P<x>a)"), "(?P")
    H.assert_mentions(H.error_of(P.fullmatcher, "(a)\\1"), "\\1")
    H.assert_mentions(H.error_of(P.fullmatcher, "a)"), "unbalanced")
  end)
end)
