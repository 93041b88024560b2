-- Shared assertions and fixture access for the Lua specs.
--
-- Values are compared through plain Lua tables (t:totable()), so a comparison never
-- relies on the tensor ops it is checking.
local ft = require "ft"

local H = {}

function H.fixture(name)
  local dir = os.getenv("FT_FIXTURES") or "tests/fixtures"
  return dir .. "/" .. name
end

function H.is_tensor(v)
  return type(v) == "userdata" and getmetatable(v) ~= nil and v.shape ~= nil
end

function H.shape_str(shape)
  return "[" .. table.concat(shape, ",") .. "]"
end

-- Flat row-major array of a tensor's values and its shape.
function H.flat(t)
  local shape = t:shape()
  local nested = t:totable()
  local out = {}
  local function walk(v)
    if type(v) == "table" then
      for i = 1, #v do walk(v[i]) end
    else
      out[#out + 1] = v
    end
  end
  walk(nested)
  return out, shape
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

function H.max_abs(t)
  local m = 0
  for _, v in ipairs((H.flat(t))) do
    local a = math.abs(v)
    if a ~= a then return a end -- NaN
    if a > m then m = a end
  end
  return m
end

-- A module's parameters by name as flat Lua arrays: all of them, or (only_trainable) those
-- that require a gradient.
function H.param_values(model, only_trainable)
  local out = {}
  for name, p in model:named_parameters() do
    if p.requires_grad or not only_trainable then out[name] = H.flat(p) end
  end
  return out
end

-- The largest |a[name][i] - b[name][i]| over two H.param_values tables (every name of a must be
-- in b; comparing nothing is an error).
function H.max_param_diff(a, b)
  local worst, n = 0, 0
  for name, va in pairs(a) do
    local vb = assert(b[name], "missing parameter " .. name)
    for i = 1, #va do worst = math.max(worst, math.abs(va[i] - vb[i])) end
    n = n + 1
  end
  assert(n > 0, "no parameters compared")
  return worst
end

-- Checks shape and values: max |actual - expected| <= rtol * max(1, max |expected|).
-- NaN anywhere fails. `what` names the value in the failure message.
function H.assert_close(actual, expected, rtol, what)
  what = what or "value"
  assert(H.is_tensor(actual), what .. ": expected a tensor, got " .. type(actual))
  local av, ashape = H.flat(actual)
  local ev, eshape = H.flat(expected)
  if not same_shape(ashape, eshape) then
    error(string.format("%s: shape %s, expected %s", what, H.shape_str(ashape),
                        H.shape_str(eshape)), 2)
  end
  local scale = math.max(1, H.max_abs(expected))
  local worst, at = 0, 1
  for i = 1, #ev do
    local d = math.abs(av[i] - ev[i])
    if d ~= d then worst, at = d, i break end
    if d > worst then worst, at = d, i end
  end
  if not (worst <= rtol * scale) then
    error(string.format("%s: max abs error %.3g at flat element %d (got %.8g, expected %.8g);"
                        .. " allowed %.3g (= %g * scale %.4g)", what, worst, at, av[at], ev[at],
                        rtol * scale, rtol, scale), 2)
  end
  return true
end

-- Every element's float32 bits equal (so -0 differs from 0, and NaN fails), shapes too.
function H.assert_bits_equal(actual, expected, what)
  what = what or "value"
  local av, ashape = H.flat(actual)
  local ev, eshape = H.flat(expected)
  if not same_shape(ashape, eshape) then
    error(string.format("%s: shape %s, expected %s", what, H.shape_str(ashape), H.shape_str(eshape)), 2)
  end
  for i = 1, #ev do
    if string.pack("<f", av[i]) ~= string.pack("<f", ev[i]) then
      error(("%s: element %d is %.9g, expected exactly %.9g"):format(what, i, av[i], ev[i]), 2)
    end
  end
  return true
end

-- Exact comparison of integer tensors (shape and every value).
function H.assert_equal_ints(actual, expected, what)
  what = what or "value"
  assert(H.is_tensor(actual), what .. ": expected a tensor, got " .. type(actual))
  local av, ashape = H.flat(actual)
  local ev, eshape = H.flat(expected)
  if not same_shape(ashape, eshape) then
    error(string.format("%s: shape %s, expected %s", what, H.shape_str(ashape),
                        H.shape_str(eshape)), 2)
  end
  for i = 1, #ev do
    if av[i] ~= ev[i] then
      error(string.format("%s: element %d is %s, expected %s", what, i, tostring(av[i]),
                          tostring(ev[i])), 2)
    end
  end
  return true
end

-- Rebuilds a nested table of the given shape from a flat array.
function H.nest(flat, shape)
  if #shape == 0 then return flat[1] end
  local pos = 0
  local function build(d)
    local t = {}
    for i = 1, shape[d] do
      if d == #shape then
        pos = pos + 1
        t[i] = flat[pos]
      else
        t[i] = build(d + 1)
      end
    end
    return t
  end
  return build(1)
end

-- A new tensor from flat values and a shape (independent of the ops under test).
function H.from_flat(flat, shape, dtype)
  if #shape == 0 then
    return ft.tensor({flat[1]}, dtype and {dtype = dtype} or nil):reshape({})
  end
  return ft.tensor(H.nest(flat, shape), dtype and {dtype = dtype} or nil)
end

-- int64 0-based indices (as torch stores them) -> a new 1-based int64 tensor for Lua.
function H.plus1(t)
  local v, shape = H.flat(t)
  for i = 1, #v do v[i] = math.tointeger(v[i] + 1) end
  return H.from_flat(v, shape, "int64")
end

-- A Lua array of HF's 0-based ids as ftlua's 1-based ones.
function H.ids_plus1(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v + 1 end
  return out
end

-- ft.load of an ops fixture file, grouped: cases[case][name] = tensor for keys
-- "ops.<case>.<name>".
function H.load_cases(file)
  local flat = ft.load(H.fixture(file))
  local cases = {}
  for key, t in pairs(flat) do
    local case, name = key:match("^ops%.([^.]+)%.([^.]+)$")
    if case then
      cases[case] = cases[case] or {}
      cases[case][name] = t
    end
  end
  return cases
end

-- The tensors of one case of a flat fixture table ("<case>.<name>" keys): {name = tensor}.
-- Fails when the fixture has no such case.
function H.case_of(tensors, name)
  local c = {}
  for k, v in pairs(tensors) do
    local field = k:match("^" .. name:gsub("%p", "%%%0") .. "%.(.+)$")
    if field then c[field] = v end
  end
  assert(next(c), "no fixture case " .. name)
  return c
end

-- pcall(fn) must fail; returns the error message (as a string).
function H.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return tostring(err)
end

-- Asserts the message contains every plain (non-pattern) substring given.
function H.assert_mentions(msg, ...)
  for _, s in ipairs({...}) do
    if not msg:find(s, 1, true) then
      error(string.format("error message %q does not mention %q", msg, s), 2)
    end
  end
end

-- ---- files and processes ----------------------------------------------------------------

H.PYTHON = "/usr/bin/python3"   -- Debian's, with torch / h5py where installed

-- A shell-quoted argument.
function H.quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns success, its output (stdout and stderr) and the exit code.
function H.run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

-- A fresh temporary directory; `tag` names the spec that made it.
function H.make_tmpdir(tag)
  local ok, out = H.run("mktemp -d /tmp/ftlua-" .. (tag or "spec") .. "-XXXXXX")
  assert(ok, out)
  return (out:gsub("%s+$", ""))
end

function H.read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function H.write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

function H.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A process id that no longer exists: a shell's, which printed it and exited (for the
-- temporary-file names "<path>.tmp-<pid>-<n>" of a killed writer).
function H.dead_pid()
  local h = assert(io.popen("sh -c 'echo $$'"))
  local pid = assert(tonumber(h:read("l")))
  h:close()
  return pid
end

-- A temporary folder holding the tokenizer fixture tests/fixtures/tokenizers/<name>: its
-- tokenizer.json (gunzipped) and tokenizer_config.json, as an HF model folder has them.
function H.tokenizer_dir(name)
  local dir = H.make_tmpdir("tokenizer")
  local from = H.fixture("tokenizers/" .. name)
  local ok, out = H.run(("gzip -dc %s > %s && cp %s %s"):format(H.quote(from .. "/tokenizer.json.gz"),
    H.quote(dir .. "/tokenizer.json"), H.quote(from .. "/tokenizer_config.json"), H.quote(dir .. "/")))
  assert(ok, out)
  return dir
end

-- True when Debian's python3 exists and imports the given modules ("json, struct").
function H.has_python(modules)
  return H.file_exists(H.PYTHON) and (H.run(H.PYTHON .. " -c 'import " .. modules .. "'"))
end

return H
