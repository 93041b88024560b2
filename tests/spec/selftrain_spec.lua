-- ft.selftrain: labeling functions and their analysis against hand-worked examples, the COSINE
-- pieces against torch (tests/gen/selftrain.py writes the formulas out independently),
-- and the self-training loops on a small synthetic problem.
local ft = require "ft"
local H = require "helpers"
local st = ft.selftrain
local nn = ft.nn

local FX = ft.load(H.fixture("selftrain.h5"))

local function fx(case, name)
  local t = FX[case .. "." .. name]
  assert(t, "fixture " .. case .. "." .. name .. " missing")
  return t
end

local function num(case, name) return H.flat(fx(case, name))[1] end

-- A fresh leaf tensor with the fixture's values (shares nothing with the loaded table).
local function leaf(case, name)
  local t = fx(case, name)
  local out = H.from_flat(H.flat(t), t:shape(), t:dtype() == "int64" and "int64" or nil)
  if t:dtype() ~= "int64" then out.requires_grad = true end
  return out
end

-- Gradients: max |actual - expected| <= rtol * max |expected| (relative to the gradient's own
-- scale, with a float32 floor for all-zero gradients).
local function assert_grad(actual, expected, what)
  assert(actual ~= nil, what .. ": no gradient")
  local scale = math.max(H.max_abs(expected), 1e-6)
  local av, ev = H.flat(actual), H.flat(expected)
  assert.are.same(expected:shape(), actual:shape())
  for i = 1, #ev do
    local d = math.abs(av[i] - ev[i])
    if not (d <= 1e-4 * scale) then
      error(string.format("%s: element %d is %.8g, expected %.8g (relative error %.3g)", what, i, av[i],
                          ev[i], d / scale), 2)
    end
  end
end

local FWD = 1e-5

describe("keyword_lf", function()
  it("matches whole words, case-insensitively, by default", function()
    local lf = st.keyword_lf("great", 2, {"great", "loved it"})
    assert.are.equal("great", lf.name)
    assert.are.equal(2, lf.class)
    assert.are.equal(2, lf("This film is GREAT!"))
    assert.are.equal(2, lf("great"))
    assert.are.equal(2, lf("(great)"))
    assert.are.equal(2, lf("I Loved It, really."))
    assert.is_nil(lf("the greatest show"))
    assert.is_nil(lf("ungreat"))
    assert.is_nil(lf("great_white"))       -- '_' is a word character
    assert.is_nil(lf("I loved items"))
    assert.is_nil(lf("greatémotion"))       -- a UTF-8 letter continues the word
    assert.are.equal(2, lf("not great, but then greater"))
    assert.are.equal(2, lf("greatest... no: great"))   -- a later occurrence is a whole word
  end)

  it("matches substrings with whole_word = false and case with case = true", function()
    local sub = st.keyword_lf("bad", 1, {"bad"}, {whole_word = false})
    assert.are.equal(1, sub("BADLY done"))
    assert.are.equal(1, sub("a badge"))
    local cased = st.keyword_lf("NASA", 3, {"NASA"}, {case = true})
    assert.are.equal(3, cased("NASA launched"))
    assert.is_nil(cased("nasa launched"))
    assert.is_nil(cased("NASAL spray"))
    local both = st.keyword_lf("Ok", 1, {"Ok"}, {case = true, whole_word = false})
    assert.are.equal(1, both("Okay"))
    assert.is_nil(both("okay"))
  end)

  it("keywords may start or end with punctuation", function()
    local lf = st.keyword_lf("cpp", 1, {"c++"})
    assert.are.equal(1, lf("I write c++ daily"))
    assert.are.equal(1, lf("c++11"))           -- '+' ends the keyword: no boundary needed after it
    assert.is_nil(lf("objc++ code"))            -- but 'c' starts it: "objc" is one word
  end)

  it("rejects bad definitions and non-string examples with clear errors", function()
    H.assert_mentions(H.error_of(st.keyword_lf, "x", 0, {"a"}), "keyword_lf", "class", "1-based")
    H.assert_mentions(H.error_of(st.keyword_lf, "x", 1, {}), "keyword_lf", "keywords")
    H.assert_mentions(H.error_of(st.keyword_lf, "x", 1, {"a", ""}), "keyword 2")
    H.assert_mentions(H.error_of(st.keyword_lf, "x", 1, {"a"}, {wholeword = true}), "unknown option 'wholeword'")
    local lf = st.keyword_lf("pos", 1, {"a"})
    H.assert_mentions(H.error_of(lf, 42), "LF 'pos'", "string", "number")
  end)
end)

