-- Adapts the pretrained byte-level GPT (models/gpt_fortunes.h5) to text it has not seen: a
-- fortune category held out of pretraining, or your own data, with full fine-tuning or a
-- parameter-efficient method, and reports held-out perplexity against trainable parameters.
--
--   ftlua scripts/finetune_text.lua --method lora                 # one method, ~1-2 min on 2 cores
--   ftlua scripts/finetune_text.lua --compare --threads 2         # all six methods, ~10 min
--   ftlua scripts/finetune_text.lua --data chat.jsonl --method lora --prompt "Tell me a joke"
--   ftlua scripts/finetune_text.lua --method lora --resume        # continue an interrupted run
--   ftlua scripts/finetune_text.lua --model ~/models/Qwen2.5-0.5B-Instruct --data chat.jsonl --method lora --stream
--
-- --model DIR fine-tunes a HuggingFace folder instead (config.json, model.safetensors,
-- tokenizer.json, tokenizer_config.json, generation_config.json; GPT-2, Llama, Qwen2,
-- Mistral): its tokenizer and chat template encode the data (only the assistant's replies and
-- their end-of-turn tokens train), --context counts tokens, perplexity is per token, samples
-- are generated with the chat template and generation_config.json (--stream prints them as
-- they come), LoRA adapts every projection of the attention and MLP blocks (PEFT's names),
-- and the adapter is saved in PEFT's layout with base_model_name_or_path and task_type set;
-- full fine-tuning saves an HF folder (with the tokenizer files) that from_pretrained loads.
-- Methods with --model: lora and full.
--
-- Methods: full (every weight), lora (c_attn, c_proj, c_fc; --r, --alpha), ia3 (GPT-2's
-- defaults: keys, values and the MLP's inner activation), loreft and direft (an
-- intervention on every block's output at --positions, rank --reft-rank) and prompt (a soft
-- prompt of --virtual-tokens embeddings). Each method starts from the same pretrained weights
-- and the same seed. ReFT edits the first 7 positions by default, as the ReFT paper edits a
-- few prompt positions; --positions f192 edits every position of a 192-byte window and lowers
-- perplexity much more, but generation (with a key/value cache) edits only the prompt.
--
-- Data: --category (default songs-poems; computers, politics and science are the other
-- categories pretraining left out), or --data FILE: a plain text file (entries separated by
-- "%" lines or blank lines), or JSONL with {"prompt", "completion"} pairs or chat records
-- {"messages": [{"role", "content"}, ...]}. Only the completions (the assistant messages)
-- are in the loss; prompts are context. Examples are split 80/10/10 into train, validation
-- and test by a seeded hash of their text (ft.text.split).
--
-- Recipe: random batches of examples (windows of at most --context bytes, padded), AdamW,
-- linear warmup over 5% of the steps then cosine decay to 10% of the learning rate, gradient
-- norm clipped at 1. Validation perplexity every --eval-every steps chooses the step whose
-- weights are kept (early stopping after --patience evaluations without improvement); the
-- test split is only scored at the end. Perplexity is per byte: exp(mean next-byte loss in
-- nats) over the completion bytes and the end mark of every example.
--
-- Output: the run's folder (--out, default runs/finetune_text/<date-time>, printed at the start
-- and the end): results.json, results.csv, curve.png (validation perplexity at every
-- evaluation of each method: the learning curves), perplexity_vs_params.png, samples.txt
-- (generated text before and after), and per method
-- <method>/metrics.jsonl (the training log), <method>/adapter/adapter.h5 (peft.save; LoRA
-- also <method>/adapter_peft/ in PEFT's format; full fine-tuning <method>/model.h5, a
-- checkpoint ft.text.load_checkpoint reads) and <method>/result.json. A run checkpoints
-- every evaluation (<method>/checkpoint.h5, removed when the method finishes); --resume
-- continues from it, and reuses the results of methods that finished, ending with the
-- numbers of an uninterrupted run (same --threads); --resume without --out continues the
-- newest run folder.
--
-- Data-parallel: `mpirun -np N ftlua scripts/finetune_text.lua ...` trains with N processes
-- (ft.dist.DataParallel): every rank draws the same global batch of --batch-size windows and
-- trains on its share (rows rank+1, rank+1+N, ...), the loss is the mean over the trained tokens
-- of the whole batch, so the numbers are those of one process (float32 rounding apart, and
-- dropout, drawn per rank). --per-rank-batch B sets the global batch to B * N instead. Only rank
-- 0 prints and writes; evaluation runs on every rank.
local ft = require "ft"
local argparse = require "argparse"

