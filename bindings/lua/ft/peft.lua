-- ft.peft: parameter-efficient fine-tuning on any ft.nn model, the one surface users call:
-- choosing what trains (ft.peft.training: freezing, frozen BatchNorm, param groups, layer-wise
-- lr decay, gradual unfreezing, new heads, LP-FT) and adapters (ft.peft.registry and one file
-- per kind: lora (with DoRA), ia3, reft, prompt_tuning), saved and loaded by ft.peft.io.
--
--   local peft = ft.peft
--   peft.freeze(model, {"^conv1$", "^bn1$", "^layer1$"})   -- BatchNorm there keeps its stats
--   peft.summary(model)
--   peft.lora(model, {target = {"c_attn", "c_proj"}, r = 8, alpha = 16})
--   ... train ...
--   peft.save(model, "runs/adapter", {format = "peft"})
--
-- Adapters attach in place: each adds child modules (lora_A, ia3_l, reft_loreft, prompt_encoder
-- ...) and joins the forward chain of the modules it adapts; the base model's state_dict keys
-- never change. Kinds stack on one model and on one layer, and come off in any order. Which
-- adapters exist, in which order, and which are on is kept in one place, the model's registry.
-- Every function taking an options table rejects an unknown option, naming the valid ones.
local ft = require "ft"
local A = require "ft.peft.registry"
local training = require "ft.peft.training"

local peft = {}

-- ---- adapters -------------------------------------------------------------------------------

--- peft.lora(model, opts) -> name: adds a LoRA (or DoRA, dora = true) adapter to the layers
-- matching opts.target and to the 3-D expert weights opts.target_parameters names; options as
-- ft.peft.lora (target, target_parameters, r, alpha, dropout, dora, ...).
function peft.lora(model, opts) return A.kind("lora").attach(model, opts or {}) end

--- peft.ia3(model [, opts]) -> name: adds an (IA)3 adapter (defaults per model type); options
-- as ft.peft.ia3 (name, target, feedforward, fused_qkv).
function peft.ia3(model, opts) return A.kind("ia3").attach(model, opts or {}) end

--- peft.reft(model [, opts]) -> name: adds a ReFT adapter (LoReFT or DiReFT interventions on
-- transformer blocks); options as ft.peft.reft (layers, positions, rank, kind, ...).
function peft.reft(model, opts) return A.kind("reft").attach(model, opts or {}) end

--- peft.prompt_tuning(model [, opts]) -> name: adds a soft prompt in front of every input;
-- options as ft.peft.prompt_tuning (num_virtual_tokens, init, init_text, ...).
function peft.prompt_tuning(model, opts) return A.kind("prompt_tuning").attach(model, opts or {}) end

--- peft.kinds() -> the adapter kinds, in chain order from the innermost ({"lora", "ia3", ...}).
function peft.kinds()
  local out = {}
  for i, k in ipairs(A.KINDS) do out[i] = k.kind end
  return out
end

--- peft.adapters(model) -> names of the adapters on model, in the order they were added.
function peft.adapters(model)
  local out = {}
  for i, n in ipairs(A.registry(model).order) do out[i] = n end
  return out
end

