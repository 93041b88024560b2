-- Strict options across the Lua library: every public function that takes an options table
-- refuses an unknown key with a message naming the function, the key and the nearest valid
-- one, and refuses out-of-range values at the call, naming the function and the value.
local ft = require "ft"
local H = require "helpers"

local nn, F = ft.nn, ft.nn.functional

local function err(fn, ...) return H.error_of(fn, ...) end

-- The message of fn(...) names where, the unknown key and the nearest valid key.
local function assert_unknown(where, typo, nearest, fn, ...)
  local msg = err(fn, ...)
  assert(msg, where .. ": no error for the unknown option '" .. typo .. "'")
  H.assert_mentions(msg, where .. ": unknown option '" .. typo .. "'", "valid options: ")
  if nearest then H.assert_mentions(msg, "did you mean '" .. nearest .. "'?") end
end

-- The message of fn(...) names where and holds each fragment.
local function assert_refused(where, fn, args, ...)
  local msg = err(fn, table.unpack(args, 1, args.n or #args))
  assert(msg, where .. ": no error")
  H.assert_mentions(msg, where, ...)
end

local function labelled(n, classes)
  local xs, ys = {}, {}
  for i = 1, n do xs[i] = {i}; ys[i] = (i - 1) % classes + 1 end
  return {x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"})}
end

local function optimizer()
  return ft.optim.SGD(nn.Linear(2, 2):parameters(), {lr = 0.1, momentum = 0.9})
end

describe("strict options: ft.nn layers", function()
  it("refuse unknown keys", function()
    assert_unknown("ft.nn.Conv2d", "paddding", "padding", nn.Conv2d, 1, 2, 3, {paddding = 1})
    assert_unknown("ft.nn.Linear", "bais", "bias", nn.Linear, 2, 3, {bais = false})
    assert_unknown("ft.nn.BatchNorm2d", "momentun", "momentum", nn.BatchNorm2d, 4, {momentun = 0.2})
    assert_unknown("ft.nn.BatchNorm1d", "esp", "eps", nn.BatchNorm1d, 4, {esp = 1e-3})
    assert_unknown("ft.nn.LayerNorm", "elementwise_afine", "elementwise_affine", nn.LayerNorm, 4,
      {elementwise_afine = false})
    assert_unknown("ft.nn.GELU", "approximation", "approximate", nn.GELU, {approximation = "tanh"})
    assert_unknown("ft.nn.MaxPool2d", "strid", "stride", nn.MaxPool2d, 2, {strid = 1})
    assert_unknown("ft.nn.AvgPool2d", "count_include_pads", "count_include_pad", nn.AvgPool2d, 2,
      {count_include_pads = false})
    assert_unknown("ft.nn.MaxPool2d", "count_include_pad", nil, nn.MaxPool2d, 2, {count_include_pad = false})
  end)

  it("build what the options say", function()
    local conv = nn.Conv2d(1, 2, 3, {padding = 1})
    assert.are.same({1, 2, 5, 5}, conv(ft.zeros(1, 1, 5, 5)):shape())
    assert.are.same({1, 1}, conv.padding)
  end)

  it("refuse out-of-range and mistyped values", function()
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 3, {padding = -1}}, "padding must be an integer >= 0", "got -1")
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 3, {padding = "full"}}, "padding must be 'same' or 'valid', got 'full'")
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 3, {stride = 0}}, "stride must be an integer >= 1", "got 0")
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 0}, "kernel_size must be an integer >= 1")
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 3, {groups = 0}}, "groups must be a positive integer, got 0")
    assert_refused("ft.nn.Conv2d", nn.Conv2d, {1, 2, 3, {bias = "no"}}, "bias must be true or false, got 'no'")
    assert_refused("ft.nn.Linear", nn.Linear, {0, 2}, "in_features must be a positive integer, got 0")
    assert_refused("ft.nn.Linear", nn.Linear, {2, 2.5}, "out_features must be a positive integer, got 2.5")
    assert_refused("ft.nn.Linear", nn.Linear, {2}, "out_features is required")
    assert_refused("ft.nn.Embedding", nn.Embedding, {-3, 4}, "num_embeddings must be a positive integer, got -3")
    assert_refused("ft.nn.Dropout", nn.Dropout, {1.5}, "p must be a finite number in [0, 1], got 1.5")
    assert_refused("ft.nn.Dropout", nn.Dropout, {-0.1}, "got -0.1")
    assert_refused("ft.nn.BatchNorm2d", nn.BatchNorm2d, {4, {momentum = 2}}, "momentum must be a finite number in [0, 1], got 2")
    assert_refused("ft.nn.BatchNorm2d", nn.BatchNorm2d, {4, {eps = -1}}, "eps must be a finite number > 0, got -1")
    assert_refused("ft.nn.LayerNorm", nn.LayerNorm, {4, {eps = 0}}, "eps must be a finite number > 0, got 0")
    assert_refused("ft.nn.LayerNorm", nn.LayerNorm, {{4, 0}}, "normalized_shape[2] must be a positive integer, got 0")
    assert_refused("ft.nn.GELU", nn.GELU, {"fast"}, "approximate must be 'none' or 'tanh', got 'fast'")
    assert_refused("ft.nn.MaxPool2d", nn.MaxPool2d, {0}, "kernel_size must be an integer >= 1")
    assert_refused("ft.nn.AvgPool2d", nn.AvgPool2d, {2, {ceil_mode = 1}}, "ceil_mode must be true or false, got 1")
    assert_refused("ft.nn.Flatten", nn.Flatten, {1.5}, "start_dim must be an integer, got 1.5")
  end)
