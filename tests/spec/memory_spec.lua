-- Tensor memory is reclaimed without the user calling collectgarbage.
local ft = require "ft"

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

describe("memory", function()
  it("stays flat over a 1,000-step training loop", function()
    if os.getenv("FT_SANITIZE") == "1" then
      pending("resident memory is not meaningful under AddressSanitizer: its quarantine keeps freed memory")
      return
    end
    ft.manual_seed(0)
    local nn, F = ft.nn, ft.nn.functional
    local model = nn.Sequential{
      nn.Conv2d(1, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(8 * 14 * 14, 64), nn.ReLU(), nn.Linear(64, 10),
    }
    local opt = ft.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9})
    local x = ft.randn(32, 1, 28, 28)
    local y = ft.randint(1, 10, {32})
    local at100
    for step = 1, 1000 do
      local loss = F.cross_entropy(model(x), y)
      opt:zero_grad()
      loss:backward()
      opt:step()
      if step == 100 then at100 = rss_kb() end
    end
    local at1000 = rss_kb()
    print(string.format("RSS at step 100: %d kB, at step 1000: %d kB", at100, at1000))
    assert.is_true(at1000 <= at100 * 1.10,
      string.format("RSS grew from %d kB to %d kB", at100, at1000))
  end)

  it("frees a tensor at once with <close>", function()
    local before = ft.live_bytes()
    do
      local big <close> = ft.zeros(1024, 1024)
      assert.are.equal(before + 4 * 1024 * 1024, ft.live_bytes())
    end
    assert.are.equal(before, ft.live_bytes())
  end)
end)
