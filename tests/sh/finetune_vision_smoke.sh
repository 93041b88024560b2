#!/usr/bin/env bash
# scripts/finetune_vision.lua end to end on a tiny configuration, from the shipped checkpoints:
# --compare with every ResNet method, the WiSE sweep and its plot; ReFT on the ViT; and a
# user's own PNG folder (--data-dir). Checks the files the recipe writes and their contents.
set -euo pipefail
ftlua=${FTLUA:-build/ftlua}
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "SKIP: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
for _, png in ipairs{"compare/wise.png", "compare/compare.png"} do
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
echo "PASS: finetune_vision.lua compare, ViT ReFT and --data-dir runs"
