-- The standard layers of ft.nn (containers, linear, convolution, normalisation, pooling,
-- activations), with torch's parameter names, default initialisation and printed form.
-- ft.nn re-exports every class here.
local ft = require "ft"
local F = require "ft.nn.functional"

local base = require "ft.nn.module"

local nn = {}
local Module, Parameter, repr = base.Module, base.Parameter, base._repr
local init = require "ft.nn.init"

local function pair(v, what)
  if type(v) == "table" then return { v[1], v[2] } end
  assert(math.type(v) == "integer", "ft.nn: " .. what .. " must be an integer or a pair")
  return { v, v }
end

local function opt(opts, key, default)
  local v = opts and opts[key]
  if v == nil then return default end
  return v
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

local Identity = Module:extend("Identity")
nn.Identity = Identity
function Identity:forward(x) return x end

-- ---- linear, convolution, embedding ------------------------------------------------------

--- Linear(in_features, out_features, {bias=true}): weight [out, in], bias [out].
local Linear = Module:extend("Linear")
nn.Linear = Linear

function Linear:init(in_features, out_features, opts)
  self.in_features, self.out_features = in_features, out_features
  self.weight = Parameter(ft.zeros(out_features, in_features))
  if opt(opts, "bias", true) then self.bias = Parameter(ft.zeros(out_features)) end
  self:reset_parameters()
end

-- torch's defaults: kaiming_uniform(a=sqrt(5)) weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases.
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
  self.in_channels, self.out_channels = in_channels, out_channels
  self.kernel_size = pair(kernel_size, "kernel_size")
  self.stride = pair(opt(opts, "stride", 1), "stride")
  local padding = opt(opts, "padding", 0)
  self.padding = type(padding) == "string" and padding or pair(padding, "padding")
  self.dilation = pair(opt(opts, "dilation", 1), "dilation")
  self.groups = opt(opts, "groups", 1)
  if in_channels % self.groups ~= 0 or out_channels % self.groups ~= 0 then
    error(("ft.nn.Conv2d: in_channels %d and out_channels %d must be divisible by groups %d"):format(
      in_channels, out_channels, self.groups), 2)
  end
  local k = self.kernel_size
  self.weight = Parameter(ft.zeros(out_channels, in_channels // self.groups, k[1], k[2]))
  if opt(opts, "bias", true) then self.bias = Parameter(ft.zeros(out_channels)) end
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
  self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
  self.weight = Parameter(ft.randn(num_embeddings, embedding_dim))
end

function Embedding:forward(ids) return F.embedding(ids, self.weight) end

function Embedding:extra_repr() return ("%d, %d"):format(self.num_embeddings, self.embedding_dim) end

-- ---- normalisation -----------------------------------------------------------------------------

--- BatchNorm over dim 2 (channels): BatchNorm2d(c) for [N,C,H,W], BatchNorm1d(c) for [N,C] or
-- [N,C,L]. opts: {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}.
local BatchNorm = Module:extend("BatchNorm")
nn.BatchNorm = BatchNorm

function BatchNorm:init(num_features, opts)
  self.num_features = num_features
  self.eps = opt(opts, "eps", 1e-5)
  self.momentum = opt(opts, "momentum", 0.1)
  self.affine = opt(opts, "affine", true)
  self.track_running_stats = opt(opts, "track_running_stats", true)
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

function BatchNorm:check_input(x) end

-- self.bn_policy (set by ft.peft when it freezes or unfreezes the layer): "eval" computes as
-- in eval mode even while the model trains (running statistics used, never updated), so a
-- frozen layer stays bit-identical; "train" or nil follows self.training.
function BatchNorm:forward(x)
  self:check_input(x)
  local training = self.training and self.bn_policy ~= "eval"
  if training and self.track_running_stats then self.num_batches_tracked:add_(1) end
  -- Batch statistics in training, or when no running statistics are kept.
  local use_batch = training or not self.track_running_stats
  local update = not training or self.track_running_stats
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
nn.BatchNorm1d = batch_norm_class("BatchNorm1d", { [2] = true, [3] = true }, "2D or 3D")
nn.BatchNorm2d = batch_norm_class("BatchNorm2d", { [4] = true }, "4D")

--- LayerNorm(normalized_shape, {eps=1e-5, elementwise_affine=true, bias=true}) over the trailing dims.
local LayerNorm = Module:extend("LayerNorm")
nn.LayerNorm = LayerNorm

function LayerNorm:init(normalized_shape, opts)
  self.normalized_shape = type(normalized_shape) == "table" and normalized_shape or { normalized_shape }
  self.eps = opt(opts, "eps", 1e-5)
  self.elementwise_affine = opt(opts, "elementwise_affine", true)
  if self.elementwise_affine then
    self.weight = Parameter(ft.ones(self.normalized_shape))
    if opt(opts, "bias", true) then self.bias = Parameter(ft.zeros(self.normalized_shape)) end
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

local Dropout = Module:extend("Dropout")
nn.Dropout = Dropout
function Dropout:init(p) self.p = p or 0.5 end
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
  self.approximate = type(opts) == "string" and opts or opt(opts, "approximate", "none")
end
function GELU:forward(x) return F.gelu(x, self.approximate) end
function GELU:extra_repr() return "approximate=" .. repr(self.approximate) end

--- Softmax(dim) and LogSoftmax(dim), dim 1-based.
for name, fn in pairs({ Softmax = F.softmax, LogSoftmax = F.log_softmax }) do
  local class = Module:extend(name)
  function class:init(dim) self.dim = dim end
  function class:forward(x) return fn(x, self.dim) end
  function class:extra_repr() return "dim=" .. tostring(self.dim) end
  nn[name] = class
end

-- ---- pooling and reshaping ------------------------------------------------------------------------

--- MaxPool2d(kernel, {stride=kernel, padding=0, ceil_mode=false})
local MaxPool2d = Module:extend("MaxPool2d")
nn.MaxPool2d = MaxPool2d

function MaxPool2d:init(kernel_size, opts)
  self.kernel_size = kernel_size
  self.stride = opt(opts, "stride", kernel_size)
  self.padding = opt(opts, "padding", 0)
  self.ceil_mode = opt(opts, "ceil_mode", false)
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
  MaxPool2d.init(self, kernel_size, opts)
  self.count_include_pad = opt(opts, "count_include_pad", true)
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
function AdaptiveAvgPool2d:init(output_size) self.output_size = output_size end
function AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self.output_size) end
function AdaptiveAvgPool2d:extra_repr() return "output_size=" .. repr(self.output_size) end

--- Flatten(start_dim=2, end_dim=-1): merges dims start..end (1-based; the batch dim 1 is kept).
local Flatten = Module:extend("Flatten")
nn.Flatten = Flatten

function Flatten:init(start_dim, end_dim)
  self.start_dim, self.end_dim = start_dim or 2, end_dim or -1
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
