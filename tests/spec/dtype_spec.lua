-- The storage dtypes from Lua: names in every factory, float32 -> bfloat16 / float16 rounding
-- bit for bit against torch (tests/fixtures/half/convert.safetensors from tests/gen/half.py),
-- exact widening of every 16-bit pattern, t:to and its gradient, printing, element access,
-- views that keep the dtype, t:set_, byte counts, gradients of half leaves and the optimizers'
-- refusal of half parameters.
local ft = require "ft"
local H = require "helpers"

local conv = ft.safetensors.load(H.fixture("half/convert.safetensors"))
local ops = ft.safetensors.load(H.fixture("half/ops.safetensors"))

local HALVES = { bf16 = "bfloat16", f16 = "float16" }

local function isnan(v) return v ~= v end

-- The bits of the float32 v, and of v as a float16 (v must be a float16 value: exact).
local function f32_bits(v) return (string.unpack("<I4", string.pack("<f", v))) end
local function bits_of(v, key)
  local u = f32_bits(v)
  if key == "bf16" then return u >> 16 end
  local sign, exp, man = (u >> 31) << 15, (u >> 23) & 0xff, u & 0x7fffff
  if exp == 0xff then return sign | 0x7c00 | (man ~= 0 and 0x200 or 0) end
  if exp == 0 and man == 0 then return sign end
  local e = exp - 127
  if e >= -14 then return sign | ((e + 15) << 10) | (man >> 13) end
  return sign | ((0x800000 | man) >> (-e - 1))   -- a subnormal: the value in units of 2^-24
end

-- Values equal one by one (NaN where expected NaN, -0 where -0).
local function same_values(actual, expected, what)
  assert.same(expected:shape(), actual:shape(), what .. ": shape")
  local a, e = H.flat(actual), H.flat(expected)
  for i = 1, #e do
    local ok = (isnan(e[i]) and isnan(a[i])) or (a[i] == e[i] and 1 / a[i] == 1 / e[i])
    if not ok then error(("%s: element %d is %.9g, expected %.9g"):format(what, i, a[i], e[i]), 2) end
  end
end

describe("dtype names", function()
  it("every factory takes every name and t:dtype() gives the canonical one", function()
    local names = { float32 = "float32", float = "float32", int64 = "int64", long = "int64",
      bfloat16 = "bfloat16", float16 = "float16", half = "float16", float64 = "float64", double = "float64" }
    for name, canonical in pairs(names) do
      local o = { dtype = name }
      for what, make in pairs({
        tensor = function() return ft.tensor({ 1, 2 }, o) end,
        scalar = function() return ft.tensor(3, o) end,
        zeros = function() return ft.zeros(2, 3, o) end,
        ones = function() return ft.ones({ 2 }, o) end,
        empty = function() return ft.empty(2, o) end,
        full = function() return ft.full({ 2 }, 7, o) end,
        arange = function() return ft.arange(0, 4, o) end,
        zeros_like = function() return ft.zeros_like(ft.ones(2), o) end,
        ones_like = function() return ft.ones_like(ft.ones(2), o) end,
        to = function() return ft.ones(2):to(name) end,
      }) do
        assert.are.equal(canonical, make():dtype(), what .. " with dtype " .. name)
      end
      if canonical ~= "int64" then
        assert.are.equal(canonical, ft.randn(2, o):dtype())
        assert.are.equal(canonical, ft.rand(2, o):dtype())
        assert.are.equal(canonical, ft.randn_like(ft.ones(2), o):dtype())
      end
    end
    assert.are.equal("bfloat16", ft.randn_like(ft.ones(2, { dtype = "bfloat16" })):dtype())
    assert.are.same({ 0, 1, 2, 3 }, ft.arange(0, 4, { dtype = "float16" }):totable())
    assert.are.same({ 7, 7 }, ft.full({ 2 }, 7, { dtype = "bfloat16" }):totable())
  end)

  it("an unknown name is an error listing the valid ones", function()
    for _, make in ipairs({
      function() return ft.zeros(2, { dtype = "bf16" }) end,
      function() return ft.tensor({ 1 }, { dtype = "bf16" }) end,
      function() return ft.ones(2):to("bf16") end,
    }) do
      H.assert_mentions(H.error_of(make), "unknown dtype 'bf16'", "float32", "int64", "bfloat16", "float16",
        "half", "float64", "double")
    end
    H.assert_mentions(H.error_of(ft.randn, 2, { dtype = "int64" }), "ft.randn", "float tensors only")
  end)
end)