describe("apply_lfs", function()
  local lfs = {
    st.keyword_lf("good", 2, {"good"}),
    function(text) return #text > 12 and 1 or nil end,   -- a plain function is an LF too
    st.lf("short", function(text) if #text < 5 then return 1 end return 0 end),
  }
  local texts = {"good", "a good long sentence", "meh, nothing", "bad"}

  it("returns the vote matrix with 0 for abstain", function()
    local votes = st.apply_lfs(lfs, texts)
    assert.are.same({{2, 0, 1}, {2, 1, 0}, {0, 0, 0}, {0, 0, 1}}, votes)
  end)

  it("returns an int64 tensor on request", function()
    local votes = st.apply_lfs(lfs, texts, {tensor = true})
    assert.are.equal("int64", votes:dtype())
    assert.are.same({{2, 0, 1}, {2, 1, 0}, {0, 0, 0}, {0, 0, 1}}, votes:totable())
  end)

  it("works on any kind of example", function()
    local bright = st.lf("bright", function(img) return img:mean():item() > 0.5 and 2 or nil end)
    local votes = st.apply_lfs({bright}, {ft.ones(1, 2, 2), ft.zeros(1, 2, 2)})
    assert.are.same({{2}, {0}}, votes)
    -- a tensor holds one example per slice along dim 1
    local batch = ft.cat({ft.zeros(1, 1, 2, 2), ft.ones(1, 1, 2, 2), ft.zeros(1, 1, 2, 2)}, 1)
    assert.are.same({{0}, {2}, {0}}, st.apply_lfs({bright}, batch))
  end)

  it("names the LF and example that returned a bad class", function()
    local bad = st.lf("bad", function() return "yes" end)
    H.assert_mentions(H.error_of(st.apply_lfs, {bad}, {"x"}), "LF 'bad'", "example 1", "yes")
    H.assert_mentions(H.error_of(st.apply_lfs, {42}, {"x"}), "LF 1")
  end)
end)

-- Hand-worked: 5 examples, 3 LFs, 2 classes (gold 0 = unknown).
local VOTES = {
  {1, 1, 0},
  {2, 0, 1},
  {0, 0, 0},
  {2, 0, 2},
  {0, 1, 0},
}
local GOLD = {1, 2, 1, 1, 0}

describe("majority_vote", function()
  it("takes the most voted class; abstains with no votes and on ties", function()
    local labels, coverage = st.majority_vote(VOTES, 2)
    assert.are.same({1, 0, 0, 2, 1}, labels)
    assert.are.equal(3 / 5, coverage)
  end)

  it("counts votes per class with more classes", function()
    local labels = st.majority_vote({{1, 2, 2, 0, 0}, {3, 3, 1, 1, 2}, {0, 3, 0, 0, 0}}, 3)
    assert.are.same({2, 0, 3}, labels)
  end)

  it("breaks ties at random among the tied classes, reproducibly", function()
    local votes = {}
    for i = 1, 200 do votes[i] = {3, 1, 3, 1, 2} end
    local a = st.majority_vote(votes, 3, {tie = "random", seed = 5})
    local b = st.majority_vote(votes, 3, {tie = "random", seed = 5})
    local c = st.majority_vote(votes, 3, {tie = "random", seed = 6})
    assert.are.same(a, b)
    assert.are_not.same(a, c)
    local seen = {}
    for _, l in ipairs(a) do seen[l] = (seen[l] or 0) + 1 end
    assert.is_nil(seen[2])        -- class 2 is not among the tied
    assert.is_nil(seen[0])
    assert.is_true(seen[1] > 60 and seen[3] > 60)
    local labels, coverage = st.majority_vote(VOTES, 2, {tie = "random"})
    assert.are.equal(4 / 5, coverage)
    assert.is_true(labels[2] == 1 or labels[2] == 2)
  end)

  it("accepts an int64 tensor and returns one", function()
    local labels, coverage = st.majority_vote(ft.tensor(VOTES, {dtype = "int64"}), 2)
    H.assert_equal_ints(labels, ft.tensor({1, 0, 0, 2, 1}, {dtype = "int64"}), "labels")
    assert.are.equal(3 / 5, coverage)
  end)

  it("rejects votes outside 0..num_classes and ragged rows", function()
    H.assert_mentions(H.error_of(st.majority_vote, {{1, 3}}, 2), "majority_vote", "vote 3", "row 1, column 2")
    H.assert_mentions(H.error_of(st.majority_vote, {{1, 2}, {1}}, 2), "row 2")
    H.assert_mentions(H.error_of(st.majority_vote, VOTES, 2, {tie = "first"}), "tie")
  end)
end)

describe("lf_report", function()
  local lfs = {st.lf("A", function() end), st.lf("B", function() end), st.lf("C", function() end)}

  it("computes coverage, overlaps, conflicts and accuracy as worked by hand", function()
    local r = st.lf_report(lfs, VOTES, {gold = GOLD})
    assert.are.equal(5, r.n)
    -- A votes on examples 1, 2, 4; others also vote on all three; C disagrees on example 2;
    -- gold: right on 1 and 2, wrong on 4.
    assert.are.same({1, 2}, r[1].polarity)
    assert.are.equal(3, r[1].covered)
    assert.are.equal(0.6, r[1].coverage)
    assert.are.equal(1.0, r[1].overlaps)
    assert.are.equal(1 / 3, r[1].conflicts)
    assert.are.equal(2, r[1].correct)
    assert.are.equal(1, r[1].incorrect)
    assert.are.equal(2 / 3, r[1].accuracy)
    -- B votes 1 on examples 1 (with A, agreeing) and 5 (alone, gold unknown)
    assert.are.same({1}, r[2].polarity)
    assert.are.equal(0.4, r[2].coverage)
    assert.are.equal(0.5, r[2].overlaps)
    assert.are.equal(0, r[2].conflicts)
    assert.are.equal(1, r[2].correct)
    assert.are.equal(0, r[2].incorrect)
    assert.are.equal(1.0, r[2].accuracy)
    -- C votes 1 on example 2 (A says 2) and 2 on example 4 (A agrees); both wrong
    assert.are.same({1, 2}, r[3].polarity)
    assert.are.equal(0.4, r[3].coverage)
    assert.are.equal(1.0, r[3].overlaps)
    assert.are.equal(0.5, r[3].conflicts)
    assert.are.equal(0, r[3].correct)
    assert.are.equal(2, r[3].incorrect)
    assert.are.equal(0.0, r[3].accuracy)
    -- Snorkel's fractions of all examples follow from the counts
    assert.are.equal(1, r[1].n_conflicts)
    assert.are.equal(3, r[1].n_overlaps)
    -- over the whole set: examples 1, 2, 4, 5 labelled; 1, 2, 4 overlap; 2 conflicts
    assert.are.equal(0.8, r.coverage)
    assert.are.equal(0.6, r.overlap)
    assert.are.equal(0.2, r.conflict)
  end)

  it("works without gold and without LF objects", function()
    local r = st.lf_report(nil, ft.tensor(VOTES, {dtype = "int64"}))
    assert.are.equal("lf1", r[1].name)
    assert.is_nil(r[1].accuracy)
    assert.is_nil(r[1].correct)
    assert.are.equal(1 / 3, r[1].conflicts)
  end)

  it("formats a table", function()
    local s = st.format_report(st.lf_report(lfs, VOTES, {gold = GOLD}))
    local lines = {}
    for line in s:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(6, #lines)   -- header, rule, 3 LFs, summary
    H.assert_mentions(lines[1], "LF", "polarity", "coverage", "overlaps", "conflicts", "accuracy")
    assert.truthy(lines[3]:match("^A%s+{1,2}%s+0%.600%s+1%.000%s+0%.333%s+2%s+1%s+0%.667$"))
    assert.truthy(lines[4]:match("^B%s+{1}%s+0%.400%s+0%.500%s+0%.000%s+1%s+0%s+1%.000$"))
    H.assert_mentions(lines[6], "5 examples", "coverage 0.800", "overlap 0.600", "conflict 0.200")
    local plain = st.format_report(st.lf_report(lfs, VOTES))
    assert.is_nil(plain:find("accuracy", 1, true))
  end)

  it("checks the LF count and the gold length", function()
    H.assert_mentions(H.error_of(st.lf_report, {lfs[1]}, VOTES), "1 LFs", "3 columns")
    H.assert_mentions(H.error_of(st.lf_report, lfs, VOTES, {gold = {1, 2}}), "gold", "5")
  end)
end)

-- ---- COSINE pieces against torch ------------------------------------------------------------------

describe("soft_targets", function()
  for _, case in ipairs({"soft_targets", "soft_targets_p3"}) do
    it("matches torch, values and gradient (" .. case .. ")", function()
      local p = leaf(case, "p")
      local t = st.soft_targets(p, {power = num(case, "power")})
      H.assert_close(t, fx(case, "t"), FWD, "t")
      for _, row in ipairs(t:totable()) do
        local s = 0
        for _, v in ipairs(row) do s = s + v end
        assert.is_true(math.abs(s - 1) < 1e-6)
      end
      local total = (t * fx(case, "cot")):sum()
      total:backward()
      assert_grad(p.grad, fx(case, "grad_p"), "grad p")
    end)
  end
end)

describe("sample_weights", function()
  it("matches torch: w = 1 - H(p)/log C, its gradient, and the keep mask", function()
    local p = leaf("sample_weights", "p")
    local w, keep = st.sample_weights(p, num("sample_weights", "xi"))
    H.assert_close(w, fx("sample_weights", "w"), FWD, "w")
    H.assert_close(keep, fx("sample_weights", "keep"), 0, "keep")
    local total = (w * fx("sample_weights", "cot")):sum()
    total:backward()
    assert_grad(p.grad, fx("sample_weights", "grad_p"), "grad p")
  end)

  it("is 1 for one-hot and 0 for uniform predictions", function()
    local w = st.sample_weights(ft.tensor({{1, 0, 0}, {1 / 3, 1 / 3, 1 / 3}}))
    H.assert_close(w, ft.tensor({1, 0}), 1e-6, "w")
  end)
end)

describe("kl_loss", function()
  it("matches torch with a keep mask (loss and gradients)", function()
    local logp, t, w = leaf("kl_loss", "logp"), leaf("kl_loss", "t"), leaf("kl_loss", "w")
    local loss = st.kl_loss(logp, t, w, fx("kl_loss", "keep"))
    H.assert_close(loss, fx("kl_loss", "loss"), FWD, "loss")
    loss:backward()
    assert_grad(logp.grad, fx("kl_loss", "grad_logp"), "grad logp")
    assert_grad(t.grad, fx("kl_loss", "grad_t"), "grad t")
    assert_grad(w.grad, fx("kl_loss", "grad_w"), "grad w")
  end)

  it("keeps the samples with w > 0 by default", function()
    local c = "kl_default_keep"
    local logp, t, w = leaf(c, "logp"), leaf(c, "t"), leaf(c, "w")
    local loss = st.kl_loss(logp, t, w)
    H.assert_close(loss, fx(c, "loss"), FWD, "loss")
    loss:backward()
    assert_grad(logp.grad, fx(c, "grad_logp"), "grad logp")
    assert_grad(t.grad, fx(c, "grad_t"), "grad t")
  end)

  it("is 0 with nothing kept and still backpropagates", function()
    local logp = ft.randn(3, 2):log_softmax(2):detach()
    logp.requires_grad = true
    local loss = st.kl_loss(logp, ft.full({3, 2}, 0.5), ft.zeros(3))
    assert.are.equal(0, loss:item())
    loss:backward()
    assert.are.equal(0, H.max_abs(logp.grad))
  end)

  it("names mismatched shapes", function()
    H.assert_mentions(H.error_of(st.kl_loss, ft.zeros(4, 3), ft.zeros(4, 2), ft.ones(4)),
                      "kl_loss", "[4,2]", "[4,3]")
    H.assert_mentions(H.error_of(st.kl_loss, ft.zeros(4, 3), ft.zeros(4, 3), ft.ones(5)),
                      "kl_loss", "w", "[5]", "4 rows")
  end)
end)

describe("contrastive_regulariser", function()
  local CASES = {
    contrastive_scaled_l2 = "scaled_l2",
    contrastive_l2 = "l2",
    contrastive_cosine = "cosine",
    contrastive_soft = "scaled_l2",
  }
  for case, distance in pairs(CASES) do
    it("matches torch, loss and gradients (" .. case .. ")", function()
      local v, w = leaf(case, "features"), leaf(case, "w")
      local targets = FX[case .. ".labels"] or fx(case, "targets")
      local loss = st.contrastive_regulariser(v, targets, w, {
        margin = num(case, "margin"), distance = distance, keep = fx(case, "keep")})
      H.assert_close(loss, fx(case, "loss"), FWD, "loss")
      loss:backward()
      assert_grad(v.grad, fx(case, "grad_features"), "grad features")
      assert_grad(w.grad, fx(case, "grad_w"), "grad w")
    end)
  end

  it("gives nonzero gradients to the parameters producing the student's features", function()
    ft.manual_seed(3)
    local body = nn.Linear(4, 6)
    local x = ft.randn(10, 4) * 0.3
    local labels = ft.tensor({1, 2, 1, 2, 1, 2, 1, 2, 1, 2}, {dtype = "int64"})
    local loss = st.contrastive_regulariser(body(x), labels, ft.ones(10))
    assert.is_true(loss:item() > 0)
    loss:backward()
    assert.is_true(H.max_abs(body.weight.grad) > 1e-4)
    assert.is_true(H.max_abs(body.bias.grad) >= 0)
  end)

  it("rejects bad targets and distances", function()
    H.assert_mentions(H.error_of(st.contrastive_regulariser, ft.zeros(3, 2), ft.zeros(3), ft.ones(3)),
                      "contrastive_regulariser", "targets", "int64")
    H.assert_mentions(H.error_of(st.contrastive_regulariser, ft.zeros(3, 2), ft.zeros(4, 2), ft.ones(3)),
                      "targets", "3 rows")
    H.assert_mentions(H.error_of(st.contrastive_regulariser, ft.randn(3, 2), ft.zeros(3, 2), ft.ones(3),
                                 {distance = "manhattan"}), "distance", "manhattan")
  end)
end)

describe("cosine_loss", function()
  it("combines the pieces as the paper does (loss and gradients against torch)", function()
    local c = "cosine_loss"
    local logits, feats = leaf(c, "student_logits"), leaf(c, "features")
    local loss, parts = st.cosine_loss(logits, feats, fx(c, "teacher_probs"),
      {xi = num(c, "xi"), lambda = num(c, "lambda"), margin = num(c, "margin")})
    H.assert_close(loss, fx(c, "loss"), FWD, "loss")
    assert.is_true(math.abs(parts.kl - num(c, "kl")) <= FWD)
    assert.is_true(math.abs(parts.contrastive - num(c, "contrastive")) <= FWD)
    loss:backward()
    assert_grad(logits.grad, fx(c, "grad_logits"), "grad logits")
    assert_grad(feats.grad, fx(c, "grad_features"), "grad features")
  end)
end)

-- ---- the loops ---------------------------------------------------------------------------------------

-- Two gaussian blobs in 2-D (means -mu and +mu, unit variance: the best possible accuracy is
-- about 0.955) with class-dependent label noise, as rules give: 40% of class 1 is labelled 2,
-- 5% of class 2 is labelled 1, and 20% of the examples get no weak label.
local function blobs(seed)
  ft.manual_seed(seed)
  local n = 512
  local y = {}
  for i = 1, n do y[i] = i % 2 + 1 end
  local sign = ft.tensor(y):view(n, 1) * 2 - 3
  local x = ft.randn(n, 2) + sign * ft.tensor({{1.2, 1.2}})
  local state = 12345 + seed
  local function rand()
    state = (state * 1103515245 + 12345) % 2147483648
    return state / 2147483648
  end
  local weak, right, covered = {}, 0, 0
  for i = 1, n do
    if rand() < 0.2 then
      weak[i] = 0
    else
      weak[i] = rand() < (y[i] == 1 and 0.4 or 0.05) and 3 - y[i] or y[i]
      covered = covered + 1
      if weak[i] == y[i] then right = right + 1 end
    end
  end
  local weak_t = ft.tensor(weak, {dtype = "int64"})
  local batches = {}
  for b = 0, n // 64 - 1 do
    local idx = ft.arange(b * 64 + 1, b * 64 + 65):long()
    batches[#batches + 1] = {x = x:index_select(1, idx), weak = weak_t:index_select(1, idx)}
  end
  return {x = x, y = y, batches = batches, weak_accuracy = right / covered}
end

-- A linear model whose hidden layer's output serves as the features.
local Linear2 = nn.Module:extend("Linear2")
function Linear2:init() self.body = nn.Linear(2, 4); self.head = nn.Linear(4, 2) end
function Linear2:forward(x)
  local f = self.body(x)
  return self.head(f), f
end

local function forward(model, batch) return model(batch.x) end

local function accuracy(model, data)
  local pred = ft.no_grad(function() return model(data.x):argmax(2):totable() end)
  local right = 0
  for i, p in ipairs(pred) do
    if p == data.y[i] then right = right + 1 end
  end
  return right / #pred
end

-- The first stage: fitting the weak labels for a fixed number of steps.
local function stage_one(data)
  local model = Linear2()
  st.fit_weak{model = model, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.5}), batches = data.batches,
              forward = forward, targets = function(b) return b.weak end, steps = 40}
  return model
end

describe("cosine", function()
  it("self-trains past the weak labels on two noisy blobs", function()
    ft.set_num_threads(1)
    local data = blobs(2)
    local model = stage_one(data)
    local start = accuracy(model, data)
    local steps_seen = {}
    local history = st.cosine{model = model, teacher = Linear2(), batches = data.batches, forward = forward,
      optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}), steps = 300, T = 16, xi = 0.3, lambda = 0.05,
      callback = function(record) steps_seen[#steps_seen + 1] = record.step end}
    local final = accuracy(model, data)
    assert.is_true(final > data.weak_accuracy + 0.1,
                   ("accuracy %.3f, weak labels %.3f"):format(final, data.weak_accuracy))
    assert.is_true(final > start + 0.05, ("accuracy %.3f, before self-training %.3f"):format(final, start))
    assert.are.equal(300, #history)
    assert.are.equal(300, #steps_seen)
    assert.are.equal(19, history.teacher_updates)   -- steps 1, 17, 33, ... 289
    assert.is_false(history.stopped_early)
    local r = history[300]
    assert.are.equal(300, r.step)
    assert.is_true(r.kept > 0.5 and r.kept <= 1)
    assert.is_true(r.contrastive > 0)
    assert.is_true(math.abs(r.loss - (r.kl + 0.05 * r.contrastive)) < 1e-5)
  end)

  it("stops when the callback says so, and merges what it returns into the record", function()
    local data = blobs(1)
    local model = stage_one(data)
    local history = st.cosine{model = model, clone = function() return Linear2() end, batches = data.batches,
      forward = forward, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}), steps = 50, T = 4, xi = 0.3,
      callback = function(record, m)
        assert.are.equal(model, m)
        return {acc = accuracy(m, data), stop = record.step == 7}
      end}
    assert.are.equal(7, #history)
    assert.is_true(history.stopped_early)
    assert.is_number(history[7].acc)
    assert.are.equal(2, history.teacher_updates)
  end)

  it("ends when an iterator runs dry", function()
    local data = blobs(1)
    local model = stage_one(data)
    local i = 0
    local history = st.cosine{model = model, teacher = Linear2(), forward = forward, steps = 100, xi = 0.3,
      optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}),
      batches = function() i = i + 1; return data.batches[i] end}
    assert.are.equal(#data.batches, #history)
  end)

  it("keeps the teacher a snapshot: it trains only the student", function()
    local data = blobs(1)
    local model, teacher = stage_one(data), Linear2()
    local snapshot = {}
    st.cosine{model = model, teacher = teacher, batches = data.batches, forward = forward, steps = 5, T = 100,
      xi = 0.3, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}),
      callback = function(record)
        if record.step == 1 then
          snapshot = teacher:clone_state_dict()
        end
      end}
    for k, v in pairs(teacher:state_dict()) do
      H.assert_close(v, snapshot[k], 0, k)
      assert.is_nil(v.grad)
    end
    local differs = false
    for k, v in pairs(model:state_dict()) do
      if H.max_abs(v - snapshot[k]) > 0 then differs = true end
    end
    assert.is_true(differs)
  end)

  it("labels with the teacher on the clean batch and trains the student on augment(batch)", function()
    local data = blobs(1)
    local model, teacher = stage_one(data), Linear2()
    local seen = {}
    local function recording_forward(m, b)
      seen[#seen + 1] = {who = m == teacher and "teacher" or "student", noisy = b.noisy == true}
      return m(b.x)
    end
    local function augment(b) return {x = b.x + 0.01, noisy = true} end
    st.cosine{model = model, teacher = teacher, batches = data.batches, forward = recording_forward, steps = 2,
      xi = 0.3, augment = augment, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1})}
    st.pseudo_label{model = model, teacher = teacher, batches = data.batches, forward = recording_forward,
      steps = 1, tau = 0, augment = augment, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1})}
    assert.are.same({{who = "teacher", noisy = false}, {who = "student", noisy = true},
                     {who = "teacher", noisy = false}, {who = "student", noisy = true},
                     {who = "teacher", noisy = false}, {who = "student", noisy = true}}, seen)
    seen = {}
    st.fit_weak{model = model, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}), batches = data.batches,
      forward = recording_forward, targets = function(b) return b.weak end, steps = 1,
      augment = function(b) return {x = b.x, noisy = true, weak = b.weak} end}
    assert.are.same({{who = "student", noisy = true}}, seen)
  end)

  it("refreshes the teacher from the student every T steps", function()
    local data = blobs(1)
    local model, teacher = stage_one(data), Linear2()
    local student_after = {}
    local function copy(m) return m:clone_state_dict() end
    local before = copy(model)
    local checked = 0
    st.cosine{model = model, teacher = teacher, batches = data.batches, forward = forward, steps = 6, T = 2,
      xi = 0.3, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}),
      callback = function(record)
        -- the teacher used at step s is the student as it was before step 1 + 2 * ((s - 1) // 2)
        local s = record.step
        local expected = s <= 2 and before or student_after[s - 1 - (s - 1) % 2]
        for k, v in pairs(teacher:state_dict()) do H.assert_close(v, expected[k], 0, k) end
        checked = checked + 1
        student_after[s] = copy(model)
      end}
    assert.are.equal(6, checked)
  end)

  it("trains the student's features through the regulariser", function()
    -- one step from the same start with lambda = 0 and lambda = 1: the feature layer moves
    -- differently only if the regulariser's gradient reaches the student
    local data = blobs(1)
    local start = stage_one(data)
    local function one_step(lambda)
      local m = Linear2()
      m:load_state_dict(start:state_dict())
      st.cosine{model = m, teacher = Linear2(), batches = data.batches, forward = forward, steps = 1,
        xi = 0.3, lambda = lambda, optimizer = ft.optim.SGD(m:parameters(), {lr = 0.1})}
      return m
    end
    local a, b = one_step(0), one_step(1)
    assert.is_true(H.max_abs(a.body.weight - b.body.weight) > 1e-5)
  end)

  it("runs a CNN on images and an attention classifier on token ids alike", function()
    ft.manual_seed(11)
    local CNN = nn.Module:extend("CNN")
    function CNN:init()
      self.conv = nn.Conv2d(1, 4, 3, {padding = 1})
      self.pool = nn.AdaptiveAvgPool2d(1)
      self.head = nn.Linear(4, 3)
    end
    function CNN:forward(x)
      local f = self.pool(self.conv(x):relu()):flatten(2)
      return self.head(f), f
    end
    local images = {}
    for b = 1, 3 do images[b] = ft.randn(8, 1, 6, 6) end
    local cnn = CNN()
    local h = st.cosine{model = cnn, clone = function() return CNN() end, batches = images,
      forward = function(m, x) return m(x) end, optimizer = ft.optim.SGD(cnn:parameters(), {lr = 0.01}),
      steps = 4, T = 2, xi = 0}
    assert.are.equal(4, #h)
    assert.are.equal(2, h.teacher_updates)
    for _, r in ipairs(h) do assert.is_true(r.loss == r.loss and r.kept > 0) end

    local Text = nn.Module:extend("Text")
    function Text:init()
      self.embed = nn.Embedding(20, 8)
      self.qkv = nn.Linear(8, 24)
      self.head = nn.Linear(8, 2)
    end
    function Text:forward(ids)
      local n, len = ids:size(1), ids:size(2)
      local qkv = self.qkv(self.embed(ids)):view(n, len, 3, 8)
      local q, k, v = qkv:select(3, 1), qkv:select(3, 2), qkv:select(3, 3)
      local f = nn.functional.scaled_dot_product_attention(q:unsqueeze(2), k:unsqueeze(2), v:unsqueeze(2))
      f = f:squeeze(2):mean(2)
      return self.head(f), f
    end
    local texts = {}
    for b = 1, 2 do texts[b] = ft.randint(1, 20, {6, 5}) end
    local net = Text()
    local h2 = st.cosine{model = net, teacher = Text(), batches = texts, forward = function(m, ids) return m(ids) end,
      optimizer = ft.optim.AdamW(net:parameters(), {lr = 1e-3}), steps = 3, T = 3, xi = 0}
    assert.are.equal(3, #h2)
    local h3 = st.pseudo_label{model = net, teacher = Text(), batches = texts, tau = 0,
      forward = function(m, ids) return m(ids) end, optimizer = ft.optim.AdamW(net:parameters(), {lr = 1e-3}), steps = 2}
    assert.are.equal(2, #h3)
    assert.are.equal(1, h3[1].kept)
  end)

  it("names what is wrong with its options", function()
    local m = Linear2()
    local opt = ft.optim.SGD(m:parameters(), {lr = 0.1})
    local base = {model = m, teacher = Linear2(), batches = {{x = ft.randn(4, 2)}}, forward = forward,
                  optimizer = opt, steps = 2}
    local function with(k, v)
      local o = {}
      for key, val in pairs(base) do o[key] = val end
      o[k] = v
      return o
    end
    H.assert_mentions(H.error_of(st.cosine, with("lamda", 0.1)), "cosine", "unknown option 'lamda'")
    H.assert_mentions(H.error_of(st.cosine, with("teacher", nil)), "cosine", "teacher", "clone")
    H.assert_mentions(H.error_of(st.cosine, with("teacher", m)), "separate model")
    H.assert_mentions(H.error_of(st.cosine, with("steps", 0)), "steps")
    H.assert_mentions(H.error_of(st.cosine, with("augment", "strong")), "augment must be a function", "string")
    H.assert_mentions(H.error_of(st.cosine, with("batches", {})), "batches")
    H.assert_mentions(H.error_of(st.cosine, with("forward", function() return ft.zeros(4) end)),
                      "cosine", "logits [N,C]", "[4]")
    H.assert_mentions(H.error_of(st.cosine, with("forward", function(model, b) return model.head(model.body(b.x)) end)),
                      "lambda", "features")
  end)
end)

describe("pseudo_label", function()
  it("improves on the first stage with confident hard labels", function()
    ft.set_num_threads(1)
    local data = blobs(2)
    local model = stage_one(data)
    local start = accuracy(model, data)
    local history = st.pseudo_label{model = model, clone = function() return Linear2() end, batches = data.batches,
      forward = forward, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}), steps = 300, T = 16, tau = 0.8}
    local final = accuracy(model, data)
    assert.is_true(final > data.weak_accuracy + 0.1,
                   ("accuracy %.3f, weak labels %.3f"):format(final, data.weak_accuracy))
    assert.is_true(final > start + 0.05, ("accuracy %.3f, before %.3f"):format(final, start))
    assert.are.equal(300, #history)
    assert.is_true(history[300].kept > 0.5)
  end)

  it("skips a step when no prediction reaches tau", function()
    local m = Linear2()
    local before = H.flat(m.head.weight)
    local history = st.pseudo_label{model = m, teacher = Linear2(), batches = {{x = ft.randn(4, 2)}},
      forward = forward, optimizer = ft.optim.SGD(m:parameters(), {lr = 0.1}), steps = 2, tau = 1.01}
    assert.is_true(history[1].skipped)
    assert.are.equal(0, history[1].kept)
    assert.are.same(before, (H.flat(m.head.weight)))
  end)
end)

describe("fit_weak", function()
  it("ignores unlabelled examples, stops after `patience` evaluations and restores the best state", function()
    local data = blobs(1)
    local model = Linear2()
    local scores = {0.5, 0.7, 0.6, 0.65, 0.9}
    local calls, at_best = 0, nil
    local history = st.fit_weak{model = model, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.5}),
      batches = data.batches, forward = forward, targets = function(b) return b.weak end, steps = 20,
      eval_every = 2, patience = 2,
      evaluate = function(m)
        calls = calls + 1
        if calls == 2 then
          at_best = m:clone_state_dict()
        end
        return scores[calls]
      end}
    assert.are.equal(4, calls)            -- 0.6 and 0.65 do not beat 0.7
    assert.are.equal(8, #history)
    assert.is_true(history.stopped_early)
    assert.are.equal(4, history.best_step)
    assert.are.equal(0.7, history.best_score)
    for k, v in pairs(model:state_dict()) do H.assert_close(v, at_best[k], 0, k) end
  end)

  it("skips batches without weak labels", function()
    local m = Linear2()
    local batch = {x = ft.randn(4, 2), weak = ft.zeros(4):long()}
    local history = st.fit_weak{model = m, optimizer = ft.optim.SGD(m:parameters(), {lr = 0.5}), batches = {batch},
      forward = forward, targets = function(b) return b.weak end, steps = 1}
    assert.is_true(history[1].skipped)
    H.assert_mentions(H.error_of(st.fit_weak, {model = m, optimizer = ft.optim.SGD(m:parameters(), {lr = 0.5}),
      batches = {batch}, forward = forward, targets = function() return ft.zeros(4) end, steps = 1}),
      "fit_weak", "int64", "float32")
  end)
end)
