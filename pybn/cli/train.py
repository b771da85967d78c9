"""`pybn train`: train one batch-normalized MLP and babysit it (the "panda"
way): live loss/accuracy, a checkpoint every epoch, resume from any
checkpoint with nudged hyperparameters, learning curves as PNG.

--resume CKPT continues a checkpoint (the same --data), checkpointing into
its folder unless --checkpoint says otherwise; --lr then sets a new
learning rate (marked on the learning curves). The model and optimizer
come from the checkpoint: flags that would change them are ignored, with a
warning. Training stops with a message when the loss diverges.
"""
import os
import pathlib
import sys

from .. import datasets, optim
from .. import train as T
from .._threads import set_num_threads
from . import checks
from .checks import UsageError

PROG = "pybn train"

# Flags that define the model or optimizer: a resumed checkpoint has its own.
_FIXED_ON_RESUME = {"hidden": [128, 64], "no_batch_norm": False, "activation": "relu",
                    "optimizer": "adam", "momentum": 0.9, "beta2": 0.999, "weight_decay": 0.0,
                    "dtype": "float32"}


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train one BN-MLP on digits (or --data X.npz)",
                              description=__doc__, formatter_class=checks.HelpFormatter)
    p.add_argument("--data", help=".npz with X (m, n) and integer labels y (default: the bundled digits)")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden widths (default: 128 64)")
    p.add_argument("--no-batch-norm", action="store_true", default=None,
                   help="plain MLP (Dense with bias)")
    p.add_argument("--activation", choices=["relu", "tanh"], help="hidden activation (default: relu)")
    p.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], help="(default: adam)")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help="parameters' and computation's precision (default: float32)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; with --resume: the new rate)")
    p.add_argument("--momentum", type=float,
                   help="SGD momentum / RMSprop beta / Adam beta1 (default: 0.9)")
    p.add_argument("--beta2", type=float, help="Adam beta2 (default: 0.999)")
    p.add_argument("--weight-decay", type=float, help="L2 penalty (default: 0)")
    p.add_argument("--lr-decay", type=float, default=0.0, help="inverse-time decay rate: lr0/(1+rate*epoch)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per mini-batch")
    p.add_argument("--epochs", type=int, default=30, help="train until this many epochs in total")
    p.add_argument("--seed", type=int, default=0, help="initialization, shuffling and data split")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="save a checkpoint every epoch into DIR (with --resume: the checkpoint's folder)")
    p.add_argument("--keep-last", type=int, metavar="N",
                   help="keep only the newest N epoch checkpoints (default: all)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint .npz")
    p.add_argument("--plot", metavar="FILE", help="write the learning curves (PNG, PDF, SVG...)")
    p.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check(args):
    checks.number("--lr", args.lr, above=0)
    checks.number("--lr-decay", args.lr_decay, at_least=0)
    checks.number("--momentum", args.momentum, at_least=0, below=1)
    checks.number("--beta2", args.beta2, at_least=0, below=1)
    checks.number("--weight-decay", args.weight_decay, at_least=0)
    checks.seed("--seed", args.seed)
    for option in ("epochs", "batch_size"):
        checks.positive(f"--{option.replace('_', '-')}", getattr(args, option), allow_none=False)
    checks.positive("--keep-last", args.keep_last)
    if args.hidden is not None and any(h < 1 for h in args.hidden):
        raise UsageError(f"--hidden: widths must be >= 1, got {args.hidden}")
    checks.threads("--threads", args.threads)
    checks.data_file("--data", args.data)
    if args.plot:
        checks.plot_file("--plot", args.plot)
    if args.checkpoint:
        parent = os.path.dirname(os.path.abspath(args.checkpoint))
        if os.path.exists(args.checkpoint) and not os.path.isdir(args.checkpoint):
            raise UsageError(f"--checkpoint: {args.checkpoint} is a file, not a folder")
        if not os.path.isdir(parent):
            raise UsageError(f"--checkpoint: the folder {parent} does not exist")
        checks.writable_folder("--checkpoint", args.checkpoint if os.path.isdir(args.checkpoint) else parent)
    if args.resume:
        if os.path.isdir(args.resume):
            raise UsageError(f"--resume: {args.resume} is a folder; expected a checkpoint .npz in it")
        if not os.path.isfile(args.resume):
            raise UsageError(f"--resume: {args.resume} does not exist")
        try:
            ckpt = T.load_checkpoint(args.resume)
        except ValueError as exc:
            raise UsageError(f"--resume: {str(exc).removeprefix('checkpoint: ')}") from None
        if ckpt.epoch >= args.epochs:
            raise UsageError(f"--epochs: the checkpoint is at epoch {ckpt.epoch}; ask for more than that")
        return ckpt
    return None


