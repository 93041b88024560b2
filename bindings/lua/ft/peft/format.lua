-- ft.peft.format: LoRA adapters in HuggingFace PEFT's folder layout, both ways (behind
-- ft.peft.save(model, dir, {format = "peft"}) and ft.peft.load).
--
--   peft_format.save(model, "out/adapter", "default")   -- adapter_model.safetensors + adapter_config.json
--   local name = peft_format.load(model, "hf/adapter", {name = "default"})
--
-- A folder written by PEFT's save_pretrained loads onto the matching ftlua model (same module
-- paths, e.g. ft.models.from_pretrained of the base checkpoint), and a saved folder loads in
-- PEFT with PeftModel.from_pretrained. Tensor names are PEFT's:
--   base_model.model.<path>.lora_A.weight / lora_B.weight     (Linear, Conv1D, Conv2d)
--   base_model.model.<path>.lora_embedding_A / lora_embedding_B  (Embedding, no .weight)
--   base_model.model.<path>.lora_magnitude_vector             (DoRA; [1, out, 1, 1] for Conv2d)
--   base_model.model.<path>[.base_layer...].lora_A.weight     (target_parameters: PEFT nests one
--                                                             wrapper per parameter, the first
--                                                             in the module's order innermost,
--                                                             so the k-th of n sits under n - k
--                                                             base_layer levels)
--   base_model.model.<path>.<param>                           (modules_to_save)
--   base_model.model.<path>.base_layer.bias, or <path>.bias    (bias = "all" / "lora_only":
--                                                             adapted layers / the others)
-- adapter_config.json has the keys PEFT 0.21 writes. target_modules given as a string is a
-- Python regular expression matched against whole module paths; the subset understood here is
-- literals and escapes, ., [...] sets, \d \w \s, groups (...) and (?:...), |, the quantifiers
-- * + ? {m,n} (and their lazy forms) and the anchors ^ $. rank_pattern / alpha_pattern keys
-- are such expressions too, matched against a trailing run of path segments. The matcher
-- backtracks; a match that takes more than MAX_STEPS steps (a pattern such as "(a+)+$" on a
-- long name) is an error naming the pattern, so a hostile config cannot hang a load.
-- Bias tensors are optional when loading (PEFT leaves them out for bias = "lora_only").
local ft = require "ft"
local A = require "ft.peft.registry"
local lora = require "ft.peft.lora"

local P = {}

local WEIGHTS = "adapter_model.safetensors"
local CONFIG = "adapter_config.json"
local PREFIX = "base_model.model."
-- The PEFT release whose adapter_config.json layout save writes.
local PEFT_VERSION = "0.21.0"

local null = ft.json.null

local function is_null(v) return v == nil or v == null end

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

-- ---- Python regular expressions ------------------------------------------------------------------

