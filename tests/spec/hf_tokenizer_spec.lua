-- ft.tokenizer.from_pretrained: HuggingFace tokenizer.json against HF's references.
--
-- Real tokenizers (Qwen3: byte-level BPE; Llama-2: SentencePiece-style BPE with byte
-- fallback) on the corpus of tests/fixtures/tokenizers, expected values from
-- @huggingface/tokenizers; small hand-made tokenizers for every component behaviour
-- (tests/fixtures/tokenizers/small/components.json.gz, made by tests/gen/node/tokenizer_components.mjs).
local ft = require "ft"
local H = require "helpers"

local FIX = H.fixture("tokenizers")

-- Every folder the spec makes, removed at the end.
local made = {}
local function tmpdir()
  local dir = H.make_tmpdir("hf_tokenizer")
  made[#made + 1] = dir
  return dir
end
teardown(function()
  for _, dir in ipairs(made) do ft.fs.remove_tree(dir) end
end)

-- A folder holding the model's tokenizer.json (gunzipped) and tokenizer_config.json.
local function model_dir(name)
  local dir = H.tokenizer_dir(name)
  made[#made + 1] = dir
  return dir
end
-- The JSON of a gzipped fixture.
local function read_json_gz(path)
  local dir = tmpdir()
  local ok, out = H.run(("gzip -dc %s > %s"):format(H.quote(path), H.quote(dir .. "/fixture.json")))
  assert(ok, out)
  return ft.json.read(dir .. "/fixture.json")
end

-- A folder with the given tokenizer.json text (and optional tokenizer_config.json table).
local function json_dir(json, config)
  local dir = tmpdir()
  H.write_bytes(dir .. "/tokenizer.json", json)
  if config then H.write_bytes(dir .. "/tokenizer_config.json", ft.json.encode(config)) end
  return dir
end

local plus1 = H.ids_plus1

local function ids_of(t) return t:totable() end

local function same_list(actual, expected, what)
  if #actual ~= #expected then
    error(("%s: %d ids, expected %d\n  got      %s\n  expected %s"):format(what, #actual, #expected,
      table.concat(actual, ","), table.concat(expected, ",")), 2)
  end
  for i = 1, #expected do
    if actual[i] ~= expected[i] then
      error(("%s: element %d is %s, expected %s\n  got      %s\n  expected %s"):format(what, i, tostring(actual[i]),
        tostring(expected[i]), table.concat(actual, ","), table.concat(expected, ",")), 2)
    end
  end
end

-- The tokenizer.json of a small BPE (chars a..e, merges a b -> ab, ab c -> abc) with parts.
local function small_json(parts)
  local vocab = { ["<unk>"] = 0, a = 1, b = 2, c = 3, d = 4, e = 5, ab = 6, abc = 7, [" "] = 8 }
  local t = {
    version = "1.0", truncation = ft.json.null, padding = ft.json.null, added_tokens = ft.json.array({}),
    normalizer = ft.json.null, pre_tokenizer = ft.json.null, post_processor = ft.json.null, decoder = ft.json.null,
    model = { type = "BPE", dropout = ft.json.null, unk_token = "<unk>", continuing_subword_prefix = ft.json.null,
              end_of_word_suffix = ft.json.null, fuse_unk = false, byte_fallback = false, vocab = vocab,
              merges = ft.json.array({ "a b", "ab c" }) },
  }
  for k, v in pairs(parts or {}) do t[k] = v end
  return ft.json.encode(t)
end

local function load_error(json)
  return H.error_of(ft.tokenizer.from_pretrained, json_dir(json))
end

for _, name in ipairs({ "qwen3", "llama2" }) do
  describe("ft.tokenizer.from_pretrained " .. name, function()
    local expected = ft.json.read(FIX .. "/" .. name .. "_expected.json")
    local tok = ft.tokenizer.from_pretrained(model_dir(name))

    it("has HF's vocabulary size", function()
      assert.equal(expected.vocab_size, tok.vocab_size)
    end)

    it("encodes and decodes every corpus text as " .. expected.reference, function()
      for i, c in ipairs(expected.cases) do
        local what = ("case %d %q"):format(i, c.text:sub(1, 40))
        local ids = tok:encode(c.text)
        assert.equal("int64", ids:dtype())
        same_list(ids_of(ids), plus1(c.ids), what .. " ids")
        local plain = ids_of(tok:encode(c.text, { add_special_tokens = false }))
        same_list(plain, plus1(c.ids_plain), what .. " ids_plain")
        local tokens = {}
        for j, id in ipairs(plain) do tokens[j] = tok:id_to_token(id) end
        same_list(tokens, c.tokens, what .. " tokens")
        same_list(tok:tokenize(c.text), c.tokens, what .. " tokenize")
        local full = plus1(c.ids)
        assert.equal(c.decoded, tok:decode(full), what .. " decoded")
        assert.equal(c.decoded_skip, tok:decode(full, { skip_special_tokens = true }), what .. " decoded_skip")
        assert.equal(c.decoded, tok:decode(ids), what .. " decoded from the tensor")
      end
    end)

    it("maps tokens to ids and back", function()
      for token, id in pairs(expected.token_to_id) do
        assert.equal(id + 1, tok:token_to_id(token), token)
        assert.equal(token, tok:id_to_token(id + 1), token)
      end
      assert.is_nil(tok:token_to_id("no such token, surely"))
      assert.is_nil(tok:id_to_token(tok.vocab_size + 1))
      assert.is_nil(tok:id_to_token(0))
    end)
  end)
end

describe("ft.tokenizer.from_pretrained configs", function()
  local qwen = ft.tokenizer.from_pretrained(model_dir("qwen3"))
  local llama = ft.tokenizer.from_pretrained(model_dir("llama2"))

  it("reads the special tokens, chat template and limits of tokenizer_config.json", function()
    assert.equal(qwen:token_to_id("<|im_end|>"), qwen.eos_id)
    assert.equal(qwen:token_to_id("<|endoftext|>"), qwen.pad_id)
    assert.is_nil(qwen.bos_id)
    assert.equal("string", type(qwen.chat_template))
    assert.truthy(qwen.chat_template:find("im_start", 1, true))
    assert.equal(131072, qwen.model_max_length)
    assert.equal(2, llama.bos_id)       -- <s> is HF id 1
    assert.equal(3, llama.eos_id)
    assert.is_nil(llama.pad_id)
    assert.is_nil(llama.model_max_length)   -- 1e30 in the config: no limit
    assert.is_true(qwen:is_special(qwen.eos_id))
    assert.is_false(qwen:is_special(qwen:token_to_id("Hello")))
    assert.equal(0, qwen:num_special_tokens_to_add())
    assert.equal(1, llama:num_special_tokens_to_add())
    local added = qwen:added_tokens()
    assert.equal(26, #added)
    assert.same({ id = 151644, content = "<|endoftext|>", special = true }, added[1])
  end)

  it("is reachable from the byte tokenizer's module and from ft.text.hf_tokenizer", function()
    assert.equal("function", type(require("ft.text.hf_tokenizer").from_pretrained))
    assert.equal("function", type(ft.tokenizer.from_pretrained))
    assert.truthy(tostring(qwen):find("vocab_size = 151669", 1, true))
  end)

  it("adds the pair template's tokens for text_pair", function()
    local a = ids_of(llama:encode("Hello", { add_special_tokens = false }))
    local b = ids_of(llama:encode("world", { add_special_tokens = false }))
    local pair = ids_of(llama:encode("Hello", { text_pair = "world" }))
    local want = { 2 }
    for _, v in ipairs(a) do want[#want + 1] = v end
    want[#want + 1] = 2
    for _, v in ipairs(b) do want[#want + 1] = v end
    same_list(pair, want, "pair")
  end)

  it("pads and truncates batches", function()
    local b = qwen:encode_batch({ "Hello world", "Hi" })
    local long = ids_of(qwen:encode("Hello world"))
    local short = ids_of(qwen:encode("Hi"))
    assert.same({ 2, #long }, b.input_ids:shape())
    same_list(b.input_ids:totable()[1], long, "row 1")
    assert.same({ short[1], qwen.pad_id }, b.input_ids:totable()[2])
    assert.same({ { 1, 1 }, { 1, 0 } }, b.attention_mask:totable())
    local left = qwen:encode_batch({ "Hello world", "Hi" }, { padding_side = "left" })
    assert.same({ qwen.pad_id, short[1] }, left.input_ids:totable()[2])
    assert.same({ 0, 1 }, left.attention_mask:totable()[2])
    assert.same({ "Hello world", "Hi" }, qwen:decode_batch(left.input_ids, { attention_mask = left.attention_mask }))
    -- Truncation keeps the special tokens: <s> and the first ids of the text.
    local t = llama:encode_batch({ "The quick brown fox jumps", "Hi" }, { truncation = true, max_length = 3, pad_id = 1 })
    local full = ids_of(llama:encode("The quick brown fox jumps"))
    assert.same({ full[1], full[2], full[3] }, t.input_ids:totable()[1])
    assert.equal(2, t.input_ids:totable()[2][1])
    local one = ids_of(llama:encode("The quick brown fox jumps", { max_length = 2 }))
    assert.same({ full[1], full[2] }, one)
    -- padding = "max_length" and pad_to_multiple_of.
    local m = qwen:encode_batch({ "Hi" }, { padding = "max_length", max_length = 5 })
    assert.same({ 1, 5 }, m.input_ids:shape())
    assert.same({ { 1, 0, 0, 0, 0 } }, m.attention_mask:totable())
    assert.same({ 1, 8 }, qwen:encode_batch({ "Hello world" }, { pad_to_multiple_of = 8 }).input_ids:shape())
    -- No padding: rows must agree; a tokenizer without a pad token needs pad_id.
    assert.same({ 2, 1 }, qwen:encode_batch({ "Hi", "Hi" }, { padding = false }).input_ids:shape())
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "Hello world", "Hi" }, { padding = false }), "padding = false")
    H.assert_mentions(H.error_of(llama.encode_batch, llama, { "Hello world", "Hi" }), "no pad token", "pad_id")
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "Hi", 3 }), "entry 2", "not a string")
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, {}), "empty")
    H.assert_mentions(H.error_of(llama.encode, llama, "Hello", { max_length = 0 }), "max_length")
  end)

  it("decodes tensors and Lua arrays, and rejects ids outside the vocabulary", function()
    local ids = llama:encode("Hello")
    assert.equal("<s> Hello", llama:decode(ids))
    assert.equal("Hello", llama:decode(ids:totable(), { skip_special_tokens = true }))
    H.assert_mentions(H.error_of(llama.decode, llama, { 2, 0 }), "id 0", "position 2")
    H.assert_mentions(H.error_of(llama.decode, llama, { 32001 }), "32001", "not in the vocabulary")
    H.assert_mentions(H.error_of(llama.decode, llama, { 1.5 }), "position 1")
    H.assert_mentions(H.error_of(llama.decode, llama, ft.ones({ 2, 2 }, { dtype = "int64" })), "[2,2]", "decode_batch")
    H.assert_mentions(H.error_of(llama.decode, llama, ft.ones({ 2 })), "int64")
    assert.equal("", llama:decode({}))
  end)

  it("refuses text that is not UTF-8, naming the byte offset", function()
    H.assert_mentions(H.error_of(qwen.encode, qwen, "ok\255 then"), "not valid UTF-8", "byte 2")
    H.assert_mentions(H.error_of(qwen.encode, qwen, "abc\xC3"), "byte 3")
    H.assert_mentions(H.error_of(qwen.encode, qwen, "\xED\xA0\x80"), "byte 0")   -- a surrogate
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "fine", "bad\xC0\xAF" }), "byte 3", "entry 2")
    H.assert_mentions(H.error_of(qwen.encode, qwen, 42), "string")
  end)

  it("checks its options strictly", function()
    H.assert_mentions(H.error_of(qwen.encode, qwen, "x", { add_special_token = true }), "add_special_token",
      "did you mean 'add_special_tokens'")
    H.assert_mentions(H.error_of(qwen.decode, qwen, { 1 }, { skip_special = true }), "skip_special_tokens")
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "x" }, { paddding = true }), "did you mean 'padding'")
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "x" }, { padding_side = "middle" }), "middle")
    H.assert_mentions(H.error_of(qwen.encode_batch, qwen, { "x" }, { padding = "yes" }), "padding")
    H.assert_mentions(H.error_of(ft.tokenizer.from_pretrained, "/nonexistent/dir"), "no tokenizer.json", "/nonexistent/dir")
    H.assert_mentions(H.error_of(ft.tokenizer.from_pretrained, model_dir("qwen3"), { split = true }), "split_special_tokens")
  end)

  it("tokenizes special tokens as text with split_special_tokens", function()
    local split = ft.tokenizer.from_pretrained(model_dir("qwen3"), { split_special_tokens = true })
    assert.same({ qwen.eos_id }, ids_of(qwen:encode("<|im_end|>")))
    assert.is_true(#ids_of(split:encode("<|im_end|>")) > 1)
    assert.equal("<|im_end|>", split:decode(split:encode("<|im_end|>")))
  end)
end)

