-- ft.pref.judge: a small text classifier that scores generated text, for preference recipes
-- whose reward is "how much does this read like category c": multinomial logistic regression
-- over hashed byte n-grams (each distinct n-gram of length 1..ngram of a text is one feature,
-- hashed into `buckets` slots; the logits are the mean of the features' weight rows plus a
-- bias), trained with AdamW on labelled texts. Fast enough to score thousands of completions
-- a second on a CPU, and deterministic given its seed.
--
--   local judge = require "ft.pref.judge"
--   local j = judge.train(examples, {classes = names, seed = 1})  -- examples: {text =, label =}
--   local acc = j:accuracy(test_examples)
--   local p = j:prob({"some text", ...}, "songs-poems")           -- Lua array of P(class | text)
--   j:save("judge.h5"); local j2 = judge.load("judge.h5")
local ft = require "ft"
local check = require "ft.check"

local M = {}

--- Judge: a trained (judge.train) or loaded (judge.load) classifier. Fields: classes (names),
-- index (name -> position), buckets, ngram, weight [buckets + 1, K], bias [K].
local Judge = {}
Judge.__index = Judge
M.Judge = Judge

local FNV_BASIS, FNV_PRIME = -3750763034362895579, 1099511628211   -- 64-bit FNV-1a (wraps)

