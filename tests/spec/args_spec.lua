-- The C bindings' arguments: sizes whose products pass int64, out-of-range and wrong-form
-- arguments, misspelled options and NaN into int64 tensors are errors at the call that name
-- the function and the user's own numbers (1-based), never a wrapped size, a hang or garbage.
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional

local err = H.error_of
local mentions = H.assert_mentions

describe("sizes", function()
  it("refuse shapes with more than 2^63 elements", function()
    mentions(err(ft.ones, 1 << 32, 1 << 32), "ft.ones: shape [4294967296,4294967296] has more than 2^63 elements")
    mentions(err(ft.zeros, {0, 1 << 40, 1 << 40}), "ft.zeros", "more than 2^63 elements")
    mentions(err(function() return ft.ones(1):expand(1 << 40, 1 << 40) end), "ft.expand", "more than 2^63")
  end)

  it("refuse tensors the allocator cannot serve, at once", function()
    local t0 = ft.clock()
    mentions(err(ft.zeros, 1 << 61), "ft.zeros", "more than 2^62 bytes")
    mentions(err(ft.zeros, 1 << 59), "ft.zeros", "out of memory")
    assert.is_true(ft.clock() - t0 < 5)
  end)

  it("keep narrow inside the tensor and report the user's numbers", function()
    local t = ft.ones(5)
    mentions(err(function() return t:narrow(1, 2, math.maxinteger) end),
             "ft.narrow: start 2 with length 9223372036854775807 does not fit in size 5 of dim 1")
    mentions(err(function() return t:narrow(1, 6, 1) end), "start 6 with length 1")
    mentions(err(function() return t:narrow(1, 0, 1) end), "start 0 with length 1")
    assert.are.equal(0, t:narrow(1, 6, 0):numel())   -- an empty view at the end is fine
    local big = ft.ones(1, 1):expand(3, 1 << 33)   -- a view: no memory
    mentions(err(function() return big:narrow(2, 1 << 32, 1 << 33) end),
             "start 4294967296 with length 8589934592 does not fit in size 8589934592 of dim 2")
    mentions(err(function() return ft.ones(2, 3):select(2, -4) end), "ft.select: index -4 out of range for size 3 of dim 2")
    mentions(err(function() return ft.ones(2, 3):select(1, 1 << 40) end), "index 1099511627776")
  end)

  it("are integers, given as numbers or one table", function()
    mentions(err(ft.zeros, "3"), "ft.zeros: sizes must be integers", "string")
    mentions(err(ft.ones, 2, 1.5), "ft.ones: size 1.5 (argument 2) is not an integer")
    mentions(err(ft.zeros, 2, -3), "ft.zeros: negative size in shape [2,-3]")
    mentions(err(ft.zeros, 2, {}, 3), "ft.zeros: unexpected argument 3")
    mentions(err(ft.randn, {2, 0.5}), "ft.randn: size 0.5 (entry 2 of the shape) is not an integer")
    mentions(err(ft.zeros, {2, "3"}), "ft.zeros: the shape's entries must be integers, got a string (entry 2)")
    -- a string is never a size, not even "3", wherever a shape is read; the message quotes it
    mentions(err(ft.zeros, {"3"}), "ft.zeros: the shape's entries must be integers, got a string (entry 1): \"3\"")
    mentions(err(ft.zeros, "3"), "ft.zeros: sizes must be integers or one table of them, got a string (argument 1): \"3\"")
    mentions(err(ft.full, {"3"}, 1), "ft.full: the shape's entries must be integers, got a string (entry 1): \"3\"")
    mentions(err(function() return ft.ones(6):view({2, "3"}) end), "ft.view: the shape's entries", "(entry 2): \"3\"")
    mentions(err(function() return ft.ones(6):reshape(2, "3") end), "ft.reshape: sizes must be integers", "(argument 3): \"3\"")
    mentions(err(function() return ft.ones(6):view("6") end), "ft.view: sizes must be integers", "\"6\"")
    mentions(err(function() return ft.ones(1, 3):expand({"2", 3}) end), "ft.expand: the shape's entries", "\"2\"")
    mentions(err(function() return ft.ones(6):reshape(2, 1.5) end), "ft.reshape: size 1.5 (argument 3) is not an integer")
    assert.are.same({2, 3}, ft.ones(6):view({2, 3.0}):shape())   -- views take integral floats, as before
    mentions(err(ft.arange, 0, 1e30), "ft.arange: 0 to 1e+30 in steps of 1 is more than 2^62 elements")
    mentions(err(ft.arange, 0, 3, 0 / 0), "ft.arange: cannot go from 0 to 3")
    assert.are.same({2, 3}, ft.zeros(2, 3):shape())
    assert.are.same({2, 3}, ft.zeros({2, 3}, {dtype = "int64"}):shape())
  end)
end)

