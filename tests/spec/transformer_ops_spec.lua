-- The transformer ops through the Lua API against PyTorch (tests/gen/transformer.py
-- -> fixtures/transformer.h5): F.rms_norm, F.rope and F.scaled_dot_product_attention.
--
-- For each case the float inputs become fresh leaves (requires_grad where the fixture has a
-- grad_<input>), the op runs, and the output and the gradients of sum(out * g) are compared
-- with the reference: max abs error <= 1e-5 * max(1, max abs of the reference).
-- Inputs named "*_bthd" hold [B,T,H,D]; the op receives their [B,H,T,D] transpose (a
-- non-contiguous view), under the name without the suffix.
local ft = require "ft"
local H = require "helpers"
local F = ft.nn.functional

local RTOL = 1e-5
local cases = H.load_cases("transformer.h5")

local function is_output_name(k)
  return k == "out" or k == "g" or k:match("^grad_")
end

local used = {}

-- Runs fn(args) on case `name` and compares the output and every gradient.
local function check_case(name, fn)
  used[name] = true
  local c = assert(cases[name], "no fixture case " .. name .. " in transformer.h5")
  local args, leaves = {}, {}
  for k, v in pairs(c) do
    if not is_output_name(k) then
      local leaf = v:detach()
      if c["grad_" .. k] then leaf.requires_grad = true end
      leaves[k] = leaf
      local base = k:match("^(.*)_bthd$")
      if base then
        args[base] = leaf:transpose(2, 3)
        assert.is_false(args[base]:is_contiguous())
      else
        args[k] = leaf
      end
    end
  end
  local out = fn(args)
  H.assert_close(out, c.out, RTOL, name .. " out")
  local loss = (out * c.g):sum()
  assert.is_true(loss.requires_grad, name .. ": output does not require grad")
  loss:backward()
  for k, leaf in pairs(leaves) do
    local expected = c["grad_" .. k]
    if expected then
      assert(leaf.grad ~= nil, name .. ": no gradient reached input " .. k)
      H.assert_close(leaf.grad, expected, RTOL, name .. " grad_" .. k)
    else
      assert.is_nil(leaf.grad, name .. ": input " .. k .. " got a gradient")
    end
  end
end

local function case(name, fn)
  it(name, function() check_case(name, fn) end)
end

describe("rms_norm against HF's LlamaRMSNorm", function()
  case("rms_norm", function(a) return F.rms_norm(a.x, 32, a.weight, { eps = 1e-6 }) end)
  case("rms_norm_noweight", function(a) return F.rms_norm(a.x, { 16 }, { eps = 1e-5 }) end)
  case("rms_norm_2d", function(a) return F.rms_norm(a.x, { 4, 6 }, a.weight, { eps = 1e-6 }) end)

  it("names the shapes on a mismatch", function()
    local msg = H.error_of(F.rms_norm, ft.randn(2, 8), 6)
    H.assert_mentions(msg, "ft.rms_norm", "[6]", "[2,8]")
    msg = H.error_of(F.rms_norm, ft.randn(2, 8), 8, ft.randn(6))
    H.assert_mentions(msg, "ft.rms_norm", "weight [6]")
  end)
end)

describe("rope against HF's apply_rotary_pos_emb", function()
  case("rope", function(a) return F.rope(a.x, a.cos, a.sin) end)
  case("rope_strided", function(a) return F.rope(a.x, a.cos, a.sin) end)

  it("names the shapes on odd or mismatched dims", function()
    local msg = H.error_of(F.rope, ft.randn(2, 4, 5), ft.randn(4, 5), ft.randn(4, 5))
    H.assert_mentions(msg, "ft.rope", "[2,4,5]", "even")
    msg = H.error_of(F.rope, ft.randn(2, 4, 6), ft.randn(3, 6), ft.randn(3, 6))
    H.assert_mentions(msg, "ft.rope", "cos [3,6]", "[2,4,6]")
  end)
end)

