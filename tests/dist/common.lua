-- What the distributed test scripts (tests/dist/*.lua, run under mpirun by tests/sh/dist_*.sh)
-- share. Each script checks with plain errors: a failing rank ends the job (MPI_Abort), so a
-- failure can never leave the other ranks waiting.
local ft = require "ft"

local T = {}

T.dist = ft.dist.init()
T.rank, T.world = T.dist.rank(), T.dist.world_size()

--- T.say(fmt, ...): one line from rank 0.
function T.say(fmt, ...)
  if T.rank == 0 then print(fmt:format(...)) end
end

--- T.max_param_diff(a, b) -> the largest |a - b| over the parameters of two models of the same shape.
function T.max_param_diff(a, b)
  local theirs = {}
  for name, p in b:named_parameters() do theirs[name] = p end
  local worst = 0
  for name, p in a:named_parameters() do
    assert(theirs[name], "parameter " .. name .. " missing from the reference")
    worst = math.max(worst, (p:to("float32") - theirs[name]:to("float32")):abs():max():item())
  end
  return worst
end

--- T.within(value, tol, what): an error naming what unless value <= tol.
function T.within(value, tol, what)
  if not (value <= tol) then error(("rank %d: %s: %.3g exceeds %.3g"):format(T.rank, what, value, tol), 2) end
  T.say("ok   %s: %.3g (at most %.3g)", what, value, tol)
end

--- T.fails(fn, pattern, what): an error unless fn() raises an error matching pattern (plain text).
function T.fails(fn, pattern, what)
  local ok, err = pcall(fn)
  if ok then error(("rank %d: %s: no error"):format(T.rank, what), 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(("rank %d: %s: the error %q does not say %q"):format(T.rank, what, tostring(err), pattern), 2)
  end
  T.say("ok   %s: %s", what, tostring(err):gsub("\n.*", ""))
end

--- T.rows(n) -> the int64 rows of an n-row batch that are this rank's (r+1, r+1+W, ...).
function T.rows(n)
  assert(n % T.world == 0, "batch not divisible by the world")
  local idx = {}
  for i = T.rank + 1, n, T.world do idx[#idx + 1] = i end
  return ft.tensor(idx, {dtype = "int64"})
end

--- T.gpt(seed [, overrides]) -> a small GPT-S without dropout, initialised from seed.
function T.gpt(seed, overrides)
  ft.manual_seed(seed)
  local config = {n_layer = 2, n_embd = 32, n_head = 2, n_positions = 32, vocab_size = 64,
    attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0}
  for k, v in pairs(overrides or {}) do config[k] = v end
  return ft.models.new("gpt-s", config)
end

--- T.lm_loss(model, ids) -> next-token cross-entropy of model over ids [B, T+1].
function T.lm_loss(model, ids)
  local n = ids:size(2) - 1
  local logits = model(ids:narrow(2, 1, n))
  logits = logits.logits or logits
  return ft.nn.functional.cross_entropy(logits:reshape(-1, logits:size(-1)), ids:narrow(2, 2, n):reshape(-1))
end

return T
