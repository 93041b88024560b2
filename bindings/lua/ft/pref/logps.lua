-- ft.pref.logps: the log-probabilities a language model gives to given tokens, the input of
-- every preference loss: summed over the completion (DPO, SimPO, ORPO, KTO) or per token
-- (GRPO), for the policy (with its graph) and for the reference (without).
--
--   local lp, n = ft.pref.logps(policy, ids, mask)          -- [B] summed log p, [B] counts
--   local ref = ft.pref.reference_logps(policy, ids, mask)  -- LoRA policy: adapters off
--   local tok = ft.pref.token_logps(policy, ids)            -- [B, T-1], for GRPO
--
-- Token t is scored by the logits at t - 1 (HF's shift): mask[b][t] = 1 puts log p(ids[b][t] |
-- ids[b][1..t-1]) in row b's sum; the first column of mask scores nothing (no logits predict
-- it). The log-softmax and gather go through F.cross_entropy with reduction "none", which reads
-- the logits in place and keeps one float per position: no [B, T, V] copy beyond the model's
-- own logits (and their gradient in backward).
local ft = require "ft"
local F = require "ft.nn.functional"
local check = require "ft.check"

local M = {}

local IGNORE = -100

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- ids as int64 [B, T] (a [T] vector is one row), T >= 2.
local function check_ids(where, ids)
  if not ft.is_tensor(ids) or ids:dtype() ~= "int64" or (ids:dim() ~= 1 and ids:dim() ~= 2) then
    error(("%s: ids must be an int64 tensor [batch, seq] of 1-based token ids, got %s"):format(where,
      ft.is_tensor(ids) and (ids:dtype() .. " " .. shape_str(ids)) or check.show(ids)), 0)
  end
  if ids:dim() == 1 then ids = ids:reshape(1, -1) end
  if ids:size(2) < 2 then
    error(("%s: ids %s must hold at least 2 tokens per row (the first is never scored)"):format(where,
      shape_str(ids)), 0)
  end
  return ids
end

-- A 0/1 mask (float or int64) of ids' shape -> float32 [B, T]; any other value is an error.
local function check_mask(where, name, mask, ids)
  if not ft.is_tensor(mask) then check.fail(where, name, "a 0/1 tensor [batch, seq]", mask) end
  if mask:dim() == 1 and ids:size(1) == 1 then mask = mask:reshape(1, -1) end
  if mask:dim() ~= 2 or mask:size(1) ~= ids:size(1) or mask:size(2) ~= ids:size(2) then
    error(("%s: %s is %s but ids are %s: one 0/1 entry per token"):format(where, name, shape_str(mask),
      shape_str(ids)), 0)
  end
  for b, row in ipairs(mask:totable()) do
    for t, v in ipairs(row) do
      if v ~= 0 and v ~= 1 then
        error(("%s: %s[%d][%d] is %s; a mask holds 0 and 1 only"):format(where, name, b, t, tostring(v)), 0)
      end
    end
  end
  return mask:dtype() == "float32" and mask:detach() or mask:float()
end

-- The logits [B, T, V] float32 of model(ids): a tensor, or a table with .logits (ft.models).
local function model_logits(where, model, ids, attention_mask)
  check.func(where, "model", model)
  local out
  if attention_mask ~= nil then out = model(ids, { attention_mask = attention_mask }) else out = model(ids) end
  local logits = out
  if not ft.is_tensor(out) and type(out) == "table" then logits = out.logits end
  if not ft.is_tensor(logits) or logits:dim() ~= 3 or logits:size(1) ~= ids:size(1)
      or logits:size(2) ~= ids:size(2) then
    error(("%s: the model must return logits [%d, %d, vocab] (a tensor or {logits = ...}) for ids %s, got %s"):format(
      where, ids:size(1), ids:size(2), shape_str(ids),
      ft.is_tensor(logits) and shape_str(logits) or check.show(out)), 0)
  end
  if logits:dtype() ~= "float32" then logits = logits:float() end
  return logits
end

-- -log p(ids[b][t+1]) at [b][t] ([B, T]; 0 where target is nil at the last column, and where
-- the shifted mask is 0), through cross_entropy over the logits' rows in place.
local function shifted_nll(logits, ids, shifted_mask)
  local B, T, V = logits:size(1), logits:size(2), logits:size(3)
  local pad = ft.full({ B, 1 }, IGNORE, { dtype = "int64" })
  local targets = ft.cat({ ids:narrow(2, 2, T - 1), pad }, 2)
  if shifted_mask then targets = ft.where(shifted_mask, targets, ft.full({ 1 }, IGNORE, { dtype = "int64" })) end
  local rows = logits:reshape(B * T, V)
  return F.cross_entropy(rows, targets:reshape(B * T), { reduction = "none", ignore_index = IGNORE }):view(B, T)
end

-- The mask moved one to the left (entry t says whether logits t are scored) with a 0 appended.
local function shift_mask(mask)
  local B, T = mask:size(1), mask:size(2)
  return ft.cat({ mask:narrow(2, 2, T - 1), ft.zeros(B, 1) }, 2)
end

local function check_vocab(where, logits, ids)
  local V = logits:size(3)
  local hi = ids:max():item()
  local lo = ids:min():item()
  if lo < 1 or hi > V then
    error(("%s: ids hold %d, outside the vocabulary 1..%d of the logits"):format(where, lo < 1 and lo or hi, V), 0)
  end
