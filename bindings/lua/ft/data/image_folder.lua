--- ft.data.image_folder(dir, {transform = function(img) return img end}) -> dataset
-- dir/<class>/<image>.png, one subfolder per class: labels follow the sorted folder names
-- (1-based), classes = the folder names. Images are loaded with ft.image.load ([C,H,W] in
-- [0,1]), passed through transform if given, and must then all share one shape.
local ft = require "ft"

local same_shape = require("ft.tables").same_shape

local WHERE = "ft.data.image_folder"

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

local function sorted_entries(dir, kind, filter)
  local names = {}
  for name, k in pairs(ft._listdir(dir)) do
    if k == kind and name:sub(1, 1) ~= "." and (not filter or filter(name)) then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

--- ft.data.image_folder(dir, {transform =}) -> {x = [N,C,H,W], y = [N] int64 labels (1-based,
-- sorted folder order), classes = folder names}; see the top of this file.
return function(dir, opts)
  opts = ft.check_options(WHERE, opts, {"transform"})
  ft.check.string(WHERE, "dir", ft.check.required(WHERE, "dir", dir))
  local transform = ft.check.func(WHERE, "transform", opts.transform)
  local classes = sorted_entries(dir, "directory")
  if #classes == 0 then
    error(("%s: no class subfolders in '%s' (expected %s/<class>/<image>.png)"):format(WHERE, dir, dir), 2)
  end
  local images, labels, shape, first = {}, {}, nil, nil
  for label, class in ipairs(classes) do
    local folder = dir .. "/" .. class
    for _, name in ipairs(sorted_entries(folder, "file", function(n) return n:lower():match("%.png$") end)) do
      local path = folder .. "/" .. name
      local img = ft.image.load(path)
      if transform then img = transform(img) end
      local s = img:shape()
      if not shape then
        shape, first = s, path
      elseif not same_shape(s, shape) then
        error(("%s: '%s' has shape %s but '%s' has shape %s; all images must share a shape "
               .. "(resize them, or pass a transform that does)"):format(WHERE, path, shape_str(s), first,
               shape_str(shape)), 2)
      end
      images[#images + 1] = img
      labels[#labels + 1] = label
    end
  end
  if #images == 0 then
    error(("%s: no .png images in the class folders of '%s'"):format(WHERE, dir), 2)
  end
  return {x = ft.stack(images, 1), y = ft.tensor(labels, {dtype = "int64"}), classes = classes}
end
