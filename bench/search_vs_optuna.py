"""pybn's default search beside Optuna's, on the same objective and space.

    pip install optuna            # a bench-only dependency
    python bench/search_vs_optuna.py --seeds 10     # digits, then the synthetic task
    python bench/search_vs_optuna.py --seeds 3 --task synthetic

For each study seed: the search `pybn tune` runs by default, built from its
parsed defaults (a random round, then coarse-to-fine rounds: 180 trials,
60 random then rounds of 14, 22, 34 and 50, its sampler and its
successive-halving pruner) and Optuna's TPE (multivariate) with a
MedianPruner, 90 trials (the baseline pybn's search was first measured
against; --optuna-trials and --optuna-halving add TPE rows with other
budgets or Optuna's SuccessiveHalvingPruner), all on 2 workers with one
kernel thread each, all maximizing MLPObjective (the best validation
accuracy over 20 epochs) over default_space() on each parameter's own scale.
Printed per search: best validation accuracy (mean +- sd over seeds), the
test accuracy of the chosen configuration retrained with 3 fresh seeds
(mean), the wall time (mean), in how many seeds each coarse-to-fine
round raised the best score of the rounds before it (for TPE: its trials
cut where pybn's rounds would end for its budget), and each row minus the
last, paired by seed, with its standard error (the seeds share nothing
else, so the seed-to-seed spread of the difference measures the
noise). Nothing here asserts a result.
"""
import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def _optuna_params(trial, space):
    """The same space in Optuna's terms, on the same scales."""
    from pybn.tune import Choice, IntUniform, LogUniform, OneMinusLogUniform, Uniform
    params = {}
    for name, dist in space.items():
        if isinstance(dist, LogUniform):
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=True)
        elif isinstance(dist, OneMinusLogUniform):
            params[name] = 1.0 - trial.suggest_float(f"1-{name}", 1.0 - dist.high, 1.0 - dist.low, log=True)
        elif isinstance(dist, IntUniform):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Choice):
            params[name] = trial.suggest_categorical(name, dist.options)
        elif isinstance(dist, Uniform):
            params[name] = trial.suggest_float(name, dist.low, dist.high)
        else:
            raise TypeError(name)
    return params


class _OptunaTrial:
    """What MLPObjective needs of a trial (seed, threads, report), over an
    Optuna trial and its pruner."""

    def __init__(self, trial, seed):
        self.trial, self.seed, self.threads = trial, seed, 1

    def report(self, step, value):
        import optuna
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def tune_defaults(*flags):
    """The search `pybn tune` runs with these flags: its parsed defaults."""
    from pybn.cli import build_parser, tune
    args = build_parser().parse_args(["tune", *flags])
    return {"rounds": args.rounds, "trials_per_round": tune.split_budget(args.n_trials, args.rounds),
            "sampler": tune.sampler(args), "pruner": tune.pruner(args)}


def run_pybn(objective, space, seed, workers, flags=()):
    """pybn's search as `pybn tune` runs it with `flags` (none: its defaults)."""
    from pybn.tune import Study
    study = Study(None)
    start = time.perf_counter()
    study.coarse_to_fine(objective, space, seed=seed, n_workers=workers, in_process=False, **tune_defaults(*flags))
    wall = time.perf_counter() - start
    return study.best_value, study.best_params, wall, _round_gains(study)


def _round_gains(study):
    """For rounds 1.., whether the round raised the best score of the rounds before it."""
    rounds = range(max(t.round for t in study.trials) + 1)
    return _gains([[t.value for t in study.trials if t.round == r and t.state == "complete"] for r in rounds])


def _gains(groups):
    """For groups 1.. of complete scores, whether the group's top beat every
    earlier group's."""
    best, gains = None, []
    for r, values in enumerate(groups):
        top = max(values) if values else None
        if r:
            gains.append(top is not None and top > best)
        best = top if best is None else max(best, top if top is not None else best)
    return gains


def _segment_gains(study, counts):
    """TPE's trials cut where pybn's rounds end (by trial number), so "raised
    the best" reads the same for both: how often later trials beat earlier."""
    import optuna
    ends = np.cumsum(counts)
    groups = [[] for _ in counts]
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        groups[int(np.searchsorted(ends, t.number, side="right"))].append(t.value)
    return _gains(groups)


