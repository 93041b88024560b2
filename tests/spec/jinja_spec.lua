-- ft.text.jinja: chat templates rendered byte for byte as @huggingface/jinja renders them
-- (tests/fixtures/chat_templates/expected.json, written by tests/gen/node/chat_templates.mjs),
-- and the Jinja features and Python semantics the reference does not cover, with expected
-- texts as Jinja2 3.1 renders them in transformers' environment (ImmutableSandboxedEnvironment,
-- trim_blocks, lstrip_blocks, loopcontrols, transformers' tojson).
local ft = require "ft"
local H = require "helpers"
local jinja = require "ft.text.jinja"

local FIXTURE = H.fixture("chat_templates/expected.json")

local function render(src, vars)
  return jinja.compile(src, { name = "t" }):render(vars)
end

local function error_of(src, vars)
  return H.error_of(function() return render(src, vars) end)
end

-- Asserts got == want, naming the first byte where they differ.
local function assert_same_text(want, got, what)
  if want == got then return end
  local i = 1
  while i <= #want and want:byte(i) == got:byte(i) do i = i + 1 end
  local function around(s) return ("%q"):format(s:sub(math.max(1, i - 40), i + 40)) end
  error(("%s: differs at byte %d (expected %d bytes, got %d)\n  expected ...%s...\n  got      ...%s..."):format(
    what, i, #want, #got, around(want), around(got)), 2)
end

describe("ft.text.jinja renders as @huggingface/jinja", function()
  local fixture = ft.json.read(FIXTURE)
  local compiled = {}
  local function template(name)
    compiled[name] = compiled[name] or jinja.compile(fixture.templates[name].source, { name = name })
    return compiled[name]
  end

  it("has the fixture's templates, Qwen3's among them, and its .jinja files as they are now", function()
    assert.truthy(fixture.templates.qwen3)
    assert.truthy(fixture.templates.qwen3.source:find("enable_thinking", 1, true))
    for name, t in pairs(fixture.templates) do
      local file = t.origin:match("^tests/fixtures/(chat_templates/.*%.jinja)$")
      if file then
        local f = assert(io.open(H.fixture(file), "rb"))
        local text = f:read("a")
        f:close()
        assert(text == t.source, name .. ": " .. file .. " changed since expected.json was written "
          .. "(cd tests/gen/node && node chat_templates.mjs)")
      end
    end
  end)

  -- one test per template, every case of it byte for byte
  local by_template, order = {}, {}
  for _, c in ipairs(fixture.cases) do
    if not by_template[c.template] then
      by_template[c.template] = {}
      order[#order + 1] = c.template
    end
    table.insert(by_template[c.template], c)
  end
  for _, name in ipairs(order) do
    it(("renders every %s case (%d) byte for byte"):format(name, #by_template[name]), function()
      for _, c in ipairs(by_template[name]) do
        local ok, got = pcall(template(name).render, template(name), c.vars)
        assert(ok, c.name .. ": " .. tostring(got))
        assert_same_text(c.expected, got, c.name)
      end
    end)
  end

  it("raises the reference's errors at their line and column", function()
    for _, e in ipairs(fixture.errors) do
      local source = e.source or fixture.templates[e.template].source
      local msg = H.error_of(function()
        return jinja.compile(source, { name = "chat_template" }):render(e.vars)
      end)
      H.assert_mentions(msg, "chat_template:" .. e.at .. ": ", e.message)
      if e.kind == "runtime" then H.assert_mentions(msg, e.reference_error) end
    end
  end)
end)

-- {template, variables (JSON), expected}: Jinja2's renders.
local JINJA2 = {
  {
    "whitespace: trim_blocks, lstrip_blocks and the - + markers",
    { "  {% if true %}\n  yes\n  {% endif %}\nafter\n",
      "{}",
      "  yes\nafter" },
    { "a  {%- if true -%}  b  {%- endif -%}  c",
      "{}",
      "abc" },
    { "a  {{- 1 -}}  b\n\n  {{- 2 }}",
      "{}",
      "a1b2" },
    { "x {#- comment -#}   y\n  {# own line #}\nz",
      "{}",
      "xy\nz" },
    { "  {%+ if true %}x{% endif %}\n{% if true +%}\ny{% endif %}",
      "{}",
      "  x\ny" },
    { "{% raw %}{{ not a var }} {% if %}{% endraw %}\nafter",
      "{}",
      "{{ not a var }} {% if %}after" },
    { "line1\r\nline2\r\n{% if true %}\r\nx{% endif %}\r\n",
      "{}",
      "line1\nline2\nx" },
    { "one trailing newline goes\n\n",
      "{}",
      "one trailing newline goes\n" },
    { "text {{ 'x' }}\n  {{ 'y' }}  \n",
      "{}",
      "text x\n  y  " },
  },
  {
    "literals and strings",
    { "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F600\\d' }}",
      "{}",
      "a\nb\tc\\d'e\"fAé😀\\d" },
    { "{{ \"it's\" }} {{ 'say \"hi\"' }} {{ 'a' 'b' \"c\" }}",
      "{}",
      "it's say \"hi\" abc" },
    { "{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }} {{ (1,) }} {{ (1, 2) }} {{ () }} {{ {'a': 1, 'b': [1]} }}",
      "{}",
      "[1, 'a', None, True, 1.5, [2], {'k': 'v'}] (1,) (1, 2) () {'a': 1, 'b': [1]}" },
    { "{{ none }} {{ true }} {{ false }} {{ None }} {{ True }}|{{ undefined_name }}|",
      "{}",
      "None True False None True||" },
    { "{{ messages }}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "[{'content': 'Be brief.', 'role': 'system'}, {'content': 'Hi {{ x }} é 😀', 'role': 'user'}, {'content': 'Hello!', 'role': 'assistant'}]" },
    { "{{ 'quote\\'s' ~ [\"it's\", 'a\\nb'] }}",
      "{}",
      "quote's[\"it's\", 'a\\nb']" },
  },
  {
    "numbers and arithmetic",
    { "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 6 / 2 }} {{ 2 ** 3 ** 2 }} {{ 2 ** -1 }} {{ -2 ** 2 }}",
      "{}",
      "7 9 3 -4 1 2 3.5 3.0 64 0.5 4" },
    { "{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 1e16 }} {{ 123456789012345.0 }} {{ 3.0 }} {{ -0.0 }} {{ 1_000 }} {{ 0x1F }} {{ 2.5e-3 }}",
      "{}",
      "2.5 0.30000000000000004 1e+20 1e-05 1e+16 123456789012345.0 3.0 -0.0 1000 31 0.0025" },
    { "{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ true + true }} {{ 'a' ~ 1 ~ none ~ true ~ undefined_name ~ 2.0 }}",
      "{}",
      "ababab [1, 1] [1, 2] 2 a1NoneTrue2.0" },
    { "{{ x / 3 }} {{ x // 3 }} {{ x * 1.0 }}",
      "{\"x\": 10}",
      "3.3333333333333335 3 10.0" },
  },
  {
    "comparisons, logic, membership, conditional expressions",
    { "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ [1] == [1] }} {{ {'a': 1} == {'a': 1} }} {{ (1,) == [1] }}",
      "{}",
      "True False True True True True True True True False" },
    { "{{ 1 in [1, 2] }} {{ 'a' in 'cat' }} {{ 'k' in {'k': 1} }} {{ 3 not in [1, 2] }} {{ 'x' in undefined_name }} {{ 'x' not in undefined_name }}",
      "{}",
      "True True True True False True" },
    { "{{ not true }} {{ not 0 }} {{ 0 or 'x' }} {{ '' and 'y' }} {{ 'a' and 'b' }} {{ none or [] }} {{ [] or {} }}",
      "{}",
      "False True x  b [] {}" },
    { "{{ 'y' if true else 'n' }} {{ 'y' if false else 'n' }} [{{ 'y' if false }}] {{ 1 if 0 else 2 if 1 else 3 }} {{ 'e' if '' else 'ne' }} {{ 'z' if 0.0 else 'nz' }}",
      "{}",
      "y n [] 2 ne nz" },
    { "{{ 'T' if not x is defined else 'F' }} {{ 'T' if x is not none and x else 'F' }}",
      "{\"x\": null}",
      "F F" },
  },
  {
    "attribute, item and slice access",
    { "{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages[-1].role }} [{{ messages[5] }}] {{ messages[1:] | length }} {{ messages[::-1][0].role }} {{ messages[-2:][0].role }}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "system Be brief. assistant [] 2 assistant user" },
    { "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[-2:] }} {{ 'héllo'[1] }} {{ 'héllo😀'[-1] }} {{ 'abcdef'[::2] }} {{ [1, 2, 3, 4, 5][1:4:2] }} {{ [1, 2, 3][5:] }} [{{ 'abc'[10] }}] {{ 'héllo'[1:4] }} {{ [1, 2, 3][::-2] }}",
      "{}",
      "el olleh lo é 😀 ace [2, 4] [] [] éll [3, 1]" },
    { "{{ x.a.b }} {{ x['a']['b'] }} {{ x.l.0 }} {{ x.l[-1] }} [{{ x.missing }}] {{ x.missing is defined }} {{ x.items | length if false else 'items is a method' }}",
      "{\"x\": {\"a\": {\"b\": \"deep\"}, \"l\": [10, 20]}}",
      "deep deep 10 20 [] False items is a method" },
    { "{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 5) }} {{ d['items'] }} {{ d.copy() }}",
      "{\"d\": {\"a\": 1, \"b\": 2, \"items\": \"value\"}}",
      "[('a', 1), ('b', 2), ('items', 'value')] ['a', 'b', 'items'] [1, 2, 'value'] 1 None 5 value {'a': 1, 'b': 2, 'items': 'value'}" },
  },
  {
    "for loops",
    { "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.depth }}|{% endfor %}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "10TrueFalse3321|21FalseFalse3211|32FalseTrue3101|" },
    { "{% for m in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.previtem is defined }};{% endfor %}",
      "{}",
      "-2-False;1-3-True;2--True;" },
    { "{% for m in [] %}x{% else %}empty{% endfor %} {% for m in [1] %}x{% else %}empty{% endfor %} {% for m in [1, 2] if m > 5 %}x{% else %}filtered out{% endfor %}",
      "{}",
      "empty x filtered out" },
    { "{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}:{{ m.role }} {% endfor %}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "1/2:user 2/2:assistant " },
    { "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for k in d %}{{ k }}{% endfor %} {% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {% for (a, (b, c)) in [[1, [2, 3]]] %}{{ a }}{{ b }}{{ c }}{% endfor %}",
      "{\"d\": {\"a\": 1, \"b\": 2}}",
      "a=1;b=2; ab 37 123" },
    { "{% for x in [1, 2, 3, 4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %} {% for x in [1, 2, 3, 4] %}{% if x is even %}{% continue %}{% endif %}{{ x }}{% endfor %} {% for x in [1, 2] %}{% break %}{% else %}else{% endfor %}|",
      "{}",
      "12 13 else|" },
    { "{% for x in [1, 2] %}{% for y in 'ab' %}{{ loop.index }}{{ x }}{{ y }} {% endfor %}{{ loop.index }}|{% endfor %}",
      "{}",
      "11a 21b 1|12a 22b 2|" },
    { "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i + 10 %}{{ x }} {% endfor %}{{ x }}",
      "{}",
      "111 112 1" },
    { "{% for c in 'héllo' %}{{ c }}.{% endfor %} {% for c in undefined_name %}never{% endfor %}",
      "{}",
      "h.é.l.l.o. " },
    { "{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %} {% for x in [1, 1, 2, 2, 1] %}{% if loop.changed(x) %}{{ x }}{% endif %}{% endfor %}",
      "{}",
      "aba 121" },
    { "{% for item in tree recursive %}{{ item.n }}{{ loop.depth }}{% if item.c %}({{ loop(item.c) }}){% endif %}{% endfor %}",
      "{\"tree\": [{\"c\": [{\"c\": [], \"n\": \"b\"}, {\"n\": \"c\"}], \"n\": \"a\"}, {\"n\": \"d\"}]}",
      "a1(b2c2)d1" },
    { "{% for x in [1, 2] %}{% set inner = x %}{% endfor %}[{{ inner }}]",
      "{}",
      "[]" },
  },
  {
    "assignments, namespaces, macros, call and filter blocks",
    { "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 2 %}{{ t }} {% set (c, d) = 'xy' %}{{ c }}{{ d }}",
      "{}",
      "12 (1, 2) xy" },
    { "{% set ns = namespace(x=1, y='a') %}{% set ns.x = ns.x + 1 %}{{ ns.x }}{{ ns.y }} {{ ns }} {% set ns2 = namespace({'k': 'v'}, n=1) %}{{ ns2.k }}{{ ns2.n }} [{{ ns.missing }}]",
      "{}",
      "2a <Namespace {'x': 2, 'y': 'a'}> v1 []" },
    { "{% set x %}  block {{ 1 }} {% endset %}[{{ x }}] {% set y | upper | trim %}  hi  {% endset %}[{{ y }}]",
      "{}",
      "[  block 1 ] [HI]" },
    { "{% macro m(a, b=2, c=a) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 3) }} {{ m(1, c=9) }} [{{ m() }}] {{ m }}",
      "{}",
      "121 131 129 [2] <Macro 'm'>" },
    { "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }} {{ m(*[5, 6], **{'z': 7}) }}",
      "{}",
      "1(2, 3){'k': 4} 5(6,){'z': 7}" },
    { "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inner {{ 1 }}{% endcall %}",
      "{}",
      "<b>inner 1</b>" },
    { "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}[{{ x }}]{% endcall %}",
      "{}",
      "[1][2]" },
    { "{% filter upper %}hello {{ 'x' }}{% endfilter %} {% filter replace('a', 'b') | title %}aaa cat{% endfilter %}",
      "{}",
      "HELLO X Bbb Cbt" },
    { "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}] {% set g = 'outer' %}{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late' %}{{ m() }}",
      "{}",
      "3[] late" },
    { "{% set messages = messages[1:] %}{{ messages | length }} {% if true %}{% set inside_if = 'visible' %}{% endif %}{{ inside_if }}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "2 visible" },
    { "{% set j = joiner('|') %}{% for x in [1, 2, 3] %}{{ j() }}{{ x }}{% endfor %} {{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1, b=2) }} {{ namespace(a=1) }}",
      "{}",
      "1|2|3 [0, 1, 2] [1, 3, 5] [5, 3, 1] {'a': 1, 'b': 2} <Namespace {'a': 1}>" },
  },
  {
    "filters",
    { "{{ '  x  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ [1, 2] | length }}{{ 'héllo' | length }}{{ {'a': 1} | count }}{{ undefined_name | length }}",
      "{}",
      "x|hi|2510" },
    { "{{ [1, 2, 3] | join(', ') }} {{ ['a', 'b'] | join }} {{ messages | map(attribute='role') | join('/') }} {{ 'abc' | join('-') }} {{ messages | join(', ', attribute='role') }}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "1, 2, 3 ab system/user/assistant a-b-c system, user, assistant" },
    { "{{ 'hello WORLD' | upper }} {{ 'HeLLo' | lower }} {{ 'hello WORLD' | capitalize }} {{ \"hello world-foo (bar) they're\" | title }} {{ 'ÉCOLE straße' | lower }} {{ 'école straße' | upper }} {{ 'привет' | upper }}",
      "{}",
      "HELLO WORLD hello Hello world Hello World-Foo (Bar) They're école straße ÉCOLE STRASSE ПРИВЕТ" },
    { "{{ undefined_name | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ 0 | d('z', boolean=true) }} {{ none | default('n') }} {{ none | default('n', true) }} {{ false | d('f') }}",
      "{}",
      "d  d z None n False" },
    { "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}",
      "{}",
      "bbb bba -a-b-c-" },
    { "{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ 'abc' | first }} {{ 'abc' | last }} [{{ [] | first }}] {{ {'z': 1, 'a': 2} | first }}",
      "{}",
      "3 2 a c [] z" },
    { "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ messages | rejectattr('role', 'eq', 'user') | list | length }} {{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }}",
      "{\"messages\": [{\"content\": \"Be brief.\", \"role\": \"system\"}, {\"content\": \"Hi {{ x }} é 😀\", \"role\": \"user\"}, {\"content\": \"Hello!\", \"role\": \"assistant\"}]}",
      "['Hi {{ x }} é 😀'] 2 2" },
    { "{{ ms | selectattr('x', 'defined') | list | length }} {{ ms | rejectattr('x', 'defined') | list | length }} {{ ms | selectattr('x') | list | length }} {{ ms | selectattr('x', 'none') | list | length }} {{ ms | selectattr('x', 'false') | list | length }}",
      "{\"ms\": [{\"x\": 1}, {\"y\": 2}, {\"x\": null}, {\"x\": 0}, {\"x\": false}]}",
      "4 1 1 1 1" },
    { "{{ 'abc' | list }} {{ {'b': 1, 'a': 2} | list }} {{ 42 | string }} {{ [1] | string }} {{ '42' | int + 1 }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ -3.9 | int }} {{ '2.5' | float }} {{ 'z' | float }} {{ -3 | abs }} {{ 3 | float }} {{ ' 12 ' | int }} {{ '0x1A' | int(base=16) }}",
      "{}",
      "['a', 'b', 'c'] ['b', 'a'] 42 [1] 43 3 0 7 3 -3 2.5 0.0 3 3.0 12 26" },
    { "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'a\\nb\\n' | indent('> ') }}|{{ 'a\\r\\nb' | indent(1) }}|",
      "{}",
      "a\n    b\n\n    c|  a\n  b|a\n  \n  b|a\n> b\n|a\n b|" },
    { "{{ [3, 1, 2] | reverse | list }} {{ 'abc' | reverse }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a', 'C'] | sort }} {{ ['b', 'A', 'a', 'C'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }}",
      "{}",
      "[2, 1, 3] cba [1, 2, 3] ['A', 'a', 'b', 'C'] ['A', 'C', 'a', 'b'] [3, 2, 1]" },
    { "{{ ms | sort(attribute='n') | map(attribute='n') | list }} {{ ms | sort(attribute='k,n') | map(attribute='n') | list }} {{ ['a', 'A', 'b', 'a'] | unique | list }} {{ ['a', 'A'] | unique(case_sensitive=true) | list }} {{ [1, 2, 1, 3] | unique | list }} {{ ms | unique(attribute='k') | map(attribute='n') | list }}",
      "{\"ms\": [{\"k\": 1, \"n\": 3}, {\"k\": 0, \"n\": 1}, {\"k\": 1, \"n\": 2}]}",
      "[1, 2, 3] [1, 2, 3] ['a', 'b'] ['a', 'A'] [1, 2, 3] [3, 1]" },
    { "{{ '<a href=\"x\">&\\'</a>' | e }} {{ 'x' | safe }} {{ [1, 2, 3] | sum }} {{ [1, 5, 3] | max }} {{ [4, 2, 8] | min }} {{ ['b', 'A'] | max }} {{ 3.14159 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 7 | round }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(method='floor') }}",
      "{}",
      "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt; x 6 5 2 b 3.14 2.0 4.0 2.67 7 3.0 2.0" },
    { "{{ d | items | list }} {{ d | dictsort }} {{ d | dictsort(reverse=true) }} {{ d | dictsort(by='value') }} {{ undefined_name | items | list }}",
      "{\"d\": {\"C\": 3, \"a\": 2, \"b\": 1}}",
      "[('C', 3), ('a', 2), ('b', 1)] [('a', 2), ('b', 1), ('C', 3)] [('C', 3), ('b', 1), ('a', 2)] [('b', 1), ('a', 2), ('C', 3)] []" },
    { "[{{ 'hi' | center(6) }}] {{ 'a b  c-d' | wordcount }} {{ '%s and %d' | format('x', 3) }} {{ '%s' % 'y' }} {{ '%05.1f|%-4s|%x|%r' % (3.14159, 'ab', 255, 'q') }} {{ '%(a)s-%(b)d' % {'a': 'A', 'b': 2} }}",
      "{}",
      "[  hi  ] 4 x and 3 y 003.1|ab  |ff|'q' A-2" },
    { "{{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ [1, 2, 3] | batch(2, 0) | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ ['a', 'B'] | map('upper') | list }} {{ [0, 1, '', 'x'] | select | list }} {{ [1, 2, 3] | select('gt', 1) | list }}",
      "{}",
      "[[1, 2], [3, 4], [5]] [[1, 2], [3, 0]] [1, 3] [2, 4] ['A', 'B'] [1, 'x'] [2, 3]" },
    { "{{ ms | map(attribute='x', default='D') | list }} {{ ms | map(attribute='a.b') | list }} {{ ms | map(attribute='l.1') | list }} {{ ms | map('length') | list }} {{ ms[0] | attr('x') }}",
      "{\"ms\": [{\"a\": {\"b\": 5}, \"l\": [1, 2], \"x\": 1}, {\"a\": {\"b\": 6}, \"l\": [3, 4]}]}",
      "[1, 'D'] [5, 6] [2, 4] [3, 2] " },
  },
  {
    "tojson",
    { "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(separators=(',', ':')) }}|{{ d | tojson(sort_keys=true) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}|{{ d | tojson(indent=0) }}|{{ d | tojson(indent='\\t') }}",
      "{\"d\": {\"a\": {\"x\": \"y\"}, \"b\": [1, 2.5, null, true], \"e\": []}}",
      "{\"a\": {\"x\": \"y\"}, \"b\": [1, 2.5, null, true], \"e\": []}|{\n  \"a\": {\n    \"x\": \"y\"\n  },\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"e\": []\n}|{\"a\":{\"x\":\"y\"},\"b\":[1,2.5,null,true],\"e\":[]}|{\"a\": {\"x\": \"y\"}, \"b\": [1, 2.5, null, true], \"e\": []}|[]|{}|{\n\"a\": {\n\"x\": \"y\"\n},\n\"b\": [\n1,\n2.5,\nnull,\ntrue\n],\n\"e\": []\n}|{\n\t\"a\": {\n\t\t\"x\": \"y\"\n\t},\n\t\"b\": [\n\t\t1,\n\t\t2.5,\n\t\tnull,\n\t\ttrue\n\t],\n\t\"e\": []\n}" },
    { "{{ 'é😀\\n\"\\\\ \\x01 \\x7f' | tojson }}|{{ 'é😀' | tojson(ensure_ascii=true) }}|{{ 'é' | tojson(true) }}|{{ (1, 2) | tojson }}|{{ {1: 'a', 2.5: 'b', true: 'c', none: 'd'} | tojson }}|{{ x | tojson }}|{{ [1.0, 1e-7, 1e22, 0.1] | tojson }}",
      "{\"x\": 1.0}",
      "\"é😀\\n\\\"\\\\ \\u0001 \127\"|\"\\u00e9\\ud83d\\ude00\"|\"\\u00e9\"|[1, 2]|{\"1\": \"c\", \"2.5\": \"b\", \"null\": \"d\"}|1.0|[1.0, 1e-07, 1e+22, 0.1]" },
    { "{{ {'b': 1, 'a': 2, 'B': 3} | tojson(sort_keys=true) }} {{ {'z': {'y': 1, 'x': 2}} | tojson(sort_keys=true, indent=1) }}",
      "{}",
      "{\"B\": 3, \"a\": 2, \"b\": 1} {\n \"z\": {\n  \"x\": 2,\n  \"y\": 1\n }\n}" },
  },
  {
    "tests",
    { "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}{{ {} is iterable }}{{ 1 is number }}{{ 1.5 is number }}{{ true is number }}{{ 1 is integer }}{{ 1.0 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ true is true }}{{ 1 is true }}{{ false is false }}{{ [] is sequence }}{{ 'a' is sequence }}{{ {} is sequence }}{{ 1 is sequence }}",
      "{\"x\": 1}",
      "TrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueFalseTrueTrueTrueTrueFalse" },
    { "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ 1 is equalto 1 }}{{ 1 is eq 2 }}{{ 'a' is in ['a'] }}{{ 'x' is in 'xyz' }}{{ 3 is gt 2 }}{{ 3 is lt 2 }}{{ 3 is ge 3 }}{{ 3 is le 2 }}{{ 3 is ne 2 }}{{ none is sameas none }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ x is callable }}{{ range is callable }}{{ 'upper' is filter }}{{ 'odd' is test }}",
      "{\"x\": 1}",
      "TrueTrueTrueFalseTrueFalseTrueTrueTrueFalseTrueFalseTrueTrueTrueTrueFalseTrueTrueTrue" },
    { "{{ x is not none }}{{ x is not defined }}{{ 1 is not string }}{{ 2 is greaterthan 1 }}{{ 1 is lessthan 2 }}{{ [1] is not mapping }}",
      "{\"x\": null}",
      "FalseFalseTrueTrueTrueTrue" },
  },
  {
    "string methods",
    { "{{ 'hello'.startswith('he') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith('l', 2) }} {{ '  a  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|{{ '\\n\\n  abc\\n'.lstrip('\\n') }}|{{ 'abc\\n  \\n'.rstrip('\\n') }}|{{ '\\u3000wide\\u00a0'.strip() }}|",
      "{}",
      "True True True True a|a|a | a|  abc\n|abc\n  |wide|" },
    { "{{ 'a,b,,c'.split(',') }} {{ '  a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ '  a  b c '.split(none, 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'a b  c'.rsplit(none, 1) }} {{ 'a\\nb\\r\\nc\\n'.splitlines() }} {{ 'x</think>y</think>z'.split('</think>')[-1] }}",
      "{}",
      "['a', 'b', '', 'c'] ['a', 'b', 'c'] ['a', 'b c'] ['a', 'b c '] ['a,b', 'c'] ['a b', 'c'] ['a', 'b', 'c'] z" },
    { "{{ 'hello'.find('l') }} {{ 'hello'.find('z') }} {{ 'héllo'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.count('l') }} {{ 'hello'.index('e') }} {{ 'aaa'.count('') }} {{ 'abc'.find('', 1) }} {{ 'hello'.find('l', 3) }}",
      "{}",
      "2 -1 2 3 2 1 4 1 3" },
    { "{{ 'Hello World'.lower() }} {{ 'hello'.upper() }} {{ \"they're bill's\".title() }} {{ 'hELLO'.capitalize() }} {{ 'Hello'.swapcase() }} {{ 'ab'.center(7, '*') }} {{ '5'.zfill(3) }} {{ '-5'.zfill(4) }} [{{ 'ab'.ljust(4) }}] {{ 'ab'.rjust(4, '.') }}",
      "{}",
      "hello world HELLO They'Re Bill'S Hello hELLO ***ab** 005 -005 [ab  ] ..ab" },
    { "{{ ', '.join(['a', 'b']) }} {{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'abc'.removeprefix('a') }} {{ 'abc'.removesuffix('c') }} {{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ ' '.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ 'Ab Cd'.istitle() }} {{ 'a1'.isalnum() }}",
      "{}",
      "a, b ('a', '=', 'b=c') ('a=b', '=', 'c') bc ab True True True True True True True" },
    { "{{ '{} and {}'.format('a', 1) }} {{ '{1}{0}'.format('a', 'b') }} {{ '{name}!'.format(name='x') }} {{ '{:>5}|{:<4}|{:^5}|{:05d}|{:.2f}|{:,}'.format('a', 'b', 'c', 42, 3.14159, 1234567) }} {{ '{{}}'.format() }} {{ '{0!r}'.format('q') }} {{ '{0[0]}{1.role}'.format(['L'], m) }}",
      "{\"m\": {\"role\": \"user\"}}",
      "a and 1 ba x!     a|b   |  c  |00042|3.14|1,234,567 {} 'q' Luser" },
  },
  -- Scripts and case rules beyond Latin, Greek and Cyrillic; the expected texts are Python
  -- 3.11's results (Unicode 14, through Jinja2 3.1.6).
  {
    "Unicode case, letters, digits and whitespace of every script",
    { "{{ 'აბგ'.upper() }} {{ 'ᲐᲑᲒ'.lower() }} {{ 'Ꮳᏸ'.lower() }} {{ 'ꮳᏸ'.upper() }} {{ '𐐀𐐨'.lower() }} {{ '𐐀𐐨'.upper() }} {{ 'İ'.lower() | length }} {{ 'ß'.upper() }} {{ 'ﬁ'.upper() }} {{ 'ΟΔΟΣ ΟΔΟΣ.'.lower() }} {{ 'ΣΑΣ'.lower() }} {{ 'ǆ'.upper() }} {{ 'Straße'.swapcase() }} {{ 'ΟΔΥΣΣΕΥΣ' | lower }} {{ 'straße' | upper }}",
      "{}",
      "ᲐᲑᲒ აბგ ꮳᏸ ᏣᏰ 𐐨𐐨 𐐀𐐀 2 SS FI οδος οδος. σας Ǆ sTRASSE οδυσσευς STRASSE" },
    { "{{ 'ภาษาไทย'.isalpha() }} {{ 'สวัสดี'.isalpha() }} {{ 'नमन'.isalpha() }} {{ 'नमस्ते'.isalpha() }} {{ 'ሰላም'.isalpha() }} {{ '漢字かなカナ한글'.isalpha() }} {{ 'שלום'.isalpha() }} {{ '\\u3000\\u2028\\u0085\\u00a0\\u1680\\u001f'.isspace() }} {{ '\\u200b'.isspace() }} {{ '\\ufeff'.isspace() }} {{ '٣۴७'.isdigit() }} {{ '²①⒈'.isdigit() }} {{ '½'.isdigit() }} {{ 'Ꭰ'.isupper() }} {{ 'ꭰ'.islower() }} {{ 'ǅ'.istitle() }} {{ 'ǅ'.isupper() }} {{ 'ǅ'.islower() }} {{ 'აბგ'.islower() }} {{ 'ᲐᲑᲒ'.isupper() }} {{ 'ⓐⅰ'.islower() }}",
      "{}",
      "True False True False True True True True False False True True False True True True False False True True True" },
    { "{{ 'हिन्दी भाषा' | wordcount }} {{ 'שלום עולם_1 ٣٤' | wordcount }} {{ 'a①b ½' | wordcount }} [{{ '\\u3000 x \\u2029' | trim }}] {{ '\\u0085a\\u2028b\\u3000c'.split() }} [{{ '\\u2028x\\u00a0'.strip() }}]",
      "{}",
      "5 3 2 [x] ['a', 'b', 'c'] [x]" },
  },
  {
    "strftime_now and raise_exception",
    { "{{ strftime_now('%Y') | length }} {{ strftime_now('%%') }}",
      "{}",
      "4 %" },
  },
}

describe("ft.text.jinja has Jinja2's semantics", function()
  for _, group in ipairs(JINJA2) do
    it(group[1], function()
      for i = 2, #group do
        local src, vars, want = group[i][1], ft.json.decode(group[i][2]), group[i][3]
        local ok, got = pcall(render, src, vars)
        assert(ok, src .. "\n  " .. tostring(got))
        assert_same_text(want, got, src)
      end
    end)
  end

  it("keeps Python's None, True and False apart from Lua's nil and strings", function()
    assert.equal("None True False", render("{{ x }} {{ y }} {{ z }}", { x = ft.json.null, y = true, z = false }))
    assert.equal("[1, None]", render("{{ l }}", { l = ft.json.decode("[1, null]") }))
    assert.equal("1.0 1 1.0", render("{{ v.f }} {{ v.i }} {{ v.f | tojson }}", { v = ft.json.decode('{"f": 1.0, "i": 1}') }))
  end)

  it("passes tools = jinja.none as transformers passes None", function()
    assert.equal("True True F", render("{{ tools is none }} {{ tools is defined }} {{ 'T' if tools else 'F' }}",
      { tools = jinja.none }))
    assert.equal("False False F", render("{{ tools is none }} {{ tools is defined }} {{ 'T' if tools else 'F' }}", {}))
  end)

  it("renders strftime_now with the C library's strftime", function()
    local before = os.date("%Y-%m-%d %H")
    local got = render("{{ strftime_now('%Y-%m-%d %H') }}")
    assert(got == before or got == os.date("%Y-%m-%d %H"), got)
  end)

  it("calls Lua functions passed in the variables", function()
    assert.equal("3", render("{{ add(1, 2) }}", { add = function(a, b) return a + b end }))
    assert.equal("x=7", render("{{ f('x', k=7) }}", { f = function(s, kw) return s .. "=" .. kw.k end }))
    assert.equal("None", render("{{ f() }}", { f = function() end }))
  end)
end)

describe("ft.text.jinja dicts and lists", function()
  it("prints the keys of a jinja.dict in its order, and plain tables' keys sorted", function()
    local params = jinja.dict({ type = "object", properties = jinja.dict({ q = { type = "string" } }, { "q" }),
      required = ft.json.array({ "q" }) }, { "type", "properties", "required" })
    local tool = jinja.dict({ type = "function", ["function"] = jinja.dict({ name = "search", description = "Find.",
      parameters = params }, { "name", "description", "parameters" }) }, { "type", "function" })
    assert.equal('{"type": "function", "function": {"name": "search", "description": "Find.", "parameters": '
      .. '{"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}',
      render("{{ tool | tojson }}", { tool = tool }))
    assert.equal("type function ", render("{% for k, v in tool.items() %}{{ k }} {% endfor %}", { tool = tool }))
    assert.equal('{"function": {"description": "Find.", "name": "search"}, "type": "function"}',
      render("{{ tool | tojson }}", { tool = { type = "function", ["function"] = { name = "search", description = "Find." } } }))
    -- keys a jinja.dict's order leaves out follow, sorted
    assert.equal("b a c d ", render("{% for k in d %}{{ k }} {% endfor %}", { d = jinja.dict({ a = 1, b = 2, c = 3, d = 4 }, { "b", "a" }) }))
  end)

  it("keeps the insertion order of dicts a template makes", function()
    assert.equal('{"b": 1, "a": 2} {"z": 1, "y": 2}', render("{{ {'b': 1, 'a': 2} | tojson }} {{ dict(z=1, y=2) | tojson }}"))
    assert.equal("[('b', 1), ('a', 2)]", render("{{ {'b': 1, 'a': 2}.items() | list }}"))
  end)

  it("tells lists from dicts as ft.json does (an unmarked empty table is a dict)", function()
    assert.equal("[] {} [] [1, 2] {'a': 1}", render("{{ a | tojson }} {{ b | tojson }} {{ c | tojson }} {{ d }} {{ e }}",
      { a = ft.json.decode("[]"), b = {}, c = ft.json.array({}), d = { 1, 2 }, e = { a = 1 } }))
    assert.equal("0 0 F", render("{{ a | length }} {{ b | length }} {{ 'T' if a or b else 'F' }}", { a = ft.json.decode("[]"), b = {} }))
  end)
end)

describe("ft.text.jinja generation blocks", function()
  local fixture = ft.json.read(FIXTURE)
  local tpl = jinja.compile(fixture.templates.features_generation.source, { name = "gen" })

  it("reports the byte ranges {% generation %} blocks wrote, as transformers' assistant mask needs", function()
    assert.is_true(tpl.uses_generation)
    local messages = ft.json.decode('[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hé 😀"},'
      .. ' {"role": "user", "content": "Again"}, {"role": "assistant", "content": ""}]')
    local text, spans = tpl:render({ messages = messages })
    assert.equal(2, #spans)
    assert.equal("Hé 😀<|end|>", text:sub(spans[1][1], spans[1][2]))
    assert.equal("<|end|>", text:sub(spans[2][1], spans[2][2]))
    assert.equal("<|assistant|>\n", text:sub(spans[1][1] - 14, spans[1][1] - 1))
  end)

  it("applies whitespace control around generation tags and reports empty blocks", function()
    local t = jinja.compile("a {%- generation -%}  gen  {%- endgeneration -%}  b{% generation %}{% endgeneration %}")
    local text, spans = t:render({})
    assert.equal("agenb", text)
    assert.same({ { 2, 4 }, { 6, 5 } }, spans)
    assert.is_false(jinja.compile("{{ x }}").uses_generation)
  end)
end)

describe("ft.text.jinja errors", function()
  it("names the line and column of syntax errors", function()
    local cases = {
      { "{% for x in xs %}", "t:1:1: ", "unclosed 'for' block" },
      { "{% if x %}\n  {% for y in x %}{% endif %}", "t:2:22: ", "unexpected 'endif'", "'for' (opened at 2:3)" },
      { "{% endif %}", "t:1:4: ", "unexpected 'endif': no block is open" },
      { "{{ 1 + }}", "t:1:8: ", "expected an expression, got '}}'" },
      { "ok\n{{ x", "t:2:1: ", "unclosed expression" },
      { "{% foo %}", "t:1:4: ", "unknown tag 'foo'" },
      { "{{ x | nosuchfilter }}", "t:1:8: ", "no filter named 'nosuchfilter'" },
      { "{{ x is nosuchtest }}", "t:1:9: ", "no test named 'nosuchtest'" },
      { "{# unclosed", "t:1:1: ", "unclosed comment" },
      { "{{ 'unclosed }}", "t:1:4: ", "unclosed string literal" },
      { "{% break %}", "t:1:4: ", "'break' outside a for loop" },
      { "{% for x in y %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}", "t:1:35: ", "'continue' outside a for loop" },
      { "{{ (1, 2 }}", "t:1:10: ", "unexpected '}', expected ')'" },
      { "{% set 1 = 2 %}", "t:1:8: ", "cannot assign" },
      { "{% macro m(a=1, b) %}{% endmacro %}", "t:1:17: ", "without a default" },
      { "é {{ 1 + }}", "t:1:10: ", "expected an expression" },
      { "{{ 'a\\x4' }}", "t:1:4: ", "invalid \\x escape" },
      { "{{ x is defined is none }}", "t:1:17: ", "cannot chain multiple tests" },
      { "{% for x %}{% endfor %}", "t:1:10: ", "expected 'in'" },
      { "{% if x %}{% else %}{% else %}{% endif %}", "t:1:24: ", "unexpected 'else'" },
    }
    for _, c in ipairs(cases) do
      local msg = H.error_of(jinja.compile, c[1], { name = "t" })
      H.assert_mentions(msg, table.unpack(c, 2))
    end
  end)

  it("names the line and column of runtime errors, raise_exception's message included", function()
    local cases = {
      { "{{ u.attr }}", {}, "t:1:6: 'u' is undefined" },
      { "{{ messages[0].role }}", { messages = ft.json.decode("[]") }, "t:1:16: list object has no element 0" },
      { "{{ d.missing.deeper }}", { d = { a = 1 } }, "t:1:14: 'dict object' has no attribute 'missing'" },
      { "x\n  {{ 'a' + 1 }}", {}, "t:2:10: can only concatenate str (not \"int\") to str" },
      { "{{ 1 / 0 }}", {}, "t:1:6: division by zero" },
      { "{{ [].append(1) }}", {}, "t:1:7: access to attribute 'append' of 'list' object is unsafe." },
      { "line\n{% for x in 5 %}{% endfor %}", {}, "t:2:13: 'int' object is not iterable" },
      { "{% for a, b in [[1]] %}{% endfor %}", {}, "t:1:8: not enough values to unpack (expected 2, got 1)" },
      { "{% set x = 5 %}{% set x.y = 1 %}", {}, "t:1:25: cannot assign attribute on non-namespace object" },
      { "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}, "t:1:34: macro 'm' takes not more than 1 argument(s)" },
      { "{% macro m(a) %}{% endmacro %}{{ m(z=2) }}", {}, "t:1:34: macro 'm' takes no keyword argument 'z'" },
      { "{{ f | tojson }}", { f = print }, "t:1:8: Object of type function is not JSON serializable" },
      { "{{ undefined_name | tojson }}", {}, "Object of type Undefined is not JSON serializable" },
      { "{{ 'a' < 1 }}", {}, "t:1:8: '<' not supported between instances of 'str' and 'int'" },
      { "{{ 'abc'.split('') }}", {}, "t:1:10: empty separator" },
      { "{{ range(200000) | length }}", {}, "t:1:4: Range too big" },
      { "{% if messages[0].role != 'user' %}\n  {{- raise_exception('Conversations must start with a user turn') }}\n{% endif %}",
        { messages = ft.json.decode('[{"role": "system", "content": ""}]') }, "t:2:7: Conversations must start with a user turn" },
    }
    for _, c in ipairs(cases) do
      H.assert_mentions(error_of(c[1], c[2]), c[3])
    end
  end)
end)

describe("ft.text.jinja.unicode", function()
  local U = require "ft.text.jinja.unicode"

  -- Expected texts: Python 3.11's str.title() and str.capitalize().
  it("titles and capitalizes as Python's str does", function()
    assert.equal("ǅemal Ss Ꮳꮳꮳ ʼN Ffix Οδος", U.title("ǆemal ß ꮳꮳꮳ ŉ ﬃx ΟΔΟΣ"))
    assert.equal("ǅemal οδος", U.capitalize("ǆEMAL ΟΔΟΣ"))
    assert.equal("Ssa", U.capitalize("ßa"))
  end)

  it("keeps bytes that are not UTF-8 as they are, where the C functions refuse them", function()
    assert.equal("STRASSE\255X", U.upper("straße\255x"))
    assert.equal("é\192", U.lower("É\192"))
    H.assert_mentions(H.error_of(ft._unicode_lower, "ab\255"), "ft._unicode_lower", "invalid UTF-8 at byte 3")
    H.assert_mentions(H.error_of(ft._unicode_category, 0x110000), "out of range")
  end)
end)

describe("ft.text.jinja API", function()
  it("checks its arguments and options", function()
    H.assert_mentions(H.error_of(jinja.compile, "x", { nmae = "t" }), "ft.text.jinja.compile", "nmae", "name")
    H.assert_mentions(H.error_of(jinja.compile, 42), "must be a string")
    local tpl = jinja.compile("{{ x }}")
    H.assert_mentions(H.error_of(tpl.render, tpl, "vars"), "expects a table")
    assert.equal("", tpl:render())
    H.assert_mentions(H.error_of(jinja.compile, "{% foo %}"), "template:1:4: unknown tag")
    H.assert_mentions(H.error_of(jinja.dict, { a = 1 }, "a"), "keys must be an array")
  end)

  it("compiles once and renders many times with different variables", function()
    local tpl = jinja.compile("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}", { name = "chat" })
    assert.equal("chat", tpl.name)
    assert.equal("user:a;", tpl:render({ messages = { { role = "user", content = "a" } } }))
    assert.equal("user:b;assistant:c;", tpl:render({ messages = { { role = "user", content = "b" }, { role = "assistant", content = "c" } } }))
    assert.equal("", tpl:render({ messages = {} }))
    assert.truthy(tostring(tpl):find("chat", 1, true))
  end)
end)
