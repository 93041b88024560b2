-- ft.peft.training: choosing what trains, for full fine-tuning and for adapters alike: freezing
-- and unfreezing by pattern, the BatchNorm policy of frozen layers, param groups, layer-wise lr
-- decay, gradual unfreezing, new heads and LP-FT. Users reach it through ft.peft (ft.peft.freeze ...).
--
-- Patterns (freeze, unfreeze, bn_policy, param_groups, gradual_unfreezer) follow PEFT: a plain
-- name ("c_proj", "attn.c_proj") matches a whole dotted-segment suffix of a module or parameter
-- name; any other string is a Lua pattern ("^layer1$", "h%.[0-3]%."); a list matches when one
-- of its entries does. A parameter is hit when its own name or the name of a module enclosing
-- it matches.
local ft = require "ft"
local A = require "ft.peft.registry"

local T = {}

-- The options an optimizer param group may carry (ft.optim's SGD, Adam and AdamW).
local GROUP_OPTIONS = { "lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "betas", "eps",
  "amsgrad" }

-- ---- patterns ---------------------------------------------------------------------------------

-- patterns (nil, a string or a list of strings) -> a list, or nil for "everything".
local function pattern_list(patterns, where)
  if patterns == nil then return nil end
  if type(patterns) == "string" then patterns = { patterns } end
  if type(patterns) ~= "table" then
    error(("%s: patterns must be a string or a list of strings, got %s"):format(where, type(patterns)), 3)
  end
  for k in pairs(patterns) do
    if math.type(k) ~= "integer" then
      error(("%s: patterns must be a string or a list of strings, got a table with the key '%s' (options come "
        .. "after the patterns: pass nil for the whole model)"):format(where, tostring(k)), 3)
    end
  end
  local out = {}
  for i, p in ipairs(patterns) do
    if type(p) ~= "string" or p == "" then
      error(("%s: pattern %d must be a non-empty string, got %s"):format(where, i, type(p) == "string" and
        '""' or type(p)), 3)
    end
    out[i] = p
  end
  if #out == 0 then error(where .. ": the pattern list is empty (leave it out to mean the whole model)", 3) end
  return out
end

local function copy_set(s)
  local c = {}
  for k in pairs(s) do c[k] = true end
  return c
end

-- Walks the model once: every module with the set of pattern indices that hit it or an
-- enclosing module, and every (module, own parameter) pair with the indices hitting the
-- parameter (tied parameters appear once per module that holds them).
-- -> modules {path, module, hits}, params {name, param, module, hits}
local function scan(model, patterns, where)
  patterns = patterns or {}
  local function matches(name, p)
    local ok, hit = pcall(A.matches, name, p)
    if not ok then
      error(("%s: invalid Lua pattern '%s' (%s)"):format(where, p, tostring(hit):gsub("^.-:%d+: ", "")), 0)
    end
    return hit
  end
  local modules, params, by_path = {}, {}, {}
  for path, m in model:named_modules() do
    local parent = path:match("^(.*)%.[^.]+$") or (path ~= "" and "" or nil)
    local hits = parent and by_path[parent] and copy_set(by_path[parent]) or {}
    if path ~= "" then
      for i, p in ipairs(patterns) do
        if matches(path, p) then hits[i] = true end
      end
    end
    by_path[path] = hits
    modules[#modules + 1] = { path = path, module = m, hits = hits }
    for _, pname in ipairs(m._parameter_names) do
      local name = path == "" and pname or path .. "." .. pname
      local own = hits
      for i, p in ipairs(patterns) do
        if not own[i] and matches(name, p) then
          if own == hits then own = copy_set(hits) end
          own[i] = true
        end
      end
      params[#params + 1] = { name = name, param = m._parameters[pname], module = m, hits = own }
    end
  end
  return modules, params
end

-- The parameters hit by patterns (all of them when patterns is nil) as a set plus an array in
-- model order. Every pattern must hit something: the error names the one that does not.
local function select_params(model, patterns, where)
  local modules, params = scan(model, patterns, where)
  local set, list, used = {}, {}, {}
  for _, e in ipairs(params) do
    if not patterns or next(e.hits) then
      for i in pairs(e.hits) do used[i] = true end
      if not set[e.param] then
        set[e.param] = true
        list[#list + 1] = e
      end
    end
  end
  for i, p in ipairs(patterns or {}) do
    if not used[i] then
      error(("%s: pattern '%s' matches no module or parameter of %s (a plain name matches a whole " ..
        "dotted suffix, e.g. 'c_proj' hits 'h.0.mlp.c_proj'; anything else is a Lua pattern)"):format(
        where, p, model.__name), 3)
    end
  end
  return set, list, modules
end

-- ---- freezing ------------------------------------------------------------------------------

local function is_batch_norm(m)
  local nn = ft.nn
  if m.__name == "BatchNorm" then return true end
  local class = m.super
  while class do
    if class == nn.BatchNorm then return true end
    class = class.super
  end
  return false
end

local POLICIES = { eval = true, train = true }

-- BatchNorm modules whose parameters are all in set (or, without parameters, that the patterns
-- hit), in model order.
local function covered_batch_norms(modules, set, patterns)
  local out = {}
  for _, e in ipairs(modules) do
    local m = e.module
    if is_batch_norm(m) then
      local own = m:parameters({ recurse = false })
      local all = #own > 0
      for _, p in ipairs(own) do
        if not set[p] then all = false; break end
      end
      if all or (#own == 0 and (not patterns or next(e.hits))) then out[#out + 1] = m end
    end
  end
  return out
end

local function set_requires_grad(model, patterns, opts, flag, where)
  opts = ft.check_options(where, opts, { "bn_policy" })
  local list = pattern_list(patterns, where)
  local policy = opts.bn_policy
  if policy == nil then policy = flag and "train" or "eval" end
  if policy ~= false and not POLICIES[policy] then
    error(("%s: option bn_policy must be \"eval\", \"train\" or false, got %s"):format(where, tostring(policy)), 3)
  end
  local set, params, modules = select_params(model, list, where)
  local changed, elements = 0, 0
  for _, e in ipairs(params) do
    local p = e.param
    if p.requires_grad ~= flag then
      p.requires_grad = flag
      changed, elements = changed + 1, elements + p:numel()
    end
  end
  if policy ~= false then
    for _, m in ipairs(covered_batch_norms(modules, set, list)) do rawset(m, "bn_policy", policy) end
  end
  return changed, elements
end

--- freeze(model [, patterns [, {bn_policy = "eval"|"train"|false}]]) -> tensors changed, elements
-- Stops the matched parameters from training (all of them without patterns). BatchNorm layers
-- whose parameters are all frozen by the call also stop updating their running statistics
-- (bn_policy "eval", the default; false leaves the policy alone).
function T.freeze(model, patterns, opts)
  return set_requires_grad(model, patterns, opts, false, "ft.peft.freeze")
end

--- unfreeze(model [, patterns [, {bn_policy=}]]) -> tensors changed, elements
-- The matched parameters train again; their BatchNorm layers get bn_policy "train".
function T.unfreeze(model, patterns, opts)
  return set_requires_grad(model, patterns, opts, true, "ft.peft.unfreeze")
end

--- bn_policy(model, patterns, "eval"|"train") -> number of BatchNorm layers set.
-- "eval": the layer normalises with its running statistics and never updates them, even when
-- the model is in training mode; "train": it follows model:train()/eval() as usual.
-- patterns nil means every BatchNorm layer; a pattern hits a layer by its name or an enclosing
-- module's name.
function T.bn_policy(model, patterns, policy)
  local where = "ft.peft.bn_policy"
  if not POLICIES[policy] then
    error(("%s: policy must be \"eval\" or \"train\", got %s"):format(where, tostring(policy)), 2)
  end
  local list = pattern_list(patterns, where)
  local modules = scan(model, list, where)
  local n, used = 0, {}
  for _, e in ipairs(modules) do
    if is_batch_norm(e.module) and (not list or next(e.hits)) then
      for i in pairs(e.hits) do used[i] = true end
      rawset(e.module, "bn_policy", policy)
      n = n + 1
    end
  end
  for i, p in ipairs(list or {}) do
    if not used[i] then error(("%s: pattern '%s' matches no BatchNorm layer of %s"):format(where, p, model.__name), 2) end
  end
  return n
end

--- Array of {name, param} of the parameters that train, in model order.
function T.trainable_parameters(model)
  local out = {}
  for name, p in model:named_parameters() do
    if p.requires_grad then out[#out + 1] = { name, p } end
  end
  return out
end

local function commas(n)
  local s = tostring(math.tointeger(n) or n)
  local head, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  return head .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

--- summary(model [, {modules = true, print = true}]) -> line [, rows]
-- PEFT's line "trainable params: 12,345 || all params: 696,042 || trainable%: 1.7737" (tied
-- parameters counted once), printed unless print = false. With modules = true, also a table
-- per top-level module; rows is then an array of {name =, params =, trainable =}.
function T.summary(model, opts)
  opts = ft.check_options("ft.peft.summary", opts, { "modules", "print" })
  local trainable, total = 0, 0
  local owner, rows, by_name = {}, {}, {}
  if opts.modules then
    for name, child in model:named_children() do
      for _, p in ipairs(child:parameters()) do
        if owner[p] == nil then owner[p] = name end
      end
    end
  end
  for _, p in ipairs(model:parameters()) do
    local n = p:numel()
    total = total + n
    if p.requires_grad then trainable = trainable + n end
    if opts.modules then
      local name = owner[p] or "(root)"
      local row = by_name[name]
      if not row then
        row = { name = name, params = 0, trainable = 0 }
        by_name[name] = row
        rows[#rows + 1] = row
      end
      row.params = row.params + n
      if p.requires_grad then row.trainable = row.trainable + n end
    end
  end
  local pct = total > 0 and 100 * trainable / total or 0
  local line = ("trainable params: %s || all params: %s || trainable%%: %.4f"):format(commas(trainable),
    commas(total), pct)
  if opts.print ~= false then
    print(line)
    if opts.modules then
      local width = #"module"
      for _, r in ipairs(rows) do width = math.max(width, #r.name) end
      local fmt = "%-" .. width .. "s  %12s  %12s"
      print(fmt:format("module", "params", "trainable"))
      for _, r in ipairs(rows) do print(fmt:format(r.name, commas(r.params), commas(r.trainable))) end
    end
  end
  if opts.modules then return line, rows end
  return line
end

-- ---- param groups ---------------------------------------------------------------------------

-- Checks a group's option names: its patterns (first entry, or patterns / pattern) and the
-- optimizer options in GROUP_OPTIONS.
local function check_group_options(spec, what, where)
  local opts = {}
  for k, v in pairs(spec) do
    if k ~= 1 then opts[k] = v end
  end
  ft.check_options(("%s: %s"):format(where, what), opts, what == "defaults" and GROUP_OPTIONS
    or { "patterns", "pattern", table.unpack(GROUP_OPTIONS) })
end

local function spec_patterns(spec, i, where)
  if type(spec) ~= "table" then error(("%s: group %d must be a table, got %s"):format(where, i, type(spec)), 3) end
  check_group_options(spec, "group " .. i, where)
  local p = spec[1]
  if p == nil then p = spec.patterns end
  if p == nil then p = spec.pattern end
  if p == nil then error(("%s: group %d has no pattern (give it as the first entry)"):format(where, i), 3) end
  return pattern_list(p, where)
end

--- param_groups(model, {{patterns, lr =, weight_decay =, ...}, ...} [, defaults]) -> groups
-- Optimizer param groups: each trainable parameter goes to the first group whose pattern(s)
-- hit it, the rest to a last group with the options in defaults. A group's patterns are its
-- first entry (or field patterns); its other fields are copied (lr, weight_decay, momentum
-- ...). Empty groups are dropped. Each group also lists its parameter names in names.
function T.param_groups(model, specs, defaults)
  local where = "ft.peft.param_groups"
  if type(specs) ~= "table" then error(where .. ": a list of groups expected, got " .. type(specs), 2) end
  if defaults ~= nil then
    if type(defaults) ~= "table" then error(where .. ": defaults must be a table of optimizer options", 2) end
    check_group_options(defaults, "defaults", where)
  end
  local flat, owner = {}, {}
  for i, spec in ipairs(specs) do
    for _, p in ipairs(spec_patterns(spec, i, where)) do
      flat[#flat + 1] = p
      owner[#flat] = i
    end
  end
  local _, params = scan(model, flat, where)
  -- first spec hitting each parameter (over every name it has), in model order
  local best, order = {}, {}
  for _, e in ipairs(params) do
    local p = e.param
    if best[p] == nil then
      best[p] = false
      order[#order + 1] = e
    end
    for k in pairs(e.hits) do
      local i = owner[k]
      if not best[p] or i < best[p] then best[p] = i end
    end
  end
  local function new_group(options)
    local g = { params = {}, names = {} }
    for k, v in pairs(options or {}) do
      if k ~= 1 and k ~= "patterns" and k ~= "pattern" then g[k] = v end
    end
    return g
  end
  local groups = {}
  for i, spec in ipairs(specs) do groups[i] = new_group(spec) end
  local rest = new_group(defaults)
  for _, e in ipairs(order) do
    if e.param.requires_grad then
      local g = best[e.param] and groups[best[e.param]] or rest
      g.params[#g.params + 1] = e.param
      g.names[#g.names + 1] = e.name
    end
  end
  local out = {}
  for _, g in ipairs(groups) do
    if #g.params > 0 then out[#out + 1] = g end
  end
  if #rest.params > 0 then out[#out + 1] = rest end
  return out
end

-- Layers of a model from bottom to top as arrays of {name, param} (all parameters, tied ones
-- once): [1] embeddings / stem (parameters before the first block), then one per block
-- (ft.peft.registry blocks: transformer layers; the stages of a ResNet), then the head (what
-- comes after the last block). Layers may be empty.
local function layers_of(model)
  local blocks = A.blocks(model)
  if #blocks > 0 and not blocks[1][1]:find(".", 1, true) then
    -- Top-level children (no ModuleList): single layers before the first container are the
    -- stem, single layers after the last one the head (ResNet: conv1, bn1 | layer1..4 | fc).
    local function is_leaf(e) return #e[2]:children() == 0 end
    local first, last = 1, #blocks
    while first <= #blocks and is_leaf(blocks[first]) do first = first + 1 end
    while last >= 1 and is_leaf(blocks[last]) do last = last - 1 end
    if first <= last then
      local body = {}
      for i = first, last do body[#body + 1] = blocks[i] end
      blocks = body
    end
  end
  local layers = { {} }
  for i = 1, #blocks do layers[i + 1] = {} end
  local head = {}
  local seen_block = false
  for name, p in model:named_parameters() do
    local at
    for i, b in ipairs(blocks) do
      local prefix = b[1] .. "."
      if name:sub(1, #prefix) == prefix then at = i; break end
    end
    if at then
      seen_block = true
      table.insert(layers[at + 1], { name, p })
    elseif seen_block then
      head[#head + 1] = { name, p }
    else
      table.insert(layers[1], { name, p })
    end
  end
  layers[#layers + 1] = head
  return layers
end

local function no_decay(name, p) return p:dim() <= 1 or name:match("%.bias$") ~= nil or name == "bias" end

--- layerwise_lr_decay(model, {lr =, decay = 0.75, weight_decay =}) -> groups
-- Layer-wise lr decay (ELECTRA/BEiT style): the head trains at lr, the top block at lr * decay,
-- each block below one more factor decay, the embeddings / stem lowest. Biases and norm
-- weights (1-D parameters) get weight_decay 0. Only trainable parameters; empty groups are
-- dropped. Each group has fields params, names, lr, weight_decay and layer (0 = stem).
function T.layerwise_lr_decay(model, opts)
  local where = "ft.peft.layerwise_lr_decay"
  opts = ft.check_options(where, opts, { "lr", "decay", "weight_decay" })
  if type(opts.lr) ~= "number" or opts.lr <= 0 then error(where .. ": option lr (a positive number) is required", 2) end
  local decay = opts.decay or 0.75
  if type(decay) ~= "number" or decay <= 0 then error(where .. ": option decay must be a positive number", 2) end
  local layers = layers_of(model)
  local top = #layers - 1
  local groups = {}
  for k, layer in ipairs(layers) do
    local id = k - 1
    local lr = opts.lr * decay ^ (top - id)
    local decayed = { params = {}, names = {}, lr = lr, weight_decay = opts.weight_decay, layer = id }
    local plain = { params = {}, names = {}, lr = lr, weight_decay = 0, layer = id }
    for _, e in ipairs(layer) do
      if e[2].requires_grad then
        local g = no_decay(e[1], e[2]) and plain or decayed
        g.params[#g.params + 1] = e[2]
        g.names[#g.names + 1] = e[1]
      end
    end
    if #decayed.params > 0 then groups[#groups + 1] = decayed end
    if #plain.params > 0 then groups[#groups + 1] = plain end
  end
  return groups
end

-- ---- gradual unfreezing --------------------------------------------------------------------

local Unfreezer = {}
Unfreezer.__index = Unfreezer

local function set_group(model, group, flag)
  for _, p in ipairs(group.params) do p.requires_grad = flag end
  for _, m in ipairs(group.batch_norms) do rawset(m, "bn_policy", flag and "train" or "eval") end
end

--- gradual_unfreezer(model [, {groups = {patterns, ...}}]) -> unfreezer (ULMFiT's gradual
-- unfreezing). groups lists the layer groups from bottom to top, each a pattern or a list of
-- patterns; by default the stem, each block and the head (as layerwise_lr_decay). On creation
-- everything is frozen except the top group (its BatchNorm layers train, the others keep
-- their statistics). unfreezer:step(), once at the start of each epoch: after the k-th call
-- the top k groups train (the first call leaves the head, already training). Returns the number
-- of groups training, also given by unfreezer:unfrozen().
function T.gradual_unfreezer(model, opts)
  local where = "ft.peft.gradual_unfreezer"
  opts = ft.check_options(where, opts, { "groups" })
  local groups = {}
  local _, _, modules = select_params(model, nil, where)
  local function add(set, params, label)
    if #params > 0 then
      groups[#groups + 1] = { params = params, label = label, batch_norms = covered_batch_norms(modules, set, {}) }
    end
  end
  if opts.groups then
    if type(opts.groups) ~= "table" or #opts.groups == 0 then
      error(where .. ": option groups must be a non-empty list of patterns (bottom to top)", 2)
    end
    for i, pats in ipairs(opts.groups) do
      local list = pattern_list(pats, where)
      local set, entries = select_params(model, list, where)
      local params = {}
      for j, e in ipairs(entries) do params[j] = e.param end
      if #params == 0 then error(("%s: group %d matches no parameter"):format(where, i), 2) end
      add(set, params, table.concat(list, ", "))
    end
  else
    for k, layer in ipairs(layers_of(model)) do
      local set, params = {}, {}
      for i, e in ipairs(layer) do params[i], set[e[2]] = e[2], true end
      add(set, params, k == 1 and "stem" or tostring(k - 1))
    end
    if #groups > 0 then groups[#groups].label = "head" end
  end
  if #groups == 0 then error(where .. ": the model has no parameters", 2) end
  T.freeze(model)
  local self = setmetatable({ model = model, groups = groups, calls = 0, n = 1 }, Unfreezer)
  set_group(model, groups[#groups], true)
  return self
end

--- Unfreezes one more group from the top (the first call: the head). Returns unfrozen().
function Unfreezer:step()
  self.calls = self.calls + 1
  local want = math.min(self.calls, #self.groups)
  while self.n < want do
    self.n = self.n + 1
    set_group(self.model, self.groups[#self.groups - self.n + 1], true)
  end
  return self.n
end

--- Number of groups (from the top) that train.
function Unfreezer:unfrozen() return self.n end

-- ---- heads -----------------------------------------------------------------------------------

local is_adapter_path = A.is_adapter_path

-- The classifier's path and module: the one named, or the last Linear in module order.
local function find_head(model, name, where)
  if name ~= nil then
    if type(name) ~= "string" then error(("%s: option name must be a module path, got %s"):format(where, type(name)), 3) end
    local m = A.module_at(model, name)
    if not m then error(("%s: %s has no module '%s'"):format(where, model.__name, name), 3) end
    if not (m.in_features and m.out_features) then
      error(("%s: module '%s' is a %s, not a Linear layer"):format(where, name, m.__name), 3)
    end
    return name, m
  end
  local path, head
  for p, m in model:named_modules() do
    if m.__name == "Linear" and p ~= "" and not is_adapter_path(p) then path, head = p, m end
  end
  if not head then error(("%s: %s has no Linear layer to replace"):format(where, model.__name), 3) end
  return path, head
end

--- replace_head(model, num_outputs [, {name = "fc"}]) -> the new Linear
-- Puts a freshly initialised ft.nn.Linear(in, num_outputs) (bias as before) in place of the
-- classifier: the module named, else the last Linear in module order (fc for ResNet,
-- classifier for ViT). Config fields num_classes / num_labels / id2label follow.
function T.replace_head(model, num_outputs, opts)
  local where = "ft.peft.replace_head"
  if math.type(num_outputs) ~= "integer" or num_outputs < 1 then
    error(("%s: num_outputs must be a positive integer, got %s"):format(where, tostring(num_outputs)), 2)
  end
  opts = ft.check_options(where, opts, { "name" })
  local path, old = find_head(model, opts.name, where)
  local parent_path, leaf = path:match("^(.*)%.([^.]+)$")
  local parent = parent_path and A.module_at(model, parent_path) or model
  leaf = leaf or path
  local head = ft.nn.Linear(old.in_features, num_outputs, { bias = old.bias ~= nil })
  head:train(old.training)
  parent[leaf] = head
  local config = model.config
  if type(config) == "table" then
    if config.num_classes ~= nil then config.num_classes = num_outputs end
    if config.num_labels ~= nil then config.num_labels = num_outputs end
    if type(config.id2label) == "table" then
      local id2label, label2id = {}, {}
      for i = 0, num_outputs - 1 do
        id2label[tostring(i)] = "LABEL_" .. i
        label2id["LABEL_" .. i] = i
      end
      config.id2label, config.label2id = id2label, label2id
    end
  end
  return head
end

local function exact(path) return "^" .. path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0") .. "$" end

--- lpft(model, {head = name, probe = fn(model), finetune = fn(model)}) -> probed state dict
-- Linear probing then fine-tuning (Kumar et al. 2022): everything but the head is frozen
-- (BatchNorm keeps its statistics) and probe(model) trains the head; a copy of that state is
-- kept; then everything is unfrozen (BatchNorm "train") and finetune(model) runs. Returns the
-- copy, e.g. as the zero-shot end of a WiSE-FT interpolation. head defaults to the last Linear.
function T.lpft(model, opts)
  local where = "ft.peft.lpft"
  opts = ft.check_options(where, opts, { "head", "probe", "finetune" })
  for _, k in ipairs({ "probe", "finetune" }) do
    if type(opts[k]) ~= "function" then error(("%s: option %s must be a function(model)"):format(where, k), 2) end
  end
  local head = find_head(model, opts.head, where)
  T.freeze(model)
  T.unfreeze(model, exact(head))
  opts.probe(model)
  local probed = ft.state_dict.clone(model:state_dict(), where)
  T.unfreeze(model)
  opts.finetune(model)
  return probed
end

return T
