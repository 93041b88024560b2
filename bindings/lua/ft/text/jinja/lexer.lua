-- ft.text.jinja.lexer: template source -> tokens, with Jinja's whitespace rules as
-- transformers configures them (trim_blocks and lstrip_blocks on).
--
--   local lexer = require "ft.text.jinja.lexer"
--   local tokens = lexer.tokenize("{% if x %}\n  {{ x }}{% endif %}", fail)
--   -- {t = "block_begin"}, {t = "name", v = "if"}, ... each with pos (a byte offset)
--
-- Newlines (\r\n, \r) become \n and one trailing newline is dropped, as Jinja does. Text is
-- cut at `{{`, `{%` and `{#`. `{%-`/`{{-`/`{#-` strip the whitespace before the tag, `-%}`/
-- `-}}`/`-#}` the whitespace after it. Otherwise a block tag or comment that is alone on its
-- line after spaces drops those spaces (lstrip_blocks, not for `{%+`), and the first newline
-- after a block tag or comment is dropped (trim_blocks, not for `+%}`). `{% raw %}` ...
-- `{% endraw %}` is text. Inside a tag, `%}` and `}}` end it only when brackets are balanced.
-- fail(pos, message) raises a syntax error at byte offset pos of the returned source.
local U = require "ft.text.jinja.unicode"

local lexer = {}

local sub, find, match = string.sub, string.find, string.match

local OPERATORS2 = { ["//"] = true, ["**"] = true, ["=="] = true, ["!="] = true, [">="] = true, ["<="] = true }
local OPERATORS1 = {}
for c in ("+-/*%~[](){}><=.:|,;"):gmatch(".") do OPERATORS1[c] = true end
local CLOSERS = { ["("] = ")", ["["] = "]", ["{"] = "}" }

local ESCAPES = {
  ["\\"] = "\\", ["'"] = "'", ['"'] = '"', a = "\a", b = "\b", f = "\f", n = "\n", r = "\r",
  t = "\t", v = "\v", ["\n"] = "",
}

