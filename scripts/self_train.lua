-- Weak supervision and self-training: a classifier trained without gold training labels.
--
--   ftlua scripts/self_train.lua --threads 2                  # text: fortunes by topic
--   ftlua scripts/self_train.lua --task vision --threads 2    # Fashion-MNIST's non-clothing classes
--   ftlua scripts/self_train.lua --init random --limit 64 --steps 6 --self-steps 6 --gold-steps 4 \
--     --eval-every 3 --max-bytes 32 --batch-size 8 --out /tmp/st   # smoke run, random weights
--
-- Text (--task text): fortunes of the four categories held out of the GPT's pretraining
-- (computers, politics, science, songs-poems) classified by topic. The training entries carry
-- no label: keyword labeling functions vote (or abstain) and their majority is the weak label.
-- A small gold dev set (--dev-per-class entries per class, a seeded draw from the training
-- entries) serves for the labeling functions' report and for every choice: each method keeps
-- its state at the evaluation with the best dev accuracy, and stops after --patience
-- evaluations without improvement. Test entries (a seeded hash split by entry, --test-fraction
-- of each category) are used for the final accuracies only. Methods:
--   LF majority vote       the weak labels themselves (abstentions count as wrong)
--   weak-label fine-tune   pretrained GPT + new head trained on the weakly labelled entries
--   COSINE                 from that model, contrastive self-training on the whole unlabelled
--                          pool (ft.selftrain.cosine, Yu et al. 2021)
--   pseudo-labelling       from that model, cross-entropy on the teacher's predictions with
--                          confidence >= --tau (ft.selftrain.pseudo_label)
--   gold-only supervised   pretrained model + new head trained on the dev set alone, for
--                          reference: a fixed --gold-steps, since no other labels are left
--                          to choose with
-- The model sees the end-of-text byte and the first --max-bytes bytes of each entry; the
-- labeling functions read the whole entry. Classifier: models/gpt2_classifier.lua with mean
-- pooling over the real tokens (--pooling).
--
-- Vision (--task vision): Fashion-MNIST's Sandal, Sneaker, Bag and Ankle boot (ft labels 6, 8,
-- 9, 10, relabelled 1..4), which the pretrained ResNet-S never saw. --labels-per-class
-- labelled training images train a head on the frozen network (chosen on dev); its predictions
-- on the rest of the training images are the weak labels. Dev: --dev-per-class other training
-- images per class. Then weak-label fine-tuning of the whole network, COSINE,
-- pseudo-labelling and the gold-only reference as for text, evaluated on the test images of
-- the four classes.
--
-- Self-training (both tasks): the student starts from the weak-label model, the teacher is a
-- copy of the student refreshed every --T steps, the learning rate is --self-lr. Thresholds:
-- COSINE keeps samples whose confidence 1 - H(p) / log C exceeds --xi, pseudo-labelling those
-- whose top probability reaches --tau. With --balance on, the unlabelled batches hold equal
-- shares of the classes the weak-label model predicts on the pool, from the --select fraction
-- of each class's most confident predictions (class-balanced self-training). With --augment
-- strong (vision) the student trains on augmented images while the teacher labels clean ones.
-- Every choice was made on the dev sets (100 per class: at 25 per class, dev accuracy moves by
-- +-3 points by chance, more than the differences being chosen between):
--   vision: --self-lr = --lr (dev 93.25% after COSINE against 91.50% with --lr / 10), COSINE's
--           and pseudo-labelling's usual xi = 0.6 and tau = 0.9, plain batches, no augmentation
--           (with --augment strong COSINE reached 90.70% on a 250-per-class dev set, 93.10%
--           without).
--   text:   --self-lr = --lr, balanced batches from the 30% most confident predictions of each
--           class, xi = 0, tau = 0 (dev 65% after COSINE; with --lr / 10, plain batches,
--           xi = 0.6 / tau = 0.9 or the whole pool, self-training never beat its starting
--           point's 64% on dev). Its weak-label model is confident almost only on songs-poems
--           (verse is easy to spot): one threshold for all classes feeds the student mostly that
--           class and it collapses onto it.
--
-- Output: the run's folder (--out, default runs/self_train/<task>/<date-time>, printed at the
-- start and the end): results.json, results.csv, accuracy.png (dev and test accuracy per
-- method, values on the bars), curve.png (dev accuracy at every evaluation of each trained
-- method: the learning curves), <method>.jsonl (training losses and dev accuracies), and for
-- text lf_report.txt. The table is also printed. The stages themselves are
-- ft.selftrain.pipeline.
local ft = require "ft"
local argparse = require "argparse"

local gpt2_classifier = require "ft.models.gpt2_classifier"
local pipeline = require "ft.selftrain.pipeline"

local nn, F = ft.nn, ft.nn.functional
local st, P, R = ft.selftrain, ft.progress, ft.recipe
local log = P.log

