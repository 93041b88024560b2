-- Writes tests/fixtures/chat/fortunes_chat.jsonl: chat records ({"messages": [...]}, as
-- commercial fine-tuning APIs take them) built from Debian's fortunes: a user asks for a
-- fortune of a category, the assistant answers with a short entry of it; some records have
-- a system message, some a second turn.
--   build/ftlua tests/gen/chat_fortunes.lua
local ft = require "ft"

local corpus = ft.text.fortunes()
local CATEGORIES = { "computers", "science", "education", "politics", "food", "wisdom", "love", "work" }
local ASK = {
  "Tell me a fortune about %s.",
  "Could you share something about %s?",
  "Give me a short %s fortune, please.",
  "What would a fortune cookie say about %s?",
}
local SYSTEM = "You answer with a single fortune from the Unix fortune files."

-- Short single-paragraph entries: easy to read in a test's output.
local function short_entries(name)
  local out = {}
  for _, e in ipairs(corpus[name] or {}) do
    if #e >= 20 and #e <= 220 and not e:find("\t") then out[#out + 1] = e end
  end
  return out
end

local lines, n = {}, 0
for ci, name in ipairs(CATEGORIES) do
  local entries = short_entries(name)
  assert(#entries >= 16, "fortunes category " .. name .. " has too few short entries")
  for k = 1, 8 do
    local e = entries[(k * 7 + ci) % #entries + 1]
    local msgs = {}
    if k % 3 == 0 then msgs[#msgs + 1] = { role = "system", content = SYSTEM } end
    msgs[#msgs + 1] = { role = "user", content = ASK[(k + ci) % #ASK + 1]:format(name) }
    msgs[#msgs + 1] = { role = "assistant", content = e }
    if k % 4 == 0 then
      local e2 = entries[(k * 13 + ci) % #entries + 1]
      msgs[#msgs + 1] = { role = "user", content = "Another one?" }
      msgs[#msgs + 1] = { role = "assistant", content = e2 }
    end
    n = n + 1
    lines[n] = ft.json.encode({ messages = msgs })
  end
end
ft.fs.write("tests/fixtures/chat/fortunes_chat.jsonl", table.concat(lines, "\n") .. "\n")
print(("wrote tests/fixtures/chat/fortunes_chat.jsonl (%d records)"):format(n))
