"""`pybn tune`, the main job: tune a batch-normalized MLP on digits (or
--data X.npz) by random search on the right scales, then coarse-to-fine
rounds, with parallel workers (a local process pool, or Dask with --dask),
every trial stored in --storage so that running the command again resumes.

A study is identified by its name (--study) in the storage and by what
defines it: the data's content, --epochs, the search space, --seed,
--rounds, --top-k and the pruner (--pruner, --prune-percentile,
--prune-warmup, --reduction-factor). The same command resumes it; a larger --n-trials grows
it; other settings are refused with what changed (pick another --study
name for a new study). --compare-batchnorm instead runs the same random
learning-rate search with and without batch norm and reports how wide the
band of good rates is.
"""
import logging
import math
import os
import sys
import time

from ..tune.execution import StudyInterrupted
from ..tune.pruners import NopPruner, PercentilePruner, SuccessiveHalvingPruner, pruner_from_json
from ..tune.samplers import CoarseToFineSampler
from ..tune.objective import MLPObjective, default_space, learning_rate_space
from ..tune.spaces import space_to_json
from ..tune.storage import StorageLocked
from ..tune.study import MAX_COUNT, Study, StudyMismatch
from . import checks
from .checks import UsageError

PROG = "pybn tune"

# The default budget: 180 trials, a random round of 60, then four finer
# rounds of 14, 22, 34 and 50 (split_budget), pruned by successive halving
# (about a third of the trials train past epoch 2, a ninth past epoch 6):
# twice the trials of the former default (90, pruned by the 25th-percentile
# rule) for about 1.2-1.4x its time. Small early rounds re-plan from the
# results soon; later rounds grow, since a round beats the best of the
# good trials before it only if it has about as many draws. Measured in
# bench/search_vs_optuna.py (README, Development): on the synthetic task
# (20 seeds, one run) best validation 0.9205 -> 0.9261 and test 0.9059 ->
# 0.9119, in 34.5 s against Optuna TPE's 55.4 s.
DEFAULT_TRIALS, DEFAULT_ROUNDS = 180, 5


