-- What merging a LoRA adapter into a quantised base costs in accuracy: the shipped byte-level
-- GPT (models/gpt_fortunes.h5, 4 blocks of 192) with its block layers (c_attn, c_proj, c_fc)
-- quantised, a LoRA adapter (r 8, alpha 16, on the same layers) trained for --steps steps on the
-- songs-poems fortunes (a category the model never saw), then merged both ways that
-- ft.peft.lora's merge offers for a quantised layer:
--   requantize  W' = quantize(dequant(W) + scale B A): the layer stays quantised
--   dequantize  W' = dequant(W) + scale B A as a float32 layer
-- Each is compared with the unmerged model (the quantised base with the adapter beside it) on
-- held-out windows: max and mean |logit difference|, and the mean next-token loss of each. For
-- scale, the quantised base against the float32 model, adapters off.
--
--   ftlua scripts/bench/quant_merge_accuracy.lua                 # nf4 and int8, 60 steps
--   ftlua scripts/bench/quant_merge_accuracy.lua --kind nf4 --steps 200
--
-- Needs Debian's fortunes package (the corpus). Machine-readable lines, one per kind and mode:
-- RESULT kind=<k> mode=<requantize|dequantize> max_abs=<x> mean_abs=<x> loss=<x> unmerged_loss=<x>
local ft = require "ft"
local argparse = require "argparse"
local lora = require "ft.peft.lora"

local positive = ft.recipe.integer({ min = 1 })
local parser = argparse("quant_merge_accuracy.lua", "Accuracy of LoRA merges into a quantised GPT.")
parser:option("--kind", "Quantisation kind (default: nf4 then int8)."):choices({ "nf4", "nf4_fp32", "int8" })
parser:option("--steps", "LoRA training steps.", "60"):convert(positive)
parser:option("--context", "Tokens per window.", "128"):convert(positive)
parser:option("--batch-size", "Windows per step (and held-out windows).", "4"):convert(positive)
parser:option("--checkpoint", "The pretrained GPT (default: the shipped models/gpt_fortunes.h5).")
parser:option("--threads", "Threads.", "2"):convert(positive)
parser:option("--seed", "Random seed.", "1"):convert(ft.recipe.integer({}))
local args = ft.recipe.parse(parser)
ft.set_num_threads(args.threads)

-- scripts/bench/../../models: the shipped checkpoints (ft.recipe.model_path is for scripts/).
local checkpoint = args.checkpoint or ((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../../models/gpt_fortunes.h5")
local TARGETS = { "c_attn", "c_proj", "c_fc" }
local T, B = args.context, args.batch_size

-- The songs-poems entries as 1-based byte ids, training windows from the first 90 %, held-out
-- windows from the rest.
local entries = ft.text.fortunes()["songs-poems"]
local bytes = table.concat(entries, "\n")
local split = math.floor(#bytes * 0.9)
local function windows(from, to, n, offset)
  local rows = {}
  for i = 1, n do
    local start = from + ((i - 1) * (T + 1) + offset) % (to - from - T - 1)
    local row = {}
    for j = 0, T do row[j + 1] = bytes:byte(start + j) + 1 end
    rows[i] = row
  end
  return ft.tensor(rows, { dtype = "int64" })
end
local held_out = windows(split + 1, #bytes, B, 0)

local function logits_and_loss(model, ids)
  return ft.no_grad(function()
    local out = model(ids, { labels = ids })
    return out.logits, out.loss:item()
  end)
end

local function diff(a, b)
  local d = (a - b):abs()
  return d:max():item(), d:mean():item()
end

local function base(kind)
  local model = ft.text.load_checkpoint(checkpoint)
  if kind then ft.quant.quantize(model, kind, { modules = ft.quant.default_modules(model) }) end
  model:eval()
  return model
end

for _, kind in ipairs(args.kind and { args.kind } or { "nf4", "int8" }) do
  ft.manual_seed(args.seed)
  local dense = base(nil)
  local quantized = base(kind)
  local q_logits, q_loss = logits_and_loss(quantized, held_out)
  local d_logits, d_loss = logits_and_loss(dense, held_out)
  local max_b, mean_b = diff(q_logits, d_logits)
  print(("%s base against the float32 model: max |logit diff| %.3g, mean %.3g; held-out loss %.4f (float32 %.4f)")
    :format(kind, max_b, mean_b, q_loss, d_loss))

  -- Train the adapter once, over the quantised base.
  ft.peft.lora(quantized, { target = TARGETS, r = 8, alpha = 16 })
  quantized:train()
  local params = {}
  for _, p in ipairs(quantized:parameters()) do
    if p.requires_grad then params[#params + 1] = p end
  end
  local opt = ft.optim.AdamW(params, { lr = 2e-3, weight_decay = 0 })
  local first, last
  for step = 1, args.steps do
    local ids = windows(1, split, B, step * 7919)
    local loss = quantized(ids, { labels = ids }).loss
    opt:zero_grad()
    loss:backward()
    opt:step()
    first = first or loss:item()
    last = loss:item()
  end
  quantized:eval()
  local adapter = {}
  for k, t in pairs(ft.peft.adapter_state_dict(quantized, "default")) do adapter[k] = t:clone() end
  local ref, ref_loss = logits_and_loss(quantized, held_out)
  print(("  LoRA trained %d steps: training loss %.3f -> %.3f, held-out loss %.4f (quantised base %.4f)"):format(
    args.steps, first, last, ref_loss, q_loss))

  for _, mode in ipairs({ "requantize", "dequantize" }) do
    local m = base(kind)
    ft.peft.lora(m, { target = TARGETS, r = 8, alpha = 16 })
    ft.no_grad(function()
      local own = m:state_dict({ keep_vars = true })
      for k, t in pairs(adapter) do own[k]:copy_(t) end
    end)
    m:eval()
    local same_max = diff(logits_and_loss(m, held_out), ref)
    assert(same_max == 0, "the copied adapter computes as the trained one")
    lora.merge_and_unload(m, { quantized = mode })
    local logits, loss = logits_and_loss(m, held_out)
    local max_d, mean_d = diff(logits, ref)
    print(("  %-10s merge: max |logit diff| %.3g, mean %.3g; held-out loss %.4f (unmerged %.4f); %d quantised layers, "
      .. "weights %.2f MB"):format(mode, max_d, mean_d, loss, ref_loss, #ft.quant.modules(m), ft.quant.nbytes(m) / 1e6))
    print(("RESULT kind=%s mode=%s max_abs=%.4g mean_abs=%.4g loss=%.5f unmerged_loss=%.5f"):format(kind, mode, max_d,
      mean_d, loss, ref_loss))
  end
end