def run_optuna(objective, space, seed, workers, n_trials=90, pruner="median"):
    """Optuna's TPE (multivariate) with its MedianPruner, or its
    SuccessiveHalvingPruner with pybn's reduction factor 3."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    # Optuna judges at steps >= min_resource * 3**rung, steps counting epochs from 0: rungs after
    # epochs 3, 7, 19 (pybn's: 2, 6, 18; no integer min_resource gives Optuna those)
    rule = (optuna.pruners.MedianPruner() if pruner == "median" else
            optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=rule)

    def wrapped(trial):
        params = _optuna_params(trial, space)
        training_seed = int(np.random.default_rng([seed, trial.number]).integers(2**31))
        return objective(params, _OptunaTrial(trial, training_seed))

    start = time.perf_counter()
    study.optimize(wrapped, n_trials=n_trials, n_jobs=workers)  # threads: the kernels release the GIL
    best = study.best_trial
    wall = time.perf_counter() - start
    gains = _segment_gains(study, tune_defaults("--n-trials", str(n_trials))["trials_per_round"])
    return best.value, _optuna_params(optuna.trial.FixedTrial(best.params), space), wall, gains


def test_accuracy(objective, params, seeds=(101, 102, 103)):
    from pybn import train as T
    accs = []
    for s in seeds:
        model, _, _, split = objective.train(params, s)
        accs.append(T.evaluate(model, split.X_test, split.y_test)[1])
    return statistics.mean(accs)


def _task_objective(task):
    from pybn import datasets
    from pybn.tune.objective import MLPObjective
    data = None
    if task == "synthetic":  # harder: a point of accuracy is 9 test examples
        X, y = datasets.make_synthetic(n_samples=6000, n_features=64, n_classes=10, seed=0)
        data = os.path.join(tempfile.mkdtemp(), "synthetic.npz")
        np.savez(data, X=X, y=y)
    return MLPObjective(data, epochs=20)


def run_task(task, seeds, workers, rows, first_seed=0):
    from pybn.tune.objective import default_space
    objective, space = _task_objective(task), default_space()
    results = {name: [] for name in rows}
    for seed in range(first_seed, first_seed + seeds):
        for name, run in rows.items():
            best, params, wall, gains = run(objective, space, seed, workers)
            results[name].append((best, test_accuracy(objective, params), wall, gains))
            print(f"{task} seed {seed}: {name}: best val {best:.4f}, test {results[name][-1][1]:.4f}, "
                  f"{wall:.1f} s" + (f", rounds raised the best: {gains}" if gains else ""),
                  file=sys.stderr, flush=True)
    from pybn.bench import cpu_model
    print(f"\ntask {task}, seeds {first_seed}-{first_seed + seeds - 1}, {workers} workers x 1 thread, "
          f"20 epochs, {cpu_model()}")
    print("| search | best val (mean +- sd) | test of the chosen config, 3 fresh seeds | wall s (mean) |")
    print("|---|---|---|---|")
    for name, values in results.items():
        best = [v[0] for v in values]
        sd = statistics.stdev(best) if len(best) > 1 else math.nan
        print(f"| {name} | {statistics.mean(best):.4f} +- {sd:.4f} | {statistics.mean(v[1] for v in values):.4f} | "
              f"{statistics.mean(v[2] for v in values):.1f} |")
    names = list(results)
    last = results[names[-1]]
    for name in names[:-1]:  # each row against the last (Optuna's, unless --pybn-only)
        first = results[name]
        wins = sum(a[0] >= b[0] for a, b in zip(first, last))
        print(f"{name}: best validation score >= {names[-1]}'s in {wins} of {seeds} seeds")
        for what, i in (("best validation", 0), ("test of the chosen config", 1)):
            print(f"{name} - {names[-1]}, {what} (paired by seed): {_paired(first, last, i)}")
    for name, values in results.items():
        gains = [v[3] for v in values if v[3]]
        if gains:
            per_round = [sum(g[r] for g in gains) for r in range(len(gains[0]))]
            print(f"{name}: " + ", ".join(f"{_round_word(name)} {r + 1} raised the best in {n} of "
                                           f"{len(gains)} seeds" for r, n in enumerate(per_round)))
    return results


def _round_word(name):
    """pybn's rounds; Optuna's trials numbered as those rounds' would be."""
    return "trials of round" if name.startswith("Optuna") else "round"


def _paired(first, last, i):
    """Mean difference of column i, seed by seed, +- its standard error: a
    difference inside about two standard errors is not one this run shows."""
    d = [a[i] - b[i] for a, b in zip(first, last)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return f"{statistics.mean(d):+.4f} +- {se:.4f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--task", choices=["digits", "synthetic", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="study seeds first..first+seeds-1 (try variants on other seeds than you report)")
    parser.add_argument("--pybn-only", action="store_true", help="skip Optuna (to try pybn variants)")
    parser.add_argument("--no-prune-row", action="store_true", help="also run pybn tune --pruner none")
    parser.add_argument("--variant", action="append", default=[], metavar="FLAGS",
                        help="also run pybn tune with these flags, e.g. --variant '--pruner halving' "
                             "(repeatable)")
    parser.add_argument("--optuna-trials", type=int, action="append", default=[], metavar="N",
                        help="also run Optuna's TPE + MedianPruner with N trials (repeatable)")
    parser.add_argument("--optuna-halving", type=int, action="append", default=[], metavar="N",
                        help="also run Optuna's TPE + SuccessiveHalvingPruner with N trials (repeatable)")
    args = parser.parse_args(argv)
    import pybn
    pybn.set_num_threads(1)
    rows = {f"pybn tune (default, {sum(tune_defaults()['trials_per_round'])} trials)": run_pybn}
    if args.no_prune_row:
        rows["pybn tune --pruner none"] = lambda *a: run_pybn(*a, flags=("--pruner", "none"))
    for flags in args.variant:
        rows[f"pybn tune {flags}"] = lambda *a, flags=tuple(flags.split()): run_pybn(*a, flags=flags)
    if not args.pybn_only:
        for n_trials in args.optuna_trials:  # before the baseline: every row is compared with the last
            rows[f"Optuna TPE (multivariate) + MedianPruner, {n_trials} trials"] = \
                lambda *a, n=n_trials: run_optuna(*a, n_trials=n)
        for n_trials in args.optuna_halving:
            rows[f"Optuna TPE (multivariate) + SuccessiveHalvingPruner, {n_trials} trials"] = \
                lambda *a, n=n_trials: run_optuna(*a, n_trials=n, pruner="halving")
        rows["Optuna TPE (multivariate) + MedianPruner, 90 trials"] = run_optuna
    for task in (["digits", "synthetic"] if args.task == "both" else [args.task]):
        run_task(task, args.seeds, args.workers, rows, args.first_seed)


if __name__ == "__main__":
    main()
