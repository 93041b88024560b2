-- How long ft.models.from_pretrained takes on a 1 GB folder: a Qwen2.5-0.5B-shaped model with
-- random bfloat16 weights is written once into --dir (about 1 GB), then loaded. The weights
-- are used from the file's copy-on-write mapping, so the load itself reads only headers; the
-- first forward pass reads the pages it touches, and is timed too.
--
--   ftlua scripts/bench/load_pretrained.lua [--dir /tmp/ftlua_qwen_bf16] [--threads N]
local ft = require "ft"
local argparse = require "argparse"

local parser = argparse("load_pretrained.lua", "Time from_pretrained on a 1 GB bfloat16 folder.")
parser:option("--dir", "Where the folder is written (once) and read from.", "/tmp/ftlua_qwen_bf16")
parser:option("--threads", "Threads."):convert(ft.recipe.integer({ min = 1 }))
local args = ft.recipe.parse(parser)
if args.threads then ft.set_num_threads(args.threads) end

local config = { architectures = { "Qwen2ForCausalLM" }, model_type = "qwen2", vocab_size = 151936,
  hidden_size = 896, num_hidden_layers = 24, num_attention_heads = 14, num_key_value_heads = 2,
  intermediate_size = 4864, tie_word_embeddings = true, max_position_embeddings = 32768,
  rms_norm_eps = 1e-6, rope_theta = 1000000.0 }

local weights = args.dir .. "/model.safetensors"
if not ft.fs.exists(weights) then
  local t = ft.clock()
  ft.models.save_pretrained(ft.models.new(config, nil, { dtype = "bfloat16" }), args.dir)
  collectgarbage()
  ft.empty_cache()
  print(("wrote %s in %.1f s"):format(args.dir, ft.clock() - t))
end
local f = assert(io.open(weights, "rb"))
local size = f:seek("end")
f:close()

local t = ft.clock()
local model = ft.models.from_pretrained(args.dir)
local load_s = ft.clock() - t
local ids = ft.randint(1, 1000, { 1, 16 })
t = ft.clock()
ft.no_grad(function() return model(ids) end)
local forward_s = ft.clock() - t
print(("from_pretrained of %.2f GB (%s weights): %.3f s; first forward of 16 tokens (pages read in): %.2f s")
  :format(size / 1e9, model.model.embed_tokens.weight:dtype(), load_s, forward_s))
print(("RESULT load_s=%.3f first_forward_s=%.2f gb=%.2f"):format(load_s, forward_s, size / 1e9))
