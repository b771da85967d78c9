"""Running trials: in this process, in a local process pool, or on any
concurrent.futures.Executor or Dask client, with faults kept apart.

Two kinds of failure are told apart:
- the trial's own: the objective raised (any BaseException, SystemExit and
  KeyboardInterrupt in a worker included), returned a non-finite score,
  timed out, or killed its worker twice: the trial is "failed", with the
  traceback;
- the infrastructure's: a task cancelled, a Dask worker or connection lost.
  The trial is "lost": it stays "running" in the storage, so a resumed study
  runs it again. A Dask scheduler that stops answering ends the run within
  a bounded time (StudyInterrupted), with the storage resumable.

Workers of the pool this module starts exit when their coordinator dies (a
parent watch), so a SIGKILLed study leaves no process behind.

Imports nothing of pybn's training stack: objectives signal divergence by
raising TrialDiverged (or returning a non-finite score) and read their
thread share from trial.threads.
"""
import concurrent.futures as cf
import inspect
import math
import multiprocessing
import os
import sys
import threading
import time
import traceback
from concurrent.futures import BrokenExecutor

__all__ = ["TrialContext", "TrialPruned", "TrialDiverged", "StudyInterrupted", "execute"]

# How long a Dask client may be disconnected from its scheduler before the
# run is given up (the client itself keeps reconnecting in the meantime).
SCHEDULER_GRACE_SECONDS = 20.0
# Attempts at a trial lost to the infrastructure within one run.
INFRASTRUCTURE_ATTEMPTS = 3
_POLL_SECONDS = 0.5


class TrialPruned(Exception):
    """Raised by TrialContext.report when the trial should stop early."""


class TrialDiverged(Exception):
    """Raised by an objective whose training diverged: the trial fails with
    this message, and the study goes on."""


class StudyInterrupted(RuntimeError):
    """The run could not go on (the executor is gone); every unfinished
    trial stays in the storage to be run when the study is resumed."""


class TrialContext:
    """Handed to objectives that take a second argument: the trial's number,
    training seed and thread share (`threads`), and report(step, score) for
    per-epoch scores. report raises TrialPruned when the pruner judges the
    score hopeless against the reference curves at the same step: the panda
    way of watching each model, applied to many. Without a pruner, the
    median rule after `warmup` steps over at least 3 reference curves."""

    def __init__(self, number, seed, params, maximize, reference=(), warmup=2, threads=1, pruner=None):
        from .pruners import MedianPruner
        self.number, self.seed, self.params, self.threads = number, seed, params, threads
        self.intermediate = []
        self._maximize, self._reference = maximize, reference
        self._pruner = pruner if pruner is not None else MedianPruner(warmup_steps=warmup, min_trials=3, lag=0)

    def report(self, step, value):
        value = float(value)
        self.intermediate.append(value)
        if self.should_prune(step, value):
            raise TrialPruned(f"trial {self.number} pruned at step {step} (score {value:.4g})")

    def should_prune(self, step, value):
        return self._pruner.should_prune(step, value, self._reference, self._maximize)


def _wants_context(objective):
    try:
        params = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _failure(exc):
    """A failed trial's error text: the exception and its traceback."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def run_trial(objective, number, params, seed, threads, maximize, reference, isolated=True, pruner=None):
    """Run one trial (in whatever process the executor chose) with its share
    of the cores; returns (state, value, error, intermediate). In a worker
    (isolated) every exception fails the trial only; in the coordinator's
    own process a KeyboardInterrupt still stops the study."""
    from threadpoolctl import threadpool_limits

    context = TrialContext(number, seed, params, maximize, reference, threads=threads, pruner=pruner)
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
    except TrialDiverged as exc:
        return "failed", None, f"diverged: {exc}", context.intermediate
    except KeyboardInterrupt as exc:
        if not isolated:
            raise
        return "failed", None, _failure(exc), context.intermediate
    except BaseException as exc:  # a failed trial is recorded; the study goes on
        return "failed", None, _failure(exc), context.intermediate


# ---- worker pools --------------------------------------------------------------------


def _watch_parent(parent):
    """Pool worker initializer: exit as soon as the coordinator is gone (a
    SIGKILLed coordinator cannot shut its pool down)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(_POLL_SECONDS)
        os._exit(1)
    threading.Thread(target=watch, name="pybn-parent-watch", daemon=True).start()


