-- FT_PROFILE=1: every C-bound op counts its calls and self time, and each graph node its
-- backward time; the table goes to stderr at exit and ft.profile_report() returns it.
local H = require "helpers"
local ft = require "ft"
local ftlua = os.getenv("FTLUA") or "build/ftlua"

describe("FT_PROFILE", function()
  it("counts each op's calls and self time and prints the table at exit", function()
    local script = [[
      local x = ft.randn(64, 64, {requires_grad = true})
      for _ = 1, 3 do
        local y = ft.no_grad(function() return x:matmul(x) end)
        local z = (x:matmul(x) + y):sum()
        z:backward()
      end
      local r = ft.profile_report()
      io.write(("calls matmul=%d sum=%d no_grad=%d\n"):format(r["Tensor:matmul"] and r["Tensor:matmul"].calls or -1,
        r["Tensor:sum"] and r["Tensor:sum"].calls or -1, r.no_grad and r.no_grad.calls or -1))
      local total, nested = 0, r.no_grad.seconds
      for _, e in pairs(r) do total = total + e.seconds end
      io.write(("no_grad self share %.3f\n"):format(nested / total))
      io.write(("backward nodes matmul=%d sum=%d\n"):format(r["backward:matmul"].calls, r["backward:sum"].calls))]]
    local ok, out = H.run(("FT_PROFILE=1 %s -e %s 2>&1"):format(H.quote(ftlua), H.quote(script)))
    assert(ok, out)
    assert.is_truthy(out:find("calls matmul=6 sum=3 no_grad=3", 1, true), out)
    -- no_grad's self time leaves out the matmul it ran
    local share = tonumber(out:match("no_grad self share ([%d.]+)"))
    assert(share and share < 0.5, out)
    -- the report, twice: once asked for, once at exit
    local _, n = out:gsub("ft profile %(FT_PROFILE=1%): self time per op", "")
    assert.equal(2, n, out)
    assert.is_truthy(out:find("Tensor:backward", 1, true), out)
    -- backward passes broken down by graph node: x:matmul(x) and its sum, three times
    assert.is_truthy(out:find("backward nodes matmul=3 sum=3", 1, true), out)
  end)

  it("is off without the variable: no wrapping, an empty report", function()
    local ok, out = H.run(("%s -e %s 2>&1"):format(H.quote(ftlua),
      H.quote("ft.ones(2):sum(); local n = 0; for _ in pairs(ft.profile_report()) do n = n + 1 end; io.write('entries ', n)")))
    assert(ok, out)
    assert.is_truthy(out:find("entries 0", 1, true), out)
    assert.is_falsy(out:find("ft profile", 1, true), out)
    assert.is_table(ft.profile_report())
  end)
end)
