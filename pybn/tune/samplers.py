"""Samplers: where each round of a search draws its trials.

RandomSampler is the practice's first round: every parameter uniform on its
own search scale over the whole space. CoarseToFineSampler plans each later
round from the good trials so far (the top `top_fraction` of the complete
ones, at least `top_k`):

- the region: on each parameter's search scale, the span of the good
  trials widened by `margin` times their spread (standard deviation), at
  least `min_width` of the whole range, clipped to the space. Good trials
  that agree give a tight region, scattered ones a wide one. A choice of
  numbers (batch sizes) keeps the span of the options the good trials used
  widened by `choice_neighbours` options each side (so a later round can
  still move to a batch size no good coarse trial happened to use); any
  other choice keeps the options the good trials used.
- the draws: a share `local_fraction` of the trials starts from one of the
  good trials (the better its rank, the likelier) and moves each parameter
  by a normal step on the search scale as wide as the distance to the
  nearest other good trial, within [min_width / 2, the spread] (a choice
  keeps the good trial's option 3 times in 4); the rest
  are uniform over the region, so the round keeps exploring all of it.

A round's plan (region, good trials, widths) is stored with the round, so
a resumed study draws exactly the trials the interrupted one would have.
Trial k of a round draws from numpy.random.default_rng([round seed, k]).
"""
import math
import numbers

import numpy as np

from .pruners import _int
from .spaces import Choice, space_from_json, space_to_json

__all__ = ["RandomSampler", "CoarseToFineSampler", "sampler_from_json"]


