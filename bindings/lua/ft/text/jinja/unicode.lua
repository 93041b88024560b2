-- ft.text.jinja.unicode: the code-point view of UTF-8 strings that Python's str methods need
-- (length, indexing, slicing, case, character classes, whitespace).
--
-- Strings are Lua byte strings holding UTF-8. A byte that is not part of valid UTF-8 counts as
-- one character of its own, so every string has a code-point view and nothing errors on bad
-- input; case mapping leaves such bytes as they are. Character properties and case mappings
-- are utf8proc's (the ft._unicode_* functions of bindings/lua_unicode.c), used as Python's
-- str methods use Unicode's: full case mappings ('ß'.upper() == "SS", 'İ'.lower() == "i̇"),
-- final sigma, titlecase letters. bindings/lua_unicode.c lists what still differs from
-- Python 3.11: a few digits without decomposition ('❶'), final sigma beside apostrophes and
-- periods, the title case of some polytonic Greek, Unicode 15 against 14.
local ft = require "ft"

local U = {}

local byte, find, sub = string.byte, string.find, string.sub
local concat = table.concat
local category, case_of, isspace, isdigit = ft._unicode_category, ft._unicode_case, ft._unicode_isspace, ft._unicode_isdigit

--- U.is_ascii(s) -> whether s holds only bytes below 0x80.
function U.is_ascii(s)
  return not find(s, "[\128-\255]")
end

--- U.decode_at(s, i) -> the code point and the length in bytes of the character at byte i
-- (a byte that is not valid UTF-8: its value and 1).
local function decode_at(s, i)
  local c = byte(s, i)
  if c < 0x80 then return c, 1 end
  local n, cp, min
  if c >= 0xC2 and c <= 0xDF then n, cp, min = 2, c - 0xC0, 0x80
  elseif c >= 0xE0 and c <= 0xEF then n, cp, min = 3, c - 0xE0, 0x800
  elseif c >= 0xF0 and c <= 0xF4 then n, cp, min = 4, c - 0xF0, 0x10000
  else return c, 1 end
  for k = 1, n - 1 do
    local b = byte(s, i + k)
    if not b or b < 0x80 or b > 0xBF then return c, 1 end
    cp = cp * 64 + (b - 0x80)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return c, 1 end
  return cp, n
end
U.decode_at = decode_at

