#!/usr/bin/python3
"""PyTorch twin of scripts/bench/qwen_lora_step.lua: times LoRA steps on a Qwen2.5-0.5B-shaped decoder.

The model is HF's Qwen2ForCausalLM written out (torch 1.13, no transformers): token
embedding tied to the LM head, RMSNorm (eps 1e-6), rotary embeddings (theta 1e6, rotate-half
as HF), grouped-query attention with biases on q/k/v (14 heads, 2 key/value heads, head
size 64) and explicit causal softmax attention, SwiGLU MLP (intermediate 4,864), random
weights. LoRA r 16, alpha 32 on q, k, v, o, gate, up and down (A kaiming-uniform, B zeros,
as PEFT), the base frozen; AdamW on the adapter. A step is forward + mean next-token
cross-entropy over the sequence + backward + AdamW step, batch 1 x 256.

    /usr/bin/python3 scripts/bench/qwen_lora_step_torch.py --threads 2

The last line is machine-readable:
RESULT tokens_per_sec=<n> ms_per_step=<ms> peak_rss_mb=<MiB> build_s=<s>
"""
import math
import os
import resource
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import Stopwatch, arg_parser, positive_int, start, time_steps


def parse_args():
    parser = arg_parser(__doc__)
    parser.add_argument("--context", type=positive_int, default=256)
    parser.add_argument("--layers", type=positive_int, default=24)
    parser.add_argument("--r", type=positive_int, default=16)
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each decoder block's activations in backward (torch.utils.checkpoint)")
    return parser.parse_args()


# The command line is read before PyTorch is imported (torch_common's docstring says why).
if __name__ == "__main__":
    ARGS = parse_args()

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

VOCAB, HIDDEN, HEADS, KV_HEADS, INTER, THETA, EPS = 151936, 896, 14, 2, 4864, 1000000.0, 1e-6


class LoraLinear(nn.Module):
    """A frozen Linear plus B A x * alpha / r (PEFT's LoraLayer, dropout 0)."""

    def __init__(self, inp, out, bias, r):
        super().__init__()
        self.base = nn.Linear(inp, out, bias=bias)
        self.base.requires_grad_(False)
        self.lora_A = nn.Linear(inp, r, bias=False)
        self.lora_B = nn.Linear(r, out, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scale = 2.0   # alpha = 2 r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n), requires_grad=False)

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, r):
        super().__init__()
        hd = HIDDEN // HEADS
        self.q_proj = LoraLinear(HIDDEN, HEADS * hd, True, r)
        self.k_proj = LoraLinear(HIDDEN, KV_HEADS * hd, True, r)
        self.v_proj = LoraLinear(HIDDEN, KV_HEADS * hd, True, r)
        self.o_proj = LoraLinear(HEADS * hd, HIDDEN, False, r)

    def forward(self, x, cos, sin):                       # x [B,T,C]
        B, T, _ = x.shape
        hd = HIDDEN // HEADS
        q = self.q_proj(x).view(B, T, HEADS, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, KV_HEADS, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, KV_HEADS, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, HEADS * hd))


class Block(nn.Module):
    def __init__(self, r):
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN)
        self.self_attn = Attention(r)
        self.post_attention_layernorm = RMSNorm(HIDDEN)
        self.gate_proj = LoraLinear(HIDDEN, INTER, False, r)
        self.up_proj = LoraLinear(HIDDEN, INTER, False, r)
        self.down_proj = LoraLinear(INTER, HIDDEN, False, r)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Qwen2(nn.Module):
    def __init__(self, layers, r, checkpointing=False):
        super().__init__()
        self.checkpointing = checkpointing
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.embed_tokens.requires_grad_(False)
        self.layers = nn.ModuleList([Block(r) for _ in range(layers)])
        self.norm = RMSNorm(HIDDEN)
        # HF's _init_weights: N(0, initializer_range 0.02) weights, zero biases (the adapter keeps its own)
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and not name.endswith(("lora_A", "lora_B")):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, ids):
        T = ids.shape[1]
        hd = HIDDEN // HEADS
        inv = 1.0 / (THETA ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            if self.checkpointing:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        logits = self.norm(x) @ self.embed_tokens.weight.t()        # tied LM head
        return F.cross_entropy(logits[0, :-1], ids[0, 1:])


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(args):
    torch = start(args.threads, args.seed)
    watch = Stopwatch()
    model = Qwen2(args.layers, args.r, args.gradient_checkpointing)
    build_s = watch.seconds()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0)
    ids = torch.randint(0, VOCAB, (1, args.context))

    def step():
        loss = model(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in params)
    print("PyTorch %s Qwen2.5-0.5B-shaped: %d layers, %d parameters (%d trainable), 1 x %d tokens, %d threads, "
          "built in %.1f s" % (torch.__version__, args.layers, total, trainable, args.context,
                                torch.get_num_threads(), build_s))
    times, loss = time_steps(step, args.warmup, args.steps)
    times.sort()
    median = times[(len(times) - 1) // 2]
    print("loss %.4f, median step %.1f ms, %.1f tokens/s, peak RSS %.0f MiB" % (loss, 1000 * median,
                                                                                args.context / median, peak_rss_mb()))
    print("RESULT tokens_per_sec=%.2f ms_per_step=%.1f peak_rss_mb=%.0f build_s=%.2f" % (
        args.context / median, 1000 * median, peak_rss_mb(), build_s))


if __name__ == "__main__":
    main(ARGS)
