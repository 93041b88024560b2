-- Preference tuning of the byte-level fortunes GPT (models/gpt_fortunes.h5): teaches it to
-- continue neutral prompts ("The ", "When ", ...) in the style of one fortune category, with
-- rewards from a judge, a classifier of the fortunes' real category labels.
--
--   ftlua scripts/preference.lua                          # DPO with LoRA, a few minutes on 2 cores
--   ftlua scripts/preference.lua --method ipo --beta 0.5
--   ftlua scripts/preference.lua --compare --threads 2   # every method
--   ftlua scripts/preference.lua --data prefs.jsonl       # your own TRL pairs {prompt, chosen, rejected}
--   ftlua scripts/preference.lua --model DIR              # an HF causal LM folder and its tokenizer
--
-- Judges (ft.pref.judge): logistic regression over hashed byte 1..4-grams, trained on the
-- fortune entries labelled with their file's category. The entries are split by a hash of
-- their text into a test tenth and two disjoint halves of the rest: judge A (the reward the
-- method trains on: its probability of --target) learns from one half, judge B (the judge of
-- the results) from the other; both report their accuracy on the test tenth.
--
-- The starting model (the reference of every method): the pretrained model after --sft-steps
-- of supervised fine-tuning (every weight, AdamW) on the training entries of every category,
-- the held-out ones included (the DPO paper's SFT model: it has seen the target's style
-- without preferring it); saved as sft.h5 (with --model: sft/, an HF folder).
--
-- Pairs: --prompts neutral prompts (the first word of entries of other categories), --samples
-- sampled completions of each (temperature 1, --max-new tokens, stopping at the end mark); the
-- completion judge A scores best is chosen, the worst rejected. With --data the pairs come
-- from the file instead (TRL's records, text or conversational: ft.pref.load_pairs).
--
-- Methods (the policy: the starting model with LoRA on its attention and MLP projections; the
-- reference: the same model with its adapters disabled): dpo, ipo, simpo, orpo
-- (ft.pref.DPOTrainer's loss types), kto (ft.pref.train_kto on the pairs unpaired: chosen
-- desirable, rejected undesirable), sft (next-token loss on the chosen completions only), grpo
-- (online, ft.pref.train_grpo with judge A's probability as the reward: --samples completions
-- of --batch-size / 2 prompts a step, beta 0.04), rm-grpo (the same with a learned reward: an
-- ft.pref.RewardModel on the starting model, LoRA and its score head trained on the pairs by
-- ft.pref.train_reward, its accuracy reported on a held-out tenth of them) and best-of-n (no
-- training: of --samples completions of the starting model, judge A's best; its KL is the
-- analytic log n - (n - 1) / n). --compare runs sft, dpo at every --betas, ipo, simpo, orpo,
-- kto, rm-grpo, grpo and best-of-n. Before and after: on --eval-prompts prompts held out of
-- training, --eval-samples seeded completions each, the mean reward of both judges,
-- KL(policy || reference) per sequence (the mean over the samples of the sum of log pi - log
-- ref over their tokens: a Monte Carlo estimate), perplexity per token on held-out entries of
-- other categories, and samples.
--
-- Under mpirun (mpirun -np N ftlua scripts/preference.lua ...) every rank runs the script:
-- the supervised stage and every trainer share each batch (ft.dist.DataParallel: each rank
-- its rows, the gradients averaged), GRPO shares each step's prompts, and the results equal a
-- single process's (float32 rounding apart); the judges, the pairs and the evaluations are
-- computed alike on every rank, and only rank 0 writes. --batch-size and --sft-batch-size are
-- global batches (each rank takes its share); --per-rank-batch B sets --batch-size to B x N.
--
-- Output: the run's folder (--out, default runs/preference/<date-time>): judge_a.h5,
-- judge_b.h5, sft.h5, pairs.jsonl (the generated pairs, TRL's records), <method>/metrics.jsonl,
-- <method>/adapter/, results.json, results.csv, reward_vs_kl.png, samples.txt.
local ft = require "ft"
local argparse = require "argparse"
local judge_mod = require "ft.pref.judge"

local peft, text, pref = ft.peft, ft.text, ft.pref
local R = ft.recipe
local P = ft.progress
local log = P.log

local METHODS = { "dpo", "ipo", "simpo", "orpo", "kto", "sft", "grpo", "rm-grpo", "best-of-n" }
local LOSS_TYPE = { dpo = "sigmoid", ipo = "ipo", simpo = "simpo", orpo = "orpo" }
-- dpo's beta is 0.5, not TRL's 0.1: on this task 0.1 buys more reward at 4 times the KL and a
-- held-out perplexity 37% higher, 0.5 at 9% (README's table)
local DEFAULT_BETA = { dpo = 0.5, ipo = 0.5, simpo = 2.0, orpo = 0.1, kto = 0.1 }
local GPT2_TARGETS = { "c_attn", "c_proj", "c_fc" }
local LLAMA_TARGETS = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
local SFT_STEPS = 300   -- the supervised stage of the shipped model (none by default with --model)

local parser = argparse("preference.lua",
  "Preference-tune the fortunes GPT towards one category's style, with rewards from a category judge.")
parser:option("--method", "Method: " .. table.concat(METHODS, ", ") .. ".", "dpo"):choices(METHODS)
parser:flag("--compare", "Run sft, dpo at every --betas, ipo, simpo, orpo, kto, rm-grpo, grpo and best-of-n, one "
  .. "after the other.")
-- A comma-separated list of positive numbers.
local function betas(str)
  local out = {}
  for part in (str .. ","):gmatch("([^,]*),") do
    local v = tonumber(part)
    if not v or v <= 0 or v ~= v or v == math.huge then
      return nil, ("expected comma-separated numbers > 0, got '%s'"):format(str)
    end
    out[#out + 1] = v
  end
  return out
end
parser:option("--betas", "The betas of dpo with --compare.", "0.1,0.25,0.5,1"):convert(betas)
parser:option("--target", "The fortune category the completions should read like.", "songs-poems")
parser:option("--data", "Your own preference pairs (JSONL of TRL's {prompt, chosen, rejected} records, text or "
  .. "conversational) instead of sampled ones.")
  :argname("<file>"):convert(R.file)
local positive = R.integer({ min = 1 })
parser:option("--beta", "The loss's beta (default: dpo 0.5, ipo 0.5, simpo 2.0, orpo 0.1, kto 0.1).")
  :convert(R.number({ above = 0 }))
parser:option("--prompts", "Training prompts (one pair each).", "128"):convert(positive)
parser:option("--samples", "Sampled completions per training prompt (best and worst make the pair).", "4")
  :convert(R.integer({ min = 2 }))
parser:option("--max-new", "Tokens per sampled completion.", "64"):convert(positive)
parser:option("--eval-prompts", "Held-out prompts of the evaluation.", "32"):convert(positive)
parser:option("--eval-samples", "Completions per evaluation prompt.", "4"):convert(positive)
parser:option("--steps", "Optimizer steps.", "60"):convert(positive)
parser:option("--batch-size", "Pairs per step (default 8).", nil):convert(positive)
parser:option("--per-rank-batch", "Under mpirun: pairs per step on each rank (the global batch is this times the "
  .. "ranks)."):convert(positive)
parser:option("--lr", "Learning rate (AdamW).", "1e-3"):convert(R.number({ above = 0 }))
parser:option("--r", "LoRA rank.", "8"):convert(positive)
parser:option("--alpha", "LoRA alpha (scale alpha / r).", "16"):convert(R.number({ above = 0 }))
parser:option("--sft-steps", ("Steps of the supervised stage on the training fortunes (default %d; 0 with --model: "
  .. "none)."):format(SFT_STEPS)):convert(R.integer({ min = 0 }))
parser:option("--sft-lr", "Learning rate of the supervised stage.", "1e-4"):convert(R.number({ above = 0 }))
parser:option("--sft-batch-size", "Entries per step of the supervised stage (default 16).", nil):convert(positive)
parser:option("--rm-steps", "Training steps of rm-grpo's reward model.", "120"):convert(positive)
parser:option("--judge-epochs", "Epochs of each judge's training.", "3"):convert(positive)
parser:option("--judge-fraction", "Fraction of each judge half used (less: faster, weaker judges).", "1")
  :convert(R.number({ above = 0, max = 1 }))
parser:option("--ppl-entries", "Held-out entries of other categories scored for perplexity.", "200"):convert(positive)
parser:option("--seed", "Random seed (splits, judges, sampling, batches).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/preference/<date-time>).")
parser:option("--checkpoint", "The pretrained fortunes model (default models/gpt_fortunes.h5).")
parser:option("--model", "An HF causal LM folder with its tokenizer (GPT-2, Llama, Qwen2, Mistral), instead of "
  .. "--checkpoint; LoRA over the folder's dtype.")
  :argname("<dir>")
parser:option("--log-every", "Progress line every N steps when stderr is not a terminal.", "10"):convert(positive)
local args = R.parse(parser)
local main = ft.dist.is_main()   -- under mpirun: the rank that writes

local function die(fmt, ...) R.fail(parser, fmt, ...) end

args.batch_size = R.global_batch(args.batch_size, args.per_rank_batch, { default = 8, parser = parser, uneven = true })
args.sft_batch_size = R.global_batch(args.sft_batch_size, nil, { default = 16, parser = parser,
  flag = "--sft-batch-size", uneven = true })
-- GRPO takes --batch-size / 2 prompts a step, which the ranks share
local grpo_prompts = math.max(1, args.batch_size // 2)
if (args.compare or args.method:find("grpo")) and grpo_prompts < ft.dist.world_size() then
  R.usage_error(parser, "--batch-size %d gives GRPO %d prompts a step, fewer than the %d ranks that share them; "
    .. "give --batch-size %d or more", args.batch_size, grpo_prompts, ft.dist.world_size(), 2 * ft.dist.world_size())
end

if args.model and args.checkpoint then R.usage_error(parser, "give --model or --checkpoint, not both") end
if args.model then
  if not ft.fs.is_dir(args.model) then R.usage_error(parser, "--model %s is not a folder", args.model) end
else
  args.checkpoint = args.checkpoint or R.model_path("gpt_fortunes.h5")
  if not ft.fs.exists(args.checkpoint) or ft.fs.is_dir(args.checkpoint) then
    R.usage_error(parser, "no pretrained model at %s: make it with scripts/pretrain_text.lua (models/TEXT.md), "
      .. "or pass --checkpoint", args.checkpoint)
  end
end
args.sft_steps = args.sft_steps or (args.model and 0 or SFT_STEPS)
local ok_corpus, corpus = pcall(text.fortunes)
if not ok_corpus then die("%s", tostring(corpus)) end
local classes = text.categories(corpus)
if not corpus[args.target] then
  R.usage_error(parser, "--target %s is not a fortune category; categories: %s", args.target,
    table.concat(classes, ", "))
end
if args.threads then ft.set_num_threads(args.threads) end
if args.compare and args.method ~= "dpo" then
  R.usage_error(parser, "--compare runs every method; leave out --method %s", args.method)
end
if args.beta and (args.compare or not DEFAULT_BETA[args.method]) then
  R.usage_error(parser, "--beta applies to one run of dpo, ipo, simpo, orpo or kto%s", args.compare
    and " (--compare takes --betas for dpo)" or (", not %s"):format(args.method))
end
local beta = args.beta or DEFAULT_BETA[args.method]

-- The pretrained model: the shipped checkpoint (the byte tokenizer) or an HF folder in its
-- own dtype (float32 when the supervised stage updates its weights).
local function load_pretrained()
  if args.model then
    return ft.models.from_pretrained(args.model, { dtype = args.sft_steps > 0 and "float32" or nil }), {}
  end
  return text.load_checkpoint(args.checkpoint)
end
local ok_model, base_model, base_meta = pcall(load_pretrained)
if not ok_model then die("cannot load the pretrained model %s: %s", args.model or args.checkpoint, base_model) end
local cfg = base_model.config or {}
local max_positions = base_model.max_positions or cfg.n_positions or cfg.max_position_embeddings
local tok, eos_ids
if args.model then
  local ok, t = pcall(ft.tokenizer.from_pretrained, args.model)
  if not ok then die("cannot load the tokenizer of %s: %s", args.model, t) end
  tok = t
  eos_ids = tok.eos_ids or (tok.eos_id and { tok.eos_id })
  if not eos_ids then die("the tokenizer of %s has no eos token: completions would not end", args.model) end
else
  tok = ft.tokenizer.bytes()
  eos_ids = { text.EOT_ID }
  local held = {}
  for _, c in ipairs(type(base_meta.held_out) == "table" and base_meta.held_out or {}) do held[c] = true end
  if not held[args.target] then
    log("warning: %s was not held out of pretraining (held out: %s)", args.target,
      type(base_meta.held_out) == "table" and table.concat(base_meta.held_out, ", ") or "unknown")
  end
end
local eos = #eos_ids == 1 and eos_ids[1] or eos_ids
local lora_targets = (base_model.model ~= nil and base_model.model.embed_tokens ~= nil) and LLAMA_TARGETS
  or GPT2_TARGETS

local folder = R.run(parser, args.out)
local t_start = ft.clock()

-- ---- splits -----------------------------------------------------------------------------------

-- A seeded 64-bit FNV-1a of s, as a non-negative integer.
local function hash(s, seed)
  local h = -3750763034362895579 ~ seed
  for i = 1, #s do h = (h ~ s:byte(i)) * 1099511628211 end
  return h & 0x7fffffffffffffff
end

-- Entries -> test (1 in 10), half A, half B (disjoint), by a hash of their text.
local judge_a_set, judge_b_set, judge_test = {}, {}, {}
local other_test = {}   -- test entries of the other categories: prompts and perplexity
local prompt_pool = {}  -- training-side entries of the other categories: training prompts
local sft_pool = {}     -- training-side entries of every category: the supervised stage
for _, c in ipairs(classes) do
  for _, e in ipairs(corpus[c]) do
    local h = hash(e, args.seed)
    local ex = { text = e, label = c }
    if h % 10 == 0 then
      judge_test[#judge_test + 1] = ex
      if c ~= args.target then other_test[#other_test + 1] = e end
    else
      local half = (h // 10) % 2 == 0 and judge_a_set or judge_b_set
      if (h // 20) % 1000 < args.judge_fraction * 1000 then half[#half + 1] = ex end
      if c ~= args.target then prompt_pool[#prompt_pool + 1] = e end
      sft_pool[#sft_pool + 1] = { text = e }
    end
  end
end

-- ---- judges ---------------------------------------------------------------------------------------

local function train_judge(name, set)
  local t0 = ft.clock()
  local j = judge_mod.train(set, { classes = classes, epochs = args.judge_epochs, lr = 0.3, seed = args.seed })
  local acc, mass = j:accuracy(judge_test)
  log("judge %s: %d entries, %d categories; held-out accuracy %.3f (%d entries), mean P(label) %.3f; %.1f s", name,
    #set, #classes, acc, #judge_test, mass, ft.clock() - t0)
  if main then j:save(folder:path("judge_" .. name:lower() .. ".h5")) end
  return j, acc
end
local judge_a, acc_a = train_judge("A", judge_a_set)
local judge_b, acc_b = train_judge("B", judge_b_set)
local target_test = {}
for _, ex in ipairs(judge_test) do
  if ex.label == args.target then target_test[#target_test + 1] = ex.text end
end
local pa_target = #target_test > 0 and judge_a:prob(target_test, args.target) or {}
local pb_target = #target_test > 0 and judge_b:prob(target_test, args.target) or {}
local function mean(t)
  local s = 0
  for _, v in ipairs(t) do s = s + v end
  return #t > 0 and s / #t or 0 / 0
end
log("on real %s test entries (%d): judge A P(target) %.3f, judge B %.3f", args.target, #target_test, mean(pa_target),
  mean(pb_target))

-- ---- prompts ----------------------------------------------------------------------------------------

-- The first word of an entry and the space after it: a neutral start.
local function prompt_of(e)
  return e:match("^(%a+[%s])") or e:match("^(%S+%s)")
end
local function prompts_from(pool, n, salt)
  local order = {}
  for i, e in ipairs(pool) do order[i] = { hash(e, args.seed + salt), e } end
  table.sort(order, function(x, y) return x[1] < y[1] end)
  local out = {}
  for _, o in ipairs(order) do
    local p = prompt_of(o[2])
    if p and #p <= 16 and not p:find("\n") then out[#out + 1] = p end
    if #out == n then break end
  end
  return out
end
local train_prompts = prompts_from(prompt_pool, args.prompts, 1)
local eval_prompts = prompts_from(other_test, args.eval_prompts, 2)
if #eval_prompts < args.eval_prompts then die("only %d evaluation prompts available", #eval_prompts) end
if args.max_new + 18 > max_positions then die("--max-new %d exceeds the model's %d positions", args.max_new,
  max_positions) end

-- ---- sampling and scoring ---------------------------------------------------------------------------

-- A prompt's ids: the byte model's EOT and the prompt's bytes, or the HF tokenizer's encoding
-- with its special tokens (a bos where it has one).
local function encode_prompt(p) return text.encode_prompt(tok, { prompt = p }) end

-- Generated ids (a Lua array) as text, without the end mark or other special tokens.
local function decode(ids)
  if #ids == 0 then return "" end
  local t = ft.tensor(ids, { dtype = "int64" })
  if args.model then return tok:decode(t, { skip_special_tokens = true }) end
  return (tok:decode(t):gsub("%z", ""))
end

-- Generated bytes as printable text (the end mark as <EOT>, other control bytes as \xNN).
-- Valid UTF-8 (also in JSON): invalid bytes as \xNN too.
local function show(s)
  local out, i = {}, 1
  while i <= #s do
    local b = s:byte(i)
    local n = utf8.len(s, i, i, false) == 1 and (b < 0x80 and 1 or b < 0xE0 and 2 or b < 0xF0 and 3 or 4) or nil
    if n and i + n - 1 <= #s and utf8.len(s:sub(i, i + n - 1)) == 1 and not (n == 1 and (b < 32 and b ~= 10
        and b ~= 9 or b == 127)) then
      out[#out + 1] = s:sub(i, i + n - 1)
    else
      n = 1
      out[#out + 1] = b == 0 and "<EOT>" or ("\\x%02X"):format(b)
    end
    i = i + n
  end
  return table.concat(out)
end

-- G completions of each prompt, one generate call per prompt (no padding): array of
-- {prompt =, completion = string, ids, mask, attention} per prompt group.
local function sample(model, prompts, G)
  local groups = {}
  for i, p in ipairs(prompts) do
    local roll = pref.sample_completions(model, { encode_prompt(p) }, G, { max_new_tokens = args.max_new,
      temperature = 1.0, eos_token_id = eos })
    local comps = {}
    for r = 1, G do comps[r] = decode(roll.completions[r]) end
    local N, Pn = roll.size, roll.prompt_length
    local mask = ft.cat({ ft.zeros(N, Pn), roll.completion_mask }, 2)
    groups[i] = { prompt = p, completions = comps, ids = roll.ids, mask = mask, attention = roll.attention_mask }
  end
  return groups
end

local function rewards(j, groups)
  local texts = {}
  for _, g in ipairs(groups) do
    for _, c in ipairs(g.completions) do texts[#texts + 1] = g.prompt .. c end
  end
  return j:prob(texts, args.target)
end

local ppl_set
do
  local ex = {}
  for i = 1, math.min(args.ppl_entries, #other_test) do ex[i] = { text = other_test[i] } end
  ppl_set = text.example_dataset(ex, { context = max_positions, tokenizer = tok })
end

-- Rewards of both judges, KL(policy || reference) per sequence, perplexity and samples.
-- reference: false for the starting model itself (KL 0).
local function evaluate(model, with_reference)
  ft.manual_seed(args.seed + 7)
  local t0 = ft.clock()
  local groups = sample(model, eval_prompts, args.eval_samples)
  local ra, rb = rewards(judge_a, groups), rewards(judge_b, groups)
  local kl = 0
  if with_reference then
    local klsum, n = 0, 0
    ft.no_grad(function()
      for _, g in ipairs(groups) do
        local lp = pref.logps(model, g.ids, g.mask, { attention_mask = g.attention })
        local lr = pref.reference_logps(model, g.ids, g.mask, { attention_mask = g.attention })
        for _, v in ipairs((lp - lr):totable()) do klsum, n = klsum + v, n + 1 end
      end
    end)
    kl = klsum / n
  end
  local ppl = text.perplexity(model, ppl_set, { context = max_positions, batch_size = 16 })
  local shown = {}
  for i = 1, math.min(4, #groups) do shown[i] = show(groups[i].prompt .. groups[i].completions[1]) end
  return { reward_a = mean(ra), reward_b = mean(rb), kl = kl, ppl = ppl.perplexity, samples = shown,
    seconds = ft.clock() - t0 }
end

-- ---- the supervised stage ---------------------------------------------------------------------------

-- Next-token training of every weight on the training entries of every category (the target
-- included); the result is the starting model of every method and their reference.
local sft_state
if args.sft_steps > 0 then
  local t0 = ft.clock()
  local set = text.example_dataset(sft_pool, { context = math.min(256, max_positions), tokenizer = tok })
  ft.manual_seed(args.seed)
  peft.unfreeze(base_model)
  base_model:train()
  local opt = ft.optim.AdamW(base_model:parameters(), { lr = args.sft_lr, weight_decay = 0 })
  -- under mpirun each rank takes its rows of the batch; global_mean weighs its mean loss by
  -- its trained tokens (the labels past the first position)
  local net = ft.dist.DataParallel(base_model)
  local logger = ft.train.Logger({ path = folder:path("sft_metrics.jsonl"), total = args.sft_steps,
    every = args.log_every, unit = "entries" })
  log("supervised stage: %d steps of %d of %d training entries (every category), lr %g", args.sft_steps,
    args.sft_batch_size, #sft_pool, args.sft_lr)
  local last
  ft.train.loop({
    steps = args.sft_steps, logger = logger,
    next_batch = function() return set:batch(args.sft_batch_size) end,
    step = function(b)
      ft.train.step(opt, function()
        local mine = ft.dist.shard(b)
        local labels = mine.labels:narrow(2, 2, mine.labels:size(2) - 1)
        local tokens = labels:numel() - labels:eq(text.IGNORE_INDEX):sum():item()
        local scaled
        scaled, last = net:global_mean(net(mine.input_ids, { attention_mask = mine.attention_mask,
          labels = mine.labels }).loss, tokens)
        return scaled
      end, { clip = 1.0 })
      return { loss = last, items = b.input_ids:size(1) }
    end,
  })
  logger:close()
  base_model:eval()
  peft.freeze(base_model)
  sft_state = base_model:state_dict()
  local saved
  if not main then -- rank 0 writes
  elseif args.model then
    saved = ft.models.save_pretrained(base_model, folder:path("sft"))
  else
    saved = folder:path("sft.h5")
    ft.save(saved, sft_state, { metadata = { model = base_meta.model or "gpt2", config = ft.json.encode(cfg),
      tokenizer = "bytes", held_out = ft.json.encode(base_meta.held_out or {}), separator = ft.json.encode(text.EOT),
      finetuned_from = args.checkpoint, finetuned_on = "fortunes (training entries, every category)",
      step = args.sft_steps } })
  end
  log("supervised stage: last loss %.4f; %.1f s; saved %s", last, ft.clock() - t0, saved)
end

-- A fresh copy of the starting model (the pretrained model after the supervised stage).
local function load_start()
  local m = load_pretrained()
  if sft_state then m:load_state_dict(sft_state) end
  m:eval()
  return m
end

base_model:eval()
local before = evaluate(base_model, false)
log("before: reward A %.4f, reward B %.4f, held-out ppl %.4f (%.1f s)", before.reward_a, before.reward_b, before.ppl,
  before.seconds)

-- ---- pairs --------------------------------------------------------------------------------------------

local pair_records
if args.data then
  local ok, recs = pcall(pref.read_jsonl, args.data)
  if not ok then die("%s", tostring(recs)) end
  pair_records = recs
  log("pairs: %d records from %s", #pair_records, args.data)
else
  local t0 = ft.clock()
  ft.manual_seed(args.seed)
  local groups = sample(base_model, train_prompts, args.samples)
  local ra = rewards(judge_a, groups)
  pair_records = {}
  local k, gap = 0, 0
  for _, g in ipairs(groups) do
    local best, worst
    for r = 1, #g.completions do
      k = k + 1
      local v = ra[k]
      if g.completions[r] ~= "" then
        if not best or v > best[1] then best = { v, g.completions[r] } end
        if not worst or v < worst[1] then worst = { v, g.completions[r] } end
      end
    end
    if best and best[2] ~= worst[2] then
      pair_records[#pair_records + 1] = { prompt = g.prompt, chosen = best[2], rejected = worst[2],
        score_chosen = best[1], score_rejected = worst[1] }
      gap = gap + best[1] - worst[1]
    end
  end
  if #pair_records == 0 then die("no prompt gave two different completions: raise --samples or --max-new") end
  local lines = {}
  -- the file shows invalid UTF-8 bytes as \xNN (JSON holds only UTF-8); training uses the bytes
  for i, rec in ipairs(pair_records) do
    lines[i] = ft.json.encode({ prompt = rec.prompt, chosen = show(rec.chosen), rejected = show(rec.rejected),
      score_chosen = rec.score_chosen, score_rejected = rec.score_rejected })
  end
  if main then ft.fs.write(folder:path("pairs.jsonl"), table.concat(lines, "\n") .. "\n") end
  log("pairs: %d of %d prompts x %d samples; judge A chosen - rejected %.4f on average (%.1f s)", #pair_records,
    #train_prompts, args.samples, gap / #pair_records, ft.clock() - t0)
end
local ok_pairs, pairs_ex = pcall(pref.load_pairs, pair_records, tok, { max_length = max_positions,
  max_prompt_length = math.min(64, max_positions // 2) })
if not ok_pairs then die("%s", tostring(pairs_ex)) end

-- ---- training ----------------------------------------------------------------------------------------

-- KTO's unpaired examples from the pairs (chosen desirable, rejected undesirable), in shuffled
-- batches of both halves of --batch-size pairs with their KL rows.
local function kto_batches()
  local records = {}
  for _, rec in ipairs(pair_records) do
    records[#records + 1] = { prompt = rec.prompt, completion = rec.chosen, label = true }
    records[#records + 1] = { prompt = rec.prompt, completion = rec.rejected, label = false }
  end
  local ok, examples = pcall(pref.load_unpaired, records, tok, { max_length = max_positions,
    max_prompt_length = math.min(64, max_positions // 2) })
  if not ok then die("%s", tostring(examples)) end
  local bs = math.min(2 * args.batch_size, #examples)
  local list = {}
  for b in pref.batches(examples, { batch_size = bs, shuffle = true, seed = args.seed, kl = true,
      drop_last = true }) do
    list[#list + 1] = b
  end
  return list
end

-- ft.pref.batches of list as an array. opts: batch_size, shuffle, seed, and training (what
-- trains on them): under mpirun a last batch with fewer pairs than ranks leaves a rank nothing
-- to train on, so it is left out (and said).
local function batches_of(list, opts)
  local out = {}
  for b in pref.batches(list, { batch_size = opts.batch_size, shuffle = opts.shuffle, seed = opts.seed }) do
    out[#out + 1] = b
  end
  local last, world = out[#out].chosen_ids:size(1), ft.dist.world_size()
  if opts.training and #out > 1 and last < world then
    out[#out] = nil
    log("%s training leaves out the last batch: its %d pairs are fewer than the %d ranks", opts.training, last, world)
  end
  return out
end

-- rm-grpo's reward: an ft.pref.RewardModel on a copy of the starting model, LoRA and its score
-- head trained on the pairs by the Bradley-Terry loss (every tenth pair held out for its
-- accuracy). Returns the model (in eval mode) and its held-out accuracy.
local function train_reward_model(dir)
  local train, held = {}, {}
  for i, ex in ipairs(pairs_ex) do
    if i % 10 == 0 then held[#held + 1] = ex else train[#train + 1] = ex end
  end
  if #held == 0 then held = train end   -- fewer than 10 pairs: the accuracy is on the training pairs
  local rm = pref.RewardModel(load_start())
  peft.lora(rm, { target = lora_targets, r = args.r, alpha = args.alpha, modules_to_save = { "score" } })
  local t0 = ft.clock()
  local held_batches = batches_of(held, { batch_size = args.batch_size })
  local _, trainer = pref.train_reward(rm, batches_of(train, { batch_size = args.batch_size, shuffle = true,
    seed = args.seed, training = "the reward model's" }), { lr = args.lr, weight_decay = 0,
    steps = args.rm_steps, log_path = dir .. "/reward_metrics.jsonl", log_every = args.log_every })
  local acc = trainer:evaluate(held_batches).accuracy
  log("reward model: %d steps on %d pairs; accuracy %.3f on %d %s pairs; %.1f s", args.rm_steps, #train, acc, #held,
    held == train and "training" or "held-out", ft.clock() - t0)
  rm:eval()
  return rm, acc
end

-- One method's run: a fresh LoRA policy trained on the pairs (best-of-n: no training), then
-- the evaluation. spec = {method =, beta =}. Returns the result row.
local function run_method(spec)
  local method, beta = spec.method, spec.beta
  local label = args.compare and method == "dpo" and ("dpo-beta%g"):format(beta) or method
  if method == "best-of-n" then
    -- n samples of the starting model per evaluation sample, judge A's best kept; the KL of
    -- best-of-n to its base is log n - (n - 1) / n (Stiennon et al.)
    local n = args.samples
    ft.manual_seed(args.seed + 7)
    local t0 = ft.clock()
    local groups = sample(base_model, eval_prompts, args.eval_samples * n)
    local ra, rb = rewards(judge_a, groups), rewards(judge_b, groups)
    local pa, pb, shown, k = {}, {}, {}, 0
    for gi, g in ipairs(groups) do
      for e = 1, args.eval_samples do
        local best
        for _ = 1, n do
          k = k + 1
          if not best or ra[k] > ra[best] then best = k end
        end
        pa[#pa + 1], pb[#pb + 1] = ra[best], rb[best]
        local r = best - (gi - 1) * args.eval_samples * n
        if e == 1 and #shown < 4 then shown[#shown + 1] = show(g.prompt .. g.completions[r]) end
      end
    end
    local res = { method = method, label = label, n = n, reward_a = mean(pa), reward_b = mean(pb),
      kl = math.log(n) - (n - 1) / n, ppl = before.ppl, samples = shown, train_seconds = 0,
      seconds = ft.clock() - t0, trainable_params = 0 }
    log("== %s (n %d): reward A %.4f, reward B %.4f, KL %.3f (analytic); %.1f s", method, n, res.reward_a,
      res.reward_b, res.kl, res.seconds)
    return res
  end
  local dir = folder:path(label)
  if main then ft.fs.mkdir(dir) end
  ft.manual_seed(args.seed)
  local policy = load_start()
  local adapter = peft.lora(policy, { target = lora_targets, r = args.r, alpha = args.alpha })
  local trainable = policy:num_parameters({ trainable = true })
  log("== %s (%slr %g): LoRA r %d, %d trainable of %d parameters; %d pairs, %d steps of %d", label,
    beta and ("beta %g, "):format(beta) or "", args.lr, args.r, trainable, policy:num_parameters(), #pairs_ex,
    args.steps, args.batch_size)
  local batches = batches_of(pairs_ex, { batch_size = args.batch_size, shuffle = true, seed = args.seed,
    training = label })
  local t_train = ft.clock()
  local last
  local extra = {}
  if method == "sft" then
    -- supervised fine-tuning on the chosen completions: mean negative log-likelihood per byte
    local params = {}
    for _, p in ipairs(policy:parameters()) do
      if p.requires_grad then params[#params + 1] = p end
    end
    local opt = ft.optim.AdamW(params, { lr = args.lr, weight_decay = 0 })
    local logger = ft.train.Logger({ path = dir .. "/metrics.jsonl", total = args.steps, every = args.log_every,
      unit = "pairs" })
    policy:train()
    local net = ft.dist.DataParallel(policy)
    ft.train.loop({
      steps = args.steps, logger = logger,
      next_batch = function(step) return batches[(step - 1) % #batches + 1] end,
      step = function(b)
        local loss
        ft.train.step(opt, function()
          local mine = ft.dist.shard(b)
          local lp, nc = pref.logps(net, mine.chosen_ids, mine.chosen_mask,
            { attention_mask = mine.chosen_attention_mask })
          local tokens = nc:sum():item()
          local scaled
          scaled, loss = net:global_mean(-lp:sum() / tokens, tokens)
          return scaled
        end, { clip = 1.0 })
        last = { loss = loss }
        return { loss = loss, items = b.chosen_ids:size(1) }
      end,
    })
    logger:close()
  elseif method == "grpo" or method == "rm-grpo" then
    -- online: GRPO's group-relative advantages of the reward (judge A's probability, or the
    -- reward model's score), KL to the reference weighed by beta (0.04, TRL's default then)
    local reward = function(pids, cids) return judge_a:prob({ decode(pids) .. decode(cids) }, args.target)[1] end
    if method == "rm-grpo" then
      reward, extra.reward_model_accuracy = train_reward_model(dir)
    end
    local prompt_ids = {}
    for i, p in ipairs(train_prompts) do prompt_ids[i] = encode_prompt(p) end
    local fit = pref.train_grpo(policy, prompt_ids, reward, { num_generations = args.samples,
      prompts_per_step = grpo_prompts, max_new_tokens = args.max_new, temperature = 1.0,
      eos_token_id = eos, beta = 0.04, lr = args.lr, weight_decay = 0, steps = args.steps,
      log_path = dir .. "/metrics.jsonl", log_every = args.log_every })
    last = fit.last or {}
  elseif method == "kto" then
    local fit = pref.train_kto(policy, kto_batches(), { beta = beta, lr = args.lr, weight_decay = 0,
      steps = args.steps, log_path = dir .. "/metrics.jsonl", log_every = args.log_every })
    last = fit.last or {}
  else
    local trainer = pref.DPOTrainer(policy, { loss_type = LOSS_TYPE[method], beta = beta, lr = args.lr,
      weight_decay = 0 })
    local fit = trainer:fit(batches, { steps = args.steps, log_path = dir .. "/metrics.jsonl",
      log_every = args.log_every })
    last = fit.last or {}
  end
  local train_seconds = ft.clock() - t_train
  log("== %s: %d steps in %.1f s; last loss %.4f%s", label, args.steps, train_seconds, last.loss or 0 / 0,
    last.rewards_accuracies and (", reward accuracy %.3f, margin %.4f"):format(last.rewards_accuracies,
      last.rewards_margins) or "")
  policy:eval()
  local after = evaluate(policy, true)
  log("after %s: reward A %.4f (before %.4f), reward B %.4f (before %.4f), KL %.3f nats/sequence, held-out ppl "
    .. "%.4f (before %.4f)", label, after.reward_a, before.reward_a, after.reward_b, before.reward_b, after.kl,
    after.ppl, before.ppl)
  if main then peft.save(policy, dir .. "/adapter", { name = adapter }) end
  return { method = method, label = label, beta = beta, lr = args.lr, steps = args.steps,
    trainable_params = trainable, train_seconds = train_seconds, last = last, reward_a = after.reward_a,
    reward_b = after.reward_b, kl = after.kl, ppl = after.ppl, samples = after.samples,
    seconds = train_seconds + after.seconds, reward_model_accuracy = extra.reward_model_accuracy }
end

local specs = {}
if args.compare then
  specs[#specs + 1] = { method = "sft" }
  for _, b in ipairs(args.betas) do specs[#specs + 1] = { method = "dpo", beta = b } end
  for _, m in ipairs({ "ipo", "simpo", "orpo", "kto" }) do specs[#specs + 1] = { method = m, beta = DEFAULT_BETA[m] } end
  specs[#specs + 1] = { method = "rm-grpo" }
  specs[#specs + 1] = { method = "grpo" }
  specs[#specs + 1] = { method = "best-of-n" }
else
  specs[1] = { method = args.method, beta = beta }
end
local method_results = {}
for i, spec in ipairs(specs) do method_results[i] = run_method(spec) end

-- ---- report -------------------------------------------------------------------------------------------
if not main then return end -- rank 0 reports

local results = {
  target = args.target, checkpoint = args.checkpoint, model = args.model, data = args.data, seed = args.seed,
  sft_steps = args.sft_steps, sft_lr = args.sft_steps > 0 and args.sft_lr or nil,
  threads = ft.get_num_threads(),
  judges = { accuracy_a = acc_a, accuracy_b = acc_b, test_entries = #judge_test, train_a = #judge_a_set,
    train_b = #judge_b_set, classes = #classes, target_test_prob_a = mean(pa_target),
    target_test_prob_b = mean(pb_target) },
  pairs = #pairs_ex, before = before,
  methods = method_results,
}
ft.json.write(folder:path("results.json"), results)
local csv = { "method,beta,reward_a,reward_b,kl,ppl,seconds",
  ("start,,%.6f,%.6f,0,%.6f,0"):format(before.reward_a, before.reward_b, before.ppl) }
for _, m in ipairs(results.methods) do
  csv[#csv + 1] = ("%s,%s,%.6f,%.6f,%.6f,%.6f,%.1f"):format(m.method, m.beta and ("%g"):format(m.beta) or "",
    m.reward_a, m.reward_b, m.kl, m.ppl, m.seconds)
end
local header = ("%-16s %9s %9s %10s %9s %8s"):format("method", "reward A", "reward B", "KL/seq", "ppl", "seconds")
local rows = { header, ("-"):rep(#header), ("%-16s %9.4f %9.4f %10.3f %9.4f %8s"):format("start", before.reward_a,
  before.reward_b, 0, before.ppl, "") }
for _, m in ipairs(results.methods) do
  rows[#rows + 1] = ("%-16s %9.4f %9.4f %10.3f %9.4f %8.1f"):format(m.label, m.reward_a, m.reward_b, m.kl, m.ppl,
    m.seconds)
end
log("\nP(%s) by judge A (trained on) and judge B (held-out judge), %d prompts x %d samples:\n%s", args.target,
  #eval_prompts, args.eval_samples, table.concat(rows, "\n"))
ft.fs.write(folder:path("results.csv"), table.concat(csv, "\n") .. "\n")
-- one series per method, its runs sorted by KL: dpo's betas trace its frontier
local series, of_method = { { name = "start", x = { 0 }, y = { before.reward_b } } }, {}
for _, m in ipairs(results.methods) do
  local sr = of_method[m.method]
  if not sr then
    sr = { name = m.method, points = {} }
    of_method[m.method] = sr
    series[#series + 1] = sr
  end
  sr.points[#sr.points + 1] = { m.kl, m.reward_b }
end
for i = 2, #series do
  local sr = series[i]
  table.sort(sr.points, function(p, q) return p[1] < q[1] end)
  sr.x, sr.y = {}, {}
  for k, p in ipairs(sr.points) do sr.x[k], sr.y[k] = p[1], p[2] end
  sr.points = nil
end
ft.plot.line({ path = folder:path("reward_vs_kl.png"), width = 800, height = 480, markers = true, yscale = "log",
  title = ("Judge B's P(%s) against KL(policy || reference)"):format(args.target),
  xlabel = "KL per sequence (nats)", ylabel = "mean reward (judge B)", series = series, legend = "outside" })
local s = { ("Samples (temperature 1) toward %s\n"):format(args.target), "== before ==" }
for _, t in ipairs(before.samples) do s[#s + 1] = t .. "\n--" end
for _, m in ipairs(results.methods) do
  s[#s + 1] = ("== after %s =="):format(m.label)
  for _, t in ipairs(m.samples) do s[#s + 1] = t .. "\n--" end
end
ft.fs.write(folder:path("samples.txt"), table.concat(s, "\n") .. "\n")
log("total %.1f s", ft.clock() - t_start)
folder:finish("results.json, results.csv, reward_vs_kl.png, samples.txt, judge_a.h5, judge_b.h5")
