-- ft.peft.reft (LoReFT / DiReFT interventions) on a small GPT-2, the HF Llama and ViT fixtures.
-- Expected values are the paper's formulas evaluated here in float64 Lua arithmetic on the
-- block's own (unedited) hidden state, finite differences, and exact comparisons.
local ft = require "ft"
local H = require "helpers"
local reft = require "ft.peft.reft"
local peft = require "ft.peft"

local D, R = 32, 4   -- GPT-2 hidden size and the rank used throughout

local function new_gpt(seed)
  ft.manual_seed(seed or 1)
  local model = ft.models.new(ft.models.config("gpt-s", { n_layer = 2, n_embd = D, n_head = 2,
    attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 }))
  return model:eval()
end

local function random_ids(B, T) return ft.randint(1, 257, { B, T }, { dtype = "int64" }) end

local function no_grad(fn) return ft.no_grad(fn) end

-- Exact equality (shape and every value).
local function assert_identical(a, b, what)
  assert.same(a:shape(), b:shape(), what)
  local fa, fb = H.flat(a), H.flat(b)
  for i = 1, #fa do
    if fa[i] ~= fb[i] then error(("%s: element %d is %.9g, expected %.9g"):format(what, i, fa[i], fb[i]), 2) end
  end
end

-- Fills the adapter's tensors (not the rotation, already random orthonormal) with gaussians,
-- so that the intervention does something.
local function randomize(model, name)
  no_grad(function()
    for key, t in pairs(reft.state_dict(model, name)) do
      if not key:find("rotation$") then t:normal_(0, 0.5) end
    end
  end)
end

-- The block's output with the adapters on and off, for one input.
local function block_outputs(model, block, x)
  return no_grad(function()
    local on = block(x)
    peft.disable(model)
    local off = block(x)
    peft.enable(model)
    return on, off
  end)
end

local function dot(u, v)
  local s = 0
  for k = 1, #u do s = s + u[k] * v[k] end
  return s
end

-- The edit the paper's formulas give for one hidden vector h (a Lua array), from the
-- tensors p of one intervention (keys relative to it: rotation, learned_source.weight ...).
local function edit_of(kind, p, h)
  local W, b = p["learned_source.weight"]:totable(), p["learned_source.bias"]:totable()
  local delta = {}
  for k = 1, #h do delta[k] = 0 end
  if kind == "loreft" then
    local Rm = p.rotation:totable()
    for i = 1, #Rm do   -- R^T (W h + b - R h)
      local c = dot(W[i], h) + b[i] - dot(Rm[i], h)
      for k = 1, #h do delta[k] = delta[k] + Rm[i][k] * c end
    end
  else
    local W2 = p.projection:totable()
    for i = 1, #W2 do   -- W2^T (W1 h + b)
      local c = dot(W[i], h) + b[i]
      for k = 1, #h do delta[k] = delta[k] + W2[i][k] * c end
    end
  end
  return delta
end

-- The tensors of one intervention module, keyed by their names inside it.
local function params_of(module)
  local out = {}
  for name, t in module:named_parameters() do out[name] = t end
  return out
end

