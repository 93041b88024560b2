#!/usr/bin/env bash
# scripts/pretrain_vision.lua end to end on a slice of the real Fashion-MNIST (Debian package
# dataset-fashion-mnist), for ResNet-S and the ViT: a few steps, then the checkpoint is loaded
# into a fresh model built from its metadata, which must give the recorded test accuracy; the
# run's folder holds the learning curve; --save writes a second copy of the checkpoint; a run
# killed after its first epoch and resumed ends as an uninterrupted one.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fashion_mnist

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
-- metrics.jsonl: a line per training step (4) and per evaluation (2)
local steps, evals = 0, 0
for line in io.lines(dir .. "/metrics.jsonl") do
  local r = ft.json.decode(line)
  if r.loss then steps = steps + 1 end
  if r.val_acc then evals = evals + 1 end
end
assert(steps == 4 and evals == 2, ("metrics.jsonl: %d step and %d evaluation lines"):format(steps, evals))
LUA

for model in resnet vit; do
  file=$([ "$model" = vit ] && echo vit_s || echo resnet_s)_clothing.h5
  run_recipe "$tmp/$model.log" pretrain_vision.lua --model "$model" --limit 128 --epochs 2 --batch-size 64 \
    --patch-size 7 --threads 2 --out "$tmp/$model" --save "$tmp/copy/$file"
  cat "$tmp/$model.log"
  grep -q "best epoch [12]: val acc" "$tmp/$model.log" || fail "no summary line for $model"
  # the run's folder, printed at the start and at the end
  head -1 "$tmp/$model.log" | grep -q "run folder $tmp/$model\$" || fail "the first line does not name the run folder"
  tail -1 "$tmp/$model.log" | grep -q "in $tmp/$model (" || fail "the last line does not name the run folder"
  "$ftlua" "$tmp/check.lua" "$tmp/$model/$file" 128 || fail "$model checkpoint does not reload"
  same_weights "$tmp/$model/$file" "$tmp/copy/$file" || fail "--save did not write the same checkpoint"
  [ ! -e "$tmp/$model/checkpoint.h5" ] || fail "the training checkpoint is left behind"
  # the learning curve: a row per epoch, its validation accuracies those of the log lines
  "$ftlua" "$tmp/curve.lua" "$tmp/$model" "$tmp/$model.log" || fail "$model learning curve"
done

# A second run into the same folder is refused (one run never overwrites another).
if "$ftlua" scripts/pretrain_vision.lua --limit 128 --epochs 1 --out "$tmp/resnet" > "$tmp/again.log" 2>&1; then
  fail "a second run overwrote $tmp/resnet"
fi
grep -q "already holds another run" "$tmp/again.log" || { cat "$tmp/again.log"; fail "no clear refusal"; }

# --resume: killed once the first epoch's checkpoint exists, resumed: the numbers of an
# uninterrupted run (same threads).
one=(--limit 128 --epochs 2 --batch-size 32 --threads 2)
run_recipe "$tmp/straight.log" pretrain_vision.lua "${one[@]}" --out "$tmp/straight"
"$ftlua" scripts/pretrain_vision.lua "${one[@]}" --out "$tmp/killed" > "$tmp/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do [ -e "$tmp/killed/checkpoint.h5" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ ! -e "$tmp/killed/results.json" ] || fail "the run finished before it could be killed"
run_recipe "$tmp/resumed.log" pretrain_vision.lua "${one[@]}" --out "$tmp/killed" --resume
grep -q "resumed from" "$tmp/resumed.log" || { cat "$tmp/resumed.log"; fail "--resume did not resume"; }
cat > "$tmp/same.lua" <<'LUA'
local a, b = ft.json.read(arg[1]), ft.json.read(arg[2])
for _, k in ipairs{"val_acc", "test_acc", "test_corrupt_acc", "best_epoch"} do
  assert(a[k] == b[k], ("resumed %s %s, uninterrupted %s"):format(k, tostring(b[k]), tostring(a[k])))
end
for i, h in ipairs(a.history) do
  assert(h.train_loss == b.history[i].train_loss and h.val_acc == b.history[i].val_acc, "epoch " .. i)
end
LUA
"$ftlua" "$tmp/same.lua" "$tmp/straight/results.json" "$tmp/killed/results.json" || fail "resumed run differs"
echo "PASS: ResNet-S and ViT pretrained, saved and reloaded; a killed run resumed exactly"
