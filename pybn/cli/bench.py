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
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args):
    checks.positive("--threads", args.threads)
    rows, bandwidth, threads = bench.run(args.kernel, args.threads, quick=not args.full,
                                   with_torch=not args.no_torch, progress=not args.no_progress)
    have_torch = all("torch" in r for r in rows)
    print(bench.format_table(rows, bandwidth, threads, have_torch))
    if have_torch:
        print(f"geometric-mean speedup over PyTorch: {bench.geomean([r['torch'] / r['pybn'] for r in rows]):.2f}x")
    print(f"geometric-mean speedup over the NumPy reference: "
          f"{bench.geomean([r['reference'] / r['pybn'] for r in rows]):.1f}x")
    return 0