local peft, text, train = ft.peft, ft.text, ft.train
local R = ft.recipe
local main = ft.dist.is_main()
local P = ft.progress
local log = P.log

local METHODS = { "full", "lora", "ia3", "loreft", "direft", "prompt" }
-- Learning rates chosen on the validation perplexity of songs-poems (a few values each).
local DEFAULT_LR = { full = 3e-4, lora = 2e-3, ia3 = 3e-2, loreft = 1e-2, direft = 1e-2, prompt = 1e-2 }
local LORA_TARGETS = { "c_attn", "c_proj", "c_fc" }
-- The projections of a Llama-family block (Llama, Qwen2, Mistral)
local LLAMA_LORA_TARGETS = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
local HF_METHODS = { full = true, lora = true }
-- The files of an HF folder that go with its weights.
local TOKENIZER_FILES = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" }

local parser = argparse("finetune_text.lua",
  "Fine-tune the pretrained byte-level GPT on held-out text with full fine-tuning, LoRA, (IA)3, ReFT or prompt tuning.")
parser:option("--method", "Method: " .. table.concat(METHODS, ", ") .. ".", "lora"):choices(METHODS)
parser:flag("--compare", "Run every method, one after the other.")
parser:option("--category", "Fortune category to adapt to.", "songs-poems")
parser:option("--data", "Your own data instead: plain text, or JSONL of prompt/completion pairs or chat records.")
  :argname("<file>"):convert(R.file)
parser:option("--model", "A HuggingFace model folder to fine-tune instead of the byte-level GPT (needs --data; "
  .. "methods lora and full).")
  :argname("<dir>"):convert(R.dir)
parser:flag("--stream", "Print the samples' text as it is generated.")
local positive = R.integer({ min = 1 })
parser:option("--steps", "Optimizer steps per method.", "200"):convert(positive)
local lr_defaults = {}
for i, m in ipairs(METHODS) do lr_defaults[i] = ("%s %g"):format(m, DEFAULT_LR[m]) end
parser:option("--lr", "Learning rate of every method run (default per method: " .. table.concat(lr_defaults, ", ")
  .. ").")
  :convert(R.number({ above = 0 }))
parser:option("--batch-size", "Examples (windows) per batch, over all ranks under mpirun (default 8).")
  :convert(positive)
parser:option("--per-rank-batch", "Under mpirun: examples (windows) per batch on each rank (the global batch is this times the ranks).")
  :convert(positive)
parser:option("--context", "Bytes per window, in training and evaluation.", "192"):convert(R.integer({ min = 2 }))
parser:option("--seed", "Random seed (split, initialisation, batches, samples).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/finetune_text/<date-time>; with --resume the newest).")
parser:option("--checkpoint", "The pretrained model (written by scripts/pretrain_text.lua; default "
  .. "models/gpt_fortunes.h5).")
parser:option("--r", "LoRA rank.", "8"):convert(positive)
parser:option("--alpha", "LoRA alpha (scale alpha / r).", "16"):convert(R.number({ above = 0 }))
-- f<n>, l<n> or f<n>+l<n> with n >= 1.
local function positions(s)
  for part in (s .. "+"):gmatch("([^+]*)%+") do
    local n = part:match("^[fl](%d+)$")
    if not n or tonumber(n) < 1 then
      return nil, ("expected f<n>, l<n> or f<n>+l<n> with n >= 1, got '%s'"):format(s)
    end
  end
  return s
end
parser:option("--positions", "ReFT positions: f<n> (first n tokens of every window), l<n> (last n real tokens) "
  .. "or f<n>+l<n>.", "f7"):convert(positions)
parser:option("--reft-rank", "ReFT rank.", "4"):convert(positive)
parser:option("--virtual-tokens", "Soft prompt length (prompt tuning).", "20"):convert(positive)
parser:option("--eval-every", "Validation perplexity (and a checkpoint) every N steps.", "25"):convert(positive)
parser:option("--patience", "Stop after this many evaluations without a better validation perplexity.", "3")
  :convert(positive)
