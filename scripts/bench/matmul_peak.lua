-- The machine's measured matrix-product rate: ft.matmul of float32 matrices (OpenBLAS's sgemm
-- underneath), square ones (n = 1024 .. 4096) and the large products of a Qwen2.5-0.5B-shaped
-- step at 256 tokens (the MLP's and lm_head's), the best of --repeats timings of each, and the
-- best over all of them: the peak that scripts/bench/suite.sh measures a step's matrix work
-- against.
--
--   ftlua scripts/bench/matmul_peak.lua --threads 2
--
-- The last line is machine-readable: RESULT gflops=<best GFLOP/s> shape=<MxKxN>
local ft = require "ft"
local argparse = require "argparse"

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("matmul_peak.lua", "Measure the float32 matrix-product rate.")
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--repeats", "Timings of each size.", "5"):convert(positive)
local args = ft.recipe.parse(parser)
if args.threads then ft.set_num_threads(args.threads) end

ft.manual_seed(1)
-- {M, K, N}: [M, K] @ [K, N]
local shapes = { { 1024, 1024, 1024 }, { 2048, 2048, 2048 }, { 3072, 3072, 3072 }, { 4096, 4096, 4096 },
  { 256, 896, 4864 }, { 256, 4864, 896 }, { 256, 896, 151936 } }
local best, best_shape = 0, ""
for _, s in ipairs(shapes) do
  local M, K, N = s[1], s[2], s[3]
  local a, b = ft.randn(M, K), ft.randn(K, N)
  ft.matmul(a, b)   -- untimed: first-touch of the output and OpenBLAS's buffers
  local fastest = math.huge
  for _ = 1, args.repeats do
    local t0 = ft.clock()
    ft.matmul(a, b)
    fastest = math.min(fastest, ft.clock() - t0)
  end
  local rate = 2 * M * K * N / fastest / 1e9
  local name = ("%dx%dx%d"):format(M, K, N)
  print(("%s: %.1f GFLOP/s (best of %d, %.1f ms)"):format(name, rate, args.repeats, 1000 * fastest))
  if rate > best then best, best_shape = rate, name end
end
print(("%d threads: peak %.1f GFLOP/s (%s)"):format(ft.get_num_threads(), best, best_shape))
print(("RESULT gflops=%.1f shape=%s"):format(best, best_shape))
