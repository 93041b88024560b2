-- ft.pref.data: preference data from JSONL files, tokenized and masked as TRL's DPOTrainer and
-- KTOTrainer prepare it, and padded batches of it for ft.pref.logps.
--
--   local tok = ft.tokenizer.from_pretrained("Qwen3-0.6B")          -- or ft.tokenizer.bytes()
--   local pairs = ft.pref.load_pairs("prefs.jsonl", tok, {max_length = 512, max_prompt_length = 128})
--   for b in ft.pref.batches(pairs, {batch_size = 8, shuffle = true, seed = 1}) do
--     local pc, nc = ft.pref.logps(policy, b.chosen_ids, b.chosen_mask)
--     local pr, nr = ft.pref.logps(policy, b.rejected_ids, b.rejected_mask)
--     ...
--   end
--   local kto = ft.pref.load_unpaired("kto.jsonl", tok)                -- {prompt, completion, label}
--   local b = ft.pref.collate_unpaired(kto, {kl = true})               -- ids, mask, labels, kl_ids ...
--
-- Records: {"prompt", "chosen", "rejected"} (load_pairs) or {"prompt", "completion", "label"}
-- (load_unpaired, label true = desirable), either all text or all conversational: the prompt
-- a list of messages {role, content} and each completion a list of assistant messages. Other
-- keys of a record are ignored (as TRL ignores other columns).
--
-- Tokens, as TRL makes them (for each completion c of prompt p):
--   text, HF tokenizer     prompt = encode(p) with the tokenizer's special tokens (a bos),
--                          full = encode(p .. c) and the eos id unless it ends with one
--   text, byte tokenizer   EOT, the bytes of p .. c, EOT (ft.text's convention: EOT opens
--                          every example and ends what trains)
--   messages, HF           prompt = the chat template on p with add_generation_prompt = true,
--                          full = the template on p followed by c (what the template writes
--                          after the prompt, its end-of-turn token and newline included, is the
--                          completion; no eos is added)
--   messages, bytes        ft.text.format_chat's byte-level template, after an EOT
-- The completion's tokens are full's tokens after the prompt: full is tokenized as one text, so
-- a token that straddles the boundary (a prompt ending in a space) goes to the completion, and
-- the prompt part is the longest start that full, the chosen full and the rejected full share
-- with the tokenized prompt (TRL's rule; more than the last token differing is an error).
--
-- Truncation (TRL's max_length / max_prompt_length / max_completion_length rule, DPOTrainer
-- before TRL 0.12 and KTOTrainer): completions are first cut to max_completion_length tokens
-- (their start kept); then, when the prompt and the longer completion of the record exceed
-- max_length, the prompt is cut to max_prompt_length tokens (default: the room the longer
-- completion leaves), keeping its end (truncation_mode = "keep_end", the default) or its start
-- ("keep_start"); when they still exceed max_length, each completion keeps its first
-- max_length - max_prompt_length tokens (cut at its end). keep_end keeps the prompt's first
-- token when it is the tokenizer's bos (the byte tokenizer's EOT), as KTOTrainer adds it after
-- cutting. A completion that fills max_length by itself is an error unless max_prompt_length is
-- set (TRL's defaults are max_length = 512, max_prompt_length = 128; here nothing is cut unless
-- asked). Later DPOTrainers cut the whole sequence to max_length instead, keeping its start.
--
-- Errors name the file and line (or "record i" for a list of records) and the key:
--   ft.pref.load_pairs: prefs.jsonl:3: "chosen" must be a string or a list of messages, got a number
local ft = require "ft"
local check = require "ft.check"
local corpus = require "ft.text.corpus"
local shuffle = require "ft.data.shuffle"

local M = {}

local ARRAY_MT = getmetatable(ft.json.array())
local ROLE_SET = {}
for _, r in ipairs(require("ft.text.chat").ROLES) do ROLE_SET[r] = true end

-- ---- reading ------------------------------------------------------------------------------------

