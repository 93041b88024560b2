-- ft.models.mixtral against a PyTorch re-implementation of transformers' MixtralForCausalLM
-- (tests/gen/mixtral.py writes tests/fixtures/mixtral/): logits, LM loss, load-balancing loss,
-- router logits and every parameter gradient; the grouped expert path against a dense one; a
-- one-expert Mixtral against the Llama golden data; KV-cache generation; config errors.
local ft = require "ft"
local H = require "helpers"

local models = ft.models
local mixtral = require "ft.models.mixtral"

local DIR = H.fixture("mixtral")
local LLAMA = H.fixture("golden") .. "/hf_llama"

local function max_abs_diff(a, b)
  return ft.no_grad(function() return (a - b):abs():max():item() end)
end

-- 0-based ids / labels (-100 = ignored) from a fixture as the 1-based API's.
local function ids1(t) return t + 1 end
local function labels1(t)
  local rows = t:totable()
  for _, row in ipairs(rows) do
    for i, v in ipairs(row) do row[i] = v == -100 and -100 or v + 1 end
  end
  return ft.tensor(rows, { dtype = "int64" })
end

local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
  return path
end

local function rmdir(path) os.execute("rm -rf '" .. path .. "'") end

-- The reference gradient of every parameter of a model, as "<name>.grad" -> tensor of a grads file.
local function check_grads(model, ids, labels, grads_path)
  local grads = ft.safetensors.load(grads_path)
  model:train()
  model:zero_grad()
  model(ids, { labels = labels }).loss:backward()
  model:eval()
  local checked, total = 0, 0
  for _ in pairs(grads) do total = total + 1 end
  for name, p in model:named_parameters() do
    local g = grads[name .. ".grad"]
    assert.is_not_nil(g, "no reference gradient for " .. name)
    assert.is_not_nil(p.grad, "no gradient for " .. name)
    local scale = H.max_abs(g)
    local err = max_abs_diff(p.grad, g)
    assert(err <= 1e-3 * scale, ("%s: gradient max abs error %g, reference scale %g"):format(name, err, scale))
    checked = checked + 1
  end
  assert.equal(total, checked)
  model:zero_grad()
end

-- Asserts that two name -> tensor tables hold the same names and bit-equal tensors.
local function assert_same_tensors(actual, expected)
  for k, t in pairs(expected) do
    assert.is_not_nil(actual[k], "missing " .. k)
    assert.equal(0, max_abs_diff(actual[k], t), k)
  end
  for k in pairs(actual) do assert.is_not_nil(expected[k], "unexpected " .. k) end
end

