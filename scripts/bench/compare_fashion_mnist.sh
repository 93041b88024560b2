#!/usr/bin/env bash
# Trains ResNet-S for one epoch on the first N Fashion-MNIST images with ftlua and with
# PyTorch (same model, data pipeline, optimiser, thread count) and prints both speeds and
# their ratio.
#
#   scripts/bench/compare_fashion_mnist.sh [N_IMAGES (default 6400)] [THREADS (default 2)]
#
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 2 "$@"

n=${1:-6400}
threads=${2:-2}
use_threads "$threads"

echo "== ftlua: $n images, $threads threads"
"$ftlua" "$root/scripts/train_fashion_mnist.lua" --limit "$n" --epochs 1 --threads "$threads" \
  --out "$tmp/run" 2>/dev/null | tee "$tmp/ftlua.log"
echo "== PyTorch: $n images, $threads threads"
"$torch_python" "$root/scripts/bench/train_fashion_mnist_torch.py" --limit "$n" --epochs 1 \
  --threads "$threads" --no-eval | tee "$tmp/torch.log"

ft_rate=$(result images_per_sec "$tmp/ftlua.log")
torch_rate=$(result images_per_sec "$tmp/torch.log")
awk -v a="$ft_rate" -v b="$torch_rate" -v n="$n" -v t="$threads" 'BEGIN {
  printf "training speed, %d images, %d threads: ftlua %.1f images/s, PyTorch %.1f images/s, ratio ftlua/PyTorch %.2f\n", n, t, a, b, a / b
}'
