-- ResNets with torchvision's structure and parameter names (conv1.weight, bn1.running_mean,
-- layer1.0.conv1.weight, layer2.0.downsample.0.weight, fc.weight ...), so checkpoints map
-- one to one.
--
--   local resnet = require "ft.models.resnet"
--   local model = resnet.resnet_s{num_classes = 10}     -- 1x28x28 inputs (Fashion-MNIST)
--   local r18 = resnet.resnet18{num_classes = 1000}     -- 3x224x224 inputs, as torchvision
--   local r50 = resnet.from_safetensors("resnet50.safetensors", {arch = "resnet50"})
--   local net = ft.models.new("resnet-s", {num_classes = 4})   -- the same through the registry
--
-- The builders, ResNet(cfg) and the presets check their keys (resnet_s{num_clases = 4} is an
-- error naming 'num_classes') and values (positive stage depths and widths, a known stem ...).
--
-- torchvision weights load once converted to safetensors, e.g. in Python:
--   safetensors.torch.save_file(torchvision.models.resnet50(weights="DEFAULT").state_dict(), path)
--
-- One builder, ResNet(cfg), covers the family: a block type, blocks per stage, stage widths
-- and a stem ("small": conv3x3 stride 1, no pooling; "imagenet": conv7x7 stride 2 + maxpool).
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local nn = ft.nn

local M = {}

local function conv3x3(cin, cout, stride)
  return nn.Conv2d(cin, cout, 3, { stride = stride or 1, padding = 1, bias = false })
end

local function conv1x1(cin, cout, stride)
  return nn.Conv2d(cin, cout, 1, { stride = stride or 1, bias = false })
end

--- BasicBlock(inplanes, planes, stride, downsample): conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.
local BasicBlock = nn.Module:extend("BasicBlock")
BasicBlock.expansion = 1
M.BasicBlock = BasicBlock

function BasicBlock:init(inplanes, planes, stride, downsample)
  self.conv1 = conv3x3(inplanes, planes, stride)
  self.bn1 = nn.BatchNorm2d(planes)
  self.relu = nn.ReLU()
  self.conv2 = conv3x3(planes, planes)
  self.bn2 = nn.BatchNorm2d(planes)
  if downsample then self.downsample = downsample end
  self.stride = stride or 1
end

function BasicBlock:forward(x)
  local out = self.relu(self.bn1(self.conv1(x)))
  out = self.bn2(self.conv2(out))
  local identity = self.downsample and self.downsample(x) or x
  return (out + identity):relu()
end

