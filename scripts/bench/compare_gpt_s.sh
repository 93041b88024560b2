#!/usr/bin/env bash
# Times a GPT-S training step (forward + backward + AdamW, dropout 0) with ftlua and with
# PyTorch (the same model written out in scripts/bench/gpt_s_step_torch.py), at the same
# thread count, and prints both speeds in tokens/s and their ratio.
#
#   scripts/bench/compare_gpt_s.sh [THREADS (default 2)] [BATCH (default 8)] [CONTEXT (default 256)] [STEPS (default 10)]
#
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 4 "$@"

threads=${1:-2}
batch=${2:-8}
context=${3:-256}
steps=${4:-10}
use_threads "$threads"

echo "== ftlua: batch $batch x context $context, $threads threads"
"$ftlua" "$root/scripts/bench/gpt_s_step.lua" --threads "$threads" --batch-size "$batch" --context "$context" \
  --steps "$steps" | tee "$tmp/ftlua.log"
echo "== PyTorch: batch $batch x context $context, $threads threads"
"$torch_python" "$root/scripts/bench/gpt_s_step_torch.py" --threads "$threads" --batch-size "$batch" \
  --context "$context" --steps "$steps" | tee "$tmp/torch.log"

ft_rate=$(result tokens_per_sec "$tmp/ftlua.log")
torch_rate=$(result tokens_per_sec "$tmp/torch.log")
awk -v a="$ft_rate" -v b="$torch_rate" -v t="$threads" -v bs="$batch" -v c="$context" 'BEGIN {
  printf "GPT-S training step, batch %d x context %d, %d threads: ftlua %.0f tokens/s, PyTorch %.0f tokens/s, ratio ftlua/PyTorch %.2f\n", bs, c, t, a, b, a / b
}'
