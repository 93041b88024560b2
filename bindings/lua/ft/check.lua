--- ft.check: value checks for arguments and options, so that a bad value fails at the call
-- with a message naming the function, the argument and the value.
--
--   local check = ft.check
--   local bs = check.integer("ft.data.loader", "batch_size", opts.batch_size, 1, {min = 1})
--   local p  = check.number("ft.transforms.hflip", "p", p, 0.5, {min = 0, max = 1})
--   local m  = check.one_of("ft.train.EarlyStopping", "mode", opts.mode, "min", {"min", "max"})
--
-- Each check returns the value, or the default when the value is nil (a nil default makes the
-- value optional: nil comes back). A bad value raises
-- "<where>: <name> must be <what>, got <value>" (without a position: where names the call).
-- Options tables themselves are checked with ft.check_options (unknown keys).
local ft = require "ft"

local check = {}

--- check.show(v) -> v as messages show it: strings quoted, tensors by shape, tables and
-- functions by type, numbers and booleans as they are.
local function show(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if ft.is_tensor(v) then return "a tensor of shape [" .. table.concat(v:shape(), ",") .. "]" end
  if type(v) == "table" or type(v) == "function" or type(v) == "userdata" then return "a " .. type(v) end
  return tostring(v)
end
check.show = show

--- check.fail(where, name, what, v) raises "<where>: <name> must be <what>, got <v>" (v as
-- check.show gives it), for checks ft.check has no function for.
local function fail(where, name, what, v)
  error(("%s: %s must be %s, got %s"):format(where, name, what, show(v)), 0)
end
check.fail = fail

-- " >= 1", " in [0, 1]" ... from {min =, max =, above =, below =}.
local function range_text(r)
  if not r then return "" end
  local lo = r.min ~= nil and ("[" .. r.min) or r.above ~= nil and ("(" .. r.above) or nil
  local hi = r.max ~= nil and (r.max .. "]") or r.below ~= nil and (r.below .. ")") or nil
  if lo and hi then return " in " .. lo .. ", " .. hi end
  if r.min ~= nil then return " >= " .. r.min end
  if r.above ~= nil then return " > " .. r.above end
  if r.max ~= nil then return " <= " .. r.max end
  if r.below ~= nil then return " < " .. r.below end
  return ""
end

local function in_range(v, r)
  if not r then return true end
  return (r.min == nil or v >= r.min) and (r.max == nil or v <= r.max)
     and (r.above == nil or v > r.above) and (r.below == nil or v < r.below)
end

--- check.integer(where, name, v, default [, {min =, max =, above =, below =}]) -> integer.
-- Accepts Lua integers and floats with an integral value (2.0); the range bounds are inclusive
-- (min, max) or strict (above, below).
function check.integer(where, name, v, default, range)
  if v == nil then return default end
  local n = math.type(v) == "float" and math.tointeger(v) or v
  if math.type(n) ~= "integer" or not in_range(n, range) then
    local only_min = range and range.min and not (range.max or range.above or range.below)
    local what = only_min and range.min == 1 and "a positive integer"
      or only_min and range.min == 0 and "a non-negative integer"
      or "an integer" .. range_text(range)
    fail(where, name, what, v)
  end
  return n
end

--- check.number(where, name, v, default [, {min =, max =, above =, below =}]) -> number.
-- A finite number (NaN and infinities are refused) within the range.
function check.number(where, name, v, default, range)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge or not in_range(v, range) then
    fail(where, name, "a finite number" .. range_text(range), v)
  end
  return v
end

--- check.boolean(where, name, v, default) -> boolean.
function check.boolean(where, name, v, default)
  if v == nil then return default end
  if type(v) ~= "boolean" then fail(where, name, "true or false", v) end
  return v
end

--- check.string(where, name, v, default) -> string (a non-empty one).
function check.string(where, name, v, default)
  if v == nil then return default end
  if type(v) ~= "string" or v == "" then fail(where, name, "a non-empty string", v) end
  return v
end

--- check.func(where, name, v, default) -> a function (or a table with __call).
function check.func(where, name, v, default)
  if v == nil then return default end
  local mt = type(v) == "table" and getmetatable(v)
  if type(v) ~= "function" and not (mt and mt.__call) then fail(where, name, "a function", v) end
  return v
end

--- check.table(where, name, v, default) -> table.
function check.table(where, name, v, default)
  if v == nil then return default end
  if type(v) ~= "table" then fail(where, name, "a table", v) end
  return v
end

--- check.one_of(where, name, v, default, choices) -> v, one of the array choices.
function check.one_of(where, name, v, default, choices)
  if v == nil then return default end
  for _, c in ipairs(choices) do
    if v == c then return v end
  end
  local shown = {}
  for i, c in ipairs(choices) do shown[i] = show(c) end
  local last = table.remove(shown)
  fail(where, name, #shown == 0 and last or table.concat(shown, ", ") .. " or " .. last, v)
end

--- check.required(where, name, v) -> v; raises "<where>: <name> is required" when v is nil.
function check.required(where, name, v)
  if v == nil then error(("%s: %s is required"):format(where, name), 0) end
  return v
end

return check
