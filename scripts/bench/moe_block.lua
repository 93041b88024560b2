-- Times one Mixtral sparse MoE block (ft.models.mixtral.SparseMoeBlock): forward + backward of
-- sum(block(x) * g) for a fixed random g, to the input and to the gate's and every expert's weights.
--
--   ftlua scripts/bench/moe_block.lua --threads 2                         # moe-s, per-expert, grouped
--   ftlua scripts/bench/moe_block.lua --threads 2 --layout fused          # stacked weights, F.grouped_linear
--   ftlua scripts/bench/moe_block.lua --threads 2 --path dense            # every expert on every token
--   ftlua scripts/bench/moe_block.lua --threads 2 --shape moe-m --steps 3
--   ftlua scripts/bench/moe_block.lua --save /tmp/moe.safetensors --batch-size 2 --context 32
--       # then: /usr/bin/python3 scripts/bench/moe_block_torch.py --check /tmp/moe.safetensors
--
-- scripts/bench/compare_moe_block.sh runs this and its PyTorch twin (moe_block_torch.py) side by side.
--
-- Shapes (--shape): moe-s is the "moe-s" preset's block (hidden 384, intermediate 1024, 4 experts,
-- top 2: GPT-S-sized); moe-m is hidden 1024, intermediate 2816, 8 experts, top 2. x is
-- [batch, context, hidden] (default 8 x 256 = 2048 tokens), drawn from normal(0, 1), as g.
-- Every weight (gate and experts) is drawn from normal(0, 0.02) (the preset's initializer_range)
-- so that both sides route alike (balanced on average); the rows each expert gets are printed.
-- Paths (--path): grouped is block(x) (each expert runs on its own tokens: index_select, the
-- experts, one index_add); dense is block:forward_dense(x) (every expert on every token, weighted
-- by the renormalised top-k routing matrix; same function, top_k/E of the expert work useful).
-- Layouts (--layout): per_expert (HF's ModuleList of w1/w2/w3 Linears) or fused (gate_up_proj
-- [E,2I,H], down_proj [E,H,I], two F.grouped_linear calls). Warm-up steps are not timed; a step
-- ends by reading the loss back. Before each step the gradients are dropped (set to none).
--
-- --save FILE writes one forward + backward of both paths (no timing) with the block's weights:
-- x, g, the block's state dict under its own names, y, x.grad, "<param>.grad", and the same for
-- the dense path prefixed "dense.", for moe_block_torch.py --check.
--
-- The last line is machine-readable:
-- RESULT tokens_per_sec=<n> ms_per_step=<median ms> ms_mean=<ms> step_cpu_ms=<ms> gflops=<n> peak_rss_mb=<MiB>
--   base_rss_mb=<MiB>
-- (step_cpu_ms: the process's CPU time, all threads, per timed step, mean; on a shared machine
-- it moves less than the wall time. gflops: the GEMMs' work (gate and experts, forward and both
-- gradients: 3 x the forward's 2 x rows x in x out) over the median step. base_rss: resident
-- memory after building the block and the inputs, before the first step).
local ft = require "ft"
local argparse = require "argparse"
local mixtral = require "ft.models.mixtral"

local SHAPES = {
  ["moe-s"] = {},   -- the preset as it is: hidden 384, intermediate 1024, 4 experts, top 2
  ["moe-m"] = { hidden_size = 1024, intermediate_size = 2816, num_local_experts = 8, num_experts_per_tok = 2,
    num_attention_heads = 8, num_key_value_heads = 2 },
}

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("moe_block.lua", "Time a Mixtral sparse MoE block, forward + backward.")
parser:option("--shape", "moe-s (hidden 384, 4 experts) or moe-m (hidden 1024, 8 experts).", "moe-s")
  :choices({ "moe-s", "moe-m" })
parser:option("--layout", "Experts' layout: per_expert or fused.", "per_expert"):choices({ "per_expert", "fused" })
parser:option("--path", "grouped (block(x)) or dense (block:forward_dense(x)).", "grouped"):choices({ "grouped", "dense" })
parser:option("--batch-size", "Sequences.", "8"):convert(positive)
parser:option("--context", "Tokens per sequence.", "256"):convert(positive)
parser:option("--steps", "Timed steps.", "10"):convert(positive)
parser:option("--warmup", "Untimed steps first.", "2"):convert(ft.recipe.integer({ min = 0 }))
parser:option("--threads", "Threads (default: all cores)."):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
parser:option("--save", "Write one forward + backward of both paths to this safetensors file and exit.")
local args = ft.recipe.parse(parser)

if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)

