-- ft.text.jinja.filters: Jinja's built-in filters and tests, with transformers' tojson.
--
--   local F = require "ft.text.jinja.filters"
--   F.filters.upper(ctx, "abc", {}, nil)            --> "ABC"
--   F.tests.divisibleby(ctx, 9, {3}, nil)          --> true
--
-- Filters: abs attr batch capitalize center count d default dictsort e escape first float
-- forceescape format indent int items join last length list lower map max min reject
-- rejectattr replace reverse round safe select selectattr sort string sum title tojson trim
-- unique upper wordcount. Tests: boolean callable defined divisibleby eq equalto escaped even
-- false filter float ge greaterthan gt in integer iterable le lessthan lower lt mapping ne none
-- number odd sameas sequence string test true undefined upper, and == != < <= > >=.
-- Each is fn(ctx, value, args, kwargs) with args a Lua array and kwargs a dict or nil.
local V = require "ft.text.jinja.values"
local U = require "ft.text.jinja.unicode"
local M = require "ft.text.jinja.methods"
local tojson = require "ft.text.jinja.tojson"
local fmt = require "ft.text.jinja.format"

local F = {}

local format, rep = string.format, string.rep
local concat = table.concat
local mtype = math.type
local NONE = V.NONE
local bind, given, str = V.bind, V.given, V.str

local filters, tests = {}, {}
F.filters, F.tests = filters, tests

-- The string a filter works on: Python's str() of the value (Undefined is "").
local function soft_str(v) return str(v) end

-- The items of an iterable, as a fresh Lua array.
local function list_of(v)
  local items = V.items(v)
  local out = {}
  for i = 1, rawlen(items) do out[i] = items[i] end
  return out
end

-- Stable sort by cmp(a, b) < 0.
local function stable_sort(items, less)
  local idx = {}
  for i = 1, #items do idx[i] = i end
  table.sort(idx, function(a, b)
    if less(items[a], items[b]) then return true end
    if less(items[b], items[a]) then return false end
    return a < b
  end)
  local out = {}
  for i, j in ipairs(idx) do out[i] = items[j] end
  return out
end

local function ignore_case(v, case_sensitive)
  if not case_sensitive and type(v) == "string" then return U.lower(v) end
  return v
end

