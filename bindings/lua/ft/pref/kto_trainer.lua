-- ft.pref.kto_trainer: training with KTO's loss (ft.pref.kto_loss) as TRL's KTOTrainer runs it,
-- over batches of unpaired examples labelled desirable or undesirable, on the skeleton DPOTrainer
-- uses (ft.pref.trainer's Trainer: AdamW on the trainable parameters, gradient accumulation,
-- TRL's metrics through ft.train's loop, progress line and JSONL log).
--
--   local examples = ft.pref.load_unpaired("kto.jsonl", tok)        -- {prompt, completion, label}
--   peft.lora(policy, {target = {"c_attn", "c_proj"}, r = 8})        -- reference: the base
--   local result = ft.pref.train_kto(policy, ft.pref.batches(examples, {batch_size = 8, kl = true}),
--     {beta = 0.1, lr = 5e-6, epochs = 1, log_path = "run/metrics.jsonl"})
--   print(result.last.kl, result.last.rewards_chosen)
--
-- A batch is what ft.pref.collate_unpaired makes: {ids [B,T] int64 1-based, mask [B,T] (1 on the
-- completion's tokens), labels [B] (1 desirable, 0 not), attention_mask (optional), and for
-- loss_type "kto" the KL rows kl_ids, kl_mask, kl_attention_mask [B,T'] (collate_unpaired /
-- batches with kl = true: prompt i followed by completion i - 1 of the batch, cyclically, as TRL
-- builds them)}; other fields are ignored.
--
-- The KL reference point z0 = max(0, mean(policy - reference summed log-probs of the KL rows)) is
-- computed without a graph. kl_scope = "batch" (the default) takes the mean over all the batch's
-- KL rows, once per step, and every micro-batch uses it: with gradient accumulation the update is
-- exactly the whole batch's. kl_scope = "micro_batch" is TRL's KTOTrainer under
-- gradient_accumulation_steps: each micro-batch takes the mean over its own KL rows (the rows
-- are still those of the whole batch, so the first row of a micro-batch pairs its prompt with
-- the previous micro-batch's last completion). Both are one batch's point without accumulation.
local ft = require "ft"
local check = require "ft.check"
local T = require "ft.pref.trainer"
local logps_mod = require "ft.pref.logps"
local inputs = require "ft.pref.inputs"
local kto = require "ft.pref.kto"

local M = {}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local OPTIONS = { "loss_type", "beta", "desirable_weight", "undesirable_weight", "ref_model", "kl_scope",
  "gradient_accumulation_steps", "disable_dropout", "data_parallel" }
for _, k in ipairs(T.OPTIMIZER_OPTIONS) do OPTIONS[#OPTIONS + 1] = k end

local KTOTrainer = T.class("examples")
--- KTOTrainer: one object per run of KTO; ft.pref.KTOTrainer(policy, opts) makes one
-- (ft.pref.train_kto makes one and runs fit). opts: loss_type ("kto" or "apo_zero_unpaired", as
-- ft.pref.kto_loss; the latter needs no KL rows), beta (> 0; 0.1), desirable_weight,
-- undesirable_weight (1, 1); the reference: ref_model (a frozen model, same vocabulary) or, by
-- default, the policy with its adapters disabled (KTO always has one); kl_scope ("batch" or
-- "micro_batch": see the module's header); the optimizer: lr (1e-6, TRL's), weight_decay, betas,
-- eps (AdamW over the trainable parameters) or optimizer, scheduler, max_grad_norm (1.0; false:
-- none); gradient_accumulation_steps (1); disable_dropout (true, as TRL); data_parallel (true:
-- under mpirun the ranks share every batch, the KL point is the mean over all their rows).
-- step, evaluate and fit are ft.pref.trainer's Trainer's (unit "examples"); the metrics are
-- kto_loss's (TRL's KTO
-- metrics, "/" written "_"): loss, kl, rewards_chosen, logps_chosen (over the desirable
-- examples), rewards_rejected, logps_rejected (the undesirable ones), rewards_margins (their
-- difference, when both are present), count_chosen, count_rejected (how many of each). Fields:
-- policy (= model), net (ft.dist.DataParallel(policy) when shared), optimizer, scheduler,
-- reference_kind ("adapters" or "model"), history.
M.KTOTrainerClass = KTOTrainer
KTOTrainer.REDUCE = { count_chosen = "sum", count_rejected = "sum" }

local function new_kto(where, policy, opts)
  opts = ft.check_options(where, opts, OPTIONS)
  check.func(where, "policy", check.required(where, "policy", policy))
  local loss_type = check.one_of(where, "loss_type", opts.loss_type, "kto", { "kto", "apo_zero_unpaired" })
  local beta = inputs.beta(where, opts.beta, 0.1)
  local wd = check.number(where, "desirable_weight", opts.desirable_weight, 1, { min = 0 })
  local wu = check.number(where, "undesirable_weight", opts.undesirable_weight, 1, { min = 0 })
  if opts.kl_scope ~= nil and loss_type ~= "kto" then
    error(("%s: kl_scope applies to loss_type 'kto', not '%s' (it has no KL term)"):format(where, loss_type), 0)
  end
  local scope = check.one_of(where, "kl_scope", opts.kl_scope, "batch", { "batch", "micro_batch" })
  local accum = check.integer(where, "gradient_accumulation_steps", opts.gradient_accumulation_steps, 1, { min = 1 })
  local disable = check.boolean(where, "disable_dropout", opts.disable_dropout, true)
  local kind, ref = T.live_reference(where, policy, opts.ref_model)
  local opt, sched, clip = T.optimizer_of(where, policy, opts)
  if disable then T.disable_dropout(policy, ref) end
  local net, shared = T.data_parallel(where, policy, opts.data_parallel)
  return setmetatable({
    where = where, policy = policy, model = policy, net = net, shared = shared, optimizer = opt, scheduler = sched,
    max_grad_norm = clip,
    loss_type = loss_type, beta = beta, desirable_weight = wd, undesirable_weight = wu, kl_scope = scope,
    accumulation = accum, reference_kind = kind, ref_model = ref, history = {},
  }, KTOTrainer)
end

--- ft.pref.KTOTrainer(policy, opts) -> trainer (see KTOTrainer): trainer:step(batch),
-- trainer:evaluate(batches), trainer:fit(data, fit_opts).
function M.KTOTrainer(policy, opts) return new_kto("ft.pref.KTOTrainer", policy, opts) end

-- An [B, T] tensor field of the batch (ids: int64), or nil when optional and absent.
local function field(where, batch, name, B, Tn, int, optional)
  local v = batch[name]
  if v == nil then
    if optional then return nil end
    error(("%s: batch.%s is required"):format(where, name), 0)
  end
  if not ft.is_tensor(v) or v:dim() ~= 2 or (int and v:dtype() ~= "int64") or (B and v:size(1) ~= B)
      or (Tn and v:size(2) ~= Tn) then
    local want = int and "an int64 tensor [batch, seq] of 1-based token ids"
      or ("a 0/1 tensor [%d,%d] like its ids"):format(B, Tn)
    error(("%s: batch.%s must be %s, got %s"):format(where, name, want,
      ft.is_tensor(v) and (v:dtype() .. " " .. shape_str(v)) or check.show(v)), 0)
  end
  return v
end

--- trainer:read(batch) -> the checked batch {ids, mask, attention_mask, labels (float32 [B]),
-- kl_ids, kl_mask, kl_attention_mask, size = B}: an unpaired batch (see the module's header);
-- the KL rows are required for loss_type "kto" and must have the batch's rows. A pair batch
-- (chosen_ids ...) is an error that says so; others name the field and the shapes.
function KTOTrainer:read(batch)
  local where = self.where
  batch = T.unwrap(batch)
  if type(batch) ~= "table" or ft.is_tensor(batch) then
    check.fail(where, "batch", "a table {ids =, mask =, labels =, kl_ids =, kl_mask =} (ft.pref.collate_unpaired)",
      batch)
  end
  if batch.ids == nil and batch.chosen_ids ~= nil then
    error(where .. ": batch holds pairs (chosen_ids, rejected_ids: ft.pref.collate_pairs) but KTO takes unpaired "
      .. "examples (ids, mask, labels, kl_ids: ft.pref.load_unpaired and ft.pref.batches with kl = true); pairs "
      .. "train with ft.pref.DPOTrainer", 0)
  end
  local ids = field(where, batch, "ids", nil, nil, true)
  local B, Tn = ids:size(1), ids:size(2)
  local out = { ids = ids, size = B }
  out.mask = field(where, batch, "mask", B, Tn)
  out.attention_mask = field(where, batch, "attention_mask", B, Tn, false, true)
  local labels = check.required(where, "batch.labels", batch.labels)
  if type(labels) == "table" and not ft.is_tensor(labels) then
    local vals = {}
    for i, v in ipairs(labels) do vals[i] = (v == true or v == 1) and 1 or (v == false or v == 0) and 0 or v end
    for i = 1, #vals do
      if type(vals[i]) ~= "number" then
        error(("%s: batch.labels[%d] must be true/false (or 1/0), got %s"):format(where, i, check.show(labels[i])), 0)
      end
    end
    labels = ft.tensor(vals)
  end
  if not ft.is_tensor(labels) or labels:dim() ~= 1 or labels:size(1) ~= B then
    error(("%s: batch.labels must be a 0/1 tensor [%d] (one label per row of batch.ids %s), got %s"):format(where,
      B, shape_str(ids), ft.is_tensor(labels) and shape_str(labels) or check.show(labels)), 0)
  end
  out.labels = labels:dtype() == "float32" and labels or labels:float()
  if self.loss_type == "kto" then
    if batch.kl_ids == nil then
      error(where .. ": batch.kl_ids is required for loss_type 'kto' (the KL rows: ft.pref.collate_unpaired or "
        .. "ft.pref.batches with kl = true)", 0)
    end
    local kl_ids = field(where, batch, "kl_ids", B, nil, true)
    out.kl_ids = kl_ids
    out.kl_mask = field(where, batch, "kl_mask", B, kl_ids:size(2))
    out.kl_attention_mask = field(where, batch, "kl_attention_mask", B, kl_ids:size(2), false, true)
  end
  return out
end

--- trainer:kl_point(batch) -> tensor [B] (no graph): policy minus reference summed log-probs of
-- a checked batch's KL rows (kto_loss takes their mean, clamped at 0, as the reference point).
function KTOTrainer:kl_point(b)
  local lp = ft.no_grad(logps_mod.logps, self.policy, b.kl_ids, b.kl_mask, { attention_mask = b.kl_attention_mask })
  return lp - T.live_reference_logps(self.policy, self.ref_model, b.kl_ids, b.kl_mask, b.kl_attention_mask)
end

--- trainer:prepare(batch) -> {kl =} for loss_type "kto" with kl_scope "batch": the KL rows of the
-- whole batch (kl_point), which every micro-batch's loss uses; nil otherwise.
function KTOTrainer:prepare(b)
  if self.loss_type == "kto" and self.kl_scope == "batch" then return { kl = self:mean_across(self:kl_point(b)) } end
  return nil
end

--- trainer:loss(batch [, context]) -> loss (with the policy's graph), metrics, weights of a
-- checked batch (read): the policy's summed log-probs, the reference's, the KL point
-- (context.kl, else this batch's kl_point) and ft.pref.kto_loss.
function KTOTrainer:loss(b, context)
  local lp = logps_mod.logps(self.net, b.ids, b.mask, { attention_mask = b.attention_mask })
  local ref = T.live_reference_logps(self.policy, self.ref_model, b.ids, b.mask, b.attention_mask)
  local kl
  if self.loss_type == "kto" then kl = context and context.kl or self:mean_across(self:kl_point(b)) end
  local loss, m = kto.kto_loss { policy = lp, reference = ref, labels = b.labels, kl = kl, beta = self.beta,
    desirable_weight = self.desirable_weight, undesirable_weight = self.undesirable_weight,
    loss_type = self.loss_type }
  local good = b.labels:sum():item()
  local bad = b.size - good
  m.rewards_margins = nil   -- finish derives it from the averaged means
  m.count_chosen, m.count_rejected = good, bad
  return loss, m, { rewards_chosen = good, logps_chosen = good, rewards_rejected = bad, logps_rejected = bad }
end

--- trainer:finish(metrics) -> nothing: rewards_margins = rewards_chosen - rewards_rejected when
-- the batch (or the evaluated batches) had both kinds of example.
function KTOTrainer:finish(m)
  if m.rewards_chosen and m.rewards_rejected then m.rewards_margins = m.rewards_chosen - m.rewards_rejected end
end

--- ft.pref.train_kto(policy, data [, opts]) -> result, trainer: KTOTrainer(policy, opts) and
-- trainer:fit(data, opts) (ft.pref.trainer's Trainer:fit): opts holds both tables' keys, e.g.
-- {beta = 0.1, lr = 5e-6, weight_decay = 0, steps = 100, log_path = "run/metrics.jsonl",
-- log_every = 10}; result.last holds the last step's metrics (loss, kl, rewards_chosen ...).
function M.train_kto(policy, data, opts)
  return T.train_with("ft.pref.train_kto", new_kto, OPTIONS, policy, data, opts)
end

return M