describe("float32 -> bfloat16 / float16", function()
  local x = conv.input
  for key, dt in pairs(HALVES) do
    it("rounds to nearest, ties to even, as torch (" .. dt .. ": ties, subnormals, overflow, NaN, -0)", function()
      local h = x:to(dt)
      assert.are.equal(dt, h:dtype())
      local widened = h:to("float32")
      same_values(widened, conv[key .. "_value"], dt .. " values")
      local v, bits = H.flat(widened), H.flat(conv[key .. "_bits"])
      for i = 1, #bits do
        if not isnan(v[i]) then   -- torch's NaN bits differ between its own code paths
          assert(bits_of(v[i], key) == bits[i], ("%s: input %.9g gave bits 0x%04x, torch 0x%04x"):format(
            dt, H.flat(x)[i], bits_of(v[i], key), bits[i]))
        end
      end
    end)

    it("rounds the same way from a table, a number and ft.full (" .. dt .. ")", function()
      local xs, want = H.flat(x), H.flat(conv[key .. "_value"])
      same_values(ft.tensor(xs, { dtype = dt }):to("float32"), conv[key .. "_value"], dt .. " from a table")
      for i = 1, #xs, 7 do
        local got = ft.tensor(xs[i], { dtype = dt }):item()
        assert(got == want[i] or (isnan(got) and isnan(want[i])), ("%s: %.9g -> %.9g, torch %.9g"):format(dt, xs[i], got, want[i]))
        assert.are.equal(ft.full({ 1 }, xs[i], { dtype = dt }):item() == got or isnan(got), true)
      end
    end)

    it("widens every " .. dt .. " pattern exactly", function()
      local all = conv[key .. "_all"]
      same_values(ft.tensor(all, { dtype = dt }):to("float32"), all, dt .. " patterns")
      same_values(ft.tensor(all, { dtype = dt }):to("float64"):to("float32"), all, dt .. " via float64")
    end)
  end

  it("float64 holds Lua's numbers and rounds once to float32", function()
    local t = ft.tensor({ 0.1, 1 / 3, 2 ^ 60 + 2 ^ 8 }, { dtype = "float64" })
    assert.are.same({ 0.1, 1 / 3, 2 ^ 60 + 2 ^ 8 }, t:totable())
    local f = t:to("float32"):totable()
    for i, v in ipairs({ 0.1, 1 / 3, 2 ^ 60 + 2 ^ 8 }) do
      assert.are.equal(string.unpack("<f", string.pack("<f", v)), f[i])
    end
  end)

  it("t:to of the tensor's own dtype is the tensor itself", function()
    for _, dt in ipairs({ "float32", "int64", "bfloat16", "float16", "float64" }) do
      local t = ft.zeros(2, { dtype = dt })
      assert.is_true(rawequal(t, t:to(dt)), dt)
    end
    local t = ft.zeros(2)
    assert.is_true(rawequal(t, t:float()))
    assert.are.equal("bfloat16", t:bfloat16():dtype())
    assert.are.equal("float16", t:half():dtype())
    assert.are.equal("float64", t:double():dtype())
    assert.are.equal("float32", t:half():float():dtype())
  end)
end)

