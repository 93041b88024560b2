-- ft.nn.functional: stateless layer functions, named and ordered as torch.nn.functional.
--
--   local F = ft.nn.functional
--   F.conv2d(x, w, b, {stride=2, padding=1})     F.cross_entropy(logits, y, {label_smoothing=0.1})
--
-- Options come last as a table. Dims are 1-based (negative from the end); class targets and
-- embedding ids are 1-based, as everywhere in ft.
local ft = require "ft"
local C = ft._F

local F = {}

local check = ft.check

-- ---- linear and convolution ---------------------------------------------------------

--- F.linear(x [..., in], weight [out, in], bias [out]?) -> x @ weight^T + bias, [..., out].
F.linear = C.linear

--- F.lora_add(result [..., out], x [..., in], A [r, in], B [out, r], scale [, consume]) -> result
-- + scale * (x @ A^T) @ B^T: a LoRA adapter's delta added to its layer's output in one op (no
-- [..., out] temporaries), differentiable in all four tensors; float32. consume = true gives
-- result up: the call closes it and, when nothing else holds its buffer, adds the delta there
-- instead of into a copy.
F.lora_add = C.lora_add

--- F.grouped_linear(x [N, in], weight [E, out, in], sizes) -> [N, out]: the first sizes[1] rows
-- of x times weight[1]^T, the next sizes[2] rows times weight[2]^T, ... (sizes: E row counts
-- summing to N, zeros allowed): a mixture of experts' rows, sorted by expert, through the
-- experts' fused weights with one product each; differentiable in x and weight.
F.grouped_linear = C.grouped_linear

--- (x [N,C,H,W], weight [O,C/groups,kH,kW], bias?, {stride=1, padding=0|"same"|"valid", dilation=1, groups=1})
F.conv2d = C.conv2d

-- ---- pooling --------------------------------------------------------------------------

--- (x, kernel, {stride=kernel, padding=0, ceil_mode=false})
F.max_pool2d = C.max_pool2d
--- (x, kernel, {stride=kernel, padding=0, ceil_mode=false, count_include_pad=true})
F.avg_pool2d = C.avg_pool2d
--- (x, size or {h, w})
F.adaptive_avg_pool2d = C.adaptive_avg_pool2d

-- ---- normalisation ------------------------------------------------------------------

--- F.batch_norm(x, running_mean, running_var, weight, bias, {training=false, momentum=0.1, eps=1e-5})
-- weight and bias may be left out: F.batch_norm(x, rm, rv, {training=true}).
-- Running statistics are updated in place when training.
function F.batch_norm(x, running_mean, running_var, weight, bias, opts)
  if type(weight) == "table" then weight, bias, opts = nil, nil, weight end
  local where = "ft.batch_norm"
  opts = ft.check_options(where, opts, {"training", "momentum", "eps"})
  return C.batch_norm(x, running_mean, running_var, weight, bias,
                      check.boolean(where, "training", opts.training, false),
                      check.number(where, "momentum", opts.momentum, 0.1, {min = 0, max = 1}),
                      check.number(where, "eps", opts.eps, 1e-5, {above = 0}))
end

--- F.layer_norm(x, normalized_shape, weight, bias, {eps=1e-5}); normalized_shape: integer or table.
function F.layer_norm(x, normalized_shape, weight, bias, opts)
  if type(weight) == "table" then weight, bias, opts = nil, nil, weight end
  local where = "ft.layer_norm"
  opts = ft.check_options(where, opts, {"eps"})
  return C.layer_norm(x, normalized_shape, weight, bias, check.number(where, "eps", opts.eps, 1e-5, {above = 0}))
end

--- F.rms_norm(x, normalized_shape, weight, {eps=}): x / sqrt(mean(x^2) + eps) * weight over the
-- trailing dims (as HF's LlamaRMSNorm for one dim). eps defaults to float32 machine epsilon, as torch.
function F.rms_norm(x, normalized_shape, weight, opts)
  if type(weight) == "table" then weight, opts = nil, weight end
  local where = "ft.rms_norm"
  opts = ft.check_options(where, opts, {"eps"})
  local eps = check.number(where, "eps", opts.eps, 1.1920928955078125e-07, {above = 0})
  return C.rms_norm(x, normalized_shape, weight, eps)
end

--- F.rope(x [..., T, D], cos [T, D], sin [T, D]): rotary position embedding with HF's
-- rotate_half convention, x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1).
-- cos and sin are constant tables (no gradient flows to them); D must be even.
F.rope = C.rope

-- ---- regularisation, embeddings ------------------------------------------------------

--- F.dropout(x, p=0.5, {training=true}); also F.dropout(x, p, training) and F.dropout(x, {p=, training=}).
function F.dropout(x, p, opts)
  local where = "ft.dropout"
  local training = true
  if type(p) == "table" then   -- F.dropout(x, {p =, training =})
    opts = ft.check_options(where, p, {"p", "training"})
    p = opts.p
  elseif opts ~= nil and type(opts) ~= "boolean" then
    opts = ft.check_options(where, opts, {"training"})
  end
  if type(opts) == "boolean" then training = opts
  elseif opts ~= nil then training = check.boolean(where, "training", opts.training, true) end
  return C.dropout(x, check.number(where, "p", p, 0.5, {min = 0, max = 1}), training)
