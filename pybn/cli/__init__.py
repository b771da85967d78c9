"""The `pybn` command (also `python -m pybn`): info, train, tune, bench.

The front ends live in this package, over the library, which imports
nothing from it. Each subcommand is a module that registers itself here
through an `add_parser(subparsers)` function, so this file only wires them
up.
"""
import sys

from .. import __version__
from . import bench, info, train, tune
from .checks import Parser, UsageError, report


def build_parser():
    parser = Parser(prog="pybn", description="Batch-norm and softmax kernels, "
                    "training and hyperparameter search.")
    parser.add_argument("--version", action="version", version=f"pybn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (info, train, tune, bench):
        module.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        return report(f"pybn {args.command}", exc)
    except MemoryError as exc:  # a width or batch too large for this machine: say so, no traceback
        print(f"pybn {args.command}: error: out of memory ({exc or 'MemoryError'}); "
              f"smaller layers or batches need less", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # train and tune say more: where to resume
        print(f"\npybn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
