"""PNG plots (matplotlib, the optional `plot` extra): learning curves of one
model, and a study's scores against each hyperparameter."""
import math

__all__ = ["plot_learning_curves", "plot_study"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'pybn[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_learning_curves(history, path):
    """Loss and accuracy per epoch, training and validation."""
    plt = _pyplot()
    epochs = [logs["epoch"] + 1 for logs in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[key], label="train")
        if any(v is not None for v in history["val_" + key]):
            ax.plot(epochs, history["val_" + key], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_study(trials, space, path, score_name="score"):
    """One panel per hyperparameter: score against its value on the
    parameter's own scale (log for LogUniform, log of 1-beta for
    OneMinusLogUniform), coloured by coarse-to-fine round."""
    plt = _pyplot()
    done = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
    names = list(space)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    rounds = sorted({t.round for t in done})
    cmap = plt.get_cmap("viridis", max(len(rounds), 2))
    for ax, name in zip(axes.flat, names):
        dist = space[name]
        for k, r in enumerate(rounds):
            pts = [(t.params[name], t.value) for t in done if t.round == r and name in t.params]
            if pts:
                xs, ys = zip(*pts)
                xs = [dist.to_plot_scale(x) for x in xs]
                ax.scatter(xs, ys, s=14, color=cmap(k), label=f"round {r}", alpha=0.8)
        ax.set_xlabel(dist.plot_label(name))
        ax.set_ylabel(score_name)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if rounds:
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