--- peft.active_adapters(model) -> names of the adapters that take part in forward, in order
-- ({} while adapters are disabled).
function peft.active_adapters(model)
  local reg, out = A.registry(model), {}
  for _, n in ipairs(reg.order) do
    if A.is_active(reg, n) then out[#out + 1] = n end
  end
  return out
end

--- peft.adapter_kind(model, name) -> the kind of adapter name ("lora", "ia3", "reft", "prompt_tuning").
function peft.adapter_kind(model, name) return A.get(model, name, "ft.peft.adapter_kind").kind end

--- peft.adapter_state_dict(model, name) -> the adapter's tensors keyed as in model:state_dict().
function peft.adapter_state_dict(model, name)
  local entry = A.get(model, name, "ft.peft.adapter_state_dict")
  return A.kind(entry.kind).state_dict(model, name)
end

--- peft.set_adapter(model, name_or_names): makes name (or every name of a list) the active
-- adapter(s), the ones that compute and train; enables adapters. Merged adapters switched off
-- are unmerged.
function peft.set_adapter(model, names)
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" or #names == 0 then
    error("ft.peft.set_adapter: an adapter name or a non-empty list of names expected, got " .. type(names), 2)
  end
  local active = {}
  for _, n in ipairs(names) do
    A.get(model, n, "ft.peft.set_adapter")
    active[n] = true
  end
  local reg = A.registry(model)
  reg.active, reg.disabled = active, false
  A.sync_merges(model)
  A.update_trainable(model)
end

--- peft.enable(model [, name]): enable(model) switches adapters back on (the active set as it
-- was); enable(model, name) switches to that one adapter (as set_adapter).
function peft.enable(model, name)
  if name ~= nil then return peft.set_adapter(model, name) end
  A.registry(model).disabled = false
end

--- peft.disable(model [, name]): disable(model) switches every adapter off (the model computes
-- as its base; merged adapters are unmerged); disable(model, name) switches off that adapter
-- only (it stops computing and training), the others stay as they are.
function peft.disable(model, name)
  local reg = A.registry(model)
  if name == nil then
    reg.disabled = true
  else
    A.get(model, name, "ft.peft.disable")
    reg.active[name] = nil
  end
  A.sync_merges(model)
  if name ~= nil then A.update_trainable(model) end
end

--- peft.delete_adapter(model, name): takes the adapter off the model (its modules, its links in
-- the forward chains, its registry entry); the other adapters stay exactly as they were.
function peft.delete_adapter(model, name) A.delete(model, name, "ft.peft.delete_adapter") end

-- The adapters to merge (opts.names, or every active adapter of a kind that merges), grouped by
-- kind; an error for an unknown, inactive or unmergeable one.
local function merge_names(model, names, where)
  local reg = A.registry(model)
  local by_kind = {}
  if names == nil then
    names = {}
    for _, n in ipairs(reg.order) do
      if A.is_active(reg, n) and A.kind(reg.adapters[n].kind).merge_adapters then names[#names + 1] = n end
    end
  elseif type(names) == "string" then
    names = { names }
  elseif type(names) ~= "table" then
    error(("%s: option names must be an adapter name or a list of names, got %s"):format(where, type(names)), 0)
  end
  for _, n in ipairs(names) do
    local kind = A.get(model, n, where).kind
    if not A.kind(kind).merge_adapters then
      error(("%s: adapter '%s' is a %s adapter, which cannot be merged into the weights"):format(where, n, kind), 0)
    end
    if not A.is_active(reg, n) then
      error(("%s: adapter '%s' is switched off; switch it on (ft.peft.set_adapter) before merging it"):format(where,
        n), 0)
    end
    by_kind[kind] = by_kind[kind] or {}
    table.insert(by_kind[kind], n)
  end
  return by_kind
end

--- peft.merge(model [, {names =, safe = false, quantized =, dtype =}]) -> model: folds adapters
-- (default: every active LoRA, DoRA and (IA)3 adapter) into the base weights; forward then skips
-- them, unmerge takes them out again. safe = true checks every merged weight for NaN and Inf
-- first. A merge that cannot be exact is an error that changes nothing: (IA)3 on a layer with
-- LoRA adapters (it scales their deltas too; merge_and_unload folds both). A LoRA over a layer
-- quantised by ft.quant needs quantized = "requantize" | "dequantize" (and for the latter
-- optionally dtype = "float32" | "bfloat16" | "float16"): see ft.peft.lora.merge.
function peft.merge(model, opts)
  local where = "ft.peft.merge"
  opts = ft.check_options(where, opts, { "names", "safe", "quantized", "dtype" })
  local by_kind = merge_names(model, opts.names, where)
  if by_kind.ia3 then A.kind("ia3").check_merge(model, by_kind.ia3, opts, where) end
  for _, k in ipairs(A.KINDS) do   -- innermost first
    local names = by_kind[k.kind]
    if names then
      local kind_opts = { safe = opts.safe, where = where }
      if k.kind == "lora" then kind_opts.quantized, kind_opts.dtype = opts.quantized, opts.dtype end
      A.kind(k.kind).merge_adapters(model, names, kind_opts)
    end
  end
  return model
end

--- peft.safe_merge(model [, {names =}]) -> model: peft.merge with safe = true.
function peft.safe_merge(model, opts)
  opts = ft.check_options("ft.peft.safe_merge", opts, { "names" })
  return peft.merge(model, { names = opts.names, safe = true })
end

--- peft.unmerge(model [, names]) -> model: takes merged adapters (default: all) out of the weights.
function peft.unmerge(model, names)
  if type(names) == "string" then names = { names } end
  local by_kind = {}
  for _, n in ipairs(names or {}) do
    local kind = A.get(model, n, "ft.peft.unmerge").kind
    by_kind[kind] = by_kind[kind] or {}
    table.insert(by_kind[kind], n)
  end
  for i = #A.KINDS, 1, -1 do   -- outermost first
    local kind = A.kind(A.KINDS[i].kind)
    if kind.unmerge and (names == nil or by_kind[A.KINDS[i].kind]) then kind.unmerge(model, by_kind[A.KINDS[i].kind]) end
  end
  return model
end

--- peft.merged_adapters(model) -> names of the adapters merged into some weight of model.
function peft.merged_adapters(model)
  local out = {}
  for _, k in ipairs(A.KINDS) do
    local kind = A.kind(k.kind)
    if kind.merged then
      for _, n in ipairs(kind.merged(model)) do out[#out + 1] = n end
    end
  end
  return out
end

--- peft.merge_and_unload(model [, {names =, safe =, quantized =, dtype =}]) -> model: folds the
-- active LoRA, DoRA and (IA)3 adapters (or names) into the base weights, innermost first, and
-- takes every LoRA and (IA)3 adapter off: the model computes as before, without them. ReFT and
-- prompt tuning stay. quantized and dtype: as in peft.merge, for a quantised base.
function peft.merge_and_unload(model, opts)
  local where = "ft.peft.merge_and_unload"
  opts = ft.check_options(where, opts, { "names", "safe", "quantized", "dtype" })
  local by_kind = merge_names(model, opts.names, where)
  if by_kind.ia3 and opts.safe then A.kind("ia3").check_finite(model, by_kind.ia3, where) end
  if #A.names_of_kind(model, "lora") > 0 then
    A.kind("lora").merge_and_unload(model, { names = by_kind.lora or {}, safe = opts.safe, where = where,
      quantized = opts.quantized, dtype = opts.dtype })
  end
  local fold = {}
  for _, n in ipairs(by_kind.ia3 or {}) do fold[n] = true end
  for _, n in ipairs(A.names_of_kind(model, "ia3")) do
    if fold[n] then A.kind("ia3").merge_and_unload(model, n) else A.delete(model, n, where) end
  end
  return model
end

-- ---- saving and loading adapters (ft.peft.io) -----------------------------------------------

--- peft.save(model, dir [, {name = "default", format = "ftlua"|"peft", task_type =,
-- base_model_name_or_path =, revision =}]) -> path written. "ftlua": dir/adapter.h5 with the
-- adapter's kind and config; "peft": PEFT's adapter_model.safetensors + adapter_config.json
-- (LoRA), the folder replaced as a whole.
function peft.save(model, dir, opts) return require("ft.peft.io").save(model, dir, opts) end

--- peft.load(model, dir_or_file [, {name =}]) -> adapter name: an adapter saved by peft.save,
-- or a folder written by HuggingFace PEFT (LoRA).
function peft.load(model, path, opts) return require("ft.peft.io").load(model, path, opts) end

-- ---- what trains (ft.peft.training) ---------------------------------------------------------

--- peft.freeze(model [, patterns [, {bn_policy = "eval"|"train"|false}]]) -> tensors changed, elements.
-- Stops the matched parameters (all without patterns) from training; BatchNorm layers frozen
-- whole keep their running statistics (bn_policy "eval").
peft.freeze = training.freeze

--- peft.unfreeze(model [, patterns [, {bn_policy =}]]) -> tensors changed, elements: the
-- matched parameters train again; their BatchNorm layers get bn_policy "train".
peft.unfreeze = training.unfreeze

--- peft.bn_policy(model, patterns, "eval"|"train") -> number of BatchNorm layers set.
peft.bn_policy = training.bn_policy

--- peft.trainable_parameters(model) -> array of {name, param} of the parameters that train.
peft.trainable_parameters = training.trainable_parameters

--- peft.summary(model [, {modules = true, print = true}]) -> line [, rows]: PEFT's
-- "trainable params: ... || all params: ... || trainable%: ..." line.
peft.summary = training.summary

--- peft.param_groups(model, {{patterns, lr =, ...}, ...} [, defaults]) -> optimizer param groups.
peft.param_groups = training.param_groups

--- peft.layerwise_lr_decay(model, {lr =, decay = 0.75, weight_decay =}) -> param groups.
peft.layerwise_lr_decay = training.layerwise_lr_decay

--- peft.gradual_unfreezer(model [, {groups = {...}}]) -> unfreezer (ULMFiT's gradual unfreezing).
peft.gradual_unfreezer = training.gradual_unfreezer

--- peft.replace_head(model, num_outputs [, {name =}]) -> the new Linear in place of the classifier.
peft.replace_head = training.replace_head

--- peft.lpft(model, {head =, probe = fn(model), finetune = fn(model)}) -> probed state dict.
peft.lpft = training.lpft

return peft
