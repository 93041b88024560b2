-- tok:apply_chat_template (ft.text.chat) with the real Qwen3 tokenizer: the rendered strings
-- of @huggingface/jinja (tests/fixtures/chat_templates/expected.json) and the ids of
-- @huggingface/tokenizers for them (qwen3_ids.json, tests/gen/node/chat_ids.mjs); the
-- assistant mask; chat examples for training; bad messages.
local ft = require "ft"
local H = require "helpers"
local chat = require "ft.text.chat"
local jinja = require "ft.text.jinja"

local dir = H.tokenizer_dir("qwen3")
teardown(function() ft.fs.remove_tree(dir) end)
local tok = ft.tokenizer.from_pretrained(dir)

local expected = ft.json.read(H.fixture("chat_templates/expected.json"), { ordered = true })
local reference_ids = ft.json.read(H.fixture("chat_templates/qwen3_ids.json")).ids

-- apply_chat_template's options for a case's template variables: transformers' own ones,
-- the rest as template variables.
local OWN = { messages = true, add_generation_prompt = true, tools = true, documents = true,
  bos_token = true, eos_token = true }
local function options_of(vars, extra)
  local opts, variables = extra or {}, {}
  for k, v in pairs(vars) do
    if not OWN[k] then variables[k] = v end
  end
  opts.add_generation_prompt = vars.add_generation_prompt
  if vars.tools ~= nil and vars.tools ~= ft.json.null then opts.tools = vars.tools end
  if vars.documents ~= nil and vars.documents ~= ft.json.null then opts.documents = vars.documents end
  if next(variables) then opts.variables = variables end
  return opts
end

