"""Study: random search, coarse-to-fine, storage and resume, failures,
pruning, parallel workers (process pool and Dask), thread budget, re-test."""
import math
import os
import sqlite3

import numpy as np
import pytest

from pybn.tune import Choice, IntUniform, LogUniform, OneMinusLogUniform, Study, Uniform
from pybn.tune.objective import MLPObjective

SPACE = {"x": Uniform(-5, 5), "lr": LogUniform(1e-5, 1), "beta": OneMinusLogUniform(0.9, 0.999),
         "n": IntUniform(1, 8), "act": Choice(["relu", "tanh"])}


def quadratic(params):
    """Best at x = 1.5, lr = 1e-2: a toy objective to minimize."""
    return (params["x"] - 1.5) ** 2 + (math.log10(params["lr"]) + 2) ** 2


def failing(params):
    if params["x"] > 2:
        raise RuntimeError("boom")
    if params["x"] < -2:
        return float("nan")
    return params["x"]


def report_threads(params):
    import threadpoolctl

    import pybn
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    return pybn.get_num_threads() * 100 + (blas[0] if blas else 0)


def test_optimize_records_every_trial_and_finds_the_best():
    study = Study(direction="minimize")
    study.optimize(quadratic, SPACE, 40, seed=1)
    trials = study.trials
    assert [t.number for t in trials] == list(range(40))
    assert all(t.state == "complete" for t in trials)
    assert study.best_trial.value == min(t.value for t in trials)
    assert len({t.params["x"] for t in trials}) == 40  # random values, never a grid
    assert set(study.best_trial.params) == set(SPACE)


def test_same_seed_same_trials_different_seed_different_trials():
    a = Study().optimize(quadratic, SPACE, 5, seed=7).trials
    b = Study().optimize(quadratic, SPACE, 5, seed=7).trials
    c = Study().optimize(quadratic, SPACE, 5, seed=8).trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.seed for t in a] == [t.seed for t in b]
    assert [t.params for t in a] != [t.params for t in c]


def test_coarse_to_fine_zooms_in_and_improves():
    study = Study(direction="minimize")
    study.coarse_to_fine(quadratic, SPACE, rounds=3, trials_per_round=20, top_k=4, seed=3)
    by_round = {r: [t for t in study.trials if t.round == r] for r in range(3)}
    assert [len(v) for v in by_round.values()] == [20, 20, 20]
    spread = [np.ptp([t.params["x"] for t in by_round[r]]) for r in range(3)]
    assert spread[2] < spread[1] < spread[0]  # each round samples a smaller region
    median = [np.median([t.value for t in by_round[r]]) for r in range(3)]
    assert median[2] < median[1] < median[0]
    assert study.best_trial.value < min(t.value for t in by_round[0])


def test_failed_and_diverged_trials_are_recorded_and_the_study_goes_on():
    study = Study()
    study.optimize(failing, {"x": Uniform(-5, 5)}, 20, seed=0)
    states = {t.state for t in study.trials}
    assert states == {"complete", "failed"}
    errors = [t.error for t in study.trials if t.state == "failed"]
    assert any("RuntimeError: boom" in e for e in errors)
    assert any("diverged" in e for e in errors)
    assert study.best_trial.value <= 2


def test_storage_resume_runs_only_what_is_missing(tmp_path):
    path = tmp_path / "study.sqlite"
    calls = []

    def counted(params):
        calls.append(params["x"])
        return params["x"]

    Study(path).optimize(counted, {"x": Uniform(0, 1)}, 5, seed=2)
    assert len(calls) == 5
    # an interrupted trial: mark trial 3 as still running, as after a kill
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE trials SET state = 'running', value = NULL WHERE number = 3")
    reopened = Study(path)
    assert [t.state for t in reopened.trials].count("running") == 1
    reopened.optimize(counted, {"x": Uniform(0, 1)}, 8)
    assert len(calls) == 5 + 1 + 3  # trial 3 again (same params), then 5, 6, 7
    assert calls[5] == calls[3]
    assert [t.number for t in reopened.trials] == list(range(8))
    assert all(t.state == "complete" for t in reopened.trials)


