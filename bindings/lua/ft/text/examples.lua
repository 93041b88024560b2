-- ft.text, fine-tuning half: examples for instruction-style fine-tuning (prompt/completion
-- pairs, chat records, plain text), the byte-level chat template, labels that train only the
-- completion, padded batches, per-example perplexity, and held-out fortune categories split
-- for fine-tuning. ft.text re-exports everything here.
local ft = require "ft"

-- Whole files through the one reader (ft.fs.read: an error names the file).
local read_file = require("ft.fs").read

local corpus = require "ft.text.corpus"

local text = {}
-- ---- fine-tuning examples ----------------------------------------------------------------------
--
-- An example is a table of one of three kinds:
--   {text = "..."}                            every token trains (plain text, fortune entries)
--   {prompt = "...", completion = "..."}      only the completion trains; the two are joined
--                                             as they are (put any separator in the prompt)
--   {messages = {{role = "system" | "user" | "assistant", content = "..."[, weight = 0 | 1]}, ...}}
--                                             only assistant messages train (weight = 0 leaves
--                                             one out, as OpenAI's format allows)
-- Every encoded example starts with the EOT token (the beginning-of-sequence mark, as each entry
-- of the pretraining stream follows an EOT) and what trains ends with EOT, so generation
-- learns to stop (eos_token_id = ft.text.EOT_ID).
--
-- The chat template (byte-level, no special tokens):
--   <EOT><|system|>\n{content}\n<|user|>\n{content}\n<|assistant|>\n{content}<EOT><|user|>\n...
-- i.e. "<|role|>\n" .. content .. "\n" for system and user messages and
-- "<|assistant|>\n" .. content .. EOT for assistant ones; the role lines never train.

text.IGNORE_INDEX = -100   -- the label of tokens outside the loss (F.cross_entropy's default, HF's)
local chat = require "ft.text.chat"
text.CHAT_ROLES = chat.ROLES

-- Checks a list of chat messages (ft.text.chat's rules); level as error()'s.
local function check_messages(msgs, where, level) chat.check_messages(msgs, where, level + 1) end

-- The kind of an example ("text", "completion" or "chat"), or an error "<where>: ...".
local function example_kind(ex, where, level)
  if type(ex) ~= "table" then error(("%s: an example must be a table, got %s"):format(where, type(ex)), level + 1) end
  if ex.messages ~= nil then
    check_messages(ex.messages, where, level + 1)
    for _, m in ipairs(ex.messages) do
      if m.role == "assistant" and m.weight ~= 0 then return "chat" end
    end
    error(where .. ": no assistant message to train on", level + 1)
  elseif ex.completion ~= nil or ex.prompt ~= nil then
    if type(ex.prompt) ~= "string" then error(where .. ": \"prompt\" must be a string", level + 1) end
    if type(ex.completion) ~= "string" then error(where .. ": \"completion\" must be a string", level + 1) end
    return "completion"
  elseif ex.text ~= nil then
    if type(ex.text) ~= "string" then error(where .. ": \"text\" must be a string", level + 1) end
    return "text"
  end
  local keys = {}
  for k in pairs(ex) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  error(("%s: expected \"prompt\" and \"completion\", \"messages\" or \"text\"; got %s"):format(where,
    #keys > 0 and "keys " .. table.concat(keys, ", ") or "an empty object"), level + 1)
end

-- The pieces of an example in order: {string, trains, eos} where eos says an EOT token follows
-- the string (and trains with it).
local function segments(ex, kind)
  if kind == "text" then return { { ex.text, true, true } } end
  if kind == "completion" then return { { ex.prompt, false, false }, { ex.completion, true, true } } end
  local out = {}
  for _, m in ipairs(ex.messages) do
    if m.role == "assistant" then
      out[#out + 1] = { "<|assistant|>\n", false, false }
      out[#out + 1] = { m.content or "", m.weight ~= 0, true }
    else
      out[#out + 1] = { "<|" .. m.role .. "|>\n" .. m.content .. "\n", false, false }
    end
  end
  return out
end

--- The chat template applied to messages, as a string (without the leading EOT; each
-- assistant message ends with ft.text.EOT). add_generation_prompt (default true) appends
-- "<|assistant|>\n" for the model to continue.
function text.format_chat(messages, opts)
  opts = ft.check_options("ft.text.format_chat", opts, {"add_generation_prompt"})
  ft.check.boolean("ft.text.format_chat", "add_generation_prompt", opts.add_generation_prompt)
  check_messages(messages, "ft.text.format_chat", 2)
  local parts = {}
  for _, seg in ipairs(segments({ messages = messages }, "chat")) do
    parts[#parts + 1] = seg[1] .. (seg[3] and corpus.EOT or "")
  end
  if not (opts and opts.add_generation_prompt == false) then parts[#parts + 1] = "<|assistant|>\n" end
  return table.concat(parts)
end

local function eos_id_of(tok, opts, where)
  local eos = ft.check.integer(where, "eos_id", opts and opts.eos_id, nil, {min = 1})
  return eos or tok.eos_id or tok.eos_token_id or corpus.EOT_ID
end

local function check_tokenizer(tok, where)
  if type(tok) ~= "table" or type(tok.encode) ~= "function" then
    error(where .. ": a tokenizer with :encode(string) expected (e.g. ft.tokenizer.bytes())", 3)
  end
end

-- Lua arrays ids, labels of segments, after a leading EOT.
local function encode_segments(tok, segs, eos)
  local ids, labels = { eos }, { text.IGNORE_INDEX }
  for _, seg in ipairs(segs) do
    local s, trains, ends = seg[1], seg[2], seg[3]
    if s ~= "" then
      for _, id in ipairs(tok:encode(s):totable()) do
        ids[#ids + 1] = id
        labels[#labels + 1] = trains and id or text.IGNORE_INDEX
      end
    end
    if ends then
      ids[#ids + 1] = eos
      labels[#labels + 1] = trains and eos or text.IGNORE_INDEX
    end
  end
  return ids, labels
end

-- A HuggingFace tokenizer (ft.tokenizer.from_pretrained) brings its own special tokens and
-- chat template.
local function is_hf(tok) return type(tok.apply_chat_template) == "function" end

-- Lua arrays ids, labels of an example for a HuggingFace tokenizer: chats through its chat
-- template (ft.text.chat.encode: the assistant's tokens train); a prompt with the special
-- tokens the tokenizer adds (a bos), then its completion and eos; text likewise, all trained.
local function encode_hf(tok, ex, kind, eos)
  if kind == "chat" then return require("ft.text.chat").encode(tok, ex.messages, { ignore_index = text.IGNORE_INDEX }) end
  local ids, labels = {}, {}
  local function add(s, special, trains)
    for _, id in ipairs(tok:encode(s, { add_special_tokens = special }):totable()) do
      ids[#ids + 1] = id
      labels[#labels + 1] = trains and id or text.IGNORE_INDEX
    end
  end
  if kind == "completion" then
    add(ex.prompt, true, false)
    add(ex.completion, false, true)
  else
    add(ex.text, true, true)
  end
  ids[#ids + 1], labels[#labels + 1] = eos, eos
  return ids, labels
end

-- Lua arrays ids, labels of an example (untruncated). An example read from a file names its
-- place (ex.where = "file:line") in errors.
local function encode_arrays(tok, ex, opts, where)
  local kind = example_kind(ex, type(ex) == "table" and ex.where and where .. ": " .. ex.where or where, 3)
  if is_hf(tok) then return encode_hf(tok, ex, kind, eos_id_of(tok, opts, where)) end
  return encode_segments(tok, segments(ex, kind), eos_id_of(tok, opts, where))
end

local function check_context(context, where)
  if context ~= nil and (math.type(context) ~= "integer" or context < 2) then
    error(where .. ": context must be an integer >= 2, got " .. tostring(context), 3)
  end
end

--- encode_example(tokenizer, example, {context =, eos_id =}) -> ids, labels (int64 [T], 1-based)
-- ids: EOT, then the example's tokens (chat: the template above); labels: ids where the
-- token trains, text.IGNORE_INDEX (-100) elsewhere (the leading EOT, the prompt, role lines
-- and non-assistant messages). Labels are aligned with ids: the loss shifts them (HF's
-- convention, ft.models.causal_lm_loss), so position t's logits are scored on labels[t + 1].
-- context = T keeps the first T tokens. eos_id defaults to tokenizer.eos_id, else
-- ft.text.EOT_ID (the byte tokenizer's "\0"), and stands in for each EOT of the template.
-- A HuggingFace tokenizer (ft.tokenizer.from_pretrained) encodes chats with its own chat
-- template (ft.text.chat.encode: each assistant reply and its end-of-turn token train) and
-- prompts with its special tokens, without the leading EOT.
function text.encode_example(tok, ex, opts)
  local where = "ft.text.encode_example"
  opts = ft.check_options(where, opts, {"context", "eos_id"})
  check_tokenizer(tok, where)
  check_context(opts.context, where)
  local ids, labels = encode_arrays(tok, ex, opts, where)
  local T = math.min(#ids, opts.context or #ids)
  ids, labels = table.move(ids, 1, T, 1, {}), table.move(labels, 1, T, 1, {})
  return ft.tensor(ids, { dtype = "int64" }), ft.tensor(labels, { dtype = "int64" })
end

--- encode_prompt(tokenizer, example, {eos_id =}) -> ids int64 [T]: what generation starts from.
-- EOT, then the prompt ({prompt, completion}), the text ({text}), or the chat without its final
-- assistant message, followed by "<|assistant|>\n" ({messages}). With a HuggingFace tokenizer:
-- its chat template with the generation prompt, or the prompt with its special tokens.
function text.encode_prompt(tok, ex, opts)
  local where = "ft.text.encode_prompt"
  opts = ft.check_options(where, opts, {"eos_id"})
  check_tokenizer(tok, where)
  local segs
  if type(ex) == "table" and ex.messages ~= nil and is_hf(tok) then
    local msgs = ex.messages
    local last = #msgs > 0 and msgs[#msgs].role == "assistant" and #msgs - 1 or #msgs
    return tok:apply_chat_template(table.move(msgs, 1, last, 1, {}), { add_generation_prompt = true })
  elseif type(ex) == "table" and is_hf(tok) and (type(ex.prompt) == "string" or type(ex.text) == "string") then
    return tok:encode(ex.prompt or ex.text, { add_special_tokens = true })
  elseif type(ex) == "table" and ex.messages ~= nil then
    check_messages(ex.messages, where, 2)
    local msgs = ex.messages
    local last = msgs[#msgs].role == "assistant" and #msgs - 1 or #msgs
    segs = last > 0 and segments({ messages = table.move(msgs, 1, last, 1, {}) }, "chat") or {}
    segs[#segs + 1] = { "<|assistant|>\n", false, false }
  elseif type(ex) == "table" and type(ex.prompt) == "string" then
    segs = { { ex.prompt, false, false } }
  elseif type(ex) == "table" and type(ex.text) == "string" then
    segs = { { ex.text, false, false } }
  else
    error(where .. ": expected an example {prompt =}, {text =} or {messages =}", 2)
  end
  return ft.tensor((encode_segments(tok, segs, eos_id_of(tok, opts, where))), { dtype = "int64" })
end

--- collate(list of {ids, labels}, {pad_id = ft.text.EOT_ID, padding_side = "right", context =,
-- pad_to_multiple_of =}) -> {input_ids, attention_mask (1 = token, 0 = padding), labels}
-- int64 [B, W]: W is the longest example's length, rounded up to a multiple of
-- pad_to_multiple_of (as HF's collators) but not beyond context. ids and labels are int64
-- tensors or Lua arrays (as encode_example gives); padding gets label -100; context = T
-- keeps each example's first T tokens.
function text.collate(items, opts)
  local where = "ft.text.collate"
  opts = ft.check_options(where, opts, {"pad_id", "padding_side", "context", "pad_to_multiple_of"})
  local pad = ft.check.integer(where, "pad_id", opts.pad_id, corpus.EOT_ID)
  local side = opts.padding_side or "right"
  if side ~= "right" and side ~= "left" then
    error(where .. ": padding_side must be 'right' or 'left', got '" .. tostring(side) .. "'", 2)
  end
  check_context(opts.context, where)
  if type(items) ~= "table" or #items == 0 then error(where .. ": a non-empty list of {ids, labels} expected", 2) end
  local rows, width = {}, 0
  for i, item in ipairs(items) do
    local ids, labels = item.ids or item[1], item.labels or item[2]
    if ft.is_tensor(ids) then ids = ids:totable() end
    if ft.is_tensor(labels) then labels = labels:totable() end
    if type(ids) ~= "table" or type(labels) ~= "table" or #ids ~= #labels or #ids == 0 then
      error(("%s: item %d must hold ids and labels of the same non-zero length"):format(where, i), 2)
    end
    local n = math.min(#ids, opts.context or #ids)
    rows[i] = { ids, labels, n }
    width = math.max(width, n)
  end
  local multiple = opts.pad_to_multiple_of
  if multiple then
    if math.type(multiple) ~= "integer" or multiple < 1 then
      error(where .. ": pad_to_multiple_of must be a positive integer, got " .. tostring(multiple), 2)
    end
    width = (width + multiple - 1) // multiple * multiple
    if opts.context then width = math.min(width, opts.context) end
  end
  local out_ids, out_mask, out_labels = {}, {}, {}
  for i, row in ipairs(rows) do
    local ids, labels, n = row[1], row[2], row[3]
    local r, m, l = {}, {}, {}
    local offset = side == "left" and width - n or 0
    for j = 1, width do
      local k = j - offset
      if k >= 1 and k <= n then r[j], m[j], l[j] = ids[k], 1, labels[k]
      else r[j], m[j], l[j] = pad, 0, text.IGNORE_INDEX end
    end
    out_ids[i], out_mask[i], out_labels[i] = r, m, l
  end
  local function int64(t) return ft.tensor(t, { dtype = "int64" }) end
  return { input_ids = int64(out_ids), attention_mask = int64(out_mask), labels = int64(out_labels) }
end

-- Batches of variable-length examples are padded to a multiple of this: a handful of distinct
-- shapes lets ft's allocator reuse its buffers from batch to batch (it caches them by size).
local PAD_MULTIPLE = 32

-- ---- example sets ----------------------------------------------------------------------------------

-- Windows of at most C tokens over encoded examples ({ids, labels} Lua arrays). "split": an
-- example longer than C gives consecutive windows overlapping by one token, so that (the loss
-- shifting labels by one) each label is scored exactly once; "truncate": its first C tokens.
local function make_windows(encoded, C, overflow)
  local out = {}
  for _, e in ipairs(encoded) do
    local N, start = #e.ids, 1
    while true do
      local stop = C and math.min(start + C - 1, N) or N
      if stop > start then
        out[#out + 1] = { ids = table.move(e.ids, start, stop, 1, {}),
          labels = table.move(e.labels, start, stop, 1, {}) }
      end
      if stop == N or overflow == "truncate" then break end
      start = stop
    end
  end
  return out
end

local Examples = {}
Examples.__index = Examples
Examples.__name = "ft.text.ExampleSet"
--- ft.text.ExampleSet: examples encoded once by text.example_dataset, batched with
-- set:batch(B) or set:batches(batch_size); #set is the number of examples.
text.ExampleSet = Examples

--- A set of examples encoded once: example_dataset(examples, {tokenizer = bytes, context =,
-- overflow = "split" | "truncate", eos_id =, pad_to_multiple_of = 32}). Strings count as
-- {text = s}. With a context, an example longer than it becomes several windows ("split",
-- the default: nothing is lost) or its first context tokens ("truncate", as HF's
-- max_length). Fields: examples, encoded ({ids, labels} Lua arrays per example,
-- untruncated), windows (what batches hold), context, tokenizer. #set is the number of
-- examples.
function text.example_dataset(examples, opts)
  local where = "ft.text.example_dataset"
  opts = ft.check_options(where, opts, {"tokenizer", "context", "overflow", "eos_id", "pad_to_multiple_of"})
  ft.check.integer(where, "pad_to_multiple_of", opts.pad_to_multiple_of, nil, {min = 1})
  if type(examples) ~= "table" then error(where .. ": a list of examples expected, got " .. type(examples), 2) end
  check_context(opts.context, where)
  local overflow = opts.overflow or "split"
  if overflow ~= "split" and overflow ~= "truncate" then
    error(where .. ": overflow must be 'split' or 'truncate', got '" .. tostring(overflow) .. "'", 2)
  end
  local tok = opts.tokenizer or ft.tokenizer.bytes()
  check_tokenizer(tok, where)
  local list, encoded = {}, {}
  for i, ex in ipairs(examples) do
    if type(ex) == "string" then ex = { text = ex } end
    list[i] = ex
    local ids, labels = encode_arrays(tok, ex, opts, ("%s: example %d"):format(where, i))
    encoded[i] = { ids = ids, labels = labels }
  end
  if #list == 0 then error(where .. ": no examples", 2) end
  return setmetatable({ examples = list, encoded = encoded, windows = make_windows(encoded, opts.context, overflow),
    context = opts.context, tokenizer = tok, pad_to_multiple_of = opts.pad_to_multiple_of or PAD_MULTIPLE },
    Examples)
end

function Examples:__len() return #self.examples end

function Examples:__tostring()
  local tokens = 0
  for _, e in ipairs(self.encoded) do tokens = tokens + #e.ids end
  return ("ft.text.ExampleSet (%d examples, %d tokens, %d windows%s)"):format(#self.examples, tokens,
    #self.windows, self.context and " of <= " .. self.context or "")
end

--- B windows drawn at random (ft's RNG), collated: {input_ids, attention_mask, labels} [B, <= context].
function Examples:batch(B)
  if math.type(B) ~= "integer" or B < 1 then
    error("ft.text: batch size must be a positive integer, got " .. tostring(B), 2)
  end
  local picks = ft.randint(1, #self.windows, { B }):totable()
  local items = {}
  for i, k in ipairs(picks) do items[i] = self.windows[k] end
  return text.collate(items, { context = self.context, pad_to_multiple_of = self.pad_to_multiple_of })
end

--- Iterator over batches covering every window once: for b in set:batches(8, {shuffle = true})
-- (shuffled with ft's RNG; default in order). b = {input_ids, attention_mask, labels, indices}
-- (indices: the windows' positions in set.windows).
function Examples:batches(batch_size, opts)
  local where = "ft.text.ExampleSet:batches"
  opts = ft.check_options(where, opts, {"shuffle"})
  ft.check.boolean(where, "shuffle", opts.shuffle)
  batch_size = ft.check.integer(where, "batch_size", batch_size, 8, {min = 1})
  local n = #self.windows
  local order
  if opts and opts.shuffle then order = ft.randperm(n):totable()
  else order = {}; for i = 1, n do order[i] = i end end
  local pos = 0
  return function()
    if pos >= n then return nil end
    local items, indices = {}, {}
    for i = pos + 1, math.min(pos + batch_size, n) do
      indices[#indices + 1] = order[i]
      items[#items + 1] = self.windows[order[i]]
    end
    pos = pos + #items
    local b = text.collate(items, { context = self.context, pad_to_multiple_of = self.pad_to_multiple_of })
    b.indices = indices
    return b
  end
end

-- ---- perplexity ----------------------------------------------------------------------------------

--- Mean next-token loss of a model on a set of examples (an ExampleSet, or a list of strings
-- or examples, encoded with opts.tokenizer): every label that is not -100 is scored once,
-- given the tokens before it in its example. For entries ({text = s} or strings) that is the
-- bytes of s and the EOT after it, each predicted from the EOT that starts the example and
-- the bytes before it: the loss of the pretraining stream on whole entries. Examples longer
-- than the context are cut into windows that overlap by one token (later windows do not see
-- the earlier ones, as the pretraining windows).
-- opts: {context = (default model.max_positions, else 256), batch_size = 16, tokenizer =}.
-- -> {loss = mean nats per token, bits = loss / ln 2 (bits per byte for byte tokens),
--     perplexity = exp(loss), tokens = count, examples = count}
function text.perplexity(model, data, opts)
  local where = "ft.text.perplexity"
  opts = ft.check_options(where, opts, {"context", "batch_size", "tokenizer", "eos_id"})
  ft.check.integer(where, "batch_size", opts.batch_size, nil, {min = 1})
  if getmetatable(data) ~= Examples then
    data = text.example_dataset(data, { tokenizer = opts.tokenizer, eos_id = opts.eos_id })
  end
  local C = opts.context or model.max_positions or 256
  check_context(C, where)
  local windows = make_windows(data.encoded, C, "split")
  table.sort(windows, function(a, b) return #a.ids > #b.ids end)   -- less padding per batch
  local B = opts.batch_size or 16
  local F = ft.nn.functional
  local total, count = 0, 0
  local was_training = model.training
  model:eval()
  local ok, err = pcall(ft.no_grad, function()
    for i = 1, #windows, B do
      local batch = text.collate(table.move(windows, i, math.min(i + B - 1, #windows), 1, {}),
        { context = C, pad_to_multiple_of = PAD_MULTIPLE })
      local logits = model(batch.input_ids, { attention_mask = batch.attention_mask }).logits
      local T, V = logits:size(2), logits:size(3)   -- every window has at least 2 tokens
      local lb = batch.labels:narrow(2, 2, T - 1):reshape(-1)
      local lg = logits:narrow(2, 1, T - 1):reshape(-1, V)
      total = total + F.cross_entropy(lg, lb, { reduction = "sum", ignore_index = text.IGNORE_INDEX }):item()
      for _, v in ipairs(lb:totable()) do if v ~= text.IGNORE_INDEX then count = count + 1 end end
    end
  end)
  if was_training then model:train() end
  if not ok then error(err, 0) end
  if count == 0 then error(where .. ": no token to score (every label is -100)", 2) end
  local loss = total / count
  return { loss = loss, bits = loss / math.log(2), perplexity = math.exp(loss), tokens = count,
    examples = #data.encoded }
end

-- ---- examples from files ----------------------------------------------------------------------------

-- Entries of plain text: split on "%" lines, on blank lines, or not at all. lines: array of
-- lines; returns {text =, where = "path:line"} examples, trailing whitespace trimmed, blank ones dropped.
local function text_entries(lines, path, mode)
  local out, buf, first = {}, {}, nil
  local function flush()
    local entry = table.concat(buf, "\n"):gsub("%s+$", "")
    if entry:find("%S") then out[#out + 1] = { text = entry, where = ("%s:%d"):format(path, first) } end
    buf, first = {}, nil
  end
  for i, line in ipairs(lines) do
    local sep = (mode == "percent" and line == "%") or (mode == "blank" and not line:find("%S"))
    if sep then flush()
    else
      if not first and line:find("%S") then first = i end
      if first then buf[#buf + 1] = line end
    end
  end
  flush()
  return out
end

--- read_examples(path, {format = "auto" | "jsonl" | "text", split = "auto" | "percent" |
-- "blank" | "none"}) -> list of examples (each with where = "path:line" for messages).
--   JSONL (a .jsonl / .ndjson file, or one whose first line is a JSON object): one object per
--   line, {"prompt": ..., "completion": ...}, {"messages": [{"role": ..., "content": ...}, ...]}
--   (the chat format of hosted fine-tuning APIs; "weight": 0 on an assistant message leaves it
--   out of the loss) or {"text": ...}; blank lines are skipped.
--   Text: entries {text =} separated by lines holding a single "%" (fortune files), else by
--   blank lines, else the whole file is one document; split = "none" keeps a file with blank
--   lines as one document, "percent" / "blank" force a separator.
-- Errors name the file and line: "notes.jsonl:3: message 2 has role 'bot'; ...".
function text.read_examples(path, opts)
  local where = "ft.text.read_examples"
  opts = ft.check_options(where, opts, {"format", "split"})
  if type(path) ~= "string" then error(where .. ": a file path expected, got " .. type(path), 2) end
  local s = read_file(path):gsub("^\239\187\191", "")   -- a UTF-8 byte-order mark
  local lines = {}
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  if s:sub(-1) == "\n" then lines[#lines] = nil end
  local format = opts.format or "auto"
  if format == "auto" then
    if path:find("%.jsonl$") or path:find("%.ndjson$") then format = "jsonl"
    else
      format = "text"
      for _, line in ipairs(lines) do
        if line:find("%S") then
          local ok, v = pcall(ft.json.decode, line, { ordered = true })
          if ok and type(v) == "table" and v ~= ft.json.null and line:find("^%s*{") then format = "jsonl" end
          break
        end
      end
    end
  end
  local out = {}
  if format == "jsonl" then
    for i, line in ipairs(lines) do
      if line:find("%S") then
        local at = ("%s:%d"):format(path, i)
        local ok, v = pcall(ft.json.decode, line, { ordered = true })
        if not ok then error(("%s: invalid JSON: %s"):format(at, tostring(v):gsub("^ft%.json%.decode: ", "")), 2) end
        if type(v) ~= "table" or v == ft.json.null or v[1] ~= nil then
          error(at .. ": expected a JSON object per line", 2)
        end
        example_kind(v, at, 2)
        v.where = at
        out[#out + 1] = v
      end
    end
  elseif format == "text" then
    local split = opts.split or "auto"
    if split == "auto" then
      split = "none"
      for i, line in ipairs(lines) do
        if line == "%" then split = "percent"; break end
        if not line:find("%S") and i > 1 then split = "blank" end
      end
    elseif split ~= "percent" and split ~= "blank" and split ~= "none" then
      error(where .. ": split must be 'auto', 'percent', 'blank' or 'none', got '" .. tostring(split) .. "'", 2)
    end
    out = text_entries(lines, path, split)
  else
    error(where .. ": format must be 'auto', 'jsonl' or 'text', got '" .. tostring(format) .. "'", 2)
  end
  if #out == 0 then error(("%s: no examples in %s"):format(where, path), 2) end
  return out
end

-- ---- held-out categories for fine-tuning --------------------------------------------------------------

--- category_datasets(name, {context = 256, val_fraction = 0.1, test_fraction = 0.1, seed = 1,
-- tokenizer =, dir =}) -> train, val, test (ExampleSets of {text = entry}), info
-- One fortune category (e.g. one held out of pretraining: computers, politics, science,
-- songs-poems) split by entry with ft.text.split's seeded hash, for fine-tuning and perplexity.
-- info = {category =, train_entries =, val_entries =, test_entries =}.
function text.category_datasets(name, opts)
  local where = "ft.text.category_datasets"
  opts = ft.check_options(where, opts, {"context", "val_fraction", "test_fraction", "seed", "tokenizer", "dir"})
  if type(name) ~= "string" then error(where .. ": a category name expected, got " .. type(name), 2) end
  local ok, by_category = pcall(corpus.fortunes, { dir = opts.dir, categories = { name } })
  if not ok then error((tostring(by_category):gsub("^ft%.text%.fortunes", where)), 2) end
  local train, val, test = corpus.split(by_category[name], { val_fraction = opts.val_fraction or 0.1,
    test_fraction = opts.test_fraction or 0.1, seed = opts.seed or 1 })
  local ds = { context = opts.context or 256, tokenizer = opts.tokenizer }
  local function set(entries)
    local examples = {}
    for i, e in ipairs(entries) do examples[i] = { text = e } end
    return #examples > 0 and text.example_dataset(examples, ds) or nil
  end
  return set(train), set(val), set(test), { category = name, train_entries = #train, val_entries = #val,
    test_entries = #test }
end

return text
