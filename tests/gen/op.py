#!/usr/bin/python3
"""Reference values for every differentiable op, computed with PyTorch.

Run with Debian's python3-torch and python3-h5py:

    /usr/bin/python3 tests/gen/op.py          # writes tests/fixtures/ops.h5

Each case is an HDF5 group ops/<case> holding plain datasets:

    <input>         float32 inputs and int64 index/target tensors (0-based, as torch has them)
    g               a fixed random tensor of the output's shape
    out             the op's output (int64 0-based for argmax, which has no g)
    grad_<input>    d sum(out * g) / d input, for every float input that is differentiated
    out_<k>, g_<k>  (k = 1, 2, ...) when an op returns several tensors (split);
                    then the scalar is sum_k sum(out_k * g_k)
    indices         int64 0-based indices returned by max / argmax (not differentiated)
    <buffer>_after  running statistics after a training-mode batch_norm call

Naming conventions the spec relies on:
    - an input whose name ends in "_T" is stored contiguous and the op receives its
      transpose (`x_T:t()` in Lua): a non-contiguous operand; its grad is with respect
      to the stored (contiguous) tensor;
    - an input has a grad_<input> dataset exactly when the spec must mark it requires_grad.

Inputs are drawn in float32; the reference is computed in float64 from those exact values
and then stored as float32, so it is more accurate than any float32 implementation.
Integer tensors stay int64 and 0-based: the Lua spec adds 1 before using them.
"""
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "ops.h5")

CASES = {}


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def positive(*shape, lo=0.5, hi=2.0):
    return torch.rand(*shape, dtype=torch.float32) * (hi - lo) + lo


def away_from_zero(*shape):
    """Values in +-[0.5, 1.5]: safe denominators."""
    sign = torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)
    return sign * positive(*shape, lo=0.5, hi=1.5)


def distinct(*shape):
    """A random permutation of evenly spaced values: no ties for max/argmax/max_pool."""
    n = int(np.prod(shape))
    return (torch.randperm(n).float() / n * 4.0 - 2.0).reshape(*shape)


def mask(*shape):
    return (torch.rand(*shape) < 0.4).float()


def record(name, inputs, fn, nograd=(), extra=None):
    """Runs fn on float64 copies of the inputs and stores inputs, g, outputs and grads.

    inputs: dict name -> tensor (float32 or int64); fn(args) -> tensor or list of tensors.
    nograd: float inputs that are not differentiated (buffers, masks, conditions)."""
    assert name not in CASES, name
    data = {}
    args, leaves = {}, {}
    for k, v in inputs.items():
        data[k] = v
        if v.dtype == torch.float32:
            leaf = v.double()
            if k not in nograd:
                leaf.requires_grad_(True)
                leaves[k] = leaf
            args[k] = leaf.t() if k.endswith("_T") else leaf
        else:
            args[k] = v
    res = fn(args)
    outs = list(res) if isinstance(res, (list, tuple)) else [res]
    loss = 0.0
    for k, o in enumerate(outs, 1):
        suffix = "" if len(outs) == 1 else "_%d" % k
        if not o.is_floating_point():       # indices: compared, not differentiated
            data["out" + suffix] = o
            continue
        g = torch.randn(o.shape, dtype=torch.float32)
        data["out" + suffix] = o.detach().float()
        data["g" + suffix] = g
        loss = loss + (o * g.double()).sum()
    if leaves:
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        for k, gr in zip(leaves, grads):
            data["grad_" + k] = torch.zeros_like(leaves[k]).float() if gr is None else gr.float()
    if extra:
        for k, v in extra(args).items():
            data[k] = v.detach().float() if v.is_floating_point() else v
    CASES[name] = data


