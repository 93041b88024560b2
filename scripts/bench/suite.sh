#!/usr/bin/env bash
# The speed suite: ftlua against PyTorch (Debian's python3-torch) at the same thread count, one
# table of speeds, ratios and peak RSS. Each workload runs --rounds times per side, the sides
# taking turns (PyTorch, ftlua, PyTorch, ftlua ...) so that a slow spell of a shared machine
# falls on both; each side reports its median round.
#   resnet-full    ResNet-S training step, batch 128 of 1x28x28, AdamW, every layer training
#                  (resnet_step.lua / resnet_step_torch.py)
#   resnet-frozen  the same with conv1, bn1, layer1 and layer2 frozen
#   gpt-full       GPT-S (6 layers, width 384), batch 8 x 256 tokens, AdamW, full fine-tuning
#                  (gpt_s_step.lua / gpt_s_step_torch.py)
#   gpt-lora       the same with LoRA r 8 on c_attn, c_proj and c_fc, the rest frozen
#   qwen-lora      a Qwen2.5-0.5B-shaped decoder (random weights), LoRA r 16 on its 7
#                  projections, 1 x 256 tokens (qwen_lora_step.lua / _torch.py; about 6 GiB),
#                  whose matrix work is also put against the machine's float32 matrix-product
#                  peak (matmul_peak.lua)
#   qwen-lora-bf16 the same with ftlua's base in bfloat16, gradient checkpointing and bfloat16
#                  products (--matmul-precision bfloat16) against PyTorch in float32 with
#                  checkpointing; its matrix work put against the bfloat16 products' peak
#                  (matmul_peak.lua --dtype bfloat16). Left out where ft.kernels() has no
#                  bfloat16 product kernel.
#   moe-s          one Mixtral sparse MoE block (hidden 384, intermediate 1024, 4 experts, top 2;
#                  per-expert layout, grouped path), forward + backward on 8 x 256 tokens
#                  (moe_block.lua / moe_block_torch.py; compare_moe_block.sh has every variant)
#
#   scripts/bench/suite.sh [--out DIR] [--rounds N] [--threads N] [--quick] [--only NAME,...]
#
# --out is the results folder (default runs/bench-suite-<YYYYmmdd-HHMMSS>; new or empty): each
# run's log, env.json (date, CPU, OpenBLAS's kernels, ftlua's convolution path, versions) and
# summary.txt (the table). --rounds: turns per side (default 3); --threads: both sides'
# threads (default 2); --quick: 1 round of fewer steps and a 2-layer Qwen shape, to check that
# everything runs. OpenBLAS's kernels are the environment's (OPENBLAS_CORETYPE is left as it
# is and reported). --only runs the named workloads alone (say --only qwen-lora --rounds 5).
# Each row also gives the range of the per-round ratios (round r of ftlua against round r of
# PyTorch), to show how far one pair of runs can move on the machine. FTLUA selects the ftlua
# binary (default build/ftlua).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

me=$(basename "$0")
out=
rounds=3
threads=2
quick=0
only=
positive() { case "$2" in ''|*[!0-9]*|0) echo "$me: $1: expected a positive integer, got '$2' (see --help)" >&2; exit 2 ;; esac; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || { echo "$me: --out needs a folder (see --help)" >&2; exit 2; }; out=$2; shift 2 ;;
    --rounds) [ $# -ge 2 ] || { echo "$me: --rounds needs a number (see --help)" >&2; exit 2; }
      positive --rounds "$2"; rounds=$2; shift 2 ;;
    --threads) [ $# -ge 2 ] || { echo "$me: --threads needs a number (see --help)" >&2; exit 2; }
      positive --threads "$2"; threads=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) [ $# -ge 2 ] || { echo "$me: --only needs workload names (see --help)" >&2; exit 2; }; only=$2; shift 2 ;;
    *) echo "$me: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
use_threads "$threads"
bench=$root/scripts/bench
t=(--threads "$threads")
resnet_steps=(--steps 10) gpt_steps=(--steps 10) qwen=(--steps 3) moe_steps=(--steps 10)
if [ "$quick" = 1 ]; then
  rounds=1 resnet_steps=(--steps 2 --warmup 1) gpt_steps=(--steps 2 --warmup 1) qwen=(--steps 1 --layers 2)
  moe_steps=(--steps 2 --warmup 1)
