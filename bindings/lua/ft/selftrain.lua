-- ft.selftrain: weak supervision and self-training.
--
--   local st = ft.selftrain
--   local lfs = {st.keyword_lf("great", 2, {"great", "loved it"}), st.keyword_lf("awful", 1, {"awful"})}
--   local votes = st.apply_lfs(lfs, texts)
--   local labels, coverage = st.majority_vote(votes, 2)
--   print(st.format_report(st.lf_report(lfs, votes, {gold = dev_labels})))
--   -- fine-tune on the weak labels (st.fit_weak or any supervised loop), then self-train:
--   st.cosine{model = net, teacher = Net(cfg), batches = next_unlabelled_batch,
--             forward = function(m, batch) return m:classify(batch) end,  -- logits [N,C], features [N,d]
--             optimizer = opt, steps = 2000, T = 100, xi = 0.6, lambda = 0.1}
--
-- COSINE is Yu et al. 2021, "Fine-Tuning Pre-trained Language Model with Weak Supervision: A
-- Contrastive-Regularized Self-Training Approach". Nothing here knows a data format: labeling
-- functions take one example of any kind, loops take batches of any kind and a forward
-- function, so the same code self-trains a transformer over token ids or a CNN over images.
-- Class ids are 1-based; 0 means "abstain" in votes and weak labels.
local ft = require "ft"
local F = require "ft.nn.functional"

local selftrain = {}

local TINY = 1e-30       -- floor inside log(): makes 0 * log(0) = 0 exactly
local DIST_FLOOR = 1e-12 -- floor under a squared distance before sqrt (finite gradients at 0)

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local SOURCE = debug.getinfo(1, "S").source

