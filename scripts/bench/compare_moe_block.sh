#!/usr/bin/env bash
# Times one Mixtral sparse MoE block, forward + backward of sum(block(x) * g) to x and every
# weight, with ftlua (scripts/bench/moe_block.lua, ft.models.mixtral.SparseMoeBlock) and with
# PyTorch (scripts/bench/moe_block_torch.py, transformers' MixtralSparseMoeBlock in plain torch)
# at the same thread count, and prints one table: ms per step (median), tokens/s, the speed ratio
# ftlua/PyTorch (above 1: ftlua faster), CPU time per step (all threads; on a shared machine it
# moves less than the wall time), each process's peak RSS, and the grouped path's speed-up over
# the dense one (wall and CPU time).
#
#   scripts/bench/compare_moe_block.sh [THREADS (default 2)] [ROUNDS (default 3)] [STEPS (default 10)]
#   SHAPES=moe-s scripts/bench/compare_moe_block.sh 1 1 5      # one shape, 1 thread, 1 round, 5 steps
#
# Shapes (SHAPES, default "moe-s moe-m"): moe-s = hidden 384, intermediate 1024, 4 experts, top 2
# (the "moe-s" preset); moe-m = hidden 1024, intermediate 2816, 8 experts, top 2. x is [8, 256,
# hidden] (2048 tokens). For each shape: both paths (grouped: each expert on its own tokens;
# dense: every expert on every token, weighted by the routing matrix) in both expert layouts
# (per_expert: w1/w2/w3 Linears; fused: gate_up_proj [E,2I,H] + down_proj [E,H,I]), on both
# sides. moe-s times STEPS steps after 2 warm-up steps; moe-m (about 7x the work) max(2, STEPS/3)
# after 1. Each workload runs ROUNDS times per side, the sides taking turns (PyTorch, ftlua,
# PyTorch, ftlua ...) so that a slow spell of a shared machine falls on both; each cell is the
# median round. First, a small case (x [2, 32, 384]) checks that both sides compute the same
# output and gradients from the same weights (moe_block.lua --save, moe_block_torch.py --check).
#
# OpenBLAS's kernels are the environment's (OPENBLAS_CORETYPE is left as it is and reported), as
# is the load average at the start and the end. FTLUA selects the ftlua binary (default
# build/ftlua); PyTorch is Debian's /usr/bin/python3. LOGS=DIR keeps every run's log there.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
check_args 3 "$@"

threads=${1:-2}
rounds=${2:-3}
steps=${3:-10}
shapes=${SHAPES:-moe-s moe-m}
for s in $shapes; do
  case "$s" in moe-s|moe-m) ;; *) echo "$(basename "$0"): SHAPES: unknown shape '$s' (moe-s, moe-m)" >&2; exit 2 ;; esac
done
logs=${LOGS:-$tmp/logs}
mkdir -p "$logs"
use_threads "$threads"
bench=$root/scripts/bench

blas=$(openblas_kernels)
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
torch_version=$("$torch_python" -c 'import torch; print(torch.__version__)')
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "CPU: $cpu ($(getconf _NPROCESSORS_ONLN) online), $threads threads each; OpenBLAS kernels ${blas%%|*}" \
  "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}); PyTorch $torch_version; load average at start $load_start"

echo "== check: the same weights, output and gradients on x [2, 32, 384] (grouped and dense paths)"
for layout in per_expert fused; do
  "$ftlua" "$bench/moe_block.lua" --save "$tmp/check-$layout.safetensors" --layout "$layout" --batch-size 2 \
    --context 32 --threads "$threads" > "$logs/check-$layout-ftlua.log" 2>&1 || { cat "$logs/check-$layout-ftlua.log" >&2; exit 1; }
  if ! "$torch_python" "$bench/moe_block_torch.py" --check "$tmp/check-$layout.safetensors" --threads "$threads" \
    > "$logs/check-$layout-torch.log" 2>&1; then
    cat "$logs/check-$layout-torch.log" >&2
    echo "$(basename "$0"): the two blocks disagree ($layout layout)" >&2
    exit 1
  fi
  echo "$layout: $(tail -1 "$logs/check-$layout-torch.log")"
done

