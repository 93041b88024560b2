-- models/gpt2_classifier.lua: the pooled features and logits against the body's hidden states
-- recomputed row by row without padding, with the pooling and the head's product done in plain
-- Lua; the loss against a cross-entropy computed in Lua; sharing the LM's body; saving and
-- loading through ft.models; and the errors.
local ft = require "ft"
local H = require "helpers"
local clf = require "ft.models.gpt2_classifier"

local TEXTS = { "Hello, world", "abc", "fortune cookies" }

local function tiny_lm(seed)
  ft.manual_seed(seed or 1)
  local lm = ft.models.new("gpt-s", { n_layer = 2, n_embd = 32, n_head = 2 })
  return lm:eval()
end

-- The body's hidden states of one unpadded text, as a Lua array of T rows of d numbers.
local function hidden_rows(model, text)
  local tok = ft.tokenizer.bytes()
  return ft.no_grad(function() return model.transformer(tok:encode(text):reshape(1, -1)) end):totable()[1]
end

local function pooled(rows, pooling)
  if pooling == "last" then return rows[#rows] end
  local out = {}
  for k = 1, #rows[1] do
    local s = 0
    for t = 1, #rows do s = s + rows[t][k] end
    out[k] = s / #rows
  end
  return out
end

-- features [d] -> logits [C] = W features with W = score.weight [C, d].
local function head(model, features)
  local W = model.score.weight:totable()
  local out = {}
  for c = 1, #W do
    local s = 0
    for k = 1, #features do s = s + W[c][k] * features[k] end
    out[c] = s
  end
  return out
end

local function padded_batch()
  return ft.tokenizer.bytes():encode_batch(TEXTS)   -- right padding, attention_mask
end

describe("GPT2ForSequenceClassification", function()
  for _, pooling in ipairs({ "last", "mean" }) do
    it(pooling .. " pooling matches the hidden states of each unpadded row", function()
      local model = clf.from_lm(tiny_lm(), 3, { pooling = pooling })
      model:eval()
      local b = padded_batch()
      assert.is_true(b.attention_mask:sum():item() < b.attention_mask:numel())   -- there is padding
      local out = ft.no_grad(function() return model(b.input_ids, { attention_mask = b.attention_mask }) end)
      assert.are.same({ #TEXTS, 3 }, out.logits:shape())
      assert.are.same({ #TEXTS, 32 }, out.features:shape())
      local features, logits = {}, {}
      for i, text in ipairs(TEXTS) do
        features[i] = pooled(hidden_rows(model, text), pooling)
        logits[i] = head(model, features[i])
      end
      H.assert_close(out.features, ft.tensor(features), 1e-5, "features")
      H.assert_close(out.logits, ft.tensor(logits), 1e-5, "logits")
    end)
  end

  it("pools the last position when there is no attention mask, as HF does", function()
    local model = clf.from_lm(tiny_lm(), 2)
    assert.are.equal("last", model.pooling)
    local out = ft.no_grad(function() return model(ft.tokenizer.bytes():encode(TEXTS[1])) end)
    local rows = hidden_rows(model, TEXTS[1])
    H.assert_close(out.logits, ft.tensor({ head(model, rows[#rows]) }), 1e-5, "logits")
  end)

  it("gives the mean cross-entropy of 1-based labels", function()
    local model = clf.from_lm(tiny_lm(), 3, { pooling = "mean" })
    local b = padded_batch()
    local labels = { 3, 1, 2 }
    local out = model(b.input_ids, { attention_mask = b.attention_mask,
      labels = ft.tensor(labels, { dtype = "int64" }) })
    local expected = 0
    for i, row in ipairs(out.logits:totable()) do
      local z = 0
      for _, v in ipairs(row) do z = z + math.exp(v) end
      expected = expected + (math.log(z) - row[labels[i]]) / #labels
    end
    assert.is_true(math.abs(out.loss:item() - expected) < 1e-5, ("loss %g, expected %g"):format(out.loss:item(), expected))
  end)

  it("shares the language model's body and trains it", function()
    local lm = tiny_lm()
    local model = clf.from_lm(lm, 4)
    model:train()
    assert.are.equal(lm.transformer, model.transformer)
    local b = padded_batch()
    local out = model(b.input_ids, { attention_mask = b.attention_mask,
      labels = ft.tensor({ 1, 2, 4 }, { dtype = "int64" }) })
    out.loss:backward()
    assert.is_not_nil(lm.transformer.h[1].attn.c_attn.weight.grad)
    assert.is_not_nil(model.score.weight.grad)
    local names = {}
    for name in model:named_parameters() do names[#names + 1] = name end
    assert.are.equal("transformer.wte.weight", names[1])
    assert.are.equal("score.weight", names[#names])
  end)

  it("builds from a config through ft.models and round-trips save_pretrained", function()
    local model = clf.from_lm(tiny_lm(), 3, { pooling = "mean" })
    model:eval()
    local dir = H.make_tmpdir("gpt2_classifier")
    ft.models.save_pretrained(model, dir)
    local config = ft.json.decode(H.read_bytes(dir .. "/config.json"))
    assert.are.same({ "GPT2ForSequenceClassification" }, config.architectures)
    assert.are.equal(3, config.num_labels)
    local loaded = ft.models.from_pretrained(dir)
    assert.are.equal("GPT2ForSequenceClassification", loaded.__name)
    assert.are.equal("mean", loaded.pooling)
    local b = padded_batch()
    local a = ft.no_grad(function() return model(b.input_ids, { attention_mask = b.attention_mask }).logits end)
    local c = ft.no_grad(function() return loaded(b.input_ids, { attention_mask = b.attention_mask }).logits end)
    H.assert_close(c, a, 0, "logits after reloading")
    local fresh = ft.models.new(config)
    assert.are.equal(3, fresh.num_labels)
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("reports bad configs and inputs", function()
    local config = ft.models.config("gpt-s", { n_layer = 1, n_embd = 16, n_head = 2 })
    local msg = H.error_of(function() clf.GPT2ForSequenceClassification(ft.models.copy_config(config,
      { classifier_pooling = "max" })) end)
    H.assert_mentions(msg, "classifier_pooling", "max")
    msg = H.error_of(function() clf.GPT2ForSequenceClassification(ft.models.copy_config(config, { num_labels = 0 })) end)
    H.assert_mentions(msg, "num_labels")
    local model = clf.GPT2ForSequenceClassification(ft.models.copy_config(config, { num_labels = 2 }))
    local ids = ft.tokenizer.bytes():encode_batch({ "ab", "cd" }).input_ids
    msg = H.error_of(function() model(ids, { attention_mask = ft.ones(2, 3) }) end)
    H.assert_mentions(msg, "attention_mask", "[2,2]", "[2,3]")
    msg = H.error_of(function() model(ids, { attention_mask = ft.tensor({ { 1, 1 }, { 0, 0 } }) }) end)
    H.assert_mentions(msg, "row 2", "no real token")
    msg = H.error_of(function() model(ids, { labels = ft.tensor({ 1, 2 }) }) end)
    H.assert_mentions(msg, "labels", "int64")
    msg = H.error_of(function() clf.from_lm({}, 2) end)
    H.assert_mentions(msg, "GPT2LMHeadModel")
  end)
end)
