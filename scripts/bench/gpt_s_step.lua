-- Times GPT-S training steps (forward + backward + AdamW step) on random byte ids.
--
--   ftlua scripts/bench/gpt_s_step.lua --threads 2                  # batch 8 x context 256
--   ftlua scripts/bench/gpt_s_step.lua --batch-size 4 --context 128 --steps 5
--   ftlua scripts/bench/gpt_s_step.lua --lora 8                     # LoRA r 8, alpha 16, the rest frozen
--
-- Dropout is 0 so that the work matches scripts/bench/gpt_s_step_torch.py, the same step in
-- PyTorch. The loss is the mean cross-entropy of the logits at every position against the
-- next bytes, as scripts/pretrain_text.lua trains. With --lora R every projection of the blocks
-- (c_attn, c_proj, c_fc) gets a LoRA adapter of rank R and only the adapters train. Warm-up
-- steps are not timed.
-- The last line is machine-readable: RESULT tokens_per_sec=<n> ms_per_step=<ms> peak_rss_mb=<MiB>
local ft = require "ft"
local argparse = require "argparse"

local F = ft.nn.functional

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("gpt_s_step.lua", "Time GPT-S training steps.")
parser:option("--batch-size", "Sequences per step.", "8"):convert(positive)
parser:option("--context", "Tokens per sequence.", "256"):convert(positive)
parser:option("--steps", "Timed steps.", "10"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "2"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:option("--lora", "LoRA rank on c_attn, c_proj and c_fc (alpha 2 x rank), the rest frozen (default: full "
  .. "fine-tuning)."):convert(positive)
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

local B, T = args.batch_size, args.context
local config = ft.models.config("gpt-s", { n_positions = math.max(T, 256), attn_pdrop = 0, embd_pdrop = 0,
  resid_pdrop = 0 })
local model = ft.models.new(config)
if args.lora then ft.peft.lora(model, { target = { "c_attn", "c_proj", "c_fc" }, r = args.lora, alpha = 2 * args.lora }) end
model:train()
local trainable = {}
for _, p in ipairs(model:parameters()) do
  if p.requires_grad then trainable[#trainable + 1] = p end
end
local opt = ft.optim.AdamW(trainable, { lr = 1e-3, weight_decay = 0.1 })

-- Fixed random windows: x and its next bytes y.
local w = ft.randint(1, config.vocab_size, { B, T + 1 })
local x, y = w:narrow(2, 1, T):contiguous(), w:narrow(2, 2, T):contiguous()

local function step()
  local logits = model(x).logits
  local loss = F.cross_entropy(logits:reshape(B * T, -1), y:reshape(-1))
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss:item()   -- reads the loss back, as a training loop does
end

-- The process's peak resident memory in MiB (ft.resident_bytes: Linux's VmHWM).
local function peak_rss_mb() return select(2, ft.resident_bytes()) / 2 ^ 20 end

print(("ftlua GPT-S: %d parameters (%d training%s), batch %d x context %d, %d threads"):format(model:num_parameters(),
  model:num_parameters({ trainable = true }), args.lora and (", LoRA r " .. args.lora) or "", B, T,
  ft.get_num_threads()))
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
print(("%d steps: mean %.1f ms/step, median %.1f ms/step, %.0f tokens/s (loss %.3f)"):format(args.steps,
  1000 * total / args.steps, 1000 * median, B * T * args.steps / total, loss))
print(("RESULT tokens_per_sec=%.1f ms_per_step=%.1f peak_rss_mb=%.0f"):format(B * T * args.steps / total,
  1000 * total / args.steps, peak_rss_mb()))
