-- ft.<name> loads bindings/lua/ft/<name>.lua on first use: a missing name is nil (and costs
-- no file-system search after the first), an error inside a module's loading propagates.
local ft = require "ft"
local H = require "helpers"

describe("ft.<name> (lazy submodules)", function()
  local dir, saved_path

  before_each(function()
    saved_path = package.path
    dir = H.make_tmpdir("lazy")
    assert(H.run("mkdir " .. H.quote(dir .. "/ft")))
  end)

  after_each(function()
    package.path = saved_path
    H.run("rm -rf " .. H.quote(dir))
  end)

  it("loads a submodule on first use and keeps it in ft", function()
    local nn = ft.nn
    assert.are.equal("table", type(nn))
    assert.are.equal(require "ft.nn", nn)
    assert.are.equal(nn, rawget(ft, "nn"))
  end)

  it("gives nil for a name with no module, for private and dotted names", function()
    assert.is_nil(ft.nosuchthing)
    assert.is_nil(ft.nosuchthing)
    assert.is_nil(ft._nosuchthing)
    assert.is_nil(ft["nn.functional"])
    assert.is_nil(ft[42])
    assert.is_nil(rawget(ft, "nosuchthing"))
  end)

  it("propagates an error raised while a submodule loads, with its message", function()
    H.write_bytes(dir .. "/ft/broken_for_spec.lua", 'error("broken_for_spec: the answer is 42")\n')
    package.path = dir .. "/?.lua;" .. package.path
    local ok, err = pcall(function() return ft.broken_for_spec end)
    assert.is_false(ok)
    assert.matches("broken_for_spec: the answer is 42", tostring(err), 1, true)
    assert.matches("broken_for_spec.lua:1:", tostring(err), 1, true)
    assert.is_nil(rawget(ft, "broken_for_spec"))
    -- Still an error (not a cached nil) the next time, and missing names stay nil.
    assert.is_false((pcall(function() return ft.broken_for_spec end)))
    assert.is_nil(ft.nosuchthing)
  end)

  it("searches the file system once for a missing name, not on every access", function()
    local searchpath = package.searchpath
    local searches = 0
    package.searchpath = function(name, ...)
      if name == "ft.not_there_for_spec" then searches = searches + 1 end
      return searchpath(name, ...)
    end
    local ok, err = pcall(function()
      for _ = 1, 1000 do assert.is_nil(ft.not_there_for_spec) end
    end)
    package.searchpath = searchpath
    assert(ok, err)
    assert.is_true(searches <= 1, ("ft.not_there_for_spec searched %d times in 1000 accesses"):format(searches))
  end)

  it("finds a module that appears on a changed package.path or in package.preload after a miss", function()
    assert.is_nil(ft.late_for_spec)
    H.write_bytes(dir .. "/ft/late_for_spec.lua", "return { answer = 42 }\n")
    package.path = dir .. "/?.lua;" .. package.path
    assert.are.equal(42, ft.late_for_spec.answer)

    assert.is_nil(ft.preloaded_for_spec)
    package.preload["ft.preloaded_for_spec"] = function() return { answer = 7 } end
    local ok, mod = pcall(function() return ft.preloaded_for_spec end)
    package.preload["ft.preloaded_for_spec"] = nil
    package.loaded["ft.preloaded_for_spec"] = nil
    package.loaded["ft.late_for_spec"] = nil
    rawset(ft, "late_for_spec", nil)
    rawset(ft, "preloaded_for_spec", nil)
    assert(ok, mod)
    assert.are.equal(7, mod.answer)
  end)
end)
