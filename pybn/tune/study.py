"""Study: random search and coarse-to-fine over a space, every trial stored
as it starts and ends (execution.py runs them, in parallel or not).

Identity: a study is its name in a storage plus, optionally, the settings
that define it (data fingerprint, objective settings, space, seed,
rounds). Opening it with other settings raises StudyMismatch, saying what
changed: an old study is never shown as if it were the new one.

Reproducibility: trial k of a round draws its parameters and its training
seed from numpy.random.default_rng([round seed, k]) and the round's plan
(samplers.py); a pruner judges trial k only against finished trials whose
numbers are fixed by k (pruners.py). So the same study gives the same
trials, pruned at the same epochs, whatever the number of workers. Plans
are stored, so a resumed study samples exactly where the interrupted one
would have.

Growing: trial numbers are contiguous, round after round. Asking for more
trials than stored keeps every finished round as it is; the newest stored
round (the last range of numbers) grows to its new share, rounds not yet
started get theirs, and whatever the finished rounds cannot take goes to the
last round. Asking for fewer runs nothing and is not an error.

Only this (coordinating) process writes the storage; workers return results.
"""
import contextlib
import csv
import math
import os
import secrets
from dataclasses import dataclass, field

import numpy as np

from .execution import StudyInterrupted, TrialContext, TrialDiverged, TrialPruned, Workers, execute
from .pruners import NopPruner, SuccessiveHalvingPruner, check_pruner
from .samplers import check_sampler, sample_trial
from .spaces import check_space, space_from_json, space_to_json
from .storage import SQLiteStorage

__all__ = ["Study", "Trial", "TrialContext", "TrialPruned", "TrialDiverged", "StudyInterrupted",
           "StudyMismatch", "RetestResult", "get_all_study_names"]

STATES = ("complete", "pruned", "failed", "running")


@dataclass(frozen=True)
class Trial:
    number: int
    round: int
    params: dict
    seed: int
    state: str
    value: float = None
    error: str = None          # a failed trial's message and traceback
    intermediate: list = field(default_factory=list)
    duration: float = None


@dataclass(frozen=True)
class RetestResult:
    number: int
    params: dict
    stored_value: float
    retest_value: float

    @property
    def change(self):
        return self.retest_value - self.stored_value


class StudyMismatch(ValueError):
    """The stored study was defined by other settings. `differences` maps
    each setting that changed to (stored, given)."""

    def __init__(self, message, differences):
        super().__init__(message)
        self.differences = differences


def _storage(storage):
    """A SQLiteStorage from None (memory), a path or a storage object."""
    if isinstance(storage, SQLiteStorage):
        return storage
    if storage is None:
        return SQLiteStorage(":memory:")
    if isinstance(storage, (str, os.PathLike)):
        path = os.fspath(storage)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path.strip():
            raise ValueError("storage: expected a file path, got an empty string "
                             "(None keeps a study in memory)")
        return SQLiteStorage(path)
    raise TypeError(f"storage: expected a file path, a SQLiteStorage or None, "
                    f"got {type(storage).__name__}")


def get_all_study_names(storage):
    """The names of every study in a storage (a path or SQLiteStorage)."""
    return _storage(storage).study_names()


def _describe(value):
    if isinstance(value, dict) and set(value) == {"kind", "low", "high"}:
        return f"{value['kind']}({value['low']:g}, {value['high']:g})"
    return repr(value) if isinstance(value, str) else str(value)


