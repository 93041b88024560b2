-- Pretrains the vision checkpoints the fine-tuning recipes start from: ResNet-S (default) or a
-- small ViT on the six clothing classes of Fashion-MNIST (T-shirt/top, Trouser, Pullover,
-- Dress, Coat, Shirt: dataset ids 0-4 and 6, ft labels {1,2,3,4,5,7}, relabelled 1..6). The
-- other four classes (Sandal, Sneaker, Bag, Ankle boot) stay unseen for transfer experiments.
--
--   ftlua scripts/pretrain_vision.lua --threads 2 --save models/resnet_s_clothing.h5
--   ftlua scripts/pretrain_vision.lua --model vit --threads 2 --save models/vit_s_clothing.h5
--   ftlua scripts/pretrain_vision.lua --limit 256 --epochs 1 --out /tmp/smoke   # smoke run
--
-- Recipe: 5000 images of the training set are held out for validation (the checkpoint is the
-- epoch with the best validation accuracy); inputs are normalised with the remaining training
-- images' mean and std; augmentation (ft.transforms) with random crops (2-pixel padding),
-- horizontal flips, rotations up to 10 degrees, contrast factors 0.7-1.3 and gaussian noise
-- of std up to 0.05, so the features do not hinge on one pose or intensity.
-- ResNet-S: SGD with Nesterov momentum 0.9 and weight decay 5e-4, lr 0.1, linear warmup over
-- 10% of the steps then cosine decay (as scripts/train_fashion_mnist.lua).
-- ViT (vit.config "vit-s" with patch 7, hidden 128, 4 layers, 4 heads, MLP 512: 16 patches +
-- CLS): AdamW (weight decay 0.05 on matrices only), lr 1e-3, 5% warmup then cosine decay.
-- models/README.md records how the shipped checkpoints were made and how well they do.
--
-- The checkpoint's metadata (ft.load's second result): model ("resnet_s" | "vit"), config (JSON:
-- the resnet.resnet_s options or the HF ViT config), classes (JSON array of names),
-- fashion_mnist_labels (JSON: the ft labels of classes 1..6), mean, std, command, seed,
-- threads, epochs, best_epoch, val_acc, test_acc, test_corrupt_acc (the test images through
-- ft.transforms.corrupt with seed 1), train_images, seconds.
--
-- Output: the run's folder (--out, default runs/pretrain_vision/<date-time>, printed at the
-- start and the end) holds the checkpoint <model>_clothing.h5 (resnet_s or vit_s; --save also
-- writes it to a path of your choice), history.csv (per epoch: train loss, train and
-- validation accuracy, seconds), curve.png (the accuracies per epoch), results.json (the
-- metadata above with the history) and metrics.jsonl (ft.train.Logger: the loss of every
-- step, the evaluations). Training runs in ft.train.loop, checkpointing every epoch
-- (checkpoint.h5, removed at the end): --resume continues a killed run.
local ft = require "ft"
local argparse = require "argparse"
local T = require "ft.transforms"

local F = ft.nn.functional
local P = ft.progress
local R = ft.recipe
local log = P.log

local CLOTHING = { 1, 2, 3, 4, 5, 7 } -- ft labels (dataset ids + 1) of the six clothing classes

local positive = R.integer({ min = 1 })
local parser = argparse("pretrain_vision.lua", "Pretrain ResNet-S or a small ViT on Fashion-MNIST's clothing classes.")
parser:option("--model", "resnet or vit.", "resnet"):choices({ "resnet", "vit" })
parser:option("--epochs", "Training epochs (default: 10 for resnet, 15 for vit, as the shipped checkpoints)."):convert(positive)
parser:option("--lr", "Peak learning rate (default: 0.1 for resnet, 1e-3 for vit)."):convert(R.number({ above = 0 }))
parser:option("--batch-size", "Images per batch.", "128"):convert(positive)
parser:option("--seed", "Random seed (split, initialisation, shuffling, augmentation).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/pretrain_vision/<date-time>).")
parser:option("--save", "Also write the checkpoint to this path (e.g. models/resnet_s_clothing.h5).")
parser:option("--val-size", "Training images held out for validation.", "5000"):convert(positive)
parser:option("--limit", "Smoke runs: train on N images, validate and test on at most N."):convert(positive)
parser:option("--patch-size", "ViT patch size (7: 16 patches, or 4: 49; it must divide 28).", "7"):convert(positive)
parser:option("--hidden-size", "ViT width.", "128"):convert(positive)
parser:option("--layers", "ViT encoder layers.", "4"):convert(positive)
parser:option("--heads", "ViT attention heads (they must divide --hidden-size).", "4"):convert(positive)
parser:flag("--no-augment", "Train without augmentation.")
parser:flag("--resume", "Continue an interrupted run from its checkpoint (same flags and --threads).")
local args = R.parse(parser)

local is_vit = args.model == "vit"
args.epochs = args.epochs or (is_vit and 15 or 10)
args.lr = args.lr or (is_vit and 1e-3 or 0.1)
if is_vit then
  if 28 % args.patch_size ~= 0 then R.usage_error(parser, "--patch-size %d does not divide the 28-pixel images", args.patch_size) end
  if args.hidden_size % args.heads ~= 0 then
    R.usage_error(parser, "--heads %d does not divide --hidden-size %d", args.heads, args.hidden_size)
  end
