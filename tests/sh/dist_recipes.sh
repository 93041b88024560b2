#!/bin/bash
# The recipes under mpirun -np 2, with the flags of a single-process run: finetune_text.lua (LoRA
# on a tiny random GPT, uneven token counts per rank) and finetune_vision.lua (full fine-tuning
# of the shipped ResNet-S, BatchNorm on batch statistics: SyncBatchNorm) print the same lines as
# one process (timings apart) and write the same results within float32 rounding; only rank 0
# prints; a distributed run stopped with --stop-at and resumed ends where an uninterrupted one does;
# preference.lua --compare (every method) under mpirun with --per-rank-batch equals one process.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_mpi
need_fortunes science

# The lines two runs must share: timings, rates and the folder name left out.
steady() { sed -E -e 's/[0-9.]+ (tokens|items)\/s//' -e 's/ETA [0-9:]+//' -e 's/\(?[0-9:]+ in all\)?//' \
  -e "s#$tmp/[a-z0-9_]+##g" -e 's/ +[0-9]+\.[0-9]$//' -e 's/; [0-9.]+ s\)/)/' "$1"; }

# results.json of two runs: every number in path (a list of keys) within rel.
close_results() { # close_results A B REL key...
  "$ftlua" - "$@" <<'LUA'
local a, b, rel = ft.json.read(arg[1]), ft.json.read(arg[2]), tonumber(arg[3])
local function walk(x, y, where)
  if type(x) == "number" then
    if where:find("seconds") then return end
    local d = math.abs(x - y) / math.max(1, math.abs(x))
    assert(d <= rel, ("%s: %.17g against %.17g"):format(where, x, y))
  elseif type(x) == "table" then
    for k, v in pairs(x) do walk(v, y[k], where .. "." .. tostring(k)) end
  end
end
for i = 4, #arg do walk(a[arg[i]], b[arg[i]], arg[i]) end
LUA
}

