-- ft.transforms: batch augmentation and the fixed corruptions. Expected images are computed
-- here from plain Lua tables (pixel loops), never with the transforms under test.
local ft = require "ft"
local T = require "ft.transforms"
local H = require "helpers"

local error_of, assert_mentions = H.error_of, H.assert_mentions

-- A batch [B,C,h,w] of seeded uniform values in [0,1], and its nested Lua table.
local function images(B, C, h, w, seed)
  ft.manual_seed(seed or 1)
  local x = ft.rand(B, C, h, w)
  return x, x:totable()
end

-- Builds a [B,C,h,w] tensor whose pixel (b,c,i,j) (1-based) is fn(b, c, i, j).
local function build(B, C, h, w, fn)
  local t = {}
  for b = 1, B do
    t[b] = {}
    for c = 1, C do
      t[b][c] = {}
      for i = 1, h do
        t[b][c][i] = {}
        for j = 1, w do t[b][c][i][j] = fn(b, c, i, j) end
      end
    end
  end
  return ft.tensor(t)
end

local function assert_in_unit_range(x, what)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs((H.flat(x))) do
    lo, hi = math.min(lo, v), math.max(hi, v)
  end
  assert(lo >= 0 and hi <= 1, ("%s: values in [%g, %g], expected [0, 1]"):format(what, lo, hi))
end

local function same_values(a, b)
  local fa, fb = H.flat(a), H.flat(b)
  if #fa ~= #fb then return false end
  for i = 1, #fa do
    if fa[i] ~= fb[i] then return false end
  end
  return true
end

-- Bilinear value of image img (nested [h][w], 1-based) at 0-based position (y, x), zero outside.
local function bilinear_at(img, h, w, y, x)
  local function px(i, j)
    if i < 0 or i >= h or j < 0 or j >= w then return 0 end
    return img[i + 1][j + 1]
  end
  local y0, x0 = math.floor(y), math.floor(x)
  local wy, wx = y - y0, x - x0
  return px(y0, x0) * (1 - wy) * (1 - wx) + px(y0, x0 + 1) * (1 - wy) * wx
    + px(y0 + 1, x0) * wy * (1 - wx) + px(y0 + 1, x0 + 1) * wy * wx
end

describe("ft.transforms geometry", function()
  it("rotates by 90 degrees exactly: a transpose and a flip of every channel", function()
    for _, size in ipairs({ 5, 6 }) do
      local x, t = images(2, 2, size, size, size)
      -- counter-clockwise: out[i][j] = in[j][size + 1 - i] (1-based)
      local want = build(2, 2, size, size, function(b, c, i, j) return t[b][c][j][size + 1 - i] end)
      H.assert_equal_ints(T.rotate(x, 90), want, "rotate 90, size " .. size)
      local half = build(2, 2, size, size, function(b, c, i, j) return t[b][c][size + 1 - i][size + 1 - j] end)
      H.assert_equal_ints(T.rotate(x, 180), half, "rotate 180")
      H.assert_equal_ints(T.rotate(x, -90), T.rotate(x, 270), "rotate -90 and 270")
      H.assert_equal_ints(T.rotate(T.rotate(x, 90), -90), x, "rotate 90 then back")
    end
  end)

  it("leaves images unchanged at 0 degrees", function()
    local x = images(3, 1, 7, 7)
    H.assert_equal_ints(T.rotate(x, 0), x, "rotate 0")
    H.assert_equal_ints(T.rotate(x, 360), x, "rotate 360")
  end)

  it("rotates by any angle with bilinear sampling about the centre, per image", function()
    local h, w = 6, 7
    local x, t = images(2, 1, h, w, 3)
    local angles = { 30, -17.5 }
    local got = T.rotate(x, angles)
    local want = build(2, 1, h, w, function(b, c, i, j)
      local r = math.rad(angles[b])
      local cy, cx = (h - 1) / 2, (w - 1) / 2
      local dy, dx = i - 1 - cy, j - 1 - cx
      -- the source turns the other way: x' = cos dx - sin dy, y' = sin dx + cos dy
      return bilinear_at(t[b][c], h, w, math.sin(r) * dx + math.cos(r) * dy + cy, math.cos(r) * dx - math.sin(r) * dy + cx)
    end)
    H.assert_close(got, want, 1e-5, "rotate 30 / -17.5")
    -- a single number applies to every image
    H.assert_close(T.rotate(x, 30):narrow(1, 1, 1), want:narrow(1, 1, 1), 1e-5, "rotate 30 for all")
  end)

  it("draws random rotations within the bound", function()
    local x = images(16, 1, 9, 9)
    local y = T.random_rotate(x, 15)
    assert.are.same({ 16, 1, 9, 9 }, y:shape())
    assert_in_unit_range(y, "random_rotate")
    H.assert_equal_ints(T.random_rotate(x, 0), x, "random_rotate 0")
  end)

  it("crops with pad 0 as the identity", function()
    local x = images(4, 2, 5, 6)
    local y = T.random_crop(x, 0)
    H.assert_equal_ints(y, x, "random_crop pad 0")
  end)

  it("crops a shifted window of the zero-padded image, all offsets occurring", function()
    local h, w, pad = 5, 6, 2
    local x, t = images(60, 2, h, w, 4)
    local got = T.random_crop(x, pad):totable()
    local seen = {}
    for b = 1, 60 do
      local found
      for dy = -pad, pad do
        for dx = -pad, pad do
          local ok = true
          for c = 1, 2 do
            for i = 1, h do
              for j = 1, w do
                local si, sj = i + dy, j + dx
                local v = (si >= 1 and si <= h and sj >= 1 and sj <= w) and t[b][c][si][sj] or 0
                if got[b][c][i][j] ~= v then ok = false end
              end
            end
          end
          if ok and not found then found = dy .. "," .. dx end
        end
      end
      assert(found, "image " .. b .. " is not a shifted window of the padded input")
      seen[found] = true
    end
    local kinds = 0
    for _ in pairs(seen) do kinds = kinds + 1 end
    assert(kinds >= 15, "only " .. kinds .. " of the 25 offsets occurred in 60 crops")
  end)

  it("flips left-right with probability p", function()
    local h, w = 4, 5
    local x, t = images(200, 1, h, w, 5)
    local mirrored = build(200, 1, h, w, function(b, c, i, j) return t[b][c][i][w + 1 - j] end)
    H.assert_equal_ints(T.hflip(x, 1), mirrored, "hflip p=1")
    H.assert_equal_ints(T.hflip(x, 0), x, "hflip p=0")
    local y = T.hflip(x, 0.5)
    local flipped = 0
    for b = 1, 200 do
      local yb = y:narrow(1, b, 1)
      if same_values(yb, mirrored:narrow(1, b, 1)) then
        flipped = flipped + 1
      else
        assert(same_values(yb, x:narrow(1, b, 1)), "image " .. b .. " is neither the input nor its mirror")
      end
    end
    assert(flipped > 70 and flipped < 130, flipped .. " of 200 images flipped with p = 0.5")
  end)
end)

