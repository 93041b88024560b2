-- ft.recipe: the recipes' flag converters, run folders and charts.
local ft = require "ft"
local R = ft.recipe

local function temp_dir()
  local path = os.tmpname()
  os.remove(path)
  ft.fs.mkdir(path)
  return path
end

local function refuses(convert, s, pattern)
  local v, err = convert(s)
  assert.is_nil(v, ("%s was accepted as %s"):format(s, tostring(v)))
  assert.is_string(err)
  if pattern then assert.truthy(err:find(pattern, 1, true), err) end
end

describe("ft.recipe converters", function()
  it("integer bounds", function()
    local positive = R.integer({min = 1})
    assert.equal(3, positive("3"))
    assert.equal("integer", math.type(positive("3")))
    refuses(positive, "0", "positive integer, got '0'")
    refuses(positive, "-2", "positive integer")
    refuses(positive, "1.5", "expected an integer, got '1.5'")
    refuses(positive, "abc", "expected an integer")
    local small = R.integer({min = 2, max = 4})
    refuses(small, "5", "<= 4")
    refuses(small, "1", ">= 2")
    assert.equal(4, small("4"))
    assert.has_error(function() R.integer({minimum = 1}) end)
  end)

  it("number bounds, open and closed", function()
    local fraction = R.number({above = 0, below = 1})
    assert.equal(0.2, fraction("0.2"))
    refuses(fraction, "1.5", "a number > 0 and < 1, got '1.5'")
    refuses(fraction, "0")
    refuses(fraction, "1")
    refuses(fraction, "nan")
    local rate = R.number({above = 0})
    refuses(rate, "inf")
    refuses(rate, "-0.1")
    assert.equal(1e-3, rate("1e-3"))
    local closed = R.number({min = 0, max = 1})
    assert.equal(0, closed("0"))
    assert.equal(1, closed("1"))
  end)

  it("alphas: lists and ranges in [0, 1]", function()
    assert.same({0, 0.25, 0.5, 0.75, 1}, (R.alphas("0:1:0.25")))
    assert.same({0, 0.5, 1}, (R.alphas("0,0.5,1")))
    local tenth = R.alphas("0:1:0.1")
    assert.equal(11, #tenth)
    assert.equal(0.3, tenth[4])
    assert.equal(1, tenth[11])
    refuses(R.alphas, "1:0:0.1", "runs backwards")
    refuses(R.alphas, "0:1:0", "must be > 0")
    refuses(R.alphas, "0,1.5", "[0, 1]")
    refuses(R.alphas, "0,,1", "is not a number")
    refuses(R.alphas, "a:b:c", "range")
  end)

  it("files and folders", function()
    local dir = temp_dir()
    refuses(R.dir, dir .. "/none", "no such folder")
    assert.equal(dir, R.dir(dir))
    refuses(R.file, dir, "is a folder")
    refuses(R.file, dir .. "/none", "no such file")
    ft.fs.write(dir .. "/f.txt", "x")
    assert.equal(dir .. "/f.txt", R.file(dir .. "/f.txt"))
    refuses(R.dir, dir .. "/f.txt", "is not a folder")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("ft.recipe.run", function()
  local parser = {_name = "demo.lua"}

  it("gives every run a new folder, printed, with a version counter within one second", function()
    local root = temp_dir()
    local a = R.run(parser, nil, {root = root})
    local b = R.run(parser, nil, {root = root})
    local c = R.run(parser, nil, {root = root})
    assert.truthy(a.dir:match("^" .. root:gsub("%p", "%%%0") .. "/demo/%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d"), a.dir)
    assert.are_not.equal(a.dir, b.dir)
    assert.are_not.equal(b.dir, c.dir)
    for _, r in ipairs({a, b, c}) do assert.is_true(ft.fs.is_dir(r.dir)) end
    assert.equal(a.dir .. "/results.json", a:path("results.json"))
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("resumes the newest run folder (versions in numeric order)", function()
    local root = temp_dir()
    for _, name in ipairs({"20260101-000000", "20260101-000000-2", "20260101-000000-10", "20250101-235959-99"}) do
      ft.fs.mkdir(root .. "/demo/" .. name)
    end
    local r = R.run(parser, nil, {root = root, resume = true})
    assert.equal(root .. "/demo/20260101-000000-10", r.dir)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("takes --out when it is new or empty", function()
    local root = temp_dir()
    local r = R.run(parser, root .. "/mine/a", {})
    assert.equal(root .. "/mine/a", r.dir)
    assert.is_true(ft.fs.is_dir(r.dir))
    os.execute("rm -rf '" .. root .. "'")
  end)
end)

describe("ft.recipe charts", function()
  it("series averages every n records of a metric and skips records without it", function()
    local records = {{step = 1, loss = 4}, {step = 2, loss = 2}, {step = 2, val_accuracy = 0.5},
      {step = 3, loss = 1}, {step = 4, loss = 3}, {step = 5, loss = 5}}
    local s = R.series(records, "loss", {every = 2, name = "train"})
    assert.same({2, 4, 5}, s.x)
    assert.same({3, 2, 5}, s.y)
    assert.equal("train", s.name)
    local v = R.series(records, "val_accuracy", {scale = 100})
    assert.same({2}, v.x)
    assert.same({50}, v.y)
    assert.is_nil(R.series(records, "val_loss"))
  end)

  it("bar limits show differences of values far from 0", function()
    local lim = R.bar_limits({85.2, 93.1, 88, 0 / 0})
    assert.truthy(lim[1] >= 80 and lim[1] <= 85.2, "lower limit " .. lim[1])
    assert.truthy(lim[2] >= 93.1 and lim[2] <= 100, "upper limit " .. lim[2])
    local layout = R.bars(nil, {categories = {"a", "b"}, series = {{name = "ID", values = {85.2, 93.1}}},
      ylim = lim})
    assert.equal(lim[1], layout.ylim[1])
    -- the shorter bar is visibly shorter: less than half the taller one's height
    local b1, b2 = layout.bars[1][1], layout.bars[1][2]
    assert.truthy((b1.bottom - b1.top) < 0.5 * (b2.bottom - b2.top))
  end)

  it("comparison bars carry their values", function()
    local opts = {categories = {"head", "lora"}, series = {{name = "ID", values = {85.2, 91.0}},
      {name = "OOD", values = {60.5, 70.1}}}, ylim = {50, 100}, legend = false}
    local labelled = R.bars(nil, opts)
    local plain = ft.plot.bar(opts)
    -- Dark text pixels in the few rows just above each bar's top, where the plain chart has none.
    local function ink_above(layout, bar)
      local img, n = layout.image, 0
      for y = math.max(1, bar.top - 10), bar.top - 2 do
        for x = bar.left, bar.right do
          if img[1][y][x]:item() < 0.4 and img[2][y][x]:item() < 0.4 and img[3][y][x]:item() < 0.4 then n = n + 1 end
        end
      end
      return n
    end
    for k = 1, 2 do
      for i = 1, 2 do
        assert.truthy(ink_above(labelled, labelled.bars[k][i]) > 10, ("no value over bar %d of series %d"):format(i, k))
        assert.equal(0, ink_above(plain, plain.bars[k][i]))
      end
    end
  end)

  it("the WiSE plot marks the chosen alpha on both curves", function()
    local rows = {{alpha = 0, id = 0.80, ood = 0.50}, {alpha = 0.5, id = 0.90, ood = 0.70},
      {alpha = 1, id = 0.92, ood = 0.60}}
    local layout = R.wise_plot(nil, rows, rows[2], {title = "t"})
    local img = layout.image
    local function pixel(x, y)
      return {img[1][y][x]:item(), img[2][y][x]:item(), img[3][y][x]:item()}
    end
    local function dark(x, y)
      local p = pixel(math.floor(x + 0.5), math.floor(y + 0.5))
      return p[1] < 0.1 and p[2] < 0.1 and p[3] < 0.1
    end
    assert.is_true(dark(layout.px(0.5), layout.py(90)), "no mark on the ID curve at the chosen alpha")
    assert.is_true(dark(layout.px(0.5), layout.py(70)), "no mark on the OOD curve at the chosen alpha")
    assert.is_false(dark(layout.px(1), layout.py(92)), "an alpha that was not chosen is marked")
    assert.is_false(dark(layout.px(0), layout.py(50)), "an alpha that was not chosen is marked")
    assert.truthy(layout.legend and #layout.legend.entries == 3, "legend: ID, OOD and the chosen alpha")
    assert.equal("chosen alpha 0.5 (ID 90.0, OOD 70.0)", layout.legend.entries[3].name)
  end)
end)