def process_pool(n_workers, max_tasks_per_child=None):
    # spawn, not fork: a forked child of a process that has run OpenMP
    # threads can deadlock in the OpenMP runtime.
    kwargs = {"mp_context": multiprocessing.get_context("spawn"), "initializer": _watch_parent,
              "initargs": (os.getpid(),)}
    if max_tasks_per_child is not None:
        if sys.version_info < (3, 11):
            raise ValueError("max_tasks_per_child: needs Python 3.11 or newer")
        kwargs["max_tasks_per_child"] = max_tasks_per_child
    return cf.ProcessPoolExecutor(n_workers, **kwargs)


def _kill_pool(executor):
    """End a process pool now, its running trials included."""
    for process in list(getattr(executor, "_processes", {}).values()):
        if process.is_alive():
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


def _is_dask_client(obj):
    return hasattr(obj, "get_executor") and hasattr(obj, "status") and hasattr(obj, "scheduler")


def _infrastructure_error(exc):
    """A task lost by the executor, not by the trial: cancelled, or a Dask
    connection gone (Dask's KilledWorker, a task that killed its workers
    again and again, is the trial's)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "KilledWorker" in names:
        return False
    return any("Cancelled" in name for name in names) or bool(
        names & {"CommClosedError", "StreamClosedError", "FutureLostError"})


class _Executor:
    """The executor of one run: our own process pool (recreated when broken
    or killed), an Executor given by the caller, or a Dask client's."""

    def __init__(self, executor, n_workers, max_tasks_per_child):
        self.own = executor is None
        self.client = executor if _is_dask_client(executor) else None
        self.n_workers, self.max_tasks_per_child = n_workers, max_tasks_per_child
        if self.own:
            self.executor = process_pool(n_workers, max_tasks_per_child)
        elif self.client is not None:
            self.executor = self.client.get_executor()
        else:
            self.executor = executor
        self.unhealthy_since = None

    def submit(self, *args):
        return self.executor.submit(*args)

    def renew(self, kill=False):
        """A fresh pool after a broken one (own pools only)."""
        if kill:
            _kill_pool(self.executor)
        else:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = process_pool(self.n_workers, self.max_tasks_per_child)

    def check_alive(self):
        """Raise StudyInterrupted once a Dask scheduler has been unreachable
        for SCHEDULER_GRACE_SECONDS."""
        if self.client is None:
            return
        status = getattr(self.client, "status", "running")
        if status == "running":
            self.unhealthy_since = None
            return
        now = time.monotonic()
        self.unhealthy_since = self.unhealthy_since or now
        if status in ("closed", "closing", "failed") or now - self.unhealthy_since > SCHEDULER_GRACE_SECONDS:
            address = getattr(getattr(self.client, "scheduler", None), "address", "?")
            raise StudyInterrupted(f"the Dask scheduler at {address} stopped answering (client {status}); "
                                   "unfinished trials stay in the storage: run the study again to resume")

    def close(self):
        if self.own:
            self.executor.shutdown(wait=True, cancel_futures=True)


def runs_in_process(n_workers, executor=None, in_process=None, timeout=None, max_tasks_per_child=None):
    """Whether trials run in this process: in_process None means yes for one
    worker when no executor, timeout or worker recycling asks for processes."""
    if in_process is None:
        in_process = executor is None and n_workers == 1 and timeout is None and max_tasks_per_child is None
    if in_process and timeout is not None:
        raise ValueError("timeout: needs worker processes (in_process=False)")
    return bool(in_process)


