-- ft.text.jinja: chat templates rendered as transformers renders them (apply_chat_template):
-- Jinja with trim_blocks and lstrip_blocks, loop controls, raise_exception, strftime_now and
-- transformers' tojson, in Lua.
--
--   local jinja = require "ft.text.jinja"
--   local tpl = jinja.compile(tok.chat_template, {name = "chat_template"})
--   local text = tpl:render({messages = messages, add_generation_prompt = true,
--                            bos_token = "<s>", eos_token = "</s>", tools = jinja.none})
--
-- Values: see ft.text.jinja.values (ft.json.decode's arrays are lists, objects dicts,
-- ft.json.null is None; a Lua nil or a missing key is Jinja's Undefined). Python's semantics
-- throughout: None prints "None", True "True", empty strings/lists/dicts and 0 are false,
-- `x.y` of a missing key is Undefined (falsy, prints ""), but using an Undefined's attribute is
-- an error, "a" + 1 is an error. Dict keys come in the dict's order: a table made by
-- jinja.dict keeps its order; for plain tables (ft.json.decode's objects) the keys are sorted.
-- Errors (syntax when compiling, runtime when rendering) are "name:line:column: message".
local ft = require "ft"
local V = require "ft.text.jinja.values"
local lexer = require "ft.text.jinja.lexer"
local parser = require "ft.text.jinja.parser"
local runtime = require "ft.text.jinja.runtime"
local F = require "ft.text.jinja.filters"
local U = require "ft.text.jinja.unicode"

local jinja = {}

--- jinja.none: Python's None (ft.json.null), e.g. tools = jinja.none as transformers passes
-- when there are no tools (so `tools is none` holds and `tools is defined` too).
jinja.none = V.NONE

--- jinja.dict(t, keys) -> t as a dict whose keys come in the order of the array keys (for
-- tojson of a tool definition in its own order); keys of t missing from keys follow, sorted.
function jinja.dict(t, keys)
  if type(t) ~= "table" then error("ft.text.jinja.dict: expected a table, got " .. type(t), 2) end
  if keys ~= nil and type(keys) ~= "table" then error("ft.text.jinja.dict: keys must be an array of keys", 2) end
  if getmetatable(t) ~= nil then error("ft.text.jinja.dict: the table already has a metatable", 2) end
  return V.dict(t, keys or {})
end

-- line:column of byte offset pos in the (normalized) source, columns counted in characters.
local function locator(src)
  local starts = { 1 }
  for p in src:gmatch("()\n") do starts[#starts + 1] = p + 1 end
  return function(pos)
    local lo, hi = 1, #starts
    while lo < hi do
      local mid = (lo + hi + 1) // 2
      if starts[mid] <= pos then lo = mid else hi = mid - 1 end
    end
    local line_text = src:sub(starts[lo], pos - 1)
    return ("%d:%d"):format(lo, U.len(line_text) + 1)
  end
end

--- ft.text.jinja.Template: a compiled template (jinja.compile); tpl.name, tpl.source,
-- tpl.uses_generation (whether it has {% generation %} blocks).
local Template = {}
Template.__index = Template
Template.__name = "ft.text.jinja.Template"
jinja.Template = Template

--- jinja.compile(source, {name = "template"}) -> a Template. Parses once; a syntax error is
-- raised as "name:line:column: message" (unclosed blocks are reported where they open).
function jinja.compile(source, opts)
  opts = ft.check_options("ft.text.jinja.compile", opts, { "name" })
  if type(source) ~= "string" then
    error("ft.text.jinja.compile: the template source must be a string, got " .. type(source), 2)
  end
  local name = opts.name or "template"
  if type(name) ~= "string" then error("ft.text.jinja.compile: name must be a string", 2) end
  local where = locator(lexer.normalize(source))
  local function fail(pos, msg)
    error(("%s:%s: %s"):format(name, where(pos), msg), 0)
  end
  local tokens = lexer.tokenize(source, fail)
  local body = parser.parse(tokens, {
    fail = fail, where = where, filters = F.filters, tests = F.tests, none = V.NONE,
  })
  local uses_generation = false
  for _, tok in ipairs(tokens) do
    if tok.t == "name" and tok.v == "generation" then uses_generation = true break end
  end
  return setmetatable({ name = name, source = source, uses_generation = uses_generation,
    _body = body, _where = where }, Template)
end

--- tpl:render(vars) -> text, spans: the template rendered with the variables of the table
-- vars (messages, tools, documents, add_generation_prompt, bos_token, eos_token, anything
-- else). spans: an array of {first, last} byte ranges of text (text:sub(first, last)) that
-- {% generation %} blocks wrote, for the assistant mask (last < first when a block wrote
-- nothing). A runtime error, raise_exception(msg) included, is raised as
-- "name:line:column: message".
function Template:render(vars)
  if vars ~= nil and type(vars) ~= "table" then
    error("ft.text.jinja: render expects a table of variables, got " .. type(vars), 2)
  end
  return runtime.render(self._body, vars, { where = self._where, name = self.name })
end

function Template:__tostring()
  return ("ft.text.jinja.Template(%s)"):format(self.name)
end

return jinja
