-- Fine-tunes a pretrained vision model on a small labelled task and measures how well it
-- holds up under distribution shift: the main job of ftlua.
--
--   ftlua scripts/finetune_vision.lua                       # LP-FT of the shipped ResNet-S
--   ftlua scripts/finetune_vision.lua --method lora --r 4
--   ftlua scripts/finetune_vision.lua --model vit --method reft
--   ftlua scripts/finetune_vision.lua --compare             # every method + training from scratch
--   ftlua scripts/finetune_vision.lua --data-dir my_images  # your PNGs, one subfolder per class
--
-- Task: the four Fashion-MNIST classes the shipped models never saw (Sandal, Sneaker, Bag,
-- Ankle boot), --labels-per-class labelled training images each (seeded); a validation set of
-- --val-per-class more for every choice (the epoch, the WiSE alpha); evaluation on the clean
-- test images of those classes (in-distribution, ID) and on a seeded corrupted copy of them
-- (out-of-distribution, OOD: gaussian noise, blur, contrast reduction or rotation per image,
-- ft.transforms.corrupt). The test split is never used for a choice.
--
-- Methods (a new head is attached first in every one):
--   head     linear probe: only the new head trains, the backbone is frozen (BatchNorm in eval)
--   partial  the top of the network trains (ResNet-S: its last stage, layer3; ViT: the upper
--            half of the encoder layers)
--   full     everything trains
--   lora     LoRA (--r, --alpha) on the convolutions / attention + MLP projections; head trains
--   ia3      (IA)3 scaling vectors on the convolutions' channels; head trains
--   reft     LoReFT on the CLS token after every encoder layer (--model vit); head trains
--   lpft     linear probe first, then everything from that head (the default)
--   scratch  (--compare only) the same network from random initialisation, everything trains
-- Every run also trains the linear probe, and WiSE-FT interpolates between the probe and the
-- fine-tuned weights (--alphas), reporting ID/OOD accuracy per alpha; the chosen alpha is the
-- one with the best mean of validation ID and OOD accuracy.
--
-- Output: the run's folder (--out, default runs/finetune_vision/<date-time>, printed at the
-- start and the end): results.json, results.csv, curve.png (validation accuracy per step of
-- every method trained: the learning curves), wise.csv and wise.png (the WiSE curve, the chosen
-- alpha marked), compare.png (--compare: ID and OOD accuracy per method, values on the bars),
-- metrics_<method>.jsonl (training logs); while it runs, checkpoint_<method>.h5 for --resume
-- (removed at the end). --resume without --out continues the newest run folder.
--
-- Data-parallel: `mpirun -np N ftlua scripts/finetune_vision.lua ...` trains with N processes
-- (ft.dist.DataParallel): every rank draws and augments the same global batch of --batch-size
-- images and trains on its share (rows rank+1, rank+1+N, ...; shares differ by one image when
-- the batch does not divide), BatchNorm layers that train use the statistics of the whole batch
-- (ft.nn.SyncBatchNorm), and the loss is the mean over the whole batch, so the numbers are those
-- of one process (float32 rounding apart). --per-rank-batch B sets the global batch to B * N
-- instead. Only rank 0 prints and writes; evaluation runs on every rank.
local ft = require "ft"
local argparse = require "argparse"
local T = require "ft.transforms"
local main = ft.dist.is_main()

local resnet = require "ft.models.resnet"
local vit = require "ft.models.vit"

local F = ft.nn.functional
local R = ft.recipe
local peft, train = ft.peft, ft.train
local log = ft.progress.log

local DOWNSTREAM = { 6, 8, 9, 10 } -- ft labels (dataset ids + 1): Sandal, Sneaker, Bag, Ankle boot
local METHODS = { "head", "partial", "full", "lora", "ia3", "reft", "lpft" }

local parser = argparse("finetune_vision.lua", "Fine-tune a pretrained vision model on a few labelled images.")
parser:option("--method", "head | partial | full | lora | ia3 | reft | lpft.", "lpft"):choices(METHODS)
parser:option("--model", "resnet or vit.", "resnet"):choices({ "resnet", "vit" })
parser:option("--checkpoint", "Pretrained checkpoint (default: models/resnet_s_clothing.h5 or models/vit_s_clothing.h5).")
  :convert(R.file)
