-- docs/gen_api.lua: writes docs/API.md, the API reference, from the doc comments, and lists
-- every public function, class and module that has none.
--
--   build/ftlua docs/gen_api.lua            regenerate docs/API.md; list what lacks a doc
--   build/ftlua docs/gen_api.lua --check    change nothing: fail when a doc is missing or
--                                           docs/API.md differs from what would be written
--   build/ftlua docs/gen_api.lua --out F    write the reference to F instead
-- Exit status 0 when every public thing is documented (and, with --check, API.md is current).
-- Missing docs are printed one a line as "file:line name", for example
--   bindings/lua/ft/nn/layers.lua:52 ft.nn.Identity
--
-- The doc-comment format (what ft.help reads too):
--   * A doc comment is a block of `--` lines right above a definition whose first line starts
--     with `---`. Its first line says what the thing does and how it is called
--     ("--- F.layer_norm(x, normalized_shape, weight, bias, {eps=1e-5}): ..."); the next lines
--     (`-- ...`) add what a caller needs: options, shapes, what is returned, errors.
--   * Functions: above `function M.name(...)`, `function Class:name(...)`, `local function
--     name(...)` (exported later as M.name = name) or `M.name = function(...)`.
--   * A C function exported by a Lua module (`F.conv2d = C.conv2d`): above that line.
--   * Classes: above the line that creates them (`local Linear = Module:extend("Linear")`);
--     the class doc covers the constructor and the call, so init and forward need none.
--     A method that overrides a documented method of its parent class (extra_repr) has the
--     parent's doc unless it brings its own.
--   * Modules: the comment block at the top of the file (plain `--` lines), its first line
--     "ft.name: what it is for", then a usage example.
--   * The functions the C module defines itself (ft.zeros, t:matmul, ft.image.load ...):
--     one entry each in bindings/lua/ft/help/builtins.lua, in the same format.
--   * Public means reachable from a module's table under a name not starting with "_".
local root = arg and arg[0] and arg[0]:match("^(.*)/docs/[^/]*$") or "."
if root:sub(1, 1) ~= "/" and os.getenv("PWD") then root = os.getenv("PWD") .. "/" .. root end
root = root:gsub("/%./", "/"):gsub("/%.$", "")
local lua_dir = root .. "/bindings/lua"
package.path = lua_dir .. "/?.lua;" .. package.path

local ft = require "ft"
local help = require "ft.help"

local out_path = root .. "/docs/API.md"
local check = false
do
  local i = 1
  while arg[i] do
    if arg[i] == "--check" then check = true
    elseif arg[i] == "--out" and arg[i + 1] then out_path = arg[i + 1]; i = i + 1
    elseif arg[i] == "--help" or arg[i] == "-h" then
      print("usage: ftlua docs/gen_api.lua [--check] [--out FILE]")
      os.exit(0)
    else
      io.stderr:write("gen_api.lua: unknown argument '" .. arg[i] .. "' (usage: [--check] [--out FILE])\n")
      os.exit(2)
    end
    i = i + 1
  end
end

