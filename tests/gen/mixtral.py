#!/usr/bin/python3
"""Reference values for ft.models.mixtral: a plain PyTorch re-implementation of transformers'
MixtralForCausalLM forward (RMSNorm, rotary embeddings with rotate_half, grouped-query causal
attention, the sparse MoE block, the Switch-Transformer load-balancing loss), checked first
against the Llama golden data, then run on a small random Mixtral.

Run with Debian's python3-torch (transformers is not needed):

    /usr/bin/python3 tests/gen/mixtral.py      # writes tests/fixtures/mixtral/

The check: a Mixtral with num_local_experts = 1 and num_experts_per_tok = 1 is a Llama (its one
expert's w1/w3/w2 are gate_proj/up_proj/down_proj; the softmax of one logit is 1). Loaded with
tests/fixtures/golden/hf_llama's weights it must reproduce that folder's logits, logits2 and
loss2 (which transformers computed) within 1e-4, else the script stops.

Writes tests/fixtures/mixtral/:

    config.json            the random Mixtral's HF config (MixtralForCausalLM)
    model.safetensors      its float32 weights under transformers' per-expert names
    reference.safetensors  input_ids (0-based int64 [2,12]), labels (0-based, -100 ignored),
                           logits [2,12,V], lm_loss, aux_loss, loss (= lm_loss + coef * aux_loss),
                           router_logits.<layer> [B*T, E] (0-based layer), attention_mask
                           (int64 [2,12], padding on the left of row 2) and aux_loss_masked (the
                           load-balancing loss of the same router logits under that mask)
    grads.safetensors      "<parameter>.grad": d loss / d parameter for every parameter
    fused/                 the same model in the fused layout of newer transformers (config.json,
                           model.safetensors with mlp.gate.weight, mlp.experts.gate_up_proj
                           [E, 2I, H] = w1 rows then w3 rows, mlp.experts.down_proj [E, H, I];
                           grads.safetensors from a forward over those tensors, whose logits the
                           script checks equal the per-expert forward's)
    lora/                  a PEFT LoRA adapter folder (r 4, alpha 8, random A and B) on q_proj,
                           v_proj and every expert's w1/w2/w3, and reference.safetensors: logits
                           and loss of the model with W + (alpha / r) B A in each adapted layer
    fused/lora/            a PEFT adapter with target_parameters (PEFT's ParamWrapper) on the fused
                           gate_up_proj / down_proj, plus q_proj / v_proj, under PEFT's nested
                           names (mlp.experts.base_layer.lora_A.weight is gate_up_proj's), and the
                           adapted logits and loss (delta[e] = scale * B_e A_e as PEFT's einsum)

The reference runs in float64 on the float32 weights; values are stored as float32. The random
model's router is drawn with a larger spread than the other weights, and the script checks that
no token's k-th and (k+1)-th router probabilities are within 2e-3 of each other, so the choice of
experts is the same in any float32 implementation.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "mixtral")
LLAMA = os.path.join(ROOT, "fixtures", "golden", "hf_llama")

DTYPES = {"F32": (np.float32, torch.float32), "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32)}


def load(path):
    """The tensors of a safetensors file (F32 / I32 / I64) as torch tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        np_dtype = DTYPES[info["dtype"]][0]
        arr = np.frombuffer(raw[base + a:base + b], dtype=np_dtype).reshape(info["shape"]).copy()
        out[name] = torch.from_numpy(arr)
    return out


