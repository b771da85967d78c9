"""Search spaces sampled at random on the scale that matters.

A learning rate between 1e-4 and 1 is sampled as 10**r with r uniform in
[-4, 0], so each decade gets the same share of trials; an EWMA beta between
0.9 and 0.999 as 1 - 10**r, because 0.999 -> 0.9995 matters far more than
0.9 -> 0.9005. Every distribution maps its values to that "search scale" and
back, which is also the scale coarse-to-fine zooms in and plots use.
"""
import math
import numbers

import numpy as np

__all__ = ["Distribution", "Uniform", "LogUniform", "OneMinusLogUniform", "IntUniform", "Choice",
           "space_from_json", "space_to_json"]


def _bound(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


class Distribution:
    """A numeric range sampled uniformly on its search scale."""

    kind = ""

    def __init__(self, low, high):
        self.low, self.high = _bound(low, "low"), _bound(high, "high")
        if not self.low < self.high:
            raise ValueError(f"{type(self).__name__}: expected low < high, got low={low!r}, high={high!r}")

    # value <-> search scale
    def forward(self, value):
        return value

    def inverse(self, r):
        return r

    def sample(self, rng, size=None):
        """Values sampled uniformly on the search scale."""
        lo, hi = sorted((self.forward(self.low), self.forward(self.high)))
        return self._cast(self.inverse(rng.uniform(lo, hi, size)))

    def _cast(self, values):
        return float(values) if np.ndim(values) == 0 else values

    def narrow(self, values, margin=0.25):
        """The same kind of distribution over the span of `values` on the
        search scale, widened by `margin` of the span (or of this range when
        all values coincide) on each side, clipped to this range."""
        r = [self.forward(v) for v in values]
        full_lo, full_hi = sorted((self.forward(self.low), self.forward(self.high)))
        span = max(max(r) - min(r), 0.1 * (full_hi - full_lo))
        lo = max(full_lo, min(r) - margin * span)
        hi = min(full_hi, max(r) + margin * span)
        bounds = sorted((self.inverse(lo), self.inverse(hi)))
        return self._with_bounds(*bounds)

    def _with_bounds(self, low, high):
        return type(self)(low, high)

    def to_plot_scale(self, value):
        return value

    def plot_label(self, name):
        return name

    def to_json(self):
        return {"kind": self.kind, "low": self.low, "high": self.high}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self):
        return f"{type(self).__name__}({self.low!r}, {self.high!r})"


class Uniform(Distribution):
    """Uniform on [low, high]: for parameters whose effect is linear."""

    kind = "uniform"


class LogUniform(Distribution):
    """10**r with r uniform in [log10 low, log10 high]: learning rates,
    weight decay, epsilon."""

    kind = "log_uniform"

    def __init__(self, low, high):
        super().__init__(low, high)
        if self.low <= 0:
            raise ValueError(f"LogUniform: expected 0 < low < high, got low={low!r}")

    def forward(self, value):
        return math.log10(value)

    def inverse(self, r):
        return np.power(10.0, r)

    def to_plot_scale(self, value):
        return math.log10(value)

    def plot_label(self, name):
        return f"log10({name})"


class OneMinusLogUniform(Distribution):
    """1 - 10**r for exponentially weighted average betas: low=0.9,
    high=0.999 samples r in [-3, -1], i.e. averaging windows of 10 to 1000
    steps with each decade equally likely."""

    kind = "one_minus_log_uniform"

    def __init__(self, low, high):
        super().__init__(low, high)
        if not (0 <= self.low and self.high < 1):
            raise ValueError(f"OneMinusLogUniform: expected 0 <= low < high < 1, got low={low!r}, high={high!r}")

    def forward(self, value):
        return math.log10(1.0 - value)

    def inverse(self, r):
        return 1.0 - np.power(10.0, r)

    def to_plot_scale(self, value):
        return math.log10(1.0 - value)

    def plot_label(self, name):
        return f"log10(1 - {name})"


