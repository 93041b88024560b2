-- ft.models: the one registry of model definitions (ft/models/gpt2.lua, gpt2_classifier.lua,
-- llama.lua, mixtral.lua, vit.lua, resnet.lua), and HuggingFace checkpoints in and out.
--
--   local model = ft.models.from_pretrained("path/to/hf_dir")     -- config.json + safetensors
--   local out = model:forward(ids, {labels = ids})                -- ids: int64 [B,T], 1-based
--   local ids2 = model:generate(ids, {max_new_tokens = 20, temperature = 0.8, top_k = 40, seed = 1})
--   ft.models.save_pretrained(model, "out_dir")                   -- transformers loads it
--   local tiny = ft.models.new("gpt-s")                           -- a from-scratch preset
--   local net = ft.models.new("resnet-s", {num_classes = 4})       -- any registered preset
--
-- The registry (ft.models.architectures, .model_types, .presets):
--   family               architectures (config.json "architectures")        presets
--   GPT-2                GPT2LMHeadModel (model_type gpt2)                   gpt-s
--   GPT-2 classifier     GPT2ForSequenceClassification                       -
--   Llama family         LlamaForCausalLM, MistralForCausalLM,               llama-s
--                        Qwen2ForCausalLM (llama, mistral, qwen2)
--   Mixtral (MoE)        MixtralForCausalLM (mixtral)                        moe-s
--   ViT                  ViTForImageClassification (vit)                     vit-s
--   torchvision ResNets  ResNet (torchvision_resnet)                         resnet-s, resnet18,
--                                                                            resnet34, resnet50
-- The family modules are fields too (ft.models.resnet.resnet18{num_classes = 10}, loaded on first
-- use). ft.models.new(preset, overrides) and ft.models.new(config, overrides) build any of them
-- (overrides: config keys of that family; an unknown key is an error), from_pretrained(dir)
-- loads any of them from a folder save_pretrained wrote (or transformers, for the HF ones).
--
-- Configs are checked before anything is built: types, ranges (ft.models.LIMITS), divisibility
-- (n_embd % n_head ...), positive epsilons, known activations; the model's size against the
-- machine's memory; and in from_pretrained every tensor's name and shape against the weight
-- files' headers, so a config that does not fit its weights is an error naming config.json, the
-- key and the value, not an allocation.
--
-- Token ids are 1-based in Lua (HF id i is ft id i + 1); labels use -100 for "ignore", as HF.
-- Parameter names are HF's (transformer.h.0.attn.c_attn.weight, model.layers.0.self_attn.
-- q_proj.weight ...), so a model's state_dict maps one to one to the checkpoint's tensors.
--
-- The pieces the definitions share live in ft.models.common (config reading, LIMITS, attention,
-- masks, the next-token loss) and ft.models.generate (model:generate); ft.models re-exports them
-- (ft.models.copy_config, ft.models.LIMITS, ft.models.generate ...).
local ft = require "ft"
local common = require "ft.models.common"

local M = {}

-- ---- shared pieces, under their ft.models names -----------------------------------------

M.config_reader = common.config_reader
M.copy_config = common.copy_config
M.LIMITS = common.LIMITS
M.activation = common.activation
M.attention = common.attention
M.input_embeddings = common.input_embeddings
M.padding_mask = common.padding_mask
M.causal_lm_loss = common.causal_lm_loss
M.chunked_lm_loss = common.chunked_lm_loss
M.positions_from_mask = common.positions_from_mask
M.generate = require("ft.models.generate").generate

local is_null = common.is_null

-- ---- config keys and sizes --------------------------------------------------------------

-- HF metadata keys every family keeps in its config (accepted as overrides).
M.COMMON_CONFIG_KEYS = { "architectures", "model_type", "bos_token_id", "eos_token_id", "pad_token_id" }

