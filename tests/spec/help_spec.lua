-- ft.help: the documentation it prints comes from the doc comments of the code (a fixture
-- module written here, so the checks do not depend on other modules' wording), from the
-- builtins table for C functions, and unknown things say what was not found.
local ft = require "ft"
local help = require "ft.help"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "/ft'"))
local FIXTURE = dir .. "/ft/zz_help_fixture.lua"
local f = assert(io.open(FIXTURE, "w"))
f:write([[
-- ft.zz_help_fixture: a module written by help_spec to check what ft.help reads.
--
--   local m = require "ft.zz_help_fixture"
local ft = require "ft"
local M = {}

--- M.add(a, b): the sum of a and b.
-- Second line of the doc.
function M.add(a, b) return a + b end

-- a remark, not a doc
function M.undocumented(x) return x end

-- ---- classes ----

--- Counter(start): counts up from start.
local Counter = ft.nn.Module:extend("Counter")
M.Counter = Counter

function Counter:init(start) self.count = start or 0 end

--- c:step([by = 1]): adds by and returns the count.
function Counter:step(by)
  self.count = self.count + (by or 1)
  return self.count
end

--- M.shout(s): s in capitals (a C function exported with its doc on this line).
M.shout = string.upper

return M
]])
f:close()

local saved_path = package.path
local M

setup(function()
  package.path = dir .. "/?.lua;" .. package.path
  M = require "ft.zz_help_fixture"
end)

teardown(function()
  package.loaded["ft.zz_help_fixture"] = nil
  package.path = saved_path
  os.remove(FIXTURE)
  os.remove(dir .. "/ft")
  os.remove(dir)
end)

local function has(text, piece)
  assert(text, "no text")
  assert(text:find(piece, 1, true), ("expected %q in:\n%s"):format(piece, text))
end

describe("ft.help.text", function()
  it("documents a Lua function from the --- block above it, with its name, parameters and place", function()
    local text = help.text(M.add)
    has(text, "ft.zz_help_fixture.add(a, b)")
    has(text, "M.add(a, b): the sum of a and b.\nSecond line of the doc.")
    has(text, FIXTURE .. ":9")
  end)

  it("finds the same function by its name", function()
    assert.are.equal(help.text(M.add), help.text("ft.zz_help_fixture.add"))
  end)

  it("says a function without a doc comment has none (a plain -- remark is no doc)", function()
    local text = help.text(M.undocumented)
    has(text, "(no doc comment)")
    assert.is_nil(text:find("a remark", 1, true))
  end)

  it("documents a class: its doc, its parent and its methods with their first doc lines", function()
    local text = help.text(M.Counter)
    has(text, "class (a subclass of ft.nn.Module)")
    has(text, "Counter(start): counts up from start.")
    has(text, "step(by)")
    has(text, "c:step([by = 1]): adds by and returns the count.")
  end)

  it("documents an object through its class", function()
    local text = help.text(M.Counter(3))
    has(text, "an instance of ft.zz_help_fixture.Counter")
    has(text, "counts up from start")
  end)

  it("documents a module from its header and lists its members", function()
    local text = help.text(M)
    has(text, "ft.zz_help_fixture: module")
    has(text, "a module written by help_spec to check what ft.help reads.")
    has(text, "add(a, b)")
    has(text, "Counter")
    has(text, "shout")
  end)

  it("documents a C function exported by a Lua module from the comment above its export line", function()
    has(help.text(M.shout), "M.shout(s): s in capitals")
    has(help.text("ft.zz_help_fixture.shout"), "s in capitals")
  end)

  it("documents the C module's functions and the tensor class from ft.help.builtins", function()
    has(help.text(ft.zeros), "ft.zeros(d1, d2, ...")
    has(help.text("ft.Tensor:matmul"), "the matrix product")
    has(help.text(ft.exp), "t:exp() or ft.exp(t)")
    local t = help.text(ft.randn(2, 2))
    has(t, "ft.Tensor: class")
    has(t, "matmul")
    has(t, "flatten") -- a method written in Lua (ft/tensor.lua) is listed too
  end)

  it("reaches modules that are no field of their parent by name", function()
    has(help.text("ft.nn.layers"), "ft.nn.layers: module")
  end)

  it("says what was not found, with the nearest name", function()
    local text, err = help.text("ft.nn.Linearr")
    assert.is_nil(text)
    has(err, "ft.nn has no field 'Linearr' (did you mean 'Linear'?)")
    text, err = help.text("no_such_thing_anywhere")
    assert.is_nil(text)
    has(err, "no global or module named 'no_such_thing_anywhere'")
    text, err = help.text(42)
    assert.is_nil(text)
    has(err, "got a number")
  end)
end)

describe("ft.help", function()
  local printed
  local real_print = print
  before_each(function()
    printed = {}
    _G.print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t") end
  end)
  after_each(function() _G.print = real_print end)

  it("with no argument prints how to use it", function()
    ft.help()
    _G.print = real_print
    has(printed[1], "help(x) prints the documentation of x")
    has(tostring(ft.help), "help(x) prints the documentation of x")
  end)

  it("prints the text of help.text, or the message for an unknown thing", function()
    ft.help(ft.zeros)
    ft.help("ft.nn.Linearr")
    _G.print = real_print
    assert.are.equal(help.text(ft.zeros), printed[1])
    has(printed[2], "did you mean 'Linear'?")
  end)
end)

describe("doc comments", function()
  it("are the block above a definition from its last --- line; -- blocks alone are remarks", function()
    local lines = { "-- a remark", "--- The doc.", "-- more.", "function f() end", "-- only a remark", "local x = 1" }
    assert.are.equal("The doc.\nmore.", help.comment_above(lines, 4))
    assert.is_nil(help.comment_above(lines, 6))
    assert.is_nil(help.comment_above(lines, 1))
  end)

  it("of a module are the comment lines at the top of its file", function()
    assert.are.equal("ft.x: one.\n\n  example", help.header({ "-- ft.x: one.", "--", "--   example", "local M = {}" }))
    assert.is_nil(help.header({ "local M = {}" }))
  end)

  it("cover every entry of ft.help.builtins: each names a function or table of the C module", function()
    for _, e in ipairs(help.builtins()) do
      assert(e.value ~= nil, ("builtins entry '%s' names nothing"):format(e.name))
      assert(e.text:match("^[^\n]+"), e.name)
    end
  end)
end)