local function qwen3_cases()
  local out = {}
  for _, c in ipairs(expected.cases) do
    if c.template == "qwen3" then out[#out + 1] = c end
  end
  return out
end

local plus1 = H.ids_plus1

describe("apply_chat_template with Qwen3's tokenizer", function()
  it("has the folder's chat template and end-of-turn token", function()
    assert.equal(expected.templates.qwen3.source, tok.chat_template)
    assert.equal("<|im_end|>", tok:id_to_token(tok.eos_id))
  end)

  it("renders the strings of @huggingface/jinja and the ids of @huggingface/tokenizers", function()
    local cases = qwen3_cases()
    assert.is_true(#cases >= 30, "the fixture has the Qwen3 conversations")
    local checked = 0
    for _, c in ipairs(cases) do
      local vars = c.vars
      if vars.bos_token == nil and vars.eos_token == nil then   -- the tokenizer's own tokens
        checked = checked + 1
        local text = tok:apply_chat_template(vars.messages, options_of(vars, { tokenize = false }))
        assert.equal(c.expected, text, c.name)
        local ids = tok:apply_chat_template(vars.messages, options_of(vars))
        H.assert_equal_ints(ids, ft.tensor(plus1(reference_ids[c.name]), { dtype = "int64" }), c.name)
      end
    end
    assert.equal(#cases, checked)
  end)

  it("masks exactly each assistant reply and its end-of-turn token", function()
    local msgs = {
      { role = "system", content = "Be brief." },
      { role = "user", content = "Hi! ¿Qué tal?" },
      { role = "assistant", content = "Hello there. 你好" },
      { role = "user", content = "And now?" },
      { role = "assistant", content = "Bye now 👋🏽." },
    }
    local ids, mask = tok:apply_chat_template(msgs, { return_assistant_tokens_mask = true })
    assert.same(ids:shape(), mask:shape())
    -- The masked runs, decoded: every reply as the model writes it when prompted (the last
    -- turn with Qwen3's empty think block), each ended by <|im_end|>; nothing else.
    local runs, current = {}, nil
    local flat_ids, flat_mask = ids:totable(), mask:totable()
    for i, m in ipairs(flat_mask) do
      if m == 1 then
        current = current or {}
        current[#current + 1] = flat_ids[i]
      elseif current then
        runs[#runs + 1] = tok:decode(current)
        current = nil
      end
    end
    if current then runs[#runs + 1] = tok:decode(current) end
    assert.same({ "Hello there. 你好<|im_end|>", "<think>\n\n</think>\n\nBye now 👋🏽.<|im_end|>" }, runs)
    -- the unmasked rest is the prompt side: system, users, the role headers
    local prompt_side = {}
    for i, m in ipairs(flat_mask) do if m == 0 then prompt_side[#prompt_side + 1] = flat_ids[i] end end
    assert.equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi! ¿Qué tal?<|im_end|>\n"
      .. "<|im_start|>assistant\n\n<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n\n",
      tok:decode(prompt_side))
  end)

  it("gives training labels on the assistant's tokens only, leaving out weight 0 replies", function()
    local msgs = {
      { role = "user", content = "One?" }, { role = "assistant", content = "Uno.", weight = 0 },
      { role = "user", content = "Two?" }, { role = "assistant", content = "Dos." },
    }
    local ids, labels = chat.encode(tok, msgs)
    local trained = {}
    for i, l in ipairs(labels) do
      if l ~= -100 then
        assert.equal(ids[i], l)
        trained[#trained + 1] = l
      end
    end
    assert.equal("<think>\n\n</think>\n\nDos.<|im_end|>", tok:decode(trained))
    local ex_ids, ex_labels = ft.text.encode_example(tok, { messages = msgs })
    assert.same(ids, ex_ids:totable(), "encode_example uses the chat template")
    assert.same(labels, ex_labels:totable(), "and its labels")
    -- the prompt generation starts from: the conversation before the last reply, with the
    -- generation prompt
    local prompt = ft.text.encode_prompt(tok, { messages = msgs })
    assert.equal("<|im_start|>user\nOne?<|im_end|>\n<|im_start|>assistant\nUno.<|im_end|>\n<|im_start|>user\nTwo?"
      .. "<|im_end|>\n<|im_start|>assistant\n", tok:decode(prompt))
  end)

  it("trains on tool-calling turns: the assistant's call, not the tool's answer", function()
    local msgs = ft.json.decode('[{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": "", '
      .. '"tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}, '
      .. '{"role": "tool", "content": "12 C"}, {"role": "assistant", "content": "It is 12 C."}]', { ordered = true })
    local ids, labels = ft.text.encode_example(tok, { messages = msgs })
    local trained = {}
    for i, l in ipairs(labels:totable()) do if l ~= -100 then trained[#trained + 1] = ids:totable()[i] end end
    local text = tok:decode(trained)
    assert.is_truthy(text:find('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>',
      1, true), text)
    assert.is_truthy(text:find("It is 12 C.<|im_end|>", 1, true), text)
    assert.is_falsy(text:find("12 C\n", 1, true), "the tool's answer does not train: " .. text)
  end)

  it("keeps a tool definition's key order from a JSON file in tojson", function()
    local tools = ft.json.decode('[{"type": "function", "function": {"name": "get_weather", "description": "Weather", '
      .. '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]',
      { ordered = true })
    local text = tok:apply_chat_template({ { role = "user", content = "Weather in Oslo?" } },
      { tools = tools, tokenize = false, add_generation_prompt = true })
    assert.is_truthy(text:find('{"type": "function", "function": {"name": "get_weather", "description": "Weather", '
      .. '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}', 1, true))
  end)

  it("refuses bad messages, naming the message, and checks its options", function()
    H.assert_mentions(H.error_of(tok.apply_chat_template, tok, { { role = "robot", content = "x" } }),
      "message 1", "'robot'", "system, user, assistant, tool")
    H.assert_mentions(H.error_of(tok.apply_chat_template, tok, { { role = "user" } }), "message 1 (user)",
      "no string \"content\"")
    H.assert_mentions(H.error_of(tok.apply_chat_template, tok, {}), "non-empty list")
    H.assert_mentions(H.error_of(tok.apply_chat_template, tok, { { role = "user", content = "x" } },
      { add_generation_promt = true }), "did you mean 'add_generation_prompt'")
    H.assert_mentions(H.error_of(tok.apply_chat_template, tok, { { role = "user", content = "x" } },
      { tokenize = false, return_assistant_tokens_mask = true }), "needs tokenize = true")
  end)

  it("reports a malformed template with its line and column", function()
    local err = H.error_of(tok.apply_chat_template, tok, { { role = "user", content = "x" } },
      { chat_template = "{% for m in messages %}\n{{ m.content + }}\n{% endfor %}" })
    H.assert_mentions(err, "chat_template:2:")
  end)

  it("reads chat records of a JSONL file and refuses an unknown role there, naming the line", function()
    local d = H.make_tmpdir("chat")
    H.write_bytes(d .. "/bad.jsonl", '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
      .. '{"messages": [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    local err = H.error_of(ft.text.read_examples, d .. "/bad.jsonl")
    H.assert_mentions(err, "bad.jsonl:2", "'wizard'")
    ft.fs.remove_tree(d)
  end)
end)

describe("ft.text.jinja values", function()
  it("passes absent tools and documents as none, as transformers does", function()
    local text = tok:apply_chat_template({ { role = "user", content = "x" } },
      { tokenize = false, chat_template = "{{ tools is none }} {{ documents is none }} {{ tools is defined }}" })
    assert.equal("True True True", text)
    assert.is_not_nil(jinja.none)
  end)
end)
