--- ft.train.save_checkpoint / load_checkpoint: everything a run needs to continue exactly
-- where it stopped, in one HDF5 file written atomically by ft.save (a failed or interrupted
-- write leaves the previous checkpoint as it was).
--
--   train.save_checkpoint("run/ckpt.h5", {model = model, optimizer = opt, scheduler = sched,
--                                         step = step, epoch = epoch, extra = {best = best}})
--   local ck = train.load_checkpoint("run/ckpt.h5", {model = model, optimizer = opt, scheduler = sched})
--   -- ck.step, ck.epoch, ck.extra
--
-- Layout: datasets model.<key> (parameters and buffers), optimizer.<key>,
-- scheduler.<key>, rng (ft.get_rng_state()), tensors.<name>[.<key>]; attributes on "/":
-- checkpoint ("ftlua.train"), checkpoint_version, step, epoch, extra (JSON). h5py or ft.load read it as is.
--
-- Under mpirun (ft.dist, several ranks) every rank calls save and load, in the same order.
-- save is collective: the main rank (rank 0) alone writes the file, atomically as above,
-- and no rank returns before the file is complete, so any rank may read it next (a failed
-- write is an error on every rank). The state saved is rank 0's (ft.dist.DataParallel keeps
-- the ranks' models and optimizers the same); rng is rank 0's generator, and rng_ranks
-- [world_size, 4] holds every rank's. load reads the file on every rank and restores each
-- rank's own generator from rng_ranks when the world has the size it was saved with, else
-- rank 0's on every rank. ft's generator is the stream the ranks share (DataParallel draws
-- each rank's dropout from a stream of its own derived from it), so the rows agree and
-- either way resumes every rank exactly; keeping every row also resumes exactly a run whose
-- ranks were seeded apart. In a world of one nothing of this happens: the file is the same.
local ft = require "ft"

local M = {}

local KIND, VERSION = "ftlua.train", 1

local fs = require "ft.fs"

local function check_object(v, what, method, name)
  if v ~= nil and (type(v) ~= "table" or type(v[method]) ~= "function") then
    error(("ft.train.%s: %s must have a %s method, got %s"):format(name, what, method, type(v)), 3)
  end
end

local function add_prefixed(out, prefix, sd, what)
  for k, t in pairs(sd) do
    if not ft.is_tensor(t) then
      error(("ft.train.save_checkpoint: %s state entry '%s' is a %s, not a tensor"):format(what, tostring(k), type(t)), 3)
    end
    out[prefix .. k] = t
  end
end

--- ft.train.save_checkpoint(path, {model =, optimizer =, scheduler =, step = 0, epoch =,
---                                 extra = JSON-able table, tensors = {name = tensor | state dict},
---                                 rng = true})
-- Writes the model's parameters and buffers, the optimizer's and scheduler's state dicts,
-- ft's RNG state (unless rng = false), step, epoch, extra (JSON) and named extra tensors.
-- Under mpirun: called by every rank, written by rank 0, returns once the file is complete.
function M.save(path, state)
  if type(path) ~= "string" then error("ft.train.save_checkpoint: path must be a string, got " .. type(path), 2) end
  if type(state) ~= "table" then error("ft.train.save_checkpoint: expected a table of what to save", 2) end
  ft.check_options("ft.train.save_checkpoint", state, {"model", "optimizer", "scheduler", "step", "epoch",
    "extra", "tensors", "rng"})
  ft.check.boolean("ft.train.save_checkpoint", "rng", state.rng)
  check_object(state.model, "model", "state_dict", "save_checkpoint")
  check_object(state.optimizer, "optimizer", "state_dict", "save_checkpoint")
  check_object(state.scheduler, "scheduler", "state_dict", "save_checkpoint")
  local step = state.step or 0
  if math.type(step) ~= "integer" then
    error("ft.train.save_checkpoint: step must be an integer, got " .. tostring(step), 2)
  end
  if state.epoch ~= nil and math.type(state.epoch) ~= "integer" then
    error("ft.train.save_checkpoint: epoch must be an integer, got " .. tostring(state.epoch), 2)
  end
  local ok, extra = pcall(ft.json.encode, state.extra or {})
  if not ok then
    error("ft.train.save_checkpoint: extra must be JSON-able: " .. tostring(extra), 2)
  end

  local tensors = {}
  if state.model then add_prefixed(tensors, "model.", (state.model:state_dict()), "model") end
  if state.optimizer then add_prefixed(tensors, "optimizer.", state.optimizer:state_dict(), "optimizer") end
  if state.scheduler then add_prefixed(tensors, "scheduler.", state.scheduler:state_dict(), "scheduler") end
  local world = ft.dist.world_size()
  if state.rng ~= false then
    tensors.rng = ft.get_rng_state()
    if world > 1 then tensors.rng_ranks = ft.dist.all_gather(tensors.rng:reshape(1, 4)) end
  end
  for name, v in pairs(state.tensors or {}) do
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      error(("ft.train.save_checkpoint: tensors names must be words (letters, digits, _), got '%s'")
            :format(tostring(name)), 2)
    end
    if ft.is_tensor(v) then
      tensors["tensors." .. name] = v
    elseif type(v) == "table" then
      add_prefixed(tensors, "tensors." .. name .. ".", v, "tensors." .. name)
    else
      error(("ft.train.save_checkpoint: tensors.%s must be a tensor or a table of tensors, got %s")
            :format(name, type(v)), 2)
    end
  end

  local meta = {checkpoint = KIND, checkpoint_version = VERSION, step = step, extra = extra}
  if state.epoch then meta.epoch = state.epoch end
  if world == 1 then
    fs.mkdir_for(path, "ft.train.save_checkpoint")
    local saved, err = pcall(ft.save, path, tensors, {metadata = meta})
    if not saved then
      error("ft.train.save_checkpoint: " .. tostring(err):gsub("^[^:\n]*:%d+: ", ""), 2)
    end
    return
  end
  local failure = false
  if ft.dist.is_main() then
    local made, err = pcall(fs.mkdir_for, path, "ft.train.save_checkpoint")
    if not made then
      failure = tostring(err):gsub("^[^:\n]*:%d+: ", "")
    else
      local saved, why = pcall(ft.save, path, tensors, {metadata = meta})
      if not saved then failure = "ft.train.save_checkpoint: " .. tostring(why):gsub("^[^:\n]*:%d+: ", "") end
    end
  end
  -- Rank 0's outcome, sent once the file is renamed into place: a barrier that also tells
  -- every rank when the write failed.
  failure = ft.dist.broadcast_value(failure, 0)
  if failure then error(failure, 2) end
end

-- The entries of flat whose key starts with prefix, with the prefix removed.
local function strip(flat, prefix)
  local out, any = {}, false
  for k, t in pairs(flat) do
    if k:sub(1, #prefix) == prefix then
      out[k:sub(#prefix + 1)] = t
      any = true
    end
  end
  return out, any
end

--- ft.train.load_checkpoint(path [, {model =, optimizer =, scheduler =, strict = true, rng = true}])
-- -> {step =, epoch =, extra =, tensors = {name = tensor | state dict}}
-- Restores into the objects given (model weights with load_state_dict(strict), optimizer
-- and scheduler state) and ft's RNG (unless rng = false). Asking for a part the file lacks
-- is an error. Temporary files that a killed save of path left behind are removed (by the
-- main rank). Under mpirun every rank reads the file and restores its own RNG (see the top).
function M.load(path, opts)
  opts = ft.check_options("ft.train.load_checkpoint", opts, {"model", "optimizer", "scheduler", "strict", "rng"})
  ft.check.boolean("ft.train.load_checkpoint", "strict", opts.strict)
  ft.check.boolean("ft.train.load_checkpoint", "rng", opts.rng)
  if type(path) ~= "string" then error("ft.train.load_checkpoint: path must be a string, got " .. type(path), 2) end
  check_object(opts.model, "model", "load_state_dict", "load_checkpoint")
  check_object(opts.optimizer, "optimizer", "load_state_dict", "load_checkpoint")
  check_object(opts.scheduler, "scheduler", "load_state_dict", "load_checkpoint")
  if ft.dist.is_main() then fs.remove_stale(path) end
  local flat, meta = ft.load(path)
  if meta.checkpoint ~= KIND then
    error(("ft.train.load_checkpoint: '%s' is not a training checkpoint (written by ft.train.save_checkpoint); "
           .. "read plain weight files with ft.load"):format(path), 2)
  end
  if meta.checkpoint_version ~= VERSION then
    error(("ft.train.load_checkpoint: '%s' has checkpoint format version %s; this ftlua reads version %d")
          :format(path, tostring(meta.checkpoint_version), VERSION), 2)
  end

  local parts = {}
  for _, part in ipairs({"model", "optimizer", "scheduler"}) do
    local sd, any = strip(flat, part .. ".")
    if opts[part] and not any then
      error(("ft.train.load_checkpoint: '%s' holds no %s state"):format(path, part), 2)
    end
    parts[part] = sd
  end
  if opts.rng ~= false and not flat.rng then
    error(("ft.train.load_checkpoint: '%s' holds no RNG state (saved with rng = false); pass rng = false"):format(path), 2)
  end

  -- The optimizer and scheduler check everything before changing anything; then the model.
  if opts.optimizer then opts.optimizer:load_state_dict(parts.optimizer) end
  if opts.scheduler then opts.scheduler:load_state_dict(parts.scheduler) end
  if opts.model then opts.model:load_state_dict(parts.model, {strict = opts.strict ~= false}) end
  if opts.rng ~= false then
    local own = flat.rng
    local ranks = flat.rng_ranks
    if ranks and ranks:dim() == 2 and ranks:size(1) > 1 then
      local world = ft.dist.world_size()
      if ranks:size(1) == world then own = ranks[ft.dist.rank() + 1] end
    end
    ft.set_rng_state(own)
  end

  local tensors = {}
  for k, t in pairs(strip(flat, "tensors.")) do
    local name, key = k:match("^([^.]+)%.(.+)$")
    if name then
      tensors[name] = tensors[name] or {}
      tensors[name][key] = t
    else
      tensors[k] = t
    end
  end
  return {step = meta.step, epoch = meta.epoch, extra = ft.json.decode(meta.extra or "{}"), tensors = tensors}
end

return M