class Workers:
    """The workers of a whole study, kept across its rounds (one process pool,
    started once): `with Workers(...) as workers: execute(..., workers=workers)`."""

    def __init__(self, n_workers, executor=None, in_process=None, timeout=None, max_tasks_per_child=None):
        self.n_workers, self.timeout = n_workers, timeout
        self.in_process = runs_in_process(n_workers, executor, in_process, timeout, max_tasks_per_child)
        self._args = (executor, n_workers, max_tasks_per_child)
        self._runner = None

    def runner(self):
        if self._runner is None:  # started by the first trial that needs it
            self._runner = _Executor(*self._args)
        return self._runner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def execute(objective, jobs, reference, *, n_workers, maximize, executor=None, in_process=None,
            timeout=None, max_tasks_per_child=None, on_start=None, pruner=None, workers=None):
    """Yield (number, (state, value, error, intermediate)) as trials end, at
    most n_workers in flight. state "lost" means the infrastructure lost the
    trial (leave it running: a resume runs it). jobs: [(number, params, seed)].

    reference: the curves a pruner compares with, a list, or a function of
    a trial number `limit` giving the curves of the complete trials numbered
    below it; then trial k starts only when every job numbered below
    pruner.visible(k) has ended (see pruners.py). workers: a Workers kept by
    the caller across calls (else one is started and closed here)."""
    if not jobs:
        return
    own = workers is None
    if own:
        workers = Workers(n_workers, executor, in_process, timeout, max_tasks_per_child)
    threads = max(1, (os.cpu_count() or 1) // workers.n_workers)
    if callable(reference):
        visible = pruner.visible if pruner is not None else (lambda number: number)
        curves = lambda number: reference(visible(number))  # noqa: E731
    else:
        visible, curves = (lambda number: -1), (lambda number: reference)  # noqa: E731
    try:
        if workers.in_process:
            for number, params, trial_seed in jobs:
                if on_start:
                    on_start(number, params, trial_seed)
                yield number, run_trial(objective, number, params, trial_seed, threads, maximize,
                                        curves(number), isolated=False, pruner=pruner)
            return
        yield from _run_parallel(workers.runner(), objective, jobs, curves, visible, threads, maximize,
                                 workers.timeout, on_start, pruner)
    finally:
        if own:
            workers.__exit__(None, None, None)


def _run_parallel(runner, objective, jobs, curves, visible, threads, maximize, timeout, on_start, pruner):
    n_workers = runner.n_workers
    # queue entries: (job, crashes, infrastructure losses)
    pending, queue, started = {}, [(job, 0, 0) for job in jobs], set()
    unfinished = {job[0] for job in jobs}
    while queue or pending:
        runner.check_alive()
        while queue and len(pending) < n_workers:
            if queue[0][1] > 0 and pending:
                break  # a retry after a crash runs alone: if its worker dies again, the trial is the cause
            if pending and min(unfinished) < visible(queue[0][0][0]):
                break  # the trials this one is to be judged against have not all ended
            entry = queue.pop(0)
            (number, params, trial_seed), crashes, _ = entry
            if on_start and number not in started:
                on_start(number, params, trial_seed)
                started.add(number)
            try:
                future = runner.submit(run_trial, objective, number, params, trial_seed, threads,
                                       maximize, curves(number), True, pruner)
            except BrokenExecutor:
                # a worker died between two submissions: this trial has not
                # started; it waits for the fresh pool
                if not runner.own:
                    raise
                queue.insert(0, entry)
                if not pending:
                    runner.renew()
                break
            except RuntimeError as exc:  # an executor that was shut down or lost its scheduler
                queue.insert(0, entry)
                runner.check_alive()
                raise StudyInterrupted(f"the executor refused a trial ({exc}); unfinished trials stay "
                                       "in the storage: run the study again to resume") from exc
            pending[future] = (entry, time.monotonic())
            if crashes > 0:
                break
        if not pending:
            continue
        done, _ = cf.wait(pending, timeout=_POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
        broken = False
        for future in done:
            (job, crashes, losses), _ = pending.pop(future)
            number = job[0]
            try:
                result = future.result()
            except BrokenExecutor as exc:
                # A worker process died (killed, out of memory, a crash in
                # native code, os._exit) and took the pool with it. Each
                # trial in flight is tried once more, alone, in a fresh pool;
                # one whose worker dies again is recorded as failed.
                broken = runner.own
                if crashes == 0 and runner.own:
                    queue.insert(0, (job, 1, losses))
                    continue
                result = ("failed", None, f"worker process died: {type(exc).__name__}: {exc}", [])
            except BaseException as exc:  # the trial's worker raised it (run_trial returns the rest)
                if _infrastructure_error(exc):
                    if losses + 1 < INFRASTRUCTURE_ATTEMPTS:
                        queue.insert(0, (job, crashes, losses + 1))
                        continue
                    runner.check_alive()
                    result = ("lost", None, f"lost {INFRASTRUCTURE_ATTEMPTS} times by the executor: "
                                            f"{type(exc).__name__}: {exc}", [])
                else:  # e.g. an objective that cannot be pickled, or Dask's KilledWorker
                    result = ("failed", None, f"worker error: {_failure(exc)}", [])
            unfinished.discard(number)
            yield number, result
        if timeout is not None:
            now = time.monotonic()
            late = [f for f, (_, t0) in pending.items() if now - t0 > timeout]
            for future in late:
                (job, _, _), t0 = pending.pop(future)
                future.cancel()
                unfinished.discard(job[0])
                yield job[0], ("failed", None, f"timed out after {timeout:g} s (the trial's limit)", [])
            if late and runner.own:
                # a running trial cannot be stopped alone: end the pool; the
                # other trials in flight start again, unharmed, in a new one
                queue[:0] = sorted((entry for entry, _ in pending.values()), key=lambda e: e[0][0])
                pending.clear()
                runner.renew(kill=True)
                continue
        if broken:
            # lost with the pool, not yet reported
            queue[:0] = sorted((entry for entry, _ in pending.values()), key=lambda e: e[0][0])
            pending.clear()
            runner.renew()