describe("options of the creation functions", function()
  it("are checked against dtype and requires_grad", function()
    mentions(err(ft.zeros, 2, { dtyp = "int64" }), "ft.zeros: unknown option 'dtyp'", "did you mean 'dtype'?")
    mentions(err(ft.ones, { 2 }, { requires_gard = true }), "ft.ones", "did you mean 'requires_grad'?")
    mentions(err(ft.tensor, { 1, 2 }, { dtyp = "int64" }), "ft.tensor: unknown option 'dtyp'")
    mentions(err(ft.full, { 2 }, 7, { dtpe = "int64" }), "ft.full: unknown option 'dtpe'")
    mentions(err(ft.arange, 0, 4, { dtyp = "float32" }), "ft.arange: unknown option 'dtyp'")
    mentions(err(ft.zeros_like, ft.ones(2), { dtyp = "int64" }), "ft.zeros_like: unknown option")
    mentions(err(ft.randint, 1, 6, { 3 }, { dtype = "float32" }), "ft.randint: makes int64 tensors only")
    mentions(err(ft.zeros, 2, { requires_grad = 1 }), "ft.zeros: option 'requires_grad' must be a boolean, got number")
    assert.are.equal("int64", ft.arange(0, 4, { dtype = "int64" }):dtype())
    assert.is_true(ft.zeros(2, { requires_grad = true }).requires_grad)
  end)
end)

describe("int64 tensors", function()
  it("take only integers", function()
    local nan, inf = 0 / 0, math.huge
    mentions(err(ft.tensor, { 1, nan }, { dtype = "int64" }), "ft.tensor", "is not an integer")
    mentions(err(ft.tensor, { { 1 }, { 2.5 } }, { dtype = "int64" }), "ft.tensor: 2.5 is not an integer")
    mentions(err(ft.tensor, inf, { dtype = "int64" }), "ft.tensor: inf is not an integer")
    mentions(err(ft.tensor, { 1e30 }, { dtype = "int64" }), "is not an integer")
    mentions(err(ft.full, { 2 }, nan, { dtype = "int64" }), "ft.full", "is not an integer")
    local t = ft.tensor({ 1, 2, 3 }, { dtype = "int64" })
    mentions(err(function() t:fill_(1.5) end), "ft.fill_: 1.5 is not an integer")
    mentions(err(function() t[2] = nan end), "is not an integer")
    mentions(err(function() return t:masked_fill(ft.ones(3), inf) end), "ft.masked_fill", "is not an integer")
    mentions(err(function() return ft.tensor({ 1, nan }):long() end), "ft.long: float value", "has no int64 value")
    mentions(err(function() t:copy_(ft.tensor({ 1, 2, inf })) end), "ft.copy_: float value inf has no int64 value")
    mentions(err(ft.tensor, ft.tensor({ 1e30 }), { dtype = "int64" }), "ft.tensor: float value 1e+30 has no int64 value")
    assert.are.same({ -1, 2 }, ft.tensor({ -1.7, 2.5 }):long():totable())   -- truncation, as torch
    assert.are.same({ 1, 2, 3 }, t:totable())   -- refused writes changed nothing
    assert.are.same({ 2, 2.0 }, { ft.tensor({ 2.0 }, { dtype = "int64" }):totable()[1], 2.0 })
    -- arithmetic wraps around as torch's does
    local big = ft.tensor({ math.maxinteger }, { dtype = "int64" })
    assert.are.equal(math.mininteger, (big + 1):item())
    assert.are.equal(-2, (big * 2):item())
    -- comparisons with a non-integer still work (in float32)
    assert.are.same({ 0, 0, 0 }, t:eq(1.5):totable())
    assert.are.same({ 1, 1, 0 }, t:lt(2.5):totable())
  end)
end)

