#!/usr/bin/python3
"""Reference values for the COSINE pieces of ft.selftrain, computed with torch.

Run with Debian's python3-torch and python3-h5py:

    /usr/bin/python3 tests/gen/selftrain.py   # writes tests/fixtures/selftrain.h5

The formulas are written out here from the paper (Yu et al. 2021), independently of the Lua
code: pairwise terms are an explicit double loop, everything runs in float64 from the
float32-rounded inputs, and gradients come from torch.autograd. Layout (plain datasets; ft.load
joins the group path with dots, e.g. "soft_targets.t"):

    soft_targets/{p, cot, t, grad_p}                  power 2; grad of sum(t * cot)
    soft_targets_p3/{...}                             power 3
    sample_weights/{p, cot, xi, w, keep, grad_p}      grad of sum(w * cot)
    kl_loss/{logp, t, w, keep, loss, grad_logp, grad_t, grad_w}
    kl_default_keep/{...}                             no keep given: kept = w > 0
    contrastive_<case>/{features, labels | targets, w, keep, margin, loss, grad_features, grad_w}
        cases: scaled_l2 (hard labels), l2, cosine, soft (labels = argmax of soft targets)
    cosine_loss/{student_logits, features, teacher_probs, xi, lambda, margin,
                 loss, kl, contrastive, grad_logits, grad_features}

Labels are int64 and 1-based, as ft uses them.
"""
import math
import os

import h5py
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "selftrain.h5")
torch.manual_seed(20240917)


def f32(x):
    """float32-rounded copy in float64, so torch and ft start from identical inputs."""
    return x.float().double()


def leaf(x):
    return f32(x).detach().requires_grad_(True)


# ---- the formulas ----------------------------------------------------------------------------

def soft_targets(p, power):
    f = p.sum(dim=0)                     # soft frequency of each class over the batch
    t = p ** power / f
    return t / t.sum(dim=1, keepdim=True)


def sample_weights(p):
    c = p.shape[1]
    h = -(p * torch.log(p)).sum(dim=1)
    return 1 - h / math.log(c)


def kl_loss(logp, t, w, keep):
    kl = (t * (torch.log(t) - logp)).sum(dim=1)
    return (keep * w * kl).sum() / keep.sum()


def distance(vi, vj, kind):
    """(d, d^2) for one pair; d is only evaluated where needed (sqrt'(0) is infinite)."""
    if kind == "cosine":
        cos = (vi * vj).sum() / (vi.norm() * vj.norm())
        d = 1 - cos
        return d, d * d
    sq = ((vi - vj) ** 2).sum()
    if kind == "scaled_l2":
        sq = sq / vi.shape[0]
    return None, sq


def contrastive(v, labels, w, keep, margin, kind):
    n = v.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if not (keep[i] and keep[j]):
                continue
            d, sq = distance(v[i], v[j], kind)
            if labels[i] == labels[j]:
                term = sq
            else:
                if d is None:
                    d = torch.sqrt(sq)
                term = torch.clamp(margin - d, min=0) ** 2
            total = total + w[i] * w[j] * term
    nk = float(sum(bool(k) for k in keep))
    return total / (nk * nk)


# ---- cases -------------------------------------------------------------------------------------

out = {}


def put(case, **tensors):
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor):
            t = t.detach()
            out[f"{case}/{name}"] = t.numpy().astype("int64" if t.dtype == torch.int64 else "float32")
        else:
            out[f"{case}/{name}"] = torch.tensor([t], dtype=torch.float64).numpy().astype("float32")


def probs(n, c, scale):
    return torch.softmax(torch.randn(n, c) * scale, dim=1)


def case_soft_targets(name, power):
    p = leaf(probs(6, 4, 2.0))
    cot = f32(torch.randn(6, 4))
    t = soft_targets(p, power)
    (t * cot).sum().backward()
    put(name, p=p, cot=cot, t=t, grad_p=p.grad, power=power)


case_soft_targets("soft_targets", 2)
case_soft_targets("soft_targets_p3", 3)

