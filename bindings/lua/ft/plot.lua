-- ft.plot: PNG charts of results: line plots (learning curves, the WiSE-FT accuracy curve),
-- scatter plots (accuracy vs trainable parameters) and grouped bar charts (method
-- comparisons). Everything is painted in Lua into a float RGB buffer (ft.plot_canvas, with
-- the bitmap font ft.plot_font) and written with ft.image.save: no external plotting tools.
--
--   local plot = ft.plot
--   plot.line{path = "wise.png", title = "WiSE-FT", xlabel = "alpha", ylabel = "accuracy (%)",
--             series = {{name = "ID", x = alphas, y = id_acc}, {name = "OOD", x = alphas, y = ood_acc}}}
--   plot.scatter{path = "params.png", xscale = "log", xlabel = "trainable parameters",
--                series = {{name = "ViT-S", x = params, y = acc, labels = {"full", "lora", "head"}}}}
--   plot.bar{path = "methods.png", categories = {"head", "lora", "full"},
--            series = {{name = "ID", values = {81.2, 88.0, 89.1}}, {name = "OOD", values = {...}}}}
--
-- Options shared by the three: path (optional: without it nothing is written), title,
-- xlabel, ylabel, width (640), height (420), ylim = {lo, hi}, legend ("best", "upper right",
-- "upper left", "lower left", "lower right", "outside" or false), grid (true), font_scale
-- (1, or 2 from 900 x 600 up). line and scatter also take xlim, xscale / yscale ("linear" or
-- "log") and marker_size; line takes linewidth and markers (default: on when no series has
-- more than 30 points). A series is {name =, x =, y =, color =, labels =, dash =} (bar:
-- values = instead of x and y); x defaults to 1..#y; values may be Lua arrays or 1-D tensors;
-- color is "#rrggbb" or {r, g, b} in [0, 1] (default: a 10-colour palette in series order);
-- labels (scatter; also accepted as label) names each point; dash (line) draws the series
-- dashed: true, or {on, off} in pixels along the line (default {4, 6} times the font scale;
-- each dash's round caps add the line width to it, so a dash looks linewidth longer and a gap
-- linewidth shorter), the pattern running on across the points and on the legend swatch.
-- Non-finite values, and values <= 0 on a log axis, are skipped, leaving a gap in the line.
-- Without xlim / ylim the axes span the data plus 5% on each side (bars always include 0).
--
-- Each call returns a layout table describing the drawn chart:
--   image          the chart as a [3, height, width] float tensor in [0, 1]
--   plot           {left =, top =, right =, bottom =}: the frame of the data area
--   xlim, ylim     {lo, hi}: the data values at the frame's edges
--   xticks, yticks the tick values (bar charts: xticks = 1..#categories)
--   px(x), py(y)   data to pixel coordinates
--   colors         the {r, g, b} of each series
--   legend         nil, or {left =, top =, right =, bottom =, entries = {{name =,
--                  swatch = {x =, y =}, text = {left =, top =, right =, bottom =}}, ...}}
--   bars           (bar charts) bars[series][category] = {left =, top =, right =, bottom =}
-- Pixel coordinates are 1-based like the image tensor's columns and rows, and an integral
-- coordinate is the centre of that pixel. The mapping is linear in the data value, or in
-- log10 of it on a log axis: px(xlim[1]) = plot.left, px(xlim[2]) = plot.right,
-- py(ylim[1]) = plot.bottom, py(ylim[2]) = plot.top.
local ft = require "ft"
local canvas = require "ft.plot.canvas"

local plot = {}

local floor, ceil, abs, sqrt, max, min = math.floor, math.ceil, math.abs, math.sqrt, math.max, math.min

local function log10(v) return math.log(v, 10) end

local function finite(v)
  return v == v and v ~= math.huge and v ~= -math.huge
end

local function fail(kind, fmt, ...)
  error(("ft.plot.%s: " .. fmt):format(kind, ...), 0)
end

-- ---- ticks --------------------------------------------------------------------------------

-- The tick step for a span: the smallest m * 10^e with m in {1, 2, 5} that cuts it into at
-- most n intervals, returned as (m, e) so that tick values can be computed exactly.
local function nice_step(span, n)
  local raw = span / n
  local e = floor(log10(raw))
  local f = raw / 10.0 ^ e
  if f < 1 then e, f = e - 1, f * 10 end        -- log10 rounding just below a power of ten
  if f >= 10 then e, f = e + 1, f / 10 end
  for _, m in ipairs{1, 2, 5} do
    if f <= m * (1 + 1e-9) then return m, e end
  end
  return 1, e + 1
end

-- k * m * 10^e rounded once, so the third tick of step 0.1 is 0.3, not 0.30000000000000004.
-- Whole ticks are Lua integers when they fit.
local function multiple(k, m, e)
  if e >= 0 then
    local v = k * m * 10.0 ^ e
    return math.tointeger(v) or v
  end
  return (k * m) / 10.0 ^ (-e)
end

local function linear_ticks(lo, hi, n)
  local m, e = nice_step(hi - lo, n)
  local step = multiple(1, m, e)
  local out = {}
  for k = ceil(lo / step - 1e-9), floor(hi / step + 1e-9) do
    out[#out + 1] = multiple(k, m, e)
  end
  return out, e
end

-- Powers of ten (every stride-th one when there are many); within less than two decades,
-- 1-2-5 multiples; within a very short range, linear ticks.
local function log_ticks(lo, hi, n)
  local e0, e1 = ceil(log10(lo) - 1e-9), floor(log10(hi) + 1e-9)
  if e1 > e0 then
    local stride = max(1, ceil((e1 - e0) / n))
    local out = {}
    for e = e0, e1 do
      if e % stride == 0 then out[#out + 1] = multiple(1, 1, e) end
    end
    if #out < 2 then
      out = {}
      for e = e0, e1, stride do out[#out + 1] = multiple(1, 1, e) end
    end
    return out
  end
  local out = {}
  for e = e0 - 1, e1 do
    for _, m in ipairs{1, 2, 5} do
      local v = multiple(1, m, e)
      if v >= lo * (1 - 1e-9) and v <= hi * (1 + 1e-9) then out[#out + 1] = v end
    end
  end
  if #out >= 2 and #out <= n + 1 then return out end
  return (linear_ticks(lo, hi, n))
end

--- plot.ticks(lo, hi, n = 5, scale = "linear") --> array of tick values in [lo, hi]
-- Linear: the multiples in [lo, hi] of the smallest step 1, 2 or 5 times a power of ten that
-- gives at most n intervals. Log: powers of ten (see log_ticks). lo == hi gives {lo}.
function plot.ticks(lo, hi, n, scale)
  n = n or 5
  if type(lo) ~= "number" or type(hi) ~= "number" or not finite(lo) or not finite(hi) or lo > hi then
    fail("ticks", "expected finite numbers lo <= hi, got %s and %s", tostring(lo), tostring(hi))
  end
  if math.type(n) ~= "integer" or n < 1 then fail("ticks", "n must be an integer >= 1, got %s", tostring(n)) end
  if scale ~= nil and scale ~= "linear" and scale ~= "log" then
    fail("ticks", "scale must be 'linear' or 'log', got '%s'", tostring(scale))
  end
  if scale == "log" and lo <= 0 then fail("ticks", "a log scale needs lo > 0, got %s", tostring(lo)) end
  if lo == hi then return {lo} end
  if scale == "log" then return log_ticks(lo, hi, n) end
  return (linear_ticks(lo, hi, n))
end

-- "2e+06" --> "2e6", "1e-05" --> "1e-5"
local function compact_exponent(s)
  return (s:gsub("e%+?(%-?)0*(%d)", "e%1%2"))
end

-- Labels with as many decimals as the step needs; large or tiny values in short
-- scientific notation.
local function linear_labels(ticks, step_exp)
  local big = 0
  for _, t in ipairs(ticks) do big = max(big, abs(t)) end
  local out = {}
  for i, t in ipairs(ticks) do
    if big >= 1e5 or (big > 0 and big < 1e-3) then
      local digits = max(1, floor(log10(big)) - step_exp + 1)
      out[i] = compact_exponent(("%." .. digits .. "g"):format(t))
    else
      out[i] = ("%." .. max(0, -step_exp) .. "f"):format(t)
    end
  end
  return out
end

local function axis_ticks(lim, scale, n)
  local lo, hi = lim[1], lim[2]
  if scale == "log" then
    local ticks = log_ticks(lo, hi, n)
    if ticks[#ticks] >= 1e4 or ticks[1] < 1e-3 then   -- all as 2e-4 ... 1e6
      local labels = {}
      for i, t in ipairs(ticks) do labels[i] = compact_exponent(("%.0e"):format(t)) end
      return ticks, labels
    end
    local labels = {}
    for i, t in ipairs(ticks) do labels[i] = ("%g"):format(t) end
    return ticks, labels
  end
  local ticks, e = linear_ticks(lo, hi, n)
  return ticks, linear_labels(ticks, e)
end

-- ---- options and series -------------------------------------------------------------------

local PALETTE = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}
local INK = {0.13, 0.13, 0.13}
local GRID = {0.9, 0.9, 0.9}
local LEGEND_EDGE = {0.7, 0.7, 0.7}
local WHITE = {1, 1, 1}

local COMMON_OPTIONS = {"path", "title", "xlabel", "ylabel", "width", "height", "series", "legend",
                        "font_scale", "ylim", "grid"}
local KIND_OPTIONS = {
  line = {"xlim", "xscale", "yscale", "markers", "linewidth", "marker_size"},
  scatter = {"xlim", "xscale", "yscale", "marker_size"},
  bar = {"categories"},
}
local SERIES_FIELDS = {
  line = {"name", "x", "y", "color", "dash"},
  scatter = {"name", "x", "y", "color", "labels", "label"},
  bar = {"name", "values", "color"},
}
local LEGEND_PLACES = {best = true, ["upper right"] = true, ["upper left"] = true,
                       ["lower left"] = true, ["lower right"] = true, outside = true}

-- Unknown keys fail through the shared checker, naming the chart kind (and the series).
local function check_keys(kind, tbl, allowed, what)
  ft.check_options("ft.plot." .. kind .. (what and (" " .. what) or ""), tbl, allowed)
end

local function parse_color(kind, name, c)
  if type(c) == "string" then
    local r, g, b = c:match("^#(%x%x)(%x%x)(%x%x)$")
    if r then return {tonumber(r, 16) / 255, tonumber(g, 16) / 255, tonumber(b, 16) / 255} end
  elseif type(c) == "table" and #c == 3 then
    local ok = true
    for i = 1, 3 do ok = ok and type(c[i]) == "number" and c[i] >= 0 and c[i] <= 1 end
    if ok then return {c[1], c[2], c[3]} end
  end
  fail(kind, "series '%s': color must be '#rrggbb' or {r, g, b} in [0, 1], got %s", name, tostring(c))
end

-- A Lua array of numbers from an array or a 1-D tensor.
local function numbers(kind, name, field, v)
  if type(v) == "userdata" and v.totable then
    if v:dim() ~= 1 then fail(kind, "series '%s': %s must be a 1-D tensor, got %d dims", name, field, v:dim()) end
    v = v:totable()
  end
  if type(v) ~= "table" then
    fail(kind, "series '%s': %s must be an array of numbers, got %s", name, field, type(v))
  end
  for i = 1, #v do
    if type(v[i]) ~= "number" then
      fail(kind, "series '%s': %s[%d] is a %s, expected a number", name, field, i, type(v[i]))
    end
  end
  return v
end

local function check_scale(kind, key, v)
  if v == nil then return "linear" end
  if v ~= "linear" and v ~= "log" then fail(kind, "%s must be 'linear' or 'log', got '%s'", key, tostring(v)) end
  return v
end

local function check_size(kind, key, v)
  if v ~= nil and (math.type(v) ~= "integer" or v < 100 or v > 4096) then
    fail(kind, "%s must be an integer number of pixels in 100..4096, got %s", key, tostring(v))
  end
end

local function check_positive(kind, key, v, default)
  if v == nil then return default end
  if type(v) ~= "number" or not (v > 0 and v < 100) then fail(kind, "%s must be a positive number, got %s", key, tostring(v)) end
  return v
end

local function check_lim(kind, key, lim, scale)
  if lim == nil then return nil end
  if type(lim) ~= "table" or type(lim[1]) ~= "number" or type(lim[2]) ~= "number"
     or not finite(lim[1]) or not finite(lim[2]) or lim[1] >= lim[2] then
    fail(kind, "%s must be {lo, hi} with finite lo < hi", key)
  end
  if scale == "log" and lim[1] <= 0 then fail(kind, "%s: a log axis needs lo > 0, got %s", key, tostring(lim[1])) end
  return {lim[1], lim[2]}
end

local function check_options(kind, opts)
  if type(opts) ~= "table" then fail(kind, "expected a table of options, got %s", type(opts)) end
  local allowed = {}
  for _, list in ipairs{COMMON_OPTIONS, KIND_OPTIONS[kind]} do
    for _, k in ipairs(list) do allowed[#allowed + 1] = k end
  end
  check_keys(kind, opts, allowed)
  check_size(kind, "width", opts.width)
  check_size(kind, "height", opts.height)
  if opts.grid ~= nil and type(opts.grid) ~= "boolean" then
    fail(kind, "grid must be true or false, got %s", tostring(opts.grid))
  end
  if opts.markers ~= nil and type(opts.markers) ~= "boolean" then
    fail(kind, "markers must be true or false, got %s", tostring(opts.markers))
  end
  for _, key in ipairs{"path", "title", "xlabel", "ylabel"} do
    local v = opts[key]
    if v ~= nil and type(v) ~= "string" and type(v) ~= "number" then
      fail(kind, "%s must be a string, got %s", key, type(v))
    end
  end
  if opts.legend ~= nil and opts.legend ~= false and not LEGEND_PLACES[opts.legend] then
    fail(kind, "legend must be false or one of 'best', 'upper right', 'upper left', 'lower left', "
         .. "'lower right', 'outside', got '%s'", tostring(opts.legend))
  end
  if opts.font_scale ~= nil and not (math.type(opts.font_scale) == "integer" and opts.font_scale >= 1
                                     and opts.font_scale <= 4) then
    fail(kind, "font_scale must be an integer in 1..4, got %s", tostring(opts.font_scale))
  end
  local series = opts.series
  if type(series) ~= "table" or #series == 0 then
    fail(kind, "series must be a non-empty array of series tables")
  end
  for i, s in ipairs(series) do
    if type(s) ~= "table" then fail(kind, "series %d must be a table, got %s", i, type(s)) end
    check_keys(kind, s, SERIES_FIELDS[kind], ("series %d"):format(i))
    if s.name ~= nil and type(s.name) ~= "string" and type(s.name) ~= "number" then
      fail(kind, "series %d: name must be a string, got %s", i, type(s.name))
    end
  end
end

-- Checked copies of the series: name (nil if unnamed), label (for messages), x, y, color.
local function xy_series(kind, opts)
  local out = {}
  for i, s in ipairs(opts.series) do
    local label = s.name and tostring(s.name) or ("series " .. i)
    if s.y == nil then fail(kind, "series '%s' is empty (no y values)", label) end
    local y = numbers(kind, label, "y", s.y)
    if #y == 0 then fail(kind, "series '%s' is empty (no y values)", label) end
    local x
    if s.x == nil then
      x = {}
      for k = 1, #y do x[k] = k end
    else
      x = numbers(kind, label, "x", s.x)
    end
    if #x ~= #y then fail(kind, "series '%s' has %d x values but %d y values", label, #x, #y) end
    local labels = s.labels or s.label
    if labels ~= nil then
      if type(labels) ~= "table" or #labels ~= #x then
        fail(kind, "series '%s': labels must be an array of %d strings (one per point)", label, #x)
      end
    end
    local dash = s.dash
    if dash ~= nil and dash ~= false and dash ~= true then
      if type(dash) ~= "table" or #dash ~= 2 or type(dash[1]) ~= "number" or type(dash[2]) ~= "number"
         or not (dash[1] > 0 and dash[1] < 1000 and dash[2] > 0 and dash[2] < 1000) then
        fail(kind, "series '%s': dash must be true, false or {on, off} with lengths in (0, 1000) pixels", label)
      end
    end
    out[i] = {name = s.name and canvas.printable(s.name), label = label, x = x, y = y, labels = labels,
              color = parse_color(kind, label, s.color or PALETTE[(i - 1) % #PALETTE + 1]),
              shape = canvas.SHAPES[(i - 1) % #canvas.SHAPES + 1], dash = dash or nil}
  end
  return out
end

local function usable(v, scale)
  return finite(v) and (scale ~= "log" or v > 0)
end

-- The axis range: the user's limits, or the data's range plus 5% each side (in log10 space
-- on a log axis). include_zero keeps 0 in range without padding past it (bar charts).
local function auto_limits(kind, axis, values, scale, include_zero)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(values) do
    if usable(v, scale) then lo, hi = min(lo, v), max(hi, v) end
  end
  if include_zero then lo, hi = min(lo, 0), max(hi, 0) end
  if lo > hi then
    fail(kind, "no finite %s values to plot%s", axis, scale == "log" and " (a log axis needs values > 0)" or "")
  end
  local T = scale == "log" and log10 or function(v) return v end
  local U = scale == "log" and function(v) return 10.0 ^ v end or function(v) return v end
  local tlo, thi = T(lo), T(hi)
  if tlo == thi then
    local d = (scale ~= "log" and tlo ~= 0) and abs(tlo) * 0.05 or 0.5
    tlo, thi = tlo - d, thi + d
  end
  local margin = (thi - tlo) * 0.05
  if not (include_zero and lo == 0) then tlo = tlo - margin end
  if not (include_zero and hi == 0) then thi = thi + margin end
  return {U(tlo), U(thi)}
end

-- ---- layout -----------------------------------------------------------------------------

-- Text scale: 1, or 2 for big charts.
local function chart_font_scale(opts)
  local W, H = opts.width or 640, opts.height or 420
  return opts.font_scale or ((W >= 900 and H >= 600) and 2 or 1)
end

-- A new chart: canvas, text sizes, margins, the frame of the data area, ticks and the
-- mappings. axes = {x = {lim =, scale =, categories = optional labels}, y = {lim =, scale =}}.
local function new_chart(kind, opts, axes, legend_width)
  local W, H = opts.width or 640, opts.height or 420
  local s = chart_font_scale(opts)
  local chart = {kind = kind, opts = opts, canvas = canvas.new(W, H), W = W, H = H, s = s,
                 pad = 8 * s, tick_len = 4 * s, gap = 3 * s, line_h = canvas.text_height(s)}
  chart.title = opts.title and canvas.printable(opts.title)
  chart.xlabel = opts.xlabel and canvas.printable(opts.xlabel)
  chart.ylabel = opts.ylabel and canvas.printable(opts.ylabel)
  local pad, gap, line_h = chart.pad, chart.gap, chart.line_h

  local top = 1 + pad + (chart.title and canvas.text_height(s + 1) + pad or 0)
  local bottom = H - pad - (chart.xlabel and line_h + gap or 0) - line_h - gap - chart.tick_len
  if bottom - top < 40 then fail(kind, "height %d is too small for the chart's text", H) end

  local y = axes.y
  y.ticks, y.labels = axis_ticks(y.lim, y.scale, max(2, floor((bottom - top) / (45 * s))))
  local label_w = 0
  for _, l in ipairs(y.labels) do label_w = max(label_w, canvas.text_width(l, s)) end
  local left = 1 + pad + (chart.ylabel and line_h + gap or 0) + label_w + gap + chart.tick_len
  local right = W - 2 * pad - (legend_width and legend_width + pad or 0)
  if right - left < 40 then fail(kind, "width %d is too small for the chart's text", W) end

  local x = axes.x
  if x.categories then
    x.ticks, x.labels = {}, {}
    local slot_chars = max(1, floor(((right - left) / #x.categories - 2 * s) / (canvas.ADVANCE * s)))
    for i, c in ipairs(x.categories) do x.ticks[i], x.labels[i] = i, c:sub(1, slot_chars) end
  else
    -- as many ticks as fit with their labels a few characters apart
    for n = max(2, floor((right - left) / (70 * s))), 1, -1 do
      x.ticks, x.labels = axis_ticks(x.lim, x.scale, n)
      local widest = 0
      for _, l in ipairs(x.labels) do widest = max(widest, canvas.text_width(l, s)) end
      if #x.ticks < 2 or (widest + 3 * canvas.ADVANCE * s) * (#x.ticks - 1) <= (right - left) * 0.9 then break end
    end
  end

  local function mapping(lim, scale, from, to)
    local T = scale == "log" and log10 or function(v) return v end
    local t0, t1 = T(lim[1]), T(lim[2])
    return function(v) return from + (T(v) - t0) / (t1 - t0) * (to - from) end
  end
  chart.left, chart.right, chart.top, chart.bottom = left, right, top, bottom
  chart.px = mapping(x.lim, x.scale, left, right)
  chart.py = mapping(y.lim, y.scale, bottom, top)
  chart.axes = axes
  return chart
end

local function draw_grid(chart)
  if chart.opts.grid == false then return end
  local c = chart.canvas
  for _, t in ipairs(chart.axes.y.ticks) do
    local row = floor(chart.py(t) + 0.5)
    if row > chart.top and row < chart.bottom then c:fill_rect(chart.left, row, chart.right, row, GRID) end
  end
  if chart.axes.x.categories then return end
  for _, t in ipairs(chart.axes.x.ticks) do
    local col = floor(chart.px(t) + 0.5)
    if col > chart.left and col < chart.right then c:fill_rect(col, chart.top, col, chart.bottom, GRID) end
  end
end

-- Frame, ticks, tick labels, axis labels and title.
local function draw_axes(chart)
  local c, s, W = chart.canvas, chart.s, chart.W
  local left, right, top, bottom = chart.left, chart.right, chart.top, chart.bottom
  local tick, gap, line_h = chart.tick_len, chart.gap, chart.line_h
  c:fill_rect(left, top, right, top, INK)
  c:fill_rect(left, bottom, right, bottom, INK)
  c:fill_rect(left, top, left, bottom, INK)
  c:fill_rect(right, top, right, bottom, INK)
  for i, t in ipairs(chart.axes.y.ticks) do
    local row = floor(chart.py(t) + 0.5)
    c:fill_rect(left - tick, row, left - 1, row, INK)
    local l = chart.axes.y.labels[i]   -- centred on the 7 rows of a digit
    c:text(l, left - tick - gap - canvas.text_width(l, s), row - floor(7 * s / 2), INK, s)
  end
  local label_top = bottom + tick + gap + 1
  for i, t in ipairs(chart.axes.x.ticks) do
    local col = floor(chart.px(t) + 0.5)
    c:fill_rect(col, bottom + 1, col, bottom + tick, INK)
    local l = chart.axes.x.labels[i]
    local w = canvas.text_width(l, s)
    local x = min(max(col - floor(w / 2), 1), W - w)     -- keep edge labels inside the image
    c:text(l, x, label_top, INK, s)
  end
  if chart.xlabel then
    local w = canvas.text_width(chart.xlabel, s)
    c:text(chart.xlabel, floor((left + right - w) / 2), label_top + line_h + gap, INK, s)
  end
  if chart.ylabel then
    local w = canvas.text_width(chart.ylabel, s)
    c:text(chart.ylabel, 1 + chart.pad, floor((top + bottom + w) / 2), INK, s, true)
  end
  if chart.title then
    local ts = s + 1
    local w = canvas.text_width(chart.title, ts)
    c:text(chart.title, min(max(floor((left + right - w) / 2), 1), max(1, W - w)), 1 + chart.pad, INK, ts)
  end
end

-- ---- legend ---------------------------------------------------------------------------------

local function legend_size(chart_s, entries, swatch_w)
  local s = chart_s
  local text_w = 0
  for _, e in ipairs(entries) do text_w = max(text_w, canvas.text_width(e.name, s)) end
  local row_h = canvas.text_height(s) + 3 * s
  local inner = 5 * s
  return 2 * inner + swatch_w + 4 * s + text_w, 2 * inner + #entries * row_h - 3 * s, row_h, inner
end

-- Places and draws the legend. samples = flat {x1, y1, x2, y2, ...} pixel positions of the
-- data, used by "best" to pick the inside corner covering the fewest of them.
-- draw_swatch(entry, x, y) draws an entry's sample centred at (x, y).
local function draw_legend(chart, entries, swatch_w, samples, draw_swatch)
  local place = chart.opts.legend
  if place == nil then place = "best" end
  if place == false or #entries == 0 then return nil end
  local w, h, row_h, inner = legend_size(chart.s, entries, swatch_w)
  local inset = 6 * chart.s
  local corners = {
    ["upper right"] = {chart.right - inset - w, chart.top + inset},
    ["upper left"] = {chart.left + inset, chart.top + inset},
    ["lower left"] = {chart.left + inset, chart.bottom - inset - h},
    ["lower right"] = {chart.right - inset - w, chart.bottom - inset - h},
    outside = {chart.right + chart.pad, chart.top},
  }
  if place == "best" then
    local best_count
    for _, name in ipairs{"upper right", "upper left", "lower left", "lower right"} do
      local x0, y0 = corners[name][1], corners[name][2]
      local count = 0
      for i = 1, #samples, 2 do
        local sx, sy = samples[i], samples[i + 1]
        if sx >= x0 - 2 and sx <= x0 + w + 2 and sy >= y0 - 2 and sy <= y0 + h + 2 then count = count + 1 end
      end
      if not best_count or count < best_count then best_count, place = count, name end
    end
  end
  local x0, y0 = floor(corners[place][1]), floor(corners[place][2])
  local c, s = chart.canvas, chart.s
  c:fill_rect(x0, y0, x0 + w - 1, y0 + h - 1, WHITE)
  c:fill_rect(x0, y0, x0 + w - 1, y0, LEGEND_EDGE)
  c:fill_rect(x0, y0 + h - 1, x0 + w - 1, y0 + h - 1, LEGEND_EDGE)
  c:fill_rect(x0, y0, x0, y0 + h - 1, LEGEND_EDGE)
  c:fill_rect(x0 + w - 1, y0, x0 + w - 1, y0 + h - 1, LEGEND_EDGE)
  local out = {left = x0, top = y0, right = x0 + w - 1, bottom = y0 + h - 1, entries = {}}
  for i, e in ipairs(entries) do
    local ty = y0 + inner + (i - 1) * row_h
    local sx, sy = x0 + inner + floor(swatch_w / 2), ty + floor(7 * s / 2)
    draw_swatch(e, sx, sy)
    local tx = x0 + inner + swatch_w + 4 * s
    c:text(e.name, tx, ty, INK, s)
    out.entries[i] = {name = e.name, swatch = {x = sx, y = sy},
                      text = {left = tx, top = ty, right = tx + canvas.text_width(e.name, s) - 1,
                              bottom = ty + canvas.text_height(s) - 1}}
  end
  return out
end

local function legend_width(opts, entries, swatch_w, s)
  if opts.legend ~= "outside" or #entries == 0 then return nil end
  return (legend_size(s, entries, swatch_w))
end

-- Writes the PNG (when asked) and returns the layout.
local function finish(chart, layout)
  local img = ft.tensor(chart.canvas.px):reshape{3, chart.H, chart.W}
  if chart.opts.path then ft.image.save(tostring(chart.opts.path), img) end
  layout.image = img
  layout.width, layout.height = chart.W, chart.H
  layout.plot = {left = chart.left, top = chart.top, right = chart.right, bottom = chart.bottom}
  layout.xlim, layout.ylim = chart.axes.x.lim, chart.axes.y.lim
  layout.xscale, layout.yscale = chart.axes.x.scale, chart.axes.y.scale
  layout.xticks, layout.yticks = chart.axes.x.ticks, chart.axes.y.ticks
  layout.px, layout.py = chart.px, chart.py
  return layout
end

-- ---- line and scatter -----------------------------------------------------------------------

-- The segment (ax, ay) -> (bx, by) drawn dashed: dash = {on, off} pixels, phase = how far into
-- the pattern the segment starts. Returns the phase at its end (so a polyline's pattern runs on).
local function dashed_segment(c, ax, ay, bx, by, color, width, dash, phase)
  local len = sqrt((bx - ax) ^ 2 + (by - ay) ^ 2)
  local on, period = dash[1], dash[1] + dash[2]
  local t = 0
  while t < len do
    local at = (phase + t) % period
    if at < on then
      local e = min(len, t + on - at)
      c:segment(ax + (bx - ax) * t / len, ay + (by - ay) * t / len, ax + (bx - ax) * e / len,
                ay + (by - ay) * e / len, color, width)
      t = e
    else
      t = t + period - at
    end
  end
  return (phase + len) % period
end

local function xy_chart(kind, opts)
  check_options(kind, opts)
  local series = xy_series(kind, opts)
  local xscale = check_scale(kind, "xscale", opts.xscale)
  local yscale = check_scale(kind, "yscale", opts.yscale)
  local xlim = check_lim(kind, "xlim", opts.xlim, xscale)
  local ylim = check_lim(kind, "ylim", opts.ylim, yscale)
  local all_x, all_y = {}, {}
  for _, sr in ipairs(series) do
    for i = 1, #sr.x do
      if usable(sr.x[i], xscale) and usable(sr.y[i], yscale) then
        all_x[#all_x + 1], all_y[#all_y + 1] = sr.x[i], sr.y[i]
      end
    end
  end
  if #all_x == 0 and not (xlim and ylim) then fail(kind, "no finite points to plot in any series") end
  xlim = xlim or auto_limits(kind, "x", all_x, xscale)
  ylim = ylim or auto_limits(kind, "y", all_y, yscale)

  local s = chart_font_scale(opts)
  local linewidth = check_positive(kind, "linewidth", opts.linewidth, 2 * s)
  local marker_r = check_positive(kind, "marker_size", opts.marker_size, 3.5 * s)
  local markers = kind == "scatter" or opts.markers
  if markers == nil then
    markers = true
    for _, sr in ipairs(series) do markers = markers and #sr.x <= 30 end
  end
  local lines = kind == "line"
  for _, sr in ipairs(series) do
    if sr.dash == true then sr.dash = {4 * s, 6 * s} end
  end

  local entries = {}
  for _, sr in ipairs(series) do
    if sr.name then entries[#entries + 1] = sr end
  end
  local swatch_w = lines and 20 * s or ceil(2 * marker_r + 2)
  local chart = new_chart(kind, opts, {x = {lim = xlim, scale = xscale}, y = {lim = ylim, scale = yscale}},
                          legend_width(opts, entries, swatch_w, s))
  local c, px, py = chart.canvas, chart.px, chart.py
  draw_grid(chart)

  -- Pixel positions of the usable points (nil marks a gap).
  local samples = {}
  local points = {}
  for k, sr in ipairs(series) do
    local pts = {}
    for i = 1, #sr.x do
      if usable(sr.x[i], xscale) and usable(sr.y[i], yscale) then
        local u, v = px(sr.x[i]), py(sr.y[i])
        if finite(u) and finite(v) then pts[i] = {u, v} end
      end
    end
    points[k] = pts
  end

  c.clip = {chart.left, chart.top, chart.right, chart.bottom}
  for k, sr in ipairs(series) do
    local pts, n = points[k], #sr.x
    local phase = 0
    for i = 1, n do
      local p = pts[i]
      if p then
        samples[#samples + 1], samples[#samples + 2] = p[1], p[2]
        if lines then
          local q = pts[i + 1]
          if q then
            if sr.dash then
              phase = dashed_segment(c, p[1], p[2], q[1], q[2], sr.color, linewidth, sr.dash, phase)
            else
              c:segment(p[1], p[2], q[1], q[2], sr.color, linewidth)
            end
            local steps = min(ceil(sqrt((q[1] - p[1]) ^ 2 + (q[2] - p[2]) ^ 2) / 4), 200)
            for j = 1, steps - 1 do
              samples[#samples + 1] = p[1] + (q[1] - p[1]) * j / steps
              samples[#samples + 1] = p[2] + (q[2] - p[2]) * j / steps
            end
          elseif not pts[i - 1] then
            c:segment(p[1], p[2], p[1], p[2], sr.color, linewidth)   -- a lone point between gaps
          end
        end
      end
    end
    if markers then
      for i = 1, n do
        local p = pts[i]
        if p then c:marker(p[1], p[2], sr.shape, marker_r, sr.color) end
      end
    end
  end
  c.clip = {1, 1, chart.W, chart.H}

  -- point labels (scatter): just right of and above the marker
  for k, sr in ipairs(series) do
    if sr.labels then
      for i, p in pairs(points[k]) do
        local l = sr.labels[i]
        if l ~= nil and p[1] >= chart.left and p[1] <= chart.right and p[2] >= chart.top and p[2] <= chart.bottom then
          l = canvas.printable(l)
          local w = canvas.text_width(l, s)
          local x = min(floor(p[1] + marker_r + 2 * s), chart.W - w)
          c:text(l, x, floor(p[2] - marker_r - canvas.text_height(s) + 2 * s), INK, s)
        end
      end
    end
  end

  draw_axes(chart)
  local legend = draw_legend(chart, entries, swatch_w, samples, function(sr, x, y)
    if lines and sr.dash then
      dashed_segment(c, x - swatch_w / 2 + s, y, x + swatch_w / 2 - s, y, sr.color, linewidth, sr.dash, 0)
    elseif lines then
      c:segment(x - swatch_w / 2 + s, y, x + swatch_w / 2 - s, y, sr.color, linewidth)
    end
    if markers then c:marker(x, y, sr.shape, marker_r, sr.color) end
  end)
  local colors = {}
  for k, sr in ipairs(series) do colors[k] = sr.color end
  return finish(chart, {colors = colors, legend = legend})
end

--- plot.line(opts) --> layout: one polyline per series (see the header for the options).
function plot.line(opts) return xy_chart("line", opts) end

--- plot.scatter(opts) --> layout: one marker per point, optionally labelled.
function plot.scatter(opts) return xy_chart("scatter", opts) end

-- ---- bar ----------------------------------------------------------------------------------

--- plot.bar(opts) --> layout: grouped bars, one group per category, one bar per series.
function plot.bar(opts)
  local kind = "bar"
  check_options(kind, opts)
  local cats = opts.categories
  if type(cats) ~= "table" or #cats == 0 then fail(kind, "categories must be a non-empty array of names") end
  local categories = {}
  for i, name in ipairs(cats) do categories[i] = canvas.printable(name) end
  local series, all = {}, {}
  for i, s in ipairs(opts.series) do
    local label = s.name and tostring(s.name) or ("series " .. i)
    if s.values == nil then fail(kind, "series '%s' is empty (no values)", label) end
    local values = numbers(kind, label, "values", s.values)
    if #values ~= #categories then
      fail(kind, "series '%s' has %d values but there are %d categories", label, #values, #categories)
    end
    for _, v in ipairs(values) do
      if finite(v) then all[#all + 1] = v end
    end
    series[i] = {name = s.name and canvas.printable(s.name), values = values,
                 color = parse_color(kind, label, s.color or PALETTE[(i - 1) % #PALETTE + 1])}
  end
  if #all == 0 then fail(kind, "no finite values to plot in any series") end
  local ylim = check_lim(kind, "ylim", opts.ylim, "linear") or auto_limits(kind, "y", all, "linear", true)

  local s = chart_font_scale(opts)
  local swatch_w = 8 * s
  local entries = {}
  for _, sr in ipairs(series) do
    if sr.name then entries[#entries + 1] = sr end
  end
  local chart = new_chart(kind, opts, {x = {lim = {0.5, #categories + 0.5}, scale = "linear", categories = categories},
                                       y = {lim = ylim, scale = "linear"}},
                          legend_width(opts, entries, swatch_w, s))
  local c, px, py = chart.canvas, chart.px, chart.py
  draw_grid(chart)

  -- Each group takes 80% of its slot; its bars share that width equally.
  c.clip = {chart.left + 1, chart.top + 1, chart.right - 1, chart.bottom - 1}
  local bars, samples = {}, {}
  local bar_w = 0.8 / #series
  local base = py(min(max(0, ylim[1]), ylim[2]))
  for k, sr in ipairs(series) do
    bars[k] = {}
    for i, v in ipairs(sr.values) do
      if finite(v) then
        local x0 = floor(px(i - 0.4 + (k - 1) * bar_w) + 0.5)
        local x1 = floor(px(i - 0.4 + k * bar_w) + 0.5) - 1
        local yv = py(v)
        local y0, y1 = floor(min(yv, base) + 0.5), floor(max(yv, base) + 0.5)
        c:fill_rect(x0, y0, x1, y1, sr.color)
        bars[k][i] = {left = x0, top = y0, right = x1, bottom = y1}
        for yy = y0, y1, 4 do
          for xx = x0, x1, 4 do samples[#samples + 1], samples[#samples + 2] = xx, yy end
        end
      end
    end
  end
  c.clip = {1, 1, chart.W, chart.H}
  if ylim[1] < 0 and ylim[2] > 0 then
    c:fill_rect(chart.left, floor(base + 0.5), chart.right, floor(base + 0.5), INK)   -- the zero line
  end

  draw_axes(chart)
  local legend = draw_legend(chart, entries, swatch_w, samples, function(sr, x, y)
    local h = floor(swatch_w / 2)
    c:fill_rect(x - h, y - h, x - h + swatch_w - 1, y - h + swatch_w - 1, sr.color)
  end)
  local colors = {}
  for k, sr in ipairs(series) do colors[k] = sr.color end
  return finish(chart, {colors = colors, legend = legend, bars = bars})
end

return plot
