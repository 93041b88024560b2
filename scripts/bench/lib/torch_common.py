"""Set-up shared by the PyTorch twins in scripts/bench (imported, not run: it sits outside the
scripts/bench/*.py glob).

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    import torch_common

    parser = torch_common.arg_parser(__doc__)      # --help answers before PyTorch is imported
    parser.add_argument("--threads", type=torch_common.positive_int, default=2)
    ...
    torch = torch_common.start(args.threads, args.seed)
    watch = torch_common.Stopwatch()
    step()
    print(watch.seconds())

Importing this module does not import PyTorch (start() does), so that a script that reads its
command line before `import torch` answers --help (and a bad flag) at once, also where PyTorch
is not installed.
"""
import argparse
import time


def positive_int(s):
    """argparse type: an integer >= 1."""
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r" % s)
    return v


def arg_parser(doc):
    """An ArgumentParser described by the first line of the script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n")[0])


def start(threads, seed):
    """Imports PyTorch, sets its thread count (when given) and seeds it; returns the torch module."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch


def time_steps(step, warmup, steps):
    """Runs step() warmup times untimed, then steps times timed: (seconds of each, last result)."""
    for _ in range(warmup):
        step()
    times, result = [], None
    for _ in range(steps):
        watch = Stopwatch()
        result = step()
        times.append(watch.seconds())
    return times, result


class Stopwatch:
    """Wall-clock time since it was made: `watch = Stopwatch()` ... `watch.seconds()`."""

    def __init__(self):
        self._t0 = time.perf_counter()

    def seconds(self):
        return time.perf_counter() - self._t0