local positive = R.integer({ min = 1 })
parser:option("--labels-per-class", "Labelled training images per class.", "50"):convert(positive)
parser:option("--val-per-class", "Validation images per class (for every choice).", "50"):convert(positive)
parser:option("--epochs", "Training epochs (default: per method)."):convert(positive)
parser:option("--lr", "Peak learning rate (default: per method)."):convert(R.number({ above = 0 }))
parser:option("--batch-size", "Images per batch, over all ranks under mpirun (default 25).")
  :convert(positive)
parser:option("--per-rank-batch", "Under mpirun: images per batch on each rank (the global batch is this times the ranks).")
  :convert(positive)
parser:option("--r", "LoRA rank.", "4"):convert(positive)
parser:option("--alpha", "LoRA alpha.", "8"):convert(R.number({ above = 0 }))
parser:option("--alphas", "WiSE-FT alphas in [0, 1]: a list (0,0.5,1) or a range start:stop:step.", "0:1:0.1")
  :convert(R.alphas)
parser:option("--seed", "Random seed (sampling, initialisation, shuffling, augmentation).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/finetune_vision/<date-time>; with --resume the newest).")
parser:option("--data-dir", "Your own images: PNG files in one subfolder per class (train/ and test/ inside, or split here).")
  :convert(R.dir)
parser:option("--test-limit", "Evaluate on at most N test images (smoke runs)."):convert(positive)
parser:option("--augment", "Training augmentation: none | light (crops, flips) | strong (+ rotation, contrast, noise).",
  "strong"):choices({ "none", "light", "strong" })
parser:option("--bn", "BatchNorm when the backbone trains: train (batch statistics) or eval (keep the pretrained ones).", "train")
  :choices({ "eval", "train" })
parser:flag("--resume", "Continue an interrupted run from its checkpoints (same flags and --threads).")
parser:flag("--compare", "Run every method and training from scratch; write the comparison table.")
local args = R.parse(parser)
args.batch_size = R.global_batch(args.batch_size, args.per_rank_batch, { default = 25, parser = parser,
  uneven = true })

local is_vit = args.model == "vit"
if args.method == "reft" and not is_vit then
  R.usage_error(parser, "--method reft edits transformer tokens; use it with --model vit")
end
if args.compare and args.method ~= "lpft" then
  R.usage_error(parser, "--compare runs every method; leave out --method %s", args.method)
end
if args.data_dir and ft.fs.is_dir(args.data_dir .. "/train") and not ft.fs.is_dir(args.data_dir .. "/test") then
  R.usage_error(parser, "--data-dir %s has a train/ folder but no test/ folder beside it", args.data_dir)
end
if not args.checkpoint then
  args.checkpoint = R.model_path((is_vit and "vit_s" or "resnet_s") .. "_clothing.h5")
  if not ft.fs.exists(args.checkpoint) then
    R.usage_error(parser, "no pretrained checkpoint at %s: make it with scripts/pretrain_vision.lua or pass --checkpoint",
      args.checkpoint)
  end
end

-- ---- the pretrained model -----------------------------------------------------------------------

local ok, pretrained, meta = pcall(ft.load, args.checkpoint)
if not ok then R.fail(parser, "cannot load the pretrained checkpoint %s: %s", args.checkpoint, pretrained) end
if not (meta.config and meta.mean and meta.std) then
  R.fail(parser, "%s lacks the config, mean and std metadata of a scripts/pretrain_vision.lua checkpoint", args.checkpoint)
end
if (meta.model == "vit") ~= is_vit then
  R.usage_error(parser, "%s holds a %s model; pass --model %s", args.checkpoint, tostring(meta.model),
    meta.model == "vit" and "vit" or "resnet")
end
local config = ft.json.decode(meta.config)
local mean, std = meta.mean, meta.std

-- A fresh model of the checkpoint's architecture, with the pretrained weights unless `random`.
-- Each model gets its own copy of the config: replace_head updates the model's config.
local function build_model(random)
  local c = ft.json.decode(meta.config)
  local model = is_vit and vit.ViTForImageClassification(c) or resnet.resnet_s(c)
  if not random then model:load_state_dict(pretrained) end
  return model
end

local function logits_of(out) return type(out) == "table" and out.logits or out end