# ---- elementwise binary, with broadcasting and non-contiguous operands -----------------
record("add_bcast", {"a": randn(4, 1, 3), "b": randn(5, 1)}, lambda a: a["a"] + a["b"])
record("sub_bcast", {"a": randn(4, 1, 3), "b": randn(5, 1)}, lambda a: a["a"] - a["b"])
record("mul_bcast", {"a": randn(4, 1, 3), "b": randn(5, 1)}, lambda a: a["a"] * a["b"])
record("div_bcast", {"a": randn(4, 1, 3), "b": away_from_zero(5, 1)}, lambda a: a["a"] / a["b"])
record("add_T", {"a_T": randn(3, 4), "b": randn(4, 3)}, lambda a: a["a_T"] + a["b"])
record("sub_T", {"a": randn(4, 3), "b_T": randn(3, 4)}, lambda a: a["a"] - a["b_T"])
record("mul_T", {"a_T": randn(3, 4), "b": randn(4, 3)}, lambda a: a["a_T"] * a["b"])
record("div_T", {"a": randn(4, 3), "b_T": away_from_zero(3, 4)}, lambda a: a["a"] / a["b_T"])
record("mul_T_bcast", {"a_T": randn(3, 4), "b": randn(3)}, lambda a: a["a_T"] * a["b"])
record("pow_tensor", {"a": positive(3, 4), "b": randn(3, 4)}, lambda a: a["a"] ** a["b"])
record("pow_tensor_bcast", {"a": positive(3, 4), "b": randn(4)}, lambda a: a["a"] ** a["b"])

# ---- with a number on either side ----------------------------------------------------
record("add_scalar", {"a": randn(3, 4)}, lambda a: a["a"] + 2.5)
record("radd_scalar", {"a": randn(3, 4)}, lambda a: 2.5 + a["a"])
record("sub_scalar", {"a": randn(3, 4)}, lambda a: a["a"] - 2.5)
record("rsub_scalar", {"a": randn(3, 4)}, lambda a: 2.5 - a["a"])
record("mul_scalar", {"a": randn(3, 4)}, lambda a: a["a"] * 3.0)
record("rmul_scalar", {"a": randn(3, 4)}, lambda a: 3.0 * a["a"])
record("div_scalar", {"a": randn(3, 4)}, lambda a: a["a"] / 4.0)
record("rdiv_scalar", {"a": away_from_zero(3, 4)}, lambda a: 2.0 / a["a"])
record("pow_scalar_2", {"a": randn(3, 4)}, lambda a: a["a"] ** 2)
record("pow_scalar_3", {"a": randn(3, 4)}, lambda a: a["a"] ** 3)
record("pow_scalar_half", {"a": positive(3, 4)}, lambda a: a["a"] ** 0.5)
record("pow_scalar_neg", {"a": positive(3, 4)}, lambda a: a["a"] ** -1.5)

# ---- elementwise unary ---------------------------------------------------------------
record("neg", {"x": randn(3, 4)}, lambda a: -a["x"])
record("exp", {"x": randn(3, 4)}, lambda a: a["x"].exp())
record("log", {"x": positive(3, 4)}, lambda a: a["x"].log())
record("sqrt", {"x": positive(3, 4)}, lambda a: a["x"].sqrt())
record("abs", {"x": away_from_zero(3, 4)}, lambda a: a["x"].abs())
record("tanh", {"x": randn(3, 4)}, lambda a: a["x"].tanh())
record("sigmoid", {"x": randn(3, 4)}, lambda a: a["x"].sigmoid())
record("relu", {"x": randn(3, 4)}, lambda a: a["x"].relu())
record("gelu", {"x": randn(3, 4) * 2}, lambda a: F.gelu(a["x"]))
record("gelu_tanh", {"x": randn(3, 4) * 2}, lambda a: F.gelu(a["x"], approximate="tanh"))
record("silu", {"x": randn(3, 4) * 2}, lambda a: F.silu(a["x"]))
record("clamp", {"x": randn(4, 5)}, lambda a: a["x"].clamp(-0.5, 0.7))
record("clamp_min", {"x": randn(4, 5)}, lambda a: a["x"].clamp(min=-0.5))
record("relu_T", {"x_T": randn(4, 3)}, lambda a: a["x_T"].relu())
record("exp_T", {"x_T": randn(4, 3)}, lambda a: a["x_T"].exp())

