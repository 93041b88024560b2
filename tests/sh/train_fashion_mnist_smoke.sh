#!/usr/bin/env bash
# The main training recipe end to end on a slice of the real Fashion-MNIST (Debian package
# dataset-fashion-mnist): trains into its run folder, saves the checkpoint, reloads it with
# the same accuracy, writes the learning curve, and evaluates it again with --eval-only.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
need_fashion_mnist
run_recipe "$tmp/log" train_fashion_mnist.lua --limit 512 --test-limit 500 --epochs 2 --batch-size 64 --out "$tmp/run"
cat "$tmp/log"
ckpt="$tmp/run/resnet_s.h5"
[ -s "$ckpt" ] || fail "no checkpoint written"
before=$(sed -n 's/.*test accuracy after reloading \([0-9.]*\)% (before saving \([0-9.]*\)%).*/\1 \2/p' "$tmp/log")
read -r reloaded saved <<< "$before"
[ -n "${reloaded:-}" ] && [ "$reloaded" = "$saved" ] || fail "reloaded accuracy '$reloaded' differs from '$saved'"
head -1 "$tmp/log" | grep -q "run folder $tmp/run\$" || fail "the first line does not name the run folder"
tail -1 "$tmp/log" | grep -q "in $tmp/run (" || fail "the last line does not name the run folder"
is_png "$tmp/run/curve.png" || fail "curve.png is not a PNG"
cat > "$tmp/check.lua" <<'LUA'
local dir, saved = arg[1], tonumber(arg[2])
local rows = {}
for line in io.lines(dir .. "/history.csv") do rows[#rows + 1] = line end
assert(rows[1] == "epoch,train_loss,train_acc,test_acc,seconds" and #rows == 3, "history.csv: " .. table.concat(rows, " | "))
local r = ft.json.read(dir .. "/results.json")
assert(#r.history == 2 and r.history[2].epoch == 2, "results.json history")
-- the last epoch's test accuracy is the one printed and saved
assert(("%.2f"):format(100 * r.test_acc) == ("%.2f"):format(saved), ("results.json test_acc %g, log %g"):format(r.test_acc, saved))
assert(tonumber(rows[3]:match("^2,[^,]*,[^,]*,([^,]*),")) - r.test_acc < 1e-6, "history.csv's last test accuracy")
LUA
"$ftlua" "$tmp/check.lua" "$tmp/run" "$saved" || fail "history.csv / results.json"
run_recipe "$tmp/eval" train_fashion_mnist.lua --eval-only "$ckpt" --test-limit 500
cat "$tmp/eval"
grep -q "test accuracy ${saved}%" "$tmp/eval" || fail "--eval-only accuracy differs from ${saved}%"
echo "PASS: trained, saved, reloaded and re-evaluated at ${saved}%"
