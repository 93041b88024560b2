-- Times data-parallel training steps (forward + backward + optimizer step) through
-- ft.dist.DataParallel, alone (one process, its threads) or under mpirun (one rank a process),
-- and records where a step's time goes: forward, backward, the all-reduces of the gradient
-- buckets (ddp:timeline()), the wait for the last of them, the optimizer.
--
--   ftlua scripts/bench/dist_step.lua --model gpt-s --batch-size 16 --threads 2           # 1 rank x 2 threads
--   mpirun -np 2 ... ftlua scripts/bench/dist_step.lua --model gpt-s --batch-size 16 --threads 1 \
--     --modes 25:on,25:off,1:on,1:off --json overlap.json                               # 2 ranks x 1 thread
--
-- (scripts/bench/dist_suite.sh runs it with the right mpirun flags.) --batch-size is the global
-- batch: each rank trains on its share (ft.dist.shard), so 1 rank and 2 ranks do the same work
-- per step. Models, random inputs, fixed for the whole run:
--   gpt-s      the shipped preset (6 layers, d 384, 6 heads, vocab 256), dropout 0, full
--              fine-tuning, AdamW; --batch-size sequences of --context tokens (next-byte loss)
--   resnet-s   the shipped preset (1x28x28 images, 10 classes, BatchNorm per rank), SGD with
--              Nesterov momentum 0.9, weight decay 5e-4; --batch-size images
--   qwen-lora  a Qwen2.5-0.5B-shaped decoder with random weights (--layers of 24), LoRA r 16
--              (alpha 32) on q, k, v, o, gate, up, down, AdamW on the adapter; --batch-size
--              sequences of --context tokens
-- --modes lists the DataParallel settings to time as bucket_mb:on|off (overlap = true | false).
-- The modes take turns step by step (after --warmup untimed steps each), so that a machine
-- whose load changes slows them alike. A step's time is the slowest rank's. In a world of one
-- the modes do not apply: DataParallel is the bare model.
--
-- The last line is machine-readable:
--   RESULT samples_per_sec=<n> ms_per_step=<median ms> peak_rss_mb=<largest rank's MiB>  (the first mode's)
-- --json writes every mode's step times, the per-phase medians and the last step's timeline
-- of every rank (seconds since its forward began, buckets with their parameter names, bytes,
-- started and done).
local ft = require "ft"
local argparse = require "argparse"

local F = ft.nn.functional
local dist = ft.dist.init()
local world = dist.world_size()

local QWEN = { architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 151936,
  hidden_size = 896, intermediate_size = 4864, num_attention_heads = 14, num_key_value_heads = 2,
  max_position_embeddings = 32768, rope_theta = 1000000.0, rms_norm_eps = 1e-6, tie_word_embeddings = true,
  hidden_act = "silu", attention_dropout = 0.0, num_hidden_layers = 24 }
local QWEN_TARGETS = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
local DEFAULT_BATCH = { ["gpt-s"] = 16, ["resnet-s"] = 128, ["qwen-lora"] = 2 }
local DEFAULT_CONTEXT = { ["gpt-s"] = 128, ["qwen-lora"] = 256 }