# run LOG COMMAND...: one timed run, its output kept in LOG; a failed run stops the script.
run() {
  local log=$1
  shift
  if ! "$@" > "$log" 2>&1; then
    cat "$log" >&2
    echo "$(basename "$0"): failed: $*" >&2
    exit 1
  fi
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

rows=() speedups=()
for shape in $shapes; do
  if [ "$shape" = moe-m ]; then
    n=$((steps / 3)); [ "$n" -ge 2 ] || n=2
    s=(--steps "$n" --warmup 1)
  else
    s=(--steps "$steps" --warmup 2)
  fi
  for path in grouped dense; do
    for layout in per_expert fused; do
      w=$shape-$path-$layout
      for r in $(seq 1 "$rounds"); do
        a=(--shape "$shape" --path "$path" --layout "$layout" --threads "$threads" "${s[@]}")
        echo "== $w round $r/$rounds (load $(cut -d' ' -f1 /proc/loadavg))"
        run "$logs/$w-torch-$r.log" "$torch_python" "$bench/moe_block_torch.py" "${a[@]}"
        run "$logs/$w-ftlua-$r.log" "$ftlua" "$bench/moe_block.lua" "${a[@]}"
        tail -1 "$logs/$w-torch-$r.log" | sed 's/^/   PyTorch /'
        tail -1 "$logs/$w-ftlua-$r.log" | sed 's/^/   ftlua   /'
      done
      for side in ftlua torch; do
        for key in ms_per_step step_cpu_ms peak_rss_mb; do
          for r in $(seq 1 "$rounds"); do result "$key" "$logs/$w-$side-$r.log"; done | median > "$tmp/$w-$side-$key"
        done
      done
      row=$(awk -v sh="$shape" -v p="$path" -v l="$layout" -v a="$(cat "$tmp/$w-ftlua-ms_per_step")" \
        -v b="$(cat "$tmp/$w-torch-ms_per_step")" -v ca="$(cat "$tmp/$w-ftlua-step_cpu_ms")" \
        -v cb="$(cat "$tmp/$w-torch-step_cpu_ms")" -v ra="$(cat "$tmp/$w-ftlua-peak_rss_mb")" \
        -v rb="$(cat "$tmp/$w-torch-peak_rss_mb")" 'BEGIN {
        printf "| %s | %s | %s | %.1f | %.1f | %.0f | %.0f | %.2fx | %.0f | %.0f | %.2fx | %d | %d |", sh, p, l, a, b,
          2048000 / a, 2048000 / b, b / a, ca, cb, cb / ca, ra, rb }')
      rows+=("$row")
      echo "$row"
    done
  done
  for layout in per_expert fused; do
    g=$shape-grouped-$layout d=$shape-dense-$layout
    row=$(awk -v sh="$shape" -v l="$layout" -v ag="$(cat "$tmp/$g-ftlua-ms_per_step")" -v ad="$(cat "$tmp/$d-ftlua-ms_per_step")" \
      -v bg="$(cat "$tmp/$g-torch-ms_per_step")" -v bd="$(cat "$tmp/$d-torch-ms_per_step")" \
      -v cag="$(cat "$tmp/$g-ftlua-step_cpu_ms")" -v cad="$(cat "$tmp/$d-ftlua-step_cpu_ms")" \
      -v cbg="$(cat "$tmp/$g-torch-step_cpu_ms")" -v cbd="$(cat "$tmp/$d-torch-step_cpu_ms")" 'BEGIN {
      printf "| %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |", sh, l, ad / ag, bd / bg, cad / cag, cbd / cbg }')
    speedups+=("$row")
  done
done

echo
echo "$(date -Iseconds): $cpu, $threads threads each; OpenBLAS ${blas%%|*} (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)});" \
  "PyTorch $torch_version; median of $rounds alternating rounds; load average $load_start at the start," \
  "$(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| shape | path | layout | ftlua ms/step | PyTorch ms/step | ftlua tokens/s | PyTorch tokens/s | speed ftlua/PyTorch |" \
  "ftlua CPU ms/step | PyTorch CPU ms/step | CPU time PyTorch/ftlua | ftlua peak RSS MiB | PyTorch peak RSS MiB |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "grouped path's speed-up over the dense one (dense / grouped; the expert work is E / top_k times the grouped's):"
echo
echo "| shape | layout | ftlua, wall | PyTorch, wall | ftlua, CPU time | PyTorch, CPU time |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
printf '%s\n' "${speedups[@]}"