-- Raises "ft.selftrain.<fname>: message" at the user's call site (the first frame outside
-- this file), however deep inside the library the check sits.
local function fail(fname, fmt, ...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil then level = 0 break end
    if info.source ~= SOURCE then break end
    level = level + 1
  end
  error("ft.selftrain." .. fname .. ": " .. string.format(fmt, ...), level)
end

local function check_tensor(fname, what, t, ndim)
  if not ft.is_tensor(t) then fail(fname, "%s must be a tensor, got %s", what, type(t)) end
  if ndim and t:dim() ~= ndim then
    fail(fname, "%s must be %d-D, got shape %s", what, ndim, shape_str(t))
  end
end

local function check_rows(fname, what, t, n)
  if t:size(1) ~= n then
    fail(fname, "%s has shape %s but the batch has %d rows", what, shape_str(t), n)
  end
end

-- Unknown keys fail through the shared checker (allowed: a set name -> true).
local function check_options(fname, opts, allowed)
  return ft.check_options("ft.selftrain." .. fname, opts, allowed)
end

-- Value checks of ft.check, named "ft.selftrain.<fname>".
local function number_in(fname, key, v, default, range)
  return ft.check.number("ft.selftrain." .. fname, key, v, default, range)
end

local function set_of(...)
  local s = {}
  for _, k in ipairs({...}) do s[k] = true end
  return s
end

-- ============================================================================================
-- Labeling functions
-- ============================================================================================

local LF = {}
LF.__index = LF
LF.__call = function(self, example) return self.fn(example) end
LF.__tostring = function(self) return "LF(" .. self.name .. ")" end

-- Word characters for whole-word matching: ASCII letters, digits, '_' and every byte of a
-- multi-byte UTF-8 sequence (so accented letters never count as a word boundary).
local function is_word_byte(b)
  return b ~= nil and (b >= 128 or b == 95 or (b >= 48 and b <= 57) or (b >= 65 and b <= 90)
                       or (b >= 97 and b <= 122))
end

local function contains(text, keyword, whole_word)
  local from = 1
  while true do
    local i, j = text:find(keyword, from, true)
    if not i then return false end
    if not whole_word then return true end
    -- a boundary is needed only where the keyword itself starts/ends with a word character
    local left_ok = not (is_word_byte(keyword:byte(1)) and is_word_byte(text:byte(i - 1)))
    local right_ok = not (is_word_byte(keyword:byte(-1)) and is_word_byte(text:byte(j + 1)))
    if left_ok and right_ok then return true end
    from = i + 1
  end
end

--- keyword_lf(name, class, {keywords...}, {whole_word = true, case = false}) -> LF voting
-- `class` when the text contains any keyword (a keyword may be a phrase), else abstaining.
-- whole_word: a keyword must not be part of a longer word ("great" does not fire on "greatest").
-- case: true makes matching case-sensitive (case folding is ASCII, as string.lower).
function selftrain.keyword_lf(name, class, keywords, opts)
  opts = check_options("keyword_lf", opts, set_of("whole_word", "case"))
  if type(name) ~= "string" or name == "" then fail("keyword_lf", "name must be a non-empty string") end
  if math.type(class) ~= "integer" or class < 1 then
    fail("keyword_lf", "LF '%s': class must be an integer >= 1 (1-based), got %s", name, tostring(class))
  end
  if type(keywords) == "string" then keywords = {keywords} end
  if type(keywords) ~= "table" or #keywords == 0 then
    fail("keyword_lf", "LF '%s': keywords must be a non-empty array of strings", name)
  end
  local whole_word = ft.check.boolean("ft.selftrain.keyword_lf", "whole_word", opts.whole_word, true)
  local case_sensitive = ft.check.boolean("ft.selftrain.keyword_lf", "case", opts.case, false)
  local folded = {}
  for i, k in ipairs(keywords) do
    if type(k) ~= "string" or k == "" then
      fail("keyword_lf", "LF '%s': keyword %d must be a non-empty string, got %s", name, i, tostring(k))
    end
    folded[i] = case_sensitive and k or k:lower()
  end
  local function fn(text)
    if type(text) ~= "string" then
      error(string.format("ft.selftrain: LF '%s' expects a string, got %s", name, type(text)), 2)
    end
    if not case_sensitive then text = text:lower() end
    for _, k in ipairs(folded) do
      if contains(text, k, whole_word) then return class end
    end
    return nil
  end
  return setmetatable({name = name, class = class, keywords = keywords, fn = fn}, LF)
end

--- lf(name, fn, class?) -> LF wrapping any function(example) -> class id or nil (abstain).
function selftrain.lf(name, fn, class)
  if type(name) ~= "string" or name == "" then fail("lf", "name must be a non-empty string") end
  if type(fn) ~= "function" then fail("lf", "LF '%s': fn must be a function, got %s", name, type(fn)) end
  return setmetatable({name = name, class = class, fn = fn}, LF)
end

-- Accepts LFs, plain functions and tables {name=, fn=}; returns an array of LFs.
local function normalise_lfs(fname, lfs)
  if type(lfs) ~= "table" or #lfs == 0 then fail(fname, "lfs must be a non-empty array of LFs or functions") end
  local out = {}
  for j, l in ipairs(lfs) do
    if type(l) == "function" then
      out[j] = setmetatable({name = "lf" .. j, fn = l}, LF)
    elseif type(l) == "table" and type(l.fn) == "function" then
      out[j] = l
    else
      fail(fname, "LF %d must be a function or a table with a function field 'fn', got %s", j, type(l))
    end
  end
  return out
end

--- apply_lfs(lfs, examples, {tensor = false}) -> votes[i][j] = class given by LF j to example i,
-- 0 where it abstains (nil, false or 0). examples: an array, or a tensor whose slices along
-- dim 1 are the examples. A Lua array of arrays, or an int64 tensor [N, #lfs]
-- with {tensor = true}.
function selftrain.apply_lfs(lfs, examples, opts)
  opts = check_options("apply_lfs", opts, set_of("tensor"))
  ft.check.boolean("ft.selftrain.apply_lfs", "tensor", opts.tensor)
  lfs = normalise_lfs("apply_lfs", lfs)
  local n
  if ft.is_tensor(examples) then
    n = examples:dim() > 0 and examples:size(1) or 0   -- one example per slice along dim 1
  elseif type(examples) == "table" then
    n = #examples
  else
    fail("apply_lfs", "examples must be an array or a tensor, got %s", type(examples))
  end
  local votes = {}
  for i = 1, n do
    local row = {}
    for j, l in ipairs(lfs) do
      local v = l.fn(examples[i])
      if v == nil or v == false then v = 0 end
      if math.type(v) ~= "integer" or v < 0 then
        fail("apply_lfs", "LF '%s' returned %s for example %d (a class id >= 1, or nil to abstain)",
             l.name, tostring(v), i)
      end
      row[j] = v
    end
    votes[i] = row
  end
  if opts.tensor then
    if #votes == 0 then return ft.zeros(0, #lfs):long() end
    return ft.tensor(votes, {dtype = "int64"})
  end
  return votes
end

-- Votes (Lua array of arrays or a 2-D tensor) as Lua rows of integers; checks 0..num_classes.
local function vote_rows(fname, votes, num_classes)
  local rows
  if ft.is_tensor(votes) then
    check_tensor(fname, "votes", votes, 2)
    rows = votes:totable()
  elseif type(votes) == "table" then
    rows = votes
  else
    fail(fname, "votes must be an array of arrays or a 2-D tensor, got %s", type(votes))
  end
  local m = rows[1] and #rows[1] or 0
  for i, row in ipairs(rows) do
    if type(row) ~= "table" or #row ~= m then
      fail(fname, "votes row %d has %s entries, expected %d like row 1", i,
           type(row) == "table" and tostring(#row) or "no", m)
    end
    for j = 1, m do
      local v = math.tointeger(row[j])
      if v == nil or v < 0 or (num_classes and v > num_classes) then
        fail(fname, "vote %s at row %d, column %d is not a class id in 0..%s", tostring(row[j]), i, j,
             tostring(num_classes or "C"))
      end
    end
  end
  return rows, #rows, m
end

-- A small seeded generator (xorshift64), so random tie-breaking is reproducible and leaves
-- math.random's state alone.
local function xorshift(seed)
  local s = (math.tointeger(seed) or 0) ~ 0x2545F4914F6CDD1D
  if s == 0 then s = 1 end
  return function(k)
    s = s ~ (s << 13); s = s ~ (s >> 7); s = s ~ (s << 17)
    return (s >> 11) % k + 1
  end
end

--- majority_vote(votes, num_classes, {tie = "abstain"|"random", seed = 0}) -> labels, coverage.
-- labels[i] is the class with the most votes on example i (0 when no LF voted, or on a tie
-- with tie = "abstain"; tie = "random" picks among the tied classes with a seeded generator).
-- labels has the form of votes (a Lua array, or an int64 tensor [N]); coverage is the
-- fraction of examples that got a label.
function selftrain.majority_vote(votes, num_classes, opts)
  opts = check_options("majority_vote", opts, set_of("tie", "seed"))
  if math.type(num_classes) ~= "integer" or num_classes < 1 then
    fail("majority_vote", "num_classes must be an integer >= 1, got %s", tostring(num_classes))
  end
  local tie = opts.tie or "abstain"
  if tie ~= "abstain" and tie ~= "random" then
    fail("majority_vote", "tie must be 'abstain' or 'random', got '%s'", tostring(tie))
  end
  ft.check.integer("ft.selftrain.majority_vote", "seed", opts.seed)
  local rows, n = vote_rows("majority_vote", votes, num_classes)
  local pick = xorshift(opts.seed)
  local labels, labelled = {}, 0
  for i, row in ipairs(rows) do
    local counts = {}
    for _, v in ipairs(row) do
      v = math.tointeger(v)
      if v > 0 then counts[v] = (counts[v] or 0) + 1 end
    end
    local best, tied = 0, {}
    for c = 1, num_classes do
      local k = counts[c] or 0
      if k > best then best, tied = k, {c} elseif k == best and k > 0 then tied[#tied + 1] = c end
    end
    local label = 0
    if #tied == 1 then label = tied[1]
    elseif #tied > 1 and tie == "random" then label = tied[pick(#tied)] end
    labels[i] = label
    if label > 0 then labelled = labelled + 1 end
  end
  local coverage = n > 0 and labelled / n or 0
  if ft.is_tensor(votes) then
    return (n > 0 and ft.tensor(labels, {dtype = "int64"}) or ft.zeros(0):long()), coverage
  end
  return labels, coverage
end

--- lf_report(lfs, votes, {gold = labels}) -> per-LF statistics, as Snorkel's LFAnalysis.
-- report[j] = {name, polarity (sorted classes the LF voted), covered (count), coverage
-- (covered / N), overlaps and conflicts (fractions of the LF's covered examples where another
-- LF also voted / voted a different class; Snorkel's lf_overlaps / lf_conflicts divide the same
-- counts n_overlaps / n_conflicts by N instead), and with gold: correct, incorrect, accuracy
-- (over covered examples whose gold label is known, gold 0 = unknown; nil when there are none)}.
-- report.n, report.coverage / .overlap / .conflict: fractions of all examples with >= 1 vote,
-- >= 2 votes, two different classes voted.
function selftrain.lf_report(lfs, votes, opts)
  opts = check_options("lf_report", opts, set_of("gold"))
  local rows, n, m = vote_rows("lf_report", votes)
  if lfs ~= nil then
    lfs = normalise_lfs("lf_report", lfs)
    if #lfs ~= m then fail("lf_report", "%d LFs but the votes have %d columns", #lfs, m) end
  end
  local gold = opts.gold
  if ft.is_tensor(gold) then gold = gold:totable() end
  if gold ~= nil and (type(gold) ~= "table" or #gold ~= n) then
    fail("lf_report", "gold must hold one label per example (%d), got %s", n,
         type(gold) == "table" and (#gold .. " labels") or type(gold))
  end
  local report = {n = n}
  for j = 1, m do
    report[j] = {name = lfs and lfs[j].name or ("lf" .. j), polarity = {}, covered = 0,
                 n_overlaps = 0, n_conflicts = 0, correct = gold and 0 or nil, incorrect = gold and 0 or nil}
  end
  local any, several, disagree = 0, 0, 0
  local seen_class = {}
  for j = 1, m do seen_class[j] = {} end
  for i, row in ipairs(rows) do
    local voters, classes, first, mixed = 0, {}, nil, false
    for j = 1, m do
      local v = math.tointeger(row[j])
      if v > 0 then
        voters = voters + 1
        classes[v] = (classes[v] or 0) + 1
        if first and v ~= first then mixed = true end
        first = first or v
      end
    end
    if voters >= 1 then any = any + 1 end
    if voters >= 2 then several = several + 1 end
    if mixed then disagree = disagree + 1 end
    local g = gold and math.tointeger(gold[i]) or 0
    for j = 1, m do
      local v = math.tointeger(row[j])
      if v > 0 then
        local r = report[j]
        r.covered = r.covered + 1
        seen_class[j][v] = true
        if voters >= 2 then r.n_overlaps = r.n_overlaps + 1 end
        if classes[v] < voters then r.n_conflicts = r.n_conflicts + 1 end
        if gold and g and g > 0 then
          if v == g then r.correct = r.correct + 1 else r.incorrect = r.incorrect + 1 end
        end
      end
    end
  end
  for j = 1, m do
    local r = report[j]
    for c in pairs(seen_class[j]) do r.polarity[#r.polarity + 1] = c end
    table.sort(r.polarity)
    r.coverage = n > 0 and r.covered / n or 0
    r.overlaps = r.covered > 0 and r.n_overlaps / r.covered or 0
    r.conflicts = r.covered > 0 and r.n_conflicts / r.covered or 0
    if gold and r.correct + r.incorrect > 0 then r.accuracy = r.correct / (r.correct + r.incorrect) end
  end
  report.coverage = n > 0 and any / n or 0
  report.overlap = n > 0 and several / n or 0
  report.conflict = n > 0 and disagree / n or 0
  report.has_gold = gold ~= nil
  return report
end

--- format_report(report) -> a printable table of lf_report's numbers.
function selftrain.format_report(report)
  if type(report) ~= "table" or report.n == nil then fail("format_report", "expected the table lf_report returns") end
  local header = {"LF", "polarity", "coverage", "overlaps", "conflicts"}
  if report.has_gold then
    for _, h in ipairs({"correct", "incorrect", "accuracy"}) do header[#header + 1] = h end
  end
  local lines = {header}
  for _, r in ipairs(report) do
    local pol = {}
    for i, c in ipairs(r.polarity) do pol[i] = tostring(c) end
    local line = {r.name, "{" .. table.concat(pol, ",") .. "}", ("%.3f"):format(r.coverage),
                  ("%.3f"):format(r.overlaps), ("%.3f"):format(r.conflicts)}
    if report.has_gold then
      line[#line + 1] = tostring(r.correct)
      line[#line + 1] = tostring(r.incorrect)
      line[#line + 1] = r.accuracy and ("%.3f"):format(r.accuracy) or "-"
    end
    lines[#lines + 1] = line
  end
  local widths = {}
  for _, line in ipairs(lines) do
    for k, cell in ipairs(line) do widths[k] = math.max(widths[k] or 0, #cell) end
  end
  local out = {}
  for li, line in ipairs(lines) do
    local cells = {}
    for k, cell in ipairs(line) do
      -- names left-aligned, numbers right-aligned
      cells[k] = k == 1 and cell .. string.rep(" ", widths[k] - #cell) or string.rep(" ", widths[k] - #cell) .. cell
    end
    out[#out + 1] = table.concat(cells, "  ")
    if li == 1 then out[#out + 1] = string.rep("-", #out[1]) end
  end
  out[#out + 1] = ("%d examples: coverage %.3f, overlap %.3f, conflict %.3f"):format(
    report.n, report.coverage, report.overlap, report.conflict)
  return table.concat(out, "\n")
end

-- ============================================================================================
-- COSINE pieces: pure functions on tensors, differentiable with ft's autograd
-- ============================================================================================

local function check_probs(fname, p)
  check_tensor(fname, "p", p, 2)
  if p:size(2) < 2 then fail(fname, "p must have at least 2 classes, got shape %s", shape_str(p)) end
end

--- soft_targets(p [N,C], {power = 2}) -> t [N,C]: t_ij proportional to p_ij^power / f_j with
-- f_j = sum_i p_ij (the class's soft frequency in the batch), each row renormalised to sum 1.
-- Sharpens confident predictions while keeping frequent classes from taking over.
function selftrain.soft_targets(p, opts)
  opts = check_options("soft_targets", opts, set_of("power"))
  check_probs("soft_targets", p)
  local f = p:sum(1, true)
  local t = (p ^ number_in("soft_targets", "power", opts.power, 2, {above = 0})) / f
  return t / t:sum(2, true)
end

--- sample_weights(p [N,C], xi = 0) -> w [N], keep [N]: w_i = 1 - H(p_i) / log C (1 for a
-- one-hot prediction, 0 for a uniform one) and keep_i = 1 where w_i > xi, else 0 (float).
function selftrain.sample_weights(p, xi)
  check_probs("sample_weights", p)
  xi = number_in("sample_weights", "xi", xi, 0, {min = 0, max = 1})
  local entropy = -(p * p:clamp(TINY, nil):log()):sum(2)
  local w = 1 - entropy / math.log(p:size(2))
  return w, w:gt(xi)
end

-- keep defaults to w > 0; returns keep and the number of kept samples.
local function kept(fname, w, keep, n)
  check_tensor(fname, "w", w, 1)
  check_rows(fname, "w", w, n)
  if keep == nil then keep = w:gt(0) end
  check_tensor(fname, "keep", keep, 1)
  check_rows(fname, "keep", keep, n)
  if keep:dtype() ~= "float32" then keep = keep:float() end
  return keep, keep:sum():item()
end

--- kl_loss(student_log_probs [N,C], t [N,C], w [N], keep [N]?) -> scalar
--   sum_i keep_i * w_i * KL(t_i || q_i) / sum_i keep_i,  KL(t || q) = sum_j t_j (log t_j - log q_j)
-- i.e. the confidence-weighted KL averaged over the kept samples (the paper's 1/|C| sum over
-- the selected set; the reference code sums instead). keep defaults to w > 0. With no kept
-- sample the loss is 0 (still connected to student_log_probs, so backward works).
function selftrain.kl_loss(student_log_probs, t, w, keep)
  check_tensor("kl_loss", "student_log_probs", student_log_probs, 2)
  check_tensor("kl_loss", "t", t, 2)
  if shape_str(t) ~= shape_str(student_log_probs) then
    fail("kl_loss", "t has shape %s, student_log_probs %s", shape_str(t), shape_str(student_log_probs))
  end
  local n = student_log_probs:size(1)
  local k, n_kept = kept("kl_loss", w, keep, n)
  if n_kept == 0 then return (student_log_probs * 0):sum() end
  local kl = (t * (t:clamp(TINY, nil):log() - student_log_probs)):sum(2)
  return (kl * w * k):sum() / n_kept
end

-- Pseudo-labels [N] (as floats, for eq) from int64 labels or from targets/probabilities [N,C] (argmax).
local function hard_labels(fname, targets, n)
  check_tensor(fname, "targets", targets)
  local labels = targets
  if targets:dim() == 2 then
    labels = targets:argmax(2)
  elseif targets:dim() ~= 1 or targets:dtype() ~= "int64" then
    fail(fname, "targets must be [N,C] soft targets or [N] int64 labels, got %s %s",
         targets:dtype(), shape_str(targets))
  end
  check_rows(fname, "targets", labels, n)
  return labels:float()
end

--- contrastive_regulariser(features [N,d], targets, w [N], {margin = 1, distance = "scaled_l2",
-- keep = w > 0}) -> scalar. targets: soft targets / probabilities [N,C] (their argmax is the
-- pseudo-label) or int64 labels [N]. With W_ij = 1 when i and j share a pseudo-label:
--   l_ij = W_ij d_ij^2 + (1 - W_ij) max(0, margin - d_ij)^2
--   R = sum_{i,j kept} w_i w_j l_ij / n_kept^2
-- over all ordered pairs of kept samples, the diagonal included (it adds 0), the paper's
-- 1/|C|^2 normalisation. Distances (features are not normalised first):
--   "scaled_l2" (default) d_ij = ||v_i - v_j||_2 / sqrt(d): the reference code's "l2", so that
--               margin = 1 means the same whatever the feature width;
--   "l2"        d_ij = ||v_i - v_j||_2;
--   "cosine"    d_ij = 1 - cos(v_i, v_j).
-- Pass the STUDENT's features, computed with grad: the regulariser then shapes the student's
-- representation (computing it on a frozen teacher, as the reference code does, trains nothing).
function selftrain.contrastive_regulariser(features, targets, w, opts)
  opts = check_options("contrastive_regulariser", opts, set_of("margin", "distance", "keep"))
  local fname = "contrastive_regulariser"
  check_tensor(fname, "features", features, 2)
  local n, dim = features:size(1), features:size(2)
  local labels = hard_labels(fname, targets, n)
  local k, n_kept = kept(fname, w, opts.keep, n)
  if n_kept == 0 then return (features * 0):sum() end
  local margin = number_in(fname, "margin", opts.margin, 1, {min = 0})
  local distance = opts.distance or "scaled_l2"

  local dist_sq, dist
  if distance == "cosine" then
    local norms = (features * features):sum(2, true):sqrt():clamp(1e-12, nil)
    local v = features / norms
    dist = 1 - v:matmul(v:t())
    dist_sq = dist * dist
  elseif distance == "l2" or distance == "scaled_l2" then
    -- |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product instead of an [N,N,d] difference
    local sq = (features * features):sum(2, true)
    dist_sq = (sq + sq:t() - features:matmul(features:t()) * 2):clamp(0, nil)
    if distance == "scaled_l2" then dist_sq = dist_sq / dim end
    dist = dist_sq:clamp(DIST_FLOOR, nil):sqrt()
  else
    fail(fname, "distance must be 'scaled_l2', 'l2' or 'cosine', got '%s'", tostring(distance))
  end

  local same = labels:view(n, 1):eq(labels:view(1, n))
  local hinge = (margin - dist):relu()
  local pair_loss = same * dist_sq + (1 - same) * hinge * hinge
  local kw = w * k
  local pair_weight = kw:view(n, 1) * kw:view(1, n)
  return (pair_loss * pair_weight):sum() / (n_kept * n_kept)
end

local COSINE_LOSS_OPTIONS = set_of("xi", "lambda", "margin", "distance", "power")

--- cosine_loss(student_logits [N,C], student_features [N,d], teacher_probs [N,C],
-- {xi = 0.6, lambda = 0.1, margin = 1, distance = "scaled_l2", power = 2}) -> loss, parts
-- One COSINE objective: with t = soft_targets(teacher_probs) and w, keep =
-- sample_weights(teacher_probs, xi),
--   loss = kl_loss(log_softmax(student_logits), t, w, keep)
--        + lambda * contrastive_regulariser(student_features, t, w, {keep = keep, ...}).
-- parts = {kl =, contrastive =, kept = fraction of the batch kept} (numbers).
function selftrain.cosine_loss(student_logits, student_features, teacher_probs, opts)
  opts = check_options("cosine_loss", opts, COSINE_LOSS_OPTIONS)
  check_tensor("cosine_loss", "student_logits", student_logits, 2)
  check_tensor("cosine_loss", "teacher_probs", teacher_probs, 2)
  if shape_str(student_logits) ~= shape_str(teacher_probs) then
    fail("cosine_loss", "student logits have shape %s, teacher probabilities %s",
         shape_str(student_logits), shape_str(teacher_probs))
  end
  local lambda = number_in("cosine_loss", "lambda", opts.lambda, 0.1, {min = 0})
  number_in("cosine_loss", "xi", opts.xi, nil, {min = 0, max = 1})
  local p = teacher_probs:detach()
  local t = selftrain.soft_targets(p, {power = opts.power})
  local w, keep = selftrain.sample_weights(p, opts.xi or 0.6)
  local kl = selftrain.kl_loss(student_logits:log_softmax(2), t, w, keep)
  local loss, reg = kl, nil
  if lambda ~= 0 then
    if student_features == nil then
      fail("cosine_loss", "lambda = %g needs the student's features (forward must return logits, features)", lambda)
    end
    check_tensor("cosine_loss", "student_features", student_features, 2)
    check_rows("cosine_loss", "student_features", student_features, student_logits:size(1))
    reg = selftrain.contrastive_regulariser(student_features, t, w,
      {keep = keep, margin = opts.margin, distance = opts.distance})
    loss = kl + reg * lambda
  end
  return loss, {kl = kl:item(), contrastive = reg and reg:item() or 0,
                kept = keep:sum():item() / keep:size(1)}
end

-- ============================================================================================
-- Training loops
-- ============================================================================================

local LOOP_OPTIONS = set_of("model", "optimizer", "batches", "forward", "steps", "callback",
                            "clip_grad_norm", "scheduler", "augment")

local function loop_options(fname, opts, extra)
  if type(opts) ~= "table" then fail(fname, "expects a table of options, got %s", type(opts)) end
  local valid = {}
  for k in pairs(LOOP_OPTIONS) do valid[k] = true end
  for k in pairs(extra) do valid[k] = true end
  check_options(fname, opts, valid)
  number_in(fname, "clip_grad_norm", opts.clip_grad_norm, nil, {above = 0})
  if opts.scheduler ~= nil and (type(opts.scheduler) ~= "table" or type(opts.scheduler.step) ~= "function") then
    fail(fname, "scheduler must have a step method, got %s", type(opts.scheduler))
  end
  if not ft.nn.is_module(opts.model) then fail(fname, "model must be an ft.nn module") end
  local o = opts.optimizer
  if type(o) ~= "table" or type(o.step) ~= "function" or type(o.zero_grad) ~= "function" then
    fail(fname, "optimizer must have step and zero_grad methods (e.g. ft.optim.AdamW)")
  end
  if type(opts.forward) ~= "function" then
    fail(fname, "forward must be a function(model, batch) -> logits [N,C], features [N,d]")
  end
  if math.type(opts.steps) ~= "integer" or opts.steps < 1 then
    fail(fname, "steps must be an integer >= 1, got %s", tostring(opts.steps))
  end
  if opts.callback ~= nil and type(opts.callback) ~= "function" then
    fail(fname, "callback must be a function(record, model), got %s", type(opts.callback))
  end
  if opts.augment ~= nil and type(opts.augment) ~= "function" then
    fail(fname, "augment must be a function(batch) -> the student's batch, got %s", type(opts.augment))
  end
end

-- A function returning the next batch: the caller's iterator, or a cycle over an array.
local function batch_source(fname, batches)
  if type(batches) == "function" then return batches end
  if type(batches) == "table" and #batches > 0 then
    local i = 0
    return function()
      i = i % #batches + 1
      return batches[i]
    end
  end
  fail(fname, "batches must be an iterator function or a non-empty array of batches, got %s", type(batches))
end

-- The teacher model: the one given, or clone(model) once; refreshed by loading a copy of the
-- student's state into it, so it never shares a tensor with the student.
local function make_teacher(fname, opts)
  local teacher = opts.teacher
  if teacher == nil and opts.clone ~= nil then
    if type(opts.clone) ~= "function" then fail(fname, "clone must be a function(model) -> a new model") end
    teacher = opts.clone(opts.model)
  end
  if teacher == nil then
    fail(fname, "give teacher (a second model of the student's architecture) or clone (function(model) -> new model)")
  end
  if not ft.nn.is_module(teacher) then fail(fname, "the teacher must be an ft.nn module") end
  if teacher == opts.model then fail(fname, "the teacher must be a separate model, not the student itself") end
  local own = {}
  for _, p in ipairs(opts.model:parameters()) do own[p] = true end
  for name, p in teacher:named_parameters() do
    if own[p] then fail(fname, "the teacher shares parameter '%s' with the student", name) end
  end
  return teacher
end

local function check_logits(fname, logits, what)
  if not ft.is_tensor(logits) or logits:dim() ~= 2 then
    fail(fname, "forward must return logits [N,C] for the %s, got %s", what,
         ft.is_tensor(logits) and shape_str(logits) or type(logits))
  end
end

-- Shared loop: refresh the teacher every T steps, label the batch with it, take one optimizer
-- step on step_loss(student logits, features, teacher probabilities) -> loss, record. With
-- augment, the student sees augment(batch) while the teacher labels the clean batch (a noised
-- student, as Noisy Student and FixMatch: without noise the student can only copy its teacher).
local function run(fname, opts, step_loss)
  local model, optimizer, forward = opts.model, opts.optimizer, opts.forward
  local T = opts.T or 50
  if math.type(T) ~= "integer" or T < 1 then fail(fname, "T must be an integer >= 1, got %s", tostring(T)) end
  local next_batch = batch_source(fname, opts.batches)
  local teacher = make_teacher(fname, opts)
  local history = {teacher_updates = 0, stopped_early = false}
  for step = 1, opts.steps do
    local batch = next_batch()
    if batch == nil then break end
    if (step - 1) % T == 0 then
      teacher:load_state_dict(model:state_dict())
      teacher:eval()
      history.teacher_updates = history.teacher_updates + 1
    end
    local probs = ft.no_grad(function()
      local t_logits = forward(teacher, batch)
      check_logits(fname, t_logits, "teacher")
      return t_logits:softmax(2)
    end)
    model:train()
    local logits, features = forward(model, opts.augment and opts.augment(batch) or batch)
    check_logits(fname, logits, "student")
    local loss, record = step_loss(logits, features, probs)
    record.step = step
    if loss then
      optimizer:zero_grad()
      loss:backward()
      if opts.clip_grad_norm then ft.optim.clip_grad_norm(model:parameters(), opts.clip_grad_norm) end
      optimizer:step()
      record.loss = loss:item()
    else
      record.skipped = true   -- no sample passed the confidence filter
    end
    if opts.scheduler then opts.scheduler:step() end
    history[#history + 1] = record
    if opts.callback then
      local r = opts.callback(record, model)
      if type(r) == "table" then
        for key, v in pairs(r) do record[key] = v end
      end
      if r == true or (type(r) == "table" and r.stop) then
        history.stopped_early = true
        break
      end
    end
  end
  return history
end

--- cosine{model, teacher | clone, batches, forward, optimizer, steps, T = 50, xi = 0.6,
--         lambda = 0.1, margin = 1, distance = "scaled_l2", power = 2,
--         augment, callback, clip_grad_norm, scheduler} -> history
-- COSINE self-training. Every T steps (from step 1) the teacher becomes a snapshot of the
-- student (its state loaded into `teacher`, or into clone(model) made once). Each step takes
-- a batch (batches: a function returning the next batch, nil to end early, or an array cycled
-- through), runs forward(teacher, batch) under no_grad for the pseudo-labels and
-- forward(model, batch) -> logits, features in training mode (forward(model, augment(batch))
-- when augment is given), and takes one optimizer step on cosine_loss. callback(record, model)
-- runs after each step: return true (or a table with stop = true) to stop; fields of a
-- returned table are added to the step's record.
-- history: array of records {step, loss, kl, contrastive, kept}, plus history.teacher_updates
-- and history.stopped_early.
function selftrain.cosine(opts)
  local extra = set_of("teacher", "clone", "T", "xi", "lambda", "margin", "distance", "power")
  loop_options("cosine", opts, extra)
  local loss_opts = {xi = opts.xi, lambda = opts.lambda, margin = opts.margin,
                     distance = opts.distance, power = opts.power}
  return run("cosine", opts, function(logits, features, probs)
    local loss, parts = selftrain.cosine_loss(logits, features, probs, loss_opts)
    if parts.kept == 0 then loss = nil end
    return loss, parts
  end)
end

--- pseudo_label{model, teacher | clone, batches, forward, optimizer, steps, T = 50, tau = 0.9,
--               augment, callback, clip_grad_norm, scheduler} -> history
-- Plain pseudo-labelling, the lighter option: the teacher's predictions with max probability
-- >= tau become hard labels for a cross-entropy step (mean over those samples); the rest of
-- the batch is ignored. Same loop and history as cosine; records {step, loss, kept}.
function selftrain.pseudo_label(opts)
  loop_options("pseudo_label", opts, set_of("teacher", "clone", "T", "tau"))
  local tau = number_in("pseudo_label", "tau", opts.tau, 0.9, {min = 0})
  return run("pseudo_label", opts, function(logits, _, probs)
    local confidence, labels = probs:max(2)
    local rows = {}
    for i, c in ipairs(confidence:totable()) do
      if c >= tau then rows[#rows + 1] = i end
    end
    local record = {kept = #rows / logits:size(1)}
    if #rows == 0 then return nil, record end
    local idx = ft.tensor(rows, {dtype = "int64"})
    return F.cross_entropy(logits:index_select(1, idx), labels:index_select(1, idx)), record
  end)
end

--- fit_weak{model, optimizer, batches, forward, targets, steps, evaluate, eval_every = 50,
--           patience, augment, callback, clip_grad_norm, scheduler} -> history
-- The first COSINE stage: cross-entropy on weak labels. targets(batch) -> int64 labels [N],
-- 0 for examples no LF labelled (they are ignored); the model sees augment(batch) if given. With evaluate(model) -> score (higher is
-- better, e.g. accuracy on a small dev set) run every eval_every steps, the best state is kept
-- and restored at the end, and training stops after `patience` evaluations without
-- improvement. history: records {step, loss[, score]}, history.best_step, history.best_score.
function selftrain.fit_weak(opts)
  loop_options("fit_weak", opts, set_of("targets", "evaluate", "eval_every", "patience"))
  if type(opts.targets) ~= "function" then
    fail("fit_weak", "targets must be a function(batch) -> int64 labels [N] (0 = no weak label)")
  end
  local model, optimizer = opts.model, opts.optimizer
  local next_batch = batch_source("fit_weak", opts.batches)
  local eval_every = ft.check.integer("ft.selftrain.fit_weak", "eval_every", opts.eval_every, 50, {min = 1})
  ft.check.integer("ft.selftrain.fit_weak", "patience", opts.patience, nil, {min = 1})
  ft.check.func("ft.selftrain.fit_weak", "evaluate", opts.evaluate)
  local history = {stopped_early = false}
  local best_state, since_best = nil, 0
  for step = 1, opts.steps do
    local batch = next_batch()
    if batch == nil then break end
    local y = opts.targets(batch)
    if not ft.is_tensor(y) or y:dim() ~= 1 or y:dtype() ~= "int64" then
      fail("fit_weak", "targets must return int64 labels [N], got %s",
           ft.is_tensor(y) and (y:dtype() .. " " .. shape_str(y)) or type(y))
    end
    model:train()
    local logits = opts.forward(model, opts.augment and opts.augment(batch) or batch)
    check_logits("fit_weak", logits, "model")
    check_rows("fit_weak", "targets", y, logits:size(1))
    local record = {step = step}
    if y:gt(0):sum():item() > 0 then
      local loss = F.cross_entropy(logits, y, {ignore_index = 0})
      optimizer:zero_grad()
      loss:backward()
      if opts.clip_grad_norm then ft.optim.clip_grad_norm(model:parameters(), opts.clip_grad_norm) end
      optimizer:step()
      record.loss = loss:item()
    else
      record.skipped = true
    end
    if opts.scheduler then opts.scheduler:step() end
    history[#history + 1] = record
    local stop = false
    if opts.evaluate and (step % eval_every == 0 or step == opts.steps) then
      record.score = opts.evaluate(model)
      if history.best_score == nil or record.score > history.best_score then
        history.best_score, history.best_step, since_best = record.score, step, 0
        best_state = model:clone_state_dict()
      else
        since_best = since_best + 1
        stop = opts.patience ~= nil and since_best >= opts.patience
      end
    end
    if opts.callback then
      local r = opts.callback(record, model)
      if type(r) == "table" then for key, v in pairs(r) do record[key] = v end end
      stop = stop or r == true or (type(r) == "table" and r.stop == true)
    end
    if stop then history.stopped_early = true break end
  end
  if best_state then model:load_state_dict(best_state) end
  return history
end

return selftrain
