-- ft.progress: console output for long runs. On a terminal (stderr is a tty) a progress
-- line is rewritten in place; otherwise it becomes a plain log line every few steps, so
-- piped output and CI logs stay readable.
--
--   local P = ft.progress
--   P.progress(step, steps, 50, "step %d/%d  loss %.4f  ETA %s", step, steps, loss, P.hms(eta))
--   P.log("epoch %d done", epoch)     -- a permanent line (clears the progress line first)
local ft = require "ft"

local P = {}

P.tty = ft.isatty(io.stderr)

-- Seconds as m:ss or h:mm:ss.
function P.hms(s)
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

-- Clears the progress line on a terminal (before other output).
function P.clear()
  if P.tty then io.stderr:write("\r\27[K") end
end

function P.log(fmt, ...)
  P.clear()
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

-- A progress line: rewritten in place on a terminal, a log line every `every` steps otherwise.
function P.progress(step, steps, every, fmt, ...)
  if P.tty then
    io.stderr:write("\r\27[K", fmt:format(...))
    io.stderr:flush()
  elseif step % every == 0 or step == steps then
    io.stdout:write(fmt:format(...), "\n")
    io.stdout:flush()
  end
end

return P