-- The value of a string literal's body (between the quotes), with Python's escapes:
-- \\ \' \" \a \b \f \n \r \t \v \ooo \xhh \uXXXX \UXXXXXXXX and \<newline>; any other
-- backslash stays as it is.
local function unescape(body, pos, fail)
  if not find(body, "\\", 1, true) then return body end
  local out, i, n = {}, 1, #body
  while i <= n do
    local b = find(body, "\\", i, true)
    if not b then
      out[#out + 1] = sub(body, i)
      break
    end
    out[#out + 1] = sub(body, i, b - 1)
    local c = sub(body, b + 1, b + 1)
    if ESCAPES[c] then
      out[#out + 1] = ESCAPES[c]
      i = b + 2
    elseif c == "x" or c == "u" or c == "U" then
      local len = c == "x" and 2 or (c == "u" and 4 or 8)
      local hex = sub(body, b + 2, b + 1 + len)
      if #hex ~= len or not match(hex, "^%x+$") then
        fail(pos, ("invalid \\%s escape in a string literal: \\%s%s"):format(c, c, hex))
      end
      local cp = tonumber(hex, 16)
      if cp > 0x10FFFF then fail(pos, "invalid \\U escape in a string literal (beyond U+10FFFF)") end
      out[#out + 1] = utf8.char(cp)
      i = b + 2 + len
    elseif match(c, "^[0-7]$") then
      local oct = match(body, "^[0-7][0-7]?[0-7]?", b + 1)
      out[#out + 1] = utf8.char(tonumber(oct, 8))
      i = b + 1 + #oct
    else
      out[#out + 1] = "\\"
      i = b + 1
    end
  end
  return table.concat(out)
end

--- lexer.normalize(source) -> source with \r\n and \r as \n and one trailing newline dropped
-- (the text every position refers to).
function lexer.normalize(source)
  source = source:gsub("\r\n", "\n"):gsub("\r", "\n")
  if sub(source, -1) == "\n" then source = sub(source, 1, -2) end
  return source
end

-- A number token at i: integer or float (underscores between digits; 0b/0o/0x integers).
local function number_at(src, i, after_dot)
  local prefixed = match(src, "^0[bB][01_]+", i) or match(src, "^0[oO][0-7_]+", i) or match(src, "^0[xX][%x_]+", i)
  if prefixed then
    local base = ({ b = 2, o = 8, x = 16 })[sub(prefixed, 2, 2):lower()]
    return "int", math.tointeger(tonumber((sub(prefixed, 3):gsub("_", "")), base)), i + #prefixed
  end
  local int = match(src, "^%d[%d_]*", i)
  local j = i + #int
  if not after_dot then
    local frac = match(src, "^%.%d[%d_]*", j)
    local exp_start = j + (frac and #frac or 0)
    local exp = match(src, "^[eE][-+]?%d[%d_]*", exp_start)
    if frac or exp then
      local text = sub(src, i, exp_start - 1 + (exp and #exp or 0))
      return "float", tonumber((text:gsub("_", ""))), i + #text
    end
  end
  local digits = int:gsub("_", "")
  local v = math.tointeger(tonumber(digits))
  if v == nil then return "float", tonumber(digits), j end
  return "int", v, j
end

--- lexer.tokenize(source, fail) -> tokens, normalized source. Each token is {t = type, v =
-- value, pos = byte offset}: text (v the text), var_begin, var_end, block_begin, block_end,
-- name, int, float, str (v the decoded string), op (v the operator), and a final eof.
function lexer.tokenize(source, fail)
  local src = lexer.normalize(source)
  local n = #src
  local tokens = {}
  local function push(t, v, pos) tokens[#tokens + 1] = { t = t, v = v, pos = pos } end
  local pos, line_starting = 1, true

  -- Applies `-` / lstrip_blocks to the text before a tag and pushes it.
  local function push_text(text, text_pos, sign, is_block)
    if sign == "-" then
      text = U.rstrip_space(text)
    elseif sign ~= "+" and is_block then
      local nl = text:match(".*()\n")
      local l_pos = nl and nl + 1 or 1
      if nl or line_starting then
        if U.is_space_only(sub(text, l_pos)) then text = sub(text, 1, l_pos - 1) end
      end
    end
    if text ~= "" then push("text", text, text_pos) end
  end

  -- Consumes what follows a tag's end: whitespace after `-`, one newline after a block
  -- end (trim_blocks) unless `+`.
  local function after_end(i, sign, trims)
    local j = i
    if sign == "-" then
      j = U.skip_space(src, i)
    elseif sign ~= "+" and trims and sub(src, i, i) == "\n" then
      j = i + 1
    end
    line_starting = j > i and sub(src, j - 1, j - 1) == "\n"
    return j
  end

  while pos <= n do
    local s = find(src, "{[{%%#]", pos)
    if not s then
      push("text", sub(src, pos), pos)
      break
    end
    local text, text_pos = sub(src, pos, s - 1), pos
    local kind = sub(src, s + 1, s + 1)
    local sign = sub(src, s + 2, s + 2)
    if sign ~= "-" and sign ~= "+" then sign = "" end
    local body = s + 2 + #sign

    if kind == "#" then
      push_text(text, text_pos, sign, true)
      local e = find(src, "#}", body, true)
      if not e then fail(s, "unclosed comment: no '#}' after this '{#'") end
      local end_sign = e > body and sub(src, e - 1, e - 1) or ""
      if end_sign ~= "-" and end_sign ~= "+" then end_sign = "" end
      pos = after_end(e + 2, end_sign, true)
    elseif kind == "%" and match(src, "^%s*raw%s*[-+]?%%}", body) then
      push_text(text, text_pos, sign, true)
      local open_end = select(2, find(src, "^%s*raw%s*[-+]?%%}", body))
      local raw_sign = sub(src, open_end - 2, open_end - 2)
      local content_start = raw_sign == "-" and U.skip_space(src, open_end + 1) or open_end + 1
      line_starting = content_start > open_end + 1 and sub(src, content_start - 1, content_start - 1) == "\n"
      local cs, ce, csign, esign = find(src, "{%%([-+]?)%s*endraw%s*([-+]?)%%}", content_start)
      if not cs then fail(s, "unclosed raw block: no {% endraw %} after this {% raw %}") end
      push_text(sub(src, content_start, cs - 1), content_start, csign, true)
      pos = after_end(ce + 1, esign, true)
    else
      local is_block = kind == "%"
      push_text(text, text_pos, sign, is_block)
      push(is_block and "block_begin" or "var_begin", nil, s)
      local i, stack = body, {}
      local closer = is_block and "%}" or "}}"
      while true do
        i = U.skip_space(src, i)
        if i > n then
          fail(s, ("unclosed %s: no '%s' after this '%s'"):format(is_block and "tag" or "expression",
            closer, sub(src, s, s + 1)))
        end
        if #stack == 0 then
          local c = sub(src, i, i)
          local end_sign
          if (c == "-" or c == "+") and sub(src, i + 1, i + 2) == closer then
            end_sign = c
          elseif sub(src, i, i + 1) == closer then
            end_sign = ""
          end
          if end_sign then
            push(is_block and "block_end" or "var_end", nil, i)
            pos = after_end(i + #end_sign + 2, end_sign, is_block)
            break
          end
        end
        local c = sub(src, i, i)
        if match(c, "[%a_]") then
          local word = match(src, "^[%w_]+", i)
          push("name", word, i)
          i = i + #word
        elseif match(c, "%d") then
          local prev = tokens[#tokens]
          local after_dot = prev and prev.t == "op" and prev.v == "." and prev.pos == i - 1
          local t, v, j = number_at(src, i, after_dot)
          push(t, v, i)
          i = j
        elseif c == "'" or c == '"' then
          local j = i + 1
          while true do
            local q = find(src, "[\\" .. c .. "]", j)
            if not q then fail(i, "unclosed string literal") end
            if sub(src, q, q) == "\\" then
              j = q + 2
            else
              push("str", unescape(sub(src, i + 1, q - 1), i, fail), i)
              i = q + 1
              break
            end
          end
        else
          local op
          if OPERATORS2[sub(src, i, i + 1)] then op = sub(src, i, i + 1)
          elseif OPERATORS1[c] then op = c end
          if not op then fail(i, ("unexpected character '%s'"):format(match(src, "^" .. utf8.charpattern, i) or c)) end
          if CLOSERS[op] then
            stack[#stack + 1] = CLOSERS[op]
          elseif op == ")" or op == "]" or op == "}" then
            local want = stack[#stack]
            if not want then fail(i, ("unexpected '%s'"):format(op)) end
            if want ~= op then fail(i, ("unexpected '%s', expected '%s'"):format(op, want)) end
            stack[#stack] = nil
          end
          push("op", op, i)
          i = i + #op
        end
      end
    end
  end
  push("eof", nil, n + 1)
  return tokens, src
end

return lexer
