#!/usr/bin/env bash
# Times a LoRA step (r 16 on q, k, v, o, gate, up and down; AdamW on the adapter; batch 1 x 256)
# on a Qwen2.5-0.5B-shaped decoder with random weights, with ftlua and with PyTorch (the same
# model written out in scripts/bench/qwen_lora_step_torch.py), at the same thread count, each in
# a process of its own, and prints tokens/s, peak RSS and the ratios.
#
#   scripts/bench/compare_qwen_lora.sh [THREADS (default 2)] [LAYERS (default 24)] [STEPS (default 5)]
#
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
# GRADIENT_CHECKPOINTING=1 recomputes each decoder block in backward on both sides.
# QUANTIZE=nf4 (or nf4_fp32, int8) gives the ftlua side a quantised base built layer by layer
# (the PyTorch twin stays float32); DTYPE=bfloat16 (or float16) gives the ftlua side a half-precision
# frozen base built one weight in float32 at a time (the PyTorch twin stays float32); SKIP_LOGITS=1 computes ftlua's loss without the whole
# logits (model(ids, {labels =, skip_logits = true})). Both change what is compared: use them
# for ftlua's memory, not for the speed ratio. MATMUL_PRECISION=bfloat16 multiplies ftlua's
# bfloat16 or quantised base on the bfloat16 kernels (ft.set_matmul_precision: activations
# rounded to bfloat16, float32 sums; the PyTorch twin stays float32).
# OpenBLAS kernels are the environment's (OPENBLAS_CORETYPE, printed below).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 3 "$@"

threads=${1:-2}
layers=${2:-24}
steps=${3:-5}
use_threads "$threads"
extra=()
[ "${GRADIENT_CHECKPOINTING:-0}" = 1 ] && extra=(--gradient-checkpointing)
ft_extra=()
[ -n "${QUANTIZE:-}" ] && ft_extra+=(--quantize "$QUANTIZE")
[ -n "${DTYPE:-}" ] && ft_extra+=(--dtype "$DTYPE")
[ "${SKIP_LOGITS:-0}" = 1 ] && ft_extra+=(--skip-logits)
[ -n "${MATMUL_PRECISION:-}" ] && ft_extra+=(--matmul-precision "$MATMUL_PRECISION")
echo "OpenBLAS kernels: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(auto)}"

echo "== ftlua: $layers layers, 1 x 256 tokens, $threads threads"
"$ftlua" "$root/scripts/bench/qwen_lora_step.lua" --threads "$threads" --layers "$layers" --steps "$steps" \
  "${extra[@]}" "${ft_extra[@]}" | tee "$tmp/ftlua.log"
echo "== PyTorch: $layers layers, 1 x 256 tokens, $threads threads"
"$torch_python" "$root/scripts/bench/qwen_lora_step_torch.py" --threads "$threads" --layers "$layers" \
  --steps "$steps" "${extra[@]}" | tee "$tmp/torch.log"

ft_rate=$(result tokens_per_sec "$tmp/ftlua.log")
torch_rate=$(result tokens_per_sec "$tmp/torch.log")
ft_rss=$(result peak_rss_mb "$tmp/ftlua.log")
torch_rss=$(result peak_rss_mb "$tmp/torch.log")
awk -v a="$ft_rate" -v b="$torch_rate" -v ra="$ft_rss" -v rb="$torch_rss" -v t="$threads" -v l="$layers" 'BEGIN {
  printf "Qwen2.5-0.5B-shaped LoRA step (%d layers), 1 x 256 tokens, %d threads:\n", l, t
  printf "  ftlua %.1f tokens/s, peak RSS %.0f MiB | PyTorch %.1f tokens/s, peak RSS %.0f MiB\n", a, ra, b, rb
  printf "  ratios ftlua/PyTorch: speed %.2f, peak RSS %.2f\n", a / b, ra / rb
}'