end)

describe("strict options: ft.nn.Module methods", function()
  local m
  before_each(function() m = nn.Sequential{nn.Linear(2, 3), nn.BatchNorm1d(3)} end)

  it("refuse unknown keys", function()
    assert_unknown("ft.nn.Module:state_dict", "keepvars", "keep_vars", m.state_dict, m, {keepvars = true})
    assert_unknown("ft.nn.Module:load_state_dict", "strcit", "strict", m.load_state_dict, m, m:state_dict(),
      {strcit = false})
    assert_unknown("ft.nn.Module:named_parameters", "recurce", "recurse", m.named_parameters, m, {recurce = false})
    assert_unknown("ft.nn.Module:parameters", "prefx", "prefix", m.parameters, m, {prefx = "a"})
    assert_unknown("ft.nn.Module:buffers", "recursive", nil, m.buffers, m, {recursive = false})
    assert_unknown("ft.nn.Module:named_buffers", "prefx", "prefix", m.named_buffers, m, {prefx = "a"})
    assert_unknown("ft.nn.Module:num_parameters", "trainabel", "trainable", m.num_parameters, m, {trainabel = true})
    assert_unknown("ft.nn.Module:state_dict", "keepvars", "keep_vars", m.clone_state_dict, m, {keepvars = true})
  end)

  it("refuse mistyped values", function()
    assert_refused("ft.nn.Module:load_state_dict", m.load_state_dict, {m, m:state_dict(), {strict = "no"}},
      "strict must be true or false, got 'no'")
    assert_refused("ft.nn.Module:num_parameters", m.num_parameters, {m, {trainable = 1}}, "trainable must be true or false")
    assert_refused("ft.nn.Module:state_dict", m.state_dict, {m, {prefix = 3}}, "prefix must be a string, got 3")
  end)

  it("take the second result of state_dict and ft.load as no options", function()
    local other = nn.Sequential{nn.Linear(2, 3), nn.BatchNorm1d(3)}
    other:load_state_dict(m:state_dict())
    assert.are.same(H.flat(m:state_dict()["0.weight"]), H.flat(other:state_dict()["0.weight"]))
    local path = H.make_tmpdir("strict") .. "/m.h5"
    local sd = m:state_dict()
    ft.save(path, sd)
    other:load_state_dict(ft.load(path))
  end)
end)