fi

# name | ftlua arguments | PyTorch arguments | the RESULT key of the speed | its unit
workloads=(
  "resnet-full|$bench/resnet_step.lua --mode full ${resnet_steps[*]}|$bench/resnet_step_torch.py --mode full ${resnet_steps[*]}|samples_per_sec|images/s"
  "resnet-frozen|$bench/resnet_step.lua --mode frozen ${resnet_steps[*]}|$bench/resnet_step_torch.py --mode frozen ${resnet_steps[*]}|samples_per_sec|images/s"
  "gpt-full|$bench/gpt_s_step.lua ${gpt_steps[*]}|$bench/gpt_s_step_torch.py ${gpt_steps[*]}|tokens_per_sec|tokens/s"
  "gpt-lora|$bench/gpt_s_step.lua --lora 8 ${gpt_steps[*]}|$bench/gpt_s_step_torch.py --lora 8 ${gpt_steps[*]}|tokens_per_sec|tokens/s"
  "qwen-lora|$bench/qwen_lora_step.lua ${qwen[*]}|$bench/qwen_lora_step_torch.py ${qwen[*]}|tokens_per_sec|tokens/s"
  "qwen-lora-bf16|$bench/qwen_lora_step.lua --dtype bfloat16 --matmul-precision bfloat16 --gradient-checkpointing ${qwen[*]}|$bench/qwen_lora_step_torch.py --gradient-checkpointing ${qwen[*]}|tokens_per_sec|tokens/s"
  "moe-s|$bench/moe_block.lua ${moe_steps[*]}|$bench/moe_block_torch.py ${moe_steps[*]}|tokens_per_sec|tokens/s"
)

names=$(printf '%s\n' "${workloads[@]}" | cut -d'|' -f1 | paste -sd, -)
for n in ${only//,/ }; do
  case ",$names," in *",$n,"*) ;; *) echo "$me: --only: unknown workload '$n'; workloads: ${names//,/, }" >&2; exit 2 ;; esac
done
"$torch_python" -c "import torch" 2>/dev/null || { echo "$me: PyTorch is not installed (Debian package python3-torch)" >&2; exit 1; }
out=${out:-runs/bench-suite-$(date +%Y%m%d-%H%M%S)}
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "$me: --out $out already holds files; choose a new folder" >&2
  exit 2
fi
mkdir -p "$out"

