-- ft.nn.module: the Module base class and Parameter (ft.nn re-exports both), as torch.nn.
--
--   local Block = ft.nn.Module:extend("Block")
--   function Block:init(d) self.fc = ft.nn.Linear(d, d); self.norm = ft.nn.LayerNorm(d) end
--   function Block:forward(x) return self.norm(x + self.fc(x):relu()) end
--   local m = Block(16); local y = m(ft.randn(4, 16))
--
-- Assigning a Parameter, a Module, or a tensor to a name already registered as a buffer
-- registers it (in assignment order); other values are plain fields. Names of parameters
-- and buffers are PyTorch's dotted paths ("layer1.0.conv1.weight"), so checkpoints map one
-- to one. This is the base; ft.nn gathers it with the layers (ft.nn.layers) and initialisers.
local ft = require "ft"
local F = require "ft.nn.functional"

local nn = {}

local is_tensor = ft.is_tensor

-- ---- parameters -----------------------------------------------------------------------

-- Tensors created by Parameter(); weak keys so dropped parameters are collected.
local parameter_set = setmetatable({}, { __mode = "k" })

--- A tensor registered as a trainable parameter when assigned to a module field. Shares the
-- storage of t (a detached alias, as torch.nn.Parameter); requires_grad defaults to true.
function nn.Parameter(t, requires_grad)
  if parameter_set[t] then return t end
  assert(is_tensor(t), "ft.nn.Parameter: a tensor expected")
  local p = t:detach()
  if requires_grad == nil then requires_grad = true end
  p.requires_grad = requires_grad
  parameter_set[p] = true
  return p
end

--- nn.is_parameter(v) -> true when v is a tensor made by ft.nn.Parameter.
function nn.is_parameter(v) return parameter_set[v] == true end

-- ---- the Module class ----------------------------------------------------------------------

--- ft.nn.Module: the base class of layers and models. Subclass it with Module:extend(name),
-- define init(...) and forward(...); calling an instance runs forward.
local Module = { __name = "Module" }
nn.Module = Module

--- nn.is_module(v) -> true when v is an instance of an ft.nn.Module class.
local function is_module(v)
  return type(v) == "table" and rawget(v, "_modules") ~= nil and getmetatable(v) ~= nil
end
nn.is_module = is_module

-- Registration tables: name -> value plus an array of names keeping the order.
local KINDS = {
  parameter = { "_parameters", "_parameter_names" },
  buffer = { "_buffers", "_buffer_names" },
  module = { "_modules", "_module_names" },
}

local function unregister(self, name)
  for _, kind in pairs(KINDS) do
    local map, names = self[kind[1]], self[kind[2]]
    if map[name] ~= nil then
      map[name] = nil
      for i, n in ipairs(names) do
        if n == name then table.remove(names, i); break end
      end
    end
  end
  self._non_persistent[name] = nil
end