# ---- reductions ----------------------------------------------------------------------
record("sum_all", {"x": randn(3, 4, 5)}, lambda a: a["x"].sum())
record("sum_dim2", {"x": randn(3, 4, 5)}, lambda a: a["x"].sum(1))
record("sum_dim3_keepdim", {"x": randn(3, 4, 5)}, lambda a: a["x"].sum(2, keepdim=True))
record("sum_dim_neg1", {"x": randn(3, 4, 5)}, lambda a: a["x"].sum(-1))
record("sum_T", {"x_T": randn(5, 4)}, lambda a: a["x_T"].sum(0))
record("mean_all", {"x": randn(3, 4, 5)}, lambda a: a["x"].mean())
record("mean_dim1", {"x": randn(3, 4, 5)}, lambda a: a["x"].mean(0))
record("mean_dim_neg1_keepdim", {"x": randn(3, 4, 5)}, lambda a: a["x"].mean(-1, keepdim=True))
record("max_dim2", {"x": distinct(4, 6)}, lambda a: a["x"].max(1).values,
       extra=lambda a: {"indices": a["x"].max(1).indices})
record("max_dim1_keepdim", {"x": distinct(3, 4, 5)}, lambda a: a["x"].max(0, keepdim=True).values,
       extra=lambda a: {"indices": a["x"].max(0, keepdim=True).indices})
record("max_all", {"x": distinct(3, 4)}, lambda a: a["x"].max())
record("min_dim2", {"x": distinct(4, 6)}, lambda a: a["x"].min(1).values,
       extra=lambda a: {"indices": a["x"].min(1).indices})
record("min_all", {"x": distinct(3, 4)}, lambda a: a["x"].min())
record("argmax_dim2", {"x": distinct(4, 6)}, lambda a: a["x"].argmax(1), nograd=("x",))
record("argmax_dim_neg1", {"x": distinct(2, 3, 5)}, lambda a: a["x"].argmax(-1), nograd=("x",))
record("softmax_dim2", {"x": randn(3, 4, 5) * 2}, lambda a: F.softmax(a["x"], 1))
record("softmax_dim_neg1", {"x": randn(3, 4, 5) * 2}, lambda a: F.softmax(a["x"], -1))
record("log_softmax_dim2", {"x": randn(3, 4, 5) * 2}, lambda a: F.log_softmax(a["x"], 1))
record("log_softmax_dim_neg1", {"x": randn(3, 4, 5) * 2}, lambda a: F.log_softmax(a["x"], -1))
# Large logits: only a max-subtracted implementation survives these in float32.
record("log_softmax_large", {"x": randn(2, 6) * 30 + 100}, lambda a: F.log_softmax(a["x"], -1))

# ---- matrix products -----------------------------------------------------------------
record("matmul_2d", {"a": randn(3, 4), "b": randn(4, 5)}, lambda a: a["a"] @ a["b"])
record("matmul_1d_2d", {"a": randn(4), "b": randn(4, 5)}, lambda a: a["a"] @ a["b"])
record("matmul_2d_1d", {"a": randn(3, 4), "b": randn(4)}, lambda a: a["a"] @ a["b"])
record("matmul_1d_1d", {"a": randn(4), "b": randn(4)}, lambda a: a["a"] @ a["b"])
record("matmul_batched", {"a": randn(2, 3, 4, 5), "b": randn(5, 6)}, lambda a: a["a"] @ a["b"])
record("matmul_bcast_batch", {"a": randn(2, 1, 4, 5), "b": randn(3, 5, 6)},
       lambda a: a["a"] @ a["b"])
record("matmul_T", {"a": randn(4, 5), "b_T": randn(6, 5)}, lambda a: a["a"] @ a["b_T"])
record("matmul_TT", {"a_T": randn(5, 4), "b_T": randn(6, 5)}, lambda a: a["a_T"] @ a["b_T"])

# ---- shape ops -----------------------------------------------------------------------
record("cat_dim1", {"a": randn(2, 3), "b": randn(4, 3)}, lambda a: torch.cat([a["a"], a["b"]], 0))
record("cat_dim_neg1", {"a": randn(2, 3), "b": randn(2, 2)},
       lambda a: torch.cat([a["a"], a["b"]], -1))
record("cat_three", {"a": randn(2, 3), "b": randn(2, 1), "c": randn(2, 2)},
       lambda a: torch.cat([a["a"], a["b"], a["c"]], 1))
record("stack_dim2", {"a": randn(2, 3), "b": randn(2, 3)},
       lambda a: torch.stack([a["a"], a["b"]], 1))