local overrides = { experts_layout = args.layout }
for k, v in pairs(SHAPES[args.shape]) do overrides[k] = v end
local c = mixtral.MixtralForCausalLM.read_config(mixtral.config("moe-s", overrides))
assert(c.gated_act, "read_config gave no activation (c.gated_act)")
local block = mixtral.SparseMoeBlock(c)
block:train()   -- router_jitter_noise is 0 in the preset: training mode adds nothing
ft.no_grad(function()
  for _, p in ipairs(block:parameters()) do ft.nn.init.normal_(p, 0, c.initializer_range) end
end)

local B, T, H = args.batch_size, args.context, c.hidden_size
local N = B * T
local x = ft.randn(B, T, H)
x.requires_grad = true
local g = ft.randn(B, T, H)

local function forward(path)
  if path == "dense" then return block:forward_dense(x) end
  return block(x)
end

local function drop_grads()
  block:zero_grad()
  x.grad = nil
end

local function step()
  drop_grads()
  local y, logits = forward(args.path)
  local yc <close> = y
  local lc <close> = logits
  local prod <close> = y * g
  local loss <close> = prod:sum()
  loss:backward()
  return loss:item()
end

-- The number of rows each expert gets for x (the router's top-k choice), as "a/b/c/d".
local function expert_rows()
  local counts = {}
  for e = 1, c.num_local_experts do counts[e] = 0 end
  ft.no_grad(function()
    local p = block.gate(x:reshape(N, H)):softmax(2)
    for _, chosen in ipairs(mixtral.topk(p, c.num_experts_per_tok)) do
      for _, e in ipairs(chosen) do counts[e] = counts[e] + 1 end
    end
  end)
  return table.concat(counts, "/")
end

-- The process's resident memory in MiB, now and at its peak (ft.resident_bytes).
local function rss_mb() return (ft.resident_bytes()) / 2 ^ 20 end
local function peak_rss_mb() return select(2, ft.resident_bytes()) / 2 ^ 20 end

if args.save then
  local out = { x = x:detach():clone(), g = g:clone() }
  for name, t in pairs(block:state_dict()) do out[name] = t:clone() end
  for _, path in ipairs({ "grouped", "dense" }) do
    local pre = path == "dense" and "dense." or ""
    drop_grads()
    local y = forward(path)
    ;(y * g):sum():backward()
    out[pre .. "y"] = y:detach():clone()
    out[pre .. "x.grad"] = x.grad:clone()
    for name, p in block:named_parameters() do out[pre .. name .. ".grad"] = p.grad:clone() end
  end
  ft.safetensors.save(args.save, out)
  print(("wrote %s: %s layout, %s shape, %d tokens, expert rows %s"):format(args.save, args.layout, args.shape, N,
    expert_rows()))
  os.exit(0)
end

local kernels = ft.kernels()
print(("ftlua MoE block %s (hidden %d, intermediate %d, %d experts, top %d), %s layout, %s path, x [%d,%d,%d], "
  .. "%d threads, OpenBLAS %s"):format(args.shape, H, c.intermediate_size, c.num_local_experts,
  c.num_experts_per_tok, args.layout, args.path, B, T, H, ft.get_num_threads(), kernels.blas or "?"))
print(("expert rows (of %d tokens x top %d): %s"):format(N, c.num_experts_per_tok, expert_rows()))
local base = rss_mb()
for _ = 1, args.warmup do step() end
local times = {}
local loss
local cpu0 = os.clock()   -- the process's CPU time, all threads
for i = 1, args.steps do
  local t0 = ft.clock()
  loss = step()
  times[i] = ft.clock() - t0
end
local cpu = (os.clock() - cpu0) / args.steps
-- The matrix work of a step: forward + backward (input and weight gradients: twice the forward)
-- of the gate GEMM and the experts' three GEMMs on N * top_k rows (grouped) or N * E (dense).
local E, I = c.num_local_experts, c.intermediate_size
local rows = args.path == "dense" and N * E or N * c.num_experts_per_tok
local flops = 3 * (2 * N * H * E + 3 * 2 * rows * H * I)
local total = 0
for _, t in ipairs(times) do total = total + t end
table.sort(times)
local median = times[(#times + 1) // 2]
print(("%d steps: mean %.1f ms, median %.1f ms (min %.1f, max %.1f), %.0f tokens/s at the median (loss %.4f)")
  :format(args.steps, 1000 * total / args.steps, 1000 * median, 1000 * times[1], 1000 * times[#times], N / median, loss))
print(("RESULT tokens_per_sec=%.1f ms_per_step=%.2f ms_mean=%.2f step_cpu_ms=%.2f gflops=%.1f peak_rss_mb=%.0f "
  .. "base_rss_mb=%.0f"):format(N / median, 1000 * median, 1000 * total / args.steps, 1000 * cpu, flops / median / 1e9,
  peak_rss_mb(), base))
