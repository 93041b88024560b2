#!/usr/bin/python3
"""References for the preference-tuning losses (ft.pref), for tests/spec/pref_spec.lua.

Run with Debian's python3-torch (1.13):

    /usr/bin/python3 tests/gen/pref.py

Each loss is computed here with torch from its published formula, as TRL's trainers write it
(DPOTrainer: sigmoid with conservative label smoothing, robust, hinge, ipo; CPOTrainer with
loss_type "simpo"; ORPOTrainer; KTOTrainer: kto and apo_zero_unpaired; RewardTrainer;
GRPOTrainer: advantages and the grpo / bnpo / dapo / dr_grpo losses), in float64 from inputs
rounded to float32. Writes tests/fixtures/pref/:

    cases.json          one entry per case: {"fn": "dpo_loss", "options": {scalar options},
                        "inputs": [names of tensor options], "grads": [names], "loss": number,
                        "metrics": {name: number}}; for group_advantages "G", "options" and
                        "stats" instead of a loss
    cases.safetensors   "<case>.<name>": the tensor inputs (float32), "<case>.grad.<name>" the
                        gradient of the loss with respect to that input, "<case>.advantages"
    logps.safetensors   log-probs of tokens from the logits of the GPT-2 golden model
                        (tests/fixtures/golden/hf_gpt2/reference.safetensors, logits2 of
                        input_ids2): "input_ids" (0-based, as HF), "mask" (1 on the scored
                        tokens, 0 on a prompt and on padding), "logps" [2] and "counts" [2] (torch's
                        log_softmax and gather, HF's shift: token t scored by the logits at t - 1),
                        "token_logps" [2, 23] (every token), "token_logps_t07" (logits / 0.7),
                        "weights" [2] and "grad_logits" [2, 24, 256], the gradient of
                        sum(weights * logps) with respect to the logits
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "pref")
GOLDEN = os.path.join(ROOT, "fixtures", "golden", "hf_gpt2", "reference.safetensors")

torch.manual_seed(20250101)


# ---- files ---------------------------------------------------------------------------------

def save(path, tensors):
    """A safetensors file of float32 / int64 tensors (name -> torch tensor), names sorted."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype == torch.float64:
            t = t.float()
        code = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    os.replace(tmp, path)


