"""Samplers and pruners as API choices: the coarse-to-fine region adapts to
how spread the good trials are, local draws gather near them, plans and
pruners are stored so a resumed study samples and prunes as before, and bad
choices are refused by name."""
import math

import numpy as np
import pytest

from pybn.tune import (CoarseToFineSampler, Choice, IntUniform, LogUniform, MedianPruner, NopPruner,
                       PercentilePruner, RandomSampler, Study, SuccessiveHalvingPruner, Uniform)
from pybn.tune.samplers import sample_trial, sampler_from_json
from pybn.tune.pruners import pruner_from_json
from pybn.tune.study import Trial

SPACE = {"lr": LogUniform(1e-5, 1.0), "x": Uniform(0, 10), "n": IntUniform(1, 64, log=True),
         "act": Choice(["relu", "tanh", "gelu"])}


def _good(values):
    return [Trial(i, 0, dict(v), 0, "complete", 1.0) for i, v in enumerate(values)]


def test_the_region_is_tight_around_agreeing_trials_and_wide_around_scattered_ones():
    sampler = CoarseToFineSampler(margin=1.0, min_width=0.1)
    agree = _good([{"lr": 1e-3 * (1 + 0.01 * i), "x": 5 + 0.01 * i, "n": 8, "act": "relu"} for i in range(5)])
    scatter = _good([{"lr": 10.0 ** -k, "x": 2.0 + k, "n": 2 ** k, "act": a}
                     for k, a in zip(range(1, 5), ["relu", "tanh", "relu", "tanh"])])
    tight = sampler.plan(SPACE, agree)
    wide = sampler.plan(SPACE, scatter)
    from pybn.tune.spaces import space_from_json
    t, w = space_from_json(tight["space"]), space_from_json(wide["space"])
    # tight: the floor, a tenth of the range on the search scale (0.5 decade of lr, 1 unit of x)
    assert math.log10(t["lr"].high / t["lr"].low) == pytest.approx(0.5, abs=0.02)
    assert t["x"].high - t["x"].low == pytest.approx(1.0, abs=0.05)
    assert t["act"].options == ["relu"]
    # wide: the span of the good trials plus one standard deviation each side, clipped
    lrs = np.log10([1e-1, 1e-2, 1e-3, 1e-4])
    assert math.log10(w["lr"].low) == pytest.approx(max(-5, lrs.min() - lrs.std()))
    assert math.log10(w["lr"].high) == pytest.approx(min(0, lrs.max() + lrs.std()))
    sd = np.std([3, 4, 5, 6])
    assert w["x"].low == pytest.approx(3 - sd) and w["x"].high == pytest.approx(6 + sd)
    assert w["act"].options == ["relu", "tanh"]
    assert max(tight["widths"]["x"]) < min(wide["widths"]["x"])


def test_local_draws_gather_near_the_good_trials():
    # two clusters of good trials, the better one at x = 1, the other at x = 9
    good = _good([{"lr": 1e-4, "x": x, "n": 4, "act": "relu"} for x in (1.0, 1.2)] +
                 [{"lr": 1e-1, "x": x, "n": 32, "act": "tanh"} for x in (8.8, 9.0)])
    plan = CoarseToFineSampler(local_fraction=1.0).plan(SPACE, good)
    plan["seed"] = 0
    xs = np.array([sample_trial(plan, 0, k)[0]["x"] for k in range(2000)])
    near = np.minimum(abs(xs - 1.1), abs(xs - 8.9))
    assert np.median(near) < 0.5  # each cluster sampled tightly (the spread is 3.9)
    assert np.mean(xs < 5) > 0.55  # the better-ranked trials are likelier
    uniform = CoarseToFineSampler(local_fraction=0.0).plan(SPACE, good)
    xs_u = np.array([sample_trial(uniform, 0, k)[0]["x"] for k in range(2000)])
    assert np.median(np.minimum(abs(xs_u - 1.1), abs(xs_u - 8.9))) > np.median(near) * 2
    for k in range(50):  # draws stay in the region, with plain Python values
        params, seed = sample_trial(plan, 0, k)
        region = plan["space"]
        assert region["x"]["low"] <= params["x"] <= region["x"]["high"] and isinstance(params["n"], int)
        assert isinstance(params["lr"], float) and isinstance(seed, int)


def test_explore_draws_cover_the_whole_space_and_default_plans_are_unchanged():
    good = _good([{"lr": 1e-3, "x": 5 + 0.01 * i, "n": 8, "act": "relu"} for i in range(5)])  # a tight region
    inside = lambda plan: np.mean([4 <= sample_trial(plan, 0, k)[0]["x"] <= 6 for k in range(1000)])  # noqa: E731
    tight, mixed = CoarseToFineSampler().plan(SPACE, good), CoarseToFineSampler(explore_fraction=0.3).plan(SPACE, good)
    assert inside(tight) == 1.0
    assert 0.65 < inside(mixed) < 0.8  # 30% uniform over [0, 10]: 6% of those land inside
    assert "whole_space" not in tight and CoarseToFineSampler().to_json() == {
        "kind": "coarse_to_fine", "top_k": 5, "top_fraction": 0.2, "margin": 1.0, "min_width": 0.1,
        "local_fraction": 0.7}  # the identity of studies stored before explore_fraction existed
    assert CoarseToFineSampler(choice_neighbours=0).to_json()["choice_neighbours"] == 0
    assert sampler_from_json(CoarseToFineSampler().to_json()).choice_neighbours == 1
    # a plan stored without explore_fraction draws the same trials as before it existed
    assert [sample_trial(tight, 3, k) for k in range(20)] == [
        sample_trial({**tight, "explore_fraction": 0.0}, 3, k) for k in range(20)]