describe("half tensors from Lua", function()
  local xs = { 0.1, 1 / 3, 1 + 2 ^ -8, 65519 }   -- 1 + 2^-8: a bfloat16 tie, rounds to 1
  local want = {}
  for key, dt in pairs(HALVES) do
    want[dt] = {}
    -- torch's rounding of these, from the fixture's inputs where they appear
    local input, value = H.flat(conv.input), H.flat(conv[key .. "_value"])
    for i, v in ipairs(input) do
      for j, x in ipairs(xs) do
        if string.pack("<f", v) == string.pack("<f", x) then want[dt][j] = value[i] end
      end
    end
  end

  it("print their values, dtype and shape", function()
    for _, dt in pairs(HALVES) do
      local s = tostring(ft.tensor({ 0.1, 1 / 3 }, { dtype = dt }))
      H.assert_mentions(s, ("%.4f"):format(want[dt][1]), ("%.4f"):format(want[dt][2]),
        "[" .. dt .. " tensor of shape [2]]")
      H.assert_mentions(tostring(ft.tensor(2.5, { dtype = dt })), "2.5", "[" .. dt .. " tensor of shape []]")
      local big = tostring(ft.zeros(40, 40, { dtype = dt }))
      H.assert_mentions(big, "...", "[" .. dt .. " tensor of shape [40,40]]")
    end
    H.assert_mentions(tostring(ft.tensor({ 0.1 }, { dtype = "float64" })), "0.1000", "[float64 tensor of shape [1]]")
    local w = ft.zeros(2, { dtype = "bfloat16", requires_grad = true })
    H.assert_mentions(tostring(w), "[bfloat16 tensor of shape [2], requires_grad]")
  end)

  it("read and write elements in their dtype: item, t[i], totable", function()
    for _, dt in pairs(HALVES) do assert.are.equal(#xs, #want[dt], "every value is in the fixture") end
    assert.are.equal(1.0, want.bfloat16[3])
    for _, dt in pairs(HALVES) do
      local t = ft.tensor({ 0, 0, 0, 0 }, { dtype = dt })
      for i, x in ipairs(xs) do t[i] = x end                -- assignment rounds
      assert.are.same(want[dt], t:totable())
      for i = 1, #xs do
        assert.are.equal(want[dt][i], t[i]:item())
        assert.are.equal(dt, t[i]:dtype())
      end
      local m = ft.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = dt })
      m[2] = ft.tensor({ xs[1], xs[2] })                    -- a row from a float32 tensor
      assert.are.same({ { 1, 2 }, { want[dt][1], want[dt][2] } }, m:totable())
    end
  end)

  it("keep their dtype through views, copies and index reads", function()
    for _, dt in pairs(HALVES) do
      local t = ft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, { dtype = dt })
      local ids = ft.tensor({ 2, 1 }, { dtype = "int64" })
      local kept = {
        view = t:view(3, 2), reshape = t:reshape(6), t = t:t(), transpose = t:transpose(1, 2),
        permute = t:permute(2, 1), narrow = t:narrow(2, 2, 2), select = t:select(1, 2), index = t[1],
        expand = t:narrow(1, 1, 1):expand(4, 3), squeeze = t:unsqueeze(1):squeeze(1),
        contiguous = t:t():contiguous(), clone = t:clone(), detach = t:detach(),
        cat = ft.cat({ t, t }, 1), stack = ft.stack({ t, t }), index_select = t:index_select(1, ids),
        gather = t:gather(2, ft.tensor({ { 3 }, { 1 } }, { dtype = "int64" })),
        split = t:split(1, 2)[2], flatten = t:flatten(),
      }
      for what, v in pairs(kept) do assert.are.equal(dt, v:dtype(), what) end
      assert.are.same({ { 1, 4 }, { 2, 5 }, { 3, 6 } }, kept.contiguous:totable())
      assert.are.same({ { 4, 5, 6 }, { 1, 2, 3 } }, kept.index_select:totable())
      assert.are.same({ { 3 }, { 4 } }, kept.gather:totable())
      local c = ft.zeros(2, 3, { dtype = dt })
      c:copy_(ft.tensor({ xs[1], xs[2], xs[3] }))           -- copy_ from float32 rounds, broadcasting
      assert.are.same({ want[dt][1], want[dt][2], want[dt][3] }, c[2]:totable())
      c:fill_(xs[2])
      assert.are.same({ want[dt][2], want[dt][2], want[dt][2] }, c[1]:totable())
      -- a mix joins as float32
      assert.are.equal("float32", ft.cat({ t, t:float() }, 1):dtype())
    end
  end)

  it("count their bytes by element size", function()
    assert.are.equal(2, ft.zeros(1, { dtype = "bfloat16" }):element_size())
    assert.are.equal(2, ft.zeros(1, { dtype = "float16" }):element_size())
    assert.are.equal(8, ft.zeros(1, { dtype = "float64" }):element_size())
    assert.are.equal(12, ft.zeros(2, 3, { dtype = "bfloat16" }):nbytes())
    assert.are.equal(24, ft.zeros(2, 3):nbytes())
    assert.are.equal(48, ft.zeros(2, 3, { dtype = "float64" }):nbytes())
    assert.are.equal(6, ft.zeros(2, 3, { dtype = "float16" }):narrow(2, 1, 1):expand(2, 3):narrow(1, 1, 1):nbytes())
    collectgarbage()
    local before = ft.live_bytes()
    local t = ft.empty(1000, 1000, { dtype = "bfloat16" })
    assert.are.equal(2000000, ft.live_bytes() - before)
    t = nil
  end)
