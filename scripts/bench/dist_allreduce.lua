-- Times ft.dist.all_reduce (and ft.dist.broadcast) of float32 tensors from --min-kb to --max-mb
-- (powers of 2) between the ranks mpirun started, and fits the alpha-beta model
-- t(n) = alpha + beta * n to the all-reduce times: alpha the per-call latency, 1 / beta the
-- bandwidth at which the bytes of the buffer go through (a ring all-reduce of n bytes over N
-- ranks moves 2 (N - 1) / N * n bytes per rank: n with 2 ranks).
--
--   mpirun -np 2 ... ftlua scripts/bench/dist_allreduce.lua --json allreduce.json
--
-- (scripts/bench/dist_suite.sh runs it with the right mpirun flags.) Each size is repeated
-- until --budget seconds or --max-reps calls (at least 3) and the median call counts. The
-- fit weighs each size by 1 / t^2 (relative errors), so that the small sizes set alpha and the
-- large ones beta; alpha_small (the median at the smallest size) and beta_large (the slope
-- between the two largest sizes) are given too. The last line is machine-readable:
--   RESULT alpha_us=<us> beta_ns_per_byte=<ns> bandwidth_gbps=<GB/s>
local ft = require "ft"
local argparse = require "argparse"

local dist = ft.dist.init()
local world = dist.world_size()

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("dist_allreduce.lua", "Time all-reduces from KB to MB and fit latency and bandwidth.")
parser:option("--min-kb", "The smallest buffer, KiB.", "1"):convert(positive)
parser:option("--max-mb", "The largest buffer, MiB.", "64"):convert(positive)
parser:option("--budget", "Seconds of calls per size at most.", "0.4"):convert(ft.recipe.number({ above = 0 }))
parser:option("--max-reps", "Calls per size at most.", "200"):convert(positive)
parser:option("--json", "Write the results to this file (rank 0).")
local args = ft.recipe.parse(parser)
if world < 2 then ft.recipe.fail(parser, "run it under mpirun with at least 2 ranks (a world of one sends nothing)") end

local function median(list)
  local s = table.move(list, 1, #list, 1, {})
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- Median seconds of one call of fn(t), timed on every rank and taken from the slowest; every
-- rank makes the same number of calls (rank 0 decides when to stop).
local function time_calls(fn, t)
  fn(t) -- first touch of the buffer and of MPI's paths for this size
  local times = {}
  local t_start = ft.clock()
  while true do
    dist.barrier()
    local t0 = ft.clock()
    fn(t)
    times[#times + 1] = ft.clock() - t0
    local stop = #times >= args.max_reps or (#times >= 3 and ft.clock() - t_start > args.budget)
    stop = dist.broadcast_value(stop, 0)
    if stop then break end
  end
  local mine = median(times)
  return dist.all_reduce(ft.tensor({ mine }, { dtype = "float64" }), { op = "max" })[1]:item(), #times
end

local rows = {}
local bytes = 1024 * args.min_kb
print(("all-reduce and broadcast of float32 buffers, %d ranks (median call, slowest rank)"):format(world))
print(("%12s %12s %12s %12s %6s"):format("bytes", "all_reduce", "GB/s (bus)", "broadcast", "calls"))
while bytes <= args.max_mb * 2 ^ 20 do
  local t = ft.ones(bytes // 4)
  local ar, reps = time_calls(function(x) dist.all_reduce(x) end, t)
  local bc = time_calls(function(x) dist.broadcast(x, 0) end, t)
  -- bus bandwidth: the bytes each rank moves in a ring all-reduce, per second
  local bus = 2 * (world - 1) / world * bytes / ar / 1e9
  rows[#rows + 1] = { bytes = bytes, all_reduce_s = ar, broadcast_s = bc, bus_gbps = bus, calls = reps }
  print(("%12d %9.1f us %12.2f %9.1f us %6d"):format(bytes, 1e6 * ar, bus, 1e6 * bc, reps))
  bytes = bytes * 2
end

-- Weighted least squares of t = alpha + beta * n, weights 1 / t^2.
local sw, sx, sy, sxx, sxy = 0, 0, 0, 0, 0
for _, r in ipairs(rows) do
  local w = 1 / r.all_reduce_s ^ 2
  sw, sx, sy = sw + w, sx + w * r.bytes, sy + w * r.all_reduce_s
  sxx, sxy = sxx + w * r.bytes ^ 2, sxy + w * r.bytes * r.all_reduce_s
end
local beta = (sw * sxy - sx * sy) / (sw * sxx - sx ^ 2)
local alpha = (sy - beta * sx) / sw
local a, b = rows[#rows - 1], rows[#rows]
local beta_large = (b.all_reduce_s - a.all_reduce_s) / (b.bytes - a.bytes)
local fit = { alpha_s = alpha, beta_s_per_byte = beta, bandwidth_bytes_per_s = 1 / beta,
  alpha_small_s = rows[1].all_reduce_s, beta_large_s_per_byte = beta_large }
print(("fit t = alpha + beta * n: alpha %.1f us, beta %.3f ns/byte (%.2f GB/s); smallest size %.1f us, slope of the "
  .. "two largest %.3f ns/byte (%.2f GB/s)"):format(1e6 * alpha, 1e9 * beta, 1e-9 / beta, 1e6 * rows[1].all_reduce_s,
  1e9 * beta_large, 1e-9 / beta_large))
if args.json and dist.is_main() then
  ft.fs.mkdir_for(args.json)
  ft.json.write(args.json, { ranks = world, rows = rows, fit = fit,
    transport = "Open MPI on one machine (shared memory, btl vader, single_copy_mechanism "
      .. (os.getenv("OMPI_MCA_btl_vader_single_copy_mechanism") or "default") .. ")" })
end
print(("RESULT alpha_us=%.2f beta_ns_per_byte=%.4f bandwidth_gbps=%.3f"):format(1e6 * alpha, 1e9 * beta, 1e-9 / beta))