def add_parser(subparsers):
    p = subparsers.add_parser("tune", help="tune a BN-MLP: random search, then coarse to fine",
                              description=__doc__, formatter_class=checks.HelpFormatter)
    p.add_argument("--data", help=".npz with X (m, n) and integer labels y (default: the bundled digits)")
    p.add_argument("--storage", default="pybn-study.sqlite",
                   help="SQLite file holding every trial; reuse it to resume")
    p.add_argument("--study", default="digits-bn-mlp", help="study name inside the storage")
    p.add_argument("--n-trials", type=int, default=DEFAULT_TRIALS,
                   help="total trials, split over the rounds; a larger number grows a stored study")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="1 random round + (rounds-1) finer rounds")
    p.add_argument("--top-k", type=int, default=5,
                   help="fewest good trials each finer round zooms around (more: the top 20%%)")
    p.add_argument("--pruner", choices=["halving", "percentile", "none"], default="halving",
                   help="halving: successive halving, only the best 1/--reduction-factor of the trials "
                        "go on at epochs W, W x F, W x F^2... (W: --prune-warmup); percentile: stop "
                        "trials whose validation accuracy at an epoch is below --prune-percentile of "
                        "the complete trials' at that epoch; none: run every trial to the end")
    p.add_argument("--prune-percentile", type=float,
                   help=f"with --pruner percentile: the threshold among the complete trials' scores "
                        f"(50: the median) (default: {PercentilePruner().percentile:g})")
    p.add_argument("--prune-warmup", type=int, metavar="EPOCHS",
                   help=f"epochs every trial runs before it may be pruned (default: "
                        f"{SuccessiveHalvingPruner().min_resource}; with percentile, {PercentilePruner().warmup_steps})")
    p.add_argument("--reduction-factor", type=int, metavar="F",
                   help=f"with --pruner halving: 1 in F trials goes on at each rung "
                        f"(default: {SuccessiveHalvingPruner().reduction_factor})")
    p.add_argument("--workers", type=int, help="parallel trials (default: all cores, or the Dask threads)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="study seed: same seed, same trials")
    p.add_argument("--dask", metavar="ADDRESS", help="run trials on a Dask distributed scheduler")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="a trial running longer fails (default: no limit)")
    p.add_argument("--retry-failed", action="store_true", help="run the study's failed trials again")
    p.add_argument("--plot", metavar="FILE", help="score against each hyperparameter (PNG, PDF, SVG...)")
    p.add_argument("--export", metavar="NPZ",
                   help="retrain the best configuration and save it (pybn train --resume NPZ loads it)")
    p.add_argument("--top", type=int, default=10, help="rows in the final table")
    p.add_argument("--retest", type=int, default=0, metavar="K",
                   help="re-run the best K configurations with fresh seeds and report the change")
    p.add_argument("--compare-batchnorm", action="store_true",
                   help="learning-rate search with and without batch norm, compared")
    p.add_argument("--good", type=float, default=0.95,
                   help="with --compare-batchnorm: the score a good learning rate reaches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _check(args):
    checks.positive("--n-trials", args.n_trials, allow_none=False, most=MAX_COUNT)
    for name in ("rounds", "epochs", "top_k", "top"):
        checks.positive(f"--{name.replace('_', '-')}", getattr(args, name), allow_none=False)
    checks.positive("--workers", args.workers)
    if args.prune_warmup is not None and args.prune_warmup < (1 if args.pruner == "halving" else 0):
        raise UsageError(f"--prune-warmup: expected an integer >= {1 if args.pruner == 'halving' else 0}, "
                         f"got {args.prune_warmup}")
    if args.prune_percentile is not None and not 0 <= args.prune_percentile <= 100:
        raise UsageError(f"--prune-percentile: expected a number in [0, 100], got {args.prune_percentile:g}")
    if args.reduction_factor is not None and args.reduction_factor < 2:
        raise UsageError(f"--reduction-factor: expected an integer >= 2, got {args.reduction_factor}")
    for option, pruners in (("prune_percentile", ["percentile"]), ("reduction_factor", ["halving"]),
                            ("prune_warmup", ["percentile", "halving"])):
        if getattr(args, option) is not None and args.pruner not in pruners:
            raise UsageError(f"{flag(option)} goes with --pruner {' or '.join(pruners)}, "
                             f"not --pruner {args.pruner}")
    # a trial is never pruned at its last epoch (objective.py): the first epoch that may prune it must come before
    first_judged = None if args.prune_warmup is None else args.prune_warmup + (args.pruner == "percentile")
    if first_judged is not None and first_judged >= args.epochs:
        limit = args.epochs - (args.pruner == "percentile")
        raise UsageError(f"--prune-warmup: {args.prune_warmup} leaves no epoch before the last of --epochs "
                         f"{args.epochs} at which to prune (expected fewer than {limit}; --pruner none runs "
                         f"every trial to the end)")
    if args.retest < 0:
        raise UsageError(f"--retest: expected an integer >= 0, got {args.retest}")
    checks.seed("--seed", args.seed)
    if not args.study.strip():
        raise UsageError(f"--study: expected a non-empty name, got {args.study!r}")
    if args.n_trials < args.rounds and not args.compare_batchnorm:
        raise UsageError("--n-trials must be at least --rounds (one trial a round)")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise UsageError(f"--timeout: expected a number of seconds > 0, got {args.timeout}")
    if not 0 <= args.good <= 1:
        raise UsageError(f"--good: expected an accuracy in [0, 1], got {args.good}")
    checks.data_file("--data", args.data)
    checks.storage_file("--storage", args.storage)
    if args.plot:
        checks.plot_file("--plot", args.plot)
    if args.export:
        if args.compare_batchnorm:
            raise UsageError("--export goes with a tuning run, not --compare-batchnorm")
        checks.output_file("--export", args.export, ["npz"])


def _dask_client(address):
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--dask needs Dask: pip install 'pybn[dask]'") from None
    # Dask logs its own tracebacks when a connection drops (through its
    # loggers and tornado's, each given its own level and handler by Dask's
    # logging config, so silencing a parent is not enough); this command
    # reports what happened to the study in one line instead.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in ("distributed", "tornado"):
            logger.setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=5)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--dask: no Dask scheduler answers at {address} ({type(exc).__name__}: "
                         f"{exc})") from None


def sampler(args):
    return CoarseToFineSampler(top_k=args.top_k)


def pruner(args):
    if args.pruner == "none":
        return NopPruner()
    given = lambda value, default: default if value is None else value  # noqa: E731
    if args.pruner == "halving":
        default = SuccessiveHalvingPruner()
        return SuccessiveHalvingPruner(given(args.prune_warmup, default.min_resource),
                                       given(args.reduction_factor, default.reduction_factor))
    default = PercentilePruner()
    return PercentilePruner(given(args.prune_percentile, default.percentile),
                            warmup_steps=given(args.prune_warmup, default.warmup_steps))