end)

describe("t:set_", function()
  it("makes t share src's storage, offset and strides", function()
    local p = ft.zeros(2, 3, { dtype = "bfloat16" })
    p.requires_grad = true
    local base = ft.tensor({ { 9, 9, 9, 9 }, { 1, 2, 3, 9 }, { 4, 5, 6, 9 } }, { dtype = "bfloat16" })
    local src = base:narrow(1, 2, 2):narrow(2, 1, 3)        -- a strided view at an offset
    assert.is_true(rawequal(p, p:set_(src)))
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, p:totable())
    assert.is_true(p.requires_grad)
    ft.no_grad(function() base:fill_(7) end)
    assert.are.same({ { 7, 7, 7 }, { 7, 7, 7 } }, p:totable())   -- no copy: the storage is shared
    collectgarbage()
    local before = ft.live_bytes()
    local q = ft.zeros(1000, 1000)
    q:set_(ft.ones(1000, 1000))
    collectgarbage()
    assert.is_true(ft.live_bytes() - before <= 4000000, "the old storage is freed")
    assert.are.equal(1, q[1000][1000]:item())
  end)

  it("takes a float source's dtype (as torch's t.data = src), dropping a gradient of the old dtype", function()
    local p = ft.zeros(2, 3)
    p.requires_grad = true
    p.grad = ft.ones(2, 3)
    local src = ft.tensor({ { 1.5, 2, 3 }, { 4, 5, 6 } }, { dtype = "bfloat16" })
    p:set_(src)
    assert.are.equal("bfloat16", p:dtype())
    assert.are.same({ { 1.5, 2, 3 }, { 4, 5, 6 } }, p:totable())
    assert.is_true(p.requires_grad)
    assert.is_nil(p.grad)
  end)

  it("refuses another shape, an integer dtype change and a tensor with a grad_fn", function()
    local t = ft.zeros(2, 3, { dtype = "bfloat16" })
    H.assert_mentions(H.error_of(function() t:set_(ft.zeros(3, 2, { dtype = "bfloat16" })) end),
      "ft.set_", "[2,3]", "[3,2]", "shape")
    H.assert_mentions(H.error_of(function() t:set_(ft.zeros(2, 3, { dtype = "int64" })) end), "ft.set_",
      "bfloat16", "int64", "float dtypes")
    local x = ft.ones(2, 3, { requires_grad = true })
    local y = x * 2
    H.assert_mentions(H.error_of(function() y:set_(ft.ones(2, 3)) end), "ft.set_", "grad_fn", "leaf")
    H.assert_mentions(H.error_of(function() t:set_(1) end), "tensor expected")
  end)
end)

