#!/usr/bin/env bash
# Times a ResNet-S training step (batch 128 of 1x28x28, forward + backward + AdamW) with ftlua
# on each convolution path and with PyTorch (the same model written out in
# scripts/bench/resnet_step_torch.py), at the same thread count, with every parameter training
# ("full") and with conv1 + bn1 + layer1 + layer2 frozen ("frozen"). The runs alternate
# (PyTorch, ftlua gemm, ftlua default, ftlua dnnl, ftlua winograd, then again) so that a slow spell of a
# shared machine falls on all of them; each configuration reports the median of its rounds.
#
#   scripts/bench/compare_resnet.sh [THREADS (default 2)] [STEPS (default 10)] [ROUNDS (default 3)]
#
# ftlua's paths: FT_CONV=gemm (im2col + OpenBLAS), the default (oneDNN where it is faster,
# Winograd for 3x3 stride-1 layers), FT_CONV=dnnl (oneDNN's direct kernels for every
# convolution), FT_CONV=winograd (oneDNN for every convolution, Winograd wherever it has the
# kernel); the oneDNN ones are left out when ftlua was
# built without oneDNN. First the two models' state_dict shapes are checked to be the same.
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 3 "$@"

threads=${1:-2}
steps=${2:-10}
rounds=${3:-3}
use_threads "$threads"
bench=$root/scripts/bench

"$ftlua" "$bench/resnet_step.lua" --shapes | tr '\t' ' ' > "$tmp/ftlua.shapes"
"$torch_python" "$bench/resnet_step_torch.py" --shapes > "$tmp/torch.shapes"
if ! diff "$tmp/ftlua.shapes" "$tmp/torch.shapes" > "$tmp/shapes.diff"; then
  cat "$tmp/shapes.diff"
  echo "error: the PyTorch model's state_dict differs from ftlua's resnet-s (< ftlua, > PyTorch)" >&2
  exit 1
fi
echo "== same model: $(wc -l < "$tmp/ftlua.shapes") state_dict entries of the same names and shapes"

# ftlua configurations: label and FT_CONV value (empty: the default).
labels=(gemm)
values=(gemm)
if FT_CONV=dnnl "$ftlua" -e 'ft.nn.functional.conv2d(ft.randn(1, 16, 4, 4), ft.randn(1, 16, 3, 3))' 2>/dev/null; then
  labels+=(default dnnl winograd)
  values+=("" dnnl winograd)
else
  echo "== ftlua has no oneDNN: only FT_CONV=gemm is timed"
fi

for mode in full frozen; do
  for ((r = 1; r <= rounds; r++)); do
    echo "== $mode, round $r/$rounds: PyTorch"
    "$torch_python" "$bench/resnet_step_torch.py" --mode "$mode" --threads "$threads" --steps "$steps" |
      tee "$tmp/$mode-torch-$r.log" | tail -2
    for i in "${!labels[@]}"; do
      echo "== $mode, round $r/$rounds: ftlua ${labels[$i]}"
      FT_CONV=${values[$i]} "$ftlua" "$bench/resnet_step.lua" --mode "$mode" --threads "$threads" --steps "$steps" |
        tee "$tmp/$mode-${labels[$i]}-$r.log" | tail -2
    done
  done
done

# The median over the rounds of KEY in the logs of configuration $2 of mode $1.
median_of() {
  local mode=$1 config=$2 key=$3 r
  for ((r = 1; r <= rounds; r++)); do result "$key" "$tmp/$mode-$config-$r.log"; done |
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "ResNet-S training step, batch 128, AdamW, $threads threads, median of $rounds rounds of $steps steps"
printf "  %-8s %-16s %12s %10s %14s %14s\n" mode run images/s ms/step "peak RSS MiB" "x PyTorch"
for mode in full frozen; do
  torch_rate=$(median_of "$mode" torch samples_per_sec)
  for config in torch "${labels[@]}"; do
    rate=$(median_of "$mode" "$config" samples_per_sec)
    ms=$(median_of "$mode" "$config" ms_per_step)
    rss=$(median_of "$mode" "$config" peak_rss_mb)
    name="ftlua $config"
    [ "$config" = torch ] && name=PyTorch
    awk -v m="$mode" -v n="$name" -v a="$rate" -v ms="$ms" -v rss="$rss" -v b="$torch_rate" 'BEGIN {
      printf "  %-8s %-16s %12.1f %10.1f %14.0f %14.2f\n", m, n, a, ms, rss, a / b }'
  done
done
