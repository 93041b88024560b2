#!/usr/bin/env bash
# scripts/finetune_text.lua end to end on a tiny random GPT (1 layer, width 32) and a held-out
# fortune category (Debian package fortunes): the outputs are written; a run interrupted with
# --stop-at and continued with --resume ends with the numbers of an uninterrupted one; the
# saved LoRA adapter (ftlua and PEFT format) reloads into the pretrained model with the
# reported test perplexity; on a JSONL file of prompt/completion pairs and chat records only
# the completion bytes are in the loss, and --compare runs every method.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fortunes science

# A tiny random model in the layout of scripts/pretrain_text.lua's checkpoints.
"$ftlua" - "$tmp/tiny.h5" <<'EOF'
ft.manual_seed(3)
local config = ft.models.config("gpt-s", { n_layer = 1, n_embd = 32, n_head = 2, n_positions = 96,
  attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
local model = ft.models.new(config)
ft.save(arg[1], model:state_dict(), { metadata = { model = "gpt2", config = ft.json.encode(config),
  held_out = ft.json.encode({ "computers", "politics", "science", "songs-poems" }),
  separator = ft.json.encode(ft.text.EOT) } })
EOF

common=(--checkpoint "$tmp/tiny.h5" --category science --method lora --steps 6 --eval-every 2 --context 48
  --batch-size 4 --threads 1 --sample-length 24 --seed 5)
run() { # run <log> args...: the recipe, its output kept in <log> and shown on failure
  local log=$1; shift
  "$ftlua" scripts/finetune_text.lua "$@" > "$log" 2>&1 || { cat "$log"; fail "finetune_text.lua $*"; }
}

# ---- one method, straight through ----
run "$tmp/a.log" "${common[@]}" --out "$tmp/a"
cat "$tmp/a.log"
for f in results.json results.csv curve.png perplexity_vs_params.png samples.txt lora/metrics.jsonl lora/result.json \
    lora/adapter/adapter.h5 lora/adapter_peft/adapter_model.safetensors lora/adapter_peft/adapter_config.json; do
  [ -s "$tmp/a/$f" ] || fail "no $f written"
done
[ ! -e "$tmp/a/lora/checkpoint.h5" ] || fail "the checkpoint of a finished method is left behind"
is_png "$tmp/a/perplexity_vs_params.png" || fail "perplexity_vs_params.png is not a PNG"
is_png "$tmp/a/curve.png" || fail "curve.png is not a PNG"
head -1 "$tmp/a.log" | grep -q "run folder $tmp/a\$" || fail "the first line does not name the run folder"
tail -1 "$tmp/a.log" | grep -q "in $tmp/a (" || fail "the last line does not name the run folder"
grep -q '^lora ' "$tmp/a.log" || fail "no table row for lora"
[ "$(wc -l < "$tmp/a/results.csv")" -eq 2 ] || fail "results.csv should hold a header and one row"
grep -q '== before fine-tuning ==' "$tmp/a/samples.txt" && grep -q '== after lora' "$tmp/a/samples.txt" ||
  fail "samples.txt lacks the before/after samples"
# 6 training steps and 3 evaluations, one JSON line each.
[ "$(wc -l < "$tmp/a/lora/metrics.jsonl")" -eq 9 ] || fail "metrics.jsonl should hold 9 lines"

# ---- interrupted after step 3, then resumed: the same numbers ----
run "$tmp/b1.log" "${common[@]}" --out "$tmp/b" --stop-at 3
grep -q "stopped after step 3" "$tmp/b1.log" || { cat "$tmp/b1.log"; fail "--stop-at 3 did not stop the run"; }
[ -s "$tmp/b/lora/checkpoint.h5" ] || fail "the interrupted run left no checkpoint"
[ ! -e "$tmp/b/results.json" ] || fail "the interrupted run wrote results"
run "$tmp/b2.log" "${common[@]}" --out "$tmp/b" --resume
grep -q "resumed from .* at step 3" "$tmp/b2.log" || { cat "$tmp/b2.log"; fail "--resume did not resume"; }

# ---- independent checks of the written results (Lua, on the public API) ----
"$ftlua" - "$tmp" <<'EOF' || fail "result checks"
local tmp = arg[1]
local a = ft.json.read(tmp .. "/a/results.json")
local b = ft.json.read(tmp .. "/b/results.json")
local ra, rb = a.methods[1], b.methods[1]
for _, k in ipairs({ "val_ppl", "test_ppl", "test_ppl_before", "best_step", "steps_run", "trainable_params" }) do
  if ra[k] ~= rb[k] then
    error(("resumed run: %s = %s, uninterrupted run: %s"):format(k, tostring(rb[k]), tostring(ra[k])))
  end
end
-- LoRA r = 8 on c_attn [32 -> 96], attn.c_proj [32 -> 32], c_fc [32 -> 128], mlp.c_proj [128 -> 32].
local expected = 8 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
if ra.trainable_params ~= expected then
  error(("trainable params %d, expected %d"):format(ra.trainable_params, expected))
end
if not (ra.test_ppl < ra.test_ppl_before) then error("LoRA did not lower the test perplexity of a random model") end

-- The saved adapters, loaded into the pretrained model, give the reported test perplexity
-- on the test split of science (same seed and context as the run).
ft.set_num_threads(1)
local _, _, test = ft.text.category_datasets("science", { context = 48, seed = 5 })
local base = ft.text.load_checkpoint(tmp .. "/tiny.h5")
local before = ft.text.perplexity(base, test, { context = 48 }).perplexity
if math.abs(before - ra.test_ppl_before) > 1e-9 * before then
  error(("pretrained test ppl %.9g, reported %.9g"):format(before, ra.test_ppl_before))
end
for _, dir in ipairs({ "adapter", "adapter_peft" }) do
  local model = ft.text.load_checkpoint(tmp .. "/tiny.h5")
  ft.peft.load(model, tmp .. "/a/lora/" .. dir)
  local ppl = ft.text.perplexity(model, test, { context = 48 }).perplexity
  if math.abs(ppl - ra.test_ppl) > 1e-5 * ppl then
    error(("%s reloaded: test ppl %.9g, reported %.9g"):format(dir, ppl, ra.test_ppl))
  end
end
print(("checked: resumed = uninterrupted (test ppl %.6f); adapters reload with it; %d trainable params"):format(
  ra.test_ppl, expected))
EOF

# ---- own data: prompt/completion pairs and chat records; --compare ----
python3 - "$tmp/qa.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(60):
        if i % 3 == 0:
            rec = {"messages": [{"role": "user", "content": "Say number %d." % i},
                                {"role": "assistant", "content": "Number %d it is." % i}]}
        else:
            rec = {"prompt": "Q: what is %d plus %d?\nA: " % (i, i), "completion": "%d" % (2 * i)}
        f.write(json.dumps(rec) + "\n")
EOF
# The counts the chat template and the prompt masking imply, computed here: every example is
# EOT + its bytes; a pair adds EOT after the completion, a chat "<|user|>\n{u}\n<|assistant|>\n{a}"
# then EOT; the loss covers the completion (the assistant's content) and that EOT.
read -r tokens trained <<< "$(python3 - "$tmp/qa.jsonl" <<'EOF'
import json, sys
tokens = trained = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "messages" in r:
        u, a = r["messages"][0]["content"], r["messages"][1]["content"]
        n = 1 + len("<|user|>\n" + u + "\n") + len("<|assistant|>\n") + len(a) + 1
        t = len(a) + 1
    else:
        n = 1 + len(r["prompt"]) + len(r["completion"]) + 1
        t = len(r["completion"]) + 1
    tokens += n
    trained += t
print(tokens, trained)
EOF
)"
run "$tmp/c.log" --checkpoint "$tmp/tiny.h5" --data "$tmp/qa.jsonl" --compare --steps 2 --eval-every 1 --context 48 \
  --batch-size 4 --threads 1 --sample-length 16 --out "$tmp/c"
cat "$tmp/c.log"
grep -q "data $tmp/qa.jsonl: 60 examples (40 completion, 20 chat), $tokens tokens, $trained in the loss" "$tmp/c.log" ||
  fail "expected 60 examples with $tokens tokens, $trained of them in the loss"
for m in full lora ia3 loreft direft prompt; do
  grep -q "^$m " "$tmp/c.log" || fail "no table row for $m"
  [ -s "$tmp/c/$m/result.json" ] || fail "no result for $m"
done
[ -s "$tmp/c/full/model.h5" ] || fail "full fine-tuning saved no model"
[ "$(wc -l < "$tmp/c/results.csv")" -eq 7 ] || fail "results.csv should hold a header and six rows"
echo "PASS: finetune_text.lua wrote its outputs, resumed exactly, and trained on completions only"
