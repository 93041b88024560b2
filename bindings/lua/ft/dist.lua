--- ft.dist: training across processes. Under `mpirun -np N ftlua script.lua` the N processes
-- form a world (Open MPI): each is a rank, 0..N-1, and they exchange tensors with collectives.
-- Anywhere else the world is this one process (rank 0 of 1) and every collective returns its
-- input's values, so the same script runs alone or under mpirun.
--
--   ft.dist.init()
--   local ddp = ft.dist.DataParallel(model)          -- gradients averaged over the ranks
--   local loader = ft.data.loader(ds, {batch_size = 64, shuffle = true, seed = 1, shard = true})
--   for x, y in loader:iter() do                     -- each rank its 64 / N of every batch
--     local loss = loss_fn(ddp(x), y); loss:backward(); opt:step(); opt:zero_grad()
--   end
--   if ft.dist.is_main() then ... write results ... end
--
-- Every rank must call a collective in the same order with tensors of the same shape. Ranks
-- are numbered from 0, as MPI and torch.distributed number them. Each function joins the world
-- on first use, so calling ft.dist.init() first is optional.
local ft = require "ft"

local C = ft._dist
local check = ft.check

local dist = {}

local function join()
  if not C.initialized() then C.init() end
end

local OPS = {sum = true, avg = true, max = true, min = true}

local function reduce_op(where, opts)
  opts = ft.check_options(where, opts, {"op"})
  local op = opts.op == nil and "sum" or opts.op
  if not OPS[op] then check.fail(where, "op", "'sum', 'avg', 'max' or 'min'", op) end
  return op
end

local function tensor_arg(where, t)
  if not ft.is_tensor(t) then error(("%s: expected a tensor, got %s"):format(where, check.show(t)), 3) end
  return t
end

--- ft.dist.init() -> ft.dist: joins the world of the processes mpirun started (MPI_Init), or
-- a world of one outside mpirun. Idempotent. An error when the launcher asked for several
-- processes of a build without MPI.
function dist.init()
  join()
  return dist
end

--- ft.dist.rank() -> this process's rank, 0..world_size()-1.
function dist.rank()
  join()
  return C.rank()
end

--- ft.dist.world_size() -> the number of ranks (1 outside mpirun).
function dist.world_size()
  join()
  return C.world_size()
end

--- ft.dist.local_rank() -> this process's rank among those on its machine.
function dist.local_rank()
  join()
  return C.local_rank()
end

--- ft.dist.is_main() -> true on rank 0: the one that writes logs, results and checkpoints.
function dist.is_main() return dist.rank() == 0 end

--- ft.dist.built_with_mpi() -> whether this ftlua was built with MPI (the world can be bigger than one).
function dist.built_with_mpi() return C.built_with_mpi() end

--- ft.dist.barrier(): returns once every rank has called it.
function dist.barrier()
  join()
  C.barrier()
end

--- ft.dist.all_reduce(t [, {op = "sum" | "avg" | "max" | "min"}]) -> t: every rank's t becomes
-- the reduction of all ranks' t, in place (t contiguous; float32, float64 or int64; avg on
-- floats only).
function dist.all_reduce(t, opts)
  local op = reduce_op("ft.dist.all_reduce", opts)
  join()
  return C.all_reduce(tensor_arg("ft.dist.all_reduce", t), op)
end

--- ft.dist.broadcast(t [, root = 0]) -> t: every rank's t gets root's values, in place (any dtype).
function dist.broadcast(t, root)
  root = check.integer("ft.dist.broadcast", "root", root, 0, {min = 0})
  join()
  return C.broadcast(tensor_arg("ft.dist.broadcast", t), root)
end

--- ft.dist.all_gather(t) -> a new tensor [world_size * d1, d2, ...]: the ranks' t in rank
-- order along dim 1 (a 0-dim t gives [world_size]).
function dist.all_gather(t)
  join()
  return C.all_gather(tensor_arg("ft.dist.all_gather", t))
end

--- ft.dist.reduce_scatter(t [, {op = "sum"}]) -> a new tensor [d1 / world_size, d2, ...]: this
-- rank's block of dim 1 of the reduction of all ranks' t (d1 must divide by the world size).
function dist.reduce_scatter(t, opts)
  local op = reduce_op("ft.dist.reduce_scatter", opts)
  join()
  return C.reduce_scatter(tensor_arg("ft.dist.reduce_scatter", t), op)
end

--- ft.dist.sum_across(t) -> a new float32 tensor, the sum of t over the ranks, that autograd
-- sees through: the gradient each rank's t receives is the sum of the gradients every rank's
-- result received (what a statistic over the global batch needs, as in SyncBatchNorm).
function dist.sum_across(t)
  join()
  return C.sum_across(tensor_arg("ft.dist.sum_across", t))
end

