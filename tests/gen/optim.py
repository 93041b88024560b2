#!/usr/bin/python3
"""Reference values for ft.optim, computed with torch.optim.

Run with Debian's python3-torch and python3-h5py:

    /usr/bin/python3 tests/gen/optim.py       # writes tests/fixtures/optim.h5

Layout (plain float32 datasets; ft.load joins the group path with dots):

    init/<param>                 parameters of a 2-layer MLP (fc1: 4 -> 6, fc2: 6 -> 3)
    grads/<k>/<param>            the gradients given before step k (k = 1, 2, 3); step 2
                                 has no gradient for fc2.bias (it must be skipped)
    <case>/step<k>/<param>       parameters after k steps of the case's optimizer
    clip/<case>/total            [1] total norm returned by clip_grad_norm_
    clip/<case>/<param>          the gradients after clipping (absent: grad was None)
    sched/<case>/lr              [steps + 1, groups] lr of each group after construction
                                 and after each scheduler step
    sched/<case>/momentum        the same for the momentum (or beta1) cycled by OneCycleLR

The optimizer settings of each case are listed in OPTIMIZERS / CLIPS / SCHEDULES below;
tests/spec/optim_spec.lua repeats them.
"""
import os
import warnings

import h5py
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "optim.h5")
NAMES = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
STEPS = 3

torch.manual_seed(20240611)
model = torch.nn.Sequential()
model.add_module("fc1", torch.nn.Linear(4, 6))
model.add_module("fc2", torch.nn.Linear(6, 3))
INIT = {n: p.detach().clone() for n, p in model.named_parameters()}
GRADS = []
for k in range(STEPS):
    g = {n: torch.randn_like(INIT[n]) * 0.5 for n in NAMES}
    if k == 1:
        g["fc2.bias"] = None
    GRADS.append(g)

