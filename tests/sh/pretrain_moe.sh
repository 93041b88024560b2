#!/usr/bin/env bash
# The text pretraining recipe with --config moe-s (a Mixtral mixture of experts) on Debian's
# fortunes: a few steps of a one-layer moe-s (the hidden --layers), then the run folder's MoE
# outputs (history.csv's aux_loss column, expert_load.csv with shares summing to 1 per row,
# expert_load.png), a checkpoint that ft.text.load_checkpoint rebuilds as a MixtralForCausalLM,
# and the MoE-only flags refused with the GPT presets.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fortunes science
run_recipe "$tmp/log" pretrain_text.lua --config moe-s --layers 1 --steps 6 --context 32 --batch-size 2 \
  --eval-every 3 --eval-windows 4 --load-every 2 --sample-length 8 --threads 2 --out "$tmp/run"
cat "$tmp/log"
grep -q "Mixtral MoE (moe-s): .* 1 layers, width 384, 4 experts (top 2), aux-loss coefficient 0.01" "$tmp/log" \
  || fail "not the moe-s shape"
grep -q "^RESULT steps=6 .* aux_loss=[0-9.]* expert_shares=" "$tmp/log" || fail "no RESULT line with the MoE fields"
grep -q "^expert shares of the routed tokens over steps 5-6" "$tmp/log" || fail "the summary does not show the shares"
grep -q "val loss after reloading" "$tmp/log" || fail "the checkpoint was not reloaded"
[ -e "$tmp/run/moe_fortunes.h5" ] || fail "no moe_fortunes.h5 in the run folder"
[ ! -e "$tmp/run/gpt_fortunes.h5" ] || fail "a moe-s run wrote gpt_fortunes.h5"
is_png "$tmp/run/expert_load.png" || fail "expert_load.png is not a PNG"
is_png "$tmp/run/curve.png" || fail "curve.png is not a PNG"
cat > "$tmp/check.lua" <<'LUA'
local dir = arg[1]
local function rows(file)
  local out = {}
  for line in io.lines(dir .. "/" .. file) do out[#out + 1] = line end
  return out
end
local history = rows("history.csv")
assert(history[1] == "step,train_loss,val_loss,aux_loss" and #history == 3, "history.csv: " .. table.concat(history, " | "))
assert(history[2]:match("^3,") and history[3]:match("^6,"), "history.csv steps: " .. table.concat(history, " | "))
for i = 2, 3 do
  local aux = tonumber(history[i]:match("([^,]*)$"))
  assert(aux and aux > 0 and aux <= 8, "aux loss " .. history[i])   -- E * sum(f * p): 2 (top-k) balanced, at most E * k
end
local load = rows("expert_load.csv")
assert(load[1] == "step,expert_0,expert_1,expert_2,expert_3,max_min,cv,layer_cv", "expert_load.csv header: " .. load[1])
assert(#load == 4, "expert_load.csv: expected steps 2, 4, 6, got " .. table.concat(load, " | "))
for i = 2, #load do
  local v = {}
  for x in load[i]:gmatch("[^,]+") do v[#v + 1] = tonumber(x) end
  assert(#v == 8 and v[1] == 2 * (i - 1), "expert_load.csv row " .. load[i])
  local sum = v[2] + v[3] + v[4] + v[5]
  assert(math.abs(sum - 1) < 1e-3, ("shares of step %d sum to %.6f"):format(v[1], sum))
  for e = 2, 5 do assert(v[e] >= 0 and v[e] <= 1, "share " .. load[i]) end
  assert(v[7] >= 0 and v[8] >= 0 and (v[6] == nil or v[6] >= 1), "statistics " .. load[i])
end
local model, meta = ft.text.load_checkpoint(dir .. "/moe_fortunes.h5")
assert(model.hf_architecture == "MixtralForCausalLM", "rebuilt as " .. tostring(model.hf_architecture))
local c = model.config
assert(c.num_hidden_layers == 1 and c.hidden_size == 384 and c.num_local_experts == 4 and c.num_experts_per_tok == 2
  and c.router_aux_loss_coef == 0.01 and c.vocab_size == 256, "config " .. ft.json.encode(c))
assert(meta.preset == "moe-s" and meta.model == "mixtral" and math.tointeger(meta.step) == 6, "meta")
assert(table.concat(meta.held_out, ",") == "computers,politics,science,songs-poems", "held_out")
assert(#meta.expert_shares == 4, "expert_shares")
assert(not model.training, "not in eval mode")
local r = ft.text.perplexity(model, { "a short fortune" }, { context = 32 })
assert(r.tokens == 16 and r.loss > 0 and r.loss < 6, "perplexity " .. r.loss)
local ids = model:generate(ft.tensor({ { 1, 85 } }, { dtype = "int64" }), { max_new_tokens = 4 })
assert(ids:size(2) == 6, "generate")
print(("loaded: %s, %d parameters"):format(model.hf_architecture, model:num_parameters()))
LUA
"$ftlua" "$tmp/check.lua" "$tmp/run" || fail "the MoE run's outputs"

# the MoE-only flags, before any work
expect_usage() {
  local expected=$1 status=0
  shift
  "$ftlua" scripts/pretrain_text.lua "$@" --out "$tmp/refused" > "$tmp/out" 2>&1 </dev/null || status=$?
  [ "$status" -eq 2 ] || { cat "$tmp/out"; fail "$*: exit status $status, expected 2"; }
  grep -qF -- "$expected" "$tmp/out" || { cat "$tmp/out"; fail "$*: the message does not name $expected"; }
  [ ! -e "$tmp/refused" ] || fail "$*: created the run folder before failing"
}
expect_usage "--router-aux-loss-coef" --config gpt-s --router-aux-loss-coef 0.1
expect_usage "--router-aux-loss-coef" --router-aux-loss-coef 0.1
expect_usage "--load-every" --config tiny --load-every 5
expect_usage "--router-aux-loss-coef" --config moe-s --router-aux-loss-coef=-1
expect_usage "--dropout" --config moe-s --dropout 0.1
echo "PASS: moe-s trained, its expert load recorded, saved and reloaded"
