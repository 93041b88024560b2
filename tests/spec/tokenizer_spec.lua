-- ft.tokenizer.bytes: byte b <-> id b + 1, batches with padding.
local ft = require "ft"
local H = require "helpers"

describe("ft.tokenizer.bytes", function()
  local tok = ft.tokenizer.bytes()

  it("is reachable as ft.tokenizer and as a module", function()
    assert.equal(require("ft.text.tokenizer"), ft.tokenizer)
    assert.equal(256, tok.vocab_size)
  end)

  it("maps byte b to id b + 1", function()
    local ids = tok:encode("hello")
    assert.equal("int64", ids:dtype())
    assert.same({ 105, 102, 109, 109, 112 }, ids:totable())
    assert.same({ 1, 256 }, tok:encode("\0\255"):totable())
  end)

  it("round-trips every byte, UTF-8 text and long strings", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    local s = table.concat(all)
    assert.equal(s, tok:decode(tok:encode(s)))
    local utf8_text = "h\u{e9}llo \u{2713} \u{1F600}"
    assert.equal(#utf8_text, tok:encode(utf8_text):numel())
    assert.equal(utf8_text, tok:decode(tok:encode(utf8_text)))
    local long = string.rep("abcdefghij", 2000)
    assert.equal(long, tok:decode(tok:encode(long)))
  end)

  it("encodes the empty string as an empty tensor", function()
    local ids = tok:encode("")
    assert.same({ 0 }, ids:shape())
    assert.equal("", tok:decode(ids))
  end)

  it("decodes Lua arrays too and rejects ids outside 1..256", function()
    assert.equal("AB", tok:decode({ 66, 67 }))
    H.assert_mentions(H.error_of(tok.decode, tok, { 66, 0 }), "0", "position 2", "1..256")
    H.assert_mentions(H.error_of(tok.decode, tok, ft.tensor({ 257 }, { dtype = "int64" })), "257")
    H.assert_mentions(H.error_of(tok.decode, tok, ft.ones({ 2, 2 }, { dtype = "int64" })), "[2,2]", "decode_batch")
    H.assert_mentions(H.error_of(tok.encode, tok, 42), "string")
  end)

  it("pads batches on the right or the left with an attention mask", function()
    local b = tok:encode_batch({ "ab", "abcd" })
    assert.same({ { 98, 99, 1, 1 }, { 98, 99, 100, 101 } }, b.input_ids:totable())
    assert.same({ { 1, 1, 0, 0 }, { 1, 1, 1, 1 } }, b.attention_mask:totable())
    local left = tok:encode_batch({ "ab", "abcd" }, { padding_side = "left", pad_id = 33 })
    assert.same({ { 33, 33, 98, 99 }, { 98, 99, 100, 101 } }, left.input_ids:totable())
    assert.same({ { 0, 0, 1, 1 }, { 1, 1, 1, 1 } }, left.attention_mask:totable())
    assert.same({ "ab", "abcd" }, tok:decode_batch(left.input_ids, { attention_mask = left.attention_mask }))
    H.assert_mentions(H.error_of(tok.encode_batch, tok, { "a" }, { padding_side = "middle" }), "middle")
  end)
end)
