#!/usr/bin/python3
"""Reference data for models/resnet.lua's torchvision ResNets, from torchvision itself.

Run with Debian's python3-torch and python3-torchvision:

    /usr/bin/python3 tests/gen/resnet.py

Writes into tests/fixtures/:

    resnet18.safetensors            state_dict of torchvision.models.resnet18(num_classes=10)
                                    with a fixed seed and non-trivial BatchNorm statistics and
                                    affine parameters (so eval-mode BatchNorm is exercised).
                                    Floating tensors are stored as F16 (about 22 MB instead of
                                    45 MB in F32), num_batches_tracked as I64.
    resnet18_reference.safetensors  "input" [2,3,64,64] (F32) and "logits" [2,10] (F32): the
                                    eval-mode forward of that model, run in float64 from the
                                    F16-rounded weights, so the reader sees exactly the weights
                                    the reference used.
    resnet_keys.json                for resnet18/34/50 with 1000 classes: the parameter count
                                    and the state_dict as [name, shape] pairs in torch's order.

The safetensors files are written by hand (8-byte little-endian header length, JSON header,
data), as the format describes, since the safetensors package is not a Debian package.
"""
import json
import os
import struct

import torch
import torchvision

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
FIXTURES = os.path.join(HERE, "fixtures")

DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def save_safetensors(path, tensors):
    """tensors: ordered dict name -> contiguous CPU tensor of a dtype in DTYPES."""
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()   # numpy writes the machine's little-endian order
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def perturb_batchnorm(model, gen):
    """Running statistics from a few training-mode batches (so the activations stay in a sane
    range through the 18 layers), then random shifts of them and of the affine parameters."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None                   # cumulative average over the batches
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64, generator=gen))
        for bn in bns:
            c = bn.num_features
            bn.momentum = 0.1
            bn.weight.copy_(0.5 + torch.rand(c, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(c, generator=gen))
            bn.running_mean.add_(0.1 * torch.randn(c, generator=gen))
            bn.running_var.mul_(0.75 + 0.5 * torch.rand(c, generator=gen))
            bn.num_batches_tracked.fill_(17)


def resnet18_fixtures():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    perturb_batchnorm(model, gen)
    model.eval()

    # Round every floating tensor to F16 once: the file holds these, the reference uses them.
    state = model.state_dict()
    stored = {}
    for name, t in state.items():
        stored[name] = t.half() if t.is_floating_point() else t.clone()
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in stored.items()})
    save_safetensors(os.path.join(FIXTURES, "resnet18.safetensors"), stored)

    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        logits = model.double()(x.double()).float()
    save_safetensors(os.path.join(FIXTURES, "resnet18_reference.safetensors"),
                     {"input": x, "logits": logits})
    print("resnet18 logits: max |logit| %.3f" % logits.abs().max().item())


def key_lists():
    out = {}
    for arch in ("resnet18", "resnet34", "resnet50"):
        model = getattr(torchvision.models, arch)(weights=None)
        out[arch] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        }
    with open(os.path.join(FIXTURES, "resnet_keys.json"), "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    for arch, v in out.items():
        print("%s: %d parameters, %d state_dict entries" % (arch, v["parameters"], len(v["state_dict"])))


if __name__ == "__main__":
    torch.set_num_threads(1)
    resnet18_fixtures()
    key_lists()