describe("strict options: ft.nn.functional and ft.nn.init", function()
  local x = ft.randn(2, 4)

  it("refuse unknown keys", function()
    local rm, rv = ft.zeros(4), ft.ones(4)
    assert_unknown("ft.batch_norm", "trainig", "training", F.batch_norm, x, rm, rv, {trainig = true})
    assert_unknown("ft.layer_norm", "esp", "eps", F.layer_norm, x, {4}, {esp = 1e-3})
    assert_unknown("ft.rms_norm", "esp", "eps", F.rms_norm, x, 4, {esp = 1e-3})
    assert_unknown("ft.dropout", "trainng", "training", F.dropout, x, 0.5, {trainng = false})
    assert_unknown("ft.dropout", "pp", "p", F.dropout, x, {pp = 0.1})
    assert_unknown("ft.cross_entropy", "label_smothing", "label_smoothing", F.cross_entropy, x,
      ft.full({2, 4}, 0.25), {label_smothing = 0.1})
    local q = ft.randn(1, 1, 3, 4)
    assert_unknown("ft.scaled_dot_product_attention", "casual", "causal", F.scaled_dot_product_attention, q, q, q,
      {casual = true})
    local w = ft.zeros(3, 4)
    assert_unknown("ft.nn.init.kaiming_uniform_", "mod", "mode", nn.init.kaiming_uniform_, w, {mod = "fan_out"})
    assert_unknown("ft.nn.init.kaiming_normal_", "nonlinerity", "nonlinearity", nn.init.kaiming_normal_, w,
      {nonlinerity = "relu"})
    assert_unknown("ft.nn.init.xavier_uniform_", "gian", "gain", nn.init.xavier_uniform_, w, {gian = 2})
    assert_unknown("ft.nn.init.xavier_normal_", "gian", "gain", nn.init.xavier_normal_, w, {gian = 2})
  end)

  it("refuse out-of-range values", function()
    assert_refused("ft.dropout", F.dropout, {x, {p = -0.5}}, "p must be a finite number in [0, 1], got -0.5")
    assert_refused("ft.batch_norm", F.batch_norm, {x, ft.zeros(4), ft.ones(4), {eps = -1}}, "eps must be a finite number > 0")
    assert_refused("ft.cross_entropy", F.cross_entropy, {x, ft.full({2, 4}, 0.25), {label_smoothing = 2}},
      "label_smoothing must be a finite number in [0, 1], got 2")
    local q = ft.randn(1, 1, 3, 4)
    assert_refused("ft.scaled_dot_product_attention", F.scaled_dot_product_attention, {q, q, q, {dropout_p = 2}},
      "dropout_p must be a finite number in [0, 1], got 2")
    assert_refused("ft.scaled_dot_product_attention", F.scaled_dot_product_attention, {q, q, q, {scale = -1}},
      "scale must be a finite number > 0")
    assert_refused("ft.pad", F.pad, {x, {1}}, "pad must hold a pair")
    assert_refused("ft.nn.init.kaiming_uniform_", nn.init.kaiming_uniform_, {ft.zeros(3, 4), {mode = "fan"}},
      "mode must be 'fan_in' or 'fan_out', got 'fan'")
  end)
end)

describe("strict options: ft.data", function()
  it("refuse unknown keys", function()
    local ds = labelled(12, 3)
    assert_unknown("ft.data.loader", "batchsize", "batch_size", ft.data.loader, ds, {batchsize = 64})
    assert_unknown("ft.data.loader", "shufle", "shuffle", ft.data.loader, ds, {shufle = true})
    assert_unknown("ft.data.fashion_mnist", "spilt", "split", ft.data.fashion_mnist, {spilt = "test"})
    assert_unknown("ft.data.image_folder", "transfrom", "transform", ft.data.image_folder, "/nonexistent",
      {transfrom = function(x) return x end})
    assert_unknown("ft.data.subset", "relable", "relabel", ft.data.subset, ds, {1}, {relable = true})
    assert_unknown("ft.data.per_class", "sed", "seed", ft.data.per_class, ds, 1, {sed = 1})
    assert_unknown("ft.data.split", "sede", "seed", ft.data.split, ds, 3, {sede = 1})
  end)

  it("refuse out-of-range values", function()
    local ds = labelled(12, 3)
    assert_refused("ft.data.loader", ft.data.loader, {ds, {batch_size = 0}}, "batch_size must be a positive integer, got 0")
    assert_refused("ft.data.loader", ft.data.loader, {ds, {drop_last = 1}}, "drop_last must be true or false, got 1")
    assert_refused("ft.data.subset", ft.data.subset, {ds, {1}, {relabel = "yes"}}, "relabel must be true or false")
    assert_refused("ft.data.fashion_mnist", ft.data.fashion_mnist, {{split = "val"}}, "split must be 'train' or 'test', got 'val'")
  end)
end)

