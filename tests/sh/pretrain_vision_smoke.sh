#!/usr/bin/env bash
# scripts/pretrain_vision.lua end to end on a slice of the real Fashion-MNIST (Debian package
# dataset-fashion-mnist), for ResNet-S and the ViT: a few steps, then the checkpoint is loaded
# into a fresh model built from its metadata, which must give the recorded test accuracy.
set -euo pipefail
ftlua=${FTLUA:-build/ftlua}
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "SKIP: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/check.lua" <<'LUA'
local path, limit = arg[1], tonumber(arg[2])
local sd, meta = ft.load(path)
local config = ft.json.decode(meta.config)
local classes = ft.json.decode(meta.classes)
assert(#classes == 6 and classes[6] == "Shirt", "classes: " .. meta.classes)
assert(meta.fashion_mnist_labels == "[1,2,3,4,5,7]", "labels: " .. tostring(meta.fashion_mnist_labels))
for _, k in ipairs{"mean", "std", "seed", "threads", "val_acc", "test_acc", "test_corrupt_acc", "best_epoch"} do
  assert(type(meta[k]) == "number", "meta." .. k .. " missing")
end
assert(meta.command:match("^ftlua scripts/pretrain_vision.lua "), "command: " .. tostring(meta.command))
local model
if meta.model == "vit" then
  model = require("ft.models.vit").ViTForImageClassification(config)
else
  assert(meta.model == "resnet_s", "model: " .. tostring(meta.model))
  model = require("ft.models.resnet").resnet_s{num_classes = config.num_classes}
end
model:load_state_dict(sd)   -- strict: every tensor present, no extra one
model:eval()
local test = ft.data.subset(ft.data.fashion_mnist{split = "test"}, {1, 2, 3, 4, 5, 7}, {relabel = true})
local x, y = test.x:narrow(1, 1, limit), test.y:narrow(1, 1, limit)
local logits = ft.no_grad(function()
  local out = model((x - meta.mean) / meta.std)
  return out.logits or out
end)
local acc = logits:argmax(2):eq(y):sum():item() / limit
assert(acc == meta.test_acc, ("reloaded test accuracy %g, recorded %g"):format(acc, meta.test_acc))
print(("%s: %s reloaded, test accuracy %.4f as recorded"):format(path, meta.model, acc))
LUA

cat > "$tmp/curve.lua" <<'LUA'
local dir, logfile = arg[1], arg[2]
local rows = {}
for line in io.lines(dir .. "/history.csv") do rows[#rows + 1] = line end
assert(rows[1] == "epoch,train_loss,train_acc,val_acc,seconds", "header: " .. rows[1])
assert(#rows == 3, "history.csv has " .. #rows .. " lines, expected a header and 2 epochs")
local log = assert(io.open(logfile)):read("a")
for i = 2, 3 do
  local epoch, val = rows[i]:match("^(%d+),[^,]*,[^,]*,([^,]*),")
  local shown = ("epoch %s/2 .* val acc %.2f%%%%"):format(epoch, 100 * tonumber(val))
  assert(log:find(shown), "the log has no line '" .. shown .. "'")
end
local r = ft.json.decode(assert(io.open(dir .. "/results.json")):read("a"))
assert(#r.history == 2 and r.best_epoch >= 1 and r.test_acc >= 0, "results.json")
local png = assert(io.open(dir .. "/curve.png", "rb")):read(8)
assert(png == "\137PNG\r\n\26\n", "curve.png is not a PNG")
LUA

for model in resnet vit; do
  "$ftlua" scripts/pretrain_vision.lua --model "$model" --limit 128 --epochs 2 --batch-size 64 --patch-size 7 \
    --threads 2 --out "$tmp/$model.h5" --log-dir "$tmp/$model-log" > "$tmp/$model.log" 2>&1 \
    || { cat "$tmp/$model.log"; exit 1; }
  cat "$tmp/$model.log"
  grep -q "best epoch [12]: val acc" "$tmp/$model.log" || { echo "FAIL: no summary line for $model"; exit 1; }
  "$ftlua" "$tmp/check.lua" "$tmp/$model.h5" 128 || { echo "FAIL: $model checkpoint does not reload"; exit 1; }
  # the learning curve: a row per epoch, its validation accuracies those of the log lines
  "$ftlua" "$tmp/curve.lua" "$tmp/$model-log" "$tmp/$model.log" || { echo "FAIL: $model learning curve"; exit 1; }
done
echo "PASS: ResNet-S and ViT pretrained, saved and reloaded"
