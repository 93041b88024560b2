#!/usr/bin/python3
"""PyTorch twin of scripts/bench/gpt_s_step.lua: times GPT-S training steps.

The model is GPT-2 (HF GPT2LMHeadModel's numerics) at the gpt-s preset: vocab 256, 6 layers,
width 384, 6 heads, context 256, pre-LN blocks, tanh GELU, causal attention scaled by
1/sqrt(head_dim), tied lm_head. Written out with nn.Linear / nn.LayerNorm / nn.GELU and
explicit attention math (torch 1.13 has no F.scaled_dot_product_attention). Dropout 0.
A step is forward + mean cross-entropy against the next bytes + backward + AdamW step. With
--lora R every projection of the blocks gets PEFT's LoRA (rank R, alpha 2R, B zero, A Kaiming-
uniform) and only the adapters train.

    /usr/bin/python3 scripts/bench/gpt_s_step_torch.py --threads 2

The last line is machine-readable: RESULT tokens_per_sec=<n> ms_per_step=<ms> peak_rss_mb=<MiB>
"""
import math
import os
import resource
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import arg_parser, positive_int, start, time_steps


def parse_args():
    parser = arg_parser(__doc__)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--context", type=positive_int, default=256)
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lora", type=positive_int, default=None, help="LoRA rank (default: full fine-tuning)")
    return parser.parse_args()


# The command line is read before PyTorch is imported (torch_common's docstring says why).
if __name__ == "__main__":
    ARGS = parse_args()

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):                                   # x [B,T,C]
        B, T, C = x.shape
        H, hd = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))   # [B,H,T,hd]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))              # [B,H,T,T]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size=256, n_positions=256, n_embd=384, n_layer=6, n_head=6):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight               # tied, as GPT-2
        for name, p in self.named_parameters():             # GPT-2's initialisation
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):                                 # ids [B,T] (0-based) -> logits [B,T,V]
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class LoRALinear(nn.Module):
    """PEFT's LoRA on a frozen nn.Linear: base(x) + B(A(x)) * alpha / r."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def add_lora(model, r):
    """Freezes model and wraps c_attn, both c_proj and the MLP's first projection (c_fc)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.h:
        block.attn.c_attn = LoRALinear(block.attn.c_attn, r, 2 * r)
        block.attn.c_proj = LoRALinear(block.attn.c_proj, r, 2 * r)
        block.mlp[0] = LoRALinear(block.mlp[0], r, 2 * r)
        block.mlp[2] = LoRALinear(block.mlp[2], r, 2 * r)


def main(args):
    start(args.threads, args.seed)
    B, T = args.batch_size, args.context
    model = GPT(n_positions=max(T, 256))
    if args.lora:
        add_lora(model, args.lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    w = torch.randint(0, 256, (B, T + 1))
    x, y = w[:, :T].contiguous(), w[:, 1:].contiguous()

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(B * T, -1), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = f", LoRA r {args.lora}" if args.lora else ""
    print(f"PyTorch {torch.__version__} GPT-S: {n_params} parameters ({n_train} training{lora}), batch {B} x "
          f"context {T}, {torch.get_num_threads()} threads")
    times, loss = time_steps(step, args.warmup, args.steps)
    total = sum(times)
    median = sorted(times)[(len(times) - 1) // 2]
    print(f"{args.steps} steps: mean {1000 * total / args.steps:.1f} ms/step, median {1000 * median:.1f} ms/step, "
          f"{B * T * args.steps / total:.0f} tokens/s (loss {loss:.3f})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # KiB on Linux
    print(f"RESULT tokens_per_sec={B * T * args.steps / total:.1f} ms_per_step={1000 * total / args.steps:.1f} "
          f"peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main(ARGS)