describe("strict options: ft.train", function()
  local model, ds
  before_each(function()
    ft.manual_seed(1)
    model = nn.Linear(1, 3)
    ds = labelled(10, 3)
  end)
  local function loss_fn() return F.cross_entropy(model(ds.x), ds.y) end

  it("refuse unknown keys", function()
    local opt = optimizer()
    assert_unknown("ft.train.evaluate", "batchsize", "batch_size", ft.train.evaluate, model, ds, {batchsize = 4})
    assert_unknown("ft.train.classification_metrics", "label_smooth", "label_smoothing", ft.train.classification_metrics,
      ft.randn(2, 3), ft.tensor({1, 2}, {dtype = "int64"}), {label_smooth = 0.1})
    assert_unknown("ft.train.token_metrics", "ignore_idx", "ignore_index", ft.train.token_metrics,
      ft.randn(2, 3), ft.tensor({1, 2}, {dtype = "int64"}), {ignore_idx = 1})
    assert_unknown("ft.train.step", "clipp", "clip", ft.train.step, opt, loss_fn, {clipp = 1})
    assert_unknown("ft.train.accumulate", "size", "sizes", ft.train.accumulate, opt, 2, loss_fn, {size = {1, 1}})
    assert_unknown("ft.train.EarlyStopping", "patiance", "patience", ft.train.EarlyStopping, {patiance = 2})
    assert_unknown("ft.train.Logger", "evry", "every", ft.train.Logger, {evry = 2})
    assert_unknown("ft.train.loop", "step_count", nil, ft.train.loop, {step = function() return 0 end, steps = 1,
      next_batch = function() return {} end, step_count = 3})
    assert_unknown("ft.train.loop", "epoch", "epochs", ft.train.loop, {step = function() return 0 end, epoch = 1,
      loader = {{}}})
    local dir = H.make_tmpdir("strict")
    assert_unknown("ft.train.save_checkpoint", "optimiser", "optimizer", ft.train.save_checkpoint, dir .. "/c.h5",
      {model = model, optimiser = opt})
    assert_unknown("ft.train.load_checkpoint", "stric", "strict", ft.train.load_checkpoint, dir .. "/c.h5",
      {model = model, stric = false})
  end)

  it("refuse out-of-range values", function()
    local opt = optimizer()
    assert_refused("ft.train.EarlyStopping", ft.train.EarlyStopping, {{patience = 0}}, "patience must be a positive integer, got 0")
    assert_refused("ft.train.EarlyStopping", ft.train.EarlyStopping, {{mode = "up"}}, "mode must be 'min' or 'max', got 'up'")
    assert_refused("ft.train.EarlyStopping", ft.train.EarlyStopping, {{min_delta = -1}}, "min_delta must be a finite number >= 0")
    assert_refused("ft.train.Logger", ft.train.Logger, {{every = 0}}, "every must be a positive integer, got 0")
    assert_refused("ft.train.Logger", ft.train.Logger, {{total = -5}}, "total must be a non-negative integer, got -5")
    assert_refused("ft.train.loop", ft.train.loop, {{step = function() return 0 end, steps = 0,
      next_batch = function() return {} end}}, "steps must be a positive integer, got 0")
    assert_refused("ft.train.step", ft.train.step, {opt, loss_fn, {clip = 0}}, "clip must be a finite number > 0, got 0")
    assert_refused("ft.train.accumulate", ft.train.accumulate, {opt, 2, loss_fn, {sizes = {1, -1}}}, "sizes[2] must be")
    assert_refused("ft.train.evaluate", ft.train.evaluate, {model, ds, {batch_size = 0}}, "batch_size must be a positive integer")
    assert_refused("ft.train.evaluate", ft.train.evaluate, {model, {ds}, nil, {batch_size = 4}},
      "batch_size applies to a dataset")
  end)
end)

