"""pybn's default search beside Optuna's, on the same objective and space.

    pip install optuna            # a bench-only dependency
    python bench/search_vs_optuna.py --seeds 10 --task digits
    python bench/search_vs_optuna.py --seeds 10 --task synthetic

For each study seed: pybn's default `pybn tune` search (random round, then
coarse-to-fine rounds, 90 trials, 3 rounds, its pruner) and Optuna's TPE
(multivariate) with a MedianPruner, 90 trials, both on 2 workers with one
kernel thread each, both maximizing MLPObjective (the best validation
accuracy over 20 epochs) over default_space() on each parameter's own scale.
Printed per search: best validation accuracy (mean +- sd over seeds), the
test accuracy of the chosen configuration retrained with 3 fresh seeds
(mean), and the wall time (mean). Nothing here asserts a result.
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


def run_pybn(objective, space, seed, workers):
    from pybn.cli.tune import split_budget
    from pybn.tune import Study
    study = Study(None)
    start = time.perf_counter()
    study.coarse_to_fine(objective, space, rounds=3, trials_per_round=split_budget(90, 3), top_k=5,
                         seed=seed, n_workers=workers, in_process=False)
    return study.best_value, study.best_params, time.perf_counter() - start


def run_optuna(objective, space, seed, workers):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.MedianPruner())

    def wrapped(trial):
        params = _optuna_params(trial, space)
        training_seed = int(np.random.default_rng([seed, trial.number]).integers(2**31))
        return objective(params, _OptunaTrial(trial, training_seed))

    start = time.perf_counter()
    study.optimize(wrapped, n_trials=90, n_jobs=workers)  # threads: the kernels release the GIL
    best = study.best_trial
    return best.value, _optuna_params(optuna.trial.FixedTrial(best.params), space), time.perf_counter() - start


def test_accuracy(objective, params, seeds=(101, 102, 103)):
    from pybn import train as T
    accs = []
    for s in seeds:
        model, _, _, split = objective.train(params, s)
        accs.append(T.evaluate(model, split.X_test, split.y_test)[1])
    return statistics.mean(accs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--task", choices=["digits", "synthetic"], default="digits")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    import pybn
    from pybn import datasets
    from pybn.tune.objective import MLPObjective, default_space
    pybn.set_num_threads(1)
    data = None
    if args.task == "synthetic":  # harder: a point of accuracy is 9 test examples
        X, y = datasets.make_synthetic(n_samples=6000, n_features=64, n_classes=10, seed=0)
        data = os.path.join(tempfile.mkdtemp(), "synthetic.npz")
        np.savez(data, X=X, y=y)
    objective = MLPObjective(data, epochs=20)
    space = default_space()
    rows = {"pybn coarse-to-fine (default)": run_pybn, "Optuna TPE (multivariate) + MedianPruner": run_optuna}
    results = {name: [] for name in rows}
    for seed in range(args.seeds):
        for name, run in rows.items():
            best, params, wall = run(objective, space, seed, args.workers)
            results[name].append((best, test_accuracy(objective, params), wall))
            print(f"seed {seed}: {name}: best val {best:.4f}, test {results[name][-1][1]:.4f}, {wall:.1f} s",
                  file=sys.stderr, flush=True)
    print(f"\ntask {args.task}, {args.seeds} seeds, 90 trials, {args.workers} workers x 1 thread, 20 epochs")
    print("| search | best val (mean +- sd) | test of the chosen config, 3 fresh seeds | wall s (mean) |")
    print("|---|---|---|---|")
    for name, values in results.items():
        best = [v[0] for v in values]
        sd = statistics.stdev(best) if len(best) > 1 else math.nan
        print(f"| {name} | {statistics.mean(best):.4f} +- {sd:.4f} | {statistics.mean(v[1] for v in values):.4f} | "
              f"{statistics.mean(v[2] for v in values):.1f} |")
    wins = sum(a[0] >= b[0] for a, b in zip(*results.values()))
    print(f"pybn's best validation score >= Optuna's in {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
