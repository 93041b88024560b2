// Writes tests/fixtures/pref_data/expected.json: the token ids of the preference records in
// tests/fixtures/pref_data/*.jsonl as TRL's DPOTrainer / KTOTrainer prepare them, for
// tests/spec/pref_data_spec.lua. Tokens come from @huggingface/tokenizers (Qwen3's and the
// Llama-family tokenizer of tests/fixtures/tokenizers) and chat templates from
// @huggingface/jinja; the byte tokenizer is written out here (id = byte + 1, EOT = byte 0).
//
//   cd tests/gen/node && npm ci && cd .. && node pref_data.mjs
//
// The rules, as TRL writes them (trl/trainer/dpo_trainer.py before 0.12, kto_trainer.py):
//   prompt ids  text: tokenizer(prompt) with its special tokens; messages: the chat template on
//               the prompt with add_generation_prompt, tokenized without special tokens
//   completion  tokenizer(prompt + completion) (messages: the template on prompt + completion)
//               after the prompt's r tokens, r = len(prompt ids), or r - 1 when the last prompt
//               token merged with the completion's first (TRL's "response_token_ids_start_idx");
//               a pair uses the smaller r of its two completions; text completions end with eos
//   truncation  completions keep their first max_completion_length tokens; when prompt + the
//               longer completion exceed max_length, the prompt keeps max_prompt_length tokens
//               (default max_length - longer completion) from its end (keep_end, the bos kept in
//               front, as KTOTrainer adds it after cutting) or its start (keep_start); when they
//               still exceed it, completions keep max_length - max_prompt_length tokens.
// Ids are written 0-based (HF's); the byte tokenizer's as byte values. The spec adds 1.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "./node/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs";
import { Template } from "./node/node_modules/@huggingface/jinja/dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const fixtures = path.join(root, "tests/fixtures");
const dataDir = path.join(fixtures, "pref_data");

// ---- tokenizers ---------------------------------------------------------------------------------

function tokenString(v) {
  if (v === null || v === undefined) return null;
  return typeof v === "string" ? v : v.content;
}

function hfTokenizer(name) {
  const dir = path.join(fixtures, "tokenizers", name);
  const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(dir, "tokenizer.json.gz"))).toString("utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(json, config);
  const idOf = (s) => {
    const ids = tok.encode(s, { add_special_tokens: false }).ids;
    if (ids.length !== 1) throw new Error(`${name}: ${s} is not one token`);
    return ids[0];
  };
  const bos = tokenString(config.bos_token), eos = tokenString(config.eos_token);
  return {
    name,
    bos: bos ? idOf(bos) : null,
    eos: eos ? idOf(eos) : null,
    bosToken: bos ?? "",
    eosToken: eos ?? "",
    template: config.chat_template ?? null,
    encode: (s, special) => tok.encode(s, { add_special_tokens: special }).ids,
  };
}

// The byte tokenizer: byte values, EOT (byte 0) first; the byte-level chat template of
// ft.text.format_chat ("<|role|>\n" content "\n", assistant "<|assistant|>\n" content EOT).
const bytes = {
  name: "bytes",
  bos: 0,
  eos: 0,
  encode: (s) => [0, ...Buffer.from(s, "utf8")],
  chat: (messages, generationPrompt) => {
    let s = "";
    for (const m of messages) {
      if (m.role === "assistant") s += "<|assistant|>\n" + m.content + "\0";
      else s += `<|${m.role}|>\n${m.content}\n`;
    }
    if (generationPrompt) s += "<|assistant|>\n";
    return [0, ...Buffer.from(s, "utf8")];
  },
};

const tokenizers = { bytes, qwen3: hfTokenizer("qwen3"), llama2: hfTokenizer("llama2") };

// ---- TRL's rules -----------------------------------------------------------------------------------

function promptIds(tok, prompt, opts) {
  if (typeof prompt === "string") return tok.name === "bytes" ? tok.encode(prompt) : tok.encode(prompt, true);
  if (tok.name === "bytes") return tok.chat(prompt, true);
  return renderIds(tok, prompt, true, opts);
}

function renderIds(tok, messages, generationPrompt, opts) {
  const source = opts.chat_template_file
    ? fs.readFileSync(path.join(fixtures, opts.chat_template_file), "utf8").replace(/\n$/, "")
    : tok.template;
  const text = new Template(source).render({
    messages, add_generation_prompt: generationPrompt, bos_token: tok.bosToken, eos_token: tok.eosToken,
    ...(opts.chat_variables ?? {}),
  });
  return tok.encode(text, false);
}

function fullIds(tok, prompt, completion, opts) {
  if (typeof prompt === "string") {
    const ids = tok.name === "bytes" ? tok.encode(prompt + completion) : tok.encode(prompt + completion, true);
    if (ids[ids.length - 1] !== tok.eos) ids.push(tok.eos);
    return ids;
  }
  if (tok.name === "bytes") return tok.chat([...prompt, ...completion], false);
  return renderIds(tok, [...prompt, ...completion], false, opts);
}

const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

// The start of the completion in full: TRL's len(prompt), less one when the last token merged.
function responseStart(prompt, full) {
  let r = prompt.length;
  if (!same(prompt, full.slice(0, r))) r -= 1;
  if (!same(prompt.slice(0, r), full.slice(0, r))) throw new Error("the prompt is not a prefix");
  return r;
}

