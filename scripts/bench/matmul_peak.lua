-- The machine's measured matrix-product rate: ft.matmul of float32 matrices (OpenBLAS's sgemm
-- underneath), square ones (n = 1024 .. 4096) and the large products of a Qwen2.5-0.5B-shaped
-- step at 256 tokens (the MLP's and lm_head's), the best of --repeats timings of each, and the
-- best over all of them: the peak that scripts/bench/suite.sh measures a step's matrix work
-- against. --dtype bfloat16 times the same products as a linear layer over a bfloat16 weight
-- under the bfloat16 matmul precision (oneDNN's bf16 kernels; activations rounded to bfloat16).
--
--   ftlua scripts/bench/matmul_peak.lua --threads 2 [--dtype bfloat16]
--
-- The last line is machine-readable: RESULT gflops=<best GFLOP/s> shape=<MxKxN>
local ft = require "ft"
local argparse = require "argparse"

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("matmul_peak.lua", "Measure the matrix-product rate (float32, or bfloat16 products).")
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--repeats", "Timings of each size.", "5"):convert(positive)
parser:option("--dtype", "The products' dtype.", "float32"):choices({ "float32", "bfloat16" })
local args = ft.recipe.parse(parser)
if args.threads then ft.set_num_threads(args.threads) end
local bf16 = args.dtype == "bfloat16"
if bf16 then
  local kernel = ft.kernels().matmul_bf16
  if not kernel then
    io.stderr:write("matmul_peak.lua: this build or CPU has no bfloat16 product kernel (ft.kernels().matmul_bf16)\n")
    os.exit(1)
  end
  ft.set_matmul_precision("bfloat16")
  print("bfloat16 products on " .. kernel)
end

ft.manual_seed(1)
-- {M, K, N}: [M, K] @ [K, N]
local shapes = { { 1024, 1024, 1024 }, { 2048, 2048, 2048 }, { 3072, 3072, 3072 }, { 4096, 4096, 4096 },
  { 256, 896, 4864 }, { 256, 4864, 896 }, { 256, 896, 151936 } }
local best, best_shape = 0, ""
for _, s in ipairs(shapes) do
  local M, K, N = s[1], s[2], s[3]
  local a = ft.randn(M, K)
  local b = bf16 and ft.randn(N, K):to("bfloat16") or ft.randn(K, N)   -- a linear's weight is [N, K]
  local product = bf16 and ft.nn.functional.linear or ft.matmul
  product(a, b)   -- untimed: first-touch of the output and the library's buffers
  local fastest = math.huge
  for _ = 1, args.repeats do
    local t0 = ft.clock()
    product(a, b)
    fastest = math.min(fastest, ft.clock() - t0)
  end
  local rate = 2 * M * K * N / fastest / 1e9
  local name = ("%dx%dx%d"):format(M, K, N)
  print(("%s: %.1f GFLOP/s (best of %d, %.1f ms)"):format(name, rate, args.repeats, 1000 * fastest))
  if rate > best then best, best_shape = rate, name end
end
print(("%d threads: peak %.1f GFLOP/s (%s)"):format(ft.get_num_threads(), best, best_shape))
print(("RESULT gflops=%.1f shape=%s"):format(best, best_shape))
