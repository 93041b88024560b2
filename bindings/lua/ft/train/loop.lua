--- ft.train.loop: a resumable training loop around a recipe's own step function.
--
--   local result = ft.train.loop{
--     steps = 1000,                         -- or epochs = 5 (with a loader)
--     loader = loader,                      -- ft.data.loader or an array of batches;
--                                           -- or next_batch = function(step) -> batch
--     step = function(batch, step) return loss end,
--     evaluate = function(step) return {val_loss = ...} end, eval_every = 100,
--     model = model, optimizer = opt, scheduler = sched,   -- what checkpoints hold
--     checkpoint = "run/ckpt.h5", checkpoint_every = 100, resume = true,
--     logger = ft.train.Logger{...}, early_stopping = ft.train.EarlyStopping{...},
--     state = {},                           -- the recipe's own JSON-able state, checkpointed
--     stop_at = nil,                        -- pause after this step (checkpoint, then return)
--   }
--
-- With resume = true the loop continues from the checkpoint file when it exists and starts
-- afresh when it does not, so the same command both starts and restarts a run.
--
-- Exact resumption: a checkpoint holds the model, optimizer, scheduler, ft's RNG state,
-- the position in the loader (epoch, batches done, and the RNG state the epoch's order was
-- drawn from), the early-stopping and logger state and `state`. Resuming redraws the
-- epoch's order, skips the batches already done and restores the RNG, so a run killed at
-- any point and resumed ends with the same parameters and metrics, bit for bit, as one
-- that ran straight through (same thread count). Evaluation runs with the RNG state saved
-- and restored around it, so evaluating (or not) never changes the training stream.
--
-- Under mpirun (ft.dist) every rank runs the loop, with its own share of each batch (an
-- ft.data.loader with shard = true) and a model wrapped in ft.dist.DataParallel. Rank 0
-- alone prints (logger, ft.progress) and writes the logger's file and the checkpoints; every
-- rank returns from a checkpoint save once the file is complete. Resuming, every rank reads
-- the same checkpoint (rank 0 decides whether it exists; a rank that cannot see it then is
-- an error: the ranks must share the folder) and restores the model, optimizer, scheduler,
-- its loader's position and the RNG, so a resumed distributed run equals one that ran
-- straight through, bit for bit, as in one process.
local ft = require "ft"

local checkpoint = require "ft.train.checkpoint"

local file_exists = require("ft.fs").exists

local function positive_integer(v, what)
  return ft.check.integer("ft.train.loop", what, v, nil, {min = 1})
end

