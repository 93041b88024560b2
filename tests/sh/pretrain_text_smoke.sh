#!/usr/bin/env bash
# The text pretraining recipe end to end with the gpt-mini preset (the shape of the shipped
# models/gpt_fortunes.h5) on Debian's fortunes: a few steps, a checkpoint that reloads with
# the same validation loss, and that ft.text.load_checkpoint rebuilds with its config and
# held-out categories.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fortunes science
run_recipe "$tmp/log" pretrain_text.lua --config gpt-mini --steps 4 --context 64 --batch-size 2 --eval-every 2 \
  --eval-windows 4 --sample-length 8 --threads 2 --out "$tmp/curve" --save "$tmp/gpt_mini.h5"
cat "$tmp/log"
head -1 "$tmp/log" | grep -q "run folder $tmp/curve\$" || fail "the first line does not name the run folder"
tail -1 "$tmp/log" | grep -q "in $tmp/curve (" || fail "the last line does not name the run folder"
same_weights "$tmp/curve/gpt_fortunes.h5" "$tmp/gpt_mini.h5" || fail "--save did not write the run's checkpoint"
grep -q "GPT (gpt-mini): .* 4 layers, width 192" "$tmp/log" || { echo "FAIL: not the gpt-mini shape"; exit 1; }
grep -q "^RESULT steps=4 " "$tmp/log" || { echo "FAIL: no RESULT line"; exit 1; }
grep -q "val loss after reloading" "$tmp/log" || { echo "FAIL: the checkpoint was not reloaded"; exit 1; }
cat > "$tmp/check.lua" <<'LUA'
local model, meta = ft.text.load_checkpoint(arg[1])
local c = model.config
assert(c.n_layer == 4 and c.n_embd == 192 and c.n_head == 6 and c.vocab_size == 256, "config " .. ft.json.encode(c))
assert(table.concat(meta.held_out, ",") == "computers,politics,science,songs-poems", "held_out")
assert(meta.preset == "gpt-mini" and math.tointeger(meta.step) == 4, "meta")
local r = ft.text.perplexity(model, { "a short fortune" }, { context = 64 })
assert(r.tokens == 16 and r.loss > 0 and r.loss < 6, "perplexity " .. r.loss)
print(("loaded: %d parameters, held out %s"):format(model:num_parameters(), table.concat(meta.held_out, ", ")))
LUA
"$ftlua" "$tmp/check.lua" "$tmp/gpt_mini.h5"
# the learning curve: an evaluation at step 2 and the final one at step 4, whose validation
# loss is the checkpoint's
cat > "$tmp/curve.lua" <<'LUA'
local dir, path = arg[1], arg[2]
local rows = {}
for line in io.lines(dir .. "/history.csv") do rows[#rows + 1] = line end
assert(rows[1] == "step,train_loss,val_loss" and #rows == 3, "history.csv: " .. table.concat(rows, " | "))
assert(rows[2]:match("^2,") and rows[3]:match("^4,"), "steps: " .. rows[2] .. " | " .. rows[3])
local _, meta = ft.load(path)
local final = tonumber(rows[3]:match("([^,]*)$"))
assert(math.abs(final - meta.val_loss) < 1e-5, ("final val loss %g, checkpoint %g"):format(final, meta.val_loss))
assert(assert(io.open(dir .. "/curve.png", "rb")):read(8) == "\137PNG\r\n\26\n", "curve.png is not a PNG")
LUA
"$ftlua" "$tmp/curve.lua" "$tmp/curve" "$tmp/gpt_mini.h5" || { echo "FAIL: learning curve"; exit 1; }
echo "PASS: gpt-mini trained, saved and reloaded"
