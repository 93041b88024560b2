--- ft.tables: small table helpers the library shares.
--
--   for _, name in ipairs(ft.tables.sorted_keys(sd)) do ... end     -- a stable order
--   if not ft.tables.same_shape(a, b) then ... end                  -- tensors or size lists
local ft = require "ft"

local M = {}

--- ft.tables.sorted_keys(t) -> an array of t's keys in sorted order (strings and numbers
-- each sort naturally; a mix sorts numbers first, then by tostring), for a stable iteration order.
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta == tb and (ta == "string" or ta == "number") then return a < b end
    if ta == "number" ~= (tb == "number") then return ta == "number" end
    return tostring(a) < tostring(b)
  end)
  return keys
end

--- ft.tables.same_array(a, b) -> true when arrays a and b hold equal values in the same order.
function M.same_array(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

--- ft.tables.same_shape(a, b) -> true when a and b have the same shape. Each is a tensor or an
-- array of sizes ({2, 3}); a tensor and a size array compare too.
function M.same_shape(a, b)
  if ft.is_tensor(a) then a = a:shape() end
  if ft.is_tensor(b) then b = b:shape() end
  return M.same_array(a, b)
end

return M