-- Parses a pattern into alternatives of sequences of {atom, min, max, lazy}.
local function parse_regex(src)
  local pos = 1
  local function peek(k) return src:sub(pos + (k or 0), pos + (k or 0)) end
  local function unsupported(what)
    error(("regular expression %q: %s at position %d is not supported"):format(src, what, pos), 0)
  end
  local CLASSES = {
    d = "%d", w = "[%w_]", s = "%s",
  }
  local function class_test(c)
    local pat = CLASSES[c:lower()]
    local negate = c:match("%u") ~= nil
    return function(ch) return (ch:match(pat) ~= nil) ~= negate end
  end
  local ESCAPES = { n = "\n", t = "\t", r = "\r", f = "\f", v = "\v" }
  -- After a backslash: a one-character test or a literal character.
  local function escape()
    local c = peek()
    pos = pos + 1
    if c == "" then unsupported("a trailing backslash") end
    if CLASSES[c:lower()] then return { test = class_test(c) } end
    if c == "A" then return { bol = true } end
    if c == "Z" then return { eol = true } end
    if c:match("[%w]") and not ESCAPES[c] then unsupported("the escape \\" .. c) end
    return { char = ESCAPES[c] or c }
  end
  local function set()
    local negate = peek() == "^"
    if negate then pos = pos + 1 end
    local tests, first = {}, true
    while true do
      local c = peek()
      if c == "" then unsupported("an unterminated [") end
      if c == "]" and not first then pos = pos + 1; break end
      first = false
      local lo
      if c == "\\" then
        pos = pos + 1
        local e = escape()
        if e.test then tests[#tests + 1] = e.test elseif e.char then lo = e.char else unsupported("an anchor in []") end
      else
        lo = c
        pos = pos + 1
      end
      if lo then
        local hi = lo
        if peek() == "-" and peek(1) ~= "]" and peek(1) ~= "" then
          pos = pos + 1
          hi = peek()
          pos = pos + 1
          if hi == "\\" then
            local e = escape()
            if not e.char then unsupported("a class as a range end") end
            hi = e.char
          end
        end
        local a, b = lo, hi
        tests[#tests + 1] = function(ch) return ch >= a and ch <= b end
      end
    end
    return { test = function(ch)
      for _, t in ipairs(tests) do
        if t(ch) then return not negate end
      end
      return negate
    end }
  end
  local alternatives
  local function atom()
    local c = peek()
    if c == "(" then
      pos = pos + 1
      if peek() == "?" then
        if peek(1) ~= ":" then unsupported("the group extension (?" .. peek(1)) end
        pos = pos + 2
      end
      local node = alternatives()
      if peek() ~= ")" then unsupported("an unbalanced (") end
      pos = pos + 1
      return { group = node }
    elseif c == "[" then
      pos = pos + 1
      return set()
    elseif c == "." then
      pos = pos + 1
      return { test = function(ch) return ch ~= "\n" end }
    elseif c == "^" then
      pos = pos + 1
      return { bol = true }
    elseif c == "$" then
      pos = pos + 1
      return { eol = true }
    elseif c == "\\" then
      pos = pos + 1
      return escape()
    elseif c == "*" or c == "+" or c == "?" then
      unsupported("a repeat of nothing")
    end
    pos = pos + 1
    return { char = c }
  end
  local function quantifier(item)
    local c = peek()
    if c == "*" then item.min, item.max = 0, math.huge
    elseif c == "+" then item.min, item.max = 1, math.huge
    elseif c == "?" then item.min, item.max = 0, 1
    elseif c == "{" and src:find("^{%d*,?%d*}", pos) and src:find("^{,?}", pos) == nil then
      local body = src:match("^{(%d*,?%d*)}", pos)
      local lo, comma, hi = body:match("^(%d*)(,?)(%d*)$")
      item.min = tonumber(lo) or 0
      item.max = comma == "" and item.min or (tonumber(hi) or math.huge)
      pos = pos + #body + 1
    else
      return item
    end
    pos = pos + 1
    if peek() == "?" then item.lazy = true; pos = pos + 1
    elseif peek() == "+" or peek() == "*" then unsupported("a repeated repeat") end
    return item
  end
  local function sequence()
    local seq = {}
    while peek() ~= "" and peek() ~= "|" and peek() ~= ")" do
      seq[#seq + 1] = quantifier({ atom = atom(), min = 1, max = 1 })
    end
    return seq
  end
  function alternatives()
    local alts = { sequence() }
    while peek() == "|" do
      pos = pos + 1
      alts[#alts + 1] = sequence()
    end
    return alts
  end
  local root = alternatives()
  if pos <= #src then unsupported("an unbalanced )") end
  return root
end

-- Backtracking matcher: each function tries to match from position i and calls the
-- continuation k with the position after the match; true once the whole pattern succeeded.
-- Every atom tried costs one step of the budget of the match in progress.
local MAX_STEPS = 100000
P.MAX_STEPS = MAX_STEPS
local match_alts
local budget = { left = 0, pattern = "", subject = "" }

local function match_atom(atom, s, i, k)
  budget.left = budget.left - 1
  if budget.left < 0 then
    error(("regular expression %q takes more than %d steps to match %q (nested repeats backtrack "
      .. "exponentially; simplify it, e.g. (a+)+ to a+)"):format(budget.pattern, MAX_STEPS, budget.subject), 0)
  end
  if atom.group then return match_alts(atom.group, s, i, k) end
  if atom.bol then return i == 1 and k(i) end
  if atom.eol then return i == #s + 1 and k(i) end
  if i > #s then return false end
  local ch = s:sub(i, i)
  local ok
  if atom.char then ok = ch == atom.char else ok = atom.test(ch) end
  return ok and k(i + 1)
end

local function match_item(item, s, i, k)
  if item.min == 1 and item.max == 1 then return match_atom(item.atom, s, i, k) end
  local function rep(count, at)
    local function more()
      return count < item.max and match_atom(item.atom, s, at, function(j)
        if j == at and count >= item.min then return false end   -- an empty pass ends the loop
        return rep(count + 1, j)
      end)
    end
    if count < item.min then return more() end
    if item.lazy then return k(at) or more() end
    return more() or k(at)
  end
  return rep(0, i)
end

local function match_seq(seq, n, s, i, k)
  local item = seq[n]
  if not item then return k(i) end
  return match_item(item, s, i, function(j) return match_seq(seq, n + 1, s, j, k) end)
end

function match_alts(alts, s, i, k)
  for _, seq in ipairs(alts) do
    if match_seq(seq, 1, s, i, k) then return true end
  end
  return false
end

--- A function(s) -> true when the Python regular expression pattern matches all of s
-- (re.fullmatch). Raises an error for syntax outside the supported subset.
function P.fullmatcher(pattern)
  local root = parse_regex(pattern)
  return function(s)
    budget.left, budget.pattern, budget.subject = MAX_STEPS, pattern, s
    return match_alts(root, s, 1, function(j) return j == #s + 1 end) and true or false
  end
end

-- ---- shared helpers ------------------------------------------------------------------------------

local function is_plain(s) return type(s) == "string" and s:match("^[%w_.]+$") ~= nil end

local function as_list(v)
  if is_null(v) then return nil end
  if type(v) == "string" then return { v } end
  return v
end

local function all_plain(list)
  for _, s in ipairs(list) do
    if not is_plain(s) then return false end
  end
  return true
end

local sorted_keys = ft.tables.sorted_keys

local function lua_array(t) return ft.json.array(t) end

local fs = require "ft.fs"
local file_exists = fs.exists

local function peft_path(path) return PREFIX .. path end

-- PEFT's key of tensor suffix of the layer at path ("" for the model itself).
local function peft_key(path, suffix) return PREFIX .. (path == "" and "" or path .. ".") .. suffix end

-- ---- the tensors of an adapter under PEFT's names ------------------------------------------------

-- Keys (as in model:state_dict()) of the modules_to_save tensors of config.
local function modules_to_save_keys(model, config)
  if not config.modules_to_save then return {} end
  local keys = {}
  local only = { modules_to_save = config.modules_to_save, bias = "none" }
  for k in pairs(lora.extra_tensors(model, only, config.name)) do keys[k] = true end
  return keys
end

-- PEFT key -> {tensor = the model's tensor, file_shape = its shape in the file, optional =
-- true for biases, alias = another accepted key} for the tensors of adapter name.
local function peft_entries(model, name, config)
  local entries, adapted = {}, {}
  for _, e in ipairs(lora.adapted_layers(model)) do
    local path, m, st = e[1], e[2], e[3]
    adapted[path] = true
    local a = st.adapters[name]
    if a then
      if st.kind == "embedding" then
        entries[peft_key(path, "lora_embedding_A")] = { tensor = m.lora_embedding_A[name] }
        entries[peft_key(path, "lora_embedding_B")] = { tensor = m.lora_embedding_B[name] }
      elseif st.kind == "params" then
        for k, p in ipairs(a.params) do
          local wrapped = path .. (".base_layer"):rep(#a.params - k)
          entries[peft_key(wrapped, "lora_A.weight")] = { tensor = m.lora_A[name][p].weight }
          entries[peft_key(wrapped, "lora_B.weight")] = { tensor = m.lora_B[name][p].weight }
        end
      else
        entries[peft_key(path, "lora_A.weight")] = { tensor = m.lora_A[name].weight }
        entries[peft_key(path, "lora_B.weight")] = { tensor = m.lora_B[name].weight }
      end
      if a.dora then
        local mag = m.lora_magnitude_vector[name].weight
        -- PEFT keeps a convolution's magnitudes as [1, out, 1, 1].
        local shape = st.kind == "conv2d" and { 1, mag:size(1), 1, 1 } or mag:shape()
        entries[peft_key(path, "lora_magnitude_vector")] = { tensor = mag, file_shape = shape }
      end
    end
  end
  local mts_keys = modules_to_save_keys(model, config)
  for key, t in pairs(lora.extra_tensors(model, config, name)) do
    local owner = key == "bias" and "" or key:match("^(.*)%.bias$")
    if mts_keys[key] or not owner then
      entries[peft_path(key)] = { tensor = t }
    elseif adapted[owner] then
      -- PEFT wraps an adapted layer, whose own parameters then live under base_layer.
      entries[peft_key(owner, "base_layer.bias")] = { tensor = t, optional = true, alias = peft_path(key) }
    else
      entries[peft_path(key)] = { tensor = t, optional = true }
    end
  end
  for _, e in pairs(entries) do e.file_shape = e.file_shape or e.tensor:shape() end
  return entries
end

-- ---- save ------------------------------------------------------------------------------------

-- Paths of the layers adapter name adapts, sorted.
local function adapted_paths(model, name)
  local out = {}
  for _, l in ipairs(lora.layers(model, name)) do out[#out + 1] = l.path end
  table.sort(out)
  return out
end

-- rank_pattern / alpha_pattern as PEFT reads them: kept when every key is a plain name that
-- picks one value per layer, else spelled out per layer (the layers whose value differs from
-- the default).
local function pattern_for_peft(model, name, patterns, field, default)
  local keys = sorted_keys(patterns)
  if #keys == 0 then return {} end
  local layers = lora.layers(model, name)
  local plain = all_plain(keys)
  for _, l in ipairs(layers) do
    local hits = 0
    for _, k in ipairs(keys) do
      if A.matches(l.path, k) then hits = hits + 1 end
    end
    if hits > 1 then plain = false end
  end
  local out = {}
  if plain then
    for _, k in ipairs(keys) do out[k] = patterns[k] end
    return out
  end
  for _, l in ipairs(layers) do
    if l[field] ~= default then out[l.path] = l[field] end
  end
  return out
end

-- The adapter_config.json table for adapter name.
local function peft_config(model, name, config, opts)
  local target, exclude = as_list(config.target), as_list(config.exclude)
  if target and (not all_plain(target) or (exclude and not all_plain(exclude))) then
    target, exclude = adapted_paths(model, name), nil   -- Lua patterns: name the layers
  end
  local mts = as_list(config.modules_to_save)
  if mts and not all_plain(mts) then
    local paths = {}
    for _, e in ipairs(A.find_modules(model, mts)) do paths[#paths + 1] = e[1] end
    mts = paths
  end
  local function copy(list)
    if not list then return null end
    local out = {}
    for i, v in ipairs(list) do out[i] = v end
    return lua_array(out)
  end
  return {
    alora_invocation_tokens = null,
    alpha_pattern = pattern_for_peft(model, name, config.alpha_pattern or {}, "alpha", config.alpha),
    arrow_config = null,
    auto_mapping = null,
    base_model_name_or_path = opts.base_model_name_or_path or null,
    bias = config.bias,
    corda_config = null,
    ensure_weight_tying = false,
    eva_config = null,
    exclude_modules = copy(exclude),
    fan_in_fan_out = config.fan_in_fan_out and true or false,
    inference_mode = true,
    init_lora_weights = config.init,
    kasa_config = null,
    layer_replication = null,
    layers_pattern = null,
    layers_to_transform = null,
    loftq_config = {},
    lora_alpha = config.alpha,
    lora_bias = false,
    lora_dropout = config.dropout + 0.0,
    lora_ga_config = null,
    megatron_config = null,
    megatron_core = "megatron.core",
    modules_to_save = copy(mts),
    monteclora_config = null,
    peft_type = "LORA",
    peft_version = PEFT_VERSION,
    qalora_group_size = 16,
    r = config.r,
    rank_pattern = pattern_for_peft(model, name, config.rank_pattern or {}, "r", config.r),
    revision = opts.revision or null,
    target_modules = copy(target),
    target_parameters = copy(config.target_parameters),
    task_type = opts.task_type or null,
    trainable_token_indices = null,
    use_bdlora = null,
    use_dora = config.dora,
    use_qalora = false,
    use_rslora = config.rslora,
    velora_config = null,
  }
end

-- The files of a folder that P.save may replace: its own two, and other plain files (copied
-- into the new folder, so a README or tokenizer written beside the adapter stays). A subfolder
-- is an error: the folder is replaced as a whole and it would be lost.
local function files_to_keep(dir, where)
  if not fs.is_dir(dir) then
    if fs.exists(dir) then error(("%s: %s exists and is not a folder"):format(where, dir), 0) end
    return {}
  end
  local keep = {}
  for name, what in pairs(ft._listdir(dir)) do
    if what ~= "file" then
      error(("%s: %s holds %s '%s'; the adapter's folder is replaced as a whole, so it may hold only "
        .. "files (choose another folder, or move it out)"):format(where, dir,
        what == "directory" and "the folder" or "the entry", name), 0)
    end
    if name ~= WEIGHTS and name ~= CONFIG then keep[#keep + 1] = name end
  end
  table.sort(keep)
  return keep
end

--- Writes adapter name of model to dir as PEFT does: adapter_model.safetensors and
-- adapter_config.json. name defaults to "default"; name may be an options table
-- {name =, task_type =, base_model_name_or_path =, revision =}, or those options come fourth.
-- The folder is replaced as a whole (ft.fs.replace_dir: other plain files in it are carried
-- over), so a failure or a killed process leaves its earlier contents as they were, never new
-- weights with an old config. Returns dir.
function P.save(model, dir, name, opts, where)
  where = where or "ft.peft.save"
  if type(name) == "table" then name, opts = name.name, name end
  opts = ft.check_options(where, opts, { "name", "task_type", "base_model_name_or_path", "revision" })
  name = name or "default"
  if type(dir) ~= "string" or dir == "" then error(where .. ": a directory path expected", 2) end
  dir = dir:gsub("(.)/+$", "%1")
  local entry = A.get(model, name, where)
  if entry.kind ~= "lora" then
    error(("%s: adapter '%s' is a %s adapter; the PEFT layout here holds LoRA adapters"):format(where, name,
      entry.kind), 2)
  end
  for _, k in ipairs({ "task_type", "base_model_name_or_path", "revision" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error(("%s: option '%s' must be a string, got %s"):format(where, k, type(opts[k])), 2)
    end
  end
  local tensors = {}
  for key, e in pairs(peft_entries(model, name, entry.config)) do
    local t = e.tensor:detach()
    if not ft.tables.same_shape(t, e.file_shape) then t = t:reshape(e.file_shape) end
    tensors[key] = t:contiguous()
  end
  -- As PEFT: json.dumps(indent=2, sort_keys=True), no final newline.
  local text = ft.json.encode(peft_config(model, name, entry.config, opts), { indent = 2 })
  local keep = files_to_keep(dir, where)
  local ok, err = pcall(fs.replace_dir, dir, function(tmp)
    for _, f in ipairs(keep) do fs.write(tmp .. "/" .. f, fs.read(dir .. "/" .. f)) end
    ft.safetensors.save(tmp .. "/" .. WEIGHTS, tensors, { metadata = { format = "pt" } })
    fs.write(tmp .. "/" .. CONFIG, text)
  end)
  if not ok then error(("%s: %s: %s"):format(where, dir, tostring(err)), 0) end
  return dir
end

-- ---- load ------------------------------------------------------------------------------------

-- Config fields whose non-default values change what the adapter computes and are not supported.
local UNSUPPORTED = {
  { "layers_to_transform", function(v) return not is_null(v) and not (type(v) == "table" and #v == 0) end },
  { "layers_pattern", function(v) return not is_null(v) and not (type(v) == "table" and #v == 0) end },
  { "layer_replication", function(v) return not is_null(v) end },
  { "lora_bias", function(v) return v == true end },
  { "use_qalora", function(v) return v == true end },
  { "trainable_token_indices", function(v) return not is_null(v) end },
  { "alora_invocation_tokens", function(v) return not is_null(v) end },
  { "use_bdlora", function(v) return not is_null(v) and v ~= false end },
}

-- target_parameters of a PEFT config as a list of names, or nil.
local function parameter_targets(cfg, fail)
  local v = cfg.target_parameters
  if is_null(v) or (type(v) == "table" and #v == 0) then return nil end
  if type(v) ~= "table" then fail("target_parameters must be a list of parameter names") end
  local out = {}
  for i, t in ipairs(v) do
    if type(t) ~= "string" then fail("target_parameters must be a list of parameter names") end
    out[i] = t
  end
  return out
end

-- The module paths PEFT adapts for cfg (target_modules minus exclude_modules, PEFT's rules).
local function peft_targets(model, cfg, fail)
  local function matcher(v, field)
    if type(v) == "string" then
      local ok, fn = pcall(P.fullmatcher, v)
      if not ok then fail("%s: %s", field, fn) end
      return function(path)
        local matched, hit = pcall(fn, path)
        if not matched then fail("%s: %s", field, hit) end
        return hit
      end
    end
    if type(v) ~= "table" then fail("%s must be a list of names or a regular expression", field) end
    return function(path)
      for _, t in ipairs(v) do
        if path == t or path:sub(-#t - 1) == "." .. t then return true end
      end
      return false
    end
  end
  local tm = cfg.target_modules
  if is_null(tm) and parameter_targets(cfg, fail) then return {} end
  if is_null(tm) then fail("target_modules is null; the file does not say which layers the adapter adapts") end
  if tm == "all-linear" then fail("target_modules 'all-linear' is not supported here; list the layers") end
  local target = matcher(tm, "target_modules")
  local exclude = not is_null(cfg.exclude_modules) and matcher(cfg.exclude_modules, "exclude_modules")
  local paths = {}
  for path in model:named_modules() do
    if path ~= "" and not A.is_adapter_path(path) and target(path) and not (exclude and exclude(path)) then
      paths[#paths + 1] = path
    end
  end
  if #paths == 0 then
    fail("target_modules %s matches no module of the model (%s)", ft.json.encode(tm), model.__name)
  end
  return paths
end

-- rank_pattern / alpha_pattern of a PEFT config for lora.attach: as is when every key is a
-- plain name picking one value per layer, else one entry per adapted layer.
local function patterns_from_peft(v, paths, field, fail)
  if is_null(v) then return {} end
  if type(v) ~= "table" then fail("%s must be an object", field) end
  local keys = sorted_keys(v)
  if #keys == 0 then return {} end
  local matchers = {}
  for _, k in ipairs(keys) do
    local ok, fn = pcall(P.fullmatcher, "(.*\\.)?(" .. k .. ")")
    if not ok then fail("%s key %q: %s", field, k, fn) end
    matchers[k] = fn
  end
  local out, plain = {}, all_plain(keys)
  for _, path in ipairs(paths) do
    local hit
    for _, k in ipairs(keys) do
      local ok, matched = pcall(matchers[k], path)
      if not ok then fail("%s key %q: %s", field, k, matched) end
      if matched then
        if hit then plain = false else hit = k end
      end
    end
    if hit then out[path] = v[hit] end
  end
  if plain then
    out = {}
    for _, k in ipairs(keys) do out[k] = v[k] end
  end
  return out
end

-- lora.attach options from a decoded adapter_config.json.
local function attach_options(model, cfg, name, fail)
  if cfg.peft_type ~= "LORA" then
    fail("peft_type is %s; ft.peft.load reads PEFT's LoRA adapters only", ft.json.encode(cfg.peft_type))
  end
  for _, u in ipairs(UNSUPPORTED) do
    if u[2](cfg[u[1]]) then fail("%s = %s is not supported", u[1], ft.json.encode(cfg[u[1]])) end
  end
  local paths = peft_targets(model, cfg, fail)
  local tm, ex = cfg.target_modules, cfg.exclude_modules
  local target, exclude = paths, nil
  if #paths == 0 then
    target = nil   -- target_parameters alone
  elseif type(tm) == "table" and all_plain(tm) and (is_null(ex) or (type(ex) == "table" and all_plain(ex))) then
    target, exclude = {}, nil
    for i, t in ipairs(tm) do target[i] = t end
    if not is_null(ex) then
      exclude = {}
      for i, t in ipairs(ex) do exclude[i] = t end
      if #exclude == 0 then exclude = nil end
    end
  end
  local mts
  if not is_null(cfg.modules_to_save) then
    -- PEFT adds classifier names for some task types whether the model has them or not.
    for _, n in ipairs(as_list(cfg.modules_to_save)) do
      if #A.find_modules(model, n) > 0 then
        mts = mts or {}
        mts[#mts + 1] = n
      end
    end
  end
  local init = cfg.init_lora_weights
  if init ~= false and init ~= "gaussian" then init = true end   -- the tensors come from the file
  local function get(key, default)
    local v = cfg[key]
    if is_null(v) then return default end
    return v
  end
  return {
    name = name, target = target, exclude = exclude, target_parameters = parameter_targets(cfg, fail),
    r = get("r", 8), alpha = get("lora_alpha", 8), dropout = get("lora_dropout", 0.0),
    rslora = get("use_rslora", false), dora = get("use_dora", false), init = init,
    bias = get("bias", "none"), modules_to_save = mts,
    rank_pattern = patterns_from_peft(cfg.rank_pattern, paths, "rank_pattern", fail),
    alpha_pattern = patterns_from_peft(cfg.alpha_pattern, paths, "alpha_pattern", fail),
    fan_in_fan_out = get("fan_in_fan_out", nil),
  }
end

local function check_tensors(file, tensors, entries)
  local problems, missing, unexpected = {}, {}, {}
  local by_alias = {}
  for key, e in pairs(entries) do
    if e.alias then by_alias[e.alias] = key end
  end
  local chosen = {}   -- entry key -> file key
  for key in pairs(tensors) do
    local target = entries[key] and key or by_alias[key]
    if not target then
      unexpected[#unexpected + 1] = key
    elseif chosen[target] then
      problems[#problems + 1] = ("both %s and %s hold %s"):format(chosen[target], key, target)
    else
      chosen[target] = key
    end
  end
  for key, e in pairs(entries) do
    if not chosen[key] and not e.optional then missing[#missing + 1] = key end
  end
  for target, key in pairs(chosen) do
    local have, want = tensors[key]:shape(), entries[target].file_shape
    if not ft.tables.same_shape(have, want) then
      problems[#problems + 1] = ("shape mismatch for %s: the file has %s, the model's adapter expects %s"):format(
        key, shape_str(have), shape_str(want))
    end
  end
  -- Long lists are cut: the first few say what is wrong.
  local function some(list, n)
    table.sort(list)
    if #list <= n then return list end
    local out = table.move(list, 1, n, 1, {})
    out[#out + 1] = ("... (%d more)"):format(#list - n)
    return out
  end
  local report = {}
  if #unexpected > 0 then report[#report + 1] = "unexpected key(s): " .. table.concat(some(unexpected, 6), ", ") end
  if #missing > 0 then report[#report + 1] = "missing key(s): " .. table.concat(some(missing, 6), ", ") end
  for _, p in ipairs(some(problems, 3)) do report[#report + 1] = p end
  if #report > 0 then
    error(("ft.peft.load: %s: %s"):format(file, table.concat(report, "; ")), 0)
  end
  return chosen
end

--- Loads the PEFT LoRA adapter in dir (written by PEFT's save_pretrained or by P.save) onto
-- model as adapter opts.name ("default"); returns the name. The adapter is created from
-- adapter_config.json and filled from adapter_model.safetensors; missing or unexpected tensors
-- and shape mismatches are errors naming the file, the key and the shapes, and leave the model
-- as it was.
function P.load(model, dir, opts)
  local where = "ft.peft.load"
  if type(opts) == "string" then opts = { name = opts } end
  opts = ft.check_options(where, opts, { "name" })
  local name = opts.name or "default"
  if type(dir) ~= "string" or dir == "" then error(where .. ": a directory path expected", 2) end
  dir = dir:gsub("/+$", "")
  local config_path, weights_path = dir .. "/" .. CONFIG, dir .. "/" .. WEIGHTS
  for _, path in ipairs({ config_path, weights_path }) do
    if not file_exists(path) then
      local hint = path == weights_path and file_exists(dir .. "/adapter_model.bin")
        and " (adapter_model.bin, PyTorch's pickle format, is not read: save the adapter with safetensors)" or ""
      error(("%s: missing file %s%s"):format(where, path, hint), 2)
    end
  end
  local function fail(fmt, ...) error(("%s: %s: %s"):format(where, config_path, fmt:format(...)), 0) end
  local ok, cfg = pcall(ft.json.read, config_path)
  if not ok then error(("%s: %s"):format(where, tostring(cfg)), 0) end
  if type(cfg) ~= "table" then fail("not a JSON object") end
  local lopts = attach_options(model, cfg, name, fail)
  local tensors
  ok, tensors = pcall(ft.safetensors.load, weights_path)
  if not ok then error(("%s: %s"):format(where, tostring(tensors)), 0) end

  local flags = {}
  for _, p in ipairs(model:parameters()) do flags[p] = p.requires_grad end
  local attached, err = false, nil
  ok, err = pcall(function()
    local attach_ok, aerr = pcall(lora.attach, model, lopts)
    if not attach_ok then fail("%s", tostring(aerr)) end
    attached = true
    local entries = peft_entries(model, name, A.get(model, name, where).config)
    local chosen = check_tensors(weights_path, tensors, entries)
    ft.no_grad(function()
      for target, key in pairs(chosen) do
        local e = entries[target]
        e.tensor:copy_(tensors[key]:reshape(e.tensor:shape()))
      end
    end)
  end)
  if not ok then
    if attached then A.delete(model, name) end
    for p, flag in pairs(flags) do p.requires_grad = flag end
    error(err, 0)
  end
  return name
end

return P
