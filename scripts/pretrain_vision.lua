-- Pretrains the vision checkpoints the fine-tuning recipes start from: ResNet-S (default) or a
-- small ViT on the six clothing classes of Fashion-MNIST (T-shirt/top, Trouser, Pullover,
-- Dress, Coat, Shirt: dataset ids 0-4 and 6, ft labels {1,2,3,4,5,7}, relabelled 1..6). The
-- other four classes (Sandal, Sneaker, Bag, Ankle boot) stay unseen for transfer experiments.
--
--   ftlua scripts/pretrain_vision.lua --threads 2 --out models/resnet_s_clothing.h5
--   ftlua scripts/pretrain_vision.lua --model vit --threads 2 --out models/vit_s_clothing.h5
--   ftlua scripts/pretrain_vision.lua --limit 256 --epochs 1 --out /tmp/smoke.h5   # smoke run
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
-- Also written to --log-dir (default runs/pretrain_<model>): history.csv (per epoch: train
-- loss, train and validation accuracy, seconds), curve.png (the accuracies per epoch) and
-- results.json (the metadata above with the history).
local ft = require "ft"
local argparse = require "argparse"
local T = require "ft.transforms"

local script_dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."


local F = ft.nn.functional
local P = ft.progress
local log = P.log

local CLOTHING = { 1, 2, 3, 4, 5, 7 } -- ft labels (dataset ids + 1) of the six clothing classes

local parser = argparse("pretrain_vision.lua", "Pretrain ResNet-S or a small ViT on Fashion-MNIST's clothing classes.")
parser:option("--model", "resnet or vit.", "resnet"):choices({ "resnet", "vit" })
parser:option("--epochs", "Training epochs (default: 10 for resnet, 15 for vit, as the shipped checkpoints)."):convert(math.tointeger)
parser:option("--lr", "Peak learning rate (default: 0.1 for resnet, 1e-3 for vit)."):convert(tonumber)
parser:option("--batch-size", "Images per batch.", "128"):convert(math.tointeger)
parser:option("--seed", "Random seed (split, initialisation, shuffling, augmentation).", "1"):convert(math.tointeger)
parser:option("--threads", "Threads (default: all cores)."):convert(math.tointeger)
parser:option("--out", "Checkpoint path (default: runs/pretrain/<model>_clothing.h5).")
parser:option("--log-dir", "Folder for history.csv, curve.png and results.json (default: runs/pretrain_<model>).")
parser:option("--val-size", "Training images held out for validation.", "5000"):convert(math.tointeger)
parser:option("--limit", "Smoke runs: train on N images, validate and test on at most N."):convert(math.tointeger)
parser:option("--patch-size", "ViT patch size (7: 16 patches, or 4: 49).", "7"):convert(math.tointeger)
parser:option("--hidden-size", "ViT width.", "128"):convert(math.tointeger)
parser:option("--layers", "ViT encoder layers.", "4"):convert(math.tointeger)
parser:option("--heads", "ViT attention heads.", "4"):convert(math.tointeger)
parser:flag("--no-augment", "Train without augmentation.")
local args = parser:parse()

local is_vit = args.model == "vit"
args.epochs = args.epochs or (is_vit and 15 or 10)
args.lr = args.lr or (is_vit and 1e-3 or 0.1)
args.out = args.out or ("runs/pretrain/" .. (is_vit and "vit_s" or "resnet_s") .. "_clothing.h5")
local command = "ftlua scripts/pretrain_vision.lua " .. table.concat(arg, " ")

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)
local started = ft.clock()

-- ---- data ------------------------------------------------------------------------------------

local function first(ds, n)
  if not n or n >= ds.y:size(1) then return ds end
  return { x = ds.x:narrow(1, 1, n), y = ds.y:narrow(1, 1, n), classes = ds.classes }
end

local clothing = ft.data.subset(ft.data.fashion_mnist({ split = "train" }), CLOTHING, { relabel = true })
local train, val = ft.data.split(clothing, args.val_size, { seed = args.seed })
local test = ft.data.subset(ft.data.fashion_mnist({ split = "test" }), CLOTHING, { relabel = true })
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
  for i, name in ipairs(classes) do
    config.id2label[tostring(i - 1)] = name
    config.label2id[name] = i - 1
  end
  model = vit.ViTForImageClassification(config)
  logits_of = function(x) return model(x).logits end
