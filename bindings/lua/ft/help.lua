-- ft.help: the documentation of functions, classes and modules, read from the doc comments
-- of the code itself; help(x) in the REPL is this function.
--
--   ft.help()                     how to use it
--   ft.help(ft.nn.Linear)         a class: its doc, its methods with their first doc lines
--   ft.help("ft.nn.functional")   a module, by value or by name (names load modules on demand)
--   ft.help(t:matmul) is not Lua; ft.help(ft.Tensor.matmul) or ft.help("ft.Tensor:matmul") is
--
-- Where the text comes from (the format is described in docs/gen_api.lua):
--   a Lua function: the `---` comment block right above its definition (debug.getinfo finds it);
--   a class or a C function exported by a Lua module: the block above the line that defines
--   that name in the module's file (`local Linear = Module:extend("Linear")`, `F.conv2d = C.conv2d`);
--   a module: the comment block at the top of its file;
--   the functions of the C module (ft.zeros, t:matmul, ft.image.load ...): ft.help.builtins.
-- The sources are read where package.path found them, so help works from an install tree.
-- help.text(x) returns the text instead of printing it; docs/gen_api.lua builds on the rest.
local ft = require "ft"

local help = {}

local USAGE = [[
help(x) prints the documentation of x: a function, a class, a module, an object or a tensor.
  help(ft.zeros)            help(ft.nn.Linear)           help(ft.nn.functional)
  help("ft.nn.functional.conv2d")   help("ft.Tensor:matmul")   help(model)   help(t)
A name is looked up as written, loading modules on demand; help(ft) lists the whole library.
In the REPL, Tab completes names (m:<Tab> lists a module's methods).]]

-- ---- reading sources -------------------------------------------------------------------

local line_cache = {}

--- help.lines(path): the lines of a file as a list (cached), or nil when it cannot be read.
function help.lines(path)
  if line_cache[path] ~= nil then return line_cache[path] or nil end
  local f = io.open(path, "r")
  if not f then
    line_cache[path] = false
    return nil
  end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  line_cache[path] = lines
  return lines
end

-- The text of a comment line without its dashes and the one space after them.
local function strip_comment(line)
  return (line:gsub("^%s*%-%-%-?", "", 1):gsub("^ ", "", 1))
end

--- help.comment_above(lines, n): the doc comment right above line n, or nil.
-- A doc comment is a block of comment lines ending just above the definition whose first
-- line starts with `---` (a plain `--` block is a remark, not documentation).
function help.comment_above(lines, n)
  local first = n
  while first > 1 and lines[first - 1]:match("^%s*%-%-") and not lines[first - 1]:match("^%s*%-%-%[%[") do
    first = first - 1
  end
  if first == n then return nil end
  -- the block may hold remarks before the doc: the doc starts at its last `---` line
  local start
  for i = first, n - 1 do
    if lines[i]:match("^%s*%-%-%-%f[^%-]") then start = i end
  end
  if not start then return nil end
  local out = {}
  for i = start, n - 1 do out[#out + 1] = strip_comment(lines[i]) end
  return table.concat(out, "\n")
end

--- help.header(lines): the comment block at the top of a file (a module's doc), or nil.
function help.header(lines)
  local out, i = {}, 1
  if lines[1] and lines[1]:match("^#!") then i = 2 end
  while lines[i] and lines[i]:match("^%s*%-%-") do
    out[#out + 1] = strip_comment(lines[i])
    i = i + 1
  end
  if #out == 0 then return nil end
  return table.concat(out, "\n")
end

--- help.definition(lines, key): the line that defines the name key at the top level of a file,
-- and its doc comment: `local key =`, `local function key`, `function X.key`, `X.key =`.
-- The first such line with a doc comment wins, else the first such line.
function help.definition(lines, key)
  local first
  for n, line in ipairs(lines) do
    local hit = line:match("^local%s+" .. key .. "%s*=") or line:match("^local%s+function%s+" .. key .. "%s*%(")
      or line:match("^function%s+[%w_.]*[.:]" .. key .. "%s*%(") or line:match("^function%s+" .. key .. "%s*%(")
      or line:match("^[%w_][%w_.]*%." .. key .. "%s*=[^=]")
    if hit then
      local doc = help.comment_above(lines, n)
      if doc then return n, doc end
      first = first or n
    end
  end
  return first, nil
end

-- ---- the builtins and the names of things ------------------------------------------------

--- help.resolve(name): the value a dotted/colon name such as "ft.nn.Linear" or "ft.Tensor:matmul"
-- denotes, loading modules on demand; nil and a message naming the first missing part.
function help.resolve(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_.:]*$") or name:find("[.:][.:]")
     or name:find("[.:]$") or name:find("[.:]%d") then
    return nil, ("%q is not a name such as \"ft.nn.Linear\""):format(tostring(name))
  end
  local parts = {}
  for part in name:gmatch("[^.:]+") do parts[#parts + 1] = part end
  local function field(t, k)
    local ok, v = pcall(function() return t[k] end)
    if ok then return v end
    return nil
  end
  -- fields from the globals first: ft.tensor is the function, not the module ft/tensor.lua
  local value = _G[parts[1]]
  for i = 2, #parts do
    if value == nil then break end
    value = field(value, parts[i])
  end
  if value ~= nil then return value end
  -- else the longest prefix that is a module (ft.nn.layers is a module but no field of ft.nn)
  local used
  for i = #parts, 1, -1 do
    local modname = table.concat(parts, ".", 1, i)
    if package.loaded[modname] ~= nil or package.searchpath(modname, package.path) then
      local ok, mod = pcall(require, modname)
      if ok and mod ~= nil then
        value, used = mod, i
        break
      end
    end
  end
  if value == nil then
    value, used = _G[parts[1]], 1
    if value == nil then return nil, ("no global or module named '%s'"):format(parts[1]) end
  end
  for i = used + 1, #parts do
    local v = field(value, parts[i])
    if v == nil then
      local where = table.concat(parts, ".", 1, i - 1)
      local msg = ("%s has no field '%s'"):format(where, parts[i])
      local near = help.nearest(value, parts[i])
      if near then msg = msg .. (" (did you mean '%s'?)"):format(near) end
      return nil, msg
    end
    value = v
  end
  return value
end

local function edit_distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- help.nearest(tbl, key): the key of tbl (or of its class chain) closest to key, when close.
function help.nearest(tbl, key)
  local best, best_d
  local seen = {}
  local function scan(t, depth)
    if type(t) ~= "table" or seen[t] or depth > 8 then return end
    seen[t] = true
    for k in pairs(t) do
      if type(k) == "string" and k:sub(1, 1) ~= "_" then
        local d = edit_distance(k:lower(), key:lower())
        if not best_d or d < best_d or (d == best_d and k < best) then best, best_d = k, d end
      end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then scan(mt.__index, depth + 1) end
  end
  scan(tbl, 0)
  if best and best_d <= math.max(2, #key // 3) then return best end
  return nil
end

local builtins_cache

--- help.builtins(): the entries of ft.help.builtins as a list of {name =, text =, value =}
-- (value is what the name resolves to; nil for a stale entry) and a map value -> entry.
function help.builtins()
  if builtins_cache then return builtins_cache.list, builtins_cache.by_value end
  local list, by_value = {}, {}
  for _, e in ipairs(require "ft.help.builtins") do
    local entry = { name = e[1], text = e[2], kind = e.kind }
    entry.value = help.resolve(e[1])
    list[#list + 1] = entry
    if entry.value ~= nil and by_value[entry.value] == nil then by_value[entry.value] = entry end
  end
  builtins_cache = { list = list, by_value = by_value }
  return list, by_value
end

--- help.module_file(name): the file require loads for the module name, or nil.
function help.module_file(name)
  return package.searchpath(name, package.path)
end

--- help.is_class(v): true when v is a class: a table with a __name, an __index or an
-- __instance_mt of its own (ft.nn classes, metatables of objects), or marked as one in the
-- builtins (ft.Tensor).
local function is_class(v)
  if type(v) ~= "table" then return false end
  if type(rawget(v, "__name")) == "string" or rawget(v, "__index") ~= nil or rawget(v, "__instance_mt") ~= nil then
    return true
  end
  local _, by_value = help.builtins()
  return by_value[v] ~= nil and by_value[v].kind == "class"
end
help.is_class = is_class

-- The loaded modules of the library: name -> value, for names "ft" and "ft.*".
local function loaded_modules()
  local out = {}
  for name, v in pairs(package.loaded) do
    if type(name) == "string" and (name == "ft" or name:match("^ft%.")) and name ~= "ft.help.builtins" then
      out[#out + 1] = { name = name, value = v }
    end
  end
  local _, by_value = help.builtins()
  for i = #out, 1, -1 do -- ft.tensor returns ft.Tensor: known by its builtins name
    if by_value[out[i].value] and by_value[out[i].value].name ~= out[i].name then table.remove(out, i) end
  end
  table.sort(out, function(a, b)
    if #a.name ~= #b.name then return #a.name < #b.name end
    return a.name < b.name
  end)
  return out
end

--- help.name_of(v): the shortest public name under which v is reachable ("ft.nn.Linear",
-- "ft.Tensor:matmul"), searching ft's builtins, the loaded modules and their classes; or nil.
function help.name_of(v)
  local list, by_value = help.builtins()
  if by_value[v] then return by_value[v].name end
  for _, e in ipairs(list) do -- members of ft.Tensor, ft.image ... defined in Lua
    if type(e.value) == "table" then
      for k, x in pairs(e.value) do
        if x == v and type(k) == "string" then return e.name .. (e.kind == "class" and ":" or ".") .. k end
      end
    end
  end
  local best
  local function offer(name)
    if not best or #name < #best or (#name == #best and name < best) then best = name end
  end
  for _, m in ipairs(loaded_modules()) do
    if m.value == v then offer(m.name) end
    if type(m.value) == "table" then
      for k, x in pairs(m.value) do
        if type(k) == "string" and k:sub(1, 1) ~= "_" then
          if x == v then offer(m.name .. "." .. k) end
          if is_class(x) and type(v) == "function" and rawget(x, k) ~= v then
            for mk, mx in pairs(x) do
              if mx == v and type(mk) == "string" and mk:sub(1, 1) ~= "_" then offer(m.name .. "." .. k .. ":" .. mk) end
            end
          end
        end
      end
      if is_class(m.value) and type(v) == "function" then
        for mk, mx in pairs(m.value) do
          if mx == v and type(mk) == "string" then offer(m.name .. ":" .. mk) end
        end
      end
    end
  end
  return best
end

-- ---- documenting one value ---------------------------------------------------------------

-- "(a, b, opts)" for a Lua function (without self for a method), "(...)" for a C one.
local function parameters(f)
  local info = debug.getinfo(f, "u")
  if info.nparams == nil then return "(...)", false end
  local names, method = {}, false
  for i = 1, info.nparams do
    local p = debug.getlocal(f, i)
    if i == 1 and p == "self" then method = true else names[#names + 1] = p end
  end
  if info.isvararg then names[#names + 1] = "..." end
  return "(" .. table.concat(names, ", ") .. ")", method
end

--- help.function_doc(f): the doc of a Lua function, its file, line and parameter list
-- ("(x, dim)"), and whether it is a method (its first parameter is self).
function help.function_doc(f)
  local info = debug.getinfo(f, "S")
  if info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then return nil end
  local file = info.source:sub(2)
  local params, method = parameters(f)
  local lines = help.lines(file)
  local doc = lines and info.linedefined > 0 and help.comment_above(lines, info.linedefined) or nil
  return doc, file, info.linedefined, params, method
end

-- The source file of a class: where most of its methods are defined (the first in name
-- order on a tie, so the answer does not depend on the order of pairs).
local function class_file(class)
  local count = {}
  for _, v in pairs(class) do
    if type(v) == "function" then
      local info = debug.getinfo(v, "S")
      if info.what == "Lua" and info.source:sub(1, 1) == "@" then
        local f = info.source:sub(2)
        count[f] = (count[f] or 0) + 1
      end
    end
  end
  local best
  for f, n in pairs(count) do
    if not best or n > count[best] or (n == count[best] and f < best) then best = f end
  end
  return best
end

--- help.member_doc(value, key, file): the doc of the value exported as key from the module
-- whose source is file: the builtins entry, a Lua function's own comment, or the comment
-- above the line of file that defines key. Returns doc, file, line.
function help.member_doc(value, key, file)
  local _, by_value = help.builtins()
  if by_value[value] then return by_value[value].text, nil, nil end
  if help.is_class(value) then return help.class_doc(value, key, file) end
  local src, line
  if type(value) == "function" then
    local doc
    doc, src, line = help.function_doc(value)
    if doc then return doc, src, line end
  end
  local lines = file and key and help.lines(file)
  if lines then
    local dline, doc = help.definition(lines, key)
    if doc then return doc, file, dline end
    if not src and dline then return nil, file, dline end
  end
  return nil, src or file, line
end

-- The first line of a doc, for member lists.
local function first_line(doc)
  if not doc then return "(no doc comment)" end
  return doc:match("^[^\n]*")
end

-- The public members of tbl that want(key, value) accepts, with their docs, those defined
-- in file first, in the order of their lines. by_key: also look for the line of file that
-- defines the key (a module's exports; a class's methods are found by their own lines).
local function sorted_members(tbl, file, want, by_key)
  local out = {}
  for k, v in pairs(tbl) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and want(k, v) then
      local doc, src, line = help.member_doc(v, k, by_key and file or nil)
      out[#out + 1] = { key = k, value = v, doc = doc, file = src, line = line }
    end
  end
  table.sort(out, function(a, b)
    local fa, fb = a.file == file and 0 or 1, b.file == file and 0 or 1
    if fa ~= fb then return fa < fb end
    if (a.line or math.huge) ~= (b.line or math.huge) then return (a.line or math.huge) < (b.line or math.huge) end
    return a.key < b.key
  end)
  return out
end

--- help.parent_class(class): the class class inherits from (its metatable's __index table), or nil.
function help.parent_class(class)
  local mt = getmetatable(class)
  local parent = type(mt) == "table" and rawget(mt, "__index")
  if type(parent) == "table" and parent ~= class then return parent end
  return nil
end

--- help.method_doc(class, key): the doc of the method class[key]; a method without one that
-- overrides a documented method of a parent class has the parent's doc (as in PyTorch's docs).
-- Returns doc, file, line of the method, and the parent class the doc came from (or nil).
function help.method_doc(class, key)
  local doc, file, line = help.member_doc(rawget(class, key), key, nil)
  if doc then return doc, file, line, nil end
  local parent, depth = help.parent_class(class), 0
  while parent and depth < 16 do
    local m = rawget(parent, key)
    if type(m) == "function" then
      local pdoc = help.member_doc(m, key, nil)
      if pdoc then return pdoc, file, line, parent end
    end
    parent, depth = help.parent_class(parent), depth + 1
  end
  return nil, file, line, nil
end

local function is_module_value(v)
  for _, m in ipairs(loaded_modules()) do
    if m.value == v then return m.name end
  end
  return nil
end

-- The list "name(params)  first line" of the functions among members.
local function member_lines(members)
  local rows, width = {}, 0
  for _, m in ipairs(members) do
    local params = type(m.value) == "function" and parameters(m.value) or ""
    if params == "(...)" and m.doc then -- a C function: the parameters its doc shows
      params = m.doc:match("^[^\n(]*(%b())") or params
    end
    local head = m.key .. params
    rows[#rows + 1] = { head, first_line(m.doc) }
    width = math.max(width, #head)
  end
  width = math.min(width, 40)
  local out = {}
  for _, r in ipairs(rows) do
    local pad = #r[1] < width and (" "):rep(width - #r[1]) or ""
    out[#out + 1] = "  " .. r[1] .. pad .. "  " .. r[2]
  end
  return table.concat(out, "\n")
end

local function location(file, line)
  if not file then return "" end
  return line and (" (%s:%d)"):format(file, line) or (" (%s)"):format(file)
end

-- The class of an object: a table whose instances have it as metatable or as __index table.
local function class_of(v)
  local mt = getmetatable(v)
  if type(mt) ~= "table" then return nil end
  for _, m in ipairs(loaded_modules()) do
    local candidates = { m.value }
    if type(m.value) == "table" then
      for k, x in pairs(m.value) do
        if type(k) == "string" and type(x) == "table" then candidates[#candidates + 1] = x end
      end
    end
    for _, c in ipairs(candidates) do
      if type(c) == "table" and c ~= v and (rawget(c, "__instance_mt") == mt or c == mt or
          (rawget(mt, "__index") == c and is_class(c))) then
        return c
      end
    end
  end
  return nil
end

--- help.class_doc(class, key, file): the doc of a class exported as key (from the module in
-- file, when known): the comment above the line defining key there or in the class's own
-- file, or above its `:extend("Name")` line. Returns doc, file, line.
function help.class_doc(class, key, file)
  local _, by_value = help.builtins()
  if by_value[class] then return by_value[class].text, nil, nil end
  local own = class_file(class)
  local dfile, dline
  for _, f in ipairs({ file or false, own or false }) do
    local lines = f and key and help.lines(f)
    if lines then
      local line, doc = help.definition(lines, key)
      if doc then return doc, f, line end
      if line and not dfile then dfile, dline = f, line end
    end
  end
  local lines = own and help.lines(own)
  if lines and type(rawget(class, "__name")) == "string" then
    for n, l in ipairs(lines) do
      if l:find(":extend%(%s*[\"']" .. class.__name:gsub("%p", "%%%0") .. "[\"']") then
        local doc = help.comment_above(lines, n)
        if doc then return doc, own, n end
      end
    end
  end
  return nil, dfile, dline
end

local function describe_class(class, name)
  local file = class_file(class)
  local out = {}
  local mod, key = name:match("^(.*)[.:]([%w_]+)$")
  local doc, dfile, dline = help.class_doc(class, key or name, mod and help.module_file(mod))
  local parent = help.parent_class(class)
  local parent_name = parent and help.name_of(parent)
  out[#out + 1] = name .. ": class" .. (parent_name and (" (a subclass of %s)"):format(parent_name) or "")
    .. location(dfile, dline)
  out[#out + 1] = ""
  out[#out + 1] = doc or "(no doc comment)"
  local methods = sorted_members(class, file, function(_, v) return type(v) == "function" end, false)
  for _, m in ipairs(methods) do
    if not m.doc then m.doc = help.method_doc(class, m.key) end
    -- the class doc covers the constructor and the call
    if not m.doc and doc and m.key == "init" then m.doc = "builds the object: " .. name:match("[%w_]+$") .. "(...), see above" end
    if not m.doc and doc and m.key == "forward" then m.doc = "what calling the object, m(...), runs" end
  end
  if #methods > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Methods" .. (parent_name and (" (and those of %s)"):format(parent_name) or "") .. ":"
    out[#out + 1] = member_lines(methods)
  end
  return table.concat(out, "\n")
end

--- help.submodules(prefix): the sorted names NAME of the modules prefix.NAME that require
-- would find on package.path, loaded or not: help.submodules("ft") lists nn, optim, peft ...
function help.submodules(prefix)
  local names, seen = {}, {}
  local rel = prefix:gsub("%.", "/")
  for template in package.path:gmatch("[^;]+") do
    local head, tail = template:match("^(.-)%?(.*)$")
    if head and not tail:find("?", 1, true) then
      local ok, entries = pcall(ft._listdir, head .. rel)
      if ok then
        for entry, kind in pairs(entries) do
          local name
          if tail:find("/", 1, true) then
            if kind == "directory" and io.open(head .. rel .. "/" .. entry .. tail) then name = entry end
          elseif entry:sub(-#tail) == tail and #entry > #tail then
            name = entry:sub(1, -#tail - 1)
          end
          if name and name:match("^[%a_][%w_]*$") and not seen[name] then
            seen[name] = true
            names[#names + 1] = name
          end
        end
      end
    end
  end
  table.sort(names)
  return names
end

local function describe_module(mod, name)
  local _, by_value = help.builtins()
  local file = help.module_file(name)
  local out = {}
  local doc
  if by_value[mod] then doc = by_value[mod].text
  else
    local lines = file and help.lines(file)
    doc = lines and help.header(lines)
  end
  out[#out + 1] = name .. ": module" .. location(file)
  out[#out + 1] = ""
  out[#out + 1] = doc or "(no header comment)"
  if type(mod) ~= "table" then return table.concat(out, "\n") end
  local functions = sorted_members(mod, file, function(_, v) return type(v) == "function" end, true)
  local classes = sorted_members(mod, file, function(_, v) return is_class(v) and not is_module_value(v) end, true)
  local tables = sorted_members(mod, file, function(_, v)
    if type(v) ~= "table" or is_class(v) then return false end
    return is_module_value(v) or next(v) ~= nil
  end, true)
  if #functions > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Functions:"
    out[#out + 1] = member_lines(functions)
  end
  if #classes > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Classes:"
    out[#out + 1] = member_lines(classes)
  end
  local subs = {}
  for _, t in ipairs(tables) do subs[#subs + 1] = t.key end
  if name == "ft" then
    for _, s in ipairs(help.submodules("ft")) do
      if rawget(mod, s) == nil then subs[#subs + 1] = s end
    end
  end
  if #subs > 0 then
    table.sort(subs)
    out[#out + 1] = ""
    out[#out + 1] = "Modules and tables (help(" .. name .. ".<name>)):"
    out[#out + 1] = "  " .. table.concat(subs, "  ")
  end
  return table.concat(out, "\n")
end

local function describe_function(f, name)
  local _, by_value = help.builtins()
  if by_value[f] then
    return by_value[f].name .. ": built-in function\n\n" .. by_value[f].text
  end
  local doc, file, line, params, method = help.function_doc(f)
  if not file and not (name and name:match("^ft[.:]")) then
    return nil, ("help: %s not part of ft (the Lua 5.4 manual documents the standard library)")
      :format(name and (name .. " is a C function") or "a C function")
  end
  local shown = name or "function"
  if not file then -- a C function exported by a Lua module: the doc is on its export line
    local mod, key = shown:match("^(.*)%.([%w_]+)$")
    local mfile = mod and help.module_file(mod)
    local lines = mfile and help.lines(mfile)
    local dline, d
    if lines then dline, d = help.definition(lines, key) end
    return shown .. ": built-in function" .. location(mfile, dline) .. "\n\n" .. (d or "(no doc comment)")
  end
  if method then shown = shown:gsub("%.([%w_]+)$", ":%1") end
  if not doc and name then
    -- a function exported from a module by an assignment line carrying the doc
    local mod, key = name:match("^(.*)%.([%w_]+)$")
    local mfile = mod and help.module_file(mod)
    local lines = mfile and help.lines(mfile)
    if lines then
      local _, d = help.definition(lines, key)
      doc = d
    end
  end
  return shown .. params .. location(file, line) .. "\n\n" .. (doc or "(no doc comment)")
end

--- help.text(x): the documentation help(x) prints, as a string; nil and a message when
-- x is unknown (a name that resolves to nothing, or a value that has no documentation).
function help.text(x, ...)
  if select("#", ...) > 0 then return nil, "help takes one argument" end
  local name
  if type(x) == "string" then
    local v, err = help.resolve(x)
    if v == nil then return nil, ("help: no documentation for '%s': %s"):format(x, err) end
    name, x = x:gsub(":", "."), v
  end
  if type(x) == "userdata" and ft.is_tensor(x) then
    return help.text(ft.Tensor)
  end
  if type(x) == "function" then
    return describe_function(x, name or help.name_of(x))
  end
  if type(x) == "table" then
    if is_class(x) then return describe_class(x, help.name_of(x) or name or tostring(x)) end
    local modname = is_module_value(x)
    if modname then return describe_module(x, modname) end
    local class = class_of(x)
    if class then
      return "an instance of " .. (help.name_of(class) or "a class") .. "\n\n" ..
        describe_class(class, help.name_of(class) or "class")
    end
    local tname = name or help.name_of(x)
    if tname then return describe_module(x, tname) end
    return nil, "help: this table is no module, class or object of the library"
  end
  if name then return nil, ("help: %s is a %s, not a function, class or module"):format(name, type(x)) end
  if x == nil then
    return nil, "help: got nil (a misspelled name?); help(\"ft.nn.Linear\") looks a name up and says what is missing"
  end
  return nil, ("help: got a %s (%s); help documents functions, classes, modules and objects. %s")
    :format(type(x), tostring(x), "For a name, pass a string: help(\"ft.nn.Linear\")")
end

help.usage = USAGE

--- help(x) (the global in the REPL) or ft.help(x): prints the documentation of x (see help.text);
-- help() prints how to use it. An unknown x prints what was not found.
local function call(_, ...)
  if select("#", ...) == 0 then
    print(USAGE)
    return
  end
  local text, err = help.text(...)
  print(text or err)
end

return setmetatable(help, {
  __call = call,
  __tostring = function() return USAGE end,
  __name = "ft.help",
})
