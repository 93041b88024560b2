--- ft.optim.numbers: numbers stored in optimizer and scheduler state dicts.
--
-- State dicts are flat tables of tensors so that ft.save / ft.load store them as they are.
-- A number is stored as a float32 tensor whose elements add up (in double precision) to its
-- exact value: one element when float32 holds it, else its float32 rounding followed by the
-- correction terms. ft.optim re-exports number_to_tensor and tensor_to_number.
local ft = require "ft"
local C = ft._optim

local M = {}

local function f32(x) return (string.unpack("f", string.pack("f", x))) end

local function number_to_tensor(x)
  if type(x) == "boolean" then x = x and 1 or 0 end
  local hi = f32(x)
  if hi == x or hi ~= hi or math.abs(hi) == math.huge then return ft.tensor({hi}) end
  local mid = f32(x - hi)
  local lo = f32(x - hi - mid)
  if lo == 0 then return ft.tensor({hi, mid}) end
  return ft.tensor({hi, mid, lo})
end

local function tensor_to_number(v, key)
  if type(v) == "number" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  if not C.is_tensor(v) then
    error(string.format("state dict entry '%s' must be a tensor or a number, got %s", key, type(v)), 0)
  end
  local values = v:totable()
  if type(values) == "number" then return values end
  local sum = 0.0
  for i = 1, #values do
    if type(values[i]) ~= "number" then
      error(string.format("state dict entry '%s' must be a 1-D tensor of numbers", key), 0)
    end
    sum = sum + values[i]
  end
  return sum
end

local function tensor_to_integer(v, key)
  local x = tensor_to_number(v, key)
  local n = math.tointeger(x)
  if not n then error(string.format("state dict entry '%s' must hold an integer, got %s", key, x), 0) end
  return n
end

--- number_to_tensor(x) -> float32 tensor of 1 to 3 elements summing to x (booleans as 1 / 0).
M.number_to_tensor = number_to_tensor
--- tensor_to_number(v, key) -> the number a state dict entry holds (a tensor or a number).
M.tensor_to_number = tensor_to_number
--- tensor_to_integer(v, key) -> the integer a state dict entry holds; an error names key otherwise.
M.tensor_to_integer = tensor_to_integer

return M
