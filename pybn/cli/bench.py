"""`pybn bench`: the kernel timings of pybn.bench, printed as a table."""
from .. import bench
from . import checks


def add_parser(subparsers):
    p = subparsers.add_parser("bench", help="time the kernels beside the reference and PyTorch",
                              description=bench.__doc__)
    p.add_argument("--kernel", action="append", choices=bench.KERNELS, help="only these kernels (repeatable)")
    p.add_argument("--threads", type=int, help="threads for pybn and PyTorch (default: all cores)")
    p.add_argument("--full", action="store_true", help="longer timings (default: quick)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--torch-step", action="store_true",
                   help="time a small CNN's training step with torch.nn batch norm and with pybn.torch.patch")
    p.add_argument("--training", action="store_true",
                   help="time training epochs of pybn's API beside PyTorch's (float32, 1 and 2 threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args):
    checks.threads("--threads", args.threads)
    if args.torch_step:
        return _torch_step(args)
    if args.training:
        return _training(args)
    rows, bandwidth, threads = bench.run(args.kernel, args.threads, quick=not args.full,
                                   with_torch=not args.no_torch, progress=not args.no_progress)
    print(bench.report(rows, bandwidth, threads))
    return 0


def _torch_step(args):
    from .. import _threads
    if bench._torch() is None:
        raise checks.UsageError("--torch-step needs PyTorch: pip install 'pybn[torch]'")
    from ..bench_torch import cnn_step
    threads = args.threads or _threads.get_num_threads()
    rounds = 60 if args.full else 20
    print(f"CNN training step, batch 32, 3x32x32 inputs, 3 conv-BN-ReLU blocks, SGD; threads {threads}; "
          f"{rounds} interleaved rounds; median (best) ms")
    for channels_last in (False, True):
        t = cnn_step(threads, rounds=rounds, channels_last=channels_last)
        layout = "channels-last" if channels_last else "NCHW"
        print(f"  {layout:13s} torch.nn {t['torch'][0] * 1e3:8.2f} ({t['torch'][1] * 1e3:.2f})   "
              f"pybn.torch.patch {t['pybn'][0] * 1e3:8.2f} ({t['pybn'][1] * 1e3:.2f})   "
              f"speedup {t['torch'][0] / t['pybn'][0]:.2f}x ({t['torch'][1] / t['pybn'][1]:.2f}x)")
    return 0


def _training(args):
    if bench._torch() is None:
        raise checks.UsageError("--training needs PyTorch: pip install 'pybn[torch]'")
    from ..bench_torch import training_epochs
    rounds = 9 if args.full else 3
    print(f"ms per epoch on the digits training split (1257 examples), Dense-BatchNorm-ReLU MLPs, Adam, "
          f"float32; {rounds} interleaved rounds; median (best)")
    print(f"{'threads':>7} {'layers x width':>14} {'batch':>5} {'pybn':>16} {'torch':>16} {'vs torch':>9}")
    for threads in ([args.threads] if args.threads else [1, 2]):
        for (layers, width, batch), t in training_epochs(threads, rounds=rounds).items():
            print(f"{threads:>7} {f'{layers}x{width}':>14} {batch:>5} "
                  f"{t['pybn'][0] * 1e3:8.1f} ({t['pybn'][1] * 1e3:5.1f}) {t['torch'][0] * 1e3:8.1f} "
                  f"({t['torch'][1] * 1e3:5.1f}) {t['torch'][0] / t['pybn'][0]:8.2f}x")
    return 0