describe("indexing", function()
  it("takes integer positions only", function()
    local t = ft.ones(3, 2)
    mentions(err(function() return t[1.5] end), "ft: tensor index 1.5 is not an integer")
    mentions(err(function() t[1.5] = 0 end), "ft: tensor index 1.5 is not an integer")
    assert.are.same({ 1, 1 }, t[2.0]:totable())
    mentions(err(function() t[4] = 0 end), "index 4 out of range for dim 1 of size 3")
  end)
end)

describe("threads", function()
  it("are set within 1..256", function()
    local n = ft.get_num_threads()
    mentions(err(ft.set_num_threads, 0), "ft.set_num_threads: n must be in 1..256, got 0")
    mentions(err(ft.set_num_threads, 100000), "ft.set_num_threads: n must be in 1..256, got 100000")
    mentions(err(ft.set_num_threads, -1), "got -1")
    assert.are.equal(n, ft.get_num_threads())
    ft.set_num_threads(2)
    assert.are.equal(2, ft.get_num_threads())
  end)
end)

describe("reductions", function()
  local x = ft.tensor { { 1, 2, 3 }, { 4, 5, 6 } }

  it("take dims as integers or a list of them, never a table of options", function()
    mentions(err(function() return x:sum({ dim = 2 }) end), "ft.sum: dims must be an integer or a list of integers")
    mentions(err(function() return x:mean({ 1, dim = 2 }) end), "ft.mean: dims must be")
    mentions(err(function() return x:sum(1.5) end), "ft.sum: dims must be an integer", "1.5")
    mentions(err(function() return x:sum("2") end), "ft.sum: dims must be an integer")
    mentions(err(function() return x:sum({}) end), "ft.sum: dims must be")
    assert.are.same({ 6, 15 }, x:sum(2):totable())
    assert.are.same({ 6, 15 }, x:sum({ 2 }):totable())
    assert.are.equal(21, x:sum({ 1, 2 }):item())
  end)

  it("take keepdim as a boolean", function()
    mentions(err(function() return x:sum(2, 1) end), "ft.sum: keepdim must be a boolean, got number")
    mentions(err(function() return x:max(2, "yes") end), "ft.max: keepdim must be a boolean")
    mentions(err(function() return x:argmax(2, {}) end), "ft.argmax: keepdim must be a boolean")
    assert.are.same({ 2, 1 }, x:sum(2, true):shape())
  end)
end)

describe("cat and stack", function()
  local a, b = ft.ones(2, 3), ft.zeros(2, 3)

  it("join along dim 1 when no dim is given", function()
    assert.are.same({ 4, 3 }, ft.cat({ a, b }):shape())
    assert.are.same({ 2, 2, 3 }, ft.stack({ a, b }):shape())
    assert.are.same({ 2, 6 }, ft.cat({ a, b }, 2):shape())
    assert.are.same({ 2, 3, 2 }, ft.stack({ a, b }, -1):shape())
  end)

  it("name the tensors and dims 1-based", function()
    mentions(err(ft.cat, { a, a, ft.ones(2, 4) }),
             "ft.cat: sizes must match except in dim 1: [2,3] (tensor 1) and [2,4] (tensor 3)")
    mentions(err(ft.cat, { a, ft.ones(3, 3) }, 2), "except in dim 2", "(tensor 2)")
    mentions(err(ft.stack, { a, ft.ones(3) }), "ft.stack: expected tensors of equal shape", "(tensor 2)")
    mentions(err(ft.cat, { a, ft.tensor(1) }), "ft.cat: tensor 2 of the list is 0-dim")
    mentions(err(ft.cat, { a, 3 }), "ft.cat: element 2 of the list is a number")
    mentions(err(ft.cat, a), "ft.cat: expected a list of tensors")
  end)
end)