def load(path):
    """name -> torch tensor of a safetensors file of F32 / I64 / I32 tensors (I32 read as int64)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64, "I32": np.int32}[h["dtype"]]
        arr = np.frombuffer(blob[8 + n + a:8 + n + b], dtype=dt).reshape(h["shape"])
        t = torch.from_numpy(arr.copy())
        out[name] = t.long() if h["dtype"] == "I32" else t
    return out


# ---- inputs ---------------------------------------------------------------------------------

def f32(t):
    """t rounded to float32, then held in float64 (the value the runtime reads, exactly)."""
    return torch.as_tensor(t, dtype=torch.float32).double()


def uniform(n, lo, hi):
    return f32(lo + (hi - lo) * torch.rand(n, dtype=torch.float64))


def counts(n, lo, hi):
    return f32(torch.randint(lo, hi + 1, (n,)).double())


CASES, TENSORS = {}, {}


def add_case(name, fn, options, inputs, grads, loss_fn):
    """Runs loss_fn(**leaves) -> (loss, metrics) in float64, records the case."""
    leaves = {k: v.clone().requires_grad_(k in grads) for k, v in inputs.items()}
    loss, metrics = loss_fn(**leaves)
    loss.backward()
    for k, v in inputs.items():
        TENSORS[f"{name}.{k}"] = v
    for k in grads:
        TENSORS[f"{name}.grad.{k}"] = leaves[k].grad
    CASES[name] = {"fn": fn, "options": options, "inputs": sorted(inputs), "grads": sorted(grads),
                   "loss": loss.item(), "metrics": {k: float(v) for k, v in metrics.items() if v is not None}}


def pair_metrics(rc, rr, lc, lr):
    rc, rr = rc.detach(), rr.detach()
    return {"rewards_chosen": rc.mean().item(), "rewards_rejected": rr.mean().item(),
            "rewards_accuracies": (rc > rr).double().mean().item(), "rewards_margins": (rc - rr).mean().item(),
            "logps_chosen": lc.detach().mean().item(), "logps_rejected": lr.detach().mean().item()}


# ---- DPO (TRL's DPOTrainer) ------------------------------------------------------------------

def dpo(beta, loss_type, ls):
    def fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens):
        chosen = policy_chosen - ref_chosen
        rejected = policy_rejected - ref_rejected
        d = chosen - rejected
        if loss_type == "sigmoid":
            losses = -(1 - ls) * F.logsigmoid(beta * d) - ls * F.logsigmoid(-beta * d)
        elif loss_type == "robust":
            losses = (-(1 - ls) * F.logsigmoid(beta * d) + ls * F.logsigmoid(-beta * d)) / (1 - 2 * ls)
        elif loss_type == "hinge":
            losses = torch.relu(1 - beta * d)
        else:  # ipo: log-ratios averaged per completion token
            dd = chosen / chosen_tokens - rejected / rejected_tokens
            losses = (dd - 1 / (2 * beta)) ** 2
        return losses.mean(), pair_metrics(beta * chosen, beta * rejected, policy_chosen, policy_rejected)
    return fn


def dpo_inputs(B, spread):
    pc = uniform(B, -60, -5)
    pr = uniform(B, -60, -5)
    return {"policy_chosen": pc, "policy_rejected": pr,
            "ref_chosen": f32(pc + spread * torch.randn(B, dtype=torch.float64)),
            "ref_rejected": f32(pr + spread * torch.randn(B, dtype=torch.float64)),
            "chosen_tokens": counts(B, 3, 30), "rejected_tokens": counts(B, 3, 30)}


for loss_type, beta, ls in [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("sigmoid", 0.1, 0.1),
                            ("sigmoid", 0.3, 0.3), ("robust", 0.1, 0.0), ("robust", 0.1, 0.1),
                            ("robust", 0.5, 0.4), ("hinge", 0.1, 0.0), ("hinge", 0.5, 0.0),
                            ("ipo", 0.1, 0.0), ("ipo", 0.5, 0.0)]:
    name = f"dpo_{loss_type}_b{beta}_ls{ls}".replace(".", "p")
    add_case(name, "dpo_loss", {"beta": beta, "loss_type": loss_type, "label_smoothing": ls},
             dpo_inputs(6, 3.0), ["policy_chosen", "policy_rejected"], dpo(beta, loss_type, ls))

# the policy at its reference (D = 0: logsigmoid's gradient is 1/2 there)
x = dpo_inputs(4, 0.0)
x["ref_chosen"], x["ref_rejected"] = x["policy_chosen"].clone(), x["policy_rejected"].clone()
add_case("dpo_sigmoid_at_reference", "dpo_loss", {"beta": 0.1}, x, ["policy_chosen", "policy_rejected"],
         dpo(0.1, "sigmoid", 0.0))
# margins far out (beta D = +-150 and more): no overflow
x = dpo_inputs(4, 0.0)
x["ref_chosen"] = f32(x["policy_chosen"] + torch.tensor([300.0, -300.0, 40.0, -1000.0], dtype=torch.float64))
add_case("dpo_sigmoid_extreme", "dpo_loss", {"beta": 0.5, "label_smoothing": 0.2}, x,
         ["policy_chosen", "policy_rejected"], dpo(0.5, "sigmoid", 0.2))


# ---- SimPO (TRL's CPOTrainer, loss_type "simpo") ---------------------------------------------

def simpo(beta, gamma, ls, cpo_alpha):
    def fn(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens):
        a, b = policy_chosen / chosen_tokens, policy_rejected / rejected_tokens
        logits = (a - b) - gamma / beta          # TRL: simpo_gamma / beta subtracted, then scaled
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
        nll = -policy_chosen.sum() / chosen_tokens.sum() if cpo_alpha > 0 else torch.zeros((), dtype=torch.float64)
        m = pair_metrics(beta * a, beta * b, a, b)
        m["nll_loss"] = nll.item()
        return losses.mean() + cpo_alpha * nll, m
    return fn


def completion_inputs(B):
    nc, nr = counts(B, 3, 30), counts(B, 3, 30)
    return {"policy_chosen": f32(nc * uniform(B, -3, -0.05)), "policy_rejected": f32(nr * uniform(B, -3, -0.05)),
            "chosen_tokens": nc, "rejected_tokens": nr}


for beta, gamma, ls, alpha in [(2.0, 0.5, 0.0, 0.0), (2.0, 0.5, 0.2, 0.0), (2.5, 0.0, 0.0, 0.0),
                               (2.0, 1.4, 0.0, 1.0)]:
    name = f"simpo_b{beta}_g{gamma}_ls{ls}_a{alpha}".replace(".", "p")
    add_case(name, "simpo_loss", {"beta": beta, "gamma": gamma, "label_smoothing": ls, "cpo_alpha": alpha},
             completion_inputs(6), ["policy_chosen", "policy_rejected"], simpo(beta, gamma, ls, alpha))


# ---- ORPO (TRL's ORPOTrainer) -----------------------------------------------------------------

def log1mexp(x):
    """log(1 - exp(x)) for x < 0, branching at -ln 2 (Maechler's note)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(beta):
    def fn(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens):
        a, b = policy_chosen / chosen_tokens, policy_rejected / rejected_tokens
        log_odds = (a - b) - (log1mexp(a) - log1mexp(b))
        ratio = F.logsigmoid(log_odds)
        nll = -policy_chosen.sum() / chosen_tokens.sum()
        m = pair_metrics(beta * a, beta * b, a, b)
        m.update(nll_loss=nll.item(), log_odds_ratio=ratio.mean().item(), log_odds_chosen=log_odds.mean().item())
        return nll - beta * ratio.mean(), m
    return fn


for beta in (0.1, 0.5):
    add_case(f"orpo_b{beta}".replace(".", "p"), "orpo_loss", {"beta": beta}, completion_inputs(6),
             ["policy_chosen", "policy_rejected"], orpo(beta))
# mean log-probs near 0 (1 - p cancels) and on both sides of the branches
nc = f32(torch.tensor([10.0, 4.0, 7.0, 12.0, 3.0, 20.0], dtype=torch.float64))
nr = f32(torch.tensor([5.0, 9.0, 6.0, 8.0, 11.0, 2.0], dtype=torch.float64))
x = {"policy_chosen": f32(nc * torch.tensor([-1e-4, -3e-3, -0.45, -0.55, -0.7, -30.0], dtype=torch.float64)),
     "policy_rejected": f32(nr * torch.tensor([-2e-2, -0.6, -0.51, -0.3, -5.0, -1e-3], dtype=torch.float64)),
     "chosen_tokens": nc, "rejected_tokens": nr}
add_case("orpo_near_zero", "orpo_loss", {"beta": 0.2}, x, ["policy_chosen", "policy_rejected"], orpo(0.2))


# ---- KTO (TRL's KTOTrainer) ---------------------------------------------------------------------

def kto(beta, wd, wu, loss_type, labels, kl_value):
    lab = torch.tensor(labels, dtype=torch.bool)

    def fn(policy, reference, kl=None):
        z0 = torch.zeros((), dtype=torch.float64)
        if loss_type == "kto":
            z0 = (kl.detach().mean() if kl is not None else torch.tensor(kl_value, dtype=torch.float64)).clamp(min=0)
        r = policy - reference
        rc, rr = r[lab], r[~lab]
        if loss_type == "kto":
            lc = 1 - torch.sigmoid(beta * (rc - z0))
            lr = 1 - torch.sigmoid(beta * (z0 - rr))
        else:
            lc = 1 - torch.sigmoid(beta * rc)
            lr = torch.sigmoid(beta * rr)
        losses = torch.cat((wd * lc, wu * lr), 0)
        m = {"kl": z0.item()}
        if lab.any():
            m["rewards_chosen"] = (beta * rc).mean().item()
            m["logps_chosen"] = policy[lab].mean().item()
        if (~lab).any():
            m["rewards_rejected"] = (beta * rr).mean().item()
            m["logps_rejected"] = policy[~lab].mean().item()
        if lab.any() and (~lab).any():
            m["rewards_margins"] = m["rewards_chosen"] - m["rewards_rejected"]
        return losses.mean(), m
    return fn


def kto_case(name, B, labels, beta=0.1, wd=1.0, wu=1.0, loss_type="kto", kl_shift=0.5, kl_number=None):
    policy = uniform(B, -60, -5)
    inputs = {"policy": policy, "reference": f32(policy + 3 * torch.randn(B, dtype=torch.float64))}
    options = {"beta": beta, "desirable_weight": wd, "undesirable_weight": wu, "loss_type": loss_type,
               "labels": labels}
    if loss_type == "kto":
        if kl_number is None:
            inputs["kl"] = f32(kl_shift + 2 * torch.randn(B, dtype=torch.float64))
        else:
            options["kl"] = kl_number
    add_case(name, "kto_loss", options, inputs, ["policy"], kto(beta, wd, wu, loss_type, labels, kl_number))


kto_case("kto_mixed", 6, [True, False, True, True, False, False])
kto_case("kto_weighted", 6, [True, False, False, False, True, False], beta=0.5, wd=1.33, wu=0.75, kl_shift=3.0)
kto_case("kto_negative_kl", 5, [False, True, False, True, True], kl_shift=-6.0)
kto_case("kto_kl_number", 4, [True, False, True, False], beta=0.2, kl_number=1.25)
kto_case("kto_all_desirable", 4, [True, True, True, True], beta=0.3)
kto_case("kto_apo_zero_unpaired", 6, [True, False, True, False, False, True], beta=0.2,
         loss_type="apo_zero_unpaired")


# ---- reward model (TRL's RewardTrainer) --------------------------------------------------------

def reward(margin_number, coef):
    def fn(chosen, rejected, margin=None):
        d = chosen - rejected
        if margin is not None:
            d = d - margin
        elif margin_number is not None:
            d = d - margin_number
        loss = -F.logsigmoid(d).mean()
        if coef is not None:
            loss = loss + coef * ((chosen + rejected) ** 2).mean()
        allr = torch.cat((chosen.detach(), rejected.detach()))
        m = {"accuracy": (chosen > rejected).double().mean().item(), "margin": (chosen - rejected).mean().item(),
             "mean_reward": allr.mean().item(), "min_reward": allr.min().item(), "max_reward": allr.max().item(),
             "rewards_chosen": chosen.mean().item(), "rewards_rejected": rejected.mean().item()}
        return loss, m
    return fn


for name, margin, number, coef in [("reward_plain", False, None, None), ("reward_margin", True, None, None),
                                   ("reward_margin_number", False, 0.75, None), ("reward_centered", True, None, 0.01)]:
    B = 6
    inputs = {"chosen": f32(2 * torch.randn(B, dtype=torch.float64)),
              "rejected": f32(2 * torch.randn(B, dtype=torch.float64))}
    options = {}
    if margin:
        inputs["margin"] = f32(torch.rand(B, dtype=torch.float64) * 2)
    if number is not None:
        options["margin"] = number
    if coef is not None:
        options["center_rewards_coefficient"] = coef
    add_case(name, "reward_loss", options, inputs, ["chosen", "rejected"], reward(number, coef))


# ---- GRPO (TRL's GRPOTrainer) ---------------------------------------------------------------------

def advantages(rewards, G, scale):
    groups = rewards.view(-1, G)
    mean = groups.mean(1).repeat_interleave(G)
    gstd = groups.std(1).repeat_interleave(G)             # unbiased, as torch.std
    std = rewards.std().expand_as(rewards) if scale == "batch" else gstd
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    stats = {"reward": rewards.mean().item(), "reward_std": rewards.std().item(),
             "frac_reward_zero_std": torch.isclose(std, torch.zeros_like(std)).double().mean().item()}
    return adv, stats


rewards = f32(torch.tensor([1.0, 0.0, 0.5, 2.0, 0.3, 0.3, 0.3, 0.3, -1.0, 2.5, 0.25, 0.0], dtype=torch.float64))
for scale in ("group", "batch", "none"):
    adv, stats = advantages(rewards, 4, scale)
    name = f"advantages_{scale}"
    TENSORS[name + ".rewards"] = rewards
    TENSORS[name + ".advantages"] = adv
    CASES[name] = {"fn": "group_advantages", "G": 4, "options": {"scale": scale}, "stats": stats}


def grpo(loss_type, beta, eps_low, eps_high, level, items, max_len):
    def fn(logps_new, logps_old, logps_ref, advantages, mask):
        A = advantages.unsqueeze(1)
        log_ratio = logps_new - logps_old
        if level == "sequence":
            log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
        coef_1 = torch.exp(log_ratio)
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        per_token = -torch.min(coef_1 * A, coef_2 * A)
        kl = None
        if beta != 0:
            kl = torch.exp(logps_ref - logps_new) - (logps_ref - logps_new) - 1
            per_token = per_token + beta * kl
        if loss_type == "grpo":
            loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        elif loss_type == "bnpo":
            loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
        elif loss_type == "dapo":
            loss = (per_token * mask).sum() / (items if items is not None else mask.sum().clamp(min=1.0))
        else:
            loss = (per_token * mask).sum() / (per_token.size(0) * (max_len or mask.size(1)))

        def masked_mean(x):
            if x.shape[1] == 1:
                return x.double().mean().item()
            return ((x.double() * mask).sum() / mask.sum()).item()
        c = coef_1.detach()
        low = (c < 1 - eps_low) & (A < 0)
        high = (c > 1 + eps_high) & (A > 0)
        m = {"clip_ratio_low_mean": masked_mean(low), "clip_ratio_high_mean": masked_mean(high),
             "clip_ratio_region_mean": masked_mean(low | high)}
        if kl is not None:
            m["kl"] = masked_mean(kl.detach())
        return loss, m
    return fn


B, T = 5, 7
new = f32(-3 * torch.rand(B, T, dtype=torch.float64) - 0.05)
grpo_inputs = {
    "logps_new": new,
    "logps_old": f32(new + 0.3 * torch.randn(B, T, dtype=torch.float64)),
    "logps_ref": f32(new + 0.25 * torch.randn(B, T, dtype=torch.float64)),
    "advantages": f32(torch.tensor([1.2, -0.7, 0.0, -1.5, 0.4], dtype=torch.float64)),
    "mask": f32(torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0],
                              [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], dtype=torch.float64)),
}
for name, loss_type, beta, eps_high, level, items, max_len in [
        ("grpo_grpo", "grpo", 0.04, None, "token", None, None),
        ("grpo_bnpo", "bnpo", 0.04, None, "token", None, None),
        ("grpo_dapo", "dapo", 0.04, None, "token", None, None),
        ("grpo_dapo_items", "dapo", 0.04, None, "token", 40, None),
        ("grpo_dr_grpo", "dr_grpo", 0.04, None, "token", None, None),
        ("grpo_dr_grpo_len", "dr_grpo", 0.04, None, "token", None, 12),
        ("grpo_no_kl", "grpo", 0.0, None, "token", None, None),
        ("grpo_clip_higher", "dapo", 0.0, 0.28, "token", None, None),
        ("grpo_sequence", "grpo", 0.04, None, "sequence", None, None)]:
    options = {"loss_type": loss_type, "beta": beta, "epsilon": 0.2, "importance_sampling_level": level}
    if eps_high is not None:
        options["epsilon_high"] = eps_high
    if items is not None:
        options["num_items_in_batch"] = items
    if max_len is not None:
        options["max_completion_length"] = max_len
    inputs = dict(grpo_inputs)
    if beta == 0:
        del inputs["logps_ref"]
    fn = grpo(loss_type, beta, 0.2, eps_high if eps_high is not None else 0.2, level, items, max_len)
    add_case(name, "grpo_loss", options, inputs, ["logps_new"],
             (lambda f: lambda **kw: f(kw["logps_new"], kw["logps_old"], kw.get("logps_ref"), kw["advantages"],
                                      kw["mask"]))(fn))