def save(path, tensors, metadata=None):
    """A safetensors file of float32 / int64 tensors (name -> torch tensor), written atomically."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype == torch.float64:
            t = t.float()
        code = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    os.replace(tmp, path)


# ---- the re-implementation ---------------------------------------------------------------------

def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope(T, D, theta, dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    freqs = torch.arange(T).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention(p, pre, h, c, cos, sin, pad):
    B, T, _ = h.shape
    H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    q = (h @ p[pre + "q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
    k = (h @ p[pre + "k_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
    v = (h @ p[pre + "v_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(2, 3) / math.sqrt(D)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if pad is not None:
        allowed = allowed[None, None] & pad.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = F.softmax(scores, dim=-1) @ v
    return y.transpose(1, 2).reshape(B, T, H * D) @ p[pre + "o_proj.weight"].T


def topk(probs, k):
    """torch.topk's choice: the largest first (sorted), returned as (values, indices)."""
    return torch.topk(probs, k, dim=-1)


def moe_block(p, pre, h, c):
    """transformers' MixtralSparseMoeBlock: -> output [B,T,C], router logits [B*T, E]."""
    B, T, C = h.shape
    E, k = c["num_local_experts"], c["num_experts_per_tok"]
    flat = h.reshape(-1, C)
    logits = flat @ p[pre + "gate.weight"].T
    probs = F.softmax(logits, dim=1)
    weights, chosen = topk(probs, k)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(flat)
    mask = F.one_hot(chosen, num_classes=E).permute(2, 1, 0)   # [E, k, N]
    fused = pre + "experts.gate_up_proj" in p
    for e in range(E):
        slot, rows = torch.where(mask[e])
        if rows.numel() == 0:
            continue
        x = flat[rows]
        if fused:   # transformers 5's MixtralExperts: one [2I, H] matrix, chunked into gate and up
            gate, up = F.linear(x, p[pre + "experts.gate_up_proj"][e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, p[pre + "experts.down_proj"][e])
        else:
            w1, w2, w3 = (p[pre + "experts.%d.%s.weight" % (e, n)] for n in ("w1", "w2", "w3"))
            y = (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T
        out = out.index_add(0, rows, y * weights[rows, slot, None])
    return out.reshape(B, T, C), logits


def load_balancing_loss(router_logits, E, k, mask=None):
    """transformers' load_balancing_loss_func."""
    logits = torch.cat(list(router_logits), dim=0)
    probs = F.softmax(logits, dim=-1)
    _, chosen = torch.topk(probs, k, dim=-1)
    expert_mask = F.one_hot(chosen, E).to(probs.dtype)   # [N, k, E]
    if mask is None:
        tokens_per_expert = expert_mask.mean(dim=0)
        router_prob = probs.mean(dim=0)
    else:
        B, S = mask.shape
        L = logits.shape[0] // (B * S)
        m = mask.to(probs.dtype)
        em = m[None, :, :, None, None].expand(L, B, S, k, E).reshape(-1, k, E)
        tokens_per_expert = (expert_mask * em).sum(dim=0) / em.sum(dim=0)
        rm = m[None, :, :, None].expand(L, B, S, E).reshape(-1, E)
        router_prob = (probs * rm).sum(dim=0) / rm.sum(dim=0)
    return (tokens_per_expert * router_prob[None, :]).sum() * E


def forward(p, c, ids, labels=None):
    """-> logits, lm_loss (or None), aux_loss (or None), router logits per layer."""
    x = p["model.embed_tokens.weight"][ids]
    B, T = ids.shape
    cos, sin = rope(T, c["head_dim"], c["rope_theta"], x.dtype)
    routers = []
    for i in range(c["num_hidden_layers"]):
        pre = "model.layers.%d." % i
        h = rms_norm(x, p[pre + "input_layernorm.weight"], c["rms_norm_eps"])
        x = x + attention(p, pre + "self_attn.", h, c, cos, sin, None)
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], c["rms_norm_eps"])
        block = pre + ("mlp." if pre + "mlp.gate.weight" in p else "block_sparse_moe.")
        m, r = moe_block(p, block, h, c)
        routers.append(r)
        x = x + m
    x = rms_norm(x, p["model.norm.weight"], c["rms_norm_eps"])
    logits = x @ p["lm_head.weight"].T
    lm_loss = None
    if labels is not None:
        lm_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                  ignore_index=-100)
    aux = None
    if c.get("output_router_logits"):
        aux = load_balancing_loss(routers, c["num_local_experts"], c["num_experts_per_tok"])
    return logits, lm_loss, aux, routers