describe("randint", function()
  it("reports the range as the user wrote it", function()
    mentions(err(ft.randint, 5, 3, { 2 }), "ft.randint: low 5 is greater than high 3")
    mentions(err(ft.randint, 1, math.maxinteger, { 2 }), "ft.randint: high must be below math.maxinteger")
    local r = ft.randint(4, 4, { 3 })
    assert.are.same({ 4, 4, 4 }, r:totable())
    mentions(err(ft.randperm, -1), "ft.randperm: n must be 0 or more, got -1")
  end)
end)

describe("functional options and values", function()
  local x = ft.randn(1, 2, 5, 5)
  local w = ft.randn(3, 2, 3, 3)

  it("raise their own message for out-of-range numbers", function()
    mentions(err(F.dropout, x, 1.5), "ft.dropout", "1.5")
    -- the C kernel's own check, behind F.dropout's
    mentions(err(ft._F.dropout, x, 1.5), "ft.dropout: probability must be in [0, 1], got 1.5")
    mentions(err(ft._F.dropout, x, 0 / 0), "ft.dropout: probability must be in [0, 1]")
    mentions(err(ft._F.dropout, x, 0.5, 1), "ft.dropout: training must be a boolean")
    local logits, y = ft.randn(4, 3), ft.tensor({ 1, 2, 3, 1 }, { dtype = "int64" })
    mentions(err(F.cross_entropy, logits, y, { label_smoothing = 2 }),
             "ft.cross_entropy: label_smoothing must be in [0, 1], got 2")
    mentions(err(F.cross_entropy, logits, y, { label_smoothing = "a lot" }), "must be a number")
    mentions(err(F.conv2d, x, w, { stride = 0 }), "ft.conv2d: stride must be in 1..")
    mentions(err(F.conv2d, x, w, { padding = -1 }), "ft.conv2d: padding must be in 0..")
    mentions(err(F.conv2d, x, w, { stride = 1 << 40 }), "ft.conv2d: stride must be in 1..1073741824, got 1099511627776")
    mentions(err(F.conv2d, x, w, { groups = 1.5 }), "ft.conv2d: groups must be an integer")
    mentions(err(F.max_pool2d, x, 0), "ft.max_pool2d: kernel size must be in 1..")
    mentions(err(F.avg_pool2d, x, 2, { ceil_mode = 1 }), "ft.avg_pool2d: option 'ceil_mode' must be a boolean")
    mentions(err(F.batch_norm, x, ft.zeros(2), ft.ones(2), { training = true, momentum = 2 }), "ft.batch_norm", "2")
    mentions(err(ft._F.batch_norm, x, ft.zeros(2), ft.ones(2), nil, nil, true, 2),
             "ft.batch_norm: momentum must be in [0, 1], got 2")
    mentions(err(ft._F.batch_norm, x, ft.zeros(2), ft.ones(2), nil, nil, "yes"), "ft.batch_norm: training must be a boolean")
    mentions(err(ft._F.layer_norm, x, 5, nil, nil, -1), "ft.layer_norm: eps must be in [0, inf], got -1")
    mentions(err(ft._F.scaled_dot_product_attention, ft.randn(1, 1, 2, 4), ft.randn(1, 1, 2, 4), ft.randn(1, 1, 2, 4),
                 nil, 1), "ft.scaled_dot_product_attention: causal must be a boolean")
  end)

  it("refuse misspelled options, naming the nearest one", function()
    mentions(err(F.conv2d, x, w, { paddding = 1 }), "ft.conv2d: unknown option 'paddding'", "did you mean 'padding'?")
    mentions(err(F.conv2d, x, w, nil, { strid = 2 }), "ft.conv2d: unknown option 'strid'")
    mentions(err(F.max_pool2d, x, 2, { count_include_pad = false }), "ft.max_pool2d: unknown option 'count_include_pad'")
    mentions(err(F.avg_pool2d, x, 2, { paddin = 1 }), "ft.avg_pool2d", "did you mean 'padding'?")
    local logits, y = ft.randn(4, 3), ft.tensor({ 1, 2, 3, 1 }, { dtype = "int64" })
    mentions(err(F.cross_entropy, logits, y, { ignore_idx = 1 }), "ft.cross_entropy", "did you mean 'ignore_index'?")
    mentions(err(F.mse_loss, logits, logits, { reduce = "sum" }), "ft.mse_loss: unknown option 'reduce'")
    mentions(err(F.gelu, logits, { approx = "tanh" }), "ft.gelu: unknown option 'approx'")
    mentions(err(function() logits:sum():backward({ retain = true }) end), "ft.backward: unknown option 'retain'")
    -- the spelled-right forms work
    assert.are.same({ 1, 3, 5, 5 }, F.conv2d(x, w, { padding = 1 }):shape())
    assert.are.same({ 1, 2, 2, 2 }, F.avg_pool2d(x, 2, { ceil_mode = false }):shape())
  end)
end)

