-- The standard layers of ft.nn (containers, linear, convolution, normalisation, pooling,
-- activations), with torch's parameter names, default initialisation and printed form.
-- ft.nn re-exports every class here.
local ft = require "ft"
local F = require "ft.nn.functional"

local base = require "ft.nn.module"

local nn = {}
local Module, Parameter, repr = base.Module, base.Parameter, base._repr
local init = require "ft.nn.init"

local check = ft.check

-- An integer >= min or a pair {h, w} of them, as a pair.
local function pair(where, what, v, min)
  local function ok(x) return math.type(x) == "integer" and x >= min end
  if type(v) == "table" and #v == 2 and ok(v[1]) and ok(v[2]) then return { v[1], v[2] } end
  if ok(v) then return { v, v } end
  check.fail(where, what, ("an integer >= %d or a pair {h, w} of them"):format(min), v)
end

local function opt(opts, key, default)
  local v = opts and opts[key]
  if v == nil then return default end
  return v
end

-- A size argument (features, channels): a positive integer.
local function size(where, what, v)
  return check.integer(where, what, check.required(where, what, v), nil, {min = 1})
end

-- ---- containers -------------------------------------------------------------------------

--- Sequential(m1, m2, ...) or Sequential{m1, m2, ...}: children named "0", "1", ...;
-- seq[1] is the first child (1-based, as every Lua index).
local Sequential = Module:extend("Sequential")
nn.Sequential = Sequential

function Sequential:init(...)
  local list = table.pack(...)
  if list.n == 1 and type(list[1]) == "table" and not base.is_module(list[1]) then list = list[1] end
  for _, m in ipairs(list) do self:append(m) end
end