def structure(config):
    c = dict(config)
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    if "rope_theta" not in c:
        c["rope_theta"] = c["rope_parameters"]["rope_theta"]
    return c


# ---- the check against the Llama golden data ---------------------------------------------------

def check_llama():
    with open(os.path.join(LLAMA, "config.json")) as f:
        config = json.load(f)
    c = structure(config)
    c.update(num_local_experts=1, num_experts_per_tok=1, output_router_logits=False)
    w = load(os.path.join(LLAMA, "model.safetensors"))
    ref = load(os.path.join(LLAMA, "reference.safetensors"))
    p = {}
    for name, t in w.items():
        t = t.double()
        for old, new in (("mlp.gate_proj", "block_sparse_moe.experts.0.w1"), ("mlp.up_proj", "block_sparse_moe.experts.0.w3"),
                         ("mlp.down_proj", "block_sparse_moe.experts.0.w2")):
            name = name.replace(old, new)
        p[name] = t
    for i in range(c["num_hidden_layers"]):
        p["model.layers.%d.block_sparse_moe.gate.weight" % i] = torch.full((1, c["hidden_size"]), 0.3, dtype=torch.float64)
    logits, _, _, _ = forward(p, c, ref["input_ids"].long())
    d1 = (logits - ref["logits"].double()).abs().max().item()
    ids2 = ref["input_ids2"].long()
    logits2, loss2, _, _ = forward(p, c, ids2, ids2)
    d2 = (logits2 - ref["logits2"].double()).abs().max().item()
    d3 = abs(loss2.item() - ref["loss2"].item())
    print("one-expert Mixtral vs Llama golden: logits %.3g, logits2 %.3g, loss2 %.3g" % (d1, d2, d3))
    assert d1 < 1e-4 and d2 < 1e-4 and d3 < 1e-5, "the re-implementation does not reproduce the Llama golden data"


# ---- the random Mixtral ------------------------------------------------------------------------

CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
    "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_dropout": 0.0,
    "initializer_range": 0.02, "tie_word_embeddings": False, "sliding_window": None,
    "num_local_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02,
    "output_router_logits": True, "router_jitter_noise": 0.0, "use_cache": True,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "torch_dtype": "float32",
}


def random_params(c, gen):
    H, I, E, V = c["hidden_size"], c["intermediate_size"], c["num_local_experts"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]

    def normal(*shape, std):
        return (torch.randn(*shape, generator=gen) * std).float()

    p = {"model.embed_tokens.weight": normal(V, H, std=1.0), "lm_head.weight": normal(V, H, std=0.2),
         "model.norm.weight": 1 + normal(H, std=0.1)}
    for i in range(c["num_hidden_layers"]):
        pre = "model.layers.%d." % i
        p[pre + "input_layernorm.weight"] = 1 + normal(H, std=0.1)
        p[pre + "post_attention_layernorm.weight"] = 1 + normal(H, std=0.1)
        for name, o, n in (("q_proj", q, H), ("k_proj", kv, H), ("v_proj", kv, H), ("o_proj", H, q)):
            p[pre + "self_attn." + name + ".weight"] = normal(o, n, std=0.2)
        p[pre + "block_sparse_moe.gate.weight"] = normal(E, H, std=0.5)
        for e in range(E):
            x = pre + "block_sparse_moe.experts.%d." % e
            p[x + "w1.weight"] = normal(I, H, std=0.2)
            p[x + "w3.weight"] = normal(I, H, std=0.2)
            p[x + "w2.weight"] = normal(H, I, std=0.2)
    return p


