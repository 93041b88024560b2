-- ft.progress: console output for long runs. On a terminal (stderr is a tty) a progress
-- line is rewritten in place; otherwise it becomes a plain log line every few steps, so
-- piped output and CI logs stay readable. Under mpirun (ft.dist) only the main rank (rank 0)
-- prints: the other ranks' progress lines and log lines are dropped, so a run shows one of each.
--
--   local P = ft.progress
--   P.progress(step, steps, 50, "step %d/%d  loss %.4f  ETA %s", step, steps, loss, P.hms(eta))
--   P.log("epoch %d done", epoch)     -- a permanent line (clears the progress line first)
local ft = require "ft"

local P = {}

P.tty = ft.isatty(io.stderr)

-- Whether this process prints: the main rank (any process outside mpirun). Asked at each
-- line, not when this module loads, so that requiring it never joins the world.
local function prints() return ft.dist.is_main() end

--- P.hms(seconds) -> "m:ss" or "h:mm:ss" (negative times as 0:00).
function P.hms(s)
  if type(s) ~= "number" or s ~= s or math.abs(s) == math.huge then
    ft.check.fail("ft.progress.hms", "seconds", "a finite number", s)
  end
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

--- P.clear(): clears the progress line on a terminal (before other output); main rank only.
function P.clear()
  if P.tty and prints() then io.stderr:write("\r\27[K") end
end

--- P.log(fmt, ...): a permanent line on stdout (string.format's fmt), after clearing the
-- progress line; main rank only.
function P.log(fmt, ...)
  if type(fmt) ~= "string" then ft.check.fail("ft.progress.log", "fmt", "a format string", fmt) end
  if not prints() then return end
  P.clear()
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

--- P.progress(step, steps, every, fmt, ...): a progress line, rewritten in place on a
-- terminal, else printed as a log line every `every` steps and at step == steps (steps -1:
-- unknown). step and every are integers (every >= 1). Main rank only.
function P.progress(step, steps, every, fmt, ...)
  ft.check.integer("ft.progress.progress", "step", ft.check.required("ft.progress.progress", "step", step))
  ft.check.integer("ft.progress.progress", "steps", steps)
  ft.check.integer("ft.progress.progress", "every", ft.check.required("ft.progress.progress", "every", every),
    nil, {min = 1})
  if type(fmt) ~= "string" then ft.check.fail("ft.progress.progress", "fmt", "a format string", fmt) end
  if not prints() then return end
  if P.tty then
    io.stderr:write("\r\27[K", fmt:format(...))
    io.stderr:flush()
  elseif step % every == 0 or step == steps then
    io.stdout:write(fmt:format(...), "\n")
    io.stdout:flush()
  end
end

return P
