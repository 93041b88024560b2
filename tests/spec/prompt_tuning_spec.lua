-- inputs_embeds in the GPT-2 and Llama forwards, and soft-prompt tuning (ft.peft.prompt_tuning):
-- the prompt's place in the sequence, the loss against a computation written out here (the
-- prompt concatenated by hand, fed through inputs_embeds, cross-entropy in plain Lua), which
-- tensors train, inits, generation with the prompt, and removal.
local ft = require "ft"
local H = require "helpers"
local A = require "ft.peft.registry"
local PT = require "ft.peft.prompt_tuning"
local gpt2 = require "ft.models.gpt2"
local llama = require "ft.models.llama"

ft.set_num_threads(2)

-- initializer_range: GPT-2's 0.02 leaves a random model nearly blind to its input; larger
-- weights make the prompt matter, so that training it visibly helps.
local function tiny_gpt2(init_std)
  ft.manual_seed(7)
  local m = ft.models.new("gpt-s", { n_layer = 2, n_embd = 32, n_head = 2, n_positions = 64,
    initializer_range = init_std })
  m:eval()
  return m
end

local function tiny_llama()
  ft.manual_seed(8)
  local m = ft.models.new("llama-s", { num_hidden_layers = 2, hidden_size = 32, intermediate_size = 48,
    num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64 })
  m:eval()
  return m
end

-- The class forward, bypassing any per-instance one.
local function class_forward(m)
  return m.__name == "GPT2LMHeadModel" and gpt2.GPT2LMHeadModel.forward or llama.LlamaForCausalLM.forward
end

local function wte(m) return m.transformer and m.transformer.wte or m.model.embed_tokens end

local function ids_of(rows) return ft.tensor(rows, { dtype = "int64" }) end

local function max_diff(a, b) return ft.no_grad(function() return (a - b):abs():max():item() end) end

-- Mean of -log softmax(logits[b][t])[labels[b][t+1]] over the labels that are not -100,
-- from plain Lua numbers.
local function explicit_causal_loss(logits, labels)
  local L, Y = logits:totable(), labels:totable()
  local total, count = 0, 0
  for b = 1, #Y do
    for t = 1, #Y[b] - 1 do
      local y = Y[b][t + 1]
      if y ~= -100 then
        local row, max = L[b][t], -math.huge
        for _, v in ipairs(row) do if v > max then max = v end end
        local sum = 0
        for _, v in ipairs(row) do sum = sum + math.exp(v - max) end
        total = total + (max + math.log(sum) - row[y])
        count = count + 1
      end
    end
  end
  return total / count
end

describe("inputs_embeds", function()
  for _, case in ipairs({ { "GPT-2", tiny_gpt2 }, { "Llama", tiny_llama } }) do
    local label, make = case[1], case[2]

    it(label .. ": gives the logits of input_ids, with and without a KV cache", function()
      local m = make()
      local ids = ids_of({ { 5, 90, 17, 200, 3, 44 }, { 12, 7, 7, 255, 100, 1 } })
      ft.no_grad(function()
        local want = m(ids).logits
        local got = m(nil, { inputs_embeds = wte(m)(ids) }).logits
        H.assert_close(got, want, 1e-6, label .. " logits")
        -- first part by embeddings, the rest by ids through the cache
        local head = m(nil, { inputs_embeds = wte(m)(ids:narrow(2, 1, 4)), use_cache = true })
        local tail = m(ids:narrow(2, 5, 2), { past_key_values = head.past_key_values })
        H.assert_close(tail.logits, want:narrow(2, 5, 2), 1e-5, label .. " logits after the cache")
        -- and the embeddings are really what the model reads
        local other = m(nil, { inputs_embeds = wte(m)(ids) * 1.5 }).logits
        assert.is_true(max_diff(other, want) > 1e-3)
      end)
    end)

    it(label .. ": rejects both inputs, neither, or a wrong width", function()
      local m = make()
      local ids = ids_of({ { 5, 90, 17 } })
      H.assert_mentions(H.error_of(function() m(ids, { inputs_embeds = wte(m)(ids) }) end), "not both")
      H.assert_mentions(H.error_of(function() m(nil, {}) end), "inputs_embeds is required")
      H.assert_mentions(H.error_of(function() m(nil, { inputs_embeds = ft.zeros(1, 3, 31) }) end),
        "inputs_embeds must be [batch, seq, 32], got [1,3,31]")
    end)
  end

  it("GPT-2: trains through inputs_embeds (the gradient reaches the embeddings given)", function()
    local m = tiny_gpt2()
    local e = wte(m)(ids_of({ { 5, 90, 17 } })):detach()
    e.requires_grad = true
    m(nil, { inputs_embeds = e }).logits:sum():backward()
    assert.is_truthy(e.grad)
    assert.is_true(H.max_abs(e.grad) > 0)
  end)
end)

