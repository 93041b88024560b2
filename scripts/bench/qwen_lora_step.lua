-- Times LoRA training steps on a decoder with random weights, by default Qwen2.5-0.5B-shaped
-- (vocab 151,936, hidden 896, 24 layers, 14 heads, 2 key/value heads, intermediate 4,864, tied
-- embeddings): LoRA r 16 (alpha 32) on q, k, v, o, gate, up and down, AdamW on the adapter,
-- batch 1 x 256 tokens, the next-token loss over every position. --model mistral-7b takes
-- Mistral-7B's shape instead (vocab 32,000, hidden 4,096, 32 layers, 32 heads, 8 key/value
-- heads, intermediate 14,336, untied lm_head).
--
--   ftlua scripts/bench/qwen_lora_step.lua --threads 2
--   ftlua scripts/bench/qwen_lora_step.lua --layers 2 --steps 2     # a quick look
--   ftlua scripts/bench/qwen_lora_step.lua --gradient-checkpointing  # blocks recomputed in backward
--   ftlua scripts/bench/qwen_lora_step.lua --quantize nf4             # an NF4 base under the adapter
--   ftlua scripts/bench/qwen_lora_step.lua --quantize nf4 --gradient-checkpointing --skip-logits
--   ftlua scripts/bench/qwen_lora_step.lua --model mistral-7b --quantize nf4 --context 128
-- With --quantize the model is built by ft.models.new(config, nil, {quantize = kind}): each
-- projection is initialised, quantised and freed in turn, so the float32 model never exists
-- (the embeddings, lm_head, norms and biases stay float32, or take --dtype). A memory breakdown follows: the
-- weights by kind, the adapter with its gradients and AdamW state, the peak of live tensor
-- bytes in a step above what is held between steps, and the resident size after the build,
-- after the steps, and once the allocator's cache of freed buffers is emptied. --skip-logits
-- computes the loss a chunk of positions at a time (model(ids, {labels =, skip_logits = true})):
-- the [T, vocab] logits and their gradient never exist whole (2 x 148 MiB for Qwen's vocab).
--
-- scripts/bench/qwen_lora_step_torch.py is the same step in PyTorch (the Qwen shape, float32).
-- Warm-up steps are not timed. The last line is machine-readable:
-- RESULT tokens_per_sec=<n> ms_per_step=<ms> peak_rss_mb=<MiB> build_s=<s> weight_mb=<MiB>
-- gflops=<the step's matrix-product work per second>
local ft = require "ft"
local argparse = require "argparse"

local SHAPES = {
  ["qwen2.5-0.5b"] = {
    name = "Qwen2.5-0.5B", layers = 24,
    config = { architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 151936,
      hidden_size = 896, intermediate_size = 4864, num_attention_heads = 14, num_key_value_heads = 2,
      max_position_embeddings = 32768, rope_theta = 1000000.0, rms_norm_eps = 1e-6, tie_word_embeddings = true,
      hidden_act = "silu", attention_dropout = 0.0 },
  },
  ["mistral-7b"] = {
    name = "Mistral-7B", layers = 32,
    config = { architectures = { "MistralForCausalLM" }, model_type = "mistral", vocab_size = 32000,
      hidden_size = 4096, intermediate_size = 14336, num_attention_heads = 32, num_key_value_heads = 8,
      max_position_embeddings = 32768, rope_theta = 10000.0, rms_norm_eps = 1e-5, tie_word_embeddings = false,
      hidden_act = "silu", attention_dropout = 0.0 },
  },
}

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("qwen_lora_step.lua",
  "Time LoRA steps on a Qwen2.5-0.5B-shaped (or Mistral-7B-shaped) decoder.")
parser:option("--model", "The decoder's shape.", "qwen2.5-0.5b"):choices({ "qwen2.5-0.5b", "mistral-7b" })
parser:option("--context", "Tokens per sequence.", "256"):convert(positive)
parser:option("--layers", "Decoder layers (default: the model's, 24 in Qwen2.5-0.5B, 32 in Mistral-7B).")
  :convert(positive)
parser:option("--r", "LoRA rank.", "16"):convert(positive)
parser:option("--steps", "Timed steps.", "5"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "1"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:flag("--gradient-checkpointing", "Recompute each decoder block's activations in backward.")
parser:flag("--skip-logits", "Compute the loss in chunks of positions, without the whole logits (ftlua only).")
parser:option("--quantize", "Quantise the frozen projections while building (nf4, nf4_fp32 or int8; ftlua only: "
  .. "the PyTorch twin has no such base)."):choices({ "nf4", "nf4_fp32", "int8" })
parser:option("--dtype", "The frozen base's dtype (ftlua only: the PyTorch twin is float32; built one weight in "
  .. "float32 at a time); with --quantize, that of the weights left unquantised (embedding, norms).", "float32"):choices({ "float32", "bfloat16", "float16" })
parser:option("--matmul-precision", "How products with the bfloat16 or quantised base multiply "
  .. "(ft.set_matmul_precision; ftlua only).", "float32"):choices({ "float32", "bfloat16" })
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)
ft.set_matmul_precision(args.matmul_precision)

local function peak_rss_mb() return select(2, ft.resident_bytes()) / 2 ^ 20 end
local function rss_mb() return (ft.resident_bytes()) / 2 ^ 20 end
local function mib(bytes) return bytes / 2 ^ 20 end

local shape = SHAPES[args.model]
local config = ft.models.copy_config(shape.config, { num_hidden_layers = args.layers or shape.layers })
local layers = config.num_hidden_layers
local targets = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }

local t_build = ft.clock()
local model = ft.models.new(config, nil, { quantize = args.quantize, modules = args.quantize and targets,
  dtype = args.dtype })
