-- The raster side of ft.plot: a canvas holding a planar float RGB buffer, laid out as the
-- [3, H, W] tensor ft.image.save takes, with anti-aliased lines, markers and bitmap text.
-- Pixel coordinates are 1-based (column x, row y) and an integral coordinate is the centre
-- of that pixel.
local font = require "ft.plot.font"

local floor, ceil, abs, sqrt, max, min = math.floor, math.ceil, math.abs, math.sqrt, math.max, math.min

local canvas = {}

local Canvas = {}
Canvas.__index = Canvas

--- canvas.new(w, h) -> a w x h canvas, all white; clip = {x0, y0, x1, y1} limits drawing
-- (inclusive).
function canvas.new(w, h)
  local px = {}
  for i = 1, 3 * w * h do px[i] = 1.0 end
  return setmetatable({w = w, h = h, plane = w * h, px = px, clip = {1, 1, w, h}}, Canvas)
end

-- Covers pixel (x, y) (integers) with colour c at coverage a in [0, 1].
function Canvas:blend(x, y, c, a)
  local clip = self.clip
  if a <= 0 or x < clip[1] or x > clip[3] or y < clip[2] or y > clip[4] then return end
  if a > 1 then a = 1 end
  local px, plane = self.px, self.plane
  local i = (y - 1) * self.w + x
  px[i] = px[i] + (c[1] - px[i]) * a
  i = i + plane
  px[i] = px[i] + (c[2] - px[i]) * a
  i = i + plane
  px[i] = px[i] + (c[3] - px[i]) * a
end

function Canvas:fill_rect(x0, y0, x1, y1, c)
  local clip = self.clip
  x0, x1 = max(floor(x0), clip[1]), min(floor(x1), clip[3])
  y0, y1 = max(floor(y0), clip[2]), min(floor(y1), clip[4])
  local px, w, plane = self.px, self.w, self.plane
  for y = y0, y1 do
    local row = (y - 1) * w
    for x = x0, x1 do
      local i = row + x
      px[i], px[i + plane], px[i + 2 * plane] = c[1], c[2], c[3]
    end
  end
end

-- An anti-aliased line of the given width with round caps: each pixel near the segment is
-- covered by how far its centre lies inside the capsule (distance <= width / 2). Pixels are
-- visited along the major axis, a few either side of the centre line.
function Canvas:segment(ax, ay, bx, by, c, width)
  local r = width / 2
  local steep = abs(by - ay) > abs(bx - ax)
  if steep then ax, ay, bx, by = ay, ax, by, bx end
  if ax > bx then ax, bx, ay, by = bx, ax, by, ay end
  local dx, dy = bx - ax, by - ay
  local len2 = dx * dx + dy * dy
  local half = len2 > 0 and r * sqrt(len2) / dx or r   -- half thickness across the minor axis
  local clip = self.clip
  local umin, umax, vmin, vmax = clip[1], clip[3], clip[2], clip[4]
  if steep then umin, umax, vmin, vmax = clip[2], clip[4], clip[1], clip[3] end
  for u = max(ceil(ax - r - 1), umin), min(floor(bx + r + 1), umax) do
    local t = dx > 0 and min(max((u - ax) / dx, 0), 1) or 0
    local vc = ay + t * dy
    for v = max(ceil(vc - half - 1), vmin), min(floor(vc + half + 1), vmax) do
      local s = len2 > 0 and min(max(((u - ax) * dx + (v - ay) * dy) / len2, 0), 1) or 0
      local eu, ev = u - (ax + s * dx), v - (ay + s * dy)
      local a = r + 0.5 - sqrt(eu * eu + ev * ev)
      if a > 0 then
        if steep then self:blend(v, u, c, a) else self:blend(u, v, c, a) end
      end
    end
  end
end

-- Marker shapes of radius r around the origin (y grows downwards).
local SHAPES = {
  circle = function(x, y, r) return x * x + y * y <= r * r end,
  square = function(x, y, r) r = r * 0.85 return abs(x) <= r and abs(y) <= r end,
  triangle = function(x, y, r) return y <= 0.7 * r and abs(x) <= (y + r) * 0.65 end,
  diamond = function(x, y, r) return abs(x) + abs(y) <= r * 1.25 end,
}
canvas.SHAPES = {"circle", "square", "triangle", "diamond"}
local SUBSAMPLES = {-0.375, -0.125, 0.125, 0.375}

-- A filled marker, anti-aliased by 4 x 4 supersampling.
function Canvas:marker(cx, cy, shape, r, c)
  local inside = SHAPES[shape]
  for y = floor(cy - r - 1), ceil(cy + r + 1) do
    for x = floor(cx - r - 1), ceil(cx + r + 1) do
      local hits = 0
      for _, oy in ipairs(SUBSAMPLES) do
        for _, ox in ipairs(SUBSAMPLES) do
          if inside(x + ox - cx, y + oy - cy, r) then hits = hits + 1 end
        end
      end
      if hits > 0 then self:blend(x, y, c, hits / 16) end
    end
  end
end

-- ---- text (ft.plot_font) ------------------------------------------------------------------

local GLYPHS = {}     -- code --> array of 9 row bitmasks
for i, hex in ipairs(font.glyphs) do
  local rows = {}
  for r = 1, font.height do rows[r] = tonumber(hex:sub(2 * r - 1, 2 * r), 16) end
  GLYPHS[font.first + i - 1] = rows
end
local ADVANCE = font.width + 1
canvas.ADVANCE = ADVANCE

--- canvas.printable(s) -> s as the font can draw it: each UTF-8 sequence or control
-- character becomes '?'.
function canvas.printable(s)
  return (tostring(s):gsub("[\xC0-\xF7][\x80-\xBF]*", "?"):gsub("[%z\1-\31\127-\255]", "?"))
end

--- canvas.text_width(s, scale) -> the width in pixels of s drawn at scale.
function canvas.text_width(s, scale)
  return #s > 0 and (#s * ADVANCE - 1) * scale or 0
end

--- canvas.text_height(scale) -> the height in pixels of a line of text at scale.
function canvas.text_height(scale) return font.height * scale end

-- Draws s with its top-left corner at (x, y). rotated = true turns it a quarter to the left
-- (reading upwards, as a y axis label): then (x, y) is the bottom-left corner.
function Canvas:text(s, x, y, c, scale, rotated)
  x, y = floor(x + 0.5), floor(y + 0.5)
  for k = 1, #s do
    local rows = GLYPHS[s:byte(k)] or GLYPHS[63]   -- '?'
    for r = 1, font.height do
      local bits = rows[r]
      if bits ~= 0 then
        for col = 1, font.width do
          if bits & (1 << (font.width - col)) ~= 0 then
            local gx, gy = ((k - 1) * ADVANCE + col - 1) * scale, (r - 1) * scale
            if rotated then
              self:fill_rect(x + gy, y - gx - scale + 1, x + gy + scale - 1, y - gx, c)
            else
              self:fill_rect(x + gx, y + gy, x + gx + scale - 1, y + gy + scale - 1, c)
            end
          end
        end
      end
    end
  end
end

return canvas
