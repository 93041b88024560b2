-- Tensor memory is reclaimed without the user calling collectgarbage: the bindings pace Lua's
-- collector by tensor bytes (bindings/ftl.c). This spec also runs under stock lua5.4
-- (tests/sh/memory_lua54.sh), whose collector is incremental where ftlua's is generational.
local ft = require "ft"

local MiB = 2 ^ 20

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)"))
end

-- Resident kB per mapping (address range -> {kB, description}), to say where memory grew.
local function mappings()
  local f = assert(io.open("/proc/self/smaps"))
  local text = f:read("a")
  f:close()
  local out = {}
  for head, body in text:gmatch("(%x+%-%x+ [^\n]*)\n(.-)VmFlags[^\n]*\n") do
    out[head:match("^%S+")] = { tonumber(body:match("\nRss:%s*(%d+)")) or 0, head }
  end
  return out
end

local function growth_report(before, after)
  local lines = {}
  for range, now in pairs(after) do
    local old = before[range] and before[range][1] or 0
    if now[1] - old >= 256 then lines[#lines + 1] = ("  +%d kB in %s"):format(now[1] - old, now[2]) end
  end
  table.sort(lines)
  return table.concat(lines, "\n")
end

-- A small conv + MLP classifier on one fixed batch: returns its training step.
local function small_mlp_step()
  ft.manual_seed(0)
  local nn, F = ft.nn, ft.nn.functional
  local model = nn.Sequential{
    nn.Conv2d(1, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(8 * 14 * 14, 64), nn.ReLU(), nn.Linear(64, 10),
  }
  local opt = ft.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9})
  local x = ft.randn(32, 1, 28, 28)
  local y = ft.randint(1, 10, {32})
  return function()
    local loss = F.cross_entropy(model(x), y)
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
end

-- The peak tensor bytes of one step when no garbage ever waits: a full collection before
-- every Lua instruction, so a tensor is freed as soon as nothing reaches it.
local function working_set(step)
  collectgarbage()
  collectgarbage()
  ft.reset_peak_bytes()
  debug.sethook(function() collectgarbage() end, "", 1)
  local ok, err = pcall(step)
  debug.sethook()
  assert(ok, err)
  return ft.peak_bytes()
end

describe("memory", function()
  it("stays flat over a 1,000-step training loop of a small MLP, garbage a fraction of the live set", function()
    if os.getenv("FT_SANITIZE") == "1" then
      pending("resident memory is not meaningful under AddressSanitizer: its quarantine keeps freed memory")
      return
    end
    -- One thread: OpenBLAS's per-thread scratch buffers are then touched once, in the first
    -- step; with two, which buffer a product uses depends on thread timing, and a later
    -- step can fault in one more (a one-off ~13 MB, not tensor memory).
    local threads = ft.get_num_threads()
    ft.set_num_threads(1)
    local step = small_mlp_step()
    step() -- creates the optimizer's momentum buffers
    local ws = working_set(step)

    collectgarbage()
    collectgarbage()
    ft.reset_peak_bytes()
    local at100, maps100, lua100
    for i = 1, 1000 do
      step()
      if i == 100 then
        at100, lua100 = status_kb("VmRSS"), collectgarbage("count")
        maps100 = mappings()
      end
    end
    local at1000, lua1000 = status_kb("VmRSS"), collectgarbage("count")
    local peak = ft.peak_bytes()
    ft.set_num_threads(threads)
    print(("working set %.2f MiB, peak tensor bytes over 1000 steps %.2f MiB; RSS at step 100: %d kB, at step 1000: %d kB")
      :format(ws / MiB, peak / MiB, at100, at1000))
    assert.is_true(peak <= 2 * ws + 8 * MiB,
      ("peak tensor bytes %.2f MiB exceed 2 x the working set (%.2f MiB) + 8 MiB"):format(peak / MiB, ws / MiB))
    assert.is_true(at1000 <= at100 * 1.10,
      ("RSS grew from %d kB at step 100 to %d kB at step 1000 (Lua heap %.0f kB to %.0f kB):\n%s"):format(
        at100, at1000, lua100, lua1000, growth_report(maps100, mappings())))
  end)

  it("collects garbage tensors as they are made, without collectgarbage()", function()
    collectgarbage()
    collectgarbage()
    local before = ft.live_bytes()
    ft.reset_peak_bytes()
    -- 256 MiB of 1 MiB tensors, each garbage as soon as the next is made.
    for _ = 1, 256 do
      local t = ft.zeros(512, 512)
      t:fill_(1)
    end
    local grown = ft.peak_bytes() - before
    assert.is_true(grown <= 16 * MiB, ("peak live bytes grew by %.1f MiB"):format(grown / MiB))
  end)

  it("does not collect while the collector is stopped", function()
    collectgarbage()
    collectgarbage()
    local before = ft.live_bytes()
    collectgarbage("stop")
    for _ = 1, 32 do ft.zeros(512, 512) end
    local held = ft.live_bytes() - before
    collectgarbage("restart")
    collectgarbage()
    collectgarbage()
    assert.are.equal(32 * MiB, held)
    assert.are.equal(before, ft.live_bytes())
  end)

  it("ft.resident_bytes reports the process's resident memory and its peak, which touching 64 MiB raises", function()
    local rss, peak = ft.resident_bytes()
    assert.is_true(math.type(rss) == "integer" and rss > 0 and peak >= rss, ("rss %s, peak %s"):format(rss, peak))
    local t <close> = ft.ones(16 << 20)   -- 64 MiB, every page written
    local rss2, peak2 = ft.resident_bytes()
    assert.is_true(rss2 >= rss + 60 * 2 ^ 20, ("resident %d -> %d bytes"):format(rss, rss2))
    assert.is_true(peak2 >= rss2, "the peak is at least what is resident")
  end)

  it("frees a tensor at once with <close>", function()
    collectgarbage()
    collectgarbage()
    local before = ft.live_bytes()
    do
      local big <close> = ft.zeros(1024, 1024)
      assert.are.equal(before + 4 * 1024 * 1024, ft.live_bytes())
    end
    assert.are.equal(before, ft.live_bytes())
  end)
end)
