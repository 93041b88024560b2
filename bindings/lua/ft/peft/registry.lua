-- ft.adapters: what LoRA, (IA)3 and ReFT share. The registry of adapters attached to a
-- model (one table on the root module) and PEFT's rule for matching module names.
--
-- Registry, kept on the root module as the plain field _peft:
--   adapters  name -> {kind = "lora" | "ia3" | "reft", config = {...}}  (config is JSON-able:
--             the options the adapter was created with, defaults filled in, so that
--             require("ft.peft." .. kind).attach(model, config) recreates it)
--   order     adapter names in the order they were added
--   active    name -> true for the adapters that take part in forward
--   disabled  true while every adapter is switched off (the base model alone)
-- Adapted layers keep a reference to the registry table, so switching adapters on the
-- root is seen by every layer at once.
local A = {}

--- The registry of model (created empty on first use).
function A.registry(model)
  local reg = rawget(model, "_peft")
  if not reg then
    reg = { adapters = {}, order = {}, active = {}, disabled = false }
    rawset(model, "_peft", reg)
  end
  return reg
end

--- Records an adapter; the first one added becomes active (as in PEFT). Errors on a name in use.
function A.add(model, name, kind, config)
  local reg = A.registry(model)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(("ft.peft: invalid adapter name %q (a non-empty string without '.')"):format(tostring(name)), 3)
  end
  if reg.adapters[name] then
    error(("ft.peft: the model already has an adapter named '%s' (%s)"):format(name, reg.adapters[name].kind), 3)
  end
  reg.adapters[name] = { kind = kind, config = config }
  reg.order[#reg.order + 1] = name
  if next(reg.active) == nil then reg.active[name] = true end
  return reg
end

--- Forgets an adapter (the kind's module removes its layers first).
function A.remove(model, name)
  local reg = A.registry(model)
  reg.adapters[name], reg.active[name] = nil, nil
  for i, n in ipairs(reg.order) do
    if n == name then table.remove(reg.order, i); break end
  end
end

--- The entry {kind, config} of adapter name, or an error naming the adapters the model has.
function A.get(model, name)
  local reg = A.registry(model)
  local entry = reg.adapters[name]
  if not entry then
    local have = #reg.order > 0 and table.concat(reg.order, ", ") or "none"
    error(("ft.peft: no adapter named '%s' (adapters on this model: %s)"):format(tostring(name), have), 3)
  end
  return entry
end

--- True when adapter name takes part in forward.
function A.is_active(reg, name)
  return not reg.disabled and reg.active[name] == true
end

-- ---- module-name matching ---------------------------------------------------------------------

-- A plain name holds only letters, digits, '_' and '.'; anything else is a Lua pattern.
local function is_plain(s) return s:match("^[%w_.]+$") ~= nil end

--- PEFT's rule: a plain name matches a whole dotted-segment suffix ("c_proj" matches
-- "transformer.h.0.attn.c_proj", not "transformer.h.0.attn.xc_proj"); any other string is
-- a Lua pattern searched in the name. patterns: a string or a list of strings.
function A.matches(name, patterns)
  if type(patterns) == "string" then patterns = { patterns } end
  for _, p in ipairs(patterns) do
    if is_plain(p) then
      if name == p or (#name > #p and name:sub(-#p - 1) == "." .. p) then return true end
    elseif name:find(p) then
      return true
    end
  end
  return false
end

--- The modules of model whose dotted names match patterns (and not exclude), as an array of
-- {name, module} in module order. Modules added by adapters (a path segment starting with
-- "lora_", "ia3_" or "reft_") are never targets.
function A.find_modules(model, patterns, exclude)
  local out = {}
  for name, m in model:named_modules() do
    local dotted = "." .. name
    if name ~= "" and not (dotted:find(".lora_", 1, true) or dotted:find(".ia3_", 1, true)
        or dotted:find(".reft_", 1, true))
      and A.matches(name, patterns) and not (exclude and A.matches(name, exclude)) then
      out[#out + 1] = { name, m }
    end
  end
  return out
end

--- The module at a dotted path ("transformer.h.0.attn"), or nil.
function A.module_at(model, path)
  local m = model
  for part in path:gmatch("[^.]+") do
    m = m._modules[part]
    if not m then return nil end
  end
  return m
end

--- The repeated blocks of a model (transformer layers): the largest ModuleList, as an array of
-- {name, module} (GPT-2 transformer.h.*, Llama model.layers.*, ViT vit.encoder.layer.*). For
-- models without one (ResNets), the top-level children that hold parameters.
function A.blocks(model)
  local best, best_name
  for name, m in model:named_modules() do
    if m.__name == "ModuleList" and #m > 0 and (not best or #m > #best) then best, best_name = m, name end
  end
  local out = {}
  if best then
    for i, child in ipairs(best:children()) do out[i] = { best_name .. "." .. (i - 1), child } end
    return out
  end
  for name, child in model:named_children() do
    if #child:parameters() > 0 then out[#out + 1] = { name, child } end
  end
  return out
end

return A
