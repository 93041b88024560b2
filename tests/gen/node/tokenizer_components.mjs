// Writes tests/fixtures/tokenizers/small/components.json.gz: small hand-made tokenizer.json
// files, one per normalizer / pre-tokenizer / model option / post-processor / decoder
// behaviour, with the ids, tokens and decodes of HuggingFace's references.
//
//   cd tests/gen/node && node tokenizer_components.mjs
//
// The reference is @huggingface/tokenizers (JS). A few behaviours it does not implement or
// implements differently from HF's Rust library (Split's MergedWithPrevious / MergedWithNext /
// Contiguous, Metaspace's split, Digits on non-ASCII digits, single_word, the BPE
// continuing_subword_prefix, Lowercase of a final sigma, Strip's whitespace set, ByteFallback
// of invalid bytes, the Metaspace decoder) are taken from the Rust library through its node
// binding, the npm package "tokenizers" (0.23.2): each expected row says which reference it
// comes from, and when the two differ the JS result is kept beside it for the record.
import fs from "fs";
import { createRequire } from "module";
import zlib from "zlib";
import { Tokenizer as JsTokenizer } from "@huggingface/tokenizers";

const require = createRequire(import.meta.url);
let Rust = null;
try {
  Rust = require("tokenizers").Tokenizer;
} catch {
  console.error("note: the npm package 'tokenizers' (HF's Rust library) is not installed; " +
                "cases that need it are left out (npm install tokenizers@0.23.2)");
}

const OUT = new URL("../../fixtures/tokenizers/small/components.json.gz", import.meta.url);

// ---- a small BPE model that makes pre-token boundaries visible --------------------------
// The vocabulary holds every char the texts can become (their normal forms, lowercase, the
// byte-level chars, the metaspace) and every adjacent pair of them; each pair is a merge, so
// the tokens show where pre-tokens start and end (merges never cross them).
const BYTE_CHARS = (() => {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
})();
const byteLevel = (s) => Array.from(new TextEncoder().encode(s), (b) => BYTE_CHARS[b]).join("");

function variants(text) {
  const out = new Set();
  for (const form of ["NFC", "NFD", "NFKC", "NFKD"]) {
    const t = text.normalize(form);
    for (const v of [t, t.toLowerCase(), t.replaceAll(" ", "\u2581"), "\u2581" + t.replaceAll(" ", "\u2581")]) {
      out.add(v);
      out.add(byteLevel(v));
      out.add(byteLevel(" " + v));
    }
  }
  return [...out];
}

function makeModel(texts, extra = {}) {
  const vocab = { "<unk>": 0 };
  const merges = [];
  const seenMerge = new Set();
  const add = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  for (const c of BYTE_CHARS) add(c);
  add("\u2581");
  add(" ");
  for (const text of texts) {
    for (const v of variants(text)) {
      const chars = Array.from(v);
      for (const c of chars) add(c);
      for (let i = 0; i + 1 < chars.length; i++) {
        const a = chars[i], b = chars[i + 1];
        const key = a + "\u0000" + b;
        if (seenMerge.has(key)) continue;
        seenMerge.add(key);
        add(a + b);
        merges.push([a, b]);
      }
    }
  }
  return { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null,
           end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
           vocab, merges, ...extra };
}

function tokenizerJson({ model, normalizer = null, pre_tokenizer = null, post_processor = null, decoder = null,
                         added_tokens = [] }) {
  return { version: "1.0", truncation: null, padding: null, added_tokens, normalizer, pre_tokenizer,
           post_processor, decoder, model };
}

// ---- running the references ---------------------------------------------------------------
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// The token strings of ids: the vocabulary's (an added token's content), as in the corpus
// fixtures (Rust's encodings would show the matched text of an added token instead).
function tokenStrings(json, ids) {
  const byId = new Map();
  for (const [t, id] of Object.entries(json.model.vocab)) byId.set(id, t);
  for (const t of json.added_tokens) byId.set(t.id, t.content);
  return ids.map((id) => byId.get(id));
}

function runJs(json, text, decodeIds) {
  try {
    const t = new JsTokenizer(structuredClone(json), { clean_up_tokenization_spaces: false });
    if (decodeIds) {
      return { decoded: t.decode(decodeIds, { skip_special_tokens: false }),
               decoded_skip: t.decode(decodeIds, { skip_special_tokens: true }) };
    }
    const e = t.encode(text, { add_special_tokens: true });
    const p = t.encode(text, { add_special_tokens: false });
    return { ids: e.ids, ids_plain: p.ids, tokens: tokenStrings(json, p.ids),
             decoded: e.ids.length ? t.decode(e.ids, { skip_special_tokens: false }) : "",
             decoded_skip: e.ids.length ? t.decode(e.ids, { skip_special_tokens: true }) : "" };
  } catch (err) {
    return { error: String(err) };
  }
}