--- Bottleneck(inplanes, planes, stride, downsample): 1x1 reduce, 3x3 (stride here, as
-- torchvision's ResNet v1.5), 1x1 expand to planes * 4, + shortcut, ReLU.
local Bottleneck = nn.Module:extend("Bottleneck")
Bottleneck.expansion = 4
M.Bottleneck = Bottleneck

function Bottleneck:init(inplanes, planes, stride, downsample)
  local out = planes * Bottleneck.expansion
  self.conv1 = conv1x1(inplanes, planes)
  self.bn1 = nn.BatchNorm2d(planes)
  self.conv2 = conv3x3(planes, planes, stride)
  self.bn2 = nn.BatchNorm2d(planes)
  self.conv3 = conv1x1(planes, out)
  self.bn3 = nn.BatchNorm2d(out)
  self.relu = nn.ReLU()
  if downsample then self.downsample = downsample end
  self.stride = stride or 1
end

function Bottleneck:forward(x)
  local out = self.relu(self.bn1(self.conv1(x)))
  out = self.relu(self.bn2(self.conv2(out)))
  out = self.bn3(self.conv3(out))
  local identity = self.downsample and self.downsample(x) or x
  return (out + identity):relu()
end

local BLOCKS = { basic = BasicBlock, bottleneck = Bottleneck }

--- ResNet(cfg):
--   block        "basic" | "bottleneck" (or a block class with .expansion)
--   layers       blocks per stage, e.g. {2, 2, 2, 2}
--   widths       planes per stage, e.g. {64, 128, 256, 512}; stage i > 1 starts with stride 2
--   stem         "imagenet" (conv7x7/2 + maxpool 3/2) or "small" (conv3x3/1, no pooling)
--   stem_width   channels out of the stem (default widths[1])
--   in_channels  default 3;  num_classes  default 1000
--   zero_init_residual  last BN of each block starts at 0 (torchvision's option)
-- An unknown key, or a value of the wrong type or out of range, is an error naming it.
local ResNet = nn.Module:extend("ResNet")
M.ResNet = ResNet
ResNet.hf_architecture = "ResNet"
ResNet.hf_model_type = "torchvision_resnet"

-- The builder keys, and with the registry's metadata the keys a ResNet config may have.
local BUILDER_KEYS = { "block", "layers", "widths", "stem", "stem_width", "in_channels", "num_classes",
  "zero_init_residual" }
ResNet.config_keys = { "architectures", "model_type", table.unpack(BUILDER_KEYS) }

-- A list of integers in [lo, hi], 1 to 16 entries.
local function int_list(r, key, list, lo, hi)
  if type(list) ~= "table" or #list == 0 or #list > 16 then
    r:fail("config field '%s' must be a list of 1 to 16 integers, got %s", key, tostring(list))
  end
  local out = {}
  for i, v in ipairs(list) do
    local n = math.type(v) and math.tointeger(v)
    if not n or n < lo or n > hi then
      r:fail("config field '%s' entry %d must be an integer in [%d, %d], got %s", key, i, lo, hi, tostring(v))
    end
    out[i] = n
  end
  return out
end

--- ResNet.read_config(cfg) -> the checked config (block class, layers, widths, stem, stem_width,
-- in_channels, num_classes, zero_init_residual).
function ResNet.read_config(cfg)
  local L = common.LIMITS
  if type(cfg) ~= "table" then error("ResNet: config must be a table, got " .. type(cfg), 0) end
  common.check_options("ResNet", cfg, ResNet.config_keys, 0)
  local r = common.config_reader(cfg, "ResNet")
  local block = cfg.block or "basic"
  if type(block) == "string" then block = BLOCKS[block] end
  if type(block) ~= "table" or math.type(block.expansion) ~= "integer" then
    r:fail("config field 'block' must be 'basic', 'bottleneck' or a block class, got %s", tostring(cfg.block))
  end
  local c = { block = block }
  if cfg.layers == nil then r:fail("config field 'layers' (blocks per stage) is missing") end
  c.layers = int_list(r, "layers", cfg.layers, 1, L.layers)
  c.widths = int_list(r, "widths", cfg.widths or { 64, 128, 256, 512 }, 1, L.width)
  if #c.layers ~= #c.widths then
    r:fail("config fields 'layers' (%d stages) and 'widths' (%d) must have the same length", #c.layers, #c.widths)
  end
  c.stem = r:str("stem", "imagenet")
  if c.stem ~= "imagenet" and c.stem ~= "small" then
    r:fail("config field 'stem' must be 'imagenet' or 'small', got '%s'", c.stem)
  end
  c.stem_width = r:int("stem_width", c.widths[1], 1, L.width)
  c.in_channels = r:int("in_channels", 3, 1, L.channels)
  c.num_classes = r:int("num_classes", 1000, 1, L.labels)
  c.zero_init_residual = r:bool("zero_init_residual", false)
  return c
end

--- ResNet.tensor_shapes(c) -> name -> shape of the state_dict (parameters and BatchNorm
-- buffers) of a checked config, computed without building anything.
function ResNet.tensor_shapes(c)
  local out = {}
  local function bn(prefix, ch)
    for _, k in ipairs({ "weight", "bias", "running_mean", "running_var" }) do out[prefix .. "." .. k] = { ch } end
    out[prefix .. ".num_batches_tracked"] = {}
  end
  local k = c.stem == "imagenet" and 7 or 3
  local inplanes = c.stem_width
  out["conv1.weight"] = { inplanes, c.in_channels, k, k }
  bn("bn1", inplanes)
  local expansion = c.block.expansion
  local bottleneck = c.block == Bottleneck
  for i, planes in ipairs(c.widths) do
    local stride = i == 1 and 1 or 2
    local width_out = planes * expansion
    for b = 0, c.layers[i] - 1 do
      local p = ("layer%d.%d."):format(i, b)
      local cin = b == 0 and inplanes or width_out
      if bottleneck then
        out[p .. "conv1.weight"] = { planes, cin, 1, 1 }
        out[p .. "conv2.weight"] = { planes, planes, 3, 3 }
        out[p .. "conv3.weight"] = { width_out, planes, 1, 1 }
        bn(p .. "bn1", planes); bn(p .. "bn2", planes); bn(p .. "bn3", width_out)
      else
        out[p .. "conv1.weight"] = { planes, cin, 3, 3 }
        out[p .. "conv2.weight"] = { planes, planes, 3, 3 }
        bn(p .. "bn1", planes); bn(p .. "bn2", planes)
      end
      if b == 0 and (stride ~= 1 or inplanes ~= width_out) then
        out[p .. "downsample.0.weight"] = { width_out, inplanes, 1, 1 }
        bn(p .. "downsample.1", width_out)
      end
    end
    inplanes = width_out
  end
  out["fc.weight"], out["fc.bias"] = { c.num_classes, inplanes }, { c.num_classes }
  return out, {}
end

function ResNet:init(cfg)
  local c = ResNet.read_config(cfg)
  models.check_size(ResNet.tensor_shapes(c), "ResNet")
  local block, widths, layers, stem = c.block, c.widths, c.layers, c.stem
  local inplanes = c.stem_width
  self.config = cfg

  if stem == "imagenet" then
    self.conv1 = nn.Conv2d(c.in_channels, inplanes, 7, { stride = 2, padding = 3, bias = false })
  else
    self.conv1 = conv3x3(c.in_channels, inplanes, 1)
  end
  self.bn1 = nn.BatchNorm2d(inplanes)
  self.relu = nn.ReLU()
  if stem == "imagenet" then self.maxpool = nn.MaxPool2d(3, { stride = 2, padding = 1 }) end

  for i, planes in ipairs(widths) do
    local stride = i == 1 and 1 or 2
    local out = planes * block.expansion
    local downsample
    if stride ~= 1 or inplanes ~= out then
      downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    end
    local stage = nn.Sequential(block(inplanes, planes, stride, downsample))
    for _ = 2, layers[i] do stage:append(block(out, planes, 1)) end
    self["layer" .. i] = stage
    inplanes = out
  end
  self.num_stages = #widths
  self.avgpool = nn.AdaptiveAvgPool2d({ 1, 1 })
  self.fc = nn.Linear(inplanes, c.num_classes)

  -- torchvision's initialisation: He normal (fan_out) convolutions, unit BatchNorm.
  for _, m in self:named_modules() do
    if m.__name == "Conv2d" then
      nn.init.kaiming_normal_(m.weight, { mode = "fan_out", nonlinearity = "relu" })
    elseif m.__name == "BatchNorm2d" then
      nn.init.ones_(m.weight)
      nn.init.zeros_(m.bias)
    end
  end
  if c.zero_init_residual then
    for _, m in self:named_modules() do
      local last = (m.__name == "Bottleneck" and m.bn3) or (m.__name == "BasicBlock" and m.bn2)
      if last then nn.init.zeros_(last.weight) end
    end
  end
end

--- net(x [B,C,H,W]) -> logits [B, num_classes].
function ResNet:forward(x)
  x = self.relu(self.bn1(self.conv1(x)))
  if self.maxpool then x = self.maxpool(x) end
  for i = 1, self.num_stages do x = self["layer" .. i](x) end
  x = self.avgpool(x)
  return self.fc(x:reshape(x:size(1), -1))
end

--- The modules m:gradient_checkpointing_enable() checkpoints: the stages (layer1 .. layerN,
-- each a Sequential of blocks). BatchNorm updates its running statistics once a step even so:
-- the recomputation in backward leaves them alone (ft.autograd.is_recomputing).
function ResNet:checkpoint_modules()
  local stages = {}
  for i = 1, self.num_stages do stages[i] = self["layer" .. i] end
  return stages
end

-- The builder's cfg (checked: unknown keys are errors naming the builder) over its defaults.
-- cfg.arch may name the builder itself, as the shipped checkpoints' configs record it
-- ({"arch": "resnet_s", "num_classes": 6}); another arch is an error.
local function with_defaults(name, cfg, defaults)
  local where = "resnet." .. name
  common.check_options(where, cfg, { "arch", table.unpack(BUILDER_KEYS) }, 2)
  if cfg and cfg.arch ~= nil and cfg.arch ~= name then
    error(("%s: cfg.arch is '%s', this builder makes '%s'"):format(where, tostring(cfg.arch), name), 3)
  end
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  for k, v in pairs(cfg or {}) do
    if k ~= "arch" then out[k] = v end
  end
  return out
end

--- resnet.resnet_s(cfg) -> ResNet-S for 1x28x28 images (Fashion-MNIST): stem conv3x3(1->32), 3
-- stages of 2 BasicBlocks with widths 32, 64, 128; 696,042 parameters with 10 classes. cfg:
-- {num_classes=10, in_channels=1, widths=} or any ResNet key (a narrower width list gives the
-- same structure, e.g. for tests); an unknown key is an error.
function M.resnet_s(cfg)
  return ResNet(with_defaults("resnet_s", cfg, { block = "basic", layers = { 2, 2, 2 },
    widths = { 32, 64, 128 }, stem = "small", in_channels = 1, num_classes = 10 }))
end

--- resnet.resnet18(cfg) -> torchvision's resnet18 (3x224x224 inputs, 1000 classes by default).
function M.resnet18(cfg)
  return ResNet(with_defaults("resnet18", cfg, { block = "basic", layers = { 2, 2, 2, 2 } }))
end

--- resnet.resnet34(cfg) -> torchvision's resnet34.
function M.resnet34(cfg)
  return ResNet(with_defaults("resnet34", cfg, { block = "basic", layers = { 3, 4, 6, 3 } }))
end

--- resnet.resnet50(cfg) -> torchvision's resnet50 (Bottleneck blocks).
function M.resnet50(cfg)
  return ResNet(with_defaults("resnet50", cfg, { block = "bottleneck", layers = { 3, 4, 6, 3 } }))
end

-- Presets for ft.models.new / ft.models.config: the configs the builders above use.
local PRESETS = {
  ["resnet-s"] = { block = "basic", layers = { 2, 2, 2 }, widths = { 32, 64, 128 }, stem = "small",
                   in_channels = 1, num_classes = 10 },
  resnet18 = { block = "basic", layers = { 2, 2, 2, 2 } },
  resnet34 = { block = "basic", layers = { 3, 4, 6, 3 } },
  resnet50 = { block = "bottleneck", layers = { 3, 4, 6, 3 } },
}
M.PRESETS = PRESETS

--- The config of a preset ("resnet-s", "resnet18", "resnet34", "resnet50") with overrides
-- applied, e.g. ft.models.config("resnet-s", {num_classes = 4}); ft.models.new builds it.
function M.config(name, overrides)
  local preset = PRESETS[name]
  if not preset then error(("resnet.config: unknown preset '%s'"):format(tostring(name)), 2) end
  common.check_options("resnet.config", overrides, ResNet.config_keys)
  local config = common.copy_config(preset, overrides)
  config.architectures = { "ResNet" }
  config.model_type = "torchvision_resnet"
  return config
end

local ARCHS = { "resnet18", "resnet34", "resnet50", "resnet_s" }
local IS_ARCH = {}
for _, name in ipairs(ARCHS) do IS_ARCH[name] = true end

--- Builds `opts.arch` ("resnet18" | "resnet34" | "resnet50" | "resnet_s") and loads the
-- torchvision state_dict saved at `path` (safetensors; F32, F16 or BF16 weights) into it,
-- strictly by name: a missing, unexpected or mis-shaped tensor is an error naming it and the
-- file. num_classes defaults to the rows of the file's fc.weight; the other options go to the
-- builder (e.g. widths = for a narrow net). As torch's BatchNorm does, a missing
-- num_batches_tracked is accepted (torchvision's published weights have none).
-- Returns the model in eval mode.
function M.from_safetensors(path, opts)
  local where = "resnet.from_safetensors"
  if type(path) ~= "string" then error(where .. ": a file path expected, got " .. type(path), 2) end
  opts = common.check_options(where, opts, { "arch", table.unpack(BUILDER_KEYS) })
  local arch = opts.arch
  if not IS_ARCH[arch] then
    error(("%s: option arch must be one of %s, got %s"):format(where, table.concat(ARCHS, ", "), tostring(arch)), 2)
  end
  local sd = ft.safetensors.load(path, { dtype = "float32" })   -- the model computes in float32
  local num_classes = opts.num_classes
  local fc = sd["fc.weight"]
  if num_classes == nil and ft.is_tensor(fc) and fc:dim() == 2 then num_classes = fc:size(1) end

  local cfg = {}
  for k, v in pairs(opts) do
    if k ~= "arch" then cfg[k] = v end
  end
  cfg.num_classes = num_classes
  local model = M[arch](cfg)

  local own, keys = model:state_dict()
  for _, k in ipairs(keys) do
    if sd[k] == nil and k:match("%.num_batches_tracked$") then sd[k] = own[k] end
  end
  models.load_hf_state_dict(model, sd, path, where)
  return model:eval()
end

return M