record("stack_dim1", {"a": randn(2, 3), "b": randn(2, 3)},
       lambda a: torch.stack([a["a"], a["b"]], 0))
record("split_dim1", {"x": randn(7, 3)}, lambda a: list(torch.split(a["x"], 3, 0)))
record("split_dim2", {"x": randn(2, 5)}, lambda a: list(torch.split(a["x"], 2, 1)))
record("index_select_dim1", {"x": randn(5, 4), "index": torch.tensor([4, 0, 4, 2])},
       lambda a: a["x"].index_select(0, a["index"]))
record("index_select_dim2", {"x": randn(3, 5), "index": torch.tensor([1, 3, 1])},
       lambda a: a["x"].index_select(1, a["index"]))
record("gather_dim2", {"x": randn(3, 4), "index": torch.randint(0, 4, (3, 5))},
       lambda a: a["x"].gather(1, a["index"]))
record("gather_dim1", {"x": randn(4, 3), "index": torch.randint(0, 4, (2, 3))},
       lambda a: a["x"].gather(0, a["index"]))
record("masked_fill", {"x": randn(3, 4), "mask": mask(3, 4)},
       lambda a: a["x"].masked_fill(a["mask"] > 0.5, -1.5), nograd=("mask",))
record("masked_fill_bcast", {"x": randn(3, 4), "mask": mask(1, 4)},
       lambda a: a["x"].masked_fill(a["mask"] > 0.5, 2.0), nograd=("mask",))
record("where", {"cond": mask(3, 4), "a": randn(3, 4), "b": randn(3, 4)},
       lambda a: torch.where(a["cond"] > 0.5, a["a"], a["b"]), nograd=("cond",))
record("where_bcast", {"cond": mask(3, 4), "a": randn(3, 4), "b": randn(4)},
       lambda a: torch.where(a["cond"] > 0.5, a["a"], a["b"]), nograd=("cond",))

# ---- views (differentiable) ----------------------------------------------------------
record("transpose", {"x": randn(2, 3, 4)}, lambda a: a["x"].transpose(0, 2))
record("permute", {"x": randn(2, 3, 4)}, lambda a: a["x"].permute(2, 0, 1))
record("narrow", {"x": randn(5, 4)}, lambda a: a["x"].narrow(0, 1, 3))
record("select", {"x": randn(3, 4, 2)}, lambda a: a["x"].select(1, 2))
record("expand", {"x": randn(3, 1)}, lambda a: a["x"].expand(3, 4))
record("reshape", {"x": randn(2, 3, 4)}, lambda a: a["x"].reshape(4, 6))
record("reshape_T", {"x_T": randn(3, 4)}, lambda a: a["x_T"].reshape(12))
record("unsqueeze", {"x": randn(3, 4)}, lambda a: a["x"].unsqueeze(1))
record("squeeze", {"x": randn(3, 1, 4)}, lambda a: a["x"].squeeze(1))
record("contiguous_T", {"x_T": randn(3, 4)}, lambda a: a["x_T"].contiguous())
record("clone_T", {"x_T": randn(3, 4)}, lambda a: a["x_T"].clone())

# ---- layers --------------------------------------------------------------------------
record("linear", {"x": randn(2, 3, 4), "w": randn(5, 4), "b": randn(5)},
       lambda a: F.linear(a["x"], a["w"], a["b"]))
record("linear_nobias", {"x": randn(3, 4), "w": randn(5, 4)}, lambda a: F.linear(a["x"], a["w"]))
record("conv2d", {"x": randn(2, 3, 7, 7), "w": randn(4, 3, 3, 3)},
       lambda a: F.conv2d(a["x"], a["w"]))
record("conv2d_bias", {"x": randn(1, 2, 5, 6), "w": randn(3, 2, 3, 3), "b": randn(3)},
       lambda a: F.conv2d(a["x"], a["w"], a["b"], padding=1))
record("conv2d_strided", {"x": randn(2, 4, 9, 9), "w": randn(6, 2, 3, 3), "b": randn(6)},
       lambda a: F.conv2d(a["x"], a["w"], a["b"], stride=2, padding=1, dilation=2, groups=2))
