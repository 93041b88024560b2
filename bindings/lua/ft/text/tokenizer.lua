-- ft.tokenizer: text <-> token ids.
--
--   local tok = ft.tokenizer.bytes()
--   local ids = tok:encode("hello")          -- int64 [5]: byte b -> id b + 1 (1-based)
--   tok:decode(ids)                          -- "hello"
--   local batch = tok:encode_batch({"hi", "hello"})   -- {input_ids = [2,5], attention_mask = [2,5]}
--   local hf = ft.tokenizer.from_pretrained("path/to/model")  -- a HuggingFace tokenizer.json
--
-- The byte-level tokenizer has 256 ids, one per byte, and no special tokens; it suits the
-- byte-level presets of ft.models ("gpt-s", "llama-s"). from_pretrained gives a HuggingFace
-- tokenizer (ft.text.hf_tokenizer); both have the same methods (encode, decode, encode_batch,
-- decode_batch, token_to_id, id_to_token) and fields (vocab_size, bos_id, eos_id, pad_id).
local ft = require "ft"

local tokenizer = {}

local CHUNK = 4096   -- string.byte/char and table.unpack move at most this many values at once

local Bytes = {}
Bytes.__index = Bytes
Bytes.__name = "ft.tokenizer.Bytes"

--- tokenizer.from_pretrained(dir [, opts]) -> the HuggingFace tokenizer of a model folder
-- (tokenizer.json and its configs): ft.text.hf_tokenizer.from_pretrained, which see.
function tokenizer.from_pretrained(dir, opts)
  return require("ft.text.hf_tokenizer").from_pretrained(dir, opts)
end

--- The byte-level tokenizer. opts: {pad_id = 1} (the id used to pad batches).
function tokenizer.bytes(opts)
  opts = ft.check_options("ft.tokenizer.bytes", opts, {"pad_id"})
  local pad_id = ft.check.integer("ft.tokenizer.bytes", "pad_id", opts.pad_id, 1, {min = 1, max = 256})
  return setmetatable({ vocab_size = 256, pad_id = pad_id }, Bytes)
end

