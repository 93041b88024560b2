#!/usr/bin/env bash
# scripts/preference.lua end to end at a tiny scale (a random 1-layer GPT, small judges, a few
# pairs and steps): the supervised stage, then the outputs are written, the judges beat chance
# and the saved judge A reloads and ranks real target entries above entries of another
# category, the pairs' chosen completions score at least their rejected ones; --compare runs
# every method; --data trains on a given JSONL file; --model runs on an HF folder with its own
# tokenizer (a tiny Qwen2 with the Qwen3 tokenizer), from sampled pairs and from conversational
# pairs; bad flags are refused before any work.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fortunes songs-poems

"$ftlua" - "$tmp/tiny.h5" <<'EOF'
ft.manual_seed(3)
local config = ft.models.config("gpt-s", { n_layer = 1, n_embd = 32, n_head = 2, n_positions = 96,
  attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
local model = ft.models.new(config)
ft.save(arg[1], model:state_dict(), { metadata = { model = "gpt2", config = ft.json.encode(config),
  held_out = ft.json.encode({ "computers", "politics", "science", "songs-poems" }),
  separator = ft.json.encode(ft.text.EOT) } })
EOF

common=(--checkpoint "$tmp/tiny.h5" --prompts 12 --samples 3 --max-new 24 --eval-prompts 6 --eval-samples 2
  --steps 3 --batch-size 4 --judge-epochs 2 --judge-fraction 0.2 --ppl-entries 16 --threads 1 --seed 2
  --sft-steps 4 --sft-batch-size 4 --rm-steps 3)

# ---- the default method (DPO) ----
run_recipe "$tmp/a.log" preference.lua "${common[@]}" --out "$tmp/a"
cat "$tmp/a.log"
for f in results.json results.csv reward_vs_kl.png samples.txt judge_a.h5 judge_b.h5 pairs.jsonl dpo/metrics.jsonl \
    dpo/adapter/adapter.h5 sft.h5 sft_metrics.jsonl; do
  [ -s "$tmp/a/$f" ] || fail "no $f written"
done
is_png "$tmp/a/reward_vs_kl.png" || fail "reward_vs_kl.png is not a PNG"
head -1 "$tmp/a.log" | grep -q "run folder $tmp/a\$" || fail "the first line does not name the run folder"
tail -1 "$tmp/a.log" | grep -q "in $tmp/a (" || fail "the last line does not name the run folder"
[ "$(wc -l < "$tmp/a/results.csv")" -eq 3 ] || fail "results.csv should hold a header, the base and one method"
[ "$(wc -l < "$tmp/a/dpo/metrics.jsonl")" -eq 3 ] || fail "metrics.jsonl should hold one line per step (3)"
[ "$(wc -l < "$tmp/a/sft_metrics.jsonl")" -eq 4 ] || fail "sft_metrics.jsonl should hold one line per step (4)"

"$ftlua" - "$tmp/a" <<'EOF' || fail "result checks"
local dir = arg[1]
local judge = require "ft.pref.judge"
local r = ft.json.read(dir .. "/results.json")
assert(r.target == "songs-poems", "target")
local m = r.methods[1]
assert(m.method == "dpo" and m.beta == 0.5, "method dpo at beta 0.5")
for _, k in ipairs({ "reward_a", "reward_b", "kl", "ppl" }) do
  assert(type(m[k]) == "number" and m[k] == m[k], "method " .. k .. " is a number")
  assert(type(r.before[k]) == "number", "before." .. k)
end
assert(r.before.kl == 0, "the starting model's KL to itself is 0")
assert(r.sft_steps == 4, "the supervised stage's steps")
-- sft.h5 is the starting model: a checkpoint whose weights the supervised stage moved
local sft = ft.text.load_checkpoint(dir .. "/sft.h5")
local pre = ft.text.load_checkpoint(dir .. "/../tiny.h5")
local d = (sft.transformer.wte.weight - pre.transformer.wte.weight):abs():max():item()
assert(d > 0, "the supervised stage left the embeddings as they were")
for _, k in ipairs({ "reward_a", "reward_b" }) do
  assert(m[k] > 0 and m[k] < 1 and r.before[k] > 0 and r.before[k] < 1, k .. " is a probability")
end
-- the saved judges reproduce the reported accuracy on the same test entries
local corpus = ft.text.fortunes()
local ja = judge.load(dir .. "/judge_a.h5")
assert(#ja.classes == r.judges.classes, "judge classes")
-- each judge beats chance (1 / classes) by far on the entries it was scored on
assert(r.judges.accuracy_a > 3 / r.judges.classes and r.judges.accuracy_b > 3 / r.judges.classes,
  ("judge accuracies %.3f, %.3f are near chance"):format(r.judges.accuracy_a, r.judges.accuracy_b))
-- real target entries score higher than entries of another category
local poems, other = {}, {}
for i = 1, 100 do poems[i] = corpus["songs-poems"][i]; other[i] = corpus["computers"][i] end
local function mean(t) local s = 0; for _, v in ipairs(t) do s = s + v end; return s / #t end
local pp, po = mean(ja:prob(poems, "songs-poems")), mean(ja:prob(other, "songs-poems"))
assert(pp > 1.5 * po, ("judge A: P(songs-poems) %.4f on poems vs %.4f on computers"):format(pp, po))
-- chosen completions were scored at least as high as rejected ones
local n = 0
for line in io.lines(dir .. "/pairs.jsonl") do
  local rec = ft.json.decode(line)
  assert(rec.score_chosen >= rec.score_rejected, "a pair whose chosen scored below its rejected")
  assert(rec.chosen ~= rec.rejected, "a pair with identical completions")
  n = n + 1
end
assert(n == r.pairs and n > 0, "pairs.jsonl holds the pairs the run trained on")
EOF

# ---- every method ----
run_recipe "$tmp/c.log" preference.lua "${common[@]}" --compare --betas 0.1,0.5 --out "$tmp/c"
"$ftlua" - "$tmp/c" <<'EOF' || { cat "$tmp/c.log"; fail "--compare results"; }
local r = ft.json.read(arg[1] .. "/results.json")
local want = { "sft", "dpo-beta0.1", "dpo-beta0.5", "ipo", "simpo", "orpo", "kto", "rm-grpo", "grpo", "best-of-n" }
assert(#r.methods == #want, ("%d methods run, %d expected"):format(#r.methods, #want))
for i, label in ipairs(want) do
  local m = r.methods[i]
  assert(m.label == label, ("method %d is %s, expected %s"):format(i, m.label, label))
  for _, k in ipairs({ "reward_a", "reward_b", "kl", "ppl" }) do
    assert(type(m[k]) == "number" and m[k] == m[k], label .. ": " .. k .. " is not a number")
  end
  if label ~= "best-of-n" then
    assert(ft.fs.exists(arg[1] .. "/" .. label .. "/adapter/adapter.h5"), label .. ": no adapter saved")
    assert(type(m.last) == "table" and type(m.last.loss) == "number", label .. ": no last loss")
  end
end
local rm = r.methods[8]
assert(type(rm.reward_model_accuracy) == "number" and rm.reward_model_accuracy >= 0
  and rm.reward_model_accuracy <= 1, "rm-grpo reports its reward model's held-out accuracy")
assert(ft.fs.exists(arg[1] .. "/rm-grpo/reward_metrics.jsonl"), "rm-grpo: no reward model log")
assert(type(r.methods[7].last.kl) == "number", "kto logs its KL reference point")
EOF
[ "$(wc -l < "$tmp/c/results.csv")" -eq 12 ] || fail "results.csv of --compare should hold a header, the start and 10 rows"

# ---- pairs from a file ----
cat > "$tmp/prefs.jsonl" <<'EOF'
{"prompt": "The ", "chosen": "rose is red,\nthe sky is blue", "rejected": "compiler crashed"}
{"prompt": "When ", "chosen": "the night is long\nI sing a song", "rejected": "the disk is full"}
{"prompt": "A ", "chosen": "song of love,\na bird above", "rejected": "segfault in the kernel"}
EOF
run_recipe "$tmp/d.log" preference.lua "${common[@]}" --method ipo --beta 0.5 --data "$tmp/prefs.jsonl" --out "$tmp/d"
grep -q "pairs: 3 records from $tmp/prefs.jsonl" "$tmp/d.log" || { cat "$tmp/d.log"; fail "--data was not read"; }
"$ftlua" - "$tmp/d/results.json" "$tmp/prefs.jsonl" <<'EOF' || fail "results.json of --data"
local r = ft.json.read(arg[1])
assert(r.methods[1].method == "ipo" and r.methods[1].beta == 0.5 and r.pairs == 3 and r.data == arg[2])
EOF

# ---- an HF folder with its tokenizer ----
make_tiny_qwen2 "$tmp/qwen2-tiny" 32 1
hf=(--model "$tmp/qwen2-tiny" --prompts 8 --samples 2 --max-new 8 --eval-prompts 3 --eval-samples 2 --steps 2
  --batch-size 4 --judge-epochs 1 --judge-fraction 0.1 --ppl-entries 8 --threads 1 --seed 2 --rm-steps 2)
run_recipe "$tmp/h.log" preference.lua "${hf[@]}" --method rm-grpo --out "$tmp/h"
"$ftlua" - "$tmp/h" "$tmp/qwen2-tiny" <<'EOF' || { cat "$tmp/h.log"; fail "--model results"; }
local r = ft.json.read(arg[1] .. "/results.json")
assert(r.model == arg[2] and r.checkpoint == nil, "the run names its model folder")
assert(r.sft_steps == 0, "no supervised stage by default with --model")
local m = r.methods[1]
assert(m.method == "rm-grpo" and m.reward_a == m.reward_a and m.kl == m.kl, "rm-grpo ran on the HF model")
-- LoRA on the Llama-family projections: the saved adapter reloads into the folder's model
local model = ft.models.from_pretrained(arg[2])
ft.peft.load(model, arg[1] .. "/rm-grpo/adapter")
local names = {}
for name in pairs(model:state_dict()) do names[#names + 1] = name end
local joined = table.concat(names, " ")
assert(joined:find("q_proj.lora_A") and joined:find("down_proj.lora_B"), "no LoRA on q_proj / down_proj")
EOF
run_recipe "$tmp/k.log" preference.lua "${hf[@]}" --method kto --data tests/fixtures/pref_data/pairs_chat.jsonl \
  --out "$tmp/k"
grep -q "pairs: .* records from tests/fixtures/pref_data/pairs_chat.jsonl" "$tmp/k.log" \
  || { cat "$tmp/k.log"; fail "--model --data was not read"; }

# ---- flags refused up front (no run folder made) ----
refuse() { # refuse <pattern> args...: the recipe exits 2 with a message matching pattern
  local pattern=$1; shift
  local rc=0
  "$ftlua" scripts/preference.lua "$@" --out "$tmp/refused" > "$tmp/r.log" 2>&1 </dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "preference.lua $* was accepted"
  grep -q -- "$pattern" "$tmp/r.log" || { cat "$tmp/r.log"; fail "preference.lua $*: no message matching $pattern"; }
  [ ! -e "$tmp/refused" ] || fail "preference.lua $* made a run folder"
}
refuse "not a fortune category" --target nosuchcategory
refuse "samples" --samples 1
refuse "method" --method nosuch
refuse "beta" --beta 0
refuse "no pretrained model" --checkpoint "$tmp/missing.h5"
refuse "unknown" --no-such-flag
refuse "not both" --model "$tmp/qwen2-tiny" --checkpoint "$tmp/tiny.h5"
refuse "not a folder" --model "$tmp/missing"
refuse "sft-steps" --sft-steps=-1
"$ftlua" scripts/preference.lua --help > "$tmp/help.log" 2>&1 || fail "--help failed"
grep -q -- "--target" "$tmp/help.log" || fail "--help does not list --target"
echo "OK"
