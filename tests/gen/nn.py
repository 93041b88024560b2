#!/usr/bin/python3
"""Reference values for ft.nn (modules, ft.nn.functional, the ResNet builder), from PyTorch.

Run with Debian's python3-torch and python3-h5py:

    /usr/bin/python3 tests/gen/nn.py

Writes into tests/fixtures/:

    nn_resnet_state.h5   state_dict of a narrow ResNet-S (widths 4, 8, 16; the same builder
                         and structure as ResNet-S, small enough to commit), with non-trivial
                         BatchNorm statistics. Loads directly with model:load_state_dict.
    nn_resnet_io.h5      input [4,1,28,28], target (int64, 0-based), output_eval (eval mode),
                         output_train (training mode: batch statistics), loss (cross entropy of
                         output_train), grad.<param> (d loss / d param) and after.<buffer>
                         (BatchNorm buffers after that one training-mode forward).
    nn_resnet_s_keys.txt the state_dict of the full ResNet-S: "name shape" per line (shape as
                         comma-separated sizes, empty for scalars), in torch's order, then
                         "parameters <count>".
    nn_functional.h5     cases for ft.nn.functional where the Lua side adds logic of its own
                         (index shifting, ignore_index, soft targets, padding, rms_norm,
                         attention masks, 'same' padding, pooling defaults): f/<case>/<name>.

The nets are evaluated in float64 from float32-rounded weights and inputs, then stored as
float32. Index tensors are 0-based as torch holds them; the spec adds 1.
"""
import os

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
FIXTURES = os.path.join(HERE, "fixtures")


