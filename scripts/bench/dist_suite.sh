#!/bin/bash
# The distributed benchmarks in one run (about 5 minutes on 2 cores):
#   1. all-reduce latency and bandwidth between 2 ranks (dist_allreduce.lua: alpha-beta fit);
#   2. overlap: GPT-S full fine-tuning on 2 ranks x 1 thread with the buckets' all-reduces
#      overlapping backward or all at its end, 25 MiB and 1 MiB buckets (dist_step.lua), and the
#      timeline of one step as a PNG (dist_timeline.lua);
#   3. scaling: GPT-S and ResNet-S training, 1 rank x 2 threads against 2 ranks x 1 thread, the
#      same global batch, beside PyTorch (DDP over gloo) doing the same (dist_step_torch.py).
#
#   scripts/bench/dist_suite.sh [--out DIR] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="runs/bench-dist-$(date +%Y%m%d-%H%M%S)"
steps=8
usage="usage: $(basename "$0") [--out DIR] [--steps N] (timed steps per measurement, default 8)"
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) echo "$usage"; exit 0 ;;
    --out) out=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "$(basename "$0"): unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
ftlua=${FTLUA:-build/ftlua}
python=/usr/bin/python3
root_flag=()
[ "$(id -u)" -eq 0 ] && root_flag=(--allow-run-as-root)
mpi() { # mpi NP ARGS...: ftlua under mpirun, one thread per rank
  local np=$1
  shift
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1 \
    mpirun "${root_flag[@]}" --oversubscribe --bind-to none -np "$np" -x OMPI_MCA_btl_vader_single_copy_mechanism \
    -x OMP_NUM_THREADS "$ftlua" "$@"
}
result() { grep '^RESULT' "$1" | tail -1; }
field() { local v; v=$(sed -nE "s/.*$2=([^ ]+).*/\1/p" <<< "$1"); echo "${v:--}"; }

echo "OpenBLAS kernels: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: detected)}; $(nproc) cores"
echo "== all-reduce between 2 ranks"
mpi 2 scripts/bench/dist_allreduce.lua --json "$out/allreduce.json" | tee "$out/allreduce.log"

echo "== overlap: GPT-S, 2 ranks x 1 thread, global batch 16 x 128 tokens"
mpi 2 scripts/bench/dist_step.lua --model gpt-s --threads 1 --steps "$steps" --modes 25:on,25:off,1:on,1:off \
  --json "$out/overlap_gpt_s.json" | tee "$out/overlap_gpt_s.log"
"$ftlua" scripts/bench/dist_timeline.lua "$out/overlap_gpt_s.json" "$out/timeline_gpt_s.png"

echo "== scaling: 1 rank x 2 threads against 2 ranks x 1 thread (same global batch)"
summary=("model          ftlua 1x2   ftlua 2x1  speed-up   torch 1x2   torch 2x1  speed-up   (samples/s)")
for model in gpt-s resnet-s; do
  "$ftlua" scripts/bench/dist_step.lua --model "$model" --threads 2 --steps "$steps" > "$out/${model}_1x2.log"
  mpi 2 scripts/bench/dist_step.lua --model "$model" --threads 1 --steps "$steps" --json "$out/${model}_2x1.json" \
    > "$out/${model}_2x1.log"
  a=$(field "$(result "$out/${model}_1x2.log")" samples_per_sec)
  b=$(field "$(result "$out/${model}_2x1.log")" samples_per_sec)
  ta=- tb=-
  if "$python" -c "import torch" 2>/dev/null; then
    timeout 600 "$python" scripts/bench/dist_step_torch.py --model "$model" --world 1 --threads 2 --steps "$steps" \
      > "$out/${model}_torch_1x2.log" 2>&1 || true
    timeout 600 "$python" scripts/bench/dist_step_torch.py --model "$model" --world 2 --threads 1 --steps "$steps" \
      > "$out/${model}_torch_2x1.log" 2>&1 || true
    ta=$(field "$(result "$out/${model}_torch_1x2.log")" samples_per_sec)
    tb=$(field "$(result "$out/${model}_torch_2x1.log")" samples_per_sec)
  fi
  summary+=("$(awk -v m="$model" -v a="$a" -v b="$b" -v ta="$ta" -v tb="$tb" 'BEGIN {
    s = (a > 0) ? sprintf("%.2fx", b / a) : "-"; ts = (ta > 0 && tb > 0) ? sprintf("%.2fx", tb / ta) : "-"
    printf "%-12s %11s %11s %9s %11s %11s %9s", m, a, b, s, ta, tb, ts }')")
done
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
echo "wrote $out"
