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

  local dead_pid = H.dead_pid

  local function names_in(dir)
    local out = {}
    for name in pairs(ft._listdir(dir)) do out[#out + 1] = name end
    table.sort(out)
    return out
  end

  it("removes the temporary files killed writers left, and only theirs", function()
    local path = tmp .. "/r.csv"
    local stale = ("%s.tmp-%d-7"):format(path, dead_pid())
    local live = path .. ".tmp-1-0"                 -- pid 1 is alive
    local other = tmp .. "/other.csv.tmp-" .. dead_pid() .. "-0"
    for _, p in ipairs({ stale, live, other, path .. ".tmp-x-1" }) do H.write_bytes(p, "partial") end
    local stale_dir = tmp .. "/r.csv.tmp-" .. dead_pid() .. "-9"   -- a killed replace_dir's folder
    ft.fs.mkdir(stale_dir)
    H.write_bytes(stale_dir .. "/inner", "x")
    ft.fs.write(path, "new\n")
    assert.are.same({ "other.csv.tmp-" .. other:match("tmp%-(%d+)%-0$") .. "-0", "r.csv", "r.csv.tmp-1-0",
                      "r.csv.tmp-x-1" }, names_in(tmp))
    assert.are.equal("new\n", ft.fs.read(path))
    H.write_bytes(stale, "partial")
    assert.are.equal(1, ft.fs.remove_stale(path))
    assert.is_false(H.file_exists(stale))
  end)

  it("reads a whole file, bytes as they are, and names a file it cannot read", function()
    local path = tmp .. "/bin"
    local bytes = "a\0b\r\n\255" .. ("x"):rep(200000)
    H.write_bytes(path, bytes)
    assert.are.equal(bytes, ft.fs.read(path))
    H.write_bytes(path, "")
    assert.are.equal("", ft.fs.read(path))
    H.assert_mentions(H.error_of(ft.fs.read, tmp .. "/missing"), "ft.fs.read: cannot open", tmp .. "/missing")
    H.assert_mentions(H.error_of(ft.fs.read, tmp), "ft.fs.read", tmp, "Is a directory")
    H.assert_mentions(H.error_of(ft.fs.read, nil), "ft.fs.read: a path expected")
    H.assert_mentions(H.error_of(ft.fs.write, tmp .. "/t", 42), "ft.fs.write: text must be a string")
    H.assert_mentions(H.error_of(ft.fs.write, tmp, "x"), "ft.fs.write: cannot write", "Is a directory")
  end)

  it("replaces a folder as a whole, or not at all", function()
    local dir = tmp .. "/out/adapter"
    local a, b = ft.fs.replace_dir(dir, function(t)
      assert.are.same({}, names_in(t))
      ft.fs.write(t .. "/w", "r=4")
      H.write_bytes(t .. "/c", "cfg4")
      return 1, 2
    end)
    assert.are.same({ 1, 2 }, { a, b })
    assert.are.same({ "c", "w" }, names_in(dir))
    -- fill fails half-way: the old folder stays whole, the temporary one goes
    local err = H.error_of(ft.fs.replace_dir, dir, function(t)
      ft.fs.write(t .. "/w", "r=8")
      error("disk full", 0)
    end)
    assert.are.equal("disk full", err)
    assert.are.equal("r=4", ft.fs.read(dir .. "/w"))
    assert.are.equal("cfg4", ft.fs.read(dir .. "/c"))
    assert.are.same({ "adapter" }, names_in(tmp .. "/out"))
    -- a replacement drops the files the new contents do not have
    ft.fs.replace_dir(dir .. "/", function(t) ft.fs.write(t .. "/w", "r=8") end)
    assert.are.same({ "w" }, names_in(dir))
    assert.are.equal("r=8", ft.fs.read(dir .. "/w"))
    assert.are.same({ "adapter" }, names_in(tmp .. "/out"))
  end)

  it("clears what a killed replace_dir left before the next one", function()
    local dir = tmp .. "/ad"
    ft.fs.replace_dir(dir, function(t) ft.fs.write(t .. "/w", "1") end)
    local left = ("%s.tmp-%d-3"):format(dir, dead_pid())
    ft.fs.mkdir(left .. "/sub")
    H.write_bytes(left .. "/sub/big", ("x"):rep(1000))
    assert.are.same({ "ad", "ad.tmp-" .. left:match("tmp%-(%d+)") .. "-3" }, names_in(tmp))
    ft.fs.replace_dir(dir, function(t) ft.fs.write(t .. "/w", "2") end)
    assert.are.same({ "ad" }, names_in(tmp))
    assert.are.equal("2", ft.fs.read(dir .. "/w"))
  end)

  it("refuses to replace a file by a folder and checks its arguments", function()
    local file = tmp .. "/plain"
    H.write_bytes(file, "x")
    H.assert_mentions(H.error_of(ft.fs.replace_dir, file, function() end),
      "ft.fs.replace_dir: cannot replace folder", file, "not a folder")
    assert.are.equal("x", ft.fs.read(file))
    H.assert_mentions(H.error_of(ft.fs.replace_dir, tmp .. "/d", "nope"), "ft.fs.replace_dir: fill must be a function")
    H.assert_mentions(H.error_of(ft.fs.replace_dir, "", function() end), "ft.fs.replace_dir: a path expected")
    assert.are.same({ "plain" }, names_in(tmp))
  end)
end)