-- ---- data ------------------------------------------------------------------------------------------

local function limit(ds, n)
  if not n or n >= ds.y:size(1) then return ds end
  return { x = ds.x:narrow(1, 1, n), y = ds.y:narrow(1, 1, n), classes = ds.classes }
end

-- Grey images for a one-channel model (mean over RGB), as the shipped models expect.
local function to_channels(ds, channels)
  if ds.x:size(2) == channels then return ds end
  if channels == 1 then return { x = ds.x:mean(2, true), y = ds.y, classes = ds.classes } end
  error(("--data-dir: images have %d channels, the model expects %d"):format(ds.x:size(2), channels))
end

local function load_data()
  local labelled_pool, test
  if args.data_dir then
    local channels = is_vit and config.num_channels or 1
    if ft.fs.is_dir(args.data_dir .. "/train") then
      labelled_pool = to_channels(ft.data.image_folder(args.data_dir .. "/train"), channels)
      test = to_channels(ft.data.image_folder(args.data_dir .. "/test"), channels)
    else
      local all = to_channels(ft.data.image_folder(args.data_dir), channels)
      local parts = ft.data.split(all, 0.3, { seed = args.seed })
      labelled_pool, test = parts.train, parts.val
    end
  else
    labelled_pool = ft.data.subset(ft.data.fashion_mnist({ split = "train" }), DOWNSTREAM, { relabel = true })
    test = ft.data.subset(ft.data.fashion_mnist({ split = "test" }), DOWNSTREAM, { relabel = true })
  end
  -- Each class must hold the labelled and the validation images it is asked for.
  local counts = {}
  for _, c in ipairs(labelled_pool.y:totable()) do counts[c] = (counts[c] or 0) + 1 end
  local need = args.labels_per_class + args.val_per_class
  for c, n in pairs(counts) do
    if n < need then
      local name = labelled_pool.classes and labelled_pool.classes[c] or tostring(c)
      R.usage_error(parser, "class %s has %d training images, fewer than --labels-per-class %d + --val-per-class %d",
        name, n, args.labels_per_class, args.val_per_class)
    end
  end
  local labelled, rest = ft.data.per_class(labelled_pool, args.labels_per_class, { seed = args.seed })
  local val = ft.data.per_class(rest, args.val_per_class, { seed = args.seed + 1 })
  test = limit(test, args.test_limit)
  -- The OOD copies. Test: one seeded corruption per image. Validation: every image under each
  -- corruption, so that the WiSE alpha choice does not hinge on which corruption a few of its
  -- images happened to draw.
  local val_ood_x, val_ood_y = {}, {}
  for kind, c in ipairs(T.corruptions) do
    val_ood_x[kind] = T.corrupt(val.x, { seed = args.seed + 100, kind = c.name })
    val_ood_y[kind] = val.y
  end
  local val_ood = { x = ft.cat(val_ood_x, 1), y = ft.cat(val_ood_y, 1) }
  local test_ood = { x = T.corrupt(test.x, { seed = args.seed + 200 }), y = test.y }
  return labelled, val, val_ood, test, test_ood
end

local data_ok, labelled, val, val_ood, test, test_ood = pcall(load_data)
if not data_ok then R.fail(parser, "cannot load the images: %s", labelled) end

local run = R.run(parser, args.out, { resume = args.resume })
if args.threads then ft.set_num_threads(args.threads) end
local classes = labelled.classes or {}
local num_classes = #classes > 0 and #classes or labelled.y:max():item()

local function normalise(x) return (x - mean) / std end

-- "light": random crops and flips; "strong" adds what pretraining used (ft.transforms.augmentation).
local augment = T.augmentation(args.augment)

local function accuracy(model, ds)
  local m = train.evaluate(model, ft.data.loader(ds, { batch_size = 500 }), function(mod, b)
    return train.classification_metrics(logits_of(mod(normalise(b.x))), b.y)
  end)
  return m.accuracy
end

-- ---- methods -------------------------------------------------------------------------------------------

local HEAD = is_vit and "classifier" or "fc"