local quantized_s = ft.clock() - t_build
ft.peft.lora(model, { target = targets, r = args.r, alpha = 2 * args.r })
local build_s = ft.clock() - t_build
local rss_built, hwm_built = rss_mb(), peak_rss_mb()
model:train()
if args.gradient_checkpointing then model:gradient_checkpointing_enable() end
local params, n_trainable = {}, 0
for _, p in ipairs(model:parameters()) do
  if p.requires_grad then
    params[#params + 1] = p
    n_trainable = n_trainable + p:numel()
  end
end
local opt = ft.optim.AdamW(params, { lr = 1e-4, weight_decay = 0 })

local T = args.context
local ids = ft.randint(1, config.vocab_size, { 1, T })

local function step()
  local loss = model(ids, { labels = ids, skip_logits = args.skip_logits }).loss
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss:item()
end

local mem = ft.quant.memory(model)
print(("ftlua %s-shaped: %d layers%s%s, %d parameters (%d trainable), 1 x %d tokens, %d threads, built in %.1f s"
  .. " (model %.1f s, LoRA %.1f s)")
  :format(shape.name, layers, (args.gradient_checkpointing and " (gradient checkpointing)" or "")
    .. (args.skip_logits and " (loss without the logits)" or ""),
    args.quantize and ", " .. args.quantize .. " base" or "", mem.quantized_params + mem.dense_params, n_trainable,
    T, ft.get_num_threads(), build_s, quantized_s, build_s - quantized_s))
local kernels = ft.kernels()
print(("kernels: OpenBLAS %s; matmul precision %s (bfloat16 products: %s)"):format(kernels.blas,
  kernels.matmul_precision, kernels.matmul_bf16 or "none"))
for _ = 1, args.warmup do step() end
collectgarbage()
local held = ft.live_bytes()   -- weights, adapter, gradients, AdamW state
ft.reset_peak_bytes()
local times, loss = {}, nil
for i = 1, args.steps do
  local t0 = ft.clock()
  loss = step()
  times[i] = ft.clock() - t0
end
local step_peak = ft.peak_bytes()
table.sort(times)
local median = times[(#times + 1) // 2]
local rss_after = rss_mb()
collectgarbage()
collectgarbage()
ft.empty_cache()
local rss_uncached = rss_mb()

-- The weights by kind (the embedding and lm_head apart), the adapter's tensors.
local embed_b, head_b, other_b = 0, 0, 0
local seen = {}
for name, p in model:named_parameters() do
  if not p.requires_grad and not seen[p] then
    seen[p] = true
    local b = p:nbytes()
    if name:find("embed_tokens", 1, true) then embed_b = embed_b + b
    elseif name:find("lm_head", 1, true) then head_b = head_b + b
    else other_b = other_b + b end
  end
end
local adapter_b = 4 * n_trainable

-- The step's matrix-product work (multiply-adds x 2), from the shape: forward, every frozen
-- projection and lm_head once more for its input gradient (frozen weights get none),
-- attention's two products forward and four backward (full T x T, as computed), and each
-- adapter's two small products three times (forward, input and weight gradients).
local function step_gflop()
  local h, i, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, layers
  local kv = config.num_key_value_heads * (h // config.num_attention_heads)
  local proj = { q_proj = { h, h }, k_proj = { h, kv }, v_proj = { h, kv }, o_proj = { h, h }, gate_proj = { h, i },
    up_proj = { h, i }, down_proj = { i, h } }
  local dense, lora = h * V, 0
  for _, name in ipairs(targets) do
    local io = proj[name]
    dense = dense + L * io[1] * io[2]
    lora = lora + L * args.r * (io[1] + io[2])
  end
  local attention = L * 2 * T * T * h
  return 2 * (2 * T * dense + 3 * attention + 3 * T * lora) / 1e9
end
local gflop = step_gflop()
print(("loss %.4f, median step %.1f ms, %.1f tokens/s, %.1f GFLOP a step at %.1f GFLOP/s, peak RSS %.0f MiB, RSS "
  .. "now %.0f MiB, weights %.0f MiB"):format(loss, 1000 * median, T / median, gflop, gflop / median, peak_rss_mb(),
  rss_after, mib(ft.quant.nbytes(model))))
print("memory (MiB):")
print(("  weights: quantised %.0f (%d layers' projections, %.3f bytes a weight), embedding %.0f%s, lm_head %.0f, "
  .. "other weights %.0f"):format(mib(mem.quantized_bytes), #ft.quant.modules(model), mem.bytes_per_param,
  mib(embed_b), config.tie_word_embeddings and " (tied to lm_head)" or "", mib(head_b), mib(other_b)))
print(("  adapter: %.0f parameters + %.0f gradients + %.0f AdamW state"):format(mib(adapter_b), mib(adapter_b),
  mib(2 * adapter_b)))
print(("  live tensors: %.0f held between steps, peak %.0f in a step (%.0f above: activations, logits and their "
  .. "gradient)"):format(mib(held), mib(step_peak), mib(step_peak - held)))
print(("  RSS: %.0f after the build (peak %.0f), %.0f after the steps, %.0f with the allocator cache emptied; "
  .. "peak %.0f"):format(rss_built, hwm_built, rss_after, rss_uncached, peak_rss_mb()))
print(("RESULT tokens_per_sec=%.2f ms_per_step=%.1f peak_rss_mb=%.0f build_s=%.2f weight_mb=%.0f gflops=%.1f")
  :format(T / median, 1000 * median, peak_rss_mb(), build_s, mib(ft.quant.nbytes(model)), gflop / median))
