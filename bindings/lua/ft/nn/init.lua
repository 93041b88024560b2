-- ft.nn.init: in-place parameter initialisers, as torch.nn.init. They draw from the global
-- generator, so ft.manual_seed makes models reproducible; init.skip turns them all off while a
-- model whose weights are loaded next is built.
local ft = require "ft"

local init = {}

local check = ft.check

--- Gain recommended for a nonlinearity (torch.nn.init.calculate_gain).
function init.calculate_gain(nonlinearity, param)
  if type(nonlinearity) ~= "string" then check.fail("ft.nn.init.calculate_gain", "nonlinearity", "a name", nonlinearity) end
  check.number("ft.nn.init.calculate_gain", "param", param)
  if nonlinearity == "linear" or nonlinearity == "sigmoid" or nonlinearity:match("^conv") then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then
    local slope = param or 0.01
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == "selu" then return 3 / 4 end
  error("ft.nn.init: unsupported nonlinearity '" .. tostring(nonlinearity) .. "'", 2)
end

--- fan_in, fan_out of a weight [out, in, k...] (torch's convention).
function init.fan_in_and_fan_out(t)
  local shape = t:shape()
  assert(#shape >= 2, "ft.nn.init: fan in and fan out need a tensor of at least 2 dims")
  local receptive = 1
  for i = 3, #shape do receptive = receptive * shape[i] end
  return shape[2] * receptive, shape[1] * receptive
end

-- How many init.skip calls are running: while > 0 every initialiser leaves its tensor as it is.
local skipping = 0

--- init.skip(fn, ...) -> fn(...)'s results: runs fn (a function, or a callable such as a
-- module class) with every initialiser of ft.nn.init a no-op, as transformers' no_init_weights:
-- a module tree built inside draws no random numbers, its layers only allocate their
-- parameters (ft.empty) for weights loaded afterwards. The initialisers work again when fn
-- returns or raises (the error is re-raised as it was). Calls nest.
function init.skip(fn, ...)
  local mt = getmetatable(fn)
  if type(fn) ~= "function" and not (type(mt) == "table" and mt.__call) then
    check.fail("ft.nn.init.skip", "fn", "a function", fn)
  end
  skipping = skipping + 1
  local results = table.pack(pcall(fn, ...))
  skipping = skipping - 1
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- init.skipping() -> true while an init.skip call runs (initialisers are no-ops).
function init.skipping() return skipping > 0 end

-- The record lists of the init.defer calls running, innermost last.
local deferring = {}

-- Parameters require grad, so in-place changes run with grad mode off.
local function apply(t, method, args)
  ft.no_grad(function() t[method](t, table.unpack(args, 1, args.n)) end)
  return t
end

local function inplace(t, method, ...)
  if skipping > 0 then return t end
  local args = table.pack(...)
  local records = deferring[#deferring]
  if records then
    records[#records + 1] = { tensor = t, run = function(target) return apply(target or t, method, args) end }
    return t
  end
  return apply(t, method, args)
end

--- init.defer(fn, ...) -> records, fn(...)'s results: runs fn (a function or a callable such
-- as a module class) with every initialiser of ft.nn.init recorded instead of applied, so
-- that a model is built without writing its weights (their pages stay untouched) and
-- initialised afterwards, one tensor at a time. records is the array, in call order, of
-- {tensor = t, run = function([target])}: run() applies the initialiser to t, run(target) to
-- target instead (a tensor of t's shape); running them all in order draws exactly the random
-- numbers, and gives exactly the values, that building without defer would. Initialisers
-- under an init.skip (inside fn or around the call) stay no-ops and are not recorded. A
-- constructor that read a weight's values after initialising it would see them unset (the
-- model definitions do not).
-- Calls nest (records go to the innermost). An error in fn is re-raised as it was.
function init.defer(fn, ...)
  local mt = getmetatable(fn)
  if type(fn) ~= "function" and not (type(mt) == "table" and mt.__call) then
    check.fail("ft.nn.init.defer", "fn", "a function", fn)
  end
  local records = {}
  deferring[#deferring + 1] = records
  local results = table.pack(pcall(fn, ...))
  table.remove(deferring)
  if not results[1] then error(results[2], 0) end
  return records, table.unpack(results, 2, results.n)
end

--- init.replay(records, buffered, finish): runs the initialisations init.defer recorded, in
-- order (so the random numbers are drawn as without defer). A tensor t for which buffered(t)
-- is true is initialised into a float32 buffer of its own instead, and finish(t, buffer) runs
-- right after its last initialisation; the buffer is freed then, and returned to the system,
-- before the next tensor's (so one such buffer exists at a time).
function init.replay(records, buffered, finish)
  local last = {}
  for i, r in ipairs(records) do
    if buffered(r.tensor) then last[r.tensor] = i end
  end
  local buffers = {}
  for i, r in ipairs(records) do
    records[i] = nil
    local t = r.tensor
    if last[t] then
      local buf = buffers[t] or ft.empty(t:shape())
      buffers[t] = buf
      r.run(buf)
      if last[t] == i then
        buffers[t] = nil
        finish(t, buf)
        do local done <close> = buf end   -- freed now, not by the collector
        ft.empty_cache()
      end
    else
      r.run()
    end
  end
end

--- init.uniform_(t, a = 0, b = 1) fills t in place with U(a, b) draws; returns t.
function init.uniform_(t, a, b) return inplace(t, "uniform_", a or 0, b or 1) end
--- init.normal_(t, mean = 0, std = 1) fills t in place with N(mean, std^2) draws; returns t.
function init.normal_(t, mean, std) return inplace(t, "normal_", mean or 0, std or 1) end
--- init.constant_(t, v) fills t with v in place; returns t.
function init.constant_(t, v) return inplace(t, "fill_", v) end
--- init.zeros_(t) fills t with 0 in place; returns t.
function init.zeros_(t) return inplace(t, "fill_", 0) end
--- init.ones_(t) fills t with 1 in place; returns t.
function init.ones_(t) return inplace(t, "fill_", 1) end

local function kaiming_std(t, opts, where)
  opts = ft.check_options(where, opts, {"a", "mode", "nonlinearity"})
  check.number(where, "a", opts.a)
  local mode = check.one_of(where, "mode", opts.mode, "fan_in", {"fan_in", "fan_out"})
  local fan_in, fan_out = init.fan_in_and_fan_out(t)
  local fan = mode == "fan_in" and fan_in or fan_out
  local gain = init.calculate_gain(opts.nonlinearity or "leaky_relu", opts.a or 0)
  return fan > 0 and gain / math.sqrt(fan) or 0
end

--- kaiming_uniform_(t, {a=0, mode="fan_in", nonlinearity="leaky_relu"})
function init.kaiming_uniform_(t, opts)
  local bound = math.sqrt(3) * kaiming_std(t, opts, "ft.nn.init.kaiming_uniform_")
  return init.uniform_(t, -bound, bound)
end

--- kaiming_normal_(t, {a=0, mode="fan_in", nonlinearity="leaky_relu"})
function init.kaiming_normal_(t, opts)
  return init.normal_(t, 0, kaiming_std(t, opts, "ft.nn.init.kaiming_normal_"))
end

-- xavier's {gain = 1}, checked.
local function gain_of(opts, where)
  opts = ft.check_options(where, opts, {"gain"})
  return check.number(where, "gain", opts.gain, 1, {min = 0})
end

--- xavier_uniform_(t, {gain=1}): U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).
function init.xavier_uniform_(t, opts)
  local gain = gain_of(opts, "ft.nn.init.xavier_uniform_")
  local fan_in, fan_out = init.fan_in_and_fan_out(t)
  local std = gain * math.sqrt(2 / (fan_in + fan_out))
  local bound = math.sqrt(3) * std
  return init.uniform_(t, -bound, bound)
end

--- xavier_normal_(t, {gain=1})
function init.xavier_normal_(t, opts)
  local gain = gain_of(opts, "ft.nn.init.xavier_normal_")
  local fan_in, fan_out = init.fan_in_and_fan_out(t)
  return init.normal_(t, 0, gain * math.sqrt(2 / (fan_in + fan_out)))
end

return init