# name -> (torch class, groups as lists of (param names, group options), defaults)
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, None, dict(lr=0.1)),
    "sgd_momentum": (torch.optim.SGD, None, dict(lr=0.1, momentum=0.9)),
    "sgd_nesterov": (torch.optim.SGD, None, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgd_dampening": (torch.optim.SGD, None, dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=1e-3)),
    "adam": (torch.optim.Adam, None, dict(lr=1e-2)),
    "adam_wd": (torch.optim.Adam, None, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adam_amsgrad": (torch.optim.Adam, None, dict(lr=1e-2, amsgrad=True)),
    "adamw": (torch.optim.AdamW, None, dict(lr=1e-2, weight_decay=0.1)),
    "adamw_amsgrad": (torch.optim.AdamW, None, dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
    "groups_sgd": (torch.optim.SGD,
                   [(["fc1.weight", "fc1.bias"], dict(lr=0.1, weight_decay=0.01)),
                    (["fc2.weight", "fc2.bias"], dict(lr=0.02))],
                   dict(lr=0.05, momentum=0.9)),
    "groups_adamw": (torch.optim.AdamW,
                     [(["fc1.weight", "fc2.weight"], dict(weight_decay=0.1)),
                      (["fc1.bias", "fc2.bias"], dict(weight_decay=0.0, lr=5e-3))],
                     dict(lr=1e-2)),
}

# name -> (gradient set, max_norm, norm_type)
CLIPS = {
    "l2": (0, 1.0, 2.0),
    "l1": (0, 2.0, 1.0),
    "inf": (0, 0.5, float("inf")),
    "p3": (0, 0.5, 3.0),
    "unclipped": (0, 100.0, 2.0),
    "l2_partial": (1, 1.0, 2.0),
}

SCHED_STEPS = 20
GROUP_LRS = [0.1, 0.01]


def params_from_init():
    return {n: INIT[n].clone().requires_grad_(True) for n in NAMES}


def run_optimizer(cls, groups, defaults):
    ps = params_from_init()
    if groups is None:
        opt = cls([ps[n] for n in NAMES], **defaults)
    else:
        opt = cls([dict(params=[ps[n] for n in names], **o) for names, o in groups], **defaults)
    out = []
    for k in range(STEPS):
        for n in NAMES:
            g = GRADS[k][n]
            ps[n].grad = None if g is None else g.clone()
        opt.step()
        out.append({n: ps[n].detach().clone() for n in NAMES})
    return out


def run_clip(gset, max_norm, norm_type):
    ps = params_from_init()
    for n in NAMES:
        g = GRADS[gset][n]
        ps[n].grad = None if g is None else g.clone()
    with_grad = [ps[n] for n in NAMES if ps[n].grad is not None]
    total = torch.nn.utils.clip_grad_norm_(with_grad, max_norm, norm_type)
    return float(total), {n: ps[n].grad.clone() for n in NAMES if ps[n].grad is not None}


def sched_optimizer(kind="sgd"):
    groups = [dict(params=[torch.zeros(2, requires_grad=True)], lr=lr) for lr in GROUP_LRS]
    if kind == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def momentum_of(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def run_schedule(make, kind="sgd", steps=SCHED_STEPS):
    opt = sched_optimizer(kind)
    sched = make(opt)
    lrs, moms = [sched.get_last_lr()], [momentum_of(opt)]
    for _ in range(steps):
        opt.step()  # no grads: keeps torch's call-order check quiet
        sched.step()
        lrs.append(sched.get_last_lr())
        moms.append(momentum_of(opt))
    return torch.tensor(lrs, dtype=torch.float32), torch.tensor(moms, dtype=torch.float32)


L = torch.optim.lr_scheduler
SCHEDULES = {
    "steplr": lambda o: L.StepLR(o, step_size=3, gamma=0.5),
    "cosine": lambda o: L.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
    "linear": lambda o: L.LinearLR(o, start_factor=0.25, total_iters=5),
    "warmup_cosine": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.25, total_iters=5),
            L.CosineAnnealingLR(o, T_max=15, eta_min=1e-4)], milestones=[5]),
    "onecycle": lambda o: L.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=SCHED_STEPS),
}


def main():
    # SequentialLR steps its second schedule with an explicit epoch, which warns
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.optim.lr_scheduler")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with h5py.File(OUT, "w") as f:
        def put(path, t):
            f.create_dataset(path, data=t.detach().to(torch.float32).numpy())

        for n in NAMES:
            put(f"init/{n.replace('.', '/')}", INIT[n])
        for k, g in enumerate(GRADS):
            for n in NAMES:
                if g[n] is not None:
                    put(f"grads/{k + 1}/{n.replace('.', '/')}", g[n])

        for case, (cls, groups, defaults) in OPTIMIZERS.items():
            for k, ps in enumerate(run_optimizer(cls, groups, defaults)):
                for n in NAMES:
                    put(f"{case}/step{k + 1}/{n.replace('.', '/')}", ps[n])

        for case, (gset, max_norm, norm_type) in CLIPS.items():
            total, grads = run_clip(gset, max_norm, norm_type)
            put(f"clip/{case}/total", torch.tensor([total]))
            for n, g in grads.items():
                put(f"clip/{case}/{n.replace('.', '/')}", g)

        for case, make in SCHEDULES.items():
            steps = SCHED_STEPS - 1 if case == "onecycle" else SCHED_STEPS
            lrs, moms = run_schedule(make, steps=steps)
            put(f"sched/{case}/lr", lrs)
            if case == "onecycle":
                put(f"sched/{case}/momentum", moms)
        lrs, moms = run_schedule(lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=SCHED_STEPS,
                                                        three_phase=True, anneal_strategy="linear",
                                                        pct_start=0.25),
                                 kind="adam", steps=SCHED_STEPS - 1)
        put("sched/onecycle3_adam/lr", lrs)
        put("sched/onecycle3_adam/momentum", moms)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
