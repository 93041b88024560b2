#!/usr/bin/env bash
# Chat fine-tuning of a HuggingFace folder: a tiny random Qwen2-shaped model (hidden size 64)
# with the real Qwen3 tokenizer (151,669 ids with its added tokens) and chat template.
# scripts/finetune_text.lua --model DIR --data tests/fixtures/chat/fortunes_chat.jsonl
# --method lora trains a few steps on the assistants' tokens, streams its samples, and saves
# a PEFT adapter that names its base and task. Then an adapter trained here round-trips: a
# fresh process loads the saved base folder (config, weights, tokenizer) and the adapter and
# gets the same token ids and bit-identical logits.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

# The tiny model, saved as an HF folder with the tokenizer's files and a generation config.
make_tiny_qwen2 "$tmp/qwen2-tiny" 64 2
"$ftlua" - "$tmp/qwen2-tiny" <<'EOF' || fail "writing the generation config"
local dir = arg[1]
ft.json.write(dir .. "/generation_config.json", { bos_token_id = 151643, eos_token_id = { 151645, 151643 },
  pad_token_id = 151643, do_sample = true, temperature = 0.7, top_p = 0.8, top_k = 20 })
EOF

# ---- the recipe ----
log=$tmp/run.log
"$ftlua" scripts/finetune_text.lua --model "$tmp/qwen2-tiny" --data tests/fixtures/chat/fortunes_chat.jsonl \
  --method lora --steps 4 --eval-every 2 --batch-size 2 --context 128 --sample-length 8 --threads 2 \
  --out "$tmp/run" --stream > "$log" 2>&1 || { cat "$log"; fail "finetune_text.lua --model"; }
for f in results.json curve.png samples.txt lora/metrics.jsonl lora/adapter_peft/adapter_model.safetensors \
    lora/adapter_peft/adapter_config.json; do
  [ -s "$tmp/run/$f" ] || { cat "$log"; fail "no $f written"; }
done
is_png "$tmp/run/curve.png" || fail "curve.png is not a PNG"
grep -q "64 examples (64 chat)" "$log" || { cat "$log"; fail "the chat records were not all read"; }
grep -q "perplexity per token" "$log" || { cat "$log"; fail "no per-token perplexity"; }
[ "$(grep -c '^-- sample: ' "$log")" -eq 2 ] || { cat "$log"; fail "--stream did not print the two samples as they came"; }
grep -q '<|im_start|>assistant\\n' "$log" || { cat "$log"; fail "the sample prompt is not the chat template's"; }

"$ftlua" - "$tmp" <<'EOF' || fail "result checks"
local tmp = arg[1]
local cfg = ft.json.read(tmp .. "/run/lora/adapter_peft/adapter_config.json")
assert(cfg.base_model_name_or_path == tmp .. "/qwen2-tiny", "base_model_name_or_path: " .. tostring(cfg.base_model_name_or_path))
assert(cfg.task_type == "CAUSAL_LM", "task_type: " .. tostring(cfg.task_type))
table.sort(cfg.target_modules)
assert(table.concat(cfg.target_modules, ",") == "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj",
  "target_modules: " .. table.concat(cfg.target_modules, ","))
-- LoRA r 8 on every projection of 2 blocks: q, o [64 -> 64], k, v [64 -> 32], gate, up [64 -> 128], down [128 -> 64]
local r = ft.json.read(tmp .. "/run/results.json").methods[1]
local want = 2 * 8 * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 128))
assert(r.trainable_params == want, ("trainable params %d, expected %d"):format(r.trainable_params, want))
assert(r.test_ppl < r.test_ppl_before, "training did not lower the test perplexity of a random model")
EOF

# ---- round trip: train here, reload in a fresh process ----
"$ftlua" - "$tmp" <<'EOF' || fail "training the adapter to round-trip"
local tmp = arg[1]
ft.manual_seed(11)
local base = tmp .. "/qwen2-tiny"
local model = ft.models.from_pretrained(base)
local tok = ft.tokenizer.from_pretrained(base)
ft.peft.lora(model, { target = { "q_proj", "v_proj" }, r = 4, alpha = 8 })
local set = ft.text.example_dataset(ft.text.read_examples("tests/fixtures/chat/fortunes_chat.jsonl"),
  { tokenizer = tok, context = 96 })
local params = {}
for _, p in ipairs(model:parameters()) do if p.requires_grad then params[#params + 1] = p end end
local opt = ft.optim.AdamW(params, { lr = 1e-2 })
model:train()
for _ = 1, 3 do
  local b = set:batch(2)
  local loss = model(b.input_ids, { attention_mask = b.attention_mask, labels = b.labels }).loss
  opt:zero_grad()
  loss:backward()
  opt:step()
end
model:eval()
local ids = tok:apply_chat_template({ { role = "user", content = "Tell me a fortune about love." },
  { role = "assistant", content = "Love is blind; marriage is an eye-opener." } })
local logits = ft.no_grad(function() return model(ids).logits end)
ft.peft.save(model, tmp .. "/adapter", { format = "peft" })
ft.save(tmp .. "/expected.h5", { ids = ids, logits = logits })
EOF
"$ftlua" - "$tmp" <<'EOF' || fail "the adapter does not round-trip"
local tmp = arg[1]
local base = tmp .. "/qwen2-tiny"
local model = ft.models.from_pretrained(base)
local tok = ft.tokenizer.from_pretrained(base)
local want = ft.load(tmp .. "/expected.h5")
local ids = tok:apply_chat_template({ { role = "user", content = "Tell me a fortune about love." },
  { role = "assistant", content = "Love is blind; marriage is an eye-opener." } })
local plain = ft.no_grad(function() return model(ids).logits end)
assert((plain - want.logits):abs():max():item() > 1e-4, "the trained adapter should change the logits")
ft.peft.load(model, tmp .. "/adapter")
assert(table.concat(ids:totable(), ",") == table.concat(want.ids:totable(), ","), "the reloaded tokenizer gives other ids")
local logits = ft.no_grad(function() return model(ids).logits end)
local diff = (logits - want.logits):abs():max():item()
assert(diff == 0, ("logits differ by up to %g after reloading"):format(diff))
print("round trip: " .. ids:numel() .. " tokens, logits identical")
EOF
echo "PASS"