parser:option("--prompt", "Prompt of the generated samples (default: the start of an entry; for prompt/completion "
  .. "or chat data the first test example's prompt).")
parser:option("--sample-length", "Bytes generated per sample.", "160"):convert(positive)
parser:flag("--resume", "Continue an interrupted run (same settings; the same --threads gives the same numbers).")
parser:option("--stop-at", "Stop after this step of the first unfinished method, as an interrupted run would "
  .. "(for testing --resume).")
  :convert(positive)
parser:option("--log-every", "Progress line every N steps when stderr is not a terminal.", "10"):convert(positive)
local args = R.parse(parser)
args.batch_size = R.global_batch(args.batch_size, args.per_rank_batch, { default = 8, parser = parser,
  uneven = true })

local function die(fmt, ...) R.fail(parser, fmt, ...) end

if args.data and args.category ~= "songs-poems" then
  R.usage_error(parser, "--data and --category choose the data: give one of them")
end
if args.model and not args.data then
  R.usage_error(parser, "--model needs --data (a chat JSONL, prompt/completion pairs or text)")
end
if args.model and (args.compare or not HF_METHODS[args.method]) then
  R.usage_error(parser, "--model fine-tunes with --method lora or --method full")
end
if args.model and args.checkpoint then
  R.usage_error(parser, "--model and --checkpoint both choose the model: give one of them")
end
if args.compare and args.method ~= "lora" then
  R.usage_error(parser, "--compare runs every method; leave out --method %s", args.method)
end
if args.stop_at and args.stop_at >= args.steps then
  R.usage_error(parser, "--stop-at %d must come before the last step (--steps %d)", args.stop_at, args.steps)
end
if not args.checkpoint and not args.model then
  args.checkpoint = R.model_path("gpt_fortunes.h5")
end
if args.threads then ft.set_num_threads(args.threads) end

local methods = args.compare and METHODS or { args.method }

-- ---- files ----------------------------------------------------------------------------------

local file_exists, mkdir = ft.fs.exists, ft.fs.mkdir

local function commas(n)
  local s = tostring(math.tointeger(n) or n)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local write_file = ft.fs.write

-- ---- the pretrained model -----------------------------------------------------------------------

-- The model a method starts from, its metadata, and its tokenizer.
local function load_base()
  -- The folder's dtype (a BF16 checkpoint stays bfloat16: adapters train in float32 over it);
  -- full fine-tuning updates every weight, so those are float32.
  if args.model then
    return ft.models.from_pretrained(args.model, { dtype = args.method == "full" and "float32" or nil }), {}
  end
  return text.load_checkpoint(args.checkpoint)
end
local unit = args.model and "token" or "byte"

if args.checkpoint and (not file_exists(args.checkpoint) or ft.fs.is_dir(args.checkpoint)) then
  R.usage_error(parser, "no pretrained model at %s: make it with scripts/pretrain_text.lua (models/TEXT.md), "
    .. "or pass --checkpoint", args.checkpoint)
end

local loaded, base_model, base_meta = pcall(load_base)
if not loaded then die("cannot load the pretrained model %s: %s", args.model or args.checkpoint, base_model) end
local tok
if args.model then
  local ok, t = pcall(ft.tokenizer.from_pretrained, args.model)
  if not ok then die("cannot load the tokenizer of %s: %s", args.model, t) end
  tok = t
else
  tok = ft.tokenizer.bytes()
end
local max_positions = base_model.max_positions or base_model.config.max_position_embeddings
if args.context > max_positions then
  die("--context %d exceeds the model's %d positions", args.context, max_positions)
end
for _, m in ipairs(methods) do
  if m == "prompt" and args.context + args.virtual_tokens > max_positions then
    die("prompt tuning needs --context + --virtual-tokens <= %d positions, got %d + %d", max_positions, args.context,
      args.virtual_tokens)
  end
end

local folder = R.run(parser, args.out, { resume = args.resume })

-- ---- data -----------------------------------------------------------------------------------------

-- The kind of an example as ft.text reads it.
local function kind_of(ex)
  if ex.messages then return "chat" end
  if ex.prompt ~= nil or ex.completion ~= nil then return "completion" end
  return "text"
