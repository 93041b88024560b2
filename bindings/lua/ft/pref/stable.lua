-- ft.pref.stable: the differentiable functions the preference losses need and the tensor ops
-- lack, each composed from elementwise ops so that it is exact where torch's is and finite
-- everywhere its value is: log(1 + u), log(sigmoid(x)) and log(1 - exp(x)).
--
--   local stable = require "ft.pref.stable"
--   local loss = -stable.logsigmoid(beta * margin)          -- no overflow for any margin
--   local odds = lp - stable.log1mexp(lp)                   -- log(p / (1 - p)) from log p < 0
--
-- Each picks its formula per element with ft.where, and feeds every branch only inputs it is
-- finite on (the other branch gets a harmless constant), so no branch that is not selected can
-- put an inf or a NaN into the gradient.
local ft = require "ft"

local M = {}

--- stable.log1p(u) -> log(1 + u) for u > -1, accurate to float32 rounding for every u: the
-- series u - u^2/2 + u^3/3 where |u| < 1e-4, elsewhere log(w) * u / (w - 1) with w = 1 + u
-- rounded (the rounding of w cancels; Goldberg's trick), its gradient 1 / w.
function M.log1p(u)
  local small = u:abs():lt(1e-4)
  local us = ft.where(small, u, 0)          -- the series' input: only the small elements
  local ul = ft.where(small, 1, u)          -- the logarithm's: only the others (w - 1 ~= 0)
  local series = us * (1 - us * (0.5 - us * (1 / 3)))
  local w = ul + 1
  local lw = w:log()
  -- the correction u / (w - 1) moves the value only; the gradient stays d log(w) / du = 1 / w
  local corrected = lw + (lw * (ul / (w - 1) - 1)):detach()
  return ft.where(small, series, corrected)
end

--- stable.logsigmoid(x) -> log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)), as torch's
-- F.logsigmoid: finite for every finite x, gradient 1 - sigmoid(x) (1/2 at 0).
function M.logsigmoid(x)
  local pos = x:ge(0)
  local xp = ft.where(pos, x, 0)            -- max(x, 0), with its gradient only where x >= 0
  local xn = ft.where(pos, 0, x)            -- min(x, 0), with its gradient only where x < 0
  return xn - M.log1p((xn - xp):exp())      -- xn - xp = -|x|
end

-- -expm1(x) / -x = 1 + x/2 + x^2/6 + ... (Horner, 10 terms: exact in float32 for |x| <= 0.5).
local function expm1_ratio(x)
  local s = 1
  for k = 10, 2, -1 do s = 1 + x * (1 / k) * s end
  return s
end

--- stable.log1mexp(x) -> log(1 - exp(x)) for x <= 0, as TRL's log1mexp: log1p(-exp(x)) below
-- -1/2, log(-x) + log(-expm1(x) / -x) from a series above, so that log-probs near 0 keep their
-- precision (1 - exp(x) cancels there). -inf at x = 0.
function M.log1mexp(x)
  local far = x:lt(-0.5)
  local xf = ft.where(far, x, -1)           -- exp(xf) <= exp(-1/2): 1 - exp(xf) >= 0.39
  local xc = ft.where(far, -0.25, x)        -- [-1/2, 0]: the series' range
  local far_v = M.log1p(-xf:exp())
  local near_v = (-xc):log() + expm1_ratio(xc):log()
  return ft.where(far, far_v, near_v)
end

return M