# ---- logps of the GPT-2 golden logits ------------------------------------------------------------

def logps_fixture():
    ref = load(GOLDEN)
    ids, logits = ref["input_ids2"], ref["logits2"].double()
    B, T, V = logits.shape
    mask = torch.zeros(B, T, dtype=torch.float64)
    mask[0, 6:] = 1                 # a prompt of 6 tokens, then the completion
    mask[1, 4:18] = 1               # a prompt of 4, a completion of 14, 6 of padding
    leaf = logits.clone().requires_grad_(True)
    logp = F.log_softmax(leaf, dim=-1)
    per = logp[:, :-1, :].gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)    # [B, T-1]
    lp = (per * mask[:, 1:]).sum(1)
    weights = torch.tensor([1.0, -0.5], dtype=torch.float64)
    (weights * lp).sum().backward()
    t07 = F.log_softmax(logits / 0.7, dim=-1)[:, :-1, :].gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    save(os.path.join(OUT, "logps.safetensors"), {
        "input_ids": ids, "mask": mask, "logps": lp, "counts": mask[:, 1:].sum(1), "token_logps": per,
        "token_logps_t07": t07, "weights": weights, "grad_logits": leaf.grad})


os.makedirs(OUT, exist_ok=True)
logps_fixture()
save(os.path.join(OUT, "cases.safetensors"), TENSORS)
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(CASES, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"wrote {len(CASES)} cases to {OUT}")
