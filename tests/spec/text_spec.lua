-- ft.text: the fortunes reader, the split by entry, byte streams and their batches, a smoke
-- run of scripts/pretrain_text.lua; fine-tuning examples (files, masking, the chat template,
-- padded batches, windows), per-entry perplexity against a loss computed here in plain Lua,
-- category splits, and the shipped models/gpt_fortunes.h5.
-- The tests on the real corpus need Debian's fortunes package (or FT_FORTUNES_DIR); without
-- it they are marked pending. The reader's format tests use files written here.
local ft = require "ft"
local H = require "helpers"

local FORTUNES_DIR = os.getenv("FT_FORTUNES_DIR") or "/usr/share/games/fortunes"
local HELD_OUT = { "computers", "politics", "science", "songs-poems" }   -- as scripts/pretrain_text.lua

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("text") end
local write = H.write_bytes

local exists = H.file_exists

local function have_fortunes()
  return exists(FORTUNES_DIR .. "/fortunes") or exists(FORTUNES_DIR .. "/wisdom")
end

local function need_fortunes()
  if not have_fortunes() then
    pending("the fortunes corpus is not in " .. FORTUNES_DIR .. ": apt-get install fortunes (or set FT_FORTUNES_DIR)")
    return false
  end
  return true
end

-- Number of entries strfile(1) counted when it built <category>.dat (the str_numstr field of
-- its big-endian header), an independent count to check the reader against.
local function strfile_count(category)
  local f = io.open(FORTUNES_DIR .. "/" .. category .. ".dat", "rb")
  if not f then return nil end
  local header = f:read(24)
  f:close()
  local _, numstr = string.unpack(">I4I4", header)
  return numstr
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("ft.text fortune files", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("splits entries on lines holding a single %", function()
    write(dir .. "/a", "%\nfirst\n  line two\n%\n\n%\n50% off\n%%\nlast, no final separator\n")
    assert.are.same({ "first\n  line two", "50% off\n%%\nlast, no final separator" },
      ft.text.read_fortune_file(dir .. "/a"))
    write(dir .. "/b", "one\r\n%\r\ntwo\r\n%\r\n")
    assert.are.same({ "one", "two" }, ft.text.read_fortune_file(dir .. "/b"))
  end)

  it("lists categories without index files, .u8 links or duplicate links", function()
    write(dir .. "/beta", "b1\n%\nb2\n%\n")
    write(dir .. "/alpha", "a1\n%\n")
    write(dir .. "/alpha.dat", "\0\0\0\2")
    os.execute("ln -s alpha " .. quote(dir .. "/alpha.u8"))
    os.execute("ln -s beta " .. quote(dir .. "/gamma"))   -- the same file under another name
    assert.are.same({ "alpha", "beta" }, ft.text.fortune_categories({ dir = dir }))
    assert.are.same({ alpha = { "a1" }, beta = { "b1", "b2" } }, ft.text.fortunes({ dir = dir }))
    assert.are.same({ beta = { "b1", "b2" } }, ft.text.fortunes({ dir = dir, exclude = { "alpha" } }))
    assert.are.same({ alpha = { "a1" } }, ft.text.fortunes({ dir = dir, categories = { "alpha" } }))
    assert.matches("no category 'delta'", error_of(ft.text.fortunes, { dir = dir, categories = { "delta" } }))
  end)

  it("says how to get the corpus when it is missing", function()
    local err = error_of(ft.text.fortunes, { dir = dir .. "/nonexistent" })
    assert.matches("apt%-get install fortunes", err)
    assert.matches("nonexistent", err)
  end)
end)

