-- ft.fs: the few file-system helpers the library and the recipes share.
--
--   if not ft.fs.exists(path) then ... end
--   ft.fs.mkdir("runs/exp1")              -- with its parents; an error names the folder
--   ft.fs.mkdir_for("runs/exp1/log.jsonl") -- the folder a file will go in
--   ft.fs.write("runs/exp1/results.csv", text)
local ft = require "ft"

local fs = {}

--- exists(path) -> true when path can be opened for reading (a file or a folder).
function fs.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- is_dir(path) -> true when path is a folder that can be listed.
function fs.is_dir(path) return (pcall(ft._listdir, path)) end

--- mkdir(dir [, where]) -> dir. Creates dir and its missing parents; when it cannot, raises
-- "<where>: cannot create directory <dir>" (where defaults to "ft.fs.mkdir").
function fs.mkdir(dir, where)
  if type(dir) ~= "string" or dir == "" then
    error(("%s: a folder path expected, got %s"):format(where or "ft.fs.mkdir", tostring(dir)), 2)
  end
  if fs.is_dir(dir) then return dir end
  os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  if not fs.is_dir(dir) then error(("%s: cannot create directory %s"):format(where or "ft.fs.mkdir", dir), 0) end
  return dir
end

--- mkdir_for(path [, where]): creates the folder that will hold the file path, if path has one.
function fs.mkdir_for(path, where)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then fs.mkdir(dir, where) end
end

--- write(path, text): writes text to path through a temporary file renamed at the end, so a
-- failed write leaves an earlier file at path as it was; raises an error naming the path.
function fs.write(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error(("ft.fs.write: cannot write %s: %s"):format(path, err), 2) end
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not (ok and closed) then
    os.remove(tmp)
    error(("ft.fs.write: cannot write %s: %s"):format(path, tostring(werr or cerr)), 2)
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    error(("ft.fs.write: cannot write %s: %s"):format(path, rerr), 2)
  end
end

return fs