end
if args.save and ft.fs.is_dir(args.save) then R.usage_error(parser, "--save %s is a folder; give a file path", args.save) end
local command = "ftlua scripts/pretrain_vision.lua " .. table.concat(arg, " ")
local name = is_vit and "vit_s" or "resnet_s"

local ok_data, fm_train, fm_test = pcall(function()
  return ft.data.fashion_mnist({ split = "train" }), ft.data.fashion_mnist({ split = "test" })
end)
if not ok_data then R.fail(parser, "cannot load Fashion-MNIST: %s", fm_train) end
local clothing = ft.data.subset(fm_train, CLOTHING, { relabel = true })
if args.val_size >= clothing.y:size(1) then
  R.usage_error(parser, "--val-size %d leaves no training images (the clothing classes have %d)", args.val_size,
    clothing.y:size(1))
end

local run = R.run(parser, args.out, { resume = args.resume })
local checkpoint_path = run:path(name .. "_clothing.h5")
if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)
local started = ft.clock()

-- ---- data ------------------------------------------------------------------------------------

local function first(ds, n)
  if not n or n >= ds.y:size(1) then return ds end
  return { x = ds.x:narrow(1, 1, n), y = ds.y:narrow(1, 1, n), classes = ds.classes }
end

local parts = ft.data.split(clothing, args.val_size, { seed = args.seed })
local train, val = parts.train, parts.val
local test = ft.data.subset(fm_test, CLOTHING, { relabel = true })
train, val, test = first(train, args.limit), first(val, args.limit), first(test, args.limit)
local classes = train.classes
local mean, std = train.x:mean():item(), train.x:std():item()

local augment = T.augmentation("strong")

-- ---- model -----------------------------------------------------------------------------------

local model, config, logits_of
if is_vit then
  local vit = require "ft.models.vit"
  config = vit.config("vit-s", {
    patch_size = args.patch_size, hidden_size = args.hidden_size, num_hidden_layers = args.layers,
    num_attention_heads = args.heads, intermediate_size = 4 * args.hidden_size, num_labels = #classes,
  })
  -- HF's label maps (0-based ids), named after the classes.
  config.id2label, config.label2id = {}, {}
  for i, class in ipairs(classes) do
    config.id2label[tostring(i - 1)] = class
    config.label2id[class] = i - 1
  end
  model = vit.ViTForImageClassification(config)
  logits_of = function(x) return model(x).logits end
