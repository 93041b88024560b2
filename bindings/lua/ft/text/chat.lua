-- ft.text.chat: chat templates as transformers applies them (tokenizer.apply_chat_template),
-- and the assistant mask that lets training score only what the assistant says.
--
--   local chat = require "ft.text.chat"
--   local text = chat.apply(tok, messages, {add_generation_prompt = true, tokenize = false})
--   local ids, mask = chat.apply(tok, messages, {return_assistant_tokens_mask = true})
--   -- tok:apply_chat_template(messages, opts) is chat.apply(tok, messages, opts)
--
-- The template is the tokenizer's chat_template (tokenizer_config.json), rendered by
-- ft.text.jinja with transformers' variables: messages, add_generation_prompt, bos_token,
-- eos_token, tools and documents (none when not given), plus opts.variables (for example
-- {enable_thinking = false}). Rendered text is tokenized without adding special tokens, as
-- transformers does: the template writes them.
--
-- The assistant mask marks, for each assistant message, the tokens from the end of the
-- conversation before it rendered with the generation prompt up to and including the first
-- end-of-turn token (one of tok.eos_ids) after that: what the model has to produce when it is
-- prompted there (a Qwen3 template's empty think block included).
local ft = require "ft"
local jinja = require "ft.text.jinja"

local chat = {}

--- The roles chat.apply accepts.
chat.ROLES = { "system", "user", "assistant", "tool" }
local ROLE_SET = {}
for _, r in ipairs(chat.ROLES) do ROLE_SET[r] = true end

--- chat.check_messages(messages [, where [, level]]) -> messages: a non-empty list of
-- {role, content [, weight = 0 | 1]} (roles chat.ROLES; content a string, or absent on an
-- assistant message with tool_calls). Errors name the message; level as error()'s (default:
-- the caller's caller).
function chat.check_messages(messages, where, level)
  where, level = where or "ft.text.chat", (level or 2) + 1
  if type(messages) ~= "table" or #messages == 0 then
    error(where .. ": \"messages\" must be a non-empty list of {role, content}", level)
  end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" then error(("%s: message %d is a %s, not an object"):format(where, i, type(m)), level) end
    if not ROLE_SET[m.role] then
      error(("%s: message %d has role %s; roles: %s"):format(where, i,
        type(m.role) == "string" and "'" .. m.role .. "'" or tostring(m.role), table.concat(chat.ROLES, ", ")), level)
    end
    local tool_call = m.role == "assistant" and type(m.tool_calls) == "table"
    if type(m.content) ~= "string" and not (tool_call and m.content == nil) then
      error(("%s: message %d (%s) has no string \"content\""):format(where, i, m.role), level)
    end
    if m.weight ~= nil and m.weight ~= 0 and m.weight ~= 1 then
      error(("%s: message %d has weight %s; weight must be 0 or 1"):format(where, i, tostring(m.weight)), level)
    end
  end
  return messages
end

-- The compiled template of a tokenizer (or of opts.chat_template), cached per source.
local compiled = setmetatable({}, { __mode = "k" })
local function template_of(tok, source, where)
  source = source or tok.chat_template
  if type(source) ~= "string" then
    error(where .. ": the tokenizer has no chat_template (tokenizer_config.json); pass opts.chat_template", 3)
  end
  local cache = compiled[tok]
  if not cache then cache = {}; compiled[tok] = cache end
  if not cache[source] then cache[source] = jinja.compile(source, { name = "chat_template" }) end
  return cache[source]
end

local OPTIONS = { "add_generation_prompt", "tokenize", "tools", "documents", "chat_template", "variables",
  "return_assistant_tokens_mask" }

-- Renders messages (a list, checked) with the template: the text.
local function render(tok, tpl, messages, opts)
  local vars = {}
  for k, v in pairs(opts.variables or {}) do vars[k] = v end
  vars.messages = messages
  vars.add_generation_prompt = opts.add_generation_prompt == true
  vars.tools = opts.tools or jinja.none
  vars.documents = opts.documents or jinja.none
  vars.bos_token = tok.bos_token or ""
  vars.eos_token = tok.eos_token or ""
  return tpl:render(vars)
end

local function ids_table(tok, text)
  return tok:encode(text, { add_special_tokens = false }):totable()
end

-- The assistant spans of ids (a Lua array) of the whole conversation: {message =, first =,
-- last =} for each assistant message, token positions inclusive.
local function assistant_spans(tok, tpl, messages, ids, opts, where)
  local eos = {}
  for _, id in ipairs(tok.eos_ids or { tok.eos_id }) do eos[id] = true end
  local spans = {}
  for i, m in ipairs(messages) do
    if m.role == "assistant" then
      local first = 1
      if i > 1 then
        local prefix_opts = { add_generation_prompt = true, tools = opts.tools, documents = opts.documents,
          variables = opts.variables }
        local prefix = ids_table(tok, render(tok, tpl, table.move(messages, 1, i - 1, 1, {}), prefix_opts))
        for j = 1, #prefix do
          if prefix[j] ~= ids[j] then
            error(("%s: the chat template renders the conversation before message %d (with the generation "
              .. "prompt) as something other than the start of the whole conversation (they differ at token %d); "
              .. "the assistant's tokens cannot be told apart"):format(where, i, j), 3)
          end
        end
        first = #prefix + 1
      end
      local last = #ids
      for j = first, #ids do
        if eos[ids[j]] then last = j; break end
      end
      spans[#spans + 1] = { message = i, first = first, last = last }
    end
  end
  return spans
end

--- chat.apply(tok, messages [, opts]) -> text, or ids int64 [T] (tokenize = true, the
-- default, as transformers), and with return_assistant_tokens_mask = true also the mask
-- (int64 [T], 1 on the assistant's tokens). opts: add_generation_prompt = false,
-- tokenize = true, tools = list of tool definitions (JSON schemas), documents = list,
-- chat_template = a template string instead of the tokenizer's, variables = {name = value}
-- more template variables (enable_thinking = false ...).
function chat.apply(tok, messages, opts)
  local where = "ft.tokenizer.apply_chat_template"
  opts = ft.check_options(where, opts, OPTIONS)
  chat.check_messages(messages, where, 2)
  for _, k in ipairs({ "add_generation_prompt", "tokenize", "return_assistant_tokens_mask" }) do
    ft.check.boolean(where, k, opts[k])
  end
  for _, k in ipairs({ "tools", "documents", "variables" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "table" then
      error(("%s: option '%s' must be a table, got %s"):format(where, k, type(opts[k])), 2)
    end
  end
  local tpl = template_of(tok, opts.chat_template, where)
  local text = render(tok, tpl, messages, opts)
  if opts.tokenize == false then
    if opts.return_assistant_tokens_mask then
      error(where .. ": return_assistant_tokens_mask needs tokenize = true", 2)
    end
    return text
  end
  local ids = ids_table(tok, text)
  local out = ft.tensor(ids, { dtype = "int64" })
  if not opts.return_assistant_tokens_mask then return out end
  local mask = {}
  for j = 1, #ids do mask[j] = 0 end
  for _, span in ipairs(assistant_spans(tok, tpl, messages, ids, opts, where)) do
    for j = span.first, span.last do mask[j] = 1 end
  end
  return out, ft.tensor(mask, { dtype = "int64" })
end

--- chat.encode(tok, messages [, {tools =, documents =, variables =, ignore_index = -100}]) ->
-- ids, labels (Lua arrays of 1-based ids): the conversation as the chat template renders
-- it, labels equal to ids on the tokens of each assistant message (its reply and its
-- end-of-turn token) and ignore_index elsewhere; an assistant message with weight = 0 does
-- not train (OpenAI's fine-tuning format).
function chat.encode(tok, messages, opts)
  local where = "ft.text.chat.encode"
  opts = ft.check_options(where, opts, { "tools", "documents", "variables", "ignore_index" })
  chat.check_messages(messages, where, 2)
  local tpl = template_of(tok, nil, where)
  local ids = ids_table(tok, render(tok, tpl, messages, opts))
  local ignore = opts.ignore_index or -100
  local labels = {}
  for j = 1, #ids do labels[j] = ignore end
  for _, span in ipairs(assistant_spans(tok, tpl, messages, ids, opts, where)) do
    if messages[span.message].weight ~= 0 then
      for j = span.first, span.last do labels[j] = ids[j] end
    end
  end
  return ids, labels
end

return chat