-- Lua array of the ids of s.
local function byte_ids(s)
  local ids = {}
  for i = 1, #s, CHUNK do
    local part = { s:byte(i, math.min(i + CHUNK - 1, #s)) }
    for j = 1, #part do ids[#ids + 1] = part[j] + 1 end
  end
  return ids
end

-- The first max_length ids of a row (all of them when max_length is nil).
local function truncate(ids, max_length)
  if max_length and #ids > max_length then
    for i = #ids, max_length + 1, -1 do ids[i] = nil end
  end
  return ids
end

--- encode(str [, {add_special_tokens =, truncation =, max_length =}]) -> int64 [#str] (at most
-- max_length ids; there are no special tokens to add).
function Bytes:encode(s, opts)
  opts = ft.check_options("ft.tokenizer.encode", opts, {"add_special_tokens", "truncation", "max_length"})
  if type(s) ~= "string" then error("ft.tokenizer: encode expects a string, got " .. type(s), 2) end
  ft.check.boolean("ft.tokenizer.encode", "add_special_tokens", opts.add_special_tokens)
  local max_length = ft.check.integer("ft.tokenizer.encode", "max_length", opts.max_length, nil, {min = 1})
  if ft.check.boolean("ft.tokenizer.encode", "truncation", opts.truncation, true) == false then max_length = nil end
  if #s == 0 then return ft.zeros({ 0 }, { dtype = "int64" }) end
  return ft.tensor(truncate(byte_ids(s), max_length), { dtype = "int64" })
end

--- token_to_id(s) -> the id of a one-byte string, or nil.
function Bytes:token_to_id(s)
  if type(s) ~= "string" then error("ft.tokenizer.token_to_id: a string expected, got " .. type(s), 2) end
  return #s == 1 and s:byte() + 1 or nil
end

--- id_to_token(id) -> the one-byte string of id 1..256, or nil.
function Bytes:id_to_token(id)
  id = ft.check.integer("ft.tokenizer.id_to_token", "id", id)
  return id and id >= 1 and id <= 256 and string.char(id - 1) or nil
end

--- decode(ids [, {skip_special_tokens =}]) -> string; ids: a 1-D int64 tensor or a Lua array
-- of ids 1..256 (there are no special tokens to skip).
function Bytes:decode(ids, opts)
  opts = ft.check_options("ft.tokenizer.decode", opts, {"skip_special_tokens", "clean_up_tokenization_spaces"})
  if ft.is_tensor(ids) then
    if ids:dim() ~= 1 then
      error(("ft.tokenizer: decode expects a 1-D tensor, got [%s] (decode_batch takes [B,T])"):format(
        table.concat(ids:shape(), ",")), 2)
    end
    ids = ids:totable()
  end
  local bytes = {}
  for i, id in ipairs(ids) do
    if math.type(id) ~= "integer" and not (type(id) == "number" and id == math.floor(id)) or id < 1 or id > 256 then
      error(("ft.tokenizer: id %s at position %d is not a byte id (1..256)"):format(tostring(id), i), 2)
    end
    bytes[i] = math.tointeger(id) - 1
  end
  local parts = {}
  for i = 1, #bytes, CHUNK do
    parts[#parts + 1] = string.char(table.unpack(bytes, i, math.min(i + CHUNK - 1, #bytes)))
  end
  return table.concat(parts)
end

--- encode_batch({str, ...}, {padding_side = "right" | "left", pad_id =, truncation =, max_length =,
-- padding = true}) ->
-- {input_ids = int64 [B, Tmax], attention_mask = int64 [B, Tmax] (1 = token, 0 = padding)}
-- (max_length truncates each row; padding = false requires rows of one length).
function Bytes:encode_batch(strings, opts)
  local where = "ft.tokenizer.encode_batch"
  opts = ft.check_options(where, opts, {"padding_side", "pad_id", "padding", "truncation", "max_length",
                                        "add_special_tokens"})
  ft.check.integer(where, "pad_id", opts.pad_id)
  ft.check.boolean(where, "add_special_tokens", opts.add_special_tokens)
  local max_length = ft.check.integer(where, "max_length", opts.max_length, nil, {min = 1})
  if ft.check.boolean(where, "truncation", opts.truncation, true) == false then max_length = nil end
  local padding = opts.padding
  if padding ~= nil and padding ~= true and padding ~= false and padding ~= "longest" then
    ft.check.fail(where, "padding", "true, false or 'longest'", padding)
  end
  if type(strings) ~= "table" then
    error("ft.tokenizer.encode_batch: a list of strings expected, got " .. type(strings), 2)
  end
  local side = opts.padding_side or "right"
  if side ~= "right" and side ~= "left" then
    error("ft.tokenizer: padding_side must be 'right' or 'left', got '" .. tostring(side) .. "'", 2)
  end
  local pad = opts.pad_id or self.pad_id
  local rows, width = {}, 0
  for i, s in ipairs(strings) do
    if type(s) ~= "string" then
      error(("ft.tokenizer.encode_batch: entry %d is a %s, not a string"):format(i, type(s)), 2)
    end
    rows[i] = truncate(byte_ids(s), max_length)
    width = math.max(width, #rows[i])
  end
  if padding == false then
    for i, row in ipairs(rows) do
      if #row ~= width then error(("%s: entry %d has %d ids, not %d (padding = false)"):format(where, i, #row, width), 2) end
    end
  end
  if #rows == 0 or width == 0 then error("ft.tokenizer: encode_batch needs at least one non-empty string", 2) end
  local ids, mask = {}, {}
  for i, row in ipairs(rows) do
    local r, m, n = {}, {}, #row
    local offset = side == "left" and width - n or 0
    for j = 1, width do
      local k = j - offset
      if k >= 1 and k <= n then r[j], m[j] = row[k], 1 else r[j], m[j] = pad, 0 end
    end
    ids[i], mask[i] = r, m
  end
  return { input_ids = ft.tensor(ids, { dtype = "int64" }), attention_mask = ft.tensor(mask, { dtype = "int64" }) }
end

--- decode_batch(ids [B,T], {attention_mask=}) -> array of strings (padding dropped when a
-- mask is given).
function Bytes:decode_batch(ids, opts)
  opts = ft.check_options("ft.tokenizer.decode_batch", opts, {"attention_mask", "skip_special_tokens"})
  if not ft.is_tensor(ids) or ids:dim() ~= 2 then
    error("ft.tokenizer.decode_batch: ids must be a 2-D tensor [B,T], got " .. ft.check.show(ids), 2)
  end
  if opts.attention_mask ~= nil and not (ft.is_tensor(opts.attention_mask)
      and table.concat(opts.attention_mask:shape(), ",") == table.concat(ids:shape(), ",")) then
    error("ft.tokenizer.decode_batch: attention_mask must be a tensor of the ids' shape, got "
          .. ft.check.show(opts.attention_mask), 2)
  end
  local rows = ids:totable()
  local mask = opts and opts.attention_mask and opts.attention_mask:totable()
  local out = {}
  for i, row in ipairs(rows) do
    if mask then
      local kept = {}
      for j, id in ipairs(row) do if mask[i][j] ~= 0 then kept[#kept + 1] = id end end
      row = kept
    end
    out[i] = self:decode(row)
  end
  return out
end

return tokenizer
