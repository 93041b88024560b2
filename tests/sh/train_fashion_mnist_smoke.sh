#!/usr/bin/env bash
# The main training recipe end to end on a slice of the real Fashion-MNIST (Debian package
# dataset-fashion-mnist): trains, saves the checkpoint, reloads it with the same accuracy,
# and evaluates it again with --eval-only.
set -euo pipefail
ftlua=${FTLUA:-build/ftlua}
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "SKIP: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ftlua" scripts/train_fashion_mnist.lua --limit 512 --test-limit 500 --epochs 1 --batch-size 64 \
  --out "$tmp/resnet_s.h5" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
cat "$tmp/log"
[ -s "$tmp/resnet_s.h5" ] || { echo "FAIL: no checkpoint written"; exit 1; }
before=$(sed -n 's/.*test accuracy after reloading \([0-9.]*\)% (before saving \([0-9.]*\)%).*/\1 \2/p' "$tmp/log")
read -r reloaded saved <<< "$before"
[ -n "${reloaded:-}" ] && [ "$reloaded" = "$saved" ] || { echo "FAIL: reloaded accuracy '$reloaded' differs from '$saved'"; exit 1; }
"$ftlua" scripts/train_fashion_mnist.lua --eval-only "$tmp/resnet_s.h5" --test-limit 500 > "$tmp/eval" 2>&1 || { cat "$tmp/eval"; exit 1; }
cat "$tmp/eval"
grep -q "test accuracy ${saved}%" "$tmp/eval" || { echo "FAIL: --eval-only accuracy differs from ${saved}%"; exit 1; }
echo "PASS: trained, saved, reloaded and re-evaluated at ${saved}%"