local function register(self, kind, name, value)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(("ft.nn: invalid %s name %q (a non-empty string without '.')"):format(kind, tostring(name)), 3)
  end
  local map, names = self[KINDS[kind][1]], self[KINDS[kind][2]]
  if map[name] == nil then
    unregister(self, name)
    rawset(self, name, nil)
    names[#names + 1] = name
  end
  map[name] = value
end

local function module_newindex(self, k, v)
  if type(k) == "string" then
    if parameter_set[v] then return register(self, "parameter", k, v) end
    if is_module(v) then return register(self, "module", k, v) end
    if self._buffers[k] ~= nil and is_tensor(v) then return register(self, "buffer", k, v) end
    if self._parameters[k] ~= nil or self._buffers[k] ~= nil or self._modules[k] ~= nil then
      if v ~= nil then
        local kind = self._parameters[k] ~= nil and "parameter (ft.nn.Parameter or nil expected)"
          or self._modules[k] ~= nil and "child module (a Module or nil expected)"
          or "buffer (a tensor or nil expected)"
        error(("ft.nn: cannot assign a %s to '%s': it is a registered %s"):format(type(v), k, kind), 2)
      end
      return unregister(self, k)
    end
  end
  rawset(self, k, v)
end

-- Python-like repr of option values for __tostring (True, 1e-05, (3, 3), 'tanh').
local function repr(v)
  if v == true then return "True" elseif v == false then return "False" elseif v == nil then return "None" end
  if math.type(v) == "float" then
    local s
    for prec = 1, 17 do
      s = ("%." .. prec .. "g"):format(v)
      if tonumber(s) == v then break end
    end
    if not s:find("[%.eni]") then s = s .. ".0" end
    return s
  end
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = repr(x) end
    return "(" .. table.concat(parts, ", ") .. (#v == 1 and ",)" or ")")
  end
  return tostring(v)
end
nn._repr = repr

local function module_tostring(self)
  local lines = {}
  local extra = self:extra_repr()
  local n_extra = 0
  if extra ~= "" then
    for line in (extra .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line; n_extra = n_extra + 1 end
  end
  for _, name in ipairs(self._module_names) do
    local child = tostring(self._modules[name]):gsub("\n", "\n  ")
    lines[#lines + 1] = "(" .. name .. "): " .. child
  end
  local s = self.__name .. "("
  if n_extra == 1 and #lines == 1 then
    s = s .. lines[1]
  elseif #lines > 0 then
    s = s .. "\n  " .. table.concat(lines, "\n  ") .. "\n"
  end
  return s .. ")"
end

local function make_instance_mt(class)
  return {
    __name = class.__name,
    __index = function(self, k)
      local v = self._parameters[k]
      if v ~= nil then return v end
      v = self._buffers[k]
      if v ~= nil then return v end
      v = self._modules[k]
      if v ~= nil then return v end
      if math.type(k) == "integer" then   -- containers: m[1] is the child named "0"
        return self._modules[self._module_names[k > 0 and k or #self._module_names + k + 1]]
      end
      return class[k]
    end,
    __newindex = module_newindex,
    __call = function(self, ...) return self:forward(...) end,
    __tostring = module_tostring,
    __len = function(self) return #self._module_names end,
  }
end

local function new_instance(class, ...)
  local self = setmetatable({
    _parameters = {}, _parameter_names = {},
    _buffers = {}, _buffer_names = {}, _non_persistent = {},
    _modules = {}, _module_names = {},
    training = true,
  }, class.__instance_mt)
  self:init(...)
  return self
end

local function class_tostring(class) return "ft.nn." .. class.__name .. " (class)" end

--- Creates a subclass: local M = ft.nn.Module:extend("Name"); then define M:init(...) and
-- M:forward(...); M(...) builds an instance. A subclass reaches its parent as M.super.
function Module:extend(name)
  local class = { __name = name or "Module", super = self }
  class.__instance_mt = make_instance_mt(class)
  return setmetatable(class, { __index = self, __call = new_instance, __tostring = class_tostring })
end
Module.__instance_mt = make_instance_mt(Module)
setmetatable(Module, { __call = new_instance, __tostring = class_tostring })

--- m:init(...): sets up a new instance (its parameters, buffers and children); called by
-- Class(...). The base does nothing.
function Module:init() end

--- m:forward(...) -> the module's output; m(...) calls it. The base raises an error.
function Module:forward()
  error(("ft.nn: module %s has no forward method"):format(self.__name), 2)
end

--- m:extra_repr() -> the text inside the module's printed form, before its children
-- (e.g. "in_features=4, out_features=2, bias=True"); the base gives "".
function Module:extra_repr() return "" end

-- ---- registration -----------------------------------------------------------------------------

--- Registers t as a parameter (wrapped with ft.nn.Parameter when it is not one). nil removes.
function Module:register_parameter(name, t)
  if t == nil then return unregister(self, name) end
  register(self, "parameter", name, nn.Parameter(t))
  return self._parameters[name]
end

--- Registers a buffer: state saved in state_dict but not trained (persistent=false: not saved).
function Module:register_buffer(name, t, persistent)
  if t == nil then return unregister(self, name) end
  assert(is_tensor(t), "ft.nn.register_buffer: a tensor expected")
  register(self, "buffer", name, t)
  self._non_persistent[name] = (persistent == false) or nil
  return t
end

--- m:add_module(name, child) registers child under name (nil removes it); returns child.
-- Also m:register_module.
function Module:add_module(name, m)
  if m == nil then return unregister(self, name) end
  assert(is_module(m), "ft.nn.add_module: a Module expected")
  register(self, "module", name, m)
  return m
end
Module.register_module = Module.add_module

-- ---- traversal ------------------------------------------------------------------------------

local function join(prefix, name) return prefix == "" and name or prefix .. "." .. name end

-- Array of {name, module} in pre-order, each module once.
local function collect_modules(root, prefix)
  local out, seen = {}, {}
  local function walk(m, p)
    if seen[m] then return end
    seen[m] = true
    out[#out + 1] = { p, m }
    for _, name in ipairs(m._module_names) do walk(m._modules[name], join(p, name)) end
  end
  walk(root, prefix or "")
  return out
end

local function iterate(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

--- Iterator over (name, module), the root first (name "").
function Module:named_modules(prefix)
  if prefix ~= nil and type(prefix) ~= "string" then
    ft.check.fail("ft.nn.Module:named_modules", "prefix", "a string", prefix)
  end
  return iterate(collect_modules(self, prefix))
end

--- m:modules() -> array of the module and all below it, in pre-order, each once.
function Module:modules()
  local out = {}
  for _, e in ipairs(collect_modules(self)) do out[#out + 1] = e[2] end
  return out
end

--- Iterator over (name, child) of the direct children, in registration order.
function Module:named_children()
  local list = {}
  for _, name in ipairs(self._module_names) do list[#list + 1] = { name, self._modules[name] } end
  return iterate(list)
end

--- Array of the direct children, in registration order.
function Module:children()
  local out = {}
  for i, name in ipairs(self._module_names) do out[i] = self._modules[name] end
  return out
end

-- Array of {name, tensor} of one registry kind; each tensor once (tied weights).
local MEMBER_OPTIONS = {"recurse", "prefix"}

local function collect_members(root, kind, opts, where)
  opts = ft.check_options(where, opts, MEMBER_OPTIONS)
  ft.check.boolean(where, "recurse", opts.recurse)
  if opts.prefix ~= nil and type(opts.prefix) ~= "string" then
    ft.check.fail(where, "prefix", "a string", opts.prefix)
  end
  local map_key, names_key = KINDS[kind][1], KINDS[kind][2]
  local modules = opts.recurse == false and { { opts.prefix or "", root } } or collect_modules(root, opts.prefix)
  local out, seen = {}, {}
  for _, e in ipairs(modules) do
    local prefix, m = e[1], e[2]
    for _, name in ipairs(m[names_key]) do
      local t = m[map_key][name]
      if not seen[t] then
        seen[t] = true
        out[#out + 1] = { join(prefix, name), t }
      end
    end
  end
  return out
end

--- Iterator over (dotted name, parameter), in registration order. opts: {recurse=, prefix=}.
function Module:named_parameters(opts)
  return iterate(collect_members(self, "parameter", opts, "ft.nn.Module:named_parameters"))
end

--- Array of parameters (frozen ones included), for optimizers.
function Module:parameters(opts)
  local out = {}
  for i, e in ipairs(collect_members(self, "parameter", opts, "ft.nn.Module:parameters")) do out[i] = e[2] end
  return out
end

--- Iterator over (dotted name, buffer), in registration order. opts: {recurse=, prefix=}.
function Module:named_buffers(opts)
  return iterate(collect_members(self, "buffer", opts, "ft.nn.Module:named_buffers"))
end

--- Array of buffers (running statistics and the like). opts: {recurse=, prefix=}.
function Module:buffers(opts)
  local out = {}
  for i, e in ipairs(collect_members(self, "buffer", opts, "ft.nn.Module:buffers")) do out[i] = e[2] end
  return out
end

--- Number of parameter elements; {trainable=true} counts only those requiring grad.
function Module:num_parameters(opts)
  opts = ft.check_options("ft.nn.Module:num_parameters", opts, {"trainable"})
  ft.check.boolean("ft.nn.Module:num_parameters", "trainable", opts.trainable)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not (opts and opts.trainable) or p.requires_grad then n = n + p:numel() end
  end
  return n
end

-- ---- modes, gradients, functions ---------------------------------------------------------------

--- Sets training mode (default true) on this module and all below it. Returns self.
function Module:train(mode)
  if mode == nil then mode = true end
  for _, e in ipairs(collect_modules(self)) do rawset(e[2], "training", mode and true or false) end
  return self
end

--- m:eval(): sets evaluation mode on this module and all below it (m:train(false)); returns m.
function Module:eval() return self:train(false) end

--- Drops the gradients of all parameters (as torch's zero_grad(set_to_none=True)).
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
end

--- Sets requires_grad on all parameters (false freezes the module). Returns self.
function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p.requires_grad = flag end
  return self
end

--- Calls fn(module) on every child (recursively) and then on self. Returns self.
function Module:apply(fn)
  for _, name in ipairs(self._module_names) do self._modules[name]:apply(fn) end
  fn(self)
  return self
end

-- ---- dtype ----------------------------------------------------------------------------------------

local FLOAT_DTYPES = { float32 = true, float = true, bfloat16 = true, float16 = true, half = true,
  float64 = true, double = true }

-- The modules whose tensors keep their dtype in m:to: the adapters' own children (their names
-- start with a kind's prefix), found through the registry only when the model has adapters.
local function adapter_modules(root)
  local keep = {}
  if not root._peft then return keep end
  local prefixes = {}
  for _, k in ipairs(require("ft.peft.registry").KINDS) do prefixes[#prefixes + 1] = k.prefix end
  for name, m in root:named_modules() do
    local last = name:match("[^.]+$") or ""
    for _, prefix in ipairs(prefixes) do
      if last:sub(1, #prefix) == prefix then
        for _, sub in m:named_modules() do keep[sub] = true end
      end
    end
  end
  return keep
end

--- m:to(dtype) -> m: converts every floating-point parameter and buffer to dtype ("bfloat16",
-- "float16", "float32", "float64") in place: each tensor keeps its identity (t:set_), so tied
-- weights stay tied and references stay valid; build the optimizer afterwards, as in torch.
-- Integer buffers are left alone, and so are the tensors of attached adapters (LoRA, (IA)3,
-- ReFT, prompt tuning), which train in float32 over a half-precision base. Layers compute in
-- float32 whatever their weights' dtype, so m:to("bfloat16") halves the memory of a frozen base.
function Module:to(dtype)
  local where = "ft.nn.Module:to"
  if not FLOAT_DTYPES[dtype] then
    ft.check.fail(where, "dtype", "one of bfloat16, float16, float32, float64", dtype)
  end
  local keep, seen = adapter_modules(self), {}
  ft.no_grad(function()
    for _, m in self:named_modules() do
      if not keep[m] then
        for _, list in ipairs({ { m._parameter_names, m._parameters }, { m._buffer_names, m._buffers } }) do
          for _, name in ipairs(list[1]) do
            local t = list[2][name]
            if t and not seen[t] and t:dtype() ~= "int64" then
              seen[t] = true
              t:set_(t:to(dtype))
            end
          end
        end
      end
    end
  end)
  return self
end

-- ---- state dict -----------------------------------------------------------------------------------

-- Walks parameters then persistent buffers of each module, children after their parent
-- (torch's order). Shared modules appear under each of their names, as in torch.
local function state_entries(root, prefix)
  local out = {}
  local function walk(m, p)
    for _, name in ipairs(m._parameter_names) do out[#out + 1] = { join(p, name), m._parameters[name] } end
    for _, name in ipairs(m._buffer_names) do
      if not m._non_persistent[name] then out[#out + 1] = { join(p, name), m._buffers[name] } end
    end
    for _, name in ipairs(m._module_names) do walk(m._modules[name], join(p, name)) end
  end
  walk(root, prefix or "")
  return out
end

--- m:state_dict([{prefix =, keep_vars = false}]) -> flat table dotted name -> tensor
-- (parameters and persistent buffers), and as a second result the names in order. The
-- tensors are the live weights (detached aliases sharing storage; the tensors themselves
-- with keep_vars): training or load_state_dict changes them. For a snapshot use
-- m:clone_state_dict() or ft.clone_state_dict(sd).
function Module:state_dict(opts)
  opts = ft.check_options("ft.nn.Module:state_dict", opts, {"prefix", "keep_vars"})
  ft.check.boolean("ft.nn.Module:state_dict", "keep_vars", opts.keep_vars)
  if opts.prefix ~= nil and type(opts.prefix) ~= "string" then
    ft.check.fail("ft.nn.Module:state_dict", "prefix", "a string", opts.prefix)
  end
  local sd, keys = {}, {}
  for i, e in ipairs(state_entries(self, opts.prefix)) do
    keys[i] = e[1]
    sd[e[1]] = opts.keep_vars and e[2] or e[2]:detach()
  end
  return sd, keys
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function quoted_list(list)
  local q = {}
  for i, k in ipairs(list) do q[i] = '"' .. k .. '"' end
  return table.concat(q, ", ")
end

-- The second result of what usually feeds load_state_dict is not options: m:state_dict()
-- returns the names in order, ft.load and ft.safetensors.load the file's metadata (strings
-- and numbers). So m:load_state_dict(other:state_dict()) and m:load_state_dict(ft.load(path))
-- pass such a table here; options always hold a boolean.
local function is_second_result(t)
  if type(t) ~= "table" or t.strict ~= nil or getmetatable(t) ~= nil then return false end
  for k, v in pairs(t) do
    if (type(k) ~= "string" and math.type(k) ~= "integer") or (type(v) ~= "string" and type(v) ~= "number") then
      return false
    end
  end
  return true
end

--- m:load_state_dict(sd [, {strict = true}]) copies the values of sd (name -> tensor) into
-- the parameters and buffers in place. strict: every key must match. Shapes must always
-- match. Nothing is copied when an error is raised. Returns the arrays of missing and
-- unexpected keys. A second argument holding only strings and numbers (the names that
-- state_dict returns second, the metadata that ft.load returns second) is ignored, so
-- m:load_state_dict(other:state_dict()) and m:load_state_dict(ft.load(path)) work.
function Module:load_state_dict(sd, opts)
  if is_second_result(opts) then opts = nil end
  opts = ft.check_options("ft.nn.Module:load_state_dict", opts, {"strict"})
  local strict = ft.check.boolean("ft.nn.Module:load_state_dict", "strict", opts.strict, true)
  if type(sd) ~= "table" then
    error(("ft.nn.load_state_dict: expected a state dict (table name -> tensor), got %s"):format(type(sd)), 2)
  end
  local own, keys = self:state_dict({ keep_vars = true })
  local missing, unexpected, problems = {}, {}, {}
  for _, k in ipairs(keys) do
    local src = sd[k]
    if src == nil then
      missing[#missing + 1] = k
    elseif not is_tensor(src) then
      problems[#problems + 1] = ("value for %s is a %s, not a tensor"):format(k, type(src))
    else
      local a, b = shape_str(src), shape_str(own[k])
      if a ~= b then
        problems[#problems + 1] = ("size mismatch for %s: copying a param with shape %s from checkpoint, " ..
          "the shape in current model is %s."):format(k, a, b)
      end
    end
  end
  for k in pairs(sd) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  if strict then
    if #missing > 0 then
      problems[#problems + 1] = "Missing key(s) in state_dict: " .. quoted_list(missing) .. "."
    end
    if #unexpected > 0 then
      problems[#problems + 1] = "Unexpected key(s) in state_dict: " .. quoted_list(unexpected) .. "."
    end
  end
  if #problems > 0 then
    error(("ft.nn.load_state_dict: error(s) in loading state_dict for %s:\n\t%s"):format(
      self.__name, table.concat(problems, "\n\t")), 2)
  end
  ft.no_grad(function()
    for _, k in ipairs(keys) do
      if sd[k] ~= nil then own[k]:copy_(sd[k]) end
    end
  end)
  return missing, unexpected
end

--- m:clone_state_dict() -> a copy of m:state_dict() that shares no storage with the model
-- (ft.clone_state_dict): a snapshot that later training or loading leaves as it is.
-- m:state_dict() itself returns the live tensors.
function Module:clone_state_dict(opts)
  return require("ft.state_dict").clone((self:state_dict(opts)), "ft.nn.Module:clone_state_dict")
end

-- ---- gradient checkpointing ------------------------------------------------------------------

-- False until m:gradient_checkpointing_enable() (then true, until disable).
Module.is_gradient_checkpointing = false

-- A module being checkpointed has an instance forward (the wrapper below) and a record
-- _checkpoint = {on =, base = its forward before, previous = the instance forward it replaced}.
-- The wrapper checkpoints only while on, training and with grad mode, so it stays harmless
-- where something (an adapter chain joining later) has wrapped it in turn; and only when a
-- tensor argument or a parameter of m requires grad: else the plain forward keeps no graph and
-- the recomputation would be work for nothing (a frozen stage before the trained ones).
local function needs_grad(m, ...)
  for i = 1, select("#", ...) do
    local a = select(i, ...)
    if is_tensor(a) and a.requires_grad then return true end
  end
  for _, p in ipairs(m:parameters()) do
    if p.requires_grad then return true end
  end
  return false
end

local function checkpointed_forward(m, ...)
  local rec = rawget(m, "_checkpoint")
  if rec.on and m.training and ft.is_grad_enabled() and needs_grad(m, ...) then
    return ft.autograd.checkpoint(rec.base, m, ...)
  end
  return rec.base(m, ...)
end

local function checkpoint_on(m)
  local rec = rawget(m, "_checkpoint")
  if not rec then
    rec = { base = m.forward, previous = rawget(m, "forward") }
    rawset(m, "_checkpoint", rec)
    rawset(m, "forward", checkpointed_forward)
  end
  rec.on = true
end

local function checkpoint_off(m)
  local rec = rawget(m, "_checkpoint")
  if not rec then return end
  rec.on = false
  if rawget(m, "forward") == checkpointed_forward then -- nothing wrapped it since: undo
    rawset(m, "forward", rec.previous)
    rawset(m, "_checkpoint", nil)
  end
end

--- m:gradient_checkpointing_enable([{modules = list}]): from now on, while m is training and
-- grad mode is on, the forward of each listed module runs through ft.autograd.checkpoint:
-- its intermediate results are recomputed in backward instead of kept (less memory for one
-- more forward of those modules; gradients are the same). modules (an array or a ModuleList,
-- modules inside m) defaults to m:checkpoint_modules(), which models define (their decoder
-- blocks or stages); for a module without it, pass modules. No effect in eval mode, under
-- ft.no_grad, or on a module whose parameters and tensor arguments all require no grad (a
-- frozen prefix: nothing to recompute). Adapters inside the modules (LoRA on their Linear
-- layers) keep working; an adapter on a listed module itself (ReFT on a block) should join
-- after this call, or checkpointing of that module ends when it leaves. Sets
-- m.is_gradient_checkpointing; returns m.
function Module:gradient_checkpointing_enable(opts)
  local where = "ft.nn.Module:gradient_checkpointing_enable"
  opts = ft.check_options(where, opts, { "modules" })
  local list = opts.modules
  if list == nil then
    if type(self.checkpoint_modules) ~= "function" then
      error(("%s: %s does not say which modules to checkpoint (it has no checkpoint_modules method); " ..
        "pass them: {modules = {...}}"):format(where, self.__name), 2)
    end
    list = self:checkpoint_modules()
  end
  if type(list) ~= "table" then ft.check.fail(where, "modules", "an array of modules", list) end
  local chosen = {}
  for i, m in ipairs(list) do
    if not is_module(m) then
      error(("%s: modules[%d] is a %s, not a module"):format(where, i, type(m)), 2)
    end
    chosen[i] = m
  end
  for _, m in ipairs(rawget(self, "_checkpointed") or {}) do checkpoint_off(m) end
  for _, m in ipairs(chosen) do checkpoint_on(m) end
  rawset(self, "_checkpointed", chosen)
  rawset(self, "is_gradient_checkpointing", true)
  return self
end

--- m:gradient_checkpointing_disable(): the modules that m:gradient_checkpointing_enable
-- checkpointed run their forward as usual again (keeping their intermediate results for
-- backward); m.is_gradient_checkpointing becomes false. Returns m.
function Module:gradient_checkpointing_disable()
  for _, m in ipairs(rawget(self, "_checkpointed") or {}) do checkpoint_off(m) end
  rawset(self, "_checkpointed", nil)
  rawset(self, "is_gradient_checkpointing", false)
  return self
end

return nn