--- ft.dist.shard(batch) -> this rank's rows of a global batch, and their count: rows rank+1,
-- rank+1+W, rank+1+2W ... of a tensor, or of every tensor in a table of tensors (the same first
-- dim; other values are kept as they are). The strided share is DistributedSampler's, so the
-- ranks' shares together are the batch. When the rows do not divide by the world size the
-- shares differ by one row: combine per-rank mean losses with ddp:global_mean then. A rank
-- whose share would be empty is an error. In a world of one, batch itself.
function dist.shard(batch)
  local world = dist.world_size()
  local n
  local function rows_of(t)
    if n == nil then n = t:size(1) end
    if t:size(1) ~= n then
      error(("ft.dist.shard: the batch's tensors have %d and %d rows"):format(n, t:size(1)), 3)
    end
  end
  if ft.is_tensor(batch) then rows_of(batch) elseif type(batch) == "table" then
    for _, v in pairs(batch) do if ft.is_tensor(v) then rows_of(v) end end
  else
    check.fail("ft.dist.shard", "batch", "a tensor or a table of tensors", batch)
  end
  if n == nil then check.fail("ft.dist.shard", "batch", "a tensor or a table of tensors", batch) end
  if world == 1 then return batch, n end
  if n < world then
    error(("ft.dist.shard: a batch of %d rows leaves some of the %d ranks nothing"):format(n, world), 2)
  end
  local idx = {}
  for i = dist.rank() + 1, n, world do idx[#idx + 1] = i end
  local count = #idx
  idx = ft.tensor(idx, {dtype = "int64"})
  if ft.is_tensor(batch) then return batch:index_select(1, idx), count end
  local out = {}
  for k, v in pairs(batch) do out[k] = ft.is_tensor(v) and v:index_select(1, idx) or v end
  return setmetatable(out, getmetatable(batch)), count
end

--- ft.dist.broadcast_value(v [, root = 0]) -> root's v on every rank: a string, number, boolean
-- or table of those (sent as JSON), e.g. a run folder's name or a seed only rank 0 drew.
function dist.broadcast_value(v, root)
  root = check.integer("ft.dist.broadcast_value", "root", root, 0, {min = 0})
  if dist.world_size() == 1 then return v end
  local text = dist.rank() == root and ft.json.encode({v = v}) or ""
  local len = dist.broadcast(ft.tensor({#text}, {dtype = "int64"}), root)[1]:item()
  local bytes = ft.zeros(len, {dtype = "int64"})
  if dist.rank() == root and len > 0 then
    local codes = {}
    for at = 1, len, 4096 do table.move({text:byte(at, math.min(at + 4095, len))}, 1, 4096, at, codes) end
    bytes:copy_(ft.tensor(codes, {dtype = "int64"}))
  end
  dist.broadcast(bytes, root)
  local chars = {}
  for i, b in ipairs(len > 0 and bytes:totable() or {}) do chars[i] = string.char(b) end
  return ft.json.decode(table.concat(chars)).v
end

local function show(v)
  if v == nil then return "nothing" end
  local s = type(v) == "string" and "'" .. v .. "'" or ft.json.encode(v)
  return #s > 200 and s:sub(1, 197) .. "..." or s
end

-- Where mine first differs from root's: nil when equal; for arrays, the position of the first
-- differing element (one past the shorter's end when one is a prefix); for other tables, the
-- first key (in sorted order) whose values differ; else 0.
local function first_difference(mine, root)
  local function same(a, b) return ft.json.encode({v = a}) == ft.json.encode({v = b}) end
  if same(mine, root) then return nil end
  if type(mine) ~= "table" or type(root) ~= "table" then return 0 end
  if #mine > 0 and #root > 0 then
    for i = 1, math.max(#mine, #root) do
      if not same(mine[i], root[i]) then return i end
    end
    return 0
  end
  local keys, seen = {}, {}
  for _, t in ipairs({mine, root}) do
    for k in pairs(t) do
      if not seen[k] then seen[k], keys[#keys + 1] = true, k end
    end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    if not same(mine[k], root[k]) then return k end
  end
  return 0
end

--- ft.dist.check_same(what, value): an error on every rank unless value (a string, number,
-- boolean or table of those, compared as JSON) is the same on every rank. The message names
-- what, rank 0's value and the first other rank's; for arrays the first elements that differ
-- ("the model's parameters differ between ranks: rank 0 has 'fc.weight [10,20] float32',
-- rank 1 has 'fc.weight [10,30] float32'"), for other tables the first key whose values differ
-- ("rank 0 has steps = 6, rank 1 has steps = 7"). recipe.parse checks the options this way,
-- DataParallel the model.
function dist.check_same(what, value)
  if type(what) ~= "string" then check.fail("ft.dist.check_same", "what", "a string", what) end
  if dist.world_size() == 1 then return end
  local root_value = dist.broadcast_value(value, 0)
  local at = first_difference(value, root_value)
  local code = at == nil and -1 or type(at) == "number" and at or -2
  local found = dist.all_gather(ft.tensor({code}, {dtype = "int64"})):totable()
  for r, i in ipairs(found) do
    if i ~= -1 then
      local ours, theirs, key
      if i == -2 then
        key = dist.broadcast_value(at, r - 1)
        ours, theirs = root_value[key], dist.broadcast_value(value[key], r - 1)
      else
        theirs = dist.broadcast_value(i > 0 and value[i] or value, r - 1)
        ours = i > 0 and root_value[i] or root_value
      end
      local prefix = key ~= nil and tostring(key) .. " = " or ""
      error(("ft.dist: %s differ between ranks: rank 0 has %s%s, rank %d has %s%s"):format(what, prefix, show(ours),
        r - 1, prefix, show(theirs)), 2)
    end
  end
end

--- ft.dist.DataParallel(model [, {bucket_mb = 25, broadcast = true, overlap = true}]) -> ddp: the
-- model with its gradients averaged over the ranks during backward (ft.dist.data_parallel).
dist.DataParallel = require "ft.dist.data_parallel"

return dist
