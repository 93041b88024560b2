-- The random generator from Lua: seeds and saved states reproduce draws, the number of threads
-- does not change them, and a few million normal draws have the moments and tails of N(0, 1)
-- within bounds computed from the sample size (bounds a biased stream breaks).
-- tests/c/test_rng.c checks the generator itself (known answers, the float Box-Muller against
-- double, more statistics).
local ft = require "ft"

-- Lua numbers (doubles) of a tensor's values.
local function values(t)
  local out = {}
  for i, v in ipairs(t:reshape(t:numel()):totable()) do out[i] = v end
  return out
end

local function same(a, b) return (a - b):abs():sum():item() == 0 end

-- How many standard errors a statistic may stray (two-sided p 5.7e-7 per check).
local SIGMAS = 5

-- The checks a sample x (a float tensor of n draws, n a multiple of 1024) of N(0, 1) fails, as
-- a list of messages: mean, variance, skewness, excess kurtosis (standard errors sqrt(1/n),
-- sqrt(2/n), sqrt(6/n), sqrt(24/n)) and the fraction beyond 3 (binomial). Sums are taken per
-- row of 1024 in float32 and added up in double.
local function normal_failures(x)
  local n = x:numel()
  local rows = x:reshape(n // 1024, 1024)
  local function total(t)
    local s = 0
    for _, v in ipairs(values(t:sum(2))) do s = s + v end
    return s
  end
  local e1, e2, e3, e4 = total(rows) / n, total(rows ^ 2) / n, total(rows ^ 3) / n, total(rows ^ 4) / n
  local m2 = e2 - e1 ^ 2
  local m3 = e3 - 3 * e1 * e2 + 2 * e1 ^ 3
  local m4 = e4 - 4 * e1 * e3 + 6 * e1 ^ 2 * e2 - 3 * e1 ^ 4
  local p3 = 0.0026997960632601866   -- P(|z| > 3) = erfc(3 / sqrt(2))
  local tail = x:abs():gt(3):sum():item() / n
  local failures = {}
  local function judge(name, got, want, se)
    if math.abs(got - want) > SIGMAS * se then
      failures[#failures + 1] = ("%s %.6g, expected %.6g +- %.3g"):format(name, got, want, SIGMAS * se)
    end
  end
  judge("mean", e1, 0, math.sqrt(1 / n))
  judge("variance", m2, 1, math.sqrt(2 / n))
  judge("skewness", m3 / m2 ^ 1.5, 0, math.sqrt(6 / n))
  judge("excess kurtosis", m4 / m2 ^ 2 - 3, 0, math.sqrt(24 / n))
  judge("P(|z| > 3)", tail, p3, math.sqrt(p3 * (1 - p3) / n))
  return failures
end

describe("the random generator", function()
  local threads
  setup(function() threads = ft.get_num_threads() end)
  teardown(function() ft.set_num_threads(threads) end)

  it("reproduces randn, rand, normal_ and uniform_ from a seed", function()
    local function draws()
      local w, v = ft.empty(300, 70), ft.empty(5000)
      w:normal_(0.5, 2)
      v:uniform_(-1, 3)
      return { ft.randn(4097), ft.rand(33), w, v }
    end
    ft.manual_seed(123)
    local a = draws()
    ft.manual_seed(123)
    local b = draws()
    for i = 1, #a do assert.is_true(same(a[i], b[i]), "draw " .. i .. " differs") end
    ft.manual_seed(124)
    assert.is_false(same(a[1], ft.randn(4097)), "another seed gave the same draws")
  end)

  it("gives the same draws on any number of threads", function()
    local function draws(n)
      ft.set_num_threads(n)
      ft.manual_seed(7)
      local w = ft.empty(1000, 333)
      w:normal_(0, 0.02)
      return { ft.randn(1 << 18), w, ft.rand(1 << 16) }
    end
    local one = draws(1)
    for _, n in ipairs({ 2, 3 }) do
      local other = draws(n)
      for i = 1, #one do assert.is_true(same(one[i], other[i]), ("draw %d differs on %d threads"):format(i, n)) end
    end
  end)

  it("draws the same again from a saved state, and a shorter draw is a prefix of a longer one", function()
    ft.manual_seed(99)
    ft.randn(10)
    local state = ft.get_rng_state()
    local long = ft.randn(100000)
    local after = ft.randn(5)
    ft.set_rng_state(state)
    local short = ft.randn(1000)
    assert.is_true(same(short, long:narrow(1, 1, 1000)))
    ft.set_rng_state(state)
    ft.randn(100000)
    assert.is_true(same(after, ft.randn(5)), "the generator moved differently")
  end)

  it("draws N(0, 1): moments and tail of 2^21 draws within bounds from the sample size", function()
    for _, seed in ipairs({ 1, 2 }) do
      ft.manual_seed(seed)
      local failures = normal_failures(ft.randn(1 << 21))
      assert.are.same({}, failures, "seed " .. seed)
    end
    ft.manual_seed(3)
    local w = ft.empty(1 << 11, 1 << 10)
    w:normal_(2, 3)
    assert.are.same({}, normal_failures((w - 2) / 3), "normal_(2, 3), standardised")
  end)

  it("fails a biased stream", function()
    ft.manual_seed(1)
    local z = ft.randn(1 << 21)
    assert.are.same({}, normal_failures(z))
    local function fails(x, what)
      local failures = normal_failures(x)
      for _, f in ipairs(failures) do
        if f:find(what, 1, true) == 1 then return true end
      end
      return false, table.concat(failures, "; ")
    end
    assert.is_true(fails(z + 0.005, "mean"))
    assert.is_true(fails(z * 1.01, "variance"))
    assert.is_true(fails(z + (z ^ 2 - 1) * 0.005, "skewness"))
    -- sum of 12 uniforms less 6: mean 0, variance 1, but excess kurtosis -0.1 and thin tails
    local irwin_hall = ft.rand(1 << 21, 12):sum(2) - 6
    assert.is_true(fails(irwin_hall, "excess kurtosis"))
    assert.is_true(fails(irwin_hall, "P(|z| > 3)"))
  end)
end)
