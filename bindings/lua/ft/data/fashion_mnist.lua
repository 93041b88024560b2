--- ft.data.fashion_mnist{split = "train"|"test", dir = path?} -> dataset {x =, y =, classes =}
-- x [N,1,28,28] float32 in [0,1], y [N] int64 labels 1..10 (the files' 0..9 plus one),
-- classes the ten class names (classes[y[i]] names sample i).
-- dir defaults to $FT_FASHION_MNIST_DIR, then /usr/share/datasets/fashion-mnist (Debian's
-- dataset-fashion-mnist package). Both the gzip-compressed files and uncompressed ones are read.
-- A label file holding a label outside 0..9, or image and label files of different lengths,
-- is an error naming the file.
local ft = require "ft"

local exists = require("ft.fs").exists

local CLASSES = {
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}
local DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
local WHERE = "ft.data.fashion_mnist"

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

--- ft.data.fashion_mnist{split = "train"|"test", dir = path?} -> {x = [N,1,28,28] float32 in
-- [0,1], y = [N] int64 labels 1..10, classes = the ten names}; see the top of this file.
return function(opts)
  opts = ft.check_options(WHERE, opts, {"split", "dir"})
  local split = ft.check.one_of(WHERE, "split", opts.split, "train", {"train", "test"})
  local prefix = split == "train" and "train" or "t10k"
  local dir = ft.check.string(WHERE, "dir", opts.dir) or os.getenv("FT_FASHION_MNIST_DIR") or DEFAULT_DIR
  local function find(base)
    for _, name in ipairs{base .. ".gz", base} do
      if exists(dir .. "/" .. name) then return dir .. "/" .. name end
    end
  end
  local images = find(prefix .. "-images-idx3-ubyte")
  local labels = find(prefix .. "-labels-idx1-ubyte")
  if not images or not labels then
    error(("%s: %s-images-idx3-ubyte.gz and %s-labels-idx1-ubyte.gz not found in '%s'; "
           .. "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
           .. "or pass dir= (or set FT_FASHION_MNIST_DIR) to a folder holding them"):format(WHERE, prefix, prefix, dir), 2)
  end
  local x = ft._idx_read(images, {dtype = "float32", scale = 1 / 255})
  local y = ft._idx_read(labels, {dtype = "int64", offset = 1})
  if x:dim() ~= 3 or y:dim() ~= 1 or x:size(1) ~= y:size(1) then
    error(("%s: '%s' holds images %s but '%s' holds labels %s; expected [N,H,W] and [N]")
          :format(WHERE, images, shape_str(x:shape()), labels, shape_str(y:shape())), 2)
  end
  if y:numel() > 0 and (y:min():item() < 1 or y:max():item() > #CLASSES) then
    -- The files hold 0..9; anything else is a corrupt or foreign label file.
    for i, label in ipairs(y:totable()) do
      if label < 1 or label > #CLASSES then
        error(("%s: '%s' holds label %d at position %d; Fashion-MNIST labels are 0..9")
              :format(WHERE, labels, label - 1, i), 2)
      end
    end
  end
  return {x = x:reshape(x:size(1), 1, x:size(2), x:size(3)), y = y, classes = table.move(CLASSES, 1, #CLASSES, 1, {})}
end
