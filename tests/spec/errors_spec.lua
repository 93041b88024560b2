-- Bad input raises a Lua error naming the op and the offending shapes or values; the
-- process, the grad mode and the other tensors survive it.
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional

local err = H.error_of
local mentions = H.assert_mentions

-- After each failure the runtime must still work: a small graph with a backward.
local function still_works()
  local x = ft.tensor{1, 2, 3}
  x.requires_grad = true
  local y = (x * x):sum()
  assert.is_true(y.requires_grad)
  y:backward()
  assert.are.same({2, 4, 6}, x.grad:totable())
end

describe("errors", function()
  after_each(still_works)

  it("broadcast shape mismatch names the op and both shapes", function()
    local a, b = ft.ones(4, 3), ft.ones(5)
    mentions(err(function() return a + b end), "ft.add", "[4,3]", "[5]")
    mentions(err(function() return a * ft.ones(2, 3) end), "ft.mul", "[4,3]", "[2,3]")
    mentions(err(function() return a - ft.ones(4, 2) end), "ft.sub", "[4,3]", "[4,2]")
    mentions(err(function() return a / ft.ones(3, 1, 2) end), "ft.div", "[4,3]", "[3,1,2]")
    mentions(err(function() return ft.where(ft.ones(2, 2), a, a) end), "ft.where", "[2,2]", "[4,3]")
    -- the operands are untouched
    assert.are.same({4, 3}, a:shape())
    assert.are.equal(12, a:sum():item())
  end)

  it("matmul inner-dimension mismatch", function()
    local msg = err(function() return ft.ones(2, 3):matmul(ft.ones(4, 5)) end)
    mentions(msg, "ft.matmul", "[2,3]", "[4,5]")
    mentions(err(function() return ft.ones(2, 3, 4):matmul(ft.ones(5)) end),
             "ft.matmul", "[2,3,4]", "[5]")
    mentions(err(function() return F.linear(ft.ones(2, 3), ft.ones(4, 5)) end),
             "ft.linear", "[2,3]", "[4,5]")
  end)

  it("matmul batch-dim mismatch names both operand shapes", function()
    -- batch dims [2,3] and [2] cannot broadcast
    mentions(err(function() return ft.ones(2, 3, 4, 5):matmul(ft.ones(2, 5, 2)) end),
             "ft.matmul", "[2,3,4,5]", "[2,5,2]")
  end)

  it("conv2d channel mismatch", function()
    local msg = err(function() return F.conv2d(ft.ones(1, 3, 5, 5), ft.ones(4, 2, 3, 3)) end)
    mentions(msg, "ft.conv2d", "[1,3,5,5]", "[4,2,3,3]")
    -- a kernel larger than the padded input
    mentions(err(function() return F.conv2d(ft.ones(1, 2, 2, 2), ft.ones(4, 2, 3, 3)) end),
             "ft.conv2d", "[1,2,2,2]", "[4,2,3,3]")
  end)

  it("view to an incompatible shape", function()
    mentions(err(function() return ft.ones(2, 3):view(4, 2) end), "ft.view", "[2,3]", "[4,2]")
    mentions(err(function() return ft.ones(2, 3):reshape(7) end), "ft.reshape", "[2,3]", "[7]")
  end)

  it("wrong dtype", function()
    local ids = ft.tensor({1, 2}, {dtype = "int64"})
    local x = ft.ones(2, 3)
    mentions(err(function() return F.embedding(ft.tensor{1, 2}, ft.ones(4, 3)) end),
             "ft.embedding", "int64", "float32")
    mentions(err(function() return x:index_select(1, ft.tensor{1, 2}) end),
             "ft.index_select", "int64", "float32")
    mentions(err(function() ids.requires_grad = true end), "int64")
    mentions(err(function() return ids:matmul(x) end), "ft.matmul", "int64")
  end)

  local function ids(t) return ft.tensor(t, {dtype = "int64"}) end

  it("out-of-range class id in cross_entropy", function()
    local logits = ft.zeros(3, 4)
    -- classes are 1..4 in Lua: 5 and 0 are both out of range
    mentions(err(function() return F.cross_entropy(logits, ids{1, 5, 2}) end),
             "ft.cross_entropy", "4 classes")
    mentions(err(function() return F.cross_entropy(logits, ids{1, 0, 2}) end),
             "ft.cross_entropy", "4 classes")
    mentions(err(function() return F.cross_entropy(logits, ids{1, 2}) end),
             "ft.cross_entropy", "[3,4]", "[2]")
  end)

  it("out-of-range embedding, index_select and gather indices (0 and n+1 are out)", function()
    local w = ft.ones(10, 3)
    mentions(err(function() return F.embedding(ids{1, 11}, w) end), "ft.embedding", "10")
    mentions(err(function() return F.embedding(ids{0, 3}, w) end), "ft.embedding", "10")
    local x = ft.ones(5, 2)
    mentions(err(function() return x:index_select(1, ids{6}) end), "ft.index_select", "5")
    mentions(err(function() return x:index_select(1, ids{0}) end), "ft.index_select", "5")
    mentions(err(function() return x:gather(2, ids{{3}, {1}, {1}, {1}, {1}}) end), "ft.gather", "2")
    mentions(err(function() return x:gather(2, ids{{0}, {1}, {1}, {1}, {1}}) end), "ft.gather", "2")
  end)

  -- The Lua API is 1-based: a message must show the value the user passed, not the
  -- core's 0-based one ("index 10 out of range for 10 rows" for an 11 misleads).
  it("reports an out-of-range class id as the user gave it", function()
    local logits = ft.zeros(3, 4)
    mentions(err(function() return F.cross_entropy(logits, ids{1, 5, 2}) end), "5")
  end)

  it("reports an out-of-range embedding id as the user gave it", function()
    local w = ft.ones(10, 3)
    mentions(err(function() return F.embedding(ids{1, 11}, w) end), "11")
    local msg = err(function() return F.embedding(ids{0, 3}, w) end)
    assert.is_nil(msg:find("-1", 1, true), msg)
  end)

  it("reports out-of-range index_select/gather indices and their dim as the user gave them", function()
    local x = ft.ones(5, 2)
    mentions(err(function() return x:index_select(1, ids{6}) end), "6", "dim 1")
    mentions(err(function() return x:gather(2, ids{{3}, {1}, {1}, {1}, {1}}) end), "3", "dim 2")
  end)

  it("reports out-of-range positions and dims as the user gave them", function()
    local x = ft.ones(2, 3)
    mentions(err(function() return x:select(1, 3) end), "ft.select", "3", "dim 1")
    mentions(err(function() return x[3] end), "3")
    mentions(err(function() return x:narrow(2, 3, 2) end), "ft.narrow", "3", "dim 2")
  end)

  it("backward on a non-scalar without a gradient", function()
    local x = ft.ones(2, 3)
    x.requires_grad = true
    local y = x * 2
    mentions(err(function() y:backward() end), "ft.backward", "[2,3]")
    -- a matching gradient still works afterwards on the same graph
    y:backward(ft.ones(2, 3))
    assert.are.same({{2, 2, 2}, {2, 2, 2}}, x.grad:totable())
  end)

  it("backward with a gradient of the wrong shape", function()
    local x = ft.ones(2, 3)
    x.requires_grad = true
    mentions(err(function() (x * 2):backward(ft.ones(3, 2)) end), "ft.backward", "[2,3]", "[3,2]")
  end)

  it("dims out of range, 1-based", function()
    local x = ft.ones(2, 3)
    mentions(err(function() return x:size(3) end), "dim 3")
    mentions(err(function() return x:sum(0) end), "dim 0")
    mentions(err(function() return x:transpose(1, 3) end), "dim 3")
    mentions(err(function() return x:select(0, 1) end), "dim 0")
    mentions(err(function() return x:select(1, 0) end), "ft.select")
    mentions(err(function() return x:narrow(2, 3, 2) end), "ft.narrow")
  end)

  it("shape ops with mismatched parts", function()
    mentions(err(function() return ft.cat({ft.ones(2, 3), ft.ones(2, 4)}, 1) end),
             "ft.cat", "[2,3]", "[2,4]")
    mentions(err(function() return ft.stack({ft.ones(2, 3), ft.ones(3, 2)}, 1) end),
             "ft.stack", "[2,3]", "[3,2]")
    mentions(err(function() return F.mse_loss(ft.ones(2, 3), ft.ones(3, 2)) end),
             "ft.mse_loss", "[2,3]", "[3,2]")
    mentions(err(function() return F.layer_norm(ft.ones(2, 3), {4}) end),
             "ft.layer_norm", "[2,3]", "[4]")
  end)

  it("bad constructor input", function()
    mentions(err(function() return ft.tensor{{1, 2}, {3}} end), "ft.tensor")
    mentions(err(function() return ft.tensor{1, "x"} end), "ft.tensor")
    mentions(err(function() return ft.tensor({1}, {dtype = "float17"}) end), "float17")
  end)

  it("many failures in a row leak nothing and break nothing", function()
    collectgarbage()
    collectgarbage()
    local before = ft.live_bytes and ft.live_bytes()
    for _ = 1, 200 do
      pcall(function() return ft.ones(40, 30) + ft.ones(50) end)
      pcall(function() return ft.ones(40, 30):matmul(ft.ones(20, 5)) end)
    end
    collectgarbage()
    collectgarbage()
    if before then
      assert.is_true(ft.live_bytes() <= before + 4096,
                     "live bytes grew from " .. before .. " to " .. ft.live_bytes())
    end
  end)
end)
