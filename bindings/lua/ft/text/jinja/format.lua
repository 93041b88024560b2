-- ft.text.jinja.format: Python's string formatting: str.format with its format specs, and
-- printf-style `"%s" % x` (the format filter).
--
--   local fmt = require "ft.text.jinja.format"
--   fmt.percent_format("%s has %d", V.tuple({"a", 2}))        --> "a has 2"
--   fmt.format_value(3.14159, ".2f")                          --> "3.14"
local V = require "ft.text.jinja.values"
local U = require "ft.text.jinja.unicode"

local fmt = {}

local format, rep, sub = string.format, string.rep, string.sub
local concat = table.concat
local mtype = math.type
local str, repr, kind, num = V.str, V.repr, V.kind, V.num

local function int_of(v, conv)
  if mtype(v) == "integer" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then V.error("cannot convert float to integer") end
    return math.tointeger(v >= 0 and math.floor(v) or math.ceil(v))
  end
  V.error(format("%%%s format: a real number is required, not %s", conv, V.type_name(v)))
end

--- fmt.percent_format(s, args) -> Python's s % args: args is one value, a tuple of values,
-- or a dict for %(name)s fields. Conversions: s r d i u f F e E g G x X o c %.
function fmt.percent_format(s, args)
  local values, mapping
  local k = kind(args)
  if k == "tuple" then values = args
  elseif k == "dict" then mapping = args; values = { args }
  else values = { args } end
  local used, out, i, n = 0, {}, 1, #s
  while i <= n do
    local p = s:find("%", i, true)
    if not p then out[#out + 1] = sub(s, i); break end
    out[#out + 1] = sub(s, i, p - 1)
    local j = p + 1
    local key
    if sub(s, j, j) == "(" then
      local close = s:find(")", j, true)
      if not close then V.error("incomplete format key") end
      key = sub(s, j + 1, close - 1)
      j = close + 1
    end
    local flags, width, prec, conv
    flags, width, prec, conv, j = s:match("^([-+ #0]*)(%d*)%.?(%d*)([%a%%])()", j)
    if not conv then V.error("incomplete format") end
    if conv == "%" then
      out[#out + 1] = "%"
    else
      local v
      if key then
        if not mapping then V.error("format requires a mapping") end
        v = mapping[key]
        if v == nil then V.error(format("KeyError: %s", repr(key))) end
      else
        used = used + 1
        v = values[used]
        if v == nil then V.error("not enough arguments for format string") end
      end
      local spec = "%" .. flags .. width .. (prec ~= "" and ("." .. prec) or "")
      local piece
      if conv == "s" or conv == "r" or conv == "a" then
        piece = conv == "s" and str(v) or repr(v)
        if prec ~= "" then piece = table.concat(U.chars(piece), "", 1, math.min(tonumber(prec), U.len(piece))) end
        local w = tonumber(width) or 0
        local pad = w - U.len(piece)
        if pad > 0 then
          piece = flags:find("-", 1, true) and (piece .. rep(" ", pad)) or (rep(" ", pad) .. piece)
        end
      elseif conv == "d" or conv == "i" or conv == "u" then
        piece = format(spec .. "d", int_of(v, conv))
      elseif conv == "x" or conv == "X" or conv == "o" then
        piece = format(spec .. conv, int_of(v, conv))
      elseif conv == "c" then
        piece = type(v) == "string" and v or utf8.char(int_of(v, conv))
      elseif ("fFeEgG"):find(conv, 1, true) then
        if not V.is_number(v) then V.error(format("must be real number, not %s", V.type_name(v))) end
        piece = format(spec .. conv, num(v) + 0.0)
      else
        V.error(format("unsupported format character '%s'", conv))
      end
      out[#out + 1] = piece
    end
    i = j
  end
  -- Python lets surplus arguments pass when args can be indexed (a list, a dict)
  if not mapping and used < #values and k ~= "list" and k ~= "undefined" then
    V.error("not all arguments converted during string formatting")
  end
  return concat(out)
end


local function group_digits(digits, sepc)
  local out = digits:reverse():gsub("(%d%d%d)", "%1" .. sepc):reverse()
  if sub(out, 1, 1) == sepc then out = sub(out, 2) end
  return out
end

--- fmt.format_value(v, spec) -> Python's format(v, spec) for str, int, float and bool values
-- ([[fill]align][sign][#][0][width][,|_][.precision][type]).
function fmt.format_value(v, spec)
  if spec == "" then return str(v) end
  local fill, align, rest = nil, nil, spec
  local c1, c2 = U.chars(spec)[1], U.chars(spec)[2]
  if c2 and ("<>=^"):find(c2, 1, true) then
    fill, align, rest = c1, c2, sub(spec, #c1 + 2)
  elseif c1 and ("<>=^"):find(c1, 1, true) then
    align, rest = c1, sub(spec, 2)
  end
  local sign, alt, zero, width, grouping, prec, typ =
    rest:match("^([-+ ]?)(#?)(0?)(%d*)([,_]?)%.?(%d*)([bcdeEfFgGnosxX%%]?)$")
  if not sign then V.error(format("Invalid format specifier '%s'", spec)) end
  width = tonumber(width) or 0
  prec = prec ~= "" and tonumber(prec) or nil
  if zero == "0" and not fill then fill, align = "0", align or "=" end
  fill = fill or " "
  local k = V.kind(v)
  local body, prefix = nil, ""
  if k == "str" then
    if typ ~= "" and typ ~= "s" then V.error(format("Unknown format code '%s' for object of type 'str'", typ)) end
    body = prec and concat(U.chars(v), "", 1, math.min(prec, U.len(v))) or v
    align = align or "<"
  elseif k == "int" or k == "bool" or k == "float" then
    local x = V.num(v)
    if typ == "" and k == "float" then typ = prec and "g" or "r" end
    if typ == "" or typ == "n" then typ = "d" end
    if ("eEfFgG%r"):find(typ, 1, true) then x = x + 0.0 end
    if typ == "d" or typ == "b" or typ == "o" or typ == "x" or typ == "X" or typ == "c" then
      if mtype(x) ~= "integer" then V.error(format("Unknown format code '%s' for object of type 'float'", typ)) end
    end
    local neg = x < 0 or (x == 0 and 1 / x < 0)
    local a = neg and -x or x
    if typ == "d" then body = format("%d", a)
    elseif typ == "b" then
      local bits = {}
      repeat bits[#bits + 1] = tostring(a % 2); a = a // 2 until a == 0
      body = concat(bits):reverse()
      if alt == "#" then prefix = "0b" end
    elseif typ == "o" then body = format("%o", a); if alt == "#" then prefix = "0o" end
    elseif typ == "x" or typ == "X" then
      body = format("%" .. typ, a)
      if alt == "#" then prefix = "0" .. typ end
    elseif typ == "c" then body = utf8.char(a)
    elseif typ == "r" then body = V.float_repr(a)
    elseif typ == "%" then body = format("%." .. (prec or 6) .. "f", a * 100) .. "%"
    else body = format("%" .. alt .. "." .. (prec or 6) .. typ, a) end
    if grouping ~= "" then
      local int, tail = body:match("^(%d+)(.*)$")
      if int then body = group_digits(int, grouping) .. tail end
    end
    local s = neg and "-" or (sign == "+" and "+" or (sign == " " and " " or ""))
    prefix = s .. prefix
    align = align or ">"
  else
    V.error(format("unsupported format string passed to %s.__format__", V.type_name(v)))
  end
  local n = U.len(prefix) + U.len(body)
  local pad = math.max(width - n, 0)
  if pad == 0 then return prefix .. body end
  if align == "<" then return prefix .. body .. rep(fill, pad) end
  if align == ">" then return rep(fill, pad) .. prefix .. body end
  if align == "=" then return prefix .. rep(fill, pad) .. body end
  local left = pad // 2
  return rep(fill, left) .. prefix .. body .. rep(fill, pad - left)
end

--- fmt.str_format(s, args, kwargs, access) -> Python's s.format(*args, **kwargs): fields {},
-- {0}, {name}, {0.attr}, {0[key]} (read with access.getattr / access.getitem), conversions
-- !s !r, and format specs (fmt.format_value).
function fmt.str_format(s, args, kwargs, access)
  local out, i, n, auto = {}, 1, #s, 0
  while i <= n do
    local c = sub(s, i, i)
    if c == "{" then
      if sub(s, i + 1, i + 1) == "{" then
        out[#out + 1] = "{"
        i = i + 2
      else
        local close = s:find("}", i, true)
        if not close then V.error("Single '{' encountered in format string") end
        local field = sub(s, i + 1, close - 1)
        local name, conv, spec = field:match("^([^!:]*)!?([rsa]?):?(.*)$")
        local head, tail = name:match("^([^.%[]*)(.*)$")
        local value
        if head == "" then
          value = args[auto + 1]
          auto = auto + 1
        elseif head:match("^%d+$") then
          value = args[tonumber(head) + 1]
        else
          value = kwargs and kwargs[head]
        end
        if value == nil then V.error(format("Replacement index %s out of range for positional args tuple", head)) end
        for sep, part in tail:gmatch("([.%[])([^.%[%]]*)%]?") do
          if sep == "." then
            value = access.getattr(value, part)
          else
            value = access.getitem(value, tonumber(part) or part)
          end
        end
        if conv == "r" or conv == "a" then value = V.repr(value) elseif conv == "s" then value = str(value) end
        out[#out + 1] = fmt.format_value(value, spec)
        i = close + 1
      end
    elseif c == "}" then
      if sub(s, i + 1, i + 1) ~= "}" then V.error("Single '}' encountered in format string") end
      out[#out + 1] = "}"
      i = i + 2
    else
      local j = s:find("[{}]", i) or n + 1
      out[#out + 1] = sub(s, i, j - 1)
      i = j
    end
  end
  return concat(out)
end


return fmt