def min_margin(routers, k):
    worst = 1.0
    for r in routers:
        probs, _ = torch.sort(F.softmax(r.detach(), dim=-1), dim=-1, descending=True)
        worst = min(worst, (probs[:, k - 1] - probs[:, k]).min().item())
    return worst


def fused_layout(weights, c):
    """The per-expert weights in the fused layout newer transformers writes: mlp.gate.weight,
    mlp.experts.gate_up_proj [E, 2I, H] (w1 rows, then w3 rows) and mlp.experts.down_proj [E, H, I]."""
    out = {}
    for k, v in weights.items():
        if ".block_sparse_moe." not in k:
            out[k] = v
    for i in range(c["num_hidden_layers"]):
        pre = "model.layers.%d." % i
        q = pre + "block_sparse_moe."
        experts = range(c["num_local_experts"])
        out[pre + "mlp.gate.weight"] = weights[q + "gate.weight"]
        out[pre + "mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([weights[q + "experts.%d.w1.weight" % e], weights[q + "experts.%d.w3.weight" % e]]) for e in experts])
        out[pre + "mlp.experts.down_proj"] = torch.stack([weights[q + "experts.%d.w2.weight" % e] for e in experts])
    return out


LORA_TARGETS = ("q_proj", "v_proj", "w1", "w2", "w3")
LORA_R, LORA_ALPHA = 4, 8


def lora_adapter(weights, gen):
    """A PEFT LoRA adapter (r 4, alpha 8) on q_proj, v_proj and every expert's w1/w2/w3, with random
    A and B (a trained adapter, not a fresh one): PEFT's file keys -> tensors."""
    out = {}
    for k in sorted(weights):
        path = k[:-len(".weight")]
        if path.split(".")[-1] in LORA_TARGETS:
            o, n = weights[k].shape
            out["base_model.model." + path + ".lora_A.weight"] = (torch.randn(LORA_R, n, generator=gen) * 0.3).float()
            out["base_model.model." + path + ".lora_B.weight"] = (torch.randn(o, LORA_R, generator=gen) * 0.3).float()
    return out


def merged(weights, adapter):
    """The weights with each LoRA folded in: W + (alpha / r) B A, in float64."""
    p = {k: v.double() for k, v in weights.items()}
    scale = LORA_ALPHA / LORA_R
    for k in adapter:
        if k.endswith(".lora_A.weight"):
            path = k[len("base_model.model."):-len(".lora_A.weight")]
            b = adapter[k.replace(".lora_A.", ".lora_B.")].double()
            p[path + ".weight"] = p[path + ".weight"] + scale * (b @ adapter[k].double())
    return p


def lora_config():
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA_R, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0,
        "target_modules": sorted(LORA_TARGETS), "target_parameters": None, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": None,
        "inference_mode": True, "layers_to_transform": None, "layers_pattern": None, "exclude_modules": None,
        "revision": None,
    }


def write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def write_fused(weights, c, ids, labels, logits):
    """tests/fixtures/mixtral/fused/: the same model in the fused layout, its gradients from a
    forward over the fused tensors (whose logits must equal the per-expert forward's)."""
    fused = fused_layout(weights, c)
    p = {k: v.double().requires_grad_(True) for k, v in fused.items()}
    logits_f, lm_loss, aux, _ = forward(p, c, ids, labels)
    d = (logits_f - logits).abs().max().item()
    print("fused layout vs per-expert: logits %.3g" % d)
    assert d < 1e-12, "the fused layout computes another function"
    (lm_loss + c["router_aux_loss_coef"] * aux).backward()
    out = os.path.join(OUT, "fused")
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "model.safetensors"), fused, metadata={"format": "pt"})
    save(os.path.join(out, "grads.safetensors"), {k + ".grad": v.grad for k, v in p.items()})
    write_json(os.path.join(out, "config.json"), CONFIG)