def test_a_batch_size_no_good_coarse_trial_used_stays_reachable():
    space = {"batch": Choice([16, 32, 64, 128, 256]), "x": Uniform(0, 10)}
    good = _good([{"batch": b, "x": 5.0 + i} for i, b in enumerate([64, 128, 256, 64, 128])])
    plan = CoarseToFineSampler().plan(space, good)
    drawn = {sample_trial(plan, 0, k)[0]["batch"] for k in range(300)}
    assert drawn == {32, 64, 128, 256}  # one step smaller than any good trial, never two
    old = CoarseToFineSampler(choice_neighbours=0).plan(space, good)
    assert {sample_trial(old, 0, k)[0]["batch"] for k in range(300)} == {64, 128, 256}


def quadratic(params):
    return (params["x"] - 7.3) ** 2 + (math.log10(params["lr"]) + 2) ** 2


def test_later_rounds_beat_the_random_round_and_random_sampler_does_not_zoom():
    fine = Study(direction="minimize").coarse_to_fine(quadratic, SPACE, rounds=3, trials_per_round=20, seed=1)
    flat = Study(direction="minimize").coarse_to_fine(quadratic, SPACE, rounds=3, trials_per_round=20, seed=1,
                                                      sampler=RandomSampler())
    best = lambda study, r: min(t.value for t in study.trials if t.round == r)  # noqa: E731
    assert best(fine, 2) < best(fine, 0) and best(fine, 1) < best(fine, 0)
    from pybn.tune.spaces import space_from_json
    assert all(space_from_json(plan["space"]) == SPACE for _, plan, _, _ in flat.storage.rounds(flat.name))
    assert np.ptp([t.params["x"] for t in flat.trials if t.round == 2]) > 2 * np.ptp(
        [t.params["x"] for t in fine.trials if t.round == 2])
    assert fine.best_value < flat.best_value


def test_a_resumed_study_keeps_its_plans_and_refuses_another_sampler_or_pruner(tmp_path):
    path = tmp_path / "s.sqlite"
    kwargs = dict(rounds=2, trials_per_round=8, seed=3)
    Study(path, direction="minimize").coarse_to_fine(quadratic, SPACE, **{**kwargs, "rounds": 1})
    grown = Study(path, direction="minimize").coarse_to_fine(quadratic, SPACE, **kwargs)
    whole = Study(direction="minimize").coarse_to_fine(quadratic, SPACE, **kwargs)
    assert [(t.params, t.value) for t in grown.trials] == [(t.params, t.value) for t in whole.trials]
    with pytest.raises(ValueError, match="sampler: study 'default' ran with"):
        Study(path, direction="minimize").coarse_to_fine(quadratic, SPACE, **kwargs,
                                                        sampler=CoarseToFineSampler(top_k=2))
    with pytest.raises(ValueError, match="pruner: study 'default' ran with"):
        Study(path, direction="minimize").coarse_to_fine(quadratic, SPACE, **kwargs, pruner=None)


def test_a_continued_random_round_refuses_another_pruner(tmp_path):
    path = tmp_path / "s.sqlite"
    Study(path, direction="minimize").optimize(quadratic, SPACE, 4, seed=3, pruner=None)
    with pytest.raises(ValueError, match="pruner: round 0 of study 'default' ran with"):
        Study(path, direction="minimize").optimize(quadratic, SPACE, 8, seed=3)
    assert len(Study(path, direction="minimize").trials) == 4  # refused before any trial ran
    Study(path, direction="minimize").optimize(quadratic, SPACE, 8, seed=3, pruner=None)
    assert len(Study(path, direction="minimize").trials) == 8


