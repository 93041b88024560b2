#!/usr/bin/env bash
# A LoRA step on a Mistral-7B-shaped decoder (hidden 4,096, 32 layers, 32 heads, 8 key/value
# heads, intermediate 14,336, vocab 32,000, untied lm_head) with an NF4 base: the model is built
# with random weights by ft.models.new(config, nil, {quantize = "nf4"}), each projection drawn,
# quantised and freed in turn, so the 29 GB float32 model never exists; then LoRA r 16 (alpha
# 32) on q, k, v, o, gate, up and down, AdamW on the adapter, 1 x 128 tokens, gradient
# checkpointing. Reports the build time, step time, tokens/s, peak RSS, the weight bytes and the
# memory breakdown (scripts/bench/qwen_lora_step.lua --model mistral-7b does the work).
#
#   scripts/bench/mistral7b_nf4_lora.sh [THREADS (default 2)] [STEPS (default 2)]
#
# FTLUA selects the ftlua binary (default build/ftlua). KIND=int8 or nf4_fp32 picks another
# base; GRADIENT_CHECKPOINTING=0 keeps every block's activations instead; MATMUL_PRECISION=bfloat16
# multiplies the dequantised tiles on the bfloat16 kernels (ft.set_matmul_precision); DTYPE=bfloat16
# keeps the embedding, lm_head and norms in bfloat16 (float32 by default). One warm-up step
# runs before the timed ones. The build draws 7 billion normal numbers: minutes.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 2 "$@"

threads=${1:-2}
steps=${2:-2}
kind=${KIND:-nf4}
case "$kind" in nf4|nf4_fp32|int8) ;; *) echo "$(basename "$0"): KIND must be nf4, nf4_fp32 or int8, got '$kind'" >&2; exit 2 ;; esac
extra=(--gradient-checkpointing)
[ "${GRADIENT_CHECKPOINTING:-1}" = 0 ] && extra=()
[ -n "${MATMUL_PRECISION:-}" ] && extra+=(--matmul-precision "$MATMUL_PRECISION")
[ -n "${DTYPE:-}" ] && extra+=(--dtype "$DTYPE")
use_threads "$threads"

echo "== ftlua: Mistral-7B-shaped, $kind base, 1 x 128 tokens, $threads threads, $steps timed steps"
"$ftlua" "$root/scripts/bench/qwen_lora_step.lua" --model mistral-7b --quantize "$kind" --context 128 \
  --threads "$threads" --steps "$steps" --warmup 1 "${extra[@]}" | tee "$tmp/ftlua.log"
rate=$(result tokens_per_sec "$tmp/ftlua.log")
ms=$(result ms_per_step "$tmp/ftlua.log")
rss=$(result peak_rss_mb "$tmp/ftlua.log")
build=$(result build_s "$tmp/ftlua.log")
weights=$(result weight_mb "$tmp/ftlua.log")
awk -v r="$rate" -v ms="$ms" -v rss="$rss" -v b="$build" -v w="$weights" -v k="$kind" 'BEGIN {
  printf "Mistral-7B-shaped LoRA step, %s base: %.1f s a step, %.1f tokens/s, peak RSS %.0f MiB, weights %.0f MiB, built in %.0f s\n", k, ms / 1000, r, rss, w, b
}'
