#!/usr/bin/python3
"""PyTorch twin of scripts/train_fashion_mnist.lua, for side-by-side speed comparisons.

Same model (ResNet-S, torchvision layout), data pipeline (dataset mean/std normalisation,
random crop with 2-pixel zero padding + horizontal flip, shuffled batches of 128), optimiser
(SGD, Nesterov momentum 0.9, weight decay 5e-4) and schedule (linear warmup over 10% of the
steps, then cosine to 0). Reads the IDX .gz files directly.

    /usr/bin/python3 scripts/bench/train_fashion_mnist_torch.py --threads 2 --limit 6400 --epochs 1

Prints seconds per epoch and images/s; the last line is machine-readable:
    RESULT sec_per_epoch=<s> images_per_sec=<n> test_acc=<a>
"""
import gzip
import math
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import Stopwatch, arg_parser, positive_int, start

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def parse_args():
    ap = arg_parser(__doc__)
    ap.add_argument("--epochs", type=positive_int, default=4)
    ap.add_argument("--batch-size", type=positive_int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--no-augment", action="store_true", help="train without random crops and flips")
    ap.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    return ap.parse_args()


# The command line is read before PyTorch is imported (torch_common's docstring says why).
if __name__ == "__main__":
    ARGS = parse_args()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)   # N x 1 x 28 x 28 in [0, 1]
    return x, torch.from_numpy(y.astype(np.int64))


# ---- ResNet-S (torchvision's BasicBlock and names) ------------------------------------

class BasicBlock(nn.Module):
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


class ResNetS(nn.Module):
    def __init__(self, widths=(32, 64, 128), layers=(2, 2, 2), num_classes=10):
        super().__init__()
        inplanes = widths[0]
        self.conv1 = nn.Conv2d(1, inplanes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for i, (planes, n) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes))
            blocks = [BasicBlock(inplanes, planes, stride, downsample)]
            blocks += [BasicBlock(planes, planes) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- augmentation: random crop (2-pixel zero padding) + horizontal flip -----------------

def augment(x, gen):
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def warmup_cosine(total_steps):
    """lr factor: linear warmup over 10% of the steps (from 1/warmup), then cosine to 0."""
    warmup = max(1, round(0.1 * total_steps))
    start = 1.0 / warmup

    def factor(t):
        if t < warmup:
            return start + (1 - start) * t / warmup
        return (1 + math.cos(math.pi * (t - warmup) / max(1, total_steps - warmup))) / 2
    return factor


def evaluate(model, x, y, mean, std, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model((x[i:i + batch] - mean) / std)
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main(args):
    start(args.threads, args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    mean, std = x_train.mean().item(), x_train.std().item()   # the full set's, as the Lua script
    if args.limit > 0:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    n = len(x_train)

    model = ResNetS()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(n / args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps_per_epoch * args.epochs))
    print("ResNet-S: %d parameters, %d training images, %d threads, torch %s"
          % (sum(p.numel() for p in model.parameters()), n, args.threads, torch.__version__))

    epoch_times = []
    acc = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        watch = Stopwatch()
        perm = torch.randperm(n, generator=gen)
        total_loss, seen = 0.0, 0
        for i in range(0, n, args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb = x_train[idx] if args.no_augment else augment(x_train[idx], gen)
            xb = (xb - mean) / std
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
        dt = watch.seconds()
        epoch_times.append(dt)
        line = "epoch %d/%d  loss %.4f  %.1f s  %.0f images/s" % (epoch, args.epochs, total_loss / seen, dt, n / dt)
        if not args.no_eval:
            acc = evaluate(model, x_test, y_test, mean, std)
            line += "  test acc %.2f%%" % (100 * acc)
        print(line, flush=True)

    sec = sum(epoch_times) / len(epoch_times)
    print("RESULT sec_per_epoch=%.2f images_per_sec=%.1f test_acc=%.4f" % (sec, n / sec, acc))


if __name__ == "__main__":
    main(ARGS)
