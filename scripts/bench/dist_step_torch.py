#!/usr/bin/python3
"""PyTorch twin of scripts/bench/dist_step.lua: times data-parallel training steps.

One process with --threads threads (--world 1), or --world processes under torch DDP with the
gloo backend (torch.multiprocessing, rendezvous through a file: no network), --threads each.
--batch-size is the global batch; each rank trains on its rows rank, rank + W, ... (the share
ft.dist.shard and DistributedSampler give). Models (the ones the other twins write out, imported
from them), random inputs fixed for the run:
  gpt-s     GPT-2 at the gpt-s preset (scripts/bench/gpt_s_step_torch.py), dropout 0, AdamW
            (lr 1e-3, weight decay 0.1), --batch-size sequences of --context tokens
  resnet-s  ResNet-S (scripts/bench/train_fashion_mnist_torch.py), SGD with Nesterov momentum
            0.9 and weight decay 5e-4, --batch-size images 1x28x28
DDP keeps its defaults (bucket_cap_mb 25, a first bucket of 1 MiB, BatchNorm buffers broadcast
from rank 0 at each forward). A step's time is the slowest rank's.

    /usr/bin/python3 scripts/bench/dist_step_torch.py --model gpt-s --world 2 --threads 1

The last line is machine-readable:
    RESULT samples_per_sec=<n> ms_per_step=<median ms> peak_rss_mb=<largest rank's MiB>
(or "RESULT skipped=1 reason=..." when this PyTorch has no torch.distributed with gloo).
"""
import gc
import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from torch_common import Stopwatch, arg_parser, positive_int, start

DEFAULT_BATCH = {"gpt-s": 16, "resnet-s": 128}


def parse_args():
    ap = arg_parser(__doc__)
    ap.add_argument("--model", choices=["gpt-s", "resnet-s"], default="gpt-s")
    ap.add_argument("--batch-size", type=positive_int, default=None, help="the global batch")
    ap.add_argument("--context", type=positive_int, default=128)
    ap.add_argument("--steps", type=positive_int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--world", type=positive_int, default=1, help="processes (DDP over gloo when > 1)")
    ap.add_argument("--threads", type=positive_int, default=1, help="threads per process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the results to this file")
    return ap.parse_args()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def build(args, torch):
    """The model, its optimizer, the global batch and the loss of a forward on some rows."""
    import torch.nn.functional as F
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    B = args.batch_size
    if args.model == "gpt-s":
        from gpt_s_step_torch import GPT
        T = args.context
        model = GPT(n_positions=max(T, 256))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        w = torch.randint(0, 256, (B, T + 1))
        batch = (w[:, :T].contiguous(), w[:, 1:].contiguous())

        def loss_of(net, x, y):
            logits = net(x)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    else:
        from train_fashion_mnist_torch import ResNetS
        model = ResNetS()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        batch = (torch.randn(B, 1, 28, 28), torch.randint(0, 10, (B,)))

        def loss_of(net, x, y):
            return F.cross_entropy(net(x), y)
    return model, opt, batch, loss_of


def worker(rank, args, init_file, queue):
    torch = start(args.threads, args.seed)
    import torch.distributed as dist
    world = args.world
    if world > 1:
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    model, opt, (x, y), loss_of = build(args, torch)
    model.train()
    x, y = x[rank::world].contiguous(), y[rank::world].contiguous()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def step():
        watch = Stopwatch()
        loss = loss_of(net, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        return watch.seconds(), value

    for _ in range(args.warmup):
        step()
    if world > 1:
        dist.barrier()
    times, loss = [], None
    for _ in range(args.steps):
        t, loss = step()
        times.append(t)
    rss = peak_rss_mb()
    if world > 1:
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        times = t.tolist()
        r = torch.tensor([rss, rss], dtype=torch.float64)
        mx = r[:1].clone()
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
        dist.all_reduce(r[1:], op=dist.ReduceOp.SUM)
        rss_max, rss_sum = mx.item(), r[1].item()
        # DDP's reducer goes before its process group (the other order can hang at exit)
        del net
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    else:
        rss_max = rss_sum = rss
    if rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        queue.put({"times": times, "loss": loss, "peak_rss_mb": rss_max, "peak_rss_mb_all_ranks": rss_sum,
                   "parameters": n_params, "torch": torch.__version__, "threads_per_rank": torch.get_num_threads()})


def skip(args, reason):
    print("PyTorch twin skipped: " + reason)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "ranks": args.world, "skipped": reason}, f, indent=2)
    print("RESULT skipped=1 reason=" + reason.replace(" ", "_"))
    sys.exit(0)


def main(args):
    args.batch_size = args.batch_size or DEFAULT_BATCH[args.model]
    if args.batch_size % args.world:
        sys.exit("dist_step_torch.py: --batch-size %d (the global batch) does not divide among %d processes"
                 % (args.batch_size, args.world))
    try:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
    except ImportError as e:
        skip(args, "no PyTorch (%s)" % e)
    if args.world > 1 and not (dist.is_available() and dist.is_gloo_available()):
        skip(args, "this PyTorch %s has no torch.distributed with the gloo backend" % torch.__version__)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")   # rendezvous and traffic on loopback only
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        if args.world > 1:
            mp.spawn(worker, args=(args, init_file, queue), nprocs=args.world, join=True)
        else:
            worker(0, args, init_file, queue)
        res = queue.get()
    step_s = median(res["times"])
    B = args.batch_size
    unit = ("sequences of %d tokens" % args.context) if args.model == "gpt-s" else "images 1x28x28"
    print("PyTorch %s %s: %d parameters, global batch %d %s, %d process%s x %d thread%s%s"
          % (res["torch"], args.model, res["parameters"], B, unit, args.world, "es" if args.world > 1 else "",
             res["threads_per_rank"], "s" if res["threads_per_rank"] > 1 else "",
             " (DDP, gloo)" if args.world > 1 else ""))
    print("  median step %.1f ms  %.1f samples/s  (loss %.4f, peak RSS %.0f MiB largest rank, %.0f MiB all)"
          % (1000 * step_s, B / step_s, res["loss"], res["peak_rss_mb"], res["peak_rss_mb_all_ranks"]))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "ranks": args.world, "threads_per_rank": res["threads_per_rank"],
                       "global_batch": B, "per_rank_batch": B // args.world, "context": args.context
                       if args.model == "gpt-s" else None, "parameters": res["parameters"], "steps": args.steps,
                       "warmup": args.warmup, "step_times": res["times"], "median_step_s": step_s,
                       "samples_per_sec": B / step_s, "loss": res["loss"], "peak_rss_mb": res["peak_rss_mb"],
                       "peak_rss_mb_all_ranks": res["peak_rss_mb_all_ranks"], "torch": res["torch"],
                       "backend": "gloo" if args.world > 1 else None}, f, indent=2)
    print("RESULT samples_per_sec=%.2f ms_per_step=%.1f peak_rss_mb=%.0f" % (B / step_s, 1000 * step_s,
                                                                             res["peak_rss_mb"]))


if __name__ == "__main__":
    main(parse_args())