describe("ft.peft.prompt_tuning", function()
  it("adds a [n, d] prompt as prompt_encoder.<name>.embedding.weight and freezes the base", function()
    local m = tiny_gpt2()
    local base_keys = select(2, m:state_dict())
    local name = PT.attach(m, { num_virtual_tokens = 5, name = "p1" })
    assert.are.equal("p1", name)
    local sd = PT.state_dict(m, "p1")
    local key = "prompt_encoder.p1.embedding.weight"
    assert.are.same({ key }, (function() local k = {}; for n in pairs(sd) do k[#k + 1] = n end; return k end)())
    assert.are.same({ 5, 32 }, sd[key]:shape())
    local msd, keys = m:state_dict()
    assert.is_truthy(msd[key])
    assert.are.equal(#base_keys + 1, #keys)
    for i, k in ipairs(base_keys) do assert.are.equal(k, keys[i]) end   -- base names unchanged
    for n, p in m:named_parameters() do assert.are.equal(n == key, p.requires_grad, n) end
    assert.are.equal(5 * 32, m:num_parameters({ trainable = true }))
    local entry = A.get(m, "p1")
    assert.are.equal("prompt_tuning", entry.kind)
    assert.are.equal(5, entry.config.num_virtual_tokens)
    assert.are.equal("random", entry.config.init)
    ft.json.encode(entry.config)   -- JSON-able
  end)

  for _, case in ipairs({ { "GPT-2", tiny_gpt2 }, { "Llama", tiny_llama } }) do
    local label, make = case[1], case[2]
    it(label .. ": the loss is the explicit cat(prompt, wte(ids)) computation; logits are the real tokens'", function()
      local m = make()
      PT.attach(m, { num_virtual_tokens = 3 })
      local prompt = PT.state_dict(m, "default")["prompt_encoder.default.embedding.weight"]
      local ids = ids_of({ { 5, 90, 17, 200, 3 }, { 12, 7, 7, 255, 1 } })
      local labels = ids_of({ { 5, 90, -100, 200, 3 }, { 12, 7, 7, 255, -100 } })
      local mask = ids_of({ { 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 0 } })
      local out = m(ids, { labels = labels, attention_mask = mask })
      assert.are.same({ 2, 5, m.config.vocab_size }, out.logits:shape())

      local full = ft.no_grad(function()
        local virtual = ft.cat({ prompt:reshape(1, 3, -1), prompt:reshape(1, 3, -1) }, 1)
        local embeds = ft.cat({ virtual, wte(m)(ids) }, 2)
        local ext_mask = ids_of({ { 1, 1, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 1, 1, 0 } })
        return class_forward(m)(m, nil, { inputs_embeds = embeds, attention_mask = ext_mask }).logits
      end)
      H.assert_close(out.logits, full:narrow(2, 4, 5), 1e-5, "logits of the real tokens")
      -- virtual positions carry no label; the last one predicts the first real token
      local ext_labels = ids_of({ { -100, -100, -100, 5, 90, -100, 200, 3 },
                                  { -100, -100, -100, 12, 7, 7, 255, -100 } })
      local want = explicit_causal_loss(full, ext_labels)
      assert.is_true(math.abs(out.loss:item() - want) < 1e-4,
        ("loss %.6f, explicit %.6f"):format(out.loss:item(), want))
    end)
  end

  it("gives gradients to the prompt only, matching finite differences", function()
    local m = tiny_gpt2()
    PT.attach(m, { num_virtual_tokens = 4 })
    local prompt = m.prompt_encoder.default.embedding.weight
    local ids = ids_of({ { 5, 90, 17, 200, 3, 9 } })
    local loss = m(ids, { labels = ids }).loss
    loss:backward()
    for n, p in m:named_parameters() do
      if p == prompt then assert.is_truthy(p.grad, n) else assert.is_nil(p.grad, n .. " got a gradient") end
    end
    local g = prompt.grad:totable()
    local function loss_at() return ft.no_grad(function() return m(ids, { labels = ids }).loss:item() end) end
    for _, at in ipairs({ { 1, 3 }, { 4, 17 } }) do
      local r, c = at[1], at[2]
      local x = prompt:totable()[r][c]
      local h = 1e-2
      local function set(v) ft.no_grad(function() prompt:select(1, r):narrow(1, c, 1):fill_(v) end) end
      set(x + h); local up = loss_at()
      set(x - h); local down = loss_at()
      set(x)
      local fd = (up - down) / (2 * h)
      assert.is_true(math.abs(fd - g[r][c]) < 2e-3 + 0.05 * math.abs(fd),
        ("d loss / d prompt[%d][%d]: autograd %.5f, finite differences %.5f"):format(r, c, g[r][c], fd))
    end
  end)

  it("lowers the loss on a fixed string in a few AdamW steps and leaves the base as it was", function()
    local m = tiny_gpt2(0.3)
    local before = {}
    for k, t in pairs(m:state_dict()) do before[k] = t:clone() end
    PT.attach(m, { num_virtual_tokens = 8, init = "text", init_text = "Once upon a time" })
    local ids = ft.tokenizer.bytes():encode("the cat sat on the mat"):reshape(1, -1)
    local params = {}
    for _, p in ipairs(m:parameters()) do if p.requires_grad then params[#params + 1] = p end end
    assert.are.equal(1, #params)
    local opt = ft.optim.AdamW(params, { lr = 0.1, weight_decay = 0 })
    m:train()
    local first, last
    for step = 1, 20 do
      local loss = m(ids, { labels = ids }).loss
      opt:zero_grad()
      loss:backward()
      opt:step()
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    assert.is_true(last < first - 0.5, ("loss %.4f -> %.4f"):format(first, last))
    for k, t in pairs(m:state_dict()) do
      if before[k] then assert.are.equal(0, max_diff(t, before[k]), k .. " changed") end
    end
  end)

  it("starts from the token embeddings of init_text, repeated to the length (PEFT's TEXT init)", function()
    local m = tiny_gpt2()
    PT.attach(m, { num_virtual_tokens = 5, init = "text", init_text = "ab" })
    local W = wte(m).weight:totable()
    local P = m.prompt_encoder.default.embedding.weight:totable()
    local want = { ("a"):byte() + 1, ("b"):byte() + 1, ("a"):byte() + 1, ("b"):byte() + 1, ("a"):byte() + 1 }
    for i, id in ipairs(want) do assert.are.same(W[id], P[i], "row " .. i) end
    assert.are.same(want, A.get(m, "default").config.init_token_ids)
    -- cut when the text is longer
    local m2 = tiny_gpt2()
    PT.attach(m2, { num_virtual_tokens = 2, init = "text", init_text = "xyz" })
    local P2 = m2.prompt_encoder.default.embedding.weight:totable()
    assert.are.same(W[("x"):byte() + 1], P2[1])
    assert.are.same(W[("y"):byte() + 1], P2[2])
  end)

  it("sample_vocab draws vocabulary rows, and a saved config recreates the prompt", function()
    local m = tiny_gpt2()
    ft.manual_seed(3)
    PT.attach(m, { num_virtual_tokens = 6, init = "sample_vocab" })
    local config = A.get(m, "default").config
    local W = wte(m).weight:totable()
    local P = m.prompt_encoder.default.embedding.weight:totable()
    assert.are.equal(6, #config.init_token_ids)
    for i, id in ipairs(config.init_token_ids) do assert.are.same(W[id], P[i]) end
    local again = tiny_gpt2()
    PT.attach(again, ft.json.decode(ft.json.encode(config)))
    assert.are.same(P, again.prompt_encoder.default.embedding.weight:totable())
  end)

  it("generates with the prompt: greedy with the cache equals full forwards over cat(prompt, ids)", function()
    local m = tiny_gpt2()
    PT.attach(m, { num_virtual_tokens = 4, init = "text", init_text = "Q: " })
    local prompt = m.prompt_encoder.default.embedding.weight
    local start = ids_of({ { 85, 105, 102 } })
    local got = m:generate(start, { max_new_tokens = 6 })
    local seq = start:totable()[1]
    ft.no_grad(function()
      for _ = 1, 6 do
        local ids = ids_of({ seq })
        local embeds = ft.cat({ prompt:reshape(1, 4, -1), wte(m)(ids) }, 2)
        local logits = class_forward(m)(m, nil, { inputs_embeds = embeds }).logits
        seq[#seq + 1] = logits:select(2, logits:size(2)):argmax(2):totable()[1]
      end
    end)
    H.assert_equal_ints(got, ids_of({ seq }), "generated ids")
    -- a left-padded batch row generates as the row alone
    local batch = ids_of({ { 1, 1, 85, 105, 102 }, { 72, 101, 108, 108, 111 } })
    local mask = ids_of({ { 0, 0, 1, 1, 1 }, { 1, 1, 1, 1, 1 } })
    local padded = m:generate(batch, { max_new_tokens = 6, attention_mask = mask })
    H.assert_equal_ints(padded[1]:narrow(1, 3, 9), got[1], "left-padded row")
  end)

  it("is skipped while adapters are disabled, and removal restores the base model", function()
    local m = tiny_gpt2()
    local ids = ids_of({ { 5, 90, 17, 200 } })
    local base = ft.no_grad(function() return m(ids).logits end)
    local base_keys = select(2, m:state_dict())
    PT.attach(m, { num_virtual_tokens = 3 })
    assert.are.equal(3, PT.num_virtual_tokens(m))
    local with = ft.no_grad(function() return m(ids).logits end)
    assert.is_true(max_diff(with, base) > 1e-4)
    A.registry(m).disabled = true
    assert.are.equal(0, max_diff(ft.no_grad(function() return m(ids).logits end), base))
    assert.are.equal(0, PT.num_virtual_tokens(m))
    A.registry(m).disabled = false
    require("ft.peft").delete_adapter(m, "default")
    assert.is_nil(rawget(m, "forward"))
    assert.is_nil(m.prompt_encoder)
    assert.are.same(base_keys, select(2, m:state_dict()))
    assert.are.equal(0, #A.registry(m).order)
    assert.are.equal(0, max_diff(ft.no_grad(function() return m(ids).logits end), base))
  end)

  it("concatenates two active prompts in the order they were added", function()
    local m = tiny_gpt2()
    PT.attach(m, { num_virtual_tokens = 2, name = "a" })
    PT.attach(m, { num_virtual_tokens = 3, name = "b" })
    A.registry(m).active.b = true
    local pa = m.prompt_encoder.a.embedding.weight
    local pb = m.prompt_encoder.b.embedding.weight
    local ids = ids_of({ { 5, 90, 17 } })
    local got = ft.no_grad(function() return m(ids).logits end)
    local want = ft.no_grad(function()
      local embeds = ft.cat({ pa:reshape(1, 2, -1), pb:reshape(1, 3, -1), wte(m)(ids) }, 2)
      return class_forward(m)(m, nil, { inputs_embeds = embeds }).logits:narrow(2, 6, 3)
    end)
    H.assert_close(got, want, 1e-6, "logits with two prompts")
    require("ft.peft").delete_adapter(m, "a")
    assert.is_truthy(rawget(m, "forward"))   -- b is still there
    assert.are.equal(3, PT.num_virtual_tokens(m))
  end)

  it("maps to and from PEFT's prompt-tuning files", function()
    local m = tiny_gpt2()
    PT.attach(m, { num_virtual_tokens = 4, init = "text", init_text = "Hi" })
    local config, tensors = PT.to_peft(m, "default")
    assert.are.same({ peft_type = "PROMPT_TUNING", task_type = "CAUSAL_LM", num_virtual_tokens = 4, token_dim = 32,
      num_transformer_submodules = 1, num_attention_heads = 2, num_layers = 2, prompt_tuning_init = "TEXT",
      prompt_tuning_init_text = "Hi", inference_mode = true }, config)
    local prompt = m.prompt_encoder.default.embedding.weight
    assert.are.same(prompt:totable(), tensors.prompt_embeddings:totable())
    local other = tiny_gpt2()
    local opts = PT.from_peft(ft.json.decode(ft.json.encode(config)))
    assert.are.same({ num_virtual_tokens = 4, init = "text", init_text = "Hi" }, opts)
    PT.attach(other, opts)
    local trained = prompt * 2
    PT.load_peft_weights(other, "default", { prompt_embeddings = trained })
    assert.are.same(trained:totable(), other.prompt_encoder.default.embedding.weight:totable())
    H.assert_mentions(H.error_of(PT.load_peft_weights, other, "default", { prompt_embeddings = ft.zeros(3, 32) }),
      "prompt_embeddings is [3,32], the adapter's prompt is [4,32]")
    H.assert_mentions(H.error_of(PT.from_peft, { peft_type = "LORA" }), "PROMPT_TUNING")
  end)

  it("rejects bad options with clear errors", function()
    local m = tiny_gpt2()
    H.assert_mentions(H.error_of(PT.attach, m, { num_virtual_tokens = 0 }), "num_virtual_tokens")
    H.assert_mentions(H.error_of(PT.attach, m, { init = "zeros" }), "init must be", "zeros")
    H.assert_mentions(H.error_of(PT.attach, m, { init = "text" }), "init_text")
    H.assert_mentions(H.error_of(PT.attach, m, { init_token_ids = { 1, 999 } }), "999", "1..256")
    PT.attach(m, {})
    H.assert_mentions(H.error_of(PT.attach, m, {}), "already has an adapter named 'default'")
    H.assert_mentions(H.error_of(PT.remove, m, "nope"), "nope")
    H.assert_mentions(H.error_of(function() m(ids_of({ { 1, 2 } }), { labels = ids_of({ { 1, 2, 3 } }) }) end),
      "labels [1,3] do not match the input [1,2]")
  end)
end)