openblas_kernels > "$tmp/blas"
blas=$(cat "$tmp/blas")
kernels=$("$ftlua" -e 'local k = ft.kernels(); print(k.conv .. "|" .. (k.dnnl_isa or "none") .. "|" .. (k.matmul_bf16 or "none"))')
conv_path=${kernels%%|*} rest=${kernels#*|}
dnnl_isa=${rest%%|*} matmul_bf16=${rest#*|}
cat > "$out/env.json" <<JSON
{
  "date": "$(date -Iseconds)",
  "cpus": $(getconf _NPROCESSORS_ONLN),
  "cpu_model": "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)",
  "threads": $threads,
  "openblas_coretype": "${OPENBLAS_CORETYPE:-}",
  "openblas_corename": "${blas%%|*}",
  "openblas_config": "${blas#*|}",
  "ftlua_conv_path": "$conv_path",
  "ftlua_dnnl_isa": "$dnnl_isa",
  "ftlua_matmul_bf16": "$matmul_bf16",
  "torch": "$("$torch_python" -c 'import torch; print(torch.__version__)')",
  "load_start": "$(cut -d' ' -f1-3 /proc/loadavg)"
}
JSON
echo "CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $threads threads; OpenBLAS kernels ${blas%%|*}" \
  "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}); ftlua convolutions: $conv_path (oneDNN $dnnl_isa);" \
  "results in $out"

# run LOG COMMAND...: one timed run, its output kept in LOG; a failed run stops the suite.
run() {
  local log=$1
  shift
  if ! "$@" > "$log" 2>&1; then
    cat "$log" >&2
    echo "$me: failed: $*" >&2
    exit 1
  fi
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

"$ftlua" "$bench/matmul_peak.lua" "${t[@]}" > "$out/matmul_peak.log" 2>&1
peak=$(result gflops "$out/matmul_peak.log")
echo "float32 matrix-product peak: $peak GFLOP/s (matmul_peak.lua)"
if [ "$matmul_bf16" != none ]; then
  "$ftlua" "$bench/matmul_peak.lua" --dtype bfloat16 "${t[@]}" > "$out/matmul_peak_bf16.log" 2>&1
  peak_bf16=$(result gflops "$out/matmul_peak_bf16.log")
  echo "bfloat16 products' peak: $peak_bf16 GFLOP/s ($matmul_bf16; matmul_peak.lua --dtype bfloat16)"
else
  echo "no bfloat16 product kernel here: the qwen-lora-bf16 row is left out"
fi

rows=()
for w in "${workloads[@]}"; do
  IFS='|' read -r name ft_args torch_args key unit <<< "$w"
  [ "$name" = qwen-lora-bf16 ] && [ "$matmul_bf16" = none ] && continue
  [ -n "$only" ] && case ",$only," in *",$name,"*) ;; *) continue ;; esac
  : > "$tmp/ft" ; : > "$tmp/torch" ; : > "$tmp/ft_rss" ; : > "$tmp/torch_rss"
  for r in $(seq 1 "$rounds"); do
    # shellcheck disable=SC2086  # the argument strings split into words on purpose
    run "$out/$name-torch-$r.log" "$torch_python" $torch_args "${t[@]}"
    # shellcheck disable=SC2086
    run "$out/$name-ftlua-$r.log" "$ftlua" $ft_args "${t[@]}"
    result "$key" "$out/$name-torch-$r.log" >> "$tmp/torch"
    result "$key" "$out/$name-ftlua-$r.log" >> "$tmp/ft"
    result peak_rss_mb "$out/$name-torch-$r.log" >> "$tmp/torch_rss"
    result peak_rss_mb "$out/$name-ftlua-$r.log" >> "$tmp/ft_rss"
  done
  a=$(median < "$tmp/ft") b=$(median < "$tmp/torch")
  spread=$(paste "$tmp/ft" "$tmp/torch" | awk '{ q = $1 / $2; if (NR == 1 || q < lo) lo = q; if (NR == 1 || q > hi) hi = q }
    END { printf "%.2f-%.2fx", lo, hi }')
  ra=$(median < "$tmp/ft_rss") rb=$(median < "$tmp/torch_rss")
  extra=
  if [ "$name" = qwen-lora ] || [ "$name" = qwen-lora-bf16 ]; then
    : > "$tmp/gf"
    for r in $(seq 1 "$rounds"); do result gflops "$out/$name-ftlua-$r.log" >> "$tmp/gf"; done
    gf=$(median < "$tmp/gf")
    p=$peak what="float32"
    [ "$name" = qwen-lora-bf16 ] && p=$peak_bf16 what="bfloat16"
    extra=$(awk -v g="$gf" -v p="$p" -v w="$what" 'BEGIN { printf "%.1f GFLOP/s = %.0f%% of the %s peak", g, 100 * g / p, w }')
  fi
  row=$(awk -v n="$name" -v a="$a" -v b="$b" -v u="$unit" -v s="$spread" -v ra="$ra" -v rb="$rb" -v x="$extra" 'BEGIN {
    printf "| %s | %.1f %s | %.1f %s | %.2fx | %s | %d | %d | %.2f | %s |", n, a, u, b, u, a / b, s, ra, rb, ra / rb, x }')
  rows+=("$row")
  echo "$row"
done

{
  echo "$(date -Iseconds): $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $threads threads each;" \
    "OpenBLAS ${blas%%|*}; ftlua convolutions: $conv_path (oneDNN $dnnl_isa); bfloat16 products: $matmul_bf16; PyTorch $("$torch_python" -c 'import torch; print(torch.__version__)');" \
    "median of $rounds alternating rounds"
  echo
  echo "| workload | ftlua | PyTorch | ratio | round ratios | ftlua peak RSS MiB | PyTorch peak RSS MiB | RSS ratio | matrix work |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  printf '%s\n' "${rows[@]}"
} > "$out/summary.txt"
echo
cat "$out/summary.txt"
