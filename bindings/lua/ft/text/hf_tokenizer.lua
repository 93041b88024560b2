-- ft.text.hf_tokenizer: HuggingFace tokenizers (tokenizer.json), the same ids as HF's
-- tokenizers library, run by the C core (core/text).
--
--   local tok = ft.tokenizer.from_pretrained("models/qwen3")   -- a folder with tokenizer.json
--   local ids = tok:encode("Hello world")                       -- int64 [T], 1-based (HF id + 1)
--   tok:decode(ids)                                             -- "Hello world"
--   tok:decode(ids, {skip_special_tokens = true})
--   local b = tok:encode_batch({"hi", "hello there"}, {padding = true, truncation = true, max_length = 512})
--   -- b.input_ids, b.attention_mask: int64 [B, T]
--   tok:token_to_id("<|im_end|>")  tok:id_to_token(9708)  tok.vocab_size  tok.eos_id  tok.chat_template
--
-- The folder's tokenizer_config.json (and special_tokens_map.json, generation_config.json
-- when present) give the bos / eos / pad / unk tokens, the chat template(s), model_max_length,
-- padding_side, clean_up_tokenization_spaces (true when unset, as @huggingface/tokenizers)
-- and additional_special_tokens (skipped by skip_special_tokens). The post-processor of
-- tokenizer.json decides which special tokens encode adds, as in @huggingface/tokenizers;
-- add_bos_token / add_eos_token are read as fields only.
local ft = require "ft"
local check = require "ft.check"

local hf = {}

local HF = {}
HF.__index = HF
HF.__name = "ft.text.HFTokenizer"

