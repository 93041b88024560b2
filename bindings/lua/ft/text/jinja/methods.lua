-- ft.text.jinja.methods: attribute and item access (`x.name`, `x[key]`) and the methods of
-- strings, dicts and lists, as Jinja's immutable sandbox exposes Python's.
--
--   local M = require "ft.text.jinja.methods"
--   local split = M.getattr("a,b", "split")          -- a callable
--   M.getitem(ft.json.decode('{"role": "user"}'), "role")   --> "user"
--
-- `x.name` tries the attribute (a method) first, then the item; `x[key]` the item first, then
-- the attribute; what is missing is an Undefined that names it. Methods that change their
-- object (list.append, dict.update ...) are refused, as the sandbox refuses them.
local V = require "ft.text.jinja.values"
local U = require "ft.text.jinja.unicode"
local fmt = require "ft.text.jinja.format"

local M = {}

local format, rep, sub = string.format, string.rep, string.sub
local concat = table.concat
local mtype = math.type
local NONE = V.NONE
local given, bind, str = V.given, V.bind, V.str

local function check_str(where, v, what)
  if type(v) ~= "string" then
    if V.is_undefined(v) then V.fail_undefined(v) end
    V.error(format("%s() argument%s must be str, not %s", where, what and (" " .. what) or "", V.type_name(v)))
  end
  return v
end

local function check_int(where, v)
  if mtype(v) == "integer" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  if V.is_undefined(v) then V.fail_undefined(v) end
  V.error(format("%s(): an integer is required, not %s", where, V.type_name(v)))
end

-- Python's normalization of optional start/end character indices over a length n.
local function norm_range(n, start, stop)
  start, stop = given(start), given(stop)
  start = start and check_int("slice", start) or 0
  stop = stop and check_int("slice", stop) or n
  if start < 0 then start = math.max(start + n, 0) end
  if stop < 0 then stop = math.max(stop + n, 0) end
  if stop > n then stop = n end
  return start, stop
end

-- s restricted to the characters [a, b) (0-based), and the byte offsets of its characters.
local function char_range(s, a, b)
  if U.is_ascii(s) then return sub(s, a + 1, b), nil end
  local off = U.offsets(s)
  if a >= b then return "", off end
  return sub(s, off[a + 1], off[b + 1] - 1), off
end

-- ---- strings ------------------------------------------------------------------------------

local STR = {}

local function find_plain(s, subs, from)
  return s:find(subs, from, true)
end

local function find_impl(where, s, args, kwargs, reverse)
  local a = bind(where, args, kwargs, { "sub", "start", "end" }, 1)
  local subs = check_str(where, a[1])
  local n = U.len(s)
  if given(a[2]) and check_int(where, a[2]) > n then return -1 end
  local start, stop = norm_range(n, a[2], a[3])
  if start > stop then return -1 end
  local piece = char_range(s, start, stop)
  local hit
  if reverse then
    local from = 1
    while true do
      local p = find_plain(piece, subs, from)
      if not p then break end
      hit = p
      from = p + 1
      if from > #piece + 1 then break end
    end
  else
    hit = find_plain(piece, subs, 1)
  end
  if not hit then return -1 end
  return start + U.char_index(piece, hit)
end

STR.find = function(s, args, kwargs) return find_impl("find", s, args, kwargs, false) end
STR.rfind = function(s, args, kwargs) return find_impl("rfind", s, args, kwargs, true) end
STR.index = function(s, args, kwargs)
  local i = find_impl("index", s, args, kwargs, false)
  if i < 0 then V.error("substring not found") end
  return i
end
STR.rindex = function(s, args, kwargs)
  local i = find_impl("rindex", s, args, kwargs, true)
  if i < 0 then V.error("substring not found") end
  return i
end