-- Paths as the reference shows them: from the checkout's root, whichever tree was loaded.
local function rel(path)
  if not path then return nil end
  if path:sub(1, #root + 1) == root .. "/" then return path:sub(#root + 2) end
  return path:match("(bindings/lua/ft/.*)$") or path:match("(bindings/[^/]*)$") or path
end

-- ---- the modules under bindings/lua/ft ---------------------------------------------------

local function module_files()
  local found = {}
  local function walk(dir, prefix)
    for name, kind in pairs(ft._listdir(dir)) do
      if kind == "directory" then walk(dir .. "/" .. name, prefix .. "." .. name)
      elseif name:match("%.lua$") then
        found[#found + 1] = { name = prefix .. "." .. name:gsub("%.lua$", ""), file = dir .. "/" .. name }
      end
    end
  end
  walk(lua_dir .. "/ft", "ft")
  table.sort(found, function(a, b) return a.name < b.name end)
  return found
end

local problems = {}  -- "file:line name ..." lines
local function problem(file, line, what) problems[#problems + 1] = ("%s:%d %s"):format(rel(file) or "?", line or 1, what) end

-- The line of bindings/*.c that binds a C function under `key` ({"key", l_key}).
local c_lines
local function c_binding(key)
  if not c_lines then
    c_lines = {}
    local ok, entries = pcall(ft._listdir, root .. "/bindings")
    local names = {}
    for name in pairs(ok and entries or {}) do if name:match("%.c$") then names[#names + 1] = name end end
    table.sort(names)
    for _, name in ipairs(names) do
      for n, line in ipairs(help.lines(root .. "/bindings/" .. name) or {}) do
        for k in line:gmatch('{%s*"([%w_]+)"%s*,') do
          if not c_lines[k] then c_lines[k] = { root .. "/bindings/" .. name, n } end
        end
      end
    end
  end
  local hit = c_lines[key]
  if hit then return hit[1], hit[2] end
  return root .. "/bindings", 1
end

-- ---- writing ------------------------------------------------------------------------------

local md = {}
local function w(s) md[#md + 1] = s or "" end

local function doc_block(doc)
  w("```text")
  w(doc)
  w("```")
  w()
end

local documented = {} -- values written with their doc, so aliases are not repeated

local function signature(v, shown)
  if type(v) ~= "function" then return shown end
  local info = debug.getinfo(v, "u")
  if info.nparams == nil then return shown end
  local names, method = {}, false
  for i = 1, info.nparams do
    local p = debug.getlocal(v, i)
    if i == 1 and p == "self" then method = true else names[#names + 1] = p end
  end
  if info.isvararg then names[#names + 1] = "..." end
  if method then shown = shown:gsub("%.([%w_]+)$", ":%1") end
  return shown .. "(" .. table.concat(names, ", ") .. ")"
end

local function entry(level, shown, v, doc, file, line, missing_what)
  local where = file and (" — `%s:%d`"):format(rel(file), line or 1) or ""
  w(("%s `%s`%s"):format(level, signature(v, shown), where))
  w()
  if doc then doc_block(doc)
  else
    w("*(no doc comment)*")
    w()
    if missing_what then problem(file, line, missing_what) end
  end
  documented[v] = true
end

-- ---- ft, the C module and its Lua half -----------------------------------------------------

local builtins = help.builtins()
local builtin_names = {}
for _, e in ipairs(builtins) do
  builtin_names[e.name] = true
  if e.value == nil then
    local file = lua_dir .. "/ft/help/builtins.lua"
    local n = 1
    for i, l in ipairs(help.lines(file) or {}) do if l:find('"' .. e.name .. '"', 1, true) then n = i break end end
    problem(file, n, ("builtins entry '%s' names nothing"):format(e.name))
  end
end

-- Public C functions of the C module's tables that have no builtins entry.
local _, by_value = help.builtins()
local function check_c_table(tbl, prefix, sep)
  local keys = {}
  for k, v in pairs(tbl) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" and debug.getinfo(v, "S").what == "C"
        and not by_value[v] then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local file, line = c_binding(k)
    problem(file, line, prefix .. sep .. k .. " (a C function with no entry in bindings/lua/ft/help/builtins.lua)")
  end
end

local function lua_members(tbl, want)
  local out = {}
  for k, v in pairs(tbl) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" and not by_value[v] and want(v) then
      local doc, file, line = help.function_doc(v)
      out[#out + 1] = { key = k, value = v, doc = doc, file = file, line = line }
    end
  end
  table.sort(out, function(a, b)
    if a.file ~= b.file then return (a.file or "") < (b.file or "") end
    if a.line ~= b.line then return (a.line or 0) < (b.line or 0) end
    return a.key < b.key
  end)
  return out
end

local function is_lua(v) return debug.getinfo(v, "S").what == "Lua" end

w("# ftlua API reference")
w()
w("Generated by `ftlua docs/gen_api.lua` from the doc comments (format: the header of")
w("docs/gen_api.lua); do not edit by hand. In the REPL, `help(x)` prints the same text.")
w()

local namespaces = { { "ft", ft, "." }, { "ft.Tensor", ft.Tensor, ":" }, { "ft.image", ft.image, "." },
  { "ft.safetensors", ft.safetensors, "." }, { "ft.json", ft.json, "." } }
for _, ns in ipairs(namespaces) do
  local name, tbl, sep = ns[1], ns[2], ns[3]
  check_c_table(tbl, name, sep)
  w(("## %s"):format(name))
  w()
  if by_value[tbl] then doc_block(by_value[tbl].text) end
  local prefix = name .. sep
  for _, e in ipairs(builtins) do
    if e.name:sub(1, #prefix) == prefix and not e.name:sub(#prefix + 1):find("[.:]") and type(e.value) == "function" then
      w(("### `%s`"):format(e.name))
      w()
      doc_block(e.text)
      documented[e.value] = true
    end
  end
  for _, m in ipairs(lua_members(tbl, is_lua)) do
    if not documented[m.value] then
      entry("###", prefix .. m.key, m.value, m.doc, m.file, m.line, prefix .. m.key)
    end
  end
end

-- ---- the Lua modules ---------------------------------------------------------------------------

local is_class = help.is_class

local function own_file(v, file)
  if type(v) == "function" then
    local info = debug.getinfo(v, "S")
    return info.what == "Lua" and info.source == "@" .. file
  end
  return false
end

-- Does the definition line of m's function name m.key (`function Sequential:append(m)`)?
local function defines(m)
  local lines = m.file and help.lines(m.file)
  local text = lines and m.line and lines[m.line] or ""
  return text:find("[.:]" .. m.key .. "%s*%(") ~= nil or text:find("^%s*local%s+function%s+" .. m.key .. "%s*%(") ~= nil
end

local function document_class(class, shown, file, key)
  local doc, dfile, dline = help.class_doc(class, key, file)
  local parent = help.parent_class(class)
  local parent_name = parent and help.name_of(parent)
  w(("### class `%s`%s%s"):format(shown, parent_name and (" (a subclass of `%s`)"):format(parent_name) or "",
    dfile and (" — `%s:%d`"):format(rel(dfile), dline or 1) or ""))
  w()
  if doc then doc_block(doc) else
    w("*(no doc comment)*")
    w()
    problem(dfile or file, dline, shown)
  end
  documented[class] = true
  local methods = {}
  for k, v in pairs(class) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then
      local mdoc, mfile, mline, from = help.method_doc(class, k)
      if from then mdoc = mdoc .. "\n(as " .. (help.name_of(from) or "the parent class") .. ":" .. k .. ")" end
      methods[#methods + 1] = { key = k, value = v, doc = mdoc, file = mfile, line = mline }
    end
  end
  table.sort(methods, function(a, b)
    if (a.line or math.huge) ~= (b.line or math.huge) then return (a.line or math.huge) < (b.line or math.huge) end
    local da, db = defines(a), defines(b) -- of two names of one function, the one it is defined as first
    if da ~= db then return da end
    return a.key < b.key
  end)
  local aliases = {}
  for _, m in ipairs(methods) do
    if documented[m.value] then
      aliases[#aliases + 1] = m.key
    else
      local exempt = (m.key == "init" or m.key == "forward") and doc ~= nil
      if m.doc or not exempt then
        entry("####", shown .. "." .. m.key, m.value, m.doc, m.file, m.line,
          m.file and (shown .. ":" .. m.key) or nil)
      else
        documented[m.value] = true
      end
    end
  end
  if #aliases > 0 then
    table.sort(aliases)
    w("Also: " .. table.concat(aliases, ", ") .. " (documented under other names).")
    w()
  end
end

for _, mod in ipairs(module_files()) do
  if mod.name ~= "ft.help.builtins" then
    local ok, value = pcall(require, mod.name)
    if not ok then
      problem(mod.file, 1, ("module %s failed to load: %s"):format(mod.name, tostring(value):match("^[^\n]*")))
    elseif by_value[value] then
      -- ft.tensor returns ft.Tensor, documented above
    else
      w(("## %s"):format(mod.name))
      w()
      w(("`%s`"):format(rel(mod.file)))
      w()
      local header = help.header(help.lines(mod.file) or {})
      if header then doc_block(header) else
        problem(mod.file, 1, ("module %s has no header comment"):format(mod.name))
      end
      if type(value) == "function" then
        local doc, file, line = help.function_doc(value)
        if not documented[value] then entry("###", mod.name, value, doc, file, line, mod.name) end
      elseif is_class(value) then
        document_class(value, mod.name, mod.file, mod.name:match("[%w_]+$"))
      elseif type(value) == "table" then
        local members, reexports = {}, {}
        for k, v in pairs(value) do
          if type(k) == "string" and k:sub(1, 1) ~= "_" and (type(v) == "function" or is_class(v)) then
            local line = select(1, help.definition(help.lines(mod.file) or {}, k))
            local own = own_file(v, mod.file) or (line ~= nil and not documented[v] and
              (type(v) ~= "function" or not is_lua(v)))
            if is_class(v) and not own then
              -- a class is its module's own when its methods live in this file
              local doc, f = help.class_doc(v, k, mod.file)
              own = f == mod.file and doc ~= nil or (f == mod.file and line ~= nil)
            end
            if own and not documented[v] then
              local doc, file, dline = help.member_doc(v, k, mod.file)
              members[#members + 1] = { key = k, value = v, doc = doc, file = file or mod.file, line = dline or line }
            else
              reexports[#reexports + 1] = k
            end
          end
        end
        table.sort(members, function(a, b)
          if (a.line or math.huge) ~= (b.line or math.huge) then return (a.line or math.huge) < (b.line or math.huge) end
          return a.key < b.key
        end)
        for _, m in ipairs(members) do
          local shown = mod.name .. "." .. m.key
          if is_class(m.value) then document_class(m.value, shown, mod.file, m.key)
          else entry("###", shown, m.value, m.doc, m.file, m.line, shown) end
        end
        if #reexports > 0 then
          table.sort(reexports)
          w("Re-exported from other modules: " .. table.concat(reexports, ", ") .. ".")
          w()
        end
      end
    end
  end
end

-- An index of the sections after the introduction (GitHub's heading anchors).
local index = {}
for _, line in ipairs(md) do
  local name = line:match("^## (%S+)$")
  if name then index[#index + 1] = ("[%s](#%s)"):format(name, name:lower():gsub("[^%w_%- ]", "")) end
end
table.insert(md, 6, "Sections: " .. table.concat(index, " · "))
table.insert(md, 7, "")
local text = table.concat(md, "\n")

-- ---- result -----------------------------------------------------------------------------------

local status = 0
if #problems > 0 then
  table.sort(problems)
  io.stderr:write(("%d public functions, classes or modules lack a doc comment:\n"):format(#problems))
  for _, p in ipairs(problems) do io.stderr:write(p, "\n") end
  status = 1
end
if check then
  local f = io.open(out_path, "r")
  local old = f and f:read("a")
  if f then f:close() end
  if old ~= text then
    io.stderr:write(("%s is out of date: regenerate it with  build/ftlua docs/gen_api.lua\n"):format(rel(out_path)))
    status = 1
  end
else
  local f = assert(io.open(out_path, "w"))
  f:write(text)
  f:close()
  print(("wrote %s (%d lines)"):format(rel(out_path), select(2, text:gsub("\n", "")) + 1))
end
os.exit(status)
