-- Trains ResNet-S from scratch on Fashion-MNIST and saves a checkpoint.
--
--   ftlua scripts/train_fashion_mnist.lua                     # full run (>= 92% test accuracy)
--   ftlua scripts/train_fashion_mnist.lua --limit 2000 --epochs 1 --out /tmp/smoke
--   ftlua scripts/train_fashion_mnist.lua --eval-only runs/train_fashion_mnist/<date-time>/resnet_s.h5
--
-- Recipe: inputs normalised with the training set's mean and std; random crop (2-pixel zero
-- padding) and horizontal flip; SGD with Nesterov momentum 0.9 and weight decay 5e-4;
-- batches of 128; linear warmup over the first 10% of steps, then cosine decay to 0.
-- Measured (seed 1): 3 epochs 91.6%, 4 epochs 92.5%, 5 epochs (the default) 92.8% test accuracy.
-- scripts/bench/train_fashion_mnist_torch.py is the same run in PyTorch.
--
-- Output: the run's folder (--out, default runs/train_fashion_mnist/<date-time>, printed at
-- the start and the end): resnet_s.h5 (the checkpoint), history.csv (per epoch: train loss,
-- train and test accuracy, seconds), curve.png (the accuracies per epoch), results.json and
-- metrics.jsonl (ft.train.Logger). Training runs in ft.train.loop, checkpointing every epoch
-- (checkpoint.h5, removed at the end): --resume continues a killed run.
local ft = require "ft"
local argparse = require "argparse"
local T = require "ft.transforms"

local F = ft.nn.functional
local R = ft.recipe

local positive = R.integer({ min = 1 })
local parser = argparse("train_fashion_mnist.lua", "Train ResNet-S from scratch on Fashion-MNIST.")
parser:option("--epochs", "Training epochs.", "5"):convert(positive)
parser:option("--batch-size", "Images per batch.", "128"):convert(positive)
parser:option("--lr", "Peak learning rate.", "0.1"):convert(R.number({ above = 0 }))
parser:option("--seed", "Random seed (initialisation, shuffling, augmentation).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/train_fashion_mnist/<date-time>).")
parser:option("--limit", "Use only the first N training images (smoke runs)."):convert(positive)
parser:option("--test-limit", "Evaluate on only the first N test images (smoke runs)."):convert(positive)
parser:option("--eval-only", "Evaluate this checkpoint on the test set and exit."):argname("<checkpoint>")
  :convert(R.file)
parser:flag("--no-augment", "Train without random crops and flips.")
parser:flag("--resume", "Continue an interrupted run from its checkpoint (same flags and --threads).")
local args = R.parse(parser)
if args.eval_only and (args.out or args.resume or args.limit) then
  R.usage_error(parser, "--eval-only evaluates a checkpoint; it takes no --out, --resume or --limit")
end

local P = ft.progress
local log = P.log
local wall = ft.clock   -- monotonic wall-clock seconds

-- ---- data ------------------------------------------------------------------------------------

local function normalise(x, mean, std) return (x - mean) / std end

-- Random crop with 2-pixel zero padding and horizontal flip, per image. x [B,1,H,W] in [0,1].
local augment = T.compose({ { T.random_crop, 2 }, { T.hflip, 0.5 } })

local function evaluate(model, dataset, mean, std)
  return ft.train.evaluate(model, ft.data.loader(dataset, { batch_size = 500 }), function(m, b)
    return ft.train.classification_metrics(m(normalise(b.x, mean, std)), b.y)
  end).accuracy
end

local function first(ds, n)
  if not n or n >= ds.y:size(1) then return ds end
  return { x = ds.x:narrow(1, 1, n), y = ds.y:narrow(1, 1, n), classes = ds.classes }
end

local ok_data, test = pcall(ft.data.fashion_mnist, { split = "test" })
if not ok_data then R.fail(parser, "cannot load Fashion-MNIST: %s", test) end
test = first(test, args.test_limit)

-- ---- evaluation only -------------------------------------------------------------------------

if args.eval_only then
  local ok, sd, meta = pcall(ft.load, args.eval_only)
  if not ok then R.fail(parser, "cannot load %s: %s", args.eval_only, sd) end
  if not (meta.mean and meta.std) then
    R.fail(parser, "%s lacks the normalisation (mean, std) metadata of a train_fashion_mnist.lua checkpoint",
      args.eval_only)
  end
  if args.threads then ft.set_num_threads(args.threads) end
  local model = ft.models.new("resnet-s", { num_classes = meta.num_classes or 10 })
  local loaded, err = pcall(model.load_state_dict, model, sd)
  if not loaded then R.fail(parser, "%s does not hold ResNet-S weights: %s", args.eval_only, err) end
  local t0 = wall()
  local acc = evaluate(model, test, meta.mean, meta.std)
  log("%s: test accuracy %.2f%% (%d images, %.1f s)", args.eval_only, 100 * acc, test.y:size(1), wall() - t0)
  os.exit(0)
end

-- ---- training (ft.train.loop) ----------------------------------------------------------------

local run = R.run(parser, args.out, { resume = args.resume })
local checkpoint_path = run:path("resnet_s.h5")
if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

local train = ft.data.fashion_mnist({ split = "train" })
local mean, std = train.x:mean():item(), train.x:std():item()   -- of the full training set
train = first(train, args.limit)
local n_train = train.y:size(1)

