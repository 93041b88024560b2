#!/usr/bin/env bash
# The distributed benchmarks in one run (ft.dist under mpirun, 2 ranks on this machine), with
# their PyTorch twins where Debian's python3-torch is installed, then charts, the scaling
# estimate and a summary table:
#   1. allreduce   ft.dist.all_reduce / broadcast of 1 KiB .. 64 MiB between 2 ranks: latency
#                  (alpha) and bandwidth (1 / beta) of shared memory (dist_allreduce.lua)
#   2. overlap     GPT-S full fine-tuning (AdamW, 8 x 128 tokens a rank), 2 ranks x 1 thread,
#                  DataParallel with bucket_mb 25 and 1, overlap on and off, taking turns step
#                  by step; a timeline chart of each (dist_step.lua)
#   3. scaling     GPT-S (16 x 128 tokens) and ResNet-S (128 images) training throughput at the
#                  same global batch: 1 rank x 2 threads against 2 ranks x 1 thread, in ftlua and
#                  in PyTorch (torch DDP over gloo, 2 processes; dist_step_torch.py)
#   4. qwen_lora   a Qwen2.5-0.5B-shaped decoder with a LoRA r 16 adapter, 2 ranks x 1 thread, 1
#                  x 256 tokens a rank: the backward window of an adapter's all-reduce (needs
#                  about 7 GiB of memory; skipped with less)
#   5. estimate    bytes all-reduced per step, the alpha-beta model for 8 and 64 nodes against
#                  the measured backward (dist_estimate.lua); report: charts and the summary
#                  (dist_report.lua)
#
#   scripts/bench/dist_suite.sh [--out DIR] [--steps N] [--quick]
#
# --out is the results folder (default runs/bench-dist-<YYYYmmdd-HHMMSS>; it must be new or
# empty). --steps is the timed steps of each measurement (default 10; --quick: 2 steps, a
# 2-layer Qwen shape and a shorter all-reduce sweep, for checking that everything runs).
# The folder gets each part's JSON and log, timeline_*.png (one per mode), overlap.png,
# scaling.png, allreduce.png, estimate.md, summary.json and summary.txt (the printed summary).
# About 2 minutes on 2 cores (112 s measured; --quick 40 s). Timings on a machine other jobs
# share move by 10% or more: env.json records the load average at the start and the end.
# FTLUA selects the ftlua binary (default build/ftlua); PyTorch is Debian's /usr/bin/python3.
# OpenBLAS kernels are the environment's (OPENBLAS_CORETYPE is left as it is and reported).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

me=$(basename "$0")
out=
steps=10
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || { echo "$me: --out needs a folder (see --help)" >&2; exit 2; }; out=$2; shift 2 ;;
    --steps)
      [ $# -ge 2 ] || { echo "$me: --steps needs a number (see --help)" >&2; exit 2; }
      case "$2" in ''|*[!0-9]*|0) echo "$me: --steps: expected a positive integer, got '$2' (see --help)" >&2; exit 2 ;; esac
      steps=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "$me: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
warmup=1
qwen_layers=24
sweep=(--max-mb 64)
if [ "$quick" = 1 ]; then
  [ "$steps" = 10 ] && steps=2
  qwen_layers=2
  sweep=(--max-mb 4 --budget 0.1)
fi
out=${out:-runs/bench-dist-$(date +%Y%m%d-%H%M%S)}
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "$me: --out $out already holds files; choose a new folder" >&2
  exit 2
fi
mkdir -p "$out"

command -v mpirun >/dev/null || { echo "$me: mpirun is not installed (Debian package openmpi-bin)" >&2; exit 1; }
if [ "$("$ftlua" -e 'print(ft.dist.built_with_mpi())')" != true ]; then
  echo "$me: $ftlua was built without MPI (Debian package libopenmpi-dev)" >&2
  exit 1
fi
bench=$root/scripts/bench

# mpirun as the tests run it: 2 ranks of 1 thread each on one machine, no binding (the cores
# are shared), no single-copy mechanism (needs ptrace rights containers lack); as root
# --allow-run-as-root.
mpi() {
  local np=$1 root_flag=()
  shift
  [ "$(id -u)" -eq 0 ] && root_flag=(--allow-run-as-root)
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1 \
    timeout 600 mpirun "${root_flag[@]}" --oversubscribe --bind-to none -np "$np" \
    -x OMPI_MCA_btl_vader_single_copy_mechanism -x OMP_NUM_THREADS -x OMP_WAIT_POLICY "$ftlua" "$@"
}

# step NAME COMMAND...: runs one part, its output shown and kept in $out/NAME.log, and its time.
started=$(date +%s)
step() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "== $name: $*" | sed "s|$root/||g"
  if ! "$@" > >(tee "$out/$name.log") 2>&1; then
    echo "$me: $name failed (log: $out/$name.log)" >&2
    exit 1
  fi
  wait
  echo "   ($name: $(( $(date +%s) - t0 )) s)"
}