record("conv2d_rect", {"x": randn(1, 2, 6, 5), "w": randn(3, 2, 2, 3), "b": randn(3)},
       lambda a: F.conv2d(a["x"], a["w"], a["b"], stride=(2, 1), padding=(1, 0)))
record("max_pool2d", {"x": distinct(2, 2, 6, 6)}, lambda a: F.max_pool2d(a["x"], 2))
record("max_pool2d_pad", {"x": distinct(2, 3, 7, 7)},
       lambda a: F.max_pool2d(a["x"], 3, stride=2, padding=1))
record("avg_pool2d", {"x": randn(2, 2, 6, 6)}, lambda a: F.avg_pool2d(a["x"], 2))
record("avg_pool2d_pad", {"x": randn(2, 3, 7, 7)},
       lambda a: F.avg_pool2d(a["x"], 3, stride=2, padding=1))
record("adaptive_avg_pool2d", {"x": randn(2, 3, 7, 7)}, lambda a: F.adaptive_avg_pool2d(a["x"], 3))
record("adaptive_avg_pool2d_rect", {"x": randn(1, 2, 5, 7)},
       lambda a: F.adaptive_avg_pool2d(a["x"], (2, 3)))
record("adaptive_avg_pool2d_1", {"x": randn(2, 3, 4, 5)}, lambda a: F.adaptive_avg_pool2d(a["x"], 1))


def batch_norm_case(name, x, training):
    c = x.shape[1]
    inputs = {"x": x, "weight": positive(c), "bias": randn(c),
              "running_mean": randn(c) * 0.1, "running_var": positive(c)}
    state = {}

    def fn(a):
        state["rm"], state["rv"] = a["running_mean"].clone(), a["running_var"].clone()
        return F.batch_norm(a["x"], state["rm"], state["rv"], a["weight"], a["bias"],
                            training=training, momentum=0.1, eps=1e-5)

    extra = None
    if training:
        extra = lambda a: {"running_mean_after": state["rm"], "running_var_after": state["rv"]}
    record(name, inputs, fn, nograd=("running_mean", "running_var"), extra=extra)


batch_norm_case("batch_norm_train", randn(4, 3, 3, 3) * 2 + 1, True)
batch_norm_case("batch_norm_train_2d", randn(6, 4) * 2 + 1, True)
batch_norm_case("batch_norm_eval", randn(4, 3, 3, 3) * 2 + 1, False)

record("layer_norm", {"x": randn(2, 3, 8) * 2 + 1, "weight": positive(8), "bias": randn(8)},
       lambda a: F.layer_norm(a["x"], (8,), a["weight"], a["bias"], eps=1e-5))
record("layer_norm_2dims", {"x": randn(2, 3, 4), "weight": positive(3, 4), "bias": randn(3, 4)},
       lambda a: F.layer_norm(a["x"], (3, 4), a["weight"], a["bias"], eps=1e-5))
record("rms_norm", {"x": randn(2, 3, 8), "weight": positive(8)},
       lambda a: a["x"] / (a["x"].pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * a["weight"])
record("pad", {"x": randn(2, 3, 4)}, lambda a: F.pad(a["x"], (1, 2, -1, 1), value=0.5))


def attention(q, k, v, causal=False):
    # torch 1.13 has no F.scaled_dot_product_attention: its definition, written out
    scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
    if causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(L, S).triu(1).bool(), float("-inf"))
    return scores.softmax(-1) @ v


record("sdpa", {"q": randn(2, 3, 4), "k": randn(2, 5, 4), "v": randn(2, 5, 6)},
       lambda a: attention(a["q"], a["k"], a["v"]))
record("sdpa_causal", {"q": randn(2, 2, 4, 8), "k": randn(2, 2, 4, 8), "v": randn(2, 2, 4, 8)},
       lambda a: attention(a["q"], a["k"], a["v"], causal=True))
record("embedding", {"weight": randn(10, 4), "index": torch.tensor([[1, 7, 1], [9, 0, 7]])},
       lambda a: F.embedding(a["index"], a["weight"]))

# ---- losses --------------------------------------------------------------------------
def ce_case(name, logits, target, **kw):
    record(name, {"logits": logits, "target": target},
           lambda a: F.cross_entropy(a["logits"], a["target"], **kw))