describe("ft.train.evaluate's default classification evaluator", function()
  -- Expected values are worked out here in Lua doubles from the logits' values.
  local function expected(logits, y)
    local correct, loss = 0, 0
    for i, row in ipairs(logits) do
      local best, m = 1, -math.huge
      for j, v in ipairs(row) do if v > m then best, m = j, v end end
      if best == y[i] then correct = correct + 1 end
      local sum = 0
      for _, v in ipairs(row) do sum = sum + math.exp(v - m) end
      loss = loss + (m + math.log(sum) - row[y[i]])
    end
    return correct / #y, loss / #y, correct
  end

  it("scores a dataset {x =, y =} in batches: accuracy and mean cross-entropy", function()
    ft.manual_seed(3)
    local model = nn.Sequential{nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 3)}
    local xs, ys = {}, {}
    for i = 1, 23 do xs[i] = {math.sin(i), math.cos(3 * i)}; ys[i] = i % 3 + 1 end
    local ds = {x = ft.tensor(xs), y = ft.tensor(ys, {dtype = "int64"})}
    model:train()
    local logits = ft.no_grad(function() model:eval(); local o = model(ds.x); model:train(); return o end)
    local acc, loss, correct = expected(logits:totable(), ys)
    for _, bs in ipairs({1, 5, 256}) do
      local m = ft.train.evaluate(model, ds, {batch_size = bs})
      assert.are.equal(23, m.count, "count, batch_size " .. bs)
      assert.are.equal(correct, m.correct)
      assert.is_true(math.abs(m.accuracy - acc) < 1e-12)
      assert.is_true(math.abs(m.loss - loss) < 1e-5, ("loss %g vs %g"):format(m.loss, loss))
    end
    assert.is_true(model.training, "the model's mode is restored")
    local from_loader = ft.train.evaluate(model, ft.data.loader(ds, {batch_size = 4}))
    assert.are.equal(correct, from_loader.correct)
  end)

  it("reads the logits field of a model's table output, and needs labels", function()
    local Wrapped = nn.Module:extend("Wrapped")
    function Wrapped:init() self.fc = nn.Linear(1, 2) end
    function Wrapped:forward(x) return {logits = self.fc(x)} end
    local m = ft.train.evaluate(Wrapped(), labelled(4, 2))
    assert.are.equal(4, m.count)
    H.assert_mentions(err(ft.train.evaluate, Wrapped(), {{x = ft.zeros(2, 1)}}), "default evaluator needs labelled batches")
  end)
end)