--- seq:append(m) adds m as the next child (named by its 0-based position); returns seq.
-- Also seq:add(m).
function Sequential:append(m)
  self:add_module(tostring(#self), m)
  return self
end
Sequential.add = Sequential.append

function Sequential:forward(x, ...)
  for _, name in ipairs(self._module_names) do x = self._modules[name](x, ...) end
  return x
end

--- ModuleList{m1, m2, ...}: holds modules (registered as "0", "1", ...) without a forward.
local ModuleList = Module:extend("ModuleList")
nn.ModuleList = ModuleList
ModuleList.init = Sequential.init
ModuleList.append = Sequential.append

--- Identity(): returns its input unchanged.
local Identity = Module:extend("Identity")
nn.Identity = Identity
function Identity:forward(x) return x end

-- ---- linear, convolution, embedding ------------------------------------------------------

--- Linear(in_features, out_features, {bias=true}): weight [out, in], bias [out].
local Linear = Module:extend("Linear")
nn.Linear = Linear

function Linear:init(in_features, out_features, opts)
  local where = "ft.nn.Linear"
  opts = ft.check_options(where, opts, {"bias"})
  self.in_features = size(where, "in_features", in_features)
  self.out_features = size(where, "out_features", out_features)
  -- Allocated only: reset_parameters fills them (or, under ft.nn.init.skip, the weights loaded later).
  self.weight = Parameter(ft.empty(self.out_features, self.in_features))
  if check.boolean(where, "bias", opts.bias, true) then self.bias = Parameter(ft.empty(out_features)) end
  self:reset_parameters()
end

--- m:reset_parameters(): torch's default initialisation, kaiming_uniform(a = sqrt(5))
-- weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases.
local function reset_weight_and_bias(self)
  init.kaiming_uniform_(self.weight, { a = math.sqrt(5) })
  if self.bias then
    local fan_in = init.fan_in_and_fan_out(self.weight)
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(self.bias, -bound, bound)
  end
end
Linear.reset_parameters = reset_weight_and_bias

function Linear:forward(x) return F.linear(x, self.weight, self.bias) end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features, self.out_features,
    repr(self.bias ~= nil))
end

--- Conv2d(in, out, kernel, {stride=1, padding=0|"same"|"valid", dilation=1, groups=1, bias=true})
-- weight [out, in/groups, kH, kW], bias [out].
local Conv2d = Module:extend("Conv2d")
nn.Conv2d = Conv2d

function Conv2d:init(in_channels, out_channels, kernel_size, opts)
  local where = "ft.nn.Conv2d"
  opts = ft.check_options(where, opts, {"stride", "padding", "dilation", "groups", "bias"})
  self.in_channels = size(where, "in_channels", in_channels)
  self.out_channels = size(where, "out_channels", out_channels)
  self.kernel_size = pair(where, "kernel_size", kernel_size, 1)
  self.stride = pair(where, "stride", opt(opts, "stride", 1), 1)
  local padding = opt(opts, "padding", 0)
  if type(padding) == "string" then
    self.padding = check.one_of(where, "padding", padding, nil, {"same", "valid"})
  else
    self.padding = pair(where, "padding", padding, 0)
  end
  self.dilation = pair(where, "dilation", opt(opts, "dilation", 1), 1)
  self.groups = check.integer(where, "groups", opts.groups, 1, {min = 1})
  if in_channels % self.groups ~= 0 or out_channels % self.groups ~= 0 then
    error(("ft.nn.Conv2d: in_channels %d and out_channels %d must be divisible by groups %d"):format(
      in_channels, out_channels, self.groups), 2)
  end
  local k = self.kernel_size
  self.weight = Parameter(ft.empty(out_channels, in_channels // self.groups, k[1], k[2]))
  if check.boolean(where, "bias", opts.bias, true) then self.bias = Parameter(ft.empty(out_channels)) end
  self:reset_parameters()
end
Conv2d.reset_parameters = reset_weight_and_bias

function Conv2d:forward(x)
  return F.conv2d(x, self.weight, self.bias,
    { stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups })
end

local function is_pair_of(p, v) return type(p) == "table" and p[1] == v and p[2] == v end

function Conv2d:extra_repr()
  local s = ("%d, %d, kernel_size=%s, stride=%s"):format(self.in_channels, self.out_channels,
    repr(self.kernel_size), repr(self.stride))
  if type(self.padding) == "string" then s = s .. ", padding=" .. self.padding
  elseif not is_pair_of(self.padding, 0) then s = s .. ", padding=" .. repr(self.padding) end
  if not is_pair_of(self.dilation, 1) then s = s .. ", dilation=" .. repr(self.dilation) end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if not self.bias then s = s .. ", bias=False" end
  return s
end

--- Embedding(num_embeddings, embedding_dim): weight [num, dim] ~ N(0, 1); ids are 1-based.
local Embedding = Module:extend("Embedding")
nn.Embedding = Embedding

function Embedding:init(num_embeddings, embedding_dim)
  local where = "ft.nn.Embedding"
  self.num_embeddings = size(where, "num_embeddings", num_embeddings)
  self.embedding_dim = size(where, "embedding_dim", embedding_dim)
  -- The same draws as ft.randn(num, dim), skipped under ft.nn.init.skip.
  self.weight = Parameter(ft.empty(num_embeddings, embedding_dim))
  init.normal_(self.weight)
end

function Embedding:forward(ids) return F.embedding(ids, self.weight) end

function Embedding:extra_repr() return ("%d, %d"):format(self.num_embeddings, self.embedding_dim) end

-- ---- normalisation -----------------------------------------------------------------------------

--- BatchNorm over dim 2 (channels): BatchNorm2d(c) for [N,C,H,W], BatchNorm1d(c) for [N,C] or
-- [N,C,L]. opts: {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}.
local BatchNorm = Module:extend("BatchNorm")
nn.BatchNorm = BatchNorm

function BatchNorm:init(num_features, opts)
  local where = "ft.nn." .. self.__name
  opts = ft.check_options(where, opts, {"eps", "momentum", "affine", "track_running_stats"})
  self.num_features = size(where, "num_features", num_features)
  self.eps = check.number(where, "eps", opts.eps, 1e-5, {above = 0})
  self.momentum = check.number(where, "momentum", opts.momentum, 0.1, {min = 0, max = 1})
  self.affine = check.boolean(where, "affine", opts.affine, true)
  self.track_running_stats = check.boolean(where, "track_running_stats", opts.track_running_stats, true)
  if self.affine then
    self.weight = Parameter(ft.ones(num_features))
    self.bias = Parameter(ft.zeros(num_features))
  end
  if self.track_running_stats then
    self:register_buffer("running_mean", ft.zeros(num_features))
    self:register_buffer("running_var", ft.ones(num_features))
    self:register_buffer("num_batches_tracked", ft.tensor(0, { dtype = "int64" }))
  end
end

--- bn:check_input(x) raises an error naming the expected dims when x does not fit the layer
-- (BatchNorm1d: 2-D or 3-D, BatchNorm2d: 4-D); the base accepts any input.
function BatchNorm:check_input(x) end

-- self.bn_policy (set by ft.peft when it freezes or unfreezes the layer): "eval" computes as
-- in eval mode even while the model trains (running statistics used, never updated), so a
-- frozen layer stays bit-identical; "train" or nil follows self.training.
-- A gradient checkpoint's recomputation (ft.autograd.is_recomputing()) normalises with the
-- batch statistics as the first forward did but leaves the running statistics alone: the
-- first forward already updated them, and the step must update them once.
function BatchNorm:forward(x)
  self:check_input(x)
  local training = self.training and self.bn_policy ~= "eval"
  local track = self.track_running_stats and not (training and ft.autograd.is_recomputing())
  if training and track then self.num_batches_tracked:add_(1) end
  -- Batch statistics in training, or when no running statistics are kept.
  local use_batch = training or not self.track_running_stats
  local update = not training or track
  return F.batch_norm(x, update and self.running_mean or nil, update and self.running_var or nil,
    self.weight, self.bias, { training = use_batch, momentum = self.momentum, eps = self.eps })
end

function BatchNorm:extra_repr()
  return ("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s"):format(self.num_features,
    repr(self.eps), repr(self.momentum), repr(self.affine), repr(self.track_running_stats))
end

local function batch_norm_class(name, dims, expected)
  local class = BatchNorm:extend(name)
  function class:check_input(x)
    if not dims[x:dim()] then
      error(("ft.nn.%s: expected %s input (got %dD input)"):format(name, expected, x:dim()), 3)
    end
  end
  return class
end
--- BatchNorm1d(c, {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}): BatchNorm
-- over the channels of [N,C] or [N,C,L].
nn.BatchNorm1d = batch_norm_class("BatchNorm1d", { [2] = true, [3] = true }, "2D or 3D")
--- BatchNorm2d(c, {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}): BatchNorm
-- over the channels of [N,C,H,W].
nn.BatchNorm2d = batch_norm_class("BatchNorm2d", { [4] = true }, "4D")

--- LayerNorm(normalized_shape, {eps=1e-5, elementwise_affine=true, bias=true}) over the trailing dims.
local LayerNorm = Module:extend("LayerNorm")
nn.LayerNorm = LayerNorm

function LayerNorm:init(normalized_shape, opts)
  local where = "ft.nn.LayerNorm"
  opts = ft.check_options(where, opts, {"eps", "elementwise_affine", "bias"})
  self.normalized_shape = type(normalized_shape) == "table" and normalized_shape or { normalized_shape }
  if #self.normalized_shape == 0 then
    check.fail(where, "normalized_shape", "a size or a list of sizes", normalized_shape)
  end
  for i, d in ipairs(self.normalized_shape) do size(where, ("normalized_shape[%d]"):format(i), d) end
  self.eps = check.number(where, "eps", opts.eps, 1e-5, {above = 0})
  self.elementwise_affine = check.boolean(where, "elementwise_affine", opts.elementwise_affine, true)
  local bias = check.boolean(where, "bias", opts.bias, true)
  if self.elementwise_affine then
    self.weight = Parameter(ft.ones(self.normalized_shape))
    if bias then self.bias = Parameter(ft.zeros(self.normalized_shape)) end
  end
end

function LayerNorm:forward(x)
  return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, { eps = self.eps })
end

function LayerNorm:extra_repr()
  return ("%s, eps=%s, elementwise_affine=%s"):format(repr(self.normalized_shape), repr(self.eps),
    repr(self.elementwise_affine))
end

-- ---- regularisation and activations ---------------------------------------------------------------

--- Dropout(p = 0.5): zeroes each element with probability p in training (scaling the rest
-- by 1 / (1 - p)); the identity in eval mode. p in [0, 1].
local Dropout = Module:extend("Dropout")
nn.Dropout = Dropout
function Dropout:init(p) self.p = check.number("ft.nn.Dropout", "p", p, 0.5, {min = 0, max = 1}) end
function Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function Dropout:extra_repr() return ("p=%s, inplace=False"):format(repr(self.p + 0.0)) end

-- Parameter-free activations: ReLU(), Tanh(), Sigmoid(), SiLU().
for name, fn in pairs({ ReLU = F.relu, Tanh = F.tanh, Sigmoid = F.sigmoid, SiLU = F.silu }) do
  local class = Module:extend(name)
  function class:forward(x) return fn(x) end
  nn[name] = class
end

--- GELU({approximate="none"|"tanh"}) (or GELU("tanh")).
local GELU = Module:extend("GELU")
nn.GELU = GELU
function GELU:init(opts)
  if type(opts) == "string" then opts = {approximate = opts} end
  opts = ft.check_options("ft.nn.GELU", opts, {"approximate"})
  self.approximate = check.one_of("ft.nn.GELU", "approximate", opts.approximate, "none", {"none", "tanh"})
end
function GELU:forward(x) return F.gelu(x, self.approximate) end
function GELU:extra_repr() return "approximate=" .. repr(self.approximate) end

--- Softmax(dim) and LogSoftmax(dim), dim 1-based.
for name, fn in pairs({ Softmax = F.softmax, LogSoftmax = F.log_softmax }) do
  local class = Module:extend(name)
  function class:init(dim) self.dim = check.integer("ft.nn." .. name, "dim", dim) end
  function class:forward(x) return fn(x, self.dim) end
  function class:extra_repr() return "dim=" .. tostring(self.dim) end
  nn[name] = class
end

-- ---- pooling and reshaping ------------------------------------------------------------------------

--- MaxPool2d(kernel, {stride=kernel, padding=0, ceil_mode=false})
local MaxPool2d = Module:extend("MaxPool2d")
nn.MaxPool2d = MaxPool2d

-- The options both pools share; AvgPool2d adds count_include_pad.
local POOL_OPTIONS = {"stride", "padding", "ceil_mode"}

local function pool_init(self, where, kernel_size, opts, extra)
  local valid = table.move(POOL_OPTIONS, 1, #POOL_OPTIONS, 1, {})
  if extra then valid[#valid + 1] = extra end
  opts = ft.check_options(where, opts, valid)
  pair(where, "kernel_size", kernel_size, 1)
  self.kernel_size = kernel_size
  if opts.stride ~= nil then pair(where, "stride", opts.stride, 1) end
  self.stride = opt(opts, "stride", kernel_size)
  pair(where, "padding", opt(opts, "padding", 0), 0)
  self.padding = opt(opts, "padding", 0)
  self.ceil_mode = check.boolean(where, "ceil_mode", opts.ceil_mode, false)
  return opts
end

function MaxPool2d:init(kernel_size, opts)
  pool_init(self, "ft.nn.MaxPool2d", kernel_size, opts)
end

function MaxPool2d:forward(x)
  return F.max_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding, ceil_mode = self.ceil_mode })
end

function MaxPool2d:extra_repr()
  return ("kernel_size=%s, stride=%s, padding=%s, dilation=1, ceil_mode=%s"):format(repr(self.kernel_size),
    repr(self.stride), repr(self.padding), repr(self.ceil_mode))
end

--- AvgPool2d(kernel, {stride=kernel, padding=0, ceil_mode=false, count_include_pad=true})
local AvgPool2d = Module:extend("AvgPool2d")
nn.AvgPool2d = AvgPool2d

function AvgPool2d:init(kernel_size, opts)
  opts = pool_init(self, "ft.nn.AvgPool2d", kernel_size, opts, "count_include_pad")
  self.count_include_pad = check.boolean("ft.nn.AvgPool2d", "count_include_pad", opts.count_include_pad, true)
end

function AvgPool2d:forward(x)
  return F.avg_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding,
    ceil_mode = self.ceil_mode, count_include_pad = self.count_include_pad })
