-- Pretrains a byte-level GPT (or a Mixtral mixture of experts) from scratch on Debian's fortunes
-- corpus and saves a checkpoint.
--
--   ftlua scripts/pretrain_text.lua            # GPT-S (6 x 384): ~13 min on 2 cores, ~1700 tokens/s,
--                                              # validation loss ~2.37 nats (3.4 bits/byte)
--   # the shipped models/gpt_fortunes.h5 (gpt-mini: 4 x 192, 1.9M parameters; models/TEXT.md):
--   ftlua scripts/pretrain_text.lua --config gpt-mini --steps 2800 --batch-size 16 --lr 2e-3 \
--     --seed 1 --threads 2 --eval-every 250 --save models/gpt_fortunes.h5
--   ftlua scripts/pretrain_text.lua --config tiny --steps 20 --out /tmp/smoke
--   # moe-s (MixtralForCausalLM, 6 x 384, 4 experts of width 1024, top 2: 30.9M parameters,
--   # 16.7M of them used a token), and the same without the load-balancing loss:
--   ftlua scripts/pretrain_text.lua --config moe-s --steps 300 --batch-size 4 --out /tmp/moe_runs/coef001
--   ftlua scripts/pretrain_text.lua --config moe-s --steps 300 --batch-size 4 --router-aux-loss-coef 0 \
--     --out /tmp/moe_runs/coef0
--     # ~650 tokens/s on 2 cores (~10 min); the two side by side with --threads 1: 353 tokens/s each,
--     # 17 min. Validation loss 2.269 nats (3.274 bits/byte) with the aux loss, 2.285 (3.297)
--     # without; GPT-S with the same 300 x 4 x 256 bytes: 2.615 (3.772). Layer-mean expert
--     # shares 0.235/0.246/0.252/0.268 with the aux loss (cv 0.05), 0.211/0.298/0.301/0.189
--     # without (cv 0.20); within a layer both stay unbalanced (per-layer cv 0.57 and 0.61,
--     # experts at 0.1% and 50%): the aux loss pools all layers' tokens, so it balances the
--     # layer mean, not each layer.
--
-- The checkpoint (HDF5) holds the model's state dict under HF's names (GPT-2's, or Mixtral's)
-- and, as metadata, the HF config (config, JSON), the held-out list, the separator, the recipe's
-- options and the final losses (moe-s: also router_aux_loss_coef, aux_loss and expert_shares,
-- JSON). ft.text.load_checkpoint(path) rebuilds the model from it, either architecture.
--
-- Held-out categories: computers, politics, science, songs-poems. They are left out of
-- pretraining entirely (neither train nor validation) so that fine-tuning recipes have
-- text the model has not seen; the list is stored in the checkpoint's metadata (held_out,
-- a JSON array). The other categories are split by entry (ft.text.split, 5% validation,
-- seeded) and joined into one byte stream, each entry followed by ft.text.EOT ("\0", id 1).
--
-- Recipe: windows of --context bytes at random offsets; AdamW (betas 0.9/0.95, weight decay
-- 0.1 on matrices and embeddings, none on biases and LayerNorm); linear warmup over the first
-- 5% of steps, then cosine decay to 10% of --lr; gradient norm clipped at 1. Dropout is 0 by
-- default (--dropout): the runs above see the corpus a few times at most, where dropout
-- mostly slows learning.
-- Losses are the mean next-byte cross-entropy in nats, and in bits per byte.
--
-- moe-s (ft.models.new("moe-s")): the same data and recipe (weight decay on the routers' gate
-- matrices too); no dropout (--dropout is refused). The loss trained on is the LM loss plus
-- router_aux_loss_coef (--router-aux-loss-coef, default the preset's 0.01; 0: the ablation) times
-- the Switch load-balancing loss (out.aux_loss, over all layers' router logits together; 2, the
-- top-k, when balanced). What is logged, in history.csv and in the checkpoint is the LM loss alone,
-- comparable to the GPT presets', with the aux loss beside it. Every step the router's choices
-- (mixtral.topk of the softmax of out.router_logits, one [B*T, 4] tensor a layer) are counted per
-- layer and expert; every --load-every steps (10) the counts give each expert's share of the
-- routed token slots (B*T x 2 a layer, so 0.5 at most), averaged over the layers and those
-- steps. Experts are numbered from 0, as in the parameter names (block_sparse_moe.experts.0).
-- The final summary prints the last shares, the layer mean and each layer's.
--
-- Output: the run's folder (--out, default runs/pretrain_text/<date-time>, printed at the start
-- and the end) holds the checkpoint gpt_fortunes.h5 (moe-s: moe_fortunes.h5; --save also writes
-- it to a path of your choice), history.csv (at every evaluation: the mean training loss since
-- the previous one and the validation loss; moe-s: and aux_loss, its mean over the same steps),
-- curve.png (both per step) and results.json (the checkpoint's metadata with the history;
-- moe-s: and every load record with each layer's shares). moe-s also writes expert_load.csv
-- (step, expert_0 .. expert_3: the layer-mean shares, which sum to 1; max_min: the largest
-- over the smallest, inf when an expert got no token; cv: their coefficient of variation;
-- layer_cv: the mean of each layer's own cv, an imbalance the layer mean hides) and
-- expert_load.png (the shares over training, one line an expert, 1/4 dashed).
local ft = require "ft"
local argparse = require "argparse"

local F = ft.nn.functional
local R = ft.recipe

local HELD_OUT = { "computers", "politics", "science", "songs-poems" }

local parser = argparse("pretrain_text.lua",
  "Pretrain a byte-level GPT (or a mixture of experts) on the fortunes corpus.")
parser:option("--config", "Model preset: gpt-s (6 x 384), gpt-mini (4 x 192, the shipped checkpoint), tiny "
  .. "(2 x 64, for smoke runs) or moe-s (Mixtral, 6 x 384, 4 experts, top 2).", "gpt-s")
  :choices({ "gpt-s", "gpt-mini", "tiny", "moe-s" })
local positive, count = R.integer({ min = 1 }), R.integer({ min = 0 })
parser:option("--steps", "Optimizer steps.", "600"):convert(positive)
parser:option("--batch-size", "Windows per batch.", "8"):convert(positive)
parser:option("--context", "Bytes per window (the model gets max(context, 256) positions).", "256")
  :convert(R.integer({ min = 2, max = 65536 }))
parser:option("--lr", "Peak learning rate.", "1e-3"):convert(R.number({ above = 0 }))
parser:option("--weight-decay", "AdamW weight decay on matrices and embeddings.", "0.1"):convert(R.number({ min = 0 }))
parser:option("--dropout", "Dropout probability (embeddings, attention, residuals; GPT presets only), in [0, 1).", "0")
  :convert(R.number({ min = 0, below = 1 }))
parser:option("--clip", "Gradient norm clipping threshold.", "1.0"):convert(R.number({ above = 0 }))
parser:option("--seed", "Random seed (initialisation, batches, split, samples).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/pretrain_text/<date-time>).")
parser:option("--save", "Also write the checkpoint to this path (e.g. models/gpt_fortunes.h5).")
parser:option("--eval-every", "Validation loss every N steps (on --eval-windows windows; 0: only at the end).", "100")
  :convert(count)
parser:option("--eval-windows", "Validation windows for the periodic estimates (the final loss uses all).", "64")
  :convert(positive)
parser:option("--sample-every", "Print generated text every N steps (0: only at the end).", "0"):convert(count)
parser:option("--sample-length", "Bytes generated per sample.", "160"):convert(positive)
parser:option("--log-every", "Log line every N steps when stderr is not a terminal.", "10"):convert(positive)
parser:option("--router-aux-loss-coef", "moe-s only: weight of the load-balancing loss in the training loss "
  .. "(default: the preset's, 0.01; 0 trains without it).")
  :convert(R.number({ min = 0 }))
parser:option("--load-every", "moe-s only: record the experts' shares of the routed tokens every N steps "
  .. "(default 10).")
  :convert(positive)
-- Quick checks of the whole recipe on a shallower model (tests/sh/pretrain_moe.sh).
parser:option("--layers", "Layers, instead of the preset's."):convert(R.integer({ min = 1, max = 64 })):hidden(true)
local args = R.parse(parser)
if args.save and ft.fs.is_dir(args.save) then R.usage_error(parser, "--save %s is a folder; give a file path", args.save) end
local moe = args.config == "moe-s"
if not moe then
  for _, flag in ipairs({ "router-aux-loss-coef", "load-every" }) do
    if args[(flag:gsub("-", "_"))] ~= nil then
      R.usage_error(parser, "--%s is an option of --config moe-s, not of %s", flag, args.config)
    end
  end
elseif args.dropout > 0 then
  R.usage_error(parser, "--dropout is an option of the GPT presets (moe-s has no dropout)")
end
args.load_every = args.load_every or 10

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

-- ---- output ------------------------------------------------------------------------------

local P = ft.progress
local hms, log, progress = P.hms, P.log, P.progress
local LN2 = math.log(2)

-- ---- data and model -----------------------------------------------------------------------

local t_data = ft.clock()
local ok_data, train, val, info = pcall(ft.text.fortune_datasets, {
  context = args.context, held_out = HELD_OUT, val_fraction = 0.05, seed = args.seed,
})
if not ok_data then R.fail(parser, "cannot read the fortunes corpus: %s", train) end
local run = R.run(parser, args.out)
local checkpoint_name = moe and "moe_fortunes.h5" or "gpt_fortunes.h5"
local checkpoint_path = run:path(checkpoint_name)
local tok = train.tokenizer

local config, positions
if moe then
  local overrides = { max_position_embeddings = math.max(args.context, 256) }
  if args.router_aux_loss_coef then overrides.router_aux_loss_coef = args.router_aux_loss_coef end
  overrides.num_hidden_layers = args.layers
  config = ft.models.config("moe-s", overrides)
  positions = config.max_position_embeddings
else
  local overrides = { n_positions = math.max(args.context, 256),
    attn_pdrop = args.dropout, embd_pdrop = args.dropout, resid_pdrop = args.dropout }
  -- Smaller presets are gpt-s with fewer, narrower layers.
  local SHAPES = { tiny = { 2, 64, 2 }, ["gpt-mini"] = { 4, 192, 6 } }
  local shape = SHAPES[args.config]
  if shape then overrides.n_layer, overrides.n_embd, overrides.n_head = shape[1], shape[2], shape[3] end
  overrides.n_layer = args.layers or overrides.n_layer
  config = ft.models.config("gpt-s", overrides)
  positions = config.n_positions
end
local model = ft.models.new(config)

-- Weight decay on matrices and embeddings only (nanoGPT's and GPT-2's practice).
local decay, no_decay = {}, {}
for _, p in model:named_parameters() do
  if p:dim() >= 2 then decay[#decay + 1] = p else no_decay[#no_decay + 1] = p end
end
local opt = ft.optim.AdamW({
  { params = decay, weight_decay = args.weight_decay },
  { params = no_decay, weight_decay = 0 },
}, { lr = args.lr, betas = { 0.9, 0.95 }, eps = 1e-8 })
local params = model:parameters()
local S = ft.optim.lr_scheduler
local warmup = math.max(1, math.floor(0.05 * args.steps + 0.5))
local sched = S.LinearWarmup(opt, { warmup_steps = warmup,
  after = S.CosineAnnealingLR(opt, { T_max = math.max(1, args.steps - warmup), eta_min = 0.1 * args.lr }) })

if moe then
  log("Mixtral MoE (%s): %d parameters, %d layers, width %d, %d experts (top %d), aux-loss coefficient %g, "
    .. "context %d; %d threads", args.config, model:num_parameters(), config.num_hidden_layers, config.hidden_size,
    config.num_local_experts, config.num_experts_per_tok, config.router_aux_loss_coef, args.context,
    ft.get_num_threads())
else
  log("GPT (%s): %d parameters, %d layers, width %d, context %d; %d threads", args.config, model:num_parameters(),
    config.n_layer, config.n_embd, args.context, ft.get_num_threads())
end
log("fortunes: %d categories, held out %s; train %d entries (%d bytes), validation %d entries (%d bytes); %.1f s",
  #info.categories, table.concat(info.held_out, ", "), info.train_entries, #train, info.val_entries, #val,
  ft.clock() - t_data)
log("%d steps of %d x %d bytes (%.2f passes over the training bytes); AdamW lr %g, warmup %d, cosine",
  args.steps, args.batch_size, args.context, args.steps * args.batch_size * args.context / #train, args.lr, warmup)

-- ---- evaluation and samples ------------------------------------------------------------------

local function mean_loss(logits, y)
  local V = logits:size(3)
  return F.cross_entropy(logits:reshape(-1, V), y:reshape(-1))
end

-- The MoE model's validation forward skips the router logits (and so the aux loss).
local eval_opts = moe and { output_router_logits = false } or nil

-- Mean next-byte cross-entropy (nats) over the validation windows (all, or max_windows).
local function evaluate(m, max_windows)
  local was_training = m.training
  m:eval()
  local total, count = 0, 0
  ft.no_grad(function()
    for x, y in val:windows(16, { max_windows = max_windows }) do
      local n = y:numel()
      total = total + mean_loss(m(x, eval_opts).logits, y):item() * n
      count = count + n
    end
  end)
  if was_training then m:train() end
  return total / count
end

local function show(s)
  -- The separator ends an entry; print it as a visible mark.
  return (s:gsub(ft.text.EOT, "\n<EOT>\n"))
end

-- Greedy and sampled continuations of the start of an entry (the separator) and of a prompt.
-- The training batches' random stream is saved and restored around the sampling.
local function samples(m)
  local state = ft.get_rng_state()
  for _, prompt in ipairs({ ft.text.EOT, ft.text.EOT .. "The " }) do
    local n = math.min(args.sample_length, positions - #prompt)
    local ids = tok:encode(prompt)
    local greedy = m:generate(ids, { max_new_tokens = n, eos_token_id = ft.text.EOT_ID })
    local sampled = m:generate(ids, { max_new_tokens = n, temperature = 0.8, top_k = 40,
      eos_token_id = ft.text.EOT_ID })
    local shown = prompt:gsub(ft.text.EOT, "<EOT>")
    log("-- greedy from %q:\n%s", shown, show(tok:decode(greedy[1]:narrow(1, #prompt + 1, greedy:size(2) - #prompt))))
    log("-- sampled (temperature 0.8, top_k 40) from %q:\n%s", shown,
      show(tok:decode(sampled[1]:narrow(1, #prompt + 1, sampled:size(2) - #prompt))))
  end
  ft.set_rng_state(state)
end

-- ---- expert load (MoE) ---------------------------------------------------------------------------

-- Each expert's share of the routed token slots (B*T tokens x top-k choices a layer): counted
-- every step from the router logits (mixtral.topk of their softmax, the block's own choice),
-- recorded every --load-every steps as the mean over the layers and the steps since the
-- previous record. Experts are numbered as in the parameter names (block_sparse_moe.experts.0 ...).
local E, L = config.num_local_experts, config.num_hidden_layers
local load_counts, load_steps, load_history = {}, 0, {}
local function reset_load()
  for l = 1, L do
    load_counts[l] = {}
    for e = 1, E do load_counts[l][e] = 0 end
  end
  load_steps = 0
end
if moe then reset_load() end

local function count_load(router_logits)
  local mixtral = ft.models.mixtral
  ft.no_grad(function()
    for l, logits in ipairs(router_logits) do
      local counts = load_counts[l]
      for _, chosen in ipairs(mixtral.topk(logits:softmax(2), config.num_experts_per_tok)) do
        for _, e in ipairs(chosen) do counts[e] = counts[e] + 1 end
      end
    end
  end)
  load_steps = load_steps + 1
end

-- Coefficient of variation of shares (population standard deviation over the mean, 1/E): 0
-- when balanced, sqrt(E - 1) when one expert takes everything.
local function variation(shares)
  local sq = 0
  for e = 1, E do sq = sq + (shares[e] - 1 / E) ^ 2 end
  return math.sqrt(sq / E) * E
end

-- Appends the shares since the previous record to load_history: shares (the layers' mean),
-- layers (each layer's), max_min (largest over smallest mean share; nil when an expert got no
-- token), cv (of the mean shares) and layer_cv (the mean of the layers' own cv, which an
-- imbalance that differs between layers does not average away).
local function record_load(step)
  if load_steps == 0 then return end
  local shares, layers, layer_cv = {}, {}, 0
  for e = 1, E do shares[e] = 0 end
  for l, counts in ipairs(load_counts) do
    local total = 0
    for e = 1, E do total = total + counts[e] end
    local s = {}
    for e = 1, E do
      s[e] = counts[e] / total
      shares[e] = shares[e] + s[e] / L
    end
    layers[l] = s
    layer_cv = layer_cv + variation(s) / L
  end
  local hi, lo = math.max(table.unpack(shares)), math.min(table.unpack(shares))
  load_history[#load_history + 1] = { step = step, steps = load_steps, shares = shares, layers = layers,
    max_min = lo > 0 and hi / lo or nil, cv = variation(shares), layer_cv = layer_cv }
  reset_load()
end

local function format_shares(shares)
  local out = {}
  for e = 1, E do out[e] = ("%d: %.3f"):format(e - 1, shares[e]) end
  return table.concat(out, ", ")
end

-- ---- training ---------------------------------------------------------------------------------

model:train()
local t_start = ft.clock()
local t_train = 0        -- seconds inside training steps (evaluation and sampling excluded)
local tokens = 0
local recent, recent_n = 0, 0
local recent_aux = 0  -- MoE: the sum of the aux losses since the previous evaluation
local train_loss
-- {step, train_loss (mean LM loss since the previous evaluation), val_loss; MoE: aux_loss (its mean)}
local history = {}
local coef = moe and config.router_aux_loss_coef
for step = 1, args.steps do
  local t0 = ft.clock()
  local x, y = train:batch(args.batch_size)
  local out = model(x)
  -- The loss trained on; the LM loss alone is what is logged, comparable to the GPT presets'.
  local lm_loss = mean_loss(out.logits, y)
  local loss = lm_loss
  if moe and coef > 0 then loss = lm_loss + coef * out.aux_loss end
  opt:zero_grad()
  loss:backward()
  local norm = ft.optim.clip_grad_norm(params, args.clip)
  opt:step()
  sched:step()
  local l = lm_loss:item()
  local aux = moe and out.aux_loss:item()
  t_train = t_train + (ft.clock() - t0)
  tokens = tokens + y:numel()
  recent, recent_n = recent + l, recent_n + 1
  train_loss = l
  if moe then
    recent_aux = recent_aux + aux
    count_load(out.router_logits)
    if step % args.load_every == 0 or step == args.steps then record_load(step) end
  end

  progress(step, args.steps, args.log_every,
    "step %d/%d  loss %.4f (%.3f bits/byte)%s  grad norm %.2f  lr %.2e  %.0f tokens/s  ETA %s",
    step, args.steps, l, l / LN2, moe and ("  aux %.4f"):format(aux) or "", norm, opt.param_groups[1].lr,
    tokens / t_train, hms(t_train / step * (args.steps - step)))

  if args.eval_every > 0 and step % args.eval_every == 0 and step < args.steps then
    local v = evaluate(model, args.eval_windows)
    history[#history + 1] = { step = step, train_loss = recent / recent_n, val_loss = v,
      aux_loss = moe and recent_aux / recent_n or nil }
    log("step %d/%d  train loss %.4f (mean of the last %d steps)  val loss %.4f (%.3f bits/byte, %d windows)%s"
      .. "  %.0f tokens/s", step, args.steps, recent / recent_n, recent_n, v, v / LN2,
      math.min(args.eval_windows, val:num_windows()), moe and ("  aux loss %.4f"):format(recent_aux / recent_n) or "",
      tokens / t_train)
    local last = load_history[#load_history]
    if last then
      log("expert shares (steps %d-%d): %s", last.step - last.steps + 1, last.step, format_shares(last.shares))
    end
    recent, recent_n, recent_aux = 0, 0, 0
  end
  if args.sample_every > 0 and step % args.sample_every == 0 and step < args.steps then samples(model) end
end
P.clear()

local t_eval = ft.clock()
local val_loss = evaluate(model)
log("done: %d steps in %s (%.1f s training), %.0f tokens/s", args.steps, hms(ft.clock() - t_start), t_train,
  tokens / t_train)
log("train loss %.4f (%.3f bits/byte, mean of the last %d steps)", recent / recent_n, recent / recent_n / LN2, recent_n)
log("val loss %.4f (%.3f bits/byte) over all %d validation windows (%.1f s)", val_loss, val_loss / LN2,
  val:num_windows(), ft.clock() - t_eval)
local final_load = load_history[#load_history]
local final_shares = {}
if moe then
  for e = 1, E do final_shares[e] = ("%.4f"):format(final_load.shares[e]) end
  log("aux loss %.4f (mean of the last %d steps; %d, the top-k, when balanced), coefficient %g", recent_aux / recent_n,
    recent_n, config.num_experts_per_tok, coef)
  log("expert shares of the routed tokens over steps %d-%d, mean of the %d layers: %s (1/%d = %.3f); "
    .. "max/min %.2f, cv %.3f, per-layer cv %.3f", final_load.step - final_load.steps + 1, final_load.step, L,
    format_shares(final_load.shares), E, 1 / E, final_load.max_min or math.huge, final_load.cv, final_load.layer_cv)
  for l, s in ipairs(final_load.layers) do log("  layer %d: %s", l - 1, format_shares(s)) end
end
samples(model)
-- machine-readable summary
log("RESULT steps=%d tokens_per_sec=%.1f train_loss=%.4f val_loss=%.4f val_bpb=%.4f%s", args.steps, tokens / t_train,
  recent / recent_n, val_loss, val_loss / LN2,
  moe and (" aux_loss=%.4f expert_shares=%s load_cv=%.4f"):format(recent_aux / recent_n,
    table.concat(final_shares, ":"), final_load.cv) or "")

-- ---- checkpoint: save, reload into a fresh model, re-evaluate -----------------------------------

history[#history + 1] = { step = args.steps, train_loss = recent / recent_n, val_loss = val_loss,
  aux_loss = moe and recent_aux / recent_n or nil }
local checkpoint_meta = {
  model = moe and "mixtral" or "gpt2", preset = args.config, config = ft.json.encode(config),
  held_out = ft.json.encode(info.held_out), separator = ft.json.encode(ft.text.EOT), tokenizer = "bytes",
  corpus = "fortunes", step = args.steps,
  tokens = tokens, batch_size = args.batch_size, context = args.context, lr = args.lr, seed = args.seed,
  weight_decay = args.weight_decay, dropout = args.dropout, warmup_steps = warmup, train_seconds = t_train,
  val_fraction = 0.05, train_loss = train_loss, val_loss = val_loss, val_bits_per_byte = val_loss / LN2,
}
if moe then
  checkpoint_meta.router_aux_loss_coef = coef
  checkpoint_meta.aux_loss = recent_aux / recent_n
  checkpoint_meta.expert_shares = ft.json.encode(final_load.shares)
end
ft.save(checkpoint_path, model:state_dict(), { metadata = checkpoint_meta })
if args.save then
  ft.fs.mkdir_for(args.save)
  ft.save(args.save, model:state_dict(), { metadata = checkpoint_meta })
  log("saved %s", args.save)
end

local sd, meta = ft.load(checkpoint_path)
local fresh = ft.models.new(ft.json.decode(meta.config))
fresh:load_state_dict(sd)
local reloaded = evaluate(fresh)
log("saved %s; val loss after reloading %.6f (before saving %.6f)", checkpoint_path, reloaded, val_loss)
if reloaded ~= val_loss then
  io.stderr:write("error: the reloaded model's validation loss differs from the trained model's\n")
  os.exit(1)
end

-- ---- learning curve -----------------------------------------------------------------------------

local csv = { "step,train_loss,val_loss" .. (moe and ",aux_loss" or "") }
local steps, train_curve, val_curve = {}, {}, {}
for i, h in ipairs(history) do
  csv[#csv + 1] = ("%d,%.6f,%.6f"):format(h.step, h.train_loss, h.val_loss)
    .. (moe and (",%.6f"):format(h.aux_loss) or "")
  steps[i], train_curve[i], val_curve[i] = h.step, h.train_loss, h.val_loss
end
ft.fs.write(run:path("history.csv"), table.concat(csv, "\n") .. "\n")
ft.plot.line({ path = run:path("curve.png"),
  title = ("byte-level %s (%s) on fortunes"):format(moe and "MoE" or "GPT", args.config),
  xlabel = "step", ylabel = "loss (nats per byte)",
  series = { { name = "train (mean since the previous point)", x = steps, y = train_curve },
    { name = "validation", x = steps, y = val_curve } } })
local files = checkpoint_name .. ", history.csv, curve.png, results.json"

if moe then
  local header = { "step" }
  for e = 1, E do header[#header + 1] = "expert_" .. (e - 1) end
  table.move({ "max_min", "cv", "layer_cv" }, 1, 3, #header + 1, header)
  local rows, x, series, top = { table.concat(header, ",") }, {}, {}, 0
  for e = 1, E do series[e] = { name = ("expert %d"):format(e - 1), x = x, y = {} } end
  for i, r in ipairs(load_history) do
    local row = { r.step }
    for e = 1, E do
      row[#row + 1] = ("%.6f"):format(r.shares[e])
      series[e].y[i] = r.shares[e]
      top = math.max(top, r.shares[e])
    end
    row[#row + 1] = r.max_min and ("%.6f"):format(r.max_min) or "inf"
    row[#row + 1] = ("%.6f,%.6f"):format(r.cv, r.layer_cv)
    rows[#rows + 1] = table.concat(row, ",")
    x[i] = r.step
  end
  series[#series + 1] = { name = ("balanced (1/%d)"):format(E), x = { x[1], x[#x] }, y = { 1 / E, 1 / E },
    color = "#7f7f7f", dash = true }
  ft.fs.write(run:path("expert_load.csv"), table.concat(rows, "\n") .. "\n")
  ft.plot.line({ path = run:path("expert_load.png"),
    title = ("%s expert load (aux-loss coefficient %g)"):format(args.config, coef),
    xlabel = "step", ylabel = ("share (mean of the %d layers)"):format(L), markers = false,
    ylim = { 0, math.min(1, math.max(0.5, 1.1 * top)) }, series = series })
  files = files .. ", expert_load.csv, expert_load.png"
  checkpoint_meta.expert_load = load_history
  checkpoint_meta.expert_shares = final_load.shares
end
checkpoint_meta.checkpoint, checkpoint_meta.history = checkpoint_path, history
ft.json.write(run:path("results.json"), checkpoint_meta, { indent = true })
run:finish(files)