# ---- ResNet as torchvision builds it -----------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNetSmall(nn.Module):
    """ResNet-S: conv3x3 stem, no max-pool, stages of BasicBlocks, global average pool, fc."""

    def __init__(self, widths=(32, 64, 128), layers=(2, 2, 2), in_channels=1, num_classes=10):
        super().__init__()
        inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, inplanes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        for i, (planes, n) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes))
            blocks = [BasicBlock(inplanes, planes, stride, downsample)]
            blocks += [BasicBlock(planes, planes) for _ in range(1, n)]
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
            inplanes = planes
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, "layer%d" % (i + 1))(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def f32(t):
    return t.detach().to(torch.float32).numpy()


def write(f, name, value):
    """Dataset at the path of a dotted name (dots become groups), as ft.save does."""
    f.create_dataset(name.replace(".", "/"), data=value)


def relu_margin(net, x):
    """Smallest |input| of any ReLU call in eval and training mode. A float32 run may flip
    a ReLU whose input is within rounding of 0, and BatchNorm spreads that one flip over a
    whole channel's gradient; such inputs make a fixture that no float32 code can match."""
    margins = []
    hooks = [m.register_forward_pre_hook(lambda m, inp: margins.append(inp[0].abs().min().item()))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.eval()
        net(x)
        net.train()
        net(x)
    net.load_state_dict(state)   # undo the running-statistics update
    for h in hooks:
        h.remove()
    return min(margins)


def well_conditioned_input(net, margin=1e-5):
    gen = torch.Generator().manual_seed(0)
    for _ in range(1000):
        x = torch.rand(4, 1, 28, 28, generator=gen)
        if relu_margin(net, x.double()) > margin:
            return x
    raise RuntimeError("no input keeps every ReLU input %g away from 0" % margin)


def resnet_fixtures():
    torch.manual_seed(0)
    net = ResNetSmall(widths=(4, 8, 16))
    # Non-trivial BatchNorm state, so eval mode differs from a freshly built net.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with h5py.File(os.path.join(FIXTURES, "nn_resnet_state.h5"), "w") as f:
        for k, v in state.items():
            write(f, k, v.numpy() if v.dtype == torch.int64 else f32(v))

    target = torch.tensor([3, 0, 9, 5])
    net64 = net.double()
    x = well_conditioned_input(net64)

    net64.eval()
    with torch.no_grad():
        out_eval = net64(x.double())

    net64.train()
    out_train = net64(x.double())
    loss = F.cross_entropy(out_train, target)
    loss.backward()

    with h5py.File(os.path.join(FIXTURES, "nn_resnet_io.h5"), "w") as f:
        write(f, "input", f32(x))
        write(f, "target", target.numpy())
        write(f, "output_eval", f32(out_eval))
        write(f, "output_train", f32(out_train))
        write(f, "loss", f32(loss))
        for k, p in net64.named_parameters():
            write(f, "grad." + k, f32(p.grad))
        for k, b in net64.named_buffers():
            write(f, "after." + k, b.numpy() if b.dtype == torch.int64 else f32(b))


def resnet_s_keys():
    net = ResNetSmall()
    lines = []
    for k, v in net.state_dict().items():
        lines.append("%s %s" % (k, ",".join(str(s) for s in v.shape)))
    lines.append("parameters %d" % sum(p.numel() for p in net.parameters()))
    with open(os.path.join(FIXTURES, "nn_resnet_s_keys.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---- functional cases --------------------------------------------------------------

def functional_fixtures():
    torch.manual_seed(1)
    cases = {}

    def leaf(t):
        return t.to(torch.float32).double().requires_grad_(True)

    # cross entropy: class targets with label smoothing and an ignored class (torch's
    # ignore_index 2 = Lua's 3), one row of that class.
    logits = leaf(torch.randn(6, 5))
    target = torch.tensor([0, 4, 2, 1, 3, 2])
    loss = F.cross_entropy(logits, target, ignore_index=2, label_smoothing=0.1)
    loss.backward()
    cases["ce_smooth_ignore"] = dict(logits=logits, target=target, loss=loss, grad_logits=logits.grad)

    # default options, and the default ignore_index (-100 in torch and in Lua) on one row
    logits = leaf(torch.randn(5, 4))
    target = torch.tensor([1, -100, 3, 0, 2])
    loss = F.cross_entropy(logits, target)
    loss.backward()
    none = F.cross_entropy(logits, target, reduction="none")
    cases["ce_default"] = dict(logits=logits, target=target, loss=loss, grad_logits=logits.grad, loss_none=none)

    # K-dimensional: logits [N, C, d], target [N, d], summed
    logits = leaf(torch.randn(2, 4, 3))
    target = torch.tensor([[0, 3, 1], [2, 2, 0]])
    loss = F.cross_entropy(logits, target, reduction="sum")
    loss.backward()
    cases["ce_kdim"] = dict(logits=logits, target=target, loss=loss, grad_logits=logits.grad)

    # class probabilities as targets, with label smoothing
    logits = leaf(torch.randn(4, 5))
    probs = torch.softmax(torch.randn(4, 5), 1).to(torch.float32).double()
    loss = F.cross_entropy(logits, probs, label_smoothing=0.2)
    loss.backward()
    cases["ce_soft"] = dict(logits=logits, probs=probs, loss=loss, grad_logits=logits.grad)

    # embedding: weight [7, 3], ids [2, 4] (0-based), d sum(out * g) / d weight
    weight = leaf(torch.randn(7, 3))
    ids = torch.tensor([[0, 6, 2, 2], [5, 0, 1, 6]])
    out = F.embedding(ids, weight)
    g = torch.randn(out.shape, dtype=torch.float64)
    (out * g).sum().backward()
    cases["embedding"] = dict(weight=weight, ids=ids, out=out, g=g, grad_weight=weight.grad)

    # constant padding, last dim first; negative amounts crop
    x = leaf(torch.randn(2, 3, 4, 5))
    cases["pad"] = dict(x=x, out=F.pad(x, (1, 2, 0, 1), value=0.5), out_crop=F.pad(x, (-1, 1)))

    # rms_norm (written out: torch 1.13 has no F.rms_norm)
    x = leaf(torch.randn(3, 8))
    w = leaf(torch.randn(8))
    out = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    cases["rms_norm"] = dict(x=x, weight=w, out=out)

    # scaled dot-product attention, written out as torch 2's reference: causal mask is
    # ones(L, S).tril(0); a float mask is added to the scores.
    q, k, v = leaf(torch.randn(2, 3, 5, 4)), leaf(torch.randn(2, 3, 6, 4)), leaf(torch.randn(2, 3, 6, 2))
    scores = q @ k.transpose(-2, -1) / np.sqrt(4)
    causal = torch.ones(5, 6, dtype=torch.bool).tril(0)
    out = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v
    g = torch.randn(out.shape, dtype=torch.float64)
    (out * g).sum().backward()
    mask = torch.randn(5, 6).to(torch.float32).double()
    out_mask = torch.softmax(scores + mask, -1) @ v
    cases["sdpa"] = dict(q=q, k=k, v=v, out_causal=out, g=g, grad_q=q.grad, grad_k=k.grad,
                         grad_v=v.grad, mask=mask, out_mask=out_mask)

    # conv2d with padding='same' and dilation 2; max_pool2d's stride defaults to its kernel
    x = leaf(torch.randn(1, 2, 7, 7))
    w = leaf(torch.randn(3, 2, 3, 3))
    cases["conv_same"] = dict(x=x, weight=w, out=F.conv2d(x, w, padding="same", dilation=2))
    x = leaf(torch.randn(1, 2, 6, 6))
    cases["max_pool_default_stride"] = dict(x=x, out=F.max_pool2d(x, 2),
                                            out_avg=F.avg_pool2d(x, 3, padding=1, count_include_pad=False))

    # gelu with the tanh form, given as an option
    x = leaf(torch.randn(10))
    cases["gelu_tanh"] = dict(x=x, out=F.gelu(x, approximate="tanh"))

    with h5py.File(os.path.join(FIXTURES, "nn_functional.h5"), "w") as f:
        for case, values in cases.items():
            for name, t in values.items():
                arr = t.detach().numpy() if t.dtype == torch.int64 else f32(t)
                f.create_dataset("f/%s/%s" % (case, name), data=arr)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float32)
    os.makedirs(FIXTURES, exist_ok=True)
    resnet_fixtures()
    resnet_s_keys()
    functional_fixtures()
