-- ft.peft.prompt_tuning: soft prompts (Lester et al., 2021), as PEFT's prompt tuning. A few
-- trainable "virtual token" embeddings are put in front of every input sequence; the base
-- model stays frozen and only the prompt trains.
--
--   local name = ft.peft.prompt_tuning(model, {num_virtual_tokens = 20, init = "text",
--                                              init_text = "Classify the fortune:"})
--   local out = model(ids, {labels = labels})     -- ids [B,T]; out.logits [B,T,V]
--   local more = model:generate(ids, {max_new_tokens = 40})
--
-- Options (attach(model, opts); the returned config holds them with defaults filled in):
--   name = "default"
--   num_virtual_tokens = 20
--   init = "random"        N(0, 1) as a fresh nn.Embedding, as PEFT's PromptTuningInit.RANDOM
--          "text"          the token embeddings of init_text (tokenized with opts.tokenizer,
--                          default ft.tokenizer.bytes()), repeated or cut to num_virtual_tokens,
--                          as PEFT's PromptTuningInit.TEXT
--          "sample_vocab"  the embeddings of token ids drawn uniformly from the vocabulary
--   init_text = "..."      (init "text")
--   init_token_ids = {...} the 1-based ids whose embeddings start the prompt; filled in by the
--                          "text" and "sample_vocab" inits, so the config recreates the prompt.
--
-- The prompt is the parameter prompt_encoder.<name>.embedding.weight [num_virtual_tokens, d]
-- on the root model. Each prompt joins the root's forward chain (ft.peft.registry):
--   * input_ids [B,T] (or opts.inputs_embeds) become inputs_embeds = cat(prompt, wte(ids)),
--     [B, n + T, d], run through the model's own forward;
--   * per-token opts.labels ([B,T]) get n leading -100s, so virtual positions never count in
--     the loss; the last virtual position predicts the first real token, as in PEFT. Other
--     labels (a sequence classifier's [B]) are passed on as they are;
--   * opts.attention_mask covers the real tokens only: n ones are put in front of it on every
--     call; opts.position_ids, if given, count real tokens and are shifted by n;
--   * out.logits holds the real tokens' positions only ([B,T,V], aligned with input_ids; unlike
--     PEFT, which returns the virtual positions too; pooled logits such as a classifier's are
--     left as they are); out.past_key_values covers n + T positions.
-- With opts.past_key_values (generation after the first step) nothing is prepended: the cache
-- already holds the prompt. Several prompt-tuning adapters that are active at once are
-- concatenated in the order they were added (each link puts its prompt in front of what the
-- links outside it made, the first added innermost, so it ends up first).
local ft = require "ft"
local A = require "ft.peft.registry"
local nn = ft.nn

local PT = {}

local KIND = "prompt_tuning"
local INITS = { random = true, text = true, sample_vocab = true }
local IGNORE_INDEX = -100   -- F.cross_entropy's and HF's label for "not in the loss"

-- The model's token embedding: get_input_embeddings() when the model defines it, else the
-- layer at GPT-2's or Llama's path.
local function input_embedding(model)
  if type(model.get_input_embeddings) == "function" then return model:get_input_embeddings() end
  for _, path in ipairs({ "transformer.wte", "model.embed_tokens", "wte", "embed_tokens" }) do
    local m = A.module_at(model, path)
    if m and m.weight then return m end
  end
  error(("ft.peft.prompt_tuning: cannot find the token embedding of %s (no get_input_embeddings(), "
    .. "transformer.wte or model.embed_tokens)"):format(model.__name), 3)
end

--- PromptEmbedding: the prompt of one adapter, n virtual-token embeddings of size d.
local PromptEmbedding = nn.Module:extend("PromptEmbedding")
PT.PromptEmbedding = PromptEmbedding

--- PromptEmbedding(n, d): n virtual tokens of size d (an nn.Embedding).
function PromptEmbedding:init(n, d)
  self.embedding = nn.Embedding(n, d)
end

--- The prompt for a batch of B: [B, n, d] (an expanded view: the gradient sums over B).
function PromptEmbedding:forward(B)
  local w = self.embedding.weight
  return w:unsqueeze(1):expand(B, w:size(1), w:size(2))
end

local PromptEncoder = nn.Module:extend("PromptEncoder")   -- holds one PromptEmbedding per adapter