--- models.config_keys(list) -> the list plus COMMON_CONFIG_KEYS: the override keys of a family.
function M.config_keys(list)
  local out = table.move(list, 1, #list, 1, {})
  for _, k in ipairs(M.COMMON_CONFIG_KEYS) do out[#out + 1] = k end
  return out
end

-- The number of elements of a shape, or nil when it does not fit in an integer.
local function numel_of(shape)
  local n = 1
  for _, d in ipairs(shape) do
    if d < 0 or (d > 0 and n > math.maxinteger // d) then return nil end
    n = n * d
  end
  return n
end

-- Bytes of memory this machine has (MemTotal), or nil when unknown.
local function machine_memory()
  local f = io.open("/proc/meminfo", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local kb = text:match("MemTotal:%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024 or nil
end

--- models.check_size(shapes, what [, bytes_of]): raises when the tensors of `shapes` (name ->
-- shape) hold more bytes than this machine's memory: 4 a value (float32), or bytes_of(name,
-- shape, n) when given (nil for float32: how the quantising loaders count quantised layers).
-- Returns the element count.
function M.check_size(shapes, what, bytes_of)
  local total, bytes = 0, 0
  for name, shape in pairs(shapes) do
    local n = numel_of(shape)
    if n == nil or total > math.maxinteger - n then
      error(("%s: tensor %s [%s] is too large"):format(what, name, table.concat(shape, ",")), 0)
    end
    total = total + n
    bytes = bytes + (bytes_of and bytes_of(name, shape, n) or 4 * n)
  end
  local memory = machine_memory() or (1 << 40)
  if bytes > memory then
    error(("%s: the model would hold %d parameters (%.1f GiB%s), more than this machine's memory "
      .. "(%.1f GiB)"):format(what, total, bytes / 2 ^ 30, bytes_of and "" or " as float32", memory / 2 ^ 30), 0)
  end
  return total
end

-- ---- registry ---------------------------------------------------------------------------

-- architecture -> {module = Lua module defining it, model_type = HF model_type}
M.architectures = {}
-- model_type -> default architecture
M.model_types = {}
-- preset name -> Lua module whose config(name) builds it
M.presets = {}

--- Registers an architecture: M.register("GPT2LMHeadModel", {module = "ft.models.gpt2",
-- model_type = "gpt2", presets = {"gpt-s"}}). The module exports a class under the architecture's
-- name, built from a config table, with read_config(config) -> checked config, tensor_shapes(c)
-- -> name -> shape (and tied alias -> target), config_keys (the override keys), and
-- config(preset, overrides) for its presets.
function M.register(architecture, spec)
  M.architectures[architecture] = spec
  if spec.model_type and not M.model_types[spec.model_type] then M.model_types[spec.model_type] = architecture end
  for _, name in ipairs(spec.presets or {}) do M.presets[name] = spec.module end
end

M.register("GPT2LMHeadModel", { module = "ft.models.gpt2", model_type = "gpt2", presets = { "gpt-s" } })
M.register("GPT2ForSequenceClassification", { module = "ft.models.gpt2_classifier" })
M.register("LlamaForCausalLM", { module = "ft.models.llama", model_type = "llama", presets = { "llama-s" } })
M.register("MistralForCausalLM", { module = "ft.models.llama", model_type = "mistral" })
M.register("Qwen2ForCausalLM", { module = "ft.models.llama", model_type = "qwen2" })
M.register("MixtralForCausalLM", { module = "ft.models.mixtral", model_type = "mixtral", presets = { "moe-s" } })
M.register("ViTForImageClassification", { module = "ft.models.vit", model_type = "vit", presets = { "vit-s" } })
-- torchvision's structure and names, not HF's ResNetForImageClassification (model_type "resnet").
M.register("ResNet", { module = "ft.models.resnet", model_type = "torchvision_resnet",
  presets = { "resnet-s", "resnet18", "resnet34", "resnet50" } })

local sorted_keys = require("ft.tables").sorted_keys

local function supported()
  return ("supported architectures: %s (model_type %s)"):format(table.concat(sorted_keys(M.architectures), ", "),
    table.concat(sorted_keys(M.model_types), ", "))
end

-- The architecture a config asks for: the first of "architectures" that is registered,
-- else the default one of "model_type".
local function architecture_of(config)
  if type(config) ~= "table" then error("a config table expected, got " .. type(config), 0) end
  local archs = config.architectures
  local asked = {}
  if type(archs) == "table" then
    for _, a in ipairs(archs) do
      if M.architectures[a] then return a end
      asked[#asked + 1] = tostring(a)
    end
  end
  local mt = config.model_type
  if type(mt) == "string" and M.model_types[mt] then return M.model_types[mt] end
  error(("unsupported architecture %s (model_type %s); %s"):format(#asked > 0 and table.concat(asked, ", ") or "none",
    tostring(is_null(mt) and "none" or mt), supported()), 0)
end

local function class_of(arch)
  return require(M.architectures[arch].module)[arch]
end

-- Checks overrides of a config against the keys its family reads.
local function check_overrides(where, overrides, config)
  if overrides == nil then return end
  if type(overrides) ~= "table" then error(("%s: overrides must be a table, got %s"):format(where, type(overrides)), 0) end
  local ok, arch = pcall(architecture_of, config)
  if not ok then return end   -- reported when the model is built
  local keys = class_of(arch).config_keys
  if keys then common.check_options(where, overrides, keys, 0) end
end

-- The config of a preset with overrides applied; errors without a position (callers add theirs).
local function preset_config(name, overrides, where)
  local module = M.presets[name]
  if not module then
    error(("%s: unknown preset '%s'; presets: %s"):format(where, tostring(name),
      table.concat(sorted_keys(M.presets), ", ")), 0)
  end
  local family = require(module)
  check_overrides(where, overrides, family.config(name))
  return family.config(name, overrides)
end

--- ft.models.config(preset, overrides) -> the config table of a preset (a fresh copy) with
-- overrides applied, e.g. ft.models.config("gpt-s", {n_layer = 2}). Overrides are config keys of
-- the preset's family; an unknown one is an error naming it.
function M.config(name, overrides)
  local ok, config = pcall(preset_config, name, overrides, "ft.models.config")
  if not ok then error(config, 2) end
  return config
end

-- What a config builds, worked out without allocating: the class, the checked config, the
-- tensors (name -> shape, tied copies left out) and the tied names (alias -> target). With
-- a quantisation kind, the size checked here is a lower bound (every 2-D tensor quantised);
-- the exact one comes once the quantised layers are known.
local function plan(config, kind)
  local class = class_of(architecture_of(config))
  local c = class.read_config(config)
  local shapes, tied = class.tensor_shapes(c)
  local bytes_of
  if kind then
    local weight_bytes = require("ft.quant").weight_bytes
    bytes_of = function(_, shape, n) return #shape == 2 and weight_bytes(shape, kind) or 4 * n end
  end
  M.check_size(shapes, class.hf_architecture or "model", bytes_of)
  return class, shapes, tied or {}
end

-- The options of new and from_pretrained that quantise ({quantize =, modules =}), checked:
-- the kind, or nil.
local function quantize_option(where, opts)
  if opts.quantize == nil then
    if opts.modules ~= nil then
      error(where .. ": option 'modules' says which layers to quantise; it needs option 'quantize'", 0)
    end
    return nil
  end
  return require("ft.quant").check_kind(opts.quantize, where .. ": option 'quantize'")
end

-- The state-dict keys of the weights of targets ({path, module}) -> {path, module}.
local function target_weights(targets)
  local out = {}
  for _, e in ipairs(targets) do out[(e[1] == "" and "" or e[1] .. ".") .. "weight"] = e end
  return out
end

-- Checks that the model of `shapes` fits this machine's memory with the weights of targets
-- quantised as kind.
local function check_quantized_size(shapes, targets, kind, what)
  local quant = require "ft.quant"
  local quantized = target_weights(targets)
  M.check_size(shapes, what, function(name, shape, n)
    if quantized[name] and #shape == 2 then return quant.weight_bytes(shape, kind) end
    return 4 * n
  end)
end

local FLOAT_DTYPES = { bfloat16 = true, float16 = true, float32 = true, float64 = true }

-- Builds fn()'s model with its float weights in dtype without the float32 model existing:
-- fn runs under ft.nn.init.defer (weights allocated as untouched pages), then each weight's
-- recorded initialisations run into a float32 buffer of its own, converted (rounded once) and
-- the buffer freed before the next. The values are those of fn() followed by m:to(dtype).
local function build_in_dtype(fn, dtype)
  ft.empty_cache()   -- weights allocated next must be fresh pages, not reused (resident) blocks
  local records, model = ft.nn.init.defer(fn)
  ft.nn.init.replay(records, function(t) return t:dtype() ~= "int64" end, function(t, buf)
    ft.no_grad(function() t:set_(buf:to(dtype)) end)
  end)
  model:to(dtype)   -- the tensors no initialiser wrote
  collectgarbage()
  collectgarbage()
  ft.empty_cache()
  return model
end

-- The weights a quantised model left unquantised (embeddings, lm_head, norms) converted to
-- dtype; their float32 copies go back to the system rather than into the allocator's cache,
-- where nothing of their size would reuse them.
local function unquantised_to(model, dtype)
  model:to(dtype)
  collectgarbage()
  ft.empty_cache()
  return model
end

--- ft.models.new(preset or config, overrides, opts) -> a new randomly initialised model, from a
-- preset name (ft.models.presets) or an HF-style config table (its "architectures" /
-- "model_type" picks the class). The config is checked before anything is allocated.
-- opts: {quantize = "nf4" | "nf4_fp32" | "int8", modules = names or patterns}: the selected
-- layers (default: the Linear / Conv1D layers of the decoder blocks, ft.quant.default_modules)
-- are quantised while the model is built, each initialised, quantised and freed in turn
-- (ft.quant.build), so the float32 model never exists: a 7B-parameter model builds in a few
-- GB. The weights are bit for bit those of ft.models.new followed by ft.quant.quantize (same
-- seed, same modules). The size is checked against the machine's memory with the quantised
-- layers at their quantised size. dtype = "bfloat16" | "float16" | "float64" builds the float
-- weights in that dtype the same way, one weight in float32 at a time: the values of
-- ft.models.new followed by m:to(dtype); with quantize, it is the dtype of the weights left
-- unquantised (embeddings, lm_head, norms), each converted as it is initialised.
function M.new(name_or_config, overrides, opts)
  local where = "ft.models.new"
  local config = name_or_config
  local kind
  local ok, err = pcall(function()
    opts = common.check_options(where, opts, { "quantize", "modules", "dtype" }, 0)
    kind = quantize_option(where, opts)
    if opts.dtype ~= nil and not FLOAT_DTYPES[opts.dtype] then
      error(("%s: option 'dtype' must be one of bfloat16, float16, float32, float64, got %s"):format(where,
        tostring(opts.dtype)), 0)
    end
    if type(config) == "string" then
      config = preset_config(config, overrides, where)
    else
      check_overrides(where, overrides, config)
      if overrides then config = M.copy_config(config, overrides) end
    end
  end)
  if not ok then error(err, 2) end
  local built, model = pcall(function()
    local class, shapes = plan(config, kind)
    if opts.dtype and opts.dtype ~= "float32" and not kind then
      return build_in_dtype(function() return class(config) end, opts.dtype)
    end
    if not kind then return class(config) end
    local what = class.hf_architecture or "model"
    local m = require("ft.quant").build_as(where, function() return class(config) end, kind, opts.modules,
      function(_, targets) check_quantized_size(shapes, targets, kind, what) end, opts.dtype)
    return opts.dtype and unquantised_to(m, opts.dtype) or m
  end)
  if not built then
    local msg = tostring(model)
    error(msg:sub(1, #where + 2) == where .. ": " and msg or where .. ": " .. msg, 2)
  end
  return model
end

-- ---- reading and writing checkpoints ----------------------------------------------------------

local fs = require "ft.fs"
local file_exists = fs.exists

-- config.json and index files are small: a bigger one is refused before it is read.
local MAX_JSON_BYTES = 64 << 20

local function read_json(path, where)
  local f, err = io.open(path, "rb")
  if not f then error(("%s: cannot read %s"):format(where, err), 0) end   -- err names the path
  local size = f:seek("end")
  f:close()
  if size == nil then error(("%s: cannot read %s"):format(where, path), 0) end
  if size > MAX_JSON_BYTES then
    error(("%s: %s is %d bytes, more than the %d a JSON config may have"):format(where, path, size, MAX_JSON_BYTES), 0)
  end
  local text = fs.read(path)
  local ok, value = pcall(ft.json.decode, text)
  if not ok then error(("%s: %s is not valid JSON: %s"):format(where, path, tostring(value)), 0) end
  if type(value) ~= "table" or value == ft.json.null then
    error(("%s: %s must hold a JSON object"):format(where, path), 0)
  end
  return value
end

-- The weight files of a folder: {path, ...}, a description for messages, and for sharded
-- checkpoints the index's weight_map (name -> file).
local function weight_files(dir, where)
  local single = dir .. "/model.safetensors"
  if file_exists(single) then return { single }, single end
  local index_path = dir .. "/model.safetensors.index.json"
  if not file_exists(index_path) then
    error(("%s: no model.safetensors or model.safetensors.index.json in %s"):format(where, dir), 0)
  end
  local map = read_json(index_path, where).weight_map
  if type(map) ~= "table" then error(("%s: %s has no weight_map"):format(where, index_path), 0) end
  local files, seen = {}, {}
  for name, file in pairs(map) do
    if type(name) ~= "string" or type(file) ~= "string" or file:find("/", 1, true) or file == ".." then
      error(("%s: %s maps %s to %s, not a file name in the folder"):format(where, index_path, tostring(name),
        tostring(file)), 0)
    end
    if not seen[file] then
      seen[file] = true
      files[#files + 1] = dir .. "/" .. file
    end
  end
  table.sort(files)
  return files, index_path, map
end

-- name -> shape from the weight files' headers (nothing loaded), checked against the index.
local function weight_shapes(dir, files, source, map, where)
  local out, origin = {}, {}
  for _, path in ipairs(files) do
    local ok, info = pcall(ft.safetensors.info, path)
    if not ok then error(("%s: %s"):format(where, tostring(info)), 0) end
    for name, entry in pairs(info) do
      if out[name] ~= nil then
        error(("%s: tensor %s is in both %s and %s"):format(where, name, origin[name], path), 0)
      end
      out[name], origin[name] = entry.shape, path
    end
  end
  for name, file in pairs(map or {}) do
    if origin[name] ~= dir .. "/" .. file then
      error(("%s: %s maps %s to %s, which does not hold it"):format(where, source, name, file), 0)
    end
  end
  return out, origin
end

-- name -> tensor from the weight files (model.safetensors or the shards of the index).
-- Every tensor of the files, mapped copy-on-write (no copy, no memory until touched; writing a
-- weight changes only this process's copy): in the files' dtypes, or converted to dtype.
local function read_weights(files, dtype)
  local out = {}
  for _, path in ipairs(files) do
    for name, t in pairs(ft.safetensors.load(path, { dtype = dtype, mmap = true })) do out[name] = t end
  end
  return out
end

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

local function tied_of(model)
  return model.tied_weights and model:tied_weights() or {}
end

local function short_list(names)
  table.sort(names)
  if #names > 12 then
    return table.concat(names, ", ", 1, 12) .. (", ... (%d in all)"):format(#names)
  end
  return table.concat(names, ", ")
end

-- A checkpoint's names as the model's: checkpoints saved from the base model (without the
-- class's base_model_prefix) are renamed, buffers HF itself skips (ignore_on_load patterns)
-- dropped, tied copies folded onto their target. src: name -> value; expects(name) says whether
-- the model has a tensor of that name. Returns a new table.
local function as_model_names(class, src, expects, tied)
  local out = {}
  for k, v in pairs(src) do out[k] = v end
  local prefix = class.base_model_prefix
  if prefix then
    local has_prefix = false
    for k in pairs(out) do
      if k:sub(1, #prefix + 1) == prefix .. "." then has_prefix = true; break end
    end
    if not has_prefix then
      local renamed = {}
      for k, v in pairs(out) do
        renamed[not expects(k) and expects(prefix .. "." .. k) and prefix .. "." .. k or k] = v
      end
      out = renamed
    end
  end
  for k in pairs(out) do
    for _, pattern in ipairs(class.ignore_on_load or {}) do
      if k:find(pattern) then out[k] = nil; break end
    end
  end
  for alias, target in pairs(tied) do
    if out[target] == nil then out[target] = out[alias] end
    out[alias] = nil
  end
  return out
end

-- Compares src (name -> shape array, model names) with the expected shapes; raises one error
-- listing the missing, mis-shaped and unexpected tensors.
local function check_names_and_shapes(expected, src, source, where, against)
  local missing, unexpected, problems = {}, {}, {}
  for _, k in ipairs(sorted_keys(expected)) do
    local shape = src[k]
    if shape == nil then
      missing[#missing + 1] = k
    elseif shape_str(shape) ~= shape_str(expected[k]) then
      problems[#problems + 1] = ("tensor %s has shape %s in %s, %s expects %s"):format(k, shape_str(shape), source,
        against, shape_str(expected[k]))
    end
  end
  for k in pairs(src) do
    if expected[k] == nil then unexpected[#unexpected + 1] = k end
  end
  if #missing > 0 then
    table.insert(problems, 1, ("missing tensor(s) in %s (%s has them): %s"):format(source, against,
      short_list(missing)))
  end
  if #unexpected > 0 then
    problems[#problems + 1] = ("unexpected tensor(s) in %s (%s has none of them): %s"):format(source, against,
      short_list(unexpected))
  end
  if #problems > 0 then error(where .. ": " .. table.concat(problems, "; "), 0) end
end

--- ft.models.load_hf_state_dict(model, sd, source, where): copies an HF-named state dict into the
-- model, strictly: every tensor of the model must be there with its shape and dtype, and nothing
-- else (tied copies such as GPT-2's lm_head.weight may be absent). Checkpoints saved from the
-- base model (without the "transformer." / "model." prefix) and buffers HF itself skips (the
-- class's ignore_on_load patterns) are accepted. `source` names the file in error messages.
function M.load_hf_state_dict(model, sd, source, where, adopt)
  where = where or "ft.models.load_hf_state_dict"
  source = source or "the state dict"
  local own, keys = model:state_dict({ keep_vars = true })
  local tied = tied_of(model)
  local src = as_model_names(model, sd, function(k) return own[k] ~= nil end, tied)
  local expected, shapes = {}, {}
  for _, k in ipairs(keys) do
    if not tied[k] then expected[k] = own[k]:shape() end
  end
  local problems = {}
  for k, t in pairs(src) do
    if not ft.is_tensor(t) then
      problems[#problems + 1] = ("%s is a %s, not a tensor"):format(k, type(t))
    else
      shapes[k] = t:shape()
      local convertible = adopt and t:dtype() ~= "int64" and own[k]:dtype() ~= "int64"
      if expected[k] and shape_str(shapes[k]) == shape_str(expected[k]) and t:dtype() ~= own[k]:dtype()
        and not convertible then
        problems[#problems + 1] = ("tensor %s is %s in %s, the model expects %s"):format(k, t:dtype(), source,
          own[k]:dtype())
      end
    end
  end
  if #problems > 0 then error(where .. ": " .. table.concat(problems, "; "), 0) end
  check_names_and_shapes(expected, shapes, source, where, "the model")
  ft.no_grad(function()
    for _, k in ipairs(keys) do
      if tied[k] then -- the tied copy is the same tensor as its target
      elseif adopt and src[k]:dtype() ~= "int64" then own[k]:set_(src[k])
      else own[k]:copy_(src[k]) end
    end
  end)
  return model
end

-- The module holding state-dict key k of model, and the key's last part.
local function owner_of(model, k)
  local path, name = k:match("^(.*)%.([^.]+)$")
  if not path then return model, k end
  local m = model
  for part in path:gmatch("[^.]+") do m = m._modules[part] end
  return m, name
end

-- Puts tensor t (just read) in the place of model's tensor k: t itself when dtype and shape
-- agree (no copy: the file's buffer becomes the parameter, requires_grad kept, tied aliases
-- following), else converted into the existing tensor. With dtype, a float t is first
-- converted to it (if it is not already) and always taken: the model's tensor becomes dtype.
local function adopt(model, k, t, tied, source, where, dtype)
  local m, name = owner_of(model, k)
  local old = m[name]
  if (t:dtype() == "int64") ~= (old:dtype() == "int64") then
    error(("%s: tensor %s is %s in %s, the model expects %s"):format(where, k, t:dtype(), source, old:dtype()), 0)
  end
  if dtype and t:dtype() ~= "int64" and t:dtype() ~= dtype then t = t:to(dtype) end
  local want = (dtype and t:dtype() ~= "int64") and dtype or old:dtype()
  if t:dtype() ~= want or shape_str(t:shape()) ~= shape_str(old:shape()) then
    ft.no_grad(function() old:copy_(t) end)
    return
  end
  local new = t
  if ft.nn.is_parameter(old) then new = ft.nn.Parameter(t, old.requires_grad) end
  m[name] = new
  for alias, target in pairs(tied) do
    if target == k then
      local am, aname = owner_of(model, alias)
      am[aname] = new
    end
  end
end

-- from_pretrained with opts.quantize = kind: the model tree built with untouched weights, then
-- each tensor read from its file on its own; the weights of the selected layers are quantised
-- from what was read and freed at once, the others become the model's tensors (in dtype when
-- it is given). Returns model.
local function load_quantized(class, config, config_path, shapes, tied, sources, kind, modules, dtype, where)
  local quant = require "ft.quant"
  ft.empty_cache()   -- the tree's weights must be fresh, untouched pages
  local ok, model = pcall(ft.nn.init.skip, class, config)
  if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(model)), 0) end
  local targets = quant.select(model, modules, where)
  check_quantized_size(shapes, targets, kind, where .. ": " .. (class.hf_architecture or "model"))
  local quantized = target_weights(targets)
  local _, keys = model:state_dict({ keep_vars = true })
  for _, k in ipairs(keys) do
    if not tied[k] then
      local src = sources[k]
      local t = ft.safetensors.load(src.path, { names = { src.name } })[src.name]
      local e = quantized[k]
      if e then
        quant.set_weight(e[2], t, kind, e[1])
        quantized[k] = nil
        do local done <close> = t end   -- this layer's float32 copy goes before the next one is read
        ft.empty_cache()                 -- back to the system, not kept in the allocator's cache
      else
        adopt(model, k, t, tied, src.path, where, dtype)   -- a file in dtype: its mapping, no copy
      end
    end
  end
  -- A selected layer whose weight is a tied copy (lm_head on tied embeddings): from the target.
  for _, e in pairs(quantized) do quant.set_weight(e[2], e[2].weight:detach(), kind, e[1]) end
  collectgarbage()
  collectgarbage()   -- the unwritten weights the loaded and quantised ones replace
  ft.empty_cache()
  return model
end

--- ft.models.from_pretrained(dir, opts) -> model: loads an HF model folder. config.json picks the
-- architecture ("architectures", else "model_type") and is checked first; model.safetensors (or
-- the shards of model.safetensors.index.json) must hold exactly the model's tensors, with their
-- shapes, which is checked from the files' headers before the model is allocated. The model is
-- built under ft.nn.init.skip (no random initialisation, parameters allocated only), then
-- filled from the files. Returns the model in eval mode; model.config is the config table,
-- model.name_or_path the folder and model.generation_config its generation_config.json (if
-- any: model:generate's defaults).
-- opts: {quantize = "nf4" | "nf4_fp32" | "int8", modules = names or patterns}: QLoRA's frozen
-- base, quantised while loading. The selected layers (modules as in ft.quant.quantize;
-- default: every Linear (GPT-2: Conv1D) of the decoder blocks, ft.quant.default_modules, so
-- lm_head and the embeddings stay float32 as with bitsandbytes) are read one tensor at a time,
-- quantised and their float32 copy freed before the next: the float32 model never exists, the
-- peak is about the quantised model plus one float32 layer plus the float32 rest (embeddings,
-- lm_head, norms, biases), and the size check counts the quantised layers at their quantised
-- size. The result is bit for bit from_pretrained followed by ft.quant.quantize.
-- dtype = "bfloat16" | "float16" | "float32" | "float64": the dtype of the weights; by default
-- each keeps the file's (a BF16 checkpoint gives a bfloat16 model: half the memory, computed in
-- float32; m:to converts later; full fine-tuning needs float32 weights, adapters are float32
-- anyway). With quantize, dtype is that of the weights left unquantised (float32 without it):
-- {quantize = "nf4", dtype = "bfloat16"} halves the embeddings and lm_head. Weights in the file's dtype are used straight from the file's mapping, copy-on-write:
-- nothing is copied or resident until read, and a weight that training writes becomes a private
-- copy (the file never changes).
function M.from_pretrained(dir, opts)
  local where = "ft.models.from_pretrained"
  opts = common.check_options(where, opts, { "quantize", "modules", "dtype" })
  if opts.dtype ~= nil and not FLOAT_DTYPES[opts.dtype] then
    error(("%s: option 'dtype' must be one of bfloat16, float16, float32, float64, got %s"):format(where,
      tostring(opts.dtype)), 2)
  end
  if type(dir) ~= "string" then error(where .. ": a directory path expected, got " .. type(dir), 2) end
  local qok, kind = pcall(quantize_option, where, opts)
  if not qok then error(kind, 2) end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local config_path = dir .. "/config.json"
  local config = read_json(config_path, where)
  local ok, class, shapes, tied = pcall(plan, config, kind)
  if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(class)), 0) end
  local files, source, map = weight_files(dir, where)
  local in_file, origin = weight_shapes(dir, files, source, map, where)
  if class.config_for_weights then   -- a family with more than one layout: the file's decides
    config = class.config_for_weights(config, in_file)
    ok, class, shapes, tied = pcall(plan, config, kind)
    if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(class)), 0) end
  end
  local expects = function(k) return shapes[k] ~= nil or tied[k] ~= nil end
  check_names_and_shapes(shapes, as_model_names(class, in_file, expects, tied), source, where,
    "the model of " .. config_path)
  local model
  if kind then
    local located = {}
    for name, path in pairs(origin) do located[name] = { path = path, name = name } end
    model = load_quantized(class, config, config_path, shapes, tied, as_model_names(class, located, expects, tied),
      kind, opts.modules, opts.dtype, where)
    if opts.dtype then unquantised_to(model, opts.dtype) end
  else
    -- Built without random initialisation: the weights read next overwrite every tensor.
    ok, model = pcall(ft.nn.init.skip, class, config)
    if not ok then error(("%s: %s: %s"):format(where, config_path, tostring(model)), 0) end
    M.load_hf_state_dict(model, read_weights(files, opts.dtype), source, where, true)
  end
  model:eval()
  model.name_or_path = dir   -- as HF's config.name_or_path: what an adapter records as its base
  local gc_path = dir .. "/generation_config.json"
  if fs.exists(gc_path) then model.generation_config = read_json(gc_path, where) end
  return model
end

--- ft.models.save_pretrained(model, dir, opts) -> dir: writes config.json and model.safetensors
-- (HF names and layouts, tied copies left out as HF does) into dir, created if needed, so that
-- transformers' from_pretrained (and ft.models.from_pretrained) loads it. Other files of dir (a
-- tokenizer's) stay. Each weight is written in its own dtype (a bfloat16 model as BF16, and
-- config.json's torch_dtype, where the config has one, says so); opts.dtype = "bfloat16" | "float16" | "float32" converts
-- the float weights as they are written.
function M.save_pretrained(model, dir, opts)
  local where = "ft.models.save_pretrained"
  opts = common.check_options(where, opts, { "dtype" })
  if opts.dtype ~= nil and not FLOAT_DTYPES[opts.dtype] then
    error(("%s: option 'dtype' must be one of bfloat16, float16, float32, float64, got %s"):format(where,
      tostring(opts.dtype)), 2)
  end
  if type(model) ~= "table" or type(model.config) ~= "table" or not model.hf_architecture then
    error(where .. ": the model has no HF config (build it with ft.models.new or from_pretrained)", 2)
  end
  if type(dir) ~= "string" or dir == "" then error(where .. ": a directory path expected, got " .. type(dir), 2) end
  dir = dir:gsub("/+$", "")
  local config = M.copy_config(model.config)
  config.architectures = { model.hf_architecture }
  config.model_type = model.hf_model_type
  local tied = tied_of(model)
  local sd, keys = model:state_dict()
  local out = {}
  for _, k in ipairs(keys) do
    if not tied[k] then out[k] = sd[k] end
  end
  local dtypes = {}
  for _, t in pairs(out) do
    if t:dtype() ~= "int64" then dtypes[#dtypes + 1] = opts.dtype or t:dtype() end
  end
  table.sort(dtypes)
  -- An HF config's torch_dtype follows the weights written (configs without one stay so).
  if #dtypes > 0 and config.torch_dtype ~= nil then
    config.torch_dtype = dtypes[1] == dtypes[#dtypes] and dtypes[1] or "float32"
  end
  fs.mkdir(dir, where)
  -- transformers rejects safetensors metadata without a known "format".
  ft.safetensors.save(dir .. "/model.safetensors", out, { metadata = { format = "pt" }, dtype = opts.dtype })
  ft.json.write(dir .. "/config.json", config, { indent = true })
  return dir
end

-- The family modules as fields, loaded on first use: ft.models.resnet is require "ft.models.resnet"
-- (resnet_s, resnet18 ..., from_safetensors), likewise gpt2, gpt2_classifier, llama, mixtral, vit.
local FAMILIES = { gpt2 = true, gpt2_classifier = true, llama = true, mixtral = true, vit = true, resnet = true }
setmetatable(M, {
  __index = function(t, key)
    if not FAMILIES[key] then return nil end
    local family = require("ft.models." .. key)
    rawset(t, key, family)
    return family
  end,
})

return M
