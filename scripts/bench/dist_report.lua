-- The distributed benchmarks' charts and summary, from the JSON files scripts/bench/dist_suite.sh
-- wrote into one folder:
--   overlap.json         dist_step.lua, GPT-S, 2 ranks, modes 25:on,25:off,1:on,1:off
--   scaling_<model>_<ftlua|torch>_<1x2|2x1>.json   dist_step.lua / dist_step_torch.py
--   allreduce.json       dist_allreduce.lua
--   estimate.json        dist_estimate.lua (optional)
--   env.json             the machine: OpenBLAS kernels, load, versions (optional)
--
--   ftlua scripts/bench/dist_report.lua --dir runs/bench-dist-<time>
--
-- Writes timeline_<mode>.png (rank 0's last step: forward, backward, the wait for the
-- all-reduces, and each bucket's all-reduce from start to done), overlap.png (the phases of a
-- step per mode), scaling.png (samples/s, 2 ranks x 1 thread against 1 rank x 2 threads),
-- allreduce.png (call time against size, and the fit), summary.json; prints the summary.
local ft = require "ft"
local argparse = require "argparse"

local parser = argparse("dist_report.lua", "Charts and summary of the distributed benchmarks.")
parser:option("--dir", "The folder the benchmarks wrote."):args(1):convert(ft.recipe.dir)
local args = ft.recipe.parse(parser)
if not args.dir then ft.recipe.usage_error(parser, "give --dir") end
local dir = args.dir

local function path(name) return dir .. "/" .. name end
local function read(name)
  if not ft.fs.exists(path(name)) then return nil end
  return ft.json.read(path(name))
end
local NAN = 0 / 0
local function value(v) if v == ft.json.null then return nil end return v end  -- JSON null -> nil
local function ms(s) return s and ("%.1f"):format(1000 * s) or "-" end

local summary = { env = read("env.json") }
local written = {}

-- ---- overlap ------------------------------------------------------------------------------

