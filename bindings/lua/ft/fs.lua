-- ft.fs: the few file-system helpers the library and the recipes share.
--
--   if not ft.fs.exists(path) then ... end
--   ft.fs.mkdir("runs/exp1")              -- with its parents; an error names the folder
--   ft.fs.mkdir_for("runs/exp1/log.jsonl") -- the folder a file will go in
--   ft.fs.write("runs/exp1/results.csv", text)   -- atomic: old or new contents, never half
--   local text = ft.fs.read("runs/exp1/results.csv")
--   ft.fs.replace_dir("out/adapter", function(tmp) ... write files into tmp ... end)
--
-- Writes go through the core's one atomic writer (core/io/atomic.c): a temporary
-- "<path>.tmp-<pid>-<n>" beside the target, fsynced and renamed over it. Temporaries left
-- by killed processes are removed by the next write of the same path.
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

local function check_path(path, where)
  if type(path) ~= "string" or path == "" then
    error(("%s: a path expected, got %s"):format(where, path == "" and "''" or tostring(path)), 3)
  end
end

--- write(path, text): writes text to path atomically (a temporary file beside it, fsynced and
-- renamed over it), so a reader or a killed run sees the old file or the new one, never a part;
-- raises "ft.fs.write: cannot write '<path>': <reason>".
function fs.write(path, text)
  check_path(path, "ft.fs.write")
  if type(text) ~= "string" then
    error(("ft.fs.write: text must be a string, got %s (writing '%s')"):format(type(text), path), 2)
  end
  ft._write_file(path, text)
end

--- read(path) -> the whole file as a string (bytes as they are); raises
-- "ft.fs.read: cannot open '<path>': <reason>" (or "cannot read ...").
function fs.read(path)
  check_path(path, "ft.fs.read")
  return ft._read_file(path)
end

--- replace_dir(path, fill) -> fill's results. Calls fill(tmp) with a fresh empty folder beside
-- path; when fill returns, that folder replaces path as a whole (one rename exchanges them, the
-- old contents are removed after). If fill raises or the process dies, path keeps its old
-- contents; the next replace_dir of path removes what a killed run left. Creates path's parents.
function fs.replace_dir(path, fill)
  check_path(path, "ft.fs.replace_dir")
  if type(fill) ~= "function" and not (getmetatable(fill) or {}).__call then
    error(("ft.fs.replace_dir: fill must be a function, got %s"):format(type(fill)), 2)
  end
  fs.mkdir_for((path:gsub("/+$", "")), "ft.fs.replace_dir")
  local tmp = ft._dir_begin(path)
  local res = table.pack(pcall(fill, tmp))
  if not res[1] then
    pcall(ft._remove_tree, tmp)
    error(res[2], 0)
  end
  local ok, err = pcall(ft._dir_commit, tmp, path)
  if not ok then
    pcall(ft._remove_tree, tmp)
    error(err, 0)
  end
  return table.unpack(res, 2, res.n)
end

--- remove_stale(path) -> count. Removes the temporary files and folders of path
-- ("<path>.tmp-<pid>-<n>") left by processes that no longer exist (every write does this
-- itself; call it when resuming from a path without writing it).
function fs.remove_stale(path)
  check_path(path, "ft.fs.remove_stale")
  return ft._remove_stale(path)
end

--- remove_tree(path): removes a file, or a folder and everything in it (links are not followed).
function fs.remove_tree(path)
  check_path(path, "ft.fs.remove_tree")
  ft._remove_tree(path)
end

return fs
