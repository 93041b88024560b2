--- ft.optim.zero: ft.optim.ZeroRedundancy, optimizer state sharded over the ranks (ZeRO stage 1,
-- as PyTorch's torch.distributed.optim.ZeroRedundancyOptimizer and DeepSpeed's ZeRO-1).
--
--   local ddp = ft.dist.DataParallel(model)
--   local opt = ft.optim.ZeroRedundancy(model:parameters(), ft.optim.AdamW, {lr = 1e-3})
--   local sched = ft.optim.lr_scheduler.CosineAnnealingLR(opt, {T_max = steps})
--   for x, y in loader:iter() do
--     loss_fn(ddp(x), y):backward()       -- every rank now holds the averaged gradients
--     ft.optim.clip_grad_norm(model:parameters(), 1.0)
--     opt:step(); opt:zero_grad(); sched:step()
--   end
--
-- Each rank owns a partition of the parameters: whole parameters, assigned greedily (largest
-- first, each to the rank that owns the fewest elements so far, ties to the lower rank), the
-- same on every rank. Each rank builds the inner optimizer (SGD, Adam or AdamW) over its own
-- parameters only, so the optimizer state (momentum buffers, Adam's two moments) lives on its
-- owner alone: about 1 / world_size of it per rank. opt:step() steps this rank's partition
-- (constraints from ft.optim.constrain run there, on the owner), then one all_gather per dtype
-- of a flat buffer (each rank's updated parameters packed and padded to the largest partition)
-- gives every rank every updated parameter.
--
-- Why the gradients are all-reduced (by DataParallel) rather than reduce-scattered to their
-- owners: gradient clipping by global norm (ft.optim.clip_grad_norm) and the step code see
-- whole gradients on every rank, unchanged; for large buffers Open MPI's ring all-reduce is a
-- reduce-scatter followed by an all-gather, so it moves the same bytes as the reduce-scatter
-- plus the parameter all-gather ZeRO-2 would do; and the memory ZeRO-1 saves is the optimizer
-- state, which is what this sharding removes.
--
-- opt.param_groups are the groups over all parameters, as the plain optimizer has them: a
-- schedule writes group.lr (or betas, momentum) there and every step copies each group's
-- options to the inner optimizer, so ft.optim.lr_scheduler works unchanged. opt.optim is this
-- rank's inner optimizer (nil when it owns nothing: more ranks than parameters). opt:state_dict()
-- is collective and returns on every rank the full state, in the plain optimizer's format, so
-- a checkpoint moves between ZeroRedundancy on any number of ranks and a plain optimizer in one
-- process. In a world of one nothing is communicated and the step is the inner optimizer's,
-- bit for bit. Every rank must call step, state_dict, load_state_dict and add_param_group in
-- the same order, as any collective.
local ft = require "ft"

local check = ft.check

local WHERE = "ft.optim.ZeroRedundancy"

local Zero = {}
Zero.__index = Zero

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

-- A message without the "file:line: " that error() put in front of it.
local function strip(err)
  return (tostring(err):gsub("^[^%s:]+:%d+: ", "", 1))
end

-- An optimizer class (what ft.optim.new_optimizer builds instances of), not an instance.
local function is_class(x)
  return type(x) == "table" and rawget(x, "param_groups") == nil and type(x.name) == "string"
    and type(x.defaults) == "table" and type(x._update) == "function" and type(x._check_group) == "function"
end

local function is_optimizer(x)
  return type(x) == "table" and type(rawget(x, "param_groups")) == "table" and is_class(getmetatable(x))
end

-- The class behind ft.optim.SGD / Adam / AdamW, or a class itself.
local function resolve_class(x)
  if is_class(x) then return x end
  local O = ft.optim
  if x == O.SGD then return O.SGDClass end
  if x == O.Adam then return O.AdamClass end
  if x == O.AdamW then return O.AdamWClass end
  return nil
end

-- Assigns the parameters at indices (into self._params) to ranks, largest first, each to the
-- rank owning the fewest elements so far (ties: the earlier parameter, the lower rank).
local function assign(self, indices)
  local order = {}
  for k, i in ipairs(indices) do order[k] = i end
  local numel = {}
  for _, i in ipairs(order) do numel[i] = self._params[i]:numel() end
  table.sort(order, function(a, b)
    if numel[a] ~= numel[b] then return numel[a] > numel[b] end
    return a < b
  end)
  for _, i in ipairs(order) do
    local best = 0
    for r = 1, self._world - 1 do
      if self._load[r + 1] < self._load[best + 1] then best = r end
    end
    self._owner[i] = best
    self._load[best + 1] = self._load[best + 1] + numel[i]
  end
end

-- Every rank must have parameters of the same shapes in the same groups.
local function check_same_params(self)
  if self._world == 1 then return end
  local described = {}
  for i, p in ipairs(self._params) do
    described[i] = ("param_groups[%d] %s %s"):format(self._group_of[i], shape_str(p), p:dtype())
  end
  local ok, err = pcall(ft.dist.check_same, "the optimizer's parameters", described)
  if not ok then error(WHERE .. ": " .. strip(err), 0) end
end

-- Copies every option of the outer groups (all but params) to the inner optimizer's groups.
local function sync_options(self)
  local inner = self.optim
  if not inner then return end
  for k, group in ipairs(inner.param_groups) do
    for key, v in pairs(self.param_groups[self._inner_to_outer[k]]) do
      if key ~= "params" then group[key] = v end
    end
  end
end

-- The inner group spec for outer group g: this rank's parameters of it and g's options, or nil.
local function owned_group(self, g, first)
  local mine = {}
  for i = first, #self._params do
    if self._group_of[i] == g and self._owner[i] == self._rank then mine[#mine + 1] = self._params[i] end
  end
  if #mine == 0 then return nil end
  local spec = {}
  for key, v in pairs(self.param_groups[g]) do
    if key ~= "params" then spec[key] = v end
  end
  spec.params = mine
  return spec
end

-- Adds this rank's parameters of outer group g to the inner optimizer (building it if needed).
local function add_owned(self, g, first)
  local spec = owned_group(self, g, first)
  if not spec then return end
  if self.optim then
    self.optim:add_param_group(spec)
  else
    local defaults = {}
    for k, v in pairs(self.defaults) do defaults[k] = v end
    self.optim = ft.optim.new_optimizer(self._class, {spec}, defaults)
  end
  self._inner_to_outer[#self.optim.param_groups] = g
end

-- Per dtype, the parameters of each rank in packing order and the largest partition's elements.
local function build_layout(self)
  local by_dtype, names = {}, {}
  for i, p in ipairs(self._params) do
    local d = p:dtype()
    local entry = by_dtype[d]
    if not entry then
      entry = {dtype = d, size = 0, ranks = {}, counts = {}}
      for r = 1, self._world do entry.ranks[r], entry.counts[r] = {}, 0 end
      by_dtype[d] = entry
      names[#names + 1] = d
    end
    local r = self._owner[i] + 1
    entry.ranks[r][#entry.ranks[r] + 1] = p
    entry.counts[r] = entry.counts[r] + p:numel()
  end
  table.sort(names)
  self._layout = {}
  for _, d in ipairs(names) do
    local entry = by_dtype[d]
    for r = 1, self._world do entry.size = math.max(entry.size, entry.counts[r]) end
    self._layout[#self._layout + 1] = entry
  end
end

-- A flat buffer of the tensors' values, zero-padded to size elements.
local function pack(tensors, size, dtype)
  local parts = {}
  local n = 0
  for _, t in ipairs(tensors) do
    parts[#parts + 1] = t:reshape(-1)
    n = n + t:numel()
  end
  if n < size then parts[#parts + 1] = ft.zeros(size - n, {dtype = dtype}) end
  if #parts == 1 then return parts[1]:clone() end
  return ft.cat(parts, 1)
end

-- Every rank's updated parameters to every rank: one all_gather per dtype.
local function exchange(self)
  local dist = ft.dist
  ft.no_grad(function()
    for _, entry in ipairs(self._layout) do
      if entry.size > 0 then
        local all = dist.all_gather(pack(entry.ranks[self._rank + 1], entry.size, entry.dtype))
        for r = 1, self._world do
          if r ~= self._rank + 1 then
            local at = (r - 1) * entry.size
            for _, p in ipairs(entry.ranks[r]) do
              local n = p:numel()
              p:copy_(all:narrow(1, at + 1, n):view(p:shape()))
              at = at + n
            end
          end
        end
      end
    end
  end)
end

--- ft.optim.ZeroRedundancy(params, optimizer, options) -> opt, or ft.optim.ZeroRedundancy(opt):
-- an optimizer whose state is sharded over the ranks (ZeRO-1, see ft.optim.zero). params: an
-- array of tensors or of param groups, as the optimizers take them; optimizer: ft.optim.SGD,
-- ft.optim.Adam, ft.optim.AdamW (or their classes, ft.optim.AdamWClass ...); options: that
-- optimizer's options (an unknown one is an error). Given a built optimizer instead, it takes
-- over its groups and options, keeps the state of this rank's parameters and drops the rest:
-- step the returned optimizer, not opt, from then on. opt.param_groups are the groups over
-- all parameters; opt.optim the inner optimizer over this rank's own. Collective: every rank
-- calls it, with parameters of the same shapes (checked).
local function new(params, optimizer, options)
  local full, class
  if is_optimizer(params) then
    if optimizer ~= nil or options ~= nil then
      error(WHERE .. ": given a built optimizer, it takes no optimizer class or options", 2)
    end
    full, class = params, getmetatable(params)
  else
    class = resolve_class(optimizer)
    if not class then
      error(("%s: optimizer must be ft.optim.SGD, ft.optim.Adam or ft.optim.AdamW (or an optimizer class "
        .. "such as ft.optim.AdamWClass), got %s"):format(WHERE, check.show(optimizer)), 2)
    end
    local ok, built = pcall(ft.optim.new_optimizer, class, params, options)
    if not ok then error(WHERE .. ": " .. strip(built), 2) end
    full = built
  end

  local self = setmetatable({
    param_groups = full.param_groups, defaults = full.defaults,
    _full = full, _class = class, _rank = ft.dist.rank(), _world = ft.dist.world_size(),
    _params = {}, _group_of = {}, _owner = {}, _load = {}, _inner_to_outer = {},
  }, Zero)
  for r = 1, self._world do self._load[r] = 0 end
  local all = {}
  for g, group in ipairs(self.param_groups) do
    for _, p in ipairs(group.params) do
      self._params[#self._params + 1] = p
      self._group_of[#self._params] = g
      all[#all + 1] = #self._params
    end
  end
  local ok, err = pcall(check_same_params, self)
  if not ok then error(err, 2) end
  assign(self, all)
  for g = 1, #self.param_groups do add_owned(self, g, 1) end
  build_layout(self)

  -- a built optimizer's state: this rank's parameters keep theirs, the others' is dropped
  local old = full.state
  full.state = {}
  if self.optim then
    for _, group in ipairs(self.optim.param_groups) do
      for _, p in ipairs(group.params) do self.optim.state[p] = old[p] end
    end
  end
  return self
end

--- opt:step([closure]) -> closure's result: runs closure (if given), steps this rank's
-- parameters with the options of opt.param_groups (read now, so schedules just write
-- group.lr), runs their constraints (ft.optim.constrain), then sends every rank the updated
-- parameters (one all_gather per dtype). Collective.
function Zero:step(closure)
  local loss
  if closure ~= nil then
    check.func(WHERE .. ":step", "closure", closure)
    loss = closure()
  end
  for _, group in ipairs(self.param_groups) do
    local problem = self._class._check_group(group)
    if problem then error(("%s(%s): %s"):format(WHERE, self._class.name, problem), 2) end
  end
  if self.optim then
    sync_options(self)
    self.optim:step()
  end
  exchange(self)
  return loss
end

--- opt:zero_grad([set_to_none = true]) drops every parameter's gradient (all ranks' partitions:
-- every rank holds every gradient) or fills them with zeros; a boolean or {set_to_none = bool}.
function Zero:zero_grad(set_to_none)
  local where = WHERE .. ":zero_grad"
  if type(set_to_none) == "table" then
    set_to_none = ft.check_options(where, set_to_none, {"set_to_none"}).set_to_none
  end
  set_to_none = check.boolean(where, "set_to_none", set_to_none, true)
  for _, group in ipairs(self.param_groups) do ft._optim.zero_grad(group.params, set_to_none) end
end

--- opt:add_param_group(group): adds {params = {...}, <options>} (options not given take the
-- defaults); its parameters are assigned to ranks as at construction, without moving the
-- others. Collective.
function Zero:add_param_group(group)
  local ok, err = pcall(self._full.add_param_group, self._full, group)
  if not ok then error(WHERE .. ":add_param_group: " .. strip(err), 2) end
  local g = #self.param_groups
  local first = #self._params + 1
  local added = {}
  for _, p in ipairs(self.param_groups[g].params) do
    self._params[#self._params + 1] = p
    self._group_of[#self._params] = g
    added[#added + 1] = #self._params
  end
  ok, err = pcall(check_same_params, self)
  if not ok then error(err, 2) end
  assign(self, added)
  add_owned(self, g, first)
  build_layout(self)
end

--- opt:partition() -> owners: owners[i] is the rank (0-based) that owns the i-th parameter,
-- counting over all param groups in order as state dicts do (a new array).
function Zero:partition()
  local out = {}
  for i, r in ipairs(self._owner) do out[i] = r end
  return out
end

-- This rank's state: a description {{i =, k =, d = dtype, s = shape} or {i =, k =, n = number}}
-- in packing order, and the tensors by dtype in the same order.
local function describe_state(self)
  local desc, tensors = {}, {}
  local inner = self.optim
  for i, p in ipairs(self._params) do
    local s = inner and self._owner[i] == self._rank and inner.state[p]
    if s then
      local keys = {}
      for k in pairs(s) do if type(k) == "string" then keys[#keys + 1] = k end end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local v = s[k]
        if ft.is_tensor(v) then
          local d = v:dtype()
          desc[#desc + 1] = {i = i, k = k, d = d, s = v:shape()}
          tensors[d] = tensors[d] or {}
          tensors[d][#tensors[d] + 1] = v
        elseif type(v) == "number" then
          desc[#desc + 1] = {i = i, k = k, n = v}
        end
      end
    end
  end
  return desc, tensors
end

--- opt:state_dict() -> the full state dict, on every rank: the owners' state gathered (tensors
-- with one all_gather per dtype, numbers with ft.dist.broadcast_value), in the format of the
-- plain optimizer over all parameters (see ft.optim), so ft.optim.AdamW(...):load_state_dict
-- takes it in one process and any ZeroRedundancy takes it on any number of ranks. Its tensors
-- are copies, not the live buffers. Collective.
function Zero:state_dict()
  local dist = ft.dist
  local mine, tensors = describe_state(self)
  local descs = {}
  for r = 0, self._world - 1 do
    descs[r + 1] = dist.broadcast_value(mine, r) -- collective: every rank, each root in turn
  end
  -- sizes per dtype and rank, then one all_gather of each dtype's padded buffers
  local sizes, names = {}, {}
  for r, desc in ipairs(descs) do
    for _, e in ipairs(desc) do
      if e.d then
        if not sizes[e.d] then sizes[e.d] = {}; names[#names + 1] = e.d end
        local n = 1
        for _, len in ipairs(e.s) do n = n * len end
        sizes[e.d][r] = (sizes[e.d][r] or 0) + n
      end
    end
  end
  table.sort(names)
  local gathered = {}
  ft.no_grad(function()
    for _, d in ipairs(names) do
      local size = 0
      for r = 1, self._world do size = math.max(size, sizes[d][r] or 0) end
      local buf = pack(tensors[d] or {}, size, d)
      gathered[d] = {all = self._world == 1 and buf or dist.all_gather(buf), size = size}
    end
  end)
  local state = {}
  for r, desc in ipairs(descs) do
    local at = {}
    for _, e in ipairs(desc) do
      local p = self._params[e.i]
      state[p] = state[p] or {}
      if e.d then
        local g = gathered[e.d]
        local off = at[e.d] or 0
        local n = 1
        for _, len in ipairs(e.s) do n = n * len end
        local shape = #e.s > 0 and e.s or {1}
        local t = g.all:narrow(1, (r - 1) * g.size + off + 1, n):view(shape)
        if #e.s == 0 then t = t:reshape({}) end
        state[p][e.k] = t
        at[e.d] = off + n
      else
        state[p][e.k] = e.n
      end
    end
  end
  local full = self._full
  full.state = state
  local ok, sd = pcall(full.state_dict, full)
  full.state = {}
  if not ok then error(WHERE .. ":state_dict: " .. strip(sd), 2) end
  return sd
end


--- opt:load_state_dict(sd) restores a full state dict (from opt:state_dict() on any number of
-- ranks, or from the plain optimizer's state_dict()): every rank checks all of it against all
-- the parameters (a mismatch is an error on every rank and changes nothing), takes the options
-- of every group, and keeps (copies of) the state of its own parameters only.
function Zero:load_state_dict(sd)
  local name = WHERE .. ":load_state_dict"
  if type(sd) ~= "table" then error(name .. ": expected a table, got " .. type(sd), 2) end
  -- every rank checks all of it, so that every rank fails or none does
  local ok, options, states = pcall(ft.optim.read_state_dict, self.param_groups, sd)
  if not ok then error(name .. ": " .. tostring(options), 2) end
  ft.optim.set_group_options(self.param_groups, options)
  local inner = self.optim
  if not inner then return end
  inner.state = {}
  for i, p in ipairs(self._params) do
    if self._owner[i] == self._rank then
      local s = {}
      for k, v in pairs(states[i] or {}) do s[k] = ft.is_tensor(v) and ft._optim.copy(v) or v end
      inner.state[p] = s
    end
  end
  sync_options(self)
end

function Zero:__tostring()
  local mine, elements = 0, 0
  for i, p in ipairs(self._params) do
    if self._owner[i] == self._rank then
      mine = mine + 1
      elements = elements + p:numel()
    end
  end
  local total = 0
  for _, n in ipairs(self._load) do total = total + n end
  return ("%s(%s) (rank %d of %d: %d of %d parameters, %d of %d elements)"):format(WHERE, self._class.name,
    self._rank, self._world, mine, #self._params, elements, total)
end

return new