-- Checks a block output against the formula: positions in `which` (position -> the
-- intervention's tensors) are h + edit(h) within 1e-5; every other position is h exactly.
local function check_block(kind, on, off, which, what)
  local got, base = on:totable(), off:totable()
  for bi = 1, #base do
    for t = 1, #base[bi] do
      local h, y = base[bi][t], got[bi][t]
      local p = which[t]
      if p then
        local delta = edit_of(kind, p, h)
        local changed = false
        for k = 1, #h do
          local want = h[k] + delta[k]
          if math.abs(y[k] - want) > 1e-5 * math.max(1, math.abs(want)) then
            error(("%s: batch %d position %d feature %d is %.8g, the formula gives %.8g"):format(what, bi, t, k,
              y[k], want), 2)
          end
          if y[k] ~= h[k] then changed = true end
        end
        assert(changed, ("%s: position %d was not edited"):format(what, t))
      else
        for k = 1, #h do
          if y[k] ~= h[k] then
            error(("%s: batch %d position %d (not configured) changed: %.9g, was %.9g"):format(what, bi, t, k,
              y[k], h[k]), 2)
          end
        end
      end
    end
  end
end

local function positions_set(first, last, T, p_first, p_last)
  local which = {}
  for t = T - last + 1, T do if t >= 1 then which[t] = p_last end end
  for t = 1, math.min(first, T) do which[t] = p_first end   -- first wins where both
  return which
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("ft.peft.reft on GPT-2", function()
  for _, kind in ipairs({ "loreft", "direft" }) do
    it(kind .. ": a fresh intervention is an exact no-op", function()
      local model = new_gpt(1)
      local ids = random_ids(2, 20)
      local before = no_grad(function() return model(ids).logits end)
      local name = reft.attach(model, { kind = kind, rank = R, positions = "f7+l7" })
      assert.equal("default", name)
      local after = no_grad(function() return model(ids).logits end)
      assert_identical(after, before, kind .. " fresh logits")
    end)

    it(kind .. ": the block output follows the formula at the configured positions only", function()
      local cases = {
        { "f7+l7", 7, 7, 20 },   -- 8..13 untouched
        { "f7+l7", 7, 7, 10 },   -- overlap: positions 4..7 edited once
        { "f7+l7", 7, 7, 5 },    -- shorter than either side
        { "f1", 1, 0, 9 }, { "l3", 0, 3, 9 }, { "f5", 5, 0, 3 },
      }
      for i, c in ipairs(cases) do
        local model = new_gpt(2)
        -- layer 2 by its position in the blocks or by its module name
        local layer = i % 2 == 0 and 2 or "transformer.h.1"
        reft.attach(model, { kind = kind, layers = { layer }, rank = R, positions = c[1] })
        randomize(model, "default")
        local block = model.transformer.h[2]
        local p = params_of(block._modules["reft_" .. kind].default)
        local x = ft.randn(2, c[4], D)
        local on, off = block_outputs(model, block, x)
        check_block(kind, on, off, positions_set(c[2], c[3], c[4], p, p), ("%s %s T=%d"):format(kind, c[1], c[4]))
      end
    end)

    it(kind .. ": untied interventions edit the first and the last positions separately", function()
      local model = new_gpt(3)
      reft.attach(model, { kind = kind, layers = { 1 }, rank = R, positions = "f7+l7", tied = false })
      randomize(model, "default")
      local holder = model.transformer.h[1]._modules["reft_" .. kind].default
      local p_first, p_last = params_of(holder.first), params_of(holder.last)
      for _, T in ipairs({ 20, 10 }) do
        local x = ft.randn(2, T, D)
        local on, off = block_outputs(model, model.transformer.h[1], x)
        check_block(kind, on, off, positions_set(7, 7, T, p_first, p_last), kind .. " untied T=" .. T)
      end
      local keys = reft.state_dict(model, "default")
      assert.is_not_nil(keys["transformer.h.0.reft_" .. kind .. ".default.first.learned_source.weight"])
      assert.is_not_nil(keys["transformer.h.0.reft_" .. kind .. ".default.last.learned_source.bias"])
    end)

    it(kind .. ": tied and untied parameter counts are 2dr + r per intervention", function()
      local per = 2 * D * R + R
      local tied = new_gpt(4)
      reft.attach(tied, { kind = kind, layers = { 1, 2 }, rank = R })
      assert.equal(2 * per, tied:num_parameters({ trainable = true }))
      assert.equal(6, count(reft.state_dict(tied, "default")))
      local untied = new_gpt(4)
      reft.attach(untied, { kind = kind, layers = { 1, 2 }, rank = R, tied = false })
      assert.equal(4 * per, untied:num_parameters({ trainable = true }))
      local first_only = new_gpt(4)
      reft.attach(first_only, { kind = kind, layers = { 1, 2 }, rank = R, tied = false, positions = "f5" })
      assert.equal(2 * per, first_only:num_parameters({ trainable = true }))
    end)
  end

  it("names the parameters under reft_<kind>.<name> and freezes the base model", function()
    local model = new_gpt(5)
    local base_keys = {}
    for k in pairs(model:state_dict()) do base_keys[k] = true end
    reft.attach(model, { layers = { 2 }, rank = R })
    local sd = model:state_dict()
    for _, k in ipairs({ "rotation", "learned_source.weight", "learned_source.bias" }) do
      local key = "transformer.h.1.reft_loreft.default." .. k
      assert.is_not_nil(sd[key], key)
    end
    assert.same({ R, D }, sd["transformer.h.1.reft_loreft.default.rotation"]:shape())
    for name, p in model:named_parameters() do
      if base_keys[name] then
        assert.is_false(p.requires_grad, name)
      else
        assert.is_true(name:find(".reft_loreft.default.", 1, true) ~= nil, name)
        assert.is_true(p.requires_grad, name)
      end
    end
  end)

  it("LoReFT starts with orthonormal R, W = R and b = 0", function()
    local model = new_gpt(6)
    reft.attach(model, { layers = { 1 }, rank = R })
    local p = params_of(model.transformer.h[1].reft_loreft.default)
    assert_identical(p["learned_source.weight"], p.rotation, "W")
    assert_identical(p["learned_source.bias"], ft.zeros(R), "b")
    local Rm = p.rotation:totable()
    for i = 1, R do
      for j = 1, R do
        assert(math.abs(dot(Rm[i], Rm[j]) - (i == j and 1 or 0)) < 1e-6, ("R R^T [%d,%d]"):format(i, j))
      end
    end
  end)

  -- loss = sum(block(x) * C) is linear in the output and the output is at most quadratic in
  -- each parameter, so central differences are exact but for float32 rounding.
  for _, kind in ipairs({ "loreft", "direft" }) do
    it(kind .. ": gradients match finite differences", function()
      local model = new_gpt(7)
      reft.attach(model, { kind = kind, layers = { 1 }, rank = R, positions = "f2+l2" })
      randomize(model, "default")
      local block = model.transformer.h[1]
      local x = ft.randn(2, 6, D)
      local C = ft.randn(2, 6, D)
      local Ct = C:totable()
      local function loss64()
        local y = no_grad(function() return block(x) end):totable()
        local s = 0
        for b = 1, #y do for t = 1, #y[b] do s = s + dot(y[b][t], Ct[b][t]) end end
        return s
      end
      model:zero_grad()
      local loss = (block(x) * C):sum()
      loss:backward()
      local p = params_of(block._modules["reft_" .. kind].default)
      for pname, t in pairs(p) do
        assert.is_not_nil(t.grad, pname .. " has no gradient")
        local grad = H.flat(t.grad)
        local shape = t:shape()
        local n = t:numel()
        for _, flat_i in ipairs({ 1, (n + 1) // 2, n, 3 % n + 1 }) do
          local orig = H.flat(t)
          local function at(delta)
            local v = { table.unpack(orig) }
            v[flat_i] = v[flat_i] + delta
            no_grad(function() t:copy_(H.from_flat(v, shape)) end)
            local moved = H.flat(t)[flat_i] - orig[flat_i]   -- the float32 step actually taken
            return loss64(), moved
          end
          local lp, sp = at(0.05)
          local lm, sm = at(-0.05)
          no_grad(function() t:copy_(H.from_flat(orig, shape)) end)
          local fd = (lp - lm) / (sp - sm)
          local err = math.abs(fd - grad[flat_i])
          assert(err <= 5e-4 * math.max(1, math.abs(fd)),
            ("%s %s[%d]: autograd %.6g, finite differences %.6g"):format(kind, pname, flat_i, grad[flat_i], fd))
        end
      end
    end)
  end

  it("keeps R orthonormal through 100 AdamW steps while the loss decreases", function()
    local model = new_gpt(8)
    reft.attach(model, { layers = { 1, 2 }, rank = R, positions = "f3+l3" })
    model:train()
    local params = {}
    for _, p in ipairs(model:parameters()) do if p.requires_grad then params[#params + 1] = p end end
    assert.equal(6, #params)
    local rotations = {}
    for key, t in pairs(reft.state_dict(model, "default")) do
      if key:find("rotation$") then rotations[key] = t end
    end
    assert.equal(2, count(rotations))
    local r0 = {}
    for key, t in pairs(rotations) do r0[key] = t:clone() end
    local opt = ft.optim.AdamW(params, { lr = 1e-2 })
    local ids = random_ids(2, 12)
    local first, last
    for step = 1, 100 do
      opt:zero_grad()
      local loss = model(ids, { labels = ids }).loss
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
      for key, t in pairs(rotations) do
        local Rm = t:totable()
        for i = 1, R do
          for j = 1, R do
            local e = math.abs(dot(Rm[i], Rm[j]) - (i == j and 1 or 0))
            if e > 1e-5 then error(("step %d: %s R R^T [%d,%d] is off by %.3g"):format(step, key, i, j, e)) end
          end
        end
      end
    end
    assert(last < first - 0.1, ("loss %.4f -> %.4f did not decrease"):format(first, last))
    for key, t in pairs(rotations) do
      assert(H.max_abs(t - r0[key]) > 1e-3, key .. " did not train")
    end
  end)

  it("applies dropout to the edit only, and only in training mode", function()
    local model = new_gpt(9)
    reft.attach(model, { layers = { 1 }, rank = R, positions = "f3+l3", dropout = 0.5 })
    randomize(model, "default")
    local block = model.transformer.h[1]
    local x = ft.randn(2, 10, D)
    local on_eval, off = block_outputs(model, block, x)
    local on_eval2 = no_grad(function() return block(x) end)
    assert_identical(on_eval2, on_eval, "eval mode is deterministic")
    model:train()
    local on_train = no_grad(function() return block(x) end)
    model:eval()
    local h, ye, yt = off:totable(), on_eval:totable(), on_train:totable()
    local dropped, kept = 0, 0
    for b = 1, #h do
      for t = 1, #h[b] do
        for k = 1, D do
          local delta, got = ye[b][t][k] - h[b][t][k], yt[b][t][k] - h[b][t][k]
          if t > 3 and t < 8 then
            assert.equal(h[b][t][k], yt[b][t][k])
          elseif got == 0 then
            dropped = dropped + 1
          else
            assert(math.abs(got - 2 * delta) <= 1e-5 * math.max(1, math.abs(h[b][t][k])),
              ("position %d feature %d: edit %.6g, expected 0 or 2 * %.6g"):format(t, k, got, delta))
            kept = kept + 1
          end
        end
      end
    end
    assert(dropped > 50 and kept > 50, ("dropped %d, kept %d"):format(dropped, kept))
  end)

  it("round-trips an adapter through state_dict, a file and a freshly attached model exactly", function()
    local model = new_gpt(10)
    local base = {}
    for k, t in pairs(model:state_dict()) do base[k] = t:clone() end
    reft.attach(model, { layers = { 1, 2 }, rank = R, positions = "f3+l2", tied = false, name = "task" })
    randomize(model, "task")
    -- a few steps so that R leaves its initial value
    model:train()
    local params = {}
    for _, p in ipairs(model:parameters()) do if p.requires_grad then params[#params + 1] = p end end
    local opt = ft.optim.AdamW(params, { lr = 1e-2 })
    local ids = random_ids(2, 9)
    for _ = 1, 3 do
      opt:zero_grad()
      model(ids, { labels = ids }).loss:backward()
      opt:step()
    end
    model:eval()
    local dir = H.make_tmpdir("reft")
    local path = dir .. "/adapter.h5"
    ft.save(path, reft.state_dict(model, "task"))
    local config = ft.json.decode(ft.json.encode(require("ft.peft.registry").get(model, "task").config))

    local fresh = new_gpt(11)
    fresh:load_state_dict(base)
    ft.manual_seed(12345)   -- a different initial R
    assert.equal("task", reft.attach(fresh, config))
    local _, unexpected = fresh:load_state_dict(ft.load(path), { strict = false })
    assert.same({}, unexpected)
    local want = no_grad(function() return model(ids).logits end)
    local got = no_grad(function() return fresh(ids).logits end)
    assert_identical(got, want, "logits after reload")
    local a, b = reft.state_dict(model, "task"), reft.state_dict(fresh, "task")
    assert.equal(12, count(a))   -- 2 layers x (first, last) x (R, W, b)
    assert.equal(count(a), count(b))
    for k, t in pairs(a) do assert_identical(b[k], t, k) end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("generates with the KV cache, editing the prompt but not the cached steps", function()
    local model = new_gpt(13)
    reft.attach(model, { layers = { 1, 2 }, rank = R, positions = "f2+l2" })
    randomize(model, "default")
    local ids = random_ids(2, 6)
    local out = model:generate(ids, { max_new_tokens = 4 })
    assert.same({ 2, 10 }, out:shape())
    no_grad(function()
      local prompt = model(ids, { use_cache = true })
      local first_new = prompt.logits:select(2, 6):argmax(2):reshape(2, 1)
      H.assert_equal_ints(out:narrow(2, 7, 1), first_new, "first generated token")
      peft.disable(model)
      local plain = model(ids).logits
      local step_off = model(first_new, { past_key_values = prompt.past_key_values }).logits
      peft.enable(model)
      local step_on = model(first_new, { past_key_values = prompt.past_key_values }).logits
      assert(H.max_abs(prompt.logits - plain) > 1e-3, "the prompt was not edited")
      assert_identical(step_on, step_off, "logits of a cached step")
    end)
  end)

  it("counts first and last positions over each row's real tokens in a padded batch", function()
    for _, tied in ipairs({ true, false }) do
      local model = new_gpt(17)
      reft.attach(model, { layers = { 1, 2 }, rank = R, positions = "f2+l2", tied = tied })
      randomize(model, "default")
      local ids = random_ids(2, 7)
      local short = ids:narrow(1, 2, 1):narrow(2, 1, 4):contiguous()   -- row 2 alone: 4 real tokens
      no_grad(function()
        local alone = model(short).logits
        local full_row = model(ids:narrow(1, 1, 1):contiguous()).logits
        -- right padding: row 2 = its 4 tokens, then 3 pads
        local right = model(ids, { attention_mask = ft.tensor({ { 1, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 0, 0, 0 } },
          { dtype = "int64" }) }).logits
        H.assert_close(right:narrow(1, 1, 1), full_row, 1e-5, "unpadded row")
        H.assert_close(right:narrow(1, 2, 1):narrow(2, 1, 4), alone, 1e-5, "right-padded row (tied " .. tostring(tied) .. ")")
        -- left padding: 3 pads, then the 4 tokens at positions 1..4
        local left_ids = ft.cat({ ids:narrow(1, 1, 1), ft.cat({ ft.ones({ 1, 3 }, { dtype = "int64" }), short }, 2) }, 1)
        local left = model(left_ids, {
          attention_mask = ft.tensor({ { 1, 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 1, 1, 1, 1 } }, { dtype = "int64" }),
          position_ids = ft.tensor({ { 1, 2, 3, 4, 5, 6, 7 }, { 1, 1, 1, 1, 2, 3, 4 } }, { dtype = "int64" }),
        }).logits
        H.assert_close(left:narrow(1, 2, 1):narrow(2, 4, 4), alone, 1e-5, "left-padded row (tied " .. tostring(tied) .. ")")
      end)
    end
  end)

  it("removes an adapter and leaves the others working", function()
    local model = new_gpt(14)
    local ids = random_ids(1, 8)
    local base_keys = {}
    for k in pairs(model:state_dict()) do base_keys[#base_keys + 1] = k end
    table.sort(base_keys)
    local plain = no_grad(function() return model(ids).logits end)
    reft.attach(model, { layers = { 1 }, rank = R, name = "a" })
    reft.attach(model, { layers = { 1, 2 }, rank = R, kind = "direft", name = "b" })
    randomize(model, "a")
    randomize(model, "b")
    peft.set_adapter(model, "b")
    local only_b = no_grad(function() return model(ids).logits end)
    local rotation_a = model.transformer.h[1].reft_loreft.a.rotation
    peft.delete_adapter(model, "a")
    -- its rotation is no longer constrained: a step that scales it leaves it scaled
    rotation_a.requires_grad = true
    local scaled = rotation_a:detach() * 0.8
    local sgd = ft.optim.SGD({ rotation_a }, { lr = 0.1 })
    local loss = (rotation_a * rotation_a):sum()
    loss:backward()
    sgd:step()
    H.assert_close(rotation_a, scaled, 1e-6, "R after removal")
    assert.is_nil(model.transformer.h[1]._modules.reft_loreft)
    assert_identical(no_grad(function() return model(ids).logits end), only_b, "b alone")
    peft.delete_adapter(model, "b")
    assert.is_nil(rawget(model.transformer.h[1], "forward"))
    assert.is_nil(rawget(model.transformer.h[2], "forward"))
    local keys = {}
    for k in pairs(model:state_dict()) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same(base_keys, keys)
    assert_identical(no_grad(function() return model(ids).logits end), plain, "logits after removal")
  end)

  it("raises clear errors for bad options", function()
    local model = new_gpt(15)
    local msg = H.error_of(reft.attach, model, { layers = { 3 } })
    H.assert_mentions(msg, "layer 3", "2 blocks")
    msg = H.error_of(reft.attach, model, { layers = { 0 } })
    H.assert_mentions(msg, "layer 0", "2 blocks")
    msg = H.error_of(reft.attach, model, { layers = { "transformer.h.7" } })
    H.assert_mentions(msg, "transformer.h.7")
    for _, bad in ipairs({ "x7", "f7+", "l3+f2", "f0", "7" }) do
      msg = H.error_of(reft.attach, model, { positions = bad })
      H.assert_mentions(msg, '"' .. bad .. '"', "positions")
    end
    H.assert_mentions(H.error_of(reft.attach, model, { rank = 33 }), "rank 33", "32")
    H.assert_mentions(H.error_of(reft.attach, model, { kind = "reft" }), "kind", "reft")
    H.assert_mentions(H.error_of(reft.attach, model, { dropout = 1 }), "dropout")
    H.assert_mentions(H.error_of(reft.attach, model, { rnak = 4 }), "rnak")
    assert.same({}, peft.adapters(model))   -- nothing was attached by the failed calls
    reft.attach(model, { layers = { 1 } })
    H.assert_mentions(H.error_of(reft.attach, model, { layers = { 1 } }), "default")
    reft.attach(model, { layers = { 2 }, rank = 2, embed_dim = 16, name = "small" })
    peft.set_adapter(model, "small")
    H.assert_mentions(H.error_of(function() model.transformer.h[2](ft.randn(2, 5, D)) end),
      "transformer.h.1", "[2,5,32]", "small", "16")
  end)
end)

describe("ft.peft.reft on the HF fixtures", function()
  it("Llama: generation with the cache runs and leaves cached steps unedited", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_llama"))
    ft.manual_seed(16)
    reft.attach(model, { layers = { 1 }, rank = 2, positions = "l2" })
    randomize(model, "default")
    local ids = random_ids(1, 5)
    local out = model:generate(ids, { max_new_tokens = 3 })
    assert.same({ 1, 8 }, out:shape())
    no_grad(function()
      local prompt = model(ids, { use_cache = true })
      local nxt = out:narrow(2, 6, 1)
      local on = model(nxt, { past_key_values = prompt.past_key_values }).logits
      peft.disable(model)
      local off = model(nxt, { past_key_values = prompt.past_key_values }).logits
      local plain = model(ids).logits
      peft.enable(model)
      assert(H.max_abs(prompt.logits - plain) > 1e-4, "the prompt was not edited")
      assert_identical(on, off, "logits of a cached step")
    end)
  end)

  it("ViT: a fresh adapter is a no-op and f1 edits the CLS token only", function()
    local model = ft.models.from_pretrained(H.fixture("golden/hf_vit"))
    ft.manual_seed(17)
    local x = ft.rand(2, 1, 28, 28)
    local before = no_grad(function() return model(x).logits end)
    reft.attach(model, { layers = { 1 }, rank = R, positions = "f1" })
    assert_identical(no_grad(function() return model(x).logits end), before, "fresh ViT logits")
    randomize(model, "default")
    local layer = model.vit.encoder.layer[1]
    local p = params_of(layer.reft_loreft.default)
    local h = ft.randn(2, 17, 64)
    local on, off = block_outputs(model, layer, h)
    check_block("loreft", on, off, { [1] = p }, "ViT f1")
    local after = no_grad(function() return model(x).logits end)
    assert(H.max_abs(after - before) > 1e-4, "the edit does not reach the logits")
  end)
end)

describe("ft.optim.constrain", function()
  it("runs after each step, under no_grad, for the updated parameters only", function()
    local p = ft.nn.Parameter(ft.tensor({ 3, -4 }))
    local q = ft.nn.Parameter(ft.tensor({ 1, 1 }))
    local calls = {}
    local function unit_norm(t)   -- projects back onto the unit circle
      calls[#calls + 1] = { t = t, grad_enabled = ft.is_grad_enabled() }
      local v = t:totable()
      local n = math.sqrt(v[1] ^ 2 + v[2] ^ 2)
      t:copy_(ft.tensor({ v[1] / n, v[2] / n }))
    end
    ft.optim.constrain(p, unit_norm)
    ft.optim.constrain(q, unit_norm)
    local opt = ft.optim.SGD({ p, q }, { lr = 0.1 })
    local loss = (p * p):sum()   -- q gets no gradient and is not updated
    loss:backward()
    opt:step()
    assert.equal(1, #calls)
    assert.is_true(rawequal(p, calls[1].t))
    assert.is_false(calls[1].grad_enabled)
    -- (3, -4) - 0.1 * (6, -8) = (2.4, -3.2), normalised (0.6, -0.8)
    H.assert_close(p, ft.tensor({ 0.6, -0.8 }), 1e-6, "p")
    assert_identical(q, ft.tensor({ 1, 1 }), "q")
    ft.optim.constrain(p, nil)
    opt:zero_grad()
    loss = (p * p):sum()
    loss:backward()
    opt:step()
    assert.equal(1, #calls)
    -- (0.6, -0.8) - 0.1 * (1.2, -1.6), no projection
    H.assert_close(p, ft.tensor({ 0.48, -0.64 }), 1e-6, "p unconstrained")
    H.assert_mentions(H.error_of(ft.optim.constrain, "p", unit_norm), "param")
    H.assert_mentions(H.error_of(ft.optim.constrain, p, 1), "fn")
  end)
end)