-- Per-method defaults: epochs, learning rate (AdamW), and how the model is prepared.
local DEFAULTS = {
  head = { epochs = 30, lr = 1e-2 },
  partial = { epochs = 20, lr = 1e-3 },
  full = { epochs = 20, lr = 5e-4 },
  lora = { epochs = 30, lr = 5e-3 },
  ia3 = { epochs = 30, lr = 1e-2 },
  reft = { epochs = 30, lr = 5e-3 },
  lpft = { epochs = 20, lr = 2e-4 },
  scratch = { epochs = 60, lr = 2e-3 },
}

local function head_pattern() return "^" .. HEAD .. "%." end

-- The top of the network: ResNet-S's last stage; ViT the upper encoder layers + final norm.
local function top_half_patterns()
  if not is_vit then return { "^layer3%." } end
  local n = config.num_hidden_layers
  local out = { "^vit%.layernorm%." }
  for i = n // 2, n - 1 do out[#out + 1] = "^vit%.encoder%.layer%." .. i .. "%." end
  return out
end

local PREPARE = {
  head = function(model) peft.freeze(model); peft.unfreeze(model, head_pattern()) end,
  partial = function(model)
    peft.freeze(model)
    peft.unfreeze(model, top_half_patterns(), { bn_policy = args.bn })
    peft.unfreeze(model, head_pattern())
  end,
  full = function(model) peft.unfreeze(model, nil, { bn_policy = args.bn }) end,
  lora = function(model)
    local target = is_vit and { "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense" }
      or "^layer%d%.%d+%.conv%d$"
    peft.lora(model, { target = target, r = args.r, alpha = args.alpha, modules_to_save = { HEAD } })
    peft.bn_policy(model, nil, args.bn)
  end,
  ia3 = function(model)
    peft.ia3(model, {})
    peft.unfreeze(model, head_pattern())
    -- Pretrained BatchNorm statistics: with batch statistics (--bn train) the few scaling
    -- vectors did worse on validation (86.0% against 92.5%).
    peft.bn_policy(model, nil, "eval")
  end,
  reft = function(model)
    peft.reft(model, { positions = "f1", rank = 4, kind = "loreft" })
    peft.unfreeze(model, head_pattern())
  end,
  scratch = function(model) peft.unfreeze(model) end,
}