end

--- ft.pref.logps(model, ids, mask [, {attention_mask =}]) -> logps [B], counts [B]: the sum of
-- log p(token) over the tokens where mask is 1, with its graph (differentiable), and how many
-- tokens that is (float32). model(ids [, {attention_mask =}]) must return logits [B, T, V] (a
-- tensor, or a table with .logits as ft.models give). ids: int64 [B, T], 1-based; mask: 0/1
-- [B, T] (float or int64), 1 on the completion's tokens; token t is predicted by the logits at
-- t - 1 (HF's shift), so mask's first column counts for nothing. attention_mask (1 = token,
-- 0 = padding) goes to the model; right padding needs none for a causal model.
function M.logps(model, ids, mask, opts)
  local where = "ft.pref.logps"
  opts = ft.check_options(where, opts, { "attention_mask" })
  ids = check_ids(where, ids)
  local m = shift_mask(check_mask(where, "mask", check.required(where, "mask", mask), ids))
  local logits = model_logits(where, model, ids, opts.attention_mask)
  check_vocab(where, logits, ids)
  local nll = shifted_nll(logits, ids, m)
  return -nll:sum(2), m:sum(2)
end

--- ft.pref.token_logps(model, ids [, {attention_mask =, temperature = 1}]) -> [B, T-1]: entry
-- [b][t] is log p(ids[b][t+1] | ids[b][1..t]), differentiable (the per-token log-probs of
-- GRPO; narrow them to the completion's columns). temperature divides the logits first, as
-- TRL does with the sampling temperature (a copy of the logits when it is not 1).
function M.token_logps(model, ids, opts)
  local where = "ft.pref.token_logps"
  opts = ft.check_options(where, opts, { "attention_mask", "temperature" })
  local temperature = check.number(where, "temperature", opts.temperature, 1, { above = 0 })
  ids = check_ids(where, ids)
  local logits = model_logits(where, model, ids, opts.attention_mask)
  check_vocab(where, logits, ids)
  if temperature ~= 1 then logits = logits / temperature end
  local T = ids:size(2)
  return -shifted_nll(logits, ids, nil):narrow(2, 1, T - 1)
end

-- The adapters of a model as ft.peft knows them ({} when it has none).
local function adapters_of(model)
  if type(model) ~= "table" or rawget(model, "_peft") == nil then return {} end
  return require("ft.peft").adapters(model)
end

--- ft.pref.with_reference(model, fn, ...) -> fn(...)'s results, computed by model's reference:
-- its base with every adapter switched off (ft.peft.disable), in eval mode (no dropout), under
-- no_grad; the adapters and the training mode are restored afterwards, also when fn fails.
-- This is how TRL gets the reference of a PEFT policy without a second model. Errors when the
-- model has no adapter (it would be its own reference) or when adapters are merged into its
-- weights (unmerging is not exact).
function M.with_reference(model, fn, ...)
  local where = "ft.pref.with_reference"
  check.func(where, "fn", fn)
  local peft = require "ft.peft"
  if #adapters_of(model) == 0 then
    error(where .. ": the model has no adapter, so it is its own reference; pass a separate reference model", 0)
  end
  local merged = peft.merged_adapters(model)
  if #merged > 0 then
    error(("%s: adapter(s) %s are merged into the weights; unmerge them (ft.peft.unmerge) or pass a "
      .. "separate reference model"):format(where, table.concat(merged, ", ")), 0)
  end
  local was_disabled = #peft.active_adapters(model) == 0
  local was_training = model.training
  if not was_disabled then peft.disable(model) end
  model:eval()
  local res = table.pack(pcall(ft.no_grad, fn, ...))
  if not was_disabled then peft.enable(model) end
  model:train(was_training)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- ft.pref.reference_logps(model, ids, mask [, {attention_mask =, reference_model =}]) ->
-- logps [B], counts [B] without a graph: ft.pref.logps of the reference. With reference_model
-- (a frozen copy of the starting policy), that model in eval mode; without, model's base with
-- its adapters off (ft.pref.with_reference: a fresh LoRA policy's reference is its base).
function M.reference_logps(model, ids, mask, opts)
  local where = "ft.pref.reference_logps"
  opts = ft.check_options(where, opts, { "attention_mask", "reference_model" })
  local inner = { attention_mask = opts.attention_mask }
  local ref = opts.reference_model
  if ref == nil then return M.with_reference(model, M.logps, model, ids, mask, inner) end
  check.func(where, "reference_model", ref)
  local was_training = type(ref) == "table" and ref.training
  if was_training then ref:eval() end
  local res = table.pack(pcall(ft.no_grad, M.logps, ref, ids, mask, inner))
  if was_training then ref:train(true) end
  if not res[1] then error(res[2], 0) end
  return res[2], res[3]
end

--- ft.pref.disable_dropout(model) -> the number of Dropout layers set to p = 0 (TRL's
-- disable_dropout, on by default in its preference trainers: the policy's and the reference's
-- log-probs then differ only by their weights).
function M.disable_dropout(model)
  local n = 0
  for _, m in model:named_modules() do
    if m.__name == "Dropout" and m.p ~= nil then
      m.p = 0
      n = n + 1
    end
  end
  return n
end

return M