end

--- F.embedding(input (int64 ids, 1-based), weight [num, dim]) -> [..., dim]
F.embedding = C.embedding

-- ---- activations ------------------------------------------------------------------------

--- F.relu(x) -> max(x, 0), elementwise.
function F.relu(x) return x:relu() end
--- F.tanh(x) -> tanh(x), elementwise.
function F.tanh(x) return x:tanh() end
--- F.sigmoid(x) -> 1 / (1 + exp(-x)), elementwise.
function F.sigmoid(x) return x:sigmoid() end
--- F.gelu(x, {approximate="none"|"tanh"}) (or the string alone): the same function as x:gelu(...)
F.gelu = ft.gelu
--- F.silu(x): x * sigmoid(x), the same function as x:silu()
F.silu = ft.silu
--- F.silu_mul(gate, up) -> silu(gate) * up (broadcasting), in one pass: the gated MLP's
-- activation. Its backward keeps gate and up only, not silu(gate) as well.
F.silu_mul = ft.silu_mul
--- F.softmax(x, dim) -> exp(x) / sum(exp(x)) along dim (1-based; negative from the end).
function F.softmax(x, dim) return x:softmax(dim) end
--- F.log_softmax(x, dim) -> log(softmax(x, dim)), computed stably (max subtracted first).
function F.log_softmax(x, dim) return x:log_softmax(dim) end

-- ---- losses ---------------------------------------------------------------------------------

--- F.cross_entropy(logits [N,C] or [N,C,d...], target, {reduction="mean", ignore_index=-100,
-- label_smoothing=0}). target: int64 class ids 1..C, or float class probabilities of the
-- logits' shape.
function F.cross_entropy(logits, target, opts)
  if ft.is_tensor(target) and target:dtype() ~= "int64" then
    local where = "ft.cross_entropy"
    opts = ft.check_options(where, opts, {"reduction", "ignore_index", "label_smoothing"})
    check.integer(where, "ignore_index", opts.ignore_index)   -- as torch: unused with class probabilities
    local ls = check.number(where, "label_smoothing", opts.label_smoothing, 0, {min = 0, max = 1})
    local logp = logits:log_softmax(2)
    local p = target
    if ls > 0 then p = p * (1 - ls) + ls / logits:size(2) end
    local loss = -(p * logp):sum(2)
    local reduction = opts.reduction or "mean"
    if reduction == "mean" then return loss:sum() / (loss:numel() > 0 and loss:numel() or 1)
    elseif reduction == "sum" then return loss:sum()
    elseif reduction == "none" then return loss end
    error("ft.cross_entropy: reduction must be 'mean', 'sum' or 'none', got '" .. tostring(reduction) .. "'", 2)
  end
  return C.cross_entropy(logits, target, opts)
end

--- F.mse_loss(input, target, {reduction="mean"})
F.mse_loss = C.mse_loss

-- ---- padding and attention --------------------------------------------------------------

