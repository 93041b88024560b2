#!/usr/bin/env bash
# scripts/preference.lua end to end at a tiny scale (a random 1-layer GPT, small judges, a few
# pairs and steps): the outputs are written, the judges beat chance and the saved judge A
# reloads and ranks real target entries above entries of another category, the pairs' chosen
# completions score at least their rejected ones, --data trains on a given JSONL file, and bad
# flags are refused before any work.
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
  --steps 3 --batch-size 4 --judge-epochs 2 --judge-fraction 0.2 --ppl-entries 16 --threads 1 --seed 2)

# ---- the default method (DPO) ----
run_recipe "$tmp/a.log" preference.lua "${common[@]}" --out "$tmp/a"
cat "$tmp/a.log"
for f in results.json results.csv reward_vs_kl.png samples.txt judge_a.h5 judge_b.h5 pairs.jsonl dpo/metrics.jsonl \
    dpo/adapter/adapter.h5; do
  [ -s "$tmp/a/$f" ] || fail "no $f written"
done
is_png "$tmp/a/reward_vs_kl.png" || fail "reward_vs_kl.png is not a PNG"
head -1 "$tmp/a.log" | grep -q "run folder $tmp/a\$" || fail "the first line does not name the run folder"
tail -1 "$tmp/a.log" | grep -q "in $tmp/a (" || fail "the last line does not name the run folder"
[ "$(wc -l < "$tmp/a/results.csv")" -eq 3 ] || fail "results.csv should hold a header, the base and one method"
[ "$(wc -l < "$tmp/a/dpo/metrics.jsonl")" -eq 3 ] || fail "metrics.jsonl should hold one line per step (3)"

"$ftlua" - "$tmp/a" <<'EOF' || fail "result checks"
local dir = arg[1]
local judge = require "ft.pref.judge"
local r = ft.json.read(dir .. "/results.json")
assert(r.target == "songs-poems", "target")
local m = r.methods[1]
assert(m.method == "dpo" and m.beta == 0.1, "method dpo at beta 0.1")
for _, k in ipairs({ "reward_a", "reward_b", "kl", "ppl" }) do
  assert(type(m[k]) == "number" and m[k] == m[k], "method " .. k .. " is a number")
  assert(type(r.before[k]) == "number", "before." .. k)
end
assert(r.before.kl == 0, "the starting model's KL to itself is 0")
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
"$ftlua" scripts/preference.lua --help > "$tmp/help.log" 2>&1 || fail "--help failed"
grep -q -- "--target" "$tmp/help.log" || fail "--help does not list --target"
echo "OK"
