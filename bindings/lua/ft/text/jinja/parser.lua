-- ft.text.jinja.parser: tokens -> the template's syntax tree, with Jinja's grammar.
--
--   local parser = require "ft.text.jinja.parser"
--   local body = parser.parse(tokens, {fail = fail, where = where, filters = F, tests = T})
--
-- Statements: if/elif/else, for (targets, `if` filter, else, recursive), set (names, tuples,
-- ns.attr, block set with filters), macro, call, filter, with, break, continue, generation
-- (transformers' assistant-mask tag). Expressions by Jinja's precedence: conditional
-- expression, or, and, not, comparisons (chained) and in / not in, + -, ~, * / // %, **,
-- unary - +, then primaries with .attr, [index], [a:b:c], calls, |filters and `is` tests.
-- Unknown filters and tests are syntax errors, as Jinja finds them when compiling.
-- Every node has pos, the byte offset of the token it is reported at.
local parser = {}

local CONSTANTS = { ["true"] = true, ["True"] = true, ["false"] = false, ["False"] = false }
local NONE_NAMES = { none = true, None = true }
local COMPARE = { ["=="] = "eq", ["!="] = "ne", [">"] = "gt", [">="] = "ge", ["<"] = "lt", ["<="] = "le" }
local END_TAGS = {
  endfor = true, endif = true, ["else"] = true, elif = true, endset = true, endmacro = true,
  endcall = true, endfilter = true, endwith = true, endgeneration = true, endraw = true,
}

local function describe(tok)
  if tok.t == "name" or tok.t == "op" then return ("'%s'"):format(tok.v) end
  if tok.t == "str" then return "a string" end
  if tok.t == "int" or tok.t == "float" then return "a number" end
  if tok.t == "var_end" then return "'}}'" end
  if tok.t == "block_end" then return "'%}'" end
  if tok.t == "var_begin" then return "'{{'" end
  if tok.t == "block_begin" then return "'{%'" end
  if tok.t == "eof" then return "the end of the template" end
  return "text"
end

--- parser.parse(tokens, env) -> the template body (an array of statement nodes).
-- env: fail(pos, msg) raises a syntax error, where(pos) -> "line:column", filters and tests
-- (tables keyed by the known names), none (the None value).
function parser.parse(tokens, env)
  local fail, where = env.fail, env.where
  local i = 1
  local blocks = {}        -- open blocks: {name, pos, ends}
  local loop_depth = 0
  local macro_uses = {}    -- stack of sets of special names (caller, varargs, kwargs) a macro reads

  local function cur() return tokens[i] end
  local function peek(k) return tokens[i + (k or 1)] or tokens[#tokens] end
  local function advance()
    local tok = tokens[i]
    if tok.t ~= "eof" then i = i + 1 end
    return tok
  end
  local function is_op(v) local t = tokens[i] return t.t == "op" and t.v == v end
  local function is_name(v) local t = tokens[i] return t.t == "name" and t.v == v end
  local function expect_op(v, what)
    if not is_op(v) then fail(cur().pos, ("expected '%s'%s, got %s"):format(v, what or "", describe(cur()))) end
    return advance()
  end
  local function expect_name(what)
    if cur().t ~= "name" then fail(cur().pos, ("expected %s, got %s"):format(what or "a name", describe(cur()))) end
    return advance()
  end
  local function expect_block_end(what)
    if cur().t ~= "block_end" then
      fail(cur().pos, ("expected '%%}'%s, got %s"):format(what or "", describe(cur())))
    end
    advance()
  end

  local parse_expression, parse_tuple, parse_or, parse_unary, parse_primary, parse_postfix
  local parse_filter, parse_call_args

  -- Comma-separated items up to the op close (left for the caller), a trailing comma allowed;
  -- item() parses one. between names the place in the error of a missing comma.
  local function each_item(close, between, item)
    local n = 0
    while not is_op(close) do
      if n > 0 then
        expect_op(",", between)
        if is_op(close) then break end
      end
      item()
      n = n + 1
    end
  end

  -- node(...): a call of node with the arguments that follow
  local function parse_call(node)
    local args, kwargs, star, dstar = parse_call_args()
    return { t = "call", fn = node, args = args, kwargs = kwargs, star = star, dstar = dstar, pos = node.pos }
  end

  -- ---- expressions --------------------------------------------------------------------

  local function parse_condexpr()
    local pos = cur().pos
    local expr1 = parse_or()
    while is_name("if") do
      local if_pos = advance().pos
      local test = parse_or()
      local expr2
      if is_name("else") then
        advance()
        expr2 = parse_condexpr()
      end
      expr1 = { t = "cond", test = test, expr1 = expr1, expr2 = expr2, pos = if_pos or pos }
    end
    return expr1
  end

  function parse_expression(with_condexpr)
    if with_condexpr == false then return parse_or() end
    return parse_condexpr()
  end

  local function parse_pow()
    local left = parse_unary(true)
    while is_op("**") do
      local pos = advance().pos
      left = { t = "binop", op = "**", left = left, right = parse_unary(true), pos = pos }
    end
    return left
  end

  local function parse_math2()
    local left = parse_pow()
    while is_op("*") or is_op("/") or is_op("//") or is_op("%") do
      local tok = advance()
      left = { t = "binop", op = tok.v, left = left, right = parse_pow(), pos = tok.pos }
    end
    return left
  end

  local function parse_concat()
    local first = parse_math2()
    if not is_op("~") then return first end
    local items, pos = { first }, cur().pos
    while is_op("~") do
      advance()
      items[#items + 1] = parse_math2()
    end
    return { t = "concat", items = items, pos = pos }
  end

  local function parse_math1()
    local left = parse_concat()
    while is_op("+") or is_op("-") do
      local tok = advance()
      left = { t = "binop", op = tok.v, left = left, right = parse_concat(), pos = tok.pos }
    end
    return left
  end

  local function parse_compare()
    local pos = cur().pos
    local expr = parse_math1()
    local ops = {}
    while true do
      local tok = cur()
      if tok.t == "op" and COMPARE[tok.v] then
        advance()
        ops[#ops + 1] = { op = COMPARE[tok.v], expr = parse_math1(), pos = tok.pos }
      elseif is_name("in") then
        advance()
        ops[#ops + 1] = { op = "in", expr = parse_math1(), pos = tok.pos }
      elseif is_name("not") and peek().t == "name" and peek().v == "in" then
        advance()
        advance()
        ops[#ops + 1] = { op = "notin", expr = parse_math1(), pos = tok.pos }
      else
        break
      end
    end
    if #ops == 0 then return expr end
    return { t = "compare", first = expr, ops = ops, pos = pos }
  end

  local function parse_not()
    if is_name("not") then
      local pos = advance().pos
      return { t = "not", node = parse_not(), pos = pos }
    end
    return parse_compare()
  end

  local function parse_and()
    local left = parse_not()
    while is_name("and") do
      local pos = advance().pos
      left = { t = "and", left = left, right = parse_not(), pos = pos }
    end
    return left
  end

  function parse_or()
    local left = parse_and()
    while is_name("or") do
      local pos = advance().pos
      left = { t = "or", left = left, right = parse_and(), pos = pos }
    end
    return left
  end

  local function parse_test(node)
    local is_pos = advance().pos
    local negated = false
    if is_name("not") then
      advance()
      negated = true
    end
    local name_tok = expect_name("a test name after 'is'")
    local name = name_tok.v
    while is_op(".") do
      advance()
      name = name .. "." .. expect_name().v
    end
    local args, kwargs, star, dstar = {}, {}, nil, nil
    local tok = cur()
    if is_op("(") then
      args, kwargs, star, dstar = parse_call_args()
    elseif (tok.t == "name" or tok.t == "str" or tok.t == "int" or tok.t == "float"
        or (tok.t == "op" and (tok.v == "(" or tok.v == "[" or tok.v == "{")))
        and not (tok.t == "name" and (tok.v == "else" or tok.v == "or" or tok.v == "and")) then
      if is_name("is") then fail(tok.pos, "you cannot chain multiple tests with 'is'") end
      args = { parse_postfix(parse_primary()) }
    end
    if not env.tests[name] then fail(name_tok.pos, ("no test named '%s'"):format(name)) end
    node = { t = "test", node = node, name = name, args = args, kwargs = kwargs, star = star, dstar = dstar,
      pos = name_tok.pos }
    if negated then node = { t = "not", node = node, pos = is_pos } end
    return node
  end

  local function parse_filter_expr(node)
    while true do
      if is_op("|") then
        node = parse_filter(node)
      elseif is_name("is") then
        node = parse_test(node)
      elseif is_op("(") then
        node = parse_call(node)
      else
        return node
      end
    end
  end

  function parse_unary(with_filter)
    local tok = cur()
    local node
    if is_op("-") or is_op("+") then
      advance()
      node = { t = tok.v == "-" and "neg" or "pos", node = parse_unary(false), pos = tok.pos }
    else
      node = parse_primary()
    end
    node = parse_postfix(node)
    if with_filter then node = parse_filter_expr(node) end
    return node
  end

  function parse_primary()
    local tok = cur()
    if tok.t == "name" then
      advance()
      if CONSTANTS[tok.v] ~= nil then return { t = "const", value = CONSTANTS[tok.v], pos = tok.pos } end
      if NONE_NAMES[tok.v] then return { t = "const", value = env.none, pos = tok.pos } end
      local uses = macro_uses[#macro_uses]
      if uses and (tok.v == "caller" or tok.v == "varargs" or tok.v == "kwargs") then uses[tok.v] = true end
      return { t = "name", name = tok.v, pos = tok.pos }
    elseif tok.t == "str" then
      local parts = {}
      while cur().t == "str" do parts[#parts + 1] = advance().v end
      return { t = "const", value = table.concat(parts), pos = tok.pos }
    elseif tok.t == "int" or tok.t == "float" then
      advance()
      return { t = "const", value = tok.v, pos = tok.pos }
    elseif is_op("(") then
      advance()
      local node = parse_tuple({ explicit_parens = true })
      expect_op(")")
      return node
    elseif is_op("[") then
      advance()
      local items = {}
      each_item("]", " between list items", function() items[#items + 1] = parse_expression() end)
      advance()
      return { t = "list", items = items, pos = tok.pos }
    elseif is_op("{") then
      advance()
      local keys, values = {}, {}
      each_item("}", " between dict items", function()
        keys[#keys + 1] = parse_expression()
        expect_op(":", " after a dict key")
        values[#values + 1] = parse_expression()
      end)
      advance()
      return { t = "dict", keys = keys, values = values, pos = tok.pos }
    end
    fail(tok.pos, ("expected an expression, got %s"):format(describe(tok)))
  end

  -- [a], [a:b:c] and the parts of a slice.
  local function parse_subscribed()
    local start
    if is_op(":") then
      advance()
    else
      local node = parse_expression()
      if not is_op(":") then return node end
      advance()
      start = node
    end
    local spec = { t = "slicespec", start = start, pos = cur().pos }
    if not (is_op("]") or is_op(",") or is_op(":")) then spec.stop = parse_expression() end
    if is_op(":") then
      advance()
      if not (is_op("]") or is_op(",")) then spec.step = parse_expression() end
    end
    return spec
  end

  function parse_postfix(node)
    while true do
      if is_op(".") then
        advance()
        local tok = cur()
        if tok.t == "name" then
          advance()
          node = { t = "getattr", obj = node, attr = tok.v, pos = tok.pos }
        elseif tok.t == "int" then
          advance()
          node = { t = "getitem", obj = node, key = { t = "const", value = tok.v, pos = tok.pos }, pos = tok.pos }
        else
          fail(tok.pos, ("expected a name or number after '.', got %s"):format(describe(tok)))
        end
      elseif is_op("[") then
        local pos = advance().pos
        local args = {}
        each_item("]", " between subscripts", function() args[#args + 1] = parse_subscribed() end)
        expect_op("]")
        if #args == 0 then fail(pos, "expected a subscript inside '[ ]'") end
        local key = args[1]
        if #args > 1 then
          for _, a in ipairs(args) do
            if a.t == "slicespec" then fail(a.pos, "a slice cannot be part of a tuple subscript") end
          end
          key = { t = "tuple", items = args, pos = pos }
        end
        if key.t == "slicespec" then
          node = { t = "slice", obj = node, start = key.start, stop = key.stop, step = key.step, pos = pos }
        else
          node = { t = "getitem", obj = node, key = key, pos = pos }
        end
      elseif is_op("(") then
        node = parse_call(node)
      else
        return node
      end
    end
  end

  -- (positional, name=value, *list, **dict) -> args, kwargs ({name, expr} pairs), star, dstar
  function parse_call_args()
    expect_op("(")
    local args, kwargs, star, dstar = {}, {}, nil, nil
    each_item(")", " between arguments", function()
      local tok = cur()
      if is_op("*") then
        advance()
        star = parse_expression()
      elseif is_op("**") then
        advance()
        dstar = parse_expression()
      elseif tok.t == "name" and peek().t == "op" and peek().v == "=" then
        advance()
        advance()
        if dstar then fail(tok.pos, "a keyword argument cannot follow **") end
        kwargs[#kwargs + 1] = { name = tok.v, expr = parse_expression(), pos = tok.pos }
      else
        if star or dstar or #kwargs > 0 then fail(tok.pos, "a positional argument cannot follow keyword arguments") end
        args[#args + 1] = parse_expression()
      end
    end)
    advance()
    return args, kwargs, star, dstar
  end

  -- A chain of filters on node (nil for a filter block or a block set: the body).
  function parse_filter(node, start_inline)
    while is_op("|") or start_inline do
      if not start_inline then advance() end
      start_inline = false
      local name_tok = expect_name("a filter name")
      local name = name_tok.v
      while is_op(".") do
        advance()
        name = name .. "." .. expect_name().v
      end
      local args, kwargs, star, dstar = {}, {}, nil, nil
      if is_op("(") then args, kwargs, star, dstar = parse_call_args() end
      if not env.filters[name] then fail(name_tok.pos, ("no filter named '%s'"):format(name)) end
      node = { t = "filter", node = node or { t = "hole", pos = name_tok.pos }, name = name, args = args,
        kwargs = kwargs, star = star, dstar = dstar, pos = name_tok.pos }
    end
    return node
  end

  -- opts: simplified (primaries only), with_condexpr (default true), extra_end (names that
  -- end it), explicit_parens (inside ( ), where () and (a,) are tuples)
  function parse_tuple(opts)
    opts = opts or {}
    local pos = cur().pos
    local items, is_tuple = {}, false
    while true do
      if #items > 0 then expect_op(",") end
      local tok = cur()
      if tok.t == "var_end" or tok.t == "block_end" or (tok.t == "op" and tok.v == ")")
          or (tok.t == "name" and opts.extra_end and opts.extra_end[tok.v]) then
        break
      end
      if opts.simplified then
        items[#items + 1] = parse_primary()
      else
        items[#items + 1] = parse_expression(opts.with_condexpr)
      end
      if is_op(",") then is_tuple = true else break end
    end
    if not is_tuple then
      if #items > 0 then return items[1] end
      if not opts.explicit_parens then fail(cur().pos, ("expected an expression, got %s"):format(describe(cur()))) end
    end
    return { t = "tuple", items = items, pos = pos }
  end

  -- ---- statements ---------------------------------------------------------------------

  local function check_target(node)
    if node.t == "name" then return end
    if node.t == "tuple" then
      for _, item in ipairs(node.items) do check_target(item) end
      return
    end
    fail(node.pos, "cannot assign to this expression (a name or a tuple of names is needed)")
  end

  local function parse_assign_target(extra_end, with_namespace)
    local tok = cur()
    if with_namespace and tok.t == "name" and peek().t == "op" and peek().v == "." then
      advance()
      advance()
      local attr = expect_name("an attribute name after '.'")
      return { t = "nsref", name = tok.v, attr = attr.v, pos = attr.pos }
    end
    local target = parse_tuple({ simplified = true, extra_end = extra_end })
    check_target(target)
    return target
  end

  local subparse

  local function open_block(name, pos, ends)
    blocks[#blocks + 1] = { name = name, pos = pos, ends = ends }
  end
  local function close_block(end_name)
    -- at `{% end... %}`: consume it
    advance()   -- {%
    advance()   -- the end tag's name
    expect_block_end((" after '%s'"):format(end_name))
    blocks[#blocks] = nil
  end

  local function parse_signature()
    expect_op("(")
    local params, defaults = {}, {}
    local seen_default = false
    while not is_op(")") do
      if #params > 0 then expect_op(",", " between parameters") end
      local tok = expect_name("a parameter name")
      if CONSTANTS[tok.v] ~= nil or NONE_NAMES[tok.v] then fail(tok.pos, ("'%s' cannot be a parameter name"):format(tok.v)) end
      if is_op("=") then
        advance()
        defaults[#params + 1] = parse_expression()
        seen_default = true
      elseif seen_default then
        fail(tok.pos, "a parameter without a default cannot follow one with a default")
      end
      params[#params + 1] = tok.v
    end
    advance()
    return params, defaults
  end

  local function parse_macro_body(end_name)
    macro_uses[#macro_uses + 1] = {}
    local saved_depth = loop_depth
    loop_depth = 0
    local body = subparse({ [end_name] = true })
    loop_depth = saved_depth
    local uses = macro_uses[#macro_uses]
    macro_uses[#macro_uses] = nil
    return body, uses
  end

  local STATEMENTS = {}

  STATEMENTS["for"] = function(begin)
    open_block("for", begin, "{% endfor %}")
    local target = parse_assign_target({ ["in"] = true })
    if not is_name("in") then fail(cur().pos, ("expected 'in' after the loop variable, got %s"):format(describe(cur()))) end
    advance()
    local iter = parse_tuple({ with_condexpr = false, extra_end = { recursive = true } })
    local cond
    if is_name("if") then
      advance()
      cond = parse_expression()
    end
    local recursive = false
    if is_name("recursive") then
      advance()
      recursive = true
    end
    expect_block_end(" after the for loop's header")
    loop_depth = loop_depth + 1
    local body = subparse({ endfor = true, ["else"] = true })
    loop_depth = loop_depth - 1
    local else_
    if peek().v == "else" then
      advance()
      advance()
      expect_block_end(" after 'else'")
      else_ = subparse({ endfor = true })
    end
    close_block("endfor")
    return { t = "for", target = target, iter = iter, cond = cond, recursive = recursive, body = body,
      else_ = else_, pos = begin }
  end

  STATEMENTS["if"] = function(begin)
    open_block("if", begin, "{% endif %}")
    local node = { t = "if", test = parse_tuple({ with_condexpr = false }), pos = begin }
    expect_block_end(" after the if condition")
    local top = node
    while true do
      node.body = subparse({ elif = true, ["else"] = true, endif = true })
      local tag = peek().v
      if tag == "elif" then
        local pos = advance().pos
        advance()
        local nxt = { t = "if", test = parse_tuple({ with_condexpr = false }), pos = pos }
        expect_block_end(" after the elif condition")
        node.else_ = { nxt }
        node = nxt
      elseif tag == "else" then
        advance()
        advance()
        expect_block_end(" after 'else'")
        node.else_ = subparse({ endif = true })
        break
      else
        break
      end
    end
    close_block("endif")
    return top
  end

  STATEMENTS["set"] = function(begin)
    local target = parse_assign_target(nil, true)
    if is_op("=") then
      advance()
      local expr = parse_tuple()
      expect_block_end(" after the value")
      return { t = "set", target = target, expr = expr, pos = begin }
    end
    local filter = is_op("|") and parse_filter(nil) or nil
    expect_block_end(" (a block set is {% set name %}...{% endset %})")
    open_block("set", begin, "{% endset %}")
    local body = subparse({ endset = true })
    close_block("endset")
    return { t = "setblock", target = target, filter = filter, body = body, pos = begin }
  end

  STATEMENTS["macro"] = function(begin)
    local name = expect_name("a macro name").v
    local params, defaults = parse_signature()
    expect_block_end(" after the macro's parameters")
    open_block("macro", begin, "{% endmacro %}")
    local body, uses = parse_macro_body("endmacro")
    close_block("endmacro")
    return { t = "macro", name = name, params = params, defaults = defaults, body = body, uses = uses, pos = begin }
  end

  STATEMENTS["call"] = function(begin)
    local params, defaults = {}, {}
    if is_op("(") then params, defaults = parse_signature() end
    local call = parse_expression()
    if call.t ~= "call" then fail(call.pos, "expected a call after 'call'") end
    expect_block_end(" after the call")
    open_block("call", begin, "{% endcall %}")
    local body, uses = parse_macro_body("endcall")
    close_block("endcall")
    return { t = "callblock", call = call, params = params, defaults = defaults, body = body, uses = uses, pos = begin }
  end

  STATEMENTS["filter"] = function(begin)
    local filter = parse_filter(nil, true)
    expect_block_end(" after the filter")
    open_block("filter", begin, "{% endfilter %}")
    local body = subparse({ endfilter = true })
    close_block("endfilter")
    return { t = "filterblock", filter = filter, body = body, pos = begin }
  end

  STATEMENTS["with"] = function(begin)
    local targets, values = {}, {}
    while cur().t ~= "block_end" do
      if #targets > 0 then expect_op(",", " between assignments") end
      targets[#targets + 1] = parse_assign_target()
      expect_op("=", " after the name")
      values[#values + 1] = parse_expression()
    end
    advance()
    open_block("with", begin, "{% endwith %}")
    local body = subparse({ endwith = true })
    close_block("endwith")
    return { t = "with", targets = targets, values = values, body = body, pos = begin }
  end

  STATEMENTS["generation"] = function(begin)
    expect_block_end(" after 'generation'")
    open_block("generation", begin, "{% endgeneration %}")
    local body = subparse({ endgeneration = true })
    close_block("endgeneration")
    return { t = "generation", body = body, pos = begin }
  end

  local function loop_control(name)
    return function(begin, tok)
      if loop_depth == 0 then fail(tok.pos, ("'%s' outside a for loop"):format(name)) end
      expect_block_end((" after '%s'"):format(name))
      return { t = name, pos = begin }
    end
  end
  STATEMENTS["break"] = loop_control("break")
  STATEMENTS["continue"] = loop_control("continue")

  local function parse_statement(begin)
    local tok = cur()
    if tok.t ~= "name" then fail(tok.pos, ("expected a tag name after '{%%', got %s"):format(describe(tok))) end
    local handler = STATEMENTS[tok.v]
    if not handler then
      if END_TAGS[tok.v] then
        local open = blocks[#blocks]
        if not open then fail(tok.pos, ("unexpected '%s': no block is open"):format(tok.v)) end
        fail(tok.pos, ("unexpected '%s': the innermost open block is '%s' (opened at %s), closed by %s")
          :format(tok.v, open.name, where(open.pos), open.ends))
      end
      fail(tok.pos, ("unknown tag '%s'"):format(tok.v))
    end
    advance()
    return handler(begin, tok)
  end

  function subparse(end_names)
    local body = {}
    while true do
      local tok = cur()
      if tok.t == "text" then
        body[#body + 1] = { t = "text", value = tok.v, pos = tok.pos }
        advance()
      elseif tok.t == "var_begin" then
        advance()
        local expr = parse_tuple()
        if cur().t ~= "var_end" then
          fail(cur().pos, ("expected '}}' after the expression, got %s"):format(describe(cur())))
        end
        advance()
        body[#body + 1] = { t = "output", expr = expr, pos = expr.pos }
      elseif tok.t == "block_begin" then
        local nxt = peek()
        if end_names and nxt.t == "name" and end_names[nxt.v] then return body end
        advance()
        body[#body + 1] = parse_statement(tok.pos)
      elseif tok.t == "eof" then
        if end_names then
          local open = blocks[#blocks]
          fail(open.pos, ("unclosed '%s' block: %s is missing"):format(open.name, open.ends))
        end
        return body
      else
        fail(tok.pos, ("unexpected %s"):format(describe(tok)))
      end
    end
  end

  return subparse(nil)
end

return parser