-- A function item -> the value at `attribute` (dotted, or comma-separated for several), or item.
local function attr_getter(attribute, case_sensitive, default)
  if attribute == nil then
    return function(item) return ignore_case(item, case_sensitive) end
  end
  local parts = {}
  if type(attribute) == "string" and attribute:find(",", 1, true) then
    for part in attribute:gmatch("[^,]+") do parts[#parts + 1] = part:match("^%s*(.-)%s*$") end
  else
    parts[1] = attribute
  end
  local function one(item, path)
    local v = M.lookup(item, path)
    if default ~= nil and V.is_undefined(v) then v = default end
    return ignore_case(v, case_sensitive)
  end
  if #parts == 1 then
    return function(item) return one(item, parts[1]) end
  end
  return function(item)
    local out = {}
    for i, p in ipairs(parts) do out[i] = one(item, p) end
    return V.list(out)
  end
end

local function check_str(where, v)
  if type(v) ~= "string" then V.error(format("%s: expected a string, got %s", where, V.type_name(v))) end
  return v
end

-- ---- strings ------------------------------------------------------------------------------

filters.upper = function(_, v) return U.upper(soft_str(v)) end
filters.lower = function(_, v) return U.lower(soft_str(v)) end
filters.capitalize = function(_, v) return M.capitalize(soft_str(v)) end

-- Jinja's title: each word (split at whitespace, '-', '(', '{', '[' and '<') gets its first
-- character raised and the rest lowered, as one string (so a final sigma stays final).
filters.title = function(_, v)
  local s = soft_str(v)
  local out, word = {}, {}
  local function flush()
    if #word > 0 then
      out[#out + 1] = U.upper(word[1]) .. U.lower(concat(word, "", 2))
      word = {}
    end
  end
  for _, c in ipairs(U.chars(s)) do
    local cp = U.decode_at(c, 1)
    if U.is_space_cp(cp) or c == "-" or c == "(" or c == "{" or c == "[" or c == "<" then
      flush()
      out[#out + 1] = c
    else
      word[#word + 1] = c
    end
  end
  flush()
  return concat(out)
end

filters.trim = function(_, v, args, kwargs)
  local a = bind("trim", args, kwargs, { "chars" })
  local chars = given(a[1])
  return U.strip(soft_str(v), chars and check_str("trim", chars), true, true)
end

filters.replace = function(_, v, args, kwargs)
  local a = bind("replace", args, kwargs, { "old", "new", "count" }, 2)
  local count = given(a[3])
  return M.replace(soft_str(v), soft_str(a[1]), soft_str(a[2]), count and V.num(count) or -1)
end

filters.indent = function(_, v, args, kwargs)
  local a = bind("indent", args, kwargs, { "width", "first", "blank" })
  local width = given(a[1]) or 4
  local indention = type(width) == "string" and width or rep(" ", V.num(width))
  if type(v) ~= "string" then
    if V.is_undefined(v) then V.fail_undefined(v) end
    V.error(format("unsupported operand type(s) for +=: '%s' and 'str'", V.type_name(v)))
  end
  local s = v .. "\n"
  local lines = M.splitlines(s)
  local rv
  if V.truthy(a[3]) then
    rv = concat(lines, "\n" .. indention)
  else
    rv = lines[1] or ""
    if #lines > 1 then
      local rest = {}
      for i = 2, #lines do rest[#rest + 1] = lines[i] ~= "" and (indention .. lines[i]) or lines[i] end
      rv = rv .. "\n" .. concat(rest, "\n")
    end
  end
  if V.truthy(a[2]) then rv = indention .. rv end
  return rv
end

filters.center = function(_, v, args, kwargs)
  local a = bind("center", args, kwargs, { "width" })
  return M.center(soft_str(v), given(a[1]) or 80)
end

filters.wordcount = function(_, v)
  local count, in_word = 0, false
  for _, cp in ipairs(U.codepoints(soft_str(v))) do
    local w = U.is_word_cp(cp)
    if w and not in_word then count = count + 1 end
    in_word = w
  end
  return count
end

filters.format = function(_, v, args, kwargs)
  if kwargs and next(kwargs) and #args > 0 then
    V.error("format: can't handle positional and keyword arguments at the same time")
  end
  if kwargs and next(kwargs) then return fmt.percent_format(soft_str(v), kwargs) end
  return fmt.percent_format(soft_str(v), V.tuple(args))
end

local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }
filters.escape = function(_, v)
  return (soft_str(v):gsub("[&<>\"']", HTML))
end
filters.e = filters.escape
filters.forceescape = filters.escape
filters.safe = function(_, v) return v end

filters.string = function(_, v) return soft_str(v) end

-- ---- numbers ------------------------------------------------------------------------------

-- Python's int(s) for a string (whitespace and underscores allowed), or nil.
local function parse_int(s, base)
  s = s:match("^%s*(.-)%s*$"):gsub("_", "")
  local sign = 1
  if s:sub(1, 1) == "-" then sign, s = -1, s:sub(2) elseif s:sub(1, 1) == "+" then s = s:sub(2) end
  if base == 16 then s = s:gsub("^0[xX]", "") elseif base == 8 then s = s:gsub("^0[oO]", "")
  elseif base == 2 then s = s:gsub("^0[bB]", "") end
  if s == "" or not s:match("^%w+$") then return nil end
  local v = tonumber(s, base)
  if v == nil then return nil end
  return math.tointeger(sign * v)
end

local function parse_float(s)
  local t = s:match("^%s*(.-)%s*$"):gsub("_", ""):lower()
  if t == "nan" or t == "+nan" or t == "-nan" then return 0 / 0 end
  if t == "inf" or t == "+inf" or t == "infinity" or t == "+infinity" then return math.huge end
  if t == "-inf" or t == "-infinity" then return -math.huge end
  if not t:match("^[-+]?%d*%.?%d*e?[-+]?%d*$") then return nil end
  local v = tonumber(t)
  return v and v + 0.0
end

filters.int = function(_, v, args, kwargs)
  local a = bind("int", args, kwargs, { "default", "base" })
  local default = a[1] == nil and 0 or a[1]
  local base = given(a[2]) or 10
  if type(v) == "string" then
    local i = parse_int(v, base)
    if i then return i end
    local f = parse_float(v)
    if f and f == f and f ~= math.huge and f ~= -math.huge then return math.tointeger(f >= 0 and math.floor(f) or math.ceil(f)) end
    return default
  end
  if type(v) == "boolean" then return v and 1 or 0 end
  if type(v) == "number" then
    if mtype(v) == "integer" then return v end
    if v ~= v or v == math.huge or v == -math.huge then return default end
    return math.tointeger(v >= 0 and math.floor(v) or math.ceil(v))
  end
  if V.is_undefined(v) then V.fail_undefined(v) end
  return default
end

filters.float = function(_, v, args, kwargs)
  local a = bind("float", args, kwargs, { "default" })
  local default = a[1] == nil and 0.0 or a[1]
  if type(v) == "string" then return parse_float(v) or default end
  if V.is_number(v) then return V.num(v) + 0.0 end
  if V.is_undefined(v) then V.fail_undefined(v) end
  return default
end

filters.abs = function(_, v)
  if not V.is_number(v) then
    if V.is_undefined(v) then V.fail_undefined(v) end
    V.error(format("bad operand type for abs(): '%s'", V.type_name(v)))
  end
  local x = V.num(v)
  return x < 0 and -x or x
end

filters.round = function(_, v, args, kwargs)
  local a = bind("round", args, kwargs, { "precision", "method" })
  local precision = given(a[1]) or 0
  local method = given(a[2]) or "common"
  if method ~= "common" and method ~= "ceil" and method ~= "floor" then
    V.error("round: method must be common, ceil or floor")
  end
  if not V.is_number(v) then V.error(format("round: a number is required, not %s", V.type_name(v))) end
  local x = V.num(v)
  if method == "common" then
    if mtype(x) == "integer" and precision >= 0 then return x end
    if precision >= 0 then
      local r = tonumber(format("%." .. precision .. "f", x)) + 0.0
      if r == 0 and (x < 0 or 1 / x < 0) then r = -0.0 end
      return r
    end
    local scale = 10 ^ -precision
    return tonumber(format("%.0f", x / scale)) * scale
  end
  local scale = 10 ^ precision
  local f = method == "ceil" and math.ceil or math.floor
  return f(x * scale) / scale + 0.0
end

-- ---- sequences ----------------------------------------------------------------------------

filters.length = function(_, v) return V.len(v) end
filters.count = filters.length

filters.list = function(_, v) return V.list(list_of(v)) end

filters.first = function(_, v)
  local items = V.items(v)
  if rawlen(items) == 0 then return V.undefined("No first item, sequence was empty.") end
  return items[1]
end

filters.last = function(_, v)
  local items = V.items(v)
  local n = rawlen(items)
  if n == 0 then return V.undefined("No last item, sequence was empty.") end
  return items[n]
end

filters.join = function(_, v, args, kwargs)
  local a = bind("join", args, kwargs, { "d", "attribute" })
  local sep = given(a[1]) or ""
  local items = list_of(v)
  local get = given(a[2]) and attr_getter(a[2], true) or nil
  local parts = {}
  for i, item in ipairs(items) do
    if get then item = get(item) end
    parts[i] = soft_str(item)
  end
  return concat(parts, soft_str(sep))
end

filters.reverse = function(_, v)
  if type(v) == "string" then
    local chars = U.chars(v)
    local out = {}
    for i = #chars, 1, -1 do out[#out + 1] = chars[i] end
    return concat(out)
  end
  local items = list_of(v)
  local out = {}
  for i = #items, 1, -1 do out[#out + 1] = items[i] end
  return V.list(out)
end

filters.sort = function(_, v, args, kwargs)
  local a = bind("sort", args, kwargs, { "reverse", "case_sensitive", "attribute" })
  local reverse, key = V.truthy(a[1]), attr_getter(given(a[3]), V.truthy(a[2]))
  local items = list_of(v)
  local sorted = stable_sort(items, function(x, y)
    if reverse then return V.cmp(key(y), key(x), "<") < 0 end
    return V.cmp(key(x), key(y), "<") < 0
  end)
  return V.list(sorted)
end

filters.unique = function(_, v, args, kwargs)
  local a = bind("unique", args, kwargs, { "case_sensitive", "attribute" })
  local key = attr_getter(given(a[2]), V.truthy(a[1]))
  local seen, out = {}, {}
  for _, item in ipairs(list_of(v)) do
    local k = key(item)
    local dup = false
    for _, s in ipairs(seen) do
      if V.eq(s, k) then dup = true break end
    end
    if not dup then
      seen[#seen + 1] = k
      out[#out + 1] = item
    end
  end
  return V.list(out)
end

local function min_max(where, want_max)
  return function(_, v, args, kwargs)
    local a = bind(where, args, kwargs, { "case_sensitive", "attribute" })
    local key = attr_getter(given(a[2]), V.truthy(a[1]))
    local items = list_of(v)
    if #items == 0 then return V.undefined("No aggregated item, sequence was empty.") end
    local best, best_key = items[1], key(items[1])
    for i = 2, #items do
      local k = key(items[i])
      local c = V.cmp(k, best_key, want_max and ">" or "<")
      if (want_max and c > 0) or (not want_max and c < 0) then best, best_key = items[i], k end
    end
    return best
  end
end
filters.min = min_max("min", false)
filters.max = min_max("max", true)

filters.sum = function(_, v, args, kwargs)
  local a = bind("sum", args, kwargs, { "attribute", "start" })
  local get = given(a[1]) and attr_getter(a[1], true) or nil
  local total = a[2] == nil and 0 or a[2]
  for _, item in ipairs(list_of(v)) do
    if get then item = get(item) end
    total = V.add(total, item)
  end
  return total
end

filters.batch = function(_, v, args, kwargs)
  local a = bind("batch", args, kwargs, { "linecount", "fill_with" }, 1)
  local size = V.num(a[1])
  if mtype(size) ~= "integer" or size < 1 then V.error("batch: linecount must be a positive integer") end
  local out, cur = {}, {}
  for _, item in ipairs(list_of(v)) do
    cur[#cur + 1] = item
    if #cur == size then
      out[#out + 1] = V.list(cur)
      cur = {}
    end
  end
  if #cur > 0 then
    if given(a[2]) ~= nil then
      while #cur < size do cur[#cur + 1] = a[2] end
    end
    out[#out + 1] = V.list(cur)
  end
  return V.list(out)
end

-- ---- mappings -----------------------------------------------------------------------------

filters.items = function(_, v)
  if V.is_undefined(v) then return V.list({}) end
  if V.kind(v) ~= "dict" then V.error("Can only get item pairs from a mapping.") end
  return M.dict_items(v)
end

filters.dictsort = function(_, v, args, kwargs)
  local a = bind("dictsort", args, kwargs, { "case_sensitive", "by", "reverse" })
  local case_sensitive, by, reverse = V.truthy(a[1]), given(a[2]) or "key", V.truthy(a[3])
  if by ~= "key" and by ~= "value" then V.error("You can only sort by either 'key' or 'value'") end
  if V.kind(v) ~= "dict" then V.error("dictsort: a dict is required") end
  local pos = by == "key" and 1 or 2
  local items = {}
  for i, k in ipairs(V.keys(v)) do items[i] = V.tuple({ k, v[k] }) end
  local sorted = stable_sort(items, function(x, y)
    local kx, ky = ignore_case(x[pos], case_sensitive), ignore_case(y[pos], case_sensitive)
    if reverse then return V.cmp(ky, kx) < 0 end
    return V.cmp(kx, ky) < 0
  end)
  return V.list(sorted)
end

filters.attr = function(_, v, args, kwargs)
  local a = bind("attr", args, kwargs, { "name" }, 1)
  return M.attr(v, str(a[1]))
end

filters.default = function(_, v, args, kwargs)
  local a = bind("default", args, kwargs, { "default_value", "boolean" })
  local default = a[1] == nil and "" or a[1]
  if V.is_undefined(v) or (V.truthy(a[2]) and not V.truthy(v)) then return default end
  return v
end
filters.d = filters.default

-- transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
filters.tojson = function(_, v, args, kwargs)
  local a = bind("tojson", args, kwargs, { "ensure_ascii", "indent", "separators", "sort_keys" })
  local indent = given(a[2])
  if indent ~= nil and type(indent) ~= "string" and not V.is_number(indent) then
    V.error("tojson: indent must be an integer or a string")
  end
  local separators = given(a[3])
  if separators ~= nil then
    if not V.is_sequence(separators) or rawlen(separators) ~= 2 then
      V.error("tojson: separators must be a pair of strings (item_separator, key_separator)")
    end
    separators = { check_str("tojson separators", separators[1]), check_str("tojson separators", separators[2]) }
  end
  return tojson.dumps(v, { ensure_ascii = V.truthy(a[1]), indent = indent and (type(indent) == "string" and indent or V.num(indent)),
    separators = separators, sort_keys = V.truthy(a[4]) })
end

-- ---- map, select, reject ------------------------------------------------------------------

local function call_test(ctx, name, value, args)
  local test = tests[name]
  if not test then V.error(format("no test named '%s'", tostring(name))) end
  return test(ctx, value, args, nil)
end

filters.map = function(ctx, v, args, kwargs)
  local items = list_of(v)
  local out = {}
  if #args == 0 and kwargs and kwargs.attribute ~= nil then
    local a = bind("map", args, kwargs, { "attribute", "default" })
    local get = attr_getter(a[1], true, a[2])
    for i, item in ipairs(items) do out[i] = get(item) end
    return V.list(out)
  end
  local name = args[1]
  if type(name) ~= "string" then V.error("map: expected a filter name or attribute=...") end
  local f = filters[name]
  if not f then V.error(format("no filter named '%s'", name)) end
  local rest = { table.unpack(args, 2) }
  for i, item in ipairs(items) do out[i] = f(ctx, item, rest, kwargs) end
  return V.list(out)
end

local function select_impl(want, by_attr)
  return function(ctx, v, args)
    local items = list_of(v)
    local get, first = nil, 1
    if by_attr then
      if args[1] == nil then V.error("selectattr/rejectattr: an attribute name is needed") end
      get = attr_getter(args[1], true)
      first = 2
    end
    local name = args[first]
    local rest = { table.unpack(args, first + 1) }
    local out = {}
    for _, item in ipairs(items) do
      local value = item
      if get then value = get(item) end
      local ok
      if name == nil then ok = V.truthy(value) else ok = call_test(ctx, name, value, rest) end
      if ok == want then out[#out + 1] = item end
    end
    return V.list(out)
  end
end
filters.select = select_impl(true, false)
filters.reject = select_impl(false, false)
filters.selectattr = select_impl(true, true)
filters.rejectattr = select_impl(false, true)

-- ---- tests --------------------------------------------------------------------------------

local function arg1(where, args)
  if args[1] == nil then V.error(format("%s() missing required argument", where)) end
  return args[1]
end

tests.defined = function(_, v) return not V.is_undefined(v) end
tests.undefined = function(_, v) return V.is_undefined(v) end
tests.none = function(_, v) return rawequal(v, NONE) end
tests.boolean = function(_, v) return type(v) == "boolean" end
tests["true"] = function(_, v) return v == true end
tests["false"] = function(_, v) return v == false end
tests.integer = function(_, v) return mtype(v) == "integer" end
tests.float = function(_, v) return mtype(v) == "float" end
tests.number = function(_, v) return V.is_number(v) end
tests.string = function(_, v) return type(v) == "string" end
tests.mapping = function(_, v) return V.kind(v) == "dict" end
tests.callable = function(_, v) return V.kind(v) == "callable" end
tests.iterable = function(_, v)
  local k = V.kind(v)
  return k == "str" or k == "list" or k == "tuple" or k == "dict" or k == "undefined"
end
tests.sequence = function(_, v)
  local k = V.kind(v)
  return k == "str" or k == "list" or k == "tuple" or k == "dict" or k == "undefined"
end
tests.odd = function(_, v) return V.mod(v, 2) == 1 end
tests.even = function(_, v) return V.mod(v, 2) == 0 end
tests.divisibleby = function(_, v, args) return V.mod(v, arg1("divisibleby", args)) == 0 end
tests.lower = function(_, v) return M.islower(soft_str(v)) end
tests.upper = function(_, v) return M.isupper(soft_str(v)) end
tests.escaped = function() return false end
tests.sameas = function(_, v, args)
  local other = arg1("sameas", args)
  if type(v) ~= type(other) then return false end
  if type(v) == "number" then return v == other and mtype(v) == mtype(other) end
  return rawequal(v, other)
end
tests["in"] = function(_, v, args) return V.contains(arg1("in", args), v) end
tests.filter = function(_, v) return type(v) == "string" and filters[v] ~= nil end
tests.test = function(_, v) return type(v) == "string" and tests[v] ~= nil end

tests.eq = function(_, v, args) return V.eq(v, arg1("eq", args)) end
tests.ne = function(_, v, args) return not V.eq(v, arg1("ne", args)) end
tests.lt = function(_, v, args) return V.cmp(v, arg1("lt", args), "<") < 0 end
tests.le = function(_, v, args) return V.cmp(v, arg1("le", args), "<=") <= 0 end
tests.gt = function(_, v, args) return V.cmp(v, arg1("gt", args), ">") > 0 end
tests.ge = function(_, v, args) return V.cmp(v, arg1("ge", args), ">=") >= 0 end
tests.equalto, tests["=="] = tests.eq, tests.eq
tests["!="] = tests.ne
tests.lessthan, tests["<"] = tests.lt, tests.lt
tests["<="] = tests.le
tests.greaterthan, tests[">"] = tests.gt, tests.gt
tests[">="] = tests.ge

return F