function truncate(prompt, completions, opts, bos) {
  let comps = completions.map((c) => (opts.max_completion_length ? c.slice(0, opts.max_completion_length) : c));
  let promptCut = false, completionCut = comps.some((c, i) => c.length < completions[i].length);
  const M = opts.max_length;
  if (M) {
    const L = Math.max(...comps.map((c) => c.length));
    if (prompt.length + L > M) {
      const P = opts.max_prompt_length ?? M - L;
      if (prompt.length > P) {
        if ((opts.truncation_mode ?? "keep_end") === "keep_start") prompt = prompt.slice(0, P);
        else if (bos !== null && prompt[0] === bos) prompt = [bos, ...prompt.slice(prompt.length - (P - 1))];
        else prompt = prompt.slice(prompt.length - P);
        promptCut = true;
      }
      if (prompt.length + L > M) {
        const room = M - P;
        const cut = comps.map((c) => c.slice(0, room));
        if (cut.some((c, i) => c.length < comps[i].length)) completionCut = true;
        comps = cut;
      }
    }
  }
  return { prompt, comps, truncated: promptCut || completionCut };
}

function readRecords(file) {
  const lines = fs.readFileSync(path.join(dataDir, file), "utf8").split("\n");
  const out = [];
  lines.forEach((line, i) => { if (line.trim() !== "") out.push({ line: i + 1, record: JSON.parse(line) }); });
  return out;
}

function prepare(c) {
  const tok = tokenizers[c.tokenizer];
  const keys = c.loader === "pairs" ? ["chosen", "rejected"] : ["completion"];
  return readRecords(c.file).map(({ line, record }) => {
    const prompt = promptIds(tok, record.prompt, c.opts);
    const fulls = keys.map((k) => fullIds(tok, record.prompt, record[k], c.opts));
    const r = Math.min(...fulls.map((f) => responseStart(prompt, f)));
    const t = truncate(fulls[0].slice(0, r), fulls.map((f) => f.slice(r)), c.opts, tok.bos);
    const ex = { line, prompt_ids: t.prompt, truncated: t.truncated };
    keys.forEach((k, i) => { ex[k === "completion" ? "completion_ids" : `${k}_ids`] = t.comps[i]; });
    if (c.loader === "unpaired") ex.label = record.label;
    return ex;
  });
}

// ---- cases ---------------------------------------------------------------------------------------

const cases = [];
const add = (name, tokenizer, loader, file, opts = {}) => cases.push({ name, tokenizer, loader, file, opts });
for (const t of ["bytes", "qwen3"]) {
  add(`${t}/pairs_text`, t, "pairs", "pairs_text.jsonl");
  add(`${t}/pairs_chat`, t, "pairs", "pairs_chat.jsonl");
  add(`${t}/unpaired_text`, t, "unpaired", "unpaired_text.jsonl");
  add(`${t}/unpaired_chat`, t, "unpaired", "unpaired_chat.jsonl");
}
add("llama2/pairs_text", "llama2", "pairs", "pairs_text.jsonl");
add("llama2/pairs_chat_template", "llama2", "pairs", "pairs_chat.jsonl", { chat_template_file: "chat_templates/llama2_chat.jinja" });
add("qwen3/pairs_chat_no_thinking", "qwen3", "pairs", "pairs_chat.jsonl", { chat_variables: { enable_thinking: false } });
// truncation
add("bytes/pairs_text/keep_end", "bytes", "pairs", "pairs_text.jsonl", { max_length: 12, max_prompt_length: 5 });
add("bytes/pairs_text/keep_start", "bytes", "pairs", "pairs_text.jsonl", { max_length: 12, max_prompt_length: 5, truncation_mode: "keep_start" });
add("bytes/pairs_text/room", "bytes", "pairs", "pairs_text.jsonl", { max_length: 16 });
add("bytes/pairs_chat/completion_length", "bytes", "pairs", "pairs_chat.jsonl", { max_completion_length: 6 });
add("qwen3/pairs_chat/keep_end", "qwen3", "pairs", "pairs_chat.jsonl", { max_length: 24, max_prompt_length: 10 });
add("qwen3/pairs_text/room", "qwen3", "pairs", "pairs_text.jsonl", { max_length: 8 });
add("qwen3/unpaired_chat/room", "qwen3", "unpaired", "unpaired_chat.jsonl", { max_length: 20 });
add("llama2/pairs_text/keep_end", "llama2", "pairs", "pairs_text.jsonl", { max_length: 8, max_prompt_length: 4 });
add("llama2/pairs_chat_template/keep_end", "llama2", "pairs", "pairs_chat.jsonl", { chat_template_file: "chat_templates/llama2_chat.jinja", max_length: 20, max_prompt_length: 9 });

for (const c of cases) c.examples = prepare(c);
const out = path.join(dataDir, "expected.json");
fs.writeFileSync(out, JSON.stringify({
  reference: "@huggingface/tokenizers 0.2.0, @huggingface/jinja 0.5.13; TRL's tokenization and truncation rules",
  cases,
}) + "\n");
console.log(`wrote ${path.relative(root, out)}: ${cases.length} cases`);