-- Per-task defaults, chosen on the dev sets (see the header).
local DEFAULTS = {
  text = { checkpoint = "gpt_fortunes.h5", lr = 1e-4, batch_size = 16, steps = 300, xi = 0, tau = 0,
    balance = "on", select = 0.3 },
  vision = { checkpoint = "resnet_s_clothing.h5", lr = 0.01, batch_size = 32, steps = 300, xi = 0.6,
    tau = 0.9, balance = "off", select = 1 },
}

local positive, rate = R.integer({ min = 1 }), R.number({ above = 0 })
local parser = argparse("self_train.lua", "Weak supervision and self-training (COSINE) on text or images.")
parser:option("--task", "text or vision.", "text"):choices({ "text", "vision" })
parser:option("--checkpoint", "Pretrained model (default: models/gpt_fortunes.h5 for text, "
  .. "models/resnet_s_clothing.h5 for vision).")
parser:option("--init", "pretrained (from --checkpoint) or random (small random model: smoke runs).", "pretrained")
  :choices({ "pretrained", "random" })
parser:option("--steps", "Steps of weak-label fine-tuning (default 300).")
  :convert(positive)
parser:option("--epochs", "Weak-label fine-tuning in passes over the weakly labelled data (overrides --steps).")
  :convert(positive)
parser:option("--self-steps", "Steps of COSINE and of pseudo-labelling (default: --steps).")
  :convert(positive)
parser:option("--gold-steps", "Steps of the gold-only supervised model.", "150"):convert(positive)
parser:option("--lr", "Learning rate (default 1e-4 AdamW for text, 0.01 SGD for vision).")
  :convert(rate)
parser:option("--self-lr", "Learning rate of COSINE and pseudo-labelling (default: --lr).")
  :convert(rate)
parser:option("--batch-size", "Examples per batch (default 16 for text, 32 for vision).")
  :convert(positive)
parser:option("--seed", "Random seed (splits, draws, initialisation, batches).", "1"):convert(R.integer({}))
parser:option("--threads", "Threads (default: all cores)."):convert(R.integer({ min = 1, max = 1024 }))
parser:option("--out", "The run's folder (default: runs/self_train/<task>/<date-time>).")
parser:option("--labels-per-class", "Vision: labelled training images per class.", "10"):convert(positive)
parser:option("--dev-per-class", "Gold dev examples per class (early stopping, choices).", "100")
  :convert(positive)
parser:option("--limit", "Smoke runs: at most N unlabelled and N test examples."):convert(positive)
parser:option("--eval-every", "Dev evaluation every N steps.", "25"):convert(positive)
parser:option("--patience", "Stop after N dev evaluations without improvement.", "4"):convert(positive)
parser:option("--max-bytes", "Text: bytes of each entry the model reads.", "128"):convert(positive)
parser:option("--test-fraction", "Text: fraction of each category held out for testing, in (0, 1).", "0.2")
  :convert(R.number({ above = 0, below = 1 }))
parser:option("--pooling", "Text: classifier pooling, mean or last.", "mean"):choices({ "mean", "last" })
parser:option("--dropout", "Text: dropout while fine-tuning, in [0, 1).", "0.1"):convert(R.number({ min = 0, below = 1 }))
parser:option("--T", "Self-training: steps between teacher updates.", "50"):convert(positive)
parser:option("--xi", "COSINE: confidence threshold on 1 - entropy / log C (default 0 for text, 0.6 for "
  .. "vision), in [0, 1].")
  :convert(R.number({ min = 0, max = 1 }))
parser:option("--lambda", "COSINE: weight of the contrastive regulariser.", "0.1"):convert(R.number({ min = 0 }))
parser:option("--balance", "Self-training: class-balanced unlabelled batches (by the weak-label model's "
  .. "predictions), on or off (default on for text, off for vision).")
  :choices({ "on", "off" })
parser:option("--select", "Self-training with --balance on: the fraction of each predicted class's pool "
  .. "examples kept, the most confident first (default 0.3 for text, 1 for vision), in (0, 1].")
  :convert(R.number({ above = 0, max = 1 }))
parser:option("--augment", "Vision: noise on the training model's images (weak-label fine-tuning and the "
  .. "self-training student; the teacher labels clean images), none or strong.", "none")
  :choices({ "none", "strong" })
parser:option("--tau", "Pseudo-labelling: confidence threshold (default 0 for text, 0.9 for vision), in [0, 1].")
  :convert(R.number({ min = 0, max = 1 }))
local args = R.parse(parser)

local D = DEFAULTS[args.task]
args.checkpoint = args.checkpoint or R.model_path(D.checkpoint)
args.lr = args.lr or D.lr
args.self_lr = args.self_lr or args.lr
args.batch_size = args.batch_size or D.batch_size
args.steps = args.steps or D.steps
args.xi = args.xi or D.xi
args.tau = args.tau or D.tau
args.select = args.select or D.select
args.balance = args.balance or D.balance
local command = "ftlua scripts/self_train.lua " .. table.concat(arg, " ")

local function fail(fmt, ...) R.fail(parser, fmt, ...) end