class Study:
    """A hyperparameter search whose trials are stored in `storage` (None:
    in memory; a path: a SQLite file, reopened to continue).

    name=None opens the only study in the storage (or creates "default" in
    an empty one; several studies: ValueError listing them). `settings`, a
    JSON-serializable dict, is what defines the study: stored when it is
    created and compared when it is opened (StudyMismatch if it differs)."""

    def __init__(self, storage=None, direction="maximize", name=None, settings=None):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction: expected 'maximize' or 'minimize', got {direction!r}")
        self.storage = _storage(storage)
        if name is None:
            names = self.storage.study_names()
            if len(names) > 1:
                raise ValueError(f"name: {self.storage.path} holds {len(names)} studies "
                                 f"({', '.join(map(repr, names))}): say which")
            name = names[0] if names else "default"
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"settings: expected a dict or None, got {type(settings).__name__}")
        self.name = name
        stored, stored_settings = self.storage.get_or_create_study(name, direction, settings)
        if stored != direction:
            raise ValueError(f"direction: the stored study {name!r} is to {stored}, not {direction}")
        self.direction = direction
        if settings is not None and stored_settings is not None:
            self._check_settings(stored_settings, settings)
        self.settings = stored_settings if stored_settings is not None else settings

    def _check_settings(self, stored, given):
        import json
        given = json.loads(json.dumps(given))  # as stored: tuples become lists
        keys = sorted(set(stored) | set(given))
        differences = {k: (stored.get(k), given.get(k)) for k in keys if stored.get(k) != given.get(k)}
        if differences:
            changes = "; ".join(f"{k} {_describe(new)} (stored: {_describe(old)})"
                                for k, (old, new) in differences.items())
            raise StudyMismatch(f"study {self.name!r} in {self.storage.path} was run with other "
                                f"settings: {changes}", differences)

    @property
    def maximize(self):
        return self.direction == "maximize"

    # ---- results -------------------------------------------------------------------

    @property
    def trials(self):
        out = []
        for t in self.storage.trials(self.name):
            duration = t["finished"] - t["started"] if t["finished"] and t["started"] else None
            out.append(Trial(t["number"], t["round"], t["params"], t["seed"], t["state"], t["value"],
                             t["error"], t["intermediate"], duration))
        return out

    def counts(self):
        """{state: number of trials} for every state."""
        trials = self.trials
        return {state: sum(t.state == state for t in trials) for state in STATES}

    def best_trials(self, k=1, rounds=None):
        """The k best complete trials, best first. Equal scores (common when
        the score is a count of validation examples) are ranked by the mean
        of the last TAIL_EPOCHS reported scores: of two configurations with
        the same best epoch, the one that stays near it is less the luck of
        one epoch (measured: README, "Search against Optuna")."""
        return self._ranked(rounds, tie_break=_steadier_end)[:k]

    def _ranked(self, rounds=None, tie_break=None):
        """The complete trials (of `rounds`), best first; equal scores ordered
        by tie_break(trial, sign) when given (smaller first), then by number."""
        sign = -1.0 if self.maximize else 1.0
        done = [t for t in self.trials if t.state == "complete" and t.value is not None
                and (rounds is None or t.round in rounds)]
        return sorted(done, key=lambda t: (sign * t.value, *(tie_break(t, sign) if tie_break else ()), t.number))

    @property
    def best_trial(self):
        best = self.best_trials(1)
        if not best:
            raise ValueError("best_trial: the study has no complete trial yet")
        return best[0]

    @property
    def best_params(self):
        return dict(self.best_trial.params)

    @property
    def best_value(self):
        return self.best_trial.value

    def _rows(self):
        names = sorted({k for t in self.trials for k in t.params})
        for t in self.trials:
            yield {"number": t.number, "round": t.round, "state": t.state, "value": t.value,
                   **{f"params_{k}": t.params.get(k) for k in names}, "seed": t.seed,
                   "duration": t.duration, "error": t.error}

    def trials_table(self):
        """One row per trial: a pandas DataFrame when pandas is installed,
        else a list of dicts."""
        rows = list(self._rows())
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def trials_dataframe(self):
        """Every trial as a pandas DataFrame (as Optuna's); needs pandas."""
        try:
            import pandas
        except ImportError:
            raise ImportError("trials_dataframe needs pandas (pip install pandas); "
                              "to_csv(path) needs nothing") from None
        return pandas.DataFrame(list(self._rows()))

    def to_csv(self, path):
        """Write every trial to a CSV file (one row per trial); returns the path."""
        rows = list(self._rows())
        columns = list(rows[0]) if rows else ["number", "round", "state", "value"]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    # ---- search --------------------------------------------------------------------

    def optimize(self, objective, space, n_trials, *, pruner=SuccessiveHalvingPruner(), n_workers=1, executor=None,
                 seed=None, progress=False, retry_failed=False, in_process=None, timeout=None,
                 max_tasks_per_child=None):
        """Random search: bring this study's random-search round to n_trials
        trials (running it again after an interruption finishes the rest).
        A different space or seed starts a new round, after the unfinished
        trials of the last one. See coarse_to_fine for the other options."""
        check_space(space)
        n_trials = _count(n_trials, "n_trials")
        pruner = check_pruner(pruner)
        with self._runner(objective, pruner, n_workers, executor, progress, retry_failed, in_process,
                          timeout, max_tasks_per_child) as run, self.storage.coordinator_lock():
            last = self.storage.max_round(self.name)
            stored = self.storage.get_round(self.name, last) if last >= 0 else None
            if stored and space_from_json(stored[0]["space"]) == space and (
                    seed is None or stored[0]["seed"] == seed):
                round_, plan = last, stored[0]  # continue the last round
                first, n_trials = stored[2], max(n_trials, stored[1])
                _refuse_changed(plan, "pruner", pruner, f"round {round_} of study {self.name!r}")
            else:
                if stored:  # finish what the last round left running before a new one
                    run(last, stored[0], stored[2], stored[1])
                round_ = last + 1
                first = (stored[2] + stored[1]) if stored else 0
                plan = {"space": space_to_json(space), "seed": _seed(seed), "pruner": pruner.to_json()}
            self.storage.put_round(self.name, round_, plan, n_trials, first)
            run(round_, plan, first, n_trials)
        return self

    def coarse_to_fine(self, objective, space, *, rounds, trials_per_round, top_k=None, sampler=None,
                       pruner=SuccessiveHalvingPruner(), seed=None, n_workers=1, executor=None, progress=False,
                       retry_failed=False, in_process=None, timeout=None, max_tasks_per_child=None):
        """Round 0 samples the whole space; each later round samples, more
        densely, where the good trials so far are (sampler: by default a
        CoarseToFineSampler(top_k=top_k or 5), see samplers.py; the region
        is chosen on each parameter's own scale). trials_per_round: an int
        or one per round (see the module docstring for a study that grows).

        pruner: stops hopeless trials early (None: never); by default a
        pruners.SuccessiveHalvingPruner (after 2, 6, 18... steps only the
        best third of the trials that reached the step go on), the same
        trials pruned however many workers run them. executor: a concurrent.futures.Executor or a
        Dask distributed Client (None: a local process pool, started once
        for the whole study, or this process for n_workers=1).
        retry_failed: run failed trials again. in_process=False runs even a
        single worker in a process of its own (an objective that exits or
        crashes then fails its trial only). timeout: seconds a trial may run
        before it fails (worker processes only). max_tasks_per_child:
        recycle pool workers after that many trials (leaky objectives)."""
        check_space(space)
        rounds = _count(rounds, "rounds")
        per_round = [trials_per_round] * rounds if np.isscalar(trials_per_round) else list(trials_per_round)
        if len(per_round) != rounds:
            raise ValueError(f"trials_per_round: expected {rounds} counts, got {len(per_round)}")
        per_round = [_count(n, "trials_per_round") for n in per_round]
        if top_k is not None:
            top_k = _count(top_k, "top_k")
        sampler, pruner = check_sampler(sampler, top_k), check_pruner(pruner)
        round0 = self.storage.get_round(self.name, 0)
        if round0 is not None and "study_seed" in round0[0]:
            first_plan = round0[0]
            if seed is not None and seed != first_plan["study_seed"]:
                raise ValueError(f"seed: study {self.name!r} began with seed {first_plan['study_seed']}, "
                                 f"not {seed} (use another study name for another seed)")
            seed = first_plan["study_seed"]  # resume with the seed the study began with
            if space_from_json(first_plan["space"]) != space:
                raise ValueError(f"space: study {self.name!r} searched another space "
                                 "(use another study name for another space)")
            for what, given in (("sampler", sampler), ("pruner", pruner)):
                _refuse_changed(first_plan, what, given, f"study {self.name!r}")
        seed = _seed(seed)
        with self._runner(objective, pruner, n_workers, executor, progress, retry_failed, in_process,
                          timeout, max_tasks_per_child) as run, self.storage.coordinator_lock():
            stored = {r: (plan, n, first) for r, plan, n, first in self.storage.rounds(self.name)}
            if stored and max(stored) >= rounds:
                raise ValueError(f"rounds: study {self.name!r} already has {max(stored) + 1} rounds")
            counts = _grown_counts(per_round, stored)
            first = 0
            for r in range(rounds):
                if r in stored:  # resume: the plan and seed chosen before
                    plan, first = stored[r][0], stored[r][2]
                else:
                    plan = sampler.plan(space, self._good_trials(sampler)) if r else {"space": space_to_json(space)}
                    plan.update(seed=int(np.random.default_rng([seed, r]).integers(2**31)), study_seed=seed,
                                sampler=sampler.to_json(), pruner=pruner.to_json())
                self.storage.put_round(self.name, r, plan, counts[r], first)
                run(r, plan, first, counts[r])
                first += counts[r]
        return self

    def _good_trials(self, sampler):
        # a round's plan ranks by score, then trial number, as every stored
        # study was planned (the tie-break of best_trials picks, it does not plan)
        ranked = self._ranked()
        return ranked[:sampler.n_good(len(ranked))]

    def retest(self, objective, k=3, *, seed=None, n_workers=1, executor=None):
        """Re-run the best k stored configurations with fresh training seeds
        (today's data, today's code) and report how their scores moved."""
        _check_objective(objective)
        best = self.best_trials(_count(k, "k"))
        rng = np.random.default_rng(_seed(seed))
        jobs = [(t.number, t.params, int(rng.integers(2**31))) for t in best]
        results = {}
        for number, (state, value, _, _) in execute(objective, jobs, [], n_workers=_count(n_workers, "n_workers"),
                                                    maximize=self.maximize, executor=executor,
                                                    pruner=NopPruner()):
            results[number] = value if state == "complete" else float("nan")
        return [RetestResult(t.number, t.params, t.value, results[t.number]) for t in best]

    # ---- execution -----------------------------------------------------------------

    @contextlib.contextmanager
    def _runner(self, objective, pruner, n_workers, executor, progress, retry_failed, in_process, timeout,
                max_tasks_per_child):
        """A context giving run(round, plan, first, n), the execution options
        checked once and one set of workers for every round."""
        _check_objective(objective)
        n_workers = _count(n_workers, "n_workers")
        if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                        and timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout: expected a number of seconds > 0 or None, got {timeout!r}")
        if max_tasks_per_child is not None:
            max_tasks_per_child = _count(max_tasks_per_child, "max_tasks_per_child")
        with Workers(n_workers, executor, in_process, timeout, max_tasks_per_child) as workers:
            def run(round_, plan, first, n_trials):
                self._run_round(objective, round_, plan, first, n_trials, workers, pruner, progress,
                                retry_failed)
            yield run

    def _run_round(self, objective, round_, plan, first, n_trials, workers, pruner, progress, retry_failed):
        existing = {t.number: t for t in self.trials}
        jobs = []
        for number in range(first, first + n_trials):
            trial = existing.get(number)
            if trial is not None and trial.state != "running" and not (retry_failed and trial.state == "failed"):
                continue  # finished: never run twice
            if trial is not None:  # interrupted or retried: same number, same parameters
                params, trial_seed = trial.params, trial.seed
            else:
                params, trial_seed = sample_trial(plan, plan["seed"], number)
            jobs.append((number, params, trial_seed))
        judged_against = pruner.reference_states  # complete trials; successive halving also reads pruned ones
        curves = {t.number: t.intermediate for t in existing.values() if t.state in judged_against}
        if "pruner" in plan:
            def reference(limit):  # the trials numbered below limit (pruners.py)
                return [curve for number, curve in curves.items() if number < limit]
        else:  # a study begun before pruners.py: earlier rounds only, as it was run
            reference = [t.intermediate for t in existing.values() if t.round < round_ and t.state == "complete"]
        bar = _progress_bar(n_trials, n_trials - len(jobs), round_, progress)
        # the best score so far, kept up to date here rather than re-read
        # from the storage after every trial
        best = self.best_trials(1)
        best = best[0].value if best else None

        def started(number, params, trial_seed):
            self.storage.start_trial(self.name, number, round_, params, trial_seed)

        try:
            for number, (state, value, error, intermediate) in execute(
                    objective, jobs, reference, n_workers=workers.n_workers, maximize=self.maximize,
                    on_start=started, pruner=pruner, workers=workers):
                if state == "lost":  # stays "running": a resumed study runs it again
                    continue
                self.storage.finish_trial(self.name, number, state, value, error, intermediate)
                if state in judged_against:
                    curves[number] = intermediate
                if state == "complete" and (best is None or (value > best if self.maximize else value < best)):
                    best = value
                if bar is not None:
                    bar.update(1)
                    if best is not None:
                        bar.set_postfix(best=f"{best:.4f}")
        finally:
            if bar is not None:
                bar.close()