-- The active prompt-tuning adapters' names, in the order they were added.
local function active_prompts(model)
  local reg = A.registry(model)
  local out = {}
  for _, name in ipairs(A.names_of_kind(model, KIND)) do
    if A.is_active(reg, name) then out[#out + 1] = name end
  end
  return out
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

--- PT.forward(model, name, inner, input_ids, opts): adapter name's link in the root model's
-- forward chain: inner (the rest of the chain, the model's own forward last) on the inputs with
-- this prompt in front (see the top of this file), its logits cut back to the real positions.
function PT.forward(self, name, inner, input_ids, opts)
  local prompt = self.prompt_encoder[name]
  opts = opts or {}
  if input_ids and input_ids:dim() == 1 then input_ids = input_ids:reshape(1, -1) end
  local source = input_ids or opts.inputs_embeds
  if source == nil then error("ft.peft.prompt_tuning: input_ids or opts.inputs_embeds is required", 2) end
  if input_ids and opts.inputs_embeds then
    error("ft.peft.prompt_tuning: pass input_ids or opts.inputs_embeds, not both", 2)
  end
  local B, T = source:size(1), source:size(2)
  local n = prompt.embedding.num_embeddings

  local fwd = {}
  for k, v in pairs(opts) do fwd[k] = v end
  local first = opts.past_key_values == nil
  if opts.attention_mask then
    local mask = opts.attention_mask
    fwd.attention_mask = ft.cat({ ft.ones({ mask:size(1), n }, { dtype = mask:dtype() }), mask }, 2)
  end
  if opts.position_ids then
    local pos = opts.position_ids + n
    if first then
      local virtual = ft.arange(1, n + 1)
      if pos:dim() == 2 then virtual = virtual:reshape(1, n):expand(pos:size(1), n) end
      pos = ft.cat({ virtual, pos }, pos:dim())
    end
    fwd.position_ids = pos
  end
  if not first then return inner(input_ids, fwd) end   -- the cache holds the prompt

  local embeds = opts.inputs_embeds or input_embedding(self)(input_ids)
  fwd.inputs_embeds = ft.cat({ prompt(B), embeds }, 2)
  local labels = opts.labels
  if labels and labels:dim() == 1 and B == 1 and labels:size(1) == T then labels = labels:reshape(1, T) end
  if labels and labels:dim() == 2 then   -- per-token labels; others (a classifier's [B]) pass as they are
    if labels:size(1) ~= B or labels:size(2) ~= T then
      error(("ft.peft.prompt_tuning: labels %s do not match the input [%d,%d]"):format(shape_str(labels), B, T), 2)
    end
    fwd.labels = ft.cat({ ft.full({ B, n }, IGNORE_INDEX, { dtype = "int64" }), labels }, 2)
  end
  local out = inner(nil, fwd)
  -- Per-token logits lose the virtual positions; pooled ones (a classifier's [B, labels]) stay.
  if out.logits and out.logits:dim() == 3 and out.logits:size(2) == n + T then
    out.logits = out.logits:narrow(2, n + 1, T)
  end
  return out
end

--- The options of attach (ft.peft.prompt_tuning).
PT.options = { "name", "num_virtual_tokens", "init", "init_text", "init_token_ids", "tokenizer", "token_dim" }

local function check_opts(opts, V)
  local where = "ft.peft.prompt_tuning"
  if type(opts) ~= "table" then error(where .. ": options must be a table, got " .. type(opts), 3) end
  ft.check_options(where, opts, PT.options)
  local n = opts.num_virtual_tokens or 20
  if math.type(n) ~= "integer" then n = math.tointeger(n) end   -- JSON may give 20.0
  if not n or n < 1 then
    error(where .. ": num_virtual_tokens must be a positive integer, got " .. tostring(opts.num_virtual_tokens), 3)
  end
  local init = opts.init or "random"
  if not INITS[init] then
    error(("%s: init must be 'random', 'text' or 'sample_vocab', got '%s'"):format(where, tostring(init)), 3)
  end
  local ids = opts.init_token_ids
  if ids ~= nil then
    if type(ids) ~= "table" or #ids == 0 then error(where .. ": init_token_ids must be a non-empty list of ids", 3) end
    for i, id in ipairs(ids) do
      local k = math.tointeger(id)
      if not k or k < 1 or k > V then
        error(("%s: init_token_ids[%d] = %s is not a token id in 1..%d"):format(where, i, tostring(id), V), 3)
      end
    end
  elseif init == "text" and (type(opts.init_text) ~= "string" or opts.init_text == "") then
    error(where .. ": init = 'text' needs init_text, a non-empty string", 3)
  end
  return n, init
end

-- The n ids whose embeddings start the prompt (PEFT's rule: the text's ids repeated, then cut).
local function init_ids(opts, n, init, V)
  local ids = {}
  if opts.init_token_ids then
    for i, id in ipairs(opts.init_token_ids) do ids[i] = math.tointeger(id) end
  elseif init == "text" then
    local tok = opts.tokenizer or ft.tokenizer.bytes()
    ids = tok:encode(opts.init_text):totable()
  else   -- sample_vocab
    ids = ft.randint(1, V, { n }):totable()
  end
  local out = {}
  for i = 1, n do out[i] = ids[(i - 1) % #ids + 1] end
  return out
end

--- attach(model, opts) -> name. Adds a soft prompt (see the top of this file); freezes the base.
function PT.attach(model, opts)
  opts = opts or {}
  local emb = input_embedding(model)
  local V, d = emb.weight:size(1), emb.weight:size(2)
  local n, init = check_opts(opts, V)
  local name = opts.name or "default"
  if opts.token_dim ~= nil and opts.token_dim ~= d then
    error(("ft.peft.prompt_tuning: token_dim %s does not match the model's embedding size %d"):format(
      tostring(opts.token_dim), d), 2)
  end
  A.check_new_name(model, name, "ft.peft.prompt_tuning")
  local ids = init ~= "random" and init_ids(opts, n, init, V) or nil
  local config = { name = name, num_virtual_tokens = n, init = init, init_text = opts.init_text,
    init_token_ids = ids, token_dim = d }

  local prompt = PromptEmbedding(n, d)
  if ids then
    ft.no_grad(function()
      prompt.embedding.weight:copy_(emb.weight:index_select(1, ft.tensor(ids, { dtype = "int64" })))
    end)
  end
  A.freeze_base(model)
  A.add(model, name, KIND, config, "ft.peft.prompt_tuning")
  if model.prompt_encoder == nil then model.prompt_encoder = PromptEncoder() end
  model.prompt_encoder[name] = prompt
  if not model.training then prompt:eval() end
  prompt.embedding.weight.requires_grad = true
  A.join(model, model, name)
  return name
end

--- The adapter's tensors keyed as in model:state_dict(): {"prompt_encoder.<name>.embedding.weight" = [n, d]}.
function PT.state_dict(model, name)
  local entry = A.get(model, name, "ft.peft.prompt_tuning")
  if entry.kind ~= KIND then
    error(("ft.peft.prompt_tuning: adapter '%s' is a %s adapter, not prompt tuning"):format(name, entry.kind), 2)
  end
  local key = "prompt_encoder." .. name .. ".embedding.weight"
  return { [key] = model.prompt_encoder[name].embedding.weight:detach() }
end

--- Takes the prompt off the model (ft.peft.delete_adapter also forgets its registry entry);
-- with the last one gone the model's forward is its own again.
function PT.remove(model, name)
  local enc = model.prompt_encoder
  if enc == nil or enc._modules[name] == nil then
    error(("ft.peft.prompt_tuning: the model has no prompt-tuning adapter named '%s'"):format(tostring(name)), 2)
  end
  enc[name] = nil
  A.leave(model, name)
  if #enc._module_names == 0 then model.prompt_encoder = nil end
end

-- ---- PEFT's layout --------------------------------------------------------------------------

local PEFT_INIT = { random = "RANDOM", text = "TEXT", sample_vocab = "SAMPLE_VOCAB" }

--- The adapter as PEFT saves it: adapter_config.json's table (a PromptTuningConfig) and
-- adapter_model.safetensors' tensors ({prompt_embeddings = [n, d]}).
function PT.to_peft(model, name)
  local config = A.get(model, name, "ft.peft.prompt_tuning").config
  local mc = model.config or {}
  local peft_config = {
    peft_type = "PROMPT_TUNING", task_type = "CAUSAL_LM", num_virtual_tokens = config.num_virtual_tokens,
    token_dim = config.token_dim, num_transformer_submodules = 1,
    num_attention_heads = mc.n_head or mc.num_attention_heads, num_layers = mc.n_layer or mc.num_hidden_layers,
    prompt_tuning_init = PEFT_INIT[config.init], prompt_tuning_init_text = config.init_text,
    inference_mode = true,
  }
  local key = "prompt_encoder." .. name .. ".embedding.weight"
  return peft_config, { prompt_embeddings = PT.state_dict(model, name)[key] }
end

--- attach() options from a PEFT PromptTuningConfig table (the prompt's values come from the
-- weights, loaded afterwards: load_peft_weights).
function PT.from_peft(peft_config)
  if type(peft_config) ~= "table" or peft_config.peft_type ~= "PROMPT_TUNING" then
    error("ft.peft.prompt_tuning: not a PEFT prompt-tuning config (peft_type must be PROMPT_TUNING)", 2)
  end
  if (peft_config.num_transformer_submodules or 1) ~= 1 then
    error("ft.peft.prompt_tuning: only decoder-only models (num_transformer_submodules = 1) are supported", 2)
  end
  local text = peft_config.prompt_tuning_init_text
  local init = peft_config.prompt_tuning_init == "TEXT" and type(text) == "string" and text ~= "" and "text"
    or "random"
  return { num_virtual_tokens = peft_config.num_virtual_tokens, init = init,
    init_text = init == "text" and text or nil }
end

--- Copies PEFT's tensors ({prompt_embeddings = [n, d]}) into adapter name's prompt.
function PT.load_peft_weights(model, name, tensors)
  local w = model.prompt_encoder and model.prompt_encoder._modules[name] and model.prompt_encoder[name].embedding.weight
  if not w then
    error(("ft.peft.prompt_tuning: the model has no prompt-tuning adapter named '%s'"):format(tostring(name)), 2)
  end
  local src = tensors.prompt_embeddings
  if not ft.is_tensor(src) or shape_str(src) ~= shape_str(w) then
    error(("ft.peft.prompt_tuning: prompt_embeddings is %s, the adapter's prompt is %s"):format(
      ft.is_tensor(src) and shape_str(src) or "missing", shape_str(w)), 2)
  end
  ft.no_grad(function() w:copy_(src) end)
end

--- Number of virtual tokens the active prompts put in front of every input (0 when none).
function PT.num_virtual_tokens(model)
  local n = 0
  for _, name in ipairs(active_prompts(model)) do n = n + model.prompt_encoder[name].embedding.num_embeddings end
  return n
end

return PT
