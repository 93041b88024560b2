-- ft.models.generate: text generation for the causal LMs (GPT-2, the Llama family), the
-- model:generate of their classes: greedy or sampled (HF's temperature, top-k, top-p warpers
-- in HF's order), with the key/value cache, eos handling and left-padded prompts.
--
--   local generate = require("ft.models.generate").generate
--   local ids2 = generate(model, ids, {max_new_tokens = 20})              -- greedy
--   local ids3 = model:generate(ids, {temperature = 0.8, top_k = 40, seed = 1})
local ft = require "ft"
local common = require "ft.models.common"

local M = {}

local is_null = common.is_null

-- HF's warpers in HF's order on one row of logits (a Lua array): temperature, top-k, top-p.
-- Returns the probabilities.
local function sampling_probs(row, temperature, top_k, top_p)
  local V = #row
  for i = 1, V do row[i] = row[i] / temperature end
  if top_k and top_k > 0 and top_k < V then
    local sorted = table.move(row, 1, V, 1, {})
    table.sort(sorted, function(a, b) return a > b end)
    local kth = sorted[top_k]
    for i = 1, V do if row[i] < kth then row[i] = -math.huge end end   -- ties with the k-th stay
  end
  local max = -math.huge
  for i = 1, V do if row[i] > max then max = row[i] end end
  local probs, total = {}, 0
  for i = 1, V do
    probs[i] = math.exp(row[i] - max)
    total = total + probs[i]
  end
  for i = 1, V do probs[i] = probs[i] / total end
  if top_p and top_p < 1 then
    -- Ascending order; drop tokens while the cumulative mass stays <= 1 - top_p, never the top one.
    local order = {}
    for i = 1, V do order[i] = i end
    table.sort(order, function(a, b) return probs[a] < probs[b] end)
    local cum, kept = 0, 0
    for n = 1, V - 1 do
      local i = order[n]
      cum = cum + probs[i]
      if cum <= 1 - top_p then probs[i] = 0 end
    end
    for i = 1, V do kept = kept + probs[i] end
    for i = 1, V do probs[i] = probs[i] / kept end
  end
  return probs
end

local function draw(probs)
  local u, cum = ft.rand(1):item(), 0
  local last = 1
  for i = 1, #probs do
    if probs[i] > 0 then
      cum = cum + probs[i]
      last = i
      if u < cum then return i end
    end
  end
  return last   -- rounding left u above the total
end

local GENERATE_OPTIONS = { "max_new_tokens", "temperature", "top_k", "top_p", "seed", "eos_token_id",
  "pad_token_id", "attention_mask", "tokenizer", "stream" }

-- The defaults a model's generation_config.json gives (HF ids there are 0-based), as options.
local function config_defaults(gc)
  if type(gc) ~= "table" then return {} end
  local out = {}
  local function ids(v)
    if type(v) == "table" then
      local list = {}
      for i, id in ipairs(v) do list[i] = math.tointeger(id) and id + 1 end
      return #list > 0 and list or nil
    end
    return math.tointeger(v) and v + 1 or nil
  end
  out.eos_token_id, out.pad_token_id = ids(gc.eos_token_id), ids(gc.pad_token_id)
  out.max_new_tokens = math.tointeger(gc.max_new_tokens)
  if gc.do_sample == true then
    out.temperature = type(gc.temperature) == "number" and gc.temperature or 1
    out.top_k = math.tointeger(gc.top_k)
    out.top_p = type(gc.top_p) == "number" and gc.top_p or nil
  end
  return out
end

-- A stream writer over a tokenizer: called with the ids of row 1 generated so far, it passes
-- write() the text that became final since the last call (held back while the decoded tail
-- is an incomplete UTF-8 sequence).
local function text_streamer(tok, write)
  local shown = 0
  return function(new_ids, final)
    local text = tok:decode(new_ids)
    local stop = #text
    if not final then
      -- back off over a trailing partial UTF-8 character (a lead byte without all its continuations)
      local i = stop
      while i > 0 and i > stop - 4 and text:byte(i) >= 0x80 and text:byte(i) < 0xC0 do i = i - 1 end
      if i > 0 and text:byte(i) >= 0xC0 then
        local lead = text:byte(i)
        local need = lead >= 0xF0 and 4 or lead >= 0xE0 and 3 or 2
        if stop - i + 1 < need then stop = i - 1 end
      end
      -- a U+FFFD at the end may be a byte-fallback character still being spelled out
      if text:sub(stop - 2, stop) == "\u{FFFD}" then stop = stop - 3 end
    end
    if stop > shown then
      write(text:sub(shown + 1, stop))
      shown = stop
    end
  end
end

-- An option that must be an integer in [lo, hi] (or absent).
local function int_option(opts, key, lo, hi)
  local v = opts[key]
  if v == nil then return nil end
  local i = math.type(v) and math.tointeger(v)
  if not i or i < lo or i > hi then
    error(("generate: option '%s' must be an integer in [%d, %d], got %s"):format(key, lo, hi, tostring(v)), 4)
  end
  return i
end

-- A token id (1-based) or a list of them: a set of ids, and the first id.
local function token_ids_option(opts, key, vocab)
  local v = opts[key]
  if v == nil or is_null(v) then return nil end
  local list = type(v) == "table" and v or { v }
  if #list == 0 then error(("generate: option '%s' must be a token id or a non-empty list of them"):format(key), 4) end
  local set = {}
  for _, id in ipairs(list) do
    local i = math.type(id) and math.tointeger(id)
    if not i or i < 1 or (vocab and i > vocab) then
      error(("generate: option '%s' holds %s, not a token id in [1, %s] (ids are 1-based)"):format(key,
        tostring(id), vocab and tostring(vocab) or "vocab"), 4)
    end
    set[i] = true
  end
  return set, math.tointeger(list[1])
end

--- model:generate(ids [T] or [B,T] int64 1-based, opts) -> int64 [B, T + new] (prompt first).
-- opts: max_new_tokens=20 (>= 1), temperature (0 or nil: greedy; else > 0), top_k= (>= 0; 0:
-- off), top_p= (in (0, 1]), seed= (calls ft.manual_seed), eos_token_id= (an id or a list; a
-- finished row continues with pad_token_id, default the first eos id), attention_mask= [B,T] for
-- left-padded prompts, tokenizer= (its eos_id joins the eos ids and its pad_id pads),
-- stream= (with a tokenizer: true writes row 1's text to stdout as it comes, or a
-- function(text) receives it). Unknown options and out-of-range values are errors.
-- Options not given come from the model's generation_config (generation_config.json of a
-- folder loaded by ft.models.from_pretrained: eos ids, pad id, max_new_tokens, and with
-- do_sample the sampling settings), as HF's generate takes them.
-- Uses the key/value cache; runs without autograd and in eval mode (restored afterwards).
function M.generate(model, input_ids, opts)
  opts = common.check_options("generate", opts, GENERATE_OPTIONS)
  local tok = opts.tokenizer
  if tok ~= nil and (type(tok) ~= "table" or type(tok.decode) ~= "function") then
    error("generate: option 'tokenizer' must be a tokenizer (with decode), got " .. type(tok), 2)
  end
  local stream = opts.stream
  if stream ~= nil and stream ~= false then
    if stream ~= true and type(stream) ~= "function" then
      error("generate: option 'stream' must be true or a function(text), got " .. type(stream), 2)
    end
    if not tok then error("generate: option 'stream' needs option 'tokenizer' (to turn ids into text)", 2) end
    local write = stream == true and function(text) io.write(text); io.flush() end or stream
    stream = text_streamer(tok, write)
  else
    stream = nil
  end
  local defaults = config_defaults(model.generation_config)
  local merged = {}
  for k, v in pairs(defaults) do merged[k] = v end
  if opts.temperature ~= nil then merged.top_k, merged.top_p = nil, nil end   -- the caller's sampling settings, whole
  for k, v in pairs(opts) do merged[k] = v end
  if tok and merged.eos_token_id == nil and math.tointeger(tok.eos_id) then merged.eos_token_id = tok.eos_id end
  if tok and opts.eos_token_id == nil and math.tointeger(tok.eos_id) and merged.eos_token_id ~= nil then
    -- the tokenizer's eos joins the configured ones (a chat model stops at the end of its turn)
    local list = type(merged.eos_token_id) == "table" and table.move(merged.eos_token_id, 1, #merged.eos_token_id, 1, {})
      or { merged.eos_token_id }
    local seen = false
    for _, id in ipairs(list) do seen = seen or id == tok.eos_id end
    if not seen then list[#list + 1] = tok.eos_id end
    merged.eos_token_id = list
  end
  if tok and merged.pad_token_id == nil and math.tointeger(tok.pad_id) then merged.pad_token_id = tok.pad_id end
  opts = merged
  local ids = input_ids
  if not ft.is_tensor(ids) or ids:dtype() ~= "int64" then error("generate: input ids must be an int64 tensor", 2) end
  if ids:dim() ~= 1 and ids:dim() ~= 2 then
    error(("generate: input ids must be [T] or [B,T], got [%s]"):format(table.concat(ids:shape(), ",")), 2)
  end
  ids = ids:clone()   -- the result never aliases the caller's tensor
  if ids:dim() == 1 then ids = ids:reshape(1, -1) end
  local B, T = ids:size(1), ids:size(2)
  local vocab = model.config and math.tointeger(model.config.vocab_size)
  local max_new = int_option(opts, "max_new_tokens", 1, common.LIMITS.positions) or 20
  local temperature = opts.temperature or 0
  if type(temperature) ~= "number" or not (temperature >= 0 and temperature < math.huge) then
    error(("generate: option 'temperature' must be a finite number >= 0, got %s"):format(tostring(temperature)), 2)
  end
  local top_k = int_option(opts, "top_k", 0, math.maxinteger)
  local top_p = opts.top_p
  if top_p ~= nil and (type(top_p) ~= "number" or not (top_p > 0 and top_p <= 1)) then
    error(("generate: option 'top_p' must be a number in (0, 1], got %s"):format(tostring(top_p)), 2)
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error(("generate: option 'seed' must be an integer, got %s"):format(tostring(opts.seed)), 2)
  end
  local greedy = temperature == 0
  local eos, first_eos = token_ids_option(opts, "eos_token_id", vocab)
  local pad = opts.pad_token_id
  if pad ~= nil then _, pad = token_ids_option(opts, "pad_token_id", vocab) else pad = first_eos end
  local mask0 = opts.attention_mask
  if mask0 ~= nil and (not ft.is_tensor(mask0) or mask0:dim() ~= 2 or mask0:size(1) ~= B or mask0:size(2) ~= T) then
    error(("generate: option 'attention_mask' must be a [%d,%d] tensor like the ids, got %s"):format(B, T,
      ft.is_tensor(mask0) and "[" .. table.concat(mask0:shape(), ",") .. "]" or type(mask0)), 2)
  end
  if model.max_positions and T + max_new > model.max_positions then
    error(("generate: %d prompt + %d new tokens exceed the model's %d positions"):format(T, max_new,
      model.max_positions), 2)
  end
  if opts.seed then ft.manual_seed(opts.seed) end
  local was_training = model.training
  model:eval()
  -- Row 1's generated ids up to its first eos (which is not text).
  local function first_row_text_ids(out_ids)
    local row = out_ids:select(1, 1):narrow(1, T + 1, out_ids:size(2) - T):totable()
    for i, id in ipairs(row) do
      if eos and eos[id] then return table.move(row, 1, i - 1, 1, {}) end
    end
    return row
  end
  local ok, result = pcall(ft.no_grad, function()
    local out_ids, step_input, past = ids, ids, nil
    local mask = opts.attention_mask
    local finished, n_finished = {}, 0
    for _ = 1, max_new do
      local fwd = { past_key_values = past, use_cache = true }
      if mask then
        fwd.attention_mask = mask
        fwd.position_ids = common.positions_from_mask(mask, step_input:size(2))
      end
      local out = model:forward(step_input, fwd)
      past = out.past_key_values
      local logits = out.logits:select(2, out.logits:size(2))   -- [B, V]
      local next_ids
      if greedy then
        next_ids = logits:argmax(2):totable()
      else
        next_ids = {}
        for b, row in ipairs(logits:totable()) do
          next_ids[b] = draw(sampling_probs(row, temperature, top_k, top_p))
        end
      end
      for b = 1, B do
        if finished[b] then
          next_ids[b] = pad
        elseif eos and eos[next_ids[b]] then
          finished[b] = true
          n_finished = n_finished + 1
        end
      end
      step_input = ft.tensor(next_ids, { dtype = "int64" }):reshape(B, 1)
      out_ids = ft.cat({ out_ids, step_input }, 2)
      if mask then mask = ft.cat({ mask, ft.ones({ B, 1 }, { dtype = mask:dtype() }) }, 2) end
      if stream then stream(first_row_text_ids(out_ids), false) end
      if n_finished == B then break end
    end
    if stream then stream(first_row_text_ids(out_ids), true) end
    return out_ids
  end)
  if was_training then model:train() end
  if not ok then error(result, 0) end
  return result
end

return M