describe("gradients of half tensors", function()
  it("a bfloat16 / float16 / float64 leaf may require grad, an int64 one may not", function()
    for _, dt in ipairs({ "bfloat16", "float16", "float64" }) do
      local w = ft.ones(2, { dtype = dt })
      w.requires_grad = true
      assert.is_true(w.requires_grad)
    end
    H.assert_mentions(H.error_of(function() ft.ones(2, { dtype = "int64" }).requires_grad = true end), "int64")
  end)

  it("accumulate into a half leaf in its dtype; float32 leaves keep float32 grads", function()
    for _, dt in ipairs({ "bfloat16", "float16", "float64" }) do
      local w = ft.tensor({ 1, 2, 3 }, { dtype = dt, requires_grad = true })
      for _ = 1, 2 do ((w * 2):sum() + (w:to("float32") * 0.5):sum()):backward() end
      assert.are.equal(dt, w.grad:dtype())
      assert.are.same({ 5, 5, 5 }, w.grad:totable())
      local x = ft.tensor({ 1, 2 }, { requires_grad = true })
      x:to(dt):to("float32"):sum():backward()
      x:to(dt):sum():backward()
      assert.are.equal("float32", x.grad:dtype())
      assert.are.same({ 2, 2 }, x.grad:totable())
      w.grad = ft.tensor({ 0.1, 0.2, 0.3 })                 -- an assigned grad takes the leaf's dtype
      assert.are.equal(dt, w.grad:dtype())
    end
  end)

  for key, dt in pairs(HALVES) do
    it("through t:to are the incoming gradient rounded to the source dtype (" .. dt .. ", torch)", function()
      local c = "to_" .. key .. "."
      local x = ft.tensor(ops[c .. "x"], { dtype = dt, requires_grad = true })
      x:to("float32"):backward(ops[c .. "gy"])
      assert.are.equal(dt, x.grad:dtype())
      same_values(x.grad:to("float32"), ops[c .. "dx"], "half leaf's grad")
      local x32 = ops[c .. "x"]:clone():requires_grad_()
      x32:to(dt):backward(ops[c .. "gy"]:to(dt))
      assert.are.equal("float32", x32.grad:dtype())
      same_values(x32.grad, ops[c .. "dx32"], "float32 leaf's grad")
      local x32b = ops[c .. "x"]:clone():requires_grad_()
      x32b:to(dt):backward(ops[c .. "gy"])                  -- a float32 grad for a half root is rounded
      same_values(x32b.grad, ops[c .. "dx32"], "float32 grad for a half root")
    end)
  end
end)

describe("optimizers and half parameters", function()
  it("refuse a bfloat16 / float16 / float64 parameter, naming it, its shape and dtype", function()
    for _, dt in ipairs({ "bfloat16", "float16", "float64" }) do
      for _, name in ipairs({ "SGD", "Adam", "AdamW" }) do
        local params = { ft.zeros(3, { requires_grad = true }), ft.zeros(4, 3, { dtype = dt, requires_grad = true }) }
        local msg = H.error_of(ft.optim[name], params, { lr = 0.1 })
        H.assert_mentions(msg, "ft.optim." .. name, "params[2]", "[4,3]", dt, "float32 parameters",
          "adapters are float32", ':to("float32")')
      end
    end
    -- clip_grad_norm and zero_grad over all of a model's parameters pass over a frozen half base
    local p = ft.tensor({ 3, 4 }, { requires_grad = true })
    p.grad = ft.tensor({ 3, 4 })
    local frozen = ft.zeros(2, 2, { dtype = "bfloat16" })
    assert.are.equal(5, ft.optim.clip_grad_norm({ frozen, p }, 1))
    assert(math.abs(p.grad[1]:item() - 0.6) < 1e-6)
    frozen.requires_grad = true
    frozen.grad = ft.ones(2, 2)
    H.assert_mentions(H.error_of(ft.optim.clip_grad_norm, { frozen, p }, 1), "params[1]", "[2,2]", "bfloat16")
    -- the fused kernels refuse them too
    local p = ft.zeros(4, 3, { dtype = "bfloat16", requires_grad = true })
    local msg = H.error_of(ft._optim.sgd_step, { ft.zeros(2), p }, { {}, {} }, { lr = 0.1 })
    H.assert_mentions(msg, "params[2]", "[4,3]", "bfloat16", ':to("float32")')
  end)
end)
