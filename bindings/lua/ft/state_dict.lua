--- ft.state_dict: helpers for state dicts (flat tables name -> tensor, as Module:state_dict()
-- returns them).
--
--   local before = ft.state_dict.clone(model:state_dict())   -- also ft.clone_state_dict(sd)
--   ... train ...
--   model:load_state_dict(before)                            -- back to the saved weights
--
-- Module:state_dict() returns the live parameters, not copies: training, or loading another
-- state dict, changes what it holds. Clone a state dict to keep a snapshot.
local ft = require "ft"

local M = {}

--- ft.state_dict.clone(sd) -> a new table with the same names, each tensor detached and copied
-- (its own storage, requires_grad false), so later changes to the model or to sd do not reach it.
-- Non-tensor entries are an error naming the key.
function M.clone(sd, where)
  where = where or "ft.clone_state_dict"
  if type(sd) ~= "table" then
    error(("%s: a state dict (table name -> tensor) expected, got %s"):format(where, type(sd)), 0)
  end
  local out = {}
  for k, t in pairs(sd) do
    if not ft.is_tensor(t) then
      error(("%s: entry '%s' is a %s, not a tensor"):format(where, tostring(k), type(t)), 0)
    end
    out[k] = t:detach():clone()
  end
  return out
end

return M