async function runRust(json, text, decodeIds) {
  if (!Rust) return null;
  const t = Rust.fromString(JSON.stringify(json));
  if (decodeIds) {
    return { decoded: await t.decode(decodeIds, false), decoded_skip: await t.decode(decodeIds, true) };
  }
  const e = await t.encode(text, null, { addSpecialTokens: true });
  const p = await t.encode(text, null, { addSpecialTokens: false });
  return { ids: e.getIds(), ids_plain: p.getIds(), tokens: tokenStrings(json, p.getIds()),
           decoded: await t.decode(e.getIds(), false), decoded_skip: await t.decode(e.getIds(), true) };
}

// One expected row: the JS result when Rust agrees (or is absent and JS is trusted), the
// Rust result when the case needs it or the two differ.
async function expect(json, text, rustOnly, decodeIds) {
  const js = rustOnly ? null : runJs(json, text, decodeIds);
  const rust = await runRust(json, text, decodeIds);
  const row = decodeIds ? { ids: decodeIds } : { text };
  if (rust && (!js || js.error || !same(js, rust))) {
    Object.assign(row, rust, { reference: "rust" });
    if (js && !js.error) row.js = js;
    return row;
  }
  if (!js || js.error) return null;   /* needs Rust, which is not installed */
  return Object.assign(row, js, { reference: rust ? "js = rust" : "js" });
}

// ---- the cases ---------------------------------------------------------------------------------
const TEXTS = [
  "Hello world", "  leading and trailing  ", "It's 2024: pay $3.50, now!", "café vs cafe\u0301",
  "ﬁne ½ Ｈｅｌｌｏ ①", "ÅNGSTRÖM Straße İstanbul", "tab\tnew\nline\r\n  end", "a  b   c",
  "snake_case camelCase", "数字١٢٣ and 456", "Ωmega Σίσυφος ΟΔΟΣ", "😀 emoji ok",
];
const Regex = (r) => ({ Regex: r });
const Str = (s) => ({ String: s });
const SPLIT_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BL = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
const BLDEC = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

const cases = [];
function add(name, parts, { texts = TEXTS, rustOnly = false, decode = [] } = {}) {
  cases.push({ name, parts, texts, rustOnly, decode });
}

// Normalizers (ByteLevel pre-tokenizer and decoder around them, so any text round-trips).
for (const t of ["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents"]) {
  add(`normalizer ${t}`, { normalizer: t === "StripAccents" ? { type: "Sequence", normalizers: [{ type: "NFD" }, { type: t }] } : { type: t },
                           pre_tokenizer: BL, decoder: BLDEC });
}
add("normalizer Replace string", { normalizer: { type: "Replace", pattern: Str(" "), content: "\u2581" }, decoder: { type: "Replace", pattern: Str("\u2581"), content: " " } });
add("normalizer Replace regex", { normalizer: { type: "Replace", pattern: Regex("\\s+|[0-9]"), content: "#" }, pre_tokenizer: BL, decoder: BLDEC });
add("normalizer Prepend", { normalizer: { type: "Prepend", prepend: "\u2581" }, pre_tokenizer: BL, decoder: BLDEC });
for (const [l, r] of [[true, false], [false, true], [true, true]]) {
  add(`normalizer Strip left=${l} right=${r}`, { normalizer: { type: "Strip", strip_left: l, strip_right: r }, pre_tokenizer: BL, decoder: BLDEC });
}
add("normalizer Sequence", { normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Lowercase" }, { type: "Replace", pattern: Regex("\\s+"), content: " " }] }, pre_tokenizer: BL, decoder: BLDEC });
add("normalizer BertNormalizer", { normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true }, pre_tokenizer: BL, decoder: BLDEC });

// Split: every behaviour, regex and string patterns, invert.
for (const behavior of ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]) {
  const rustOnly = !["Removed", "Isolated"].includes(behavior);
  for (const invert of [false, true]) {
    add(`Split regex ${behavior} invert=${invert}`, { pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: Regex("\\s+|\\p{P}"), behavior, invert }, BL] }, decoder: BLDEC }, { rustOnly });
  }
  add(`Split string ${behavior}`, { pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: Str(" "), behavior, invert: false }, BL] }, decoder: BLDEC }, { rustOnly });
}
add("Split Qwen pattern + ByteLevel", { normalizer: { type: "NFC" }, pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: Regex(SPLIT_RE), behavior: "Isolated", invert: false }, BL] }, decoder: BLDEC });