describe("ft.transforms intensity", function()
  it("blends with the per-image mean for contrast, clamped to [0,1]", function()
    local x, t = images(2, 2, 3, 4, 6)
    local function mean_of(b)
      local s = 0
      for c = 1, 2 do for i = 1, 3 do for j = 1, 4 do s = s + t[b][c][i][j] end end end
      return s / 24
    end
    local factors = { 0.5, 1.8 }
    local want = build(2, 2, 3, 4, function(b, c, i, j)
      local f, m = factors[b], mean_of(b)
      return math.min(1, math.max(0, f * t[b][c][i][j] + (1 - f) * m))
    end)
    H.assert_close(T.contrast(x, factors), want, 1e-6, "contrast per image")
    H.assert_close(T.contrast(x, ft.tensor(factors)), want, 1e-6, "contrast factors as a tensor")
    H.assert_close(T.contrast(x, 1), x, 1e-6, "contrast 1")
    H.assert_close(T.random_contrast(x, 0.5, 0.5), T.contrast(x, 0.5), 1e-6, "random_contrast lo = hi")
    assert_in_unit_range(T.random_contrast(x, 0, 3), "random_contrast")
  end)

  it("adds gaussian noise of the given std and clamps", function()
    local x = ft.full({ 4, 1, 50, 50 }, 0.5)
    H.assert_equal_ints(T.gaussian_noise(x, 0), x, "noise std 0")
    local y = T.gaussian_noise(x, 0.1)
    local v = H.flat(y)
    local s, s2 = 0, 0
    for _, a in ipairs(v) do s, s2 = s + a, s2 + a * a end
    local m = s / #v
    local sd = math.sqrt(s2 / #v - m * m)
    assert(math.abs(m - 0.5) < 0.01, "noise mean " .. m)
    assert(math.abs(sd - 0.1) < 0.01, "noise std " .. sd)
    assert_in_unit_range(T.gaussian_noise(x, 2), "noise std 2")
    -- per-image std: image 1 untouched, image 2 noisy
    local z = T.gaussian_noise(x, { 0, 0.3, 0, 0.3 })
    H.assert_equal_ints(z:narrow(1, 1, 1), x:narrow(1, 1, 1), "noise std 0 for image 1")
    assert(not same_values(z:narrow(1, 2, 1), x:narrow(1, 2, 1)), "image 2 got no noise")
  end)

  it("keeps a constant image under blur", function()
    local x = ft.full({ 2, 3, 8, 9 }, 0.37)
    H.assert_close(T.gaussian_blur(x, 1.5), x, 1e-6, "blur of a constant")
  end)

  it("blurs as a convolution with an explicit 2-D gaussian kernel and reflect padding", function()
    local h, w, sigma = 6, 7, 0.8
    local r = math.ceil(3 * sigma)   -- 3 (the documented radius)
    local x, t = images(2, 2, h, w, 7)
    local weights, total = {}, 0
    for dy = -r, r do
      for dx = -r, r do
        local k = math.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
        weights[dy .. "," .. dx] = k
        total = total + k
      end
    end
    local function reflect(p, n)   -- 1-based, edge not repeated
      if p < 1 then return 2 - p elseif p > n then return 2 * n - p end
      return p
    end
    local want = build(2, 2, h, w, function(b, c, i, j)
      local s = 0
      for dy = -r, r do
        for dx = -r, r do
          s = s + weights[dy .. "," .. dx] / total * t[b][c][reflect(i + dy, h)][reflect(j + dx, w)]
        end
      end
      return s
    end)
    H.assert_close(T.gaussian_blur(x, sigma), want, 1e-5, "gaussian_blur sigma 0.8")
    H.assert_equal_ints(T.gaussian_blur(x, 0), x, "blur sigma 0")
  end)

  it("clamps to [0,1] or to given bounds", function()
    local x = ft.tensor({ { { { -1, 0.5, 2 } } } })
    H.assert_close(T.clamp(x), ft.tensor({ { { { 0, 0.5, 1 } } } }), 0, "clamp")
    H.assert_close(T.clamp(x, 0.2, 0.6), ft.tensor({ { { { 0.2, 0.5, 0.6 } } } }), 1e-7, "clamp 0.2..0.6")
  end)

  it("keeps shapes and the [0,1] range through every transform", function()
    local x = images(8, 1, 28, 28)
    for name, fn in pairs({
      crop = function() return T.random_crop(x, 3) end, flip = function() return T.hflip(x) end,
      rotate = function() return T.random_rotate(x, 45) end, noise = function() return T.gaussian_noise(x, 0.3) end,
      contrast = function() return T.random_contrast(x, 0.2, 2) end, blur = function() return T.gaussian_blur(x, 2) end,
      corrupt = function() return T.corrupt(x, { seed = 3 }) end,
    }) do
      local y = fn()
      assert.are.same({ 8, 1, 28, 28 }, y:shape(), name)
      assert_in_unit_range(y, name)
    end
  end)
end)

describe("ft.transforms.compose", function()
  it("applies the steps in order and passes labels through", function()
    local x = images(3, 1, 4, 4)
    local y = ft.tensor({ 1, 2, 3 }, { dtype = "int64" })
    local pipeline = T.compose({ { T.contrast, 0.5 }, function(b) return T.rotate(b, 90) end, T.clamp })
    local out, labels = pipeline(x, y)
    H.assert_close(out, T.rotate(T.contrast(x, 0.5), 90), 0, "composed")
    assert.are.equal(y, labels)
    assert_mentions(error_of(T.compose, { 42 }), "step 1 must be a function or {fn, args...}")
  end)

  it("is random but reproducible under ft.manual_seed", function()
    local x = images(5, 1, 8, 8)
    local augment = T.compose({ { T.random_crop, 2 }, { T.hflip, 0.5 }, { T.random_rotate, 10 } })
    ft.manual_seed(11)
    local a = augment(x)
    ft.manual_seed(11)
    H.assert_equal_ints(augment(x), a, "same seed")
    assert(not same_values(augment(x), a), "a second draw repeated the first")
  end)
end)

describe("ft.transforms.augmentation", function()
  it("names the presets: none is the identity, light crops and flips, strong adds the rest", function()
    local x = images(4, 1, 8, 8)
    H.assert_close(T.augmentation("none")(x), x, 0, "none")
    local function check(name, steps)
      ft.manual_seed(5)
      local got = T.augmentation(name)(x)
      ft.manual_seed(5)
      local want = x
      for _, step in ipairs(steps) do want = step(want) end
      H.assert_close(got, want, 0, name)
    end
    check("light", { function(b) return T.random_crop(b, 2) end, function(b) return T.hflip(b, 0.5) end })
    check("strong", {
      function(b) return T.random_crop(b, 2) end, function(b) return T.hflip(b, 0.5) end,
      function(b) return T.random_rotate(b, 10) end, function(b) return T.random_contrast(b, 0.7, 1.3) end,
      function(b) return T.gaussian_noise(b, ft.rand(b:size(1)) * 0.05) end,
    })
    assert_mentions(error_of(T.augmentation, "medium"), "unknown augmentation 'medium'", "none, light or strong")
  end)
end)

describe("ft.transforms.corrupt", function()
  it("lists the four corruptions", function()
    local names = {}
    for i, c in ipairs(T.corruptions) do
      names[i] = c.name
      assert.are.equal("string", type(c.severity))
      assert.are.equal(i, T.corruptions[c.name])
    end
    assert.are.same({ "gaussian_noise", "gaussian_blur", "contrast", "rotation" }, names)
  end)

  it("is deterministic per seed and leaves ft's generator as it was", function()
    local x = images(40, 1, 12, 12)
    ft.manual_seed(99)
    local state = ft.get_rng_state():totable()
    local a, kinds = T.corrupt(x, { seed = 5 })
    assert.are.same(state, ft.get_rng_state():totable())
    local b, kinds_b = T.corrupt(x, { seed = 5 })
    H.assert_equal_ints(b, a, "same seed")
    H.assert_equal_ints(kinds_b, kinds, "same kinds")
    assert(not same_values(T.corrupt(x, { seed = 6 }), a), "seeds 5 and 6 gave the same corruption")
    -- the global stream continues as if corrupt had not run
    local after = ft.rand(3):totable()
    ft.manual_seed(99)
    assert.are.same(ft.rand(3):totable(), after)
  end)

  it("gives each image one corruption at its fixed severity", function()
    local x = images(40, 1, 12, 12, 8)
    local out, kinds = T.corrupt(x, { seed = 2 })
    local k = kinds:totable()
    local count = {}
    for i = 1, 40 do count[k[i]] = (count[k[i]] or 0) + 1 end
    for i = 1, 4 do assert((count[i] or 0) > 0, "corruption " .. i .. " never drawn in 40 images") end
    local blurred, dimmed = T.gaussian_blur(x, 1.2), T.contrast(x, 0.3)
    local rot_plus, rot_minus = T.rotate(x, 30), T.rotate(x, -30)
    for i = 1, 40 do
      local o = out:narrow(1, i, 1)
      local name = T.corruptions[k[i]].name
      if name == "gaussian_blur" then
        H.assert_close(o, blurred:narrow(1, i, 1), 1e-6, "blurred image " .. i)
      elseif name == "contrast" then
        H.assert_close(o, dimmed:narrow(1, i, 1), 1e-6, "dimmed image " .. i)
      elseif name == "rotation" then
        assert(same_values(o, rot_plus:narrow(1, i, 1)) or same_values(o, rot_minus:narrow(1, i, 1)),
          "image " .. i .. " is not rotated by +-30 degrees")
      else
        local d = o - x:narrow(1, i, 1)
        assert(H.max_abs(d) > 0.1, "image " .. i .. " got little noise")
      end
    end
    -- kind = name: every image gets that corruption
    local all, all_kinds = T.corrupt(x, { seed = 2, kind = "contrast" })
    H.assert_close(all, dimmed, 1e-6, "kind = contrast")
    for _, v in ipairs(all_kinds:totable()) do assert.are.equal(3, v) end
  end)

  it("names bad input", function()
    assert_mentions(error_of(T.corrupt, ft.rand(2, 3)), "corrupt: expected a float32 batch [B,C,H,W], got float32 [2,3]")
    assert_mentions(error_of(T.corrupt, ft.rand(1, 1, 4, 4), { kind = "snow" }), "unknown kind 'snow'", "rotation")
    assert_mentions(error_of(T.corrupt, ft.rand(1, 1, 4, 4), { seed = 1.5 }), "seed must be an integer")
    local tiny = ft.rand(1, 1, 3, 3)
    local state = ft.get_rng_state():totable()
    assert_mentions(error_of(T.corrupt, tiny, { kind = "gaussian_blur" }), "kernel radius 4")   -- too large for 3x3
    assert.are.same(state, ft.get_rng_state():totable())
  end)
end)

describe("ft.transforms argument checks", function()
  it("reports what is wrong", function()
    local x = ft.rand(2, 1, 5, 5)
    assert_mentions(error_of(T.random_crop, x, -1), "random_crop: pad must be a non-negative integer, got -1")
    assert_mentions(error_of(T.rotate, x, { 1, 2, 3 }), "degrees must be a number or 2 numbers (one per image), got 3 numbers")
    assert_mentions(error_of(T.gaussian_blur, x, 2), "kernel radius 6 (sigma 2) needs images larger than 5x5")
    assert_mentions(error_of(T.gaussian_noise, x, -0.1), "std must be a number >= 0")
    assert_mentions(error_of(T.hflip, "x"), "hflip: expected a tensor [B,C,H,W] of images, got string")
    assert_mentions(error_of(T.contrast, ft.zeros(2, 5, 5, 1):long(), 0.5), "float32 batch")
  end)
end)
