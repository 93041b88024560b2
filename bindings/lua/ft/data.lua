--- ft.data: datasets and mini-batches.
--
-- A dataset is a plain table {x = tensor [N, ...], y = int64 tensor [N] of 1-based class
-- labels, classes = {name, ...}} so that classes[y[i]] names the class of sample i.
--
--   local train = ft.data.fashion_mnist{split = "train"}
--   local loader = ft.data.loader(train, {batch_size = 64, shuffle = true, seed = 1})
--   for epoch = 1, 10 do
--     for x, y in loader:iter() do ... end   -- one epoch; x [64,1,28,28], y [64]
--   end
--   print(#loader)                            -- batches per epoch
--
--   local six = ft.data.subset(train, {1, 2, 3, 4, 5, 7}, {relabel = true})   -- labels 1..6
--   local parts = ft.data.split(six, 5000, {seed = 1})     -- {train =, val =}: val holds 5000
--   local shots, pool = ft.data.per_class(parts.train, 10, {seed = 1})        -- 10 per class, the rest
--
-- The room: ft.data.fashion_mnist, ft.data.image_folder (datasets from files),
-- ft.data.loader (batches), ft.data.subsets (subset, per_class, split, concat) and
-- ft.data.shuffle (the seeded permutations they share).
local subsets = require "ft.data.subsets"

local data = {
  fashion_mnist = require "ft.data.fashion_mnist",
  image_folder = require "ft.data.image_folder",
  loader = require "ft.data.loader",
}
for k, v in pairs(subsets) do data[k] = v end

return data
