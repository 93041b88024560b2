-- ft.peft.reft: representation fine-tuning (Wu et al. 2024, "ReFT: Representation Finetuning for
-- Language Models"). The base model stays frozen; small interventions edit the hidden state
-- that chosen transformer blocks output, at chosen token positions only:
--   LoReFT  h <- h + R^T (W h + b - R h)   R [r,d] with orthonormal rows, W [r,d], b [r]
--   DiReFT  h <- h + W2^T (W1 h + b)       W1 [r,d], b [r], W2 [r,d], no orthogonality
-- Both start as exact no-ops (LoReFT: W = R, b = 0; DiReFT: W2 = 0), so a fresh adapter
-- computes the base model. R is kept orthonormal through training by re-orthonormalising
-- it after every optimizer step (ft.optim.constrain).
--
--   ft.peft.reft(model, {layers = {2, 4}, positions = "f7+l7", rank = 4})
--
-- Options (the saved config; attach(model, config) recreates the adapter):
--   layers     1-based positions in the model's blocks (ft.peft.registry blocks: GPT-2's
--              transformer.h.*, Llama's model.layers.*, ViT's vit.encoder.layer.*) or module
--              names ("transformer.h.1"); default every block
--   positions  "f<n>", "l<n>" or "f<n>+l<n>": the first n and/or last n positions along dim 2
--              of the [B,T,d] hidden state, clamped to T; a position both first and last
--              counts once. Default "f7+l7". For ViT the CLS token is position 1. When the
--              model gets an attention_mask with padding, positions count each row's real
--              tokens only (right or left padding alike), as pyreft does.
--   rank       r, default 4 (at most d)
--   kind       "loreft" (default) or "direft"
--   tied       true (default): one intervention for the first and the last positions; false:
--              one for the first and one for the last (a position in both gets the first's)
--   dropout    dropout on the edit (never on h), in training mode only; default 0
--   name       adapter name, default "default"
--   embed_dim  d, when it cannot be read off the block's first norm layer
--
-- Parameters live in a child module of each block, reft_<kind>.<name>, so state_dict keys
-- are stable: transformer.h.1.reft_loreft.default.rotation (R), ...learned_source.weight
-- (W), ...learned_source.bias (b); DiReFT: learned_source.weight (W1), learned_source.bias
-- (b), projection (W2). Untied adapters have .first and .last below the name.
--
-- Cached decoding: when a block is called with a KV cache that already holds past keys
-- (generation after the prompt), nothing is edited: as in pyreft, interventions apply to
-- the prompt only. A block's other return values (the KV cache) pass through untouched.
local ft = require "ft"
local A = require "ft.peft.registry"
local nn = require "ft.nn"
local optim = require "ft.optim"
local F = nn.functional

local M = {}

--- The options of attach (ft.peft.reft).
M.options = { "layers", "positions", "rank", "kind", "tied", "dropout", "name", "embed_dim" }
local WHERE = "ft.peft.reft"

-- ---- orthonormal rows -------------------------------------------------------------------------

-- Modified Gram-Schmidt on the rows of a Lua matrix (float64), in place. A row that collapses
-- (linearly dependent on the ones before) is replaced by a fresh random direction.
local function gram_schmidt(rows)
  local d = #rows[1]
  for i = 1, #rows do
    local row = rows[i]
    for _ = 1, 3 do
      for j = 1, i - 1 do
        local other, dot = rows[j], 0
        for k = 1, d do dot = dot + row[k] * other[k] end
        for k = 1, d do row[k] = row[k] - dot * other[k] end
      end
      local norm = 0
      for k = 1, d do norm = norm + row[k] * row[k] end
      norm = math.sqrt(norm)
      if norm > 1e-6 then
        for k = 1, d do row[k] = row[k] / norm end
        break
      end
      row = ft.randn(d):totable()
      rows[i] = row
    end
  end
  return rows
end

-- Orthonormal rows of R, to float32 accuracy: Gram-Schmidt twice in float64, written back in
-- place. The constraint run after every optimizer step.
local function orthonormalize(R)
  local rows = gram_schmidt(gram_schmidt(R:totable()))
  ft.no_grad(function() R:copy_(ft.tensor(rows)) end)
end

-- An [r,d] tensor with random orthonormal rows (Gram-Schmidt of a gaussian).
local function random_orthonormal(r, d)
  return ft.tensor(gram_schmidt(gram_schmidt(ft.randn(r, d):totable())))
end

-- ---- interventions ----------------------------------------------------------------------------

local function drop(self, delta)
  if self.dropout_p > 0 and self.training then return F.dropout(delta, self.dropout_p, true) end
  return delta
end

--- LoReFT: h + R^T (W h + b - R h), computed as ((W - R) h + b) R, which is exactly zero
-- while W = R and b = 0.
local LoReFT = nn.Module:extend("LoReFTIntervention")
M.LoReFT = LoReFT

--- LoReFT(d, r [, dropout]): R with random orthonormal rows, W = R, b = 0 (a no-op at first).
function LoReFT:init(d, r, dropout)
  self.embed_dim, self.rank, self.dropout_p = d, r, dropout or 0
  self.rotation = nn.Parameter(random_orthonormal(r, d))
  self.learned_source = nn.Linear(d, r)
  ft.no_grad(function()
    self.learned_source.weight:copy_(self.rotation)
    self.learned_source.bias:zero_()
  end)
  optim.constrain(self.rotation, orthonormalize)
end

--- h [..., d] -> h + R^T (W h + b - R h).
function LoReFT:forward(h)
  local R, W, b = self.rotation, self.learned_source.weight, self.learned_source.bias
  local delta = F.linear(F.linear(h, W - R, b), R:t())
  return h + drop(self, delta)
end

--- embed_dim, rank and dropout, for printing.
function LoReFT:extra_repr()
  return ("embed_dim=%d, rank=%d, dropout=%s"):format(self.embed_dim, self.rank, nn._repr(self.dropout_p))
end

--- DiReFT: h + W2^T (W1 h + b); W1 as a Linear's weight (kaiming-uniform), b = 0, W2 = 0.
local DiReFT = nn.Module:extend("DiReFTIntervention")
M.DiReFT = DiReFT

--- DiReFT(d, r [, dropout]): W1 as a Linear, b = 0, W2 = 0 (a no-op at first).
function DiReFT:init(d, r, dropout)
  self.embed_dim, self.rank, self.dropout_p = d, r, dropout or 0
  self.learned_source = nn.Linear(d, r)
  ft.no_grad(function() self.learned_source.bias:zero_() end)
  self.projection = nn.Parameter(ft.zeros(r, d))
end

--- h [..., d] -> h + W2^T (W1 h + b).
function DiReFT:forward(h)
  local delta = F.linear(self.learned_source(h), self.projection:t())
  return h + drop(self, delta)
end

DiReFT.extra_repr = LoReFT.extra_repr

local KINDS = { loreft = LoReFT, direft = DiReFT }

-- ---- options ------------------------------------------------------------------------------------

-- "f7+l7" -> 7, 7; "f1" -> 1, 0; "l3" -> 0, 3.
local function parse_positions(s)
  local first, last
  if type(s) == "string" then
    local f, l = s:match("^f(%d+)%+l(%d+)$")
    if f then
      first, last = tonumber(f), tonumber(l)
    elseif s:match("^f%d+$") then
      first, last = tonumber(s:sub(2)), nil
    elseif s:match("^l%d+$") then
      first, last = nil, tonumber(s:sub(2))
    end
  end
  if (first == nil and last == nil) or first == 0 or last == 0 then
    error(("ft.peft.reft: invalid positions %q (expected \"f<n>\", \"l<n>\" or \"f<n>+l<n>\" with n >= 1,"
      .. " e.g. \"f7+l7\")"):format(tostring(s)), 3)
  end
  return first or 0, last or 0
end

-- The blocks to intervene on, as an array of {path, module}, from the layers option.
local function resolve_layers(model, layers)
  local blocks = A.blocks(model)
  local function range()
    if #blocks == 0 then return "the model has no blocks" end
    return ("the model has %d blocks, %s .. %s"):format(#blocks, blocks[1][1], blocks[#blocks][1])
  end
  local out, seen = {}, {}
  for i, layer in ipairs(layers) do
    local path, m
    if math.type(layer) == "integer" or (type(layer) == "number" and layer == math.floor(layer)) then
      local e = blocks[math.tointeger(layer)]
      if not e then error(("ft.peft.reft: layer %s is out of range (%s)"):format(tostring(layer), range()), 3) end
      path, m = e[1], e[2]
    elseif type(layer) == "string" then
      m = layer ~= "" and A.module_at(model, layer)
      if not m then error(("ft.peft.reft: no module named '%s' (%s)"):format(layer, range()), 3) end
      path = layer
    else
      error(("ft.peft.reft: layers[%d] must be a block number or a module name, got %s"):format(i, tostring(layer)), 3)
    end
    if seen[path] then error(("ft.peft.reft: layer %s is given twice"):format(path), 3) end
    seen[path] = true
    out[#out + 1] = { path, m }
  end
  if #out == 0 then error("ft.peft.reft: option layers is empty", 3) end
  return out
end

-- The hidden size of a block: the size of its first norm layer's weight.
local function embed_dim_of(path, block)
  for _, m in block:named_modules() do
    local w = m.__name:find("Norm", 1, true) and m._parameters.weight
    if w and w:dim() == 1 then return w:size(1) end
  end
  error(("ft.peft.reft: cannot tell the hidden size of %s (a %s without a norm layer); pass the option embed_dim")
    :format(path, block.__name), 3)
end

-- The options with defaults filled in (JSON-able).
local function resolve(model, opts)
  if type(opts) ~= "table" then error("ft.peft.reft: options must be a table, got " .. type(opts), 3) end
  ft.check_options(WHERE, opts, M.options)
  local config = {
    name = opts.name or "default", positions = opts.positions or "f7+l7", rank = opts.rank or 4,
    kind = opts.kind or "loreft", dropout = opts.dropout or 0, embed_dim = opts.embed_dim,
  }
  if opts.tied == nil then config.tied = true else config.tied = opts.tied end
  if not KINDS[config.kind] then
    error(("ft.peft.reft: unknown kind '%s' (\"loreft\" or \"direft\")"):format(tostring(config.kind)), 3)
  end
  local function positive_integer(key)
    local n = type(config[key]) == "number" and math.tointeger(config[key])
    if not n or n < 1 then
      error(("ft.peft.reft: %s must be a positive integer, got %s"):format(key, tostring(config[key])), 4)
    end
    config[key] = n
  end
  positive_integer("rank")
  if config.embed_dim ~= nil then positive_integer("embed_dim") end
  if type(config.dropout) ~= "number" or config.dropout < 0 or config.dropout >= 1 then
    error(("ft.peft.reft: dropout must be a number in [0, 1), got %s"):format(tostring(config.dropout)), 3)
  end
  if type(config.tied) ~= "boolean" then
    error(("ft.peft.reft: tied must be true or false, got %s"):format(tostring(config.tied)), 3)
  end
  local layers = opts.layers
  if layers == nil then
    layers = {}
    for i = 1, #A.blocks(model) do layers[i] = i end
  elseif type(layers) ~= "table" then
    layers = { layers }
  end
  config.layers = {}
  for i, l in ipairs(layers) do config.layers[i] = l end
  return config
end

-- ---- the block forward ----------------------------------------------------------------------------

-- True when an argument is a KV cache that already holds past keys: GPT-2's and Llama's
-- blocks take the layer's cache as a plain table {k, v} with k [B,H,P,hd].
local function has_past(...)
  for i = 2, select("#", ...) do
    local a = select(i, ...)
    if type(a) == "table" and not nn.is_module(a) and ft.is_tensor(a[1]) and a[1]:numel() > 0 then
      return true
    end
  end
  return false
end

-- The hidden state h [B,T,d] with the first positions edited by item.first and the last ones
-- by item.last (the same module when tied); the positions in between are h's own values.
local function check_hidden(st, item, h)
  if h:dim() ~= 3 or h:size(3) ~= item.embed_dim then
    error(("ft.peft.reft: %s outputs a hidden state of shape [%s]; adapter '%s' expects [batch, seq, %d]")
      :format(st.path, table.concat(h:shape(), ","), item.name, item.embed_dim), 0)
  end
end

local function intervene(item, h)
  local T = h:size(2)
  local n_first = math.min(item.n_first, T)
  local last_start = math.max(T - item.n_last + 1, n_first + 1)
  local pieces = {}
  if n_first > 0 then pieces[#pieces + 1] = item.first(h:narrow(2, 1, n_first)) end
  if last_start > n_first + 1 then pieces[#pieces + 1] = h:narrow(2, n_first + 1, last_start - n_first - 1) end
  if last_start <= T then pieces[#pieces + 1] = item.last(h:narrow(2, last_start, T - last_start + 1)) end
  if #pieces == 1 then return pieces[1] end
  return ft.cat(pieces, 2)
end

-- What a padding mask (ft.models.padding_mask: [B,1,1,T], 0 on real tokens, a large negative
-- number on padding) says: false when no row has padding, else {real = each row's real
-- positions, masks = {}}. Every block of one forward gets the same mask tensor, so this is
-- worked out once per forward, not once per block.
local mask_info = setmetatable({}, { __mode = "k" })

local function padding_info(mask)
  local info = mask_info[mask]
  if info == nil then
    info = false
    if mask:lt(-1):sum():item() > 0 then
      local B, T = mask:size(1), mask:size(4)
      local real = {}
      for b, row in ipairs(mask:view(B, T):totable()) do
        real[b] = {}
        for t = 1, T do
          if row[t] > -1 then real[b][#real[b] + 1] = t end
        end
      end
      info = { T = T, real = real, masks = {} }
    end
    mask_info[mask] = info
  end
  return info
end

-- The padding of a GPT-2 or Llama block's input, found among its arguments, or nil.
local function padding_of(T, ...)
  for i = 2, select("#", ...) do
    local a = select(i, ...)
    if ft.is_tensor(a) and a:dim() == 4 and a:size(2) == 1 and a:size(3) == 1 and a:size(4) == T then
      return padding_info(a) or nil
    end
  end
end

-- With padding, "first" and "last" count real tokens only (as pyreft locates each example's
-- positions by its own length): masks [B,T,1] of the positions item.first and item.last edit,
-- made once per mask and positions setting.
local function row_masks(item, padding)
  local key = item.n_first .. "+" .. item.n_last
  local cached = padding.masks[key]
  if cached then return cached[1], cached[2] end
  local first, last = {}, {}
  for b, real in ipairs(padding.real) do
    local f, l = {}, {}
    for t = 1, padding.T do f[t], l[t] = { 0 }, { 0 } end
    local n_first = math.min(item.n_first, #real)
    for i = 1, n_first do f[real[i]][1] = 1 end
    for i = math.max(#real - item.n_last + 1, n_first + 1), #real do l[real[i]][1] = 1 end
    first[b], last[b] = f, l
  end
  local masks = { ft.tensor(first), ft.tensor(last) }
  padding.masks[key] = masks
  return masks[1], masks[2]
end

-- The padded-batch form of intervene: each module edits every position and the masks keep
-- its edit where it applies (an intervention costs O(r d) per position, so this stays cheap).
local function intervene_masked(item, h, padding)
  local first_mask, last_mask = row_masks(item, padding)
  local out = h
  if item.n_first > 0 then out = out + (item.first(h) - h) * first_mask end
  if item.n_last > 0 then out = out + (item.last(h) - h) * last_mask end
  return out
end

--- M.forward(block, name, inner, ...): adapter name's link in a block's forward chain: edits
-- the hidden state the rest of the chain returns (its first result) at the adapter's positions;
-- the other results pass through, and cached decoding steps are left unedited.
function M.forward(block, name, inner, ...)
  local out = table.pack(inner(...))
  if has_past(...) then return table.unpack(out, 1, out.n) end
  local st = rawget(block, "_reft")
  local item = st.items[name]
  local h = out[1]
  check_hidden(st, item, h)
  local padding = h:dim() == 3 and padding_of(h:size(2), ...) or nil
  out[1] = padding and intervene_masked(item, h, padding) or intervene(item, h)
  return table.unpack(out, 1, out.n)
end

-- ---- attach, state_dict, remove -----------------------------------------------------------------

--- attach(model, opts) -> name. See the top of this file for the options.
function M.attach(model, opts)
  local config = resolve(model, opts or {})
  local n_first, n_last = parse_positions(config.positions)
  local blocks = resolve_layers(model, config.layers)
  local dims = {}
  for i, e in ipairs(blocks) do
    local d = config.embed_dim or embed_dim_of(e[1], e[2])
    if config.rank > d then
      error(("ft.peft.reft: rank %d exceeds the hidden size %d of %s"):format(config.rank, d, e[1]), 2)
    end
    dims[i] = d
  end

  local name, kind = config.name, config.kind
  A.check_new_name(model, name, WHERE)
  -- As PEFT: the base model is frozen; the new interventions train.
  A.freeze_base(model)
  A.add(model, name, "reft", config, WHERE)
  local Class, child = KINDS[kind], "reft_" .. kind
  for i, e in ipairs(blocks) do
    local block, d = e[2], dims[i]
    local st = rawget(block, "_reft")
    if not st then
      st = { path = e[1], items = {} }   -- per block: each adapter's intervention
      rawset(block, "_reft", st)
    end
    if not block._modules[child] then block:add_module(child, nn.Module():train(block.training)) end
    local item = { name = name, embed_dim = d, n_first = n_first, n_last = n_last }
    local holder
    if config.tied then
      holder = Class(d, config.rank, config.dropout)
      item.first, item.last = holder, holder
    else
      holder = nn.Module()
      if n_first > 0 then item.first = holder:add_module("first", Class(d, config.rank, config.dropout)) end
      if n_last > 0 then item.last = holder:add_module("last", Class(d, config.rank, config.dropout)) end
    end
    block._modules[child]:add_module(name, holder:train(block.training))
    st.items[name] = item
    A.join(model, block, name)
  end
  return name
end

-- The modules holding adapter name's parameters, as {prefix, module}.
local function adapter_modules(model, name)
  local entry = A.get(model, name, WHERE)
  local child = "reft_" .. entry.config.kind
  local out = {}
  for path, m in model:named_modules() do
    local st = rawget(m, "_reft")
    local holder = st and m._modules[child] and m._modules[child]._modules[name]
    if holder then out[#out + 1] = { path, m, path .. "." .. child .. "." .. name, holder } end
  end
  return out
end

--- The adapter's tensors keyed as in model:state_dict() (detached aliases).
function M.state_dict(model, name)
  local out = {}
  for _, e in ipairs(adapter_modules(model, name)) do
    for key, p in e[4]:named_parameters() do out[e[3] .. "." .. key] = p:detach() end
  end
  return out
end

--- Takes adapter name's interventions off the model; a block left without any leaves its
-- forward chain for good.
function M.remove(model, name)
  local child = "reft_" .. A.get(model, name, WHERE).config.kind
  for _, e in ipairs(adapter_modules(model, name)) do
    local block, holder = e[2], e[4]
    for _, m in ipairs(holder:modules()) do
      if m._parameters.rotation then optim.constrain(m._parameters.rotation, nil) end
    end
    local container = block._modules[child]
    container:add_module(name, nil)
    if #container == 0 then block:add_module(child, nil) end
    local st = rawget(block, "_reft")
    st.items[name] = nil
    A.leave(block, name)
    if next(st.items) == nil then rawset(block, "_reft", nil) end
  end
end

return M
