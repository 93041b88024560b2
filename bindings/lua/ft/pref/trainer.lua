-- ft.pref.trainer: training with the paired preference losses (DPO and its variants, IPO,
-- SimPO, ORPO) as TRL's DPOTrainer / CPOTrainer / ORPOTrainer run them: AdamW on the
-- trainable parameters (a LoRA policy's adapters), gradient accumulation, the reference from
-- the policy with its adapters disabled, a frozen reference model or log-probs computed once
-- beforehand (TRL's precompute_ref_log_probs), and TRL's metrics through ft.train's loop,
-- progress line and JSONL log. Its step / evaluate / fit skeleton (Trainer, trainer.class) is
-- also that of ft.pref.KTOTrainer and ft.pref.RewardTrainer: a trainer class brings its batch
-- check (read) and its loss, the skeleton the micro-batches, the update and the loop.
--
--   peft.lora(policy, {target = {"c_attn", "c_proj"}, r = 8})
--   local result = ft.pref.train_dpo(policy, batches, {beta = 0.1, lr = 5e-5, epochs = 1,
--     log_path = "run/metrics.jsonl"})              -- reference: the base (adapters off)
--   print(result.metrics.rewards_accuracies)
--
--   local store = ft.pref.precompute_reference(policy, batches)      -- once
--   store:save("run/reference.safetensors")
--   local store = ft.pref.load_reference("run/reference.safetensors")
--   ft.pref.train_dpo(policy, batches, {reference = store, steps = 100})
--
-- A batch is what ft.pref.data collates: {chosen_ids [B,T] int64 1-based, chosen_mask [B,T]
-- (1 on the completion's tokens), rejected_ids, rejected_mask, and optionally
-- chosen_attention_mask / rejected_attention_mask [B,T] (1 on real tokens)}; other fields are
-- ignored. Token t is scored by the logits at t - 1 (ft.pref.logps).
--
-- A reference store keeps, per example, the reference's summed log-probs of the chosen and
-- the rejected completion and the example's fingerprint (a 64-bit FNV-1a hash of its real
-- tokens and completion mask); batches find their rows by fingerprint, so the data may be
-- shuffled or batched differently from when the store was made. The store's dataset
-- fingerprint (the wrapping sum of the examples' hashes) and count tell whether it belongs to
-- a dataset.
--
-- Under mpirun the trainers are data-parallel (data_parallel = true, the default): every rank
-- runs the same script with the same batches, trains on its share of each batch's rows through
-- ft.dist.DataParallel, and the update, metrics and log equal one process's on the whole batch;
-- only rank 0 writes the log and checkpoints.
local ft = require "ft"
local nn = require "ft.nn"
local check = require "ft.check"
local fs = require "ft.fs"
local logps_mod = require "ft.pref.logps"
local inputs = require "ft.pref.inputs"
local losses = { dpo = require "ft.pref.dpo", simpo = require "ft.pref.simpo", orpo = require "ft.pref.orpo" }

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

-- ---- shared pieces (ft.pref.grpo_sampler uses them too) -------------------------------------

--- trainer.vocab_size(model) -> the number of tokens a language model scores: the rows of its
-- lm_head weight, else config.vocab_size; nil when it has neither (a plain function).
function M.vocab_size(model)
  if type(model) ~= "table" then return nil end
  local head = nn.is_module(model) and model.lm_head
  if nn.is_module(head) and ft.is_tensor(head.weight) and head.weight:dim() == 2 then
    return head.weight:size(1), "lm_head " .. shape_str(head.weight)
  end
  local c = model.config
  if type(c) == "table" and math.tointeger(c.vocab_size) then
    return math.tointeger(c.vocab_size), "config.vocab_size"
  end
  return nil
end

--- trainer.check_reference_model(where, policy, ref) -> ref: a frozen reference model for
-- policy: a model (callable) that is not the policy itself, whose vocabulary has the policy's
-- size (an error names both sizes otherwise).
function M.check_reference_model(where, policy, ref)
  check.func(where, "ref_model", ref)
  if rawequal(ref, policy) then
    error(where .. ": ref_model is the policy itself; pass a frozen copy (or no ref_model: a PEFT "
      .. "policy's reference is its base with the adapters disabled)", 0)
  end
  local pv, pwhat = M.vocab_size(policy)
  local rv, rwhat = M.vocab_size(ref)
  if pv and rv and pv ~= rv then
    error(("%s: ref_model's vocabulary has %d tokens (%s) but the policy's has %d (%s): the "
      .. "reference must share the policy's tokenizer"):format(where, rv, rwhat, pv, pwhat), 0)
  end
  return ref
end

--- trainer.has_adapters(model) -> true when ft.peft put an adapter on model.
function M.has_adapters(model)
  return type(model) == "table" and rawget(model, "_peft") ~= nil and #require("ft.peft").adapters(model) > 0
end

--- trainer.frozen(model, fn, ...) -> fn(...)'s results under ft.no_grad with model in eval
-- mode (its mode restored afterwards, also when fn fails): how a reference model runs.
function M.frozen(model, fn, ...)
  local was = type(model) == "table" and model.training
  if was then model:eval() end
  local res = table.pack(pcall(ft.no_grad, fn, ...))
  if was then model:train(true) end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

M.OPTIMIZER_OPTIONS = { "lr", "weight_decay", "betas", "eps", "optimizer", "scheduler", "max_grad_norm" }

--- trainer.optimizer_of(where, policy, opts [, defaults]) -> optimizer, scheduler, max_grad_norm:
-- opts.optimizer, or AdamW over policy's trainable parameters (requires_grad) with lr (default
-- defaults.lr, else 1e-6, TRL's), weight_decay (0), betas ({0.9, 0.999}), eps (1e-8).
-- opts.scheduler: a scheduler of that optimizer (with optimizer given) or a function(optimizer)
-- -> scheduler. max_grad_norm: the clipping norm (default 1.0, as TRL) or false for none.
-- defaults.frozen: the error when nothing is trainable (a hint for the policy by default).
function M.optimizer_of(where, policy, opts, defaults)
  defaults = defaults or {}
  local opt = opts.optimizer
  if opt ~= nil then
    if type(opt) ~= "table" or type(opt.step) ~= "function" or type(opt.param_groups) ~= "table" then
      check.fail(where, "optimizer", "an optimizer (ft.optim.*)", opt)
    end
    for _, k in ipairs { "lr", "weight_decay", "betas", "eps" } do
      if opts[k] ~= nil then
        error(("%s: %s is an AdamW setting; give it to the optimizer you pass, or drop optimizer"):format(where, k), 0)
      end
    end
  else
    local params = {}
    if type(policy) == "table" and type(policy.named_parameters) == "function" then
      for _, p in policy:named_parameters() do
        if p.requires_grad then params[#params + 1] = p end
      end
    end
    if #params == 0 then
      error(where .. ": " .. (defaults.frozen or "the policy has no trainable parameter (add an adapter with "
        .. "ft.peft.lora, or unfreeze its weights and pass ref_model)"), 0)
    end
    local lr = check.number(where, "lr", opts.lr, defaults.lr or 1e-6, { above = 0 })
    local wd = check.number(where, "weight_decay", opts.weight_decay, 0, { min = 0 })
    local eps = check.number(where, "eps", opts.eps, 1e-8, { above = 0 })
    local betas = opts.betas or { 0.9, 0.999 }
    if type(betas) ~= "table" or #betas ~= 2 then check.fail(where, "betas", "a pair {beta1, beta2}", betas) end
    for i = 1, 2 do check.number(where, ("betas[%d]"):format(i), betas[i], nil, { min = 0, below = 1 }) end
    opt = ft.optim.AdamW(params, { lr = lr, weight_decay = wd, eps = eps, betas = { betas[1], betas[2] } })
  end
  local sched = opts.scheduler
  if type(sched) == "function" then
    sched = sched(opt)
    if type(sched) ~= "table" or type(sched.step) ~= "function" then
      check.fail(where, "scheduler(optimizer)", "a scheduler (with a step method)", sched)
    end
  elseif sched ~= nil then
    if type(sched) ~= "table" or type(sched.step) ~= "function" then
      check.fail(where, "scheduler", "a scheduler or a function(optimizer) -> scheduler", sched)
    end
    if opts.optimizer == nil then
      error(where .. ": a scheduler steps the optimizer it was made for: pass that optimizer too, or "
        .. "scheduler = function(optimizer) return ... end", 0)
    end
  end
  local clip = opts.max_grad_norm
  if clip == false then clip = nil else clip = check.number(where, "max_grad_norm", clip, 1.0, { above = 0 }) end
  return opt, sched, clip
end

--- trainer.update(opt, sched, clip, fn) -> grad_norm (nil without clip): zero_grad, fn() (the
-- backward passes), then ft.train.finish_update (clipping to clip, opt:step(), sched:step()).
function M.update(opt, sched, clip, fn)
  opt:zero_grad()
  fn()
  local norm = require("ft.train.update").finish_update(opt, { clip = clip, scheduler = sched })
  if ft.is_tensor(norm) then norm = norm:item() end
  return norm
end

M.FIT_OPTIONS = { "steps", "epochs", "log_path", "log_every", "logger", "eval_batches", "eval_every",
  "checkpoint", "checkpoint_every", "resume", "stop_at" }

--- trainer.logger_of(where, opts, total, unit) -> an ft.train.Logger (or nil): opts.logger (an
-- ft.train.Logger, or false for none), else a new one writing opts.log_path (JSONL) with a
-- progress line every opts.log_every (10) steps; the second result is true when it was made
-- here (the caller closes it).
function M.logger_of(where, opts, total, unit)
  if opts.logger == false then return nil end
  if opts.logger ~= nil then
    if type(opts.logger) ~= "table" or type(opts.logger.step) ~= "function" then
      check.fail(where, "logger", "an ft.train.Logger or false", opts.logger)
    end
    if opts.log_path ~= nil or opts.log_every ~= nil then
      error(where .. ": log_path and log_every configure the logger made here; set them on the logger you pass", 0)
    end
    return opts.logger, false
  end
  local every = check.integer(where, "log_every", opts.log_every, 10, { min = 1 })
  if opts.log_path ~= nil then check.string(where, "log_path", opts.log_path) end
  return require("ft.train.log").Logger { path = opts.log_path, total = total, every = every, unit = unit }, true
end

-- ---- batches ---------------------------------------------------------------------------------

--- trainer.unwrap(batch) -> the batch itself: ft.train.loop hands a loader's batch over as
-- {x = batch}, and a pref batch (pairs or unpaired) is a table itself.
function M.unwrap(batch)
  if type(batch) == "table" and batch.chosen_ids == nil and batch.ids == nil and type(batch.x) == "table"
      and not ft.is_tensor(batch.x) then
    return batch.x
  end
  return batch
end
local unwrap = M.unwrap

--- trainer.read_batch(where, batch) -> the batch checked: {chosen_ids, chosen_mask, rejected_ids,
-- rejected_mask, chosen_attention_mask, rejected_attention_mask (or nil), size = B}. ids int64
-- [B, T] (a side's T may differ from the other's), masks of their ids' shape; an error names the
-- field and the shapes.
function M.read_batch(where, batch)
  batch = unwrap(batch)
  if type(batch) ~= "table" or ft.is_tensor(batch) then
    check.fail(where, "batch", "a table {chosen_ids =, chosen_mask =, rejected_ids =, rejected_mask =}", batch)
  end
  if batch.chosen_ids == nil and batch.ids ~= nil then
    error(where .. ": batch is unpaired (ids, mask, labels: ft.pref.collate_unpaired) but this takes pairs "
      .. "(batch.chosen_ids, batch.rejected_ids: ft.pref.load_pairs and ft.pref.batches); unpaired examples "
      .. "train with ft.pref.KTOTrainer", 0)
  end
  local out = {}
  for _, side in ipairs { "chosen", "rejected" } do
    local ids = batch[side .. "_ids"]
    if ids == nil then error(("%s: batch.%s_ids is required"):format(where, side), 0) end
    if not ft.is_tensor(ids) or ids:dtype() ~= "int64" or ids:dim() ~= 2 then
      error(("%s: batch.%s_ids must be an int64 tensor [batch, seq] of 1-based token ids, got %s"):format(where,
        side, ft.is_tensor(ids) and (ids:dtype() .. " " .. shape_str(ids)) or check.show(ids)), 0)
    end
    for _, suffix in ipairs { "_mask", "_attention_mask" } do
      local name = side .. suffix
      local m = batch[name]
      if m == nil and suffix == "_mask" then error(("%s: batch.%s is required"):format(where, name), 0) end
      if m ~= nil and (not ft.is_tensor(m) or m:dim() ~= 2 or m:size(1) ~= ids:size(1) or m:size(2) ~= ids:size(2)) then
        error(("%s: batch.%s is %s but batch.%s_ids is %s: one 0/1 entry per token"):format(where, name,
          ft.is_tensor(m) and shape_str(m) or check.show(m), side, shape_str(ids)), 0)
      end
      out[name] = m
    end
    out[side .. "_ids"] = ids
  end
  if out.rejected_ids:size(1) ~= out.chosen_ids:size(1) then
    error(("%s: batch.rejected_ids is %s but batch.chosen_ids is %s: one row per pair"):format(where,
      shape_str(out.rejected_ids), shape_str(out.chosen_ids)), 0)
  end
  out.size = out.chosen_ids:size(1)
  return out
end

--- trainer.split_rows(batch, k, where [, unit]) -> parts, sizes: a checked batch (every tensor
-- field one row per example, size = B) cut along its rows into k nearly equal micro-batches
-- (views), for gradient accumulation; unit ("pairs") names the rows in the error when k > B.
function M.split_rows(batch, k, where, unit)
  local n = batch.size
  if k > n then
    error(("%s: gradient_accumulation_steps = %d exceeds the batch's %d %s"):format(where, k, n, unit or "pairs"), 0)
  end
  local parts, sizes, start = {}, {}, 1
  for i = 1, k do
    local len = n // k + (i <= n % k and 1 or 0)
    local part = { size = len }
    for f, v in pairs(batch) do
      if ft.is_tensor(v) then part[f] = v:narrow(1, start, len) end
    end
    parts[i], sizes[i] = part, len
    start = start + len
  end
  return parts, sizes
end

-- Iterator over the batches of a source: an array of batches, a loader (iter() yielding
-- batches) or a function returning batches until nil.
local function each_batch(where, source)
  if type(source) == "function" then return source end
  if type(source) == "table" and type(source.iter) == "function" then
    local it = source:iter()
    return function() return (it()) end
  end
  if type(source) == "table" and not ft.is_tensor(source) then
    if source[1] == nil then error(where .. ": batches is an empty array", 0) end
    local i = 0
    return function()
      i = i + 1
      return source[i]
    end
  end
  check.fail(where, "batches", "an array of batches, a loader or a function returning batches", source)
end

-- ---- fingerprints ----------------------------------------------------------------------------

local FNV_OFFSET, FNV_PRIME = -3750763034362895579, 1099511628211   -- 0xcbf29ce484222325, 64-bit FNV-1a

-- One side of an example into the hash: its real tokens (attention_mask 1; without one, up to
-- its last completion token) and which of them are the completion.
local function hash_side(h, ids, mask, att)
  local last = #ids
  if att == nil then
    last = 0
    for t = #mask, 1, -1 do
      if mask[t] ~= 0 then last = t break end
    end
  end
  for t = 1, last do
    if att == nil or att[t] ~= 0 then
      h = (h ~ (ids[t] * 2 + (mask[t] ~= 0 and 1 or 0))) * FNV_PRIME
    end
  end
  return (h ~ 0x2f) * FNV_PRIME   -- end of the side
end

--- trainer.fingerprints(batch) -> array of B integers: each pair's fingerprint (64-bit FNV-1a
-- of its chosen and rejected real tokens and completion masks), independent of the padding and
-- of the batch it is in. batch: checked (read_batch).
function M.fingerprints(batch)
  local cids, cm = batch.chosen_ids:totable(), batch.chosen_mask:totable()
  local rids, rm = batch.rejected_ids:totable(), batch.rejected_mask:totable()
  local ca = batch.chosen_attention_mask and batch.chosen_attention_mask:totable()
  local ra = batch.rejected_attention_mask and batch.rejected_attention_mask:totable()
  local out = {}
  for b = 1, #cids do
    local h = hash_side(FNV_OFFSET, cids[b], cm[b], ca and ca[b])
    out[b] = hash_side(h, rids[b], rm[b], ra and ra[b])
  end
  return out
end

local function hex(h) return ("%016x"):format(h) end

-- ---- the reference store ---------------------------------------------------------------------

local FORMAT, VERSION = "ftlua.pref.reference", "1"

local Store = {}
Store.__index = Store
--- ReferenceStore: the reference's log-probs of a dataset's examples (ft.pref.precompute_reference,
-- ft.pref.load_reference). Fields: chosen, rejected (float32 [N] summed log-probs), index
-- (int64 [N] example fingerprints), count (N), fingerprint (the dataset's, 16 hex digits),
-- source ("adapters disabled" or "reference model"), vocab_size (of the reference, or nil).
M.ReferenceStore = Store

local function new_store(chosen, rejected, index, info)
  local keys = index:totable()
  local sum, lookup = 0, {}
  for i, h in ipairs(keys) do
    sum = sum + h
    if lookup[h] == nil then lookup[h] = i end
  end
  return setmetatable({
    chosen = chosen, rejected = rejected, index = index, count = #keys, fingerprint = hex(sum),
    source = info.source, vocab_size = info.vocab_size, _lookup = lookup,
    _chosen = chosen:totable(), _rejected = rejected:totable(),
  }, Store)
end

--- store:lookup(batch [, where]) -> ref_chosen [B], ref_rejected [B] (float32, no graph): the
-- stored reference log-probs of a batch's pairs, found by fingerprint. A pair the store lacks
-- is an error naming its row, its fingerprint and the store's count and fingerprint.
function Store:lookup(batch, where)
  where = where or "ft.pref.ReferenceStore:lookup"
  batch = batch.size and batch or M.read_batch(where, batch)
  local rc, rr = {}, {}
  for b, h in ipairs(M.fingerprints(batch)) do
    local i = self._lookup[h]
    if i == nil then
      error(("%s: pair %d of the batch (fingerprint %s) is not in the reference store (%d examples, "
        .. "dataset fingerprint %s): the store was computed for other data; recompute it with "
        .. "ft.pref.precompute_reference"):format(where, b, hex(h), self.count, self.fingerprint), 0)
    end
    rc[b], rr[b] = self._chosen[i], self._rejected[i]
  end
  return ft.tensor(rc), ft.tensor(rr)
end

--- store:check(batches [, where]) -> true: batches (an array, a loader or a function, as
-- precompute_reference takes) hold exactly the store's examples: the same count and the same
-- dataset fingerprint; otherwise an error names both counts and fingerprints.
function Store:check(batches, where)
  where = where or "ft.pref.ReferenceStore:check"
  local n, sum = 0, 0
  for batch in each_batch(where, batches) do
    for _, h in ipairs(M.fingerprints(M.read_batch(where, batch))) do
      n, sum = n + 1, sum + h
    end
  end
  if n ~= self.count or hex(sum) ~= self.fingerprint then
    error(("%s: the reference store holds %d examples (fingerprint %s) but the data has %d (fingerprint "
      .. "%s)%s: it was computed for other data; recompute it with ft.pref.precompute_reference"):format(where,
      self.count, self.fingerprint, n, hex(sum), n == self.count and ", the same count with other token ids" or ""), 0)
  end
  return true
end

--- store:save(path) -> path: writes the store as safetensors (tensors chosen, rejected F32 [N],
-- index I64 [N]; metadata format, version, count, fingerprint, source, vocab_size), atomically.
function Store:save(path)
  local where = "ft.pref.ReferenceStore:save"
  check.string(where, "path", check.required(where, "path", path))
  fs.mkdir_for(path, where)
  local meta = { format = FORMAT, version = VERSION, count = tostring(self.count), fingerprint = self.fingerprint,
    source = self.source or "" }
  if self.vocab_size then meta.vocab_size = tostring(self.vocab_size) end
  local ok, err = pcall(ft.safetensors.save, path, { chosen = self.chosen, rejected = self.rejected,
    index = self.index }, { metadata = meta })
  if not ok then error(("%s: cannot write '%s': %s"):format(where, path, tostring(err)), 0) end
  return path
end

function Store:__tostring()
  return ("ReferenceStore(%d examples, fingerprint %s, %s)"):format(self.count, self.fingerprint,
    self.source or "?")
end

--- ft.pref.precompute_reference(model, batches [, {disable_adapters = true}]) -> store: the
-- reference log-probs of every pair of batches, computed once (TRL's precompute_ref_log_probs),
-- in eval mode without a graph. model: the policy with adapters (its base, adapters disabled,
-- is the reference; disable_adapters = false keeps them on) or a frozen reference model.
-- batches: an array of batches, a loader yielding batches, or a function returning batches until
-- nil (see the module's header for a batch). The result is a ReferenceStore (store:save(path),
-- store:lookup(batch)); train_dpo takes it as reference.
function M.precompute_reference(model, batches, opts)
  local where = "ft.pref.precompute_reference"
  opts = ft.check_options(where, opts, { "disable_adapters" })
  local disable = check.boolean(where, "disable_adapters", opts.disable_adapters, true)
  check.func(where, "model", check.required(where, "model", model))
  check.required(where, "batches", batches)
  local adapters = disable and M.has_adapters(model)
  local chosen, rejected, index = {}, {}, {}
  for batch in each_batch(where, batches) do
    local b = M.read_batch(where, batch)
    local rc, rr
    if adapters then
      rc = logps_mod.reference_logps(model, b.chosen_ids, b.chosen_mask, { attention_mask = b.chosen_attention_mask })
      rr = logps_mod.reference_logps(model, b.rejected_ids, b.rejected_mask,
        { attention_mask = b.rejected_attention_mask })
    else
      rc = logps_mod.reference_logps(model, b.chosen_ids, b.chosen_mask,
        { attention_mask = b.chosen_attention_mask, reference_model = model })
      rr = logps_mod.reference_logps(model, b.rejected_ids, b.rejected_mask,
        { attention_mask = b.rejected_attention_mask, reference_model = model })
    end
    for _, v in ipairs(rc:totable()) do chosen[#chosen + 1] = v end
    for _, v in ipairs(rr:totable()) do rejected[#rejected + 1] = v end
    for _, h in ipairs(M.fingerprints(b)) do index[#index + 1] = h end
  end
  if #index == 0 then error(where .. ": batches yielded no pair", 0) end
  return new_store(ft.tensor(chosen), ft.tensor(rejected), ft.tensor(index, { dtype = "int64" }),
    { source = adapters and "adapters disabled" or "reference model", vocab_size = (M.vocab_size(model)) })
end

--- ft.pref.load_reference(path [, {batches =}]) -> store: a ReferenceStore written by
-- store:save. With batches, checks at once that they are the store's dataset (store:check).
-- A file that is not a store, or whose tensors disagree with its count, is an error.
function M.load_reference(path, opts)
  local where = "ft.pref.load_reference"
  opts = ft.check_options(where, opts, { "batches" })
  check.string(where, "path", check.required(where, "path", path))
  if not fs.exists(path) then error(("%s: no file '%s'"):format(where, path), 0) end
  local ok, t, meta = pcall(ft.safetensors.load, path)
  if not ok then error(("%s: cannot read '%s': %s"):format(where, path, tostring(t)), 0) end
  meta = meta or {}
  if meta.format ~= FORMAT then
    error(("%s: '%s' is not a reference store (written by store:save of ft.pref.precompute_reference)"):format(
      where, path), 0)
  end
  if meta.version ~= VERSION then
    error(("%s: '%s' has store version %s; this ftlua reads version %s"):format(where, path,
      tostring(meta.version), VERSION), 0)
  end
  local n = math.tointeger(tonumber(meta.count))
  for _, name in ipairs { "chosen", "rejected", "index" } do
    local v = t[name]
    if not ft.is_tensor(v) or v:dim() ~= 1 or v:size(1) ~= n then
      error(("%s: '%s' holds %s %s but its count is %s"):format(where, path, name,
        ft.is_tensor(v) and shape_str(v) or "nothing", tostring(meta.count)), 0)
    end
  end
  local store = new_store(t.chosen:float(), t.rejected:float(), t.index,
    { source = meta.source, vocab_size = math.tointeger(tonumber(meta.vocab_size or "")) })
  if store.fingerprint ~= meta.fingerprint then
    error(("%s: '%s' is damaged: its index sums to fingerprint %s, its metadata says %s"):format(where, path,
      store.fingerprint, tostring(meta.fingerprint)), 0)
  end
  if opts.batches ~= nil then store:check(opts.batches, where) end
  return store
end

-- ---- the trainer skeleton (DPOTrainer, KTOTrainer, RewardTrainer) ----------------------------

local Trainer = {}
Trainer.__index = Trainer
--- Trainer: what ft.pref's trainers share: step, evaluate and fit around a trainer's own batch
-- check and loss (DPOTrainer, ft.pref.KTOTrainer, ft.pref.RewardTrainer are made by
-- trainer.class). A class supplies read(batch) -> the checked batch (size = its rows; every tensor
-- field one row per example, so that split_rows can cut it), loss(part, context) -> loss,
-- metrics [, weights] (weights[name]: how many examples metric name averages, e.g. the desirable
-- ones; default the part's rows), and may supply prepare(batch) -> context (once per batch,
-- before the cut into micro-batches), finish(metrics) (metrics derived after averaging),
-- check_data(data) (before fit) and REDUCE (name -> "min", "max" or "sum" instead of the
-- weighted mean). An instance holds where, model (what trains), net and shared
-- (trainer.data_parallel's), optimizer, scheduler, max_grad_norm, accumulation (micro-batches
-- per step), history; the class holds unit ("pairs" or "examples": what a row is, in the
-- metrics, the errors and the progress line).
M.Trainer = Trainer

--- trainer.class(unit) -> a new trainer class whose instances have Trainer's step, evaluate and
-- fit; unit: "pairs" or "examples".
function M.class(unit)
  local C = setmetatable({ unit = unit, REDUCE = {} }, { __index = Trainer })
  C.__index = C
  return C
end

--- trainer:prepare(batch) -> nil: what a class computes once per checked batch before it is cut
-- into micro-batches (the default: nothing).
function Trainer:prepare() return nil end

--- trainer:sum_across(values) -> each number of values (an array) summed over the ranks when the
-- trainer shares its batches between them, else values' own (as multiple results): the whole
-- batch's totals of what each rank counted on its share. Every rank must call it alike.
function Trainer:sum_across(values)
  if not self.shared or self._alone then return table.unpack(values) end
  return table.unpack(ft.dist.all_reduce(ft.tensor(values, { dtype = "float64" })):totable())
end

--- trainer:mean_across(t) -> the mean of t's entries over the rows of every rank (a number) when
-- the trainer shares its batches between ranks, else t itself: what a class's batch statistic
-- (KTO's KL point) takes so that it is the whole batch's. Every rank must call it alike.
function Trainer:mean_across(t)
  if not self.shared or self._alone then return t end
  local sum, n = self:sum_across({ t:sum():item(), t:numel() })
  return sum / n
end

--- trainer:finish(metrics) -> nothing: metrics derived from the averaged ones (the default: none).
function Trainer:finish() end

--- trainer:check_data(data) -> nothing: checks fit's data before training (the default: none).
function Trainer:check_data() end

-- Metrics averaged over parts: the weighted mean of each number (weights[k], else w), or its
-- min, max or sum as reduce says. A mean whose weight is 0 (no example it averages) is kept
-- with weight 0, so that every rank holds the same names, and left out of the result.
local function new_acc() return { sum = {}, weight = {} } end

local function accumulate(acc, reduce, m, w, weights)
  for k, v in pairs(m) do
    if type(v) == "number" then
      local how = reduce[k]
      if how == "min" then acc.sum[k] = math.min(acc.sum[k] or v, v)
      elseif how == "max" then acc.sum[k] = math.max(acc.sum[k] or v, v)
      elseif how == "sum" then acc.sum[k] = (acc.sum[k] or 0) + v
      else
        local wk = weights and weights[k] or w
        acc.sum[k] = (acc.sum[k] or 0) + (wk > 0 and v * wk or 0)
        acc.weight[k] = (acc.weight[k] or 0) + wk
      end
    end
  end
end

local function averaged(acc)
  local out = {}
  for k, v in pairs(acc.sum) do
    local w = acc.weight[k]
    if w == nil then out[k] = v elseif w > 0 then out[k] = v / w end
  end
  return out
end

-- The metrics of every rank's parts together (a shared trainer): the names are rank 0's (it
-- holds a row of every batch), sums and weights added, mins and maxes taken over the ranks.
local function across_ranks(acc, reduce)
  local dist = ft.dist
  local names = {}
  for k in pairs(acc.sum) do names[#names + 1] = k end
  table.sort(names)
  names = dist.broadcast_value(names, 0)
  local by_op = { sum = {}, max = {}, min = {} }
  for _, k in ipairs(names) do
    local how = reduce[k]
    local op = (how == "min" or how == "max") and how or "sum"
    local list = by_op[op]
    list[#list + 1] = k
  end
  local out = new_acc()
  for _, op in ipairs { "sum", "max", "min" } do   -- the same order on every rank
    local list = by_op[op]
    if #list > 0 then
      local none = op == "max" and -math.huge or op == "min" and math.huge or 0
      local vals = {}
      for _, k in ipairs(list) do
        vals[#vals + 1] = acc.sum[k] or none
        if op == "sum" then vals[#vals + 1] = acc.weight[k] or 0 end
      end
      local total = dist.all_reduce(ft.tensor(vals, { dtype = "float64" }), { op = op }):totable()
      for i, k in ipairs(list) do
        if op == "sum" then
          out.sum[k] = total[2 * i - 1]
          if reduce[k] ~= "sum" then out.weight[k] = total[2 * i] end
        elseif total[i] ~= none then
          out.sum[k] = total[i]
        end
      end
    end
  end
  return out
end

--- trainer.data_parallel(where, model, flag) -> net, shared: how a trainer's model trains
-- across ranks. With flag (default true) under mpirun (ft.dist.world_size() > 1), net is
-- ft.dist.DataParallel(model) and shared is true: every rank is handed the same batches and
-- trains on its share of each one's rows (see Trainer:step); otherwise net is model itself.
function M.data_parallel(where, model, flag)
  flag = check.boolean(where, "data_parallel", flag, true)
  if flag and ft.dist.world_size() > 1 then return ft.dist.DataParallel(model), true end
  return model, false
end

-- This rank's rows of a checked batch (ft.dist.shard's strided share), with size = their count.
local function my_rows(where, b, unit)
  local world = ft.dist.world_size()
  if b.size < world then
    error(("%s: a batch of %d %s leaves some of the %d ranks nothing: each rank trains on its share of every "
      .. "batch, so give at least %d per batch (or data_parallel = false)"):format(where, b.size, unit, world,
      world), 0)
  end
  local mine, n = ft.dist.shard(b)
  mine.size = n
  return mine
end

local function set_train(model)
  if type(model) == "table" and type(model.train) == "function" then model:train() end
end

--- trainer:step(batch) -> metrics: one optimizer update on a batch, cut into
-- gradient_accumulation_steps micro-batches (one backward each, each loss weighted by its share
-- of the batch's rows, so that the update is the whole batch's): the class's metrics averaged
-- over the batch, loss, grad_norm (before clipping, nil without clipping) and the batch's rows
-- under the class's unit (pairs = B, or examples = B). Also appended to trainer.history.
-- Shared between ranks (mpirun, data_parallel), every rank is handed the same batch and takes
-- its rows (ft.dist.shard's), cuts them into the micro-batches and weighs each by world size x
-- its share of the batch's rows, since DataParallel averages the gradients: the update and
-- the metrics (summed over the ranks) are those of one process on the whole batch.
function Trainer:step(batch)
  local b = self:read(batch)
  local rows = b.size
  local world = self.shared and ft.dist.world_size() or 1
  if self.shared then b = my_rows(self.where, b, self.unit) end
  local context = self:prepare(b)
  local parts, sizes = M.split_rows(b, self.accumulation, self.where,
    self.shared and (self.unit .. " of this rank's share") or self.unit)
  local acc = new_acc()
  set_train(self.model)
  local norm = M.update(self.optimizer, self.scheduler, self.max_grad_norm, function()
    for i, part in ipairs(parts) do
      local function run()
        local loss, m, weights = self:loss(part, context)
        m.loss = loss:item()
        accumulate(acc, self.REDUCE, m, sizes[i], weights)
        -- DataParallel averages over the ranks: world * (share of the batch) sums to the batch's
        ;(loss * (world * sizes[i] / rows)):backward()
      end
      if self.shared and i < #parts then self.net:no_sync(run) else run() end
    end
  end)
  if self.shared then acc = across_ranks(acc, self.REDUCE) end
  local out = averaged(acc)
  self:finish(out)
  out.grad_norm = norm
  out[self.unit] = rows
  self.history[#self.history + 1] = out
  return out
end

--- trainer:evaluate(batches) -> metrics: the step's metrics (without grad_norm) averaged over
-- every row of batches (an array, a loader or a function), each batch whole, in eval mode without
-- a graph and without an update; the class's unit (pairs or examples) = how many rows. Shared
-- between ranks, each evaluates its rows of every batch (a batch smaller than the world: rank
-- 0 alone) and the metrics are summed over the ranks.
function Trainer:evaluate(batches)
  local acc, n = new_acc(), 0
  local model = self.model
  local module = type(model) == "table" and type(model.eval) == "function"
  local was = module and model.training
  if module then model:eval() end
  local ok, err = pcall(ft.no_grad, function()
    for batch in each_batch(self.where, batches) do
      local b = self:read(batch)
      n = n + b.size
      -- shared: each rank its share; a batch smaller than the world is rank 0's alone
      local alone = self.shared and b.size < ft.dist.world_size()
      if self.shared and not alone then b = my_rows(self.where, b, self.unit) end
      if not alone or ft.dist.is_main() then
        self._alone = alone
        local loss, m, weights = self:loss(b, self:prepare(b))
        self._alone = nil
        m.loss = loss:item()
        accumulate(acc, self.REDUCE, m, b.size, weights)
      end
    end
  end)
  self._alone = nil
  if module then model:train(was) end
  if not ok then error(err, 0) end
  if self.shared then acc = across_ranks(acc, self.REDUCE) end
  if n == 0 then error(("%s: evaluate's batches yielded no %s"):format(self.where, self.unit), 0) end
  local out = averaged(acc)
  self:finish(out)
  out[self.unit] = n
  return out
end

local function is_array(v) return type(v) == "table" and not ft.is_tensor(v) and type(v.iter) ~= "function" end

--- trainer:fit(data [, opts]) -> {step =, epoch =, stopped =, metrics = last evaluation,
-- last = the last step's metrics, history = trainer.history, resumed_from =}: ft.train.loop over
-- data (an array of batches, a loader, or an iterator function such as ft.pref.batches', whose
-- batches are gathered first and reused every epoch), trainer:step on each. opts: steps or
-- epochs (default epochs = 1); log_path (JSONL, one line per step), log_every (10: the progress
-- line), logger (an ft.train.Logger, or false: no output); eval_batches, eval_every (metrics
-- logged as eval_<name>); checkpoint, checkpoint_every, resume, stop_at (as ft.train.loop:
-- the trained model and the optimizer). DPOTrainer with a reference store and an array of
-- batches checks the data against the store first (count and fingerprint).
function Trainer:fit(data, opts)
  local where = self.where
  opts = ft.check_options(where, opts, M.FIT_OPTIONS)
  check.required(where, "data", data)
  local steps = check.integer(where, "steps", opts.steps, nil, { min = 1 })
  local epochs = check.integer(where, "epochs", opts.epochs, nil, { min = 1 })
  if steps and epochs then error(where .. ": give steps or epochs, not both", 0) end
  local loop_opts = { model = self.model, optimizer = self.optimizer, scheduler = self.scheduler,
    checkpoint = opts.checkpoint, checkpoint_every = opts.checkpoint_every, resume = opts.resume,
    stop_at = opts.stop_at }
  if type(data) == "function" then   -- an iterator (ft.pref.batches): its batches, kept for every epoch
    local list = {}
    for batch in data do list[#list + 1] = batch end
    if #list == 0 then error(where .. ": data (an iterator) yielded no batch", 0) end
    data = list
  end
  if type(data) == "table" and not ft.is_tensor(data) then
    if data.chosen_ids ~= nil or data.ids ~= nil then
      error(where .. ": data is one batch; pass an array of batches (or a loader)", 0)
    end
    if is_array(data) and data[1] == nil then error(where .. ": data is an empty array of batches", 0) end
    loop_opts.loader = data
    if not steps then epochs = epochs or 1 end
  else
    check.fail(where, "data", "an array of batches, a loader or an iterator of batches", data)
  end
  if is_array(data) then self:check_data(data) end
  local total = steps or epochs * #data
  loop_opts.steps, loop_opts.epochs = steps, epochs
  local logger, own = M.logger_of(where, opts, total, self.unit)
  loop_opts.logger = logger
  if opts.eval_batches ~= nil then
    local eval_batches = opts.eval_batches
    loop_opts.eval_every = check.integer(where, "eval_every", opts.eval_every, nil, { min = 1 })
    loop_opts.evaluate = function()
      local m, out = self:evaluate(eval_batches), {}
      for k, v in pairs(m) do out["eval_" .. k] = v end
      return out
    end
  elseif opts.eval_every ~= nil then
    error(where .. ": eval_every needs eval_batches", 0)
  end
  local last
  local unit = self.unit
  loop_opts.step = function(batch)
    last = self:step(batch)
    local m = {}
    for k, v in pairs(last) do m[k] = v end
    m.items = m[unit]
    return m
  end
  local ok, res = pcall(require "ft.train.loop", loop_opts)
  if own and logger then logger:close() end
  if not ok then error(res, 0) end
  res.last, res.history = last, self.history
  return res
end

--- trainer.train_with(where, new, options, model, data, opts) -> result, trainer: what
-- train_dpo, train_kto and train_reward do: opts checked against options (the trainer's keys)
-- and M.FIT_OPTIONS together, new(where, model, trainer_opts) -> trainer, then
-- trainer:fit(data, fit_opts).
function M.train_with(where, new, options, model, data, opts)
  local all = {}
  for _, k in ipairs(options) do all[#all + 1] = k end
  for _, k in ipairs(M.FIT_OPTIONS) do all[#all + 1] = k end
  opts = ft.check_options(where, opts, all)
  local topts, fopts = {}, {}
  for _, k in ipairs(options) do topts[k] = opts[k] end
  for _, k in ipairs(M.FIT_OPTIONS) do fopts[k] = opts[k] end
  local trainer = new(where, model, topts)
  return trainer:fit(data, fopts), trainer
end

-- ---- the live reference (DPO, KTO) ----------------------------------------------------------

--- trainer.live_reference(where, policy, ref_model [, or_else]) -> kind, ref: the reference of a
-- policy that is computed as training goes: "model" and ref_model (checked:
-- check_reference_model) when one is given, else "adapters" (the policy with its adapters
-- disabled; an error when it has none, naming ref_model and or_else, the other choices).
function M.live_reference(where, policy, ref_model, or_else)
  if ref_model ~= nil then return "model", M.check_reference_model(where, policy, ref_model) end
  if not M.has_adapters(policy) then
    error(where .. ": the policy has no adapter, so it cannot be its own reference: pass ref_model (a "
      .. "frozen copy of the starting model)" .. (or_else and " or " .. or_else or ""), 0)
  end
  return "adapters", nil
end

--- trainer.live_reference_logps(policy, ref_model, ids, mask, attention_mask) -> logps [B] (no
-- graph): ft.pref.reference_logps by ref_model (a frozen model), or, when it is nil, by the
-- policy with its adapters disabled.
function M.live_reference_logps(policy, ref_model, ids, mask, att)
  return (logps_mod.reference_logps(policy, ids, mask, { attention_mask = att, reference_model = ref_model }))
end

--- trainer.disable_dropout(...) -> nothing: ft.pref.disable_dropout on each argument that is a
-- module (nil ones skipped), as TRL's trainers do by default.
function M.disable_dropout(...)
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if type(m) == "table" and type(m.named_modules) == "function" then logps_mod.disable_dropout(m) end
  end
end

-- ---- the DPO-family trainer ------------------------------------------------------------------

local LOSS_TYPES = { "sigmoid", "dpo", "robust", "hinge", "ipo", "simpo", "orpo" }
local REFERENCE_FREE = { simpo = true, orpo = true }
local DEFAULT_BETA = { simpo = 2.0 }

local TRAINER_OPTIONS = { "loss_type", "beta", "label_smoothing", "gamma", "cpo_alpha", "ref_model", "reference",
  "gradient_accumulation_steps", "disable_dropout", "data_parallel" }
for _, k in ipairs(M.OPTIMIZER_OPTIONS) do TRAINER_OPTIONS[#TRAINER_OPTIONS + 1] = k end

local DPOTrainer = M.class("pairs")
--- DPOTrainer: one object per run of a paired preference loss; ft.pref.DPOTrainer(policy, opts)
-- makes one (ft.pref.train_dpo makes one and runs fit). opts: loss_type ("sigmoid" = "dpo",
-- "robust", "hinge", "ipo": ft.pref.dpo_loss; "simpo": ft.pref.simpo_loss; "orpo":
-- ft.pref.orpo_loss), beta (> 0; 0.1, 2.0 for simpo), label_smoothing (sigmoid, robust, simpo),
-- gamma and cpo_alpha (simpo); the reference (not for simpo and orpo): ref_model (a frozen
-- model, same vocabulary), reference (a ReferenceStore) or, by default, the policy with its
-- adapters disabled; the optimizer: lr, weight_decay, betas, eps (AdamW over the trainable
-- parameters) or optimizer, scheduler, max_grad_norm (1.0; false: none);
-- gradient_accumulation_steps (1: each batch is cut into that many micro-batches, one backward
-- each, one update per batch); disable_dropout (true, as TRL: sets every Dropout of the policy
-- and ref_model to p = 0); data_parallel (true: under mpirun the ranks share every batch, see
-- Trainer:step). step, evaluate and fit are Trainer's (unit "pairs"). Fields: policy (= model),
-- net (what runs the policy's forward: ft.dist.DataParallel(policy) when shared), optimizer,
-- scheduler, reference_kind ("adapters", "model", "store" or "none"), history (the metrics of
-- every step).
M.DPOTrainerClass = DPOTrainer

local function new_dpo(where, policy, opts)
  opts = ft.check_options(where, opts, TRAINER_OPTIONS)
  check.func(where, "policy", check.required(where, "policy", policy))
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "sigmoid", LOSS_TYPES)
  if loss_type == "dpo" then loss_type = "sigmoid" end
  local beta = inputs.beta(where, opts.beta, DEFAULT_BETA[loss_type] or 0.1)
  local function only(key, types, text)
    if opts[key] ~= nil and not types[loss_type] then
      error(("%s: %s applies to loss_type %s, not '%s'"):format(where, key, text, loss_type), 0)
    end
  end
  only("label_smoothing", { sigmoid = true, robust = true, simpo = true }, "'sigmoid', 'robust' or 'simpo'")
  only("gamma", { simpo = true }, "'simpo'")
  only("cpo_alpha", { simpo = true }, "'simpo'")
  local e = inputs.label_smoothing(where, opts.label_smoothing)
  local gamma = check.number(where, "gamma", opts.gamma, nil, { min = 0 })
  local cpo_alpha = check.number(where, "cpo_alpha", opts.cpo_alpha, nil, { min = 0 })
  local accum = check.integer(where, "gradient_accumulation_steps", opts.gradient_accumulation_steps, 1, { min = 1 })
  local disable = check.boolean(where, "disable_dropout", opts.disable_dropout, true)

  local kind, ref, store
  if opts.ref_model ~= nil and opts.reference ~= nil then
    error(where .. ": give one reference: ref_model (a frozen model) or reference (a precomputed store)", 0)
  end
  if REFERENCE_FREE[loss_type] then
    if opts.ref_model ~= nil or opts.reference ~= nil then
      error(("%s: loss_type '%s' uses no reference model; drop %s"):format(where, loss_type,
        opts.ref_model ~= nil and "ref_model" or "reference"), 0)
    end
    kind = "none"
  elseif opts.reference ~= nil then
    store = opts.reference
    if getmetatable(store) ~= Store then
      check.fail(where, "reference", "a ReferenceStore (ft.pref.precompute_reference / load_reference)", store)
    end
    local pv = M.vocab_size(policy)
    if pv and store.vocab_size and pv ~= store.vocab_size then
      error(("%s: the reference store was computed by a model with %d tokens but the policy has %d"):format(where,
        store.vocab_size, pv), 0)
    end
    kind = "store"
  else
    kind, ref = M.live_reference(where, policy, opts.ref_model, "reference (ft.pref.precompute_reference)")
  end
  local opt, sched, clip = M.optimizer_of(where, policy, opts)
  if disable then M.disable_dropout(policy, ref) end
  local net, shared = M.data_parallel(where, policy, opts.data_parallel)
  return setmetatable({
    where = where, policy = policy, model = policy, net = net, shared = shared, optimizer = opt, scheduler = sched,
    max_grad_norm = clip,
    loss_type = loss_type, beta = beta, label_smoothing = e, gamma = gamma, cpo_alpha = cpo_alpha,
    accumulation = accum, reference_kind = kind, ref_model = ref, reference = store, history = {},
  }, DPOTrainer)
end

--- ft.pref.DPOTrainer(policy, opts) -> trainer (see DPOTrainer): trainer:step(batch),
-- trainer:evaluate(batches), trainer:fit(data, fit_opts).
function M.DPOTrainer(policy, opts) return new_dpo("ft.pref.DPOTrainer", policy, opts) end

--- trainer:read(batch) -> the checked batch (trainer.read_batch): a DPOTrainer takes pairs.
function DPOTrainer:read(batch) return M.read_batch(self.where, batch) end

--- trainer:check_data(data) -> nothing: with a reference store, data (an array of batches) must
-- be the store's dataset (store:check).
function DPOTrainer:check_data(data)
  if self.reference_kind == "store" then self.reference:check(data, self.where) end
end

--- trainer:reference_logps(batch) -> ref_chosen [B], ref_rejected [B] (no graph) of a checked
-- batch (read_batch), from the trainer's reference; nil, nil for simpo and orpo.
function DPOTrainer:reference_logps(b)
  local kind = self.reference_kind
  if kind == "none" then return nil, nil end
  if kind == "store" then return self.reference:lookup(b, self.where) end
  return M.live_reference_logps(self.policy, self.ref_model, b.chosen_ids, b.chosen_mask, b.chosen_attention_mask),
    M.live_reference_logps(self.policy, self.ref_model, b.rejected_ids, b.rejected_mask, b.rejected_attention_mask)
end

--- trainer:prepare(batch) -> {tokens =, rows =} for orpo, and simpo with cpo_alpha > 0: the
-- chosen completions' tokens and the rows of the whole batch (over every rank when shared), so
-- that the micro-batches' NLL terms add up to the whole batch's mean per token; nil otherwise.
function DPOTrainer:prepare(b)
  if self.loss_type ~= "orpo" and not (self.loss_type == "simpo" and (self.cpo_alpha or 0) > 0) then return nil end
  local mask = b.chosen_mask
  local tokens, rows = self:sum_across({ mask:narrow(2, 2, mask:size(2) - 1):float():sum():item(), b.size })
  return { tokens = tokens, rows = rows }
end

--- trainer:loss(batch [, context]) -> loss (with the policy's graph), metrics of a checked batch
-- (read_batch): the policy's log-probs, the reference's, and the trainer's loss: loss,
-- rewards_chosen, rewards_rejected, rewards_accuracies, rewards_margins, logps_chosen,
-- logps_rejected (TRL's, "/" written "_"; simpo and orpo add theirs). With prepare's context,
-- the chosen NLL is this batch's share of the whole batch's, scaled by rows / its rows (the
-- trainer weighs each part by its rows).
function DPOTrainer:loss(b, context)
  local pc, nc = logps_mod.logps(self.net, b.chosen_ids, b.chosen_mask, { attention_mask = b.chosen_attention_mask })
  local pr, nr = logps_mod.logps(self.net, b.rejected_ids, b.rejected_mask,
    { attention_mask = b.rejected_attention_mask })
  local lt = self.loss_type
  local nll = context and -pc:sum() * (context.rows / (b.size * math.max(context.tokens, 1))) or nil
  if lt == "simpo" then
    return losses.simpo.simpo_loss { policy_chosen = pc, policy_rejected = pr, chosen_tokens = nc, rejected_tokens = nr,
      beta = self.beta, gamma = self.gamma, label_smoothing = self.label_smoothing, cpo_alpha = self.cpo_alpha,
      nll = nll }
  elseif lt == "orpo" then
    return losses.orpo.orpo_loss { policy_chosen = pc, policy_rejected = pr, chosen_tokens = nc, rejected_tokens = nr,
      beta = self.beta, nll = nll }
  end
  local rc, rr = self:reference_logps(b)
  return losses.dpo.dpo_loss { policy_chosen = pc, policy_rejected = pr, ref_chosen = rc, ref_rejected = rr,
    chosen_tokens = nc, rejected_tokens = nr, beta = self.beta, loss_type = lt,
    label_smoothing = self.label_smoothing > 0 and self.label_smoothing or nil }
end

--- ft.pref.train_dpo(policy, data [, opts]) -> result, trainer: DPOTrainer(policy, opts) and
-- trainer:fit(data, opts): opts holds both tables' keys (see DPOTrainer and trainer:fit), e.g.
-- {loss_type = "ipo", beta = 0.1, lr = 5e-5, gradient_accumulation_steps = 2, epochs = 3,
-- log_path = "run/metrics.jsonl", reference = store}.
function M.train_dpo(policy, data, opts)
  return M.train_with("ft.pref.train_dpo", new_dpo, TRAINER_OPTIONS, policy, data, opts)
end

return M