describe("scaled_dot_product_attention against the explicit softmax(q k^T * scale + mask) v", function()
  case("sdpa_causal", function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = true }) end)
  case("sdpa_gqa_cache", function(a)
    return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = "lower_right" })
  end)
  case("sdpa_float_mask", function(a)
    return F.scaled_dot_product_attention(a.q, a.k, a.v, { attn_mask = a.mask, scale = 0.25 })
  end)
  case("sdpa_bool_mask", function(a)
    return F.scaled_dot_product_attention(a.q, a.k, a.v, { attn_mask = a.mask })
  end)
  case("sdpa_strided", function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = true }) end)
  case("sdpa_3d_upper_left", function(a)
    return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = true })
  end)
  case("sdpa_long", function(a) return F.scaled_dot_product_attention(a.q, a.k, a.v, { is_causal = true }) end)

  it("takes a float 0/1 mask with mask_is_bool", function()
    check_case("sdpa_bool_mask", function(a)
      return F.scaled_dot_product_attention(a.q, a.k, a.v, { attn_mask = a.mask:float(), mask_is_bool = true })
    end)
  end)

  it("gives zeros, not NaN, for a query that may see no key", function()
    local c = cases.sdpa_bool_mask
    local out = F.scaled_dot_product_attention(c.q, c.k, c.v, { attn_mask = c.mask })
    -- the fixture hides every key from head 3, query 4 (1-based)
    local row = out:select(2, 3):select(2, 4)
    H.assert_close(row, ft.zeros(1, 8), 0, "hidden row")
  end)

  -- attention dropout takes the explicit path: with p tiny it must match the fused kernel's
  -- reference (GQA, the bottom-right diagonal and masks included)
  it("agrees on the explicit path used for dropout", function()
    check_case("sdpa_gqa_cache", function(a)
      return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = "lower_right", dropout_p = 1e-12 })
    end)
    check_case("sdpa_float_mask", function(a)
      return F.scaled_dot_product_attention(a.q, a.k, a.v, { attn_mask = a.mask, scale = 0.25, dropout_p = 1e-12 })
    end)
    check_case("sdpa_3d_upper_left", function(a)
      return F.scaled_dot_product_attention(a.q, a.k, a.v, { causal = true, dropout_p = 1e-12 })
    end)
  end)

  it("takes the written-out path for other shapes, with the same masking", function()
    local c = cases.sdpa_gqa_cache   -- q [2,6,3,8], k, v [2,2,10,8]
    local k = c.k:unsqueeze(3):expand(2, 2, 3, 10, 8):reshape(2, 6, 10, 8)
    local v = c.v:unsqueeze(3):expand(2, 2, 3, 10, 8):reshape(2, 6, 10, 8)
    local out = F.scaled_dot_product_attention(c.q:unsqueeze(1), k:unsqueeze(1), v:unsqueeze(1),
                                               { causal = "lower_right" })
    H.assert_close(out:squeeze(1), c.out, RTOL, "5-D")
  end)

  it("names the shapes in its errors", function()
    local q, k = ft.randn(2, 4, 8, 16), ft.randn(2, 3, 8, 16)
    local msg = H.error_of(F.scaled_dot_product_attention, q, k, k)
    H.assert_mentions(msg, "ft.scaled_dot_product_attention: q [2,4,8,16] and k [2,3,8,16]: 4 query heads "
                      .. "are not a multiple of 3 key/value heads")
    msg = H.error_of(F.scaled_dot_product_attention, q, q, q, { attn_mask = ft.zeros(3, 8) })
    H.assert_mentions(msg, "ft.scaled_dot_product_attention", "mask [3,8]", "[2,4,8,8]")
    msg = H.error_of(F.scaled_dot_product_attention, q, q, q, { causal = "diagonal" })
    H.assert_mentions(msg, "causal", "lower_right")
  end)
end)

describe("transformer.h5", function()
  it("has every case covered", function()
    for name in pairs(cases) do
      assert(used[name], "fixture case " .. name .. " is not checked by this spec")
    end
  end)
end)
