-- Times loading and single-thread encoding of HF tokenizers (ft.tokenizer.from_pretrained), the
-- ftlua half of scripts/bench/tokenizer_speed.sh (scripts/bench/tokenizer_speed_node.mjs is node's).
--
--   ftlua scripts/bench/tokenizer_speed.lua --text FILE DIR [DIR ...]
--
-- Each DIR holds tokenizer.json and tokenizer_config.json. The text is cut into documents at the
-- lines that hold only "%" (the fortune format); each non-empty document is encoded on its own,
-- without special tokens. Loading is timed from from_pretrained's call to its return. The first
-- --warmup documents are encoded once untimed.
-- Machine-readable lines: RESULT tokenizer=<name> load_s=<s> encode_s=<s> bytes=<n> docs=<n> tokens=<n>
local ft = require "ft"
local argparse = require "argparse"

local parser = argparse("tokenizer_speed.lua",
  "Time loading and single-thread encoding of HF tokenizers over a text file.")
parser:argument("dirs", "Tokenizer folders (tokenizer.json + tokenizer_config.json)."):args("+"):argname("<dir>")
parser:option("--text", "The text: documents separated by lines that hold only %."):argname("<file>")
parser:option("--warmup", "Documents encoded untimed first.", "200"):argname("<n>"):convert(math.tointeger)
local args = parser:parse()
if not args.text then parser:error("--text FILE is required") end
if not args.warmup or args.warmup < 0 then parser:error("--warmup must be a non-negative integer") end

-- The same cut as the node half: the pieces between "\n%\n", empty ones left out.
local function documents(text)
  local docs, pos = {}, 1
  while true do
    local s, e = text:find("\n%\n", pos, true)
    local doc = text:sub(pos, (s or #text + 1) - 1)
    if #doc > 0 then docs[#docs + 1] = doc end
    if not s then return docs end
    pos = e + 1
  end
end

local f = assert(io.open(args.text, "rb"))
local docs = documents(f:read("a"))
f:close()
local bytes = 0
for _, d in ipairs(docs) do bytes = bytes + #d end

ft.set_num_threads(1)
local opts = { add_special_tokens = false }
for _, dir in ipairs(args.dirs) do
  local name = dir:gsub("/+$", ""):match("[^/]+$")
  local t0 = ft.clock()
  local tok = ft.tokenizer.from_pretrained(dir)
  local load = ft.clock() - t0

  for i = 1, math.min(args.warmup, #docs) do tok:encode(docs[i], opts) end
  local tokens = 0
  local t1 = ft.clock()
  for _, d in ipairs(docs) do tokens = tokens + tok:encode(d, opts):numel() end
  local encode = ft.clock() - t1

  print(("ftlua %s: load %.3f s, %d documents, %.2f MB in %.3f s = %.2f MB/s, %d tokens"):format(name, load,
    #docs, bytes / 1e6, encode, bytes / 1e6 / encode, tokens))
  print(("RESULT tokenizer=%s load_s=%.4f encode_s=%.4f bytes=%d docs=%d tokens=%d"):format(name, load, encode,
    bytes, #docs, tokens))
end
