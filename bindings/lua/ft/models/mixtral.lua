-- ft.models.mixtral: HuggingFace's MixtralForCausalLM, a Mistral decoder whose MLP is a sparse
-- mixture of experts: same module trees and parameter names, same numerics. Attention, RMSNorm,
-- rotary embeddings, sliding window and the KV cache are ft.models.llama's.
--
-- Two expert layouts, as transformers has written them (config field experts_layout; a
-- checkpoint's tensor names choose it on from_pretrained, and save_pretrained writes the model's):
--   "per_expert" (default)  model.layers.N.block_sparse_moe.gate.weight [E, H] and
--                           block_sparse_moe.experts.E.w1/w3.weight [I, H], w2.weight [H, I]
--                           (Expert modules: Linear layers, which LoRA's target_modules reach)
--   "fused"                 model.layers.N.mlp.gate.weight, mlp.experts.gate_up_proj [E, 2I, H]
--                           (w1 rows, then w3 rows) and mlp.experts.down_proj [E, H, I] (one
--                           Experts module; its grouped GEMMs are F.grouped_linear)
-- model:to_layout(layout) and mixtral.convert_state_dict(sd, layout) convert between them.
-- LoRA on the experts: ft.peft.lora(model, {target = {"w1", "w2", "w3"}}) in the per-expert
-- layout (PEFT's target_modules), ft.peft.lora(model, {target_parameters = {"gate_up_proj",
-- "down_proj"}}) in the fused one (PEFT's target_parameters: a rank-r adapter per expert along
-- dim 0); the router, "gate", stays frozen unless modules_to_save names it.
--
--   local mixtral = require "ft.models.mixtral"
--   local model = mixtral.MixtralForCausalLM(mixtral.config("mixtral-s"))
--   local out = model(ids, {labels = ids, output_router_logits = true})
--   -- out.loss = LM loss + router_aux_loss_coef * out.aux_loss; out.router_logits: one [B*T, E] a layer
--
-- The MoE block of a layer: router logits = gate(h) (no bias); p = softmax(logits) in float32;
-- per token the num_experts_per_tok experts of largest p (ties: the lower index first, as
-- torch.topk), their p renormalised to sum 1; output = sum over them of weight * expert(h), with
-- expert(h) = w2(act(w1 h) * w3 h). Tokens are grouped by expert: each expert runs only on the
-- rows routed to it (index_select), and its weighted output is added back (index_add). No
-- capacity limit, no dropped tokens. The choice of experts is made outside the graph; the
-- routing weights (gathered from p) carry the gradient to the gate.
--
-- Load-balancing loss (Switch Transformer, as transformers' load_balancing_loss_func): over all
-- layers' router logits [L*N, E], p = softmax; tokens_per_expert [k, E] = the share of tokens
-- whose j-th choice is expert e; router_prob_per_expert [E] = the mean of p; aux = E *
-- sum(tokens_per_expert * router_prob_per_expert). With an attention_mask, padded tokens count
-- for neither mean. Computed when config.output_router_logits (or the forward's
-- output_router_logits option) is true; with labels, loss = lm_loss + router_aux_loss_coef * aux.
--
-- Config keys read: Mistral's (ft.models.llama), plus num_local_experts (default 8),
-- num_experts_per_tok (default 2, at most num_local_experts), router_aux_loss_coef (0.001),
-- output_router_logits (false), router_jitter_noise (0.0; in training mode the block's input
-- is multiplied by uniform noise in [1 - j, 1 + j], as transformers does), experts_layout
-- ("per_expert"; ftlua's own, see above). rope_theta defaults to 1e6, as MixtralConfig's.
--
-- Presets (mixtral.config(name, overrides)):
--   "mixtral-s"  byte-level MoE decoder for experiments: vocab 256, 4 layers, hidden 256,
--                intermediate 512, 8 heads (2 key/value heads), 4 experts, top 2, context 256.
--   "moe-s"      GPT-S-sized byte-level MoE decoder (ft.models registers it): vocab 256, 6 layers,
--                hidden 384, 6 heads (2 key/value heads), 4 experts of intermediate 1024, top 2,
--                context 256, aux-loss coefficient 0.01 and router logits on, for from-scratch runs.
local ft = require "ft"
local models = require "ft.models"
local common = require "ft.models.common"
local llama = require "ft.models.llama"
local nn = ft.nn
local F = nn.functional

local M = {}

local PRESETS = {
  ["mixtral-s"] = {
    vocab_size = 256, hidden_size = 256, intermediate_size = 512, num_hidden_layers = 4,
    num_attention_heads = 8, num_key_value_heads = 2, max_position_embeddings = 256,
    rope_theta = 1e6, rms_norm_eps = 1e-5, hidden_act = "silu", attention_dropout = 0.0,
    initializer_range = 0.02, tie_word_embeddings = false, num_local_experts = 4,
    num_experts_per_tok = 2, router_aux_loss_coef = 0.001, output_router_logits = false,
    router_jitter_noise = 0.0,
  },
  ["moe-s"] = {
    vocab_size = 256, hidden_size = 384, intermediate_size = 1024, num_hidden_layers = 6,
    num_attention_heads = 6, num_key_value_heads = 2, max_position_embeddings = 256,
    rope_theta = 1e6, rms_norm_eps = 1e-5, hidden_act = "silu", attention_dropout = 0.0,
    initializer_range = 0.02, tie_word_embeddings = false, num_local_experts = 4,
    num_experts_per_tok = 2, router_aux_loss_coef = 0.01, output_router_logits = true,
    router_jitter_noise = 0.0,
  },
}

-- The keys a Mixtral config may override (what read_config reads, plus HF's metadata).
M.CONFIG_KEYS = models.config_keys({ "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
  "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta",
  "rope_parameters", "rope_scaling", "rms_norm_eps", "hidden_act", "attention_dropout", "initializer_range",
  "tie_word_embeddings", "sliding_window", "layer_types", "use_cache", "num_local_experts", "num_experts_per_tok",
  "router_aux_loss_coef", "output_router_logits", "router_jitter_noise", "experts_layout" })

--- mixtral.config(preset, overrides) -> an HF-style config table for a preset, with overrides
-- applied (unknown keys are errors).
function M.config(name, overrides)
  local preset = PRESETS[name]
  if not preset then error(("mixtral.config: unknown preset '%s'"):format(tostring(name)), 2) end
  common.check_options("mixtral.config", overrides, M.CONFIG_KEYS)
  local config = common.copy_config(preset)
  config.architectures = { "MixtralForCausalLM" }
  config.model_type = "mixtral"
  return common.copy_config(config, overrides)
end

-- ---- routing (outside the graph) ------------------------------------------------------------

--- mixtral.topk(p, k) -> an array (one per row of the float tensor p [N, E]) of the k column
-- indices (1-based) of largest value, the largest first, equal values by the lower index (as
-- torch.topk). Reads p's values; records no graph.
function M.topk(p, k)
  local rows = ft.no_grad(function() return p:detach():float():totable() end)
  local out = {}
  for t, row in ipairs(rows) do
    local chosen = {}
    for j = 1, k do
      local best
      for e = 1, #row do
        local v = row[e]
        if v == v and (best == nil or v > row[best]) then
          local taken = false
          for jj = 1, j - 1 do if chosen[jj] == e then taken = true; break end end
          if not taken then best = e end
        end
      end
      if best == nil then   -- NaN probabilities: the lowest unchosen indices
        for e = 1, #row do
          local taken = false
          for jj = 1, j - 1 do if chosen[jj] == e then taken = true; break end end
          if not taken then best = e; break end
        end
      end
      chosen[j] = best
    end
    out[t] = chosen
  end
  return out
end

local function int64(list) return ft.tensor(list, { dtype = "int64" }) end

-- ---- layers ----------------------------------------------------------------------------------

--- Expert(c): one expert of a MoE block, as HF's MixtralBlockSparseTop2MLP: w2(act(w1 x) * w3 x),
-- w1 and w3 hidden -> intermediate, w2 intermediate -> hidden, no biases.
local Expert = nn.Module:extend("MixtralBlockSparseTop2MLP")
M.Expert = Expert

function Expert:init(c)
  self.w1 = nn.Linear(c.hidden_size, c.intermediate_size, { bias = false })
  self.w2 = nn.Linear(c.intermediate_size, c.hidden_size, { bias = false })
  self.w3 = nn.Linear(c.hidden_size, c.intermediate_size, { bias = false })
  self.gated_act = c.gated_act
end

--- expert(x [..., hidden]) -> [..., hidden] (llama.gated_mlp).
function Expert:forward(x) return llama.gated_mlp(self.gated_act, self.w1, self.w3, self.w2, x) end

--- Experts(c): an MoE block's experts in the fused layout newer transformers writes (its
-- MixtralExperts): gate_up_proj [E, 2I, H] (expert e's w1 rows, then its w3 rows) and down_proj
-- [E, H, I] (its w2), no biases. experts(xs [R, H], sizes) -> [R, H] for rows sorted by expert,
-- the first sizes[1] rows expert 1's ...: two grouped GEMMs (F.grouped_linear), one per
-- expert each, over the stacked weights.
local Experts = nn.Module:extend("MixtralExperts")
M.Experts = Experts

function Experts:init(c)
  local E, H, I = c.num_local_experts, c.hidden_size, c.intermediate_size
  self.num_experts, self.intermediate_size, self.gated_act = E, I, c.gated_act
  self.gate_up_proj = nn.Parameter(ft.empty(E, 2 * I, H))
  self.down_proj = nn.Parameter(ft.empty(E, H, I))
  self:init_weights(c.initializer_range)
end

--- experts:init_weights(std): both weights drawn from normal(0, std), as transformers'
-- _init_weights (a no-op under ft.nn.init.skip).
function Experts:init_weights(std)
  nn.init.normal_(self.gate_up_proj, 0, std)
  nn.init.normal_(self.down_proj, 0, std)
end

function Experts:forward(xs, sizes)
  local I = self.intermediate_size
  local h <close> = F.grouped_linear(xs, self.gate_up_proj, sizes)
  local g <close> = h:narrow(2, 1, I)
  local u <close> = h:narrow(2, I + 1, I)
  local gated <close> = self.gated_act(g, u)
  return F.grouped_linear(gated, self.down_proj, sizes)
end

function Experts:extra_repr()
  return ("experts=%d, intermediate=%d"):format(self.num_experts, self.intermediate_size)
end

--- SparseMoeBlock(c): HF's MixtralSparseMoeBlock: gate (hidden -> num_local_experts, no bias) and
-- experts: a ModuleList of Expert (c.experts_layout "per_expert") or one Experts ("fused");
-- block(x [B,T,C]) -> [B,T,C], router logits [B*T, E].
local SparseMoeBlock = nn.Module:extend("MixtralSparseMoeBlock")
M.SparseMoeBlock = SparseMoeBlock

function SparseMoeBlock:init(c)
  self.num_experts, self.top_k = c.num_local_experts, c.num_experts_per_tok
  self.jitter_noise = c.router_jitter_noise
  self.gate = nn.Linear(c.hidden_size, c.num_local_experts, { bias = false })
  if c.experts_layout == "fused" then
    self.experts = Experts(c)
  else
    self.experts = nn.ModuleList()
    for _ = 1, c.num_local_experts do self.experts:append(Expert(c)) end
  end
end

--- block:route(flat [N,C]) -> router logits [N,E], routing weights [N,k] (p of the chosen
-- experts, renormalised; in the graph), choice (mixtral.topk of p: per token its k experts).
function SparseMoeBlock:route(flat)
  local logits = self.gate(flat)
  local p <close> = logits:softmax(2)
  local choice = M.topk(p, self.top_k)
  local picked <close> = p:gather(2, int64(choice))
  local weights = picked / picked:sum(2, true)
  return logits, weights, choice
end

-- The input of the block as [N, C] rows, with the router jitter of training mode.
local function block_rows(self, x)
  local B, T, C = x:size(1), x:size(2), x:size(3)
  local flat = x:reshape(B * T, C)
  if self.training and self.jitter_noise > 0 then
    local j = self.jitter_noise
    flat = flat * (ft.rand(B * T, C) * (2 * j) + (1 - j))
  end
  return flat
end

--- block:mix(flat [N,C], order, sizes, w [R,1]) -> [N,C]: runs the experts on routed rows and
-- adds them up per token. order (an array of R token indices) lists expert 1's tokens, then
-- expert 2's ...; sizes[e] is how many are expert e's; w holds each routed row's weight. The
-- rows are gathered (index_select), each expert runs on its own rows only, and the weighted
-- outputs go back in one index_add.
function SparseMoeBlock:mix(flat, order, sizes, w)
  local order_t = int64(order)
  local ys
  if self.experts.gate_up_proj then
    local xs <close> = flat:index_select(1, order_t)
    ys = self.experts(xs, sizes)
  else
    local parts, first = {}, 1
    for e, n in ipairs(sizes) do
      if n > 0 then
        local xe <close> = flat:index_select(1, int64(table.move(order, first, first + n - 1, 1, {})))
        parts[#parts + 1] = self.experts[e](xe)
      end
      first = first + n
    end
    ys = ft.cat(parts, 1)
    for _, t in ipairs(parts) do do local done <close> = t end end
  end
  local weighted <close> = ys * w
  do local done <close> = ys end
  return ft.zeros(flat:size(1), flat:size(2)):index_add(1, order_t, weighted)
end

--- block(x [B,T,C]) -> y [B,T,C], router logits [B*T, E]: tokens grouped by expert, each expert
-- run on its own rows only, weighted and added back (block:mix).
function SparseMoeBlock:forward(x)
  local flat = block_rows(self, x)
  local logits, weights, choice = self:route(flat)
  local k = self.top_k
  local rows, slots = {}, {}
  for e = 1, self.num_experts do rows[e], slots[e] = {}, {} end
  for t, chosen in ipairs(choice) do
    for j, e in ipairs(chosen) do
      local r = rows[e]
      r[#r + 1] = t
      slots[e][#r] = (t - 1) * k + j   -- the position of (t, j) in weights:reshape(-1)
    end
  end
  local order, slot, sizes = {}, {}, {}
  for e = 1, self.num_experts do
    sizes[e] = #rows[e]
    table.move(rows[e], 1, #rows[e], #order + 1, order)
    table.move(slots[e], 1, #slots[e], #slot + 1, slot)
  end
  local w <close> = weights:reshape(-1):index_select(1, int64(slot)):unsqueeze(2)
  local out = self:mix(flat, order, sizes, w)
  return out:reshape(x:size(1), x:size(2), x:size(3)), logits
end

--- block:forward_dense(x [B,T,C]) -> y, router logits: the same function computed densely, the
-- reference the grouped path is measured against: every expert runs on every token, weighted
-- by the [N, E] routing matrix (the renormalised top-k probabilities, zero elsewhere).
function SparseMoeBlock:forward_dense(x)
  local flat = block_rows(self, x)
  local N, E = flat:size(1), self.num_experts
  local logits = self.gate(flat)
  local p <close> = logits:softmax(2)
  local mask = {}
  for t, chosen in ipairs(M.topk(p, self.top_k)) do
    local row = {}
    for e = 1, E do row[e] = 0 end
    for _, e in ipairs(chosen) do row[e] = 1 end
    mask[t] = row
  end
  local kept <close> = p * ft.tensor(mask)
  local routing <close> = kept / kept:sum(2, true)
  local order, sizes = {}, {}
  for e = 1, E do
    sizes[e] = N
    for t = 1, N do order[#order + 1] = t end
  end
  local w <close> = routing:transpose(1, 2):contiguous():reshape(E * N, 1)
  local out = self:mix(flat, order, sizes, w)
  return out:reshape(x:size(1), x:size(2), x:size(3)), logits
end

function SparseMoeBlock:extra_repr()
  return ("experts=%d, top_k=%d"):format(self.num_experts, self.top_k)
end

--- DecoderLayer(c, window): HF's MixtralDecoderLayer (self_attn, the MoE block, the two
-- RMSNorms); forward(x, rope, cache, mask) -> x, present, router logits [B*T, E]. The MoE block
-- is block_sparse_moe in the per-expert layout and mlp in the fused one, as transformers names
-- them.
local DecoderLayer = llama.DecoderLayer:extend("MixtralDecoderLayer")
M.DecoderLayer = DecoderLayer

function DecoderLayer:init(c, window)
  self.self_attn = llama.Attention(c, window)
  if c.experts_layout == "fused" then self.mlp = SparseMoeBlock(c) else self.block_sparse_moe = SparseMoeBlock(c) end
  self.input_layernorm = llama.RMSNorm(c.hidden_size, c.rms_norm_eps)
  self.post_attention_layernorm = llama.RMSNorm(c.hidden_size, c.rms_norm_eps)
end

--- layer:feed_forward(h) -> the MoE block's output, its router logits (llama's DecoderLayer
-- forward returns them third).
function DecoderLayer:feed_forward(h) return (self.block_sparse_moe or self.mlp)(h) end

-- ---- the load-balancing loss -------------------------------------------------------------------

--- mixtral.load_balancing_loss(router_logits, num_experts, top_k [, attention_mask]) -> the
-- scalar auxiliary loss of transformers' load_balancing_loss_func: router_logits is an array of
-- [N, E] tensors (one per layer, N = B*T tokens) or one [L*N, E] tensor; attention_mask [B, S]
-- (1 = token, 0 = padding; with S > T only its last T columns, the current tokens, count).
-- Differentiable in the logits (through the mean router probabilities).
function M.load_balancing_loss(router_logits, num_experts, top_k, attention_mask)
  local all = ft.is_tensor(router_logits) and router_logits or ft.cat(router_logits, 1)
  local E = num_experts
  if all:size(2) ~= E then
    error(("mixtral.load_balancing_loss: router logits have %d columns, num_experts is %d"):format(all:size(2), E), 2)
  end
  local p = all:softmax(2)
  local choice = M.topk(p, top_k)
  local N = #choice
  local weight   -- per-token weights (the mask) as a Lua array, or nil for all ones
  local wsum = N
  if attention_mask ~= nil then
    local m = attention_mask
    if not ft.is_tensor(m) or m:dim() ~= 2 then error("mixtral.load_balancing_loss: attention_mask must be a [B, S] tensor", 2) end
    local B, S = m:size(1), m:size(2)
    -- rows of one layer: B*T for T current tokens (an array tells; one tensor is taken as T = S)
    local per_layer = ft.is_tensor(router_logits) and B * S or router_logits[1]:size(1)
    local T = per_layer // B
    if per_layer % B ~= 0 or T > S or N % per_layer ~= 0 then
      error(("mixtral.load_balancing_loss: %d router rows do not match attention_mask [%d,%d]"):format(N, B, S), 2)
    end
    local cur = m:narrow(2, S - T + 1, T):float():reshape(-1):totable()
    weight, wsum = {}, 0
    for l = 0, N // per_layer - 1 do
      for i = 1, per_layer do weight[l * per_layer + i] = cur[i]; wsum = wsum + cur[i] end
    end
    if wsum == 0 then error("mixtral.load_balancing_loss: the attention_mask masks every token", 2) end
  end
  -- tokens_per_expert [k, E]: the (weighted) share of tokens whose j-th choice is e; a constant.
  local tpe = {}
  for j = 1, top_k do
    local row = {}
    for e = 1, E do row[e] = 0 end
    tpe[j] = row
  end
  for t, chosen in ipairs(choice) do
    local w = weight and weight[t] or 1
    for j, e in ipairs(chosen) do tpe[j][e] = tpe[j][e] + w end
  end
  for j = 1, top_k do
    for e = 1, E do tpe[j][e] = tpe[j][e] / wsum end
  end
  local router_prob
  if weight then
    router_prob = (p * ft.tensor(weight):reshape(N, 1)):sum(1) / wsum
  else
    router_prob = p:mean(1)
  end
  return (ft.tensor(tpe) * router_prob:reshape(1, E)):sum() * E
end

-- ---- the model --------------------------------------------------------------------------------

--- MixtralForCausalLM(config): HF's Mixtral language model from an HF config table (config.json
-- decoded, or mixtral.config()); model(ids, opts) -> {logits =, loss =, aux_loss =,
-- router_logits =, past_key_values =}.
local MixtralForCausalLM = llama.MistralForCausalLM:extend("MixtralForCausalLM")
M.MixtralForCausalLM = MixtralForCausalLM
MixtralForCausalLM.hf_architecture = "MixtralForCausalLM"
MixtralForCausalLM.hf_model_type = "mixtral"
MixtralForCausalLM.default_rope_theta = 1e6
MixtralForCausalLM.config_keys = M.CONFIG_KEYS
-- The routers stay float32 when the model is quantised (ft.quant.default_modules).
MixtralForCausalLM.float_modules = { "gate" }

local LAYOUTS = { per_expert = true, fused = true }

-- Reads and checks the config: Mistral's structure, then the MoE fields.
local function read_config(config, class)
  local c = llama.read_config(config, class or MixtralForCausalLM)
  local r = common.config_reader(config, MixtralForCausalLM.hf_architecture)
  c.num_local_experts = r:int("num_local_experts", 8, 1, 1 << 16)
  local k = r:int("num_experts_per_tok", 2, 1, nil)
  if k > c.num_local_experts then
    r:fail("config field 'num_experts_per_tok' (%d) must not exceed num_local_experts (%d)", k, c.num_local_experts)
  end
  c.num_experts_per_tok = k
  c.router_aux_loss_coef = r:num("router_aux_loss_coef", 0.001, 0, math.huge)
  c.output_router_logits = r:bool("output_router_logits", false)
  c.router_jitter_noise = r:num("router_jitter_noise", 0.0, 0, 1)
  c.experts_layout = r:str("experts_layout", "per_expert")
  if not LAYOUTS[c.experts_layout] then
    r:fail("config field 'experts_layout' must be \"per_expert\" or \"fused\", got %q", c.experts_layout)
  end
  c.decoder_layer = DecoderLayer
  return c
end

--- MixtralForCausalLM.read_config(config) -> the checked config (Mistral's checks, plus the
-- expert counts, num_experts_per_tok <= num_local_experts, the aux-loss coefficient, the jitter).
MixtralForCausalLM.read_config = read_config

--- MixtralForCausalLM.tensor_shapes(c) -> name -> shape of a checked config's model (tied copy
-- left out), and the tied names (alias -> target).
function MixtralForCausalLM.tensor_shapes(c)
  local out, tied = llama.LlamaForCausalLM.tensor_shapes(c)
  local H, I, E = c.hidden_size, c.intermediate_size, c.num_local_experts
  for i = 0, c.num_hidden_layers - 1 do
    local p = "model.layers." .. i .. "."
    for _, name in ipairs({ "gate_proj", "up_proj", "down_proj" }) do
      out[p .. "mlp." .. name .. ".weight"], out[p .. "mlp." .. name .. ".bias"] = nil, nil
    end
    if c.experts_layout == "fused" then
      out[p .. "mlp.gate.weight"] = { E, H }
      out[p .. "mlp.experts.gate_up_proj"], out[p .. "mlp.experts.down_proj"] = { E, 2 * I, H }, { E, H, I }
    else
      local q = p .. "block_sparse_moe."
      out[q .. "gate.weight"] = { E, H }
      for e = 0, E - 1 do
        local x = q .. "experts." .. e .. "."
        out[x .. "w1.weight"], out[x .. "w2.weight"], out[x .. "w3.weight"] = { I, H }, { H, I }, { I, H }
      end
    end
  end
  return out, tied
end

--- MixtralForCausalLM.config_for_weights(config, names) -> config: the config whose layout
-- matches a checkpoint's tensor names (a set, name -> anything): "fused" where it has
-- mlp.experts.gate_up_proj tensors, "per_expert" otherwise. ft.models.from_pretrained asks before
-- it builds the model, so either layout loads whatever config.json says.
function MixtralForCausalLM.config_for_weights(config, names)
  local layout = "per_expert"
  for name in pairs(names) do
    if name:find("%.mlp%.experts%.gate_up_proj$") then layout = "fused"; break end
  end
  if (config.experts_layout or "per_expert") == layout then return config end
  return common.copy_config(config, { experts_layout = layout })
end

--- mixtral.convert_state_dict(sd, layout) -> a new state dict with every MoE block's tensors in
-- layout ("per_expert": block_sparse_moe.gate and experts.E.w1/w2/w3; "fused": mlp.gate,
-- mlp.experts.gate_up_proj [E, 2I, H] = each expert's w1 rows then its w3 rows, down_proj
-- [E, H, I]); the other tensors are shared, not copied. Blocks already in layout stay.
function M.convert_state_dict(sd, layout)
  if not LAYOUTS[layout] then
    error(("mixtral.convert_state_dict: layout must be \"per_expert\" or \"fused\", got %s"):format(tostring(layout)), 2)
  end
  local out = {}
  for k, t in pairs(sd) do out[k] = t end
  ft.no_grad(function()
    if layout == "fused" then
      for k in pairs(sd) do
        local p = k:match("^(.*%.)block_sparse_moe%.gate%.weight$")
        if p then
          local q = p .. "block_sparse_moe."
          local gate_up, down = {}, {}
          local e = 0
          while sd[q .. "experts." .. e .. ".w1.weight"] do
            local x = q .. "experts." .. e .. "."
            gate_up[e + 1] = ft.cat({ sd[x .. "w1.weight"], sd[x .. "w3.weight"] }, 1)
            down[e + 1] = sd[x .. "w2.weight"]
            for _, w in ipairs({ "w1", "w2", "w3" }) do out[x .. w .. ".weight"] = nil end
            e = e + 1
          end
          out[q .. "gate.weight"] = nil
          out[p .. "mlp.gate.weight"] = sd[k]
          out[p .. "mlp.experts.gate_up_proj"] = ft.stack(gate_up, 1)
          out[p .. "mlp.experts.down_proj"] = ft.stack(down, 1)
        end
      end
    else
      for k in pairs(sd) do
        local p = k:match("^(.*%.)mlp%.experts%.gate_up_proj$")
        if p then
          local gate_up, down = sd[k], sd[p .. "mlp.experts.down_proj"]
          local I = gate_up:size(2) // 2
          for e = 1, gate_up:size(1) do
            local x = p .. "block_sparse_moe.experts." .. (e - 1) .. "."
            local ge = gate_up:select(1, e)
            out[x .. "w1.weight"] = ge:narrow(1, 1, I):clone()
            out[x .. "w3.weight"] = ge:narrow(1, I + 1, I):clone()
            out[x .. "w2.weight"] = down:select(1, e):clone()
          end
          out[k], out[p .. "mlp.experts.down_proj"], out[p .. "mlp.gate.weight"] = nil, nil, nil
          out[p .. "block_sparse_moe.gate.weight"] = sd[p .. "mlp.gate.weight"]
        end
      end
    end
  end)
  return out
end

--- model:to_layout(layout) -> a new MixtralForCausalLM with the same weights (copied) in the
-- experts layout "per_expert" or "fused", in the same mode (train/eval); its config says the
-- layout, so save_pretrained writes that layout.
function MixtralForCausalLM:to_layout(layout)
  local sd = M.convert_state_dict(self:state_dict(), layout)
  local config = common.copy_config(self.config, { experts_layout = layout })
  local model = nn.init.skip(M.MixtralForCausalLM, config)
  model:load_state_dict(sd)
  if self.training then model:train() else model:eval() end
  return model
end

--- MixtralForCausalLM(config): config is an HF config table (config.json decoded, or mixtral.config()).
function MixtralForCausalLM:init(config)
  local c = llama.LlamaForCausalLM.init(self, config)   -- through read_config above
  self.num_experts, self.top_k = c.num_local_experts, c.num_experts_per_tok
  self.router_aux_loss_coef, self.output_router_logits = c.router_aux_loss_coef, c.output_router_logits
end

--- model(input_ids [B,T] int64 1-based, {labels=, attention_mask=, past_key_values=, use_cache=,
-- position_ids=, inputs_embeds=, skip_logits=, output_router_logits=}) -> {logits = [B,T,V],
-- loss =, aux_loss =, router_logits = (one [B*T, E] per layer), past_key_values =}: llama's
-- forward, and with output_router_logits (default: the config's) router_logits and aux_loss;
-- with labels the loss is then lm_loss + router_aux_loss_coef * aux_loss, as transformers'.
function MixtralForCausalLM:add_outputs(out, router, opts)
  local want = opts.output_router_logits
  if want == nil then want = self.output_router_logits end
  if not want then return end
  out.router_logits = router
  out.aux_loss = M.load_balancing_loss(router, self.num_experts, self.top_k, opts.attention_mask)
  if out.loss then out.loss = out.loss + self.router_aux_loss_coef * out.aux_loss end
end

return M