// ByteLevel.
for (const use_regex of [true, false]) {
  for (const add_prefix_space of [false, true]) {
    add(`ByteLevel use_regex=${use_regex} add_prefix_space=${add_prefix_space}`, { pre_tokenizer: { type: "ByteLevel", add_prefix_space, trim_offsets: true, use_regex }, decoder: BLDEC });
  }
}

// Metaspace (and its decoder).
for (const prepend_scheme of ["always", "first", "never"]) {
  for (const split of [false, true]) {
    const ms = { type: "Metaspace", replacement: "\u2581", prepend_scheme, split };
    add(`Metaspace prepend_scheme=${prepend_scheme} split=${split}`, { pre_tokenizer: ms, decoder: ms,
        added_tokens: [{ id: 9999, content: "<sep>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }] },
        { rustOnly: true, texts: [...TEXTS, "<sep>after a token", "before<sep> after"] });
  }
}

// Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer, Sequence.
for (const individual_digits of [false, true]) {
  add(`Digits individual_digits=${individual_digits}`, { pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits }, BL] }, decoder: BLDEC });
}
for (const t of ["Whitespace", "WhitespaceSplit", "Punctuation", "BertPreTokenizer"]) {
  add(`pre_tokenizer ${t}`, { pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: t }, BL] }, decoder: BLDEC }, { rustOnly: true });
}

// Model options.
add("BPE byte_fallback", { model: { byte_fallback: true, fuse_unk: true, withBytes: true, only: "ascii" }, normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }, { type: "Replace", pattern: Str(" "), content: "\u2581" }] },
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: Str("\u2581"), content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] } });
add("BPE unk fuse_unk", { model: { fuse_unk: true, only: "ascii" }, pre_tokenizer: { type: "WhitespaceSplit" } }, { rustOnly: true });
add("BPE unk no fuse", { model: { fuse_unk: false, only: "ascii" }, pre_tokenizer: { type: "WhitespaceSplit" } }, { rustOnly: true });
add("BPE ignore_merges", { model: { ignore_merges: true, wholeWords: true }, pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true }, decoder: BLDEC });
add("BPE continuing_subword_prefix", { model: { continuing_subword_prefix: "##" }, pre_tokenizer: { type: "WhitespaceSplit" }, decoder: { type: "WordPiece", prefix: "##", cleanup: false } }, { rustOnly: true, texts: ["Hello world", "It's a test", "snake_case camelCase"] });
add("BPE end_of_word_suffix", { model: { end_of_word_suffix: "</w>" }, pre_tokenizer: { type: "WhitespaceSplit" }, decoder: { type: "BPEDecoder", suffix: "</w>" } }, { rustOnly: true, texts: ["Hello world", "It's a test", "snake_case camelCase"] });

// Added tokens.
const added = (content, o = {}) => ({ content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...o });
add("added tokens special", { pre_tokenizer: BL, decoder: BLDEC, added: [added("<|end|>"), added("<|endoftext|>"), added("<|end")] },
    { texts: ["a<|end|>b", "<|endoftext|>x<|end", "no match <|en", "<|end|><|endoftext|>"] });
add("added tokens lstrip rstrip", { pre_tokenizer: BL, decoder: BLDEC, added: [added("<mask>", { lstrip: true }), added("[R]", { rstrip: true })] },
    { texts: ["a   <mask>   b", "x [R]   y", "  <mask>[R]  z"] });
add("added tokens single_word", { pre_tokenizer: BL, decoder: BLDEC, added: [added("ok", { single_word: true, special: false })] },
    { texts: ["ok fine", "look ok", "book", "ok,ok"], rustOnly: true });
add("added tokens normalized", { normalizer: { type: "Lowercase" }, pre_tokenizer: BL, decoder: BLDEC, added: [added("hello", { normalized: true, special: false }), added("WORLD", { normalized: true, special: false })] },
    { texts: ["HELLO there", "World world WORLD"] });