STR.count = function(s, args, kwargs)
  local a = bind("count", args, kwargs, { "sub", "start", "end" }, 1)
  local subs = check_str("count", a[1])
  local start, stop = norm_range(U.len(s), a[2], a[3])
  if start > stop then return 0 end
  local piece = char_range(s, start, stop)
  if subs == "" then return U.len(piece) + 1 end
  local count, from = 0, 1
  while true do
    local p = find_plain(piece, subs, from)
    if not p then break end
    count = count + 1
    from = p + #subs
  end
  return count
end

local function affix_impl(where, s, args, kwargs, at_end)
  local a = bind(where, args, kwargs, { "prefix", "start", "end" }, 1)
  local start, stop = norm_range(U.len(s), a[2], a[3])
  local piece = start <= stop and char_range(s, start, stop) or nil
  local options = a[1]
  if type(options) == "string" then options = { options }
  elseif not V.is_sequence(options) then
    if V.is_undefined(options) then V.fail_undefined(options) end
    V.error(format("%s first arg must be str or a tuple of str, not %s", where, V.type_name(options)))
  end
  if not piece then return false end
  for i = 1, rawlen(options) do
    local p = check_str(where, options[i])
    if at_end then
      if p == "" or sub(piece, -#p) == p then return true end
    elseif sub(piece, 1, #p) == p then
      return true
    end
  end
  return false
end

STR.startswith = function(s, args, kwargs) return affix_impl("startswith", s, args, kwargs, false) end
STR.endswith = function(s, args, kwargs) return affix_impl("endswith", s, args, kwargs, true) end

local function strip_impl(where, left, right)
  return function(s, args, kwargs)
    local a = bind(where, args, kwargs, { "chars" })
    local chars = given(a[1])
    if chars ~= nil then check_str(where, chars) end
    return U.strip(s, chars, left, right)
  end
end
STR.strip = strip_impl("strip", true, true)
STR.lstrip = strip_impl("lstrip", true, false)
STR.rstrip = strip_impl("rstrip", false, true)

-- The whitespace-separated words of s, at most maxsplit splits (the rest stays one word).
local function split_space(s, maxsplit, from_right)
  local cps, chars = U.codepoints(s), U.chars(s)
  local words, n = {}, #cps
  if not from_right then
    local i = 1
    while i <= n do
      while i <= n and U.is_space_cp(cps[i]) do i = i + 1 end
      if i > n then break end
      if maxsplit >= 0 and #words >= maxsplit then
        -- the rest, trailing whitespace included
        words[#words + 1] = concat(chars, "", i, n)
        break
      end
      local j = i
      while j <= n and not U.is_space_cp(cps[j]) do j = j + 1 end
      words[#words + 1] = concat(chars, "", i, j - 1)
      i = j
    end
    return words
  end
  local rev, i = {}, n
  while i >= 1 do
    while i >= 1 and U.is_space_cp(cps[i]) do i = i - 1 end
    if i < 1 then break end
    if maxsplit >= 0 and #rev >= maxsplit then
      rev[#rev + 1] = concat(chars, "", 1, i)
      break
    end
    local j = i
    while j >= 1 and not U.is_space_cp(cps[j]) do j = j - 1 end
    rev[#rev + 1] = concat(chars, "", j + 1, i)
    i = j
  end
  for k = #rev, 1, -1 do words[#words + 1] = rev[k] end
  return words
end

local function split_sep(s, sep, maxsplit, from_right)
  local parts = {}
  if not from_right then
    local from = 1
    while maxsplit < 0 or #parts < maxsplit do
      local p = s:find(sep, from, true)
      if not p then break end
      parts[#parts + 1] = sub(s, from, p - 1)
      from = p + #sep
    end
    parts[#parts + 1] = sub(s, from)
    return parts
  end
  local hits, from = {}, 1
  while true do
    local p = s:find(sep, from, true)
    if not p then break end
    hits[#hits + 1] = p
    from = p + #sep
  end
  local take = #hits
  if maxsplit >= 0 and take > maxsplit then take = maxsplit end
  local first = #hits - take + 1
  local prev_end = 1
  local head_end = first <= #hits and hits[first] - 1 or #s
  parts[1] = sub(s, 1, head_end)
  prev_end = head_end + #sep + 1
  for k = first + 1, #hits do
    parts[#parts + 1] = sub(s, prev_end, hits[k] - 1)
    prev_end = hits[k] + #sep
  end
  if take > 0 then parts[#parts + 1] = sub(s, prev_end) end
  return parts
end

local function split_impl(where, from_right)
  return function(s, args, kwargs)
    local a = bind(where, args, kwargs, { "sep", "maxsplit" })
    local sep = given(a[1])
    local maxsplit = given(a[2]) and check_int(where, a[2]) or -1
    if sep == nil then return V.list(split_space(s, maxsplit, from_right)) end
    check_str(where, sep)
    if sep == "" then V.error("empty separator") end
    return V.list(split_sep(s, sep, maxsplit, from_right))
  end
end
STR.split = split_impl("split", false)
STR.rsplit = split_impl("rsplit", true)

local LINE_BREAKS = {
  [0x0A] = true, [0x0B] = true, [0x0C] = true, [0x0D] = true, [0x1C] = true, [0x1D] = true,
  [0x1E] = true, [0x85] = true, [0x2028] = true, [0x2029] = true,
}

--- M.splitlines(s, keepends) -> Lua array of the lines of s, split at Python's line
-- boundaries (\n, \r\n, \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029).
function M.splitlines(s, keepends)
  local lines, cps, chars = {}, U.codepoints(s), U.chars(s)
  local start, i, n = 1, 1, #cps
  while i <= n do
    local cp = cps[i]
    if LINE_BREAKS[cp] then
      local stop = i
      if cp == 0x0D and cps[i + 1] == 0x0A then stop = i + 1 end
      lines[#lines + 1] = concat(chars, "", start, keepends and stop or i - 1)
      i = stop + 1
      start = i
    else
      i = i + 1
    end
  end
  if start <= n then lines[#lines + 1] = concat(chars, "", start, n) end
  return lines
end

STR.splitlines = function(s, args, kwargs)
  local a = bind("splitlines", args, kwargs, { "keepends" })
  return V.list(M.splitlines(s, V.truthy(a[1])))
end

--- M.replace(s, old, new, count) -> Python's s.replace(old, new, count) (count < 0: all).
function M.replace(s, old, new, count)
  if count == 0 then return s end
  local out, done = {}, 0
  if old == "" then
    for _, c in ipairs(U.chars(s)) do
      if count < 0 or done < count then
        out[#out + 1] = new
        done = done + 1
      end
      out[#out + 1] = c
    end
    if count < 0 or done < count then out[#out + 1] = new end
    return concat(out)
  end
  local from = 1
  while count < 0 or done < count do
    local p = s:find(old, from, true)
    if not p then break end
    out[#out + 1] = sub(s, from, p - 1)
    out[#out + 1] = new
    from = p + #old
    done = done + 1
  end
  out[#out + 1] = sub(s, from)
  return concat(out)
end

STR.replace = function(s, args, kwargs)
  local a = bind("replace", args, kwargs, { "old", "new", "count" }, 2)
  local count = given(a[3]) and check_int("replace", a[3]) or -1
  return M.replace(s, check_str("replace", a[1]), check_str("replace", a[2]), count)
end

STR.upper = function(s) return U.upper(s) end
STR.lower = function(s) return U.lower(s) end
STR.casefold = function(s) return U.lower(s) end
STR.swapcase = function(s) return U.swapcase(s) end

--- M.title(s) -> Python's str.title (a cased character after a cased one lowered, others
--- title-cased; full case mappings).
M.title = U.title
STR.title = function(s) return M.title(s) end

--- M.capitalize(s) -> Python's str.capitalize: the first character title-cased, the rest lowered.
M.capitalize = U.capitalize
STR.capitalize = function(s) return M.capitalize(s) end

local function pad_impl(where, how)
  return function(s, args, kwargs)
    local a = bind(where, args, kwargs, { "width", "fillchar" }, 1)
    local width = check_int(where, a[1])
    local fill = given(a[2]) or " "
    check_str(where, fill)
    if U.len(fill) ~= 1 then V.error("The fill character must be exactly one character long") end
    local n = U.len(s)
    if width <= n then return s end
    local pad = width - n
    if how == "left" then return s .. rep(fill, pad) end
    if how == "right" then return rep(fill, pad) .. s end
    local left = pad // 2 + (pad & width & 1)
    return rep(fill, left) .. s .. rep(fill, pad - left)
  end
end
STR.ljust = pad_impl("ljust", "left")
STR.rjust = pad_impl("rjust", "right")
STR.center = pad_impl("center", "center")

--- M.center(s, width) -> Python's s.center(width).
function M.center(s, width)
  return STR.center(s, { width }, nil)
end

STR.zfill = function(s, args, kwargs)
  local a = bind("zfill", args, kwargs, { "width" }, 1)
  local width = check_int("zfill", a[1])
  local n = U.len(s)
  if width <= n then return s end
  local sign = sub(s, 1, 1)
  if sign == "+" or sign == "-" then return sign .. rep("0", width - n) .. sub(s, 2) end
  return rep("0", width - n) .. s
end

STR.join = function(s, args, kwargs)
  local a = bind("join", args, kwargs, { "iterable" }, 1)
  local items = V.items(a[1])
  local parts = {}
  for i = 1, rawlen(items) do
    local item = items[i]
    if type(item) ~= "string" then
      V.error(format("sequence item %d: expected str instance, %s found", i - 1, V.type_name(item)))
    end
    parts[i] = item
  end
  return concat(parts, s)
end

local function partition_impl(where, from_right)
  return function(s, args, kwargs)
    local a = bind(where, args, kwargs, { "sep" }, 1)
    local sep = check_str(where, a[1])
    if sep == "" then V.error("empty separator") end
    local p
    if from_right then
      local from = 1
      while true do
        local q = s:find(sep, from, true)
        if not q then break end
        p, from = q, q + 1
      end
    else
      p = s:find(sep, 1, true)
    end
    if not p then
      if from_right then return V.tuple({ "", "", s }) end
      return V.tuple({ s, "", "" })
    end
    return V.tuple({ sub(s, 1, p - 1), sep, sub(s, p + #sep) })
  end
end
STR.partition = partition_impl("partition", false)
STR.rpartition = partition_impl("rpartition", true)

STR.removeprefix = function(s, args, kwargs)
  local p = check_str("removeprefix", bind("removeprefix", args, kwargs, { "prefix" }, 1)[1])
  if p ~= "" and sub(s, 1, #p) == p then return sub(s, #p + 1) end
  return s
end
STR.removesuffix = function(s, args, kwargs)
  local p = check_str("removesuffix", bind("removesuffix", args, kwargs, { "suffix" }, 1)[1])
  if p ~= "" and sub(s, -#p) == p then return sub(s, 1, #s - #p) end
  return s
end

local function all_chars(pred)
  return function(s)
    if s == "" then return false end
    for _, cp in ipairs(U.codepoints(s)) do
      if not pred(cp) then return false end
    end
    return true
  end
end
STR.isdigit = all_chars(U.is_digit_cp)
STR.isdecimal = STR.isdigit
STR.isnumeric = STR.isdigit
STR.isalpha = all_chars(U.is_alpha_cp)
STR.isalnum = all_chars(function(cp) return U.is_alpha_cp(cp) or U.is_digit_cp(cp) end)
STR.isspace = all_chars(U.is_space_cp)

--- M.islower(s) -> Python's s.islower(): some cased character and none upper case.
function M.islower(s)
  local cased = false
  for _, cp in ipairs(U.codepoints(s)) do
    if U.is_upper_cp(cp) then return false end
    if U.is_lower_cp(cp) then cased = true end
  end
  return cased
end

--- M.isupper(s) -> Python's s.isupper(): some cased character and none lower case.
function M.isupper(s)
  local cased = false
  for _, cp in ipairs(U.codepoints(s)) do
    if U.is_lower_cp(cp) then return false end
    if U.is_upper_cp(cp) then cased = true end
  end
  return cased
end
STR.islower = function(s) return M.islower(s) end
STR.isupper = function(s) return M.isupper(s) end
STR.istitle = function(s)
  local prev_cased, any = false, false
  for _, cp in ipairs(U.codepoints(s)) do
    if U.is_upper_cp(cp) then
      if prev_cased then return false end
      prev_cased, any = true, true
    elseif U.is_lower_cp(cp) then
      if not prev_cased then return false end
      prev_cased, any = true, true
    else
      prev_cased = false
    end
  end
  return any
end

STR.format = function(s, args, kwargs) return fmt.str_format(s, args, kwargs, M) end

-- ---- dicts, lists, tuples -----------------------------------------------------------------

--- M.dict_items(d) -> the list of (key, value) tuples of dict d, in its order.
function M.dict_items(d)
  local out = {}
  for i, k in ipairs(V.keys(d)) do out[i] = V.tuple({ k, d[k] }) end
  return V.list(out)
end

local DICT = {}
DICT.items = function(d) return M.dict_items(d) end
DICT.keys = function(d) return V.list(V.keys(d)) end
DICT.values = function(d)
  local out = {}
  for i, k in ipairs(V.keys(d)) do out[i] = d[k] end
  return V.list(out)
end
DICT.get = function(d, args, kwargs)
  local a = bind("get", args, kwargs, { "key", "default" }, 1)
  local key = V.dict_key(a[1])
  local v
  if key ~= nil and type(key) ~= "table" then v = rawget(d, key) end
  if v == nil then
    if a[2] == nil then return NONE end
    return a[2]
  end
  return v
end
DICT.copy = function(d)
  local keys = V.keys(d)
  local t = {}
  for _, k in ipairs(keys) do t[k] = d[k] end
  return V.dict(t, keys)
end

local SEQ = {}
SEQ.index = function(l, args, kwargs)
  local a = bind("index", args, kwargs, { "value", "start", "stop" }, 1)
  local start, stop = norm_range(rawlen(l), a[2], a[3])
  for i = start + 1, stop do
    if V.eq(l[i], a[1]) then return i - 1 end
  end
  V.error(format("%s is not in list", V.repr(a[1])))
end
SEQ.count = function(l, args, kwargs)
  local a = bind("count", args, kwargs, { "value" }, 1)
  local c = 0
  for i = 1, rawlen(l) do
    if V.eq(l[i], a[1]) then c = c + 1 end
  end
  return c
end
local LIST = { index = SEQ.index, count = SEQ.count }
LIST.copy = function(l)
  local out = {}
  for i = 1, rawlen(l) do out[i] = l[i] end
  return V.list(out)
end
local TUPLE = { index = SEQ.index, count = SEQ.count }

local UNSAFE = {
  list = { append = true, clear = true, extend = true, insert = true, pop = true, remove = true,
    reverse = true, sort = true },
  dict = { clear = true, pop = true, popitem = true, setdefault = true, update = true },
}

local METHODS = { str = STR, dict = DICT, list = LIST, tuple = TUPLE }

-- ---- the loop context ---------------------------------------------------------------------

local LOOP_FIELDS = {
  index = function(l) return l.index0 + 1 end,
  index0 = function(l) return l.index0 end,
  revindex = function(l) return l.length - l.index0 end,
  revindex0 = function(l) return l.length - l.index0 - 1 end,
  first = function(l) return l.index0 == 0 end,
  last = function(l) return l.index0 == l.length - 1 end,
  length = function(l) return l.length end,
  depth = function(l) return l.depth0 + 1 end,
  depth0 = function(l) return l.depth0 end,
  previtem = function(l)
    if l.index0 == 0 then return V.undefined("there is no previous item") end
    return l.items[l.index0]
  end,
  nextitem = function(l)
    if l.index0 >= l.length - 1 then return V.undefined("there is no next item") end
    return l.items[l.index0 + 2]
  end,
  cycle = function(l)
    return V.callable("cycle", function(args)
      if #args == 0 then V.error("no items for cycling given") end
      return args[l.index0 % #args + 1]
    end)
  end,
  changed = function(l)
    return V.callable("changed", function(args)
      local value = V.tuple(args)
      if l.last_changed ~= nil and V.eq(l.last_changed, value) then return false end
      l.last_changed = value
      return true
    end)
  end,
}

-- ---- access -------------------------------------------------------------------------------

local function bound(obj, name, method)
  return V.callable(name, function(args, kwargs)
    return method(obj, args, kwargs)
  end)
end

-- The attribute `name` of obj (a method, a loop field, a namespace attribute), or nil.
local function attribute(obj, name, k)
  if type(name) ~= "string" then return nil end
  if k == "namespace" then return obj.attrs[name] end
  if k == "loop" then
    local f = LOOP_FIELDS[name]
    return f and f(obj)
  end
  local unsafe = UNSAFE[k]
  if unsafe and unsafe[name] then
    return V.undefined(format("access to attribute '%s' of '%s' object is unsafe.", name, k))
  end
  local methods = METHODS[k]
  local method = methods and methods[name]
  if method then return bound(obj, name, method) end
  return nil
end

-- obj[key] for a dict, list, tuple or string, or nil.
local function item(obj, key, k)
  if k == "dict" then
    key = V.dict_key(key)
    if key == nil or (type(key) == "table") then return nil end
    return rawget(obj, key)
  end
  if k == "list" or k == "tuple" or k == "str" then
    if type(key) == "boolean" then key = key and 1 or 0 end
    if mtype(key) ~= "integer" then return nil end
    if k == "str" then
      local chars = U.is_ascii(obj) and nil or U.chars(obj)
      local n = chars and #chars or #obj
      if key < 0 then key = key + n end
      if key < 0 or key >= n then return nil end
      return chars and chars[key + 1] or sub(obj, key + 1, key + 1)
    end
    local n = rawlen(obj)
    if key < 0 then key = key + n end
    if key < 0 or key >= n then return nil end
    return obj[key + 1]
  end
  return nil
end

--- M.attr(obj, name) -> the attribute `name` of obj only (a method, a loop or namespace
-- field; never an item), or an Undefined: the attr filter.
function M.attr(obj, name)
  local k = V.kind(obj)
  if k == "undefined" then V.fail_undefined(obj) end
  local v = attribute(obj, name, k)
  if v ~= nil then return v end
  return V.undefined(nil, obj, name)
end

--- M.getattr(obj, name) -> `obj.name`: the attribute (a method, a loop or namespace field),
-- else the item; an Undefined naming what is missing. Using an Undefined's attribute is an error.
function M.getattr(obj, name)
  local k = V.kind(obj)
  if k == "undefined" then V.fail_undefined(obj) end
  local v = attribute(obj, name, k)
  if v ~= nil then return v end
  v = item(obj, name, k)
  if v ~= nil then return v end
  return V.undefined(nil, obj, name)
end

--- M.getitem(obj, key) -> `obj[key]`: the item (negative indexes count from the end), else
-- the attribute when key is a string; an Undefined naming what is missing.
function M.getitem(obj, key)
  local k = V.kind(obj)
  if k == "undefined" then V.fail_undefined(obj) end
  local v = item(obj, key, k)
  if v ~= nil then return v end
  v = attribute(obj, key, k)
  if v ~= nil then return v end
  return V.undefined(nil, obj, key)
end

--- M.lookup(obj, path) -> the value at a dotted path ("a.b", "items.0": digits index), as the
-- attribute arguments of the map, sort, selectattr ... filters read it (item first).
function M.lookup(obj, path)
  if type(path) ~= "string" then return M.getitem(obj, path) end
  for part in (path .. "."):gmatch("([^.]*)%.") do
    local key = part:match("^%d+$") and tonumber(part) or part
    obj = M.getitem(obj, key)
    if V.is_undefined(obj) then return obj end
  end
  return obj
end

return M
