# Set-up shared by the shell tests in tests/sh (sourced, not run: it sits outside the
# tests/sh/*.sh glob). After `source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"`:
#   $ftlua                the ftlua under test (FTLUA, default build/ftlua)
#   $tmp                  a fresh temporary folder, removed when the test exits
#   fail MESSAGE          prints "FAIL: MESSAGE" and exits 1
#   need_fashion_mnist    exits 0 with a SKIP line when Fashion-MNIST is not installed
#   need_fortunes [CAT]   the same for Debian's fortunes corpus (with category CAT, default science)
#   run_recipe LOG SCRIPT ARGS...   runs scripts/SCRIPT with ARGS, its output in LOG, shown on failure
#   is_png FILE           true when FILE starts with the PNG signature
#   same_weights A B      true when checkpoints A and B hold the same tensors and metadata
#   make_tiny_qwen2 DIR HIDDEN LAYERS   a random Qwen2-shaped HF folder with the real Qwen3
#                         tokenizer (151,669 ids) and chat template
#   need_mpi              exits 0 with a SKIP line when mpirun is missing or ftlua has no MPI
#   mpi_run NP ARGS...    runs ftlua ARGS under mpirun with NP ranks of one thread each
#                         (--oversubscribe, --allow-run-as-root as root, shared memory without
#                         the single-copy mechanism that containers forbid), within 300 s
set -euo pipefail

ftlua=${FTLUA:-build/ftlua}
fashion_mnist_dir=${FT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
fortunes_dir=${FT_FORTUNES_DIR:-/usr/share/games/fortunes}

fail() { echo "FAIL: $*"; exit 1; }

need_fashion_mnist() {
  if [ ! -e "$fashion_mnist_dir/train-images-idx3-ubyte.gz" ] && [ ! -e "$fashion_mnist_dir/train-images-idx3-ubyte" ]; then
    echo "SKIP: Fashion-MNIST is not installed in $fashion_mnist_dir (Debian package dataset-fashion-mnist)"
    exit 0
  fi
}

need_fortunes() {
  if [ ! -e "$fortunes_dir/${1:-science}" ]; then
    echo "SKIP: the fortunes corpus is not installed in $fortunes_dir (Debian package fortunes)"
    exit 0
  fi
}

have_fashion_mnist() { [ -e "$fashion_mnist_dir/train-images-idx3-ubyte.gz" ] || [ -e "$fashion_mnist_dir/train-images-idx3-ubyte" ]; }
have_fortunes() { [ -e "$fortunes_dir/${1:-science}" ]; }

run_recipe() {
  local log=$1 script=$2
  shift 2
  "$ftlua" "scripts/$script" "$@" > "$log" 2>&1 </dev/null || { cat "$log"; fail "$script $*"; }
}

same_weights() {
  "$ftlua" - "$1" "$2" <<'LUA'
local a, ma = ft.load(arg[1])
local b, mb = ft.load(arg[2])
for k, t in pairs(a) do
  assert(b[k] and ft.tables.same_shape(t, b[k]), "tensor " .. k .. " missing or of another shape")
  assert(t:eq(b[k]):sum():item() == t:numel(), "tensor " .. k .. " differs")
end
for k in pairs(b) do assert(a[k], "extra tensor " .. k) end
for k, v in pairs(ma) do assert(mb[k] == v, "metadata " .. k .. " differs") end
for k in pairs(mb) do assert(ma[k] ~= nil, "extra metadata " .. k) end
LUA
}

need_mpi() {
  if ! command -v mpirun >/dev/null; then
    echo "SKIP: mpirun is not installed (Debian package openmpi-bin)"
    exit 0
  fi
  if [ "$("$ftlua" -e 'print(ft.dist.built_with_mpi())')" != true ]; then
    echo "SKIP: $ftlua was built without MPI (Debian package libopenmpi-dev)"
    exit 0
  fi
}

mpi_run() {
  local np=$1
  shift
  local root_flag=()
  [ "$(id -u)" -eq 0 ] && root_flag=(--allow-run-as-root)
  # The sanitizer build: Open MPI keeps allocations until exit in plugins it has unloaded by then,
  # which LeakSanitizer can neither name nor suppress; leaks are checked by the tests of one
  # process, memory errors and undefined behaviour here too.
  local pass=() var
  for var in LUA_PATH LUA_CPATH FT_FIXTURES UBSAN_OPTIONS; do
    [ -n "${!var+set}" ] && pass+=(-x "$var")
  done
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1 ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" \
    timeout 300 mpirun "${root_flag[@]}" --oversubscribe --bind-to none -np "$np" \
    -x OMPI_MCA_btl_vader_single_copy_mechanism -x OMP_NUM_THREADS -x ASAN_OPTIONS "${pass[@]}" "$ftlua" "$@"
}

is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make_tiny_qwen2() {
  local dir=$1 hidden=$2 layers=$3
  mkdir -p "$tmp/qwen3-tokenizer"
  gzip -dc tests/fixtures/tokenizers/qwen3/tokenizer.json.gz > "$tmp/qwen3-tokenizer/tokenizer.json"
  cp tests/fixtures/tokenizers/qwen3/tokenizer_config.json "$tmp/qwen3-tokenizer/"
  "$ftlua" - "$dir" "$tmp/qwen3-tokenizer" "$hidden" "$layers" <<'LUA' || fail "making the tiny Qwen2 folder $dir"
local dir, tokdir, hidden, layers = arg[1], arg[2], math.tointeger(arg[3]), math.tointeger(arg[4])
ft.manual_seed(7)
local model = ft.models.new({
  architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 151669, hidden_size = hidden,
  intermediate_size = 2 * hidden, num_hidden_layers = layers, num_attention_heads = 4, num_key_value_heads = 2,
  max_position_embeddings = 512, rope_theta = 1000000.0, rms_norm_eps = 1e-6, tie_word_embeddings = true,
  bos_token_id = 151643, eos_token_id = 151645, hidden_act = "silu", initializer_range = 0.02,
})
ft.models.save_pretrained(model, dir)
for _, f in ipairs({ "tokenizer.json", "tokenizer_config.json" }) do
  ft.fs.write(dir .. "/" .. f, ft.fs.read(tokdir .. "/" .. f))
end
LUA
}
