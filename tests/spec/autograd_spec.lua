-- Autograd semantics through the Lua API: accumulation, propagation of requires_grad,
-- detach, no_grad, retain_graph, explicit output gradients and frozen subgraphs.
local ft = require "ft"
local H = require "helpers"

local function leaf(values)
  local t = ft.tensor(values)
  t.requires_grad = true
  return t
end

describe("autograd", function()
  it("computes leaf gradients (x*x + exp(x) uses x twice)", function()
    local x = leaf{0.5, -1, 2}
    local y = (x * x + x:exp()):sum()
    y:backward()
    local expected = {}
    for i, v in ipairs{0.5, -1, 2} do expected[i] = 2 * v + math.exp(v) end
    H.assert_close(x.grad, ft.tensor(expected), 1e-6, "grad")
  end)

  it("accumulates leaf gradients across two backward calls", function()
    local x = leaf{1, 2, 3}
    local w = leaf{0.5, 0.5, 0.5}
    ;(x * w):sum():backward()
    H.assert_close(x.grad, ft.tensor{0.5, 0.5, 0.5}, 0, "x.grad after one call")
    ;(x * w * 2):sum():backward()
    H.assert_close(x.grad, ft.tensor{1.5, 1.5, 1.5}, 0, "x.grad after two calls")
    H.assert_close(w.grad, ft.tensor{3, 6, 9}, 0, "w.grad after two calls")
  end)

  it("propagates requires_grad through ops", function()
    local x = leaf{1, 2}
    local c = ft.tensor{3, 4}
    assert.is_true(x.requires_grad)
    assert.is_false(c.requires_grad)
    assert.is_true((x * c).requires_grad)
    assert.is_true((c + x):exp().requires_grad)
    assert.is_true(x:reshape(2, 1).requires_grad)
    assert.is_false((c * 2):exp().requires_grad)
  end)

  it("ft.tensor{..., requires_grad = true} makes a leaf", function()
    local x = ft.tensor({1, 2}, {requires_grad = true})
    ;(x * 3):sum():backward()
    H.assert_close(x.grad, ft.tensor{3, 3}, 0, "grad")
  end)

  it("gives no .grad before backward and none to non-requiring tensors", function()
    local a = leaf{1, 2, 3}
    local b = ft.tensor{4, 5, 6}
    assert.is_nil(a.grad)
    ;(a * b):sum():backward()
    H.assert_close(a.grad, b, 0, "a.grad")
    assert.is_nil(b.grad)
    assert.is_false(a.grad.requires_grad)
  end)

  it("detach shares values but cuts the graph", function()
    local x = leaf{1, 2, 3}
    local d = x:detach()
    assert.is_false(d.requires_grad)
    assert.are.same(x:totable(), d:totable())
    local y = (x * d):sum()         -- d is a constant here
    y:backward()
    H.assert_close(x.grad, ft.tensor{1, 2, 3}, 0, "grad")
    assert.is_nil(d.grad)
    local z = (x:detach() * 2):sum()
    assert.is_false(z.requires_grad)
  end)

  it("ft.no_grad records nothing and returns the function's results", function()
    local x = leaf{1, 2}
    local y, n, s = ft.no_grad(function() return x * 2, 42, "s" end)
    assert.is_false(y.requires_grad)
    assert.are.equal(42, n)
    assert.are.equal("s", s)
    assert.are.same({2, 4}, y:totable())
    -- grad mode is back on afterwards
    assert.is_true((x * 2).requires_grad)
  end)

  it("ft.no_grad restores grad mode when the function raises", function()
    local x = leaf{1, 2}
    local ok, err = pcall(ft.no_grad, function() error("boom") end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom", 1, true))
    assert.is_true((x * 2).requires_grad)
  end)

  it("nested no_grad stays off until the outer call returns", function()
    local x = leaf{1, 2}
    local inner, after_inner = ft.no_grad(function()
      local i = ft.no_grad(function() return x * 2 end)
      return i, x * 3
    end)
    assert.is_false(inner.requires_grad)
    assert.is_false(after_inner.requires_grad)
    assert.is_true((x * 4).requires_grad)
  end)

  it("a second backward through a freed graph errors clearly", function()
    local x = leaf{1, 2}
    local y = (x * x):sum()
    y:backward()
    local ok, err = pcall(y.backward, y)
    assert.is_false(ok)
    err = tostring(err)
    assert.is_truthy(err:find("backward", 1, true), err)
    assert.is_truthy(err:find("retain_graph", 1, true), err)
    -- the first gradient is intact
    H.assert_close(x.grad, ft.tensor{2, 4}, 0, "grad")
  end)

  it("retain_graph keeps the graph for a second backward", function()
    local x = leaf{1, 2}
    local y = (x * x):sum()
    y:backward(nil, {retain_graph = true})
    y:backward()
    H.assert_close(x.grad, ft.tensor{4, 8}, 0, "grad after two calls")
  end)

  it("backward of a non-scalar takes the output gradient", function()
    local x = leaf{{1, 2}, {3, 4}}
    local y = x * 3
    y:backward(ft.tensor{{1, 0}, {2, -1}})
    H.assert_close(x.grad, ft.tensor{{3, 0}, {6, -3}}, 0, "grad")
  end)

  it("a frozen subgraph records nothing", function()
    local w1 = ft.tensor{{1, 2}, {3, 4}}          -- frozen layer: no grad
    local w2 = leaf{{0.5, -1}, {2, 1}}            -- trained layer
    local x = ft.tensor{{1, 1}}
    local h = x:matmul(w1):relu()
    assert.is_false(h.requires_grad)
    assert.is_nil(h.grad_fn)
    local y = h:matmul(w2):sum()
    assert.is_true(y.requires_grad)
    y:backward()
    -- h = [4, 6]; dy/dw2[i][j] = h[i]
    H.assert_close(w2.grad, ft.tensor{{4, 4}, {6, 6}}, 0, "w2.grad")
    assert.is_nil(w1.grad)
  end)

  it("gradients flow only to the tensors that require them", function()
    local a = leaf{1, 2}
    local b = ft.tensor{3, 4}
    local c = leaf{5, 6}
    local y = (a * b + b * b):sum()
    y:backward()
    H.assert_close(a.grad, b, 0, "a.grad")
    assert.is_nil(b.grad)
    assert.is_nil(c.grad)
  end)

  it("backward goes through views", function()
    local x = leaf{{1, 2, 3}, {4, 5, 6}}
    local y = x:t():narrow(1, 2, 2):select(2, 1)   -- x[1][2], x[1][3]
    ;(y * ft.tensor{10, 20}):sum():backward()
    H.assert_close(x.grad, ft.tensor{{0, 10, 20}, {0, 0, 0}}, 0, "grad")
  end)

  it("requires_grad can be turned off again on a leaf", function()
    local x = leaf{1, 2}
    x.requires_grad = false
    assert.is_false((x * 2).requires_grad)
  end)
end)