def test_study_direction_is_stored_and_checked(tmp_path):
    Study(tmp_path / "s.sqlite", direction="minimize")
    with pytest.raises(ValueError, match="direction: the stored study 'default' is to minimize"):
        Study(tmp_path / "s.sqlite", direction="maximize")


def test_should_prune_compares_with_the_median_of_reference_curves_at_the_same_step():
    from pybn.tune.study import TrialContext, TrialPruned
    curves = [[0.1, 0.2, 0.3, 0.4], [0.2, 0.4, 0.6, 0.8], [0.3, 0.6, 0.9, 1.0], [0.0, 0.1]]
    ctx = TrialContext(0, 0, {}, maximize=True, reference=curves, warmup=2)
    assert not ctx.should_prune(0, -100.0) and not ctx.should_prune(1, -100.0)  # warm-up
    assert ctx.should_prune(2, 0.59)       # median at step 2 of the three curves that reach it: 0.6
    assert not ctx.should_prune(2, 0.6) and not ctx.should_prune(2, 0.61)
    assert not ctx.should_prune(2, float("nan"))
    assert ctx.should_prune(3, 0.7)        # step 3: median of 0.4, 0.8, 1.0
    assert not ctx.should_prune(4, -1.0)   # no curve reaches step 4
    minimizing = TrialContext(0, 0, {}, maximize=False, reference=curves, warmup=2)
    assert minimizing.should_prune(2, 0.61) and not minimizing.should_prune(2, 0.59)
    assert not TrialContext(0, 0, {}, True, curves[:2], warmup=0).should_prune(1, -1.0)  # < 3 curves
    ctx.report(0, 0.0)
    ctx.report(1, 0.0)
    with pytest.raises(TrialPruned, match="trial 0 pruned at step 2"):
        ctx.report(2, 0.1)
    assert ctx.intermediate == [0.0, 0.0, 0.1]


def slow_starter(params, trial):
    """The final score rises with x, but the curve starts as 1 - x: trials
    zoomed around the best (high) x start badly."""
    x = params["x"]
    for step in range(6):
        trial.report(step, 1 - x if step < 5 else x)
    return x


def _replayed_states(trials, pruner, judged_against=("complete",)):
    """What the pruner's rule says of each trial, worked out afresh: trial k
    against the trials numbered below k - lag (complete ones, or those in
    the states given), step by step."""
    expected, curves = {}, {}
    for t in sorted(trials, key=lambda t: t.number):
        x, curve, state = t.params["x"], [], "complete"
        reference = [c for n, c in curves.items() if n < t.number - pruner.lag]
        for step in range(6):
            curve.append(1 - x if step < 5 else x)
            if pruner.should_prune(step, curve[-1], reference, maximize=True):
                state = "pruned"
                break
        expected[t.number] = (state, len(curve))
        if state in judged_against:
            curves[t.number] = curve
    return expected


@pytest.mark.parametrize("lag", [0, 3, 8])
def test_the_pruner_judges_each_trial_against_the_complete_trials_numbered_below_it(lag):
    from pybn.tune import MedianPruner
    pruner = MedianPruner(warmup_steps=2, min_trials=3, lag=lag)
    study = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, rounds=2, trials_per_round=10,
                                   top_k=3, seed=0, pruner=pruner)
    trials = study.trials
    assert {t.number: (t.state, len(t.intermediate)) for t in trials} == _replayed_states(trials, pruner)
    assert sum(t.state == "pruned" for t in trials if t.round == 1) >= 5  # the rule had work to do
    for t in trials:
        if t.state == "pruned":
            assert t.value == t.intermediate[-1] and len(t.intermediate) >= 3  # never in the warm-up


