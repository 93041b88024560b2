-- ft.text.corpus: text corpora for language-model training (ft.text re-exports it).
--
--   local corpus = ft.text.fortunes()                      -- {computers = {entry, ...}, ...}
--   local train_e, val_e = ft.text.split(corpus.wisdom, {val_fraction = 0.1, seed = 1})
--   local train = ft.text.byte_dataset(train_e, {context = 256})
--   local val = ft.text.byte_dataset(val_e, {context = 256})
--   local x, y = train:batch(8)                            -- int64 [8,256] each, y = next bytes
--   for x, y in val:windows(16) do ... end                 -- every validation window, in order
--
--   -- all of it at once: categories minus held-out ones, split per category
--   local train, val, info = ft.text.fortune_datasets{context = 256, held_out = {"science"}}
--
--   -- fine-tuning data: examples, the chat template, masked labels, padded batches
--   local examples = ft.text.read_examples("data.jsonl")   -- prompt/completion, chat or text
--   local ids, labels = ft.text.encode_example(tok, examples[1], {context = 256})
--   local set = ft.text.example_dataset(examples, {context = 256})
--   for b in set:batches(8, {shuffle = true}) do model(b.input_ids, b) ... end
--   local train, val, test = ft.text.category_datasets("science", {seed = 1})
--   ft.text.perplexity(model, test).loss                 -- nats per byte, as pretraining
--
-- Ids are byte ids of ft.tokenizer.bytes(): byte b -> id b + 1 (1..256). Entries are joined
-- into one stream with a separator after every entry; the default, text.EOT ("\0", id
-- text.EOT_ID = 1), ends each entry with a single byte that generate() can stop on
-- (eos_token_id = ft.text.EOT_ID).
local ft = require "ft"

local text = {}

text.EOT = "\0"
text.EOT_ID = 1
text.FORTUNES_DIR = "/usr/share/games/fortunes"   -- Debian's fortunes and fortunes-min

local function fortunes_dir(opts)
  return opts.dir or os.getenv("FT_FORTUNES_DIR") or text.FORTUNES_DIR
end

-- Whole files through the one reader (ft.fs.read: an error names the file).
local read_file = require("ft.fs").read

local function as_set(list, what, where)
  local set = {}
  if list == nil then return set end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then error(("%s: %s must be a list of names, got %s"):format(where, what, type(list)), 3) end
  for _, name in ipairs(list) do set[name] = true end
  return set
end

-- ---- the fortunes corpus ---------------------------------------------------------------

