-- Peak memory and step time of training loops, as the collector paces tensor garbage: GPT-S
-- (AdamW, batch 8 x 256), ResNet-S (SGD with momentum, batch 128 of 1x28x28) and a small
-- conv+MLP (SGD, batch 32). Each model runs in a process of its own, so that the process's
-- peak resident memory (VmHWM) is that model's.
--
--   ftlua scripts/bench/memory_peak.lua                          # all three, 2 threads
--   ftlua scripts/bench/memory_peak.lua --model gpt-s --steps 20
--   ftlua scripts/bench/memory_peak.lua --model resnet-s --steps 4 --working-set
--   LUA_CPATH="build/?.so;;" LUA_PATH="bindings/lua/?.lua;;" lua5.4 scripts/bench/memory_peak.lua
--
-- For each model it reports: the tensor bytes held between steps (weights, gradients,
-- optimizer state), the peak of ft.live_bytes over all steps (held bytes + activations +
-- garbage awaiting collection), the peak RSS of the process (VmHWM), RSS after the first
-- and the last step, and the median step time. No collectgarbage() call is made inside the
-- loop: the numbers are what a user's loop gets. With --working-set, one more step measures the
-- working set: the peak when no garbage ever waits (a full collection before every Lua
-- instruction), the floor that the peak is to be compared with.
-- Machine-readable lines: RESULT model=<name> held=<bytes> peak=<bytes> working_set=<bytes or 0>
-- hwm_kb=<kB> rss_first_kb=<kB> rss_last_kb=<kB> ms_per_step=<ms>
local ft = require "ft"
local argparse = require "argparse"

local F, nn = ft.nn.functional, ft.nn

local MODELS = { "gpt-s", "resnet-s", "mlp" }
local DEFAULT_STEPS = { ["gpt-s"] = 10, ["resnet-s"] = 20, mlp = 1000 }

local parser = argparse("memory_peak.lua",
  "Peak tensor bytes, peak RSS and step time of GPT-S, ResNet-S and a small MLP training loop.")
parser:option("--model", "One model only (default: each of them, one process each)."):choices(MODELS)
parser:option("--steps", "Training steps per model (default: gpt-s 10, resnet-s 20, mlp 1000).")
  :convert(math.tointeger)
parser:option("--threads", "Threads.", "2"):convert(math.tointeger)
parser:flag("--working-set", "Also measure the working set: one more step with a full collection before "
  .. "every Lua instruction (slow for GPT-S).")
local args = parser:parse()
if args.steps and args.steps < 1 then parser:error("--steps must be at least 1") end
if args.threads < 1 then parser:error("--threads must be at least 1") end

-- The process's resident memory now and at its peak, in kB (ft.resident_bytes).
local function resident_kb()
  local rss, peak = ft.resident_bytes()
  return rss // 1024, peak // 1024
end

local function mib(bytes) return bytes / 2 ^ 20 end

-- Each builder returns a step function that trains once and returns the loss.
local builders = {}

function builders.gpt_s()
  local config = ft.models.config("gpt-s", { attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
  local model = ft.models.new(config)
  model:train()
  local opt = ft.optim.AdamW(model:parameters(), { lr = 1e-3, weight_decay = 0.1 })
  local B, T = 8, 256
  local w = ft.randint(1, config.vocab_size, { B, T + 1 })
  local x, y = w:narrow(2, 1, T):contiguous(), w:narrow(2, 2, T):contiguous()
  return function()
    local logits = model(x).logits
    local loss = F.cross_entropy(logits:reshape(B * T, -1), y:reshape(-1))
    opt:zero_grad()
    loss:backward()
    opt:step()
    return loss:item()
  end
end

function builders.resnet_s()
  local model = ft.models.new("resnet-s", { num_classes = 10 })
  model:train()
  local opt = ft.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 })
  local x = ft.randn(128, 1, 28, 28)
  local y = ft.randint(1, 10, { 128 })
  return function()
    opt:zero_grad()
    local loss = F.cross_entropy(model(x), y)
    loss:backward()
    opt:step()
    return loss:item()
  end
end

function builders.mlp()
  local model = nn.Sequential{
    nn.Conv2d(1, 8, 3, { padding = 1 }), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(8 * 14 * 14, 64), nn.ReLU(), nn.Linear(64, 10),
  }
  local opt = ft.optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
  local x = ft.randn(32, 1, 28, 28)
  local y = ft.randint(1, 10, { 32 })
  return function()
    local loss = F.cross_entropy(model(x), y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    return loss:item()
  end
end

-- Measures one model in this process and prints its RESULT line.
local function run_one(name)
  ft.set_num_threads(args.threads)
  ft.manual_seed(1)
  local steps = args.steps or DEFAULT_STEPS[name]
  local step = builders[name:gsub("-", "_")]()
  local times, rss_first = {}, nil
  local held
  ft.reset_peak_bytes()
  for i = 1, steps do
    local t0 = ft.clock()
    step()
    times[i] = ft.clock() - t0
    if i == 1 then rss_first = resident_kb() end
  end
  local rss_last, hwm = resident_kb()
  local peak = ft.peak_bytes()
  collectgarbage()
  collectgarbage()
  held = ft.live_bytes()
  -- The working set: the peak of one more step with a full collection before every Lua
  -- instruction, so that no garbage is ever waiting.
  local ws = 0
  if args.working_set then
    ft.reset_peak_bytes()
    debug.sethook(function() collectgarbage() end, "", 1)
    step()
    debug.sethook()
    ws = ft.peak_bytes()
  end
  table.sort(times)
  local median = times[(#times + 1) // 2]
  print(("RESULT model=%s held=%d peak=%d working_set=%d hwm_kb=%d rss_first_kb=%d rss_last_kb=%d ms_per_step=%.2f"):format(
    name, held, peak, ws, hwm, rss_first, rss_last, 1000 * median))
end

if args.model then return run_one(args.model) end

-- The interpreter running this script (the most negative arg index) measures each model afresh.
local interp_index = -1
while arg[interp_index - 1] do interp_index = interp_index - 1 end
local function measure(name)
  local cmd = ("%q %q --model %s --threads %d%s%s"):format(arg[interp_index], arg[0], name, args.threads,
    args.steps and (" --steps " .. args.steps) or "", args.working_set and " --working-set" or "")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local r = {}
  local line = out:match("RESULT ([^\n]*)")
  if not line then error("memory_peak.lua: no result from: " .. cmd .. "\n" .. out) end
  for k, v in line:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
  return r
end

print(("Training-step memory, %d threads, one process per model (%s)"):format(args.threads, _VERSION))
print(("  %-9s %6s %9s %9s %9s %9s %11s %9s %9s"):format("model", "steps", "held MiB", "peak MiB",
  "ws MiB", "peak RSS", "RSS step 1", "RSS last", "ms/step"))
for _, name in ipairs(MODELS) do
  local r = measure(name)
  print(("  %-9s %6d %9.1f %9.1f %9s %9.1f %11.1f %9.1f %9.1f"):format(name, args.steps or DEFAULT_STEPS[name],
    mib(r.held), mib(r.peak), args.working_set and ("%.1f"):format(mib(r.working_set)) or "-", r.hwm_kb / 1024,
    r.rss_first_kb / 1024, r.rss_last_kb / 1024, r.ms_per_step))
end
print("  (RSS columns in MiB; ws: the working set, with --working-set)")
