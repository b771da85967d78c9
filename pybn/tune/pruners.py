"""Pruners: when a running trial's learning curve says it is not worth
finishing (the panda's judgement, applied to many models at once).

A pruner compares a trial's score at step s with the scores, at the same
step, of the trials it may see (the complete ones; for successive halving,
the pruned ones too). Which trials those are is fixed by the trial's
number, never by timing: trial k sees every such trial numbered below
k - lag, of any round (the scheduler starts trial k only once
those have ended). So the same study prunes the same trials with 1 worker or
20, and a study resumed after a SIGKILL prunes exactly as the uninterrupted
one would; with up to `lag` workers nobody waits for that rule.
"""
import math
import numbers

import numpy as np

__all__ = ["MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "NopPruner", "pruner_from_json"]


def _int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


class _LaggedPruner:
    """What every rule here shares: which trials a trial sees (see the
    module docstring), and equality by its stored form."""

    # the states of the visible trials whose curves the rule reads
    reference_states = ("complete",)

    def visible(self, number):
        """The trials whose curves trial `number` is judged against: those numbered below this."""
        return number - self.lag

    def __eq__(self, other):
        return isinstance(other, _LaggedPruner) and self.to_json() == other.to_json()


class PercentilePruner(_LaggedPruner):
    """Prune at step s >= warmup_steps when the score is below the
    `percentile`-th percentile of the visible complete trials' scores at
    step s (maximizing; minimizing, above the (100 - percentile)-th), once
    at least `min_trials` visible curves reach step s.

    percentile 50 is the median rule; the default, 25, prunes only trials in
    the worst quarter after 4 steps: slow starters that end well are rarely
    cut (measured on digits and a harder synthetic task, see the README)."""

    def __init__(self, percentile=25.0, warmup_steps=4, min_trials=5, lag=8):
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
            raise ValueError(f"percentile: expected a number in [0, 100], got {percentile!r}")
        self.percentile = float(percentile)
        self.warmup_steps = _int(warmup_steps, "warmup_steps", 0)
        self.min_trials = _int(min_trials, "min_trials", 1)
        self.lag = _int(lag, "lag", 0)

    def should_prune(self, step, value, curves, maximize):
        if step < self.warmup_steps or not math.isfinite(value):
            return False
        at_step = _scores_at(step, curves)
        if len(at_step) < self.min_trials:
            return False
        # maximizing, a trial is pruned below the p-th percentile; minimizing, above the (100-p)-th
        threshold = float(np.percentile(at_step, self.percentile if maximize else 100.0 - self.percentile))
        return value < threshold if maximize else value > threshold

    def to_json(self):
        return {"kind": "percentile", "percentile": self.percentile, "warmup_steps": self.warmup_steps,
                "min_trials": self.min_trials, "lag": self.lag}

    def __repr__(self):
        return (f"{type(self).__name__}(percentile={self.percentile:g}, warmup_steps={self.warmup_steps}, "
                f"min_trials={self.min_trials}, lag={self.lag})")


class MedianPruner(PercentilePruner):
    """Prune a trial whose score is worse than the median of the visible
    complete trials at the same step (Optuna's MedianPruner, made
    deterministic by `lag`)."""

    def __init__(self, warmup_steps=4, min_trials=5, lag=8):
        super().__init__(50.0, warmup_steps, min_trials, lag)

    def __repr__(self):
        return f"MedianPruner(warmup_steps={self.warmup_steps}, min_trials={self.min_trials}, lag={self.lag})"


class SuccessiveHalvingPruner(_LaggedPruner):
    """Successive halving of the epoch budget (asynchronous, as ASHA and
    Optuna's SuccessiveHalvingPruner): rungs after min_resource steps, then
    min_resource * reduction_factor, min_resource * reduction_factor**2...
    At a rung a trial goes on only if its score is among the best
    1 / reduction_factor of the scores that the visible trials, complete or
    pruned, had at that rung, its own included (the best one always goes
    on); with fewer than `min_trials` such trials, everyone goes on. With
    20 epochs, min_resource 2 and reduction_factor 3, about a third of the
    trials run past epoch 2, a ninth past epoch 6, a 27th to the end: many
    configurations for the epochs of a few."""

    reference_states = ("complete", "pruned")

    def __init__(self, min_resource=2, reduction_factor=3, min_trials=5, lag=8):
        self.min_resource = _int(min_resource, "min_resource", 1)
        self.reduction_factor = _int(reduction_factor, "reduction_factor", 2)
        self.min_trials = _int(min_trials, "min_trials", 1)
        self.lag = _int(lag, "lag", 0)

    def is_rung(self, step):
        """Whether the score of step `step` (after step + 1 steps) is judged."""
        resource = self.min_resource
        while resource < step + 1:
            resource *= self.reduction_factor
        return resource == step + 1

    def should_prune(self, step, value, curves, maximize):
        if not self.is_rung(step) or not math.isfinite(value):
            return False
        at_rung = _scores_at(step, curves)
        if len(at_rung) < self.min_trials:
            return False
        ranked = sorted(at_rung + [value], reverse=maximize)
        threshold = ranked[max(1, len(ranked) // self.reduction_factor) - 1]  # the last score that goes on
        return value < threshold if maximize else value > threshold

    def to_json(self):
        return {"kind": "halving", "min_resource": self.min_resource, "reduction_factor": self.reduction_factor,
                "min_trials": self.min_trials, "lag": self.lag}

    def __repr__(self):
        return (f"SuccessiveHalvingPruner(min_resource={self.min_resource}, reduction_factor="
                f"{self.reduction_factor}, min_trials={self.min_trials}, lag={self.lag})")


class NopPruner:
    """Never prune: every trial runs its full budget."""

    lag = 0
    reference_states = ("complete",)

    def visible(self, number):
        return number

    def should_prune(self, step, value, curves, maximize):
        return False

    def to_json(self):
        return {"kind": "none"}

    def __eq__(self, other):
        return isinstance(other, NopPruner)

    def __repr__(self):
        return "NopPruner()"


def pruner_from_json(data):
    kind = data.get("kind")
    if kind == "none":
        return NopPruner()
    if kind == "percentile":
        return PercentilePruner(data["percentile"], data["warmup_steps"], data["min_trials"], data["lag"])
    if kind == "halving":
        return SuccessiveHalvingPruner(data["min_resource"], data["reduction_factor"], data["min_trials"],
                                       data["lag"])
    raise ValueError(f"pruner: unknown kind {kind!r}")


def check_pruner(pruner):
    if pruner is None:
        return NopPruner()
    if not isinstance(pruner, (_LaggedPruner, NopPruner)):
        raise TypeError(f"pruner: expected a pybn.tune pruner (MedianPruner, PercentilePruner, "
                        f"SuccessiveHalvingPruner, NopPruner) "
                        f"or None, got {type(pruner).__name__}")
    return pruner


def _scores_at(step, curves):
    """The finite scores that the curves reached at `step`."""
    return [c[step] for c in curves if len(c) > step and c[step] is not None and math.isfinite(c[step])]
