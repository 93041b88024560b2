-- Batch image transforms for augmentation and for corrupted (out-of-distribution) test sets.
--
-- Every transform takes a batch x [B,C,H,W] of float images in [0,1] and returns a new batch
-- of the same shape, also in [0,1]; x itself is never modified. Random choices come from ft's
-- generator (so ft.manual_seed makes them reproducible), one draw per image. The work is
-- done by whole-batch tensor ops (crops and rotations gather pixels through index tensors,
-- blur is a separable convolution), so transforming every training batch costs little.
--
--   local T = require "ft.transforms"
--   local augment = T.compose{
--     {T.random_crop, 2}, {T.hflip, 0.5}, {T.random_rotate, 10}, {T.random_contrast, 0.7, 1.3},
--   }
--   local loader = ft.data.loader(train, {batch_size = 128, shuffle = true, transform = augment})
--
--   local shifted, kinds = T.corrupt(test.x, {seed = 1})   -- fixed, seeded corruptions
--
-- Arguments called "per image" accept a number (the same for every image), a Lua array of B
-- numbers or a tensor of B numbers.
local ft = require "ft"
local F = ft.nn.functional

local T = {}

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

local function check_images(x, where)
  if not ft.is_tensor(x) then
    error(("ft.transforms.%s: expected a tensor [B,C,H,W] of images, got %s"):format(where, type(x)), 3)
  end
  if x:dim() ~= 4 or x:dtype() ~= "float32" then
    error(("ft.transforms.%s: expected a float32 batch [B,C,H,W], got %s %s"):format(where, x:dtype(),
      shape_str(x:shape())), 3)
  end
  return x:size(1), x:size(2), x:size(3), x:size(4)
end

local function check_number(v, what, where, lo, hi)
  if type(v) ~= "number" or v ~= v or math.abs(v) == math.huge or (lo and v < lo) or (hi and v > hi) then
    local range = lo and hi and (" in [" .. lo .. ", " .. hi .. "]") or lo and (" >= " .. lo) or ""
    error(("ft.transforms.%s: %s must be a number%s, got %s"):format(where, what, range, tostring(v)), 3)
  end
  return v
end