else
  local resnet = require "ft.models.resnet"
  config = { arch = "resnet_s", num_classes = #classes }
  model = resnet.resnet_s({ num_classes = #classes })
  logits_of = model
end

local function normalise(x) return (x - mean) / std end

local function evaluate(dataset)
  model:eval()
  local correct = 0
  ft.no_grad(function()
    for x, y in ft.data.loader(dataset, { batch_size = 500 }):iter() do
      correct = correct + logits_of(normalise(x)):argmax(2):eq(y):sum():item()
    end
  end)
  return correct / dataset.y:size(1)
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
  for name, p in model:named_parameters() do
    if p:dim() >= 2 and not name:match("embeddings%.cls_token$") and not name:match("position_embeddings$") then
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

-- ---- training ----------------------------------------------------------------------------------

local function snapshot()
  local copy = {}
  for name, t in pairs(model:state_dict()) do copy[name] = t:clone() end
  return copy
end

local best = { acc = -1 }
local history = {}
for epoch = 1, args.epochs do
  model:train()
  local t0 = ft.clock()
  local loss_sum, correct, seen, step = 0, 0, 0, 0
  for x, y in loader:iter() do
    step = step + 1
    if not args.no_augment then x = augment(x) end
    local logits = logits_of(normalise(x))
    local loss = F.cross_entropy(logits, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()

    local b = y:size(1)
    loss_sum = loss_sum + loss:item() * b
    correct = correct + logits:argmax(2):eq(y):sum():item()
    seen = seen + b
    local elapsed = ft.clock() - t0
    P.progress(step, steps_per_epoch, 50, "epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s  ETA %s",
      epoch, args.epochs, step, steps_per_epoch, loss_sum / seen, seen / elapsed,
      P.hms(elapsed / step * (steps_per_epoch - step)))
  end
  local dt = ft.clock() - t0
  local val_acc = evaluate(val)
  local mark = ""
  if val_acc > best.acc then
    best = { acc = val_acc, epoch = epoch, state = snapshot() }
    mark = "  (best)"
  end
  log("epoch %d/%d  loss %.4f  train acc %.2f%%  val acc %.2f%%%s  %.1f s  %.0f images/s", epoch, args.epochs,
    loss_sum / seen, 100 * correct / seen, 100 * val_acc, mark, dt, seen / dt)
  history[epoch] = { epoch = epoch, train_loss = loss_sum / seen, train_acc = correct / seen, val_acc = val_acc,
    seconds = dt }
end

model:load_state_dict(best.state)
local test_acc = evaluate(test)
-- The same test images under T.corrupt's fixed corruptions (seed 1): a distribution shift.
local corrupt_acc = evaluate({ x = T.corrupt(test.x, { seed = 1 }), y = test.y })
local seconds = ft.clock() - started
log("best epoch %d: val acc %.2f%%  test acc %.2f%%  corrupted test acc %.2f%%  (%s in all)", best.epoch,
  100 * best.acc, 100 * test_acc, 100 * corrupt_acc, P.hms(seconds))

-- ---- checkpoint ----------------------------------------------------------------------------------

local meta = {
  model = is_vit and "vit" or "resnet_s", config = ft.json.encode(config), classes = ft.json.encode(classes),
  fashion_mnist_labels = ft.json.encode(CLOTHING), mean = mean, std = std, command = command, seed = args.seed,
  threads = ft.get_num_threads(), epochs = args.epochs, best_epoch = best.epoch, val_acc = best.acc,
  test_acc = test_acc, test_corrupt_acc = corrupt_acc, train_images = train.y:size(1), seconds = seconds,
}
ft.fs.mkdir_for(args.out)
ft.save(args.out, model:state_dict(), { meta = meta })
log("saved %s", args.out)

-- ---- learning curve ------------------------------------------------------------------------------

local log_dir = ft.fs.mkdir(args.log_dir or ("runs/pretrain_" .. (is_vit and "vit" or "resnet")))
local csv = { "epoch,train_loss,train_acc,val_acc,seconds" }
local epochs, train_curve, val_curve = {}, {}, {}
for i, h in ipairs(history) do
  csv[#csv + 1] = ("%d,%.6f,%.6f,%.6f,%.1f"):format(h.epoch, h.train_loss, h.train_acc, h.val_acc, h.seconds)
  epochs[i], train_curve[i], val_curve[i] = h.epoch, 100 * h.train_acc, 100 * h.val_acc
end
ft.fs.write(log_dir .. "/history.csv", table.concat(csv, "\n") .. "\n")
ft.plot.line({ path = log_dir .. "/curve.png", title = ("%s on the clothing classes"):format(is_vit and "ViT" or "ResNet-S"),
  xlabel = "epoch", ylabel = "accuracy (%)", legend = "lower right",
  series = { { name = "train (augmented)", x = epochs, y = train_curve }, { name = "validation", x = epochs, y = val_curve } } })
meta.checkpoint, meta.history = args.out, history
ft.json.write(log_dir .. "/results.json", meta, { indent = true })
log("wrote %s/history.csv, curve.png, results.json", log_dir)