// Post-processors.
const specials = [added("[CLS]"), added("[SEP]")];
add("TemplateProcessing", { pre_tokenizer: BL, decoder: BLDEC, added: specials, post: (ids) => ({ type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }, { SpecialToken: { id: "[SEP]", type_id: 1 } }],
      special_tokens: { "[CLS]": { id: "[CLS]", ids: [ids["[CLS]"]], tokens: ["[CLS]"] }, "[SEP]": { id: "[SEP]", ids: [ids["[SEP]"]], tokens: ["[SEP]"] } } }) });
add("BertProcessing", { pre_tokenizer: BL, decoder: BLDEC, added: specials, post: (ids) => ({ type: "BertProcessing", sep: ["[SEP]", ids["[SEP]"]], cls: ["[CLS]", ids["[CLS]"]] }) });
add("Sequence of ByteLevel and TemplateProcessing", { pre_tokenizer: BL, decoder: BLDEC, added: specials, post: (ids) => ({ type: "Sequence", processors: [
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      { type: "TemplateProcessing", single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }], pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "[CLS]": { id: "[CLS]", ids: [ids["[CLS]"]], tokens: ["[CLS]"] } } }] }) });

add("RobertaProcessing", { pre_tokenizer: BL, decoder: BLDEC, added: specials, post: (ids) => ({ type: "RobertaProcessing", sep: ["[SEP]", ids["[SEP]"]], cls: ["[CLS]", ids["[CLS]"]], trim_offsets: true, add_prefix_space: false }) });

// The vocabulary-only models (their vocabularies are given whole).
const WP_VOCAB = { "[UNK]": 0, "[CLS]": 1, "[SEP]": 2, hello: 3, world: 4, "##s": 5, it: 6, "'": 7, "##ing": 8, test: 9,
                   "##er": 10, "!": 11, un: 12, "##aff": 13, "##able": 14, ",": 15, ".": 16, a: 17, "##b": 18, "##c": 19 };
add("WordPiece model and decoder", { modelJson: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 12, vocab: WP_VOCAB },
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" }, decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    post: () => ({ type: "BertProcessing", sep: ["[SEP]", 2], cls: ["[CLS]", 1] }) },
    { texts: ["Hello worlds!", "It's testing, tester.", "unaffable abc", "Zebra", "averyveryverylongword", "hello , world ."] });
add("WordLevel model", { modelJson: { type: "WordLevel", unk_token: "[UNK]", vocab: WP_VOCAB }, pre_tokenizer: { type: "WhitespaceSplit" } },
    { texts: ["hello world", "hello there world !", "a b c"], rustOnly: true });

// Decoders on given ids (chosen by token below).
add("decoder ByteFallback invalid bytes", { model: { byte_fallback: true, withBytes: true, only: "ascii" }, decoder: { type: "Sequence", decoders: [{ type: "ByteFallback" }, { type: "Fuse" }] } },
    { texts: [], decode: [["<0xE4>", "<0xBD>", "<0xA0>"], ["<0xE4>", "<0xBD>"], ["a", "<0xFF>", "b"], ["<0x41>", "<0xC3>", "<0xA9>"]], rustOnly: true });
add("decoder ByteLevel invalid bytes", { pre_tokenizer: BL, decoder: BLDEC }, { texts: [], decode: [[BYTE_CHARS[0xE4], BYTE_CHARS[0xBD]], [BYTE_CHARS[0xFF], "a"], [BYTE_CHARS[0xC3] + BYTE_CHARS[0xA9], "b"]] });
add("decoder Strip", { pre_tokenizer: BL, decoder: { type: "Sequence", decoders: [BLDEC, { type: "Strip", content: " ", start: 2, stop: 1 }] } }, { texts: ["  two leading spaces ", " one", "none  "] });
add("decoder Replace regex", { pre_tokenizer: BL, decoder: { type: "Sequence", decoders: [BLDEC, { type: "Replace", pattern: Regex("[aeiou]+"), content: "*" }] } }, { texts: ["Hello world", "queueing"] });

// ---- building and running ---------------------------------------------------------------------
const out = { generator: "tests/gen/node/tokenizer_components.mjs", references: {
  js: "@huggingface/tokenizers 0.2.0", rust: Rust ? "tokenizers (npm, HF's Rust library) 0.23.2" : null }, cases: [] };

