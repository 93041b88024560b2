--- ft.data.shuffle: the seeded permutations behind ft.data's loaders and splits.
--
--   local shuffle = require "ft.data.shuffle"
--   local p = shuffle.permutation(10, 42)        -- a permutation of 1..10 from the seed alone
--
-- splitmix64 on Lua's wrapping 64-bit integers: small, well mixed, and the same on every
-- machine, so a seed gives the same split and the same epochs everywhere.
local ft = require "ft"

local shuffle = {}

shuffle.GOLDEN = 0x9E3779B97F4A7C15

--- shuffle.mix(z) -> a well-mixed 64-bit integer (splitmix64's finaliser).
function shuffle.mix(z)
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

--- shuffle.permutation(n, seed) -> a Lua array holding a permutation of 1..n (Fisher-Yates),
-- determined by the integer seed alone.
function shuffle.permutation(n, seed)
  local p = {}
  for i = 1, n do p[i] = i end
  local state = shuffle.mix(seed)
  for i = n, 2, -1 do
    state = state + shuffle.GOLDEN
    local j = (shuffle.mix(state) >> 11) % i + 1   -- 53 random bits, non-negative
    p[i], p[j] = p[j], p[i]
  end
  return p
end

--- shuffle.seed(seed, where) -> seed, or without one a seed drawn from ft's global generator
-- (so ft.manual_seed reproduces the draw). A seed that is not an integer is an error naming
-- where.
function shuffle.seed(seed, where)
  if seed ~= nil and math.type(seed) ~= "integer" then
    error(("%s: seed must be an integer, got %s"):format(where, ft.check.show(seed)), 0)
  end
  return seed or math.floor(ft.rand(1):item() * 2 ^ 53)
end

return shuffle
