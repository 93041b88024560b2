#!/bin/bash
# Both convolution paths pass the convolution tests: the specs that check conv2d against PyTorch's
# fixtures (forward and gradients, tolerances unchanged), by finite differences, and inside
# layers and ResNets, plus the C unit tests of conv2d, run once with FT_CONV=gemm (im2col +
# OpenBLAS), once with FT_CONV=dnnl (oneDNN's direct kernels for every geometry) and once with
# FT_CONV=winograd (oneDNN everywhere, Winograd for every 3x3 stride-1 convolution it has a kernel
# for); the oneDNN runs are skipped with a message when ftlua was built without oneDNN. Under each
# a oneDNN convolution must really run with the algorithm asked for (ONEDNN_VERBOSE shows it),
# and the default path must pick Winograd for a wide 3x3 stride-1 layer where the CPU has the
# kernel (AVX-512). A bad FT_CONV is an error that names the variable and its values;
# ft.kernels() reports the path.
set -euo pipefail
cd "${FT_SOURCE_DIR:-$(dirname "$0")/../..}"
source tests/sh/lib/common.bash
export LUA_PATH="${LUA_PATH:-bindings/lua/?.lua;tests/spec/?.lua;;}"
export FT_FIXTURES="${FT_FIXTURES:-tests/fixtures}"
busted=$(command -v busted) || { echo "SKIP: busted is not installed (Debian package lua-busted)"; exit 0; }
specs=(ops_torch_spec gradcheck_spec nn_spec half_ops_spec resnet_spec)
c_test=${FT_BUILD_DIR:-build}/tests/test_ops_nn

probe='print(ft.nn.functional.conv2d(ft.randn(2, 16, 8, 8), ft.randn(4, 16, 3, 3)):size(2))'

# The bad value first: the message names FT_CONV and the values it takes.
if FT_CONV=bogus "$ftlua" -e "$probe" > "$tmp/bogus.log" 2>&1; then
  cat "$tmp/bogus.log"
  fail "FT_CONV=bogus did not fail"
fi
grep -q "FT_CONV=bogus" "$tmp/bogus.log" && grep -q "gemm, dnnl, winograd" "$tmp/bogus.log" ||
  { cat "$tmp/bogus.log"; fail "the FT_CONV=bogus error does not name FT_CONV and its values gemm, dnnl, winograd"; }

# ft.kernels() reports the path FT_CONV chose, and OpenBLAS's core.
kernels='local k = ft.kernels(); print(k.conv, k.dnnl_isa or "none", k.blas ~= "" and "blas" or "no-blas")'
[ "$(FT_CONV=gemm "$ftlua" -e "$kernels" | cut -f1,3)" = "gemm	blas" ] || fail "ft.kernels() under FT_CONV=gemm"
[ "$(FT_CONV=bogus "$ftlua" -e "$kernels" | cut -f1)" = "invalid" ] || fail "ft.kernels() under FT_CONV=bogus"
default=$("$ftlua" -e "$kernels")
case "$default" in
  "auto	none	"*) fail "ft.kernels(): the auto path without oneDNN's instruction set" ;;
  "auto	"*|"gemm	none	"*) echo "ok: ft.kernels() says: $default" ;;
  *) fail "ft.kernels() by default: $default" ;;
esac

# Runs the specs and the C test with FT_CONV=$1.
run_path() {
  local path=$1 spec
  for spec in "${specs[@]}"; do
    FT_CONV=$path "$ftlua" "$busted" --output=TAP "tests/spec/$spec.lua" > "$tmp/$path-$spec.log" 2>&1 ||
      { cat "$tmp/$path-$spec.log"; fail "tests/spec/$spec.lua with FT_CONV=$path"; }
  done
  if [ -x "$c_test" ]; then
    FT_CONV=$path "$c_test" > "$tmp/$path-c.log" 2>&1 || { cat "$tmp/$path-c.log"; fail "$c_test with FT_CONV=$path"; }
  else
    echo "note: $c_test is not built; the C conv2d tests were not run"
  fi
  echo "ok: FT_CONV=$path passes ${specs[*]}$([ -x "$c_test" ] && echo " and test_ops_nn")"
}

run_path gemm

# Which oneDNN convolution kernels $2 ran under FT_CONV=$1 (forward and backward), one per line.
dnnl_kernels() {
  ONEDNN_VERBOSE=1 FT_CONV=$1 "$ftlua" -e "$2" 2>&1 | awk -F, '$1 == "onednn_verbose" && $2 == "exec" && $4 == "convolution" { print $5 }' | sort -u
}

if FT_CONV=dnnl "$ftlua" -e "$probe" > "$tmp/dnnl-probe.log" 2>&1; then
  # a 3x3 stride-1 layer, 16 channels in: Winograd where asked for (or by default) and the CPU
  # has it, the direct kernel under FT_CONV=dnnl
  layer='local F = ft.nn.functional
    local x, w = ft.randn(2, 16, 8, 8), ft.randn(16, 16, 3, 3)
    x.requires_grad, w.requires_grad = true, true
    F.conv2d(x, w, nil, {padding = 1}):sum():backward()'
  direct=$(dnnl_kernels dnnl "$layer")
  [ -n "$direct" ] || fail "FT_CONV=dnnl ran no oneDNN convolution (ONEDNN_VERBOSE=1 shows none)"
  if echo "$direct" | grep -q wino; then fail "FT_CONV=dnnl ran a Winograd kernel: $direct"; fi
  if grep -q avx512 /proc/cpuinfo; then
    for path in winograd ""; do
      kernels_run=$(dnnl_kernels "$path" "$layer")
      [ "$(echo "$kernels_run" | grep -c wino)" = 1 ] && [ "$(echo "$kernels_run" | wc -l)" = 1 ] ||
        fail "FT_CONV=$path: the 3x3 stride-1 layer ran $(echo $kernels_run), not oneDNN's Winograd kernels alone"
    done
    echo "ok: the 3x3 stride-1 layer runs $(dnnl_kernels "" "$layer") by default, $(echo $direct) under FT_CONV=dnnl"
  else
    echo "note: no AVX-512 here, so oneDNN has no Winograd kernel; FT_CONV=winograd runs the direct ones"
  fi
  run_path dnnl
  run_path winograd
elif grep -q "no oneDNN" "$tmp/dnnl-probe.log"; then
  grep -q "FT_CONV" "$tmp/dnnl-probe.log" || { cat "$tmp/dnnl-probe.log"; fail "the FT_CONV=dnnl error does not name FT_CONV"; }
  echo "SKIP: FT_CONV=dnnl: $ftlua was built without oneDNN (Debian package libdnnl-dev, cmake -DFT_DNNL=ON)"
else
  cat "$tmp/dnnl-probe.log"
  fail "FT_CONV=dnnl: a convolution failed"
fi
