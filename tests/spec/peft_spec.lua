-- ft.peft: choosing what trains (freeze / unfreeze matching, summary, frozen BatchNorm, param
-- groups, layer-wise lr decay, gradual unfreezing, new heads, LP-FT) and saving / loading
-- adapters in the native format. Counts are worked out by hand from the layer shapes.
local ft = require "ft"
local H = require "helpers"
local resnet = require "ft.models.resnet"

local peft = ft.peft
local nn = ft.nn

local function tiny_gpt2()
  ft.manual_seed(7)
  local model = ft.models.new(ft.models.config("gpt-s", { n_layer = 2, n_embd = 64, n_head = 2 }))
  return model:eval()
end

local function trainable_names(model)
  local out = {}
  for _, e in ipairs(peft.trainable_parameters(model)) do out[#out + 1] = e[1] end
  table.sort(out)
  return out
end

local function sorted(list)
  table.sort(list)
  return list
end

-- Exact equality of two tensors' values (bit-identical floats, equal integers).
local function identical(a, b)
  local x, y = H.flat(a), H.flat(b)
  if #x ~= #y then return false end
  for i = 1, #x do
    if x[i] ~= y[i] then return false end
  end
  return true
end

local function snapshot(model)
  local out = {}
  ft.no_grad(function()
    for k, t in pairs(model:state_dict()) do out[k] = t:clone() end
  end)
  return out
end

describe("ft.peft.freeze / unfreeze", function()
  it("matches a plain name as a whole dotted suffix of module names (PEFT's rule)", function()
    local model = tiny_gpt2()
    -- wte, wpe, 2 blocks x 12, ln_f x 2 (lm_head is wte); 132,864 elements (see summary below)
    assert.same({ 28, 132864 }, { peft.freeze(model) })
    local changed, elements = peft.unfreeze(model, "c_proj")
    -- attn.c_proj [64,64]+[64] and mlp.c_proj [256,64]+[64] in each of the 2 blocks
    assert.equal(8, changed)
    assert.equal(2 * (64 * 64 + 64 + 256 * 64 + 64), elements)
    assert.same(sorted({
      "transformer.h.0.attn.c_proj.bias", "transformer.h.0.attn.c_proj.weight",
      "transformer.h.0.mlp.c_proj.bias", "transformer.h.0.mlp.c_proj.weight",
      "transformer.h.1.attn.c_proj.bias", "transformer.h.1.attn.c_proj.weight",
      "transformer.h.1.mlp.c_proj.bias", "transformer.h.1.mlp.c_proj.weight",
    }), trainable_names(model))
    assert.same({ 0, 0 }, { peft.unfreeze(model, "c_proj") })   -- nothing left to change

    peft.freeze(model)
    peft.unfreeze(model, "attn.c_proj")
    assert.same(sorted({
      "transformer.h.0.attn.c_proj.bias", "transformer.h.0.attn.c_proj.weight",
      "transformer.h.1.attn.c_proj.bias", "transformer.h.1.attn.c_proj.weight",
    }), trainable_names(model))
  end)

  it("matches parameter names, Lua patterns and lists", function()
    local model = tiny_gpt2()
    peft.freeze(model)
    peft.unfreeze(model, "ln_f.weight")
    assert.same({ "transformer.ln_f.weight" }, trainable_names(model))

    peft.freeze(model)
    peft.unfreeze(model, "h%.1%.ln_")          -- a pattern: both LayerNorms of block 1
    assert.same(sorted({ "transformer.h.1.ln_1.bias", "transformer.h.1.ln_1.weight",
      "transformer.h.1.ln_2.bias", "transformer.h.1.ln_2.weight" }), trainable_names(model))

    peft.freeze(model)
    peft.unfreeze(model, { "wpe", "^transformer%.h%.0%.mlp$" })
    assert.same(sorted({ "transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_fc.weight",
      "transformer.h.0.mlp.c_proj.bias", "transformer.h.0.mlp.c_proj.weight",
      "transformer.wpe.weight" }), trainable_names(model))

    -- freeze with patterns leaves the rest alone
    peft.unfreeze(model)
    assert.equal(2, peft.freeze(model, "ln_f"))
    assert.equal(26, #peft.trainable_parameters(model))
  end)

  it("hits a tied parameter through any module holding it", function()
    local model = tiny_gpt2()
    assert.same({ 1, 256 * 64 }, { peft.freeze(model, "lm_head") })
    assert.is_false(model.transformer.wte.weight.requires_grad)
  end)

  it("does not take a partial segment or a plain prefix for a match", function()
    local model = tiny_gpt2()
    H.assert_mentions(H.error_of(peft.freeze, model, "proj"), "ft.peft.freeze", "'proj'", "matches no")
    H.assert_mentions(H.error_of(peft.freeze, model, "former.h"), "'former.h'")
    H.assert_mentions(H.error_of(peft.freeze, model, "c_proj.w"), "'c_proj.w'")
    -- the whole list is checked: the one pattern that hits nothing is named
    H.assert_mentions(H.error_of(peft.unfreeze, model, { "c_attn", "c_atn" }), "ft.peft.unfreeze", "'c_atn'")
  end)

  it("rejects bad patterns and options with clear errors", function()
    local model = tiny_gpt2()
    H.assert_mentions(H.error_of(peft.freeze, model, "h%.[0"), "invalid Lua pattern", "h%.[0")
    H.assert_mentions(H.error_of(peft.freeze, model, 42), "patterns must be a string or a list")
    H.assert_mentions(H.error_of(peft.freeze, model, {}), "pattern list is empty")
    H.assert_mentions(H.error_of(peft.freeze, model, nil, { bn_policy = "off" }), "bn_policy")
    -- a failing call changed nothing
    assert.equal(28, #peft.trainable_parameters(model))
  end)

  it("works on a plain model without adapters", function()
    local model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert.equal(2, peft.freeze(model, "^0$"))
    assert.same({ "2.bias", "2.weight" }, trainable_names(model))
    assert.same({}, peft.adapters(model))
  end)
end)

describe("ft.peft.summary", function()
  it("prints PEFT's line with hand-counted numbers", function()
    local model = resnet.resnet_s()
    peft.freeze(model, { "^conv1$", "^bn1$", "^layer1$" })
    -- conv1 1*32*3*3 = 288, bn1 2*32 = 64, layer1 2 blocks x (2 convs 32*32*9 + 2 BN 2*32)
    local frozen = 288 + 64 + 2 * (2 * 32 * 32 * 9 + 2 * 64)
    assert.equal(37472, frozen)
    local total = 696042
    local want = ("trainable params: %s || all params: 696,042 || trainable%%: %.4f"):format("658,570",
      100 * (total - frozen) / total)
    assert.equal("trainable params: 658,570 || all params: 696,042 || trainable%: 94.6164", want)

    local printed = {}
    local real_print = print
    _G.print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t") end
    local ok, line, rows = pcall(peft.summary, model, { modules = true })
    _G.print = real_print
    assert(ok, line)
    assert.equal(want, line)
    assert.equal(want, printed[1])
    assert.equal(8, #printed)   -- the line, the table header and 6 top-level modules
    local by_name = {}
    for _, r in ipairs(rows) do by_name[r.name] = r end
    assert.same({ name = "layer1", params = 37120, trainable = 0 }, by_name.layer1)
    assert.same({ name = "fc", params = 128 * 10 + 10, trainable = 1290 }, by_name.fc)
    assert.truthy(printed[5]:find("^layer1%s+37,120%s+0$"))
  end)

  it("counts a tied parameter once", function()
    local model = tiny_gpt2()
    -- wte 256*64, wpe 256*64, per block 2 LN (2*64 each) + c_attn 64*192+192 + c_proj 64*64+64
    -- + c_fc 64*256+256 + c_proj 256*64+64, ln_f 2*64; lm_head is wte
    local block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    local total = 2 * 256 * 64 + 2 * block + 128
    local line = peft.summary(model, { print = false })
    assert.equal(132864, total)
    assert.equal("trainable params: 132,864 || all params: 132,864 || trainable%: 100.0000", line)
  end)
end)

describe("frozen BatchNorm", function()
  local FROZEN = { "^conv1$", "^bn1$", "^layer1$" }
  local function is_frozen_key(k) return k:match("^conv1%.") or k:match("^bn1%.") or k:match("^layer1%.") end

  -- ResNet-S with some running statistics, trained 3 SGD steps after freeze(opts).
  local function train_frozen(freeze_opts)
    ft.manual_seed(3)
    local model = resnet.resnet_s()
    model:train()
    ft.no_grad(function() model(ft.randn(4, 1, 28, 28)) end)
    peft.freeze(model, FROZEN, freeze_opts)
    local before = snapshot(model)
    -- every parameter goes to the optimizer: frozen ones must be skipped (no gradient)
    local opt = ft.optim.SGD(model:parameters(), { lr = 0.1, momentum = 0.9, weight_decay = 1e-3 })
    for _ = 1, 3 do
      opt:zero_grad()
      local x = ft.randn(8, 1, 28, 28)
      local y = ft.randint(1, 10, { 8 }, { dtype = "int64" })
      nn.functional.cross_entropy(model(x), y):backward()
      opt:step()
    end
    return model, before
  end

  it("keeps frozen parameters and BatchNorm buffers bit-identical over training steps", function()
    local model, before = train_frozen()
    assert.equal("eval", model.bn1.bn_policy)
    assert.equal("eval", model.layer1[2].bn2.bn_policy)
    assert.is_nil(model.layer2[1].bn1.bn_policy)
    local sd, keys = model:state_dict()
    local n_frozen = 0
    for _, k in ipairs(keys) do
      if is_frozen_key(k) then
        n_frozen = n_frozen + 1
        assert(identical(before[k], sd[k]), k .. " changed although frozen")
      else
        assert(not identical(before[k], sd[k]), k .. " did not change although it trains")
      end
    end
    -- conv1 1, bn1 5, layer1 2 x (2 convs + 2 BN x 5)
    assert.equal(1 + 5 + 2 * (2 + 10), n_frozen)
    assert.equal(1 + 3, model.layer2[1].bn1.num_batches_tracked:item())
    assert.is_nil(model.layer1[1].conv1.weight.grad)
  end)

  it("lets the statistics of frozen BatchNorm drift without the eval policy", function()
    local model, before = train_frozen({ bn_policy = false })
    local sd = model:state_dict()
    assert.is_nil(model.bn1.bn_policy)
    assert.is_false(identical(before["bn1.running_mean"], sd["bn1.running_mean"]))
    assert.is_true(identical(before["bn1.weight"], sd["bn1.weight"]))
  end)

  it("computes a layer with policy 'eval' as in eval mode while the model trains", function()
    ft.manual_seed(5)
    local bn = nn.BatchNorm2d(3)
    ft.no_grad(function()
      bn.running_mean:copy_(ft.tensor({ 0.5, -1, 2 }))
      bn.running_var:copy_(ft.tensor({ 4, 0.25, 1 }))
    end)
    local x = ft.randn(2, 3, 2, 2)
    -- by hand: (x - mean) / sqrt(var + eps) with weight 1, bias 0
    local mean, var = { 0.5, -1, 2 }, { 4, 0.25, 1 }
    local xs, shape = H.flat(x)
    local want = {}
    for i, v in ipairs(xs) do
      local c = ((i - 1) // 4) % 3 + 1
      want[i] = (v - mean[c]) / math.sqrt(var[c] + 1e-5)
    end
    bn:train()
    assert.equal(1, peft.bn_policy(bn, nil, "eval"))
    H.assert_close(bn(x), H.from_flat(want, shape), 1e-6, "bn with policy eval")
    assert.same({ 0.5, -1, 2 }, bn.running_mean:totable())
    assert.equal(0, bn.num_batches_tracked:item())
    peft.bn_policy(bn, nil, "train")
    bn(x)
    assert.equal(1, bn.num_batches_tracked:item())
  end)

  it("sets the policy by pattern, and unfreeze switches it back", function()
    local model = resnet.resnet_s()
    assert.equal(4, peft.bn_policy(model, "^layer1%.", "eval"))
    assert.equal("eval", model.layer1[1].bn2.bn_policy)
    assert.is_nil(model.bn1.bn_policy)
    H.assert_mentions(H.error_of(peft.bn_policy, model, "fc", "eval"), "'fc'", "no BatchNorm")
    H.assert_mentions(H.error_of(peft.bn_policy, model, nil, "frozen"), "\"eval\" or \"train\"")
    peft.freeze(model)
    assert.equal("eval", model.layer3[2].bn2.bn_policy)
    peft.unfreeze(model, "layer3")
    assert.equal("train", model.layer3[2].bn2.bn_policy)
    assert.equal("eval", model.layer2[2].bn2.bn_policy)
  end)
end)

describe("ft.peft.param_groups", function()
  it("puts each trainable parameter in the first group that matches, the rest in a default group", function()
    local model = tiny_gpt2()
    peft.freeze(model, "ln_f")
    local groups = peft.param_groups(model, {
      { "attn", lr = 1e-3 },
      { { "c_attn", "mlp" }, lr = 1e-4, weight_decay = 0 },   -- c_attn already taken by group 1
      { "nothing%.matches", lr = 5 },                          -- empty: dropped
    }, { lr = 1e-2, weight_decay = 0.1 })
    assert.equal(3, #groups)
    assert.same({ 1e-3, 1e-4, 1e-2 }, { groups[1].lr, groups[2].lr, groups[3].lr })
    assert.same({ nil, 0, 0.1 }, { groups[1].weight_decay, groups[2].weight_decay, groups[3].weight_decay })
    assert.equal(8, #groups[1].params)     -- c_attn and c_proj (w, b) in 2 blocks
    assert.equal("transformer.h.0.attn.c_attn.weight", groups[1].names[1])
    assert.equal(8, #groups[2].params)     -- mlp c_fc, c_proj
    for _, n in ipairs(groups[2].names) do assert.truthy(n:find("%.mlp%.")) end
    -- wte, wpe, ln_1, ln_2 of 2 blocks; not the frozen ln_f
    assert.same(sorted({ "transformer.wte.weight", "transformer.wpe.weight",
      "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.h.0.ln_2.weight",
      "transformer.h.0.ln_2.bias", "transformer.h.1.ln_1.weight", "transformer.h.1.ln_1.bias",
      "transformer.h.1.ln_2.weight", "transformer.h.1.ln_2.bias" }), sorted(groups[3].names))
    local opt = ft.optim.AdamW(groups, { lr = 1 })
    assert.equal(3, #opt.param_groups)
    assert.equal(1e-4, opt.param_groups[2].lr)
  end)
end)

describe("ft.peft.layerwise_lr_decay", function()
  it("decays the lr from the head down through the transformer blocks to the embeddings", function()
    local model = tiny_gpt2()
    local groups = peft.layerwise_lr_decay(model, { lr = 1.0, decay = 0.5, weight_decay = 0.05 })
    local seen = 0
    for _, g in ipairs(groups) do
      for i, name in ipairs(g.names) do
        seen = seen + 1
        local want_lr
        if name:match("^transformer%.w[tp]e%.") then want_lr = 0.125
        elseif name:match("^transformer%.h%.0%.") then want_lr = 0.25
        elseif name:match("^transformer%.h%.1%.") then want_lr = 0.5
        else assert.truthy(name:match("^transformer%.ln_f%.")); want_lr = 1.0 end
        assert.equal(want_lr, g.lr, name)
        local p = g.params[i]
        assert.equal(p:dim() == 1 and 0 or 0.05, g.weight_decay, name)
      end
    end
    assert.equal(28, seen)
    assert.equal(0, groups[1].layer)
  end)

  it("treats a ResNet's stages as blocks, its stem lowest and fc as the head", function()
    local model = resnet.resnet_s()
    peft.freeze(model, "^layer1$")
    local lr_of = {}
    for _, g in ipairs(peft.layerwise_lr_decay(model, { lr = 0.1 })) do
      for _, name in ipairs(g.names) do lr_of[name] = g.lr end
    end
    local d = 0.75
    assert.near(0.1, lr_of["fc.weight"], 1e-15)
    assert.near(0.1 * d, lr_of["layer3.1.conv2.weight"], 1e-15)
    assert.near(0.1 * d ^ 2, lr_of["layer2.0.downsample.1.bias"], 1e-15)
    assert.near(0.1 * d ^ 4, lr_of["conv1.weight"], 1e-15)
    assert.near(0.1 * d ^ 4, lr_of["bn1.bias"], 1e-15)
    assert.is_nil(lr_of["layer1.0.conv1.weight"])   -- frozen: left out
    H.assert_mentions(H.error_of(peft.layerwise_lr_decay, model, {}), "option lr")
  end)
end)

describe("ft.peft.gradual_unfreezer", function()
  local function trainable_prefixes(model)
    local set = {}
    for _, e in ipairs(peft.trainable_parameters(model)) do set[e[1]:match("^[^.]+")] = true end
    local out = {}
    for k in pairs(set) do out[#out + 1] = k end
    return sorted(out)
  end

  it("unfreezes from the head down, one group per call", function()
    local model = resnet.resnet_s()
    local u = peft.gradual_unfreezer(model)
    assert.same({ "fc" }, trainable_prefixes(model))
    assert.equal(1, u:unfrozen())
    assert.equal("eval", model.layer3[1].bn1.bn_policy)
    assert.equal(1, u:step())            -- the first call: the head (already training)
    assert.same({ "fc" }, trainable_prefixes(model))
    assert.equal(2, u:step())
    assert.same({ "fc", "layer3" }, trainable_prefixes(model))
    assert.equal("train", model.layer3[1].bn1.bn_policy)
    assert.equal("eval", model.layer2[1].bn1.bn_policy)
    u:step(); u:step()
    assert.same({ "fc", "layer1", "layer2", "layer3" }, trainable_prefixes(model))
    assert.equal(5, u:step())
    assert.same({ "bn1", "conv1", "fc", "layer1", "layer2", "layer3" }, trainable_prefixes(model))
    assert.equal("train", model.bn1.bn_policy)
    assert.equal(5, u:step())            -- nothing left
  end)

  it("takes explicit groups from bottom to top", function()
    local model = tiny_gpt2()
    local u = peft.gradual_unfreezer(model, { groups = { "h%.0%.", { "h%.1%.", "ln_f" } } })
    -- the top group: block 1 (2 LayerNorms, c_attn, c_proj, c_fc, c_proj: 12 tensors) and ln_f
    assert.equal(12 + 2, #peft.trainable_parameters(model))
    assert.equal(1, u:step())
    assert.equal(2, u:step())
    assert.equal(14 + 12, #peft.trainable_parameters(model))
    assert.is_false(model.transformer.wte.weight.requires_grad)   -- in no group: stays frozen
    H.assert_mentions(H.error_of(peft.gradual_unfreezer, model, { groups = { "h%.7%." } }), "'h%.7%.'")
  end)
end)

describe("ft.peft.replace_head", function()
  it("puts a fresh Linear in place of a ResNet's fc and updates num_classes", function()
    local model = resnet.resnet_s()
    model:eval()
    local head = peft.replace_head(model, 3)
    assert.equal(head, model.fc)
    assert.same({ 3, 128 }, model.fc.weight:shape())
    assert.same({ 3 }, model.fc.bias:shape())
    assert.equal(3, model.config.num_classes)
    assert.is_false(head.training)
    assert.is_true(head.weight.requires_grad)
    assert.same({ 2, 3 }, model(ft.randn(2, 1, 28, 28)):shape())
  end)

  it("finds the last Linear of a Sequential and keeps its bias setting", function()
    local model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2, { bias = false }))
    local head = peft.replace_head(model, 5)
    assert.equal(head, model[3])
    assert.is_nil(head.bias)
    assert.same({ 5, 8 }, head.weight:shape())
    assert.same({ 7, 5 }, model(ft.randn(7, 4)):shape())
    -- by name
    peft.replace_head(model, 6, { name = "0" })
    assert.same({ 6, 4 }, model[1].weight:shape())
    H.assert_mentions(H.error_of(peft.replace_head, model, 2, { name = "9" }), "no module '9'")
    H.assert_mentions(H.error_of(peft.replace_head, model, 2, { name = "1" }), "'1'", "ReLU", "not a Linear")
    H.assert_mentions(H.error_of(peft.replace_head, model, 0), "num_outputs")
  end)

  it("replaces a ViT's classifier and its label maps", function()
    ft.manual_seed(1)
    local model = ft.models.new(ft.models.config("vit-s", { num_hidden_layers = 1, hidden_size = 48,
      num_attention_heads = 3, intermediate_size = 96 }))
    model:eval()
    peft.replace_head(model, 4)
    assert.same({ 4, 48 }, model.classifier.weight:shape())
    assert.equal("LABEL_3", model.config.id2label["3"])
    assert.is_nil(model.config.id2label["4"])
    assert.same({ 2, 4 }, model(ft.randn(2, 1, 28, 28)).logits:shape())
  end)
end)

describe("ft.peft.lpft", function()
  it("probes with only the head training, keeps that state, then fine-tunes everything", function()
    local model = resnet.resnet_s({ widths = { 8, 8, 8 } })
    local calls = {}
    local probed = peft.lpft(model, {
      probe = function(m)
        calls[#calls + 1] = "probe"
        assert.same({ "fc.bias", "fc.weight" }, trainable_names(m))
        assert.equal("eval", m.bn1.bn_policy)
        ft.no_grad(function() m.fc.bias:fill_(0.25) end)
      end,
      finetune = function(m)
        calls[#calls + 1] = "finetune"
        assert.equal(#m:parameters(), #peft.trainable_parameters(m))
        assert.equal("train", m.layer3[1].bn2.bn_policy)
        ft.no_grad(function() m.fc.bias:fill_(-1) end)
      end,
    })
    assert.same({ "probe", "finetune" }, calls)
    assert.same({ 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25 }, probed["fc.bias"]:totable())
    assert.equal(-1, model.fc.bias:totable()[1])
    local _, keys = model:state_dict()
    for _, k in ipairs(keys) do assert.truthy(probed[k], k) end
    H.assert_mentions(H.error_of(peft.lpft, model, { probe = print }), "finetune")
  end)
end)

describe("ft.peft.save / load (native format)", function()
  local dir = H.make_tmpdir("peft")
  teardown(function() os.execute("rm -rf " .. H.quote(dir)) end)
  local ids = ft.tensor({ { 5, 17, 99, 3, 250, 1, 42, 7 } }, { dtype = "int64" })

  local function adapted_model()
    local model = tiny_gpt2()
    local base = model:state_dict()
    ft.save(dir .. "/base.h5", base)
    peft.ia3(model)
    -- non-trivial vectors, so a load that copied nothing would show
    ft.no_grad(function()
      for _, t in pairs(peft.adapter_state_dict(model, "default")) do t:copy_(ft.rand(t:shape()) + 0.5) end
    end)
    return model
  end

  it("round-trips an (IA)3 adapter into a fresh process", function()
    local model = adapted_model()
    local path = peft.save(model, dir .. "/ia3")
    assert.equal(dir .. "/ia3/adapter.h5", path)
    local want = model(ids).logits
    local script = dir .. "/load.lua"
    H.write_bytes(script, ([[
      local ft = require "ft"
      ft.manual_seed(99)
      local model = ft.models.new(ft.models.config("gpt-s", {n_layer = 2, n_embd = 64, n_head = 2}))
      model:eval()
      model:load_state_dict(ft.load(%q))
      local name = ft.peft.load(model, %q)
      local ids = ft.tensor({{5, 17, 99, 3, 250, 1, 42, 7}}, {dtype = "int64"})
      ft.save(%q, {logits = model(ids).logits})
      io.write(name, " ", #ft.peft.trainable_parameters(model))
    ]]):format(dir .. "/base.h5", dir .. "/ia3", dir .. "/out.h5"))
    local ok, out = H.run(H.quote(assert(os.getenv("FTLUA"), "FTLUA is not set")) .. " " .. H.quote(script))
    assert(ok, out)
    assert.equal("default 4", out)
    H.assert_close(ft.load(dir .. "/out.h5").logits, want, 1e-6, "logits after loading")
  end)

  it("loads under another name, and names missing, unexpected and mis-shaped keys", function()
    local model = adapted_model()
    peft.save(model, dir .. "/ia3b", { name = "default" })
    local sd = peft.adapter_state_dict(model, "default")

    local other = tiny_gpt2()
    assert.equal("mine", peft.load(other, dir .. "/ia3b/adapter.h5", { name = "mine" }))
    local got = peft.adapter_state_dict(other, "mine")
    for k, t in pairs(sd) do
      local k2 = k:gsub("%.default$", ".mine")
      assert(identical(got[k2], t), k2)
    end

    -- a 3-layer model has keys the file lacks
    ft.manual_seed(7)
    local deeper = ft.models.new(ft.models.config("gpt-s", { n_layer = 3, n_embd = 64, n_head = 2 }))
    local err = H.error_of(peft.load, deeper, dir .. "/ia3b")
    H.assert_mentions(err, "ft.peft.load", "adapter.h5", "missing key(s): transformer.h.2.attn.c_attn.ia3_l.default")
    assert.same({}, peft.adapters(deeper))              -- the failed adapter is gone again
    assert.equal(#deeper:parameters(), #peft.trainable_parameters(deeper))
    assert.is_nil(rawget(deeper.transformer.h[1].attn.c_attn, "forward"))

    local shallow = ft.models.new(ft.models.config("gpt-s", { n_layer = 1, n_embd = 64, n_head = 2 }))
    H.assert_mentions(H.error_of(peft.load, shallow, dir .. "/ia3b"),
      "unexpected key(s): transformer.h.1.attn.c_attn.ia3_l.default")
    local wide = ft.models.new(ft.models.config("gpt-s", { n_layer = 2, n_embd = 32, n_head = 2 }))
    H.assert_mentions(H.error_of(peft.load, wide, dir .. "/ia3b"),
      "size mismatch for transformer.h.0.attn.c_attn.ia3_l.default: [128] in the file, [64] in the model")
  end)

  it("round-trips any adapter kind through its attach config (LoRA here)", function()
    local model = tiny_gpt2()
    peft.lora(model, { target = { "c_attn", "mlp.c_fc" }, r = 4, alpha = 8 })
    ft.no_grad(function()
      for _, t in pairs(peft.adapter_state_dict(model, "default")) do t:copy_(ft.randn(t:shape()) * 0.1) end
    end)
    local want = model(ids).logits
    peft.save(model, dir .. "/lora")
    local other = tiny_gpt2()
    assert.equal("x", peft.load(other, dir .. "/lora", { name = "x" }))
    H.assert_close(other(ids).logits, want, 1e-6, "logits with the loaded LoRA adapter")
  end)

  it("refuses what it cannot do", function()
    local model = adapted_model()
    H.assert_mentions(H.error_of(peft.save, model, dir .. "/p", { format = "peft" }), "LoRA", "'default' is ia3")
    H.assert_mentions(H.error_of(peft.save, model, dir .. "/p", { name = "nope" }), "no adapter named 'nope'")
    H.assert_mentions(H.error_of(peft.load, model, dir .. "/missing"), "no such file or directory")
    os.execute("mkdir -p " .. H.quote(dir .. "/empty"))
    H.assert_mentions(H.error_of(peft.load, model, dir .. "/empty"), "neither adapter.h5")
    H.assert_mentions(H.error_of(peft.load, model, dir .. "/base.h5"), "not an ftlua adapter file")
  end)
end)

describe("ft.peft.set_adapter across kinds", function()
  it("makes exactly the chosen adapter's parameters train, whatever its kind", function()
    local model = tiny_gpt2()
    peft.ia3(model, { name = "a" })
    peft.ia3(model, { name = "b" })
    peft.reft(model, { name = "r", layers = { 1 }, rank = 2 })
    local function owners()
      local out = {}
      for _, name in ipairs(trainable_names(model)) do
        local adapter = name:match("ia3_l%.(%w+)$") or name:match("reft_loreft%.(%w+)%.")
        out[adapter or name] = true
      end
      return out
    end
    peft.set_adapter(model, "a")
    assert.same({ a = true }, owners())
    peft.set_adapter(model, "r")
    assert.same({ r = true }, owners())
    peft.set_adapter(model, "b")
    assert.same({ b = true }, owners())
  end)
end)