# Two logs line by line: the same words, and each number within rel (of max(1, |x|)) or one unit
# of its last printed digit (a value near a rounding boundary prints either way).
close_lines() { # close_lines A B REL
  "$ftlua" - "$@" <<'LUA'
local function read(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end
local a, b, rel = read(arg[1]), read(arg[2]), tonumber(arg[3])
assert(#a == #b, ("%d lines against %d"):format(#a, #b))
local NUM = "%-?%d+%.?%d*[eE]?[-+]?%d*"
for i = 1, #a do
  local skeleton_a, skeleton_b = a[i]:gsub(NUM, "#"), b[i]:gsub(NUM, "#")
  assert(skeleton_a == skeleton_b, ("line %d differs:\n%s\n%s"):format(i, a[i], b[i]))
  local ys = {}
  for y in b[i]:gmatch(NUM) do ys[#ys + 1] = y end
  local k = 0
  for x in a[i]:gmatch(NUM) do
    k = k + 1
    local mant, exp = x:match("^[-%d]*%.?(%d*)[eE]?([-+]?%d*)$")
    local unit = 10 ^ (-#mant + (tonumber(exp) or 0))
    local d = math.abs(tonumber(x) - tonumber(ys[k]))
    assert(d <= math.max(rel * math.max(1, math.abs(tonumber(x))), unit * 1.000001),
      ("line %d, number %d: %s against %s:\n%s\n%s"):format(i, k, x, ys[k], a[i], b[i]))
  end
end
LUA
}

# ---- finetune_text.lua -----------------------------------------------------------------------
"$ftlua" - "$tmp/tiny.h5" <<'EOF2'
ft.manual_seed(3)
local config = ft.models.config("gpt-s", { n_layer = 1, n_embd = 32, n_head = 2, n_positions = 96,
  attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
ft.save(arg[1], ft.models.new(config):state_dict(), { metadata = { model = "gpt2", config = ft.json.encode(config),
  held_out = ft.json.encode({ "computers", "politics", "science", "songs-poems" }), separator = ft.json.encode(ft.text.EOT) } })
EOF2
text_flags=(--checkpoint "$tmp/tiny.h5" --category science --method lora --eval-every 2 --context 48 --batch-size 5
  --threads 1 --sample-length 24 --seed 5)
text=(scripts/finetune_text.lua "${text_flags[@]}" --steps 6)
"$ftlua" "${text[@]}" --out "$tmp/text1" > "$tmp/text1.log" 2>&1 || { cat "$tmp/text1.log"; fail "finetune_text.lua"; }
mpi_run 2 "${text[@]}" --out "$tmp/text2" > "$tmp/text2.log" 2>&1 || { cat "$tmp/text2.log"; fail "mpirun finetune_text.lua"; }
cat "$tmp/text2.log"
diff <(steady "$tmp/text1.log") <(steady "$tmp/text2.log") || fail "finetune_text.lua printed other lines under mpirun"
close_results "$tmp/text1/results.json" "$tmp/text2/results.json" 1e-5 base methods || fail "finetune_text.lua results differ"
[ "$(grep -c "writing to run folder" "$tmp/text2.log")" -eq 1 ] || fail "more than one rank printed"
echo "ok   finetune_text.lua: 2 ranks print and write what one process does"

# Stopped at step 3 and resumed, under mpirun: the uninterrupted distributed run's numbers.
mpi_run 2 "${text[@]}" --out "$tmp/text3" --stop-at 3 > "$tmp/text3.log" 2>&1 || { cat "$tmp/text3.log"; fail "--stop-at"; }
[ -s "$tmp/text3/lora/checkpoint.h5" ] || fail "no checkpoint after --stop-at"
mpi_run 2 "${text[@]}" --out "$tmp/text3" --resume > "$tmp/text3r.log" 2>&1 || { cat "$tmp/text3r.log"; fail "--resume"; }
grep -q "resumed from" "$tmp/text3r.log" || fail "the distributed run did not resume"
close_results "$tmp/text2/results.json" "$tmp/text3/results.json" 0 methods || fail "the resumed run differs"
echo "ok   finetune_text.lua: a distributed run stopped and resumed equals an uninterrupted one"

# Ranks started with different options stop at once, rank 0 naming the first that differs.
root_flag=()
[ "$(id -u)" -eq 0 ] && root_flag=(--allow-run-as-root)
status=0
OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1 ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" \
  timeout 120 mpirun "${root_flag[@]}" --oversubscribe --bind-to none \
  -np 1 "$ftlua" scripts/finetune_text.lua "${text_flags[@]}" --steps 6 --out "$tmp/text4" : \
  -np 1 "$ftlua" scripts/finetune_text.lua "${text_flags[@]}" --steps 7 --out "$tmp/text4" > "$tmp/text4.log" 2>&1 || status=$?
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || { cat "$tmp/text4.log"; fail "ranks with different options: status $status"; }
grep -q "finetune_text.lua: the command-line options differ between ranks: rank 0 has steps = 6, rank 1 has steps = 7" \
  "$tmp/text4.log" || { cat "$tmp/text4.log"; fail "ranks with different options: no message naming the option"; }
[ ! -e "$tmp/text4" ] || fail "ranks with different options made a run folder"
echo "ok   ranks started with different options stop before any work, the option named"

# ---- preference.lua --------------------------------------------------------------------------
# Every method (--compare): the supervised stage and the trainers share their batches, GRPO its
# prompts; the judges, pairs and evaluations are computed alike on every rank.
need_fortunes songs-poems
pref_steady() { steady "$1" | sed -E -e 's/[0-9]+\.[0-9]+ s\b//g' -e 's/[0-9.]+ [a-z]+\/s\b//g'; }
pref=(scripts/preference.lua --checkpoint "$tmp/tiny.h5" --prompts 12 --samples 3 --max-new 24 --eval-prompts 6
  --eval-samples 2 --steps 3 --judge-epochs 2 --judge-fraction 0.2 --ppl-entries 16 --threads 1 --seed 2
  --sft-steps 4 --sft-batch-size 5 --rm-steps 3 --compare --betas 0.5)
"$ftlua" "${pref[@]}" --batch-size 4 --out "$tmp/pref1" > "$tmp/pref1.log" 2>&1 || { cat "$tmp/pref1.log"; fail "preference.lua"; }
grep -q "pairs: 12 of 12 prompts" "$tmp/pref1.log" || { cat "$tmp/pref1.log"; fail "preference.lua: expected 12 pairs (3 batches of 4)"; }
mpi_run 2 "${pref[@]}" --per-rank-batch 2 --out "$tmp/pref2" > "$tmp/pref2.log" 2>&1 || { cat "$tmp/pref2.log"; fail "mpirun preference.lua"; }
cat "$tmp/pref2.log"
close_lines <(pref_steady "$tmp/pref1.log") <(pref_steady "$tmp/pref2.log") 1e-5 || fail "preference.lua printed other lines under mpirun"
close_results "$tmp/pref1/results.json" "$tmp/pref2/results.json" 1e-5 before methods || fail "preference.lua results differ"
for m in sft dpo-beta0.5 ipo simpo orpo kto rm-grpo grpo; do
  [ -s "$tmp/pref2/$m/metrics.jsonl" ] || fail "preference.lua under mpirun: no $m/metrics.jsonl"
  [ "$(wc -l < "$tmp/pref2/$m/metrics.jsonl")" -eq 3 ] || fail "preference.lua under mpirun: $m/metrics.jsonl is not one line per step"
done
echo "ok   preference.lua --compare: 2 ranks (--per-rank-batch 2) print and write what one process does (--batch-size 4)"

# ---- finetune_vision.lua ---------------------------------------------------------------------
if have_fashion_mnist; then
  vision=(scripts/finetune_vision.lua --method full --labels-per-class 4 --val-per-class 4 --epochs 3 --batch-size 6
    --test-limit 40 --threads 1 --alphas 0,1)
  "$ftlua" "${vision[@]}" --out "$tmp/vision1" > "$tmp/vision1.log" 2>&1 || { cat "$tmp/vision1.log"; fail "finetune_vision.lua"; }
  mpi_run 2 "${vision[@]}" --out "$tmp/vision2" > "$tmp/vision2.log" 2>&1 || { cat "$tmp/vision2.log"; fail "mpirun finetune_vision.lua"; }
  cat "$tmp/vision2.log"
  diff <(steady "$tmp/vision1.log") <(steady "$tmp/vision2.log") || fail "finetune_vision.lua printed other lines under mpirun"
  close_results "$tmp/vision1/results.json" "$tmp/vision2/results.json" 1e-9 methods wise || fail "finetune_vision.lua results differ"
  echo "ok   finetune_vision.lua: 2 ranks print and write what one process does"
  # A last batch too small to share is refused before training.
  status=0
  mpi_run 2 scripts/finetune_vision.lua --method head --labels-per-class 4 --val-per-class 4 --epochs 1 --batch-size 5 \
    --test-limit 40 --threads 1 --out "$tmp/vision3" > "$tmp/vision3.log" 2>&1 || status=$?
  [ "$status" -ne 0 ] || fail "a last batch of one image for two ranks was accepted"
  grep -q "the last batch of each epoch holds 1 of the 16 labelled images, too few for 2 ranks" "$tmp/vision3.log" ||
    { cat "$tmp/vision3.log"; fail "no clear message for a last batch too small to share"; }
  echo "ok   finetune_vision.lua: a last batch too small to share is refused"
else
  echo "SKIP: finetune_vision.lua under mpirun (Fashion-MNIST is not installed)"
fi
