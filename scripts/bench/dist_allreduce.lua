-- Times ft.dist.all_reduce (and ft.dist.broadcast) of float32 tensors from --min-kb to --max-mb
-- (powers of 2) between the ranks mpirun started, and fits the alpha-beta model
-- t(n) = alpha + beta * n to the all-reduce times: alpha the per-call latency (fitted to the
-- sizes up to 64 KiB), 1 / beta the bandwidth at which the bytes of the buffer go through
-- (fitted to the sizes from 1 MiB) (a ring all-reduce of n bytes over N
-- ranks moves 2 (N - 1) / N * n bytes per rank: n with 2 ranks).
--
--   mpirun -np 2 ... ftlua scripts/bench/dist_allreduce.lua --json allreduce.json
--
-- (scripts/bench/dist_suite.sh runs it with the right mpirun flags.) Each size is repeated
-- until --budget seconds or --max-reps calls (at least 3); every rank calls a barrier before
-- each call. The fit uses the fastest call of each size (on a machine other jobs share, a
-- rank that waits for a descheduled partner makes the median of large sizes jump by 100x);
-- the medians are reported beside them. One line fitted through all sizes (relative errors)
-- is given too. The last line is machine-readable:
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

-- The median and the fastest seconds of one call of fn(t), each taken from the slowest rank;
-- every rank makes the same number of calls (rank 0 decides when to stop).
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
  table.sort(times)
  local t = dist.all_reduce(ft.tensor({ median(times), times[1] }, { dtype = "float64" }), { op = "max" }):totable()
  return t[1], t[2], #times
end

local rows = {}
local bytes = 1024 * args.min_kb
print(("all-reduce and broadcast of float32 buffers, %d ranks (fastest and median call, slowest rank)"):format(world))
print(("%12s %12s %12s %12s %12s %12s %6s"):format("bytes", "all_reduce", "(median)", "GB/s (bus)", "broadcast",
  "(median)", "calls"))
while bytes <= args.max_mb * 2 ^ 20 do
  local t = ft.ones(bytes // 4)
  local ar, ar_min, reps = time_calls(function(x) dist.all_reduce(x) end, t)
  local bc, bc_min = time_calls(function(x) dist.broadcast(x, 0) end, t)
  -- bus bandwidth: the bytes each rank moves in a ring all-reduce, per second (fastest call)
  local bus = 2 * (world - 1) / world * bytes / ar_min / 1e9
  rows[#rows + 1] = { bytes = bytes, all_reduce_s = ar_min, all_reduce_median_s = ar, broadcast_s = bc_min,
    broadcast_median_s = bc, bus_gbps = bus, calls = reps }
  print(("%12d %9.1f us %9.1f us %12.2f %9.1f us %9.1f us %6d"):format(bytes, 1e6 * ar_min, 1e6 * ar, bus,
    1e6 * bc_min, 1e6 * bc, reps))
  bytes = bytes * 2
end

-- Least squares of t = alpha + beta * n over some rows (weights w(row)).
local function fit_line(select_row, weight)
  local sw, sx, sy, sxx, sxy = 0, 0, 0, 0, 0
  for _, r in ipairs(rows) do
    if select_row(r) then
      local w = weight(r)
      sw, sx, sy = sw + w, sx + w * r.bytes, sy + w * r.all_reduce_s
      sxx, sxy = sxx + w * r.bytes ^ 2, sxy + w * r.bytes * r.all_reduce_s
    end
  end
  local beta = (sw * sxy - sx * sy) / (sw * sxx - sx ^ 2)
  return (sy - beta * sx) / sw, beta
end
local function relative(r) return 1 / r.all_reduce_s ^ 2 end
local function plain() return 1 end
local all_alpha, all_beta = fit_line(function() return true end, relative)
-- latency from the small buffers (<= 64 KiB), bandwidth from the large ones (>= 1 MiB): the
-- two regimes the sizes of gradient buckets fall in
local alpha = fit_line(function(r) return r.bytes <= 65536 end, relative)
local _, beta = fit_line(function(r) return r.bytes >= 2 ^ 20 end, plain)
local fit = { alpha_s = alpha, beta_s_per_byte = beta, bandwidth_bytes_per_s = 1 / beta,
  alpha_small_sizes = "<= 64 KiB, least squares on relative errors", beta_large_sizes = ">= 1 MiB, least squares",
  all_sizes = { alpha_s = all_alpha, beta_s_per_byte = all_beta, bandwidth_bytes_per_s = 1 / all_beta } }
print(("fit t = alpha + beta * n: alpha %.1f us (sizes <= 64 KiB), beta %.3f ns/byte = %.2f GB/s (sizes >= 1 MiB); "
  .. "one line through all sizes: %.1f us, %.2f GB/s"):format(1e6 * alpha, 1e9 * beta, 1e-9 / beta, 1e6 * all_alpha,
  1e-9 / all_beta))
if args.json and dist.is_main() then
  ft.fs.mkdir_for(args.json)
  ft.json.write(args.json, { ranks = world, rows = rows, fit = fit,
    transport = "Open MPI on one machine (shared memory, btl vader, single_copy_mechanism "
      .. (os.getenv("OMPI_MCA_btl_vader_single_copy_mechanism") or "default") .. ")" })
end
print(("RESULT alpha_us=%.2f beta_ns_per_byte=%.4f bandwidth_gbps=%.3f"):format(1e6 * alpha, 1e9 * beta, 1e-9 / beta))
