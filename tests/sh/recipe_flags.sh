#!/usr/bin/env bash
# Every recipe checks its flags before any work: a bad value ends the run at once with one line
# naming the flag, a non-zero exit status and no Lua traceback, and no run folder is created.
# The recipes run from an empty working directory (so a run folder they wrongly made would show
# as runs/ there). Also: every recipe and bench script answers --help, and a run never reuses
# another run's folder. Needs no data set (the cases that read one run when it is installed).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"
root=$(pwd)
ftlua_abs=$(cd "$(dirname "$ftlua")" && pwd)/$(basename "$ftlua")
work="$tmp/work"
mkdir -p "$work"
checked=0

# bad SCRIPT EXPECTED ARGS...: scripts/SCRIPT with ARGS fails with one line that holds EXPECTED.
bad() {
  local script=$1 expected=$2
  shift 2
  local out="$tmp/out" status=0
  (cd "$work" && timeout 120 "$ftlua_abs" "$root/scripts/$script" "$@") > "$out" 2>&1 </dev/null || status=$?
  local what="$script $*"
  [ "$status" -ne 0 ] || { cat "$out"; fail "$what: exit status 0"; }
  [ "$status" -ne 124 ] || fail "$what: still running after 120 s (the flag was not checked first)"
  if grep -qi "traceback" "$out"; then cat "$out"; fail "$what: a Lua traceback"; fi
  [ "$(wc -l < "$out")" -eq 1 ] || { cat "$out"; fail "$what: expected a one-line message, got $(wc -l < "$out") lines"; }
  grep -qF -- "$expected" "$out" || { cat "$out"; fail "$what: the message does not say '$expected'"; }
  grep -q "^$script: " "$out" || { cat "$out"; fail "$what: the message does not start with '$script: '"; }
  [ ! -e "$work/runs" ] || fail "$what: created a run folder before failing"
  checked=$((checked + 1))
}

# ---- finetune_vision.lua ----
bad finetune_vision.lua "--alphas" --alphas 1:0:0.1
bad finetune_vision.lua "--alphas" --alphas 0,1.5
bad finetune_vision.lua "--alphas" --alphas 0:1:0
bad finetune_vision.lua "--alphas" --alphas 0,x
bad finetune_vision.lua "--labels-per-class" --labels-per-class 0
bad finetune_vision.lua "--val-per-class" --val-per-class 0
bad finetune_vision.lua "--epochs" --epochs 0
bad finetune_vision.lua "--epochs" --epochs 2.5
bad finetune_vision.lua "--batch-size" --batch-size 0
bad finetune_vision.lua "--data-dir" --data-dir /nonexistent
bad finetune_vision.lua "--lr" --lr=-1
bad finetune_vision.lua "--r" --r 0
bad finetune_vision.lua "--alpha" --alpha 0
bad finetune_vision.lua "--test-limit" --test-limit 0
bad finetune_vision.lua "--threads" --threads 0
bad finetune_vision.lua "--checkpoint" --checkpoint /nonexistent.h5
bad finetune_vision.lua "--method reft" --method reft
bad finetune_vision.lua "--method" --method nope
bad finetune_vision.lua "--compare" --compare --method lora
bad finetune_vision.lua "unknown option '--epoch'" --epoch 3
bad finetune_vision.lua "requires an argument" --epochs
mkdir -p "$tmp/only_train/train"
bad finetune_vision.lua "no test/ folder" --data-dir "$tmp/only_train"

# ---- train_fashion_mnist.lua ----
bad train_fashion_mnist.lua "--epochs" --epochs 0
bad train_fashion_mnist.lua "--batch-size" --batch-size 0
bad train_fashion_mnist.lua "--lr" --lr 0
bad train_fashion_mnist.lua "--limit" --limit 0
bad train_fashion_mnist.lua "--test-limit" --test-limit=-5
bad train_fashion_mnist.lua "--eval-only" --eval-only /nonexistent.h5
echo not-a-checkpoint > "$tmp/model.h5"
bad train_fashion_mnist.lua "takes no --out" --eval-only "$tmp/model.h5" --out "$tmp/x"

# ---- pretrain_vision.lua ----
bad pretrain_vision.lua "--epochs" --epochs 0
bad pretrain_vision.lua "--batch-size" --batch-size 0
bad pretrain_vision.lua "--lr" --lr 0
bad pretrain_vision.lua "--val-size" --val-size 0
bad pretrain_vision.lua "--patch-size" --model vit --patch-size 5
bad pretrain_vision.lua "--heads" --model vit --heads 3
bad pretrain_vision.lua "--save" --save "$tmp"

# ---- self_train.lua ----
bad self_train.lua "--test-fraction" --test-fraction 1.5
bad self_train.lua "--test-fraction" --test-fraction 0
bad self_train.lua "--select" --select 0
bad self_train.lua "--select" --select 1.5
bad self_train.lua "--tau" --tau 2
bad self_train.lua "--xi" --xi=-0.5
bad self_train.lua "--dropout" --dropout 1
bad self_train.lua "--steps" --steps 0
bad self_train.lua "--self-lr" --self-lr 0
bad self_train.lua "--T" --T 0
bad self_train.lua "--lambda" --lambda=-1
bad self_train.lua "--max-bytes applies to --task text" --task vision --max-bytes 10
bad self_train.lua "--labels-per-class applies to --task vision" --labels-per-class 5
bad self_train.lua "/nonexistent.h5 not found" --checkpoint /nonexistent.h5

