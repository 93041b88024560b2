-- Times LoRA training steps on a Qwen2.5-0.5B-shaped decoder with random weights (vocab
-- 151,936, hidden 896, 24 layers, 14 heads, 2 key/value heads, intermediate 4,864, tied
-- embeddings): LoRA r 16 (alpha 32) on q, k, v, o, gate, up and down, AdamW on the adapter,
-- batch 1 x 256 tokens, the next-token loss over every position.
--
--   ftlua scripts/bench/qwen_lora_step.lua --threads 2
--   ftlua scripts/bench/qwen_lora_step.lua --layers 2 --steps 2     # a quick look
--   ftlua scripts/bench/qwen_lora_step.lua --gradient-checkpointing  # blocks recomputed in backward
--   ftlua scripts/bench/qwen_lora_step.lua --quantize nf4             # an NF4 base under the adapter
-- With --quantize the peak RSS still holds the float32 model built first (quantising while
-- loading is still to come); the resident size after the step is reported too.
--
-- scripts/bench/qwen_lora_step_torch.py is the same step in PyTorch. Warm-up steps are not
-- timed. The last line is machine-readable:
-- RESULT tokens_per_sec=<n> ms_per_step=<ms> peak_rss_mb=<MiB> build_s=<s>
local ft = require "ft"
local argparse = require "argparse"

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("qwen_lora_step.lua", "Time LoRA steps on a Qwen2.5-0.5B-shaped decoder.")
parser:option("--context", "Tokens per sequence.", "256"):convert(positive)
parser:option("--layers", "Decoder layers (24 in Qwen2.5-0.5B).", "24"):convert(positive)
parser:option("--r", "LoRA rank.", "16"):convert(positive)
parser:option("--steps", "Timed steps.", "5"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "1"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:flag("--gradient-checkpointing", "Recompute each decoder block's activations in backward.")
parser:option("--quantize", "Quantise the frozen projections first (nf4 or int8; ftlua only: the PyTorch twin has "
  .. "no such base)."):choices({ "nf4", "int8" })
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

local function peak_rss_mb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("a"):match("VmHWM:%s*(%d+)"))
  f:close()
  return kb / 1024
end

local t_build = ft.clock()
local model = ft.models.new({
  architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 151936, hidden_size = 896,
  intermediate_size = 4864, num_hidden_layers = args.layers, num_attention_heads = 14, num_key_value_heads = 2,
  max_position_embeddings = 32768, rope_theta = 1000000.0, rms_norm_eps = 1e-6, tie_word_embeddings = true,
  hidden_act = "silu", attention_dropout = 0.0,
})
local targets = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
if args.quantize then
  ft.quant.quantize(model, args.quantize, { modules = targets })
  collectgarbage()   -- the float32 weights the quantised ones replace
  collectgarbage()
end
ft.peft.lora(model, { target = targets, r = args.r, alpha = 2 * args.r })
local build_s = ft.clock() - t_build
model:train()
if args.gradient_checkpointing then model:gradient_checkpointing_enable() end
local params = {}
for _, p in ipairs(model:parameters()) do
  if p.requires_grad then params[#params + 1] = p end
end
local opt = ft.optim.AdamW(params, { lr = 1e-4, weight_decay = 0 })

local T = args.context
local ids = ft.randint(1, 151936, { 1, T })

local function step()
  local loss = model(ids, { labels = ids }).loss
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss:item()
end

print(("ftlua Qwen2.5-0.5B-shaped: %d layers%s, %d parameters (%d trainable), 1 x %d tokens, %d threads, built in %.1f s")
  :format(args.layers, args.gradient_checkpointing and " (gradient checkpointing)" or "", model:num_parameters(), #params > 0 and (function()
    local n = 0
    for _, p in ipairs(params) do n = n + p:numel() end
    return n
  end)() or 0, T, ft.get_num_threads(), build_s))
for _ = 1, args.warmup do step() end
local times, loss = {}, nil
for i = 1, args.steps do
  local t0 = ft.clock()
  loss = step()
  times[i] = ft.clock() - t0
end
table.sort(times)
local median = times[(#times + 1) // 2]
local function rss_mb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)"))
  f:close()
  return kb / 1024
end
print(("loss %.4f, median step %.1f ms, %.1f tokens/s, peak RSS %.0f MiB, RSS now %.0f MiB, weights %.0f MiB")
  :format(loss, 1000 * median, T / median, peak_rss_mb(), rss_mb(), ft.quant.nbytes(model) / 2 ^ 20))
print(("RESULT tokens_per_sec=%.2f ms_per_step=%.1f peak_rss_mb=%.0f build_s=%.2f"):format(T / median,
  1000 * median, peak_rss_mb(), build_s))
