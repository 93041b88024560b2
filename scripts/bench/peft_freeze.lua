-- What freezing buys: training-step time of ResNet-S with its lower half frozen, and the peak
-- tensor memory of a GPT-S training step with full fine-tuning versus LoRA.
--
--   ftlua scripts/bench/peft_freeze.lua                      # 2 threads, 5 timed steps
--   ftlua scripts/bench/peft_freeze.lua --steps 10 --threads 1
--
-- (1) ResNet-S on random 1x28x28 images, batch 128, SGD (momentum 0.9): every parameter
--     training, versus conv1 + bn1 + layer1 + layer2 frozen with ft.peft.freeze (their
--     BatchNorm layers keep their running statistics). Frozen layers record no autograd graph,
--     so backward stops at layer3. Median step time over the timed steps, after warm-up.
-- (2) GPT-S (ft.models.config("gpt-s"), dropout 0), batch 8 x 256 tokens, AdamW: the peak of
--     ft.live_bytes (all tensor storage: weights, gradients, optimizer state, activations)
--     during one training step, full fine-tuning versus LoRA r = 8 on c_attn. Each model is
--     measured after a warm-up step, so the optimizer state exists, and in a process of its
--     own: the collector's pace depends on the heap's history, and temporaries awaiting
--     collection count in the peak, so a second model in the same process reads higher.
local ft = require "ft"
local argparse = require "argparse"
local resnet = require "ft.models.resnet"

local F = ft.nn.functional
local peft = ft.peft

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("peft_freeze.lua", "Time and measure frozen / adapter training steps.")
parser:option("--steps", "Timed ResNet-S steps per configuration.", "5"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "2"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--batch-size", "ResNet-S batch size.", "128"):convert(positive)
parser:option("--threads", "Threads.", "2"):convert(positive)
parser:flag("--skip-gpt", "Only the ResNet-S timing.")
parser:option("--gpt-only", "Measure one GPT-S configuration and print it (used by the full run).")
  :choices({ "full", "lora" })
local args = ft.recipe.parse(parser)

ft.set_num_threads(args.threads)

local function median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function mib(bytes) return bytes / 2 ^ 20 end

local function full_gc()
  collectgarbage()
  collectgarbage()
end

-- ---- (1) ResNet-S step time ------------------------------------------------------------------

local function time_resnet(freeze)
  ft.manual_seed(1)
  local model = resnet.resnet_s()
  model:train()
  if freeze then peft.freeze(model, { "^conv1$", "^bn1$", "^layer1$", "^layer2$" }) end
  local params = {}
  for i, e in ipairs(peft.trainable_parameters(model)) do params[i] = e[2] end
  local opt = ft.optim.SGD(params, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 })
  local B = args.batch_size
  local x = ft.randn(B, 1, 28, 28)
  local y = ft.randint(1, 10, { B }, { dtype = "int64" })
  local function step()
    opt:zero_grad()
    local loss = F.cross_entropy(model(x), y)
    loss:backward()
    opt:step()
    return loss:item()
  end
  for _ = 1, args.warmup do step() end
  local times = {}
  for i = 1, args.steps do
    local t0 = ft.clock()
    step()
    times[i] = ft.clock() - t0
  end
  local trainable = peft.summary(model, { print = false })
  return median(times), trainable
end

print(("ResNet-S training step, batch %d, SGD, %d threads, median of %d steps after %d warm-up"):format(
  args.batch_size, ft.get_num_threads(), args.steps, args.warmup))
-- ---- (2) GPT-S peak memory ---------------------------------------------------------------------

local function gpt_peak(use_lora)
  full_gc()
  ft.manual_seed(1)
  local config = ft.models.config("gpt-s", { attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 })
  local model = ft.models.new(config)
  model:train()
  if use_lora then peft.lora(model, { target = { "c_attn" }, r = 8, alpha = 16 }) end
  local params = {}
  for i, e in ipairs(peft.trainable_parameters(model)) do params[i] = e[2] end
  local opt = ft.optim.AdamW(params, { lr = 1e-3, weight_decay = 0.1 })
  local B, T = 8, 256
  local w = ft.randint(1, config.vocab_size, { B, T + 1 })
  local x, y = w:narrow(2, 1, T):contiguous(), w:narrow(2, 2, T):contiguous()
  local function step()
    local logits = model(x).logits
    local loss = F.cross_entropy(logits:reshape(B * T, -1), y:reshape(-1))
    opt:zero_grad()
    loss:backward()
    opt:step()
    return loss:item()
  end
  step()                       -- creates the optimizer state
  opt:zero_grad()
  full_gc()
  local before = ft.live_bytes()
  ft.reset_peak_bytes()
  local t0 = ft.clock()
  step()
  local seconds = ft.clock() - t0
  local peak = ft.peak_bytes()
  local line = peft.summary(model, { print = false })
  return { before = before, peak = peak, seconds = seconds, summary = line }
end

-- Runs one configuration and prints its numbers on one line for the parent process.
local function gpt_only(which)
  local r = gpt_peak(which == "lora")
  print(("RESULT %d %d %.3f %s"):format(r.before, r.peak, r.seconds, r.summary))
end

if args.gpt_only then return gpt_only(args.gpt_only) end

local t_full, s_full = time_resnet(false)
full_gc()
local t_frozen, s_frozen = time_resnet(true)
full_gc()
print(("  %-44s %10s"):format("configuration", "ms/step"))
print(("  %-44s %10.1f   %s"):format("all parameters train", 1000 * t_full, s_full))
print(("  %-44s %10.1f   %s"):format("conv1+bn1+layer1+layer2 frozen (BN eval)", 1000 * t_frozen, s_frozen))
print(("  speed-up %.2fx"):format(t_full / t_frozen))

if args.skip_gpt then return end

print()
print("GPT-S training step, batch 8 x 256, AdamW: peak tensor memory (ft.peak_bytes), one process each")

-- The interpreter running this script (arg[-1]) measures each configuration afresh.
local function measure(which)
  local cmd = ("%s %s --gpt-only %s --threads %d"):format(arg[-1], arg[0], which, args.threads)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local before, peak, seconds, summary = out:match("RESULT (%d+) (%d+) ([%d.]+) ([^\n]*)")
  if not before then error("peft_freeze.lua: no result from: " .. cmd .. "\n" .. out) end
  return { before = tonumber(before), peak = tonumber(peak), seconds = tonumber(seconds), summary = summary }
end

local full, lora = measure("full"), measure("lora")
print(("  %-28s %14s %14s %10s"):format("configuration", "held (MiB)", "peak (MiB)", "s/step"))
for _, row in ipairs({ { "full fine-tuning", full }, { "LoRA r=8 on c_attn", lora } }) do
  local r = row[2]
  print(("  %-28s %14.1f %14.1f %10.2f   %s"):format(row[1], mib(r.before), mib(r.peak), r.seconds, r.summary))
end
print(("  peak ratio full / LoRA %.2fx"):format(full.peak / lora.peak))