end

-- A string that identifies an example's content, for the seeded split (identical examples
-- land on the same side; a text example splits as the same fortune entry would).
local function example_key(ex)
  local kind = kind_of(ex)
  if kind == "text" then return ex.text end
  if kind == "completion" then return ex.prompt .. "\0" .. ex.completion end
  local parts = {}
  for i, m in ipairs(ex.messages) do parts[i] = m.role .. "\1" .. m.content .. "\1" .. tostring(m.weight or 1) end
  return table.concat(parts, "\0")
end

-- The text an example trains on (prompt tuning starts its soft prompt from it).
local function trained_text(ex)
  local kind = kind_of(ex)
  if kind == "text" then return ex.text end
  if kind == "completion" then return ex.completion end
  for _, m in ipairs(ex.messages) do
    if m.role == "assistant" and m.weight ~= 0 then return m.content end
  end
  return ""
end

-- Tokens and trained tokens (labels the loss scores: not -100, after the first position).
local function count_tokens(encoded)
  local tokens, trained = 0, 0
  for _, e in ipairs(encoded) do
    tokens = tokens + #e.ids
    for i = 2, #e.labels do
      if e.labels[i] ~= text.IGNORE_INDEX then trained = trained + 1 end
    end
  end
  return tokens, trained
end

local data = {}
if args.data then
  local ok, examples = pcall(text.read_examples, args.data)
  if not ok then die("%s", tostring(examples)) end
  local kinds = {}
  for _, ex in ipairs(examples) do kinds[kind_of(ex)] = (kinds[kind_of(ex)] or 0) + 1 end
  local keys = {}
  for i, ex in ipairs(examples) do keys[i] = example_key(ex) end
  local _, val_keys, test_keys = text.split(keys, { val_fraction = 0.1, test_fraction = 0.1, seed = args.seed })
  local side = {}
  for _, k in ipairs(val_keys) do side[k] = "val" end
  for _, k in ipairs(test_keys) do side[k] = "test" end
  local parts = { train = {}, val = {}, test = {} }
  for i, ex in ipairs(examples) do
    local list = parts[side[keys[i]] or "train"]
    list[#list + 1] = ex
  end
  for _, s in ipairs({ "train", "val", "test" }) do
    if #parts[s] == 0 then
      die("%s: %d examples leave the %s split empty (10%% validation, 10%% test): give more examples", args.data,
        #examples, s)
    end
  end
  local all = text.example_dataset(examples, { context = args.context, tokenizer = tok })
  local tokens, trained = count_tokens(all.encoded)
  local kind_list = {}
  for _, k in ipairs({ "text", "completion", "chat" }) do
    if kinds[k] then kind_list[#kind_list + 1] = ("%d %s"):format(kinds[k], k) end
  end
  log("data %s: %d examples (%s), %d tokens, %d in the loss", args.data, #examples, table.concat(kind_list, ", "),
    tokens, trained)
  data.name = args.data
  data.train = text.example_dataset(parts.train, { context = args.context, tokenizer = tok })
  data.val = text.example_dataset(parts.val, { context = args.context, tokenizer = tok })
  data.test = text.example_dataset(parts.test, { context = args.context, tokenizer = tok })
  data.prompted = (kinds.completion or 0) + (kinds.chat or 0) > 0
  data.chat = (kinds.chat or 0) > 0
else
  local ok, train_set, val_set, test_set = pcall(text.category_datasets, args.category,
    { context = args.context, seed = args.seed })
  if not ok then die("%s", tostring(train_set)) end
  if not (train_set and val_set and test_set) then
    die("category %s is too small to split into train, validation and test", args.category)
  end
  data.name, data.train, data.val, data.test = args.category, train_set, val_set, test_set
  local held = {}
  for _, c in ipairs(type(base_meta.held_out) == "table" and base_meta.held_out or {}) do held[c] = true end
  if not held[args.category] then
    log("warning: %s was not held out of pretraining (held out: %s): the model has seen it", args.category,
      type(base_meta.held_out) == "table" and table.concat(base_meta.held_out, ", ") or "unknown")
  end
end

-- Training batches draw windows that hold at least one trained label (a long prompt split
-- into windows gives some without).
do
  local kept = {}
  for _, w in ipairs(data.train.windows) do
    for i = 2, #w.labels do
      if w.labels[i] ~= text.IGNORE_INDEX then kept[#kept + 1] = w; break end
    end
  end
  if #kept == 0 then die("the training split has no completion tokens to train on") end
  data.train.windows = kept
end

for _, s in ipairs({ "train", "val", "test" }) do
  local set = data[s]
  local tokens, trained = count_tokens(set.encoded)
  if trained == 0 then die("the %s split has no completion tokens to score", s) end
  data[s .. "_tokens"] = trained
  log("%-5s %4d examples, %7d %ss (%d in the loss), %d windows of <= %d", s, #set, tokens, unit, trained, #set.windows,
    args.context)
end

-- The example generation starts from, and how it is shown.
local sample_example
if args.prompt then
  sample_example = data.chat and { messages = { { role = "user", content = args.prompt } } } or { prompt = args.prompt }
elseif data.prompted then
  sample_example = data.test.examples[1]
else
  sample_example = { prompt = "" }
end
local sample_ids = text.encode_prompt(tok, sample_example)

-- ---- evaluation and samples -----------------------------------------------------------------------

local function perplexity(model, set)
  return text.perplexity(model, set, { context = args.context, batch_size = 16 })
end

-- Generated bytes as printable UTF-8 text (also valid in JSON): the end mark as <EOT>,
-- invalid UTF-8 and control bytes other than newline and tab as \xNN.
local function show(s)
  local out, i = {}, 1
  while i <= #s do
    local b = s:byte(i)
    local n = utf8.len(s, i, i) == 1 and (b < 0x80 and 1 or b < 0xE0 and 2 or b < 0xF0 and 3 or 4) or nil
    if b == 0 then out[#out + 1], n = "<EOT>", 1
    elseif not n or b == 127 or (b < 32 and b ~= 10 and b ~= 9) then out[#out + 1], n = ("\\x%02X"):format(b), 1
    else out[#out + 1] = s:sub(i, i + n - 1) end
    i = i + n
  end
  return table.concat(out)
end

-- A seeded sampled continuation of the fixed prompt (stops at the end-of-entry mark).
-- virtual: positions a soft prompt takes in front of the input.
-- An HF model samples as its generation_config.json says (greedy without one), stopping at
-- any of its eos ids.
local function sample(model, virtual)
  local room = max_positions - sample_ids:numel() - (virtual or 0)
  local n = math.min(args.sample_length, room)
  if n < 1 then return "(the prompt leaves no room to generate)" end
  local opts = args.model and { max_new_tokens = n, seed = args.seed, tokenizer = tok }
    or { max_new_tokens = n, temperature = 0.8, top_k = 40, seed = args.seed, eos_token_id = text.EOT_ID,
         tokenizer = tok }
  if args.stream then
    io.stderr:write("-- sample: ")
    opts.stream = function(piece) io.stderr:write(piece); io.stderr:flush() end
  end
  local out = model:generate(sample_ids, opts)
  if args.stream then io.stderr:write("\n") end
  local new = out[1]:narrow(1, sample_ids:numel() + 1, out:size(2) - sample_ids:numel())
  if args.model then
    local ids, eos = new:totable(), {}
    for _, id in ipairs(tok.eos_ids or { tok.eos_id }) do eos[id] = true end
    for i, id in ipairs(ids) do
      if eos[id] then ids = table.move(ids, 1, i - 1, 1, {}); break end
    end
    return show(tok:decode(ids, { skip_special_tokens = true }))
  end
  return show((tok:decode(new):gsub(text.EOT .. ".*$", "")))
end

-- The prompt on one line, quoted.
local prompt_shown = '"' .. show(tok:decode(sample_ids)):gsub("\n", "\\n") .. '"'

local cfg = base_model.config
log("model %s: %d parameters, %d layers, width %d, %d positions; %d threads", args.model or args.checkpoint,
  base_model:num_parameters(), cfg.n_layer or cfg.num_hidden_layers, cfg.n_embd or cfg.hidden_size, max_positions,
  ft.get_num_threads())
local t0 = ft.clock()
local base = { val = perplexity(base_model, data.val), test = perplexity(base_model, data.test) }
ft.manual_seed(args.seed)
base.sample = sample(base_model)
log("before fine-tuning: val ppl %.4f, test ppl %.4f (per %s; %.1f s)", base.val.perplexity, base.test.perplexity, unit,
  ft.clock() - t0)
log("-- sample before fine-tuning, from %s:\n%s", prompt_shown, base.sample)
base_model = nil

-- ---- methods ----------------------------------------------------------------------------------------

-- The settings that decide a method's numbers: a resumed run must use the same.
local function settings(method)
  return {
    method = method, checkpoint = args.checkpoint, model = args.model, data = args.data, category = not args.data and args.category or nil,
    steps = args.steps, lr = args.lr or DEFAULT_LR[method], batch_size = args.batch_size, context = args.context,
    seed = args.seed, r = method == "lora" and args.r or nil, alpha = method == "lora" and args.alpha or nil,
    positions = (method == "loreft" or method == "direft") and args.positions or nil,
    reft_rank = (method == "loreft" or method == "direft") and args.reft_rank or nil,
    virtual_tokens = method == "prompt" and args.virtual_tokens or nil, eval_every = args.eval_every,
    patience = args.patience,
  }
end

local function same_settings(a, b)
  return ft.json.encode(a) == ft.json.encode(b)
end

-- Attaches the method's adapter (full: nothing, every weight trains). Returns the adapter name.
local function attach(model, method)
  if method == "full" then
    peft.unfreeze(model)
    return nil
  elseif method == "lora" then
    local llama_family = model.model ~= nil and model.model.embed_tokens ~= nil
    return peft.lora(model, { target = llama_family and LLAMA_LORA_TARGETS or LORA_TARGETS, r = args.r,
      alpha = args.alpha })
  elseif method == "ia3" then
    return peft.ia3(model)
  elseif method == "loreft" or method == "direft" then
    return peft.reft(model, { kind = method, positions = args.positions, rank = args.reft_rank })
  elseif method == "prompt" then
    local init = trained_text(data.train.examples[1])
    if init == "" then return peft.prompt_tuning(model, { num_virtual_tokens = args.virtual_tokens }) end
    return peft.prompt_tuning(model, { num_virtual_tokens = args.virtual_tokens, init = "text", init_text = init })
  end
end

-- Trains one method (or takes its finished result with --resume). Returns the result table,
-- or nil when --stop-at interrupted it.
local function run(method)
  local dir = folder:path(method)
  local result_path, ckpt = dir .. "/result.json", dir .. "/checkpoint.h5"
  local wanted = settings(method)
  if args.resume and file_exists(result_path) then
    local done = ft.json.read(result_path)
    if same_settings(done.settings, wanted) then
      log("== %s: finished earlier (%s)", method, result_path)
      return done
    end
  end
  if args.resume and file_exists(ckpt) then
    local _, meta = ft.load(ckpt)
    local extra = ft.json.decode(meta.extra or "{}")
    local saved = extra.state and extra.state.settings
    if not (saved and same_settings(saved, wanted)) then
      die("--resume: %s was written with other settings (%s); now %s", ckpt, saved and ft.json.encode(saved) or "none",
        ft.json.encode(wanted))
    end
  end
  if main then mkdir(dir) end

  ft.manual_seed(args.seed)
  local model = load_base()
  local name = attach(model, method)
  model:train()
  local total = model:num_parameters()
  local trainable = model:num_parameters({ trainable = true })
  local lr = wanted.lr
  log("== %s: %s trainable of %s parameters (%.4f%%), lr %g", method, commas(trainable), commas(total),
    100 * trainable / total, lr)

  local params = {}
  for _, p in ipairs(model:parameters()) do
    if p.requires_grad then params[#params + 1] = p end
  end
  local opt = ft.optim.AdamW(params, { lr = lr, weight_decay = 0 })
  local S = ft.optim.lr_scheduler
  local warmup = math.max(1, math.floor(0.05 * args.steps + 0.5))
  local sched = S.LinearWarmup(opt, { warmup_steps = warmup,
    after = S.CosineAnnealingLR(opt, { T_max = math.max(1, args.steps - warmup), eta_min = 0.1 * lr }) })

  local logger = train.Logger({ path = dir .. "/metrics.jsonl", total = args.steps, every = args.log_every,
    unit = "tokens" })
  local es = train.EarlyStopping({ metric = "val_loss", patience = args.patience, model = model })
  -- With several ranks each trains on its share of the global batch; global_mean weighs the
  -- share's mean loss by its trained tokens (the labels past the first position).
  local net = ft.dist.DataParallel(model)
  local function batch_loss(b)
    local mine = ft.dist.shard(b)
    local labels = mine.labels:narrow(2, 2, mine.labels:size(2) - 1)
    local tokens = labels:numel() - labels:eq(text.IGNORE_INDEX):sum():item()
    return net:global_mean(net(mine.input_ids, { attention_mask = mine.attention_mask, labels = mine.labels }).loss,
      tokens)
  end
  local out = train.loop({
    steps = args.steps,
    next_batch = function() return data.train:batch(args.batch_size) end,
    step = function(b)
      local loss
      local _, norm = train.step(opt, function()
        local scaled
        scaled, loss = batch_loss(b)
        return scaled
      end, { clip = 1.0, scheduler = sched })
      return { loss = loss, grad_norm = norm, items = b.attention_mask:sum():item() }
    end,
    evaluate = function()
      local v = perplexity(model, data.val)
      return { val_loss = v.loss, val_ppl = v.perplexity }
    end,
    eval_every = args.eval_every,
    model = model, optimizer = opt, scheduler = sched,
    checkpoint = ckpt, checkpoint_every = args.eval_every, resume = args.resume,
    logger = logger, early_stopping = es,
    state = { settings = wanted },
    stop_at = args.stop_at,
  })
  local seconds = logger:elapsed()
  logger:close()
  if out.stopped == "stop_at" then
    log("== %s: stopped after step %d (--stop-at); checkpoint %s, continue with --resume", method, out.step, ckpt)
    return nil
  end

  -- The weights of the best validation step; the test split is scored once, here.
  es:restore_best()
  local val = { loss = es.best, perplexity = math.exp(es.best) }
  local test = perplexity(model, data.test)
  local virtual = method == "prompt" and args.virtual_tokens or 0
  local generated = sample(model, virtual)
  log("== %s: best step %d of %d (%s); val ppl %.4f -> %.4f, test ppl %.4f -> %.4f", method, es.best_step, out.step,
    out.stopped == "early_stopping" and "early stopping" or "all steps", base.val.perplexity, val.perplexity,
    base.test.perplexity, test.perplexity)
  log("-- sample after %s, from %s:\n%s", method, prompt_shown, generated)

  local saved
  if not main then -- rank 0 writes
  elseif method == "full" and args.model then
    -- an HF folder: the weights, the config and the tokenizer files beside them
    saved = ft.models.save_pretrained(model, dir .. "/model")
    for _, f in ipairs(TOKENIZER_FILES) do
      local from = args.model .. "/" .. f
      if file_exists(from) then write_file(saved .. "/" .. f, ft.fs.read(from)) end
    end
  elseif method == "full" then
    saved = dir .. "/model.h5"
    -- The metadata of a pretraining checkpoint, so that ft.text.load_checkpoint reads it.
    ft.save(saved, model:state_dict(), { metadata = {
      model = base_meta.model or "gpt2", config = ft.json.encode(model.config), tokenizer = "bytes",
      held_out = ft.json.encode(base_meta.held_out or {}), separator = ft.json.encode(text.EOT),
      finetuned_from = args.checkpoint, finetuned_on = data.name, step = es.best_step,
    } })
  else
    saved = peft.save(model, dir .. "/adapter", { name = name })
    if method == "lora" then peft.save(model, dir .. "/adapter_peft", { name = name, format = "peft" }) end
  end

  local result = {
    method = method, settings = wanted, trainable_params = trainable, total_params = total,
    trainable_percent = 100 * trainable / total, lr = lr, best_step = es.best_step, steps_run = out.step,
    stopped = out.stopped, seconds = seconds,
    val_loss_before = base.val.loss, val_ppl_before = base.val.perplexity, val_loss = val.loss,
    val_ppl = val.perplexity, test_loss_before = base.test.loss, test_ppl_before = base.test.perplexity,
    test_loss = test.loss, test_ppl = test.perplexity, test_bits_per_byte = test.bits, saved = saved,
    sample = generated,
  }
  if main then
    ft.json.write(result_path, result)
    os.remove(ckpt)
  end
  return result
end

local results = {}
for _, method in ipairs(methods) do
  local r = run(method)
  if not r then
    log("interrupted: run the same command with --resume instead of --stop-at to continue")
    os.exit(0)
  end
  results[#results + 1] = r
end

-- ---- report -----------------------------------------------------------------------------------------
if not main then return end -- rank 0 reports

local header = ("%-8s %16s %10s %9s %22s %8s"):format("method", "trainable params", "% of total", "val ppl",
  "test ppl before -> after", "seconds")
local lines = { header, ("-"):rep(#header) }
for _, r in ipairs(results) do
  lines[#lines + 1] = ("%-8s %16s %9.4f%% %9.4f %10.4f -> %8.4f %8.1f"):format(r.method, commas(r.trainable_params),
    r.trainable_percent, r.val_ppl, r.test_ppl_before, r.test_ppl, r.seconds)
end
local source = args.data and ("data " .. args.data) or ("category " .. args.category)
log("\n%s: perplexity per %s, held-out test split (%d %ss scored); before = the pretrained model",
  source, unit, data.test_tokens, unit)
log("%s", table.concat(lines, "\n"))

ft.json.write(folder:path("results.json"), {
  source = source, checkpoint = args.checkpoint, model = args.model, unit = unit, context = args.context,
  seed = args.seed,
  threads = ft.get_num_threads(), sample_prompt = prompt_shown,
  base = { val_loss = base.val.loss, val_ppl = base.val.perplexity, test_loss = base.test.loss,
    test_ppl = base.test.perplexity, sample = base.sample },
  split = { train = #data.train, val = #data.val, test = #data.test, val_tokens = data.val_tokens,
    test_tokens = data.test_tokens },
  methods = results,
})

local csv = { "method,trainable_params,total_params,trainable_percent,lr,best_step,steps_run,val_ppl_before,val_ppl,"
  .. "test_ppl_before,test_ppl,test_bits_per_byte,seconds" }
for _, r in ipairs(results) do
  csv[#csv + 1] = ("%s,%d,%d,%.6f,%g,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f"):format(r.method, r.trainable_params,
    r.total_params, r.trainable_percent, r.lr, r.best_step, r.steps_run, r.val_ppl_before, r.val_ppl,
    r.test_ppl_before, r.test_ppl, r.test_bits_per_byte, r.seconds)
end
write_file(folder:path("results.csv"), table.concat(csv, "\n") .. "\n")

-- The learning curves: validation perplexity at every evaluation of each method.
local curves = {}
for _, r in ipairs(results) do
  curves[#curves + 1] = R.series(R.read_jsonl(folder:path(r.method .. "/metrics.jsonl")), "val_ppl", { name = r.method })
end
R.curve(folder:path("curve.png"), { title = ("Validation perplexity per %s while fine-tuning (before: %.3f)"):format(
  unit, base.val.perplexity), ylabel = "validation perplexity per " .. unit, series = curves, legend = "outside" })

-- One series per method, so that methods with equal parameter counts stay apart by colour.
local series = {}
for i, r in ipairs(results) do
  series[i] = { name = r.method, x = { r.trainable_params }, y = { r.test_ppl } }
end
ft.plot.scatter({
  path = folder:path("perplexity_vs_params.png"), width = 800, height = 480,
  title = ("Test perplexity per %s (before: %.3f)"):format(unit, base.test.perplexity),
  xlabel = "trainable parameters", ylabel = "test perplexity per " .. unit, xscale = "log",
  series = series, legend = "outside",
})

local how = args.model and "as generation_config.json says" or "temperature 0.8, top_k 40"
local samples = { ("Samples (%s, seed %d) from %s\n"):format(how, args.seed, prompt_shown),
  "== before fine-tuning ==", base.sample, "" }
for _, r in ipairs(results) do
  samples[#samples + 1] = ("== after %s (test ppl %.4f) =="):format(r.method, r.test_ppl)
  samples[#samples + 1] = r.sample
  samples[#samples + 1] = ""
end
write_file(folder:path("samples.txt"), table.concat(samples, "\n"))
folder:finish("results.json, results.csv, curve.png, perplexity_vs_params.png, samples.txt")
