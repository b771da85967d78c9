"""Study: random search and coarse-to-fine over a space, run in parallel on
any concurrent.futures.Executor, every trial stored as it starts and ends.

Reproducibility: trial k of a round draws its parameters and its training
seed from numpy.random.default_rng([round seed, k]) over the round's region,
so the same study gives the same trials whatever the number of workers. The
region of round r > 0 is the space narrowed around the best trials of the
rounds before it; regions are stored, so a resumed study samples exactly
where the interrupted one would have.

Only this (coordinating) process writes the storage; workers return results.
"""
import concurrent.futures as cf
import inspect
import math
import multiprocessing
import os
import secrets
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field

import numpy as np

from .spaces import check_space, space_from_json, space_to_json
from .storage import SQLiteStorage

__all__ = ["Study", "Trial", "TrialContext", "TrialPruned", "RetestResult"]


@dataclass(frozen=True)
class Trial:
    number: int
    round: int
    params: dict
    seed: int
    state: str
    value: float = None
    error: str = None
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


class TrialPruned(Exception):
    """Raised by TrialContext.report when the trial should stop early."""


class TrialContext:
    """Handed to objectives that take a second argument: the trial's number
    and training seed, and report(step, score) for per-epoch scores. report
    raises TrialPruned when the score is worse than the median of earlier
    rounds' trials at the same step (after `warmup` steps): the panda way
    of watching each model, applied to many."""

    def __init__(self, number, seed, params, maximize, reference=(), warmup=2):
        self.number, self.seed, self.params = number, seed, params
        self.intermediate = []
        self._maximize, self._reference, self._warmup = maximize, reference, warmup

    def report(self, step, value):
        value = float(value)
        self.intermediate.append(value)
        if self.should_prune(step, value):
            raise TrialPruned(f"trial {self.number} pruned at step {step} (score {value:.4g})")

    def should_prune(self, step, value):
        if step < self._warmup or not math.isfinite(value):
            return False
        at_step = [curve[step] for curve in self._reference if len(curve) > step and curve[step] is not None]
        if len(at_step) < 3:
            return False
        median = float(np.median(at_step))
        return value < median if self._maximize else value > median


def _wants_context(objective):
    try:
        params = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def run_trial(objective, number, params, seed, threads, maximize, reference):
    """Run one trial (in whatever process the executor chose) with its
    share of the cores; returns (state, value, error, intermediate)."""
    from threadpoolctl import threadpool_limits

    from .. import _threads
    from ..train import TrainingDiverged

    context = TrialContext(number, seed, params, maximize, reference)
    previous = _threads.requested_threads()
    _threads.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            value = objective(params, context) if _wants_context(objective) else objective(params)
        value = float(value)
        if not math.isfinite(value):
            return "failed", None, f"objective returned {value} (diverged)", context.intermediate
        return "complete", value, None, context.intermediate
    except TrialPruned:
        last = context.intermediate[-1] if context.intermediate else None
        return "pruned", last, None, context.intermediate
    except TrainingDiverged as exc:
        return "failed", None, f"diverged: {exc}", context.intermediate
    except Exception as exc:  # a failed trial is recorded; the study goes on
        return "failed", None, f"{type(exc).__name__}: {exc}", context.intermediate
    finally:
        _threads.set_num_threads(previous)


