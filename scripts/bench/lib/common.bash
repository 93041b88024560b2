# Set-up shared by the ftlua-versus-PyTorch comparisons in scripts/bench (sourced, not run: it
# sits outside the scripts/bench/*.sh glob). After
# `source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"`:
#   $root                 the checkout (or install tree) the script belongs to
#   $ftlua                the ftlua to time (FTLUA, default $root/build/ftlua)
#   $torch_python         the Python with PyTorch: Debian's /usr/bin/python3 (python3-torch)
#   $tmp                  a fresh temporary folder, removed when the script exits
#   check_args MAX ARGS...   --help prints the script's header comment and exits 0; more than
#                         MAX arguments or one that is not a positive integer exits 2 with one line
#   use_threads N         runs both sides on N OpenMP threads, waiting passively
#   result KEY LOG        the number of KEY=<n> on LOG's last RESULT line; exits 1 when there is
#                         none (in `x=$(result ...)`, set -e then stops the script)
#   openblas_kernels      prints "<corename>|<config>" of the OpenBLAS both sides load (asked of
#                         the library itself), "unknown|unknown" when it cannot be asked
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck disable=SC2034  # read by the scripts that source this
{
  ftlua=${FTLUA:-$root/build/ftlua}
  torch_python=/usr/bin/python3
}

# The comment block under the script's #! line, without the leading "# ".
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

check_args() {
  local max=$1 a
  shift
  case "${1:-}" in -h|--help) usage; exit 0 ;; esac
  if [ $# -gt "$max" ]; then echo "$(basename "$0"): at most $max arguments, got $# (see --help)" >&2; exit 2; fi
  for a in "$@"; do
    case "$a" in
      ''|*[!0-9]*|0) echo "$(basename "$0"): expected positive integers, got '$a' (see --help)" >&2; exit 2 ;;
    esac
  done
}

use_threads() {
  export OMP_NUM_THREADS=$1
  # Debian's torch runs its BLAS calls on OpenBLAS's own pthreads while its OpenMP threads
  # spin between parallel regions; with as many threads as cores the two fight, and torch
  # slows down by a third on 2 cores. Passive waiting (what ftlua uses too) avoids that.
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
}

result() {
  local v
  v=$(sed -n "s/^RESULT .*$1=\([0-9.]*\).*/\1/p" "$2" | tail -1)
  if [ -z "$v" ]; then
    echo "error: a run did not report its speed" >&2
    exit 1
  fi
  echo "$v"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openblas_kernels() {
  "$torch_python" - <<'EOF' 2>/dev/null || echo "unknown|unknown"
import ctypes
lib = ctypes.CDLL("libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
lib.openblas_get_config.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode() + "|" + lib.openblas_get_config().decode())
EOF
}