def _fraction(value, name, low_open=False):
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1
    if bad or (low_open and value == 0):
        raise ValueError(f"{name}: expected a number in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return float(value)


class RandomSampler:
    """Uniform over the whole space on each parameter's scale, every round."""

    def n_good(self, n_complete):
        return 0  # plans from no trial

    def plan(self, space, good_trials):
        return {"space": space_to_json(space)}

    def to_json(self):
        return {"kind": "random"}

    def __eq__(self, other):
        return isinstance(other, RandomSampler)

    def __repr__(self):
        return "RandomSampler()"


class CoarseToFineSampler:
    """Round 0 uniform over the space; later rounds denser where the good
    trials are (see the module docstring)."""

    def __init__(self, top_k=5, top_fraction=0.2, margin=1.0, min_width=0.1, local_fraction=0.7,
                 explore_fraction=0.0, choice_neighbours=1):
        self.top_k = _int(top_k, "top_k", 1)
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < math.inf:
            raise ValueError(f"margin: expected a finite number >= 0, got {margin!r}")
        self.margin = float(margin)
        self.choice_neighbours = _int(choice_neighbours, "choice_neighbours", 0)
        self.top_fraction = _fraction(top_fraction, "top_fraction")
        self.min_width = _fraction(min_width, "min_width", low_open=True)
        self.local_fraction = _fraction(local_fraction, "local_fraction")
        self.explore_fraction = _fraction(explore_fraction, "explore_fraction")
        if self.local_fraction + self.explore_fraction > 1:
            raise ValueError(f"explore_fraction: expected at most 1 - local_fraction = {1 - self.local_fraction:g}, "
                             f"got {explore_fraction!r}")

    def n_good(self, n_complete):
        return max(self.top_k, math.ceil(self.top_fraction * n_complete))

    def plan(self, space, good_trials):
        """The stored plan of a round: its region and what local draws start from."""
        if not good_trials:
            return {"space": space_to_json(space)}
        region, widths = {}, {}
        for name, dist in space.items():
            values = [t.params[name] for t in good_trials]
            if isinstance(dist, Choice):
                region[name] = dist.narrow(values, neighbours=self.choice_neighbours)
                continue
            r = np.array([dist.forward(v) for v in values])
            full_lo, full_hi = sorted((dist.forward(dist.low), dist.forward(dist.high)))
            floor = self.min_width * (full_hi - full_lo)
            spread = float(np.std(r))
            pad = max(self.margin * spread, floor / 2)
            lo, hi = max(full_lo, r.min() - pad), min(full_hi, r.max() + pad)
            region[name] = dist._with_bounds(*sorted((dist.inverse(lo), dist.inverse(hi))))
            widths[name] = _kernel_widths(r, spread, floor / 2)
        plan = {"space": space_to_json(region), "centers": [dict(t.params) for t in good_trials],
                "widths": widths, "local_fraction": self.local_fraction}
        if self.explore_fraction:
            plan.update(explore_fraction=self.explore_fraction, whole_space=space_to_json(space))
        return plan

    def to_json(self):
        data = {"kind": "coarse_to_fine", "top_k": self.top_k, "top_fraction": self.top_fraction,
                "margin": self.margin, "min_width": self.min_width, "local_fraction": self.local_fraction}
        if self.explore_fraction:  # studies stored before it existed keep their identity
            data["explore_fraction"] = self.explore_fraction
        if self.choice_neighbours != 1:  # the default is 1: studies stored before it keep their identity
            data["choice_neighbours"] = self.choice_neighbours
        return data

    def __eq__(self, other):
        return isinstance(other, CoarseToFineSampler) and self.to_json() == other.to_json()

    def __repr__(self):
        return (f"CoarseToFineSampler(top_k={self.top_k}, top_fraction={self.top_fraction:g}, "
                f"margin={self.margin:g}, min_width={self.min_width:g}, local_fraction={self.local_fraction:g}, "
                f"explore_fraction={self.explore_fraction:g}, choice_neighbours={self.choice_neighbours})")


def _kernel_widths(r, spread, floor):
    """Each good trial's step width on the search scale: the distance to its
    nearest good neighbour (as TPE's Parzen windows), within [floor, spread],
    so two distant clusters of good trials are each sampled tightly."""
    if len(r) < 2:
        return [floor]
    gaps = np.abs(r[:, None] - r[None, :])
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.min(axis=1)
    return [float(min(max(g, floor), max(spread, floor))) for g in nearest]


def sampler_from_json(data):
    data = dict(data)
    kind = data.pop("kind", None)
    if kind == "random":
        return RandomSampler()
    if kind == "coarse_to_fine":
        return CoarseToFineSampler(**data)
    raise ValueError(f"sampler: unknown kind {kind!r}")


def check_sampler(sampler, top_k):
    if sampler is None:
        return CoarseToFineSampler(top_k=5 if top_k is None else top_k)
    if not isinstance(sampler, (RandomSampler, CoarseToFineSampler)):
        raise TypeError(f"sampler: expected a pybn.tune sampler (CoarseToFineSampler, RandomSampler) or None, "
                        f"got {type(sampler).__name__}")
    if top_k is not None:
        raise ValueError("top_k: give it to the sampler (CoarseToFineSampler(top_k=...)), not both")
    return sampler


def sample_trial(plan, seed, number):
    """(params, training seed) of trial `number` of a round with this stored
    plan: a function of the round seed, the number and the plan only."""
    region = space_from_json(plan["space"])
    rng = np.random.default_rng([seed, number])
    centers = plan.get("centers")
    u = rng.random() if centers else None  # which kind of draw: local, whole space or region
    if centers and u < plan["local_fraction"]:
        weights = np.arange(len(centers), 0, -1, dtype=float)  # linear in rank: the best the likeliest
        i = int(rng.choice(len(centers), p=weights / weights.sum()))
        widths = plan["widths"]  # numeric parameters only: a choice takes no step width
        params = {name: _plain(_step(dist, centers[i][name], widths[name][i] if name in widths else None, rng))
                  for name, dist in region.items()}
    else:
        if centers and u < plan["local_fraction"] + plan.get("explore_fraction", 0.0):
            region = space_from_json(plan["whole_space"])
        params = {name: _plain(dist.sample(rng)) for name, dist in region.items()}
    return params, int(rng.integers(2**31))


def _step(dist, start, width, rng):
    """A draw near `start`: a normal step on the search scale, kept in the region."""
    if isinstance(dist, Choice):
        keep = start in dist.options and rng.random() < 0.75
        return start if keep else dist.sample(rng)
    lo, hi = sorted((dist.forward(dist.low), dist.forward(dist.high)))
    r = float(np.clip(dist.forward(start) + rng.normal(0.0, width), lo, hi))
    value = dist.inverse(r)
    if hasattr(dist, "log"):  # IntUniform
        return int(np.clip(np.rint(value), dist.low, dist.high))
    return float(min(max(value, dist.low), dist.high))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
