-- ft.peft.registry: the one adapter mechanism. It holds
--   * the kinds of adapters (LoRA with DoRA, (IA)3, ReFT, prompt tuning): one line each in KINDS;
--   * the adapters attached to a model (one table on the root module);
--   * the forward chain of each adapted module, which adapters join and leave;
--   * PEFT's rule for matching module names.
--
-- A kind is one file ft/peft/<kind>.lua plus its line in KINDS. The file returns a table with
--   attach(model, opts) -> name       checks opts, records the adapter (A.add), builds its
--                                     modules and joins the chains of the modules it adapts
--   forward(m, name, inner, ...)      the adapter's part of module m's forward: inner(...) runs
--                                     the rest of the chain (the modules' own forward at the end)
--   state_dict(model, name) -> {model state_dict key -> tensor}   the adapter's own tensors
--   remove(model, name)               takes its modules off and leaves the chains
-- and optionally merge_adapters(model, names, opts) (fold into the weights; forward then skips
-- them), unmerge(model [, names]), merged(model) -> names, merged_on(m) -> names,
-- extra_tensors(model, config, name) (base tensors the adapter trains), options (the option
-- names of attach). The adapter's modules are children whose name starts with the kind's
-- prefix ("lora_A", "ia3_l", "reft_loreft", "prompt_encoder"): base state_dict keys never change.
--
-- Registry, kept on the root module as the plain field _peft:
--   adapters  name -> {kind = "lora" | "ia3" | "reft" | "prompt_tuning", config = {...}}
--             (config is JSON-able: the options the adapter was created with, defaults filled in,
--             so that A.kind(kind).attach(model, config) recreates it)
--   order     adapter names in the order they were added
--   active    name -> true for the adapters that take part in forward
--   disabled  true while every adapter is switched off (the base model alone)
-- This is the only place that says which adapters exist, in which order, and which are on.
-- Each chain keeps a reference to it (the same table), so a switch is seen everywhere at once.
--
-- The chain of a module runs its adapters from the outermost to the innermost, the module's own
-- forward last: by kind stage (LoRA/DoRA innermost, then (IA)3, ReFT, prompt tuning), then in
-- the order the adapters were added (the first added nearest the module). So on one layer
-- (IA)3 scales the input and output of the layer with its LoRA deltas, whatever the order they
-- were attached in, and a LoRA merge into the weight is always exact.
local A = {}

-- The kinds: name, module, the prefix of the child modules holding its tensors, and its stage
-- in a chain (lower runs nearer the module's own forward).
A.KINDS = {
  { kind = "lora", module = "ft.peft.lora", prefix = "lora_", stage = 1 },
  { kind = "ia3", module = "ft.peft.ia3", prefix = "ia3_", stage = 2 },
  { kind = "reft", module = "ft.peft.reft", prefix = "reft_", stage = 3 },
  { kind = "prompt_tuning", module = "ft.peft.prompt_tuning", prefix = "prompt_encoder", stage = 4 },
}

local BY_KIND = {}
for _, k in ipairs(A.KINDS) do BY_KIND[k.kind] = k end

local function kind_names()
  local out = {}
  for i, k in ipairs(A.KINDS) do out[i] = k.kind end
  return table.concat(out, ", ")
end

--- A.kind(kind) -> the kind's module (ft.peft.lora ...); an error names the known kinds.
function A.kind(kind)
  local k = BY_KIND[kind]
  if not k then error(("ft.peft: unknown adapter kind '%s' (kinds: %s)"):format(tostring(kind), kind_names()), 3) end
  return require(k.module)
end

--- A.is_adapter_segment(segment) -> the kind owning a module name segment ("lora_A", "ia3_l",
-- "reft_direft", "prompt_encoder"), or nil for a base module's name.
function A.is_adapter_segment(segment)
  for _, k in ipairs(A.KINDS) do
    if segment:sub(1, #k.prefix) == k.prefix then return k.kind end
  end
  return nil
end

--- A.is_adapter_path(path) -> true when a dotted module or tensor name lies inside an adapter's
-- modules (some segment is an adapter segment): "h.0.attn.c_attn.lora_A.default.weight".
function A.is_adapter_path(path)
  for segment in path:gmatch("[^.]+") do
    if A.is_adapter_segment(segment) then return true end
  end
  return false
end

-- ---- the adapters of a model ------------------------------------------------------------------

--- The registry of model (created empty on first use).
function A.registry(model)
  local reg = rawget(model, "_peft")
  if not reg then
    reg = { adapters = {}, order = {}, active = {}, disabled = false, version = 0 }
    rawset(model, "_peft", reg)
  end
  return reg
end

--- Checks that name can be the name of a new adapter of model ("<where>: ..." errors).
function A.check_new_name(model, name, where)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(("%s: invalid adapter name %q (a non-empty string without '.')"):format(where, tostring(name)), 0)
  end
  local reg = A.registry(model)
  if reg.adapters[name] then
    error(("%s: the model already has an adapter named '%s' (%s)"):format(where, name, reg.adapters[name].kind), 0)
  end
end

--- Records an adapter; the first one added becomes active (as in PEFT). Errors on a name in use.
function A.add(model, name, kind, config, where)
  A.check_new_name(model, name, where or ("ft.peft." .. kind))
  local reg = A.registry(model)
  reg.adapters[name] = { kind = kind, config = config }
  reg.order[#reg.order + 1] = name
  if next(reg.active) == nil then reg.active[name] = true end
  reg.version = reg.version + 1
  return reg
end

--- Forgets an adapter (A.delete takes its modules off first).
function A.remove(model, name)
  local reg = A.registry(model)
  reg.adapters[name], reg.active[name] = nil, nil
  for i, n in ipairs(reg.order) do
    if n == name then table.remove(reg.order, i); break end
  end
  reg.version = reg.version + 1
end

--- The entry {kind, config} of adapter name, or an error naming the adapters the model has.
function A.get(model, name, where)
  local reg = A.registry(model)
  local entry = reg.adapters[name]
  if not entry then
    local have = #reg.order > 0 and table.concat(reg.order, ", ") or "none"
    error(("%s: no adapter named '%s' (adapters on this model: %s)"):format(where or "ft.peft", tostring(name), have), 0)
  end
  return entry
end

--- Names of model's adapters of one kind, in the order they were added.
function A.names_of_kind(model, kind)
  local reg, out = A.registry(model), {}
  for _, n in ipairs(reg.order) do
    if reg.adapters[n].kind == kind then out[#out + 1] = n end
  end
  return out
end

--- Takes adapter name off the model: its modules and chain links, then its registry entry. As
-- PEFT: when it was the only active adapter, the first one left becomes active (and trains).
function A.delete(model, name, where)
  local entry = A.get(model, name, where)
  local reg = A.registry(model)
  local was_active = reg.active[name]
  A.kind(entry.kind).remove(model, name)
  A.remove(model, name)
  if was_active and next(reg.active) == nil and #reg.order > 0 then
    reg.active[reg.order[1]] = true
    A.update_trainable(model)
  end
end

--- True when adapter name takes part in forward.
function A.is_active(reg, name)
  return not reg.disabled and reg.active[name] == true
end

--- Freezes the base model for a new adapter: every parameter that is neither an adapter's own
-- tensor nor a base tensor another adapter trains (LoRA's modules_to_save and biases).
function A.freeze_base(model)
  local keep = {}
  local reg = A.registry(model)
  for _, n in ipairs(reg.order) do
    local entry = reg.adapters[n]
    local kind = A.kind(entry.kind)
    if kind.extra_tensors then
      for k in pairs(kind.extra_tensors(model, entry.config, n)) do keep[k] = true end
    end
  end
  for k, p in model:named_parameters() do
    if not keep[k] and not A.is_adapter_path(k) then p.requires_grad = false end
  end
end

--- Only the active adapters' tensors train (as PEFT's set_adapter). The parameters are found by
-- name: a kind's state_dict may hand out detached aliases, whose flag is their own.
function A.update_trainable(model)
  local reg = A.registry(model)
  local params = {}
  for name, p in model:named_parameters() do params[name] = p end
  for _, n in ipairs(reg.order) do
    local entry = reg.adapters[n]
    for key in pairs(A.kind(entry.kind).state_dict(model, n)) do
      if params[key] then params[key].requires_grad = reg.active[n] == true end
    end
  end
end

--- After the active set changed: merged adapters that no longer take part in forward are
-- unmerged (as PEFT: off means unmerged), so the weights hold only what is switched on.
function A.sync_merges(model)
  local reg = A.registry(model)
  for _, k in ipairs(A.KINDS) do
    local kind = package.loaded[k.module]
    if type(kind) == "table" and kind.merged and kind.unmerge then
      local off = {}
      for _, n in ipairs(kind.merged(model)) do
        if not A.is_active(reg, n) then off[#off + 1] = n end
      end
      if #off > 0 then kind.unmerge(model, off) end
    end
  end
end

--- A.merged_on(m) -> names of the adapters merged into module m's weights (every kind).
function A.merged_on(m)
  local out = {}
  for _, k in ipairs(A.KINDS) do
    local kind = package.loaded[k.module]
    if type(kind) == "table" and kind.merged_on then
      for _, n in ipairs(kind.merged_on(m)) do out[#out + 1] = n end
    end
  end
  return out
end

-- ---- the forward chain of a module --------------------------------------------------------------

-- The chain of module m: {registry =, previous = the instance forward it replaced (usually nil),
-- links = name -> {kind =, stage =}, list = the links outermost first, version = reg.version
-- when list was made}.
local function chain_of(m) return rawget(m, "_peft_chain") end

local function ordered(chain)
  local reg = chain.registry
  if chain.version == reg.version and chain.list then return chain.list end
  local list = {}
  for i, name in ipairs(reg.order) do
    local link = chain.links[name]
    if link then list[#list + 1] = { name = name, stage = link.stage, forward = link.forward, rank = i } end
  end
  table.sort(list, function(a, b)
    if a.stage ~= b.stage then return a.stage > b.stage end
    return a.rank > b.rank
  end)
  chain.list, chain.version = list, reg.version
  return list
end

local function run_chain(m, chain, list, i, ...)
  local link = list[i]
  if not link then return chain.base(m, ...) end
  if not A.is_active(chain.registry, link.name) then return run_chain(m, chain, list, i + 1, ...) end
  return link.forward(m, link.name, function(...) return run_chain(m, chain, list, i + 1, ...) end, ...)
end

-- The forward installed on every adapted module.
local function chain_forward(m, ...)
  local chain = chain_of(m)
  return run_chain(m, chain, ordered(chain), 1, ...)
end

--- A.join(model, m, name): adapter name (already recorded with A.add) joins the forward chain of
-- module m; its kind's forward(m, name, inner, ...) then runs in m's forward.
function A.join(model, m, name)
  local reg = A.registry(model)
  local entry = A.get(model, name)
  local chain = chain_of(m)
  if not chain then
    -- base: what m computed before (its class's forward, or an instance forward it had).
    chain = { registry = reg, links = {}, previous = rawget(m, "forward"), base = m.forward }
    rawset(m, "_peft_chain", chain)
    rawset(m, "forward", chain_forward)
  end
  local k = BY_KIND[entry.kind]
  chain.links[name] = { kind = entry.kind, stage = k.stage, forward = A.kind(entry.kind).forward }
  chain.list = nil
end

--- A.leave(m, name): adapter name leaves m's chain; with the last one gone m's forward is its own.
function A.leave(m, name)
  local chain = chain_of(m)
  if not chain or not chain.links[name] then return end
  chain.links[name] = nil
  chain.list = nil
  if next(chain.links) == nil then
    rawset(m, "forward", chain.previous)
    rawset(m, "_peft_chain", nil)
  end
end

--- A.chain(m) -> the names of the adapters in m's forward chain, outermost first ({} when none).
function A.chain(m)
  local chain = chain_of(m)
  if not chain then return {} end
  local out = {}
  for i, link in ipairs(ordered(chain)) do out[i] = link.name end
  return out
end

--- A.in_chain(m, name) -> true when adapter name is in module m's chain.
function A.in_chain(m, name)
  local chain = chain_of(m)
  return chain ~= nil and chain.links[name] ~= nil
end

--- The modules of model whose chain holds adapter name, as an array of {path, module}.
function A.chained_modules(model, name)
  local out = {}
  for path, m in model:named_modules() do
    if A.in_chain(m, name) then out[#out + 1] = { path, m } end
  end
  return out
end

-- ---- module-name matching ---------------------------------------------------------------------

--- A plain name holds only letters, digits, '_' and '.'; anything else is a Lua pattern.
local function is_plain(s) return s:match("^[%w_.]+$") ~= nil end
A.is_plain = is_plain

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
-- {name, module} in module order. Modules added by adapters are never targets.
function A.find_modules(model, patterns, exclude)
  local out = {}
  for name, m in model:named_modules() do
    if name ~= "" and not A.is_adapter_path(name)
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
    if #child:parameters() > 0 and not A.is_adapter_segment(name) then out[#out + 1] = { name, child } end
  end
  return out
end

return A
