-- ft.text.jinja.tojson: Python's json.dumps, as transformers' `tojson` filter calls it
-- (ensure_ascii=False unless asked, indent, separators, sort_keys).
--
--   local dumps = require("ft.text.jinja.tojson").dumps
--   dumps(ft.json.decode('{"b": 1.0, "a": "é"}'))   --> '{"a": "é", "b": 1.0}'
--   dumps(v, {indent = 2, separators = {",", ":"}, sort_keys = true, ensure_ascii = true})
--
-- Floats print as Python prints them (1.0 stays 1.0, NaN and Infinity as json.dumps writes
-- them); dict keys come in the dict's order (sorted for tables without one, see
-- ft.text.jinja.values); tuples are arrays. Undefined, namespaces and callables are not
-- JSON serializable, as in Python.
local V = require "ft.text.jinja.values"
local U = require "ft.text.jinja.unicode"

local M = {}

local format, rep, byte, sub = string.format, string.rep, string.byte, string.sub
local concat = table.concat
local mtype = math.type

local SHORT = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s, ensure_ascii)
  if not ensure_ascii then
    return '"' .. s:gsub('[%c"\\]', function(c)
      if SHORT[c] then return SHORT[c] end
      local b = byte(c)
      if b < 0x20 then return format("\\u%04x", b) end
      return c   -- DEL (0x7f) stays, as in Python
    end) .. '"'
  end
  local out, i, n = { '"' }, 1, #s
  while i <= n do
    local cp, len = U.decode_at(s, i)
    local c = sub(s, i, i + len - 1)
    if SHORT[c] then out[#out + 1] = SHORT[c]
    elseif cp >= 0x20 and cp < 0x7F then out[#out + 1] = c
    elseif cp < 0x10000 then out[#out + 1] = format("\\u%04x", cp)
    else
      local v = cp - 0x10000
      out[#out + 1] = format("\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
    end
    i = i + len
  end
  out[#out + 1] = '"'
  return concat(out)
end

local function float_json(x)
  if x ~= x then return "NaN" end
  if x == math.huge then return "Infinity" end
  if x == -math.huge then return "-Infinity" end
  return V.float_repr(x)
end

local function key_string(k)
  local t = type(k)
  if t == "string" then return k end
  if t == "number" then return mtype(k) == "integer" and format("%d", k) or float_json(k) end
  if t == "boolean" then return k and "true" or "false" end
  if rawequal(k, V.NONE) then return "null" end
  V.error(format("keys must be str, int, float, bool or None, not %s", V.type_name(k)))
end

--- M.dumps(v, opts) -> the JSON text of v as Python's json.dumps writes it. opts:
-- ensure_ascii (false), indent (nil: one line; a number of spaces or a string: one item a
-- line), separators ({item, key}; default {", ", ": "}, or {",", ": "} with indent),
-- sort_keys (false).
function M.dumps(v, opts)
  opts = opts or {}
  local indent = opts.indent
  if type(indent) == "number" then indent = rep(" ", math.max(indent, 0)) end
  local item_sep, key_sep
  if opts.separators then
    item_sep, key_sep = opts.separators[1], opts.separators[2]
  elseif indent then
    item_sep, key_sep = ",", ": "
  else
    item_sep, key_sep = ", ", ": "
  end
  local ensure_ascii, sort_keys = opts.ensure_ascii, opts.sort_keys
  local out = {}
  local function w(s) out[#out + 1] = s end

  local encode
  local function newline(level)
    if indent then w("\n" .. rep(indent, level)) end
  end
  function encode(x, level)
    local t = type(x)
    if t == "string" then return w(quote(x, ensure_ascii)) end
    if t == "boolean" then return w(x and "true" or "false") end
    if t == "number" then
      if mtype(x) == "integer" then return w(format("%d", x)) end
      return w(float_json(x))
    end
    local k = V.kind(x)
    if k == "none" then return w("null") end
    if k == "list" or k == "tuple" then
      local n = rawlen(x)
      if n == 0 then return w("[]") end
      w("[")
      for i = 1, n do
        if i > 1 then w(item_sep) end
        newline(level + 1)
        encode(x[i], level + 1)
      end
      newline(level)
      return w("]")
    end
    if k == "dict" then
      local keys = V.keys(x)
      if #keys == 0 then return w("{}") end
      if sort_keys then
        local copy = {}
        for i, key in ipairs(keys) do copy[i] = key end
        table.sort(copy, function(a, b) return V.cmp(a, b) < 0 end)
        keys = copy
      end
      w("{")
      for i, key in ipairs(keys) do
        if i > 1 then w(item_sep) end
        newline(level + 1)
        w(quote(key_string(key), ensure_ascii))
        w(key_sep)
        encode(x[key], level + 1)
      end
      newline(level)
      return w("}")
    end
    V.error(format("Object of type %s is not JSON serializable", V.type_name(x)))
  end
  encode(v, 0)
  return concat(out)
end

return M