for (const c of cases) {
  const { model: modelOpts = {}, modelJson, added: addedList = [], post, ...parts } = c.parts;
  let texts = c.texts.length ? c.texts : ["x"];
  if (modelOpts.only === "ascii") texts = texts.concat(["abc xyz"]);
  // Unknown chars stay unknown in the "ascii" models: their vocab knows ASCII letters only.
  const vocabTexts = modelOpts.only === "ascii" ? ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"] : texts;
  const { only, withBytes, wholeWords, ...bpeOpts } = modelOpts;
  const model = modelJson ? structuredClone(modelJson) : makeModel(vocabTexts, bpeOpts);
  if (only === "ascii") {
    // Keep the ASCII letters, the metaspace and their pairs; drop the byte-level chars.
    const keep = {};
    for (const [tok] of Object.entries(model.vocab)) {
      if (/^[A-Za-z\u2581 ]{1,2}$/u.test(tok) || tok === "<unk>") keep[tok] = Object.keys(keep).length;
    }
    model.vocab = keep;
    model.merges = model.merges.filter(([a, b]) => (a + b) in keep && a in keep && b in keep);
  }
  if (withBytes) {
    for (let b = 0; b < 256; b++) {
      const t = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
      if (!(t in model.vocab)) model.vocab[t] = Object.keys(model.vocab).length;
    }
  }
  if (wholeWords) {
    for (const t of texts) for (const w of t.split(/\s+/)) if (w) {
      const bw = byteLevel(" " + w);
      if (!(bw in model.vocab)) model.vocab[bw] = Object.keys(model.vocab).length;
    }
  }
  if (!modelJson && model.continuing_subword_prefix) {
    // Non-first chars carry the prefix: "##x" tokens and merges of them.
    const prefix = model.continuing_subword_prefix;
    const vocab = { "<unk>": 0 }, merges = [];
    const addv = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
    for (const t of texts) for (const w of t.split(/\s+/)) if (w) {
      const chars = Array.from(w);
      const syms = chars.map((ch, i) => (i ? prefix : "") + ch);
      syms.forEach(addv);
      for (let i = 0; i + 1 < syms.length; i += 2) {
        const a = syms[i], b = syms[i + 1];
        addv(a + b.slice(prefix.length));
        if (!merges.some(([x, y]) => x === a && y === b)) merges.push([a, b]);
      }
    }
    model.vocab = vocab;
    model.merges = merges;
  }
  if (!modelJson && model.end_of_word_suffix) {
    const suffix = model.end_of_word_suffix;
    const vocab = { "<unk>": 0 }, merges = [];
    const addv = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
    for (const t of texts) for (const w of t.split(/\s+/)) if (w) {
      const chars = Array.from(w);
      const syms = chars.map((ch, i) => ch + (i === chars.length - 1 ? suffix : ""));
      syms.forEach(addv);
      for (let i = 0; i + 1 < syms.length; i++) {
        addv(syms[i] + syms[i + 1]);
        if (!merges.some(([x, y]) => x === syms[i] && y === syms[i + 1])) merges.push([syms[i], syms[i + 1]]);
      }
    }
    model.vocab = vocab;
    model.merges = merges;
  }
  for (const toks of c.decode) for (const t of toks) {
    if (!(t in model.vocab) && !addedList.some((a) => a.content === t)) model.vocab[t] = Object.keys(model.vocab).length;
  }
  const ids = {};
  const added_tokens = (parts.added_tokens || []).map((t) => ({ ...t }));
  for (const t of addedList) added_tokens.push({ id: 0, ...t });
  let next = Object.keys(model.vocab).length;
  for (const t of added_tokens) {
    t.id = t.content in model.vocab ? model.vocab[t.content] : next++;
    ids[t.content] = t.id;
  }
  const json = tokenizerJson({ ...parts, model, added_tokens, post_processor: post ? post(ids) : null });
  const expected = [];
  for (const text of c.texts) {
    const row = await expect(json, text, c.rustOnly);
    if (row) expected.push(row);
  }
  for (const toks of c.decode) {
    const row = await expect(json, null, c.rustOnly, toks.map((t) => model.vocab[t] ?? ids[t]));
    if (row) expected.push(row);
  }
  if (!expected.length) {
    console.error(`left out: ${c.name} (needs the Rust reference)`);
    continue;
  }
  out.cases.push({ name: c.name, tokenizer: json, expected });
}

fs.mkdirSync(new URL(".", OUT), { recursive: true });
fs.writeFileSync(OUT, zlib.gzipSync(JSON.stringify(out) + "\n", { level: 9 }));
const rows = out.cases.reduce((n, c) => n + c.expected.length, 0);
const rustRows = out.cases.reduce((n, c) => n + c.expected.filter((e) => e.reference === "rust").length, 0);
console.log(`wrote ${OUT.pathname}: ${out.cases.length} cases, ${rows} rows (${rustRows} from the Rust reference)`);