--- F.pad(x, pad, value=0): constant padding as torch, pad = {left, right [, top, bottom [, ...]]}
-- starting from the last dim. Negative amounts crop.
function F.pad(x, pad, value)
  value = check.number("ft.pad", "value", value, 0)
  if type(pad) ~= "table" or #pad % 2 ~= 0 or #pad // 2 > x:dim() then
    error(("ft.pad: pad must hold a pair {before, after} per padded dim (at most %d pairs), got %s")
          :format(x:dim(), type(pad) == "table" and (#pad .. " numbers") or check.show(pad)), 2)
  end
  for i, v in ipairs(pad) do check.integer("ft.pad", ("pad[%d]"):format(i), v) end
  for i = 1, #pad // 2 do
    local dim = x:dim() - i + 1
    local before, after = pad[2 * i - 1], pad[2 * i]
    if before < 0 then x = x:narrow(dim, 1 - before, x:size(dim) + before); before = 0 end
    if after < 0 then x = x:narrow(dim, 1, x:size(dim) + after); after = 0 end
    if before > 0 or after > 0 then
      local parts = {}
      local shape = x:shape()
      if before > 0 then shape[dim] = before; parts[#parts + 1] = ft.full(shape, value) end
      parts[#parts + 1] = x
      if after > 0 then shape[dim] = after; parts[#parts + 1] = ft.full(shape, value) end
      x = ft.cat(parts, dim)
    end
  end
  return x
end

-- int64 0/1 masks [L, S], 1 where query i may see key j: j <= i + offset (offset 0: torch's
-- top-left aligned is_causal; S - L: aligned bottom-right). Cached per size.
local causal_masks = setmetatable({}, { __mode = "v" })
local function causal_mask(L, S, offset)
  local key = L .. "x" .. S .. "+" .. offset
  local m = causal_masks[key]
  if not m then
    local rows = ft.arange(0, L):reshape(L, 1) + offset
    m = ft.arange(0, S):reshape(1, S):le(rows):long()
    causal_masks[key] = m
  end
  return m
end

-- The attention math written out, for attention dropout (which the kernel lacks) and for
-- shapes other than 2 to 4 dims alike (batch dims broadcast as in matmul). mask: int64 0/1
-- or float additive, already holding any causal masking. A query that sees no key gets NaN
-- here, as in torch.
local function attention_explicit(q, k, v, mask, scale, dropout_p)
  local Hq, Hkv = q:dim() == 4 and q:size(2), k:dim() == 4 and k:size(2)
  if Hq and Hkv and Hq ~= Hkv and Hkv ~= 1 then   -- grouped-query: repeat each kv head
    local function repeat_kv(t)
      local B, S, D = t:size(1), t:size(3), t:size(4)
      return t:unsqueeze(3):expand(B, Hkv, Hq // Hkv, S, D):reshape(B, Hq, S, D)
    end
    k, v = repeat_kv(k), repeat_kv(v)
  end
  local scores = q:matmul(k:transpose(-2, -1)) * scale
  if mask and mask:dtype() == "int64" then
    scores = scores:masked_fill(mask:eq(0), -math.huge)
  elseif mask then
    scores = scores + mask
  end
  local attn = scores:softmax(-1)
  if dropout_p > 0 then attn = C.dropout(attn, dropout_p, true) end
  return attn:matmul(v)
end

--- F.scaled_dot_product_attention(q [B,H,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev],
--   {attn_mask=, causal=false, scale=1/sqrt(E), dropout_p=0}) -> [B,H,L,Ev]
-- q, k, v may also be [N,L,E] or [L,E]. k and v may have fewer heads than q (grouped-query
-- attention): H a multiple of Hkv, query head h reading kv head ceil(h / (H / Hkv)).
-- causal=true masks as torch's is_causal: query i sees keys j <= i (top-left aligned).
-- causal="lower_right" aligns the diagonal bottom-right: query i sees keys j <= i + S - L,
-- the form for a KV cache holding S - L earlier positions. The two agree when L == S.
-- attn_mask, broadcastable to [B,H,L,S]: a float mask added to the scores, or an int64 0/1
-- mask (1 = may attend; a float 0/1 mask too, given with mask_is_bool=true).
-- A query that may see no key at all gets zeros (torch gives NaN).
function F.scaled_dot_product_attention(q, k, v, opts)
  local where = "ft.scaled_dot_product_attention"
  opts = ft.check_options(where, opts, {"attn_mask", "causal", "is_causal", "scale", "dropout_p", "mask_is_bool"})
  if opts.attn_mask ~= nil and not ft.is_tensor(opts.attn_mask) then
    check.fail(where, "attn_mask", "a tensor", opts.attn_mask)
  end
  check.number(where, "scale", opts.scale, nil, {above = 0})
  check.number(where, "dropout_p", opts.dropout_p, nil, {min = 0, max = 1})
  check.boolean(where, "mask_is_bool", opts.mask_is_bool)
  local causal = opts.causal
  if causal == nil then causal = opts.is_causal end
  if causal ~= nil and type(causal) ~= "boolean" and causal ~= "upper_left" and causal ~= "lower_right" then
    error("ft.scaled_dot_product_attention: causal must be a boolean, 'upper_left' or 'lower_right', got "
          .. tostring(causal), 2)
  end
  local mask = opts.attn_mask
  if mask and opts.mask_is_bool and mask:dtype() ~= "int64" then mask = mask:ne(0):long() end
  local L, S, nd = q:size(-2), k:size(-2), q:dim()
  local p = opts.dropout_p or 0
  -- the kernel: no dropout, q, k, v of 4 dims (or 2, 3 dims alike); else the written-out math
  local fused = p == 0 and (nd == 4 or (nd == 2 or nd == 3) and k:dim() == nd and v:dim() == nd)
  local kernel_causal = causal and true or false
  if causal and (not fused or (causal ~= "lower_right" and L ~= S)) then
    -- the kernel's diagonal is bottom-right; any other causal mask is spelled out
    local cm = causal_mask(L, S, causal == "lower_right" and S - L or 0)
    if not mask then mask = cm
    elseif mask:dtype() == "int64" then mask = mask * cm
    else mask = mask + ft.zeros(L, S):masked_fill(cm:eq(0), -math.huge) end
    kernel_causal = false
  end
  local scale = opts.scale or 1 / math.sqrt(q:size(-1))
  if not fused then return attention_explicit(q, k, v, mask, scale, p) end
  if nd == 4 then return C.scaled_dot_product_attention(q, k, v, mask, kernel_causal, scale) end
  -- [N,L,E] -> [1,N,L,E] (N as heads) keeps a mask's right-aligned broadcasting
  local function up(t) return nd == 3 and t:unsqueeze(1) or t:unsqueeze(1):unsqueeze(1) end
  local out = C.scaled_dot_product_attention(up(q), up(k), up(v), mask, kernel_causal, scale)
  return nd == 3 and out:squeeze(1) or out:squeeze(1):squeeze(1)
end

return F
