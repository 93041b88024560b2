-- The scaling estimate: what data-parallel training all-reduces per step and whether backward
-- hides it, for 2 (this machine, to check the model), 8 and 64 nodes, from the numbers the
-- other distributed benchmarks measured here.
--
--   FT_PROFILE=1 ftlua scripts/bench/dist_estimate.lua --overlap overlap.json --allreduce allreduce.json \
--     [--qwen qwen_lora.json] --json estimate.json --md estimate.md 2> profile.log
--
-- (scripts/bench/dist_suite.sh runs it.) Inputs: dist_step.lua's JSON for GPT-S (modes
-- 25:on and 1:on) and optionally for the Qwen2.5-0.5B-shaped LoRA adapter, dist_allreduce.lua's
-- JSON (alpha and beta of this machine's shared memory). The parameter counts are recounted
-- here from the model configs (GPT-S: the preset; the adapter: LoRA r 16 on the seven
-- projections of one decoder layer, times the measured run's layers, 24) and must match the
-- runs'. With FT_PROFILE=1 it also counts the autograd nodes of one backward (the times
-- DataParallel polls MPI: see below); without it those columns are left out.
--
-- The model (every number in the output says which it is: measured here, or assumed):
--   ring all-reduce of a bucket of n bytes over N nodes: t(n) = 2 (N - 1) alpha + 2 (N - 1) / N * n * beta
--   buckets: the layout DataParallel made here (bytes of each), each ready when it started in the
--   measured overlapped step; the network reduces one bucket at a time, in order:
--   finish_i = max(ready_i, finish_{i-1}) + t(n_i); exposed = max(0, finish_last - backward_end)
--   hidden while the sum of t(n_i) fits in the window from the first bucket's start to the end
--   of backward (the window measured here, one core a rank; a node k times faster shrinks it by k,
--   so "speed-up to break even" = window / sum t(n_i)).
-- It assumes the all-reduces progress on their own (a progress thread or an offloading NIC).
-- ftlua's DataParallel progresses them only when it polls MPI, once per autograd node; if each
-- poll moves a ring on by one of its 2 (N - 1) steps, a bucket needs that many polls, which
-- the "polls needed / polls in the window" columns compare.
local ft = require "ft"
local argparse = require "argparse"

local parser = argparse("dist_estimate.lua", "Estimate data-parallel scaling from the measured numbers.")
parser:option("--overlap", "dist_step.lua's JSON for GPT-S with modes 25:on (and 1:on)."):args(1):convert(ft.recipe.file)
parser:option("--allreduce", "dist_allreduce.lua's JSON."):args(1):convert(ft.recipe.file)
parser:option("--qwen", "dist_step.lua's JSON for the Qwen2.5-0.5B-shaped LoRA run (optional)."):convert(ft.recipe.file)
parser:option("--json", "Write the estimate here.")
parser:option("--md", "Write the estimate's tables here (Markdown).")
local args = ft.recipe.parse(parser)
if not args.overlap or not args.allreduce then ft.recipe.usage_error(parser, "give --overlap and --allreduce") end

local NODES = { 2, 8, 64 }
local measured_ar = ft.json.read(args.allreduce).fit
-- Networks: this machine's shared memory (measured), and typical cluster links (assumed:
-- line rate, no protocol overhead, so the bandwidth side is optimistic).
local NETWORKS = {
  { name = "here (shared memory, measured)", alpha = measured_ar.alpha_s, bandwidth = measured_ar.bandwidth_bytes_per_s,
    measured = true },
  { name = "25 Gb/s Ethernet, 20 us (assumed)", alpha = 20e-6, bandwidth = 25e9 / 8 },
  { name = "100 Gb/s InfiniBand, 5 us (assumed)", alpha = 5e-6, bandwidth = 100e9 / 8 },
}

-- ---- parameter counts from the configs ------------------------------------------------------

local function trainable(model)
  local n = 0
  for _, p in ipairs(model:parameters()) do if p.requires_grad then n = n + p:numel() end end
  return n
end

-- Autograd nodes of one backward of loss_fn() (nil without FT_PROFILE=1).
local function backward_nodes(loss_fn)
  if os.getenv("FT_PROFILE") ~= "1" then return nil end
  local loss = loss_fn()
  local before = ft.profile_report()
  loss:backward()
  local after = ft.profile_report()
  local n = 0
  for k, v in pairs(after) do
    if k:match("^backward:") then n = n + v.calls - ((before[k] or {}).calls or 0) end
  end
  return n
end

