#!/usr/bin/python3
"""PyTorch twin of scripts/bench/resnet_step.lua: times ResNet-S training steps.

The model is ftlua's "resnet-s" (bindings/lua/ft/models/resnet.lua) written out with
torchvision's structure and parameter names: stem conv3x3(1->32, stride 1, padding 1, no bias) +
BatchNorm + ReLU, no max-pool; three stages of two BasicBlocks, widths 32, 64, 128, stages 2
and 3 starting with stride 2 and a conv1x1 + BatchNorm shortcut; global average pool; fc 128->10.
Convolutions start He-normal (fan_out), BatchNorm at weight 1 and bias 0, as torchvision's.
A step is forward + mean cross-entropy + backward + AdamW step on random 1x28x28 images
(Fashion-MNIST's shape). --mode frozen freezes conv1, bn1, layer1, layer2 (requires_grad off,
their BatchNorm layers in eval mode) as ft.peft.freeze does in the ftlua script.

    /usr/bin/python3 scripts/bench/resnet_step_torch.py --threads 2 --mode full

--shapes prints "name shape" of every state_dict entry (the ftlua script's --shapes prints the
same list) and exits. The last line is machine-readable:
    RESULT samples_per_sec=<n> ms_per_step=<mean ms> median_ms=<ms> peak_rss_mb=<MiB>
"""
import os
import resource
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import arg_parser, positive_int, start, time_steps


def parse_args():
    parser = arg_parser(__doc__)
    parser.add_argument("--mode", choices=["full", "frozen"], default="full")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shapes", action="store_true", help="print the state_dict shapes and exit")
    return parser.parse_args()


# The command line is read before PyTorch is imported (torch_common's docstring says why).
if __name__ == "__main__":
    ARGS = parse_args()

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return (out + identity).relu()


class ResNetS(nn.Module):
    def __init__(self, widths=(32, 64, 128), blocks=2, in_channels=1, num_classes=10):
        super().__init__()
        inplanes = widths[0]
        self.conv1 = conv3x3(in_channels, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU()
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(inplanes, planes, stride, downsample)]
            layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = planes
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.avgpool(x)
        return self.fc(x.reshape(x.shape[0], -1))


FROZEN = ("conv1", "bn1", "layer1", "layer2")


def peak_rss_mb():
    """The peak resident set of this process so far (ru_maxrss, kB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(args):
    start(args.threads, args.seed)
    model = ResNetS()
    if args.shapes:
        for name, t in sorted(model.state_dict().items()):
            print(name, "x".join(str(d) for d in t.shape) or "scalar")
        return
    model.train()
    if args.mode == "frozen":
        for name in FROZEN:
            part = getattr(model, name)
            for p in part.parameters():
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    B = args.batch_size
    x = torch.randn(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))

    def set_mode():
        # model.train() would put the frozen BatchNorm layers back in training mode
        if args.mode == "frozen":
            for name in FROZEN:
                for m in getattr(model, name).modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()

    set_mode()

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in params)
    print(f"PyTorch {torch.__version__} ResNet-S ({args.mode}): {n_params} parameters, {n_train} training, "
          f"batch {B}, {torch.get_num_threads()} threads")
    times, loss = time_steps(step, args.warmup, args.steps)
    total = sum(times)
    median = sorted(times)[(len(times) - 1) // 2]
    rss = peak_rss_mb()
    print(f"{args.steps} steps: mean {1000 * total / args.steps:.1f} ms/step, median {1000 * median:.1f} ms/step, "
          f"{B * args.steps / total:.1f} images/s (loss {loss:.3f}), peak RSS {rss:.0f} MiB")
    print(f"RESULT samples_per_sec={B * args.steps / total:.1f} ms_per_step={1000 * total / args.steps:.1f} "
          f"median_ms={1000 * median:.1f} peak_rss_mb={rss:.0f}")


if __name__ == "__main__":
    main(ARGS)