def run(args):
    try:
        ckpt = _check(args)
    except UsageError as exc:
        return checks.report(PROG, exc)
    if args.threads:
        set_num_threads(args.threads)
    X, y = datasets.load_npz(args.data) if args.data else datasets.load_digits()
    data = datasets.split_standardize(X, y, seed=args.seed)
    checkpoint_dir = args.checkpoint
    if ckpt is not None:
        model, optimizer, start, history = ckpt.model, ckpt.optimizer, ckpt.epoch, ckpt.history
        if model.config and model.config.get("n_features") != X.shape[1]:
            return checks.report(PROG, UsageError(
                f"--data: the checkpoint's model reads {model.config.get('n_features')} features, "
                f"the data has {X.shape[1]}"))
        n_classes = model.config.get("n_classes") if model.config else None
        if n_classes is not None and y.max() >= n_classes:
            return checks.report(PROG, UsageError(
                f"--data: the checkpoint's model has {n_classes} output classes (labels 0..{n_classes - 1}), "
                f"the data's labels go up to {y.max()}"))
        ignored = [name for name, default in _FIXED_ON_RESUME.items() if getattr(args, name) is not None]
        for name in ignored:
            print(f"{PROG}: warning: --{name.replace('_', '-')} is ignored with --resume: the model and "
                  f"optimizer come from the checkpoint", file=sys.stderr)
        seed, lr0 = ckpt.extra.get("seed", args.seed), ckpt.extra.get("lr0", optimizer.lr)
        lr_changes = list(ckpt.extra.get("lr_changes", []))
        if args.lr is not None:  # nudge: continue with a new learning rate
            lr0 = optimizer.lr = args.lr
            lr_changes.append([start, args.lr])
        if checkpoint_dir is None:  # keep checkpointing where the run was
            checkpoint_dir = str(pathlib.Path(args.resume).resolve().parent)
        print(f"resumed {args.resume} at epoch {start}, lr {optimizer.lr:g}; checkpoints into {checkpoint_dir}")
    else:
        for name, default in _FIXED_ON_RESUME.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        seed, lr0, start, history, lr_changes = args.seed, args.lr or 1e-3, 0, T.History(), []
        model = T.build_mlp(X.shape[1], int(y.max()) + 1, hidden=args.hidden,
                            batch_norm=not args.no_batch_norm, activation=args.activation, seed=seed,
                            dtype=args.dtype)
        hyper = {"adam": dict(beta1=args.momentum, beta2=args.beta2),
                 "sgd": dict(momentum=args.momentum), "rmsprop": dict(beta=args.momentum)}
        try:
            optimizer = T.build_optimizer(args.optimizer, model.parameters(), lr=lr0,
                                          weight_decay=args.weight_decay, **hyper[args.optimizer])
        except ValueError as exc:
            return checks.report(PROG, UsageError(str(exc)))
    callbacks = []
    if checkpoint_dir:
        callbacks.append(T.Checkpoint(checkpoint_dir, history=history, keep_last=args.keep_last,
                                      extra={"seed": seed, "lr0": lr0, "lr_changes": lr_changes}))
    schedule = None
    if args.lr_decay:
        optimizer.lr = lr0
        schedule = optim.InverseTimeDecay(optimizer, args.lr_decay)
    try:
        T.fit(model, optimizer, data.X_train, data.y_train, epochs=args.epochs,
              batch_size=args.batch_size, validation_data=(data.X_val, data.y_val), seed=seed,
              schedule=schedule, callbacks=callbacks, start_epoch=start, history=history,
              progress=not args.no_progress)
    except T.TrainingDiverged as exc:
        print(f"{PROG}: diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: where the run is, not a traceback
        last = pathlib.Path(checkpoint_dir or "", T.Checkpoint.LAST)
        if checkpoint_dir and last.exists():
            data = f" --data {args.data}" if args.data else ""
            where = (f"{last} holds the last finished epoch: `pybn train --resume {last}{data} "
                     f"--epochs {args.epochs}` continues")
        else:
            where = "no checkpoint was saved (--checkpoint DIR saves one every epoch)"
        print(f"\n{PROG}: interrupted; {where}", file=sys.stderr)
        return 130
    last = history[-1]
    print(f"epoch {last['epoch'] + 1}: loss {last['loss']:.4f}, val_accuracy {last['val_accuracy']:.4f}")
    test_loss, test_acc = T.evaluate(model, data.X_test, data.y_test)
    print(f"test accuracy: {test_acc:.4f} (test loss {test_loss:.4f}, {len(data.y_test)} examples)")
    if args.plot:
        from ..plot import plot_learning_curves
        marks = [(epoch, f"lr {lr:g}") for epoch, lr in lr_changes]
        plot_learning_curves(history, args.plot, marks=marks)
        print(f"learning curves: {pathlib.Path(args.plot).resolve()}")
    return 0


__all__ = ["add_parser", "run"]