describe("strict options: ft.optim", function()
  it("refuse unknown keys", function()
    local params = nn.Linear(2, 2):parameters()
    assert_unknown("ft.optim.SGD", "momentun", "momentum", ft.optim.SGD, params, {lr = 0.1, momentun = 0.9})
    assert_unknown("ft.optim.Adam", "beta", "betas", ft.optim.Adam, params, {beta = {0.9, 0.99}})
    assert_unknown("ft.optim.AdamW", "weight_deacy", "weight_decay", ft.optim.AdamW, params, {weight_deacy = 0.1})
    local opt = optimizer()
    assert_unknown("ft.optim.SGD:zero_grad", "set_to_nil", "set_to_none", opt.zero_grad, opt, {set_to_nil = true})
    local S = ft.optim.lr_scheduler
    assert_unknown("ft.optim.lr_scheduler.StepLR", "gama", "gamma", S.StepLR, opt, {step_size = 2, gama = 0.5})
    assert_unknown("ft.optim.lr_scheduler.CosineAnnealingLR", "t_max", "T_max", S.CosineAnnealingLR, opt, {t_max = 5})
    assert_unknown("ft.optim.lr_scheduler.LinearWarmup", "warmup_step", "warmup_steps", S.LinearWarmup, opt,
      {warmup_step = 5})
    assert_unknown("ft.optim.lr_scheduler.OneCycleLR", "max_lrr", "max_lr", S.OneCycleLR, opt,
      {max_lrr = 1, total_steps = 10})
  end)

  it("refuse out-of-range values", function()
    local params = nn.Linear(2, 2):parameters()
    assert_refused("ft.optim.SGD", ft.optim.SGD, {params, {lr = -1}}, "lr")
    assert_refused("ft.optim.SGD", ft.optim.SGD, {params, {lr = 0.1, nesterov = "yes"}}, "nesterov must be true or false")
    assert_refused("ft.optim.AdamW", ft.optim.AdamW, {params, {lr = math.huge}}, "lr")
    local S = ft.optim.lr_scheduler
    assert_refused("ft.optim.lr_scheduler.StepLR", S.StepLR, {optimizer(), {step_size = 2, gamma = 0}},
      "gamma must be a finite number > 0, got 0")
    assert_refused("ft.optim.lr_scheduler.CosineAnnealingLR", S.CosineAnnealingLR, {optimizer(), {T_max = 0}},
      "T_max must be a positive integer")
    assert_refused("ft.optim.lr_scheduler.CosineAnnealingLR", S.CosineAnnealingLR, {optimizer(), {T_max = 3, eta_min = -1}},
      "eta_min must be a finite number >= 0")
    assert_refused("ft.optim.lr_scheduler.OneCycleLR", S.OneCycleLR, {optimizer(), {max_lr = -1, total_steps = 10}},
      "max_lr must be a finite number > 0, got -1")
    assert_refused("ft.optim.lr_scheduler.OneCycleLR", S.OneCycleLR, {optimizer(), {max_lr = 1, total_steps = 10,
      three_phase = "yes"}}, "three_phase must be true or false")
    assert_refused("ft.optim.clip_grad_norm", ft.optim.clip_grad_norm, {params, -1}, "max_norm must be a finite number >= 0")
    assert_refused("ft.optim.clip_grad_norm", ft.optim.clip_grad_norm, {params, 1, 0}, "norm_type must be a finite number > 0")
  end)
end)

describe("strict options: ft.wise, ft.transforms, ft.plot, ft.progress", function()
  it("refuse unknown keys", function()
    local sd = nn.Linear(2, 2):state_dict()
    assert_unknown("ft.wise", "exlude", "exclude", ft.wise, sd, sd, 0.5, {exlude = "^b"})
    assert_unknown("ft.wise", "key", "keys", ft.wise.interpolate, sd, sd, 0.5, {key = {"weight"}})
    assert_unknown("ft.wise.sweep", "modle", "model", ft.wise.sweep, sd, sd, {0.5}, function() return 1 end,
      {modle = nn.Linear(2, 2)})
    local x = ft.rand(2, 1, 8, 8)
    assert_unknown("ft.transforms.corrupt", "sead", "seed", ft.transforms.corrupt, x, {sead = 1})
    assert_unknown("ft.plot.line", "xlable", "xlabel", ft.plot.line, {series = {{y = {1, 2}}}, xlable = "x"})
    assert_unknown("ft.plot.scatter", "xscal", "xscale", ft.plot.scatter, {series = {{x = {1}, y = {1}}}, xscal = "log"})
    assert_unknown("ft.plot.bar", "categorie", "categories", ft.plot.bar, {series = {{values = {1}}}, categorie = {"a"}})
    assert_unknown("ft.plot.line series 1", "colour", "color", ft.plot.line, {series = {{y = {1, 2}, colour = "#000000"}}})
  end)

  it("refuse out-of-range values", function()
    local x = ft.rand(2, 1, 8, 8)
    assert_refused("ft.transforms.hflip", ft.transforms.hflip, {x, -0.1}, "p must be a number in [0, 1], got -0.1")
    assert_refused("ft.transforms.hflip", ft.transforms.hflip, {x, 1.5}, "got 1.5")
    assert_refused("ft.transforms.gaussian_noise", ft.transforms.gaussian_noise, {x, {0.1, -1}}, "std[2] must be a finite number >= 0")
    assert_refused("ft.transforms.corrupt", ft.transforms.corrupt, {x, {kind = "fog"}}, "unknown kind 'fog'")
    assert_refused("ft.transforms.gaussian_kernel", ft.transforms.gaussian_kernel, {1, -1}, "radius must be a non-negative integer")
    assert_refused("ft.plot.line", ft.plot.line, {{series = {{y = {1}}}, width = 50}}, "width must be an integer number of pixels in 100..4096")
    assert_refused("ft.plot.line", ft.plot.line, {{series = {{y = {1}}}, grid = "no"}}, "grid must be true or false")
    assert_refused("ft.progress.progress", ft.progress.progress, {1, 10, 0, "step %d", 1}, "every must be a positive integer, got 0")
    assert_refused("ft.progress.progress", ft.progress.progress, {1.5, 10, 1, "step"}, "step must be an integer, got 1.5")
    assert_refused("ft.progress.hms", ft.progress.hms, {0 / 0}, "seconds must be a finite number")
    local sd = nn.Linear(2, 2):state_dict()
    assert_refused("ft.wise", ft.wise, {sd, sd, 0 / 0}, "alpha must be a finite number")
  end)
end)

