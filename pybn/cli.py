"""The `pybn` command (also `python -m pybn`): info, train, tune, bench.

Each subcommand lives in its own module and registers itself here through
an `add_parser(subparsers)` function, so this file only wires them up.
"""
import argparse
import sys

from . import __version__, bench, train_cli
from .tune import cli as tune_cli


def _info(args):
    from . import _kernels, get_num_threads
    info = _kernels.build_info()
    rows = [
        ("pybn", __version__),
        ("SIMD level", info["simd"]),
        ("OpenMP", f"on (version {info['openmp_version']})" if info["openmp_version"] else "off"),
        ("threads", f"{get_num_threads()} (OpenMP default {info['openmp_max_threads']})"),
        ("cache", f"{info['cache_bytes'] / 2**20:.0f} MiB (outputs beyond it are streamed)"),
        ("compiler", info["compiler"]),
        ("C flags", info["c_flags"] or "(none)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="pybn", description="Batch-norm and softmax kernels, "
                                     "training and hyperparameter search.")
    parser.add_argument("--version", action="version", version=f"pybn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="version, build flags, OpenMP threads, SIMD level")
    info.set_defaults(func=_info)
    for module in (train_cli, tune_cli, bench):
        module.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