-- Whether v is a JSON array (or a plain Lua sequence), as opposed to an object.
local function is_list(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  if mt == ARRAY_MT then return true end
  if mt ~= nil then return false end   -- a decoded object (its key order in the metatable)
  return next(v) == nil or v[1] ~= nil
end

-- What a JSON value is, for messages: "a number", "null", "a list", "an object" ...
local function kind_of(v)
  if v == ft.json.null then return "null" end
  if type(v) == "table" then return is_list(v) and "a list" or "an object" end
  if type(v) == "string" then return "a string" end
  return "a " .. type(v)
end

-- The records of a JSONL file and their line numbers; errors start with where.
local function read_records(path, where)
  if type(path) ~= "string" then error(("%s: a file path expected, got %s"):format(where, kind_of(path)), 0) end
  local ok, s = pcall(require("ft.fs").read, path)
  if not ok then error(("%s: %s"):format(where, tostring(s)), 0) end
  s = s:gsub("^\239\187\191", "")   -- a UTF-8 byte-order mark
  local records, lines, n = {}, {}, 0
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if line:find("%S") then
      local at = ("%s:%d"):format(path, n)
      local decoded, v = pcall(ft.json.decode, line, { ordered = true })
      if not decoded then
        error(("%s: %s: invalid JSON: %s"):format(where, at, tostring(v):gsub("^ft%.json%.decode: ", "")), 0)
      end
      if type(v) ~= "table" or is_list(v) then
        error(("%s: %s: expected a JSON object per line, got %s"):format(where, at, kind_of(v)), 0)
      end
      records[#records + 1], lines[#lines + 1] = v, n
    end
  end
  if #records == 0 then error(("%s: %s holds no records"):format(where, path), 0) end
  return records, lines
end

--- ft.pref.read_jsonl(path) -> records, lines: the JSON objects of a JSONL file (one per
-- line, blank lines skipped; objects keep their key order) and the line number of each.
-- Errors name the file and line: invalid JSON, a line that is not an object, or no record.
function M.read_jsonl(path)
  return read_records(path, "ft.pref.read_jsonl")
end

-- records (a path or a list) -> records, a function giving the place of record i.
local function records_of(source, where)
  if type(source) == "string" then
    local records, lines = read_records(source, where)
    return records, function(i) return ("%s:%d"):format(source, lines[i]) end
  end
  if not is_list(source) or #source == 0 then
    error(("%s: a JSONL path or a non-empty list of records expected, got %s"):format(where,
      type(source) == "table" and "an empty or non-list table" or kind_of(source)), 0)
  end
  for i, r in ipairs(source) do
    if type(r) ~= "table" or is_list(r) then
      error(("%s: record %d: expected an object (a table with keys), got %s"):format(where, i, kind_of(r)), 0)
    end
  end
  return source, function(i) return "record " .. i end
end

-- ---- checking records -----------------------------------------------------------------------------

-- A record's field check: raises "<where>: <at>: "<key>" <msg>".
local function failer(where, at)
  return function(key, msg, ...)
    error(("%s: %s: \"%s\" %s"):format(where, at, key, msg:format(...)), 0)
  end
end

-- Checks messages (a list) of field key; completion = true wants assistant messages only.
local function check_messages(msgs, key, completion, fail)
  if #msgs == 0 then fail(key, "is an empty list of messages") end
  for i, m in ipairs(msgs) do
    if type(m) ~= "table" or is_list(m) then fail(key, "message %d must be an object {role, content}, got %s", i, kind_of(m)) end
    if type(m.role) ~= "string" or not ROLE_SET[m.role] then
      fail(key, "message %d has role %s; roles: system, user, assistant, tool", i,
        type(m.role) == "string" and "'" .. m.role .. "'" or kind_of(m.role))
    end
    local tool_call = m.role == "assistant" and type(m.tool_calls) == "table"
    if type(m.content) ~= "string" and not (tool_call and m.content == nil) then
      fail(key, "message %d (%s) must have a string \"content\", got %s", i, m.role, kind_of(m.content))
    end
    if completion then
      if m.role ~= "assistant" then
        fail(key, "message %d has role '%s': a completion holds assistant messages only", i, m.role)
      end
      if m.content == "" then fail(key, "message %d has empty content", i) end
    end
  end
  if not completion then
    local last = msgs[#msgs].role
    if last == "assistant" or last == "system" then
      fail(key, "ends with a message of role '%s'; a prompt ends with the turn the completion answers (user or tool)",
        last)
    end
  end
end

-- The kind ("text" or "chat") of field key of record r, checked; like: the prompt's kind.
local function field_kind(r, key, fail, like, completion)
  local v = r[key]
  if v == nil then return nil end
  local kind
  if type(v) == "string" then kind = "text"
  elseif is_list(v) then kind = "chat"
  else fail(key, "must be a string or a list of messages, got %s", kind_of(v)) end
  if like and kind ~= like then
    fail(key, "is %s but \"prompt\" is %s: a record is all text or all messages",
      kind == "text" and "a string" or "a list of messages", like == "text" and "a string" or "a list of messages")
  end
  if kind == "chat" then check_messages(v, key, completion, fail)
  elseif completion and v == "" then fail(key, "is empty") end
  return kind
end

-- Checks the keys of a record: the kind ("text" / "chat").
local function check_record(r, keys, fail, what)
  for _, key in ipairs(keys) do
    if r[key] == nil or r[key] == ft.json.null then
      fail(key, "is missing (%s)", what)
    end
  end
  local kind = field_kind(r, "prompt", fail)
  for i = 2, #keys do
    if keys[i] ~= "label" then field_kind(r, keys[i], fail, kind, true) end
  end
  return kind
end

-- ---- tokenizing -------------------------------------------------------------------------------------

local function is_hf(tok) return type(tok.apply_chat_template) == "function" end

local function ids_of(t) return ft.is_tensor(t) and t:totable() or t end

-- The encoder of a tokenizer: enc.prompt(p, kind), enc.full(p, c, kind) -> Lua arrays of ids;
-- enc.bos (the id a prompt may start with, kept by keep_end), enc.pad_id.
local function encoder(tok, opts, where)
  if type(tok) ~= "table" or type(tok.encode) ~= "function" then
    error(where .. ": a tokenizer with :encode(string) expected (ft.tokenizer.bytes() or ft.tokenizer.from_pretrained)", 0)
  end
  local enc = {}
  if is_hf(tok) then
    local template = opts.chat_template or tok.chat_template
    local eos = tok.eos_id
    enc.bos, enc.pad_id = tok.bos_id, tok.pad_id or tok.eos_id or 1
    local function render(msgs, gen, fail, key)
      if type(template) ~= "string" then
        fail(key, "is a list of messages but the tokenizer has no chat template (pass opts.chat_template, or give text)")
      end
      local ok, ids = pcall(tok.apply_chat_template, tok, msgs, { add_generation_prompt = gen,
        chat_template = opts.chat_template, variables = opts.chat_variables })
      if not ok then fail(key, "cannot be rendered with the chat template: %s", tostring(ids)) end
      return ids_of(ids)
    end
    function enc.prompt(p, kind, fail)
      if kind == "chat" then return render(p, true, fail, "prompt") end
      return ids_of(tok:encode(p, { add_special_tokens = true }))
    end
    function enc.full(p, c, kind, fail, key)
      if kind == "chat" then
        local all = table.move(p, 1, #p, 1, {})
        table.move(c, 1, #c, #all + 1, all)
        return render(all, false, fail, key)
      end
      if not eos then fail(key, "cannot be ended: the tokenizer has no eos token") end
      local ids = ids_of(tok:encode(p .. c, { add_special_tokens = true }))
      if ids[#ids] ~= eos then ids[#ids + 1] = eos end
      return ids
    end
  else
    local text = require "ft.text"
    local eos = tok.eos_id or tok.eos_token_id or corpus.EOT_ID
    enc.bos, enc.pad_id = eos, tok.pad_id or eos
    local function bytes(s)
      local ids = { eos }
      for _, id in ipairs(ids_of(tok:encode(s))) do ids[#ids + 1] = id end
      return ids
    end
    function enc.prompt(p, kind)
      if kind == "chat" then return bytes(text.format_chat(p, { add_generation_prompt = true })) end
      return bytes(p)
    end
    function enc.full(p, c, kind)
      if kind == "chat" then
        local all = table.move(p, 1, #p, 1, {})
        table.move(c, 1, #c, #all + 1, all)
        return bytes(text.format_chat(all, { add_generation_prompt = false }))
      end
      local ids = bytes(p .. c)
      if ids[#ids] ~= eos then ids[#ids + 1] = eos end
      return ids
    end
  end
  return enc
end

-- The length of the common start of arrays a and b.
local function common_prefix(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    if a[i] ~= b[i] then return i - 1 end
  end
  return n
end

-- Tokenizes record r: prompt ids, and the completion ids of each key in keys (same order).
local function tokenize(enc, r, kind, keys, fail)
  local prompt = enc.prompt(r.prompt, kind, fail)
  local fulls, shared = {}, #prompt
  for i, key in ipairs(keys) do
    local full = enc.full(r.prompt, r[key], kind, fail, key)
    local k = common_prefix(prompt, full)
    if k < #prompt - 1 or k == #full then
      fail(key, "does not extend the prompt: the tokens of prompt + %s start differently from the prompt's "
        .. "(at token %d of %d)%s", key, k + 1, #prompt,
        kind == "chat" and "; the chat template renders the prompt differently when a reply follows" or "")
    end
    fulls[i], shared = full, math.min(shared, k)
  end
  if shared == 0 then
    if #prompt == 0 then
      fail("prompt", "gives no tokens: the completion's first token would have nothing to be predicted from")
    end
    fail("prompt", "keeps no token of its own: its token merges with the completion's first when they are "
      .. "tokenized together (end the prompt with a separator)")
  end
  local comps = {}
  for i, full in ipairs(fulls) do comps[i] = table.move(full, shared + 1, #full, 1, {}) end
  return table.move(fulls[1], 1, shared, 1, {}), comps
end

-- ---- truncation -------------------------------------------------------------------------------------

local TRUNCATION_MODES = { "keep_end", "keep_start" }

-- The truncation limits of opts, checked.
local function limits_of(opts, where)
  local lim = {
    max_length = check.integer(where, "max_length", opts.max_length, nil, { min = 2 }),
    max_prompt_length = check.integer(where, "max_prompt_length", opts.max_prompt_length, nil, { min = 1 }),
    max_completion_length = check.integer(where, "max_completion_length", opts.max_completion_length, nil, { min = 1 }),
    truncation_mode = check.one_of(where, "truncation_mode", opts.truncation_mode, "keep_end", TRUNCATION_MODES),
  }
  if lim.max_prompt_length then
    if not lim.max_length then
      error(where .. ": max_prompt_length needs max_length (the prompt is cut only when prompt and completion "
        .. "exceed max_length, as TRL does)", 0)
    end
    if lim.max_prompt_length >= lim.max_length then
      error(("%s: max_prompt_length (%d) must be below max_length (%d): the completion needs room"):format(where,
        lim.max_prompt_length, lim.max_length), 0)
    end
  end
  return lim
end

-- prompt, completions (Lua arrays) cut to the limits (TRL's rule, see the top of the file) ->
-- prompt, completions (new arrays when cut), prompt_cut, completion_cut (booleans). keys name
-- the completions in errors.
local function fit(prompt, comps, lim, bos, keys, fail)
  local out, completion_cut = {}, false
  local N = lim.max_completion_length
  for i, c in ipairs(comps) do
    if N and #c > N then c, completion_cut = table.move(c, 1, N, 1, {}), true end
    out[i] = c
  end
  local max_length = lim.max_length
  if not max_length then return prompt, out, false, completion_cut end
  local longest = 1
  for i, c in ipairs(out) do if #c > #out[longest] then longest = i end end
  local L = #out[longest]
  local prompt_cut = false
  if #prompt + L > max_length then
    local P = lim.max_prompt_length or max_length - L
    if P < 1 then
      fail(keys[longest], "has %d tokens: with max_length = %d that leaves no room for the prompt (set "
        .. "max_prompt_length to cut completions, as TRL does, or raise max_length)", L, max_length)
    end
    if #prompt > P then
      local head = (lim.truncation_mode == "keep_end" and bos ~= nil and prompt[1] == bos) and 1 or 0
      if lim.truncation_mode == "keep_start" or P <= head then
        prompt = table.move(prompt, 1, P, 1, {})
      else
        local cut = { prompt[1] }
        if head == 0 then cut = {} end
        prompt = table.move(prompt, #prompt - (P - head) + 1, #prompt, #cut + 1, cut)
      end
      prompt_cut = true
    end
    if #prompt + L > max_length then
      local room = max_length - P
      for i, c in ipairs(out) do
        if #c > room then out[i], completion_cut = table.move(c, 1, room, 1, {}), true end
      end
    end
  end
  return prompt, out, prompt_cut, completion_cut
end

-- ---- loading ----------------------------------------------------------------------------------------

local LOAD_OPTIONS = { "max_length", "max_prompt_length", "max_completion_length", "truncation_mode",
  "chat_template", "chat_variables" }

local function check_load_options(where, opts)
  opts = ft.check_options(where, opts, LOAD_OPTIONS)
  if opts.chat_template ~= nil and type(opts.chat_template) ~= "string" then
    check.fail(where, "chat_template", "a template string", opts.chat_template)
  end
  if opts.chat_variables ~= nil and (type(opts.chat_variables) ~= "table" or is_list(opts.chat_variables) and
      next(opts.chat_variables) ~= nil) then
    check.fail(where, "chat_variables", "a table of template variables {name = value}", opts.chat_variables)
  end
  return opts, limits_of(opts, where)
end

-- Loads records with keys (prompt first), building an example with make(ids...).
local function load(where, source, tok, opts, keys, what, make)
  local lim
  opts, lim = check_load_options(where, opts)
  local enc = encoder(tok, opts, where)
  local records, place = records_of(source, where)
  local examples = {}
  local info = { records = #records, truncated_prompts = 0, truncated_completions = 0, pad_id = enc.pad_id }
  local tkeys = {}   -- the keys of the completions
  for i = 2, #keys do if keys[i] ~= "label" then tkeys[#tkeys + 1] = keys[i] end end
  for i, r in ipairs(records) do
    local at = place(i)
    local fail = failer(where, at)
    local kind = check_record(r, keys, fail, what)
    local prompt, comps = tokenize(enc, r, kind, tkeys, fail)
    local prompt_cut, completion_cut
    prompt, comps, prompt_cut, completion_cut = fit(prompt, comps, lim, enc.bos, tkeys, fail)
    local ex = make(r, prompt, comps, fail)
    ex.where, ex.kind, ex.pad_id = at, kind, enc.pad_id
    ex.truncated = prompt_cut or completion_cut
    ex.limits, ex.bos = lim, enc.bos
    if prompt_cut then info.truncated_prompts = info.truncated_prompts + 1 end
    if completion_cut then info.truncated_completions = info.truncated_completions + 1 end
    examples[i] = ex
  end
  return examples, info
end

--- ft.pref.load_pairs(path_or_records, tokenizer [, opts]) -> examples, info: preference pairs
-- {"prompt", "chosen", "rejected"} (a JSONL path, or a list of such tables), tokenized as TRL's
-- DPOTrainer does (see the top of this file): text, or conversational (prompt a list of
-- messages, chosen / rejected lists of assistant messages) rendered with the tokenizer's chat
-- template (the byte tokenizer: ft.text.format_chat's). Each example is {prompt_ids, chosen_ids,
-- rejected_ids (Lua arrays of 1-based ids: the prompt, and each completion after it), where =
-- "file:line", kind = "text" | "chat", truncated = boolean, pad_id}.
-- opts: max_length, max_prompt_length, max_completion_length, truncation_mode = "keep_end" |
-- "keep_start" (TRL's rule, the top of this file), chat_template (a template string instead of
-- the tokenizer's), chat_variables ({enable_thinking = false} ...: more template variables).
-- info = {records, truncated_prompts, truncated_completions (counts of records cut), pad_id}.
-- Errors name the file, the line and the key (missing, wrong type, empty completion, a
-- completion message that is not the assistant's, invalid JSON, a completion with no room).
function M.load_pairs(source, tok, opts)
  return load("ft.pref.load_pairs", source, tok, opts, { "prompt", "chosen", "rejected" },
    "a preference record has \"prompt\", \"chosen\" and \"rejected\"",
    function(_, prompt, comps)
      return { prompt_ids = prompt, chosen_ids = comps[1], rejected_ids = comps[2] }
    end)
end

--- ft.pref.load_unpaired(path_or_records, tokenizer [, opts]) -> examples, info: KTO's unpaired
-- records {"prompt", "completion", "label"} (label true = desirable, false = undesirable),
-- tokenized as load_pairs does (same options, same errors; a label that is not a boolean is
-- one). Each example is {prompt_ids, completion_ids, label (boolean), where, kind, truncated,
-- pad_id, limits (the truncation options, which collate_unpaired's KL rows are cut to)}.
function M.load_unpaired(source, tok, opts)
  return load("ft.pref.load_unpaired", source, tok, opts, { "prompt", "completion", "label" },
    "an unpaired record has \"prompt\", \"completion\" and \"label\"",
    function(r, prompt, comps, fail)
      if type(r.label) ~= "boolean" then fail("label", "must be true or false, got %s", kind_of(r.label)) end
      return { prompt_ids = prompt, completion_ids = comps[1], label = r.label }
    end)
end

-- ---- collation --------------------------------------------------------------------------------------

-- Checks a list of examples with the given array fields; "<where>: example i: ..." errors.
local function check_examples(where, examples, fields)
  if not is_list(examples) or #examples == 0 then
    error(where .. ": a non-empty list of examples expected (ft.pref.load_pairs / load_unpaired)", 0)
  end
  for i, ex in ipairs(examples) do
    if type(ex) ~= "table" then error(("%s: example %d is %s, not an example table"):format(where, i, kind_of(ex)), 0) end
    for _, f in ipairs(fields) do
      local v = ex[f]
      if type(v) ~= "table" or #v == 0 then
        error(("%s: example %d has no %s (a non-empty list of token ids)%s"):format(where, i, f,
          ex.chosen_ids and f == "completion_ids" and "; it is a pair: use collate_pairs"
          or ex.completion_ids and f == "chosen_ids" and "; it is unpaired: use collate_unpaired" or ""), 0)
      end
      for j, id in ipairs(v) do
        if math.type(id) ~= "integer" or id < 1 then
          error(("%s: example %d: %s[%d] is %s, not a 1-based token id"):format(where, i, f, j, tostring(id)), 0)
        end
      end
    end
  end
end

local COLLATE_OPTIONS = { "pad_id", "pad_to_multiple_of" }

local function pad_options(where, opts, examples)
  local pad = check.integer(where, "pad_id", opts.pad_id, nil, { min = 1 })
  if not pad then pad = examples[1].pad_id or 1 end
  return pad, check.integer(where, "pad_to_multiple_of", opts.pad_to_multiple_of, nil, { min = 1 })
end

-- rows (each {prompt, completion}) padded on the right to width -> ids int64 [B, width], mask
-- float32 (1 on the completion), attention_mask int64 (1 on every token).
local function pad_rows(rows, width, pad)
  local ids, mask, att = {}, {}, {}
  for b, row in ipairs(rows) do
    local p, c = row[1], row[2]
    local r, m, a = {}, {}, {}
    for j = 1, width do
      if j <= #p then r[j], m[j], a[j] = p[j], 0, 1
      elseif j <= #p + #c then r[j], m[j], a[j] = c[j - #p], 1, 1
      else r[j], m[j], a[j] = pad, 0, 0 end
    end
    ids[b], mask[b], att[b] = r, m, a
  end
  return ft.tensor(ids, { dtype = "int64" }), ft.tensor(mask), ft.tensor(att, { dtype = "int64" })
end

-- The width of rows, rounded up to a multiple.
local function width_of(rows, multiple)
  local w = 0
  for _, row in ipairs(rows) do w = math.max(w, #row[1] + #row[2]) end
  if multiple then w = (w + multiple - 1) // multiple * multiple end
  return w
end

--- ft.pref.collate_pairs(examples [, {pad_id =, pad_to_multiple_of =}]) -> batch: the pairs of
-- ft.pref.load_pairs, each row its prompt then its completion, padded on the right to one
-- width T for chosen and rejected (so they can be concatenated into one forward):
-- {chosen_ids, rejected_ids (int64 [B, T], 1-based), chosen_mask, rejected_mask (float32
-- [B, T], 1 on the completion's tokens only: ft.pref.logps's mask), chosen_attention_mask,
-- rejected_attention_mask (int64 [B, T], 1 = token, 0 = padding), where (the examples'
-- places)}. Right padding needs no attention mask in a causal model (no token attends to the
-- pads after it), but ft.models take it. pad_id defaults to the examples' (the tokenizer's pad,
-- else eos id); pad_to_multiple_of rounds T up.
function M.collate_pairs(examples, opts)
  local where = "ft.pref.collate_pairs"
  opts = ft.check_options(where, opts, COLLATE_OPTIONS)
  check_examples(where, examples, { "prompt_ids", "chosen_ids", "rejected_ids" })
  local pad, multiple = pad_options(where, opts, examples)
  local chosen, rejected, places = {}, {}, {}
  for i, ex in ipairs(examples) do
    chosen[i], rejected[i], places[i] = { ex.prompt_ids, ex.chosen_ids }, { ex.prompt_ids, ex.rejected_ids }, ex.where
  end
  local T = math.max(width_of(chosen, multiple), width_of(rejected, multiple))
  local b = { where = places }
  b.chosen_ids, b.chosen_mask, b.chosen_attention_mask = pad_rows(chosen, T, pad)
  b.rejected_ids, b.rejected_mask, b.rejected_attention_mask = pad_rows(rejected, T, pad)
  return b
end

--- ft.pref.collate_unpaired(examples [, {pad_id =, pad_to_multiple_of =, kl = false}]) -> batch:
-- the examples of ft.pref.load_unpaired padded on the right: {ids int64 [B, T], mask float32
-- [B, T] (1 on the completion), attention_mask int64, labels float32 [B] (1 desirable, 0 not:
-- ft.pref.kto_loss's labels), where}. kl = true adds KTO's KL reference rows as TRL builds them:
-- prompt i followed by the completion of example i - 1 (example B for the first), cut to the
-- examples' limits: kl_ids, kl_mask, kl_attention_mask [B, T'] (needs B >= 2).
function M.collate_unpaired(examples, opts)
  local where = "ft.pref.collate_unpaired"
  opts = ft.check_options(where, opts, { "pad_id", "pad_to_multiple_of", "kl" })
  local kl = check.boolean(where, "kl", opts.kl, false)
  check_examples(where, examples, { "prompt_ids", "completion_ids" })
  local pad, multiple = pad_options(where, opts, examples)
  local rows, labels, places = {}, {}, {}
  for i, ex in ipairs(examples) do
    if type(ex.label) ~= "boolean" then
      error(("%s: example %d has label %s; a label is true (desirable) or false"):format(where, i, check.show(ex.label)), 0)
    end
    rows[i], labels[i], places[i] = { ex.prompt_ids, ex.completion_ids }, ex.label and 1 or 0, ex.where
  end
  local b = { labels = ft.tensor(labels), where = places }
  b.ids, b.mask, b.attention_mask = pad_rows(rows, width_of(rows, multiple), pad)
  if kl then
    local B = #examples
    if B < 2 then error(where .. ": kl = true needs at least 2 examples (prompt i is paired with completion i - 1)", 0) end
    local kl_rows = {}
    for i, ex in ipairs(examples) do
      local other = examples[(i - 2) % B + 1]
      local at = ex.where or ("example " .. i)
      local prompt, comps = fit(ex.prompt_ids, { other.completion_ids }, ex.limits or {}, ex.bos, { "completion" },
        failer(where, at .. " (KL row)"))
      kl_rows[i] = { prompt, comps[1] }
    end
    b.kl_ids, b.kl_mask, b.kl_attention_mask = pad_rows(kl_rows, width_of(kl_rows, multiple), pad)
  end
  return b
end

--- ft.pref.batches(examples [, {batch_size = 8, shuffle = false, seed =, epoch = 1, drop_last =
-- false, pad_id =, pad_to_multiple_of =, kl =}]) -> iterator over the collated batches of one
-- pass: `for b in ft.pref.batches(pairs, {batch_size = 4, shuffle = true, seed = 1}) do ... end`.
-- Pairs (load_pairs) go through collate_pairs, unpaired examples (load_unpaired) through
-- collate_unpaired (kl only for them); each batch also has indices (the examples' positions).
-- With shuffle, the order is ft.data.shuffle's permutation of (seed, epoch), as ft.data.loader
-- draws its epochs (without a seed, from ft's generator: ft.manual_seed reproduces it).
function M.batches(examples, opts)
  local where = "ft.pref.batches"
  opts = ft.check_options(where, opts, { "batch_size", "shuffle", "seed", "epoch", "drop_last", "pad_id",
    "pad_to_multiple_of", "kl" })
  local bs = check.integer(where, "batch_size", opts.batch_size, 8, { min = 1 })
  local shuffled = check.boolean(where, "shuffle", opts.shuffle, false)
  local epoch = check.integer(where, "epoch", opts.epoch, 1, { min = 1 })
  local drop_last = check.boolean(where, "drop_last", opts.drop_last, false)
  if not is_list(examples) or #examples == 0 then
    error(where .. ": a non-empty list of examples expected (ft.pref.load_pairs / load_unpaired)", 0)
  end
  local paired = type(examples[1]) == "table" and examples[1].chosen_ids ~= nil
  if paired and opts.kl ~= nil then error(where .. ": option 'kl' is for unpaired examples (KTO)", 0) end
  local collate_opts = { pad_id = opts.pad_id, pad_to_multiple_of = opts.pad_to_multiple_of, kl = opts.kl }
  local collate = paired and M.collate_pairs or M.collate_unpaired
  if paired then collate_opts.kl = nil end
  local n = #examples
  local order
  if shuffled then
    local seed = shuffle.seed(opts.seed, where)
    if opts.seed ~= nil then seed = seed ~ shuffle.mix(epoch * shuffle.GOLDEN) end
    order = shuffle.permutation(n, seed)
  else
    if opts.seed ~= nil then error(where .. ": seed is for shuffle = true", 0) end
    order = {}
    for i = 1, n do order[i] = i end
  end
  local count = drop_last and n // bs or (n + bs - 1) // bs
  local k = 0
  return function()
    k = k + 1
    if k > count then return nil end
    local items, indices = {}, {}
    for i = (k - 1) * bs + 1, math.min(k * bs, n) do
      indices[#indices + 1] = order[i]
      items[#items + 1] = examples[order[i]]
    end
    local b = collate(items, collate_opts)
    b.indices = indices
    return b
  end
end

return M