describe("strict options: ft.selftrain", function()
  local st = ft.selftrain
  local function loop_opts(extra)
    local model = nn.Linear(2, 2)
    local o = {model = model, optimizer = ft.optim.SGD(model:parameters(), {lr = 0.1}), steps = 1,
      batches = {ft.randn(3, 2)}, forward = function(m, b) return m(b), b end}
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("refuse unknown keys", function()
    assert_unknown("ft.selftrain.keyword_lf", "whole_words", "whole_word", st.keyword_lf, "lf", 1, {"a"}, {whole_words = false})
    assert_unknown("ft.selftrain.apply_lfs", "tensr", "tensor", st.apply_lfs, {function() return 1 end}, {"a"}, {tensr = true})
    assert_unknown("ft.selftrain.majority_vote", "tei", "tie", st.majority_vote, {{1}}, 2, {tei = "random"})
    assert_unknown("ft.selftrain.lf_report", "glod", "gold", st.lf_report, nil, {{1}}, {glod = {1}})
    local p = ft.tensor({{0.9, 0.1}, {0.2, 0.8}})
    assert_unknown("ft.selftrain.soft_targets", "pwer", "power", st.soft_targets, p, {pwer = 2})
    assert_unknown("ft.selftrain.contrastive_regulariser", "margn", "margin", st.contrastive_regulariser,
      ft.randn(2, 3), p, ft.ones(2), {margn = 1})
    assert_unknown("ft.selftrain.cosine_loss", "lamda", "lambda", st.cosine_loss, ft.randn(2, 2), ft.randn(2, 3), p,
      {lamda = 0.1})
    local clone = function() return nn.Linear(2, 2) end
    assert_unknown("ft.selftrain.cosine", "lamda", "lambda", st.cosine, loop_opts{lamda = 0.1, clone = clone})
    assert_unknown("ft.selftrain.pseudo_label", "tua", "tau", st.pseudo_label, loop_opts{tua = 0.9, clone = clone})
    assert_unknown("ft.selftrain.fit_weak", "eval_evry", "eval_every", st.fit_weak,
      loop_opts{targets = function() end, eval_evry = 3})
  end)

  it("refuse out-of-range values", function()
    local p = ft.tensor({{0.9, 0.1}, {0.2, 0.8}})
    assert_refused("ft.selftrain.sample_weights", st.sample_weights, {p, 2}, "xi must be a finite number in [0, 1], got 2")
    assert_refused("ft.selftrain.soft_targets", st.soft_targets, {p, {power = 0}}, "power must be a finite number > 0")
    assert_refused("ft.selftrain.majority_vote", st.majority_vote, {{{1}}, 2, {seed = 0.5}}, "seed must be an integer")
    local clone = function() return nn.Linear(2, 2) end
    assert_refused("ft.selftrain.pseudo_label", st.pseudo_label, {loop_opts{tau = -1, clone = clone}},
      "tau must be a finite number >= 0")
    assert_refused("ft.selftrain.cosine", st.cosine, {loop_opts{clip_grad_norm = 0, clone = clone}},
      "clip_grad_norm must be a finite number > 0")
    assert_refused("ft.selftrain.fit_weak", st.fit_weak, {loop_opts{targets = function() end, patience = 0}},
      "patience must be a positive integer")
    assert_refused("ft.selftrain.keyword_lf", st.keyword_lf, {"lf", 1, {"a"}, {case = "yes"}}, "case must be true or false")
  end)
end)