describe("ft.text.fortunes (Debian's fortunes package)", function()
  it("finds the categories and reads non-empty entries", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    assert.is_true(#cats >= 1)
    local seen = {}
    for _, name in ipairs(cats) do
      assert.is_nil(name:find("%."), "an index or link file listed: " .. name)
      assert.is_nil(seen[name])
      seen[name] = true
    end
    local corpus = ft.text.fortunes()
    assert.are.same(cats, ft.text.categories(corpus))
    for name, entries in pairs(corpus) do
      assert.is_true(#entries > 0, name .. " has no entries")
      local want = strfile_count(name)
      if want then assert.are.equal(want, #entries, name .. ": strfile counted " .. want) end
      for i, e in ipairs(entries) do
        assert.is_truthy(e:find("%S"), ("%s entry %d is blank"):format(name, i))
        assert.is_nil(e:find("\n%%\n"), ("%s entry %d holds a separator line"):format(name, i))
        assert.is_nil(e:find("%s$"), ("%s entry %d ends in whitespace"):format(name, i))
      end
    end
  end)

  it("has the categories held out from pretraining", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    if not contains(cats, "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    for _, name in ipairs(HELD_OUT) do assert.is_true(contains(cats, name), name) end
  end)
end)

describe("ft.text.split", function()
  local entries = {}
  for i = 1, 2000 do entries[i] = "entry number " .. i end
  entries[#entries + 1] = "entry number 7"   -- a duplicate

  it("is deterministic, disjoint and complete, and keeps the order", function()
    local tr1, va1 = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    local tr2, va2 = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    assert.are.same(tr1, tr2)
    assert.are.same(va1, va2)
    assert.are.equal(#entries, #tr1 + #va1)
    assert.is_true(#va1 > 140 and #va1 < 260, "validation size " .. #va1)
    local in_val = {}
    for _, e in ipairs(va1) do in_val[e] = true end
    for _, e in ipairs(tr1) do assert.is_nil(in_val[e], "in both: " .. e) end
    -- order kept: the train list is the input with the validation entries taken out
    local rest = {}
    for _, e in ipairs(entries) do if not in_val[e] then rest[#rest + 1] = e end end
    assert.are.same(rest, tr1)
  end)

  it("does not depend on the order of the list", function()
    local reversed = {}
    for i = #entries, 1, -1 do reversed[#reversed + 1] = entries[i] end
    local _, va = ft.text.split(entries, { val_fraction = 0.1, seed = 3 })
    local _, vr = ft.text.split(reversed, { val_fraction = 0.1, seed = 3 })
    table.sort(va)
    table.sort(vr)
    assert.are.same(va, vr)
  end)

  it("changes with the seed and covers the extremes", function()
    local _, a = ft.text.split(entries, { val_fraction = 0.1, seed = 1 })
    local _, b = ft.text.split(entries, { val_fraction = 0.1, seed = 2 })
    assert.are_not.same(a, b)
    local tr0, va0 = ft.text.split(entries, { val_fraction = 0, seed = 1 })
    assert.are.equal(#entries, #tr0)
    assert.are.equal(0, #va0)
    local tr1, va1 = ft.text.split(entries, { val_fraction = 1, seed = 1 })
    assert.are.equal(0, #tr1)
    assert.are.equal(#entries, #va1)
    assert.matches("val_fraction", error_of(ft.text.split, entries, { val_fraction = 2 }))
  end)
end)

describe("ft.text.byte_dataset", function()
  local entries = { "The quick brown fox", "jumps over", "the lazy dog." }
  local stream = table.concat(entries, "\0") .. "\0"

  it("joins the entries with the separator after each one, as byte ids", function()
    local ds = ft.text.byte_dataset(entries, { context = 8 })
    assert.are.equal("int64", ds.ids:dtype())
    assert.are.equal(#stream, ds.ids:numel())
    local ids = ds.ids:totable()
    for i = 1, #stream do assert.are.equal(stream:byte(i) + 1, ids[i]) end
    local nl = ft.text.byte_dataset(entries, { context = 8, separator = "\n%\n" })
    assert.are.equal(#table.concat(entries, "\n%\n") + 3, #nl)
    assert.matches("fewer than one window", error_of(ft.text.byte_dataset, { "ab" }, { context = 8 }))
  end)

  it("samples x, y int64 [B,T] windows with y the next bytes", function()
    local T, B = 8, 64
    local ds = ft.text.byte_dataset(entries, { context = T })
    ft.manual_seed(11)
    local x, y = ds:batch(B)
    assert.are.same({ B, T }, x:shape())
    assert.are.same({ B, T }, y:shape())
    assert.are.equal("int64", x:dtype())
    assert.are.equal("int64", y:dtype())
    local xs, ys = x:totable(), y:totable()
    local starts = {}
    for b = 1, B do
      for t = 1, T do
        assert.is_true(xs[b][t] >= 1 and xs[b][t] <= 256)
        if t < T then assert.are.equal(xs[b][t + 1], ys[b][t]) end
      end
      -- x followed by y's last byte is a window of T + 1 bytes of the stream
      local bytes = {}
      for t = 1, T do bytes[t] = xs[b][t] - 1 end
      bytes[T + 1] = ys[b][T] - 1
      local window = string.char(table.unpack(bytes))
      local at = stream:find(window, 1, true)
      assert.is_truthy(at, "not a window of the stream: " .. window)
      starts[at] = true
    end
    local distinct = 0
    for _ in pairs(starts) do distinct = distinct + 1 end
    assert.is_true(distinct > 10, "offsets are not random")
    -- the same seed draws the same batch
    ft.manual_seed(11)
    local x2, y2 = ds:batch(B)
    assert.are.same(xs, x2:totable())
    assert.are.same(ys, y2:totable())
  end)

  it("walks every non-overlapping window in order for evaluation", function()
    local T = 8
    local ds = ft.text.byte_dataset(entries, { context = T })
    local n = (#stream - 1) // T
    assert.are.equal(n, ds:num_windows())
    local k = 0
    for x, y in ds:windows(2) do
      assert.is_true(x:size(1) <= 2)
      for _, row in ipairs(x:totable()) do
        local start = k * T + 1
        for t = 1, T do assert.are.equal(stream:byte(start + t - 1) + 1, row[t]) end
        k = k + 1
      end
      assert.are.same(x:shape(), y:shape())
    end
    assert.are.equal(n, k)
    local m = 0
    for x in ds:windows(16, { max_windows = 3 }) do m = m + x:size(1) end
    assert.are.equal(3, m)
  end)
end)

describe("ft.text.fortune_datasets", function()
  it("leaves the held-out categories out of both splits", function()
    if not need_fortunes() then return end
    local cats = ft.text.fortune_categories()
    if not contains(cats, "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    local train, val, info = ft.text.fortune_datasets({ context = 64, held_out = HELD_OUT, seed = 1 })
    for _, name in ipairs(HELD_OUT) do assert.is_false(contains(info.categories, name), name) end
    assert.are.equal(#cats - #HELD_OUT, #info.categories)
    -- the two streams hold exactly the other categories' entries, each plus a separator byte
    local corpus = ft.text.fortunes({ exclude = HELD_OUT })
    local bytes, count = 0, 0
    for _, entries in pairs(corpus) do
      for _, e in ipairs(entries) do bytes, count = bytes + #e + 1, count + 1 end
    end
    assert.are.equal(count, info.train_entries + info.val_entries)
    assert.are.equal(bytes, #train + #val)
    assert.is_true(info.val_entries > 0.02 * count and info.val_entries < 0.1 * count)
    -- deterministic
    local _, val2, info2 = ft.text.fortune_datasets({ context = 64, held_out = HELD_OUT, seed = 1 })
    assert.are.equal(info.val_entries, info2.val_entries)
    assert.are.same(val.ids:totable(), val2.ids:totable())
    assert.matches("held%-out category 'nonsense'",
      error_of(ft.text.fortune_datasets, { context = 64, held_out = { "nonsense" } }))
  end)
end)

describe("scripts/pretrain_text.lua", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("trains a tiny model for 20 steps and writes a reloadable checkpoint", function()
    if not need_fortunes() then return end
    if not contains(ft.text.fortune_categories(), "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    local ftlua = assert(os.getenv("FTLUA"), "FTLUA is not set")
    local src = os.getenv("FT_SOURCE_DIR") or "."
    local run_dir = dir .. "/run"           -- --out names the run's folder; the checkpoint goes in it
    local out = run_dir .. "/gpt_fortunes.h5"
    local ok, log = run(quote(ftlua) .. " " .. quote(src .. "/scripts/pretrain_text.lua")
      .. " --config tiny --steps 20 --context 32 --batch-size 4 --eval-every 10 --eval-windows 8"
      .. " --sample-length 16 --threads 2 --out " .. quote(run_dir) .. " </dev/null")
    assert.is_true(ok, log)
    assert.matches("RESULT steps=20 tokens_per_sec=[%d.]+ train_loss=[%d.]+ val_loss=[%d.]+", log)
    assert.matches("val loss after reloading", log)
    assert.is_true(exists(out), "no checkpoint at " .. out)

    local sd, meta = ft.load(out)
    assert.are.equal(20, math.tointeger(meta.step))
    assert.are.same(HELD_OUT, ft.json.decode(meta.held_out))
    assert.are.equal("\0", ft.json.decode(meta.separator))
    local config = ft.json.decode(meta.config)
    assert.are.equal(2, config.n_layer)
    assert.are.equal(256, config.vocab_size)
    local model = ft.models.new(config)
    model:load_state_dict(sd)
    model:eval()
    local logits = ft.no_grad(function() return model(ft.tensor({ { 1, 85, 105, 102 } }, { dtype = "int64" })).logits end)
    assert.are.same({ 1, 4, 256 }, logits:shape())
    -- the loss it reports is below the uniform guess of log(256)
    local val_loss = tonumber(log:match("val_loss=([%d.]+)"))
    assert.is_true(val_loss < math.log(256), "val loss " .. tostring(val_loss))
  end)
end)

-- ---- fine-tuning examples ----------------------------------------------------------------------

local bytes_tok = ft.tokenizer.bytes()

-- Byte ids of a string, computed here (byte + 1).
local function byte_ids(s)
  local out = {}
  for i = 1, #s do out[i] = s:byte(i) + 1 end
  return out
end

local function concat_lists(...)
  local out = {}
  for _, l in ipairs({ ... }) do table.move(l, 1, #l, #out + 1, out) end
  return out
end

local function masked(n)
  local out = {}
  for i = 1, n do out[i] = -100 end
  return out
end

describe("ft.text.read_examples", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("reads prompt/completion pairs, chat records and text records from JSONL", function()
    write(dir .. "/d.jsonl", table.concat({
      '{"prompt": "2+2=", "completion": "4"}',
      '',
      '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},'
        .. ' {"role": "assistant", "content": "Hello!", "weight": 1}]}',
      '{"text": "plain \\u00e9t\\u00e9"}',
    }, "\n") .. "\n")
    local ex = ft.text.read_examples(dir .. "/d.jsonl")
    assert.are.equal(3, #ex)
    assert.are.equal("2+2=", ex[1].prompt)
    assert.are.equal("4", ex[1].completion)
    assert.are.equal(dir .. "/d.jsonl:1", ex[1].where)
    assert.are.equal(3, #ex[2].messages)
    assert.are.equal("assistant", ex[2].messages[3].role)
    assert.are.equal("Hello!", ex[2].messages[3].content)
    assert.are.equal(dir .. "/d.jsonl:3", ex[2].where)
    assert.are.equal("plain \195\169t\195\169", ex[3].text)
    -- detected by content when the name does not say
    write(dir .. "/noext", '{"prompt": "a", "completion": "b"}\r\n{"prompt": "c", "completion": "d"}\r\n')
    local ex2 = ft.text.read_examples(dir .. "/noext")
    assert.are.same({ "a", "b", "c", "d" }, { ex2[1].prompt, ex2[1].completion, ex2[2].prompt, ex2[2].completion })
  end)

  it("names the file and line of a bad record", function()
    local path = dir .. "/bad.jsonl"
    local cases = {
      { '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n', "bad.jsonl:2: invalid JSON" },
      { '{"prompt": "a"}\n', "bad.jsonl:1: \"completion\" must be a string" },
      { '\n\n{"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]}\n',
        "bad.jsonl:3: message 2 has role 'bot'" },
      { '{"messages": [{"role": "user", "content": "x"}]}\n', "bad.jsonl:1: no assistant message to train on" },
      { '{"messages": [{"role": "assistant", "content": 5}]}\n', "bad.jsonl:1: message 1 (assistant) has no string \"content\"" },
      { '{"input": "x", "output": "y"}\n', "bad.jsonl:1: expected \"prompt\" and \"completion\", \"messages\" or \"text\"; got keys input, output" },
      { '[1, 2]\n', "bad.jsonl:1: expected a JSON object per line" },
      { '\n  \n', "no examples in" },
    }
    for _, c in ipairs(cases) do
      write(path, c[1])
      H.assert_mentions(error_of(ft.text.read_examples, path), c[2])
    end
    H.assert_mentions(error_of(ft.text.read_examples, dir .. "/missing.txt"), "missing.txt")
  end)

  it("splits plain text on % lines, else on blank lines, else keeps one document", function()
    write(dir .. "/f.txt", "first\nfortune\n%\n\nsecond, with\n\na blank line\n%\n")
    local ex = ft.text.read_examples(dir .. "/f.txt")
    assert.are.same({ "first\nfortune", "second, with\n\na blank line" }, { ex[1].text, ex[2].text })
    assert.are.equal(dir .. "/f.txt:1", ex[1].where)
    assert.are.equal(dir .. "/f.txt:5", ex[2].where)
    write(dir .. "/p.txt", "\nPara one\nstill one.\n\n\nPara two.  \n")
    local paras = ft.text.read_examples(dir .. "/p.txt")
    assert.are.same({ "Para one\nstill one.", "Para two." }, { paras[1].text, paras[2].text })
    assert.are.equal(dir .. "/p.txt:6", paras[2].where)
    local doc = ft.text.read_examples(dir .. "/p.txt", { split = "none" })
    assert.are.equal(1, #doc)
    assert.are.equal("Para one\nstill one.\n\n\nPara two.", doc[1].text)
    write(dir .. "/one.txt", "just one line")
    assert.are.same({ { text = "just one line", where = dir .. "/one.txt:1" } }, ft.text.read_examples(dir .. "/one.txt"))
    -- a text file whose first line looks like JSON but is not an object stays text
    write(dir .. "/brace.txt", "{ not json\n")
    assert.are.equal("{ not json", ft.text.read_examples(dir .. "/brace.txt")[1].text)
    H.assert_mentions(error_of(ft.text.read_examples, dir .. "/f.txt", { split = "lines" }), "split must be")
  end)
end)

describe("ft.text.encode_example", function()
  it("trains every token of a text example, after a leading EOT", function()
    local ids, labels = ft.text.encode_example(bytes_tok, { text = "abc" })
    assert.are.equal("int64", ids:dtype())
    assert.are.same(concat_lists({ 1 }, byte_ids("abc"), { 1 }), ids:totable())
    assert.are.same(concat_lists({ -100 }, byte_ids("abc"), { 1 }), labels:totable())
  end)

  it("masks the prompt of a prompt/completion pair", function()
    local prompt, completion = "Q: why?\nA:", " because"
    local ids, labels = ft.text.encode_example(bytes_tok, { prompt = prompt, completion = completion })
    local want_ids = concat_lists({ 1 }, byte_ids(prompt), byte_ids(completion), { 1 })
    assert.are.same(want_ids, ids:totable())
    local L = labels:totable()
    -- the masked span is exactly EOT + the prompt's bytes; the rest are the completion and EOT
    local n_masked = 0
    for i, v in ipairs(L) do
      if v == -100 then n_masked = n_masked + 1; assert.is_true(i <= 1 + #prompt, "masked at " .. i)
      else assert.are.equal(want_ids[i], v) end
    end
    assert.are.equal(1 + #prompt, n_masked)
    assert.are.equal(prompt, bytes_tok:decode(ids:narrow(1, 2, #prompt)))
    assert.are.equal(completion .. "\0", bytes_tok:decode(ids:narrow(1, 2 + #prompt, #completion + 1)))
  end)

  it("trains only the assistant messages of a chat, not the role lines", function()
    local msgs = {
      { role = "system", content = "Be brief." },
      { role = "user", content = "Hi" },
      { role = "assistant", content = "Hello!" },
      { role = "user", content = "Bye" },
      { role = "assistant", content = "Later.", weight = 0 },
      { role = "user", content = "Sure?" },
      { role = "assistant", content = "Yes." },
    }
    local ids, labels = ft.text.encode_example(bytes_tok, { messages = msgs })
    local rendered = "\0<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!\0<|user|>\nBye\n"
      .. "<|assistant|>\nLater.\0<|user|>\nSure?\n<|assistant|>\nYes.\0"
    assert.are.equal(rendered, bytes_tok:decode(ids))
    assert.are.equal(rendered:sub(2), ft.text.format_chat(msgs, { add_generation_prompt = false }))
    -- the trained spans, read off the labels, are the two weighted assistant replies with their EOT
    local spans, cur = {}, nil
    local I, L = ids:totable(), labels:totable()
    for i = 1, #L do
      if L[i] ~= -100 then
        assert.are.equal(I[i], L[i])
        cur = cur or {}
        cur[#cur + 1] = I[i]
      elseif cur then spans[#spans + 1] = bytes_tok:decode(cur); cur = nil end
    end
    if cur then spans[#spans + 1] = bytes_tok:decode(cur) end
    assert.are.same({ "Hello!\0", "Yes.\0" }, spans)
  end)

  it("cuts to the context, and errors name the example's place", function()
    local ids, labels = ft.text.encode_example(bytes_tok, { prompt = "abc", completion = "defgh" }, { context = 6 })
    assert.are.same(concat_lists({ 1 }, byte_ids("abcde")), ids:totable())
    assert.are.same(concat_lists(masked(4), byte_ids("de")), labels:totable())
    H.assert_mentions(error_of(ft.text.encode_example, bytes_tok, { prompt = "a", where = "x.jsonl:7" }),
      "x.jsonl:7", "completion")
    H.assert_mentions(error_of(ft.text.encode_example, bytes_tok, { text = "a" }, { context = 1 }), "context")
    H.assert_mentions(error_of(ft.text.encode_example, {}, { text = "a" }), "tokenizer")
  end)

  it("encodes the prompt to generate from", function()
    local msgs = { { role = "user", content = "Hi" }, { role = "assistant", content = "Hello!" },
      { role = "user", content = "Bye" } }
    local want = "\0<|user|>\nHi\n<|assistant|>\nHello!\0<|user|>\nBye\n<|assistant|>\n"
    assert.are.equal(want, bytes_tok:decode(ft.text.encode_prompt(bytes_tok, { messages = msgs })))
    assert.are.equal(want:sub(2), ft.text.format_chat(msgs))
    -- a final assistant message (the reference answer) is left out
    msgs[4] = { role = "assistant", content = "Bye." }
    assert.are.equal(want, bytes_tok:decode(ft.text.encode_prompt(bytes_tok, { messages = msgs })))
    assert.are.equal("\0Q:", bytes_tok:decode(ft.text.encode_prompt(bytes_tok, { prompt = "Q:", completion = "x" })))
  end)
end)

describe("ft.text.collate and example sets", function()
  it("pads to the longest example with mask 0 and label -100, on either side", function()
    local a = { ids = { 5, 6, 7 }, labels = { -100, 6, 7 } }
    local b = { ids = ft.tensor({ 9 }, { dtype = "int64" }), labels = ft.tensor({ 9 }, { dtype = "int64" }) }
    local r = ft.text.collate({ a, b })
    assert.are.same({ { 5, 6, 7 }, { 9, 1, 1 } }, r.input_ids:totable())
    assert.are.same({ { 1, 1, 1 }, { 1, 0, 0 } }, r.attention_mask:totable())
    assert.are.same({ { -100, 6, 7 }, { 9, -100, -100 } }, r.labels:totable())
    local l = ft.text.collate({ a, b }, { padding_side = "left", pad_id = 3 })
    assert.are.same({ { 5, 6, 7 }, { 3, 3, 9 } }, l.input_ids:totable())
    assert.are.same({ { 1, 1, 1 }, { 0, 0, 1 } }, l.attention_mask:totable())
    assert.are.same({ { -100, 6, 7 }, { -100, -100, 9 } }, l.labels:totable())
    H.assert_mentions(error_of(ft.text.collate, { { ids = { 1, 2 }, labels = { 1 } } }), "item 1")
    -- rounded widths, never beyond the context
    local m = ft.text.collate({ a, b }, { pad_to_multiple_of = 4 })
    assert.are.same({ { 5, 6, 7, 1 }, { 9, 1, 1, 1 } }, m.input_ids:totable())
    assert.are.same({ { -100, 6, 7, -100 }, { 9, -100, -100, -100 } }, m.labels:totable())
    assert.are.same({ 2, 3 }, ft.text.collate({ a, b }, { pad_to_multiple_of = 4, context = 3 }).input_ids:shape())
  end)

  it("splits long examples into windows that score every label once", function()
    local long = string.rep("abcdefghij", 3)   -- 30 bytes -> 32 tokens
    local set = ft.text.example_dataset({ long, { prompt = "p", completion = "q" } }, { context = 8 })
    assert.are.equal(2, #set)
    local ids = set.encoded[1].ids
    assert.are.equal(32, #ids)
    -- windows of <= 8 tokens overlapping by one: 1-8, 8-15, 15-22, 22-29, 29-32
    assert.are.equal(6, #set.windows)
    local scored = {}
    for w = 1, 5 do
      local win = set.windows[w]
      assert.is_true(#win.ids <= 8)
      for t = 2, #win.labels do scored[#scored + 1] = win.labels[t] end
    end
    assert.are.same(table.move(set.encoded[1].labels, 2, 32, 1, {}), scored)
    local trunc = ft.text.example_dataset({ long }, { context = 8, overflow = "truncate" })
    assert.are.equal(1, #trunc.windows)
    assert.are.same(table.move(ids, 1, 8, 1, {}), trunc.windows[1].ids)
    -- batches cover every window once, padded
    local seen = 0
    for b in set:batches(4) do
      seen = seen + b.input_ids:size(1)
      assert.is_true(b.input_ids:size(2) <= 8)
      assert.are.same(b.input_ids:shape(), b.labels:shape())
    end
    assert.are.equal(6, seen)
    ft.manual_seed(1)
    local r = set:batch(3)
    assert.are.same({ 3 }, { r.input_ids:size(1) })
  end)
end)

describe("ft.text.perplexity", function()
  it("is the mean next-byte loss over each entry's bytes and EOT, computed explicitly", function()
    ft.manual_seed(5)
    local model = ft.models.new("gpt-s", { n_layer = 1, n_embd = 16, n_head = 2, n_positions = 16,
      initializer_range = 0.2 })
    model:eval()
    local entries = { "Hello there", "A longer entry that needs more than one window." }
    local C = 12
    local r = ft.text.perplexity(model, entries, { context = C, batch_size = 3 })
    -- explicit: the sequence EOT .. entry .. EOT, windows of C tokens overlapping by one token,
    -- each window's tokens after its first scored from a forward over the window alone
    local total, count = 0, 0
    for _, e in ipairs(entries) do
      local seq = concat_lists({ 1 }, byte_ids(e), { 1 })
      local start = 1
      while true do
        local stop = math.min(start + C - 1, #seq)
        local win = table.move(seq, start, stop, 1, {})
        local logits = ft.no_grad(function() return model(ft.tensor({ win }, { dtype = "int64" })).logits end):totable()[1]
        for t = 1, #win - 1 do
          local row, max = logits[t], -math.huge
          for _, v in ipairs(row) do max = math.max(max, v) end
          local sum = 0
          for _, v in ipairs(row) do sum = sum + math.exp(v - max) end
          total = total + max + math.log(sum) - row[win[t + 1]]
          count = count + 1
        end
        if stop == #seq then break end
        start = stop
      end
    end
    assert.are.equal(#entries[1] + #entries[2] + 2, count)
    assert.are.equal(count, r.tokens)
    assert.is_true(math.abs(r.loss - total / count) < 1e-5, ("%.6f vs %.6f"):format(r.loss, total / count))
    assert.is_true(math.abs(r.bits - r.loss / math.log(2)) < 1e-12)
    assert.is_true(math.abs(r.perplexity - math.exp(r.loss)) < 1e-9)
    -- only completion tokens count for prompt/completion examples
    local pc = ft.text.perplexity(model, { { prompt = "Hello", completion = " there" } }, { context = C })
    assert.are.equal(#" there" + 1, pc.tokens)
  end)
end)

describe("ft.text three-way split and category_datasets", function()
  local entries = {}
  for i = 1, 3000 do entries[i] = "entry " .. i end

  it("adds a test split without moving validation entries", function()
    local tr2, va2 = ft.text.split(entries, { val_fraction = 0.1, seed = 4 })
    local tr, va, te = ft.text.split(entries, { val_fraction = 0.1, test_fraction = 0.15, seed = 4 })
    assert.are.same(va2, va)
    assert.are.equal(#entries, #tr + #va + #te)
    assert.is_true(#te > 350 and #te < 550, "test size " .. #te)
    local in_test = {}
    for _, e in ipairs(te) do in_test[e] = true end
    local rest = {}
    for _, e in ipairs(tr2) do if not in_test[e] then rest[#rest + 1] = e end end
    assert.are.same(rest, tr)
    local _, _, te2 = ft.text.split(entries, { val_fraction = 0.1, test_fraction = 0.15, seed = 4 })
    assert.are.same(te, te2)
    assert.matches("test_fraction", error_of(ft.text.split, entries, { val_fraction = 0.5, test_fraction = 0.6 }))
  end)

  it("splits one category deterministically into disjoint train, val and test sets", function()
    local dir = make_tmpdir()
    local parts = {}
    for i = 1, 200 do parts[#parts + 1] = "saying number " .. i .. "\n%\n" end
    write(dir .. "/sayings", table.concat(parts))
    write(dir .. "/other", "x\n%\n")
    local train, val, test, info = ft.text.category_datasets("sayings", { dir = dir, seed = 2, context = 32 })
    local again_train, again_val, again_test = ft.text.category_datasets("sayings", { dir = dir, seed = 2, context = 32 })
    local _, other_val = ft.text.category_datasets("sayings", { dir = dir, seed = 3, context = 32 })
    local function texts(set)
      local out = {}
      for i, ex in ipairs(set.examples) do out[i] = ex.text end
      return out
    end
    assert.are.same(texts(train), texts(again_train))
    assert.are.same(texts(val), texts(again_val))
    assert.are.same(texts(test), texts(again_test))
    assert.are_not.same(texts(val), texts(other_val))
    assert.are.equal(200, #train + #val + #test)
    assert.are.same({ category = "sayings", train_entries = #train, val_entries = #val, test_entries = #test }, info)
    assert.is_true(#val > 5 and #test > 5)
    local where = {}
    for name, set in pairs({ train = train, val = val, test = test }) do
      for _, t in ipairs(texts(set)) do
        assert.is_nil(where[t], t .. " in " .. tostring(where[t]) .. " and " .. name)
        where[t] = name
      end
    end
    -- examples are byte-level: EOT, the entry, EOT
    assert.are.same(concat_lists({ 1 }, byte_ids(train.examples[1].text), { 1 }), train.encoded[1].ids)
    H.assert_mentions(error_of(ft.text.category_datasets, "nonesuch", { dir = dir }), "no category 'nonesuch'")
    os.execute("rm -rf " .. quote(dir))
  end)

  it("gives the held-out categories of the real corpus", function()
    if not need_fortunes() then return end
    if not contains(ft.text.fortune_categories(), "science") then
      pending("only fortunes-min is installed: apt-get install fortunes for the held-out categories")
      return
    end
    local train, val, test, info = ft.text.category_datasets("science", { seed = 1 })
    assert.are.equal(#ft.text.fortunes({ categories = { "science" } }).science,
      info.train_entries + info.val_entries + info.test_entries)
    assert.is_true(#val > 0 and #test > 0 and #train > #val)
  end)
end)

describe("models/gpt_fortunes.h5 (the shipped checkpoint)", function()
  local path = (os.getenv("FT_SOURCE_DIR") or ".") .. "/models/gpt_fortunes.h5"

  it("loads with its config and held-out list, and predicts fortunes far better than chance", function()
    if not exists(path) then
      pending("no " .. path .. ": build it with scripts/pretrain_text.lua (see models/TEXT.md)")
      return
    end
    local model, meta = ft.text.load_checkpoint(path)
    assert.are.same(HELD_OUT, meta.held_out)
    assert.are.equal("GPT2LMHeadModel", model.hf_architecture)
    assert.are.equal(256, model.config.vocab_size)
    assert.is_false(model.training)
    local r = ft.text.perplexity(model, { "You will be successful in your work.", "Beware of low-flying butterflies." })
    assert.is_true(r.loss < 2.5, "loss " .. r.loss)   -- uniform guessing: log(256) = 5.55 nats
  end)

  it("load_checkpoint says when a file has no model config", function()
    local dir = make_tmpdir()
    ft.save(dir .. "/plain.h5", { w = ft.zeros(2) })
    H.assert_mentions(error_of(ft.text.load_checkpoint, dir .. "/plain.h5"), "plain.h5", "no model config")
    os.execute("rm -rf " .. quote(dir))
  end)
end)