# ---- finetune_text.lua ----
bad finetune_text.lua "--steps" --steps 0
bad finetune_text.lua "--context" --context 1
bad finetune_text.lua "--positions" --positions x7
bad finetune_text.lua "--positions" --positions f0
bad finetune_text.lua "--lr" --lr=-1
bad finetune_text.lua "--data" --data /nonexistent.jsonl
bad finetune_text.lua "--stop-at" --steps 5 --stop-at 9
bad finetune_text.lua "no pretrained model at /nonexistent.h5" --checkpoint /nonexistent.h5
bad finetune_text.lua "--virtual-tokens" --virtual-tokens 0
bad finetune_text.lua "--model" --model /nonexistent
bad finetune_text.lua "--model needs --data" --model /tmp
bad finetune_text.lua "--method lora or --method full" --model /tmp --data "$root/tests/fixtures/chat/fortunes_chat.jsonl" --method ia3
bad finetune_text.lua "give one of them" --model /tmp --data "$root/tests/fixtures/chat/fortunes_chat.jsonl" --checkpoint x.h5

# ---- pretrain_text.lua ----
bad pretrain_text.lua "--steps" --steps 0
bad pretrain_text.lua "--dropout" --dropout 1
bad pretrain_text.lua "--context" --context 1
bad pretrain_text.lua "--eval-every" --eval-every=-1
bad pretrain_text.lua "--clip" --clip 0
bad pretrain_text.lua "--config" --config huge
bad pretrain_text.lua "--router-aux-loss-coef is an option of --config moe-s" --router-aux-loss-coef 0.1
bad pretrain_text.lua "--router-aux-loss-coef" --config moe-s --router-aux-loss-coef=-0.5
bad pretrain_text.lua "--load-every is an option of --config moe-s" --config gpt-mini --load-every 5
bad pretrain_text.lua "--load-every" --config moe-s --load-every 0
bad pretrain_text.lua "--dropout" --config moe-s --dropout 0.1
bad pretrain_text.lua "--layers" --layers 0

# ---- the cases that read a data set first ----
if have_fashion_mnist; then
  bad finetune_vision.lua "fewer than --labels-per-class 7000" --labels-per-class 7000
  bad pretrain_vision.lua "--val-size 99999 leaves no training images" --val-size 99999
  # --out of a folder that holds another run's files: refused, the files left as they were
  mkdir -p "$tmp/taken" && echo keep > "$tmp/taken/results.json"
  bad train_fashion_mnist.lua "already holds another run's files" --out "$tmp/taken" --limit 64
  [ "$(cat "$tmp/taken/results.json")" = keep ] || fail "the earlier run's results.json was overwritten"
fi

# ---- --help: every recipe and bench script answers, exit status 0 ----
for s in scripts/*.lua scripts/bench/*.lua; do
  out=$( (cd "$work" && "$ftlua_abs" "$root/$s" --help) 2>&1 ) || fail "$s --help: non-zero exit"
  grep -q "^Usage: " <<< "$out" || fail "$s --help prints no usage"
done
for s in scripts/bench/*.sh; do
  out=$(bash "$s" --help 2>&1) || fail "$s --help: non-zero exit"
  grep -q "$(basename "$s")" <<< "$out" || fail "$s --help does not show how it is called"
  if bash "$s" nope > "$tmp/out" 2>&1; then fail "$s nope: exit status 0"; fi
  [ "$(wc -l < "$tmp/out")" -eq 1 ] || fail "$s nope: expected a one-line message"
done
if bash scripts/bench/suite.sh --only qwen-lora,nope > "$tmp/out" 2>&1; then fail "suite.sh --only nope: exit status 0"; fi
grep -q "unknown workload 'nope'; workloads: resnet-full, " "$tmp/out" || fail "suite.sh --only nope: $(cat "$tmp/out")"
for s in scripts/bench/*.py; do
  out=$(python3 "$s" --help 2>&1) || fail "$s --help: non-zero exit (PyTorch need not be installed for it)"
  grep -q "^usage: " <<< "$out" || fail "$s --help prints no usage"
done
[ ! -e "$work/runs" ] || fail "--help created a run folder"

# ---- two runs without --out get folders of their own ----
if have_fashion_mnist; then
  for _ in 1 2; do
    (cd "$work" && "$ftlua_abs" "$root/scripts/train_fashion_mnist.lua" --limit 64 --test-limit 64 --epochs 1 \
      --batch-size 64 --threads 2 > "$tmp/run.log" 2>&1) || { cat "$tmp/run.log"; fail "a default run"; }
  done
  n=$(find "$work/runs/train_fashion_mnist" -mindepth 1 -maxdepth 1 -type d | wc -l)
  [ "$n" -eq 2 ] || fail "two default runs made $n folders under runs/train_fashion_mnist"
  for d in "$work"/runs/train_fashion_mnist/*; do
    [ -s "$d/resnet_s.h5" ] && [ -s "$d/results.json" ] || fail "$d lacks its checkpoint or results"
  done
fi
echo "PASS: $checked bad command lines refused with one line each; --help everywhere; runs in folders of their own"