local gpt = ft.models.new("gpt-s", { attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
local gpt_params = trainable(gpt)
local gpt_nodes = backward_nodes(function()
  local x = ft.randint(1, 256, { 1, 16 })
  return ft.nn.functional.cross_entropy(gpt(x).logits:reshape(16, -1), x:reshape(-1))
end)

local qwen_run = args.qwen and ft.json.read(args.qwen)
local QWEN_LAYERS = qwen_run and qwen_run.layers or 24   -- the measured run's (24 unless --quick)
local TARGETS = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
-- One decoder layer of the Qwen2.5-0.5B shape (the vocab does not change the adapter: the
-- embeddings carry none), then the adapter of 24 such layers.
local function qwen(layers)
  local m = ft.models.new({ architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 256,
    hidden_size = 896, intermediate_size = 4864, num_attention_heads = 14, num_key_value_heads = 2,
    num_hidden_layers = layers, max_position_embeddings = 512, rope_theta = 1000000.0, rms_norm_eps = 1e-6,
    tie_word_embeddings = true, hidden_act = "silu", attention_dropout = 0.0 })
  ft.peft.lora(m, { target = TARGETS, r = 16, alpha = 32 })
  return m
end
local q1 = qwen(1)
local qwen_params = QWEN_LAYERS * trainable(q1)
local qwen_nodes
do -- nodes = a + b * layers, from 1 and 2 layers
  local ids = ft.randint(1, 256, { 1, 16 })
  local n1 = backward_nodes(function() return q1(ids, { labels = ids }).loss end)
  if n1 then
    local q2 = qwen(2)
    local n2 = backward_nodes(function() return q2(ids, { labels = ids }).loss end)
    qwen_nodes = n1 + (QWEN_LAYERS - 1) * (n2 - n1)
  end
end

-- ---- the workloads, as measured here ---------------------------------------------------------

local function mode_of(results, name)
  for _, m in ipairs(results.modes) do if m.name == name then return m end end
end

-- A workload from one mode of a dist_step.lua run: the bucket layout and ready times of rank
-- 0's last overlapped step, and the medians over the steps and ranks.
local function workload(name, results, mode_name, params, nodes)
  local m = mode_of(results, mode_name)
  if not m then return nil end
  local tl = m.ranks[1].timeline
  local buckets = {}
  for i, b in ipairs(tl.buckets) do buckets[i] = { bytes = b.bytes, ready = b.started } end
  local off = mode_of(results, (mode_name:gsub(":on$", ":off")))
  local ph = m.median_phases
  return { name = name, mode = mode_name, parameters = params, parameters_measured_run = results.trainable_parameters,
    gradient_bytes = 4 * params, buckets = buckets, n_buckets = #buckets, bucket_mb = m.bucket_mb,
    per_rank_batch = results.per_rank_batch, context = results.context, threads_per_rank = results.threads_per_rank,
    forward_s = ph.forward, backward_s = ph.backward, optimizer_s = ph.optimizer, window_s = ph.window,
    first_bucket_s = ph.first_bucket - ph.forward, step_s = m.median_step_s, exposed_s = ph.exposed,
    step_off_s = off and off.median_step_s, exposed_off_s = off and off.median_phases.exposed,
    backward_start = tl.backward_start, backward_end = tl.backward_end, nodes = nodes,
    polls_in_window = nodes and nodes * ph.window / ph.backward }
end

local overlap = ft.json.read(args.overlap)
local workloads = {}
workloads[#workloads + 1] = workload("GPT-S full fine-tuning", overlap, "25:on", gpt_params, gpt_nodes)
local small = workload("GPT-S full fine-tuning", overlap, "1:on", gpt_params, gpt_nodes)
if small then workloads[#workloads + 1] = small end
if args.qwen then
  local name = "Qwen2.5-0.5B-shaped LoRA r 16" .. (QWEN_LAYERS ~= 24 and (" (%d layers)"):format(QWEN_LAYERS) or "")
  local q = workload(name, qwen_run, "25:on", qwen_params, qwen_nodes)
  if q then workloads[#workloads + 1] = q end
end
if not workloads[1] then ft.recipe.fail(parser, "%s has no mode 25:on", args.overlap) end
for _, w in ipairs(workloads) do -- the count from the configs against the run's own
  if w.parameters ~= w.parameters_measured_run then
    ft.recipe.fail(parser, "%s: %d trainable parameters counted from the config, %d in the measured run", w.name,
      w.parameters, w.parameters_measured_run)
  end
end

-- ---- the model ----------------------------------------------------------------------------

local function ring_time(bytes, n_nodes, net)
  return 2 * (n_nodes - 1) * net.alpha + 2 * (n_nodes - 1) / n_nodes * bytes / net.bandwidth
end

local function comm_total(w, n_nodes, net)
  local total = 0
  for _, b in ipairs(w.buckets) do total = total + ring_time(b.bytes, n_nodes, net) end
  return total
end

local function exposed(w, n_nodes, net)
  local finish = 0
  for _, b in ipairs(w.buckets) do
    finish = math.max(b.ready, finish) + ring_time(b.bytes, n_nodes, net)
  end
  return math.max(0, finish - w.backward_end)
end

-- The smallest node count at which the all-reduces no longer fit in the window (nil: none up to
-- 2^20; 2 when not even 2 nodes fit, shown as "hidden up to 1").
local function break_even_nodes(w, net)
  local lo, hi = 2, 2 ^ 20
  if comm_total(w, lo, net) > w.window_s then return 2 end
  if comm_total(w, hi, net) <= w.window_s then return nil end
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if comm_total(w, mid, net) > w.window_s then hi = mid else lo = mid end
  end
  return math.tointeger(hi)
end

local rows = {}
for _, w in ipairs(workloads) do
  for _, net in ipairs(NETWORKS) do
    for _, n in ipairs(NODES) do
      if not net.measured or n == 2 then
        local total = comm_total(w, n, net)
        rows[#rows + 1] = { workload = w.name, bucket_mb = w.bucket_mb, network = net.name, nodes = n,
          bytes_per_rank = 2 * (n - 1) / n * w.gradient_bytes, comm_s = total,
          latency_s = w.n_buckets * 2 * (n - 1) * net.alpha, exposed_s = exposed(w, n, net), window_s = w.window_s,
          hidden = total <= w.window_s, speedup_to_break_even = w.window_s / total,
          polls_needed = w.n_buckets * 2 * (n - 1), polls_in_window = w.polls_in_window,
          break_even_nodes = break_even_nodes(w, net) }
      end
    end
  end
end

-- ---- output -------------------------------------------------------------------------------

local function mib(b) return b / 2 ^ 20 end
local function ms(s) return s and ("%.1f"):format(1000 * s) or "-" end
local md = {}
local function out(fmt, ...) md[#md + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end

out("Parameters all-reduced per step (float32 gradients; counted from the configs):")
out("")
out("| workload | trainable parameters | gradient MiB | buckets (bucket_mb) | MiB a rank sends, 8 nodes | 64 nodes |")
out("| --- | --- | --- | --- | --- | --- |")
for _, w in ipairs(workloads) do
  out("| %s | %d | %.1f | %d (%g) | %.1f | %.1f |", w.name, w.parameters, mib(w.gradient_bytes), w.n_buckets,
    w.bucket_mb, mib(2 * 7 / 8 * w.gradient_bytes), mib(2 * 63 / 64 * w.gradient_bytes))
end
out("")
out("Measured here (2 ranks x %d thread, medians; ms):", workloads[1].threads_per_rank)
out("")
out("| workload | per-rank batch | forward | backward | first bucket ready after | window | optimizer | step (overlap on) | exposed all-reduce on / off | autograd nodes |")
out("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for _, w in ipairs(workloads) do
  out("| %s, %g MiB buckets | %d x %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |", w.name, w.bucket_mb,
    w.per_rank_batch, w.context and tostring(w.context) or "-", ms(w.forward_s), ms(w.backward_s),
    ms(w.first_bucket_s), ms(w.window_s), ms(w.optimizer_s), ms(w.step_s), ms(w.exposed_s), ms(w.exposed_off_s),
    w.nodes and tostring(w.nodes) or "-")
end
out("")
out("Network: alpha %.1f us, %.2f GB/s measured here (all-reduce of 1 KiB .. 64 MiB between 2 ranks); the "
  .. "cluster rows are assumptions.", 1e6 * measured_ar.alpha_s, measured_ar.bandwidth_bytes_per_s / 1e9)
out("")
out("| workload | network | nodes | all-reduce time | of it latency | exposed (model) | window | hidden | backward speed-up to break even | hidden up to nodes | polls needed / in window |")
out("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for _, r in ipairs(rows) do
  out("| %s, %g MiB | %s | %d | %s | %s | %s | %s | %s | %.1fx | %s | %s |", r.workload, r.bucket_mb, r.network, r.nodes,
    ms(r.comm_s), ms(r.latency_s), ms(r.exposed_s), ms(r.window_s), r.hidden and "yes" or "no",
    r.speedup_to_break_even, r.break_even_nodes and tostring(r.break_even_nodes - 1) or "> 10^6",
    r.polls_in_window and ("%d / %.0f"):format(r.polls_needed, r.polls_in_window) or "-")
end
local text = table.concat(md, "\n") .. "\n"
io.write(text)
if args.md then ft.fs.write(args.md, text) end
if args.json then
  ft.json.write(args.json, { networks = NETWORKS, nodes = NODES, workloads = workloads, rows = rows,
    model = "ring all-reduce t(n) = 2(N-1) alpha + 2(N-1)/N n beta per bucket, one bucket at a time, each from its "
      .. "measured ready time; hidden when the sum fits in the measured window (first bucket start to backward end)" })
end
