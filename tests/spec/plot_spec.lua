-- ft.plot: PNG charts. The charts are read back with ft.image.load and checked pixel by
-- pixel against the axis mapping the module documents (computed here from the returned
-- frame and limits), and tick values against hand-worked expectations.
local ft = require "ft"
local H = require "helpers"
local plot = ft.plot

local BLUE = "#1f5fbf"
local RED = "#d02020"
local BLUE_RGB = {0x1f / 255, 0x5f / 255, 0xbf / 255}
local RED_RGB = {0xd0 / 255, 0x20 / 255, 0x20 / 255}
local TOL = 1.5 / 255   -- one 8-bit level

local function is_colour(p, rgb)
  for c = 1, 3 do
    if math.abs(p[c] - rgb[c]) > TOL then return false end
  end
  return true
end

-- pixel(row, col) --> {r, g, b} of a loaded [3, H, W] image (1-based row and column).
local function pixels(img)
  local t = img:totable()
  return function(row, col) return {t[1][row][col], t[2][row][col], t[3][row][col]} end
end

local function round(v) return math.floor(v + 0.5) end

local function inside(rect, col, row)
  return rect and col >= rect.left and col <= rect.right and row >= rect.top and row <= rect.bottom
end

local function assert_list(want, got, what)
  assert.are.equal(#want, #got, what .. ": number of values (got " .. table.concat(got, ", ") .. ")")
  for i = 1, #want do
    if math.abs(want[i] - got[i]) > 1e-12 * math.max(1, math.abs(want[i])) then
      error(("%s: value %d is %s, expected %s"):format(what, i, tostring(got[i]), tostring(want[i])), 2)
    end
  end
end

describe("ft.plot.ticks", function()
  it("steps by 1, 2 or 5 times a power of ten, at most n intervals", function()
    -- step = smallest nice value >= (hi - lo) / n; ticks = its multiples in [lo, hi]
    assert_list({0, 0.2, 0.4, 0.6, 0.8, 1}, plot.ticks(0, 1, 5), "0..1 / 5")        -- 0.2
    assert_list({0, 50, 100}, plot.ticks(0, 100, 4), "0..100 / 4")                   -- 25 -> 50
    assert_list({-2, 0, 2, 4, 6}, plot.ticks(-3, 7, 5), "-3..7 / 5")                 -- 2
    assert_list({0.3, 0.4, 0.5, 0.6, 0.7}, plot.ticks(0.28, 0.72, 6), "0.28..0.72")  -- 0.073 -> 0.1
    assert_list({0, 0.5, 1}, plot.ticks(-0.05, 1.05, 5), "-0.05..1.05")              -- 0.22 -> 0.5
    assert_list({20, 40, 60, 80}, plot.ticks(13, 87, 4), "13..87 / 4")               -- 18.5 -> 20
    assert_list({0.0012, 0.0014, 0.0016}, plot.ticks(0.0011, 0.0017, 3), "small")     -- 2e-4
    assert_list({2e6, 4e6, 6e6}, plot.ticks(1.5e6, 7e6, 3), "large")                  -- 1.83e6 -> 2e6
    assert_list({0.5}, plot.ticks(0.5, 0.5), "a single value")
  end)

  it("gives exact decimals, as written in source", function()
    local t = plot.ticks(0, 1, 10)
    assert.are.equal(0.3, t[4])
    assert.are.equal(0.7, t[8])
  end)

  it("puts log ticks on powers of ten, or 1-2-5 within a decade", function()
    assert_list({1, 10, 100, 1000}, plot.ticks(1, 1000, 5, "log"), "1..1000")
    assert_list({1e2, 1e4, 1e6, 1e8}, plot.ticks(1e2, 1e8, 3, "log"), "every second decade")
    assert_list({0.001, 0.01, 0.1}, plot.ticks(1e-3, 0.5, 5, "log"), "below 1")
    assert_list({2, 5, 10, 20}, plot.ticks(2, 30, 5, "log"), "1-2-5")
  end)

  it("rejects bad ranges", function()
    H.assert_mentions(H.error_of(plot.ticks, 2, 1), "ft.plot.ticks", "lo <= hi")
    H.assert_mentions(H.error_of(plot.ticks, 0, 1, 0), "n must be")
    H.assert_mentions(H.error_of(plot.ticks, 0, 10, 5, "log"), "log", "lo > 0")
    H.assert_mentions(H.error_of(plot.ticks, 0, 0 / 0), "finite")
  end)
end)

describe("ft.plot.line", function()
  local dir
  before_each(function() dir = H.make_tmpdir("plot") end)
  after_each(function() os.execute("rm -rf " .. H.quote(dir)) end)

  local function flat_series(level, colour, name)
    local x, y = {}, {}
    for i = 0, 10 do x[#x + 1], y[#y + 1] = i, level end
    return {name = name, x = x, y = y, color = colour}
  end

  it("writes a PNG of the requested size", function()
    local path = dir .. "/size.png"
    local layout = plot.line{path = path, width = 500, height = 300, title = "t", xlabel = "x", ylabel = "y",
                             series = {{name = "a", y = {1, 3, 2}}}}
    local img = ft.image.load(path)
    assert.are.same({3, 300, 500}, img:shape())
    assert.are.same({3, 300, 500}, layout.image:shape())
    assert.are.equal(500, layout.width)
  end)

  it("draws a horizontal line y = c on the row the documented mapping gives", function()
    local path = dir .. "/flat.png"
    local L = plot.line{path = path, ylim = {0, 1}, markers = false, title = "flat", xlabel = "step",
                        series = {flat_series(0.25, BLUE, "low"), flat_series(0.75, RED, "high")}}
    local box = L.plot
    assert.is_true(box.left < box.right and box.top < box.bottom)
    local px = pixels(ft.image.load(path))
    for _, case in ipairs{{0.25, BLUE_RGB, "low"}, {0.75, RED_RGB, "high"}} do
      local y, rgb, name = case[1], case[2], case[3]
      -- linear: ylim[1] on the bottom edge of the frame, ylim[2] on the top edge
      local row = box.bottom - (y - 0) / (1 - 0) * (box.bottom - box.top)
      assert.is_true(math.abs(L.py(y) - row) < 1e-9, name .. ": py")
      local function col_of(x) return box.left + (x - L.xlim[1]) / (L.xlim[2] - L.xlim[1]) * (box.right - box.left) end
      local first, last = round(col_of(0)), round(col_of(10))
      local checked = 0
      for col = first + 3, last - 3 do
        if not inside(L.legend, col, round(row)) then
          checked = checked + 1
          assert.is_true(is_colour(px(round(row), col), rgb),
                         ("%s: pixel (%d, %d) is not the series colour"):format(name, round(row), col))
          for r = box.top, box.bottom do   -- and nowhere else in the column
            if is_colour(px(r, col), rgb) and math.abs(r - row) > 2 and not inside(L.legend, col, r) then
              error(("%s: series colour at row %d, %.1f rows from its line"):format(name, r, r - row))
            end
          end
        end
      end
      assert.is_true(checked > 300, name .. ": columns checked")
    end
  end)

  it("maps automatic limits the same way and keeps the data inside the frame", function()
    local L = plot.line{series = {{name = "s", x = {2, 4, 6}, y = {10, 30, 20}, color = BLUE}}, markers = false}
    assert.is_true(L.xlim[1] < 2 and L.xlim[2] > 6 and L.ylim[1] < 10 and L.ylim[2] > 30)
    local b = L.plot
    local col = b.left + (4 - L.xlim[1]) / (L.xlim[2] - L.xlim[1]) * (b.right - b.left)
    local row = b.bottom - (30 - L.ylim[1]) / (L.ylim[2] - L.ylim[1]) * (b.bottom - b.top)
    assert.is_true(math.abs(L.px(4) - col) < 1e-9 and math.abs(L.py(30) - row) < 1e-9)
    local px = pixels(L.image)
    assert.is_true(is_colour(px(round(row), round(col)), BLUE_RGB), "the peak at (4, 30)")
    for _, t in ipairs(L.yticks) do assert.is_true(t >= L.ylim[1] and t <= L.ylim[2]) end
  end)

  it("draws the legend: the series colour on its swatch and dark text pixels", function()
    local L = plot.line{series = {flat_series(0.25, BLUE, "ID accuracy"), flat_series(0.75, RED, "OOD")},
                        ylim = {0, 1}}
    local px = pixels(L.image)
    assert.is_table(L.legend)
    assert.are.equal(2, #L.legend.entries)
    for k, rgb in ipairs{BLUE_RGB, RED_RGB} do
      local e = L.legend.entries[k]
      assert.is_true(is_colour(px(e.swatch.y, e.swatch.x), rgb), "swatch " .. k)
      local dark = 0
      for r = e.text.top, e.text.bottom do
        for c = e.text.left, e.text.right do
          local p = px(r, c)
          if p[1] < 0.35 and p[2] < 0.35 and p[3] < 0.35 then dark = dark + 1 end
        end
      end
      assert.is_true(dark >= 8 * #e.name, ("entry %d: %d dark pixels"):format(k, dark))
    end
    -- the longer name is wider
    local t1, t2 = L.legend.entries[1].text, L.legend.entries[2].text
    assert.is_true(t1.right - t1.left > t2.right - t2.left)
    -- "outside" puts it right of the frame
    local out = plot.line{series = {flat_series(0.5, BLUE, "x")}, legend = "outside"}
    assert.is_true(out.legend.left > out.plot.right and out.legend.right <= out.width)
    -- legend = false draws none
    assert.is_nil(plot.line{series = {flat_series(0.5, BLUE, "x")}, legend = false}.legend)
  end)

  it("draws text with the 5 x 7 bitmap font, scaled", function()
    local H_GLYPH = {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#", ".....", "....."}
    local L = plot.line{font_scale = 2, series = {{name = "H", y = {1, 2}}}}
    local px = pixels(L.image)
    local t = L.legend.entries[1].text
    assert.are.equal(5 * 2, t.right - t.left + 1)
    assert.are.equal(9 * 2, t.bottom - t.top + 1)
    for r = t.top, t.bottom do
      for c = t.left, t.right do
        local row, col = (r - t.top) // 2 + 1, (c - t.left) // 2 + 1
        local want_ink = H_GLYPH[row]:sub(col, col) == "#"
        local p = px(r, c)
        local ink = p[1] < 0.35 and p[2] < 0.35 and p[3] < 0.35
        assert.are.equal(want_ink, ink, ("glyph pixel (%d, %d)"):format(row, col))
      end
    end
  end)

  it("leaves gaps at non-finite values", function()
    local L = plot.line{xlim = {1, 5}, ylim = {0, 1}, markers = false, legend = false,
                        series = {{x = {1, 2, 3, 4, 5}, y = {0.5, 0.5, 0 / 0, 0.5, 0.5}, color = BLUE}}}
    local px = pixels(L.image)
    local row = round(L.py(0.5))
    local function coloured(col) return is_colour(px(row, col), BLUE_RGB) end
    for col = round(L.px(1)) + 3, round(L.px(2)) - 1 do assert.is_true(coloured(col), "drawn at " .. col) end
    for col = round(L.px(2)) + 3, round(L.px(4)) - 3 do assert.is_false(coloured(col), "gap at " .. col) end
    for col = round(L.px(4)) + 1, round(L.px(5)) - 3 do assert.is_true(coloured(col), "drawn at " .. col) end
  end)

  it("draws a dashed series as runs of its colour and gaps, the pattern running on across points", function()
    local L = plot.line{xlim = {0, 10}, ylim = {0, 1}, markers = false, legend = false,
                        series = {flat_series(0.25, BLUE), {x = {0, 3, 7, 10}, y = {0.75, 0.75, 0.75, 0.75},
                                  color = RED, dash = {6, 6}}}}
    local px = pixels(L.image)
    local solid, dashed = round(L.py(0.25)), round(L.py(0.75))
    local first, last = round(L.px(0)) + 3, round(L.px(10)) - 3
    local runs, run, longest_gap, gap = 0, 0, 0, 0
    for col = first, last do
      assert.is_true(is_colour(px(solid, col), BLUE_RGB), "solid line at " .. col)
      if is_colour(px(dashed, col), RED_RGB) then
        if run == 0 then runs = runs + 1 end
        run, gap = run + 1, 0
        assert.is_true(run <= 6 + 2 + 1, "a dash longer than on + linewidth at " .. col)
      else
        run, gap = 0, gap + 1
        longest_gap = math.max(longest_gap, gap)
      end
    end
    -- 12 pixels a period over the frame's width, whatever the points
    local expected = (last - first + 1) / 12
    assert.is_true(math.abs(runs - expected) <= 2, ("%d dashes, expected about %.1f"):format(runs, expected))
    assert.is_true(longest_gap >= 2 and longest_gap <= 6, "gap " .. longest_gap)
    local default = plot.line{series = {{name = "d", y = {1, 1}, dash = true}}}
    assert.is_truthy(default.image)
    H.assert_mentions(H.error_of(plot.line, {series = {{name = "d", y = {1}, dash = {0, 3}}}}), "'d'", "dash")
    H.assert_mentions(H.error_of(plot.line, {series = {{name = "d", y = {1}, dash = "--"}}}), "'d'", "dash")
    H.assert_mentions(H.error_of(plot.scatter, {series = {{name = "d", y = {1}, dash = true}}}), "dash")
  end)

  it("accepts 1-D tensors and defaults x to 1..#y", function()
    local L = plot.line{series = {{name = "loss", y = ft.tensor{3, 2, 1.5, 1.2}}}}
    assert.is_true(L.xlim[1] < 1 and L.xlim[1] > 0.5 and L.xlim[2] > 4 and L.xlim[2] < 4.5)
  end)

  it("gives each series its own colour", function()
    local series = {}
    for i = 1, 10 do series[i] = {name = "s" .. i, y = {i, i + 1}} end
    local L = plot.line{series = series}
    for i = 1, 10 do
      for j = i + 1, 10 do
        local a, b = L.colors[i], L.colors[j]
        assert.is_true(math.abs(a[1] - b[1]) + math.abs(a[2] - b[2]) + math.abs(a[3] - b[3]) > 0.1)
      end
    end
  end)

  it("draws a big chart well under a second", function()
    local series = {}
    for s = 1, 3 do
      local y = {}
      for i = 1, 1000 do y[i] = math.exp(-i / 300) * s + 0.05 * math.sin(i) end
      series[s] = {name = "run " .. s, y = y}
    end
    local t0 = os.clock()
    plot.line{path = dir .. "/big.png", width = 1000, height = 700, yscale = "log", series = series,
              title = "learning curves", xlabel = "step", ylabel = "loss"}
    local elapsed = os.clock() - t0
    assert.is_true(elapsed < 2, ("took %.2f s of CPU"):format(elapsed))
  end)
end)

describe("ft.plot.scatter", function()
  it("maps x through log10 on a log axis", function()
    local L = plot.scatter{xscale = "log", xlim = {1, 1000}, ylim = {0, 1}, legend = false,
                           series = {{x = {10, 100, 0, -5}, y = {0.5, 0.5, 0.5, 0.5}, color = RED,
                                      labels = {"ten", "hundred", "zero", "negative"}}}}
    local b = L.plot
    assert_list({1, 10, 100, 1000}, L.xticks, "xticks")
    local px = pixels(L.image)
    local row = round(b.bottom - 0.5 * (b.bottom - b.top))
    for _, x in ipairs{10, 100} do
      local col = b.left + math.log(x, 10) / 3 * (b.right - b.left)   -- log10(1000) - log10(1) = 3
      assert.is_true(math.abs(L.px(x) - col) < 1e-9, "px(" .. x .. ")")
      assert.is_true(is_colour(px(row, round(col)), RED_RGB), "marker at x = " .. x)
    end
    -- where a linear axis would have put x = 10 there is nothing
    local linear_col = round(b.left + (10 - 1) / 999 * (b.right - b.left))
    assert.is_false(is_colour(px(row, linear_col), RED_RGB))
  end)

  it("labels points next to their markers", function()
    local unlabelled = plot.scatter{xlim = {0, 10}, ylim = {0, 10}, legend = false, series = {{x = {5}, y = {5}}}}
    local labelled = plot.scatter{xlim = {0, 10}, ylim = {0, 10}, legend = false,
                                  series = {{x = {5}, y = {5}, label = {"lora"}}}}
    local a, b = pixels(unlabelled.image), pixels(labelled.image)
    local col, row = round(labelled.px(5)), round(labelled.py(5))
    local differ = 0
    for r = row - 20, row + 5 do
      for c = col, col + 40 do
        if math.abs(a(r, c)[1] - b(r, c)[1]) > 0.3 then differ = differ + 1 end
      end
    end
    assert.is_true(differ > 10, "label pixels near the point: " .. differ)
  end)
end)

describe("ft.plot.bar", function()
  it("draws one bar per series and category from 0 up to the value", function()
    local values = {{40, 80, 60}, {20, 0 / 0, 70}}
    local L = plot.bar{categories = {"head", "lora", "full"},
                       series = {{name = "ID", values = values[1], color = BLUE},
                                 {name = "OOD", values = values[2], color = RED}}}
    assert.are.equal(0, L.ylim[1])
    local b = L.plot
    local px = pixels(L.image)
    for k, rgb in ipairs{BLUE_RGB, RED_RGB} do
      for i, v in ipairs(values[k]) do
        local bar = L.bars[k][i]
        if v ~= v then
          assert.is_nil(bar, "no bar for NaN")
        else
          local top = b.bottom - (v - L.ylim[1]) / (L.ylim[2] - L.ylim[1]) * (b.bottom - b.top)
          assert.is_true(math.abs(bar.top - top) <= 1, ("bar %d,%d top %d, expected %.1f"):format(k, i, bar.top, top))
          local mid = round((bar.left + bar.right) / 2)
          assert.is_true(is_colour(px(round((bar.top + bar.bottom) / 2), mid), rgb), "bar colour")
          assert.is_false(is_colour(px(bar.top - 3, mid), rgb), "above the bar")
          -- the bar sits in its category's slot, series side by side
          local slot = (b.right - b.left) / 3
          assert.is_true(bar.left >= b.left + (i - 1) * slot and bar.right <= b.left + i * slot)
        end
      end
    end
    assert.is_true(L.bars[1][1].right < L.bars[2][1].left)
  end)
end)

describe("ft.plot errors", function()
  it("names the series whose x and y lengths differ", function()
    local msg = H.error_of(plot.line, {series = {{name = "ID", x = {1, 2}, y = {1, 2}},
                                                 {name = "OOD", x = {1, 2, 3}, y = {1, 2}}}})
    H.assert_mentions(msg, "ft.plot.line", "OOD", "3 x values", "2 y values")
  end)

  it("names empty series, numbering unnamed ones", function()
    H.assert_mentions(H.error_of(plot.line, {series = {{name = "ID", x = {}, y = {}}}}), "'ID'", "empty")
    H.assert_mentions(H.error_of(plot.scatter, {series = {{y = {1}}, {x = {1}}}}), "'series 2'", "empty")
    H.assert_mentions(H.error_of(plot.bar, {categories = {"a"}, series = {{name = "B"}}}), "'B'", "empty")
  end)

  it("rejects bad values and options", function()
    H.assert_mentions(H.error_of(plot.line, {series = {{name = "s", y = {1, "2"}}}}), "'s'", "y[2]", "string")
    H.assert_mentions(H.error_of(plot.bar, {categories = {"a", "b"}, series = {{name = "lora", values = {1}}}}),
                      "ft.plot.bar", "'lora'", "1 values", "2 categories")
    H.assert_mentions(H.error_of(plot.line, {series = {{y = {1}}}, xlable = "x"}), "unknown option 'xlable'")
    H.assert_mentions(H.error_of(plot.line, {series = {{y = {1}}}, xscale = "sqrt"}), "xscale", "sqrt")
    H.assert_mentions(H.error_of(plot.line, {series = {{y = {1}, colour = "red"}}}), "colour")
    H.assert_mentions(H.error_of(plot.line, {series = {{name = "c", y = {1}, color = "red"}}}), "'c'", "color")
    H.assert_mentions(H.error_of(plot.line, {series = {}}), "series")
    H.assert_mentions(H.error_of(plot.line, "wise.png"), "table of options")
    H.assert_mentions(H.error_of(plot.line, {series = {{y = {1}}}, width = 10}), "width")
    H.assert_mentions(H.error_of(plot.scatter, {xscale = "log", series = {{name = "p", x = {0, -1}, y = {1, 2}}}}),
                      "no finite points")
    H.assert_mentions(H.error_of(plot.line, {series = {{y = {0 / 0}}}}), "no finite points")
  end)
end)