--- ft.text.hf_tokenizer.HFTokenizer: a HuggingFace tokenizer, made by from_pretrained. Fields:
-- vocab_size; bos_id, eos_id, pad_id, unk_id (1-based, or nil) and bos_token ... unk_token;
-- eos_ids (eos_id and generation_config.json's eos_token_id); chat_template and
-- chat_templates (by name); model_max_length (nil: no limit); padding_side, truncation_side;
-- clean_up_tokenization_spaces; add_bos_token, add_eos_token; tokenizer_class; dir; config.
hf.HFTokenizer = HF

local C = ft._tokenizer

local function read_json(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  f:close()
  return ft.json.read(path)
end

-- A special token of tokenizer_config.json: a string, an AddedToken object or null.
local function token_string(v)
  if type(v) == "string" then return v end
  if type(v) == "table" and type(v.content) == "string" then return v.content end
  return nil
end

-- A config number that is an exact integer below 2^53, else nil (model_max_length is often
-- 1e30, meaning "no limit").
local function plain_integer(v)
  if type(v) ~= "number" or v ~= v or v >= 2 ^ 53 or v < 1 then return nil end
  return math.tointeger(v)
end

--- hf.from_pretrained(dir [, {split_special_tokens =}]) -> the tokenizer of a HuggingFace
-- folder (tokenizer.json required; tokenizer_config.json, special_tokens_map.json and
-- generation_config.json read when present). split_special_tokens = true tokenizes special
-- tokens written in the text as plain text (default: the config's, else false).
-- Errors name the file and, for tokenizer.json, the JSON path of what is wrong or unsupported.
function hf.from_pretrained(dir, opts)
  local where = "ft.tokenizer.from_pretrained"
  opts = ft.check_options(where, opts, {"split_special_tokens"})
  if type(dir) ~= "string" or dir == "" then check.fail(where, "dir", "a folder path", dir) end
  dir = dir:gsub("/+$", "")
  local json = dir .. "/tokenizer.json"
  local f = io.open(json, "rb")
  if not f then error(where .. ": no tokenizer.json in " .. dir, 2) end
  f:close()
  local c = C.load(json)
  local config = read_json(dir .. "/tokenizer_config.json") or {}
  local map = read_json(dir .. "/special_tokens_map.json") or {}
  local gen = read_json(dir .. "/generation_config.json") or {}
  local self = setmetatable({ _c = c, dir = dir, config = config }, HF)
  self.vocab_size = c:vocab_size()
  for _, name in ipairs({"bos", "eos", "pad", "unk"}) do
    local key = name .. "_token"
    local s = token_string(config[key]) or token_string(map[key])
    self[key] = s
    self[name .. "_id"] = s and c:token_to_id(s) or nil
  end
  -- generation_config.json may name more ids that end a generation.
  local eos_ids = {}
  if self.eos_id then eos_ids[1] = self.eos_id end
  local ge = gen.eos_token_id
  for _, id in ipairs(type(ge) == "table" and ge or {ge}) do
    if math.type(id) == "integer" and id >= 0 and id < self.vocab_size then
      local seen = false
      for _, e in ipairs(eos_ids) do seen = seen or e == id + 1 end
      if not seen then eos_ids[#eos_ids + 1] = id + 1 end
    end
  end
  self.eos_ids = eos_ids
  -- chat_template: one string, or a list of {name =, template =} (the "default" one is
  -- chat_template; all of them are in chat_templates by name).
  local ct = config.chat_template
  if type(ct) == "string" then
    self.chat_template = ct
    self.chat_templates = { default = ct }
  elseif type(ct) == "table" then
    self.chat_templates = {}
    for _, t in ipairs(ct) do
      if type(t) == "table" and type(t.name) == "string" and type(t.template) == "string" then
        self.chat_templates[t.name] = t.template
      end
    end
    self.chat_template = self.chat_templates.default or (#ct == 1 and self.chat_templates[ct[1].name]) or nil
  end
  self.model_max_length = plain_integer(config.model_max_length)
  -- tokenizer_config.json's padding_side, else the direction of tokenizer.json's "padding".
  local json_padding = c:padding()
  if config.padding_side == "left" or config.padding_side == "right" then
    self.padding_side = config.padding_side
  else
    self.padding_side = json_padding and json_padding.left and "left" or "right"
  end
  self.truncation_side = config.truncation_side == "left" and "left" or "right"
  self.clean_up_tokenization_spaces = config.clean_up_tokenization_spaces ~= false
  self.add_bos_token = config.add_bos_token == true
  self.add_eos_token = config.add_eos_token == true
  self.tokenizer_class = type(config.tokenizer_class) == "string" and config.tokenizer_class or nil
  -- additional_special_tokens are skipped by skip_special_tokens too (as @huggingface/tokenizers).
  for _, src in ipairs({config.additional_special_tokens, map.additional_special_tokens}) do
    if type(src) == "table" then
      for _, t in ipairs(src) do
        local id = token_string(t) and c:token_to_id(token_string(t))
        if id then c:mark_special(id) end
      end
    end
  end
  local split = opts.split_special_tokens
  if split == nil then split = config.split_special_tokens == true end
  c:set_split_special(check.boolean(where, "split_special_tokens", split))
  return self
end

local function text_arg(where, s)
  if type(s) ~= "string" then error(where .. ": a string expected, got " .. type(s), 3) end
  return s
end

-- The truncation length asked for: max_length, else model_max_length (nil: none).
local function truncation_length(self, where, opts)
  local max_length = check.integer(where, "max_length", opts.max_length, nil, {min = 1})
  if not check.boolean(where, "truncation", opts.truncation, max_length ~= nil and opts.padding ~= "max_length") then
    return nil
  end
  return max_length or self.model_max_length
end

--- tok:encode(text [, {add_special_tokens = true, text_pair =, truncation =, max_length =}])
-- -> int64 [T] of 1-based ids. text_pair encodes a second text with the pair template.
-- truncation = true cuts to max_length (default model_max_length) ids, special tokens
-- included (max_length alone truncates too). Text that is not valid UTF-8 is an error
-- naming the byte offset.
function HF:encode(text, opts)
  local where = "ft.tokenizer.encode"
  opts = ft.check_options(where, opts, {"add_special_tokens", "text_pair", "truncation", "max_length"})
  text_arg(where, text)
  local pair = opts.text_pair
  if pair ~= nil then text_arg(where, pair) end
  local add = check.boolean(where, "add_special_tokens", opts.add_special_tokens, true)
  local max_length = truncation_length(self, where, opts)
  return self._c:encode(text, add, pair, max_length, self.truncation_side == "left")
end

--- tok:tokenize(text [, {add_special_tokens = false}]) -> array of token strings.
function HF:tokenize(text, opts)
  local where = "ft.tokenizer.tokenize"
  opts = ft.check_options(where, opts, {"add_special_tokens"})
  text_arg(where, text)
  local ids = self._c:encode(text, check.boolean(where, "add_special_tokens", opts.add_special_tokens, false)):totable()
  local out = {}
  for i, id in ipairs(ids) do out[i] = self._c:id_to_token(id) end
  return out
end

--- tok:decode(ids [, {skip_special_tokens = false, clean_up_tokenization_spaces =}]) -> string.
-- ids: a 1-D int64 tensor or a Lua array of 1-based ids. clean_up_tokenization_spaces
-- defaults to tokenizer_config.json's (true when unset).
function HF:decode(ids, opts)
  local where = "ft.tokenizer.decode"
  opts = ft.check_options(where, opts, {"skip_special_tokens", "clean_up_tokenization_spaces"})
  if ft.is_tensor(ids) and ids:dim() ~= 1 then
    error(("%s: expects a 1-D tensor, got [%s] (decode_batch takes [B,T])"):format(where,
      table.concat(ids:shape(), ",")), 2)
  end
  local skip = check.boolean(where, "skip_special_tokens", opts.skip_special_tokens, false)
  local clean = check.boolean(where, "clean_up_tokenization_spaces", opts.clean_up_tokenization_spaces,
                              self.clean_up_tokenization_spaces)
  return self._c:decode(ids, skip, clean)
end

--- tok:encode_batch({text, ...} [, {padding = true, truncation =, max_length =, padding_side =,
-- pad_to_multiple_of =, pad_id =, add_special_tokens = true}]) ->
-- {input_ids = int64 [B, T], attention_mask = int64 [B, T] (1 = token, 0 = padding)}.
-- padding: true / "longest" (to the longest row), "max_length" (to max_length), false (rows
-- must then have one length). padding_side defaults to the config's ("right"); pad_id to the
-- pad token's (an error when the tokenizer has none and padding is needed). The "padding" of
-- tokenizer.json, when it has one, gives the defaults of pad_id, its length and multiple.
function HF:encode_batch(texts, opts)
  local where = "ft.tokenizer.encode_batch"
  opts = ft.check_options(where, opts, {"padding", "truncation", "max_length", "padding_side",
                                        "pad_to_multiple_of", "pad_id", "add_special_tokens"})
  if type(texts) ~= "table" then error(where .. ": a list of strings expected, got " .. type(texts), 2) end
  if #texts == 0 then error(where .. ": an empty list of texts", 2) end
  local padding = opts.padding
  if padding == nil then padding = true end
  if padding == "longest" then padding = true elseif padding == "do_not_pad" then padding = false end
  if padding ~= true and padding ~= false and padding ~= "max_length" then
    check.fail(where, "padding", "true, false, 'longest' or 'max_length'", padding)
  end
  local side = check.one_of(where, "padding_side", opts.padding_side, self.padding_side, {"right", "left"})
  local cfg = self._c:padding()   -- tokenizer.json's "padding": defaults for what opts leave out
  local multiple = check.integer(where, "pad_to_multiple_of", opts.pad_to_multiple_of, cfg and cfg.multiple_of or 0,
                                 {min = 0})
  local add = check.boolean(where, "add_special_tokens", opts.add_special_tokens, true)
  local max_length = truncation_length(self, where, opts)
  local length = 0
  if padding == true and opts.padding == nil and cfg and cfg.length > 0 then length = cfg.length end
  if padding == "max_length" then
    length = check.integer(where, "max_length", opts.max_length, self.model_max_length, {min = 1})
    if not length then error(where .. ": padding = 'max_length' needs max_length", 2) end
  end
  local pad_id = check.integer(where, "pad_id", opts.pad_id, self.pad_id, {min = 1, max = self.vocab_size})
  if not pad_id and cfg then pad_id = cfg.pad_id end
  local ids, mask = self._c:encode_batch(texts, add, max_length, self.truncation_side == "left", pad_id or 1,
                                         side == "left", length, padding and multiple or 0)
  if not padding or not pad_id then
    -- No padding wanted or possible: every row must fill the width.
    local m = mask:sum():item()
    if m ~= mask:numel() then
      if not pad_id then
        error(where .. ": the texts differ in length and the tokenizer has no pad token (pass pad_id)", 2)
      end
      error(where .. ": the texts differ in length (padding = false)", 2)
    end
  end
  return { input_ids = ids, attention_mask = mask }
end

--- tok:decode_batch(ids [B,T] [, {attention_mask =, skip_special_tokens =}]) -> array of
-- strings (padding dropped when a mask is given).
function HF:decode_batch(ids, opts)
  local where = "ft.tokenizer.decode_batch"
  opts = ft.check_options(where, opts, {"attention_mask", "skip_special_tokens", "clean_up_tokenization_spaces"})
  if not ft.is_tensor(ids) or ids:dim() ~= 2 then
    error(where .. ": ids must be a 2-D tensor [B,T], got " .. check.show(ids), 2)
  end
  local mask = opts.attention_mask
  if mask ~= nil and not (ft.is_tensor(mask) and table.concat(mask:shape(), ",") == table.concat(ids:shape(), ",")) then
    error(where .. ": attention_mask must be a tensor of the ids' shape, got " .. check.show(mask), 2)
  end
  local rows, m = ids:totable(), mask and mask:totable()
  local dopts = { skip_special_tokens = opts.skip_special_tokens,
                  clean_up_tokenization_spaces = opts.clean_up_tokenization_spaces }
  local out = {}
  for i, row in ipairs(rows) do
    if m then
      local kept = {}
      for j, id in ipairs(row) do if m[i][j] ~= 0 then kept[#kept + 1] = id end end
      row = kept
    end
    out[i] = self:decode(row, dopts)
  end
  return out
end

--- tok:token_to_id(token) -> its 1-based id (added tokens included), or nil.
function HF:token_to_id(token)
  return self._c:token_to_id(text_arg("ft.tokenizer.token_to_id", token))
end

--- tok:id_to_token(id) -> the token string of a 1-based id, or nil.
function HF:id_to_token(id)
  check.required("ft.tokenizer.id_to_token", "id", id)
  return self._c:id_to_token(check.integer("ft.tokenizer.id_to_token", "id", id))
end

--- tok:is_special(id) -> whether the 1-based id is a special token (skipped by
-- skip_special_tokens).
function HF:is_special(id)
  return self._c:is_special(check.integer("ft.tokenizer.is_special", "id", id, 0))
end

--- tok:added_tokens() -> array of {id = 1-based id, content = string, special = boolean}
-- (tokenizer.json's added_tokens, in file order).
function HF:added_tokens()
  local out = {}
  for i, id in ipairs(self._c:added_ids()) do
    out[i] = { id = id, content = self._c:id_to_token(id), special = self._c:is_special(id) }
  end
  return out
end

--- tok:num_special_tokens_to_add([pair]) -> how many ids encode adds around one text (two
-- texts when pair is true) with add_special_tokens on.
function HF:num_special_tokens_to_add(pair)
  return self._c:num_special_tokens(pair == true)
end

--- tok:apply_chat_template(messages, opts): renders a conversation with tok.chat_template;
-- it is ft.text.chat.apply(tok, messages, opts), which see for the options.
function HF:apply_chat_template(messages, opts)
  return require("ft.text.chat").apply(self, messages, opts)
end

HF.__tostring = function(self)
  return ("ft.text.HFTokenizer(%s, vocab_size = %d)"):format(self.dir, self.vocab_size)
end

return hf