local model = ft.models.new("resnet-s", { num_classes = #train.classes })
local loader = ft.data.loader(train, { batch_size = args.batch_size, shuffle = true, seed = args.seed })
local steps_per_epoch = #loader
local total_steps = steps_per_epoch * args.epochs
local warmup = math.max(1, math.floor(0.1 * total_steps + 0.5))

local opt = ft.optim.SGD(model:parameters(), { lr = args.lr, momentum = 0.9, nesterov = true, weight_decay = 5e-4 })
local S = ft.optim.lr_scheduler
local sched = S.LinearWarmup(opt, { warmup_steps = warmup,
  after = S.CosineAnnealingLR(opt, { T_max = math.max(1, total_steps - warmup) }) })

log("ResNet-S: %d parameters; %d training images (mean %.4f, std %.4f); %d epochs of %d steps; %d threads",
  model:num_parameters(), n_train, mean, std, args.epochs, steps_per_epoch, ft.get_num_threads())

-- The epoch's running sums live in the loop's checkpointed state (exact --resume).
local state = { history = {}, loss_sum = 0, correct = 0, seen = 0, seconds = 0 }
local logger = ft.train.Logger({ path = run:path("metrics.jsonl"), total = total_steps, every = 50, unit = "images" })
model:train()
ft.train.loop({
  epochs = args.epochs, loader = loader, model = model, optimizer = opt, scheduler = sched,
  step = function(batch)
    local t0 = wall()
    local x = args.no_augment and batch.x or augment(batch.x)
    local logits
    local loss = ft.train.step(opt, function()
      logits = model(normalise(x, mean, std))
      return F.cross_entropy(logits, batch.y)
    end, { scheduler = sched })
    local b = batch.y:size(1)
    state.loss_sum = state.loss_sum + loss * b
    state.correct = state.correct + ft.train.correct(logits:detach(), batch.y)
    state.seen = state.seen + b
    state.seconds = state.seconds + (wall() - t0)
    return loss
  end,
  -- The test accuracy after every epoch (this recipe makes no choice on it: it trains a fixed
  -- number of epochs and keeps the last).
  evaluate = function(step)
    local epoch = step // steps_per_epoch
    local test_acc = evaluate(model, test, mean, std)
    local h = { epoch = epoch, train_loss = state.loss_sum / state.seen, train_acc = state.correct / state.seen,
      test_acc = test_acc, seconds = state.seconds }
    state.history[#state.history + 1] = h
    log("epoch %d/%d  loss %.4f  train acc %.2f%%  test acc %.2f%%  %.1f s/epoch  %.0f images/s", epoch, args.epochs,
      h.train_loss, 100 * h.train_acc, 100 * test_acc, h.seconds, state.seen / h.seconds)
    state.loss_sum, state.correct, state.seen, state.seconds = 0, 0, 0, 0
    model:train()
    return { epoch = epoch, train_loss = h.train_loss, train_acc = h.train_acc, test_acc = test_acc }
  end,
  logger = logger, state = state,
  checkpoint = run:path("checkpoint.h5"), checkpoint_every = steps_per_epoch, resume = args.resume,
})
logger:close()
local history = state.history
local test_acc = history[#history].test_acc

local total = 0
for _, h in ipairs(history) do total = total + h.seconds end
log("test accuracy %.2f%%  (%.1f s per epoch on average)", 100 * test_acc, total / #history)
-- machine-readable summary (scripts/bench/compare_fashion_mnist.sh reads it)
log("RESULT sec_per_epoch=%.2f images_per_sec=%.1f test_acc=%.4f", total / #history, n_train * #history / total,
  test_acc)

-- ---- checkpoint: save, reload into a fresh model, re-evaluate -----------------------------------

local meta = {
  model = "resnet_s", num_classes = #train.classes, mean = mean, std = std, epochs = args.epochs,
  batch_size = args.batch_size, lr = args.lr, seed = args.seed, train_images = n_train, test_acc = test_acc,
}
ft.save(checkpoint_path, model:state_dict(), { metadata = meta })
os.remove(run:path("checkpoint.h5"))

local sd, saved_meta = ft.load(checkpoint_path)
local fresh = ft.models.new("resnet-s", { num_classes = saved_meta.num_classes })
fresh:load_state_dict(sd)
local reloaded_acc = evaluate(fresh, test, saved_meta.mean, saved_meta.std)
log("saved %s; test accuracy after reloading %.2f%% (before saving %.2f%%)", checkpoint_path, 100 * reloaded_acc,
  100 * test_acc)
if reloaded_acc ~= test_acc then
  io.stderr:write("train_fashion_mnist.lua: the reloaded model's accuracy differs from the trained model's\n")
  os.exit(1)
end

-- ---- learning curve and results ------------------------------------------------------------------

local csv = { "epoch,train_loss,train_acc,test_acc,seconds" }
local epochs, train_curve, test_curve = {}, {}, {}
for i, h in ipairs(history) do
  csv[#csv + 1] = ("%d,%.6f,%.6f,%.6f,%.1f"):format(h.epoch, h.train_loss, h.train_acc, h.test_acc, h.seconds)
  epochs[i], train_curve[i], test_curve[i] = h.epoch, 100 * h.train_acc, 100 * h.test_acc
end
ft.fs.write(run:path("history.csv"), table.concat(csv, "\n") .. "\n")
ft.plot.line({ path = run:path("curve.png"), title = "ResNet-S on Fashion-MNIST", xlabel = "epoch",
  ylabel = "accuracy (%)", legend = "lower right",
  series = { { name = args.no_augment and "train" or "train (augmented)", x = epochs, y = train_curve },
    { name = "test", x = epochs, y = test_curve } } })
meta.checkpoint, meta.history, meta.threads = checkpoint_path, history, ft.get_num_threads()
meta.sec_per_epoch = total / #history
ft.json.write(run:path("results.json"), meta, { indent = true })
run:finish("resnet_s.h5, history.csv, curve.png, results.json, metrics.jsonl")
