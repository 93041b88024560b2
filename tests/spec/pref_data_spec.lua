-- Preference data (ft.pref.load_pairs, load_unpaired, collate_pairs, collate_unpaired, batches):
-- the token ids of the records in tests/fixtures/pref_data/*.jsonl against
-- tests/fixtures/pref_data/expected.json (tests/gen/pref_data.mjs: TRL's tokenization and
-- truncation rules on @huggingface/tokenizers and @huggingface/jinja) for the byte tokenizer,
-- Qwen3's tokenizer and its chat template, and a Llama-family tokenizer with a bos and a
-- Llama-2 chat template; truncation worked out by hand; padded batches and their masks; and
-- every malformed record, named by file, line and key.
local ft = require "ft"
local H = require "helpers"
local pref = ft.pref

local expected = ft.json.read(H.fixture("pref_data/expected.json"))
local qwen_dir, llama_dir = H.tokenizer_dir("qwen3"), H.tokenizer_dir("llama2")
teardown(function()
  ft.fs.remove_tree(qwen_dir)
  ft.fs.remove_tree(llama_dir)
end)
local tokenizers = {
  bytes = ft.tokenizer.bytes(),
  qwen3 = ft.tokenizer.from_pretrained(qwen_dir),
  llama2 = ft.tokenizer.from_pretrained(llama_dir),
}
local bytes = tokenizers.bytes

local function data(name) return H.fixture("pref_data/" .. name) end

-- Lua array a equal to b, element by element.
local function assert_ids(got, want, what)
  assert(type(got) == "table", what .. ": expected a list of ids, got " .. type(got))
  for i = 1, math.max(#got, #want) do
    if got[i] ~= want[i] then
      error(("%s: %d ids, expected %d; they differ at %d (%s, expected %s)"):format(what, #got, #want, i,
        tostring(got[i]), tostring(want[i])), 2)
    end
  end
end

local function plus1(list) return H.ids_plus1(list) end

-- The options of a reference case for load_pairs / load_unpaired.
local function options_of(c)
  local opts = {}
  for k, v in pairs(c.opts) do opts[k] = v end
  if opts.chat_template_file then
    opts.chat_template = H.read_bytes(H.fixture(opts.chat_template_file)):gsub("\n$", "")
    opts.chat_template_file = nil
  end
  return opts
end

-- Byte ids (1-based) of a string.
local function byte_ids(s)
  local out = {}
  for i = 1, #s do out[i] = s:byte(i) + 1 end
  return out
end
local EOT = ft.text.EOT_ID

local function concat(...)
  local out = {}
  for _, t in ipairs({ ... }) do table.move(t, 1, #t, #out + 1, out) end
  return out
end

describe("ft.pref.load_pairs and load_unpaired against the reference", function()
  it("give TRL's prompt and completion ids for every case", function()
    assert.is_true(#expected.cases >= 20, "the fixture has the cases")
    for _, c in ipairs(expected.cases) do
      local tok = tokenizers[c.tokenizer]
      local load = c.loader == "pairs" and pref.load_pairs or pref.load_unpaired
      local examples, info = load(data(c.file), tok, options_of(c))
      assert.equal(#c.examples, #examples, c.name)
      assert.equal(#examples, info.records, c.name)
      local cut = 0
      for i, want in ipairs(c.examples) do
        local got, what = examples[i], ("%s line %d"):format(c.name, want.line)
        assert.equal(data(c.file) .. ":" .. want.line, got.where, what)
        assert_ids(got.prompt_ids, plus1(want.prompt_ids), what .. " prompt_ids")
        for _, k in ipairs({ "chosen_ids", "rejected_ids", "completion_ids" }) do
          if want[k] then assert_ids(got[k], plus1(want[k]), what .. " " .. k) end
        end
        assert.equal(want.truncated, got.truncated, what .. " truncated")
        if want.truncated then cut = cut + 1 end
        if c.loader == "unpaired" then assert.equal(want.label, got.label, what .. " label") end
        assert.equal(type(c.file:find("chat")) == "number" and "chat" or "text", got.kind, what)
      end
      if not c.opts.max_length and not c.opts.max_completion_length then assert.equal(0, cut, c.name) end
    end
  end)

  it("cover the branches the cases are there for", function()
    local seen = {}
    for _, c in ipairs(expected.cases) do
      seen[c.name] = c
    end
    -- a merged boundary token: Qwen3 puts the prompt's final space into the completion's first
    -- token (" Bonjour"); digits stand alone, so "A: " + "4" keeps the space in the prompt
    local tok = tokenizers.qwen3
    local merged = seen["qwen3/pairs_text"].examples[4]
    assert.equal(#tok:encode("Dites « bonjour » à Zoë "):totable() - 1, #merged.prompt_ids)
    local digits = seen["qwen3/pairs_text"].examples[2]
    assert.equal(#tok:encode("Q: What is 2+2?\nA: "):totable(), #digits.prompt_ids)
    -- the Llama tokenizer's bos opens text prompts and survives keep_end cuts
    for _, name in ipairs({ "llama2/pairs_text", "llama2/pairs_text/keep_end" }) do
      for _, e in ipairs(seen[name].examples) do assert.equal(tokenizers.llama2.bos_id, e.prompt_ids[1] + 1, name) end
    end
    -- both truncation steps happen somewhere
    local prompt_cut, completion_cut = false, false
    for _, e in ipairs(seen["bytes/pairs_text/keep_end"].examples) do
      prompt_cut = prompt_cut or #e.prompt_ids == 5
      completion_cut = completion_cut or #e.rejected_ids == 7
    end
    assert.is_true(prompt_cut and completion_cut)
  end)

  it("take a list of records as well as a path, and name record i", function()
    local recs = { { prompt = "Hello", chosen = " there", rejected = " you" } }
    local ex = pref.load_pairs(recs, bytes)
    assert.equal("record 1", ex[1].where)
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("Hello")), "prompt")
    assert_ids(ex[1].chosen_ids, concat(byte_ids(" there"), { EOT }), "chosen")
    assert_ids(ex[1].rejected_ids, concat(byte_ids(" you"), { EOT }), "rejected")
    local msg = H.error_of(pref.load_pairs, { recs[1], { prompt = "a", chosen = 1, rejected = "b" } }, bytes)
    H.assert_mentions(msg, "ft.pref.load_pairs", "record 2", "\"chosen\"", "got a number")
  end)

  it("end text completions with one eos, also when the text ends with it", function()
    local tok = tokenizers.qwen3
    local eos = tok.eos_id
    local ex = pref.load_pairs({ { prompt = "Say yes:", chosen = " yes<|im_end|>", rejected = " no" } }, tok)
    local c, r = ex[1].chosen_ids, ex[1].rejected_ids
    assert_ids(c, concat(tok:encode(" yes", { add_special_tokens = false }):totable(), { eos }), "chosen")
    assert_ids(r, concat(tok:encode(" no", { add_special_tokens = false }):totable(), { eos }), "rejected")
    ex = pref.load_pairs({ { prompt = "Say yes:", chosen = " yes\0", rejected = " no" } }, bytes)
    assert_ids(ex[1].chosen_ids, concat(byte_ids(" yes"), { EOT }), "bytes")
  end)

  it("render chats so that prompt + completion is the whole conversation, masked after the prompt", function()
    local tok = tokenizers.qwen3
    local records = ft.pref.read_jsonl(data("pairs_chat.jsonl"))
    local ex = pref.load_pairs(data("pairs_chat.jsonl"), tok)
    for i, r in ipairs(records) do
      local all = {}
      for _, m in ipairs(r.prompt) do all[#all + 1] = m end
      all[#all + 1] = r.chosen[1]
      local whole = tok:apply_chat_template(all):totable()
      assert_ids(concat(ex[i].prompt_ids, ex[i].chosen_ids), whole, "record " .. i)
      assert_ids(ex[i].prompt_ids, tok:apply_chat_template(r.prompt, { add_generation_prompt = true }):totable(),
        "prompt " .. i)
      local tail = ex[i].chosen_ids
      assert.equal("<|im_end|>", tok:id_to_token(tail[#tail - 1]), "the end of turn trains")
    end
  end)
end)

describe("truncation", function()
  local rec = { { prompt = "abcdefghij", chosen = "xyz", rejected = "uvwxy" } }
  -- prompt: EOT + 10 bytes = 11 tokens; chosen 3 + EOT = 4; rejected 5 + EOT = 6

  it("cuts the prompt to max_prompt_length from the left, keeping the leading EOT", function()
    local ex, info = pref.load_pairs(rec, bytes, { max_length = 10, max_prompt_length = 3 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("ij")), "keep_end")
    assert_ids(ex[1].chosen_ids, concat(byte_ids("xyz"), { EOT }), "chosen kept")
    assert_ids(ex[1].rejected_ids, concat(byte_ids("uvwxy"), { EOT }), "rejected kept")
    assert.is_true(ex[1].truncated)
    assert.equal(1, info.truncated_prompts)
    assert.equal(0, info.truncated_completions)
    ex = pref.load_pairs(rec, bytes, { max_length = 10, max_prompt_length = 3, truncation_mode = "keep_start" })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("ab")), "keep_start")
  end)

  it("without max_prompt_length leaves the prompt the room the longer completion leaves", function()
    local ex = pref.load_pairs(rec, bytes, { max_length = 10 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("hij")), "10 - 6 tokens")
    ex = pref.load_pairs(rec, bytes, { max_length = 17 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("abcdefghij")), "fits: nothing cut")
    assert.is_false(ex[1].truncated)
  end)

  it("then cuts completions at their end to max_length - max_prompt_length", function()
    local ex, info = pref.load_pairs(rec, bytes, { max_length = 8, max_prompt_length = 4 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("hij")), "prompt")
    assert_ids(ex[1].chosen_ids, concat(byte_ids("xyz"), { EOT }), "chosen fits in 4")
    assert_ids(ex[1].rejected_ids, byte_ids("uvwx"), "rejected loses its end")
    assert.equal(1, info.truncated_completions)
  end)

  it("cuts completions to max_length - max_prompt_length also when the prompt is shorter (TRL's rule)", function()
    -- prompt EOT "ab" (3) is within max_prompt_length 5, but 3 + 9 > 10: the completion keeps 10 - 5
    local ex = pref.load_pairs({ { prompt = "ab", chosen = "cccccccc", rejected = "y" } }, bytes,
      { max_length = 10, max_prompt_length = 5 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("ab")), "prompt kept")
    assert_ids(ex[1].chosen_ids, byte_ids("ccccc"), "chosen")
    assert_ids(ex[1].rejected_ids, concat(byte_ids("y"), { EOT }), "rejected")
  end)

  it("cuts completions to max_completion_length first", function()
    local ex = pref.load_pairs(rec, bytes, { max_completion_length = 2 })
    assert_ids(ex[1].chosen_ids, byte_ids("xy"), "chosen")
    assert_ids(ex[1].rejected_ids, byte_ids("uv"), "rejected")
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("abcdefghij")), "prompt untouched")
  end)

  it("errors when a completion leaves no room for the prompt and max_prompt_length is not set", function()
    local msg = H.error_of(pref.load_pairs, rec, bytes, { max_length = 6 })
    H.assert_mentions(msg, "ft.pref.load_pairs: record 1: \"rejected\" has 6 tokens", "max_length = 6",
      "no room for the prompt", "max_prompt_length")
    local ex = pref.load_pairs(rec, bytes, { max_length = 6, max_prompt_length = 2 })
    assert_ids(ex[1].prompt_ids, concat({ EOT }, byte_ids("j")), "with max_prompt_length")
    assert_ids(ex[1].rejected_ids, byte_ids("uvwx"), "rejected cut to 6 - 2")
    msg = H.error_of(pref.load_unpaired, data("unpaired_text.jsonl"), bytes, { max_length = 7 })
    H.assert_mentions(msg, "unpaired_text.jsonl:1:", "\"completion\" has 7 tokens")
  end)

  it("checks the limits", function()
    H.assert_mentions(H.error_of(pref.load_pairs, rec, bytes, { max_prompt_length = 3 }),
      "max_prompt_length needs max_length")
    H.assert_mentions(H.error_of(pref.load_pairs, rec, bytes, { max_length = 8, max_prompt_length = 8 }),
      "max_prompt_length (8) must be below max_length (8)")
    H.assert_mentions(H.error_of(pref.load_pairs, rec, bytes, { max_length = 1 }), "max_length", ">= 2")
    H.assert_mentions(H.error_of(pref.load_pairs, rec, bytes, { max_length = 8, truncation_mode = "left" }),
      "truncation_mode", "'left'")
    H.assert_mentions(H.error_of(pref.load_pairs, rec, bytes, { max_completion_length = 0 }),
      "max_completion_length")
  end)
end)

describe("collation", function()
  local ex = pref.load_pairs(data("pairs_text.jsonl"), bytes)

  it("pads prompt + completion on the right, masking the completion only", function()
    local b = pref.collate_pairs(ex)
    local T = 0
    for _, e in ipairs(ex) do
      T = math.max(T, #e.prompt_ids + #e.chosen_ids, #e.prompt_ids + #e.rejected_ids)
    end
    for _, side in ipairs({ "chosen", "rejected" }) do
      local ids, mask, att = b[side .. "_ids"], b[side .. "_mask"], b[side .. "_attention_mask"]
      assert.same({ #ex, T }, ids:shape())
      assert.equal("int64", ids:dtype())
      assert.equal("float32", mask:dtype())
      assert.equal("int64", att:dtype())
      local rows, masks, atts = ids:totable(), mask:totable(), att:totable()
      for i, e in ipairs(ex) do
        local comp = e[side .. "_ids"]
        local n = #e.prompt_ids + #comp
        local want_ids, want_mask, want_att = concat(e.prompt_ids, comp), {}, {}
        for j = 1, T do
          if j > n then want_ids[j] = e.pad_id end
          want_mask[j] = (j > #e.prompt_ids and j <= n) and 1 or 0
          want_att[j] = j <= n and 1 or 0
        end
        assert_ids(rows[i], want_ids, side .. " row " .. i)
        assert_ids(masks[i], want_mask, side .. " mask " .. i)
        assert_ids(atts[i], want_att, side .. " attention " .. i)
      end
    end
    assert.same({ ex[1].where, ex[2].where, ex[3].where, ex[4].where }, b.where)
  end)

  it("takes pad_id and pad_to_multiple_of", function()
    local b = pref.collate_pairs({ ex[1], ex[2] }, { pad_id = 7, pad_to_multiple_of = 16 })
    assert.same({ 2, 32 }, b.chosen_ids:shape())
    local row = b.chosen_ids:totable()[1]
    assert.equal(7, row[32])
    -- the default: the tokenizer's pad id, recorded in the examples (Qwen3's <|endoftext|>)
    local q = pref.load_pairs(data("pairs_text.jsonl"), tokenizers.qwen3)
    assert.equal("<|endoftext|>", tokenizers.qwen3:id_to_token(q[1].pad_id))
    local qb = pref.collate_pairs(q)
    local T = qb.chosen_ids:size(2)
    assert.is_true(#q[1].prompt_ids + #q[1].chosen_ids < T)
    assert.equal(q[1].pad_id, qb.chosen_ids:totable()[1][T])
  end)

  it("gives ft.pref.logps a mask that counts the completion's tokens", function()
    local b = pref.collate_pairs(ex)
    local V = 256
    local function model(ids) return ft.zeros(ids:size(1), ids:size(2), V) end   -- uniform: log p = -log V
    local lp, n = pref.logps(model, b.chosen_ids, b.chosen_mask, { attention_mask = b.chosen_attention_mask })
    for i, e in ipairs(ex) do
      assert.equal(#e.chosen_ids, n:totable()[i])
      assert.is_true(math.abs(lp:totable()[i] + #e.chosen_ids * math.log(V)) < 1e-3)
    end
  end)

  it("collates KTO's examples with labels and the KL rows TRL pairs them with", function()
    local u = pref.load_unpaired(data("unpaired_text.jsonl"), bytes)
    local b = pref.collate_unpaired(u, { kl = true })
    assert.same({ 1, 0, 1 }, b.labels:totable())
    assert.equal("float32", b.labels:dtype())
    local ids, mask = b.ids:totable(), b.mask:totable()
    local kl, klm = b.kl_ids:totable(), b.kl_mask:totable()
    for i, e in ipairs(u) do
      local want = concat(e.prompt_ids, e.completion_ids)
      for j = 1, #want do
        assert.equal(want[j], ids[i][j])
        assert.equal(j > #e.prompt_ids and 1 or 0, mask[i][j])
      end
      local other = u[(i - 2) % #u + 1]
      local kwant = concat(e.prompt_ids, other.completion_ids)
      for j = 1, #kwant do
        assert.equal(kwant[j], kl[i][j], "kl row " .. i)
        assert.equal(j > #e.prompt_ids and 1 or 0, klm[i][j])
      end
    end
    assert.is_nil(pref.collate_unpaired(u).kl_ids)
    H.assert_mentions(H.error_of(pref.collate_unpaired, { u[1] }, { kl = true }), "at least 2 examples")
  end)

  it("cuts the KL rows to the examples' limits", function()
    local u = pref.load_unpaired({ { prompt = "abcdefgh", completion = "x", label = true },
      { prompt = "p", completion = "yyyyyy", label = false } }, bytes, { max_length = 10 })
    local b = pref.collate_unpaired(u, { kl = true })
    -- row 1: prompt EOT+8 bytes with completion "yyyyyy"+EOT (7): the prompt keeps 10 - 7 = 3
    local row = b.kl_ids:totable()[1]
    assert_ids({ table.unpack(row, 1, 10) }, concat({ EOT }, byte_ids("gh"), byte_ids("yyyyyy"), { EOT }), "kl row 1")
    assert.same({ 2, 10 }, b.kl_ids:shape())
  end)

  it("checks what it is given", function()
    H.assert_mentions(H.error_of(pref.collate_pairs, {}), "non-empty list of examples")
    H.assert_mentions(H.error_of(pref.collate_pairs, { { prompt_ids = { 1 }, chosen_ids = { 2 } } }),
      "example 1 has no rejected_ids")
    local u = pref.load_unpaired(data("unpaired_text.jsonl"), bytes)
    H.assert_mentions(H.error_of(pref.collate_pairs, u), "example 1 has no chosen_ids", "use collate_unpaired")
    H.assert_mentions(H.error_of(pref.collate_unpaired, ex), "example 1 has no completion_ids", "use collate_pairs")
    H.assert_mentions(H.error_of(pref.collate_pairs, { { prompt_ids = { 1 }, chosen_ids = { 0 }, rejected_ids = { 2 } } }),
      "chosen_ids[1] is 0")
    H.assert_mentions(H.error_of(pref.collate_pairs, ex, { pad = 1 }), "pad")
    H.assert_mentions(H.error_of(pref.collate_pairs, ex, { pad_id = 0 }), "pad_id")
    H.assert_mentions(H.error_of(pref.collate_unpaired, u, { kl = 1 }), "kl")
    H.assert_mentions(H.error_of(pref.collate_unpaired, { { prompt_ids = { 1 }, completion_ids = { 2 }, label = 1 } }),
      "label 1")
  end)
end)

describe("ft.pref.batches", function()
  local ex = pref.load_pairs(data("pairs_text.jsonl"), bytes)

  it("covers every example once, in order or shuffled by (seed, epoch)", function()
    local seen, sizes = {}, {}
    for b in pref.batches(ex, { batch_size = 3 }) do
      sizes[#sizes + 1] = b.chosen_ids:size(1)
      for _, i in ipairs(b.indices) do seen[#seen + 1] = i end
    end
    assert.same({ 1, 2, 3, 4 }, seen)
    assert.same({ 3, 1 }, sizes)
    local function order(opts)
      local out = {}
      for b in pref.batches(ex, opts) do
        for _, i in ipairs(b.indices) do out[#out + 1] = i end
      end
      return out
    end
    local a = order({ batch_size = 2, shuffle = true, seed = 5 })
    assert.same(a, order({ batch_size = 2, shuffle = true, seed = 5 }))
    local sorted = { table.unpack(a) }
    table.sort(sorted)
    assert.same({ 1, 2, 3, 4 }, sorted)
    local differs = false
    for e = 2, 6 do
      local o = order({ batch_size = 2, shuffle = true, seed = 5, epoch = e })
      for i = 1, 4 do differs = differs or o[i] ~= a[i] end
    end
    assert.is_true(differs, "epochs differ")
    local n = 0
    for _ in pref.batches(ex, { batch_size = 3, drop_last = true }) do n = n + 1 end
    assert.equal(1, n)
  end)

  it("collates unpaired examples with collate_unpaired", function()
    local u = pref.load_unpaired(data("unpaired_text.jsonl"), bytes)
    local it = pref.batches(u, { batch_size = 2, kl = true })
    local b = it()
    assert.same({ 1, 0 }, b.labels:totable())
    assert.is_not_nil(b.kl_ids)
  end)

  it("has strict options", function()
    H.assert_mentions(H.error_of(pref.batches, ex, { batchsize = 2 }), "batchsize")
    H.assert_mentions(H.error_of(pref.batches, ex, { batch_size = 0 }), "batch_size")
    H.assert_mentions(H.error_of(pref.batches, ex, { kl = true }), "'kl' is for unpaired")
    H.assert_mentions(H.error_of(pref.batches, ex, { seed = 1 }), "seed is for shuffle = true")
    H.assert_mentions(H.error_of(pref.batches, ex, { shuffle = true, seed = 1.5 }), "seed")
    H.assert_mentions(H.error_of(pref.batches, {}), "non-empty list")
  end)
end)

describe("malformed records", function()
  -- file, line, key (nil: the line itself), what the message says
  local bad_pairs = {
    { "bad_missing_rejected.jsonl", 2, "rejected", "is missing" },
    { "bad_chosen_number.jsonl", 3, "chosen", "must be a string or a list of messages, got a number" },
    { "bad_empty_chosen.jsonl", 1, "chosen", "is empty" },
    { "bad_json.jsonl", 2, nil, "invalid JSON" },
    { "bad_not_object.jsonl", 2, nil, "expected a JSON object per line, got a list" },
    { "bad_chat_role.jsonl", 2, "rejected", "message 1 has role 'user': a completion holds assistant messages only" },
    { "bad_mixed.jsonl", 1, "chosen", "is a string but \"prompt\" is a list of messages" },
    { "bad_prompt_ends_assistant.jsonl", 3, "prompt", "ends with a message of role 'assistant'" },
    { "bad_message_content.jsonl", 1, "prompt", "message 1 (user) must have a string \"content\", got null" },
    { "bad_empty_list.jsonl", 1, "rejected", "is an empty list of messages" },
    { "bad_empty_content.jsonl", 1, "chosen", "message 1 has empty content" },
    { "bad_null_prompt.jsonl", 2, "prompt", "is missing" },
    { "bad_prompt_object.jsonl", 1, "prompt", "must be a string or a list of messages, got an object" },
    { "bad_role_name.jsonl", 1, "prompt", "message 1 has role 'bot'" },
  }
  local bad_unpaired = {
    { "bad_label_string.jsonl", 2, "label", "must be true or false, got a string" },
    { "bad_missing_label.jsonl", 1, "label", "is missing" },
    { "bad_empty_completion.jsonl", 1, "completion", "is empty" },
  }

  local function check_case(fn, name, case, tok)
    local file, line, key, says = case[1], case[2], case[3], case[4]
    local msg = H.error_of(fn, data(file), tok)
    H.assert_mentions(msg, name .. ": ", data(file) .. ":" .. line .. ": ", says)
    if key then H.assert_mentions(msg, ":" .. line .. ": \"" .. key .. "\" ") end
  end

  it("name the file, the line and the key (pairs)", function()
    for _, case in ipairs(bad_pairs) do
      check_case(pref.load_pairs, "ft.pref.load_pairs", case, bytes)
      check_case(pref.load_pairs, "ft.pref.load_pairs", case, tokenizers.qwen3)
    end
  end)

  it("name the file, the line and the key (unpaired)", function()
    for _, case in ipairs(bad_unpaired) do check_case(pref.load_unpaired, "ft.pref.load_unpaired", case, bytes) end
    -- a pair file is not an unpaired one
    local msg = H.error_of(pref.load_unpaired, data("pairs_text.jsonl"), bytes)
    H.assert_mentions(msg, "pairs_text.jsonl:1: \"completion\" is missing")
  end)

  it("report files that hold no records or cannot be read", function()
    H.assert_mentions(H.error_of(pref.load_pairs, data("bad_empty.jsonl"), bytes), "bad_empty.jsonl holds no records")
    H.assert_mentions(H.error_of(pref.load_pairs, data("no_such_file.jsonl"), bytes), "ft.pref.load_pairs",
      "no_such_file.jsonl")
    H.assert_mentions(H.error_of(pref.read_jsonl, data("bad_json.jsonl")), "ft.pref.read_jsonl: ",
      "bad_json.jsonl:2: invalid JSON")
    local records, lines = pref.read_jsonl(data("pairs_text.jsonl"))
    assert.same({ 1, 2, 4, 5 }, lines)
    assert.equal(" blue.", records[1].chosen)
  end)

  it("refuse chats for a tokenizer without a chat template", function()
    local msg = H.error_of(pref.load_pairs, data("pairs_chat.jsonl"), tokenizers.llama2)
    H.assert_mentions(msg, "pairs_chat.jsonl:1: \"prompt\" is a list of messages but the tokenizer has no chat template")
  end)

  it("refuse a prompt that gives no tokens to predict the completion from", function()
    local msg = H.error_of(pref.load_pairs, { { prompt = "", chosen = "a", rejected = "b" } }, tokenizers.qwen3)
    H.assert_mentions(msg, "record 1: \"prompt\" gives no tokens")
    local ex = pref.load_pairs({ { prompt = "", chosen = "a", rejected = "b" } }, bytes)   -- EOT opens it
    assert_ids(ex[1].prompt_ids, { EOT }, "the EOT alone")
    msg = H.error_of(pref.load_pairs, { { prompt = "a", chosen = "b", rejected = " c" } }, tokenizers.qwen3)
    H.assert_mentions(msg, "record 1: \"prompt\" keeps no token of its own", "merges with the completion")
  end)

  it("check the call's arguments and options strictly", function()
    H.assert_mentions(H.error_of(pref.load_pairs, data("pairs_text.jsonl"), bytes, { max_len = 3 }), "max_len")
    H.assert_mentions(H.error_of(pref.load_unpaired, data("unpaired_text.jsonl"), bytes, { shuffle = true }), "shuffle")
    H.assert_mentions(H.error_of(pref.load_pairs, data("pairs_text.jsonl"), nil), "a tokenizer with :encode")
    H.assert_mentions(H.error_of(pref.load_pairs, 42, bytes), "a JSONL path or a non-empty list of records")
    H.assert_mentions(H.error_of(pref.load_pairs, { "x" }, bytes), "record 1: expected an object")
    H.assert_mentions(H.error_of(pref.load_pairs, data("pairs_chat.jsonl"), tokenizers.qwen3, { chat_template = 1 }),
      "chat_template")
    H.assert_mentions(H.error_of(pref.load_pairs, data("pairs_chat.jsonl"), tokenizers.qwen3, { chat_variables = "x" }),
      "chat_variables")
  end)
end)
