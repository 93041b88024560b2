// Writes tests/fixtures/chat_templates/qwen3_ids.json: the token ids (HF's, 0-based) that
// @huggingface/tokenizers gives the Qwen3 renders of expected.json (chat_templates.mjs), as
// transformers tokenizes a rendered chat: without adding special tokens.
//   cd tests/gen/node && node chat_templates.mjs && node chat_ids.mjs
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const fixtures = path.join(root, "tests/fixtures");
const dir = path.join(fixtures, "tokenizers/qwen3");
const tokenizerJson = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(dir, "tokenizer.json.gz"))).toString("utf8"));
const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
const tok = new Tokenizer(tokenizerJson, tokenizerConfig);

const expected = JSON.parse(fs.readFileSync(path.join(fixtures, "chat_templates/expected.json"), "utf8"));
const ids = {};
let n = 0;
for (const c of expected.cases) {
  if (c.template !== "qwen3") continue;
  ids[c.name] = c.expected === "" ? [] : tok.encode(c.expected, { add_special_tokens: false }).ids;
  n++;
}
const out = path.join(fixtures, "chat_templates/qwen3_ids.json");
fs.writeFileSync(out, JSON.stringify({ reference: "@huggingface/tokenizers 0.2.0", ids }) + "\n");
console.log(`wrote ${path.relative(root, out)}: ${n} conversations`);