-- A per-image argument as a Lua array of B numbers.
local function per_image_list(v, B, what, where, lo)
  if type(v) == "number" then
    local list = {}
    for i = 1, B do list[i] = v end
    return list
  end
  if ft.is_tensor(v) then v = v:reshape(-1):float():totable() end
  if type(v) ~= "table" or #v ~= B then
    error(("ft.transforms.%s: %s must be a number or %d numbers (one per image), got %s"):format(where, what, B,
      type(v) == "table" and (#v .. " numbers") or tostring(v)), 3)
  end
  for i = 1, B do
    local x = v[i]
    if type(x) ~= "number" or x ~= x or math.abs(x) == math.huge or (lo and x < lo) then
      error(("ft.transforms.%s: %s[%d] must be a finite number%s, got %s"):format(where, what, i,
        lo and (" >= " .. lo) or "", tostring(x)), 3)
    end
  end
  return v
end

-- A per-image argument as a tensor [B,1,1,1] (broadcasts over an image) or a plain number.
local function per_image(v, B, what, where, lo)
  if type(v) == "number" then return v end
  return ft.tensor(per_image_list(v, B, what, where, lo)):reshape(B, 1, 1, 1)
end

-- Row and column of every pixel, row-major, as float tensors [1, H*W] (0-based). Cached.
local grids = {}
local function pixel_grid(H, W)
  local key = H .. "x" .. W
  if not grids[key] then
    local rows = ft.arange(0, H):float():reshape(H, 1):expand(H, W):reshape(1, H * W)
    local cols = ft.arange(0, W):float():reshape(1, W):expand(H, W):reshape(1, H * W)
    grids[key] = { rows = rows:contiguous(), cols = cols:contiguous() }
  end
  return grids[key].rows, grids[key].cols
end

-- Reads images at flat positions: flat [B,C,N], index [B,P] (1-based, float or int64) -> [B,C,P].
local function gather_pixels(flat, index)
  local B, C = flat:size(1), flat:size(2)
  local P = index:size(2)
  return flat:gather(3, index:long():unsqueeze(2):expand(B, C, P))
end

-- Bilinear sampling with zero padding: output pixel p of image b takes the value at the source
-- position (sy[b,p], sx[b,p]) (0-based pixel coordinates, [B, H*W] floats). The images get a
-- one-pixel zero border, and coordinates are clamped into it, so anything read from outside
-- the image is 0. Integer coordinates give exact copies (weights 1 and 0).
local function bilinear(x, sy, sx)
  local B, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  local Wp = W + 2
  local flat = F.pad(x, { 1, 1, 1, 1 }):reshape(B, C, (H + 2) * Wp)
  sx = (sx + 1):clamp(0, W + 1)           -- padded coordinates, >= 0
  sy = (sy + 1):clamp(0, H + 1)
  local x0 = sx:long():float():clamp(0, W) -- floor, keeping x0 + 1 inside the border
  local y0 = sy:long():float():clamp(0, H)
  local wx, wy = sx - x0, sy - y0
  local top_left = y0 * Wp + x0 + 1         -- 1-based flat index
  local function corner(offset, weight)
    return gather_pixels(flat, top_left + offset) * weight:unsqueeze(2)
  end
  local out = corner(0, (1 - wx) * (1 - wy)) + corner(1, wx * (1 - wy))
    + corner(Wp, (1 - wx) * wy) + corner(Wp + 1, wx * wy)
  return out:reshape(B, C, H, W)
end

-- ---- geometry ---------------------------------------------------------------------------------

--- T.random_crop(x, pad): pads each image with `pad` zero pixels on every side and crops a
-- random H x W window (offsets 0..2*pad, drawn per image: rows first, then columns).
-- pad = 0 returns a copy.
function T.random_crop(x, pad)
  local B, C, H, W = check_images(x, "random_crop")
  if math.type(pad) ~= "integer" or pad < 0 then
    error(("ft.transforms.random_crop: pad must be a non-negative integer, got %s"):format(tostring(pad)), 2)
  end
  if pad == 0 then return x:clone() end
  local Hp, Wp = H + 2 * pad, W + 2 * pad
  local dy = ft.randint(0, 2 * pad, { B }):float():reshape(B, 1)
  local dx = ft.randint(0, 2 * pad, { B }):float():reshape(B, 1)
  local rows, cols = pixel_grid(H, W)
  local index = (rows + dy) * Wp + cols + dx + 1
  local flat = F.pad(x, { pad, pad, pad, pad }):reshape(B, C, Hp * Wp)
  return gather_pixels(flat, index):reshape(B, C, H, W)
end

--- T.hflip(x, p = 0.5): mirrors each image left-right with probability p.
function T.hflip(x, p)
  local B, _, _, W = check_images(x, "hflip")
  p = check_number(p or 0.5, "p", "hflip", 0, 1)
  local flipped = x:index_select(4, ft.arange(W, 0, -1))
  local mask = ft.rand(B):lt(p):reshape(B, 1, 1, 1)
  return ft.where(mask, flipped, x)
end

-- cos and sin of an angle in degrees, exact at multiples of 90 (so those rotations are exact).
local function cos_sin(degrees)
  local quarter = degrees / 90
  if quarter == math.floor(quarter) then
    local q = math.tointeger(quarter % 4)
    return ({ 1, 0, -1, 0 })[q + 1], ({ 0, 1, 0, -1 })[q + 1]
  end
  local r = math.rad(degrees)
  return math.cos(r), math.sin(r)
end

--- T.rotate(x, degrees): rotates each image counter-clockwise by `degrees` (per image) about
-- its centre, with bilinear interpolation; corners that come from outside the image are 0.
-- Multiples of 90 degrees are exact permutations of the pixels.
function T.rotate(x, degrees)
  local B, _, H, W = check_images(x, "rotate")
  local angles = per_image_list(degrees, B, "degrees", "rotate")
  local cos, sin = {}, {}
  for i, a in ipairs(angles) do
    check_number(a, "degrees", "rotate")
    cos[i], sin[i] = cos_sin(a)
  end
  cos, sin = ft.tensor(cos):reshape(B, 1), ft.tensor(sin):reshape(B, 1)
  local rows, cols = pixel_grid(H, W)
  local cy, cx = (H - 1) / 2, (W - 1) / 2
  local dy, dx = rows - cy, cols - cx
  -- The output pixel at offset (dx, dy) from the centre reads the source pixel at that offset
  -- turned clockwise (y points down, so a counter-clockwise turn of the picture).
  local sx = dx * cos - dy * sin + cx
  local sy = dx * sin + dy * cos + cy
  return bilinear(x, sy, sx)
end

--- T.random_rotate(x, max_degrees): rotates each image by an angle drawn uniformly from
-- [-max_degrees, max_degrees].
function T.random_rotate(x, max_degrees)
  local B = check_images(x, "random_rotate")
  check_number(max_degrees, "max_degrees", "random_rotate", 0)
  return T.rotate(x, ((ft.rand(B) * 2 - 1) * max_degrees):totable())
end

-- ---- intensity ------------------------------------------------------------------------------

--- T.clamp(x, lo = 0, hi = 1)
function T.clamp(x, lo, hi)
  check_images(x, "clamp")
  check_number(lo or 0, "lo", "clamp")
  check_number(hi or 1, "hi", "clamp", lo or 0)
  return x:clamp(lo or 0, hi or 1)
end

--- T.gaussian_noise(x, std): adds N(0, std^2) noise to every pixel (std per image), then
-- clamps to [0,1].
function T.gaussian_noise(x, std)
  local B = check_images(x, "gaussian_noise")
  if type(std) == "number" then check_number(std, "std", "gaussian_noise", 0) end
  return (x + ft.randn(x:shape()) * per_image(std, B, "std", "gaussian_noise", 0)):clamp(0, 1)
end

--- T.contrast(x, factor): blends each image with its mean intensity (over all its channels
-- and pixels): factor * x + (1 - factor) * mean, clamped to [0,1]. factor (per image) 1 keeps
-- the image, 0 gives a flat grey, > 1 raises the contrast.
function T.contrast(x, factor)
  local B = check_images(x, "contrast")
  if type(factor) == "number" then check_number(factor, "factor", "contrast", 0) end
  local f = per_image(factor, B, "factor", "contrast", 0)
  local mean = x:reshape(B, -1):mean(2, true):reshape(B, 1, 1, 1)
  return (x * f + mean * (1 - f)):clamp(0, 1)
end

--- T.random_contrast(x, lo, hi): contrast with a factor drawn uniformly from [lo, hi] per image.
function T.random_contrast(x, lo, hi)
  local B = check_images(x, "random_contrast")
  check_number(lo, "lo", "random_contrast", 0)
  check_number(hi, "hi", "random_contrast", lo)
  return T.contrast(x, (ft.rand(B) * (hi - lo) + lo):totable())
end

--- T.gaussian_kernel(sigma, radius) -> array of 2 * radius + 1 normalised taps
-- exp(-d^2 / (2 sigma^2)) for d = -radius..radius (sigma > 0).
function T.gaussian_kernel(sigma, radius)
  check_number(sigma, "sigma", "gaussian_kernel", 0)
  if sigma == 0 then error("ft.transforms.gaussian_kernel: sigma must be > 0, got 0", 2) end
  if math.type(radius) ~= "integer" or radius < 0 then
    error(("ft.transforms.gaussian_kernel: radius must be a non-negative integer, got %s"):format(tostring(radius)), 2)
  end
  local taps, sum = {}, 0
  for d = -radius, radius do
    local w = math.exp(-d * d / (2 * sigma * sigma))
    taps[#taps + 1] = w
    sum = sum + w
  end
  for i = 1, #taps do taps[i] = taps[i] / sum end
  return taps
end

-- 1-based indices that pad n positions by r on each side by reflection (torch's "reflect":
-- the edge pixel is not repeated).
local function reflect_index(n, r)
  local idx = {}
  for p = 1 - r, n + r do
    if p < 1 then p = 2 - p elseif p > n then p = 2 * n - p end
    idx[#idx + 1] = p
  end
  return ft.tensor(idx, { dtype = "int64" })
end

--- T.gaussian_blur(x, sigma, radius = ceil(3 * sigma)): blurs with a normalised gaussian kernel
-- of 2 * radius + 1 taps, applied separably (rows, then columns) with reflect padding, as
-- torchvision's gaussian_blur. sigma = 0 returns a copy.
function T.gaussian_blur(x, sigma, radius)
  local B, C, H, W = check_images(x, "gaussian_blur")
  check_number(sigma, "sigma", "gaussian_blur", 0)
  if sigma == 0 then return x:clone() end
  radius = radius or math.max(1, math.ceil(3 * sigma))
  if math.type(radius) ~= "integer" or radius < 1 then
    error(("ft.transforms.gaussian_blur: radius must be a positive integer, got %s"):format(tostring(radius)), 2)
  end
  if radius >= H or radius >= W then
    error(("ft.transforms.gaussian_blur: kernel radius %d (sigma %g) needs images larger than %dx%d"):format(
      radius, sigma, H, W), 2)
  end
  local k = 2 * radius + 1
  local taps = ft.tensor(T.gaussian_kernel(sigma, radius))
  local planes = x:reshape(B * C, 1, H, W)
  planes = F.conv2d(planes:index_select(4, reflect_index(W, radius)), taps:reshape(1, 1, 1, k))
  planes = F.conv2d(planes:index_select(3, reflect_index(H, radius)), taps:reshape(1, 1, k, 1))
  return planes:reshape(B, C, H, W)
end

-- ---- composition ------------------------------------------------------------------------------

--- T.compose{t1, t2, ...} -> function(x, y) return x', y end
-- Each step is a function x -> x or a table {fn, arg, ...} meaning fn(x, arg, ...). The result
-- can be a loader's transform (labels pass through unchanged).
function T.compose(steps)
  if type(steps) ~= "table" then
    error("ft.transforms.compose: expected an array of transforms, got " .. type(steps), 2)
  end
  local fns = {}
  for i, step in ipairs(steps) do
    if type(step) == "function" then
      fns[i] = step
    elseif type(step) == "table" and type(step[1]) == "function" then
      local fn, args = step[1], table.pack(table.unpack(step, 2))
      fns[i] = function(x) return fn(x, table.unpack(args, 1, args.n)) end
    else
      error(("ft.transforms.compose: step %d must be a function or {fn, args...}, got %s"):format(i, type(step)), 2)
    end
  end
  return function(x, y)
    for _, fn in ipairs(fns) do x = fn(x) end
    return x, y
  end
end

--- T.augmentation(name) -> transform for T.compose's uses, by name:
--   "none"    the images unchanged
--   "light"   random crops (2-pixel padding) and flips
--   "strong"  light + rotations up to 10 degrees, contrast 0.7-1.3, gaussian noise of std up
--             to 0.05 (per image): what the shipped vision models were pretrained with
function T.augmentation(name)
  if name == "none" then return function(x, y) return x, y end end
  local steps = { { T.random_crop, 2 }, { T.hflip, 0.5 } }
  if name == "strong" then
    steps[3] = { T.random_rotate, 10 }
    steps[4] = { T.random_contrast, 0.7, 1.3 }
    steps[5] = function(x) return T.gaussian_noise(x, ft.rand(x:size(1)) * 0.05) end
  elseif name ~= "light" then
    error(("ft.transforms.augmentation: unknown augmentation '%s' (none, light or strong)"):format(tostring(name)), 2)
  end
  return T.compose(steps)
end

-- ---- fixed corruptions ------------------------------------------------------------------------

--- T.corruptions: the corruptions of T.corrupt, each with a fixed severity.
--   1 gaussian_noise  additive N(0, 0.2^2) pixel noise, clamped to [0,1]
--   2 gaussian_blur   gaussian blur, sigma 1.2 (9 taps per direction: radius ceil(3 sigma) = 4)
--   3 contrast        contrast reduced to 0.3 (0.3 x + 0.7 mean)
--   4 rotation        rotation by 30 degrees, clockwise or counter-clockwise (drawn per image)
T.corruptions = {
  { name = "gaussian_noise", severity = "std 0.2",
    apply = function(x) return T.gaussian_noise(x, 0.2) end },
  { name = "gaussian_blur", severity = "sigma 1.2",
    apply = function(x) return T.gaussian_blur(x, 1.2) end },
  { name = "contrast", severity = "factor 0.3",
    apply = function(x) return T.contrast(x, 0.3) end },
  { name = "rotation", severity = "+-30 degrees",
    apply = function(x)
      local sign = ft.randint(0, 1, { x:size(1) }):float() * 2 - 1
      return T.rotate(x, (sign * 30):totable())
    end },
}
for i, c in ipairs(T.corruptions) do T.corruptions[c.name] = i end

--- T.corrupt(x, {seed = 0, kind = nil}) -> corrupted copy [B,C,H,W], kinds (int64 [B])
-- Each image gets one corruption of T.corruptions, drawn uniformly (kinds[i] is its index), or
-- the one named by kind for every image. The result depends only on x and the seed (and, as
-- every ft random draw, the thread count); ft's global generator is left as it was.
function T.corrupt(x, opts)
  local B = check_images(x, "corrupt")
  opts = ft.check_options("ft.transforms.corrupt", opts, {"seed", "kind"})
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then
    error(("ft.transforms.corrupt: seed must be an integer, got %s"):format(tostring(seed)), 2)
  end
  local only = opts.kind
  if only ~= nil and not T.corruptions[only] then
    local names = {}
    for i, c in ipairs(T.corruptions) do names[i] = c.name end
    error(("ft.transforms.corrupt: unknown kind '%s' (one of %s)"):format(tostring(only),
      table.concat(names, ", ")), 2)
  end
  local saved = ft.get_rng_state()
  ft.manual_seed(seed)
  local ok, out, kinds = pcall(function()
    local kinds = only and ft.full({ B }, T.corruptions[only], { dtype = "int64" })
      or ft.randint(1, #T.corruptions, { B })
    local out = x:clone()
    for i, c in ipairs(T.corruptions) do
      if not only or only == c.name then
        out = ft.where(kinds:eq(i):reshape(B, 1, 1, 1), c.apply(x), out)
      end
    end
    return out, kinds
  end)
  ft.set_rng_state(saved)
  if not ok then error(out, 2) end
  return out, kinds
end

return T