def test_choices_are_checked_by_name():
    with pytest.raises(TypeError, match="sampler: expected a pybn.tune sampler"):
        Study().coarse_to_fine(quadratic, SPACE, rounds=1, trials_per_round=2, sampler="tpe")
    with pytest.raises(TypeError, match="pruner: expected a pybn.tune pruner"):
        Study().optimize(quadratic, SPACE, 2, pruner="median")
    with pytest.raises(ValueError, match="top_k: give it to the sampler"):
        Study().coarse_to_fine(quadratic, SPACE, rounds=1, trials_per_round=2, top_k=3,
                               sampler=CoarseToFineSampler())
    for bad, match in [(dict(percentile=101), "percentile"), (dict(warmup_steps=-1), "warmup_steps"),
                       (dict(min_trials=0), "min_trials"), (dict(lag=1.5), "lag")]:
        with pytest.raises(ValueError, match=match):
            PercentilePruner(**bad)
    for bad, match in [(dict(top_k=0), "top_k"), (dict(top_fraction=2), "top_fraction"),
                       (dict(margin=-1), "margin"), (dict(min_width=0), "min_width"),
                       (dict(local_fraction=True), "local_fraction"), (dict(explore_fraction=-0.1), "explore"),
                       (dict(choice_neighbours=-1), "choice_neighbours: expected an int >= 0"),
                       (dict(choice_neighbours=1.5), "choice_neighbours"), (dict(choice_neighbours=True), "choice_n"),
                       (dict(local_fraction=0.7, explore_fraction=0.4), "explore_fraction: expected at most 1 - local_fraction = 0.3")]:
        with pytest.raises(ValueError, match=match):
            CoarseToFineSampler(**bad)


def test_pruners_and_samplers_round_trip_through_json():
    for pruner in (MedianPruner(warmup_steps=4, min_trials=2, lag=3), PercentilePruner(25.0), NopPruner(),
                   SuccessiveHalvingPruner(), SuccessiveHalvingPruner(1, 4, min_trials=2, lag=0)):
        assert pruner_from_json(pruner.to_json()) == pruner
    assert SuccessiveHalvingPruner() != PercentilePruner() and SuccessiveHalvingPruner(2, 3) != SuccessiveHalvingPruner(2, 4)
    for sampler in (CoarseToFineSampler(top_k=3, top_fraction=0.3, margin=0.5),
                    CoarseToFineSampler(explore_fraction=0.1), CoarseToFineSampler(choice_neighbours=0),
                    CoarseToFineSampler(choice_neighbours=2), RandomSampler()):
        assert sampler_from_json(sampler.to_json()) == sampler


def test_a_percentile_pruner_cuts_only_below_its_percentile():
    curves = [[float(v)] * 3 for v in range(10)]  # scores 0..9 at every step
    quarter = PercentilePruner(25.0, warmup_steps=1, min_trials=5)
    assert quarter.should_prune(1, 2.0, curves, maximize=True)          # 25th percentile: 2.25
    assert not quarter.should_prune(1, 2.3, curves, maximize=True)
    assert not quarter.should_prune(0, -9.0, curves, maximize=True)     # warm-up
    assert quarter.should_prune(1, 7.0, curves, maximize=False)         # minimizing: above the 75th (6.75)
    assert not quarter.should_prune(1, 6.7, curves, maximize=False)
    assert not quarter.should_prune(1, -1.0, curves[:4], maximize=True)  # fewer than min_trials


def test_successive_halving_judges_at_its_rungs_only():
    halving = SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    assert [step + 1 for step in range(60) if halving.is_rung(step)] == [2, 6, 18, 54]
    assert [step + 1 for step in range(20) if SuccessiveHalvingPruner(1, 2).is_rung(step)] == [1, 2, 4, 8, 16]
    curves = [[float(v)] * 6 for v in range(8)]  # scores 0..7 at every step
    assert not halving.should_prune(0, -1.0, curves, maximize=True)  # before the first rung
    assert not halving.should_prune(2, -1.0, curves, maximize=True)  # between rungs


def test_successive_halving_keeps_the_best_third_its_own_score_included():
    halving = SuccessiveHalvingPruner(min_resource=2, reduction_factor=3, min_trials=5)
    curves = [[0.0, float(v)] for v in range(8)]  # at the rung: 0..7
    # with its own score, 9 scores: the best 3 go on (7, 6 and the candidate's if >= 5)
    assert not halving.should_prune(1, 5.0, curves, maximize=True)
    assert halving.should_prune(1, 4.9, curves, maximize=True)
    assert not halving.should_prune(1, 2.0, curves, maximize=False)  # minimizing: 0, 1, 2 go on
    assert halving.should_prune(1, 2.1, curves, maximize=False)
    assert not halving.should_prune(1, -9.0, curves[:4], maximize=True)  # fewer than min_trials: all go on
    assert not halving.should_prune(1, float("nan"), curves, maximize=True)  # the objective's to fail
    # curves that stop before the rung (pruned at an earlier one) do not count at it
    short = curves + [[9.0]] * 20
    assert halving.should_prune(1, 4.9, short, maximize=True)
    # a few scores: the best always goes on
    few = SuccessiveHalvingPruner(min_resource=2, reduction_factor=3, min_trials=1)
    assert not few.should_prune(1, 8.0, curves[:1], maximize=True) and few.should_prune(1, -1.0, curves[:1], True)


@pytest.mark.parametrize("bad,match", [
    (dict(min_resource=0), "min_resource: expected an int >= 1, got 0"),
    (dict(reduction_factor=1), "reduction_factor: expected an int >= 2, got 1"),
    (dict(reduction_factor=2.5), "reduction_factor: expected an int >= 2, got 2.5"),
    (dict(min_trials=0), "min_trials"), (dict(lag=-1), "lag")])
def test_successive_halving_refuses_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        SuccessiveHalvingPruner(**bad)
