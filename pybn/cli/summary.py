"""The end of `pybn tune`: what the score is, how many trials completed,
were pruned or failed (and what pruning did), the best trials, the chosen
configuration's accuracy on the held-out test split, and what to do next."""
import os
import shlex

from .. import train as T


def _first_line(error):
    """The exception line of a stored traceback (its last line)."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def print_summary(args, study, objective, space, trials, ran, elapsed, workers):
    from .tune import format_table
    counts = {s: sum(t.state == s for t in trials) for s in ("complete", "pruned", "failed", "running")}
    storage = os.path.abspath(args.storage)
    print(f"\nstudy {study.name!r} in {storage}: {len(trials)} trials "
          f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed"
          + (f", {counts['running']} unfinished" if counts["running"] else "")
          + f"); {ran} run now in {elapsed:.1f} s on {workers} worker(s)")
    print(f"score: a trial's best validation accuracy over its {args.epochs} epochs "
          f"(the validation split, never trained on)")
    if counts["pruned"]:
        from .tune import pruner
        rule = pruner(args)
        if hasattr(rule, "reduction_factor"):
            rungs, epoch = [], rule.min_resource
            while epoch < args.epochs:  # never at the last epoch (objective.py)
                rungs.append(str(epoch))
                epoch *= rule.reduction_factor
            print(f"pruned: {counts['pruned']} trials were stopped early by successive halving: after "
                  f"epoch{'s' if len(rungs) > 1 else ''} {', '.join(rungs) or '(none before the last)'} only the best 1/{rule.reduction_factor} of the trials that "
                  f"reached the epoch went on (those numbered at least {rule.lag} below theirs, and its own); "
                  f"their score is the last one reached")
        else:
            threshold = "median" if rule.percentile == 50 else f"{rule.percentile:g}th percentile"
            print(f"pruned: {counts['pruned']} trials were stopped early, at the first epoch after the first "
                  f"{rule.warmup_steps} where their validation accuracy fell below the {threshold} of the "
                  f"complete trials' at that epoch (those numbered at least {rule.lag} below theirs); "
                  f"their score is the last one reached")
    failed = [t for t in trials if t.state == "failed"]
    if failed:
        first = failed[0]
        print(f"failed: {len(failed)} trials raised or diverged (first: trial {first.number}: "
              f"{_first_line(first.error)}); full tracebacks in the storage, "
              f"--retry-failed runs them again")
    if counts["running"]:
        print(f"unfinished: {counts['running']} trials were lost by the workers; the same command runs them")
    print(format_table(study.best_trials(args.top), space))
    best = study.best_trials(1)
    if not best:
        return
    best = best[0]
    try:
        model, optimizer, history, split = objective.train(best.params, best.seed)
    except T.TrainingDiverged as exc:  # not on this machine's arithmetic, but say so rather than crash
        print(f"\nchosen: trial {best.number} (validation {best.value:.4f}); retraining it diverged: {exc}")
        return
    _, test_accuracy = T.evaluate(model, split.X_test, split.y_test)
    print(f"\nchosen: trial {best.number} (validation {best.value:.4f}); retrained with its seed: test "
          f"accuracy {test_accuracy:.4f} on the {len(split.y_test)} held-out test examples")
    if args.export:
        T.save_checkpoint(args.export, model, optimizer, epoch=args.epochs, history=history,
                          extra={"seed": best.seed, "lr0": float(best.params.get("learning_rate", optimizer.lr)),
                                 "params": best.params, "study": study.name, "trial": best.number})
        print(f"exported: {os.path.abspath(args.export)} (pybn train --resume {shlex.quote(args.export)} "
              f"--epochs N continues it; pybn.train.load_checkpoint loads it)")
    print(f"next: `{_same_command(args)}` resumes it (with a larger --n-trials it grows); "
          f"--plot tune.png plots it; --retest 3 re-runs the best with fresh seeds; "
          f"--export best.npz saves the chosen model")


def _same_command(args):
    """The pybn tune command line that reopens this study: the settings
    that differ from the parser's defaults (read from it, never copied)."""
    import argparse

    from .tune import FLAG_SETTINGS, add_parser, flag
    tune_parser = add_parser(argparse.ArgumentParser().add_subparsers())
    parts = ["pybn tune"]
    pruner_options = ("pruner", "prune_percentile", "prune_warmup", "reduction_factor")
    for name in ("storage", "study", *FLAG_SETTINGS, *pruner_options, "n_trials"):
        value = getattr(args, name)
        if value != tune_parser.get_default(name):
            parts.append(f"{flag(name)} {shlex.quote(str(value))}")
    if args.data:
        parts.append(f"--data {shlex.quote(args.data)}")
    if args.dask:
        parts.append(f"--dask {shlex.quote(args.dask)}")
    return " ".join(parts)