else
  config = { arch = "resnet_s", num_classes = #classes }
  model = ft.models.new("resnet-s", { num_classes = #classes })
  logits_of = model
end

local function normalise(x) return (x - mean) / std end

local function evaluate(dataset)
  return ft.train.evaluate(model, ft.data.loader(dataset, { batch_size = 500 }), function(_, b)
    return ft.train.classification_metrics(logits_of(normalise(b.x)), b.y)
  end).accuracy
end

-- ---- optimiser ---------------------------------------------------------------------------------

local loader = ft.data.loader(train, { batch_size = args.batch_size, shuffle = true, seed = args.seed })
local steps_per_epoch = #loader
local total_steps = steps_per_epoch * args.epochs
local S = ft.optim.lr_scheduler
local opt, warmup
if is_vit then
  -- No weight decay on biases, LayerNorm weights, position embeddings and the CLS token.
  local decay, no_decay = {}, {}
  for pname, p in model:named_parameters() do
    if p:dim() >= 2 and not pname:match("embeddings%.cls_token$") and not pname:match("position_embeddings$") then
      decay[#decay + 1] = p
    else
      no_decay[#no_decay + 1] = p
    end
  end
  opt = ft.optim.AdamW({ { params = decay, weight_decay = 0.05 }, { params = no_decay, weight_decay = 0 } },
    { lr = args.lr, betas = { 0.9, 0.999 } })
  warmup = math.max(1, math.floor(0.05 * total_steps + 0.5))
else
  opt = ft.optim.SGD(model:parameters(), { lr = args.lr, momentum = 0.9, nesterov = true, weight_decay = 5e-4 })
  warmup = math.max(1, math.floor(0.1 * total_steps + 0.5))
end
local sched = S.LinearWarmup(opt, { warmup_steps = warmup,
  after = S.CosineAnnealingLR(opt, { T_max = math.max(1, total_steps - warmup) }) })

log("%s: %d parameters; classes %s", is_vit and "ViT" or "ResNet-S", model:num_parameters(), table.concat(classes, ", "))
log("%d training, %d validation, %d test images (mean %.4f, std %.4f); %d epochs of %d steps; %d threads",
  train.y:size(1), val.y:size(1), test.y:size(1), mean, std, args.epochs, steps_per_epoch, ft.get_num_threads())

-- ---- training (ft.train.loop) --------------------------------------------------------------------

-- The epoch's running sums (training loss, correct predictions, images, seconds) live in the
-- loop's checkpointed state, so a resumed epoch reports the same numbers as an uninterrupted one.
local state = { history = {}, loss_sum = 0, correct = 0, seen = 0, seconds = 0 }
local logger = ft.train.Logger({ path = run:path("metrics.jsonl"), total = total_steps, every = 50, unit = "images" })
-- The checkpoint is the epoch with the best validation accuracy; training runs every epoch.
local stopper = ft.train.EarlyStopping({ metric = "val_acc", mode = "max", patience = args.epochs + 1, model = model })
model:train()
ft.train.loop({
  epochs = args.epochs, loader = loader, model = model, optimizer = opt, scheduler = sched,
  step = function(batch)
    local t0 = ft.clock()
    local x = args.no_augment and batch.x or augment(batch.x)
    local logits
    local loss = ft.train.step(opt, function()
      logits = logits_of(normalise(x))
      return F.cross_entropy(logits, batch.y)
    end, { scheduler = sched })
    local b = batch.y:size(1)
    state.loss_sum = state.loss_sum + loss * b
    state.correct = state.correct + ft.train.correct(logits:detach(), batch.y)
    state.seen = state.seen + b
    state.seconds = state.seconds + (ft.clock() - t0)
    return loss
  end,
  evaluate = function(step)
    local epoch = step // steps_per_epoch
    local dt = state.seconds
    local val_acc = evaluate(val)
    local h = { epoch = epoch, train_loss = state.loss_sum / state.seen, train_acc = state.correct / state.seen,
      val_acc = val_acc, seconds = dt }
    local best = stopper.best
    log("epoch %d/%d  loss %.4f  train acc %.2f%%  val acc %.2f%%%s  %.1f s  %.0f images/s", epoch, args.epochs,
      h.train_loss, 100 * h.train_acc, 100 * val_acc, (best == nil or val_acc > best) and "  (best)" or "", dt,
      state.seen / dt)
    state.history[#state.history + 1] = h
    state.loss_sum, state.correct, state.seen, state.seconds = 0, 0, 0, 0
    model:train()
    return { epoch = epoch, train_loss = h.train_loss, train_acc = h.train_acc, val_acc = val_acc }
  end,
  logger = logger, early_stopping = stopper, state = state,
  checkpoint = run:path("checkpoint.h5"), checkpoint_every = steps_per_epoch, resume = args.resume,
})
logger:close()
local history = state.history

stopper:restore_best()
local best_epoch = stopper.best_step // steps_per_epoch
local test_acc = evaluate(test)
-- The same test images under T.corrupt's fixed corruptions (seed 1): a distribution shift.
local corrupt_acc = evaluate({ x = T.corrupt(test.x, { seed = 1 }), y = test.y })
local seconds = ft.clock() - started
log("best epoch %d: val acc %.2f%%  test acc %.2f%%  corrupted test acc %.2f%%  (%s in all)", best_epoch,
  100 * stopper.best, 100 * test_acc, 100 * corrupt_acc, P.hms(seconds))

-- ---- checkpoint ----------------------------------------------------------------------------------

local meta = {
  model = is_vit and "vit" or "resnet_s", config = ft.json.encode(config), classes = ft.json.encode(classes),
  fashion_mnist_labels = ft.json.encode(CLOTHING), mean = mean, std = std, command = command, seed = args.seed,
  threads = ft.get_num_threads(), epochs = args.epochs, best_epoch = best_epoch, val_acc = stopper.best,
  test_acc = test_acc, test_corrupt_acc = corrupt_acc, train_images = train.y:size(1), seconds = seconds,
}
local weights = model:state_dict()
ft.save(checkpoint_path, weights, { metadata = meta })
log("saved %s", checkpoint_path)
if args.save then
  ft.fs.mkdir_for(args.save)
  ft.save(args.save, weights, { metadata = meta })
  log("saved %s", args.save)
end
os.remove(run:path("checkpoint.h5"))

-- ---- learning curve ------------------------------------------------------------------------------

local csv = { "epoch,train_loss,train_acc,val_acc,seconds" }
local epochs, train_curve, val_curve = {}, {}, {}
for i, h in ipairs(history) do
  csv[#csv + 1] = ("%d,%.6f,%.6f,%.6f,%.1f"):format(h.epoch, h.train_loss, h.train_acc, h.val_acc, h.seconds)
  epochs[i], train_curve[i], val_curve[i] = h.epoch, 100 * h.train_acc, 100 * h.val_acc
end
ft.fs.write(run:path("history.csv"), table.concat(csv, "\n") .. "\n")
ft.plot.line({ path = run:path("curve.png"), title = ("%s on the clothing classes"):format(is_vit and "ViT" or "ResNet-S"),
  xlabel = "epoch", ylabel = "accuracy (%)", legend = "lower right",
  series = { { name = "train (augmented)", x = epochs, y = train_curve }, { name = "validation", x = epochs, y = val_curve } } })
meta.checkpoint, meta.history = checkpoint_path, history
ft.json.write(run:path("results.json"), meta, { indent = true })
run:finish(name .. "_clothing.h5, history.csv, curve.png, results.json, metrics.jsonl")
