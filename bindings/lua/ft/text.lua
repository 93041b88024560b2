--- ft.text: text for language models.
--
-- The room: ft.text.corpus (fortunes and other corpora, splits, byte streams for
-- pretraining), ft.text.examples (prompt/completion and chat examples, the chat template,
-- masked labels, padded batches, perplexity), ft.text.tokenizer (also ft.tokenizer: the byte
-- tokenizer and from_pretrained), ft.text.hf_tokenizer (HuggingFace tokenizer.json),
-- ft.text.chat (apply_chat_template, the assistant mask) and ft.text.jinja (the chat-template
-- engine). ft.text gathers the first two; see each file for its examples.
local text = {}
for k, v in pairs(require "ft.text.corpus") do text[k] = v end
for k, v in pairs(require "ft.text.examples") do text[k] = v end

return text
