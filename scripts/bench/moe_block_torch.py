#!/usr/bin/python3
"""PyTorch twin of scripts/bench/moe_block.lua: times one Mixtral sparse MoE block, forward + backward.

    /usr/bin/python3 scripts/bench/moe_block_torch.py --threads 2                  # moe-s, grouped
    /usr/bin/python3 scripts/bench/moe_block_torch.py --threads 2 --path dense
    /usr/bin/python3 scripts/bench/moe_block_torch.py --threads 2 --shape moe-m --steps 3
    /usr/bin/python3 scripts/bench/moe_block_torch.py --check /tmp/moe.safetensors  # after moe_block.lua --save

scripts/bench/compare_moe_block.sh runs both sides, alternating, at the same thread count.

The block is transformers' MixtralSparseMoeBlock written in plain torch (transformers is not
needed): router = Linear(hidden, E, bias=False); p = softmax(logits, float32); top-k of p,
renormalised to sum 1; per expert e: its rows found with torch.where on the one-hot mask [E, k, N],
expert(x) = w2(silu(w1 x) * w3 x) (MixtralBlockSparseTop2MLP, three bias-free Linears), times
the rows' routing weights, added into the output with index_add_. --layout fused keeps the
experts' weights stacked as newer transformers' MixtralExperts does (gate_up_proj [E, 2I, H],
down_proj [E, H, I]; per expert F.linear on gate_up_proj[e], chunk, F.linear on down_proj[e]),
same loop. --path dense runs every expert on every token: out = sum_e routing[:, e] * expert_e(x),
routing [N, E] the renormalised top-k weights scattered into zeros.

Shapes, inputs and the step are moe_block.lua's: moe-s (hidden 384, intermediate 1024, 4 experts,
top 2) or moe-m (hidden 1024, intermediate 2816, 8 experts, top 2); x and g [batch, context,
hidden] from normal(0, 1), every weight from normal(0, 0.02); a step drops the gradients, runs
y = block(x), sum(y * g).backward() (to x and every weight) and reads the loss back.

--check FILE reads what `ftlua scripts/bench/moe_block.lua --save FILE` wrote (the block's weights
in either layout, x, g, and ftlua's outputs and gradients of both paths), runs this block (grouped
and dense) on the same weights in float64 and prints the largest differences relative to each
reference's largest magnitude; exits 1 when one is above 1e-4.

The last line is machine-readable:
RESULT tokens_per_sec=<n> ms_per_step=<median ms> ms_mean=<ms> step_cpu_ms=<ms> gflops=<n> peak_rss_mb=<MiB>
  base_rss_mb=<MiB>
(step_cpu_ms: the process's CPU time, all threads, per timed step, mean; gflops: moe_block.lua's
count of the GEMMs' work over the median step; base_rss: resident memory after building the
block and the inputs, torch imported, before the first step).
"""
import json
import os
import resource
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import arg_parser, positive_int, start, time_steps

SHAPES = {   # hidden, intermediate, experts, top-k
    "moe-s": (384, 1024, 4, 2),
    "moe-m": (1024, 2816, 8, 2),
}


def parse_args():
    parser = arg_parser(__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="moe-s")
    parser.add_argument("--layout", choices=["per_expert", "fused"], default="per_expert")
    parser.add_argument("--path", choices=["grouped", "dense"], default="grouped")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--context", type=positive_int, default=256)
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", metavar="FILE", help="compare with moe_block.lua --save FILE and exit")
    return parser.parse_args()


# The command line is read before PyTorch is imported (torch_common's docstring says why).
if __name__ == "__main__":
    ARGS = parse_args()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Expert(nn.Module):
    """transformers' MixtralBlockSparseTop2MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, hidden, inter):
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)
        self.w2 = nn.Linear(inter, hidden, bias=False)
        self.w3 = nn.Linear(hidden, inter, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class FusedExperts(nn.Module):
    """Newer transformers' MixtralExperts: the experts' weights stacked, expert(e, x) per expert."""

    def __init__(self, hidden, inter, E):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(E, hidden, inter))

    def expert(self, e, x):
        gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[e])


class SparseMoeBlock(nn.Module):
    """transformers' MixtralSparseMoeBlock (no jitter): forward -> output [B,T,C], router logits [B*T, E]."""

    def __init__(self, hidden, inter, E, k, layout):
        super().__init__()
        self.E, self.k = E, k
        self.gate = nn.Linear(hidden, E, bias=False)
        if layout == "fused":
            self.experts = FusedExperts(hidden, inter, E)
            self.run_expert = self.experts.expert
        else:
            self.experts = nn.ModuleList([Expert(hidden, inter) for _ in range(E)])
            self.run_expert = lambda e, x: self.experts[e](x)

    def route(self, flat):
        logits = self.gate(flat)
        probs = F.softmax(logits, dim=1, dtype=torch.float)
        weights, chosen = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(flat.dtype), chosen

    def forward(self, x):
        B, T, C = x.shape
        flat = x.reshape(-1, C)
        logits, weights, chosen = self.route(flat)
        out = torch.zeros_like(flat)
        mask = F.one_hot(chosen, num_classes=self.E).permute(2, 1, 0)   # [E, k, N]
        for e in range(self.E):
            slot, rows = torch.where(mask[e])
            if rows.numel() == 0:
                continue
            y = self.run_expert(e, flat[rows]) * weights[rows, slot, None]
            out.index_add_(0, rows, y.to(flat.dtype))
        return out.reshape(B, T, C), logits

    def forward_dense(self, x):
        """The same function with every expert on every token, weighted by the routing matrix."""
        B, T, C = x.shape
        flat = x.reshape(-1, C)
        logits, weights, chosen = self.route(flat)
        routing = torch.zeros(flat.shape[0], self.E, dtype=flat.dtype).scatter(1, chosen, weights)
        out = torch.zeros_like(flat)
        for e in range(self.E):
            out = out + self.run_expert(e, flat) * routing[:, e, None]
        return out.reshape(B, T, C), logits


