#!/usr/bin/env bash
# scripts/finetune_vision.lua end to end on a tiny configuration, from the shipped checkpoints:
# --compare with every ResNet method, the WiSE sweep and its plot; ReFT on the ViT; and a
# user's own PNG folder (--data-dir); a killed run resumed with --resume. Checks the files the
# recipe writes and their contents (the learning curves, the chosen alpha marked on the WiSE
# plot, the comparison bars' y-axis), and that runs without --out get folders of their own.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fashion_mnist
tiny="--labels-per-class 4 --val-per-class 4 --epochs 1 --batch-size 8 --test-limit 40 --threads 2"

"$ftlua" scripts/finetune_vision.lua --compare $tiny --alphas 0,0.5,1 --out "$tmp/compare" > "$tmp/compare.log" 2>&1 \
  || { cat "$tmp/compare.log"; exit 1; }
cat "$tmp/compare.log"
"$ftlua" scripts/finetune_vision.lua --model vit --method reft $tiny --out "$tmp/reft" > "$tmp/reft.log" 2>&1 \
  || { cat "$tmp/reft.log"; exit 1; }
cat "$tmp/reft.log"

# A user's folder: three classes of PNGs (train/ and test/), written from Fashion-MNIST images.
cat > "$tmp/make_folder.lua" <<'LUA'
local root = arg[1]
local ds = ft.data.fashion_mnist{split = "test"}
local names = {"tshirt", "trouser", "bag"}
local labels = {1, 2, 9}
for c, name in ipairs(names) do
  local n = 0
  for i = 1, 400 do
    if ds.y[i]:item() == labels[c] and n < 12 then
      n = n + 1
      local split = n <= 8 and "train" or "test"
      os.execute(("mkdir -p %s/%s/%s"):format(root, split, name))
      ft.image.save(("%s/%s/%s/%02d.png"):format(root, split, name, n), ds.x[i])
    end
  end
end
LUA
"$ftlua" "$tmp/make_folder.lua" "$tmp/images"
"$ftlua" scripts/finetune_vision.lua --data-dir "$tmp/images" --method head --labels-per-class 3 --val-per-class 2 \
  --epochs 1 --batch-size 4 --threads 2 --out "$tmp/folder" > "$tmp/folder.log" 2>&1 || { cat "$tmp/folder.log"; exit 1; }
cat "$tmp/folder.log"

cat > "$tmp/check.lua" <<'LUA'
local dir = arg[1]
local function read(path)
  local f = assert(io.open(path), "missing " .. path)
  local s = f:read("a")
  f:close()
  return s
end
-- --compare: every ResNet method plus scratch, with sane parameter counts and accuracies
local r = ft.json.decode(read(dir .. "/compare/results.json"))
local by = {}
for _, row in ipairs(r.methods) do by[row.method] = row end
for _, m in ipairs{"head", "partial", "full", "lora", "ia3", "lpft", "scratch"} do
  local row = assert(by[m], "no row for " .. m)
  assert(row.id >= 0 and row.id <= 1 and row.ood >= 0 and row.ood <= 1, m .. ": accuracy out of range")
  assert(row.trainable > 0 and row.trainable <= row.total, m .. ": trainable count")
end
assert(by.head.trainable == 4 * 128 + 4, "head: only the new 4-way head trains, got " .. by.head.trainable)
assert(by.full.trainable == by.full.total, "full: everything trains")
assert(by.lora.trainable < 0.15 * by.full.total, "lora: a small fraction trains")
assert(by.ia3.trainable < by.lora.trainable, "ia3: fewer parameters than lora")
assert(by.partial.trainable < by.full.trainable and by.partial.trainable > by.head.trainable, "partial")
assert(#r.wise == 3 and r.wise[1].alpha == 0 and r.wise[3].alpha == 1, "wise rows")
local chosen = 0
for _, w in ipairs(r.wise) do if w.chosen then chosen = chosen + 1 end end
assert(chosen == 1, "exactly one chosen alpha")
-- alpha 1 is the fine-tuned (lpft) model itself
assert(math.abs(r.wise[3].id - by.lpft.id) < 1e-9, "wise alpha 1 equals the lpft model")
local csv = read(dir .. "/compare/results.csv")
assert(csv:match("^method,trainable,total,id,ood"), "csv header")
for _, png in ipairs{"compare/wise.png", "compare/compare.png", "compare/curve.png", "reft/curve.png", "folder/curve.png"} do
  local img = ft.image.load(dir .. "/" .. png)
  assert(img:size(2) > 100 and img:size(3) > 100, png .. " size")
end
-- ViT + ReFT: the adapter cannot be folded into the weights, so no sweep
local v = ft.json.decode(read(dir .. "/reft/results.json"))
assert(v.model == "vit" and v.methods[1].method == "reft", "reft run")
assert(v.methods[1].trainable < 0.1 * v.methods[1].total, "reft: few parameters train")
-- the PNG folder: three classes
local f = ft.json.decode(read(dir .. "/folder/results.json"))
assert(f.methods[1].method == "head" and f.methods[1].trainable == 3 * 128 + 3, "folder: a 3-way head")
print("PASS: results checked")
LUA
"$ftlua" "$tmp/check.lua" "$tmp"
grep -q "skipped" "$tmp/reft.log" || { echo "FAIL: the reft run should skip the WiSE sweep"; exit 1; }
# --resume: a run killed during fine-tuning (once its first checkpoint exists) and resumed
# ends with the numbers of an uninterrupted run.
one="--method full --labels-per-class 4 --val-per-class 4 --epochs 8 --batch-size 4 --test-limit 40 --threads 2 --alphas 0,1"
"$ftlua" scripts/finetune_vision.lua $one --out "$tmp/straight" > "$tmp/straight.log" 2>&1 || { cat "$tmp/straight.log"; exit 1; }
"$ftlua" scripts/finetune_vision.lua $one --out "$tmp/killed" > "$tmp/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -e "$tmp/killed/checkpoint_full.h5" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ ! -e "$tmp/killed/results.json" ] || { echo "FAIL: the run finished before it could be killed"; exit 1; }
"$ftlua" scripts/finetune_vision.lua $one --out "$tmp/killed" --resume > "$tmp/resumed.log" 2>&1 || { cat "$tmp/resumed.log"; exit 1; }
grep -q "resumed from" "$tmp/resumed.log" || { echo "FAIL: --resume did not resume"; exit 1; }
cat > "$tmp/same.lua" <<'LUA'
local function read(p) local f = assert(io.open(p)) local s = f:read("a") f:close() return ft.json.decode(s) end
local a, b = read(arg[1]), read(arg[2])
for i, m in ipairs(a.methods) do
  for _, k in ipairs{"id", "ood", "val_id", "val_ood", "trainable"} do
    assert(m[k] == b.methods[i][k], ("resumed %s %s: %s, uninterrupted %s"):format(m.method, k, tostring(b.methods[i][k]), tostring(m[k])))
  end
end
for i, w in ipairs(a.wise) do assert(w.id == b.wise[i].id and w.ood == b.wise[i].ood, "wise alpha " .. w.alpha) end
print("PASS: killed and resumed run equals the uninterrupted one")
LUA
"$ftlua" "$tmp/same.lua" "$tmp/straight/results.json" "$tmp/killed/results.json"
[ ! -e "$tmp/killed/checkpoint_full.h5" ] || { echo "FAIL: checkpoints left behind"; exit 1; }
echo "PASS: finetune_vision.lua compare, ViT ReFT, --data-dir and --resume runs"
