-- ft.tensor: the methods of ft.Tensor written in Lua, a few ft.* shortcuts, and the printer
-- behind tostring(t) and the REPL (ft._format_tensor). Loaded by the C module at start.
--
--   local x = ft.randn(4, 3, 2); x:flatten(2)  --> 4 x 6     x:var(1)  x:std()
local ft = require "ft"

local Tensor = ft.Tensor

--- t:flatten([start_dim = 1 [, end_dim = -1]]): t with dims start_dim..end_dim merged into one
-- (a view when possible, as t:reshape); a scalar becomes a 1-element 1-dim tensor.
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

--- t:expand_as(other): t:expand(other:shape()).
function Tensor:expand_as(other) return self:expand(other:shape()) end
--- t:view_as(other): t:view(other:shape()).
function Tensor:view_as(other) return self:view(other:shape()) end
--- t:type_as(other): t:to(other:dtype()).
function Tensor:type_as(other) return self:to(other:dtype()) end
--- t:bfloat16(): t:to("bfloat16") (t itself when it is bfloat16).
function Tensor:bfloat16() return self:to("bfloat16") end
--- t:half(): t:to("float16") (t itself when it is float16).
function Tensor:half() return self:to("float16") end
--- t:double(): t:to("float64") (t itself when it is float64).
function Tensor:double() return self:to("float64") end
--- t:square(): t * t elementwise.
function Tensor:square() return self * self end
--- t:var([dim [, keepdim [, unbiased = true]]]): the variance of all elements or along dim;
-- unbiased divides by n - 1 (Bessel's correction, torch's default), false by n.
function Tensor:var(dim, keepdim, unbiased)
  local mean = self:mean(dim, true)
  local d = self - mean
  local n = dim and self:size(dim) or self:numel()
  local s = (d * d):sum(dim, keepdim)
  if unbiased == false then return s / n end
  return s / (n - 1)
end
--- t:std([dim [, keepdim [, unbiased = true]]]): the standard deviation, sqrt(t:var(...)).
function Tensor:std(dim, keepdim, unbiased) return self:var(dim, keepdim, unbiased):sqrt() end

--- ft.split(t, size [, dim]): t:split(size, dim), views of size elements along dim.
function ft.split(t, size, dim) return t:split(size, dim) end
--- ft.index_select(t, dim, index): t:index_select(dim, index) (1-based int64 index).
function ft.index_select(t, dim, index) return t:index_select(dim, index) end
--- ft.index_add(t, dim, index, src): t:index_add(dim, index, src), a copy of t with the slices of
-- src added at the 1-based int64 index along dim (repeated indices accumulate; src has t's shape
-- except #index along dim). Differentiable in t and src; float32 (other float dtypes promoted).
function ft.index_add(t, dim, index, src) return t:index_add(dim, index, src) end
--- ft.gather(t, dim, index): t:gather(dim, index) (1-based int64 index).
function ft.gather(t, dim, index) return t:gather(dim, index) end
--- ft.softmax(t, dim): t:softmax(dim).
function ft.softmax(t, dim) return t:softmax(dim) end
--- ft.log_softmax(t, dim): t:log_softmax(dim).
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

-- A row of numbers (false for the gap of a summarised dim) as one line.
local function render_row(row, f, width)
  local cells = {}
  for _, v in ipairs(row) do
    cells[#cells + 1] = v == false and "..." or string.format("%" .. width .. "s", fmt(f, v))
  end
  return " " .. table.concat(cells, " ")
end

-- A matrix (rows; false for a gap) as lines.
local function render_matrix(rows, f, width, lines)
  for _, row in ipairs(rows) do
    lines[#lines + 1] = row == false and " ..." or render_row(row, f, width)
  end
end

-- Tensors of 3+ dims as Torch7 prints them: one matrix per index of the leading dims, each
-- under its label "(i,j,.,.) =" with 1-based indices; "..." stands for summarised slices.
local function render_slices(values, shape, d, label, f, width, summarise, lines)
  if d == #shape - 1 then
    if #lines > 0 then lines[#lines + 1] = "" end
    lines[#lines + 1] = "(" .. table.concat(label, ",") .. ",.,.) ="
    render_matrix(values, f, width, lines)
    return
  end
  for k, i in ipairs(positions(shape[d], summarise)) do
    if i then
      label[d] = i
      render_slices(values[k], shape, d + 1, label, f, width, summarise, lines)
    else
      lines[#lines + 1] = ""
      lines[#lines + 1] = "..."
    end
  end
  label[d] = nil
end

--- ft._format_tensor(t): the text tostring(t) and the REPL show, as Torch7 and PyTorch print:
-- values with one format for the whole tensor, 3+ dims as labelled 2-d slices "(1,.,.) =",
-- tensors of more than 1000 elements summarised to the first and last 3 along each dim,
-- and a last line with the dtype, shape, requires_grad and grad_fn.
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
  if #shape == 1 then lines[1] = render_row(values, f, width)
  elseif #shape == 2 then render_matrix(values, f, width, lines)
  else render_slices(values, shape, 1, {}, f, width, summarise, lines) end
  lines[#lines + 1] = footer
  return table.concat(lines, "\n")
end

--- ft.clone_state_dict(sd): a copy of a state dict (name -> tensor) whose tensors have their own
-- storage, so later changes to the model do not reach it (model:state_dict() aliases the weights).
function ft.clone_state_dict(sd) return require("ft.state_dict").clone(sd, "ft.clone_state_dict") end

return Tensor
