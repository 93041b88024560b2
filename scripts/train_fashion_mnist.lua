-- Trains ResNet-S from scratch on Fashion-MNIST and saves a checkpoint.
--
--   ftlua scripts/train_fashion_mnist.lua                     # full run (>= 92% test accuracy)
--   ftlua scripts/train_fashion_mnist.lua --limit 2000 --epochs 1 --out /tmp/smoke.h5
--   ftlua scripts/train_fashion_mnist.lua --eval-only runs/fashion_mnist/resnet_s.h5
--
-- Recipe: inputs normalised with the training set's mean and std; random crop (2-pixel zero
-- padding) and horizontal flip; SGD with Nesterov momentum 0.9 and weight decay 5e-4;
-- batches of 128; linear warmup over the first 10% of steps, then cosine decay to 0.
-- Measured (seed 1): 3 epochs 91.6%, 4 epochs 92.5%, 5 epochs (the default) 92.8% test accuracy.
-- scripts/bench/train_fashion_mnist_torch.py is the same run in PyTorch.
local ft = require "ft"
local argparse = require "argparse"
local T = require "ft.transforms"

local script_dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."

local resnet = require "ft.models.resnet"

local F = ft.nn.functional

local parser = argparse("train_fashion_mnist.lua", "Train ResNet-S from scratch on Fashion-MNIST.")
parser:option("--epochs", "Training epochs.", "5"):convert(math.tointeger)
parser:option("--batch-size", "Images per batch.", "128"):convert(math.tointeger)
parser:option("--lr", "Peak learning rate.", "0.1"):convert(tonumber)
parser:option("--seed", "Random seed (initialisation, shuffling, augmentation).", "1"):convert(math.tointeger)
parser:option("--threads", "Threads (default: all cores)."):convert(math.tointeger)
parser:option("--out", "Checkpoint path.", "runs/fashion_mnist/resnet_s.h5")
parser:option("--limit", "Use only the first N training images (smoke runs)."):convert(math.tointeger)
parser:option("--test-limit", "Evaluate on only the first N test images (smoke runs)."):convert(math.tointeger)
parser:option("--eval-only", "Evaluate this checkpoint on the test set and exit."):argname("<checkpoint>")
parser:flag("--no-augment", "Train without random crops and flips.")
local args = parser:parse()

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

-- ---- progress output -----------------------------------------------------------------------

local P = ft.progress
local hms, log, progress = P.hms, P.log, P.progress

local wall = ft.clock   -- monotonic wall-clock seconds

-- ---- data ------------------------------------------------------------------------------------

local function normalise(x, mean, std) return (x - mean) / std end

-- Random crop with 2-pixel zero padding and horizontal flip, per image. x [B,1,H,W] in [0,1].
local augment = T.compose({ { T.random_crop, 2 }, { T.hflip, 0.5 } })

local function evaluate(model, dataset, mean, std)
  model:eval()
  local correct, n = 0, dataset.y:size(1)
  ft.no_grad(function()
    for x, y in ft.data.loader(dataset, { batch_size = 500 }):iter() do
      local pred = model(normalise(x, mean, std)):argmax(2)
      correct = correct + pred:eq(y):sum():item()
    end
  end)
  return correct / n
end

local test = ft.data.fashion_mnist({ split = "test" })
if args.test_limit and args.test_limit < test.y:size(1) then
  test = { x = test.x:narrow(1, 1, args.test_limit), y = test.y:narrow(1, 1, args.test_limit), classes = test.classes }
end

-- ---- evaluation only -------------------------------------------------------------------------

if args.eval_only then
  local sd, meta = ft.load(args.eval_only)
  local model = resnet.resnet_s({ num_classes = meta.num_classes or 10 })
  model:load_state_dict(sd)
  assert(meta.mean and meta.std, "checkpoint lacks the normalisation (mean, std) metadata")
  local t0 = wall()
  local acc = evaluate(model, test, meta.mean, meta.std)
  log("%s: test accuracy %.2f%% (%d images, %.1f s)", args.eval_only, 100 * acc, test.y:size(1), wall() - t0)
  os.exit(0)
end

-- ---- training --------------------------------------------------------------------------------

local train = ft.data.fashion_mnist({ split = "train" })
local mean, std = train.x:mean():item(), train.x:std():item()   -- of the full training set
if args.limit and args.limit < train.y:size(1) then
  train = { x = train.x:narrow(1, 1, args.limit), y = train.y:narrow(1, 1, args.limit), classes = train.classes }
end
local n_train = train.y:size(1)

local model = resnet.resnet_s({ num_classes = #train.classes })
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

local epoch_times = {}
local test_acc
for epoch = 1, args.epochs do
  model:train()
  local t0 = wall()
  local loss_sum, correct, seen = 0, 0, 0
  local step = 0
  for x, y in loader:iter() do
    step = step + 1
    if not args.no_augment then x = augment(x) end
    local logits = model(normalise(x, mean, std))
    local loss = F.cross_entropy(logits, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()

    local b = y:size(1)
    loss_sum = loss_sum + loss:item() * b
    correct = correct + logits:argmax(2):eq(y):sum():item()
    seen = seen + b
    local elapsed = wall() - t0
    progress(step, steps_per_epoch, 50, "epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s  ETA %s",
      epoch, args.epochs, step, steps_per_epoch, loss_sum / seen, seen / elapsed,
      hms(elapsed / step * (steps_per_epoch - step)))
  end
  local dt = wall() - t0
  epoch_times[#epoch_times + 1] = dt
  test_acc = evaluate(model, test, mean, std)
  log("epoch %d/%d  loss %.4f  train acc %.2f%%  test acc %.2f%%  %.1f s/epoch  %.0f images/s",
    epoch, args.epochs, loss_sum / seen, 100 * correct / seen, 100 * test_acc, dt, seen / dt)
end

local total = 0
for _, t in ipairs(epoch_times) do total = total + t end
log("test accuracy %.2f%%  (%.1f s per epoch on average)", 100 * test_acc, total / #epoch_times)
-- machine-readable summary (scripts/bench/compare_fashion_mnist.sh reads it)
log("RESULT sec_per_epoch=%.2f images_per_sec=%.1f test_acc=%.4f", total / #epoch_times,
  n_train * #epoch_times / total, test_acc)

-- ---- checkpoint: save, reload into a fresh model, re-evaluate -----------------------------------

ft.fs.mkdir_for(args.out)
ft.save(args.out, model:state_dict(), { meta = {
  model = "resnet_s", num_classes = #train.classes, mean = mean, std = std, epochs = args.epochs,
  batch_size = args.batch_size, lr = args.lr, seed = args.seed, train_images = n_train, test_acc = test_acc,
} })

local sd, meta = ft.load(args.out)
local fresh = resnet.resnet_s({ num_classes = meta.num_classes })
fresh:load_state_dict(sd)
local reloaded_acc = evaluate(fresh, test, meta.mean, meta.std)
log("saved %s; test accuracy after reloading %.2f%% (before saving %.2f%%)", args.out, 100 * reloaded_acc,
  100 * test_acc)
if reloaded_acc ~= test_acc then
  io.stderr:write("error: the reloaded model's accuracy differs from the trained model's\n")
  os.exit(1)
end
