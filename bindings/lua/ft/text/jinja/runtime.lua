-- ft.text.jinja.runtime: renders a parsed template with Jinja's semantics.
--
--   local runtime = require "ft.text.jinja.runtime"
--   local text, spans = runtime.render(body, vars, {where = where, name = "chat_template"})
--
-- Scopes are Jinja's: a for loop, a macro call, a with block and a block set have their own
-- variables (a `set` inside a loop does not leak out of it: use a namespace); `if` has none.
-- Names resolve through the enclosing scopes, then vars, then the globals (range, dict,
-- namespace, joiner, raise_exception, strftime_now). Text inside {% generation %} blocks
-- rendered straight into the output is reported in spans (transformers' assistant mask).
-- A runtime error is raised as "name:line:column: message" at the expression that failed.
local V = require "ft.text.jinja.values"
local M = require "ft.text.jinja.methods"
local F = require "ft.text.jinja.filters"
local fmt = require "ft.text.jinja.format"

local runtime = {}

local concat = table.concat
local format = string.format
local str, truthy = V.str, V.truthy

-- ---- output buffers -----------------------------------------------------------------------

local function new_buffer() return { n = 0, len = 0 } end

local function emit(ctx, s)
  local out = ctx.out
  local n = out.n + 1
  out[n] = s
  out.n = n
  out.len = out.len + #s
end

local function buffer_text(buf) return concat(buf, "", 1, buf.n) end

local exec_body

-- Runs fn() with output going to a fresh buffer; returns what was written.
local function capture(ctx, fn)
  local saved = ctx.out
  ctx.out = new_buffer()
  fn()
  local s = buffer_text(ctx.out)
  ctx.out = saved
  return s
end

-- ---- scopes -------------------------------------------------------------------------------

local function new_frame(parent) return { vars = {}, parent = parent } end

local function lookup(ctx, frame, name)
  local f = frame
  while f do
    local v = f.vars[name]
    if v ~= nil then return v end
    f = f.parent
  end
  local v = ctx.vars[name]
  if v ~= nil then return v end
  v = ctx.globals[name]
  if v ~= nil then return v end
  return V.undefined(nil, nil, name)
end

-- ---- expressions --------------------------------------------------------------------------

local E = {}
local function eval(node, ctx, frame) return E[node.t](node, ctx, frame) end

local function call_value(fn, args, kwargs, ctx)
  local t = type(fn)
  if t == "table" then
    local k = V.kind(fn)
    if k == "callable" then return fn.fn(args, kwargs, ctx) end
    if k == "loop" then
      if not fn.recurse then V.error("Tried to call non recursive loop. Maybe you forgot the 'recursive' modifier.") end
      if #args ~= 1 then V.error("a recursive loop call takes one iterable") end
      return fn.recurse(args[1])
    end
    if k == "undefined" then V.fail_undefined(fn) end
  elseif t == "function" then
    -- a Lua function from the caller's variables: positional arguments, then the keyword
    -- arguments as one dict when there are any
    local n = #args
    local a = table.move(args, 1, n, 1, {})
    if kwargs and next(kwargs) then
      n = n + 1
      a[n] = kwargs
    end
    local r = fn(table.unpack(a, 1, n))
    if r == nil then return V.NONE end
    return r
  end
  V.error(format("'%s' object is not callable", V.type_name(fn)))
end

-- Evaluates the arguments of a call, filter or test node -> args (Lua array), kwargs (dict or nil).
local function eval_args(n, ctx, frame)
  local args = {}
  for i, a in ipairs(n.args) do args[i] = eval(a, ctx, frame) end
  if n.star then
    local extra = eval(n.star, ctx, frame)
    ctx.pos = n.star.pos
    local items = V.items(extra)
    for i = 1, rawlen(items) do args[#args + 1] = items[i] end
  end
  local kwargs
  if #n.kwargs > 0 or n.dstar then
    kwargs = V.dict()
    for _, kw in ipairs(n.kwargs) do
      if rawget(kwargs, kw.name) ~= nil then
        ctx.pos = kw.pos
        V.error(format("got multiple values for keyword argument '%s'", kw.name))
      end
      V.dict_set(kwargs, kw.name, eval(kw.expr, ctx, frame))
    end
    if n.dstar then
      local extra = eval(n.dstar, ctx, frame)
      ctx.pos = n.dstar.pos
      if V.kind(extra) ~= "dict" then V.error(format("argument after ** must be a mapping, not %s", V.type_name(extra))) end
      for _, key in ipairs(V.keys(extra)) do
        if rawget(kwargs, key) ~= nil then V.error(format("got multiple values for keyword argument '%s'", tostring(key))) end
        V.dict_set(kwargs, key, extra[key])
      end
    end
  end
  return args, kwargs
end

E.const = function(n) return n.value end
E.name = function(n, ctx, frame) return lookup(ctx, frame, n.name) end
E.hole = function(_, ctx) return ctx.hole end

E.list = function(n, ctx, frame)
  local out = {}
  for i, item in ipairs(n.items) do out[i] = eval(item, ctx, frame) end
  return V.list(out)
end

E.tuple = function(n, ctx, frame)
  local out = {}
  for i, item in ipairs(n.items) do out[i] = eval(item, ctx, frame) end
  return V.tuple(out)
end

E.dict = function(n, ctx, frame)
  local d = V.dict()
  for i, knode in ipairs(n.keys) do
    local key = eval(knode, ctx, frame)
    local value = eval(n.values[i], ctx, frame)
    local k = V.kind(key)
    if k == "list" or k == "dict" or k == "namespace" then
      ctx.pos = knode.pos
      V.error(format("unhashable type: '%s'", V.type_name(key)))
    end
    V.dict_set(d, V.dict_key(key), value)
  end
  return d
end

E.getattr = function(n, ctx, frame)
  local obj = eval(n.obj, ctx, frame)
  ctx.pos = n.pos
  return M.getattr(obj, n.attr)
end

E.getitem = function(n, ctx, frame)
  local obj = eval(n.obj, ctx, frame)
  local key = eval(n.key, ctx, frame)
  ctx.pos = n.pos
  return M.getitem(obj, key)
end

E.slice = function(n, ctx, frame)
  local obj = eval(n.obj, ctx, frame)
  local start = n.start and eval(n.start, ctx, frame)
  local stop = n.stop and eval(n.stop, ctx, frame)
  local step = n.step and eval(n.step, ctx, frame)
  ctx.pos = n.pos
  return V.slice(obj, start, stop, step)
end

E.call = function(n, ctx, frame)
  local fn = eval(n.fn, ctx, frame)
  local args, kwargs = eval_args(n, ctx, frame)
  ctx.pos = n.pos
  return call_value(fn, args, kwargs, ctx)
end

E.filter = function(n, ctx, frame)
  local value = eval(n.node, ctx, frame)
  local args, kwargs = eval_args(n, ctx, frame)
  ctx.pos = n.pos
  return ctx.filters[n.name](ctx, value, args, kwargs)
end

E.test = function(n, ctx, frame)
  local value = eval(n.node, ctx, frame)
  local args, kwargs = eval_args(n, ctx, frame)
  ctx.pos = n.pos
  return ctx.tests[n.name](ctx, value, args, kwargs) == true
end

E["not"] = function(n, ctx, frame) return not truthy(eval(n.node, ctx, frame)) end

E.neg = function(n, ctx, frame)
  local v = eval(n.node, ctx, frame)
  ctx.pos = n.pos
  return V.neg(v)
end

E.pos = function(n, ctx, frame)
  local v = eval(n.node, ctx, frame)
  ctx.pos = n.pos
  return V.pos(v)
end

local BINOPS = {
  ["+"] = V.add, ["-"] = V.sub, ["*"] = V.mul, ["/"] = V.truediv, ["//"] = V.floordiv,
  ["**"] = V.pow,
  ["%"] = function(a, b)
    if type(a) == "string" then return fmt.percent_format(a, b) end
    return V.mod(a, b)
  end,
}

E.binop = function(n, ctx, frame)
  local a = eval(n.left, ctx, frame)
  local b = eval(n.right, ctx, frame)
  ctx.pos = n.pos
  return BINOPS[n.op](a, b)
end

E.concat = function(n, ctx, frame)
  local parts = {}
  for i, item in ipairs(n.items) do parts[i] = str(eval(item, ctx, frame)) end
  return concat(parts)
end

E["and"] = function(n, ctx, frame)
  local a = eval(n.left, ctx, frame)
  if not truthy(a) then return a end
  return eval(n.right, ctx, frame)
end

E["or"] = function(n, ctx, frame)
  local a = eval(n.left, ctx, frame)
  if truthy(a) then return a end
  return eval(n.right, ctx, frame)
end

local COMPARE = {
  eq = function(a, b) return V.eq(a, b) end,
  ne = function(a, b) return not V.eq(a, b) end,
  lt = function(a, b) return V.cmp(a, b, "<") < 0 end,
  le = function(a, b) return V.cmp(a, b, "<=") <= 0 end,
  gt = function(a, b) return V.cmp(a, b, ">") > 0 end,
  ge = function(a, b) return V.cmp(a, b, ">=") >= 0 end,
  ["in"] = function(a, b) return V.contains(b, a) end,
  notin = function(a, b) return not V.contains(b, a) end,
}

E.compare = function(n, ctx, frame)
  local a = eval(n.first, ctx, frame)
  for _, op in ipairs(n.ops) do
    local b = eval(op.expr, ctx, frame)
    ctx.pos = op.pos
    if not COMPARE[op.op](a, b) then return false end
    a = b
  end
  return true
end

E.cond = function(n, ctx, frame)
  if truthy(eval(n.test, ctx, frame)) then return eval(n.expr1, ctx, frame) end
  if n.expr2 then return eval(n.expr2, ctx, frame) end
  return V.undefined(format("the inline if-expression at %s evaluated to false and no else section was defined.",
    ctx.where(n.pos)))
end

-- ---- assignment ---------------------------------------------------------------------------

local function unpack_into(target, value, ctx, store)
  if target.t == "name" then
    store(target.name, value)
    return
  end
  ctx.pos = target.pos
  local items = V.items(value)
  local want, got = #target.items, rawlen(items)
  if got < want then V.error(format("not enough values to unpack (expected %d, got %d)", want, got)) end
  if got > want then V.error(format("too many values to unpack (expected %d)", want)) end
  for i, t in ipairs(target.items) do unpack_into(t, items[i], ctx, store) end
end

local function assign(target, value, ctx, frame)
  if target.t == "nsref" then
    local ns = lookup(ctx, frame, target.name)
    ctx.pos = target.pos
    if V.kind(ns) ~= "namespace" then V.error("cannot assign attribute on non-namespace object") end
    V.dict_set(ns.attrs, target.attr, value)
    return
  end
  unpack_into(target, value, ctx, function(name, v) frame.vars[name] = v end)
end

-- ---- statements ---------------------------------------------------------------------------

local S = {}

S["if"] = function(n, ctx, frame)
  if truthy(eval(n.test, ctx, frame)) then return exec_body(n.body, ctx, frame) end
  if n.else_ then return exec_body(n.else_, ctx, frame) end
end

local function run_for(n, ctx, frame, iterable, depth0)
  ctx.pos = n.iter.pos
  local items = V.items(iterable)
  if n.cond then
    local kept, test_frame = {}, new_frame(frame)
    local function store(name, v) test_frame.vars[name] = v end
    for i = 1, rawlen(items) do
      unpack_into(n.target, items[i], ctx, store)
      if truthy(eval(n.cond, ctx, test_frame)) then kept[#kept + 1] = items[i] end
    end
    items = kept
  end
  local count = rawlen(items)
  if count == 0 then
    if n.else_ then return exec_body(n.else_, ctx, new_frame(frame)) end
    return
  end
  local loop = V.loop({ index0 = 0, length = count, items = items, depth0 = depth0 })
  if n.recursive then
    loop.recurse = function(sub)
      return capture(ctx, function() run_for(n, ctx, frame, sub, depth0 + 1) end)
    end
  end
  -- each iteration starts from the enclosing scope: a set in one is gone in the next
  local vars
  local function store(name, v) vars[name] = v end
  local completed = false
  for i = 1, count do
    loop.index0 = i - 1
    local iter_frame = new_frame(frame)
    vars = iter_frame.vars
    vars.loop = loop
    unpack_into(n.target, items[i], ctx, store)
    local signal = exec_body(n.body, ctx, iter_frame)
    if signal == "break" then break end
    if signal == nil then completed = true end
  end
  -- as Jinja compiles it: else runs unless some iteration ran its body to the end (so also
  -- after a break or continue in every iteration)
  if not completed and n.else_ then return exec_body(n.else_, ctx, new_frame(frame)) end
end

-- A break or continue in the else block belongs to the enclosing loop: it is returned.
S["for"] = function(n, ctx, frame)
  return run_for(n, ctx, frame, eval(n.iter, ctx, frame), 0)
end

S.set = function(n, ctx, frame)
  assign(n.target, eval(n.expr, ctx, frame), ctx, frame)
end

S.setblock = function(n, ctx, frame)
  local value = capture(ctx, function() exec_body(n.body, ctx, new_frame(frame)) end)
  if n.filter then
    ctx.hole = value
    value = eval(n.filter, ctx, frame)
  end
  assign(n.target, value, ctx, frame)
end

-- Calls macro (or call block) m defined in frame def_frame.
local function call_macro(m, def_frame, args, kwargs, ctx)
  local name = m.name or "caller"
  local mf = new_frame(def_frame)
  local vars, params, uses = mf.vars, m.params, m.uses
  for i = 1, math.min(#args, #params) do vars[params[i]] = args[i] end
  local varargs = {}
  if #args > #params then
    if not uses.varargs then
      V.error(format("macro '%s' takes not more than %d argument(s)", name, #params))
    end
    for i = #params + 1, #args do varargs[#varargs + 1] = args[i] end
  end
  local extra = V.dict()
  if kwargs then
    for _, key in ipairs(V.keys(kwargs)) do
      local value = kwargs[key]
      local is_param = false
      for _, p in ipairs(params) do
        if p == key then is_param = true break end
      end
      if is_param then
        if vars[key] ~= nil then V.error(format("macro '%s' got multiple values for argument '%s'", name, key)) end
        vars[key] = value
      elseif key == "caller" and uses.caller then
        vars.caller = value
      elseif uses.kwargs then
        V.dict_set(extra, key, value)
      else
        V.error(format("macro '%s' takes no keyword argument '%s'", name, tostring(key)))
      end
    end
  end
  for i, p in ipairs(params) do
    if vars[p] == nil then
      if m.defaults[i] then
        vars[p] = eval(m.defaults[i], ctx, mf)
      else
        vars[p] = V.undefined(format("parameter '%s' was not provided", p))
      end
    end
  end
  if uses.varargs then vars.varargs = V.tuple(varargs) end
  if uses.kwargs then vars.kwargs = extra end
  if uses.caller and vars.caller == nil then vars.caller = V.undefined("No caller defined") end
  return capture(ctx, function() exec_body(m.body, ctx, mf) end)
end

S.macro = function(n, ctx, frame)
  frame.vars[n.name] = V.callable(n.name, function(args, kwargs, c)
    return call_macro(n, frame, args, kwargs, c)
  end, true)
end

S.callblock = function(n, ctx, frame)
  local call = n.call
  local fn = eval(call.fn, ctx, frame)
  local args, kwargs = eval_args(call, ctx, frame)
  local caller = V.callable("caller", function(cargs, ckwargs, c)
    return call_macro(n, frame, cargs, ckwargs, c)
  end, true)
  kwargs = kwargs or V.dict()
  V.dict_set(kwargs, "caller", caller)
  ctx.pos = call.pos
  emit(ctx, str(call_value(fn, args, kwargs, ctx)))
end

S.filterblock = function(n, ctx, frame)
  local value = capture(ctx, function() exec_body(n.body, ctx, new_frame(frame)) end)
  ctx.hole = value
  emit(ctx, str(eval(n.filter, ctx, frame)))
end

S.with = function(n, ctx, frame)
  local wf = new_frame(frame)
  local values = {}
  for i, v in ipairs(n.values) do values[i] = eval(v, ctx, frame) end
  for i, t in ipairs(n.targets) do assign(t, values[i], ctx, wf) end
  return exec_body(n.body, ctx, wf)
end

S.generation = function(n, ctx, frame)
  local out = ctx.out
  local start = out.len
  local signal = exec_body(n.body, ctx, frame)
  if ctx.out == ctx.root then
    ctx.spans[#ctx.spans + 1] = { start + 1, ctx.out.len }
  end
  return signal
end

S["break"] = function() return "break" end
S["continue"] = function() return "continue" end

-- Runs the statements of body; returns "break" or "continue" when one ends it early.
function exec_body(body, ctx, frame)
  for i = 1, #body do
    local node = body[i]
    local t = node.t
    if t == "text" then
      emit(ctx, node.value)
    elseif t == "output" then
      emit(ctx, str(eval(node.expr, ctx, frame)))
    else
      local signal = S[t](node, ctx, frame)
      if signal then return signal end
    end
  end
end

-- ---- globals ------------------------------------------------------------------------------

local MAX_RANGE = 100000

local function int_arg(where, v)
  if math.type(v) == "integer" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  V.error(format("%s: an integer is required, not %s", where, V.type_name(v)))
end

local function dict_from(where, args, kwargs)
  if #args > 1 then V.error(format("%s expected at most 1 argument, got %d", where, #args)) end
  local d = V.dict()
  local src = args[1]
  if src ~= nil then
    local k = V.kind(src)
    if k == "dict" then
      for _, key in ipairs(V.keys(src)) do V.dict_set(d, key, src[key]) end
    elseif k == "list" or k == "tuple" then
      for i = 1, rawlen(src) do
        local pair = V.items(src[i])
        if rawlen(pair) ~= 2 then
          V.error(format("%s: sequence element #%d has length %d; 2 is required", where, i - 1, rawlen(pair)))
        end
        V.dict_set(d, V.dict_key(pair[1]), pair[2])
      end
    else
      V.error(format("'%s' object is not iterable", V.type_name(src)))
    end
  end
  if kwargs then
    for _, key in ipairs(V.keys(kwargs)) do V.dict_set(d, key, kwargs[key]) end
  end
  return d
end

local GLOBALS = {
  range = V.callable("range", function(args)
    local start, stop, step = 0, nil, 1
    if #args == 1 then stop = int_arg("range", args[1])
    elseif #args == 2 or #args == 3 then
      start, stop = int_arg("range", args[1]), int_arg("range", args[2])
      if args[3] ~= nil then step = int_arg("range", args[3]) end
    else
      V.error(format("range expected 1 to 3 arguments, got %d", #args))
    end
    if step == 0 then V.error("range() arg 3 must not be zero") end
    local count = step > 0 and (stop - start + step - 1) // step or (start - stop - step - 1) // -step
    if count > MAX_RANGE then
      V.error(format("Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE))
    end
    local out = {}
    for i = start, stop - (step > 0 and 1 or -1), step do out[#out + 1] = i end
    return V.list(out)
  end),
  dict = V.callable("dict", function(args, kwargs) return dict_from("dict", args, kwargs) end),
  namespace = V.callable("namespace", function(args, kwargs)
    return V.namespace(dict_from("namespace", args, kwargs))
  end),
  joiner = V.callable("joiner", function(args)
    local sep = args[1] == nil and ", " or str(args[1])
    local used = false
    return V.callable("joiner", function()
      if not used then
        used = true
        return ""
      end
      return sep
    end)
  end),
  -- transformers' globals
  raise_exception = V.callable("raise_exception", function(args)
    V.error(args[1] == nil and "raise_exception() was called" or str(args[1]))
  end),
  strftime_now = V.callable("strftime_now", function(args)
    local fmt = args[1]
    if type(fmt) ~= "string" then V.error("strftime_now: the format must be a string") end
    local ok, s = pcall(os.date, fmt)
    if not ok then V.error("strftime_now: " .. tostring(s)) end
    return s
  end),
}
runtime.GLOBALS = GLOBALS

--- runtime.render(body, vars, env) -> text, spans. env: where(pos) -> "line:column", name
-- (the template's name in errors). spans: {first, last} byte ranges of the text that
-- {% generation %} blocks wrote straight into the output (last < first when empty).
function runtime.render(body, vars, env)
  V.reset()
  local root = new_buffer()
  local ctx = {
    vars = vars or {}, globals = GLOBALS, filters = F.filters, tests = F.tests, where = env.where,
    out = root, root = root, spans = {}, pos = body[1] and body[1].pos or 1,
  }
  local ok, err = pcall(exec_body, body, ctx, new_frame(nil))
  if not ok then
    local msg = V.is_error(err) or ("internal error: " .. tostring(err))
    error(format("%s:%s: %s", env.name, env.where(ctx.pos), msg), 0)
  end
  return buffer_text(root), ctx.spans
end

return runtime