PARAM_TARGETS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def param_adapter(fused, c, gen):
    """A PEFT LoRA adapter with target_parameters (PEFT's ParamWrapper, r 4, alpha 8) on the fused
    gate_up_proj and down_proj of every layer, plus q_proj and v_proj through target_modules, with
    random A and B. PEFT wraps each targeted parameter in its own wrapper, nested in the module's
    parameter order: gate_up_proj (registered first) inside, its tensors under one base_layer."""
    E, r = c["num_local_experts"], LORA_R
    out = {}
    for k in sorted(fused):
        if k.endswith(".q_proj.weight") or k.endswith(".v_proj.weight"):
            o, n = fused[k].shape
            path = k[:-len(".weight")]
            out["base_model.model." + path + ".lora_A.weight"] = (torch.randn(r, n, generator=gen) * 0.3).float()
            out["base_model.model." + path + ".lora_B.weight"] = (torch.randn(o, r, generator=gen) * 0.3).float()
    for i in range(c["num_hidden_layers"]):
        experts = "base_model.model.model.layers.%d.mlp.experts." % i
        for name, wrapped in (("gate_up_proj", experts + "base_layer."), ("down_proj", experts)):
            _, o, n = fused["model.layers.%d.mlp.experts.%s" % (i, name)].shape   # [E, out, in]
            out[wrapped + "lora_A.weight"] = (torch.randn(r * E, n, generator=gen) * 0.3).float()
            out[wrapped + "lora_B.weight"] = (torch.randn(o, r * E, generator=gen) * 0.3).float()
    return out


def param_merged(fused, adapter, c):
    """The fused weights with the adapter folded in, by PEFT's ParamWrapper.get_delta_weight for
    [E, out, in] parameters: einsum("o r e, e r i -> e o i", B.reshape(out, r, E),
    A.reshape(E, r, in)) * alpha / r (and W + scale B A for q_proj / v_proj)."""
    p = {k: v.double() for k, v in fused.items()}
    E, scale = c["num_local_experts"], LORA_ALPHA / LORA_R
    for i in range(c["num_hidden_layers"]):
        experts = "base_model.model.model.layers.%d.mlp.experts." % i
        for name, wrapped in (("gate_up_proj", experts + "base_layer."), ("down_proj", experts)):
            a = adapter[wrapped + "lora_A.weight"].double()
            b = adapter[wrapped + "lora_B.weight"].double()
            delta = torch.einsum("o r e, e r i -> e o i", b.reshape(b.shape[0], -1, E), a.reshape(E, -1, a.shape[-1]))
            key = "model.layers.%d.mlp.experts.%s" % (i, name)
            p[key] = p[key] + delta * scale
    for k in adapter:
        if k.endswith(".lora_A.weight") and ".mlp.experts." not in k:
            path = k[len("base_model.model."):-len(".lora_A.weight")]
            b = adapter[k.replace(".lora_A.", ".lora_B.")].double()
            p[path + ".weight"] = p[path + ".weight"] + scale * (b @ adapter[k].double())
    return p


def write_param_lora(weights, c, ids, labels):
    """tests/fixtures/mixtral/fused/lora/: the target_parameters adapter folder on the fused
    model, and the adapted model's logits and loss (the first seed with well-separated routing)."""
    fused = fused_layout(weights, c)
    for seed in range(100):
        adapter = param_adapter(fused, c, torch.Generator().manual_seed(500 + seed))
        logits, lm_loss, aux, routers = forward(param_merged(fused, adapter, c), c, ids, labels)
        if min_margin(routers, c["num_experts_per_tok"]) > 2e-3:
            break
    else:
        raise SystemExit("no adapter seed gives well-separated router choices")
    config = lora_config()
    config["target_modules"] = ["q_proj", "v_proj"]
    config["target_parameters"] = PARAM_TARGETS
    out = os.path.join(OUT, "fused", "lora")
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "adapter_model.safetensors"), adapter, metadata={"format": "pt"})
    write_json(os.path.join(out, "adapter_config.json"), config)
    loss = lm_loss + c["router_aux_loss_coef"] * aux
    save(os.path.join(out, "reference.safetensors"), {"logits": logits, "loss": loss.reshape(1)})
    print("target_parameters adapter: %d tensors, loss %.6f" % (len(adapter), loss.item()))