-- Flags of the other task are a mistake, not a no-op.
local ONLY = { vision = { "labels_per_class", "augment" }, text = { "max_bytes", "pooling", "dropout" } }
for task, keys in pairs(ONLY) do
  if task ~= args.task then
    for _, k in ipairs(keys) do
      local given = false
      for _, a in ipairs(arg) do
        local flag = "--" .. k:gsub("_", "-")
        if a == flag or a:sub(1, #flag + 1) == flag .. "=" then given = true end
      end
      if given then R.usage_error(parser, "--%s applies to --task %s only", k:gsub("_", "-"), task) end
    end
  end
end
if args.init == "pretrained" and not (ft.fs.exists(args.checkpoint) and not ft.fs.is_dir(args.checkpoint)) then
  R.usage_error(parser, "checkpoint %s not found; make it (see models/%s), pass --checkpoint, or use --init random",
    args.checkpoint, args.task == "text" and "TEXT.md" or "README.md")
end

local run = R.run(parser, args.out, { name = "self_train/" .. args.task })
local out_dir = run.dir
if args.threads then ft.set_num_threads(args.threads) end
ft.manual_seed(args.seed)
local started = ft.clock()

local write_file = ft.fs.write

local function pct(v) return v and ("%.2f%%"):format(100 * v) or "-" end

-- The training methods both tasks share (weak-label fine-tuning, COSINE, pseudo-labelling).
local M = pipeline.new({ out_dir = out_dir, seed = args.seed, batch_size = args.batch_size, steps = args.steps,
  epochs = args.epochs, self_steps = args.self_steps, gold_steps = args.gold_steps, eval_every = args.eval_every,
  patience = args.patience, self_lr = args.self_lr, T = args.T, xi = args.xi, lambda = args.lambda, tau = args.tau,
  balance = args.balance, select = args.select })
local copy_state, endless, accuracy = pipeline.copy_state, pipeline.endless, pipeline.accuracy

-- ---- text -------------------------------------------------------------------------------------

local CATEGORIES = { "computers", "politics", "science", "songs-poems" }
local COMPUTERS, POLITICS, SCIENCE, SONGS = 1, 2, 3, 4

-- Keyword labeling functions (whole words, any case; a keyword may be a phrase), written from
-- what each topic is about, plus one layout heuristic for verse.
local function text_lfs()
  local kw = st.keyword_lf
  local lfs = {
    kw("computer", COMPUTERS, { "computer", "computers", "computing", "computation" }),
    kw("programming", COMPUTERS, { "program", "programs", "programmer", "programmers", "programming",
      "code", "coding", "debug", "debugging", "bug", "bugs", "compiler", "software", "hardware" }),
    kw("systems", COMPUTERS, { "unix", "linux", "ms-dos", "operating system", "kernel", "emacs", "vms",
      "mainframe", "ibm", "cpu", "disk", "byte", "bytes", "terminal", "keyboard", "hacker", "hackers" }),
    kw("languages", COMPUTERS, { "fortran", "cobol", "lisp", "pascal", "apl", "c++", "perl", "algol",
      "assembler", "assembly language" }),
    kw("net", COMPUTERS, { "usenet", "internet", "e-mail", "email", "newsgroup", "newsgroups", "network",
      "modem", "the net" }),
    kw("government", POLITICS, { "government", "governments", "congress", "senate", "senator", "senators",
      "parliament", "politician", "politicians", "politics", "political", "bureaucrat", "bureaucracy" }),
    kw("elections", POLITICS, { "vote", "votes", "voting", "voter", "voters", "election", "elections",
      "elected", "candidate", "campaign", "democrat", "democrats", "republican", "republicans" }),
    kw("state", POLITICS, { "president", "presidents", "nation", "nations", "tax", "taxes", "taxation", "irs",
      "citizen", "citizens", "constitution", "the state", "public office", "statesman" }),
    kw("ideology", POLITICS, { "democracy", "freedom", "liberty", "communism", "communist", "socialism",
      "capitalism", "revolution", "tyranny", "dictator", "dictatorship", "liberal", "conservative" }),
    kw("war_and_nations", POLITICS, { "war", "wars", "peace", "army", "armies", "soldier", "soldiers",
      "military", "treaty", "diplomat", "diplomacy", "empire", "patriot", "patriotism", "patriotic", "soviet",
      "russia", "russians", "america", "american", "americans" }),
    kw("leaders", POLITICS, { "reagan", "nixon", "kennedy", "lincoln", "jefferson", "truman", "churchill",
      "roosevelt", "carter", "eisenhower", "white house" }),
    kw("science", SCIENCE, { "science", "sciences", "scientist", "scientists", "scientific", "research",
      "theory", "experiment", "experiments", "hypothesis", "laboratory" }),
    kw("physics", SCIENCE, { "physics", "physicist", "physicists", "atom", "atoms", "quantum", "relativity",
      "gravity", "einstein", "newton", "galileo", "electron", "electrons", "particle", "entropy" }),
    kw("mathematics", SCIENCE, { "mathematics", "mathematician", "mathematicians", "math", "theorem",
      "equation", "equations", "calculus", "algebra", "geometry" }),
    kw("life_and_matter", SCIENCE, { "chemist", "chemistry", "chemical", "biology", "biologist", "evolution",
      "species", "molecule", "molecules", "dna", "organism", "organisms" }),
    kw("astronomy", SCIENCE, { "astronomer", "astronomy", "telescope", "planet", "planets", "galaxy",
      "universe", "comet" }),
    kw("song", SONGS, { "song", "songs", "sing", "sings", "sang", "singing", "tune", "melody", "chorus",
      "lyrics", "refrain" }),
    kw("poem", SONGS, { "poem", "poems", "poet", "poets", "poetry", "rhyme", "rhymes", "sonnet", "limerick",
      "verse", "verses", "ode" }),
    kw("archaic", SONGS, { "thee", "thou", "thy", "thine", "o'er", "ne'er", "e'er", "'tis", "'twas", "ye" }),
  }
  -- Verse: four or more lines, all short, the attribution line ("-- Author") left out.
  lfs[#lfs + 1] = st.lf("verse_layout", function(text)
    local n, long = 0, false
    for line in (text .. "\n"):gmatch("(.-)\n") do
      if not line:find("^%s*%-%-") and line:find("%S") then
        n = n + 1
        if #line > 48 then long = true end
      end
    end
    if n >= 4 and not long then return SONGS end
  end, SONGS)
  return lfs
end

-- lf_report's table as JSON-able data: {n, coverage, overlap, conflict, lfs = {per LF}}.
local function lf_summary(report)
  local out = { n = report.n, coverage = report.coverage, overlap = report.overlap, conflict = report.conflict,
    lfs = {} }
  for j, r in ipairs(report) do
    out.lfs[j] = { name = r.name, polarity = table.concat(r.polarity, " "), coverage = r.coverage,
      overlaps = r.overlaps, conflicts = r.conflicts, correct = r.correct, incorrect = r.incorrect,
      accuracy = r.accuracy }
  end
  return out
end

local function text_task()
  local t_data = ft.clock()
  local corpus = ft.text.fortunes({ categories = CATEGORIES })
  -- An entry filed under two categories has no single true topic: left out.
  local count = {}
  for _, name in ipairs(CATEGORIES) do
    for _, e in ipairs(corpus[name]) do count[e] = (count[e] or 0) + 1 end
  end
  local train_e, train_y, test_e, test_y = {}, {}, {}, {}
  for c, name in ipairs(CATEGORIES) do
    local kept = {}
    for _, e in ipairs(corpus[name]) do
      if count[e] == 1 then kept[#kept + 1] = e end
    end
    local rest, _, test = ft.text.split(kept, { val_fraction = 0, test_fraction = args.test_fraction,
      seed = args.seed })
    for _, e in ipairs(rest) do train_e[#train_e + 1], train_y[#train_y + 1] = e, c end
    for _, e in ipairs(test) do test_e[#test_e + 1], test_y[#test_y + 1] = e, c end
  end
  -- Datasets of entry numbers, so that ft.data draws the dev set and the limits.
  local function numbered(ys)
    return { x = ft.arange(1, #ys + 1), y = ft.tensor(ys, { dtype = "int64" }), classes = CATEGORIES }
  end
  local dev_set, pool_set = ft.data.per_class(numbered(train_y), args.dev_per_class, { seed = args.seed })
  local test_set = numbered(test_y)
  if args.limit then
    if args.limit < pool_set.y:size(1) then pool_set = ft.data.split(pool_set, args.limit, { seed = args.seed }).val end
    if args.limit < test_set.y:size(1) then test_set = ft.data.split(test_set, args.limit, { seed = args.seed }).val end
  end
  local function entries(set, source)
    local out = {}
    for i, k in ipairs(set.x:totable()) do out[i] = source[k] end
    return out, set.y:totable()
  end
  local pool_texts, pool_gold = entries(pool_set, train_e)
  local dev_texts, dev_gold = entries(dev_set, train_e)
  local test_texts, test_gold = entries(test_set, test_e)
  log("fortunes %s: %d unlabelled training entries, %d dev (%d per class), %d test; %.1f s",
    table.concat(CATEGORIES, ", "), #pool_texts, #dev_texts, args.dev_per_class, #test_texts, ft.clock() - t_data)

  -- Weak labels.
  local lfs = text_lfs()
  local pool_votes = st.apply_lfs(lfs, pool_texts)
  local weak, coverage = st.majority_vote(pool_votes, #CATEGORIES)
  local dev_votes = st.apply_lfs(lfs, dev_texts)
  local pool_report = st.format_report(st.lf_report(lfs, pool_votes))
  local dev_report_t = st.lf_report(lfs, dev_votes, { gold = dev_gold })
  local dev_report = st.format_report(dev_report_t)
  local weak_right, weak_n = 0, 0
  for i, w in ipairs(weak) do
    if w > 0 then
      weak_n = weak_n + 1
      if w == pool_gold[i] then weak_right = weak_right + 1 end
    end
  end
  local class_list = {}
  for c, name in ipairs(CATEGORIES) do class_list[c] = c .. " = " .. name end
  local report_text = ("classes: %s\n\nunlabelled pool:\n%s\n\ndev set (gold labels):\n%s\n"):format(
    table.concat(class_list, ", "), pool_report, dev_report)
  log("labeling functions (%s):\n%s", table.concat(class_list, ", "), report_text:match("unlabelled.*"))
  log("majority vote on the pool: %d of %d entries labelled (coverage %s); their accuracy against the hidden "
    .. "labels %s", weak_n, #weak, pct(coverage), pct(weak_n > 0 and weak_right / weak_n or nil))
  write_file(out_dir .. "/lf_report.txt", report_text)
  if weak_n == 0 then fail("no labeling function fires on the unlabelled pool") end

  local function vote_accuracy(texts, gold)
    local labels, cov = st.majority_vote(st.apply_lfs(lfs, texts), #CATEGORIES)
    local right = 0
    for i, l in ipairs(labels) do if l == gold[i] then right = right + 1 end end
    return right / #gold, cov
  end
  local lf_test, lf_test_cov = vote_accuracy(test_texts, test_gold)
  local lf_dev, lf_dev_cov = vote_accuracy(dev_texts, dev_gold)

  -- Model.
  local base_config, body
  if args.init == "pretrained" then
    local lm, meta = ft.text.load_checkpoint(args.checkpoint)
    base_config, body = lm.config, copy_state(lm.transformer)
    log("pretrained GPT %s: %d layers, width %d, held out of pretraining: %s", args.checkpoint,
      base_config.n_layer, base_config.n_embd, table.concat(meta.held_out or {}, ", "))
  else
    base_config = ft.models.config("gpt-s", { n_layer = 2, n_embd = 64, n_head = 2 })
    log("random GPT: 2 layers, width 64 (--init random)")
  end
  if args.max_bytes + 1 > base_config.n_positions then
    fail("--max-bytes %d needs %d positions; the model has %d", args.max_bytes, args.max_bytes + 1,
      base_config.n_positions)
  end
  local config = ft.models.copy_config(base_config, { num_labels = #CATEGORIES, classifier_pooling = args.pooling,
    attn_pdrop = args.dropout, embd_pdrop = args.dropout, resid_pdrop = args.dropout,
    architectures = { "GPT2ForSequenceClassification" } })
  local function new_model()
    local m = gpt2_classifier.GPT2ForSequenceClassification(config)
    if body then m.transformer:load_state_dict(body) end
    return m
  end

  -- Each entry as the end-of-text byte (what starts every entry in pretraining) and its first
  -- max_bytes bytes, right-padded.
  local tok = ft.tokenizer.bytes()
  local function encode(texts)
    local s = {}
    for i, e in ipairs(texts) do s[i] = ft.text.EOT .. e:sub(1, args.max_bytes) end
    local b = tok:encode_batch(s)
    return { ids = b.input_ids, mask = b.attention_mask, lengths = b.attention_mask:sum(2):totable() }
  end
  local function batch_of(enc, rows, labels)
    local idx = ft.tensor(rows, { dtype = "int64" })
    local width = 1
    for _, r in ipairs(rows) do width = math.max(width, math.tointeger(enc.lengths[r])) end
    local b = { ids = enc.ids:index_select(1, idx):narrow(2, 1, width):contiguous(),
      mask = enc.mask:index_select(1, idx):narrow(2, 1, width):contiguous() }
    if labels then
      local y = {}
      for i, r in ipairs(rows) do y[i] = labels[r] end
      b.y = ft.tensor(y, { dtype = "int64" })
    end
    return b
  end
  -- Evaluation batches, longest first (less padding per batch).
  local function eval_batches(texts, gold)
    local enc = encode(texts)
    local order = {}
    for i = 1, #texts do order[i] = i end
    table.sort(order, function(a, b) return enc.lengths[a] > enc.lengths[b] end)
    local out = {}
    for i = 1, #order, 64 do out[#out + 1] = batch_of(enc, table.move(order, i, math.min(i + 63, #order), 1, {}), gold) end
    return out
  end
  local pool_enc = encode(pool_texts)
  local covered = {}
  for i, w in ipairs(weak) do if w > 0 then covered[#covered + 1] = i end end
  local weak_rows = ft.tensor(covered, { dtype = "int64" })
  local weak_stream, weak_batches = endless({ x = weak_rows }, args.batch_size, args.seed,
    function(x) return batch_of(pool_enc, x:totable(), weak) end)
  local function unlabelled()
    return (endless({ x = ft.arange(1, #pool_texts + 1) }, args.batch_size, args.seed + 1,
      function(x) return batch_of(pool_enc, x:totable()) end))
  end

  local ctx = {
    new_model = new_model,
    forward = function(m, b)
      local out = m(b.ids, { attention_mask = b.mask })
      return out.logits, out.features
    end,
    optimizer = function(m, lr)
      local decay, no_decay = {}, {}
      for _, p in m:named_parameters() do
        if p:dim() >= 2 then decay[#decay + 1] = p else no_decay[#no_decay + 1] = p end
      end
      return ft.optim.AdamW({ { params = decay, weight_decay = 0.01 }, { params = no_decay, weight_decay = 0 } },
        { lr = lr or args.lr })
    end,
    weak = weak_stream, weak_batches = weak_batches, unlabelled = unlabelled, num_classes = #CATEGORIES,
    pool_size = #pool_texts, pool_batch = function(rows) return batch_of(pool_enc, rows) end,
    pool_gold = pool_gold,   -- for the log only: how accurate the selected pseudo-labels are
    dev = eval_batches(dev_texts, dev_gold), test = eval_batches(test_texts, test_gold),
  }

  local rows = { { key = "lf_vote", name = "LF majority vote",
    info = { test = lf_test, dev = lf_dev, test_coverage = lf_test_cov, dev_coverage = lf_dev_cov, seconds = 0 } } }
  log("LF majority vote: test accuracy %s (coverage %s; abstentions count as wrong)", pct(lf_test), pct(lf_test_cov))
  M:run_weak_methods(ctx, rows)

  local dev_enc = encode(dev_texts)
  M:run_gold(ctx, rows, #dev_texts, endless({ x = ft.arange(1, #dev_texts + 1) }, args.batch_size, args.seed + 2,
    function(x) return batch_of(dev_enc, x:totable(), dev_gold) end))

  return rows, {
    classes = CATEGORIES, pool = #pool_texts, dev = #dev_texts, test = #test_texts,
    weak_coverage = coverage, weak_accuracy = weak_n > 0 and weak_right / weak_n or nil, weak_labelled = weak_n,
    labeling_functions = lf_summary(dev_report_t), model = args.init == "pretrained" and args.checkpoint or "random",
  }
end

-- ---- vision -----------------------------------------------------------------------------------

local NON_CLOTHING = { 6, 8, 9, 10 }   -- Sandal, Sneaker, Bag, Ankle boot (ft labels)

-- A ResNet body (its fc replaced by Identity) and a new linear head: forward -> logits, features.
local Classifier = nn.Module:extend("ResNetClassifier")

function Classifier:init(body, num_classes)
  local width = body.fc.in_features
  body.fc = nn.Identity()
  self.body = body
  self.head = nn.Linear(width, num_classes)
end

function Classifier:forward(x)
  local features = self.body(x)
  return self.head(features), features
end

local function vision_task()
  local resnet = require "ft.models.resnet"
  local t_data = ft.clock()
  local train = ft.data.subset(ft.data.fashion_mnist({ split = "train" }), NON_CLOTHING, { relabel = true })
  local test = ft.data.subset(ft.data.fashion_mnist({ split = "test" }), NON_CLOTHING, { relabel = true })
  local classes = train.classes
  local shots, rest = ft.data.per_class(train, args.labels_per_class, { seed = args.seed })
  local dev, pool = ft.data.per_class(rest, args.dev_per_class, { seed = args.seed + 1 })
  if args.limit then
    if args.limit < pool.y:size(1) then pool = ft.data.split(pool, args.limit, { seed = args.seed }).val end
    if args.limit < test.y:size(1) then test = ft.data.split(test, args.limit, { seed = args.seed }).val end
  end
  log("Fashion-MNIST %s: %d labelled (%d per class), %d dev, %d unlabelled training images, %d test; %.1f s",
    table.concat(classes, ", "), shots.y:size(1), args.labels_per_class, dev.y:size(1), pool.y:size(1),
    test.y:size(1), ft.clock() - t_data)

  local body_state, body_config, mean, std
  if args.init == "pretrained" then
    local sd, meta = ft.load(args.checkpoint)
    body_config = ft.json.decode(meta.config)
    body_state, mean, std = sd, meta.mean, meta.std
    if not (mean and std) then fail("%s lacks the normalisation (mean, std) metadata", args.checkpoint) end
    log("pretrained ResNet-S %s (classes %s; test accuracy there %s)", args.checkpoint,
      meta.classes and table.concat(ft.json.decode(meta.classes), ", ") or "?", pct(meta.test_acc))
  else
    body_config = { num_classes = #classes, widths = { 8, 16, 32 } }
    mean, std = shots.x:mean():item(), shots.x:std():item()
    log("random ResNet-S, widths 8, 16, 32 (--init random)")
  end
  local function new_model()
    local body = resnet.resnet_s({ num_classes = body_config.num_classes, widths = body_config.widths })
    if body_state then body:load_state_dict(body_state) end
    return Classifier(body, #classes)
  end
  local function normalised(x) return (x - mean) / std end
  local function batches(ds, size)
    local out = {}
    for x, y in ft.data.loader(ds, { batch_size = size }):iter() do out[#out + 1] = { x = normalised(x), y = y } end
    return out
  end
  local forward = function(m, b) return m(b.x) end

  -- The weak labeller: a head on the frozen pretrained network, fit on the labelled images'
  -- features (computed once) with full-batch AdamW, keeping the step with the best dev accuracy.
  ft.manual_seed(args.seed + 1)
  local labeller = new_model()
  ft.peft.freeze(labeller, { "body" })
  labeller:eval()
  local t0 = ft.clock()
  local dev_batches = batches(dev, 500)
  local function features(list)
    local out = {}
    ft.no_grad(function()
      for i, b in ipairs(list) do out[i] = labeller.body(b.x) end
    end)
    return ft.cat(out, 1)
  end
  local shot_f, dev_f = features({ { x = normalised(shots.x) } }), features(dev_batches)
  local head = labeller.head
  local head_opt = ft.optim.AdamW(head:parameters(), { lr = 1e-2, weight_decay = 1e-2 })
  local es = ft.train.EarlyStopping({ metric = "dev_accuracy", mode = "max", patience = args.patience, model = head })
  local head_steps = 500
  local logger = M:logger("head", head_steps)
  local step = 0
  while step < head_steps do
    step = step + 1
    local loss = ft.train.step(head_opt, function() return F.cross_entropy(head(shot_f), shots.y) end)
    logger:step(step, { loss = loss }, shots.y:size(1))
    if step % args.eval_every == 0 or step == head_steps then
      local acc = ft.no_grad(function() return ft.train.accuracy(head(dev_f), dev.y) end)
      logger:record(step, { dev_accuracy = acc })
      if select(2, es:update(acc, step)) then break end
    end
  end
  logger:close()
  es:restore_best()
  local test_batches = batches(test, 500)
  local head_info = { dev = es.best, best_step = es.best_step, steps_run = step,
    test = accuracy(labeller, forward, test_batches), seconds = ft.clock() - t0 }
  log("few-shot head: best dev %s at step %d; test %s", pct(head_info.dev), head_info.best_step, pct(head_info.test))

  -- Weak labels: the head's predictions on the unlabelled images.
  t0 = ft.clock()
  local preds = {}
  labeller:eval()
  ft.no_grad(function()
    local n, done = pool.y:size(1), 0
    for x in ft.data.loader({ x = pool.x }, { batch_size = 500 }):iter() do
      for _, p in ipairs(labeller(normalised(x)):argmax(2):totable()) do preds[#preds + 1] = p end
      done = done + x:size(1)
      P.progress(done, n, 5000, "weak labels: %d/%d images", done, n)
    end
  end)
  P.clear()
  labeller = nil
  collectgarbage()
  local weak_y = ft.tensor(preds, { dtype = "int64" })
  local weak_accuracy = weak_y:eq(pool.y):sum():item() / #preds
  log("weak labels for %d images in %.1f s; their accuracy against the hidden labels %s", #preds,
    ft.clock() - t0, pct(weak_accuracy))

  -- Training batches keep their raw pixels for the augmentation.
  local weak_stream, weak_batches = endless({ x = pool.x, y = weak_y }, args.batch_size, args.seed,
    function(x, y) return { x = normalised(x), raw = x, y = y } end)
  local function unlabelled()
    return (endless({ x = pool.x }, args.batch_size, args.seed + 1,
      function(x) return { x = normalised(x), raw = x } end))
  end
  local augment
  if args.augment == "strong" then
    -- what pretraining used: crops, flips, rotations, contrast and noise on the raw pixels
    local aug = ft.transforms.augmentation("strong")
    augment = function(b) return { x = normalised((aug(b.raw))), y = b.y } end
  end
  local ctx = {
    new_model = new_model, forward = forward, augment = augment,
    optimizer = function(m, lr)
      return ft.optim.SGD(m:parameters(), { lr = lr or args.lr, momentum = 0.9, weight_decay = 5e-4 })
    end,
    weak = weak_stream, weak_batches = weak_batches, unlabelled = unlabelled, num_classes = #classes,
    pool_size = pool.y:size(1),
    pool_gold = pool.y:totable(),   -- for the log only
    pool_batch = function(rows)
      local raw = pool.x:index_select(1, ft.tensor(rows, { dtype = "int64" }))
      return { x = normalised(raw), raw = raw }
    end,
    dev = dev_batches, test = test_batches,
  }
  local rows = { { key = "head", name = "few-shot head (labeller)", info = head_info } }
  M:run_weak_methods(ctx, rows)
  M:run_gold(ctx, rows, dev.y:size(1), endless(dev, args.batch_size, args.seed + 2,
    function(x, y) return { x = normalised(x), y = y } end))
  return rows, {
    classes = classes, fashion_mnist_labels = NON_CLOTHING, labelled = shots.y:size(1), pool = pool.y:size(1),
    dev = dev.y:size(1), test = test.y:size(1), weak_accuracy = weak_accuracy,
    model = args.init == "pretrained" and args.checkpoint or "random",
  }
end

-- ---- main -------------------------------------------------------------------------------------

log("self_train %s: %d threads, seed %d, output %s", args.task, ft.get_num_threads(), args.seed, out_dir)
local rows, data = (args.task == "text" and text_task or vision_task)()
local seconds = ft.clock() - started

-- Table.
local header = { "method", "test acc", "dev acc", "best step", "steps", "time" }
local lines = { header }
for _, r in ipairs(rows) do
  local i = r.info
  local name = r.name
  if i.test_coverage then name = ("%s (coverage %s)"):format(name, pct(i.test_coverage)) end
  lines[#lines + 1] = { name, pct(i.test), r.key == "gold" and "(train)" or pct(i.dev),
    i.best_step and tostring(i.best_step) or "-", i.steps_run and tostring(i.steps_run) or "-", P.hms(i.seconds or 0) }
end
local widths = {}
for _, l in ipairs(lines) do
  for k, cell in ipairs(l) do widths[k] = math.max(widths[k] or 0, #cell) end
end
local table_lines = {}
for n, l in ipairs(lines) do
  local cells = {}
  for k, cell in ipairs(l) do
    cells[k] = k == 1 and cell .. (" "):rep(widths[k] - #cell) or (" "):rep(widths[k] - #cell) .. cell
  end
  table_lines[#table_lines + 1] = table.concat(cells, "  ")
  if n == 1 then table_lines[#table_lines + 1] = ("-"):rep(#table_lines[1]) end
end
log("\n%s accuracy (%d test examples; best step and every choice on the dev set):\n%s", args.task, data.test,
  table.concat(table_lines, "\n"))

-- Files.
local methods = {}
for _, r in ipairs(rows) do
  local m = { key = r.key, name = r.name }
  for k, v in pairs(r.info) do m[k == "test" and "test_accuracy" or k == "dev" and "dev_accuracy" or k] = v end
  methods[#methods + 1] = m
end
local by_key = {}
for _, m in ipairs(methods) do by_key[m.key] = m end
local verdict = {
  cosine_minus_weak = by_key.cosine.test_accuracy - by_key.weak.test_accuracy,
  pseudo_minus_weak = by_key.pseudo.test_accuracy - by_key.weak.test_accuracy,
}
local args_copy = {}
for k, v in pairs(args) do args_copy[k] = v end
ft.json.write(out_dir .. "/results.json", { task = args.task, command = command, args = args_copy, data = data,
  methods = methods, self_training_gain = verdict, threads = ft.get_num_threads(), seconds = seconds },
  { indent = true })
local csv = { "key,method,test_accuracy,dev_accuracy,best_step,steps,seconds" }
for _, m in ipairs(methods) do
  local function num(v) return v == nil and "" or ("%.6g"):format(v) end
  csv[#csv + 1] = ("%s,%s,%s,%s,%s,%s,%.1f"):format(m.key, m.name, num(m.test_accuracy),
    m.key == "gold" and "" or num(m.dev_accuracy), num(m.best_step), num(m.steps_run), m.seconds or 0)
end
write_file(out_dir .. "/results.csv", table.concat(csv, "\n") .. "\n")

local names, test_values, dev_values = {}, {}, {}
for i, m in ipairs(methods) do
  names[i] = m.name:gsub(" %(.*%)", "")
  test_values[i] = 100 * m.test_accuracy
  dev_values[i] = m.key == "gold" and 0 / 0 or 100 * (m.dev_accuracy or 0 / 0)
end
local shown = {}
for i = 1, #names do shown[#shown + 1], shown[#shown + 2] = test_values[i], dev_values[i] end
R.bars(run:path("accuracy.png"), { width = 900, height = 480, ylim = R.bar_limits(shown),
  title = args.task == "text" and "Fortune topics without gold training labels"
    or "Fashion-MNIST non-clothing classes from few labels",
  ylabel = "accuracy (%)", categories = names, legend = "upper left",
  series = { { name = "dev", values = dev_values }, { name = "test", values = test_values } } })
log("COSINE - weak-label fine-tune: %+.2f points; pseudo-labelling - weak-label fine-tune: %+.2f points",
  100 * verdict.cosine_minus_weak, 100 * verdict.pseudo_minus_weak)
-- The learning curves: dev accuracy at every evaluation of each trained method.
local curves = {}
for _, m in ipairs(methods) do
  local path = run:path(m.key .. ".jsonl")
  if ft.fs.exists(path) then
    curves[#curves + 1] = R.series(R.read_jsonl(path), "dev_accuracy", { scale = 100, name = m.name })
  end
end
R.curve(run:path("curve.png"), { title = ("%s: dev accuracy while training"):format(args.task),
  ylabel = "dev accuracy (%)", series = curves, legend = "outside" })
run:finish("results.json, results.csv, accuracy.png, curve.png")
