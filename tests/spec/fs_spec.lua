-- ft.fs: existence checks and folder creation shared by the library and the recipes.
local ft = require "ft"
local H = require "helpers"

describe("ft.fs", function()
  local tmp
  before_each(function() tmp = H.make_tmpdir("fs") end)
  after_each(function() H.run("rm -rf '" .. tmp .. "'") end)

  it("tells files and folders apart", function()
    local file = tmp .. "/a.txt"
    assert.is_false(ft.fs.exists(file))
    local f = assert(io.open(file, "w"))
    f:write("x")
    f:close()
    assert.is_true(ft.fs.exists(file))
    assert.is_false(ft.fs.is_dir(file))
    assert.is_true(ft.fs.exists(tmp))
    assert.is_true(ft.fs.is_dir(tmp))
    assert.is_false(ft.fs.is_dir(tmp .. "/missing"))
  end)

  it("creates nested folders, quotes included, and accepts existing ones", function()
    local dir = tmp .. "/it's/a b/c"
    assert.are.equal(dir, ft.fs.mkdir(dir))
    assert.is_true(ft.fs.is_dir(dir))
    assert.are.equal(dir, ft.fs.mkdir(dir))
    ft.fs.mkdir_for(tmp .. "/x/y/log.jsonl")
    assert.is_true(ft.fs.is_dir(tmp .. "/x/y"))
    assert.is_false(ft.fs.exists(tmp .. "/x/y/log.jsonl"))
    ft.fs.mkdir_for("no_folder_part.txt")   -- a bare file name needs no folder
  end)

  it("writes a file whole, replacing an earlier one, and names a path it cannot write", function()
    local path = tmp .. "/r.csv"
    ft.fs.write(path, "a,b\n1,2\n")
    ft.fs.write(path, "a\n3\n")
    assert.are.equal("a\n3\n", H.read_bytes(path))
    assert.is_false(ft.fs.exists(path .. ".tmp"))
    local bad = tmp .. "/missing/r.csv"
    H.assert_mentions(H.error_of(ft.fs.write, bad, "x"), "ft.fs.write: cannot write", bad)
    assert.is_false(ft.fs.exists(bad))
  end)

  it("names the folder it cannot create and who asked", function()
    local file = tmp .. "/plain"
    assert(io.open(file, "w")):close()
    H.assert_mentions(H.error_of(ft.fs.mkdir, file .. "/sub"), "ft.fs.mkdir: cannot create directory", file .. "/sub")
    H.assert_mentions(H.error_of(ft.fs.mkdir, file .. "/sub", "ft.peft.save"), "ft.peft.save: cannot create directory")
    H.assert_mentions(H.error_of(ft.fs.mkdir, ""), "ft.fs.mkdir: a folder path expected")
  end)
end)
