-- A rank that fails mid-training (tests/sh/dist_faults.sh): arg[1] = "error" raises a Lua error
-- on the last rank at step 3, "kill" kills the last rank with SIGKILL there. The other ranks
-- are by then waiting in the gradient all-reduce of that step; the job must still end.
local ft = require "ft"
local T = require "common"

local mode = arg[1]
assert(mode == "error" or mode == "kill", "usage: faults.lua error|kill")
local model = T.gpt(1)
local ddp = ft.dist.DataParallel(model)
local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-3})
ft.manual_seed(2)
for step = 1, 1000 do
  if step == 3 and T.rank == T.world - 1 then
    if mode == "error" then error("injected failure on the last rank at step 3") end
    local pid = io.open("/proc/self/stat"):read("n")
    os.execute("kill -KILL " .. math.tointeger(pid))
  end
  local loss = T.lm_loss(ddp, ft.randint(1, 64, {2, 17}))
  loss:backward()
  opt:step()
  opt:zero_grad()
  if T.rank == 0 then print("step " .. step) io.stdout:flush() end
end
print("NOT REACHED: the job went on without the failed rank")
