-- How tensors print (tostring(t), the REPL): 3+ dims as labelled 2-d slices with 1-based
-- labels as Torch7 prints them, large tensors summarised with "..." as PyTorch does.
local ft = require "ft"

local function lines_of(s)
  local out = {}
  for line in (s .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line end
  return out
end

describe("printing tensors", function()
  it("shows a 3-dim tensor as labelled 2-d slices, then its dtype and shape", function()
    local s = tostring(ft.arange(1, 13):reshape(2, 2, 3))
    assert.are.equal(table.concat({
      "(1,.,.) =",
      "  1  2  3",
      "  4  5  6",
      "",
      "(2,.,.) =",
      "  7  8  9",
      " 10 11 12",
      "[int64 tensor of shape [2,2,3]]",
    }, "\n"), s)
  end)

  it("labels the slices of a 4-dim tensor by both leading indices, in order", function()
    local labels = {}
    for _, line in ipairs(lines_of(tostring(ft.zeros(2, 3, 2, 2)))) do
      if line:match("^%(") then labels[#labels + 1] = line end
    end
    assert.are.same({ "(1,1,.,.) =", "(1,2,.,.) =", "(1,3,.,.) =", "(2,1,.,.) =", "(2,2,.,.) =", "(2,3,.,.) =" }, labels)
  end)

  it("shows each slice's values in place", function()
    local t = ft.tensor({ { { 1.5, -2 } }, { { 3, 4.25 } } })
    local s = tostring(t)
    assert.truthy(s:find("(1,.,.) =\n  1.5000 -2.0000\n\n(2,.,.) =\n  3.0000  4.2500\n", 1, true), s)
    assert.truthy(s:find("[float32 tensor of shape [2,1,2]]", 1, true), s)
  end)

  it("summarises a tensor of more than 1000 elements to 3 entries at each end of every dim", function()
    local t = ft.arange(1, 8001):reshape(20, 20, 20)
    local lines = lines_of(tostring(t))
    local labels, gaps = {}, 0
    for _, line in ipairs(lines) do
      if line:match("^%(") then labels[#labels + 1] = line end
      if line == "..." then gaps = gaps + 1 end
    end
    assert.are.same({ "(1,.,.) =", "(2,.,.) =", "(3,.,.) =", "(18,.,.) =", "(19,.,.) =", "(20,.,.) =" }, labels)
    assert.are.equal(1, gaps) -- one "..." line for the 14 slices left out
    assert.are.equal("    1    2    3 ...   18   19   20", lines[2])
    assert.are.equal(" ...", lines[5])                      -- rows 4..17 of the first slice
    assert.are.equal(" 7981 7982 7983 ... 7998 7999 8000", lines[#lines - 1])
    assert.are.equal("[int64 tensor of shape [20,20,20]]", lines[#lines])
    assert.is_true(#lines < 60)
  end)

  it("keeps 1-dim and 2-dim tensors as rows, and a small 3-dim tensor whole", function()
    assert.are.equal(" 1. 2.\n[float32 tensor of shape [2]]", tostring(ft.tensor({ 1, 2 })))
    assert.are.equal(" 1 2\n 3 4\n[int64 tensor of shape [2,2]]",
      tostring(ft.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "int64" })))
    local n = 0
    for _, line in ipairs(lines_of(tostring(ft.zeros(10, 10, 10)))) do
      if line:match("^%(") then n = n + 1 end
    end
    assert.are.equal(10, n)
  end)

  it("shows an empty 3-dim tensor by its shape alone, and requires_grad in the last line", function()
    assert.are.equal("[float32 tensor of shape [0,2,2]]", tostring(ft.zeros(0, 2, 2)))
    local s = tostring(ft.zeros(1, 1, 1, { requires_grad = true }))
    assert.truthy(s:find("[float32 tensor of shape [1,1,1], requires_grad]", 1, true), s)
  end)
end)