class Study:
    """A hyperparameter search whose trials are stored in `storage`
    (None: in memory; a path: a SQLite file, reopened to continue)."""

    def __init__(self, storage=None, direction="maximize", name="default"):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction: expected 'maximize' or 'minimize', got {direction!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        self.storage = storage if isinstance(storage, SQLiteStorage) else SQLiteStorage(
            ":memory:" if storage is None else storage)
        self.name = name
        stored = self.storage.get_or_create_study(name, direction)
        if stored != direction:
            raise ValueError(f"direction: the stored study {name!r} is to {stored}, not {direction}")
        self.direction = direction

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

    def best_trials(self, k=1, rounds=None):
        done = [t for t in self.trials if t.state == "complete" and t.value is not None
                and (rounds is None or t.round in rounds)]
        done.sort(key=lambda t: (-t.value if self.maximize else t.value, t.number))
        return done[:k]

    @property
    def best_trial(self):
        best = self.best_trials(1)
        if not best:
            raise ValueError("best_trial: the study has no complete trial yet")
        return best[0]

    def trials_table(self):
        """One row per trial: a pandas DataFrame when pandas is installed,
        else a list of dicts."""
        rows = [dict(number=t.number, round=t.round, state=t.state, value=t.value,
                     **{f"params_{k}": v for k, v in t.params.items()}, duration=t.duration,
                     error=t.error) for t in self.trials]
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    # ---- search --------------------------------------------------------------------

    def optimize(self, objective, space, n_trials, *, n_workers=1, executor=None, seed=None,
                 progress=False):
        """Random search: bring this study's random-search round to n_trials
        trials (running it again after an interruption finishes the rest)."""
        check_space(space)
        n_trials = _count(n_trials, "n_trials")
        with self.storage.coordinator_lock():
            last = self.storage.max_round(self.name)
            stored = self.storage.get_round(self.name, last) if last >= 0 else None
            if stored and space_from_json(stored[0]["space"]) == space and (
                    seed is None or stored[0]["seed"] == seed):
                round_, region, seed = last, space, stored[0]["seed"]  # continue the last round
                first, n_trials = stored[2], max(n_trials, stored[1])
            else:
                round_ = last + 1
                first = (stored[2] + stored[1]) if stored else 0
                region, seed = space, _seed(seed)
            self.storage.put_round(self.name, round_, {"space": space_to_json(region), "seed": seed},
                                   n_trials, first)
            self._run_round(objective, round_, region, seed, first, n_trials, n_workers, executor,
                            progress)
        return self

    def coarse_to_fine(self, objective, space, *, rounds, trials_per_round, top_k=5, seed=None,
                       n_workers=1, executor=None, progress=False):
        """Round 0 samples the whole space; each later round samples densely
        the space narrowed (on each parameter's own scale) around the top_k
        complete trials so far. trials_per_round: an int or one per round."""
        check_space(space)
        rounds = _count(rounds, "rounds")
        per_round = [trials_per_round] * rounds if np.isscalar(trials_per_round) else list(trials_per_round)
        if len(per_round) != rounds:
            raise ValueError(f"trials_per_round: expected {rounds} counts, got {len(per_round)}")
        per_round = [_count(n, "trials_per_round") for n in per_round]
        top_k = _count(top_k, "top_k")
        round0 = self.storage.get_round(self.name, 0)
        if seed is None and round0 is not None and "study_seed" in round0[0]:
            seed = round0[0]["study_seed"]  # resume with the seed the study began with
        seed = _seed(seed)
        with self.storage.coordinator_lock():
            self._coarse_to_fine_rounds(objective, space, rounds, per_round, top_k, seed, n_workers,
                                        executor, progress)
        return self

    def _coarse_to_fine_rounds(self, objective, space, rounds, per_round, top_k, seed, n_workers,
                               executor, progress):
        first = 0
        for r in range(rounds):
            stored = self.storage.get_round(self.name, r)
            if stored is not None:  # resume: the region and seed chosen before
                region = space_from_json(stored[0]["space"])
                round_seed, first, n = stored[0]["seed"], stored[2], max(stored[1], per_round[r])
            else:
                region = space if r == 0 else self._narrowed(space, top_k)
                round_seed, n = int(np.random.default_rng([seed, r]).integers(2**31)), per_round[r]
            self.storage.put_round(self.name, r, {"space": space_to_json(region), "seed": round_seed,
                                                  "study_seed": seed}, n, first)
            self._run_round(objective, r, region, round_seed, first, n, n_workers, executor, progress)
            first += n

    def _narrowed(self, space, top_k):
        best = self.best_trials(top_k)
        if not best:
            return space
        return {name: dist.narrow([t.params[name] for t in best]) for name, dist in space.items()}

    def retest(self, objective, k=3, *, seed=None, n_workers=1, executor=None):
        """Re-run the best k stored configurations with fresh training seeds
        (today's data, today's code) and report how their scores moved."""
        best = self.best_trials(_count(k, "k"))
        rng = np.random.default_rng(_seed(seed))
        jobs = [(t.number, t.params, int(rng.integers(2**31))) for t in best]
        results = {}
        for number, (state, value, _, _) in self._execute(objective, jobs, [], n_workers, executor):
            results[number] = value if state == "complete" else float("nan")
        return [RetestResult(t.number, t.params, t.value, results[t.number]) for t in best]

    # ---- execution -----------------------------------------------------------------

    def _run_round(self, objective, round_, region, seed, first, n_trials, n_workers, executor, progress):
        existing = {t.number: t for t in self.trials}
        jobs = []
        for number in range(first, first + n_trials):
            trial = existing.get(number)
            if trial is not None and trial.state != "running":
                continue  # finished: never run twice
            if trial is not None:  # interrupted: same number, same parameters
                params, trial_seed = trial.params, trial.seed
            else:
                params, trial_seed = sample_trial(region, seed, number)
            jobs.append((number, params, trial_seed))
        # pruning compares with earlier rounds only, so that it does not
        # depend on which trials of this round happen to finish first
        reference = [t.intermediate for t in existing.values() if t.round < round_ and t.state == "complete"]
        bar = _progress_bar(n_trials, n_trials - len(jobs), round_, progress)
        # the best score so far, kept up to date here rather than re-read
        # from the storage after every trial
        best = self.best_trials(1)
        best = best[0].value if best else None

        def started(number, params, trial_seed):
            self.storage.start_trial(self.name, number, round_, params, trial_seed)

        for number, (state, value, error, intermediate) in self._execute(
                objective, jobs, reference, n_workers, executor, on_start=started):
            self.storage.finish_trial(self.name, number, state, value, error, intermediate)
            if state == "complete" and (best is None or (value > best if self.maximize else value < best)):
                best = value
            if bar is not None:
                bar.update(1)
                if best is not None:
                    bar.set_postfix(best=f"{best:.4f}")
        if bar is not None:
            bar.close()

    def _execute(self, objective, jobs, reference, n_workers, executor, on_start=None):
        """Yield (number, result) as trials finish; at most n_workers in flight."""
        n_workers = _count(n_workers, "n_workers")
        if not jobs:
            return
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        if executor is None and n_workers == 1:
            for number, params, trial_seed in jobs:
                if on_start:
                    on_start(number, params, trial_seed)
                yield number, run_trial(objective, number, params, trial_seed, threads, self.maximize, reference)
            return
        own = executor is None
        if own:
            executor = _process_pool(n_workers)
        try:
            pending, queue = {}, [(job, 0) for job in jobs]
            while queue or pending:
                while queue and len(pending) < n_workers:
                    if queue[0][1] > 0 and pending:
                        break  # a retry runs alone: if its worker dies again, the trial is the cause
                    (number, params, trial_seed), attempt = job_attempt = queue.pop(0)
                    if on_start and attempt == 0:
                        on_start(number, params, trial_seed)
                    try:
                        future = executor.submit(run_trial, objective, number, params, trial_seed,
                                                 threads, self.maximize, reference)
                    except BrokenExecutor:
                        # a worker died between two submissions: this trial has
                        # not started; it waits for the fresh pool (recording
                        # it as running again is harmless)
                        if not own:
                            raise
                        queue.insert(0, job_attempt)
                        if not pending:
                            executor.shutdown(wait=False, cancel_futures=True)
                            executor = _process_pool(n_workers)
                        break
                    pending[future] = job_attempt
                    if attempt > 0:
                        break
                if not pending:
                    continue
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                broken = False
                for future in done:
                    (number, params, trial_seed), attempt = job_attempt = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenExecutor as exc:
                        # A worker process died (killed, out of memory, a crash
                        # in native code) and took the pool with it. Each trial
                        # in flight is tried once more, alone, in a fresh pool;
                        # one whose worker dies again is recorded as failed.
                        broken = own
                        if attempt == 0 and own:
                            queue.insert(0, ((number, params, trial_seed), 1))
                            continue
                        result = ("failed", None, f"worker process died: {type(exc).__name__}: {exc}", [])
                    except Exception as exc:  # e.g. an objective that cannot be pickled
                        result = ("failed", None, f"worker error: {type(exc).__name__}: {exc}", [])
                    yield number, result
                if broken:
                    queue[:0] = list(pending.values())  # lost with the pool, not yet reported
                    pending.clear()
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = _process_pool(n_workers)
        finally:
            if own:
                executor.shutdown(wait=True, cancel_futures=True)


def _process_pool(n_workers):
    # spawn, not fork: a forked child of a process that has run OpenMP
    # threads can deadlock in the OpenMP runtime.
    return cf.ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))


def sample_trial(region, seed, number):
    """(params, training seed) of trial `number`: a function of the round
    seed, the number and the region, nothing else."""
    rng = np.random.default_rng([seed, number])
    params = {name: _plain(dist.sample(rng)) for name, dist in region.items()}
    return params, int(rng.integers(2**31))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _count(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
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
    return tqdm(total=total, initial=done, desc=f"round {round_}", unit="trial", dynamic_ncols=True)
