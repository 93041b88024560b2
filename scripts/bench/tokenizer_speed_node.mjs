// Times loading and single-thread encoding of HF tokenizers with @huggingface/tokenizers, the
// node half of scripts/bench/tokenizer_speed.sh (scripts/bench/tokenizer_speed.lua is ftlua's).
//
//   node scripts/bench/tokenizer_speed_node.mjs --text FILE DIR [DIR ...]
//
// Each DIR holds tokenizer.json and tokenizer_config.json. The text is cut into documents at the
// lines that hold only "%" (the fortune format); each non-empty document is encoded on its own,
// without special tokens. Loading is timed from reading tokenizer.json to a usable tokenizer.
// The first --warmup documents (default 200) are encoded once untimed.
// The packages are those of tests/gen/node (cd tests/gen/node && npm ci).
// Machine-readable lines: RESULT tokenizer=<name> load_s=<s> encode_s=<s> bytes=<n> docs=<n> tokens=<n>
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function usage() {
  const lines = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n");
  const end = lines.findIndex((l) => !l.startsWith("//"));
  return lines.slice(0, end).map((l) => l.replace(/^\/\/ ?/, "")).join("\n");
}

function fail(msg) {
  console.error(`tokenizer_speed_node.mjs: ${msg}`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { text: null, warmup: 200, dirs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") { console.log(usage()); process.exit(0); }
    else if (a === "--text") args.text = argv[++i];
    else if (a === "--warmup") {
      args.warmup = Number(argv[++i]);
      if (!Number.isInteger(args.warmup) || args.warmup < 0) fail("--warmup expects a non-negative integer");
    } else if (a.startsWith("-")) fail(`unknown option ${a} (see --help)`);
    else args.dirs.push(a);
  }
  if (!args.text) fail("--text FILE is required (see --help)");
  if (args.dirs.length === 0) fail("expected at least one tokenizer folder (see --help)");
  return args;
}

function loadReference() {
  const require = createRequire(path.join(root, "tests/gen/node/package.json"));
  try {
    return require("@huggingface/tokenizers");
  } catch {
    fail("@huggingface/tokenizers is not installed: cd tests/gen/node && npm ci");
  }
}

const args = parseArgs(process.argv.slice(2));
const { Tokenizer } = loadReference();
const docs = fs.readFileSync(args.text, "utf8").split("\n%\n").filter((d) => d.length > 0);
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);
const opts = { add_special_tokens: false };

for (const dir of args.dirs) {
  const name = path.basename(path.resolve(dir));
  const t0 = performance.now();
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(json, config);
  const load = (performance.now() - t0) / 1000;

  for (const d of docs.slice(0, args.warmup)) tok.encode(d, opts);
  let tokens = 0;
  const t1 = performance.now();
  for (const d of docs) tokens += tok.encode(d, opts).ids.length;
  const encode = (performance.now() - t1) / 1000;

  console.log(`node ${name}: load ${load.toFixed(3)} s, ${docs.length} documents, ${(bytes / 1e6).toFixed(2)} MB ` +
    `in ${encode.toFixed(3)} s = ${(bytes / 1e6 / encode).toFixed(2)} MB/s, ${tokens} tokens`);
  console.log(`RESULT tokenizer=${name} load_s=${load.toFixed(4)} encode_s=${encode.toFixed(4)} bytes=${bytes} ` +
    `docs=${docs.length} tokens=${tokens}`);
}
