-- ft.peft: parameter-efficient fine-tuning on any ft.nn model.
--
--   local peft = ft.peft
--   peft.lora(model, {target = {"c_attn", "c_proj"}, r = 8, alpha = 16})
--   peft.summary(model)
--   ... train ...
--   peft.save(model, "runs/adapter", {format = "peft"})
--
-- Adapter kinds live in their own modules (ft.lora, ft.ia3, ft.reft); each provides
--   attach(model, opts) -> name     (opts may be a saved config: it recreates the adapter)
--   state_dict(model, name) -> {model key -> tensor}   the adapter's own tensors
--   remove(model, name)
-- and records itself in the registry of ft.adapters. This file is the one surface users see.
local ft = require "ft"
local A = require "ft.adapters"

local peft = {}

local function kind_module(kind) return require("ft." .. kind) end

-- ---- adapters -------------------------------------------------------------------------------

function peft.lora(model, opts) return kind_module("lora").attach(model, opts or {}) end
function peft.ia3(model, opts) return kind_module("ia3").attach(model, opts or {}) end
function peft.reft(model, opts) return kind_module("reft").attach(model, opts or {}) end

--- Names of the adapters on model, in the order they were added.
function peft.adapters(model)
  local out = {}
  for i, n in ipairs(A.registry(model).order) do out[i] = n end
  return out
end

--- The adapter's tensors keyed as in model:state_dict().
function peft.adapter_state_dict(model, name)
  local entry = A.get(model, name)
  return kind_module(entry.kind).state_dict(model, name)
end

-- Only the active adapters' tensors train (as PEFT's set_adapter).
local function update_trainable(model)
  local reg = A.registry(model)
  for _, n in ipairs(reg.order) do
    for _, t in pairs(peft.adapter_state_dict(model, n)) do t.requires_grad = reg.active[n] == true end
  end
end

--- Makes name the one active adapter (and the one that trains); enables adapters.
function peft.set_adapter(model, name)
  A.get(model, name)
  local reg = A.registry(model)
  reg.active, reg.disabled = { [name] = true }, false
  update_trainable(model)
end

--- enable(model): adapters back on; enable(model, name): switch to that adapter.
function peft.enable(model, name)
  if name then return peft.set_adapter(model, name) end
  A.registry(model).disabled = false
end

--- Every adapter off: the model computes as its base.
function peft.disable(model) A.registry(model).disabled = true end

function peft.delete_adapter(model, name)
  local entry = A.get(model, name)
  kind_module(entry.kind).remove(model, name)
  A.remove(model, name)
end

return peft