class IntUniform(Distribution):
    """Integers in [low, high] (both included), uniform or (log=True) log
    uniform: hidden units, mini-batch size, number of layers."""

    kind = "int_uniform"

    def __init__(self, low, high, log=False):
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise ValueError(f"IntUniform: {name} must be an int, got {v!r}")
        if not low <= high:
            raise ValueError(f"IntUniform: expected low <= high, got low={low!r}, high={high!r}")
        self.low, self.high, self.log = int(low), int(high), bool(log)
        if self.log and self.low < 1:
            raise ValueError(f"IntUniform: log=True needs low >= 1, got low={low!r}")

    def forward(self, value):
        return math.log(value) if self.log else float(value)

    def inverse(self, r):
        return np.exp(r) if self.log else r

    def sample(self, rng, size=None):
        # half a step beyond each end, so that the end points get a full share
        below = max(self.low - 0.5, 0.5) if self.log else self.low - 0.5
        lo, hi = self.forward(below), self.forward(self.high + 0.5)
        values = np.clip(np.rint(self.inverse(rng.uniform(lo, hi, size))), self.low, self.high).astype(int)
        return int(values) if np.ndim(values) == 0 else values

    def _with_bounds(self, low, high):
        return IntUniform(max(self.low, math.floor(low)), min(self.high, math.ceil(high)), log=self.log)

    def to_plot_scale(self, value):
        return math.log2(value) if self.log else value

    def plot_label(self, name):
        return f"log2({name})" if self.log else name

    def to_json(self):
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log}

    def __repr__(self):
        return f"IntUniform({self.low}, {self.high}, log={self.log})"


class Choice(Distribution):
    """One of a few options, each equally likely (activation, optimizer)."""

    kind = "choice"

    def __init__(self, options):
        options = list(options)
        if not options:
            raise ValueError("Choice: expected at least one option")
        if len(set(map(repr, options))) != len(options):
            raise ValueError(f"Choice: options must be distinct, got {options!r}")
        for option in options:
            if not isinstance(option, (str, int, float, bool)) or option is None:
                raise ValueError(f"Choice: options must be str, int, float or bool, got {option!r}")
        self.options = options

    def sample(self, rng, size=None):
        index = rng.integers(len(self.options), size=size)
        if size is None:
            return self.options[int(index)]
        return [self.options[i] for i in np.ravel(index)]

    def narrow(self, values, margin=0.25, neighbours=0):
        """The options the values used; for numeric options (ordered, as
        batch sizes) with neighbours > 0, every option from the least used to
        the greatest used, widened by `neighbours` options on each side, so a
        later round can still move towards an option no good trial used."""
        keep = [o for o in self.options if o in values]
        if not keep or not neighbours or not self._numeric():
            return Choice(keep or self.options)
        ordered = sorted(self.options)
        lo = ordered[max(0, ordered.index(min(keep)) - neighbours)]
        hi = ordered[min(len(ordered) - 1, ordered.index(max(keep)) + neighbours)]
        return Choice([o for o in self.options if lo <= o <= hi])

    def _numeric(self):
        return all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in self.options)

    def to_plot_scale(self, value):
        return value if self._numeric() else self.options.index(value)

    def plot_label(self, name):
        return name if self._numeric() else f"{name} (option index)"

    def to_json(self):
        return {"kind": self.kind, "options": self.options}

    def __repr__(self):
        return f"Choice({self.options!r})"


_KINDS = {cls.kind: cls for cls in (Uniform, LogUniform, OneMinusLogUniform, IntUniform, Choice)}


def space_to_json(space):
    return {name: dist.to_json() for name, dist in space.items()}


def space_from_json(data):
    space = {}
    for name, spec in data.items():
        spec = dict(spec)
        cls = _KINDS[spec.pop("kind")]
        space[name] = cls(**spec)
    return space


def check_space(space):
    """A dict of name -> Distribution, with string names."""
    if not isinstance(space, dict) or not space:
        raise ValueError("space: expected a non-empty dict of name -> distribution")
    for name, dist in space.items():
        if not isinstance(name, str):
            raise ValueError(f"space: parameter names must be strings, got {name!r}")
        if not isinstance(dist, Distribution):
            raise ValueError(f"space[{name!r}]: expected a pybn.tune distribution, got {dist!r}")
    return space