TAIL_EPOCHS = 5


def _steadier_end(trial, sign):
    """Ties of the score: the higher (minimizing, lower) mean of the last
    TAIL_EPOCHS finite scores first; a curve with none of them last."""
    tail = [v for v in trial.intermediate[-TAIL_EPOCHS:] if v is not None and math.isfinite(v)]
    return (False, sign * sum(tail) / len(tail)) if tail else (True, 0.0)


def _refuse_changed(plan, what, given, where):
    """A stored plan's sampler or pruner (`what`) must be the one given."""
    if what in plan and plan[what] != given.to_json():
        raise ValueError(f"{what}: {where} ran with {plan[what]}, not {given.to_json()} "
                         "(use another study name to change it)")


def _grown_counts(requested, stored):
    """Trials per round for a study that may already have rounds: finished
    rounds keep their count, the newest stored round and the rounds not yet
    started take their requested share, and the rest of the requested total
    goes to the last round (see the module docstring)."""
    newest = max(stored) if stored else -1
    counts = []
    for r, want in enumerate(requested):
        if r in stored and r < newest:
            counts.append(stored[r][1])
        elif r == newest:
            counts.append(max(stored[r][1], want))
        else:
            counts.append(want)
    deficit = sum(requested) - sum(counts)
    if deficit > 0:  # the last round is the newest or not yet started: it can take more
        counts[-1] += deficit
    return counts


def _check_objective(objective):
    # not callable: every trial would fail with the same TypeError, stored
    if not callable(objective):
        raise TypeError(f"objective: expected a callable, got {type(objective).__name__}")


MAX_COUNT = 2**31 - 1  # trial numbers are SQLite integers; far beyond any study


def _count(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_COUNT:
        raise ValueError(f"{name}: expected an int from 1 to {MAX_COUNT}, got {value!r}")
    return int(value)


def _seed(seed):
    if seed is None:
        return secrets.randbits(31)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0 or None, got {seed!r}")
    return int(seed)


def _progress_bar(total, done, round_, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    desc = enabled if isinstance(enabled, str) else f"round {round_}"
    return tqdm(total=total, initial=done, desc=desc, unit="trial", dynamic_ncols=True)
