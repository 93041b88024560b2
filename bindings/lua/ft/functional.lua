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

-- ---- linear and convolution ---------------------------------------------------------

F.linear = C.linear   -- (x [..., in], weight [out, in], bias [out]?)

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
  opts = opts or {}
  return C.batch_norm(x, running_mean, running_var, weight, bias, opts.training or false,
                      opts.momentum or 0.1, opts.eps or 1e-5)
end

--- F.layer_norm(x, normalized_shape, weight, bias, {eps=1e-5}); normalized_shape: integer or table.
function F.layer_norm(x, normalized_shape, weight, bias, opts)
  if type(weight) == "table" then weight, bias, opts = nil, nil, weight end
  return C.layer_norm(x, normalized_shape, weight, bias, (opts and opts.eps) or 1e-5)
end

--- F.rms_norm(x, normalized_shape, weight, {eps=}): x / sqrt(mean(x^2) + eps) * weight over the
-- trailing dims. eps defaults to float32 machine epsilon, as torch.
function F.rms_norm(x, normalized_shape, weight, opts)
  if type(weight) == "table" then weight, opts = nil, weight end
  local eps = (opts and opts.eps) or 1.1920928955078125e-07
  local n = type(normalized_shape) == "table" and #normalized_shape or 1
  local ms = x * x
  for _ = 1, n do ms = ms:mean(-1, true) end   -- equal-size groups: nested means = overall mean
  local y = x / (ms + eps):sqrt()
  if weight then y = y * weight end
  return y
end

-- ---- regularisation, embeddings ------------------------------------------------------

--- F.dropout(x, p=0.5, {training=true}); also F.dropout(x, p, training) and F.dropout(x, {p=, training=}).
function F.dropout(x, p, opts)
  if type(p) == "table" then p, opts = p.p, p end
  local training = true
  if type(opts) == "boolean" then training = opts
  elseif type(opts) == "table" and opts.training ~= nil then training = opts.training end
  return C.dropout(x, p or 0.5, training)
end

--- F.embedding(input (int64 ids, 1-based), weight [num, dim]) -> [..., dim]
F.embedding = C.embedding

-- ---- activations ------------------------------------------------------------------------

function F.relu(x) return x:relu() end
function F.tanh(x) return x:tanh() end
function F.sigmoid(x) return x:sigmoid() end
--- F.gelu(x, {approximate="none"|"tanh"}) (or the string alone)
F.gelu = C.gelu
F.silu = C.silu
function F.softmax(x, dim) return x:softmax(dim) end
function F.log_softmax(x, dim) return x:log_softmax(dim) end

-- ---- losses ---------------------------------------------------------------------------------

--- F.cross_entropy(logits [N,C] or [N,C,d...], target, {reduction="mean", ignore_index=-100,
-- label_smoothing=0}). target: int64 class ids 1..C, or float class probabilities of the
-- logits' shape.
function F.cross_entropy(logits, target, opts)
  if target:dtype() ~= "int64" then
    opts = opts or {}
    local ls = opts.label_smoothing or 0
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
  value = value or 0
  assert(#pad % 2 == 0 and #pad // 2 <= x:dim(), "ft.pad: pad must hold a pair per padded dim")
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

local causal_masks = setmetatable({}, { __mode = "v" })

-- A float 0/1 mask [L, S], 1 above the diagonal (the positions a query may not see);
-- aligned top-left as torch's is_causal (ones(L, S).tril(0) marks the visible ones).
local function causal_mask(L, S)
  local key = L .. "x" .. S
  local m = causal_masks[key]
  if not m then
    local rows = {}
    for i = 1, L do
      local row = {}
      for j = 1, S do row[j] = j > i and 1 or 0 end
      rows[i] = row
    end
    m = ft.tensor(rows)
    causal_masks[key] = m
  end
  return m
end

--- F.scaled_dot_product_attention(q [..., L, E], k [..., S, E], v [..., S, Ev],
--   {attn_mask=, causal=false, scale=1/sqrt(E), dropout_p=0})
-- attn_mask: float additive mask, or a 0/1 mask given as {attn_mask=m, mask_is_bool=true}
-- where 1 marks allowed positions (as torch's boolean masks).
function F.scaled_dot_product_attention(q, k, v, opts)
  opts = opts or {}
  local E = q:size(-1)
  local scale = opts.scale or 1 / math.sqrt(E)
  local scores = q:matmul(k:transpose(-2, -1)) * scale
  if opts.causal or opts.is_causal then
    scores = scores:masked_fill(causal_mask(q:size(-2), k:size(-2)), -math.huge)
  end
  if opts.attn_mask then
    if opts.mask_is_bool then
      scores = scores:masked_fill(1 - opts.attn_mask, -math.huge)
    else
      scores = scores + opts.attn_mask
    end
  end
  local attn = scores:softmax(-1)
  if (opts.dropout_p or 0) > 0 then attn = C.dropout(attn, opts.dropout_p, true) end
  return attn:matmul(v)
end

return F