@pytest.mark.parametrize("lag", [0, 3])
def test_successive_halving_judges_each_trial_against_complete_and_pruned_trials_below_it(lag):
    from pybn.tune import SuccessiveHalvingPruner
    pruner = SuccessiveHalvingPruner(min_resource=1, reduction_factor=2, min_trials=3, lag=lag)
    study = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, rounds=2, trials_per_round=12,
                                   top_k=3, seed=0, pruner=pruner)
    trials = study.trials
    states = {t.number: (t.state, len(t.intermediate)) for t in trials}
    assert states == _replayed_states(trials, pruner, judged_against=("complete", "pruned"))
    # judged against complete trials alone, the rule would have cut others: the pruned ones count
    assert states != _replayed_states(trials, pruner)
    assert {length for state, length in states.values() if state == "pruned"} <= {1, 2, 4}  # at rungs only
    assert sum(state == "pruned" for state, _ in states.values()) >= 8


def test_successive_halving_is_the_same_with_one_worker_or_two():
    from pybn.tune import SuccessiveHalvingPruner
    kwargs = dict(rounds=2, trials_per_round=12, top_k=3, seed=4,
                  pruner=SuccessiveHalvingPruner(min_resource=1, reduction_factor=2, min_trials=3, lag=2))
    one = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, **kwargs).trials
    two = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, n_workers=2, **kwargs).trials
    assert [(t.params, t.state, t.intermediate) for t in one] == [(t.params, t.state, t.intermediate) for t in two]
    assert any(t.state == "pruned" for t in one)


def test_pruning_is_the_same_with_one_worker_or_two():
    from pybn.tune import MedianPruner
    kwargs = dict(rounds=2, trials_per_round=12, top_k=3, seed=4,
                  pruner=MedianPruner(warmup_steps=2, min_trials=3, lag=2))
    one = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, **kwargs).trials
    two = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, n_workers=2, **kwargs).trials
    assert [(t.params, t.state, t.intermediate) for t in one] == [(t.params, t.state, t.intermediate) for t in two]
    assert any(t.state == "pruned" for t in one)


def test_no_pruner_runs_every_trial_to_its_end():
    study = Study().coarse_to_fine(slow_starter, {"x": Uniform(0, 1)}, rounds=2, trials_per_round=10,
                                   seed=0, pruner=None)
    assert all(t.state == "complete" and len(t.intermediate) == 6 for t in study.trials)


def test_mlp_objective_is_never_pruned_at_its_last_epoch():
    """A verdict at the last epoch (here the only one past the warm-up)
    would mark fully trained trials pruned, their last score in place of
    their best: they complete."""
    from pybn.tune import PercentilePruner
    from pybn.tune.objective import default_space
    study = Study().optimize(MLPObjective(epochs=3), default_space(), 30, seed=0,
                             pruner=PercentilePruner(50, warmup_steps=2, min_trials=3, lag=0))
    assert [t.state for t in study.trials] == ["complete"] * 30
    assert all(len(t.intermediate) == 3 and t.value == max(t.intermediate) for t in study.trials)


def test_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        Study(direction="up")
    with pytest.raises(ValueError, match="n_trials: expected an int from 1 to"):
        Study().optimize(quadratic, SPACE, 0)
    with pytest.raises(ValueError, match="n_trials: expected an int from 1 to"):  # was SQLite's OverflowError
        Study().optimize(quadratic, SPACE, 2**70)
    with pytest.raises(TypeError, match="objective: expected a callable, got int"):  # was 3 failed trials
        Study().optimize(3, SPACE, 3)
    with pytest.raises(ValueError, match="space: expected a non-empty dict"):
        Study().optimize(quadratic, {}, 3)
    with pytest.raises(ValueError, match=r"space\['x'\]: expected a pybn.tune distribution"):
        Study().optimize(quadratic, {"x": (0, 1)}, 3)
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        Study().optimize(quadratic, SPACE, 3, seed=-1)
    with pytest.raises(ValueError, match="trials_per_round: expected 2 counts"):
        Study().coarse_to_fine(quadratic, SPACE, rounds=2, trials_per_round=[3, 3, 3])
    with pytest.raises(ValueError, match="best_trial: the study has no complete trial"):
        _ = Study().best_trial
    with pytest.raises(ValueError, match="storage: directory"):
        Study("/nonexistent/dir/s.sqlite")