--- Entries of one fortune file: the texts between lines holding a single "%", each without
-- its trailing whitespace; blank entries are dropped.
function text.read_fortune_file(path)
  local s = read_file(path)
  local entries, lines = {}, {}
  local function flush()
    local entry = table.concat(lines, "\n"):gsub("%s+$", "")
    if entry:find("%S") then entries[#entries + 1] = entry end
    lines = {}
  end
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do
    if line == "%" then flush() else lines[#lines + 1] = line end
  end
  flush()   -- the last entry when the file does not end with a "%" line
  return entries
end

--- Sorted names of the fortune categories in opts.dir (default $FT_FORTUNES_DIR, then
-- /usr/share/games/fortunes): the files without an extension. The .dat index files and the
-- .u8 links are skipped, and a file whose contents repeat an earlier one (a link under another
-- name) is listed once, under its first name in sorted order.
function text.fortune_categories(opts)
  opts = ft.check_options("ft.text.fortune_categories", opts, {"dir"})
  ft.check.string("ft.text.fortune_categories", "dir", opts.dir)
  local dir = fortunes_dir(opts)
  local ok, listing = pcall(ft._listdir, dir)
  if not ok then
    error(("ft.text.fortunes: no fortune files in %s: apt-get install fortunes (or pass dir= / set FT_FORTUNES_DIR)")
      :format(dir), 2)
  end
  local names = {}
  for name, kind in pairs(listing) do
    if kind == "file" and not name:find("[.]") then names[#names + 1] = name end
  end
  table.sort(names)
  local seen, out = {}, {}
  for _, name in ipairs(names) do
    local content = read_file(dir .. "/" .. name)
    if not seen[content] then
      seen[content] = true
      out[#out + 1] = name
    end
  end
  if #out == 0 then
    error(("ft.text.fortunes: no fortune files in %s: apt-get install fortunes (or pass dir= / set FT_FORTUNES_DIR)")
      :format(dir), 2)
  end
  return out
end

--- The fortunes corpus: {category = {entry, ...}} with the entries in file order.
-- opts: dir=, categories = {names} (only these; an unknown name is an error),
-- exclude = {names} (left out, e.g. categories held out for fine-tuning).
function text.fortunes(opts)
  local where = "ft.text.fortunes"
  opts = ft.check_options(where, opts, {"dir", "categories", "exclude"})
  local dir = fortunes_dir(opts)
  local available = text.fortune_categories({dir = opts.dir})
  local exclude = as_set(opts.exclude, "exclude", where)
  local wanted
  if opts.categories ~= nil then
    wanted = as_set(opts.categories, "categories", where)
    local known = {}
    for _, name in ipairs(available) do known[name] = true end
    for name in pairs(wanted) do
      if not known[name] then
        error(("%s: no category '%s' in %s; categories: %s"):format(where, name, dir,
          table.concat(available, ", ")), 2)
      end
    end
  end
  local corpus = {}
  for _, name in ipairs(available) do
    if not exclude[name] and (not wanted or wanted[name]) then
      corpus[name] = text.read_fortune_file(dir .. "/" .. name)
    end
  end
  return corpus
end

--- Sorted category names of a corpus table.
function text.categories(corpus)
  local names = {}
  for name in pairs(corpus) do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- ---- deterministic split by entry --------------------------------------------------------

-- 64-bit FNV-1a of s, mixed with the seed through splitmix64's finaliser. Integer arithmetic
-- wraps in Lua 5.4, so the value is the same on every platform.
local function entry_hash(s, seed)
  local h = -3750763034362895579 ~ seed   -- FNV offset basis 0xcbf29ce484222325
  local CHUNK = 4096
  for i = 1, #s, CHUNK do
    local part = { s:byte(i, math.min(i + CHUNK - 1, #s)) }
    for j = 1, #part do h = (h ~ part[j]) * 1099511628211 end
  end
  h = (h ~ (h >> 30)) * -4658895280553007687
  h = (h ~ (h >> 27)) * -7723592293110705685
  return h ~ (h >> 31)
end

--- Splits a list of entries into train and validation lists (original order kept), and a
-- test list when opts.test_fraction > 0. An entry goes to validation when a seeded hash of
-- its text falls in the first val_fraction of the hash range, to test when it falls in the
-- next test_fraction, so the split does not depend on the order of the list or on any RNG
-- state, identical entries always land on the same side, and adding a test split leaves the
-- validation list as it was. opts: {val_fraction = 0.1, test_fraction = 0, seed = 1}.
-- -> train, val, test
function text.split(entries, opts)
  opts = ft.check_options("ft.text.split", opts, {"val_fraction", "test_fraction", "seed"})
  if type(entries) ~= "table" then error("ft.text.split: entries must be a list, got " .. type(entries), 2) end
  local frac = opts.val_fraction or 0.1
  local test_frac = opts.test_fraction or 0
  local seed = opts.seed or 1
  if type(frac) ~= "number" or frac < 0 or frac > 1 then
    error("ft.text.split: val_fraction must be a number in [0, 1], got " .. tostring(frac), 2)
  end
  if type(test_frac) ~= "number" or test_frac < 0 or frac + test_frac > 1 then
    error(("ft.text.split: test_fraction must be a number in [0, 1 - val_fraction], got %s"):format(
      tostring(test_frac)), 2)
  end
  if math.type(seed) ~= "integer" then error("ft.text.split: seed must be an integer, got " .. tostring(seed), 2) end
  local threshold, test_threshold = frac * 2 ^ 53, (frac + test_frac) * 2 ^ 53
  local train, val, test = {}, {}, {}
  for _, e in ipairs(entries) do
    local u = (entry_hash(e, seed) >> 11) -- 53 uniform bits
    if u < threshold then val[#val + 1] = e
    elseif u < test_threshold then test[#test + 1] = e
    else train[#train + 1] = e end
  end
  return train, val, test
end

-- ---- token streams -----------------------------------------------------------------------

local Stream = {}
Stream.__index = Stream
Stream.__name = "ft.text.ByteStream"
--- ft.text.ByteStream: a token stream made by text.byte_dataset, drawn from in windows of
-- context + 1 tokens (stream:batch(B), stream:windows(batch_size)); #stream is its length.
text.ByteStream = Stream

--- A byte-level stream for next-token training: entries joined with the separator after
-- each one and encoded with ft.tokenizer.bytes(). opts: {context = T (required),
-- separator = text.EOT, tokenizer = ft.tokenizer.bytes()}.
-- Fields: ids (int64 [N]), context, n_entries, separator, tokenizer.
function text.byte_dataset(entries, opts)
  local where = "ft.text.byte_dataset"
  opts = ft.check_options(where, opts, {"context", "separator", "tokenizer"})
  local T = opts.context
  if math.type(T) ~= "integer" or T < 1 then error(where .. ": context must be a positive integer, got " .. tostring(T), 2) end
  local sep = opts.separator or text.EOT
  if type(sep) ~= "string" then error(where .. ": separator must be a string, got " .. type(sep), 2) end
  if type(entries) ~= "table" then error(where .. ": entries must be a list of strings, got " .. type(entries), 2) end
  local parts = {}
  for i, e in ipairs(entries) do
    if type(e) ~= "string" then error(("%s: entry %d is a %s, not a string"):format(where, i, type(e)), 2) end
    parts[#parts + 1] = e
    parts[#parts + 1] = sep
  end
  local tok = opts.tokenizer or ft.tokenizer.bytes()
  local ids = tok:encode(table.concat(parts))
  if ids:numel() < T + 1 then
    error(("%s: %d entries give %d tokens, fewer than one window of context + 1 = %d"):format(where, #entries,
      ids:numel(), T + 1), 2)
  end
  return setmetatable({ ids = ids, context = T, n_entries = #entries, separator = sep, tokenizer = tok }, Stream)
end

function Stream:__len() return self.ids:numel() end

function Stream:__tostring()
  return ("ft.text.ByteStream (%d entries, %d tokens, context %d)"):format(self.n_entries, self.ids:numel(),
    self.context)
end

-- Windows of T + 1 tokens starting at the 1-based positions `starts` (int64 [B]) -> x, y.
function Stream:_gather(starts)
  local B, T = starts:numel(), self.context
  local idx = starts:reshape(B, 1) + ft.arange(0, T + 1):reshape(1, T + 1)   -- [B, T+1]
  local w = self.ids:index_select(1, idx:reshape(-1)):reshape(B, T + 1)
  return w:narrow(2, 1, T):contiguous(), w:narrow(2, 2, T):contiguous()
end

--- B windows at random offsets (ft's RNG: ft.manual_seed makes it repeatable) ->
-- x, y int64 [B, T] with y[b][t] = x[b][t + 1] (the token after x[b][t] in the stream).
function Stream:batch(B)
  if math.type(B) ~= "integer" or B < 1 then error("ft.text: batch size must be a positive integer, got " .. tostring(B), 2) end
  local last = self.ids:numel() - self.context   -- the last start that leaves room for y
  return self:_gather(ft.randint(1, last, { B }))
end

--- Number of non-overlapping windows (stride T) the stream holds.
function Stream:num_windows()
  return (self.ids:numel() - 1) // self.context
end

--- Iterator over the non-overlapping windows in stream order, batch_size at a time (the
-- last batch may be smaller): for x, y in stream:windows(16) do ... end. Deterministic, for
-- validation losses. opts.max_windows = n keeps n windows evenly spread over the stream
-- (a cheaper estimate that still covers every part of it).
function Stream:windows(batch_size, opts)
  local where = "ft.text.ByteStream:windows"
  opts = ft.check_options(where, opts, {"max_windows"})
  batch_size = ft.check.integer(where, "batch_size", batch_size, 16, {min = 1})
  local total, T = self:num_windows(), self.context
  local n = math.min(total, ft.check.integer(where, "max_windows", opts.max_windows, total, {min = 1}))
  local done = 0
  return function()
    if done >= n then return nil end
    local b = math.min(batch_size, n - done)
    local starts = {}
    for i = 1, b do starts[i] = (done + i - 1) * total // n * T + 1 end
    done = done + b
    return self:_gather(ft.tensor(starts, { dtype = "int64" }))
  end
end

-- ---- the fortunes pretraining set ------------------------------------------------------------

--- Train and validation streams over the fortunes corpus minus held-out categories, split by
-- entry within each category (text.split). opts: {context = (required), held_out = {names},
-- val_fraction = 0.05, seed = 1, separator = text.EOT, dir =}.
-- -> train, val (ByteStreams), info {categories = {names used}, held_out = {names},
--    train_entries =, val_entries =}
function text.fortune_datasets(opts)
  opts = ft.check_options("ft.text.fortune_datasets", opts, {"context", "held_out", "val_fraction", "seed",
    "separator", "dir"})
  local held_out = opts.held_out or {}
  if type(held_out) == "string" then held_out = { held_out } end
  local available = {}
  for _, name in ipairs(text.fortune_categories({dir = opts.dir})) do available[name] = true end
  for _, name in ipairs(held_out) do
    if not available[name] then
      error(("ft.text.fortune_datasets: held-out category '%s' is not in %s"):format(name, fortunes_dir(opts)), 2)
    end
  end
  local corpus = text.fortunes({ dir = opts.dir, exclude = held_out })
  local names = text.categories(corpus)
  local train_e, val_e = {}, {}
  for _, name in ipairs(names) do
    local tr, va = text.split(corpus[name], { val_fraction = opts.val_fraction or 0.05, seed = opts.seed or 1 })
    table.move(tr, 1, #tr, #train_e + 1, train_e)
    table.move(va, 1, #va, #val_e + 1, val_e)
  end
  local ds_opts = { context = opts.context, separator = opts.separator }
  local train = text.byte_dataset(train_e, ds_opts)
  local val = text.byte_dataset(val_e, ds_opts)
  local held = table.move(held_out, 1, #held_out, 1, {})
  table.sort(held)
  return train, val, { categories = names, held_out = held, train_entries = #train_e, val_entries = #val_e }
end

--- load_checkpoint(path) -> model (eval mode), meta: a checkpoint of scripts/pretrain_text.lua
-- (e.g. models/gpt_fortunes.h5, or a moe-s run's moe_fortunes.h5). The model is built from
-- meta.config (an HF config: GPT2LMHeadModel, MixtralForCausalLM or any registered architecture,
-- through ft.models.new) and loaded strictly; meta is the file's metadata with config, held_out,
-- separator and (MoE) expert_shares decoded from JSON.
function text.load_checkpoint(path)
  local where = "ft.text.load_checkpoint"
  local sd, meta = ft.load(path)
  if type(meta) ~= "table" or type(meta.config) ~= "string" then
    error(("%s: %s has no model config in its metadata (not written by scripts/pretrain_text.lua?)"):format(where,
      path), 2)
  end
  local out = {}
  for k, v in pairs(meta) do out[k] = v end
  for _, k in ipairs({ "config", "held_out", "separator", "expert_shares" }) do
    if type(meta[k]) == "string" then out[k] = ft.json.decode(meta[k]) end
  end
  local model = ft.models.new(out.config)
  ft.models.load_hf_state_dict(model, sd, path, where)
  model:eval()
  return model, out
end

-- Fine-tuning examples (read_examples, encode_example, collate, example_dataset, perplexity,
-- category_datasets ...) live in ft/text_examples.lua.
return text