ce_case("cross_entropy_mean", randn(5, 4) * 2, torch.tensor([0, 3, 1, 1, 2]))
ce_case("cross_entropy_sum", randn(5, 4) * 2, torch.tensor([2, 3, 0, 1, 2]), reduction="sum")
ce_case("cross_entropy_none", randn(5, 4) * 2, torch.tensor([0, 3, 1, 1, 2]), reduction="none")
ce_case("cross_entropy_smooth", randn(5, 4) * 2, torch.tensor([0, 3, 1, 1, 2]),
        label_smoothing=0.1)
ce_case("cross_entropy_smooth_sum", randn(5, 4) * 2, torch.tensor([0, 3, 1, 1, 2]),
        label_smoothing=0.1, reduction="sum")
# ignore_index is a class id: 2 here (0-based), 3 in Lua.
ce_case("cross_entropy_ignore", randn(6, 4) * 2, torch.tensor([0, 2, 1, 2, 3, 2]),
        ignore_index=2)
ce_case("cross_entropy_ignore_none", randn(6, 4) * 2, torch.tensor([0, 2, 1, 2, 3, 2]),
        ignore_index=2, reduction="none")
ce_case("cross_entropy_ignore_smooth", randn(6, 4) * 2, torch.tensor([0, 2, 1, 2, 3, 2]),
        ignore_index=2, label_smoothing=0.1)
ce_case("cross_entropy_nd", randn(3, 4, 5) * 2, torch.randint(0, 4, (3, 5)))
ce_case("cross_entropy_nd_none", randn(2, 3, 4) * 2, torch.randint(0, 3, (2, 4)),
        reduction="none")
ce_case("cross_entropy_large", randn(3, 5) * 30 + 100, torch.tensor([4, 0, 2]))
record("mse_loss", {"input": randn(3, 4), "target": randn(3, 4)},
       lambda a: F.mse_loss(a["input"], a["target"]))
record("mse_loss_sum", {"input": randn(3, 4), "target": randn(3, 4)},
       lambda a: F.mse_loss(a["input"], a["target"], reduction="sum"))
record("mse_loss_none", {"input": randn(3, 4), "target": randn(3, 4)},
       lambda a: F.mse_loss(a["input"], a["target"], reduction="none"))
# Wide enough (32 channels, 3x3, stride 1) for oneDNN's Winograd kernels, which the default
# convolution path picks for such layers.
record("conv2d_winograd", {"x": randn(4, 32, 12, 12), "w": randn(32, 32, 3, 3) / 17, "b": randn(32)},
       lambda a: F.conv2d(a["x"], a["w"], a["b"], padding=1))


def wide():
    """Every regime of the logistic function: deep underflow, the exp range, near 0, saturation."""
    ends = torch.tensor([-104.0, -88.5, -87.0, -1e-30, 0.0, 1e-30, 87.0, 88.5, 104.0])
    return torch.cat([torch.linspace(-90, 90, 721), ends]).reshape(10, 73)


# Held to a few ulp per element (not relative to the largest value) by the spec.
record("sigmoid_wide", {"x": wide()}, lambda a: a["x"].sigmoid())
record("silu_wide", {"x": wide()}, lambda a: F.silu(a["x"]))
record("silu_mul", {"gate": randn(3, 4) * 3, "up": randn(3, 4)}, lambda a: F.silu(a["gate"]) * a["up"])
record("silu_mul_broadcast", {"gate": randn(2, 3, 4) * 3, "up": randn(3, 1)},
       lambda a: F.silu(a["gate"]) * a["up"])
record("silu_mul_T", {"gate_T": randn(4, 3) * 3, "up": randn(3, 4)}, lambda a: F.silu(a["gate_T"]) * a["up"])

def main():
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        for case, data in CASES.items():
            for k, v in data.items():
                arr = v.numpy()
                assert arr.dtype in (np.float32, np.int64), (case, k, arr.dtype)
                f.create_dataset("ops/%s/%s" % (case, k), data=arr)
    os.replace(tmp, OUT)
    print("wrote %d cases to %s (%d bytes)" % (len(CASES), OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