--- judge.features(s, buckets, ngram) -> array of distinct feature ids (1-based, <= buckets):
-- the hashed byte n-grams of s of lengths 1..ngram, in first-seen order.
function M.features(s, buckets, ngram)
  local seen, out = {}, {}
  local n = #s
  for i = 1, n do
    local h = FNV_BASIS
    for k = 0, ngram - 1 do
      if i + k > n then break end
      h = (h ~ s:byte(i + k)) * FNV_PRIME
      -- mix the order in, so that "a" and "aa..." land apart
      local id = ((h ~ (h >> 29)) % buckets) + 1
      if not seen[id] then seen[id] = true; out[#out + 1] = id end
    end
  end
  return out
end

-- ids [B, L] int64 (padding: slot buckets + 1, a zero row that never trains), mask [B, L, 1].
local function batch_inputs(self, texts)
  local rows, L = {}, 1
  for i, s in ipairs(texts) do
    rows[i] = M.features(s, self.buckets, self.ngram)
    if #rows[i] > L then L = #rows[i] end
  end
  local ids, mask, counts = {}, {}, {}
  local pad = self.buckets + 1
  for i, r in ipairs(rows) do
    local irow, mrow = {}, {}
    for t = 1, L do
      if r[t] then irow[t], mrow[t] = r[t], 1 else irow[t], mrow[t] = pad, 0 end
    end
    ids[i], mask[i], counts[i] = irow, mrow, { math.max(#r, 1) }
  end
  return ft.tensor(ids, { dtype = "int64" }), ft.tensor(mask):unsqueeze(3), ft.tensor(counts)
end

--- judge:logits(texts) -> [N, K] (with a graph when the weights require it): the class scores
-- of an array of strings.
function Judge:logits(texts)
  local ids, mask, counts = batch_inputs(self, texts)
  local e = ft.nn.functional.embedding(ids, self.weight)   -- [N, L, K]
  return (e * mask):sum(2) / counts + self.bias
end

--- judge:probs(texts [, {batch_size = 256}]) -> [N, K] float32: softmax of the logits, no graph.
function Judge:probs(texts, opts)
  opts = ft.check_options("judge:probs", opts, { "batch_size" })
  local bs = check.integer("judge:probs", "batch_size", opts.batch_size, 256, { min = 1 })
  if type(texts) ~= "table" or #texts == 0 then
    error("judge:probs: texts must be a non-empty array of strings", 2)
  end
  local parts = {}
  ft.no_grad(function()
    for i = 1, #texts, bs do
      parts[#parts + 1] = self:logits(table.move(texts, i, math.min(i + bs - 1, #texts), 1, {})):softmax(2)
    end
  end)
  return #parts == 1 and parts[1] or ft.cat(parts, 1)
end

--- judge:class_index(name) -> the 1-based index of a class name (an error lists the classes).
function Judge:class_index(name)
  local k = self.index[name]
  if not k then
    error(("judge: no class '%s'; classes: %s"):format(tostring(name), table.concat(self.classes, ", ")), 2)
  end
  return k
end

--- judge:prob(texts, class) -> Lua array of P(class | text) for each string of texts.
function Judge:prob(texts, class)
  local k = self:class_index(class)
  return self:probs(texts):select(2, k):totable()
end

--- judge:accuracy(examples) -> fraction of examples ({text =, label =}) whose most probable
-- class is their label, and the mean probability given to the label.
function Judge:accuracy(examples)
  local texts = {}
  for i, ex in ipairs(examples) do texts[i] = ex.text end
  local p = self:probs(texts):totable()
  local right, mass = 0, 0
  for i, ex in ipairs(examples) do
    local row, best = p[i], 1
    for k = 2, #row do if row[k] > row[best] then best = k end end
    local want = self:class_index(ex.label)
    if best == want then right = right + 1 end
    mass = mass + row[want]
  end
  return right / #examples, mass / #examples
end

local TRAIN_OPTIONS = { "classes", "buckets", "ngram", "epochs", "lr", "batch_size", "weight_decay", "seed", "log" }

--- judge.train(examples, opts) -> judge: fits the classifier on examples ({text =, label =},
-- label one of opts.classes). opts: classes (array of names, required), buckets (2^16), ngram
-- (4), epochs (4), lr (0.05), batch_size (128), weight_decay (1e-4), seed (1), log (a
-- function(fmt, ...) for one line per epoch).
function M.train(examples, opts)
  local where = "ft.pref.judge.train"
  opts = ft.check_options(where, opts, TRAIN_OPTIONS)
  local classes = check.required(where, "classes", opts.classes)
  if type(classes) ~= "table" or #classes < 2 then
    error(where .. ": classes must be an array of at least 2 names", 2)
  end
  local self = M.new(classes, { buckets = opts.buckets, ngram = opts.ngram })
  local epochs = check.integer(where, "epochs", opts.epochs, 4, { min = 1 })
  local lr = check.number(where, "lr", opts.lr, 0.05, { above = 0 })
  local bs = check.integer(where, "batch_size", opts.batch_size, 128, { min = 1 })
  local wd = check.number(where, "weight_decay", opts.weight_decay, 1e-4, { min = 0 })
  local seed = check.integer(where, "seed", opts.seed, 1)
  if type(examples) ~= "table" or #examples == 0 then error(where .. ": examples must be a non-empty array", 2) end
  local labels = {}
  for i, ex in ipairs(examples) do
    if type(ex) ~= "table" or type(ex.text) ~= "string" then
      error(("%s: examples[%d] must be {text = string, label = class}"):format(where, i), 2)
    end
    local k = self.index[ex.label]
    if not k then
      error(("%s: examples[%d] has label '%s', not one of classes"):format(where, i, tostring(ex.label)), 2)
    end
    labels[i] = k
  end
  self.weight.requires_grad, self.bias.requires_grad = true, true
  local opt = ft.optim.AdamW({ self.weight, self.bias }, { lr = lr, weight_decay = wd })
  ft.manual_seed(seed)
  local steps = 0
  for epoch = 1, epochs do
    local order = ft.randperm(#examples):totable()
    local total, n = 0, 0
    for i = 1, #order, bs do
      local texts, target = {}, {}
      for j = i, math.min(i + bs - 1, #order) do
        local ex = examples[order[j]]
        texts[#texts + 1], target[#target + 1] = ex.text, labels[order[j]]
      end
      opt:zero_grad()
      local loss = ft.nn.functional.cross_entropy(self:logits(texts), ft.tensor(target, { dtype = "int64" }))
      loss:backward()
      opt:step()
      -- the padding row stays zero
      ft.no_grad(function() self.weight:narrow(1, self.buckets + 1, 1):zero_() end)
      total, n, steps = total + loss:item() * #texts, n + #texts, steps + 1
    end
    if opts.log then opts.log("judge epoch %d/%d: loss %.4f", epoch, epochs, total / n) end
  end
  self.weight.requires_grad, self.bias.requires_grad = false, false
  self.weight, self.bias = self.weight:detach(), self.bias:detach()
  return self
end

--- judge.new(classes [, {buckets = 65536, ngram = 4}]) -> an untrained judge (zero weights).
function M.new(classes, opts)
  local where = "ft.pref.judge.new"
  opts = ft.check_options(where, opts, { "buckets", "ngram" })
  local buckets = check.integer(where, "buckets", opts.buckets, 65536, { min = 1 })
  local ngram = check.integer(where, "ngram", opts.ngram, 4, { min = 1, max = 16 })
  local index = {}
  for i, c in ipairs(classes) do
    if type(c) ~= "string" then error(("%s: classes[%d] must be a string"):format(where, i), 2) end
    index[c] = i
  end
  return setmetatable({
    classes = classes, index = index, buckets = buckets, ngram = ngram,
    weight = ft.zeros(buckets + 1, #classes), bias = ft.zeros(#classes),
  }, Judge)
end

--- judge:save(path) -> path: weight, bias and the settings (classes, buckets, ngram) as metadata.
function Judge:save(path)
  ft.save(path, { weight = self.weight, bias = self.bias }, { metadata = {
    kind = "ft.pref.judge", classes = ft.json.encode(self.classes), buckets = tostring(self.buckets),
    ngram = tostring(self.ngram) } })
  return path
end

--- judge.load(path) -> judge written by judge:save.
function M.load(path)
  local sd, meta = ft.load(path)
  if not (meta and meta.kind == "ft.pref.judge") then
    error(("ft.pref.judge.load: %s is not a judge written by judge:save"):format(path), 2)
  end
  local j = M.new(ft.json.decode(meta.classes), { buckets = tonumber(meta.buckets), ngram = tonumber(meta.ngram) })
  j.weight, j.bias = sd.weight, sd.bias
  return j
end

return M