end

function AvgPool2d:extra_repr()
  return ("kernel_size=%s, stride=%s, padding=%s"):format(repr(self.kernel_size), repr(self.stride),
    repr(self.padding))
end

--- AdaptiveAvgPool2d(size or {h, w})
local AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d")
nn.AdaptiveAvgPool2d = AdaptiveAvgPool2d
function AdaptiveAvgPool2d:init(output_size)
  pair("ft.nn.AdaptiveAvgPool2d", "output_size", output_size, 1)
  self.output_size = output_size
end
function AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self.output_size) end
function AdaptiveAvgPool2d:extra_repr() return "output_size=" .. repr(self.output_size) end

--- Flatten(start_dim=2, end_dim=-1): merges dims start..end (1-based; the batch dim 1 is kept).
local Flatten = Module:extend("Flatten")
nn.Flatten = Flatten

function Flatten:init(start_dim, end_dim)
  self.start_dim = check.integer("ft.nn.Flatten", "start_dim", start_dim, 2)
  self.end_dim = check.integer("ft.nn.Flatten", "end_dim", end_dim, -1)
end

function Flatten:forward(x)
  local shape, n = x:shape(), x:dim()
  local s = self.start_dim < 0 and n + self.start_dim + 1 or self.start_dim
  local e = self.end_dim < 0 and n + self.end_dim + 1 or self.end_dim
  local out = {}
  for d = 1, s - 1 do out[#out + 1] = shape[d] end
  local merged = 1
  for d = s, e do merged = merged * shape[d] end
  out[#out + 1] = merged
  for d = e + 1, n do out[#out + 1] = shape[d] end
  return x:reshape(out)
end

function Flatten:extra_repr() return ("start_dim=%d, end_dim=%d"):format(self.start_dim, self.end_dim) end
return nn
