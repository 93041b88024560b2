-- ft.json: decode / encode / read / write. Expected texts are written out by hand or
-- come from Python's json module (HuggingFace's config files, and json at test time).
local ft = require "ft"
local H = require "helpers"

local J = ft.json
local GOLDEN = H.fixture("golden")
local PYTHON = H.PYTHON

local quote = H.quote
local run = H.run
local function make_tmpdir() return H.make_tmpdir("json") end
local read_bytes = H.read_bytes
local write_bytes = H.write_bytes
local file_exists = H.file_exists
local function has_python() return H.has_python("json") end

local function decode_error(s)
  return H.error_of(J.decode, s)
end

describe("ft.json.decode", function()
  it("reads integers as Lua integers and everything else as floats", function()
    local v = J.decode('[0, -0, 42, -7, 9007199254740993, 9223372036854775807, -9223372036854775808, '
                       .. '9223372036854775808, 1.0, 1e3, -0.0, 0.1, 2.5E-3, 1e400]')
    local want = {
      {0, "integer"}, {0, "integer"}, {42, "integer"}, {-7, "integer"},
      {9007199254740993, "integer"}, {math.maxinteger, "integer"}, {math.mininteger, "integer"},
      {2.0 ^ 63, "float"}, {1.0, "float"}, {1000.0, "float"}, {-0.0, "float"}, {0.1, "float"},
      {0.0025, "float"}, {1 / 0, "float"},
    }
    assert.are.equal(#want, #v)
    for i, w in ipairs(want) do
      assert.are.equal(w[1], v[i], "element " .. i)
      assert.are.equal(w[2], math.type(v[i]), "element " .. i)
    end
    assert.are.equal(-1 / 0, 1 / v[11])   -- the sign of -0.0 survives
  end)

  it("reads strings with every escape, \\u sequences and surrogate pairs as UTF-8", function()
    local v = J.decode([=["q\" b\\ s\/ \b\f\n\r\t \u00e9\u4e2d \ud83d\ude00 raw é"]=])
    assert.are.equal("q\" b\\ s/ \b\f\n\r\t é中 😀 raw é", v)
    assert.are.equal("a\0b", J.decode([["a\u0000b"]]))
    assert.are.equal(3, #J.decode([["a\u0000b"]]))
    assert.are.equal("", J.decode('""'))
    -- Keys too.
    assert.are.same({["é"] = 1, ["a\nb"] = 2}, J.decode([[{"\u00e9": 1, "a\nb": 2}]]))
  end)

  it("maps null to the ft.json.null sentinel, keeping array positions", function()
    assert.are.equal(J.null, J.decode("null"))
    assert.are.equal("ft.json.null", tostring(J.null))
    local v = J.decode('[1, null, 3]')
    assert.are.equal(3, #v)
    assert.are.equal(J.null, v[2])
    assert.are.equal(J.null, J.decode('{"pad_token_id": null}').pad_token_id)
  end)

  it("reads nested objects and arrays", function()
    local v = J.decode([=[
      {"model": {"layers": [{"n": 1, "ok": true}, {"n": 2, "ok": false}], "name": "gpt2"},
       "empty_list": [], "empty_object": {}, "matrix": [[1, 2], [3, 4]]}
    ]=])
    assert.are.same({
      model = {layers = {{n = 1, ok = true}, {n = 2, ok = false}}, name = "gpt2"},
      empty_list = {}, empty_object = {}, matrix = {{1, 2}, {3, 4}},
    }, v)
    -- Arrays carry ft.json.array's marker; objects carry nothing.
    assert.are.equal(getmetatable(J.array()), getmetatable(v.empty_list))
    assert.are.equal(getmetatable(J.array()), getmetatable(v.model.layers))
    assert.is_nil(getmetatable(v.empty_object))
    assert.is_nil(getmetatable(v.model))
  end)

  it("reads deep nesting up to cJSON's limit of 1000 levels", function()
    local v = J.decode(("["):rep(999) .. ("]"):rep(999))
    local depth = 0
    while type(v) == "table" and v[1] do v, depth = v[1], depth + 1 end
    assert.are.equal(998, depth)
    H.assert_mentions(decode_error(("["):rep(1001) .. ("]"):rep(1001)), "ft.json.decode: invalid JSON near position")
  end)

  it("reports the position of invalid JSON and what is there", function()
    assert.are.equal("ft.json.decode: invalid JSON near position 9: unexpected text '}'", decode_error('{"a": 1,}'))
    assert.are.equal("ft.json.decode: invalid JSON near position 10: unexpected text 'x'", decode_error('{"a": 1} x'))
    assert.are.equal("ft.json.decode: invalid JSON near position 4: unexpected text ',2]'", decode_error('[1,,2]'))
    assert.are.equal("ft.json.decode: invalid JSON near position 6: unexpected end of input (unclosed brackets)",
                     decode_error('[1, 2'))
    assert.are.equal("ft.json.decode: invalid JSON near position 7: unterminated string", decode_error('{"a": "b'))
    assert.are.equal("ft.json.decode: invalid JSON near position 1: unexpected end of input", decode_error(''))
    assert.are.equal("ft.json.decode: invalid JSON near position 1: unexpected text 'nul'", decode_error('nul'))
    assert.are.equal("ft.json.decode: invalid JSON near position 1: unexpected text 'NaN'", decode_error('NaN'))
    -- Numbers JSON does not allow, though C's strtod would.
    assert.are.equal("ft.json.decode: invalid JSON near position 1: invalid number '01'", decode_error('01'))
    assert.are.equal("ft.json.decode: invalid JSON near position 2: invalid number '1.'", decode_error('[1.]'))
    -- Several lines: line and column too.
    assert.are.equal("ft.json.decode: invalid JSON near position 20 (line 3, column 8): unexpected text '}'",
                     decode_error('{\n  "a": 1,\n  "b": }'))
    H.assert_mentions(H.error_of(J.decode, {}), "bad argument #1", "string expected")
  end)
end)

describe("ft.json.decode refuses what JSON forbids and cJSON lets through", function()
  it("invalid \\u escapes: lone surrogates, short or non-hex digits", function()
    assert.are.equal("ft.json.decode: invalid JSON near position 3: lone high surrogate \\uD800 in a string "
                     .. "(a low surrogate must follow)", decode_error('["\\ud800"]'))
    assert.are.equal("ft.json.decode: invalid JSON near position 3: lone high surrogate \\uD83D in a string "
                     .. "(a low surrogate must follow)", decode_error('["\\ud83d\\u0041"]'))
    assert.are.equal("ft.json.decode: invalid JSON near position 2: lone low surrogate \\uDE00 in a string",
                     decode_error('"\\ude00\\ud83d"'))
    assert.are.equal("ft.json.decode: invalid JSON near position 3: invalid \\u escape (four hex digits expected)",
                     decode_error('"a\\u12g4"'))
    assert.are.equal("ft.json.decode: invalid JSON near position 2: invalid escape '\\x' in a string",
                     decode_error('"\\x41"'))
    -- the pair itself is fine, and so is an escaped zero character
    assert.are.equal("\240\159\152\128", J.decode('"\\ud83d\\ude00"'))
    assert.are.equal("a\0b", J.decode('"a\\u0000b"'))
  end)

  it("raw control characters in strings", function()
    assert.are.equal("ft.json.decode: invalid JSON near position 4 (line 1, column 4): raw control character "
                     .. "0x0A in a string (write it as \\u000A)", decode_error('"ab\ncd"'))
    assert.are.equal("ft.json.decode: invalid JSON near position 9: raw control character 0x01 in a string "
                     .. "(write it as \\u0001)", decode_error('{"k": "x\1"}'))
    assert.are.equal("ab\ncd", J.decode('"ab\\ncd"'))
  end)

  it("invalid UTF-8: stray bytes, overlong forms, encoded surrogates, past U+10FFFF", function()
    for _, case in ipairs({ { '"\255"', 2, "0xFF" }, { '"ok \192\175"', 5, "0xC0" }, { '"\224\128\175"', 2, "0xE0" },
                            { '"\237\160\128"', 2, "0xED" }, { '"\244\144\128\128"', 2, "0xF4" },
                            { '"\195"', 2, "0xC3" }, { '["a", "\128"]', 8, "0x80" } }) do
      assert.are.equal(("ft.json.decode: invalid JSON near position %d: invalid UTF-8 byte %s in a string")
                       :format(case[2], case[3]), decode_error(case[1]))
    end
    assert.are.equal("ol\195\169 \226\130\172 \240\159\152\128", J.decode('"ol\195\169 \226\130\172 \240\159\152\128"'))
  end)

  it("nesting deeper than 1000 levels, with its position", function()
    assert.are.equal("ft.json.decode: invalid JSON near position 1001: nested deeper than 1000 levels",
                     decode_error(("["):rep(1001) .. ("]"):rep(1001)))
    assert.are.equal("ft.json.decode: invalid JSON near position 1006: nested deeper than 1000 levels",
                     decode_error('{"a": ' .. ('{"b": '):rep(0) .. ("["):rep(1001)))
  end)

  it("checks its options", function()
    H.assert_mentions(H.error_of(J.encode, {1}, {indnet = 2}), "ft.json.encode: unknown option 'indnet'",
                      "did you mean 'indent'?")
    H.assert_mentions(H.error_of(J.write, "/tmp/x.json", {1}, {ident = 2}), "ft.json.write: unknown option 'ident'")
    H.assert_mentions(H.error_of(J.decode, "{}", {orderd = true}), "ft.json.decode: unknown option 'orderd'",
                      "did you mean 'ordered'?")
    H.assert_mentions(H.error_of(J.decode, "{}", {ordered = 1}), "option 'ordered' must be a boolean")
  end)

  it("keeps the order of object keys with ordered = true, and encode writes them in it", function()
    local text = '{"type":"function","function":{"name":"f","parameters":{"z":1,"a":[{"y":2,"x":3}]}},"b":true}'
    local t = J.decode(text, {ordered = true})
    assert.are.same({"type", "function", "b"}, getmetatable(t).__keys)
    assert.are.same({"z", "a"}, getmetatable(t["function"].parameters).__keys)
    assert.are.equal(text, J.encode(t))                          -- Python's json.dumps order
    assert.are.equal('{"b":true,"function":{"name":"f","parameters":{"a":[{"x":3,"y":2}],"z":1}},"type":"function"}',
                     J.encode(J.decode(text)))                     -- sorted without it
    -- a repeated key keeps its first place and its last value, as Python's dict
    local d = J.decode('{"b":1,"a":2,"b":3}', {ordered = true})
    assert.are.same({"b", "a"}, getmetatable(d).__keys)
    assert.are.equal(3, d.b)
    -- keys added after decoding follow the listed ones, sorted
    d.d, d.c = 4, 5
    assert.are.equal('{"b":3,"a":2,"c":5,"d":4}', J.encode(d))
  end)
end)

describe("ft.json.encode", function()
  it("writes compact JSON with object keys sorted", function()
    assert.are.equal('{"a":[1,2.5,"x"],"b":{"c":true,"d":false,"e":null},"z":-3}',
                     J.encode({z = -3, b = {e = J.null, d = false, c = true}, a = {1, 2.5, "x"}}))
    assert.are.equal('"text"', J.encode("text"))
    assert.are.equal("null", J.encode(nil))
    assert.are.equal("null", J.encode(J.null))
    assert.are.equal("{}", J.encode({}))
    assert.are.equal("[]", J.encode(J.array()))
    assert.are.equal("[1,2]", J.encode(J.array({1, 2})))
  end)

  it("indents like Python's json.dumps(indent=2)", function()
    local want = table.concat({
      '{',
      '  "architectures": [',
      '    "GPT2LMHeadModel"',
      '  ],',
      '  "empty": {},',
      '  "list": [],',
      '  "n_embd": 96,',
      '  "nested": {',
      '    "eps": 1e-05',
      '  }',
      '}',
    }, "\n")
    local v = {architectures = {"GPT2LMHeadModel"}, n_embd = 96, nested = {eps = 1e-5}, empty = {}, list = J.array()}
    assert.are.equal(want, J.encode(v, {indent = true}))
    assert.are.equal(want, J.encode(v, {indent = 2}))
    assert.are.equal('[\n    1\n]', J.encode({1}, {indent = 4}))
    assert.are.equal('[1]', J.encode({1}, {indent = false}))
  end)

  it("writes floats so that they read back exactly and stay floats", function()
    local cases = {
      {1.0, "1.0"}, {-0.0, "-0.0"}, {0.1, "0.1"}, {1e-05, "1e-05"}, {2.5, "2.5"}, {1e300, "1e+300"},
      {1 / 3, "0.3333333333333333"}, {123456789.123, "123456789.123"}, {2.0 ^ 63, "9.223372036854776e+18"},
      {123456789012345678.0, "1.2345678901234568e+17"}, {1e16, "1e+16"},
    }
    for _, c in ipairs(cases) do
      local text = J.encode(c[1])
      assert.are.equal(c[2], text)
      local back = J.decode(text)
      assert.are.equal("float", math.type(back), text)
      assert.are.equal(c[1], back, text)
    end
    for _, v in ipairs({5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.pi, -math.pi / 7}) do
      assert.are.equal(v, J.decode(J.encode(v)))
    end
    assert.are.equal("9007199254740993", J.encode(9007199254740993))
    assert.are.equal("-9223372036854775808", J.encode(math.mininteger))
  end)

  it("escapes strings as JSON requires and keeps UTF-8 as it is", function()
    assert.are.equal([["q\" b\\ /\b\f\n\r\t\u0001\u001f\u0000 é中😀"]], J.encode("q\" b\\ /\b\f\n\r\t\1\31\0 é中😀"))
  end)

  it("round-trips values through encode and decode", function()
    local v = {
      config = {vocab_size = 50257, eps = 1e-5, dropout = 0.1, name = "gpt2 \"small\"\n", pad = J.null,
                flags = {true, false}, big = math.maxinteger, third = 1 / 3, zero = -0.0},
      ids = {{15496, 11, 995}, {50256}},
      empty_list = J.array(), empty_object = {},
    }
    for _, indent in ipairs({false, true}) do
      local text = J.encode(v, {indent = indent})
      local back = J.decode(text)
      assert.are.same(v, back)
      assert.are.equal("integer", math.type(back.config.big))
      assert.are.equal("float", math.type(back.config.eps))
      assert.are.equal(-1 / 0, 1 / back.config.zero)
      assert.are.equal(text, J.encode(back, {indent = indent}))
    end
    -- A canonical text comes back unchanged, [] and {} included.
    local text = '{"a":[],"b":{},"c":[{"d":null}],"e":[1,2.0,"3"]}'
    assert.are.equal(text, J.encode(J.decode(text)))
  end)

  it("encodes a table reached twice (not a cycle) both times", function()
    local shared = {1, 2}
    assert.are.equal('{"a":[1,2],"b":[1,2]}', J.encode({a = shared, b = shared}))
  end)

  it("refuses what JSON cannot hold, saying where it is", function()
    local function err(v) return H.error_of(J.encode, v) end
    assert.are.equal("ft.json.encode: cannot encode a function at value.a.b[3]", err({a = {b = {1, 2, print}}}))
    local t = {list = {}}
    t.list[1] = t
    assert.are.equal("ft.json.encode: a table contains itself (a cycle cannot be encoded) at value.list[1]", err(t))
    assert.are.equal("ft.json.encode: cannot encode NaN (JSON has no NaN or infinity) at value.x", err({x = 0 / 0}))
    assert.are.equal("ft.json.encode: cannot encode inf (JSON has no NaN or infinity)", err(1 / 0))
    assert.are.equal("ft.json.encode: cannot encode -inf (JSON has no NaN or infinity) at value[\"a b\"]",
                     err({["a b"] = -1 / 0}))
    H.assert_mentions(err({[1] = "a", [3] = "c"}), "ft.json.encode: cannot encode a table with the key ",
                      "object keys must be strings, and arrays have exactly the keys 1..n")
    H.assert_mentions(err({1, 2, name = "x"}), "cannot encode a table with the key ")
    assert.are.equal("ft.json.encode: cannot encode a table with a boolean key: object keys must be strings, "
                     .. "and arrays have exactly the keys 1..n at value.t", err({t = {[true] = 1}}))
    assert.are.equal("ft.json.encode: an array (marked with ft.json.array) has the key name; arrays have the "
                     .. "keys 1..n", err(J.array({name = 1})))
    assert.are.equal("ft.json.encode: a string is not valid UTF-8 (byte 2 is 0xFF) at value[1]", err({"a\xff"}))
    assert.are.equal("ft.json.encode: cannot encode a tensor (convert it with t:totable()) at value.w",
                     err({w = ft.ones(2)}))
    assert.are.equal("ft.json.encode: cannot encode a thread", err(coroutine.create(print)))
    local deep = {}
    local cur = deep
    for _ = 1, 1000 do cur[1] = {} cur = cur[1] end
    H.assert_mentions(err(deep), "ft.json.encode: tables nested more than 1000 levels deep")
    H.assert_mentions(H.error_of(J.encode, {}, {indent = "yes"}), "option 'indent' must be a boolean or a number")
    H.assert_mentions(H.error_of(J.array, setmetatable({}, {})), "ft.json.array: the table already has a metatable")
  end)
end)

describe("ft.json.read / ft.json.write", function()
  local dir
  before_each(function() dir = make_tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("writes indented JSON with a final newline, atomically replacing the file", function()
    local path = dir .. "/config.json"
    J.write(path, {b = 1, a = {"x"}})
    assert.are.equal('{\n  "a": [\n    "x"\n  ],\n  "b": 1\n}\n', read_bytes(path))
    J.write(path, {b = 2}, {indent = false})
    assert.are.equal('{"b":2}\n', read_bytes(path))
    assert.are.same({b = 2}, J.read(path))
    -- A value that cannot be encoded leaves the old file and no temporary file.
    H.assert_mentions(H.error_of(J.write, path, {f = print}), "ft.json.write: cannot encode a function at value.f")
    assert.are.equal('{"b":2}\n', read_bytes(path))
    assert.are.equal("config.json\n", select(2, run("ls " .. quote(dir))))
  end)

  it("reads back HuggingFace's config files and writes them byte for byte", function()
    local files = {"hf_gpt2/config.json", "hf_llama/config.json", "hf_vit/config.json",
                   "peft_lora_gpt2/adapter_config.json"}
    local path = GOLDEN .. "/" .. files[1]
    if not file_exists(path) then pending("fixture " .. path .. " is not there") end
    local config = J.read(path)
    assert.are.equal(96, config.n_embd)
    assert.are.equal("integer", math.type(config.n_embd))
    assert.are.equal(1e-05, config.layer_norm_epsilon)
    assert.are.equal("float", math.type(config.layer_norm_epsilon))
    assert.are.equal(0, config.attn_pdrop)
    assert.are.equal(J.null, config.pad_token_id)
    assert.are.same({"GPT2LMHeadModel"}, config.architectures)
    assert.is_true(config.scale_attn_weights)
    -- Python's json.dumps(indent=2, sort_keys=True) wrote them: the same output here.
    for _, name in ipairs(files) do
      local src = GOLDEN .. "/" .. name
      local text = read_bytes(src)
      local out = dir .. "/out.json"
      J.write(out, J.read(src))
      assert.are.equal(text:gsub("\n?$", "\n"), read_bytes(out), name)
    end
  end)

  it("agrees with Python's json module both ways", function()
    if not has_python() then pending(PYTHON .. " is not installed") end
    local v = {
      ["name é"] = "gpt2 \"small\"\n\t😀", ids = {15496, 11, 995, 9007199254740993}, eps = 1e-05, lr = 0.1,
      big = 1e+300, flags = {true, false, J.null}, nested = {a = {b = {c = J.array()}}, z = {}},
    }
    local path = dir .. "/from_lua.json"
    J.write(path, v, {indent = false})
    local script = dir .. "/check.py"
    write_bytes(script, [==[
import json, sys
lua_text = open(sys.argv[1], encoding="utf-8").read()
value = json.loads(lua_text)
# Python's own compact, sorted, non-ASCII-preserving output of the same value:
assert json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n" == lua_text, lua_text
assert value["ids"][3] == 9007199254740993 and isinstance(value["eps"], float)
# And the other way: ASCII-escaped output with surrogate pairs, as HuggingFace writes.
json.dump(value, open(sys.argv[2], "w"), indent=2, sort_keys=True, ensure_ascii=True)
print("OK")
]==])
    local back = dir .. "/from_python.json"
    local ok, out = run(PYTHON .. " " .. quote(script) .. " " .. quote(path) .. " " .. quote(back))
    assert.is_true(ok, out)
    H.assert_mentions(out, "OK")
    H.assert_mentions(read_bytes(back), [["name \u00e9": "gpt2 \"small\"\n\t\ud83d\ude00"]])
    assert.are.same(v, J.read(back))
  end)

  it("names the file in read errors", function()
    local path = dir .. "/bad.json"
    write_bytes(path, '{\n  "a": 1,\n  "b": }\n')
    assert.are.equal("ft.json.read: '" .. path .. "': invalid JSON near position 20 (line 3, column 8): "
                     .. "unexpected text '}...'", H.error_of(J.read, path))
    assert.are.equal("ft.json.read: cannot open '" .. dir .. "/none.json': No such file or directory",
                     H.error_of(J.read, dir .. "/none.json"))
    write_bytes(path, "")
    assert.are.equal("ft.json.read: '" .. path .. "': invalid JSON near position 1: unexpected end of input",
                     H.error_of(J.read, path))
    assert.are.equal("ft.json.write: cannot write '" .. dir .. "/no/such/x.json': No such file or directory",
                     H.error_of(J.write, dir .. "/no/such/x.json", {}))
  end)
end)