# sample weights: a near one-hot row, a near-uniform row, the rest random
p0 = probs(6, 4, 2.0)
p0[0] = torch.tensor([0.97, 0.01, 0.01, 0.01])
p0[1] = torch.tensor([0.26, 0.25, 0.25, 0.24])
p = leaf(p0)
xi = 0.5
cot = f32(torch.randn(6))
w = sample_weights(p)
assert (w - xi).abs().min() > 1e-3, "a weight too close to xi"
(w * cot).sum().backward()
put("sample_weights", p=p, cot=cot, xi=xi, w=w, keep=(w > xi).double(), grad_p=p.grad)

# KL loss with an explicit keep mask, and with the default (w > 0)
logp = leaf(torch.log_softmax(torch.randn(6, 4), dim=1))
t = leaf(soft_targets(f32(probs(6, 4, 1.5)), 2))
w = leaf(torch.rand(6) * 0.8 + 0.1)
keep = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64)
loss = kl_loss(logp, t, w, keep)
loss.backward()
put("kl_loss", logp=logp, t=t, w=w, keep=keep, loss=loss, grad_logp=logp.grad, grad_t=t.grad,
    grad_w=w.grad)

logp = leaf(torch.log_softmax(torch.randn(5, 3), dim=1))
t = leaf(soft_targets(f32(probs(5, 3, 1.5)), 2))
w0 = torch.rand(5) * 0.8 + 0.1
w0[2] = 0.0
w = leaf(w0)
loss = kl_loss(logp, t, w, (w > 0).double())
loss.backward()
put("kl_default_keep", logp=logp, t=t, w=w, loss=loss, grad_logp=logp.grad, grad_t=t.grad, grad_w=w.grad)


def case_contrastive(name, kind, margin, scale, soft=False):
    n, d, c = 8, 5, 3
    v = leaf(torch.randn(n, d) * scale)
    if soft:
        targets = f32(soft_targets(f32(probs(n, c, 2.0)), 2))
        labels = targets.argmax(dim=1)
    else:
        labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1])
    w = leaf(torch.rand(n) * 0.8 + 0.2)
    keep = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.float64)
    # every different-label pair must stay clear of the hinge's kink, and some must be inside it
    active = 0
    with torch.no_grad():
        for i in range(n):
            for j in range(n):
                if labels[i] != labels[j] and keep[i] and keep[j]:
                    dd, sq = distance(v[i], v[j], kind)
                    dd = torch.sqrt(sq) if dd is None else dd
                    assert abs(margin - dd) > 1e-3, f"{name}: pair ({i},{j}) at the margin"
                    active += int(dd < margin)
    assert active >= 4, f"{name}: only {active} active hinge pairs"
    loss = contrastive(v, labels, w, keep, margin, kind)
    loss.backward()
    fields = dict(features=v, w=w, keep=keep, margin=margin, loss=loss, grad_features=v.grad, grad_w=w.grad)
    if soft:
        fields["targets"] = targets
    else:
        fields["labels"] = labels + 1
    put(name, **fields)


case_contrastive("contrastive_scaled_l2", "scaled_l2", 1.0, 0.6)
case_contrastive("contrastive_l2", "l2", 2.5, 0.6)
case_contrastive("contrastive_cosine", "cosine", 0.9, 1.0)
case_contrastive("contrastive_soft", "scaled_l2", 1.0, 0.6, soft=True)

# one full COSINE objective: KL to the sharpened teacher + lambda * regulariser on the student
n, c, d = 8, 3, 5
student = leaf(torch.randn(n, c))
feats = leaf(torch.randn(n, d) * 0.6)
teacher = f32(probs(n, c, 2.5))
xi, lam, margin = 0.3, 0.5, 1.0
t = soft_targets(teacher, 2)
w = sample_weights(teacher)
assert (w - xi).abs().min() > 1e-3, "a weight too close to xi"
keep = (w > xi).double()
assert 2 <= keep.sum() < n
kl = kl_loss(torch.log_softmax(student, dim=1), t, w, keep)
reg = contrastive(feats, t.argmax(dim=1), w, keep, margin, "scaled_l2")
loss = kl + lam * reg
loss.backward()
put("cosine_loss", student_logits=student, features=feats, teacher_probs=teacher, xi=xi, **{"lambda": lam},
    margin=margin, loss=loss, kl=kl, contrastive=reg, grad_logits=student.grad, grad_features=feats.grad)

with h5py.File(OUT, "w") as f:
    for key, value in sorted(out.items()):
        f.create_dataset(key, data=value)
print(f"wrote {len(out)} datasets to {OUT}")
