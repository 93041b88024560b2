-- Pretrains a byte-level GPT from scratch on Debian's fortunes corpus and saves a checkpoint.
--
--   ftlua scripts/pretrain_text.lua            # GPT-S (6 x 384): ~13 min on 2 cores, ~1700 tokens/s,
--                                              # validation loss ~2.37 nats (3.4 bits/byte)
--   # the shipped models/gpt_fortunes.h5 (gpt-mini: 4 x 192, 1.9M parameters; models/TEXT.md):
--   ftlua scripts/pretrain_text.lua --config gpt-mini --steps 2800 --batch-size 16 --lr 2e-3 \
--     --seed 1 --threads 2 --eval-every 250 --save models/gpt_fortunes.h5
--   ftlua scripts/pretrain_text.lua --config tiny --steps 20 --out /tmp/smoke
--
-- The checkpoint (HDF5) holds the model's state dict under HF's GPT-2 names and, as metadata,
-- the HF config (config, JSON), the held-out list, the separator, the recipe's options and
-- the final losses. ft.text.load_checkpoint(path) rebuilds the model from it.
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
-- Output: the run's folder (--out, default runs/pretrain_text/<date-time>, printed at the start
-- and the end) holds the checkpoint gpt_fortunes.h5 (--save also writes it to a path of your
-- choice), history.csv (at every evaluation: the mean training loss since the previous one
-- and the validation loss), curve.png (both per step) and results.json (the checkpoint's
-- metadata with the history).
local ft = require "ft"
local argparse = require "argparse"

local F = ft.nn.functional
local R = ft.recipe

local HELD_OUT = { "computers", "politics", "science", "songs-poems" }

local parser = argparse("pretrain_text.lua", "Pretrain a byte-level GPT on the fortunes corpus.")
parser:option("--config", "Model preset: gpt-s (6 x 384), gpt-mini (4 x 192, the shipped checkpoint) or tiny "
  .. "(2 x 64, for smoke runs).", "gpt-s")
  :choices({ "gpt-s", "gpt-mini", "tiny" })
local positive, count = R.integer({ min = 1 }), R.integer({ min = 0 })
parser:option("--steps", "Optimizer steps.", "600"):convert(positive)
parser:option("--batch-size", "Windows per batch.", "8"):convert(positive)
parser:option("--context", "Bytes per window (the model gets max(context, 256) positions).", "256")
  :convert(R.integer({ min = 2, max = 65536 }))
parser:option("--lr", "Peak learning rate.", "1e-3"):convert(R.number({ above = 0 }))
parser:option("--weight-decay", "AdamW weight decay on matrices and embeddings.", "0.1"):convert(R.number({ min = 0 }))
parser:option("--dropout", "Dropout probability (embeddings, attention, residuals), in [0, 1).", "0")
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
local args = R.parse(parser)
if args.save and ft.fs.is_dir(args.save) then R.usage_error(parser, "--save %s is a folder; give a file path", args.save) end

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
local checkpoint_path = run:path("gpt_fortunes.h5")
local tok = train.tokenizer

local overrides = { n_positions = math.max(args.context, 256),
  attn_pdrop = args.dropout, embd_pdrop = args.dropout, resid_pdrop = args.dropout }
-- Smaller presets are gpt-s with fewer, narrower layers.
local SHAPES = { tiny = { 2, 64, 2 }, ["gpt-mini"] = { 4, 192, 6 } }
local shape = SHAPES[args.config]
if shape then overrides.n_layer, overrides.n_embd, overrides.n_head = shape[1], shape[2], shape[3] end
local config = ft.models.config("gpt-s", overrides)
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

log("GPT (%s): %d parameters, %d layers, width %d, context %d; %d threads", args.config, model:num_parameters(),
  config.n_layer, config.n_embd, args.context, ft.get_num_threads())
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

