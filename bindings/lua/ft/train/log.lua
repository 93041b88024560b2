--- ft.train.Logger: the console line and the metrics file of a training run.
--
--   local logger = ft.train.Logger{path = "run/metrics.jsonl", total = steps, every = 10, unit = "images"}
--   logger:step(step, {loss = l, lr = lr}, batch_size)   -- progress line / log line, JSON line
--   logger:record(step, {val_loss = v})                   -- a permanent line, JSON line
--   logger:log("saved %s", path)
--   logger:close()
--
-- On a terminal the progress line (metrics, items/s, ETA) is rewritten in place; otherwise
-- it is printed every `every` steps (ft.progress). Every step and record is also appended
-- to the JSONL file as one object {"step": s, "time": seconds, <metrics>}, flushed at once
-- so a killed run leaves whole lines. Non-finite numbers are written as null.
-- Under mpirun (ft.dist) only the main rank writes the file and the console lines; the other
-- ranks' loggers write nothing (a checkpoint keeps the main rank's logger state).
local ft = require "ft"
local P = require "ft.progress"

local M = {}

local Logger = {}
Logger.__index = Logger

local fs = require "ft.fs"

--- ft.train.Logger{path = nil, total = nil, every = 10, unit = "items", items_per_step = nil}
-- path: the JSONL file (none: console only); it is started afresh by the first write,
-- unless load_state_dict kept the lines of an earlier run; under mpirun the main rank alone
-- writes it. total: the run's steps (for the ETA). unit and items_per_step name and count
-- what the rate measures; without items the rate is in steps/s.
function M.Logger(opts)
  opts = ft.check_options("ft.train.Logger", opts, {"path", "total", "every", "unit", "items_per_step"})
  local every = opts.every or 10
  if math.type(every) ~= "integer" or every < 1 then
    error("ft.train.Logger: every must be a positive integer, got " .. tostring(every), 2)
  end
  if opts.path ~= nil and type(opts.path) ~= "string" then
    error("ft.train.Logger: path must be a string, got " .. type(opts.path), 2)
  end
  if opts.total ~= nil and math.type(opts.total) ~= "integer" then
    error("ft.train.Logger: total must be an integer, got " .. tostring(opts.total), 2)
  end
  ft.check.integer("ft.train.Logger", "total", opts.total, nil, {min = 0})
  ft.check.string("ft.train.Logger", "unit", opts.unit)
  ft.check.number("ft.train.Logger", "items_per_step", opts.items_per_step, nil, {above = 0})
  return setmetatable({
    path = opts.path, total = opts.total, every = every, unit = opts.unit or "items",
    items_per_step = opts.items_per_step,
    bytes = 0,          -- size of the JSONL file written so far
    elapsed_before = 0, -- seconds of earlier sessions (restored runs)
    created = ft.clock(),
    items = 0,          -- items since the first step of this session (rate)
  }, Logger)
end

-- ---- the JSONL file ---------------------------------------------------------------------

function Logger:_open()
  if self.file or not self.path then return self.file end
  if not ft.dist.is_main() then return nil end   -- under mpirun, rank 0 alone writes the file
  fs.mkdir_for(self.path, "ft.train.Logger")
  local keep = ""
  if self.keep_bytes and self.keep_bytes > 0 then
    local f = io.open(self.path, "rb")
    if f then
      keep = f:read(self.keep_bytes) or ""
      f:close()
    end
  end
  local f, err = io.open(self.path, "wb")
  if not f then error("ft.train.Logger: cannot write '" .. self.path .. "': " .. tostring(err), 3) end
  f:write(keep)
  self.file, self.bytes = f, #keep
  return f
end

local function json_value(v)
  if ft.is_tensor(v) then v = v:item() end
  if type(v) == "number" and (v ~= v or math.abs(v) == math.huge) then return ft.json.null end
  return v
end