describe("ft.tokenizer components against HF's references", function()
  local fixture = read_json_gz(FIX .. "/small/components.json.gz")

  it("covers every behaviour", function()
    local names = {}
    for _, c in ipairs(fixture.cases) do names[#names + 1] = c.name end
    local all = table.concat(names, "\n")
    for _, want in ipairs({ "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Replace string", "Replace regex", "Prepend",
                            "Strip", "Split regex Removed", "Split regex Isolated", "MergedWithPrevious",
                            "MergedWithNext", "Contiguous", "invert=true", "Split string", "ByteLevel use_regex=false",
                            "add_prefix_space=true", "prepend_scheme=always", "prepend_scheme=first",
                            "prepend_scheme=never", "split=true", "individual_digits=true", "byte_fallback",
                            "TemplateProcessing", "decoder ByteFallback", "decoder Strip", "lstrip",
                            "single_word", "normalized" }) do
      assert.truthy(all:find(want, 1, true), "no case for " .. want)
    end
  end)

  for _, c in ipairs(fixture.cases) do
    it(c.name, function()
      local tok = ft.tokenizer.from_pretrained(json_dir(ft.json.encode(c.tokenizer),
                                                         { clean_up_tokenization_spaces = false }))
      for _, e in ipairs(c.expected) do
        if e.text then
          local what = ("%q (%s)"):format(e.text, e.reference)
          same_list(ids_of(tok:encode(e.text)), plus1(e.ids), what .. " ids")
          local plain = ids_of(tok:encode(e.text, { add_special_tokens = false }))
          same_list(plain, plus1(e.ids_plain), what .. " ids_plain")
          local tokens = {}
          for j, id in ipairs(plain) do tokens[j] = tok:id_to_token(id) end
          same_list(tokens, e.tokens, what .. " tokens")
          assert.equal(e.decoded, tok:decode(plus1(e.ids)), what .. " decoded")
          assert.equal(e.decoded_skip, tok:decode(plus1(e.ids), { skip_special_tokens = true }), what .. " decoded_skip")
        else
          local what = ("decode {%s} (%s)"):format(table.concat(e.ids, ","), e.reference)
          assert.equal(e.decoded, tok:decode(plus1(e.ids)), what)
          assert.equal(e.decoded_skip, tok:decode(plus1(e.ids), { skip_special_tokens = true }), what)
        end
      end
    end)
  end
end)

describe("ft.tokenizer tokenizer.json errors", function()
  it("loads a small hand-written tokenizer", function()
    local tok = ft.tokenizer.from_pretrained(json_dir(small_json()))
    assert.same({ 8 }, ids_of(tok:encode("abc")))             -- a b c -> ab c -> abc
    assert.same({ 7, 5 }, ids_of(tok:encode("abd")))
    assert.same({ 1 }, ids_of(tok:encode("z")))               -- unk
    assert.equal("abc", tok:decode({ 8 }))
  end)

  it("applies tokenizer.json's truncation and padding, and truncation_side", function()
    local tok = ft.tokenizer.from_pretrained(json_dir(small_json({
      truncation = { max_length = 2, strategy = "LongestFirst", stride = 0, direction = "Right" },
      padding = { strategy = "BatchLongest", direction = "Left", pad_to_multiple_of = ft.json.null, pad_id = 8,
                  pad_type_id = 0, pad_token = " " } })))
    assert.same({ 8, 5 }, ids_of(tok:encode("abcdee")))       -- abc d e e, cut after 2
    assert.same({ 8, 5, 6, 6 }, ids_of(tok:encode("abcdee", { max_length = 4 })))
    local b = tok:encode_batch({ "abc", "abcd" })
    assert.same({ { 9, 8 }, { 8, 5 } }, b.input_ids:totable())   -- pad " " (id 9) on the left
    assert.same({ { 0, 1 }, { 1, 1 } }, b.attention_mask:totable())
    local left = ft.tokenizer.from_pretrained(json_dir(small_json(), { truncation_side = "left" }))
    assert.same({ 6, 6 }, ids_of(left:encode("abcdee", { max_length = 2 })))
  end)

  it("names an unsupported component, the file and its JSON path", function()
    local msg = load_error(small_json({ normalizer = { type = "Precompiled", precompiled_charsmap = "" } }))
    H.assert_mentions(msg, "tokenizer.json", "normalizer.type", "Precompiled", "unsupported normalizer")
    msg = load_error(small_json({ pre_tokenizer = { type = "Sequence", pretokenizers = ft.json.array({
      { type = "Digits", individual_digits = true }, { type = "UnicodeScripts" } }) } }))
    H.assert_mentions(msg, "pre_tokenizer.pretokenizers[1].type", "UnicodeScripts")
    msg = load_error(small_json({ decoder = { type = "CTC", pad_token = "<pad>" } }))
    H.assert_mentions(msg, "decoder.type", "CTC")
    msg = load_error(small_json({ post_processor = { type = "Nope" } }))
    H.assert_mentions(msg, "post_processor.type", "Nope")
    msg = load_error(small_json({ model = { type = "Unigram", vocab = ft.json.array({}) } }))
    H.assert_mentions(msg, "model.type", "Unigram")
  end)

  it("names an unsupported or wrong option", function()
    H.assert_mentions(load_error(small_json({ pre_tokenizer = { type = "Digits", individual_digits = true, extra = 1 } })),
      "pre_tokenizer.extra", "unsupported option")
    H.assert_mentions(load_error(small_json({ pre_tokenizer = { type = "Split", pattern = { Regex = "a" },
      behavior = "Sideways", invert = false } })), "pre_tokenizer.behavior", "Sideways")
    H.assert_mentions(load_error(small_json({ pre_tokenizer = { type = "Split", pattern = { Regex = "(" },
      behavior = "Isolated", invert = false } })), "pre_tokenizer.pattern.Regex", "invalid pattern")
    H.assert_mentions(load_error(small_json({ pre_tokenizer = { type = "Split", pattern = { Glob = "*" },
      behavior = "Isolated", invert = false } })), "pre_tokenizer.pattern.Glob")
    H.assert_mentions(load_error(small_json({ normalizer = { type = "Strip", strip_left = "yes", strip_right = true } })),
      "normalizer.strip_left", "boolean")
    H.assert_mentions(load_error(small_json({ pre_tokenizer = { type = "Metaspace", replacement = "ab" } })),
      "pre_tokenizer.replacement", "one character")
    local json = small_json():gsub('"dropout":null', '"dropout":0.1')
    H.assert_mentions(load_error(json), "model.dropout", "not supported")
  end)

  it("refuses malformed files, naming the field", function()
    H.assert_mentions(load_error(small_json():sub(1, 100)), "invalid JSON")
    H.assert_mentions(load_error("[1, 2]"), "expected an object")
    H.assert_mentions(load_error(small_json():gsub('"model":', '"modell":')), "modell")
    H.assert_mentions(load_error('{"version": "1.0"}'), "model", "missing")
    H.assert_mentions(load_error(small_json():gsub('"ab":6', '"ab":"6"')), 'model.vocab["ab"]', "expected an id")
    H.assert_mentions(load_error(small_json():gsub('"ab":6', '"ab":-1')), 'model.vocab["ab"]')
    H.assert_mentions(load_error(small_json():gsub('"ab":6', '"ab":99999999999')), 'model.vocab["ab"]')
    H.assert_mentions(load_error(small_json():gsub('"ab":6', '"ab":5')), "id 5 is used by another token")
    H.assert_mentions(load_error(small_json():gsub('"a b"', '"a z"')), "model.merges[0]", '"z"', "not in the vocabulary")
    H.assert_mentions(load_error(small_json():gsub('"a b"', '"a b c"')), "model.merges[0]")
    H.assert_mentions(load_error(small_json():gsub('"merges":%[', '"merges":[7,')), "model.merges[0]")
    H.assert_mentions(load_error(small_json():gsub('"unk_token":"<unk>"', '"unk_token":"<none>"')),
      "model.unk_token", "<none>")
    H.assert_mentions(load_error(small_json({ added_tokens = ft.json.array({ { id = 3, content = "<x>", special = true } }) })),
      "added_tokens[0].id", "next free id, 9")
    H.assert_mentions(load_error(small_json({ added_tokens = ft.json.array({ { id = 9, content = "a", special = true } }) })),
      "added_tokens[0].id", "already has id 1")
    H.assert_mentions(load_error(small_json({ added_tokens = ft.json.array({ { id = 9 } }) })), "added_tokens[0].content", "missing")
    H.assert_mentions(load_error(small_json({ version = "2.0" })), "version")
    H.assert_mentions(load_error("{\"model\": \"\255\"}"), "not valid UTF-8", "byte")
    H.assert_mentions(load_error(small_json({ post_processor = { type = "TemplateProcessing",
      single = ft.json.array({ { SpecialToken = { id = "<s>", type_id = 0 } } }), pair = ft.json.array({}),
      special_tokens = {} } })), "post_processor.single[0].SpecialToken.id", "not in special_tokens")
  end)
end)

describe("ft.tokenizer.bytes has the same method names", function()
  local tok = ft.tokenizer.bytes()

  it("maps single bytes with token_to_id / id_to_token", function()
    assert.equal(98, tok:token_to_id("a"))
    assert.is_nil(tok:token_to_id("ab"))
    assert.equal("a", tok:id_to_token(98))
    assert.is_nil(tok:id_to_token(0))
    assert.is_nil(tok.bos_id)
    assert.is_nil(tok.chat_template)
  end)

  it("takes the HF tokenizer's options", function()
    assert.same({ 105, 102 }, tok:encode("hello", { max_length = 2 }):totable())
    assert.same({ 105, 102, 109 }, tok:encode("hel", { add_special_tokens = true }):totable())
    assert.equal("hi", tok:decode({ 105, 106 }, { skip_special_tokens = true }))
    local b = tok:encode_batch({ "abc", "a" }, { max_length = 2 })
    assert.same({ { 98, 99 }, { 98, 1 } }, b.input_ids:totable())
    H.assert_mentions(H.error_of(tok.encode_batch, tok, { "ab", "a" }, { padding = false }), "padding = false")
    H.assert_mentions(H.error_of(tok.encode, tok, "x", { max_lenght = 2 }), "did you mean 'max_length'")
  end)
end)