-- "25:on,1:off" -> {{bucket_mb = 25, overlap = true, name = "25:on"}, ...}, or nil and a message.
local function parse_modes(s)
  local out = {}
  for item in tostring(s):gmatch("[^,]+") do
    local mb, flag = item:match("^%s*([%d.]+):(%a+)%s*$")
    local v = tonumber(mb)
    if not v or v <= 0 or (flag ~= "on" and flag ~= "off") then
      return nil, ("expected bucket_mb:on|off items separated by commas (e.g. 25:on,25:off), got '%s'"):format(item)
    end
    out[#out + 1] = { bucket_mb = v, overlap = flag == "on", name = ("%s:%s"):format(mb, flag) }
  end
  if #out == 0 then return nil, "expected at least one bucket_mb:on|off item" end
  return out
end

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("dist_step.lua", "Time data-parallel training steps.")
parser:option("--model", "gpt-s, resnet-s or qwen-lora.", "gpt-s"):choices({ "gpt-s", "resnet-s", "qwen-lora" })
parser:option("--batch-size", "The global batch (default: gpt-s 16, resnet-s 128, qwen-lora 2).")
  :convert(positive)
parser:option("--context", "Tokens per sequence (default: gpt-s 128, qwen-lora 256).")
  :convert(positive)
parser:option("--layers", "qwen-lora: decoder layers.", "24"):convert(positive)
parser:option("--steps", "Timed steps of each mode.", "6"):convert(positive)
parser:option("--warmup", "Untimed steps of each mode first.", "1"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--modes", "DataParallel settings to time, bucket_mb:on|off (overlap), comma-separated.", "25:on")
  :convert(parse_modes)
parser:option("--threads", "Threads per rank (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:option("--json", "Write the results to this file (rank 0).")
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

-- The process's peak resident memory in MiB (ft.resident_bytes: Linux's VmHWM).
local function peak_rss_mb() return select(2, ft.resident_bytes()) / 2 ^ 20 end

local B = args.batch_size or DEFAULT_BATCH[args.model]
local T = args.context or DEFAULT_CONTEXT[args.model]
if B % world ~= 0 then
  ft.recipe.usage_error(parser, "--batch-size %d (the global batch) does not divide among %d ranks", B, world)
end

-- The model, its optimizer, this rank's share of a fixed global batch, and the loss of a forward.
local model, params, opt, batch, loss_of, unit
if args.model == "gpt-s" then
  model = ft.models.new("gpt-s", { n_positions = math.max(T, 256), attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
  params = model:parameters()
  opt = ft.optim.AdamW(params, { lr = 1e-3, weight_decay = 0.1 })
  local w = ft.randint(1, 256, { B, T + 1 })
  batch = { x = w:narrow(2, 1, T):contiguous(), y = w:narrow(2, 2, T):contiguous() }
  loss_of = function(net, b)
    local logits = net(b.x).logits
    return F.cross_entropy(logits:reshape(-1, logits:size(-1)), b.y:reshape(-1))
  end
  unit = ("sequences of %d tokens"):format(T)
elseif args.model == "resnet-s" then
  model = ft.models.new("resnet-s")
  params = model:parameters()
  opt = ft.optim.SGD(params, { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 5e-4 })
  batch = { x = ft.randn(B, 1, 28, 28), y = ft.randint(1, 10, { B }) }
  loss_of = function(net, b) return F.cross_entropy(net(b.x), b.y) end
  unit = "images 1x28x28"
else
  model = ft.models.new(ft.models.copy_config(QWEN, { num_hidden_layers = args.layers }))
  ft.peft.lora(model, { target = QWEN_TARGETS, r = 16, alpha = 32 })
  params = {}
  for _, p in ipairs(model:parameters()) do if p.requires_grad then params[#params + 1] = p end end
  opt = ft.optim.AdamW(params, { lr = 1e-4, weight_decay = 0 })
  batch = { x = ft.randint(1, QWEN.vocab_size, { B, T }) }
  loss_of = function(net, b) return net(b.x, { labels = b.x }).loss end
  unit = ("sequences of %d tokens"):format(T)
end
model:train()
local mine = dist.shard(batch)

local n_trainable = 0
for _, p in ipairs(params) do n_trainable = n_trainable + p:numel() end

local modes = world > 1 and args.modes or { { name = "single" } }
for _, m in ipairs(modes) do
  if world > 1 then m.ddp = ft.dist.DataParallel(model, { bucket_mb = m.bucket_mb, overlap = m.overlap }) end
  m.times, m.phases = {}, {}
end

print(("dist_step %s: %d trainable parameters (%.1f MiB of float32 gradients), global batch %d %s, %d rank%s x %d "
  .. "thread%s"):format(args.model, n_trainable, 4 * n_trainable / 2 ^ 20, B, unit, world, world > 1 and "s" or "",
  ft.get_num_threads(), ft.get_num_threads() > 1 and "s" or ""))

local function step(m)
  local net = m.ddp or model
  local t0 = ft.clock()
  local loss = loss_of(net, mine)
  loss:backward()
  local t_backward = ft.clock() - t0
  opt:step()
  opt:zero_grad()
  local value = loss:item()
  local total = ft.clock() - t0
  return total, t_backward, value
end

for _ = 1, args.warmup do
  for _, m in ipairs(modes) do step(m) end
end
dist.barrier()
local loss
for i = 1, args.steps do
  for _, m in ipairs(modes) do
    local total, t_backward
    total, t_backward, loss = step(m)
    m.times[i] = total
    local tl = m.ddp and m.ddp:timeline()
    -- phases of this rank's step: forward (to the first autograd node), backward, exposed
    -- communication (backward's end to the last bucket averaged), the optimizer step
    local ph = { total = total }
    if tl then
      ph.forward = tl.backward_start
      ph.backward = tl.backward_end - tl.backward_start
      ph.exposed = tl.reduced - tl.backward_end
      ph.optimizer = total - t_backward
      ph.first_bucket = tl.buckets[1].started
      ph.window = tl.backward_end - tl.buckets[1].started
      local busy = 0
      for _, b in ipairs(tl.buckets) do busy = busy + (b.done - b.started) end
      ph.bucket_time = busy
      m.last_timeline = tl
    else
      ph.backward_and_forward = t_backward
      ph.optimizer = total - t_backward
    end
    m.phases[i] = ph
  end
end

-- The slowest rank's time of each step; each rank's phases and last timeline, gathered on rank 0.
local function median(list)
  local s = table.move(list, 1, #list, 1, {})
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local rss = dist.all_reduce(ft.tensor({ peak_rss_mb() }, { dtype = "float64" }), { op = "max" })[1]:item()
local rss_sum = dist.all_reduce(ft.tensor({ peak_rss_mb() }, { dtype = "float64" }))[1]:item()
local results = { model = args.model, ranks = world, threads_per_rank = ft.get_num_threads(), global_batch = B,
  per_rank_batch = B // world, context = args.model ~= "resnet-s" and T or nil,
  layers = args.model == "qwen-lora" and args.layers or nil, trainable_parameters = n_trainable,
  gradient_bytes = 4 * n_trainable, steps = args.steps, warmup = args.warmup, loss = loss,
  peak_rss_mb = rss, peak_rss_mb_all_ranks = rss_sum, openblas_coretype = os.getenv("OPENBLAS_CORETYPE") or "",
  modes = {} }
for k, m in ipairs(modes) do
  local slowest = dist.all_reduce(ft.tensor(m.times, { dtype = "float64" }), { op = "max" }):totable()
  local per_rank = {}
  for r = 0, world - 1 do
    per_rank[r + 1] = dist.broadcast_value({ phases = m.phases, timeline = m.last_timeline }, r)
  end
  local med = {}
  for key in pairs(m.phases[1]) do
    local vals = {}
    for r = 1, world do
      for _, ph in ipairs(per_rank[r].phases) do vals[#vals + 1] = ph[key] end
    end
    med[key] = median(vals)
  end
  local step_s = median(slowest)
  results.modes[k] = { name = m.name, bucket_mb = m.bucket_mb, overlap = m.overlap,
    buckets = m.last_timeline and #m.last_timeline.buckets or 0, step_times = slowest, median_step_s = step_s,
    samples_per_sec = B / step_s, median_phases = med, ranks = per_rank }
  local line = ("  %-7s median step %7.1f ms  %7.1f samples/s"):format(m.name, 1000 * step_s, B / step_s)
  if m.last_timeline then
    line = line .. ("  (%d buckets; forward %.0f, backward %.0f, exposed all-reduce %.1f, optimizer %.0f ms)")
      :format(#m.last_timeline.buckets, 1000 * med.forward, 1000 * med.backward, 1000 * med.exposed,
        1000 * med.optimizer)
  end
  print(line)
end
print(("  loss %.4f, peak RSS %.0f MiB (largest rank), %.0f MiB (all ranks)"):format(loss, rss, rss_sum))
if args.json and dist.is_main() then
  ft.fs.mkdir_for(args.json)
  ft.json.write(args.json, results)
end
local first = results.modes[1]
print(("RESULT samples_per_sec=%.2f ms_per_step=%.1f peak_rss_mb=%.0f"):format(first.samples_per_sec,
  1000 * first.median_step_s, rss))
