#!/usr/bin/env bash
# Times a GPT-S training step (forward + backward + AdamW, dropout 0) with ftlua and with
# PyTorch (the same model written out in scripts/bench/gpt_s_step_torch.py), at the same
# thread count, and prints both speeds in tokens/s and their ratio.
#
#   scripts/bench/compare_gpt_s.sh [THREADS (default 2)] [BATCH (default 8)] [CONTEXT (default 256)] [STEPS (default 10)]
#
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -gt 4 ]; then echo "$(basename "$0"): at most 4 arguments, got $# (see --help)" >&2; exit 2; fi
for a in "$@"; do
  case "$a" in
    ''|*[!0-9]*|0) echo "$(basename "$0"): expected positive integers, got '$a' (see --help)" >&2; exit 2 ;;
  esac
done

threads=${1:-2}
batch=${2:-8}
context=${3:-256}
steps=${4:-10}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ftlua=${FTLUA:-$root/build/ftlua}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

export OMP_NUM_THREADS=$threads
# Debian's torch runs its BLAS calls on OpenBLAS's own pthreads while its OpenMP threads
# spin between parallel regions; with as many threads as cores the two fight, and torch
# slows down by a third on 2 cores. Passive waiting (what ftlua uses too) avoids that.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

echo "== ftlua: batch $batch x context $context, $threads threads"
"$ftlua" "$root/scripts/bench/gpt_s_step.lua" --threads "$threads" --batch-size "$batch" --context "$context" \
  --steps "$steps" | tee "$tmp/ftlua.log"
echo "== PyTorch: batch $batch x context $context, $threads threads"
/usr/bin/python3 "$root/scripts/bench/gpt_s_step_torch.py" --threads "$threads" --batch-size "$batch" \
  --context "$context" --steps "$steps" | tee "$tmp/torch.log"

rate() { sed -n 's/^RESULT .*tokens_per_sec=\([0-9.]*\).*/\1/p' "$1" | tail -1; }
ft_rate=$(rate "$tmp/ftlua.log")
torch_rate=$(rate "$tmp/torch.log")
if [ -z "$ft_rate" ] || [ -z "$torch_rate" ]; then
  echo "error: a run did not report its speed" >&2
  exit 1
fi
awk -v a="$ft_rate" -v b="$torch_rate" -v t="$threads" -v bs="$batch" -v c="$context" 'BEGIN {
  printf "GPT-S training step, batch %d x context %d, %d threads: ftlua %.0f tokens/s, PyTorch %.0f tokens/s, ratio ftlua/PyTorch %.2f\n", bs, c, t, a, b, a / b
}'
