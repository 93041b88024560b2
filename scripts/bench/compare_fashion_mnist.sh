#!/usr/bin/env bash
# Trains ResNet-S for one epoch on the first N Fashion-MNIST images with ftlua and with
# PyTorch (same model, data pipeline, optimiser, thread count) and prints both speeds and
# their ratio.
#
#   scripts/bench/compare_fashion_mnist.sh [N_IMAGES (default 6400)] [THREADS (default 2)]
#
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -gt 2 ]; then echo "$(basename "$0"): at most 2 arguments, got $# (see --help)" >&2; exit 2; fi
for a in "$@"; do
  case "$a" in
    ''|*[!0-9]*|0) echo "$(basename "$0"): expected positive integers, got '$a' (see --help)" >&2; exit 2 ;;
  esac
done

n=${1:-6400}
threads=${2:-2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ftlua=${FTLUA:-$root/build/ftlua}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

export OMP_NUM_THREADS=$threads
# Passive waiting for both: Debian torch's OpenMP threads otherwise spin against its OpenBLAS threads.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

echo "== ftlua: $n images, $threads threads"
"$ftlua" "$root/scripts/train_fashion_mnist.lua" --limit "$n" --epochs 1 --threads "$threads" \
  --out "$tmp/run" 2>/dev/null | tee "$tmp/ftlua.log"
echo "== PyTorch: $n images, $threads threads"
/usr/bin/python3 "$root/scripts/bench/train_fashion_mnist_torch.py" --limit "$n" --epochs 1 \
  --threads "$threads" --no-eval | tee "$tmp/torch.log"

rate() { sed -n 's/^RESULT .*images_per_sec=\([0-9.]*\).*/\1/p' "$1" | tail -1; }
ft_rate=$(rate "$tmp/ftlua.log")
torch_rate=$(rate "$tmp/torch.log")
if [ -z "$ft_rate" ] || [ -z "$torch_rate" ]; then
  echo "error: a run did not report its speed" >&2
  exit 1
fi
awk -v a="$ft_rate" -v b="$torch_rate" -v n="$n" -v t="$threads" 'BEGIN {
  printf "training speed, %d images, %d threads: ftlua %.1f images/s, PyTorch %.1f images/s, ratio ftlua/PyTorch %.2f\n", n, t, a, b, a / b
}'