describe("strict options: ft.text and ft.tokenizer", function()
  local text, tok = ft.text, ft.tokenizer.bytes()
  local entries = {"the first entry", "a second one", "and a third, longer entry of text"}

  it("refuse unknown keys", function()
    assert_unknown("ft.text.fortune_categories", "dirr", "dir", text.fortune_categories, {dirr = "/tmp"})
    assert_unknown("ft.text.fortunes", "categorys", "categories", text.fortunes, {categorys = {"a"}})
    assert_unknown("ft.text.fortune_datasets", "heldout", "held_out", text.fortune_datasets, {heldout = {"a"}})
    assert_unknown("ft.text.split", "val_fracton", "val_fraction", text.split, entries, {val_fracton = 0.5})
    assert_unknown("ft.text.byte_dataset", "contex", "context", text.byte_dataset, entries, {contex = 4})
    local stream = text.byte_dataset(entries, {context = 4})
    assert_unknown("ft.text.ByteStream:windows", "max_window", "max_windows", stream.windows, stream, 2, {max_window = 1})
    assert_unknown("ft.text.format_chat", "add_generation_promt", "add_generation_prompt", text.format_chat,
      {{role = "user", content = "hi"}}, {add_generation_promt = false})
    local ex = {prompt = "2+2=", completion = "4"}
    assert_unknown("ft.text.encode_example", "eos_i", "eos_id", text.encode_example, tok, ex, {eos_i = 1})
    assert_unknown("ft.text.encode_prompt", "eosid", "eos_id", text.encode_prompt, tok, ex, {eosid = 1})
    assert_unknown("ft.text.collate", "padid", "pad_id", text.collate, {{{1, 2}, {1, 2}}}, {padid = 2})
    assert_unknown("ft.text.example_dataset", "overflw", "overflow", text.example_dataset, entries, {overflw = "split"})
    local set = text.example_dataset(entries)
    assert_unknown("ft.text.ExampleSet:batches", "shufle", "shuffle", set.batches, set, 2, {shufle = true})
    assert_unknown("ft.text.perplexity", "batchsize", "batch_size", text.perplexity, nn.Linear(1, 1), set, {batchsize = 2})
    assert_unknown("ft.text.read_examples", "fromat", "format", text.read_examples, "/nonexistent", {fromat = "jsonl"})
    assert_unknown("ft.text.category_datasets", "contxt", "context", text.category_datasets, "science", {contxt = 8})
    assert_unknown("ft.tokenizer.bytes", "padid", "pad_id", ft.tokenizer.bytes, {padid = 2})
    assert_unknown("ft.tokenizer.encode_batch", "padding_sid", "padding_side", tok.encode_batch, tok, {"ab"},
      {padding_sid = "left"})
    assert_unknown("ft.tokenizer.decode_batch", "attention_masks", "attention_mask", tok.decode_batch, tok,
      ft.tensor({{98, 99}}, {dtype = "int64"}), {attention_masks = ft.ones(1, 2)})
  end)

  it("refuse out-of-range values", function()
    assert_refused("ft.text.split", text.split, {entries, {val_fraction = 2}}, "val_fraction must be a number in [0, 1], got 2")
    assert_refused("ft.text.collate", text.collate, {{{{1, 2}, {1, 2}}}, {pad_id = 1.5}}, "pad_id must be an integer, got 1.5")
    assert_refused("ft.text.example_dataset", text.example_dataset, {entries, {pad_to_multiple_of = 0}},
      "pad_to_multiple_of must be a positive integer")
    local stream = text.byte_dataset(entries, {context = 4})
    assert_refused("ft.text.ByteStream:windows", stream.windows, {stream, 0}, "batch_size must be a positive integer, got 0")
    assert_refused("ft.tokenizer.bytes", ft.tokenizer.bytes, {{pad_id = 0}}, "pad_id must be an integer in [1, 256], got 0")
    assert_refused("ft.text.encode_example", text.encode_example, {tok, {text = "ab"}, {eos_id = 0}}, "eos_id must be a positive integer")
  end)
end)