-- Mean next-byte cross-entropy (nats) over the validation windows (all, or max_windows).
local function evaluate(m, max_windows)
  local was_training = m.training
  m:eval()
  local total, count = 0, 0
  ft.no_grad(function()
    for x, y in val:windows(16, { max_windows = max_windows }) do
      local n = y:numel()
      total = total + mean_loss(m(x).logits, y):item() * n
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
    local n = math.min(args.sample_length, config.n_positions - #prompt)
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

-- ---- training ---------------------------------------------------------------------------------

model:train()
local t_start = ft.clock()
local t_train = 0        -- seconds inside training steps (evaluation and sampling excluded)
local tokens = 0
local recent, recent_n = 0, 0
local train_loss
local history = {}   -- {step, train_loss (mean since the previous evaluation), val_loss}
for step = 1, args.steps do
  local t0 = ft.clock()
  local x, y = train:batch(args.batch_size)
  local loss = mean_loss(model(x).logits, y)
  opt:zero_grad()
  loss:backward()
  local norm = ft.optim.clip_grad_norm(params, args.clip)
  opt:step()
  sched:step()
  local l = loss:item()
  t_train = t_train + (ft.clock() - t0)
  tokens = tokens + y:numel()
  recent, recent_n = recent + l, recent_n + 1
  train_loss = l

  progress(step, args.steps, args.log_every,
    "step %d/%d  loss %.4f (%.3f bits/byte)  grad norm %.2f  lr %.2e  %.0f tokens/s  ETA %s",
    step, args.steps, l, l / LN2, norm, opt.param_groups[1].lr, tokens / t_train,
    hms(t_train / step * (args.steps - step)))

  if args.eval_every > 0 and step % args.eval_every == 0 and step < args.steps then
    local v = evaluate(model, args.eval_windows)
    history[#history + 1] = { step = step, train_loss = recent / recent_n, val_loss = v }
    log("step %d/%d  train loss %.4f (mean of the last %d steps)  val loss %.4f (%.3f bits/byte, %d windows)  %.0f tokens/s",
      step, args.steps, recent / recent_n, recent_n, v, v / LN2, math.min(args.eval_windows, val:num_windows()),
      tokens / t_train)
    recent, recent_n = 0, 0
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
samples(model)
-- machine-readable summary
log("RESULT steps=%d tokens_per_sec=%.1f train_loss=%.4f val_loss=%.4f val_bpb=%.4f", args.steps, tokens / t_train,
  recent / recent_n, val_loss, val_loss / LN2)

-- ---- checkpoint: save, reload into a fresh model, re-evaluate -----------------------------------

history[#history + 1] = { step = args.steps, train_loss = recent / recent_n, val_loss = val_loss }
local checkpoint_meta = {
  model = "gpt2", preset = args.config, config = ft.json.encode(config), held_out = ft.json.encode(info.held_out),
  separator = ft.json.encode(ft.text.EOT), tokenizer = "bytes", corpus = "fortunes", step = args.steps,
  tokens = tokens, batch_size = args.batch_size, context = args.context, lr = args.lr, seed = args.seed,
  weight_decay = args.weight_decay, dropout = args.dropout, warmup_steps = warmup, train_seconds = t_train,
  val_fraction = 0.05, train_loss = train_loss, val_loss = val_loss, val_bits_per_byte = val_loss / LN2,
}
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

local csv, steps, train_curve, val_curve = { "step,train_loss,val_loss" }, {}, {}, {}
for i, h in ipairs(history) do
  csv[#csv + 1] = ("%d,%.6f,%.6f"):format(h.step, h.train_loss, h.val_loss)
  steps[i], train_curve[i], val_curve[i] = h.step, h.train_loss, h.val_loss
end
ft.fs.write(run:path("history.csv"), table.concat(csv, "\n") .. "\n")
ft.plot.line({ path = run:path("curve.png"), title = ("byte-level GPT (%s) on fortunes"):format(args.config),
  xlabel = "step", ylabel = "loss (nats per byte)",
  series = { { name = "train (mean since the previous point)", x = steps, y = train_curve },
    { name = "validation", x = steps, y = val_curve } } })
checkpoint_meta.checkpoint, checkpoint_meta.history = checkpoint_path, history
ft.json.write(run:path("results.json"), checkpoint_meta, { indent = true })
run:finish("gpt_fortunes.h5, history.csv, curve.png, results.json")
