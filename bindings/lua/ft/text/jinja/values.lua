-- ft.text.jinja.values: the values templates compute with, seen as Python sees them.
--
--   local V = require "ft.text.jinja.values"
--   V.kind(ft.json.decode('[1, 2]'))   --> "list"
--   V.str({a = 1})                     --> "{'a': 1}"     (Python's str of the dict)
--   V.truthy("")                       --> false
--
-- Lua values stand for Python ones: strings are str (UTF-8), integers int, floats float,
-- booleans bool, ft.json.null is None. A table marked by ft.json.array (ft.json.decode's
-- arrays, and every list a template makes) is a list; a table whose metatable has a `__keys`
-- array is a dict whose keys come in that order (V.dict, and every dict a template makes);
-- any other table is a list when its keys are exactly 1..n (n > 0) and otherwise a dict
-- (empty: a dict, as ft.json.encode sees it) whose keys are iterated sorted. The engine's own
-- values (Undefined, tuples, namespaces, loop contexts, callables) are tables with their own
-- metatables. Errors are raised with V.error and carry just the message; the renderer adds
-- where in the template they happened.
local ft = require "ft"
local U = require "ft.text.jinja.unicode"

local V = {}

local byte, format, rep, sub = string.byte, string.format, string.rep, string.sub
local concat, sort = table.concat, table.sort
local mtype = math.type

local NONE = ft.json.null
V.NONE = NONE

local ARRAY_MT = getmetatable(ft.json.array({}))
local TUPLE_MT = { __name = "ft.text.jinja.tuple" }
local UNDEFINED_MT = { __name = "ft.text.jinja.Undefined" }
local NAMESPACE_MT = { __name = "ft.text.jinja.Namespace" }
local LOOP_MT = { __name = "ft.text.jinja.LoopContext" }
local CALLABLE_MT = { __name = "ft.text.jinja.callable" }
local ERROR_MT = { __name = "ft.text.jinja.error", __tostring = function(e) return e.message end }

-- ---- errors -------------------------------------------------------------------------------

--- V.error(message): raises a template error (the renderer adds the template position).
function V.error(message)
  error(setmetatable({ message = message }, ERROR_MT), 0)
end

--- V.is_error(e) -> the message of a template error raised by V.error, or nil.
function V.is_error(e)
  if getmetatable(e) == ERROR_MT then return e.message end
  return nil
end

-- ---- kinds --------------------------------------------------------------------------------

local kind_cache = setmetatable({}, { __mode = "k" })

--- V.reset(): forgets the list/dict classification of plain tables (done before each render,
-- since a caller may change a table between renders).
function V.reset()
  kind_cache = setmetatable({}, { __mode = "k" })
end

local function table_kind(t)
  local mt = getmetatable(t)
  if mt ~= nil then
    if mt == ARRAY_MT then return "list" end
    if mt == TUPLE_MT then return "tuple" end
    if mt == UNDEFINED_MT then return "undefined" end
    if mt == NAMESPACE_MT then return "namespace" end
    if mt == LOOP_MT then return "loop" end
    if mt == CALLABLE_MT then return "callable" end
    if type(mt) == "table" and rawget(mt, "__keys") ~= nil then return "dict" end
  end
  local k = kind_cache[t]
  if k then return k end
  local n = rawlen(t)
  if n == 0 then
    k = "dict"
  else
    local count = 0
    for _ in next, t do
      count = count + 1
      if count > n then break end
    end
    k = count == n and "list" or "dict"
  end
  kind_cache[t] = k
  return k
end

--- V.kind(v) -> "str", "int", "float", "bool", "none", "undefined", "list", "tuple", "dict",
-- "namespace", "loop", "callable" or "object" (anything else, e.g. a tensor).
function V.kind(v)
  local t = type(v)
  if t == "string" then return "str" end
  if t == "number" then return mtype(v) == "integer" and "int" or "float" end
  if t == "boolean" then return "bool" end
  if t == "table" then return table_kind(v) end
  if rawequal(v, NONE) then return "none" end
  if t == "function" then return "callable" end
  if t == "nil" then return "undefined" end
  return "object"
end
local kind = V.kind

local TYPE_NAMES = {
  str = "str", int = "int", float = "float", bool = "bool", none = "NoneType", list = "list",
  tuple = "tuple", dict = "dict", undefined = "Undefined", namespace = "Namespace",
  loop = "LoopContext", callable = "function", object = "object",
}

--- V.type_name(v) -> Python's name of the type of v ("str", "dict", "NoneType" ...).
function V.type_name(v)
  return TYPE_NAMES[kind(v)]
end

--- V.is_sequence(v) -> whether v is a list or a tuple.
function V.is_sequence(v)
  local k = kind(v)
  return k == "list" or k == "tuple"
end

-- ---- constructors -------------------------------------------------------------------------

--- V.list([t]) -> t (or a new table) as a list.
function V.list(t) return setmetatable(t or {}, ARRAY_MT) end

--- V.tuple([t]) -> t (or a new table) as a tuple.
function V.tuple(t) return setmetatable(t or {}, TUPLE_MT) end

--- V.dict([t, keys]) -> t (or a new table) as a dict whose keys come in the order of keys
-- (the keys of t missing from keys follow, sorted).
function V.dict(t, keys)
  return setmetatable(t or {}, { __keys = keys or {} })
end

--- V.dict_set(d, key, value): d[key] = value, keeping insertion order when d has one.
function V.dict_set(d, key, value)
  if rawget(d, key) == nil then
    local mt = getmetatable(d)
    local order = type(mt) == "table" and rawget(mt, "__keys")
    if order then order[#order + 1] = key end
  end
  rawset(d, key, value)
end

--- V.undefined(hint, obj, name) -> an Undefined: `hint` is its message when set; otherwise
-- obj (nil for a missing variable) and name say what was missing.
function V.undefined(hint, obj, name)
  return setmetatable({ hint = hint, obj = obj, name = name }, UNDEFINED_MT)
end

--- V.is_undefined(v) -> whether v is an Undefined.
function V.is_undefined(v)
  return type(v) == "table" and getmetatable(v) == UNDEFINED_MT
end

--- V.namespace(attrs) -> a namespace holding the dict attrs.
function V.namespace(attrs)
  return setmetatable({ attrs = attrs }, NAMESPACE_MT)
end

--- V.loop(t) -> t as a for loop's `loop` value; t holds index0, length, items, depth0 (and
-- recurse, a function, for a recursive loop).
function V.loop(t)
  return setmetatable(t, LOOP_MT)
end

--- V.callable(name, fn, macro) -> a callable value; fn(args, kwargs, ctx) with args a Lua
-- array, kwargs a dict (or nil) and ctx the render context. macro marks a template macro.
function V.callable(name, fn, macro)
  return setmetatable({ name = name, fn = fn, macro = macro }, CALLABLE_MT)
end

-- ---- dicts --------------------------------------------------------------------------------

local KEY_RANK = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (KEY_RANK[ta] or 4) < (KEY_RANK[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

--- V.keys(d) -> array of the keys of dict d, in its order.
function V.keys(d)
  local out = {}
  local mt = getmetatable(d)
  local order = type(mt) == "table" and rawget(mt, "__keys")
  local seen
  if order then
    seen = {}
    for _, k in ipairs(order) do
      if not seen[k] and rawget(d, k) ~= nil then
        out[#out + 1] = k
        seen[k] = true
      end
    end
  end
  local rest = {}
  for k in next, d do
    if not (seen and seen[k]) then rest[#rest + 1] = k end
  end
  sort(rest, key_less)
  for _, k in ipairs(rest) do out[#out + 1] = k end
  return out
end

--- V.dict_len(d) -> the number of keys of dict d.
function V.dict_len(d)
  local n = 0
  for _ in next, d do n = n + 1 end
  return n
end

--- V.dict_key(key) -> key as a Lua table key (Python's 1 and 1.0 and True are one key).
function V.dict_key(key)
  if key == true then return 1 end
  if key == false then return 0 end
  return key
end

-- ---- truth, length, iteration -------------------------------------------------------------

--- V.truthy(v) -> Python's bool(v): None, Undefined, False, 0, "" and empty containers are false.
function V.truthy(v)
  if v == nil or v == false then return false end
  local t = type(v)
  if t == "boolean" then return true end
  if t == "string" then return v ~= "" end
  if t == "number" then return v ~= 0 end
  if t == "table" then
    local k = table_kind(v)
    if k == "undefined" then return false end
    if k == "list" or k == "tuple" or k == "dict" then return next(v) ~= nil end
    return true
  end
  return not rawequal(v, NONE)
end

--- V.len(v) -> Python's len(v) (characters for a string); an error for what has none.
function V.len(v)
  local k = kind(v)
  if k == "str" then return U.len(v) end
  if k == "list" or k == "tuple" then return rawlen(v) end
  if k == "dict" then return V.dict_len(v) end
  if k == "undefined" then return 0 end
  if k == "loop" then return v.length end
  V.error(format("object of type '%s' has no len()", TYPE_NAMES[k]))
end

--- V.items(v) -> a Lua array of what iterating over v yields (a list itself, a dict's keys, a
-- string's characters, nothing for Undefined); an error for what is not iterable. Callers
-- must not change the array.
function V.items(v)
  local k = kind(v)
  if k == "list" or k == "tuple" then return v end
  if k == "dict" then return V.keys(v) end
  if k == "str" then return U.chars(v) end
  if k == "undefined" then return {} end
  V.error(format("'%s' object is not iterable", TYPE_NAMES[k]))
end

-- ---- numbers ------------------------------------------------------------------------------

--- V.is_number(v) -> whether v is an int, float or bool (Python's bool is an int).
function V.is_number(v)
  local t = type(v)
  return t == "number" or t == "boolean"
end

--- V.num(v) -> v as a Lua number (True is 1, False 0).
function V.num(v)
  if v == true then return 1 end
  if v == false then return 0 end
  return v
end
local num = V.num

--- V.float_repr(x) -> Python's repr of float x ("1.0", "0.1", "1e-05", "inf").
function V.float_repr(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  if x == 0 then return (1 / x < 0) and "-0.0" or "0.0" end
  local s
  for p = 0, 16 do
    s = format("%." .. p .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, mant, exp = s:match("^(-?)([%d.]+)e([-+]%d+)$")
  local digits = mant:gsub("%.", ""):gsub("0+$", "")
  if digits == "" then digits = "0" end
  local e = tonumber(exp)
  if e >= -4 and e < 16 then
    if e >= 0 then
      local int = digits:sub(1, e + 1)
      if #int < e + 1 then int = int .. rep("0", e + 1 - #int) end
      local frac = digits:sub(e + 2)
      if frac == "" then frac = "0" end
      return sign .. int .. "." .. frac
    end
    return sign .. "0." .. rep("0", -e - 1) .. digits
  end
  local m = digits:sub(1, 1)
  if #digits > 1 then m = m .. "." .. digits:sub(2) end
  return sign .. m .. "e" .. (e < 0 and "-" or "+") .. format("%02d", math.abs(e))
end

-- ---- str and repr -------------------------------------------------------------------------

local function printable(cp)
  if cp < 0x20 or cp == 0x7F then return false end
  if cp < 0x7F then return true end
  if cp <= 0xA0 or cp == 0xAD then return false end
  if (cp >= 0x2000 and cp <= 0x200F) or (cp >= 0x2028 and cp <= 0x202F) or (cp >= 0x205F and cp <= 0x206F) then
    return false
  end
  if cp == 0x1680 or cp == 0x3000 or cp == 0xFEFF or cp == 0x061C or cp == 0x180E then return false end
  if (cp >= 0xD800 and cp <= 0xF8FF) or (cp >= 0xFFF9 and cp <= 0xFFFB) or cp == 0xFFFE or cp == 0xFFFF then
    return false
  end
  if cp >= 0xF0000 then return false end
  return true
end

--- V.str_repr(s) -> Python's repr of the string s ('it''s' style quoting and escapes).
function V.str_repr(s)
  local quote = "'"
  if s:find("'", 1, true) and not s:find('"', 1, true) then quote = '"' end
  local out, i, n = { quote }, 1, #s
  while i <= n do
    local cp, len = U.decode_at(s, i)
    local piece
    if cp == 0x5C then piece = "\\\\"
    elseif cp == byte(quote) then piece = "\\" .. quote
    elseif cp == 0x09 then piece = "\\t"
    elseif cp == 0x0A then piece = "\\n"
    elseif cp == 0x0D then piece = "\\r"
    elseif printable(cp) then piece = sub(s, i, i + len - 1)
    elseif cp <= 0xFF then piece = format("\\x%02x", cp)
    elseif cp <= 0xFFFF then piece = format("\\u%04x", cp)
    else piece = format("\\U%08x", cp) end
    out[#out + 1] = piece
    i = i + len
  end
  out[#out + 1] = quote
  return concat(out)
end

local str, repr

--- V.str(v) -> Python's str(v) (what `{{ v }}` prints): None is "None", True "True",
-- Undefined "", a list "[1, 'a']", a dict "{'k': 'v'}".
function str(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if mtype(v) == "integer" then return format("%d", v) end
    return V.float_repr(v)
  end
  if t == "boolean" then return v and "True" or "False" end
  local k = kind(v)
  if k == "none" then return "None" end
  if k == "undefined" then return "" end
  if k == "list" or k == "tuple" then
    local parts = {}
    for i = 1, rawlen(v) do parts[i] = repr(v[i]) end
    if k == "list" then return "[" .. concat(parts, ", ") .. "]" end
    if #parts == 1 then return "(" .. parts[1] .. ",)" end
    return "(" .. concat(parts, ", ") .. ")"
  end
  if k == "dict" then
    local parts = {}
    for _, key in ipairs(V.keys(v)) do parts[#parts + 1] = repr(key) .. ": " .. repr(v[key]) end
    return "{" .. concat(parts, ", ") .. "}"
  end
  if k == "namespace" then return "<Namespace " .. str(v.attrs) .. ">" end
  if k == "loop" then return format("<LoopContext %d/%d>", v.index0 + 1, v.length) end
  if k == "callable" then
    if t == "table" and v.macro then return format("<Macro '%s'>", v.name) end
    return format("<built-in function %s>", t == "table" and v.name or "function")
  end
  return tostring(v)
end

--- V.repr(v) -> Python's repr(v) (strings quoted, Undefined "Undefined").
function repr(v)
  if type(v) == "string" then return V.str_repr(v) end
  if V.is_undefined(v) then return "Undefined" end
  return str(v)
end
V.str, V.repr = str, repr

-- ---- Undefined ----------------------------------------------------------------------------

local function object_type_repr(obj)
  if rawequal(obj, NONE) then return "None" end
  return TYPE_NAMES[kind(obj)] .. " object"
end

--- V.undefined_message(u) -> what Undefined u stands for ("'x' is undefined",
-- "'dict object' has no attribute 'y'").
function V.undefined_message(u)
  if u.hint then return u.hint end
  if u.obj == nil then return format("'%s' is undefined", tostring(u.name)) end
  if type(u.name) ~= "string" then
    return format("%s has no element %s", object_type_repr(u.obj), repr(u.name))
  end
  return format("'%s' has no attribute '%s'", object_type_repr(u.obj), u.name)
end

--- V.fail_undefined(u): raises the error of using Undefined u.
function V.fail_undefined(u)
  V.error(V.undefined_message(u))
end
local fail_undefined = V.fail_undefined

-- ---- equality and order -------------------------------------------------------------------

local eq

--- V.eq(a, b) -> Python's a == b (1 == 1.0 == True; a list never equals a tuple; containers
-- compare by content; every Undefined equals every other).
function eq(a, b)
  if rawequal(a, b) then return true end
  local ta, tb = type(a), type(b)
  if (ta == "number" or ta == "boolean") and (tb == "number" or tb == "boolean") then
    return num(a) == num(b)
  end
  if ta ~= "table" or tb ~= "table" then return false end
  local ka, kb = kind(a), kind(b)
  if ka ~= kb then return false end
  if ka == "undefined" then return true end
  if ka == "list" or ka == "tuple" then
    local n = rawlen(a)
    if rawlen(b) ~= n then return false end
    for i = 1, n do
      if not eq(a[i], b[i]) then return false end
    end
    return true
  end
  if ka == "dict" then
    if V.dict_len(a) ~= V.dict_len(b) then return false end
    for key, value in next, a do
      local other = rawget(b, key)
      if other == nil or not eq(value, other) then return false end
    end
    return true
  end
  return false
end
V.eq = eq

local cmp

--- V.cmp(a, b, op) -> negative, 0 or positive as a < b, a == b, a > b for values Python can
-- order (numbers, strings, lists and tuples of them); an error naming op otherwise.
function cmp(a, b, op)
  local ta, tb = type(a), type(b)
  if (ta == "number" or ta == "boolean") and (tb == "number" or tb == "boolean") then
    local x, y = num(a), num(b)
    if x < y then return -1 elseif x > y then return 1 end
    return 0
  end
  if ta == "string" and tb == "string" then
    if a < b then return -1 elseif a > b then return 1 end
    return 0
  end
  if V.is_undefined(a) then fail_undefined(a) end
  if V.is_undefined(b) then fail_undefined(b) end
  local ka, kb = kind(a), kind(b)
  if ka == kb and (ka == "list" or ka == "tuple") then
    local n, m = rawlen(a), rawlen(b)
    for i = 1, math.min(n, m) do
      if not eq(a[i], b[i]) then return cmp(a[i], b[i], op) end
    end
    return n - m
  end
  V.error(format("'%s' not supported between instances of '%s' and '%s'", op or "<", TYPE_NAMES[ka], TYPE_NAMES[kb]))
end
V.cmp = cmp

--- V.contains(container, item) -> Python's `item in container`.
function V.contains(container, item)
  local k = kind(container)
  if k == "str" then
    if type(item) ~= "string" then
      if V.is_undefined(item) then fail_undefined(item) end
      V.error(format("'in <string>' requires string as left operand, not %s", V.type_name(item)))
    end
    return container:find(item, 1, true) ~= nil
  end
  if k == "list" or k == "tuple" then
    for i = 1, rawlen(container) do
      if eq(container[i], item) then return true end
    end
    return false
  end
  if k == "dict" then
    local key = V.dict_key(item)
    if key == nil or type(key) == "table" then return false end
    return rawget(container, key) ~= nil
  end
  if k == "undefined" then return false end
  V.error(format("argument of type '%s' is not iterable", TYPE_NAMES[k]))
end

-- ---- arithmetic ---------------------------------------------------------------------------

local function check_defined(a, b)
  if V.is_undefined(a) then fail_undefined(a) end
  if V.is_undefined(b) then fail_undefined(b) end
end

local function unsupported(op, a, b)
  V.error(format("unsupported operand type(s) for %s: '%s' and '%s'", op, V.type_name(a), V.type_name(b)))
end

local function concat_seq(a, b, make)
  local out = {}
  for i = 1, rawlen(a) do out[i] = a[i] end
  local n = #out
  for i = 1, rawlen(b) do out[n + i] = b[i] end
  return make(out)
end

local function repeat_seq(s, n, make)
  if type(s) == "string" then
    if n <= 0 then return "" end
    return rep(s, n)
  end
  local out = {}
  for _ = 1, n do
    for i = 1, rawlen(s) do out[#out + 1] = s[i] end
  end
  return make(out)
end

--- V.add(a, b) -> Python's a + b (numbers, str + str, list + list, tuple + tuple).
function V.add(a, b)
  check_defined(a, b)
  if V.is_number(a) and V.is_number(b) then return num(a) + num(b) end
  local ta, tb = type(a), type(b)
  if ta == "string" and tb == "string" then return a .. b end
  if ta == "string" then
    V.error(format('can only concatenate str (not "%s") to str', V.type_name(b)))
  end
  local ka, kb = kind(a), kind(b)
  if ka == "list" and kb == "list" then return concat_seq(a, b, V.list) end
  if ka == "tuple" and kb == "tuple" then return concat_seq(a, b, V.tuple) end
  unsupported("+", a, b)
end

--- V.sub(a, b) -> Python's a - b.
function V.sub(a, b)
  check_defined(a, b)
  if V.is_number(a) and V.is_number(b) then return num(a) - num(b) end
  unsupported("-", a, b)
end

--- V.mul(a, b) -> Python's a * b (numbers; a string, list or tuple times an int repeats it).
function V.mul(a, b)
  check_defined(a, b)
  if V.is_number(a) and V.is_number(b) then return num(a) * num(b) end
  local ka, kb = kind(a), kind(b)
  local seq = { str = true, list = true, tuple = true }
  if seq[ka] and (kb == "int" or kb == "bool") then
    return repeat_seq(a, num(b), ka == "tuple" and V.tuple or V.list)
  end
  if seq[kb] and (ka == "int" or ka == "bool") then
    return repeat_seq(b, num(a), kb == "tuple" and V.tuple or V.list)
  end
  unsupported("*", a, b)
end

--- V.truediv(a, b) -> Python's a / b (always a float).
function V.truediv(a, b)
  check_defined(a, b)
  if not (V.is_number(a) and V.is_number(b)) then unsupported("/", a, b) end
  if num(b) == 0 then V.error("division by zero") end
  return num(a) / num(b) + 0.0
end

--- V.floordiv(a, b) -> Python's a // b.
function V.floordiv(a, b)
  check_defined(a, b)
  if not (V.is_number(a) and V.is_number(b)) then unsupported("//", a, b) end
  local x, y = num(a), num(b)
  if y == 0 then V.error("integer division or modulo by zero") end
  return x // y
end

--- V.mod(a, b) -> Python's a % b for numbers (ft.text.jinja.format does strings).
function V.mod(a, b)
  check_defined(a, b)
  if not (V.is_number(a) and V.is_number(b)) then unsupported("%", a, b) end
  local x, y = num(a), num(b)
  if y == 0 then V.error("integer division or modulo by zero") end
  return x % y
end

--- V.pow(a, b) -> Python's a ** b (an int for int ** non-negative int).
function V.pow(a, b)
  check_defined(a, b)
  if not (V.is_number(a) and V.is_number(b)) then unsupported("** or pow()", a, b) end
  local x, y = num(a), num(b)
  if mtype(x) == "integer" and mtype(y) == "integer" and y >= 0 then
    local result, base = 1, x
    while y > 0 do
      if y % 2 == 1 then result = result * base end
      base = base * base
      y = y // 2
    end
    return result
  end
  if x == 0 and y < 0 then V.error("0.0 cannot be raised to a negative power") end
  local r = (x + 0.0) ^ y
  if r ~= r and x == x and y == y then V.error("math domain error: negative number raised to a fractional power") end
  return r
end

--- V.neg(a) -> Python's -a.
function V.neg(a)
  if V.is_undefined(a) then fail_undefined(a) end
  if not V.is_number(a) then V.error(format("bad operand type for unary -: '%s'", V.type_name(a))) end
  return -num(a)
end

--- V.pos(a) -> Python's +a.
function V.pos(a)
  if V.is_undefined(a) then fail_undefined(a) end
  if not V.is_number(a) then V.error(format("bad operand type for unary +: '%s'", V.type_name(a))) end
  return num(a)
end

-- ---- slices -------------------------------------------------------------------------------

local function slice_index(v)
  if v == nil or rawequal(v, NONE) then return nil end
  if type(v) == "boolean" then return v and 1 or 0 end
  if mtype(v) ~= "integer" then
    if V.is_undefined(v) then fail_undefined(v) end
    V.error("slice indices must be integers or None or have an __index__ method")
  end
  return v
end

--- V.slice(obj, start, stop, step) -> Python's obj[start:stop:step] for a list, tuple or
-- string (nil or None for an omitted bound).
function V.slice(obj, start, stop, step)
  local k = kind(obj)
  if k == "undefined" then fail_undefined(obj) end
  local items
  if k == "str" then items = U.chars(obj)
  elseif k == "list" or k == "tuple" then items = obj
  else V.error(format("'%s' object is not subscriptable", TYPE_NAMES[k])) end
  local n = rawlen(items)
  step = slice_index(step) or 1
  if step == 0 then V.error("slice step cannot be zero") end
  start, stop = slice_index(start), slice_index(stop)
  local lower, upper
  if step > 0 then lower, upper = 0, n else lower, upper = -1, n - 1 end
  local function clamp(i, default)
    if i == nil then return default end
    if i < 0 then
      i = i + n
      if i < lower then i = lower end
    elseif i > upper then
      i = upper
    end
    return i
  end
  start = clamp(start, step > 0 and lower or upper)
  stop = clamp(stop, step > 0 and upper or lower)
  local out = {}
  local i = start
  while (step > 0 and i < stop) or (step < 0 and i > stop) do
    out[#out + 1] = items[i + 1]
    i = i + step
  end
  if k == "str" then return concat(out) end
  if k == "tuple" then return V.tuple(out) end
  return V.list(out)
end

-- ---- arguments ----------------------------------------------------------------------------

--- V.bind(where, args, kwargs, names, required) -> Lua array of the arguments in the order of
-- names (nil where not given), from positional args and the dict kwargs; the first `required`
-- must be given. Errors name where ("split() got an unexpected keyword argument 'x'").
function V.bind(where, args, kwargs, names, required)
  local out = {}
  local n = #args
  if n > #names then
    V.error(format("%s() takes at most %d argument%s (%d given)", where, #names, #names == 1 and "" or "s", n))
  end
  for i = 1, n do out[i] = args[i] end
  if kwargs then
    for _, key in ipairs(V.keys(kwargs)) do
      local idx
      for i, name in ipairs(names) do
        if name == key then idx = i break end
      end
      if not idx then V.error(format("%s() got an unexpected keyword argument '%s'", where, tostring(key))) end
      if out[idx] ~= nil then V.error(format("%s() got multiple values for argument '%s'", where, key)) end
      out[idx] = kwargs[key]
    end
  end
  for i = 1, required or 0 do
    if out[i] == nil then V.error(format("%s() missing required argument '%s'", where, names[i])) end
  end
  return out
end

--- V.given(v) -> v unless it is nil or None (an argument left to its default).
function V.given(v)
  if v == nil or rawequal(v, NONE) then return nil end
  return v
end

return V
