--- ft.nn: modules (layers holding parameters and buffers), as torch.nn.
--
--   local Block = ft.nn.Module:extend("Block")
--   function Block:init(d) self.fc = ft.nn.Linear(d, d); self.norm = ft.nn.LayerNorm(d) end
--   function Block:forward(x) return self.norm(x + self.fc(x):relu()) end
--   local m = Block(16); local y = m(ft.randn(4, 16))
--
-- The room: ft.nn.module (Module, Parameter), ft.nn.layers (the standard layers),
-- ft.nn.sync_batch_norm (SyncBatchNorm, for ft.dist), ft.nn.init (initialisers),
-- ft.nn.functional (stateless ops, also ft.nn.functional = F).
local nn = {}
for k, v in pairs(require "ft.nn.module") do nn[k] = v end
for k, v in pairs(require "ft.nn.layers") do nn[k] = v end
for k, v in pairs(require "ft.nn.sync_batch_norm") do nn[k] = v end
nn.init = require "ft.nn.init"
nn.functional = require "ft.nn.functional"

return nn
