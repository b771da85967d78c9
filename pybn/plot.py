"""Plots (matplotlib, the optional `plot` extra): learning curves of one
model, a study's scores against each hyperparameter, and the learning-rate
bands of --compare-batchnorm.

Axes are in the values a person set, on the scale they were searched on:
a log axis for LogUniform, a log axis of 1 - beta labelled in beta for
OneMinusLogUniform, integer ticks for IntUniform, one tick per option for
Choice; each spans the search space, not just the trials. Pruned trials
(their last score) and failed ones are drawn apart from complete ones, and
the score axis shows the top of the range, where the choice is made, with
the trials below it marked at its bottom edge.
"""
import math

import numpy as np

__all__ = ["plot_learning_curves", "plot_study", "plot_compare_batchnorm"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'pybn[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_learning_curves(history, path, marks=()):
    """Loss and accuracy per epoch, training and validation; `marks` are
    (epoch, label) pairs drawn as vertical lines (e.g. a learning rate
    changed on resume)."""
    from .train import History
    if not isinstance(history, (list, tuple)) or not all(isinstance(logs, dict) for logs in history):
        raise TypeError("history: expected the History train.fit returns (a list of one dict per epoch), "
                        f"got {type(history).__name__}")
    history = History(history)  # a list of dicts too, as a checkpoint's JSON gives back
    plt = _pyplot()
    epochs = [logs.get("epoch", i) + 1 for i, logs in enumerate(history)]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[key], label="train")
        if any(v is not None for v in history["val_" + key]):
            ax.plot(epochs, history["val_" + key], label="validation")
        for epoch, label in marks:
            ax.axvline(epoch + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.annotate(label, (epoch + 0.5, 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=8, color="gray")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- one hyperparameter axis ------------------------------------------------------------


def _setup_axis(ax, name, dist):
    """Scale, range, ticks and label of the x axis for `dist`; returns the
    function from a parameter value to its x coordinate."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    kind = dist.kind
    if kind == "choice":
        positions = {repr(o): i for i, o in enumerate(dist.options)}
        ax.set_xticks(range(len(dist.options)))
        ax.set_xticklabels([str(o) for o in dist.options])
        ax.set_xlim(-0.5, len(dist.options) - 0.5)
        ax.set_xlabel(name)
        return lambda v: positions.get(repr(v), np.nan)
    if kind == "log_uniform":
        ax.set_xscale("log")
        ax.set_xlim(dist.low / 10 ** 0.05, dist.high * 10 ** 0.05)
        ax.set_xlabel(f"{name} (log scale)")
        return float
    if kind == "one_minus_log_uniform":
        # x = 1 - beta on a log axis, reversed so that beta grows rightwards,
        # ticks labelled in beta (0.9, 0.99, 0.999)
        ax.set_xscale("log")
        ax.set_xlim((1 - dist.low) * 10 ** 0.05, (1 - dist.high) / 10 ** 0.05)
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{1 - x:.{max(0, -math.floor(math.log10(x)))}f}"))
        ax.set_xlabel(f"{name} (log scale of 1 - {name})")
        return lambda v: 1.0 - float(v)
    if kind == "int_uniform":
        if dist.log:
            ax.set_xscale("log", base=2)
            ax.set_xlim(dist.low / 2 ** 0.1, dist.high * 2 ** 0.1)
            ticks = [2 ** k for k in range(math.ceil(math.log2(dist.low)), math.floor(math.log2(dist.high)) + 1)]
            ticks = sorted({dist.low, dist.high, *ticks})
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(FixedLocator([]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}"))
            ax.set_xlabel(f"{name} (log scale)")
        else:
            ax.set_xlim(dist.low - 0.5, dist.high + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(name)
        return float
    span = dist.high - dist.low
    ax.set_xlim(dist.low - 0.03 * span, dist.high + 0.03 * span)
    ax.set_xlabel(name)
    return float


def _score_range(values, maximize=True):
    """The y range that shows the top of the scores: from a little below the
    median of the complete trials (or the worst, if close) to the best."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)])
    if values.size == 0:
        return None
    best, worst = (values.max(), values.min())
    median = float(np.median(values))
    low = worst if (best - worst) <= 3 * max(best - median, 1e-12) else median - 0.5 * (best - median)
    pad = 0.05 * max(best - low, 1e-3)
    return low - pad, best + pad


def plot_study(trials, space, path, score_name="score", title=None, maximize=True):
    """One panel per hyperparameter: score against its value, coloured by
    coarse-to-fine round; pruned trials hollow, failed ones as red crosses
    along the bottom, trials below the shown range as triangles on it."""
    plt = _pyplot()
    complete = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
    pruned = [t for t in trials if t.state == "pruned" and t.value is not None and math.isfinite(t.value)]
    failed = [t for t in trials if t.state == "failed"]
    names = list(space)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.8 * rows), squeeze=False)
    rounds = sorted({t.round for t in complete + pruned})
    cmap = plt.get_cmap("viridis", max(len(rounds), 2))
    limits = _score_range([t.value for t in complete] or [t.value for t in pruned], maximize)
    for ax, name in zip(axes.flat, names):
        x_of = _setup_axis(ax, name, space[name])
        low = limits[0] if limits else None
        for k, r in enumerate(rounds):
            for group, hollow in ((complete, False), (pruned, True)):
                pts = [(x_of(t.params[name]), t.value) for t in group if t.round == r and name in t.params]
                if not pts:
                    continue
                xs, ys = map(np.asarray, zip(*pts))
                inside = ys >= low if low is not None else np.ones(len(ys), bool)
                style = dict(facecolors="none", edgecolors=cmap(k)) if hollow else dict(color=cmap(k))
                label = f"round {r}" + (" pruned" if hollow else "")
                ax.scatter(xs[inside], ys[inside], s=16, alpha=0.85, label=label, **style)
                if low is not None and (~inside).any():
                    ax.scatter(xs[~inside], np.full((~inside).sum(), low), marker="v", s=18,
                               color=cmap(k), alpha=0.6, clip_on=False)
        if failed and limits:
            xs = [x_of(t.params[name]) for t in failed if name in t.params]
            ax.scatter(xs, [limits[0]] * len(xs), marker="x", color="red", s=20, label="failed",
                       clip_on=False)
        if limits:
            ax.set_ylim(*limits)
        ax.set_ylabel(score_name)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(fontsize=7, loc="lower right")
    below = sum(1 for t in complete if limits and t.value < limits[0])
    heading = (title + ": " if title else "") + f"{score_name} of {len(complete)} complete, {len(pruned)} " \
        f"pruned (hollow), {len(failed)} failed (x) trials"
    if below:
        heading += f"; {below} below the range shown (triangles)"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_compare_batchnorm(results, lr_space, path, good):
    """Validation accuracy against the learning rate for each labelled
    group of trials, on one log axis over the searched range, with the band
    of good rates (score >= good) shaded for each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x_of = _setup_axis(ax, "learning_rate", lr_space)
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for (label, trials), color in zip(results.items(), colors):
        done = sorted((x_of(t.params["learning_rate"]), t.value) for t in trials
                      if t.state == "complete" and t.value is not None)
        failed = [x_of(t.params["learning_rate"]) for t in trials if t.state == "failed"]
        if done:
            xs, ys = zip(*done)
            ax.plot(xs, ys, "o-", color=color, markersize=4, linewidth=1, label=label)
        if failed:
            ax.scatter(failed, [0.0] * len(failed), marker="x", color=color, label=f"{label}: diverged")
        good_rates = [x for x, y in done if y >= good]
        if good_rates:
            ax.axvspan(min(good_rates), max(good_rates), color=color, alpha=0.12)
            decades = math.log10(max(good_rates) / min(good_rates))
            ax.annotate(f"{decades:.2f} decades", (min(good_rates), good), color=color, fontsize=8,
                        xytext=(2, 4), textcoords="offset points")
    ax.axhline(good, color="gray", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"good learning rates (validation accuracy >= {good}) with and without batch norm",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