def write_lora(weights, c, ids, labels):
    """tests/fixtures/mixtral/lora/: a PEFT adapter folder and the adapted model's outputs (the
    first seed whose adapted model chooses its experts with the same 2e-3 margin)."""
    for seed in range(100):
        adapter = lora_adapter(weights, torch.Generator().manual_seed(99 + seed))
        logits, lm_loss, aux, routers = forward(merged(weights, adapter), c, ids, labels)
        margin = min_margin(routers, c["num_experts_per_tok"])
        if margin > 2e-3:
            break
    else:
        raise SystemExit("no adapter seed gives well-separated router choices")
    out = os.path.join(OUT, "lora")
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "adapter_model.safetensors"), adapter, metadata={"format": "pt"})
    write_json(os.path.join(out, "adapter_config.json"), lora_config())
    save(os.path.join(out, "reference.safetensors"),
         {"logits": logits, "loss": (lm_loss + c["router_aux_loss_coef"] * aux).reshape(1)})
    print("LoRA adapter: %d tensors, loss %.6f" % (len(adapter), (lm_loss + c["router_aux_loss_coef"] * aux).item()))


def main():
    torch.set_num_threads(1)
    check_llama()
    c = structure(CONFIG)
    B, T = 2, 12
    for seed in range(100):
        gen = torch.Generator().manual_seed(1234 + seed)
        weights = random_params(c, gen)
        ids = torch.randint(0, c["vocab_size"], (B, T), generator=gen)
        p = {k: v.double() for k, v in weights.items()}
        _, _, _, routers = forward(p, c, ids)
        margin = min_margin(routers, c["num_experts_per_tok"])
        if margin > 2e-3:
            break
    else:
        raise SystemExit("no seed gives well-separated router choices")
    print("seed %d, smallest top-k margin %.3g" % (1234 + seed, margin))
    labels = ids.clone()
    labels[0, 3] = -100
    labels[1, 7] = -100
    p = {k: v.double().requires_grad_(True) for k, v in weights.items()}
    logits, lm_loss, aux, routers = forward(p, c, ids, labels)
    loss = lm_loss + c["router_aux_loss_coef"] * aux
    loss.backward()
    mask = torch.ones(B, T, dtype=torch.int64)
    mask[1, :3] = 0
    aux_masked = load_balancing_loss([r.detach() for r in routers], c["num_local_experts"], c["num_experts_per_tok"], mask)
    os.makedirs(OUT, exist_ok=True)
    ref = {"input_ids": ids, "labels": labels, "logits": logits, "lm_loss": lm_loss.reshape(1),
           "aux_loss": aux.reshape(1), "loss": loss.reshape(1), "attention_mask": mask,
           "aux_loss_masked": aux_masked.reshape(1)}
    for i, r in enumerate(routers):
        ref["router_logits.%d" % i] = r
    save(os.path.join(OUT, "reference.safetensors"), ref)
    save(os.path.join(OUT, "grads.safetensors"), {k + ".grad": v.grad for k, v in p.items()})
    save(os.path.join(OUT, "model.safetensors"), weights, metadata={"format": "pt"})
    with open(os.path.join(OUT, "config.json.tmp"), "w") as f:
        json.dump(CONFIG, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(os.path.join(OUT, "config.json.tmp"), os.path.join(OUT, "config.json"))
    print("lm_loss %.6f aux_loss %.6f loss %.6f" % (lm_loss.item(), aux.item(), loss.item()))
    write_fused(weights, c, ids, labels, logits.detach())
    write_lora(weights, c, ids, labels)
    write_param_lora(weights, c, ids, labels)


if __name__ == "__main__":
    main()
