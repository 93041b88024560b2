-- ft.peft.io: saving and loading adapters, behind ft.peft.save and ft.peft.load. The native
-- format is one HDF5 file (adapter.h5) with the adapter's tensors under the model's
-- state_dict keys and its kind, name and config as JSON metadata; PEFT's folder layout goes
-- through ft.peft.format.
local ft = require "ft"
local A = require "ft.peft.registry"

local peft_io = {}

local kind_module = A.kind

--- The options of save and load.
peft_io.save_options = { "name", "format", "task_type", "base_model_name_or_path", "revision" }
peft_io.load_options = { "name" }

local fs = require "ft.fs"
local is_dir, file_exists = fs.is_dir, fs.exists

local META_KEY = "ftlua_adapter"

--- save(model, dir [, {name = "default", format = "ftlua"|"peft"}]) -> path written
-- "ftlua": dir/adapter.h5, the adapter's tensors (model state_dict keys) with its kind, name
-- and config as JSON in the file's metadata (written atomically). "peft": PEFT's
-- adapter_model.safetensors + adapter_config.json (LoRA only; the folder is replaced as a whole,
-- options task_type, base_model_name_or_path and revision go into the config; the first two
-- default to the model class's task, such as "CAUSAL_LM", and the folder
-- ft.models.from_pretrained loaded the model from).
function peft_io.save(model, dir, opts)
  local where = "ft.peft.save"
  opts = ft.check_options(where, opts, peft_io.save_options)
  if type(dir) ~= "string" or dir == "" then
    error(where .. ": a directory path expected, got " .. (dir == "" and "''" or type(dir)), 2)
  end
  local name = opts.name or "default"
  local entry = A.get(model, name, where)
  local format = opts.format or "ftlua"
  if format == "peft" then
    if entry.kind ~= "lora" then
      error(("%s: format 'peft' holds LoRA adapters only; adapter '%s' is %s (use format 'ftlua')"):format(where,
        name, entry.kind), 2)
    end
    -- PEFT's AutoPeft loaders need the base model and the task: by default the folder the
    -- model came from (ft.models.from_pretrained) and its class's task
    return require("ft.peft.format").save(model, dir, name, { task_type = opts.task_type or model.peft_task_type,
      base_model_name_or_path = opts.base_model_name_or_path or model.name_or_path, revision = opts.revision }, where)
  elseif format ~= "ftlua" then
    error(("%s: format must be 'ftlua' or 'peft', got %s"):format(where, tostring(format)), 2)
  end
  for _, k in ipairs({ "task_type", "base_model_name_or_path", "revision" }) do
    if opts[k] ~= nil then error(("%s: option '%s' is for format 'peft' only"):format(where, k), 2) end
  end
  fs.mkdir(dir, where)
  local path = dir .. "/adapter.h5"
  local info = ft.json.encode({ kind = entry.kind, name = name, config = entry.config })
  ft.save(path, kind_module(entry.kind).state_dict(model, name), { metadata = { [META_KEY] = info } })
  return path
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- The key of a saved adapter's tensor under a new adapter name: the segment after an
-- adapter's child (lora_A, ia3_l, reft_..., prompt_encoder) is the adapter name.
local function rename_key(key, from, to)
  if from == to then return key end
  local parts = {}
  for s in key:gmatch("[^.]+") do parts[#parts + 1] = s end
  for i = 2, #parts do
    local prev = parts[i - 1]
    if parts[i] == from and A.is_adapter_segment(prev) then
      parts[i] = to
    end
  end
  return table.concat(parts, ".")
end

local function sorted(list)
  table.sort(list)
  return table.concat(list, ", ")
end

-- Copies the file's tensors into the adapter's; an error lists every missing, unexpected and
-- mis-shaped key, and nothing is copied then.
local function copy_adapter_tensors(own, saved, from, to)
  local tensors, problems = {}, {}
  for k, t in pairs(saved) do tensors[rename_key(k, from, to)] = t end
  local missing, unexpected = {}, {}
  for k, t in pairs(own) do
    local src = tensors[k]
    if src == nil then
      missing[#missing + 1] = k
    elseif not ft.tables.same_shape(src, t) then
      problems[#problems + 1] = ("size mismatch for %s: %s in the file, %s in the model"):format(k, shape_str(src),
        shape_str(t))
    end
  end
  for k in pairs(tensors) do
    if own[k] == nil then unexpected[#unexpected + 1] = k end
  end
  if #missing > 0 then problems[#problems + 1] = "missing key(s): " .. sorted(missing) end
  if #unexpected > 0 then problems[#problems + 1] = "unexpected key(s): " .. sorted(unexpected) end
  if #problems > 0 then error(table.concat(problems, "; "), 0) end
  ft.no_grad(function()
    for k, t in pairs(own) do t:copy_(tensors[k]) end
  end)
end

--- load(model, dir_or_file [, {name =}]) -> adapter name
-- A directory holding adapter_model.safetensors loads as a PEFT adapter (ft.peft.format); a
-- directory with adapter.h5 (or that file itself) recreates the saved adapter (same kind and
-- config; under opts.name if given) and copies its tensors in.
function peft_io.load(model, path, opts)
  local where = "ft.peft.load"
  opts = ft.check_options(where, opts, peft_io.load_options)
  if type(path) ~= "string" then error(where .. ": a directory or file path expected, got " .. type(path), 2) end
  local file = path
  if is_dir(path) then
    if file_exists(path .. "/adapter_model.safetensors") then
      return require("ft.peft.format").load(model, path, { name = opts.name })
    end
    file = path .. "/adapter.h5"
    if not file_exists(file) then
      error(("%s: %s holds neither adapter.h5 (ftlua) nor adapter_model.safetensors (PEFT)"):format(where, path), 2)
    end
  elseif not file_exists(path) then
    error(("%s: no such file or directory: %s"):format(where, path), 2)
  end
  local tensors, meta = ft.load(file)
  local text = meta and meta[META_KEY]
  if type(text) ~= "string" then
    error(("%s: %s is not an ftlua adapter file (no '%s' metadata)"):format(where, file, META_KEY), 2)
  end
  local ok, info = pcall(ft.json.decode, text)
  if not ok or type(info) ~= "table" or type(info.kind) ~= "string" or type(info.config) ~= "table" then
    error(("%s: %s has unreadable adapter metadata"):format(where, file), 2)
  end
  local name = opts.name or info.name or "default"
  local config = {}
  for k, v in pairs(info.config) do config[k] = v end
  config.name = name
  local kind = kind_module(info.kind)
  -- attach freezes the base model: undo that too if the tensors do not fit.
  local trainable = {}
  for _, p in ipairs(model:parameters()) do trainable[p] = p.requires_grad end
  kind.attach(model, config)
  local copied, err = pcall(copy_adapter_tensors, kind.state_dict(model, name), tensors, info.name or name, name)
  if not copied then
    A.delete(model, name)
    for p, flag in pairs(trainable) do p.requires_grad = flag end
    error(("%s: %s (%s adapter '%s'): %s"):format(where, file, info.kind, name, tostring(err)), 2)
  end
  return name
end

return peft_io
