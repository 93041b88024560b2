-- ft.pref.inputs: the argument checks the preference losses share, so that every loss names
-- the bad input the same way: per-example vectors [B] of one batch size, token counts,
-- beta and label_smoothing.
--
--   local inputs = require "ft.pref.inputs"
--   local where = "ft.pref.dpo_loss"
--   local pc = inputs.vector(where, "policy_chosen", opts.policy_chosen)
--   local pr = inputs.vector(where, "policy_rejected", opts.policy_rejected, pc)   -- same [B]
--   local beta = inputs.beta(where, opts.beta, 0.1)
--
-- Every error reads "<where>: <name> ..." without a position (the name says which input).
local ft = require "ft"
local check = require "ft.check"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function describe(v)
  if ft.is_tensor(v) then return v:dtype() .. " " .. shape_str(v) end
  return check.show(v)
end

--- inputs.vector(where, name, v [, like [, like_name]]) -> v as a float32 tensor [B]: one value
-- per example (summed log-probs, rewards). A [B, 1] tensor is read as [B]. like (a tensor [B]
-- already checked) fixes B: a different size is an error naming both inputs and their shapes.
-- Float tensors of other dtypes are converted (differentiably); int64 is refused.
function M.vector(where, name, v, like, like_name)
  check.required(where, name, v)
  if not ft.is_tensor(v) then check.fail(where, name, "a float tensor [batch]", v) end
  if v:dim() == 2 and v:size(2) == 1 then v = v:reshape(v:size(1)) end
  if v:dim() ~= 1 or v:dtype() == "int64" then
    error(("%s: %s must be a float tensor [batch] (one value per example), got %s"):format(where, name,
      describe(v)), 0)
  end
  if v:dtype() ~= "float32" then v = v:float() end
  if like ~= nil and v:size(1) ~= like:size(1) then
    error(("%s: %s is %s but %s is %s: both hold one value per example of the batch"):format(where, name,
      shape_str(v), like_name or "the first input", shape_str(like)), 0)
  end
  return v
end

--- inputs.counts(where, name, v, like, like_name) -> a float32 tensor [B] of token counts (the
-- second result of ft.pref.logps): a tensor [B] (float or int64), a Lua array or one number for
-- every example. Every count must be an integer >= 1 (an empty completion has no mean).
function M.counts(where, name, v, like, like_name)
  check.required(where, name, v)
  local B = like:size(1)
  local values
  if type(v) == "number" then
    values = {}
    for i = 1, B do values[i] = v end
  elseif type(v) == "table" and not ft.is_tensor(v) then
    values = v
    if #values ~= B then
      error(("%s: %s has %d counts but %s is %s"):format(where, name, #values, like_name, shape_str(like)), 0)
    end
  elseif ft.is_tensor(v) then
    if v:dim() ~= 1 or v:size(1) ~= B then
      error(("%s: %s is %s but %s is %s: one token count per example"):format(where, name, describe(v),
        like_name, shape_str(like)), 0)
    end
    values = v:totable()
  else
    check.fail(where, name, "token counts (a tensor [batch], an array or a number)", v)
  end
  for i = 1, B do
    local c = values[i]
    if type(c) ~= "number" or c ~= c or c < 1 or c ~= math.floor(c) or c == math.huge then
      error(("%s: %s[%d] must be a whole number of tokens >= 1, got %s"):format(where, name, i,
        tostring(c)), 0)
    end
  end
  if ft.is_tensor(v) then return v:dtype() == "float32" and v:detach() or v:float() end
  return ft.tensor(values)
end

--- inputs.reference(where, name, v, like, like_name) -> a float32 tensor [B] cut from the graph:
-- reference-model log-probs carry no gradient (they come from a frozen model).
function M.reference(where, name, v, like, like_name)
  return M.vector(where, name, v, like, like_name):detach()
end

--- inputs.beta(where, v, default [, name]) -> a finite number > 0 (the temperature of a loss).
function M.beta(where, v, default, name)
  return check.number(where, name or "beta", v, default, { above = 0 })
end

--- inputs.label_smoothing(where, v) -> a number in [0, 0.5) (0 when nil): the probability that
-- a preference label is flipped.
function M.label_smoothing(where, v)
  return check.number(where, "label_smoothing", v, 0, { min = 0, below = 0.5 })
end

--- inputs.shape_str(t) -> "[2,3]": a tensor's shape as errors print it.
M.shape_str = shape_str

return M