def build(shape, layout):
    hidden, inter, E, k = SHAPES[shape]
    block = SparseMoeBlock(hidden, inter, E, k, layout)
    with torch.no_grad():
        for p in block.parameters():
            nn.init.normal_(p, 0.0, 0.02)
    return block


def expert_rows(block, flat):
    with torch.no_grad():
        _, _, chosen = block.route(flat)
        return "/".join(str(int(n)) for n in torch.bincount(chosen.reshape(-1), minlength=block.E))


# ---- --check ---------------------------------------------------------------------------------

def load(path):
    """The F32 / I64 tensors of a safetensors file as torch tensors."""
    dtypes = {"F32": np.float32, "I64": np.int64}
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def check(path):
    t = load(path)
    layout = "fused" if "experts.gate_up_proj" in t else "per_expert"
    hidden = t["gate.weight"].shape[1]
    shape = next(s for s, v in SHAPES.items() if v[0] == hidden and v[2] == t["gate.weight"].shape[0])
    block = build(shape, layout).double()
    params = dict(block.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(t[name])
    x, g = t["x"].double(), t["g"].double()
    N, C = x.shape[0] * x.shape[1], x.shape[2]
    with torch.no_grad():   # the router's margin: how far each token's k-th choice is from the next
        probs = F.softmax(block.gate(x.reshape(N, C)), dim=1)
        top = torch.topk(probs, block.k + 1, dim=-1).values if block.k < block.E else None
    margin = float((top[:, block.k - 1] - top[:, block.k]).min()) if top is not None else float("inf")
    print(f"{path}: {shape}, {layout} layout, x {list(x.shape)}, expert rows {expert_rows(block, x.reshape(N, C))}, "
          f"smallest k-th vs next router probability gap {margin:.2e}")
    worst = 0.0
    results = {}
    for path_name, pre in (("grouped", ""), ("dense", "dense.")):
        xr = x.clone().requires_grad_(True)
        block.zero_grad(set_to_none=True)
        y, _ = block(xr) if path_name == "grouped" else block.forward_dense(xr)
        (y * g).sum().backward()
        got = {"y": y.detach(), "x.grad": xr.grad}
        got.update({name + ".grad": p.grad for name, p in params.items()})
        results[path_name] = got
        for name, v in got.items():
            ref = t[pre + name].double()
            err = float((v - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            worst = max(worst, err)
            print(f"  {path_name:7s} {name:24s} max |torch - ftlua| / max |ftlua| = {err:.2e}")
    d = max(float((results["grouped"][n] - results["dense"][n]).abs().max()) for n in results["grouped"])
    print(f"  torch grouped vs torch dense: max abs difference {d:.2e}")
    ok = worst <= 1e-4
    print(f"CHECK {'ok' if ok else 'FAILED'} worst_relative_error={worst:.2e}")
    return 0 if ok else 1


# ---- timing ----------------------------------------------------------------------------------

def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(args):
    start(args.threads, args.seed)
    if args.check:
        return check(args.check)
    hidden, inter, E, k = SHAPES[args.shape]
    block = build(args.shape, args.layout)
    block.train()
    B, T = args.batch_size, args.context
    N = B * T
    x = torch.randn(B, T, hidden, requires_grad=True)
    g = torch.randn(B, T, hidden)
    forward = block.forward_dense if args.path == "dense" else block

    def step():
        block.zero_grad(set_to_none=True)
        x.grad = None
        y, _ = forward(x)
        loss = (y * g).sum()
        loss.backward()
        return loss.item()

    print(f"PyTorch {torch.__version__} MoE block {args.shape} (hidden {hidden}, intermediate {inter}, {E} experts, "
          f"top {k}), {args.layout} layout, {args.path} path, x [{B},{T},{hidden}], {torch.get_num_threads()} threads")
    print(f"expert rows (of {N} tokens x top {k}): {expert_rows(block, x.detach().reshape(N, hidden))}")
    base = rss_mb("VmRSS")
    for _ in range(args.warmup):
        step()
    cpu0 = time.process_time()   # the process's CPU time, all threads
    times, loss = time_steps(step, 0, args.steps)
    cpu = (time.process_time() - cpu0) / args.steps
    rows = N * E if args.path == "dense" else N * k   # moe_block.lua's count of the GEMMs' work
    flops = 3 * (2 * N * hidden * E + 3 * 2 * rows * hidden * inter)
    total = sum(times)
    times.sort()
    median = times[(len(times) - 1) // 2]
    print(f"{args.steps} steps: mean {1000 * total / args.steps:.1f} ms, median {1000 * median:.1f} ms (min "
          f"{1000 * times[0]:.1f}, max {1000 * times[-1]:.1f}), {N / median:.0f} tokens/s at the median (loss {loss:.4f})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # KiB on Linux
    print(f"RESULT tokens_per_sec={N / median:.1f} ms_per_step={1000 * median:.2f} ms_mean={1000 * total / args.steps:.2f} "
          f"step_cpu_ms={1000 * cpu:.2f} gflops={flops / median / 1e9:.1f} peak_rss_mb={peak:.0f} base_rss_mb={base:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
