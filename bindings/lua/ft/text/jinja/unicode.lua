-- ft.text.jinja.unicode: the code-point view of UTF-8 strings that Python's str methods need
-- (length, indexing, slicing, case, whitespace).
--
-- Strings are Lua byte strings holding UTF-8. A byte that is not part of valid UTF-8 counts as
-- one character of its own, so every string has a code-point view and nothing errors on bad
-- input. Case mapping covers ASCII, Latin-1, Latin Extended-A, Latin Extended Additional,
-- Greek, Cyrillic, Armenian and the fullwidth Latin letters (one character to one, plus
-- 'ß' -> 'SS'); Python's other special casings (final sigma, 'İ' -> 'i̇') are not applied.
local U = {}

local byte, find, sub = string.byte, string.find, string.sub
local concat = table.concat

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

local SPACE = {
  [0x09] = true, [0x0A] = true, [0x0B] = true, [0x0C] = true, [0x0D] = true,
  [0x1C] = true, [0x1D] = true, [0x1E] = true, [0x1F] = true, [0x20] = true,
  [0x85] = true, [0xA0] = true, [0x1680] = true, [0x2028] = true, [0x2029] = true,
  [0x202F] = true, [0x205F] = true, [0x3000] = true,
}
for cp = 0x2000, 0x200A do SPACE[cp] = true end

--- U.is_space_cp(cp) -> whether code point cp is whitespace (as Python's str.isspace).
function U.is_space_cp(cp)
  return SPACE[cp] == true
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
    if not SPACE[cp] then break end
    i = i + len
  end
  return i
end

-- ---- case ---------------------------------------------------------------------------------

local UPPER, LOWER = {}, {}   -- code point -> code point
local function pair(up, low)
  UPPER[low] = up
  LOWER[up] = low
end
for cp = 0x61, 0x7A do pair(cp - 32, cp) end
for cp = 0xE0, 0xFE do if cp ~= 0xF7 then pair(cp - 32, cp) end end
pair(0x178, 0xFF)
UPPER[0xB5] = 0x39C
for cp = 0x100, 0x137, 2 do pair(cp, cp + 1) end
for cp = 0x139, 0x148, 2 do pair(cp, cp + 1) end
for cp = 0x14A, 0x177, 2 do pair(cp, cp + 1) end
for cp = 0x179, 0x17E, 2 do pair(cp, cp + 1) end
UPPER[0x131] = 0x49
UPPER[0x17F] = 0x53
for cp = 0x1E00, 0x1E95, 2 do pair(cp, cp + 1) end
for cp = 0x1EA0, 0x1EFF, 2 do pair(cp, cp + 1) end
for cp = 0x3B1, 0x3C9 do if cp ~= 0x3C2 then pair(cp - 32, cp) end end
UPPER[0x3C2] = 0x3A3
pair(0x386, 0x3AC)
for cp = 0x388, 0x38A do pair(cp, cp + 37) end
pair(0x38C, 0x3CC)
pair(0x38E, 0x3CD)
pair(0x38F, 0x3CE)
for cp = 0x430, 0x44F do pair(cp - 32, cp) end
for cp = 0x450, 0x45F do pair(cp - 80, cp) end
for cp = 0x460, 0x481, 2 do pair(cp, cp + 1) end
for cp = 0x48A, 0x4BF, 2 do pair(cp, cp + 1) end
for cp = 0x4D0, 0x52F, 2 do pair(cp, cp + 1) end
for cp = 0x561, 0x586 do pair(cp - 48, cp) end
for cp = 0xFF41, 0xFF5A do pair(cp - 32, cp) end

--- U.is_cased_cp(cp) -> whether code point cp has an upper or lower case form.
function U.is_cased_cp(cp)
  return UPPER[cp] ~= nil or LOWER[cp] ~= nil
end

--- U.is_upper_cp(cp) -> whether cp is an upper case letter.
function U.is_upper_cp(cp) return LOWER[cp] ~= nil end

--- U.is_lower_cp(cp) -> whether cp is a lower case letter.
function U.is_lower_cp(cp) return UPPER[cp] ~= nil end

local function map_case(s, map, extra)
  if U.is_ascii(s) then
    if map == UPPER then return (s:upper()) end
    return (s:lower())
  end
  local out, i, n = {}, 1, #s
  while i <= n do
    local cp, len = decode_at(s, i)
    local piece
    if extra and extra[cp] then
      piece = extra[cp]
    elseif map[cp] then
      piece = utf8.char(map[cp])
    else
      piece = sub(s, i, i + len - 1)
    end
    out[#out + 1] = piece
    i = i + len
  end
  return concat(out)
end

local UPPER_EXTRA = { [0xDF] = "SS" }

--- U.upper(s) -> s in upper case.
function U.upper(s) return map_case(s, UPPER, UPPER_EXTRA) end

--- U.lower(s) -> s in lower case.
function U.lower(s) return map_case(s, LOWER) end

--- U.swapcase(s) -> s with upper case letters lowered and lower case ones raised.
function U.swapcase(s)
  local out = {}
  for _, cp in ipairs(U.codepoints(s)) do
    out[#out + 1] = utf8.char(UPPER[cp] or LOWER[cp] or cp)
  end
  return concat(out)
end

-- ---- character classes (ASCII exact; beyond ASCII an approximation) -------------------------

--- U.is_digit_cp(cp) -> whether cp is a decimal digit (ASCII or fullwidth).
function U.is_digit_cp(cp)
  return (cp >= 0x30 and cp <= 0x39) or (cp >= 0xFF10 and cp <= 0xFF19)
end

--- U.is_alpha_cp(cp) -> whether cp is a letter: ASCII letters, cased letters, and the
--- letters of scripts without case (CJK, kana, Hangul, Arabic, Hebrew, Indic ...).
function U.is_alpha_cp(cp)
  if cp < 0x80 then return (cp >= 0x41 and cp <= 0x5A) or (cp >= 0x61 and cp <= 0x7A) end
  if U.is_cased_cp(cp) or cp == 0xAA or cp == 0xBA or cp == 0xDF then return true end
  if cp < 0xC0 or cp == 0xD7 or cp == 0xF7 then return false end
  if SPACE[cp] then return false end
  if cp >= 0x2000 and cp <= 0x2BFF then return false end   -- punctuation, symbols, arrows
  if cp >= 0x3000 and cp <= 0x303F then return false end   -- CJK punctuation
  if cp >= 0xFF00 and cp <= 0xFF20 then return false end   -- fullwidth punctuation, digits
  if cp >= 0xFE30 and cp <= 0xFE4F then return false end
  if cp >= 0x1F000 then return false end                    -- emoji and other symbols
  if cp >= 0xE000 and cp <= 0xF8FF then return false end   -- private use
  if cp >= 0x300 and cp <= 0x36F then return false end     -- combining marks
  return true
end

--- U.is_word_cp(cp) -> whether cp matches Python's \w (letters, digits, underscore).
function U.is_word_cp(cp)
  return cp == 0x5F or U.is_digit_cp(cp) or U.is_alpha_cp(cp)
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