def split_budget(n_trials, rounds):
    """Trials per round: the coarse (random) round a third of the budget, or
    an equal share if that is more; the finer rounds share the rest with
    weights growing 1.5x a round, each rounded to an even count (the last
    takes what is left, and every round at least one trial)."""
    if rounds == 1:
        return [n_trials]
    first = min(max(n_trials // 3, n_trials // rounds), n_trials - (rounds - 1))
    rest = n_trials - first
    weights = [1.5 ** k for k in range(rounds - 1)]
    total = sum(weights)
    finer = [max(1, 2 * round(rest * w / total / 2)) for w in weights[:-1]]
    while rest - sum(finer) < 1:  # rounding took the last round's share: give it back
        finer[finer.index(max(finer))] -= 1
    return [first] + finer + [rest - sum(finer)]


def run(args):
    try:
        _check(args)
        data = os.path.abspath(args.data) if args.data else None  # Dask workers run elsewhere
        studies = _open_studies(args, data)
        client = _dask_client(args.dask) if args.dask else None
    except UsageError as exc:
        return checks.report(PROG, exc)
    try:
        workers = args.workers or (sum(client.nthreads().values()) if client else os.cpu_count() or 1)
        options = dict(n_workers=workers, executor=client, in_process=False, timeout=args.timeout,
                       retry_failed=args.retry_failed)
        if args.compare_batchnorm:
            return _compare_batchnorm(args, studies, options)
        return _tune(args, studies[0], options)
    except StorageLocked as exc:  # a second coordinator: refused before any trial
        return checks.report(PROG, exc)
    except StudyInterrupted as exc:
        print(f"{PROG}: interrupted: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; finished trials are stored: run the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()


def _open_studies(args, data):
    """The study (or the two of --compare-batchnorm) with the settings that
    define it, checked against the stored ones before any trial runs."""
    if args.compare_batchnorm:
        specs = [(f"{args.study}-lr-{'bn' if bn else 'nobn'}",
                  MLPObjective(data, epochs=args.epochs, batch_norm=bn, optimizer="sgd", fixed=COMPARE_SETTING),
                  learning_rate_space(), {"kind": "random", "seed": args.seed}) for bn in (True, False)]
    else:
        specs = [(args.study, MLPObjective(data, epochs=args.epochs), default_space(),
                  {"kind": "coarse-to-fine", "seed": args.seed, "rounds": args.rounds, "top_k": args.top_k,
                   "sampler": sampler(args).to_json(), "pruner": pruner(args).to_json()})]
    studies = []
    for name, objective, space, search in specs:
        settings = {**objective.settings(), "space": space_to_json(space), **search}
        try:
            study = Study(args.storage, direction="maximize", name=name, settings=settings)
        except StudyMismatch as exc:
            raise UsageError(f"{exc};{_resume_hint(exc.differences)} to keep both, pass --study NEW_NAME "
                             "(or --storage ANOTHER_FILE)") from None
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        studies.append((study, objective, space))
    return studies


# stored settings that are also this command's options, stored as given
FLAG_SETTINGS = ("epochs", "seed", "rounds", "top_k")


def flag(name):
    """The option of an argparse destination: top_k -> --top-k."""
    return "--" + name.replace("_", "-")


def _resume_hint(differences):
    """' to resume it, pass --rounds 6;' when every changed setting is one
    option away from the stored study, else ''."""
    flags = []
    for name, (old, _) in (differences or {}).items():
        if name in FLAG_SETTINGS and type(old) is int:
            flags.append(f"{flag(name)} {old}")
        elif name == "pruner" and _pruner_flags(old) is not None:
            flags.append(_pruner_flags(old))
        else:
            return ""
    return f" to resume it, pass {' '.join(flags)};" if flags else ""


def _pruner_flags(stored):
    """The options that give the stored pruner (a pruner's to_json), or None
    when none do (a pruner set in Python with other min_trials or lag)."""
    try:
        rule = pruner_from_json(stored)
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(rule, NopPruner):
        return "--pruner none"
    if isinstance(rule, SuccessiveHalvingPruner):
        default, kind = SuccessiveHalvingPruner(), "halving"
        options = {"--prune-warmup": (rule.min_resource, default.min_resource),
                   "--reduction-factor": (rule.reduction_factor, default.reduction_factor)}
    else:
        default, kind = PercentilePruner(), "percentile"
        options = {"--prune-percentile": (rule.percentile, default.percentile),
                   "--prune-warmup": (rule.warmup_steps, default.warmup_steps)}
    if (rule.min_trials, rule.lag) != (default.min_trials, default.lag):
        return None
    return " ".join([f"--pruner {kind}"] + [f"{option} {value:g}" for option, (value, usual) in options.items()
                                           if value != usual])


def _tune(args, opened, options):
    study, objective, space = opened
    before = {t.number for t in study.trials if t.state not in ("running",)}
    retried = {t.number for t in study.trials if t.state == "failed"} if args.retry_failed else set()
    start = time.perf_counter()
    study.coarse_to_fine(objective, space, rounds=args.rounds,
                         trials_per_round=split_budget(args.n_trials, args.rounds), sampler=sampler(args),
                         pruner=pruner(args), seed=args.seed, progress=not args.no_progress, **options)
    elapsed = time.perf_counter() - start
    trials = study.trials
    ran = sum(t.number not in before or t.number in retried for t in trials)
    from .summary import print_summary
    print_summary(args, study, objective, space, trials, ran, elapsed, options["n_workers"])
    if args.plot:
        from ..plot import plot_study
        plot_study(trials, space, args.plot, score_name="validation accuracy", title=f"study {study.name!r}")
        print(f"plot: {os.path.abspath(args.plot)}")
    if args.retest:
        results = study.retest(objective, args.retest, n_workers=options["n_workers"],
                               executor=options["executor"])
        fewer = f" (of {args.retest} asked: the study has {len(results)} complete)" if len(results) < args.retest else ""
        print(f"\nre-test of the best {len(results)}{fewer} with fresh training seeds:")
        for r in results:
            print(f"  trial {r.number:4d}: stored {r.stored_value:.4f} -> now {r.retest_value:.4f} "
                  f"({r.change:+.4f})")
    return 0


def format_table(trials, space):
    if not trials:
        return "(no complete trial yet)"
    names = list(space)
    header = ["rank", "trial", "round", "score"] + names
    rows = [[str(i + 1), str(t.number), str(t.round), f"{t.value:.4f}"] +
            [_fmt(t.params.get(n)) for n in names] for i, t in enumerate(trials)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# The classic setting of the claim: SGD with momentum on a deeper net, where
# the learning rate alone decides between learning and diverging.
COMPARE_SETTING = {"layers": 3, "hidden_units": 128, "beta1": 0.9}


def _compare_batchnorm(args, studies, options):
    results = {}
    for (study, objective, space), label in zip(studies, ("with batch norm", "without batch norm")):
        # every rate runs all its epochs: the band of good rates is what is measured
        study.optimize(objective, space, args.n_trials, seed=args.seed, pruner=None,
                       progress=False if args.no_progress else label, **options)
        results[label] = study.trials
    print(f"\nSGD (momentum 0.9), 3 hidden layers of 128; learning rates sampled log-uniformly in "
          f"[1e-4, 10], {args.n_trials} trials each, the same rates for both; a good rate reaches "
          f"validation accuracy >= {args.good}")
    summary = {}
    for label, trials in results.items():
        good = sorted(t.params["learning_rate"] for t in trials
                      if t.state == "complete" and t.value is not None and t.value >= args.good)
        best = max((t.value for t in trials if t.state == "complete" and t.value is not None),
                   default=float("nan"))
        failed = sum(t.state == "failed" for t in trials)
        width = math.log10(good[-1] / good[0]) if good else 0.0
        summary[label] = width
        band = f"[{good[0]:.3g}, {good[-1]:.3g}]" if good else "none"
        print(f"  {label:20s} best {best:.4f}  good rates {len(good):3d}/{len(trials)}  band {band} "
              f"= {width:.2f} decades  diverged/failed {failed}")
    print(f"batch norm widens the band of good learning rates by "
          f"{summary['with batch norm'] - summary['without batch norm']:+.2f} decades")
    if args.plot:
        from ..plot import plot_compare_batchnorm
        plot_compare_batchnorm(results, studies[0][2]["learning_rate"], args.plot, good=args.good)
        print(f"plot: {os.path.abspath(args.plot)}")
    return 0
