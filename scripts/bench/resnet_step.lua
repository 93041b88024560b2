-- Times ResNet-S training steps (forward + cross-entropy + backward + AdamW step) on random
-- Fashion-MNIST-shaped input (1x28x28 images, 10 classes).
--
--   ftlua scripts/bench/resnet_step.lua --threads 2                    # batch 128, every layer trains
--   ftlua scripts/bench/resnet_step.lua --mode frozen --steps 5        # conv1, bn1, layer1, layer2 frozen
--   ftlua scripts/bench/resnet_step.lua --gradient-checkpointing       # stages recomputed in backward
--
-- The model is ft.models.new("resnet-s"); scripts/bench/resnet_step_torch.py is the same step in
-- PyTorch. --mode frozen freezes conv1 + bn1 + layer1 + layer2 with ft.peft.freeze (their
-- BatchNorm layers keep their running statistics, as scripts/bench/peft_freeze.lua does), so
-- backward stops at layer3 and AdamW updates the rest. --gradient-checkpointing checkpoints the
-- stages (layer1 .. layer3, model:gradient_checkpointing_enable()). Warm-up steps are not timed.
-- FT_CONV=gemm | dnnl | winograd picks the convolution path (see core/ops/conv.c). --shapes
-- prints the state_dict's names and shapes (scripts/bench/compare_resnet.sh checks them against
-- PyTorch's).
-- The last line is machine-readable:
--   RESULT samples_per_sec=<n> ms_per_step=<mean ms> median_ms=<ms> peak_rss_mb=<MiB>
local ft = require "ft"
local argparse = require "argparse"

local F = ft.nn.functional

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("resnet_step.lua", "Time ResNet-S training steps.")
parser:option("--mode", "full: every parameter trains; frozen: conv1, bn1, layer1, layer2 frozen.", "full")
  :choices({ "full", "frozen" })
parser:option("--batch-size", "Images per step.", "128"):convert(positive)
parser:option("--steps", "Timed steps.", "10"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "2"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:flag("--gradient-checkpointing", "Recompute each stage's activations in backward.")
parser:flag("--shapes", "Print \"name shape\" of every state_dict entry (as the PyTorch twin's --shapes) and exit.")
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

-- The process's peak resident memory in MiB (ft.resident_bytes: Linux's VmHWM).
local function peak_rss_mb() return select(2, ft.resident_bytes()) / 2 ^ 20 end

local B = args.batch_size
local model = ft.models.new("resnet-s")
if args.shapes then
  local sd = model:state_dict()
  local names = {}
  for name in pairs(sd) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local shape = sd[name]:shape()
    print(name, #shape > 0 and table.concat(shape, "x") or "scalar")
  end
  return
end
model:train()
if args.gradient_checkpointing then model:gradient_checkpointing_enable() end
if args.mode == "frozen" then ft.peft.freeze(model, { "^conv1$", "^bn1$", "^layer1$", "^layer2$" }) end
local params = {}
for i, e in ipairs(ft.peft.trainable_parameters(model)) do params[i] = e[2] end
local opt = ft.optim.AdamW(params, { lr = 1e-3, weight_decay = 0.01 })

local x = ft.randn(B, 1, 28, 28)
local y = ft.randint(1, 10, { B }, { dtype = "int64" })

local function step()
  local loss = F.cross_entropy(model(x), y)
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss:item()   -- reads the loss back, as a training loop does
end

local n_train = 0
for _, p in ipairs(params) do n_train = n_train + p:numel() end
print(("ftlua ResNet-S (%s%s): %d parameters, %d training, batch %d, %d threads, conv path %s"):format(args.mode,
  args.gradient_checkpointing and ", gradient checkpointing" or "", model:num_parameters(), n_train, B,
  ft.get_num_threads(), os.getenv("FT_CONV") or "default"))
for _ = 1, args.warmup do step() end
local times = {}
local loss
for i = 1, args.steps do
  local t0 = ft.clock()
  loss = step()
  times[i] = ft.clock() - t0
end
local total = 0
for _, t in ipairs(times) do total = total + t end
table.sort(times)
local median = times[(#times + 1) // 2]
local rss = peak_rss_mb()
print(("%d steps: mean %.1f ms/step, median %.1f ms/step, %.1f images/s (loss %.3f), peak RSS %.0f MiB"):format(
  args.steps, 1000 * total / args.steps, 1000 * median, B * args.steps / total, loss, rss))
print(("RESULT samples_per_sec=%.1f ms_per_step=%.1f median_ms=%.1f peak_rss_mb=%.0f"):format(B * args.steps / total,
  1000 * total / args.steps, 1000 * median, rss))