local function trainable(model)
  local params = {}
  for _, e in ipairs(peft.trainable_parameters(model)) do params[#params + 1] = e[2] end
  return params
end

-- Each training run checkpoints every epoch (model, optimizer, RNG, loader position, early
-- stopping), so --resume continues a killed run to the numbers of an uninterrupted one.
local function checkpoint_path(name) return run:path("checkpoint_" .. name .. ".h5") end

-- Trains what requires grad with AdamW + warmup/cosine, choosing the epoch by validation
-- accuracy (early stopping with patience, best weights restored). Returns the best val accuracy.
local function fit(model, name, epochs, lr)
  local params = trainable(model)
  local opt = ft.optim.AdamW(params, { lr = lr, weight_decay = 0.01 })
  local loader = ft.data.loader(labelled, { batch_size = args.batch_size, shuffle = true, seed = args.seed })
  local last = labelled.y:size(1) % args.batch_size
  if last > 0 and last < ft.dist.world_size() then
    R.fail(parser, "the last batch of each epoch holds %d of the %d labelled images, too few for %d ranks: "
      .. "choose another --batch-size", last, labelled.y:size(1), ft.dist.world_size())
  end
  local total = #loader * epochs
  local S = ft.optim.lr_scheduler
  local warmup = math.max(1, total // 10)
  local sched = S.LinearWarmup(opt, { warmup_steps = warmup,
    after = S.CosineAnnealingLR(opt, { T_max = math.max(1, total - warmup) }) })
  local stopper = train.EarlyStopping({ metric = "val_accuracy", mode = "max", patience = math.max(5, epochs // 3),
    model = model })
  local logger = train.Logger({ path = run:path("metrics_" .. name .. ".jsonl"), total = total, every = #loader })
  model:train()
  -- Several ranks: BatchNorm over the global batch, each rank its share of the augmented batch.
  if ft.dist.world_size() > 1 then ft.nn.SyncBatchNorm.convert(model) end
  local net = ft.dist.DataParallel(model)
  train.loop({
    epochs = epochs, loader = loader, model = model, optimizer = opt, scheduler = sched,
    step = function(batch)
      local x, n = ft.dist.shard(normalise(augment(batch.x)))
      local y = ft.dist.shard(batch.y)
      local loss
      local _, norm = train.step(opt, function()
        local scaled
        scaled, loss = net:global_mean(F.cross_entropy(logits_of(net(x)), y), n)
        return scaled
      end, { scheduler = sched })
      return loss, norm
    end,
    evaluate = function() return { val_accuracy = accuracy(model, val) } end,
    logger = logger, early_stopping = stopper,
    checkpoint = checkpoint_path(name), checkpoint_every = #loader, resume = args.resume,
  })
  stopper:restore_best()
  logger:close()
  log("%-8s best val accuracy %.2f%% (step %s)", name, 100 * stopper.best, tostring(stopper.best_step))
  return stopper.best
end

local function evaluate_all(model)
  return { val_id = accuracy(model, val), val_ood = accuracy(model, val_ood),
    id = accuracy(model, test), ood = accuracy(model, test_ood) }
end

local function count_trainable(model)
  local n = 0
  for _, p in ipairs(trainable(model)) do n = n + p:numel() end
  return n
end

local function copy_state(model) return ft.clone_state_dict((model:state_dict())) end

-- The linear probe every run starts from (and the WiSE-FT endpoint alpha = 0).
local function linear_probe()
  local model = build_model()
  peft.replace_head(model, num_classes, { name = HEAD })
  PREPARE.head(model)
  local d = DEFAULTS.head
  fit(model, "head", args.epochs or d.epochs, args.lr or d.lr)
  return model
end

-- Runs one method; returns the fine-tuned model and its result row.
local function run_method(method, probe)
  local t0 = ft.clock()
  local d = DEFAULTS[method]
  local model
  if method == "head" then
    model = probe
  else
    model = build_model(method == "scratch")
    peft.replace_head(model, num_classes, { name = HEAD })
    if method == "lpft" then
      model:load_state_dict(probe:state_dict())
      PREPARE.full(model)
    else
      PREPARE[method](model)
    end
    fit(model, method, args.epochs or d.epochs, args.lr or d.lr)
  end
  local row = evaluate_all(model)
  row.method, row.trainable = method, count_trainable(model)
  row.total = model:num_parameters()
  row.seconds = ft.clock() - t0
  return model, row
end

-- ---- WiSE-FT ---------------------------------------------------------------------------------------------

-- Interpolates probe -> fine-tuned weights (LoRA merged first); nil when the adapter cannot be
-- folded into the weights (ia3, reft).
local function wise_sweep(probe, finetuned)
  if #peft.adapters(finetuned) > 0 then
    local ok_merge = pcall(peft.merge_and_unload, finetuned)
    if not ok_merge or #peft.adapters(finetuned) > 0 then return nil end
  end
  local sd0, sd1 = copy_state(probe), copy_state(finetuned)
  local model = build_model()
  peft.replace_head(model, num_classes, { name = HEAD })
  local rows = ft.wise.sweep(sd0, sd1, args.alphas, function(m) return evaluate_all(m) end,
    { model = model })
  local best
  for _, r in ipairs(rows) do
    r.val_mean = (r.val_id + r.val_ood) / 2
    if not best or r.val_mean > best.val_mean then best = r end
  end
  best.chosen = true
  return rows, best
end

-- ---- output ---------------------------------------------------------------------------------------------------

local function pct(x) return ("%.2f"):format(100 * x) end

local function write_csv(path, header, rows)
  local lines = { table.concat(header, ",") }
  for _, r in ipairs(rows) do
    local cells = {}
    for i, k in ipairs(header) do cells[i] = tostring(r[k] == nil and "" or r[k]) end
    lines[#lines + 1] = table.concat(cells, ",")
  end
  ft.fs.write(path, table.concat(lines, "\n") .. "\n")
end

local function print_table(rows)
  log("")
  log("%-8s %12s %8s %8s %8s %8s", "method", "trainable", "%", "ID acc", "OOD acc", "seconds")
  for _, r in ipairs(rows) do
    log("%-8s %12d %8.2f %8s %8s %8.1f", r.method, r.trainable, 100 * r.trainable / r.total, pct(r.id), pct(r.ood),
      r.seconds)
  end
end

local function print_wise(rows, best)
  log("")
  log("WiSE-FT: probe (alpha 0) -> fine-tuned (alpha 1); alpha chosen on validation: %g", best.alpha)
  log("%6s %8s %8s %8s %8s", "alpha", "val ID", "val OOD", "ID acc", "OOD acc")
  for _, r in ipairs(rows) do
    log("%6g %8s %8s %8s %8s%s", r.alpha, pct(r.val_id), pct(r.val_ood), pct(r.id), pct(r.ood),
      r.chosen and "  <- chosen" or "")
  end
end

-- The learning curves: validation accuracy at every evaluation of each method trained.
local function plot_curves(names)
  local series, seen = {}, {}
  for _, name in ipairs(names) do
    local path = run:path("metrics_" .. name .. ".jsonl")
    if not seen[name] and ft.fs.exists(path) then
      seen[name] = true
      series[#series + 1] = R.series(R.read_jsonl(path), "val_accuracy", { scale = 100, name = name })
    end
  end
  return R.curve(run:path("curve.png"), { title = ("%s: validation accuracy while training"):format(args.model),
    ylabel = "validation accuracy (%)", series = series, legend = "outside" })
end

-- ---- main --------------------------------------------------------------------------------------------------------

ft.manual_seed(args.seed)
log("%s from %s: %d classes, %d labelled / %d validation / %d test images; %d threads", args.model, args.checkpoint,
  num_classes, labelled.y:size(1), val.y:size(1), test.y:size(1), ft.get_num_threads())

local probe_t0 = ft.clock()
local probe = linear_probe()
local probe_seconds = ft.clock() - probe_t0

local methods = args.compare and { "head", "partial", "full", "lora", "ia3", "lpft", "scratch" } or { args.method }
if args.compare and is_vit then methods = { "head", "partial", "full", "lora", "ia3", "reft", "lpft", "scratch" } end

local rows, wise_model = {}, nil
for _, method in ipairs(methods) do
  ft.manual_seed(args.seed)
  local model, row = run_method(method, probe)
  if method == "head" then row.seconds = probe_seconds end
  rows[#rows + 1] = row
  if method == (args.compare and "lpft" or args.method) then wise_model = model end
end
print_table(rows)

local wise_rows, wise_best
if wise_model and wise_model ~= probe then
  wise_rows, wise_best = wise_sweep(probe, wise_model)
  if wise_rows then
    print_wise(wise_rows, wise_best)
    if main then
      write_csv(run:path("wise.csv"), { "alpha", "val_id", "val_ood", "id", "ood", "chosen" }, wise_rows)
      R.wise_plot(run:path("wise.png"), wise_rows, wise_best, { title = ("WiSE-FT: linear probe -> %s (%s)"):format(
        args.compare and "lpft" or args.method, args.model) })
    end
  else
    log("WiSE-FT: skipped (the %s adapter cannot be folded into the weights)", args.method)
  end
end

if not main then return end -- rank 0 writes
for _, method in ipairs({ "head", table.unpack(methods) }) do os.remove(checkpoint_path(method)) end

plot_curves({ "head", table.unpack(methods) })
write_csv(run:path("results.csv"), { "method", "trainable", "total", "id", "ood", "val_id", "val_ood", "seconds" }, rows)
ft.fs.write(run:path("results.json"), ft.json.encode({ model = args.model, checkpoint = args.checkpoint,
  seed = args.seed, labels_per_class = args.labels_per_class, methods = rows, wise = wise_rows or ft.json.null }) .. "\n")

if args.compare then
  local cats, id, ood, all = {}, {}, {}, {}
  for i, r in ipairs(rows) do
    cats[i], id[i], ood[i] = r.method, 100 * r.id, 100 * r.ood
    all[#all + 1], all[#all + 2] = id[i], ood[i]
  end
  -- The y-axis spans the values (not 0..100), so that the methods' differences show.
  R.bars(run:path("compare.png"), { title = ("%s, %d labels per class"):format(args.model, args.labels_per_class),
    ylabel = "test accuracy (%)", categories = cats, series = { { name = "ID", values = id }, { name = "OOD", values = ood } },
    ylim = R.bar_limits(all) })
end
log("")
run:finish(("results.json, results.csv, curve.png%s%s"):format(wise_rows and ", wise.csv, wise.png" or "",
  args.compare and ", compare.png" or ""))