describe("gelu and silu", function()
  it("have one binding each, shared by the method and ft.nn.functional", function()
    local t = ft.tensor { -1, 0, 2 }
    assert.are.equal(ft.Tensor.gelu, F.gelu)
    assert.are.equal(ft.Tensor.silu, F.silu)
    assert.are.same(t:gelu("tanh"):totable(), F.gelu(t, { approximate = "tanh" }):totable())
    mentions(err(F.gelu, t, "fast"), "ft.gelu: approximate must be 'none' or 'tanh', got 'fast'")
    mentions(err(function() return t:gelu(true) end), "ft.gelu: approximate must be")
  end)
end)

describe("scaled_dot_product_attention", function()
  -- query 2 of each head may see no key: zeros from the kernel and from the written-out path
  local function run(dropout_p)
    ft.manual_seed(7)
    local q, k, v = ft.randn(1, 2, 3, 4), ft.randn(1, 2, 5, 4), ft.randn(1, 2, 5, 4)
    for _, t in ipairs { q, k, v } do t.requires_grad = true end
    local mask = ft.ones(3, 5, { dtype = "int64" })
    mask[2] = 0
    local out = F.scaled_dot_product_attention(q, k, v, { attn_mask = mask, dropout_p = dropout_p })
    out:sum():backward()
    return out, { q.grad, k.grad, v.grad }
  end

  for _, p in ipairs { 0, 0.25 } do
    it("gives zeros and finite gradients for a query that sees no key (dropout " .. p .. ")", function()
      local out, grads = run(p)
      H.assert_close(out:select(3, 2), ft.zeros(1, 2, 4), 0, "masked query")
      assert.is_true(out:select(3, 1):abs():sum():item() > 0)
      for _, g in ipairs(grads) do
        local s = g:abs():sum():item()
        assert.is_true(s == s and s < math.huge, "gradient not finite")
      end
      H.assert_close(grads[1]:select(3, 2), ft.zeros(1, 2, 4), 0, "the masked query's gradient")
    end)
  end

  it("softmax over -inf only gives zeros, and NaN stays NaN", function()
    assert.are.same({ 0, 0 }, ft.tensor({ -math.huge, -math.huge }):softmax(1):totable())
    local y = ft.tensor({ 0 / 0, -math.huge }):softmax(1):totable()
    assert.is_true(y[1] ~= y[1])
  end)
end)