-- An array of batches as a loader: same interface (iter, #, epoch), fixed order.
local function array_loader(batches)
  local loader = {epoch = 0}
  function loader:iter()
    self.epoch = self.epoch + 1
    local i = 0
    return function()
      i = i + 1
      return batches[i]
    end
  end
  return setmetatable(loader, {__len = function() return #batches end})
end

local function is_loader(v)
  return type(v) == "table" and type(v.iter) == "function" and v.epoch ~= nil
end

local function check(opts)
  if type(opts) ~= "table" then error("ft.train.loop: expected a table of options", 3) end
  ft.check_options("ft.train.loop", opts, {"steps", "epochs", "loader", "next_batch", "step", "evaluate",
    "eval_every", "model", "optimizer", "scheduler", "checkpoint", "checkpoint_every", "resume", "logger",
    "early_stopping", "state", "stop_at"})
  ft.check.boolean("ft.train.loop", "resume", opts.resume)
  for _, key in ipairs{"model", "optimizer", "scheduler"} do
    local v = opts[key]
    if v ~= nil and (type(v) ~= "table" or type(v.state_dict) ~= "function") then
      ft.check.fail("ft.train.loop", key, "an object with a state_dict method", v)
    end
  end
  if opts.logger ~= nil and (type(opts.logger) ~= "table" or type(opts.logger.step) ~= "function") then
    ft.check.fail("ft.train.loop", "logger", "an ft.train.Logger", opts.logger)
  end
  local es = opts.early_stopping
  if es ~= nil and (type(es) ~= "table" or type(es.update) ~= "function") then
    ft.check.fail("ft.train.loop", "early_stopping", "an ft.train.EarlyStopping", opts.early_stopping)
  end
  if type(opts.step) ~= "function" then
    error("ft.train.loop: step must be a function(batch, step) -> loss, got " .. type(opts.step), 3)
  end
  positive_integer(opts.steps, "steps")
  positive_integer(opts.epochs, "epochs")
  positive_integer(opts.eval_every, "eval_every")
  positive_integer(opts.checkpoint_every, "checkpoint_every")
  positive_integer(opts.stop_at, "stop_at")
  if (opts.steps == nil) == (opts.epochs == nil) then
    error("ft.train.loop: give exactly one of steps and epochs", 3)
  end
  if (opts.loader == nil) == (opts.next_batch == nil) then
    error("ft.train.loop: give exactly one of loader (ft.data.loader or an array of batches) and "
          .. "next_batch (a function(step) -> batch)", 3)
  end
  if opts.epochs and not opts.loader then error("ft.train.loop: epochs needs a loader", 3) end
  if opts.next_batch ~= nil and type(opts.next_batch) ~= "function" then
    error("ft.train.loop: next_batch must be a function(step) -> batch, got " .. type(opts.next_batch), 3)
  end
  if opts.evaluate ~= nil and type(opts.evaluate) ~= "function" then
    error("ft.train.loop: evaluate must be a function(step) -> metrics, got " .. type(opts.evaluate), 3)
  end
  if opts.early_stopping and not opts.evaluate then
    error("ft.train.loop: early_stopping needs evaluate (it watches the evaluation metrics)", 3)
  end
  if opts.resume and not opts.checkpoint then error("ft.train.loop: resume needs checkpoint = path", 3) end
  if opts.checkpoint_every and not opts.checkpoint then
    error("ft.train.loop: checkpoint_every needs checkpoint = path", 3)
  end
  if opts.checkpoint ~= nil and type(opts.checkpoint) ~= "string" then
    error("ft.train.loop: checkpoint must be a path, got " .. type(opts.checkpoint), 3)
  end
  if opts.state ~= nil and type(opts.state) ~= "table" then
    error("ft.train.loop: state must be a table, got " .. type(opts.state), 3)
  end
end

-- The step function's result as a metrics table (loss and the rest) and its item count.
local function step_metrics(out, step)
  if ft.is_tensor(out) then out = out:item() end
  if type(out) == "number" then return {loss = out} end
  if type(out) == "table" then
    local m = {}
    for k, v in pairs(out) do m[k] = ft.is_tensor(v) and v:item() or v end
    local items = m.items
    m.items = nil
    return m, items
  end
  if out == nil then return {} end
  error(("ft.train.loop: step returned a %s at step %d; expected a loss (number or tensor) or a table of metrics")
        :format(type(out), step), 3)
end

local function batch_items(batch)
  local x = ft.is_tensor(batch) and batch or (type(batch) == "table" and batch.x)
  if ft.is_tensor(x) and x:dim() > 0 then return x:size(1) end
end

-- Whether the run resumes from path: the file exists (on rank 0, under mpirun, so that every
-- rank decides alike; a rank that does not see rank 0's file is an error).
local function checkpoint_exists(path)
  local here = file_exists(path)
  if ft.dist.world_size() == 1 then return here end
  local there = ft.dist.broadcast_value(here, 0)
  if there and not here then
    error(("ft.train.loop: rank %d cannot see the checkpoint '%s' that rank 0 resumes from; the ranks must "
      .. "share the run's folder (the same file system and working directory)"):format(ft.dist.rank(), path), 3)
  end
  return there
end

-- Numbers only (finite), for the JSON extra state.
local function json_safe(metrics)
  local out = {}
  for k, v in pairs(metrics or {}) do
    if type(k) == "string" and (type(v) == "string" or type(v) == "boolean"
        or (type(v) == "number" and v == v and math.abs(v) ~= math.huge)) then
      out[k] = v
    end
  end
  return out
end

--- ft.train.loop{...} -> {step =, epoch =, metrics = last evaluation, stopped = reason,
--- resumed_from = step or nil}
-- stopped: "done" (all steps), "early_stopping" or "stop_at".
return function(opts)
  check(opts)
  local loader = opts.loader
  if loader and not is_loader(loader) then
    if type(loader) ~= "table" or #loader == 0 then
      error("ft.train.loop: loader must be an ft.data.loader or a non-empty array of batches", 2)
    end
    loader = array_loader(loader)
  end
  local per_epoch = loader and #loader
  -- One epoch's batches; a loader's (x, y) become {x = x, y = y} (also {x, y}).
  local function epoch_batches()
    local raw = loader:iter()
    if not is_loader(opts.loader) then return raw end
    return function()
      local x, y = raw()
      if x == nil then return nil end
      return {x, y, x = x, y = y}
    end
  end
  if loader and per_epoch == 0 then error("ft.train.loop: the loader yields no batch per epoch", 2) end
  local total = opts.steps or opts.epochs * per_epoch
  -- Epoch runs evaluate at each epoch's end unless told otherwise.
  local eval_every = opts.eval_every or (opts.epochs and per_epoch) or nil
  local logger, es, user_state = opts.logger, opts.early_stopping, opts.state

  local step, epoch, done_in_epoch, epoch_rng, it = 0, 0, 0, nil, nil
  local metrics, resumed_from = nil, nil

  -- ---- resume ----
  if opts.resume and checkpoint_exists(opts.checkpoint) then
    local ck = checkpoint.load(opts.checkpoint,
      {model = opts.model, optimizer = opts.optimizer, scheduler = opts.scheduler})
    local x = ck.extra
    local pos = x.loop or {}
    step, resumed_from = ck.step, ck.step
    epoch, done_in_epoch = pos.epoch or 0, pos.batch or 0
    epoch_rng = ck.tensors.epoch_rng
    if pos.metrics then metrics = pos.metrics end
    if es and x.early_stopping then
      es:load_state_dict(x.early_stopping)
      if ck.tensors.best_state then es.best_state = ck.tensors.best_state end
    end
    if logger and x.logger then logger:load_state_dict(x.logger) end
    if user_state and x.state then
      for k in pairs(user_state) do user_state[k] = nil end
      for k, v in pairs(x.state) do user_state[k] = v end
    end
    if loader then
      if epoch > 0 and done_in_epoch < per_epoch then
        -- Redraw this epoch's order from the RNG state it came from, skip what was done.
        if not epoch_rng then
          error(("ft.train.loop: checkpoint '%s' lacks the epoch's RNG state"):format(opts.checkpoint), 2)
        end
        local now = ft.get_rng_state()
        ft.set_rng_state(epoch_rng)
        loader.epoch = epoch - 1
        it = epoch_batches()
        for _ = 1, done_in_epoch do it() end
        ft.set_rng_state(now)
      else
        loader.epoch = epoch
      end
    end
    if logger then logger:log("resumed from %s at step %d", opts.checkpoint, step) end
  end

  local function save()
    local extra = {
      loop = {epoch = epoch, batch = done_in_epoch, total = total, metrics = json_safe(metrics)},
      logger = logger and logger:state_dict() or nil,
      early_stopping = es and es:state_dict() or nil,
      state = user_state,
    }
    checkpoint.save(opts.checkpoint, {model = opts.model, optimizer = opts.optimizer,
      scheduler = opts.scheduler, step = step, epoch = epoch, extra = extra,
      tensors = {epoch_rng = epoch_rng, best_state = es and es.best_state or nil}})
  end

  local stopped = (es and es.stopped) and "early_stopping" or nil
  while not stopped and step < total do
    local batch
    if loader then
      if not it or done_in_epoch >= per_epoch then
        epoch_rng = ft.get_rng_state()
        it = epoch_batches()
        epoch, done_in_epoch = loader.epoch, 0
      end
      batch = it()
      if batch == nil then
        error(("ft.train.loop: the loader ended after %d batches of epoch %d but reports %d per epoch")
              :format(done_in_epoch, epoch, per_epoch), 2)
      end
      done_in_epoch = done_in_epoch + 1
    else
      batch = opts.next_batch(step + 1)
    end
    step = step + 1

    local lr = opts.optimizer and opts.optimizer.param_groups[1].lr   -- the rate this step uses
    local m, items = step_metrics(opts.step(batch, step), step)
    if logger then
      if loader then m.epoch = epoch end
      if m.lr == nil then m.lr = lr end
      logger:step(step, m, items or batch_items(batch))
    end

    local last = step == total
    if opts.evaluate and ((eval_every and step % eval_every == 0) or last) then
      local rng = ft.get_rng_state()
      metrics = opts.evaluate(step)
      ft.set_rng_state(rng)
      if type(metrics) ~= "table" then
        error(("ft.train.loop: evaluate returned a %s at step %d; expected a table of metrics")
              :format(type(metrics), step), 2)
      end
      if logger then logger:record(step, metrics) end
      if es then
        local _, stop = es:update(metrics, step)
        if stop then stopped = "early_stopping" end
      end
    end
    if not stopped and opts.stop_at and step >= opts.stop_at and not last then stopped = "stop_at" end
    if opts.checkpoint and ((opts.checkpoint_every and step % opts.checkpoint_every == 0) or last or stopped) then
      save()
    end
  end
  if logger and stopped == "early_stopping" then
    logger:log("early stopping at step %d: best %s %.6g at step %s", step, es.metric, es.best or 0 / 0,
      tostring(es.best_step))
  end
  return {step = step, epoch = epoch, metrics = metrics, stopped = stopped or "done", resumed_from = resumed_from}
end