use_threads 1
have_torch=0
"$torch_python" -c "import torch" 2>/dev/null && have_torch=1

# The machine: OpenBLAS's kernels (asked of the library itself, which ftlua links too),
# the load, the versions.
blas=$(openblas_kernels)
ft_blas=$(ldd "$ftlua" 2>/dev/null | awk '/libopenblas/ { print $3; exit }')
torch_version=none
[ "$have_torch" = 1 ] && torch_version=$("$torch_python" -c "import torch; print(torch.__version__)")
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
write_env() {
  cat > "$out/env.json" <<EOF
{
  "date": "$(date -Iseconds)",
  "cpus": $(getconf _NPROCESSORS_ONLN),
  "cpu_model": "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)",
  "openblas_coretype": "${OPENBLAS_CORETYPE:-}",
  "openblas_corename": "${blas%%|*}",
  "openblas_config": "${blas#*|}",
  "ftlua_openblas": "${ft_blas:-unknown}",
  "mpirun": "$(mpirun --version 2>/dev/null | head -1)",
  "torch": "$torch_version",
  "load_start": "$load_start",
  "load_end": "${1:-}"
}
EOF
}
write_env
echo "OpenBLAS kernels: ${blas%%|*} (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; ${blas#*|}); load average $load_start"
echo "results in $out"

step allreduce mpi 2 "$bench/dist_allreduce.lua" "${sweep[@]}" --json "$out/allreduce.json"

step overlap mpi 2 "$bench/dist_step.lua" --model gpt-s --batch-size 16 --context 128 --threads 1 \
  --modes 25:on,25:off,1:on,1:off --steps "$steps" --warmup "$warmup" --json "$out/overlap.json"

for model in gpt-s resnet-s; do
  case $model in
    gpt-s) shape=(--batch-size 16 --context 128) ;;
    resnet-s) shape=(--batch-size 128) ;;
  esac
  step "scaling_${model}_ftlua_1x2" env OMP_NUM_THREADS=2 "$ftlua" "$bench/dist_step.lua" --model "$model" \
    "${shape[@]}" --threads 2 --steps "$steps" --warmup "$warmup" --json "$out/scaling_${model}_ftlua_1x2.json"
  step "scaling_${model}_ftlua_2x1" mpi 2 "$bench/dist_step.lua" --model "$model" "${shape[@]}" --threads 1 \
    --modes 25:on --steps "$steps" --warmup "$warmup" --json "$out/scaling_${model}_ftlua_2x1.json"
  if [ "$have_torch" = 1 ]; then
    step "scaling_${model}_torch_1x2" env OMP_NUM_THREADS=2 timeout 600 "$torch_python" "$bench/dist_step_torch.py" \
      --model "$model" "${shape[@]}" --world 1 --threads 2 --steps "$steps" --warmup "$warmup" \
      --json "$out/scaling_${model}_torch_1x2.json"
    step "scaling_${model}_torch_2x1" env OMP_NUM_THREADS=1 timeout 600 "$torch_python" "$bench/dist_step_torch.py" \
      --model "$model" "${shape[@]}" --world 2 --threads 1 --steps "$steps" --warmup "$warmup" \
      --json "$out/scaling_${model}_torch_2x1.json"
  else
    echo "== PyTorch twins skipped: $torch_python cannot import torch (Debian package python3-torch)" \
      | tee "$out/scaling_torch_skipped.log"
  fi
done

qwen=()
avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
if [ "$qwen_layers" -lt 24 ] || [ "${avail_kb:-0}" -ge $((8 * 1024 * 1024)) ]; then
  step qwen_lora mpi 2 "$bench/dist_step.lua" --model qwen-lora --layers "$qwen_layers" --batch-size 2 --context 256 \
    --threads 1 --modes 25:on --steps 1 --warmup 1 --json "$out/qwen_lora.json"
  qwen=(--qwen "$out/qwen_lora.json")
else
  echo "== qwen_lora skipped: $((avail_kb / 1024)) MiB of memory available, the two ranks need about 7 GiB" \
    | tee "$out/qwen_lora.log"
fi

echo "== estimate"
if ! FT_PROFILE=1 "$ftlua" "$bench/dist_estimate.lua" --overlap "$out/overlap.json" --allreduce "$out/allreduce.json" \
  "${qwen[@]}" --json "$out/estimate.json" --md "$out/estimate.md" > "$out/estimate.log" 2> "$out/profile.log"; then
  cat "$out/estimate.log" "$out/profile.log" >&2
  echo "$me: estimate failed" >&2
  exit 1
fi
write_env "$(cut -d' ' -f1-3 /proc/loadavg)"

"$ftlua" "$bench/dist_report.lua" --dir "$out" | tee "$out/summary.txt"
echo "$me: $(( $(date +%s) - started )) s in all" | tee -a "$out/summary.txt"