--- U.chars(s) -> array of the characters of s (each a string).
function U.chars(s)
  local out = {}
  if U.is_ascii(s) then
    for i = 1, #s do out[i] = sub(s, i, i) end
    return out
  end
  local i, n = 1, #s
  while i <= n do
    local _, len = decode_at(s, i)
    out[#out + 1] = sub(s, i, i + len - 1)
    i = i + len
  end
  return out
end

--- U.codepoints(s) -> array of the code points of s.
function U.codepoints(s)
  local out = {}
  local i, n = 1, #s
  while i <= n do
    local cp, len = decode_at(s, i)
    out[#out + 1] = cp
    i = i + len
  end
  return out
end

--- U.len(s) -> the number of characters of s.
function U.len(s)
  if U.is_ascii(s) then return #s end
  local count, i, n = 0, 1, #s
  while i <= n do
    local _, len = decode_at(s, i)
    i = i + len
    count = count + 1
  end
  return count
end

-- ---- whitespace: Python's str.isspace ------------------------------------------------------

--- U.is_space_cp(cp) -> whether code point cp is whitespace (as Python's str.isspace: bidi class
-- WS, B or S, or category Zs).
function U.is_space_cp(cp)
  return isspace(cp)
end

-- The byte span [i, j] of s without the leading and/or trailing characters for which
-- drop(cp) holds (j < i when nothing is left).
local function strip_span(s, drop, left, right)
  local starts, cps, i, n = {}, {}, 1, #s
  while i <= n do
    local cp, len = decode_at(s, i)
    starts[#starts + 1], cps[#cps + 1] = i, cp
    i = i + len
  end
  local a, b = 1, #cps
  if left then while a <= b and drop(cps[a]) do a = a + 1 end end
  if right then while b >= a and drop(cps[b]) do b = b - 1 end end
  if a > b then return 1, 0 end
  return starts[a], (starts[b + 1] or n + 1) - 1
end

--- U.strip(s, chars, left, right) -> s without leading (left) and/or trailing (right)
--- characters that are in chars (a string), or whitespace when chars is nil.
function U.strip(s, chars, left, right)
  local drop
  if chars == nil then
    drop = U.is_space_cp
  else
    local set = {}
    for _, cp in ipairs(U.codepoints(chars)) do set[cp] = true end
    drop = function(cp) return set[cp] == true end
  end
  local i, j = strip_span(s, drop, left, right)
  return sub(s, i, j)
end

--- U.rstrip_space(s) -> s without trailing whitespace (what `{%-` and `-}}` remove).
function U.rstrip_space(s)
  return U.strip(s, nil, false, true)
end

--- U.is_space_only(s) -> whether s is non-empty and all whitespace.
function U.is_space_only(s)
  if s == "" then return false end
  local i, j = strip_span(s, U.is_space_cp, true, false)
  return i > j
end

--- U.skip_space(s, i) -> the byte index after the whitespace that starts at byte i.
function U.skip_space(s, i)
  local n = #s
  while i <= n do
    local cp, len = decode_at(s, i)
    if not isspace(cp) then break end
    i = i + len
  end
  return i
end

-- ---- case --------------------------------------------------------------------------------

--- U.is_cased_cp(cp) -> whether code point cp is cased (upper case, lower case or title case,
-- as Python's str.title tells words apart).
function U.is_cased_cp(cp)
  return case_of(cp) ~= nil
end

--- U.is_upper_cp(cp) -> whether cp is an upper case or a title case character ('A', 'Ⅰ', 'ǅ').
-- A title case letter counts as both upper and lower, so that str.islower, isupper and
-- istitle reject or accept it as Python does.
function U.is_upper_cp(cp)
  local c = case_of(cp)
  return c == "upper" or c == "title"
end

--- U.is_lower_cp(cp) -> whether cp is a lower case or a title case character ('a', 'ª', 'ǅ').
function U.is_lower_cp(cp)
  local c = case_of(cp)
  return c == "lower" or c == "title"
end

-- f(s) when s is valid UTF-8; otherwise f of each run of valid UTF-8, with the bytes that are
-- not UTF-8 kept as they are between them.
local function on_utf8_runs(s, f)
  if utf8.len(s) then return f(s) end
  local out, run, i, n = {}, 1, 1, #s
  while i <= n do
    local _, len = decode_at(s, i)
    if len == 1 and byte(s, i) >= 0x80 then
      if run < i then out[#out + 1] = f(sub(s, run, i - 1)) end
      out[#out + 1] = sub(s, i, i)
      run = i + 1
    end
    i = i + len
  end
  if run <= n then out[#out + 1] = f(sub(s, run, n)) end
  return concat(out)
end

--- U.upper(s) -> s in upper case (Python's str.upper: 'ß' -> "SS").
function U.upper(s)
  if U.is_ascii(s) then return (s:upper()) end
  return on_utf8_runs(s, ft._unicode_upper)
end

--- U.lower(s) -> s in lower case (Python's str.lower: 'İ' -> "i̇", a final 'Σ' -> 'ς').
function U.lower(s)
  if U.is_ascii(s) then return (s:lower()) end
  return on_utf8_runs(s, ft._unicode_lower)
end

--- U.swapcase(s) -> s with upper case letters lowered and lower case ones raised.
function U.swapcase(s)
  return on_utf8_runs(s, ft._unicode_swapcase)
end

--- U.title(s) -> Python's str.title: a character after a cased one lowered, any other in title
-- case ("they're" -> "They'Re", 'ǆ' -> 'ǅ', 'ß' -> "Ss").
function U.title(s)
  return on_utf8_runs(s, ft._unicode_title)
end

--- U.capitalize(s) -> Python's str.capitalize: the first character in title case, the rest
-- lowered.
function U.capitalize(s)
  return on_utf8_runs(s, ft._unicode_capitalize)
end

-- ---- character classes ----------------------------------------------------------------------

--- U.is_digit_cp(cp) -> whether cp is a digit (as Python's str.isdigit: '7', '٣', '²', '①';
-- digits that have no decomposition, such as '❶', are missed).
function U.is_digit_cp(cp)
  return isdigit(cp)
end

--- U.is_alpha_cp(cp) -> whether cp is a letter (as Python's str.isalpha: categories Lu, Ll, Lt,
-- Lm and Lo; combining marks are not letters).
function U.is_alpha_cp(cp)
  return byte(category(cp)) == 76   -- "L"
end

--- U.is_word_cp(cp) -> whether cp matches Python's \w (letters, numbers, underscore).
function U.is_word_cp(cp)
  if cp == 0x5F then return true end
  local c = byte(category(cp))
  return c == 76 or c == 78   -- "L" or "N"
end

-- ---- positions ----------------------------------------------------------------------------

--- U.offsets(s) -> array o where o[k] is the byte index of character k (o[#chars + 1] = #s + 1).
function U.offsets(s)
  local o, i, n = {}, 1, #s
  while i <= n do
    o[#o + 1] = i
    local _, len = decode_at(s, i)
    i = i + len
  end
  o[#o + 1] = n + 1
  return o
end

--- U.char_index(s, byte_index) -> the 0-based character index of the character at byte_index.
function U.char_index(s, bi)
  if U.is_ascii(s) then return bi - 1 end
  local k, i = 0, 1
  while i < bi do
    local _, len = decode_at(s, i)
    i = i + len
    k = k + 1
  end
  return k
end

return U
