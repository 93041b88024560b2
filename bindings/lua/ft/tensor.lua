-- Lua-side tensor conveniences and the printer behind tostring(t).
local ft = require "ft"

local Tensor = ft.Tensor

function Tensor:flatten(start_dim, end_dim)
  local shape = self:shape()
  local n = #shape
  if n == 0 then return self:reshape(1) end
  start_dim = start_dim or 1
  end_dim = end_dim or -1
  if start_dim < 0 then start_dim = start_dim + n + 1 end
  if end_dim < 0 then end_dim = end_dim + n + 1 end
  local out, flat = {}, 1
  for d = 1, n do
    if d < start_dim or d > end_dim then
      out[#out + 1] = shape[d]
    else
      flat = flat * shape[d]
      if d == end_dim then out[#out + 1] = flat end
    end
  end
  return self:reshape(out)
end

function Tensor:expand_as(other) return self:expand(other:shape()) end
function Tensor:view_as(other) return self:view(other:shape()) end
function Tensor:type_as(other) return self:to(other:dtype()) end
function Tensor:square() return self * self end
function Tensor:var(dim, keepdim, unbiased)
  local mean = self:mean(dim, true)
  local d = self - mean
  local n = dim and self:size(dim) or self:numel()
  local s = (d * d):sum(dim, keepdim)
  if unbiased == false then return s / n end
  return s / (n - 1)
end
function Tensor:std(dim, keepdim, unbiased) return self:var(dim, keepdim, unbiased):sqrt() end

function ft.split(t, size, dim) return t:split(size, dim) end
function ft.index_select(t, dim, index) return t:index_select(dim, index) end
function ft.gather(t, dim, index) return t:gather(dim, index) end
function ft.softmax(t, dim) return t:softmax(dim) end
function ft.log_softmax(t, dim) return t:log_softmax(dim) end

-- ---- printing --------------------------------------------------------------------------

local EDGE = 3          -- elements kept at each end of a summarised dim
local SUMMARY_AT = 1000 -- tensors with more elements are summarised

local function shape_string(shape)
  if #shape == 0 then return "[]" end
  return "[" .. table.concat(shape, ",") .. "]"
end

-- Positions shown along a dim of size n: all, or the first and last EDGE with a gap.
local function positions(n, summarise)
  local out = {}
  if summarise and n > 2 * EDGE then
    for i = 1, EDGE do out[#out + 1] = i end
    out[#out + 1] = false
    for i = n - EDGE + 1, n do out[#out + 1] = i end
  else
    for i = 1, n do out[#out + 1] = i end
  end
  return out
end

-- Gathers the shown values (as a nested Lua table with false for gaps) to pick one format.
local function collect(t, summarise)
  local shape = t:shape()
  if #shape == 0 then return t:item() end
  local rows = {}
  for _, i in ipairs(positions(shape[1], summarise)) do
    if i then rows[#rows + 1] = collect(t:select(1, i), summarise) else rows[#rows + 1] = false end
  end
  return rows
end

local function number_format(values, is_int)
  if is_int then return "%d" end
  local maxabs, minabs, all_int = 0, math.huge, true
  local function scan(v)
    if type(v) == "table" then for _, x in ipairs(v) do scan(x) end return end
    if v == false or v ~= v or v == math.huge or v == -math.huge then return end
    local a = math.abs(v)
    maxabs = math.max(maxabs, a)
    if a > 0 then minabs = math.min(minabs, a) end
    if v ~= math.floor(v) then all_int = false end
  end
  scan(values)
  if all_int and maxabs < 1e8 then return "%.0f." end
  if maxabs >= 1e5 or (minabs < 1e-4 and minabs > 0) then return "%.4e" end
  return "%.4f"
end

local function fmt(f, v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return string.format(f, v)
end

local function render(values, f, indent, width, lines)
  -- values: a row (numbers) or a list of sub-blocks
  if type(values[1]) ~= "table" and (values[1] ~= false or type(values[2]) ~= "table") then
    local cells = {}
    for _, v in ipairs(values) do
      cells[#cells + 1] = v == false and "..." or string.format("%" .. width .. "s", fmt(f, v))
    end
    lines[#lines + 1] = indent .. table.concat(cells, " ")
    return
  end
  for k, sub in ipairs(values) do
    if sub == false then
      lines[#lines + 1] = indent .. "..."
    else
      render(sub, f, indent, width, lines)
    end
    if k < #values and type(sub) == "table" and type(sub[1]) == "table" then lines[#lines + 1] = "" end
  end
end

function ft._format_tensor(t)
  local shape = t:shape()
  local dtype = t:dtype()
  local summarise = t:numel() > SUMMARY_AT
  local values = ft.no_grad(function() return collect(t:detach(), summarise) end)
  local f = number_format(values, dtype == "int64")
  local footer = string.format("[%s tensor of shape %s%s%s]", dtype, shape_string(shape),
    t.requires_grad and ", requires_grad" or "", t.grad_fn and (", grad_fn=" .. t.grad_fn) or "")
  if #shape == 0 then return fmt(f, values) .. "\n" .. footer end
  if t:numel() == 0 then return footer end
  local width = 0
  local function measure(v)
    if type(v) == "table" then for _, x in ipairs(v) do measure(x) end
    elseif v ~= false then width = math.max(width, #fmt(f, v)) end
  end
  measure(values)
  local lines = {}
  render(#shape == 1 and values or values, f, " ", width, lines)
  lines[#lines + 1] = footer
  return table.concat(lines, "\n")
end

return Tensor
