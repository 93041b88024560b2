-- ft.progress: console output of long runs.
local ft = require "ft"
local H = require "helpers"

describe("ft.progress", function()
  it("formats seconds as m:ss and h:mm:ss", function()
    local P = ft.progress
    assert.are.equal("0:00", P.hms(0.4))
    assert.are.equal("1:05", P.hms(65))
    assert.are.equal("1:01:01", P.hms(3661))
  end)

  it("prints a plain line every N steps and the last step when stderr is not a terminal", function()
    local cmd = H.quote(os.getenv("FTLUA")) ..
      [[ -e 'for s = 1, 5 do ft.progress.progress(s, 5, 2, "step %d", s) end ft.progress.log("done")' 2>/dev/null]]
    local ok, out = H.run(cmd)
    assert.is_true(ok, out)
    assert.are.equal("step 2\nstep 4\nstep 5\ndone\n", out)
  end)
end)
