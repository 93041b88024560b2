-- One adapter mechanism (ft.peft.registry): every two adapter kinds stacked on one model (LoRA,
-- DoRA and (IA)3 on the same layer, ReFT on the block holding it, prompt tuning on the root);
-- each one disabled, enabled, merged and deleted in any order while the other stays exactly as
-- it was. The references are computed independently: the same base model carrying only the
-- other adapter (its tensors copied over), or the layer's math written out in plain Lua.
-- Also: strict options on every ft.peft entry point, the regex step limit of PEFT configs, and
-- peft.save replacing its folder as a whole.
local ft = require "ft"
local H = require "helpers"
local A = require "ft.peft.registry"
local P = require "ft.peft.format"

local peft = ft.peft
local nn = ft.nn

ft.set_num_threads(2)

-- Larger weights than GPT-2's 0.02, so that every adapter visibly changes the logits.
local function tiny_gpt2()
  ft.manual_seed(7)
  return ft.models.new("gpt-s", { n_layer = 2, n_embd = 32, n_head = 2, n_positions = 64,
    initializer_range = 0.2 }):eval()
end

local IDS = ft.tensor({ { 5, 90, 17, 200, 3, 44 } }, { dtype = "int64" })

local function logits(model) return ft.no_grad(function() return model(IDS).logits end) end

local function max_diff(a, b)
  assert.same(a:shape(), b:shape())
  return ft.no_grad(function() return (a - b):abs():max():item() end)
end

local function identical(a, b, what)
  assert(max_diff(a, b) == 0, what .. ": not bit-identical (max diff " .. max_diff(a, b) .. ")")
end

local function sorted_keys(t) return ft.tables.sorted_keys(t) end

-- LoRA, DoRA and (IA)3 share GPT-2's c_attn of both blocks; ReFT edits block 1's output (the
-- block holding one of those layers); prompt tuning prepends two virtual tokens to the input.
local KINDS = {
  lora = function(m, name) return peft.lora(m, { target = "c_attn", r = 2, alpha = 4, name = name }) end,
  dora = function(m, name) return peft.lora(m, { target = "c_attn", r = 2, alpha = 4, dora = true, name = name }) end,
  ia3 = function(m, name) return peft.ia3(m, { target = "c_attn", fused_qkv = "c_attn", name = name }) end,
  reft = function(m, name) return peft.reft(m, { layers = { 1 }, rank = 2, positions = "f2+l2", name = name }) end,
  prompt = function(m, name) return peft.prompt_tuning(m, { num_virtual_tokens = 2, name = name }) end,
}
local ORDER = { "lora", "dora", "ia3", "reft", "prompt" }
local MERGES = { lora = true, dora = true, ia3 = true }

-- Gives adapter name's tensors seeded values away from the no-op start.
local function randomise(model, name, seed)
  ft.manual_seed(seed)
  local sd = peft.adapter_state_dict(model, name)
  ft.no_grad(function()
    for _, key in ipairs(sorted_keys(sd)) do
      local t = sd[key]
      t:add_(ft.randn(t:shape()) * 0.3)
    end
  end)
end

-- The base model carrying only adapter name of kind (tensors copied from model).
local function only(kind, name, model)
  local ref = tiny_gpt2()
  KINDS[kind](ref, name)
  local want, have = peft.adapter_state_dict(model, name), peft.adapter_state_dict(ref, name)
  assert.same(sorted_keys(want), sorted_keys(have))
  ft.no_grad(function()
    for k, t in pairs(have) do t:copy_(want[k]) end
  end)
  return logits(ref)
end

local function copy_tensors(sd)
  local out = {}
  ft.no_grad(function()
    for k, t in pairs(sd) do out[k] = t:clone() end
  end)
  return out
end

local function same_tensors(a, b, what)
  assert.same(sorted_keys(a), sorted_keys(b), what)
  for k, t in pairs(a) do identical(b[k], t, what .. " " .. k) end
end