describe("MixtralForCausalLM (PyTorch reference)", function()
  local model = models.from_pretrained(DIR)
  local ref = ft.safetensors.load(DIR .. "/reference.safetensors")
  local ids, labels = ids1(ref.input_ids), labels1(ref.labels)

  it("is registered and loads with transformers' per-expert names", function()
    assert.equal("ft.models.mixtral", models.architectures.MixtralForCausalLM.module)
    assert.equal("MixtralForCausalLM", models.model_types.mixtral)
    assert.equal("MixtralForCausalLM", model.hf_architecture)
    assert.is_false(model.training)
    local sd = model:state_dict()
    assert_same_tensors(sd, ft.safetensors.load(DIR .. "/model.safetensors"))
    assert.is_not_nil(sd["model.layers.1.block_sparse_moe.experts.3.w2.weight"])
    assert.is_not_nil(sd["model.layers.0.block_sparse_moe.gate.weight"])
  end)

  it("computes the reference logits, router logits, losses and aux loss", function()
    local out = ft.no_grad(function() return model(ids, { labels = labels }) end)
    assert.same({ 2, 12, 64 }, out.logits:shape())
    local d = max_abs_diff(out.logits, ref.logits)
    assert(d <= 1e-4, ("logits max abs error %g"):format(d))
    assert.equal(2, #out.router_logits)
    for i, r in ipairs(out.router_logits) do
      assert.same({ 24, 4 }, r:shape())
      d = max_abs_diff(r, ref["router_logits." .. (i - 1)])
      assert(d <= 1e-4, ("router logits %d max abs error %g"):format(i, d))
    end
    d = math.abs(out.aux_loss:item() - ref.aux_loss:item())
    assert(d <= 1e-5, ("aux loss %.8g, reference %.8g"):format(out.aux_loss:item(), ref.aux_loss:item()))
    d = math.abs(out.loss:item() - ref.loss:item())
    assert(d <= 1e-5, ("loss %.8g, reference %.8g"):format(out.loss:item(), ref.loss:item()))
    -- output_router_logits = false: the LM loss alone, no router outputs
    local lm = ft.no_grad(function() return model(ids, { labels = labels, output_router_logits = false }) end)
    assert.is_nil(lm.aux_loss)
    assert.is_nil(lm.router_logits)
    d = math.abs(lm.loss:item() - ref.lm_loss:item())
    assert(d <= 1e-5, ("lm loss %.8g, reference %.8g"):format(lm.loss:item(), ref.lm_loss:item()))
  end)

  it("computes every parameter gradient of loss = lm_loss + coef * aux_loss", function()
    check_grads(model, ids, labels, DIR .. "/grads.safetensors")
  end)

  it("computes the load-balancing loss under an attention mask as transformers", function()
    local logits = { ref["router_logits.0"], ref["router_logits.1"] }
    local aux = mixtral.load_balancing_loss(logits, 4, 2, ref.attention_mask)
    local d = math.abs(aux:item() - ref.aux_loss_masked:item())
    assert(d <= 1e-5, ("masked aux loss %.8g, reference %.8g"):format(aux:item(), ref.aux_loss_masked:item()))
    local plain = mixtral.load_balancing_loss(ft.cat(logits, 1), 4, 2)
    assert(math.abs(plain:item() - ref.aux_loss:item()) <= 1e-5)
  end)

  it("runs each expert on its own tokens only, as a dense pass over every expert weighs them", function()
    local block = model.model.layers[1].block_sparse_moe
    ft.manual_seed(7)
    local x = ft.randn(3, 7, 32)
    x.requires_grad = true
    -- counts the rows each expert runs on
    local rows = {}
    for e = 1, 4 do
      local expert = block.experts[e]
      local base = expert.forward
      rawset(expert, "forward", function(self, h)
        rows[e] = (rows[e] or 0) + h:size(1)
        return base(self, h)
      end)
    end
    local y, logits = block(x)
    for e = 1, 4 do rawset(block.experts[e], "forward", nil) end
    local sum = 0
    for e = 1, 4 do sum = sum + (rows[e] or 0) end
    assert.equal(21 * 2, sum)   -- top-2 of 21 tokens, no expert on every token
    -- the dense reference: every expert on every token, weighted by the renormalised top-k mask
    local flat = x:reshape(21, 32)
    local p = logits:softmax(2)
    local choice = mixtral.topk(p, 2)
    local mask = {}
    for t, chosen in ipairs(choice) do
      mask[t] = { 0, 0, 0, 0 }
      for _, e in ipairs(chosen) do mask[t][e] = 1 end
    end
    local w = p * ft.tensor(mask)
    w = w / w:sum(2, true)
    local dense = ft.zeros(21, 32)
    for e = 1, 4 do dense = dense + block.experts[e](flat) * w:narrow(2, e, 1) end
    local d = max_abs_diff(y:reshape(21, 32), dense)
    assert(d <= 1e-5, ("grouped vs dense max abs error %g"):format(d))
    local g = ft.randn(21, 32)
    y:reshape(21, 32):mul(g):sum():backward()
    local gx_grouped = x.grad:clone()
    x.grad = nil
    block:zero_grad()
    local _, logits2 = block(x)   -- a fresh graph for the dense path's routing weights
    local p2 = logits2:softmax(2)
    local w2 = p2 * ft.tensor(mask)
    w2 = w2 / w2:sum(2, true)
    local dense2 = ft.zeros(21, 32)
    for e = 1, 4 do dense2 = dense2 + block.experts[e](flat) * w2:narrow(2, e, 1) end
    x.grad = nil
    dense2:mul(g):sum():backward()
    d = max_abs_diff(gx_grouped, x.grad)
    assert(d <= 1e-5, ("grouped vs dense input gradient max abs error %g"):format(d))
    block:zero_grad()
  end)

  it("chooses experts as torch.topk: larger first, equal values by the lower index", function()
    local p = ft.tensor({ { 0.1, 0.4, 0.1, 0.4 }, { 0.25, 0.25, 0.25, 0.25 }, { 0.7, 0.1, 0.15, 0.05 } })
    assert.same({ { 2, 4 }, { 1, 2 }, { 1, 3 } }, mixtral.topk(p, 2))
    assert.same({ { 2, 4, 1 }, { 1, 2, 3 }, { 1, 3, 2 } }, mixtral.topk(p, 3))
  end)

  it("generates greedily with the KV cache as repeated full forwards do", function()
    local prompt = ids:narrow(1, 1, 1):narrow(2, 1, 5)
    local n = 8
    local got = model:generate(prompt, { max_new_tokens = n })
    assert.same({ 1, 5 + n }, got:shape())
    local seq = prompt
    ft.no_grad(function()
      for _ = 1, n do
        local logits = model(seq).logits
        local next_id = logits:select(2, seq:size(2)):argmax(2):reshape(1, 1)
        seq = ft.cat({ seq, next_id }, 2)
      end
    end)
    H.assert_equal_ints(got, seq, "generated ids")
  end)

  it("gives the same logits with the cache as without", function()
    ft.no_grad(function()
      local full = model(ids).logits
      local first = model(ids:narrow(2, 1, 7), { use_cache = true })
      local rest = model(ids:narrow(2, 8, 5), { past_key_values = first.past_key_values })
      assert(max_abs_diff(rest.logits, full:narrow(2, 8, 5)) <= 1e-4, "a cached block of 5")
    end)
  end)

  it("round-trips through save_pretrained", function()
    local dir = tmpdir()
    models.save_pretrained(model, dir)
    local again = models.from_pretrained(dir)
    rmdir(dir)
    local a = ft.no_grad(function() return model(ids).logits end)
    local b = ft.no_grad(function() return again(ids).logits end)
    assert.equal(0, max_abs_diff(a, b))
    assert.equal("mixtral", again.hf_model_type)
  end)
end)

describe("one-expert top-1 Mixtral", function()
  it("reproduces the Llama golden logits and loss", function()
    local config = ft.json.read(LLAMA .. "/config.json")
    config.architectures = { "MixtralForCausalLM" }
    config.model_type = "mixtral"
    config.num_local_experts, config.num_experts_per_tok = 1, 1
    config.output_router_logits = false
    local sd = {}
    for k, t in pairs(ft.safetensors.load(LLAMA .. "/model.safetensors")) do
      k = k:gsub("mlp%.gate_proj", "block_sparse_moe.experts.0.w1"):gsub("mlp%.up_proj", "block_sparse_moe.experts.0.w3")
        :gsub("mlp%.down_proj", "block_sparse_moe.experts.0.w2")
      sd[k] = t
    end
    for i = 0, config.num_hidden_layers - 1 do
      sd["model.layers." .. i .. ".block_sparse_moe.gate.weight"] = ft.full({ 1, config.hidden_size }, 0.3)
    end
    local dir = tmpdir()
    ft.safetensors.save(dir .. "/model.safetensors", sd)
    ft.json.write(dir .. "/config.json", config)
    local model = models.from_pretrained(dir)
    rmdir(dir)
    local ref = ft.safetensors.load(LLAMA .. "/reference.safetensors")
    ft.no_grad(function()
      local d = max_abs_diff(model(ref.input_ids + 1).logits, ref.logits)
      assert(d <= 1e-4, ("logits max abs error %g"):format(d))
      local ids2 = ref.input_ids2 + 1
      local out = model(ids2, { labels = ids2 })
      d = max_abs_diff(out.logits, ref.logits2)
      assert(d <= 1e-4, ("logits2 max abs error %g"):format(d))
      assert(math.abs(out.loss:item() - ref.loss2:item()) <= 1e-5, "loss2")
      -- one expert, top 1: every token's one expert has weight 1, so aux = 1 * 1 * 1
      local with = model(ids2, { output_router_logits = true })
      assert(math.abs(with.aux_loss:item() - 1) <= 1e-6)
    end)
  end)
end)

describe("Mixtral configs", function()
  local function base(overrides) return mixtral.config("mixtral-s", overrides) end

  it("builds the mixtral-s preset's config through the registry", function()
    local m = models.new(mixtral.config("mixtral-s"), { num_hidden_layers = 1, hidden_size = 32, intermediate_size = 16 })
    assert.equal("MixtralForCausalLM", m.hf_architecture)
    local ids = ft.tensor({ { 5, 6, 7 } }, { dtype = "int64" })
    local out = m(ids, { labels = ids })
    assert.is_nil(out.aux_loss)   -- the preset's output_router_logits is false
    assert.same({ 1, 3, 256 }, out.logits:shape())
  end)

  it("rejects num_experts_per_tok > num_local_experts, naming the field", function()
    local ok, err = pcall(models.new, base({ num_local_experts = 2, num_experts_per_tok = 3 }))
    assert.is_false(ok)
    assert.matches("num_experts_per_tok", err)
    assert.matches("num_local_experts", err)
  end)

  it("rejects a router_jitter_noise outside [0, 1], naming the field", function()
    for _, v in ipairs({ -0.1, 1.5, "x" }) do
      local ok, err = pcall(models.new, base({ router_jitter_noise = v }))
      assert.is_false(ok)
      assert.matches("router_jitter_noise", err)
    end
  end)

  it("applies router jitter in training mode only", function()
    ft.manual_seed(3)
    local m = models.new(base({ num_hidden_layers = 1, hidden_size = 32, intermediate_size = 16,
      router_jitter_noise = 0.5 }))
    local ids = ft.tensor({ { 5, 6, 7, 8 } }, { dtype = "int64" })
    m:eval()
    local a = ft.no_grad(function() return m(ids).logits end)
    local b = ft.no_grad(function() return m(ids).logits end)
    assert.equal(0, max_abs_diff(a, b))
    m:train()
    local c = ft.no_grad(function() return m(ids).logits end)
    assert(max_abs_diff(a, c) > 0, "jitter changed nothing in training mode")
  end)

  it("rejects a checkpoint in the dense Llama layout with the missing expert names", function()
    local dir = tmpdir()
    local config = ft.json.read(LLAMA .. "/config.json")
    config.architectures = { "MixtralForCausalLM" }
    config.model_type = "mixtral"
    ft.json.write(dir .. "/config.json", config)
    os.execute(("cp '%s/model.safetensors' '%s/'"):format(LLAMA, dir))
    local ok, err = pcall(models.from_pretrained, dir)
    rmdir(dir)
    assert.is_false(ok)
    assert.matches("block_sparse_moe", err)
  end)
end)

describe("MixtralForCausalLM in the fused experts layout (PyTorch reference)", function()
  local FUSED = DIR .. "/fused"
  local model = models.from_pretrained(FUSED)   -- its config.json does not name the layout
  local ref = ft.safetensors.load(DIR .. "/reference.safetensors")
  local ids, labels = ids1(ref.input_ids), labels1(ref.labels)

  it("loads transformers' fused names: mlp.gate, mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I]", function()
    assert.is_nil(ft.json.read(FUSED .. "/config.json").experts_layout)
    assert.equal("fused", model.config.experts_layout)
    local sd = model:state_dict()
    assert_same_tensors(sd, ft.safetensors.load(FUSED .. "/model.safetensors"))
    assert.same({ 4, 96, 32 }, sd["model.layers.1.mlp.experts.gate_up_proj"]:shape())
    assert.same({ 4, 32, 48 }, sd["model.layers.1.mlp.experts.down_proj"]:shape())
    assert.is_nil(sd["model.layers.0.block_sparse_moe.gate.weight"])
  end)

  it("computes the reference logits, router logits, losses and aux loss", function()
    local out = ft.no_grad(function() return model(ids, { labels = labels }) end)
    local d = max_abs_diff(out.logits, ref.logits)
    assert(d <= 1e-4, ("logits max abs error %g"):format(d))
    for i, r in ipairs(out.router_logits) do
      d = max_abs_diff(r, ref["router_logits." .. (i - 1)])
      assert(d <= 1e-4, ("router logits %d max abs error %g"):format(i, d))
    end
    assert(math.abs(out.aux_loss:item() - ref.aux_loss:item()) <= 1e-5, "aux loss")
    assert(math.abs(out.loss:item() - ref.loss:item()) <= 1e-5, "loss")
  end)

  it("computes every parameter gradient (the fused tensors' from PyTorch's forward over them)", function()
    check_grads(model, ids, labels, FUSED .. "/grads.safetensors")
  end)

  it("converts between the layouts exactly (to_layout, convert_state_dict)", function()
    local per_expert = models.from_pretrained(DIR)
    local fused = per_expert:to_layout("fused")
    assert_same_tensors(fused:state_dict(), ft.safetensors.load(FUSED .. "/model.safetensors"))
    local original = ft.safetensors.load(DIR .. "/model.safetensors")
    assert_same_tensors(model:to_layout("per_expert"):state_dict(), original)
    local ok, err = pcall(mixtral.convert_state_dict, original, "stacked")
    assert.is_false(ok)
    assert.matches("layout must be", err)
  end)

  it("round-trips through save_pretrained in its own layout", function()
    local dir = tmpdir()
    models.save_pretrained(model, dir)
    local names = ft.safetensors.load(dir .. "/model.safetensors")
    assert.is_not_nil(names["model.layers.0.mlp.experts.gate_up_proj"])
    assert.is_nil(names["model.layers.0.block_sparse_moe.experts.0.w1.weight"])
    local again = models.from_pretrained(dir)
    rmdir(dir)
    local a = ft.no_grad(function() return model(ids).logits end)
    local b = ft.no_grad(function() return again(ids).logits end)
    assert.equal(0, max_abs_diff(a, b))
  end)

  it("runs the grouped experts as the dense reference computes them, in both layouts, gradients included", function()
    for _, m in ipairs({ model, model:to_layout("per_expert") }) do
      local layer = m.model.layers[2]
      local block = layer.mlp or layer.block_sparse_moe
      ft.manual_seed(11)
      local x = ft.randn(3, 7, 32)
      local g = ft.randn(3, 7, 32)
      local function grads_of(forward)
        block:zero_grad()
        local xx = x:clone()
        xx.requires_grad = true
        local y = forward(block, xx)
        y:mul(g):sum():backward()
        local out = { x = xx.grad:clone(), y = y:detach() }
        for name, p in block:named_parameters() do out[name] = p.grad:clone() end
        return out
      end
      local grouped = grads_of(block.forward)
      local dense = grads_of(block.forward_dense)
      local n = 0
      for name, t in pairs(dense) do
        local d = max_abs_diff(grouped[name], t)
        assert(d <= 1e-5 * math.max(1, H.max_abs(t)), ("%s: grouped vs dense max abs error %g"):format(name, d))
        n = n + 1
      end
      assert(n >= 4)
      block:zero_grad()
    end
  end)

  it("generates with the KV cache the tokens the per-expert model generates", function()
    local prompt = ids:narrow(2, 1, 5)
    local a = model:generate(prompt, { max_new_tokens = 6 })
    local b = models.from_pretrained(DIR):generate(prompt, { max_new_tokens = 6 })
    assert.same(b:totable(), a:totable())
    assert.same({ 2, 11 }, a:shape())
  end)

  it("rejects an unknown experts_layout, naming the field", function()
    local ok, err = pcall(models.new, mixtral.config("mixtral-s", { experts_layout = "stacked" }))
    assert.is_false(ok)
    assert.matches("experts_layout", err)
  end)
end)

describe("LoRA on Mixtral's experts", function()
  local peft = ft.peft
  local LORA = DIR .. "/lora"
  local ref = ft.safetensors.load(DIR .. "/reference.safetensors")
  local lora_ref = ft.safetensors.load(LORA .. "/reference.safetensors")
  local ids, labels = ids1(ref.input_ids), labels1(ref.labels)
  local TARGETS = { "q_proj", "v_proj", "w1", "w2", "w3" }

  local function logits(model) return ft.no_grad(function() return model(ids).logits end) end

  it("is a no-op when fresh, adapts every expert's w1/w2/w3 and keeps the router frozen", function()
    local model = models.from_pretrained(DIR)
    local base = logits(model)
    peft.freeze(model)
    peft.lora(model, { target = TARGETS, r = 4, alpha = 8 })
    assert.equal(0, max_abs_diff(logits(model), base))
    local trainable = {}
    for _, e in ipairs(peft.trainable_parameters(model)) do trainable[e[1]] = true end
    assert.is_true(trainable["model.layers.1.block_sparse_moe.experts.3.w2.lora_B.default.weight"])
    assert.is_true(trainable["model.layers.0.self_attn.v_proj.lora_A.default.weight"])
    for name in pairs(trainable) do assert.is_nil(name:find("gate", 1, true), name .. " trains") end
  end)

  it("trains the router on request (modules_to_save = {\"gate\"})", function()
    local model = models.from_pretrained(DIR)
    peft.freeze(model)
    peft.lora(model, { target = TARGETS, r = 4, alpha = 8, modules_to_save = { "gate" } })
    local sd = peft.adapter_state_dict(model, "default")
    assert.is_not_nil(sd["model.layers.0.block_sparse_moe.gate.weight"])
    assert.is_true(model.model.layers[1].block_sparse_moe.gate.weight.requires_grad)
    assert.is_false(model.model.layers[1].self_attn.q_proj.weight.requires_grad)
  end)

  it("loads a PEFT adapter folder and computes the reference's adapted logits and loss", function()
    local model = models.from_pretrained(DIR)
    peft.load(model, LORA)
    local out = ft.no_grad(function() return model(ids, { labels = labels }) end)
    local d = max_abs_diff(out.logits, lora_ref.logits)
    assert(d <= 1e-4, ("adapted logits max abs error %g"):format(d))
    assert(math.abs(out.loss:item() - lora_ref.loss:item()) <= 1e-5, "adapted loss")
  end)

  -- The merged and the unmerged model are held to PEFT's adapted logits with the tolerance the
  -- adapter itself meets above. Merged and adapter logits are two float32 roundings of the same
  -- function: each lies 5e-6 to 8e-6 from PyTorch's on these logits of up to 4, so their
  -- distance from each other reaches 1.1e-5 on some BLAS kernels. The adapter moves the logits
  -- by about 6, so a wrong or missing merge stands far outside the bound.
  it("merges into the experts and unmerges back", function()
    local model = models.from_pretrained(DIR)
    local w1 = function() return model.model.layers[2].block_sparse_moe.experts[3].w1.weight end
    local w0 = w1():clone()
    peft.load(model, LORA)
    peft.merge(model)
    assert(max_abs_diff(w1(), w0) > 1e-3, "the merge left w1 as it was")
    local d = max_abs_diff(logits(model), lora_ref.logits)
    assert(d <= 1e-4, ("merged logits max abs error %g"):format(d))
    peft.unmerge(model)
    H.assert_close(w1(), w0, 1e-6, "w1 after unmerge")
    d = max_abs_diff(logits(model), lora_ref.logits)
    assert(d <= 1e-4, ("unmerged logits max abs error %g"):format(d))
  end)

  it("writes the PEFT folder back with PEFT's keys and values", function()
    local model = models.from_pretrained(DIR)
    peft.load(model, LORA)
    local dir = tmpdir()
    peft.save(model, dir, { format = "peft" })
    local mine = ft.safetensors.load(dir .. "/adapter_model.safetensors")
    assert_same_tensors(mine, ft.safetensors.load(LORA .. "/adapter_model.safetensors"))
    local config = ft.json.read(dir .. "/adapter_config.json")
    table.sort(config.target_modules)
    assert.same({ "q_proj", "v_proj", "w1", "w2", "w3" }, config.target_modules)
    local again = models.from_pretrained(DIR)
    peft.load(again, dir)
    rmdir(dir)
    assert.equal(0, max_abs_diff(logits(again), logits(model)))
  end)
end)

describe("a quantised Mixtral", function()
  it("quantises the experts and attention, keeps the routers float32, and trains LoRA over it", function()
    local model = models.from_pretrained(DIR, { quantize = "nf4" })
    local block = model.model.layers[1].block_sparse_moe
    assert.equal("Linear", block.gate.__name)
    assert.equal("float32", block.gate.weight:dtype())
    local paths = {}
    for _, p in ipairs(ft.quant.default_modules(models.from_pretrained(DIR))) do paths[p] = true end
    assert.is_true(paths["model.layers.0.block_sparse_moe.experts.2.w3"])
    assert.is_true(paths["model.layers.0.self_attn.q_proj"])
    assert.is_nil(paths["model.layers.0.block_sparse_moe.gate"])
    local ref = ft.safetensors.load(DIR .. "/reference.safetensors")
    ft.peft.lora(model, { target = { "w1", "w2", "w3" }, r = 2 })
    local out = model(ids1(ref.input_ids), { labels = labels1(ref.labels) })
    out.loss:backward()
    assert.is_not_nil(block.experts[1].w1.lora_A.default.weight.grad)
  end)
end)

describe("LoRA on the fused experts (target_parameters, PEFT's ParamWrapper)", function()
  local peft = ft.peft
  local FUSED = DIR .. "/fused"
  local PLORA = FUSED .. "/lora"
  local ref = ft.safetensors.load(DIR .. "/reference.safetensors")
  local plora_ref = ft.safetensors.load(PLORA .. "/reference.safetensors")
  local ids, labels = ids1(ref.input_ids), labels1(ref.labels)
  local function logits(model) return ft.no_grad(function() return model(ids).logits end) end

  it("loads a PEFT target_parameters folder and computes the reference's adapted logits and loss", function()
    local model = models.from_pretrained(FUSED)
    peft.load(model, PLORA)
    local experts = model.model.layers[1].mlp.experts
    assert.same({ 16, 32 }, experts.lora_A.default.gate_up_proj.weight:shape())   -- [r*E, H]
    assert.same({ 96, 16 }, experts.lora_B.default.gate_up_proj.weight:shape())   -- [2I, r*E]
    local out = ft.no_grad(function() return model(ids, { labels = labels }) end)
    local d = max_abs_diff(out.logits, plora_ref.logits)
    assert(d <= 1e-4, ("adapted logits max abs error %g"):format(d))
    assert(math.abs(out.loss:item() - plora_ref.loss:item()) <= 1e-5, "adapted loss")
  end)

  it("is a no-op when fresh and trains only its A and B (the router and the experts frozen)", function()
    local model = models.from_pretrained(FUSED)
    local base = logits(model)
    peft.lora(model, { target_parameters = { "gate_up_proj", "down_proj" }, r = 2 })
    assert.equal(0, max_abs_diff(logits(model), base))
    local names = {}
    for _, e in ipairs(peft.trainable_parameters(model)) do names[#names + 1] = e[1] end
    table.sort(names)
    assert.equal(8, #names)   -- A and B of two parameters in two layers
    for _, n in ipairs(names) do assert.matches("%.mlp%.experts%.lora_[AB]%.default%.", n) end
  end)

  it("gives A and B the gradients of finite differences", function()
    local model = models.from_pretrained(FUSED)
    peft.load(model, PLORA)
    local B = model.model.layers[2].mlp.experts.lora_B.default.down_proj.weight
    local A = model.model.layers[1].mlp.experts.lora_A.default.gate_up_proj.weight
    local function loss() return model(ids, { labels = labels }).loss end
    model:zero_grad()
    loss():backward()
    for _, case in ipairs({ { B, 5, 3 }, { B, 20, 11 }, { A, 7, 30 } }) do
      local t, i, j = case[1], case[2], case[3]
      local g = t.grad[i][j]:item()
      local v = t[i][j]:item()
      local eps = 1e-2
      local function at(x)
        ft.no_grad(function() t[i][j] = x end)
        return ft.no_grad(function() return loss():item() end)
      end
      local fd = (at(v + eps) - at(v - eps)) / (2 * eps)
      at(v)
      assert(math.abs(fd - g) <= 2e-3 + 2e-2 * math.abs(fd), ("d loss/d [%d,%d]: %g, finite differences %g"):format(i, j, g, fd))
    end
  end)

  it("merges into the 3-D weights and unmerges back", function()
    local model = models.from_pretrained(FUSED)
    local w0 = model.model.layers[1].mlp.experts.gate_up_proj:clone()
    peft.load(model, PLORA)
    peft.merge(model)
    local d = max_abs_diff(logits(model), plora_ref.logits)
    assert(d <= 1e-4, ("merged logits max abs error %g"):format(d))
    assert(max_abs_diff(model.model.layers[1].mlp.experts.gate_up_proj, w0) > 0, "the merge changed nothing")
    peft.unmerge(model)
    H.assert_close(model.model.layers[1].mlp.experts.gate_up_proj, w0, 1e-6, "gate_up_proj after unmerge")
    d = max_abs_diff(logits(model), plora_ref.logits)
    assert(d <= 1e-4, ("unmerged logits max abs error %g"):format(d))
  end)

  it("writes the PEFT folder back with PEFT's nested keys, and it loads again", function()
    local model = models.from_pretrained(FUSED)
    peft.load(model, PLORA)
    local dir = tmpdir()
    peft.save(model, dir, { format = "peft" })
    local mine = ft.safetensors.load(dir .. "/adapter_model.safetensors")
    assert_same_tensors(mine, ft.safetensors.load(PLORA .. "/adapter_model.safetensors"))
    assert.is_not_nil(mine["base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight"])
    local config = ft.json.read(dir .. "/adapter_config.json")
    assert.same({ "mlp.experts.gate_up_proj", "mlp.experts.down_proj" }, config.target_parameters)
    local again = models.from_pretrained(FUSED)
    peft.load(again, dir)
    rmdir(dir)
    assert.equal(0, max_abs_diff(logits(again), logits(model)))
  end)

  it("rejects 2-D parameters, unmatched names, dropout and DoRA, naming them", function()
    local model = models.from_pretrained(FUSED)
    local cases = {
      { { target_parameters = { "mlp.gate.weight" } }, "2%-D" },
      { { target_parameters = { "w9_proj" } }, "w9_proj" },
      { { target_parameters = { "down_proj" }, dropout = 0.1 }, "dropout" },
      { { target_parameters = { "down_proj" }, dora = true }, "dora" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(peft.lora, model, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err)
    end
    assert.same({}, peft.adapters(model))
    -- a second adapter on the same module must target the same parameters, as in PEFT
    peft.lora(model, { target_parameters = { "down_proj" }, r = 2 })
    local ok, err = pcall(peft.lora, model, { target_parameters = { "gate_up_proj", "down_proj" }, name = "other" })
    assert.is_false(ok)
    assert.matches("same parameters", err)
    assert.same({ "default" }, peft.adapters(model))
  end)
end)
