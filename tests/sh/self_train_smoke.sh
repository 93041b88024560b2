#!/usr/bin/env bash
# scripts/self_train.lua end to end on a tiny configuration (random small models, a few steps,
# 64 unlabelled and 64 test examples): every method runs, the outputs are written and agree with
# each other, a second run with the same seed gives the same numbers, and a missing checkpoint
# is a clear error. Text needs Debian's fortunes package, vision dataset-fashion-mnist.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

# The consistency checks of check_outputs: check.lua DIR KEYS TEST_COUNT LOG
cat > "$tmp/check.lua" <<'EOF'
local dir, keys, count = arg[1], arg[2], tonumber(arg[3])
local f = assert(io.open(dir .. "/results.json")); local r = ft.json.decode(f:read("a")); f:close()
local got = {}
for i, m in ipairs(r.methods) do got[i] = m.key end
assert(table.concat(got, " ") == keys, "methods " .. table.concat(got, " ") .. ", expected " .. keys)
assert(r.data.test == count, "test examples " .. tostring(r.data.test) .. ", expected " .. count)
local csv = {}
for line in io.lines(dir .. "/results.csv") do csv[#csv + 1] = line end
assert(#csv == #r.methods + 1, "results.csv has " .. #csv .. " lines")
local log = assert(io.open(arg[4])):read("a")
for i, m in ipairs(r.methods) do
  local a = m.test_accuracy
  assert(type(a) == "number" and a >= 0 and a <= 1, m.key .. ": test accuracy " .. tostring(a))
  -- an accuracy is a count over the test examples
  assert(math.abs(a * count - math.floor(a * count + 0.5)) < 1e-6, m.key .. ": " .. a .. " is not k/" .. count)
  local key, name, test = csv[i + 1]:match("^([^,]*),([^,]*),([^,]*)")
  assert(key == m.key and name == m.name, "csv row " .. i .. ": " .. csv[i + 1])
  assert(math.abs(tonumber(test) - a) < 1e-5, "csv test accuracy " .. test .. " vs json " .. a)
  local shown = ("%.2f%%"):format(100 * a)
  assert(log:find(m.name, 1, true) and log:find(shown, 1, true), "table lacks " .. m.name .. " " .. shown)
end
local g = r.self_training_gain
assert(math.abs(g.cosine_minus_weak - (r.methods[3].test_accuracy - r.methods[2].test_accuracy)) < 1e-9)
EOF

# check_outputs DIR KEYS TEST_COUNT LOG: results.json holds the methods KEYS (in order) with
# accuracies in [0, 1] on TEST_COUNT test examples; results.csv has the same test accuracies;
# the PNG chart is a PNG; the printed table shows each method's test accuracy.
check_outputs() {
  local dir=$1 keys=$2 count=$3 log=$4
  for f in results.json results.csv accuracy.png curve.png weak.jsonl cosine.jsonl pseudo.jsonl; do
    [ -s "$dir/$f" ] || fail "$dir/$f missing"
  done
  is_png "$dir/accuracy.png" || fail "accuracy.png is not a PNG"
  is_png "$dir/curve.png" || fail "curve.png is not a PNG"
  head -1 "$log" | grep -q "run folder $dir\$" || fail "the first line does not name the run folder $dir"
  tail -1 "$log" | grep -q "in $dir (" || fail "the last line does not name the run folder $dir"
  grep -q '"dev_accuracy"' "$dir/cosine.jsonl" || fail "cosine.jsonl has no dev accuracy record"
  "$ftlua" "$tmp/check.lua" "$dir" "$keys" "$count" "$log" || fail "inconsistent outputs in $dir"
}

# --- text --------------------------------------------------------------------------------------
if have_fortunes computers; then
  small=(--init random --limit 64 --steps 6 --self-steps 6 --gold-steps 4 --eval-every 3 --max-bytes 32
         --batch-size 8 --threads 2)
  "$ftlua" scripts/self_train.lua "${small[@]}" --out "$tmp/a/text" > "$tmp/text.log" 2>&1 || { cat "$tmp/text.log"; fail "text run"; }
  cat "$tmp/text.log"
  check_outputs "$tmp/a/text" "lf_vote weak cosine pseudo gold" 64 "$tmp/text.log"
  # the labeling-function report: a row per function (a dozen or more) with coverage, conflicts, accuracy
  report="$tmp/a/text/lf_report.txt"
  grep -q "conflicts.*accuracy" "$report" || fail "lf_report.txt has no accuracy column"
  lfs=$(sed -n '/^dev set/,$p' "$report" | grep -cE '^[a-z_]+ +\{' || true)
  [ "$lfs" -ge 12 ] || fail "lf_report.txt lists $lfs labeling functions on the dev set, expected >= 12"
  grep -q "majority vote on the pool: .* (coverage" "$tmp/text.log" || fail "no pool coverage line"
  # same seed, same numbers (the seconds column aside)
  "$ftlua" scripts/self_train.lua "${small[@]}" --out "$tmp/b/text" > "$tmp/text2.log" 2>&1 || { cat "$tmp/text2.log"; fail "second text run"; }
  diff <(cut -d, -f1-6 "$tmp/a/text/results.csv") <(cut -d, -f1-6 "$tmp/b/text/results.csv") \
    || fail "two runs with seed 1 differ"
  # a missing checkpoint names itself
  if "$ftlua" scripts/self_train.lua --checkpoint "$tmp/none.h5" --out "$tmp/c" > "$tmp/err.log" 2>&1; then
    fail "a missing checkpoint did not fail"
  fi
  grep -q "$tmp/none.h5 not found" "$tmp/err.log" || { cat "$tmp/err.log"; fail "the error does not name the checkpoint"; }
  echo "PASS: text"
else
  echo "SKIP text: fortunes is not installed (Debian package fortunes)"
fi

# --- vision ------------------------------------------------------------------------------------
if have_fashion_mnist; then
  "$ftlua" scripts/self_train.lua --task vision --init random --limit 64 --labels-per-class 3 --dev-per-class 4 \
    --steps 6 --self-steps 6 --gold-steps 4 --eval-every 3 --batch-size 16 --threads 2 \
    --augment strong --balance on --select 0.5 --out "$tmp/a/vision" > "$tmp/vision.log" 2>&1 \
    || { cat "$tmp/vision.log"; fail "vision run"; }
  cat "$tmp/vision.log"
  check_outputs "$tmp/a/vision" "head weak cosine pseudo gold" 64 "$tmp/vision.log"
  # class-balanced selection keeps half of each predicted class's share of the 64 pool images
  kept=$(grep -oE "\(top 0.5 by confidence\) for balanced batches: [0-9, ]+" "$tmp/vision.log" \
    | grep -oE "[0-9]+(, [0-9]+)*$" | tr -d ' ' | tr ',' '+') || fail "no balanced selection line"
  [ "$((kept))" -ge 32 ] && [ "$((kept))" -le 36 ] || fail "selection kept $kept of 64 pool images, expected 32-36"
  grep -q "12 labelled (3 per class), 16 dev" "$tmp/vision.log" || fail "vision split sizes"
  echo "PASS: vision"
else
  echo "SKIP vision: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
fi
