"""Search spaces: sampling on the right scale, narrowing, bad bounds."""
import math

import numpy as np
import pytest

from pybn.tune import Choice, IntUniform, LogUniform, OneMinusLogUniform, Uniform
from pybn.tune.spaces import space_from_json, space_to_json

N = 20_000


def _decade_fractions(values, lo_exp, hi_exp):
    counts = np.histogram(np.log10(values), bins=np.arange(lo_exp, hi_exp + 1))[0]
    return counts / len(values)


def test_log_uniform_gives_each_decade_the_same_share():
    values = LogUniform(1e-4, 1.0).sample(np.random.default_rng(0), N)
    assert values.min() >= 1e-4 and values.max() <= 1.0
    np.testing.assert_allclose(_decade_fractions(values, -4, 0), 0.25, atol=0.015)


def test_one_minus_log_uniform_spreads_ewma_betas_over_decades_of_1_minus_beta():
    values = OneMinusLogUniform(0.9, 0.999).sample(np.random.default_rng(1), N)
    assert values.min() >= 0.9 and values.max() <= 0.999
    np.testing.assert_allclose(_decade_fractions(1 - values, -3, -1), 0.5, atol=0.015)
    # a uniform draw would put ~90% of betas below 0.99; here half are above
    assert 0.47 < np.mean(values > 0.99) < 0.53


def test_uniform_and_int_uniform_cover_their_ranges():
    rng = np.random.default_rng(2)
    u = Uniform(-1, 3).sample(rng, N)
    assert -1 <= u.min() and u.max() <= 3 and abs(u.mean() - 1) < 0.05
    ints = IntUniform(1, 4).sample(rng, N)
    np.testing.assert_allclose(np.bincount(ints)[1:] / N, 0.25, atol=0.015)
    logs = IntUniform(16, 256, log=True).sample(rng, N)
    assert logs.min() == 16 and logs.max() == 256
    assert 0.4 < np.mean(logs <= 64) < 0.6  # 16..64 is half of the log range


def test_samples_do_not_repeat_and_scalars_are_plain_python():
    rng = np.random.default_rng(3)
    for dist in (Uniform(0, 1), LogUniform(1e-5, 1), OneMinusLogUniform(0.9, 0.9999)):
        values = dist.sample(rng, 5000)
        assert len(np.unique(values)) == 5000
        assert isinstance(dist.sample(rng), float)
    assert isinstance(IntUniform(1, 9).sample(rng), int)
    assert Choice(["relu", "tanh"]).sample(rng) in ("relu", "tanh")


def test_choice_is_uniform_over_options():
    picks = Choice([16, 32, 64, 128]).sample(np.random.default_rng(4), N)
    counts = np.array([picks.count(v) for v in (16, 32, 64, 128)]) / N
    np.testing.assert_allclose(counts, 0.25, atol=0.015)


def test_narrow_zooms_on_the_search_scale():
    lr = LogUniform(1e-5, 1.0)
    narrowed = lr.narrow([1e-3, 1e-2])
    assert isinstance(narrowed, LogUniform)
    # span of one decade, widened by a quarter decade each side
    assert math.isclose(math.log10(narrowed.low), -3.25) and math.isclose(math.log10(narrowed.high), -1.75)
    beta = OneMinusLogUniform(0.9, 0.9999).narrow([0.99, 0.999])
    assert 0.98 < beta.low < 0.99 and 0.999 < beta.high < 0.9999
    assert Uniform(0, 10).narrow([9.9, 10.0]).high == 10.0  # clipped to the original range
    ints = IntUniform(1, 512, log=True).narrow([64, 128])
    assert isinstance(ints, IntUniform) and ints.log and 32 < ints.low <= 64 and 128 <= ints.high < 256
    assert Choice(["a", "b", "c"]).narrow(["b", "b"]).options == ["b"]


def test_a_numeric_choice_narrows_to_the_span_of_good_options_plus_neighbours():
    batch = Choice([16, 32, 64, 128, 256])
    assert batch.narrow([64, 128], neighbours=1).options == [32, 64, 128, 256]
    assert batch.narrow([64, 256, 64], neighbours=1).options == [32, 64, 128, 256]  # the gap is kept
    assert batch.narrow([16], neighbours=1).options == [16, 32]  # clipped at the ends
    assert batch.narrow([128], neighbours=9).options == [16, 32, 64, 128, 256]
    assert batch.narrow([64, 128]).options == [64, 128]  # neighbours=0: only the options used
    assert Choice([256, 16, 64]).narrow([64], neighbours=1).options == [256, 16, 64]  # by value, in given order
    assert Choice(["a", "b", "c"]).narrow(["b"], neighbours=1).options == ["b"]  # no order among names


def test_space_json_round_trip():
    space = {"lr": LogUniform(1e-4, 1), "beta": OneMinusLogUniform(0.9, 0.999), "n": IntUniform(1, 3),
             "h": IntUniform(8, 64, log=True), "act": Choice(["relu", "tanh"]), "x": Uniform(0, 1)}
    assert space_from_json(space_to_json(space)) == space


@pytest.mark.parametrize("make,match", [
    (lambda: Uniform(1, 1), "expected low < high"),
    (lambda: Uniform(2, 1), "expected low < high"),
    (lambda: Uniform(0, math.inf), "high: expected a finite number"),
    (lambda: Uniform("0", 1), "low: expected a finite number"),
    (lambda: LogUniform(0, 1), "expected 0 < low < high"),
    (lambda: LogUniform(-1, 1), "expected 0 < low < high"),
    (lambda: OneMinusLogUniform(0.9, 1.0), "expected 0 <= low < high < 1"),
    (lambda: OneMinusLogUniform(-0.1, 0.9), "expected 0 <= low < high < 1"),
    (lambda: IntUniform(1.5, 3), "low must be an int"),
    (lambda: IntUniform(5, 3), "expected low <= high"),
    (lambda: IntUniform(0, 3, log=True), "log=True needs low >= 1"),
    (lambda: Choice([]), "at least one option"),
    (lambda: Choice([1, 1]), "options must be distinct"),
    (lambda: Choice([None, 1]), "options must be str, int, float or bool"),
])
def test_bad_spaces_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