def test_corrupt_storage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="is not a usable pybn study database"):
        Study(bad)
    with pytest.raises(ValueError, match="is a folder; expected a SQLite file"):
        Study(tmp_path)


SMALL_MLP_SPACE = {"learning_rate": LogUniform(1e-3, 1e-1), "hidden_units": IntUniform(8, 32, log=True)}


def test_one_and_two_workers_give_the_same_trials_and_scores():
    objective = MLPObjective(epochs=2)
    one = Study().optimize(objective, SMALL_MLP_SPACE, 4, seed=5, n_workers=1).trials
    two = Study().optimize(objective, SMALL_MLP_SPACE, 4, seed=5, n_workers=2).trials
    assert [(t.number, t.params, t.seed) for t in one] == [(t.number, t.params, t.seed) for t in two]
    assert [t.value for t in one] == [t.value for t in two]
    assert all(t.state in ("complete", "pruned") for t in two)


def test_workers_get_their_share_of_the_cores():
    cores = os.cpu_count()
    study = Study().optimize(report_threads, {"x": Uniform(0, 1)}, 2, n_workers=2, seed=0)
    expected = max(1, cores // 2)
    assert {int(t.value) // 100 for t in study.trials} == {expected}
    assert {int(t.value) % 100 for t in study.trials} <= {expected}


def test_dask_local_cluster_runs_the_same_trials():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        study = Study().optimize(quadratic, SPACE, 6, seed=9, n_workers=2, executor=client.get_executor())
    local = Study().optimize(quadratic, SPACE, 6, seed=9)
    assert [(t.params, t.value) for t in study.trials] == [(t.params, t.value) for t in local.trials]


def test_retest_reruns_the_best_configurations_with_new_seeds():
    def noisy(params, trial):
        return params["x"] + (trial.seed % 100) / 1000

    study = Study().optimize(noisy, {"x": Uniform(0, 1)}, 10, seed=4)
    results = study.retest(noisy, k=3, seed=11)
    assert [r.number for r in results] == [t.number for t in study.best_trials(3)]
    for r in results:
        assert abs(r.change) < 0.1 and r.retest_value != r.stored_value


def test_trials_table():
    table = Study().optimize(quadratic, SPACE, 3, seed=0).trials_table()
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert len(rows) == 3 and "params_lr" in rows[0] and rows[0]["state"] == "complete"


def test_mlp_objective_arguments():
    with pytest.raises(ValueError, match="optimizer: expected 'adam' or 'sgd'"):
        MLPObjective(optimizer="lbfgs")
    from pybn.tune.study import TrialContext
    ctx = TrialContext(0, 1, {}, True)
    score = MLPObjective(epochs=1, optimizer="sgd", fixed={"layers": 2, "hidden_units": 8})(
        {"learning_rate": 0.05}, ctx)
    assert 0 <= score <= 1 and len(ctx.intermediate) == 1


def level_scores(params, trial):
    """Every trial scores 1.0 (a tie); its last five epochs score x."""
    for step in range(10):
        trial.report(step, 1.0 if step == 4 else (params["x"] if step >= 5 else 0.0))
    return 1.0


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_equal_scores_are_ranked_by_the_end_of_the_curve(direction):
    study = Study(direction=direction)
    study.optimize(level_scores, {"x": Uniform(0, 1)}, 12, seed=3, pruner=None)
    xs = [t.params["x"] for t in study.trials]
    steadiest = max(xs) if direction == "maximize" else min(xs)
    assert study.best_params["x"] == steadiest
    assert [t.params["x"] for t in study.best_trials(3)] == sorted(xs, reverse=direction == "maximize")[:3]


def test_a_rounds_plan_ranks_equal_scores_by_trial_number():
    # the tie-break picks the best; plans keep ranking as stored studies were planned
    study = Study()
    study.coarse_to_fine(level_scores, {"x": Uniform(0, 1)}, rounds=2, trials_per_round=[10, 2], seed=3,
                         pruner=None)
    plan = study.storage.get_round(study.name, 1)[0]
    first_five = [t.params for t in sorted(study.trials, key=lambda t: t.number)[:5]]
    assert plan["centers"] == first_five
