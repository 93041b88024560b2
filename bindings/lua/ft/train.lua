--- ft.train: the building blocks training recipes share. A recipe keeps its own step
-- function; these pieces do the bookkeeping around it.
--
--   local train = ft.train
--   local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-3})
--   local result = train.loop{
--     epochs = 3, loader = ft.data.loader(ds, {batch_size = 64, shuffle = true, seed = 1}),
--     step = function(batch)                         -- batch = {x = ..., y = ...}
--       return train.step(opt, function() return F.cross_entropy(model(batch.x), batch.y) end,
--                         {clip = 1.0})
--     end,
--     evaluate = function()
--       local m = train.evaluate(model, val_loader, function(m, b)
--         return train.classification_metrics(m(b.x), b.y)
--       end)
--       return {val_loss = m.loss, val_accuracy = m.accuracy}
--     end,
--     model = model, optimizer = opt,
--     checkpoint = "run/checkpoint.h5", checkpoint_every = 100, resume = true,
--     logger = train.Logger{path = "run/metrics.jsonl", every = 10},
--     early_stopping = train.EarlyStopping{metric = "val_accuracy", patience = 3},
--   }
--
--   local m = train.evaluate(model, test)   -- no fn: accuracy and mean cross-entropy of a dataset
--
-- The room: ft.train.metrics (evaluate, batches and the metric helpers), ft.train.update
-- (step / accumulate / split_batch: one optimizer update, with gradient accumulation),
-- ft.train.early_stopping (EarlyStopping), ft.train.log (Logger), ft.train.checkpoint
-- (save_checkpoint / load_checkpoint) and ft.train.loop (loop). ft.train gathers them.
local train = {}

for _, part in ipairs{"ft.train.metrics", "ft.train.update", "ft.train.early_stopping"} do
  for k, v in pairs(require(part)) do train[k] = v end
end
train.Logger = require("ft.train.log").Logger
local checkpoint = require "ft.train.checkpoint"
train.save_checkpoint = checkpoint.save
train.load_checkpoint = checkpoint.load
train.loop = require "ft.train.loop"

return train