-- Whether merging adapter kind x is exact with kind y on the same model (else it is refused).
local function merge_allowed(x, y)
  if not MERGES[x] then return false end
  if (x == "lora" and y == "dora") or (x == "dora" and y == "lora") then return false end   -- DoRA's norm
  if x == "ia3" and (y == "lora" or y == "dora") then return false end   -- l scales their deltas
  return true
end

-- Stacks kind kx (adapter "x", added first) and ky ("y") on a tiny GPT-2, then switches,
-- merges and deletes each while checking the other against its own reference.
local function stacked(kx, ky)
  local model = tiny_gpt2()
  local base = logits(model)
  local base_keys = sorted_keys(model:state_dict())
  KINDS[kx](model, "x")
  KINDS[ky](model, "y")
  randomise(model, "x", 1)
  randomise(model, "y", 2)
  peft.set_adapter(model, { "x", "y" })
  local both = logits(model)
  local ref = { x = only(kx, "x", model), y = only(ky, "y", model) }
  local kind_of = { x = kx, y = ky }
  for _, n in ipairs({ "x", "y" }) do
    assert(max_diff(ref[n], base) > 1e-3, n .. " alone changes nothing")
    assert(max_diff(ref[n], both) > 1e-3, "the other adapter changes nothing next to " .. n)
  end
  local tensors = { x = copy_tensors(peft.adapter_state_dict(model, "x")),
    y = copy_tensors(peft.adapter_state_dict(model, "y")) }
  -- Bit-identical until a merge: W + dW - dW rounds the base weight in its last bits.
  local merged_once = false
  local function same(a, b, what)
    if merged_once then H.assert_close(a, b, 1e-5, what) else identical(a, b, what) end
  end

  for _, pick in ipairs({ "x", "y" }) do
    local other = pick == "x" and "y" or "x"
    local what = ("%s+%s, %s (%s)"):format(kx, ky, pick, kind_of[pick])
    -- disable and enable
    peft.disable(model, pick)
    assert.same({ other }, peft.active_adapters(model))
    same(logits(model), ref[other], what .. " disabled: the other alone")
    peft.set_adapter(model, { "x", "y" })
    same(logits(model), both, what .. " enabled again")
    -- merge
    if merge_allowed(kind_of[pick], kind_of[other]) then
      peft.merge(model, { names = pick })
      merged_once = true
      assert.same({ pick }, peft.merged_adapters(model))
      H.assert_close(logits(model), both, 1e-5, what .. " merged")
      peft.disable(model, pick)   -- off means unmerged
      assert.same({}, peft.merged_adapters(model))
      H.assert_close(logits(model), ref[other], 1e-5, what .. " merged, then disabled")
      peft.set_adapter(model, { "x", "y" })
      H.assert_close(logits(model), both, 1e-5, what .. " enabled after the merge")
    else
      local err = H.error_of(peft.merge, model, { names = pick })
      H.assert_mentions(err, "ft.peft.merge", "'" .. pick .. "'")
      if MERGES[kind_of[pick]] then H.assert_mentions(err, "'" .. other .. "'") else H.assert_mentions(err, "cannot be merged") end
      same(logits(model), both, what .. " after a refused merge")
      assert.same({}, peft.merged_adapters(model))
    end
    same_tensors(tensors[other], peft.adapter_state_dict(model, other), what .. ": the other's tensors")
  end

  -- delete the first added, then the other
  peft.delete_adapter(model, "x")
  assert.same({ "y" }, peft.adapters(model))
  assert.same({ "y" }, peft.active_adapters(model))
  H.assert_close(logits(model), ref.y, 1e-5, kx .. "+" .. ky .. ": x deleted, y alone")
  local keys = sorted_keys(model:state_dict())
  local want = {}
  for _, k in ipairs(base_keys) do want[#want + 1] = k end
  for k in pairs(peft.adapter_state_dict(model, "y")) do
    if A.is_adapter_path(k) then want[#want + 1] = k end
  end
  table.sort(want)
  assert.same(want, keys)
  peft.delete_adapter(model, "y")
  assert.same(base_keys, sorted_keys(model:state_dict()))
  assert.is_nil(rawget(model, "forward"))
  for _, m in ipairs(model:modules()) do assert.is_nil(rawget(m, "forward")) end
  H.assert_close(logits(model), base, 1e-5, kx .. "+" .. ky .. ": both deleted")
  return both
end

describe("two adapter kinds on one model", function()
  for i, a in ipairs(ORDER) do
    for j, b in ipairs(ORDER) do
      if i ~= j then
        it(("%s then %s: switch, merge and delete either, the other stays as it was"):format(a, b), function()
          stacked(a, b)
        end)
      end
    end
  end

  it("merge_and_unload folds what merges and keeps what does not", function()
    for _, pair in ipairs({ { "lora", "ia3" }, { "ia3", "dora" }, { "lora", "reft" }, { "prompt", "ia3" } }) do
      local model = tiny_gpt2()
      KINDS[pair[1]](model, "x")
      KINDS[pair[2]](model, "y")
      randomise(model, "x", 1)
      randomise(model, "y", 2)
      peft.set_adapter(model, { "x", "y" })
      local both = logits(model)
      peft.merge_and_unload(model)
      local left = {}
      for _, n in ipairs({ "x", "y" }) do
        if not MERGES[pair[n == "x" and 1 or 2]] then left[#left + 1] = n end
      end
      assert.same(left, peft.adapters(model))
      H.assert_close(logits(model), both, 1e-4, pair[1] .. "+" .. pair[2] .. " merged and unloaded")
    end
    -- DoRA next to LoRA on one layer: refused, nothing changed
    local model = tiny_gpt2()
    KINDS.lora(model, "x")
    KINDS.dora(model, "y")
    randomise(model, "x", 1)
    randomise(model, "y", 2)
    peft.set_adapter(model, { "x", "y" })
    local both = logits(model)
    H.assert_mentions(H.error_of(peft.merge_and_unload, model), "DoRA", "'y'", "'x'")
    identical(logits(model), both, "after the refused merge_and_unload")
    assert.same({ "x", "y" }, peft.adapters(model))
  end)
end)

-- ---- the layer math written out: LoRA "a" and (IA)3 "b" on one Linear ---------------------------

describe("LoRA and (IA)3 on one Linear", function()
  -- y = x W^T + bias (+ s x A^T B^T) per row, then * l, from plain Lua numbers.
  local function by_hand(layer, x, with_lora, with_ia3)
    local X, W, bias = x:totable(), layer.weight:totable(), layer.bias:totable()
    local Am, Bm = layer.lora_A and layer.lora_A.a.weight:totable(), layer.lora_B and layer.lora_B.a.weight:totable()
    local l = layer.ia3_l and layer.ia3_l.b:totable()
    local out = {}
    for r, row in ipairs(X) do
      out[r] = {}
      for o = 1, #W do
        local v = bias[o]
        for i = 1, #row do v = v + row[i] * W[o][i] end
        if with_lora then
          for k = 1, #Am do
            local ax = 0
            for i = 1, #row do ax = ax + Am[k][i] * row[i] end
            v = v + 2.0 * Bm[o][k] * ax   -- scale alpha / r = 4 / 2
          end
        end
        if with_ia3 then v = v * l[o] end
        out[r][o] = v
      end
    end
    return ft.tensor(out)
  end

  local function setup()
    ft.manual_seed(3)
    local model = nn.Sequential(nn.Linear(4, 3))
    local x = ft.randn(5, 4)
    peft.lora(model, { target = "0", r = 2, alpha = 4, name = "a" })
    peft.ia3(model, { target = "0", name = "b" })
    ft.no_grad(function()
      model[1].lora_B.a.weight:copy_(ft.randn(3, 2))
      model[1].ia3_l.b:copy_(ft.tensor({ 0.5, 1.5, -2 }))
    end)
    peft.set_adapter(model, { "a", "b" })
    return model, x
  end

  local function run(model, x) return ft.no_grad(function() return model(x) end) end

  it("computes (x W^T + bias + s x A^T B^T) * l with both on", function()
    local model, x = setup()
    H.assert_close(run(model, x), by_hand(model[1], x, true, true), 1e-5, "both")
    assert.same({ "b", "a" }, A.chain(model[1]))   -- (IA)3 outside, LoRA next to the layer
  end)

  it("keeps (IA)3 'b' working when LoRA 'a' is deleted", function()
    local model, x = setup()
    local l = model[1].ia3_l.b:clone()
    peft.delete_adapter(model, "a")
    assert.same({ "b" }, peft.active_adapters(model))
    local y = run(model, x)
    H.assert_close(y, by_hand(model[1], x, false, true), 1e-5, "b alone after deleting a")
    assert(max_diff(y, by_hand(model[1], x, false, false)) > 0.1, "b is listed active but not applied")
    identical(model[1].ia3_l.b, l, "b's vector")
    peft.delete_adapter(model, "b")
    H.assert_close(run(model, x), by_hand(model[1], x, false, false), 1e-6, "the base again")
  end)

  it("keeps LoRA 'a' working when (IA)3 'b' is deleted, merged or not", function()
    local model, x = setup()
    peft.delete_adapter(model, "b")
    H.assert_close(run(model, x), by_hand(model[1], x, true, false), 1e-5, "a alone after deleting b")
    local model2, x2 = setup()
    local want_both, want_a = by_hand(model2[1], x2, true, true), by_hand(model2[1], x2, true, false)
    peft.merge(model2, { names = "a" })
    assert.same({ "a" }, peft.merged_adapters(model2))
    H.assert_close(run(model2, x2), want_both, 1e-5, "a merged, b on")
    peft.delete_adapter(model2, "b")
    H.assert_close(run(model2, x2), want_a, 1e-5, "a merged, b deleted")
    peft.unmerge(model2)
    H.assert_close(run(model2, x2), want_a, 1e-5, "a alone after unmerge")
  end)

  it("refuses to fold (IA)3 into a layer it shares with LoRA, and says why", function()
    local model, x = setup()
    local before = run(model, x)
    local err = H.error_of(peft.merge, model, { names = "b" })
    H.assert_mentions(err, "ft.peft.merge", "'b'", "'a'", "0")
    identical(run(model, x), before, "nothing changed")
    assert.same({}, peft.merged_adapters(model))
    peft.merge_and_unload(model)
    assert.same({}, peft.adapters(model))
    H.assert_close(run(model, x), before, 1e-5, "merged and unloaded")
  end)

  it("merges and unmerges (IA)3 alone exactly", function()
    ft.manual_seed(4)
    local model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    local x = ft.randn(5, 4)
    peft.ia3(model, { target = { "0", "1" }, feedforward = "1", name = "b" })
    ft.no_grad(function()
      model[1].ia3_l.b:copy_(ft.tensor({ 0.5, 1.5, -2 }))
      model[2].ia3_l.b:copy_(ft.tensor({ 2, 0.25, 3 }))
    end)
    local w0, w1 = model[1].weight:clone(), model[2].weight:clone()
    local y = run(model, x)
    peft.merge(model)
    assert.same({ "b" }, peft.merged_adapters(model))
    H.assert_close(run(model, x), y, 1e-5, "merged")
    -- output scaling multiplies rows of layer 0, input scaling columns of layer 1
    H.assert_close(model[1].weight, w0 * ft.tensor({ 0.5, 1.5, -2 }):view(3, 1), 1e-6, "layer 0 weight")
    H.assert_close(model[2].weight, w1 * ft.tensor({ 2, 0.25, 3 }):view(1, 3), 1e-6, "layer 1 weight")
    peft.unmerge(model)
    H.assert_close(model[1].weight, w0, 1e-6, "unmerged weight")
    H.assert_close(run(model, x), y, 1e-5, "unmerged")
    ft.no_grad(function() model[1].ia3_l.b:copy_(ft.tensor({ 0, 1, 1 })) end)
    H.assert_mentions(H.error_of(peft.merge, model), "zero")
  end)
end)

describe("the registry", function()
  it("has one entry per kind and one prefix list", function()
    assert.same({ "lora", "ia3", "reft", "prompt_tuning" }, peft.kinds())
    assert.equal("lora", A.is_adapter_segment("lora_magnitude_vector"))
    assert.equal("prompt_tuning", A.is_adapter_segment("prompt_encoder"))
    assert.is_nil(A.is_adapter_segment("c_attn"))
    assert.is_true(A.is_adapter_path("transformer.h.0.attn.c_attn.ia3_l.default"))
    assert.is_false(A.is_adapter_path("transformer.h.0.attn.c_attn.weight"))
    H.assert_mentions(H.error_of(A.kind, "vera"), "unknown adapter kind 'vera'", "lora")
  end)

  it("keeps active and order state in the model's registry only", function()
    local model = tiny_gpt2()
    peft.lora(model, { target = "c_attn", name = "a" })
    peft.ia3(model, { target = "c_attn", fused_qkv = "c_attn", name = "b" })
    local layer = model.transformer.h[1].attn.c_attn
    assert.same({ "b", "a" }, A.chain(layer))
    local st_lora, st_ia3 = rawget(layer, "_lora"), rawget(layer, "_ia3")
    assert.is_nil(st_lora.order)
    assert.is_nil(st_lora.registry)
    assert.is_nil(st_ia3.order)
    assert.same({ "a" }, peft.active_adapters(model))   -- the first added, as in PEFT
    peft.set_adapter(model, { "a", "b" })
    peft.disable(model, "a")
    assert.same({ "b" }, peft.active_adapters(model))
    peft.disable(model)
    assert.same({}, peft.active_adapters(model))
    peft.enable(model)
    assert.same({ "b" }, peft.active_adapters(model))
    H.assert_mentions(H.error_of(peft.set_adapter, model, { "a", "zz" }), "ft.peft.set_adapter", "'zz'", "a, b")
    H.assert_mentions(H.error_of(peft.delete_adapter, model, "zz"), "ft.peft.delete_adapter", "'zz'")
  end)

  it("makes the first adapter left active when the only active one is deleted (as PEFT)", function()
    local model = tiny_gpt2()
    peft.lora(model, { target = "c_attn", name = "a" })
    peft.ia3(model, { target = "c_attn", fused_qkv = "c_attn", name = "b" })
    randomise(model, "b", 2)
    local ref_b = only("ia3", "b", model)
    assert.same({ "a" }, peft.active_adapters(model))
    peft.delete_adapter(model, "a")
    assert.same({ "b" }, peft.active_adapters(model))
    assert.is_true(model.transformer.h[1].attn.c_attn.ia3_l.b.requires_grad)
    identical(logits(model), ref_b, "b after deleting a")
  end)
end)

-- ---- strict options -----------------------------------------------------------------------------

describe("ft.peft options", function()
  local function rejects(fn, args, where, key, near)
    local err = H.error_of(fn, table.unpack(args, 1, args.n or #args))
    H.assert_mentions(err, where .. ": unknown option '" .. key .. "'", "valid options:")
    if near then H.assert_mentions(err, "did you mean '" .. near .. "'?") end
  end

  it("rejects a misspelled option of every adapter kind, attaching nothing", function()
    local model = tiny_gpt2()
    rejects(peft.lora, { model, { target = "c_attn", alpah = 16 } }, "ft.peft.lora", "alpah", "alpha")
    rejects(peft.ia3, { model, { targte = "c_attn" } }, "ft.peft.ia3", "targte", "target")
    rejects(peft.reft, { model, { postions = "f1" } }, "ft.peft.reft", "postions", "positions")
    rejects(peft.prompt_tuning, { model, { num_virtual_token = 3 } }, "ft.peft.prompt_tuning", "num_virtual_token",
      "num_virtual_tokens")
    H.assert_mentions(H.error_of(peft.lora, model, { target = "c_attn", lora_alpha = 16 }), "ft.peft.lora",
      "lora_alpha", "'alpha'")
    assert.same({}, peft.adapters(model))
    assert.equal(#model:parameters(), #peft.trainable_parameters(model))
  end)

  it("rejects misspelled options of what-trains functions", function()
    local model = tiny_gpt2()
    rejects(peft.freeze, { model, nil, { bn_polcy = "eval" }, n = 3 }, "ft.peft.freeze", "bn_polcy", "bn_policy")
    rejects(peft.unfreeze, { model, nil, { bn_polcy = "eval" }, n = 3 }, "ft.peft.unfreeze", "bn_polcy", "bn_policy")
    rejects(peft.summary, { model, { prnt = false } }, "ft.peft.summary", "prnt", "print")
    rejects(peft.param_groups, { model, { { "attn", lrr = 1 } } }, "ft.peft.param_groups: group 1", "lrr", "lr")
    rejects(peft.param_groups, { model, { { "attn", lr = 1 } }, { weight_decy = 0 } },
      "ft.peft.param_groups: defaults", "weight_decy", "weight_decay")
    rejects(peft.layerwise_lr_decay, { model, { lr = 1, decya = 0.5 } }, "ft.peft.layerwise_lr_decay", "decya", "decay")
    rejects(peft.gradual_unfreezer, { model, { group = { "h%.0%." } } }, "ft.peft.gradual_unfreezer", "group", "groups")
    rejects(peft.replace_head, { model, 3, { nmae = "lm_head" } }, "ft.peft.replace_head", "nmae", "name")
    local noop = function() end
    rejects(peft.lpft, { model, { probe = noop, finetune = noop, haed = "lm_head" } }, "ft.peft.lpft", "haed", "head")
    -- options given where the patterns go
    H.assert_mentions(H.error_of(peft.freeze, model, { bn_policy = "eval" }), "ft.peft.freeze", "'bn_policy'",
      "options come after the patterns")
    -- nothing was frozen or replaced by the failed calls
    assert.equal(#model:parameters(), #peft.trainable_parameters(model))
    -- the options that exist still work
    local groups = peft.param_groups(model, { { "attn", lr = 1, momentum = 0.5 } }, { lr = 0.1, weight_decay = 0 })
    assert.equal(0.5, groups[1].momentum)
  end)

  it("rejects misspelled options of merge, save and load", function()
    local model = tiny_gpt2()
    peft.lora(model, { target = "c_attn" })
    rejects(peft.merge, { model, { name = "default" } }, "ft.peft.merge", "name", "names")
    rejects(peft.safe_merge, { model, { nmes = "default" } }, "ft.peft.safe_merge", "nmes", "names")
    rejects(peft.merge_and_unload, { model, { saf = true } }, "ft.peft.merge_and_unload", "saf", "safe")
    local dir = H.make_tmpdir("adapters")
    rejects(peft.save, { model, dir .. "/a", { fromat = "peft" } }, "ft.peft.save", "fromat", "format")
    assert.is_false(H.file_exists(dir .. "/a"))
    peft.save(model, dir .. "/a")
    rejects(peft.load, { tiny_gpt2(), dir .. "/a", { nmae = "x" } }, "ft.peft.load", "nmae", "name")
    H.assert_mentions(H.error_of(peft.save, model, dir .. "/b", { task_type = "CAUSAL_LM" }), "ft.peft.save",
      "task_type", "'peft'")
    assert.same({ "default" }, peft.adapters(model))
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

-- ---- PEFT configs: the regex step limit -------------------------------------------------------------

describe("PEFT config regexes", function()
  local LONG = ("a"):rep(40) .. "b"

  it("stop a catastrophically backtracking match with an error naming the pattern", function()
    local t0 = os.clock()
    local err = H.error_of(P.fullmatcher("(a+)+$"), LONG)
    H.assert_mentions(err, "(a+)+$", "steps")
    assert(os.clock() - t0 < 0.5, "the step limit took " .. (os.clock() - t0) .. " s")
    -- ordinary patterns on long names are untouched by the limit
    local long_path = ("block."):rep(40) .. "attn.q_proj"
    assert.is_true(P.fullmatcher([[.*\.(q_proj|v_proj)]])(long_path))
    assert.is_false(P.fullmatcher([[(.*\.)?(c_attn)]])(long_path))
  end)

  it("make peft.load fail fast on such a target_modules or rank_pattern", function()
    local model = nn.Module()
    model:add_module(LONG, nn.Linear(3, 3))
    local dir = H.make_tmpdir("adapters")
    ft.safetensors.save(dir .. "/adapter_model.safetensors", { x = ft.zeros(1) })
    local function config(extra)
      local c = { peft_type = "LORA", r = 2, lora_alpha = 2, target_modules = "(a+)+$" }
      for k, v in pairs(extra or {}) do c[k] = v end
      H.write_bytes(dir .. "/adapter_config.json", ft.json.encode(c))
    end
    config()
    local t0 = os.clock()
    local err = H.error_of(peft.load, model, dir)
    assert(os.clock() - t0 < 0.5, "peft.load took " .. (os.clock() - t0) .. " s")
    H.assert_mentions(err, "ft.peft.load", "adapter_config.json", "target_modules", "(a+)+$", "steps")
    config({ target_modules = { LONG }, rank_pattern = { ["(a+)+"] = 4 } })
    t0 = os.clock()
    err = H.error_of(peft.load, model, dir)
    assert(os.clock() - t0 < 0.5, "peft.load took " .. (os.clock() - t0) .. " s")
    H.assert_mentions(err, "rank_pattern", "(a+)+", "steps")
    assert.same({}, peft.adapters(model))
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

-- ---- peft.save replaces the PEFT folder as a whole ----------------------------------------------------

describe("peft.save in PEFT's layout", function()
  local function listing(dir)
    local out = {}
    for name in pairs(ft._listdir(dir)) do out[#out + 1] = name end
    table.sort(out)
    return out
  end

  it("keeps the old folder when writing fails, leaves no temporaries, and carries other files over", function()
    local model = tiny_gpt2()
    peft.lora(model, { target = "c_attn", r = 2 })
    local root = H.make_tmpdir("adapters")
    local dir = root .. "/adapter"
    assert.equal(dir, peft.save(model, dir, { format = "peft" }))
    H.write_bytes(dir .. "/README.md", "my notes")
    local cfg, weights = H.read_bytes(dir .. "/adapter_config.json"), H.read_bytes(dir .. "/adapter_model.safetensors")

    -- r = 8 this time, and the weights file is written before the failure
    peft.delete_adapter(model, "default")
    peft.lora(model, { target = "c_attn", r = 8 })
    local save = ft.safetensors.save
    ft.safetensors.save = function(path, ...)
      save(path, ...)
      error("disk full (simulated)")
    end
    local ok, err = pcall(peft.save, model, dir, { format = "peft" })
    ft.safetensors.save = save
    assert.is_false(ok)
    H.assert_mentions(err, "ft.peft.save", "disk full")
    assert.equal(cfg, H.read_bytes(dir .. "/adapter_config.json"))
    assert.equal(weights, H.read_bytes(dir .. "/adapter_model.safetensors"))
    assert.same({ "adapter" }, listing(root))
    assert.same({ "README.md", "adapter_config.json", "adapter_model.safetensors" }, listing(dir))

    peft.save(model, dir, { format = "peft" })
    assert.equal(8, ft.json.decode(H.read_bytes(dir .. "/adapter_config.json")).r)
    assert.equal("my notes", H.read_bytes(dir .. "/README.md"))
    assert.same({ "adapter" }, listing(root))
    local other = tiny_gpt2()
    peft.load(other, dir)
    assert.equal(8, require("ft.peft.lora").layers(other, "default")[1].r)

    os.execute("mkdir " .. H.quote(dir .. "/sub"))
    H.assert_mentions(H.error_of(peft.save, model, dir, { format = "peft" }), "ft.peft.save", "'sub'")
    os.execute("rm -rf " .. H.quote(root))
  end)
end)
