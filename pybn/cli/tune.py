"""`pybn tune`, the main job: tune a batch-normalized MLP on digits (or
--data X.npz) by random search on the right scales, then coarse-to-fine
rounds, with parallel workers (a local process pool, or Dask with --dask),
every trial stored in --storage so that running the command again resumes.

--compare-batchnorm instead runs the same random learning-rate search with
and without batch norm and reports how wide the band of good rates is.
"""
import math
import os
import time

from ..tune.objective import MLPObjective, default_space, learning_rate_space
from ..tune.study import Study


def add_parser(subparsers):
    p = subparsers.add_parser("tune", help="tune a BN-MLP: random search, then coarse to fine",
                              description=__doc__)
    p.add_argument("--data", help=".npz with X (m, n) and integer labels y (default: digits)")
    p.add_argument("--storage", default="pybn-study.sqlite",
                   help="SQLite file holding every trial; reuse it to resume (default: %(default)s)")
    p.add_argument("--study", default="digits-bn-mlp", help="study name inside the storage")
    p.add_argument("--n-trials", type=int, default=90, help="total trials, split over the rounds")
    p.add_argument("--rounds", type=int, default=3, help="1 random round + (rounds-1) finer rounds")
    p.add_argument("--top-k", type=int, default=5, help="best trials each finer round zooms around")
    p.add_argument("--workers", type=int, help="parallel trials (default: all cores)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="study seed: same seed, same trials")
    p.add_argument("--dask", metavar="ADDRESS", help="run trials on a Dask distributed scheduler")
    p.add_argument("--plot", metavar="PNG", help="score against each hyperparameter, by round")
    p.add_argument("--top", type=int, default=10, help="rows in the final table")
    p.add_argument("--retest", type=int, default=0, metavar="K",
                   help="re-run the best K configurations with fresh seeds and report the change")
    p.add_argument("--compare-batchnorm", action="store_true",
                   help="learning-rate search with and without batch norm, compared")
    p.add_argument("--good", type=float, default=0.95,
                   help="with --compare-batchnorm: the score a good learning rate reaches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check(args):
    for name in ("n_trials", "rounds", "epochs", "top_k", "top"):
        if getattr(args, name) < 1:
            raise SystemExit(f"pybn tune: error: --{name.replace('_', '-')} must be >= 1")
    if args.workers is not None and args.workers < 1:
        raise SystemExit("pybn tune: error: --workers must be >= 1")
    if args.n_trials < args.rounds:
        raise SystemExit("pybn tune: error: --n-trials must be at least --rounds (one trial a round)")


def _dask_client(args):
    if not args.dask:
        return None
    try:
        from distributed import Client
    except ImportError as exc:
        raise SystemExit("pybn tune: error: --dask needs Dask: pip install 'pybn[dask]'") from exc
    return Client(args.dask)


def split_budget(n_trials, rounds):
    """Trials per round: equal shares, the remainder to the first (coarse) round."""
    base, extra = divmod(n_trials, rounds)
    return [base + extra] + [base] * (rounds - 1)


def run(args):
    _check(args)
    client = _dask_client(args)
    try:
        if client is None:
            executor, workers = None, args.workers or os.cpu_count() or 1
        else:
            executor, workers = client.get_executor(), args.workers or sum(client.nthreads().values())
        if args.compare_batchnorm:
            return _compare_batchnorm(args, executor, workers)
        return _tune(args, executor, workers)
    finally:
        if client is not None:
            client.close()


def _tune(args, executor, workers):
    objective = MLPObjective(args.data, epochs=args.epochs)
    space = default_space()
    study = Study(args.storage, direction="maximize", name=args.study)
    before = {t.number for t in study.trials if t.state != "running"}
    start = time.perf_counter()
    study.coarse_to_fine(objective, space, rounds=args.rounds,
                         trials_per_round=split_budget(args.n_trials, args.rounds), top_k=args.top_k,
                         seed=args.seed, n_workers=workers, executor=executor,
                         progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    trials = study.trials
    counts = {s: sum(t.state == s for t in trials) for s in ("complete", "failed", "pruned", "running")}
    ran = sum(t.number not in before for t in trials)
    print(f"\nstudy {args.study!r} in {os.path.abspath(args.storage)}: {len(trials)} trials "
          f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed); "
          f"{ran} run now in {elapsed:.1f} s on {workers} worker(s)")
    print(format_table(study.best_trials(args.top), space))
    if args.plot:
        from ..plot import plot_study
        plot_study(trials, space, args.plot, score_name="validation accuracy")
        print(f"plot: {os.path.abspath(args.plot)}")
    if args.retest:
        print(f"\nre-test of the best {args.retest} with fresh training seeds:")
        for r in study.retest(objective, args.retest, n_workers=workers, executor=executor):
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


def _compare_batchnorm(args, executor, workers):
    space = learning_rate_space()
    results = {}
    for label, batch_norm in (("with batch norm", True), ("without batch norm", False)):
        study = Study(args.storage, name=f"{args.study}-lr-{'bn' if batch_norm else 'nobn'}")
        objective = MLPObjective(args.data, epochs=args.epochs, batch_norm=batch_norm, optimizer="sgd",
                                 fixed=COMPARE_SETTING)
        study.optimize(objective, space, args.n_trials, n_workers=workers, executor=executor,
                       seed=args.seed, progress=not args.no_progress)
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
    return 0
