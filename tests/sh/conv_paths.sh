#!/bin/bash
# Both convolution paths pass the convolution tests: the specs that check conv2d against PyTorch's
# fixtures (forward and gradients, tolerances unchanged), by finite differences, and inside
# layers and ResNets, plus the C unit tests of conv2d, run once with FT_CONV=gemm (im2col +
# OpenBLAS) and once with FT_CONV=dnnl (oneDNN for every geometry; skipped with a message when
# ftlua was built without oneDNN). With FT_CONV=dnnl a oneDNN convolution must really run
# (ONEDNN_VERBOSE shows it). A bad FT_CONV is an error that names the variable and its values;
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
grep -q "FT_CONV=bogus" "$tmp/bogus.log" && grep -q "gemm" "$tmp/bogus.log" && grep -q "dnnl" "$tmp/bogus.log" ||
  { cat "$tmp/bogus.log"; fail "the FT_CONV=bogus error does not name FT_CONV and its values gemm, dnnl"; }

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

if FT_CONV=dnnl "$ftlua" -e "$probe" > "$tmp/dnnl-probe.log" 2>&1; then
  ONEDNN_VERBOSE=1 FT_CONV=dnnl "$ftlua" -e "$probe" > "$tmp/dnnl-verbose.log" 2>&1
  grep -q "exec,cpu,convolution" "$tmp/dnnl-verbose.log" ||
    { cat "$tmp/dnnl-verbose.log"; fail "FT_CONV=dnnl ran no oneDNN convolution (ONEDNN_VERBOSE=1 shows none)"; }
  run_path dnnl
elif grep -q "no oneDNN" "$tmp/dnnl-probe.log"; then
  grep -q "FT_CONV" "$tmp/dnnl-probe.log" || { cat "$tmp/dnnl-probe.log"; fail "the FT_CONV=dnnl error does not name FT_CONV"; }
  echo "SKIP: FT_CONV=dnnl: $ftlua was built without oneDNN (Debian package libdnnl-dev, cmake -DFT_DNNL=ON)"
else
  cat "$tmp/dnnl-probe.log"
  fail "FT_CONV=dnnl: a convolution failed"
fi
