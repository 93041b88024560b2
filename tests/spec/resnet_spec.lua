-- models/resnet.lua's torchvision ResNets (resnet18/34/50) and resnet.from_safetensors,
-- checked against torchvision (fixtures from tests/gen/resnet.py).
local ft = require "ft"
local H = require "helpers"
local resnet = require "ft.models.resnet"

local WEIGHTS = H.fixture("resnet18.safetensors")

local function shape_of(list)
  local out = {}
  for i, n in ipairs(list) do out[i] = math.tointeger(n) end
  return H.shape_str(out)
end

-- A narrow resnet18 saved to a temporary safetensors file after `edit(sd)`; returns the path.
local function narrow_file(edit)
  local model = resnet.resnet18({ widths = { 4, 8, 8, 8 }, num_classes = 3 })
  local sd = model:state_dict()
  if edit then edit(sd) end
  local path = os.tmpname()
  ft.safetensors.save(path, sd)
  return path
end

local function load_narrow(path, opts)
  opts = opts or {}
  opts.arch = opts.arch or "resnet18"
  opts.widths = opts.widths or { 4, 8, 8, 8 }
  return resnet.from_safetensors(path, opts)
end

describe("torchvision ResNets", function()
  local expected = ft.json.read(H.fixture("resnet_keys.json"))

  -- torchvision's counts with 1000 classes
  local counts = { resnet18 = 11689512, resnet34 = 21797672, resnet50 = 25557032 }

  for _, arch in ipairs({ "resnet18", "resnet34", "resnet50" }) do
    it(arch .. " has torchvision's parameter count and state_dict names, order and shapes", function()
      local model = resnet[arch]()
      local want = expected[arch]
      assert.equal(counts[arch], math.tointeger(want.parameters))
      assert.equal(counts[arch], model:num_parameters())
      local names = {}
      for i, entry in ipairs(want.state_dict) do names[i] = entry[1] .. " " .. shape_of(entry[2]) end
      local sd, order = model:state_dict()
      local got = {}
      for i, k in ipairs(order) do got[i] = k .. " " .. H.shape_str(sd[k]:shape()) end
      assert.same(names, got)
    end)
  end

  it("takes num_classes", function()
    -- num_classes only changes fc: 512 * 10 + 10 instead of 512 * 1000 + 1000
    assert.equal(11689512 - 513000 + 5130, resnet.resnet18({ num_classes = 10 }):num_parameters())
    assert.same({ 10, 2048 }, resnet.resnet50({ num_classes = 10 }).fc.weight:shape())
  end)
end)

describe("resnet.from_safetensors", function()
  it("loads torchvision's resnet18 weights (F16) and matches its eval-mode logits", function()
    local model = resnet.from_safetensors(WEIGHTS, { arch = "resnet18" })
    assert.is_false(model.training)
    assert.is_false(model.layer4[2].bn2.training)
    assert.same({ 10, 512 }, model.fc.weight:shape())   -- num_classes from the file
    assert.equal(17, model.layer2[1].downsample[2].num_batches_tracked:item())
    local ref = ft.safetensors.load(H.fixture("resnet18_reference.safetensors"))
    assert.same({ 2, 3, 64, 64 }, ref.input:shape())
    local logits = ft.no_grad(function() return model(ref.input) end)
    assert.same({ 2, 10 }, logits:shape())
    H.assert_close(logits, ref.logits, 1e-4, "resnet18 logits")
    local got, want = H.flat(logits), H.flat(ref.logits)
    local worst = 0
    for i = 1, #want do worst = math.max(worst, math.abs(got[i] - want[i])) end
    assert.is_true(worst <= 1e-4, ("max abs error %.3g"):format(worst))
  end)

  it("takes num_classes and names the mis-shaped fc tensors and the file", function()
    local msg = H.error_of(resnet.from_safetensors, WEIGHTS, { arch = "resnet18", num_classes = 1000 })
    H.assert_mentions(msg, "resnet.from_safetensors", WEIGHTS, "fc.weight", "[10,512]", "[1000,512]", "fc.bias")
  end)

  it("lists the missing tensors when the architecture does not match the file", function()
    local msg = H.error_of(resnet.from_safetensors, WEIGHTS, { arch = "resnet34" })
    H.assert_mentions(msg, "missing", WEIGHTS, "layer1.2.conv1.weight")
    msg = H.error_of(resnet.from_safetensors, WEIGHTS, { arch = "resnet50" })
    H.assert_mentions(msg, "layer1.0.conv3.weight", "layer1.0.conv1.weight has shape [64,64,3,3]", "[64,64,1,1]")
  end)

  it("names a missing tensor", function()
    local path = narrow_file(function(sd) sd["layer3.1.bn2.running_var"] = nil end)
    local msg = H.error_of(load_narrow, path)
    os.remove(path)
    H.assert_mentions(msg, "missing", path, "layer3.1.bn2.running_var")
  end)

  it("names a mis-shaped tensor with both shapes", function()
    local path = narrow_file(function(sd) sd["layer2.0.downsample.0.weight"] = ft.zeros(8, 4, 3, 3) end)
    local msg = H.error_of(load_narrow, path)
    os.remove(path)
    H.assert_mentions(msg, "layer2.0.downsample.0.weight", "[8,4,3,3]", "[8,4,1,1]", path)
  end)

  it("names an unexpected tensor", function()
    local path = narrow_file(function(sd) sd["layer5.0.conv1.weight"] = ft.zeros(1) end)
    local msg = H.error_of(load_narrow, path)
    os.remove(path)
    H.assert_mentions(msg, "unexpected", "layer5.0.conv1.weight")
  end)

  it("accepts files without num_batches_tracked, as torch does", function()
    local path = narrow_file(function(sd)
      for k in pairs(sd) do
        if k:match("num_batches_tracked$") then sd[k] = nil end
      end
      sd["layer1.1.conv2.weight"]:fill_(0.25)
    end)
    local model = load_narrow(path)
    os.remove(path)
    assert.equal(0, model.bn1.num_batches_tracked:item())
    assert.same({ 0.25, 0.25 }, model.layer1[2].conv2.weight:reshape(-1):narrow(1, 1, 2):totable())
  end)

  it("rejects an unknown arch, listing the known ones", function()
    local msg = H.error_of(resnet.from_safetensors, WEIGHTS, { arch = "resnet101" })
    H.assert_mentions(msg, "resnet101", "resnet18", "resnet34", "resnet50")
    msg = H.error_of(resnet.from_safetensors, WEIGHTS)
    H.assert_mentions(msg, "arch")
  end)
end)