-- Seconds since the run started (earlier sessions included).
function Logger:elapsed()
  return self.elapsed_before + (ft.clock() - self.created)
end

function Logger:_write(step, metrics)
  local f = self:_open()
  if not f then return end
  local obj = {step = step, time = self:elapsed()}
  for k, v in pairs(metrics) do
    if k ~= "step" and k ~= "time" then obj[k] = json_value(v) end
  end
  local line = ft.json.encode(obj) .. "\n"
  f:write(line)
  f:flush()
  self.bytes = self.bytes + #line
end

-- ---- console -----------------------------------------------------------------------------

local function format_value(v)
  v = ft.is_tensor(v) and v:item() or v
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "nan" end
  if type(v) == "number" then return ("%.4g"):format(v) end
  return tostring(v)
end

-- "loss" first, then the other keys in sorted order.
local function metrics_text(metrics)
  local keys = {}
  for k in pairs(metrics) do
    if k ~= "loss" and k ~= "step" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  if metrics.loss ~= nil then table.insert(keys, 1, "loss") end
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. " " .. format_value(metrics[k]) end
  return table.concat(parts, "  ")
end

function Logger:_step_text(step)
  if self.total then return ("step %d/%d"):format(step, self.total) end
  return ("step %d"):format(step)
end

--- logger:step(step, metrics [, items]) after each training step. items: how many
-- samples (or tokens) the step processed (default items_per_step).
function Logger:step(step, metrics, items)
  metrics = metrics or {}
  if math.type(step) ~= "integer" then error("ft.train.Logger:step: step must be an integer", 2) end
  self:_write(step, metrics)
  -- Rate and ETA are measured from the end of the first step seen (the first step often
  -- includes one-off set-up costs).
  items = items or self.items_per_step
  if not self.t0 then
    self.t0, self.first_step = ft.clock(), step
  elseif items then
    self.items = self.items + items
  end

  local seconds = ft.clock() - self.t0
  local done = step - self.first_step
  local parts = {self:_step_text(step)}
  local text = metrics_text(metrics)
  if text ~= "" then parts[#parts + 1] = text end
  if done > 0 and seconds > 0 then
    if self.items > 0 then
      parts[#parts + 1] = ("%.0f %s/s"):format(self.items / seconds, self.unit)
    else
      parts[#parts + 1] = ("%.2f steps/s"):format(done / seconds)
    end
  end
  if self.total and done > 0 then
    parts[#parts + 1] = "ETA " .. P.hms(seconds / done * math.max(0, self.total - step))
  end
  P.progress(step, self.total or -1, self.every, "%s", table.concat(parts, "  "))
end

--- logger:record(step, metrics): evaluation results and the like; a permanent line.
function Logger:record(step, metrics)
  metrics = metrics or {}
  self:_write(step, metrics)
  P.log("%s  %s", self:_step_text(step), metrics_text(metrics))
end

--- logger:log(fmt, ...): a permanent console line (not written to the JSONL file).
function Logger:log(fmt, ...)
  P.log(fmt, ...)
end

function Logger:close()
  P.clear()
  if self.file then
    self.file:close()
    self.file = nil
  end
end

--- logger:state_dict() -> {bytes =, elapsed =}: where the file and the clock stand, for
-- checkpoints. logger:load_state_dict(state) before the first write makes the file keep
-- its first `bytes` bytes (the lines up to the checkpoint; later lines of a killed run
-- are dropped) and the clock continue from `elapsed`.
function Logger:state_dict()
  return {bytes = self.bytes, elapsed = self:elapsed()}
end

function Logger:load_state_dict(state)
  if type(state) ~= "table" then error("ft.train.Logger:load_state_dict: expected a table", 2) end
  if self.file then
    error("ft.train.Logger:load_state_dict: call it before the first step (the file is already being written)", 2)
  end
  self.keep_bytes = state.bytes or 0
  self.elapsed_before = state.elapsed or 0
end

return M