-- One step's timeline as a chart: row 0 the step (forward, backward, the wait), row i bucket i.
local function timeline_chart(file, title, tl)
  local nb = #tl.buckets
  local series = {
    { name = "forward", x = { 0, 1000 * tl.backward_start }, y = { 0, 0 }, color = "#7f7f7f" },
    { name = "backward", x = { 1000 * tl.backward_start, 1000 * tl.backward_end }, y = { 0, 0 }, color = "#1f77b4" },
    { name = "wait for the all-reduces", x = { 1000 * tl.backward_end, 1000 * tl.reduced }, y = { 0, 0 },
      color = "#d62728" },
  }
  local bx, by = {}, {}
  for i, b in ipairs(tl.buckets) do
    table.move({ 1000 * b.started, 1000 * b.done, NAN }, 1, 3, #bx + 1, bx)
    table.move({ i, i, NAN }, 1, 3, #by + 1, by)
  end
  series[#series + 1] = { name = "bucket all-reduce, started..done", x = bx, y = by, color = "#ff7f0e" }
  local rows_px = 330 / (nb + 2)
  local lw = math.max(2, math.min(12, math.floor(0.6 * rows_px)))
  ft.plot.line({ path = path(file), title = title, xlabel = "ms since the forward began",
    ylabel = "bucket (0: the step)", series = series, markers = false, linewidth = lw, width = 800, height = 480,
    ylim = { -1, nb + (nb > 4 and 4 or 2) }, legend = "upper left" })
  written[#written + 1] = file
end

local overlap = read("overlap.json")
if overlap then
  local rows = {}
  for _, m in ipairs(overlap.modes) do
    local ph = m.median_phases
    rows[#rows + 1] = { mode = m.name, buckets = m.buckets, step_s = m.median_step_s, samples_per_sec = m.samples_per_sec,
      forward_s = ph.forward, backward_s = ph.backward, exposed_s = ph.exposed, optimizer_s = ph.optimizer,
      window_s = ph.window }
    local tl = m.ranks[1].timeline
    if tl then
      timeline_chart(("timeline_%s.png"):format(m.name:gsub(":", "-")),
        ("GPT-S step, rank 0 of %d, bucket_mb %g, overlap %s"):format(overlap.ranks, m.bucket_mb,
          m.overlap and "on" or "off"), tl)
    end
  end
  local cats, phases = {}, { { "forward", "forward_s" }, { "backward", "backward_s" },
    { "exposed all-reduce", "exposed_s" }, { "optimizer", "optimizer_s" }, { "step", "step_s" } }
  for i, r in ipairs(rows) do cats[i] = r.mode end
  local series = {}
  for k, p in ipairs(phases) do
    local v = {}
    for i, r in ipairs(rows) do v[i] = 1000 * (r[p[2]] or NAN) end
    series[k] = { name = p[1], values = v }
  end
  ft.plot.bar({ path = path("overlap.png"), title = ("GPT-S, %d ranks x %d thread: a step's phases (medians)")
    :format(overlap.ranks, overlap.threads_per_rank), xlabel = "bucket_mb:overlap", ylabel = "ms",
    categories = cats, series = series, width = 800, height = 480, legend = "outside" })
  written[#written + 1] = "overlap.png"
  -- on against off at each bucket size
  local diffs = {}
  for _, on in ipairs(rows) do
    local mb = on.mode:match("^(.-):on$")
    for _, off in ipairs(rows) do
      if mb and off.mode == mb .. ":off" then
        diffs[#diffs + 1] = { bucket_mb = tonumber(mb), on_s = on.step_s, off_s = off.step_s,
          saved_s = off.step_s - on.step_s, saved_fraction = (off.step_s - on.step_s) / off.step_s,
          exposed_on_s = on.exposed_s, exposed_off_s = off.exposed_s }
      end
    end
  end
  summary.overlap = { model = overlap.model, ranks = overlap.ranks, threads_per_rank = overlap.threads_per_rank,
    global_batch = overlap.global_batch, context = overlap.context, steps = overlap.steps, rows = rows,
    differences = diffs, peak_rss_mb = overlap.peak_rss_mb }
end

-- ---- scaling ------------------------------------------------------------------------------

local scaling = {}
local cats, one, two = {}, {}, {}
for _, model in ipairs({ "gpt-s", "resnet-s" }) do
  for _, impl in ipairs({ "ftlua", "torch" }) do
    local a, b = read(("scaling_%s_%s_1x2.json"):format(model, impl)), read(("scaling_%s_%s_2x1.json"):format(model, impl))
    if a or b then
      local function first(r)
        if not r or r.skipped then return nil end
        return r.modes and r.modes[1] or r
      end
      local ra, rb = first(a), first(b)
      local row = { model = model, impl = impl, skipped = value((a and a.skipped) or (b and b.skipped)),
        global_batch = (a or b).global_batch, context = value((a or b).context),
        one_rank_samples_per_sec = ra and ra.samples_per_sec, two_ranks_samples_per_sec = rb and rb.samples_per_sec,
        one_rank_step_s = ra and ra.median_step_s, two_ranks_step_s = rb and rb.median_step_s,
        one_rank_peak_rss_mb = a and a.peak_rss_mb, two_ranks_peak_rss_mb = b and b.peak_rss_mb,
        two_ranks_peak_rss_mb_all = b and b.peak_rss_mb_all_ranks }
      if ra and rb then row.ratio = rb.samples_per_sec / ra.samples_per_sec end
      scaling[#scaling + 1] = row
      if ra or rb then
        cats[#cats + 1] = ("%s %s"):format(model, impl == "torch" and "PyTorch" or "ftlua")
        one[#one + 1] = ra and ra.samples_per_sec or NAN
        two[#two + 1] = rb and rb.samples_per_sec or NAN
      end
    end
  end
end
if #cats > 0 then
  -- samples/s of each model relative to ftlua's 1 rank x 2 threads (GPT-S and ResNet-S differ 10x)
  local base = {}
  for i, c in ipairs(cats) do
    local model = c:match("^(%S+)")
    if not base[model] and c:find("ftlua") then base[model] = one[i] end
  end
  local n1, n2 = {}, {}
  for i, c in ipairs(cats) do
    local b = base[c:match("^(%S+)")] or one[i]
    n1[i], n2[i] = 100 * one[i] / b, 100 * two[i] / b
  end
  ft.plot.bar({ path = path("scaling.png"), title = "Same global batch: 1 rank x 2 threads against 2 ranks x 1 thread",
    ylabel = "samples/s, % of ftlua 1 rank x 2 threads", categories = cats, width = 800, height = 480,
    series = { { name = "1 rank x 2 threads", values = n1 }, { name = "2 ranks x 1 thread", values = n2 } } })
  written[#written + 1] = "scaling.png"
end
summary.scaling = scaling

-- ---- all-reduce ---------------------------------------------------------------------------

local ar = read("allreduce.json")
if ar then
  local x, y, ymed, yb, yfit = {}, {}, {}, {}, {}
  for i, r in ipairs(ar.rows) do
    x[i], y[i], ymed[i], yb[i] = r.bytes, 1e6 * r.all_reduce_s, 1e6 * r.all_reduce_median_s, 1e6 * r.broadcast_s
    yfit[i] = 1e6 * (ar.fit.alpha_s + ar.fit.beta_s_per_byte * r.bytes)
  end
  ft.plot.line({ path = path("allreduce.png"), title = ("ft.dist collectives, %d ranks, shared memory"):format(ar.ranks),
    xlabel = "bytes", ylabel = "us a call", xscale = "log", yscale = "log", width = 800, height = 480,
    series = { { name = "all_reduce (fastest)", x = x, y = y }, { name = "all_reduce (median)", x = x, y = ymed },
      { name = "broadcast (fastest)", x = x, y = yb },
      { name = ("fit: %.1f us + n / %.2f GB/s"):format(1e6 * ar.fit.alpha_s, ar.fit.bandwidth_bytes_per_s / 1e9),
        x = x, y = yfit } }, legend = "upper left" })
  written[#written + 1] = "allreduce.png"
  summary.allreduce = ar.fit
end

summary.estimate = read("estimate.json")
ft.json.write(path("summary.json"), summary)
written[#written + 1] = "summary.json"

-- ---- the printed summary ------------------------------------------------------------------

local env = summary.env or {}
print(("== distributed benchmarks (%s)"):format(dir))
if env.openblas_corename then
  print(("OpenBLAS kernels: %s (OPENBLAS_CORETYPE=%s; %s); load average %s at the start, %s at the end")
    :format(env.openblas_corename, env.openblas_coretype ~= "" and env.openblas_coretype or "(unset)",
      env.openblas_config or "?", env.load_start or "?", env.load_end or "?"))
end
if summary.overlap then
  local o = summary.overlap
  print(("\nOverlap: GPT-S full fine-tuning, AdamW, %d ranks x %d thread, global batch %d x %d tokens, %d steps a "
    .. "mode (medians, ms)"):format(o.ranks, o.threads_per_rank, o.global_batch, o.context, o.steps))
  print(("  %-8s %7s %8s %9s %8s %9s %8s %9s"):format("mode", "buckets", "step", "samples/s", "forward", "backward",
    "exposed", "optimizer"))
  for _, r in ipairs(o.rows) do
    print(("  %-8s %7d %8s %9.1f %8s %9s %8s %9s"):format(r.mode, r.buckets, ms(r.step_s), r.samples_per_sec,
      ms(r.forward_s), ms(r.backward_s), ms(r.exposed_s), ms(r.optimizer_s)))
  end
  for _, d in ipairs(o.differences) do
    print(("  bucket_mb %g: overlap off %s ms, on %s ms: on saves %s ms a step (%.1f%%); exposed all-reduce %s -> %s ms")
      :format(d.bucket_mb, ms(d.off_s), ms(d.on_s), ms(d.saved_s), 100 * d.saved_fraction, ms(d.exposed_off_s),
        ms(d.exposed_on_s)))
  end
end
if #scaling > 0 then
  print("\nScaling on this machine, same global batch (median step):")
  print(("  %-9s %-8s %-6s %14s %14s %8s %16s %22s"):format("model", "impl", "batch", "1x2 samples/s", "2x1 samples/s",
    "2x1/1x2", "1x2 peak RSS MiB", "2x1 peak RSS MiB/rank"))
  for _, r in ipairs(scaling) do
    if r.skipped then
      print(("  %-9s %-8s skipped: %s"):format(r.model, r.impl, r.skipped))
    else
      local function f(v, fmt) return v and fmt:format(v) or "-" end
      print(("  %-9s %-8s %-6s %14s %14s %8s %16s %22s"):format(r.model, r.impl,
        r.context and ("%dx%d"):format(r.global_batch, r.context) or tostring(r.global_batch),
        f(r.one_rank_samples_per_sec, "%.1f"), f(r.two_ranks_samples_per_sec, "%.1f"), f(r.ratio, "%.2f"),
        f(r.one_rank_peak_rss_mb, "%.0f"), f(r.two_ranks_peak_rss_mb, "%.0f")))
    end
  end
end
if summary.allreduce then
  local a = summary.allreduce
  print(("\nAll-reduce between 2 ranks (shared memory): alpha %.1f us, beta %.3f ns/byte (%.2f GB/s)")
    :format(1e6 * a.alpha_s, 1e9 * a.beta_s_per_byte, a.bandwidth_bytes_per_s / 1e9))
end
if summary.estimate then
  print("\nEstimate (estimate.md has every row; cluster networks are assumptions):")
  print(("  %-38s %-36s %5s %9s %9s %8s %7s"):format("workload", "network", "nodes", "comm ms", "window", "hidden",
    "speedup"))
  for _, r in ipairs(summary.estimate.rows) do
    if r.nodes ~= 2 then
      print(("  %-38s %-36s %5d %9s %9s %8s %6.1fx"):format(("%s, %g MiB"):format(r.workload, r.bucket_mb), r.network,
        r.nodes, ms(r.comm_s), ms(r.window_s), r.hidden and "yes" or "no", r.speedup_to_break_even))
    end
  end
end
print(("\nwrote %s in %s"):format(table.concat(written, ", "), dir))
