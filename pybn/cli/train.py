"""`pybn train`: train one batch-normalized MLP and babysit it (the "panda"
way): live loss/accuracy, a checkpoint every epoch, resume from any
checkpoint with nudged hyperparameters, learning curves as PNG."""
import pathlib

from .. import datasets, optim
from .. import train as T
from .._threads import set_num_threads


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train one BN-MLP on digits (or --data X.npz)",
                              description=__doc__)
    p.add_argument("--data", help=".npz with X (m, n) and integer labels y (default: digits)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 64], help="hidden widths")
    p.add_argument("--no-batch-norm", action="store_true", help="plain MLP (Dense with bias)")
    p.add_argument("--activation", choices=["relu", "tanh"], default="relu")
    p.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], default="adam")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; with --resume: the new rate)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / RMSprop beta / Adam beta1")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty")
    p.add_argument("--lr-decay", type=float, default=0.0, help="inverse-time decay rate: lr0/(1+rate*epoch)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30, help="train until this many epochs in total")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", metavar="DIR", help="save a checkpoint every epoch into DIR")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint .npz")
    p.add_argument("--plot", metavar="PNG", help="write the learning curves to a PNG")
    p.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check(args):
    if args.lr is not None and not args.lr > 0:
        raise SystemExit(f"pybn train: error: --lr: expected a number > 0, got {args.lr}")
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("pybn train: error: --epochs and --batch-size must be >= 1")
    if any(h < 1 for h in args.hidden):
        raise SystemExit(f"pybn train: error: --hidden: widths must be >= 1, got {args.hidden}")


def run(args):
    _check(args)
    if args.threads:
        set_num_threads(args.threads)
    X, y = datasets.load_npz(args.data) if args.data else datasets.load_digits()
    data = datasets.split_standardize(X, y, seed=args.seed)
    if args.resume:
        ckpt = T.load_checkpoint(args.resume)
        model, optimizer, start, history = ckpt.model, ckpt.optimizer, ckpt.epoch, ckpt.history
        seed, lr0 = ckpt.extra.get("seed", args.seed), ckpt.extra.get("lr0", optimizer.lr)
        if args.lr is not None:  # nudge: continue with a new learning rate
            lr0 = optimizer.lr = args.lr
        print(f"resumed {args.resume} at epoch {start}, lr {optimizer.lr:g}")
    else:
        seed, lr0, start, history = args.seed, args.lr or 1e-3, 0, T.History()
        model = T.build_mlp(X.shape[1], int(y.max()) + 1, hidden=args.hidden,
                            batch_norm=not args.no_batch_norm, activation=args.activation, seed=seed)
        hyper = {"adam": dict(beta1=args.momentum, beta2=args.beta2),
                 "sgd": dict(momentum=args.momentum), "rmsprop": dict(beta=args.momentum)}
        optimizer = T.build_optimizer(args.optimizer, model.parameters(), lr=lr0,
                                      weight_decay=args.weight_decay, **hyper[args.optimizer])
    if start >= args.epochs:
        raise SystemExit(f"pybn train: error: the checkpoint is at epoch {start}; "
                         f"ask for more --epochs than that")
    callbacks = []
    if args.checkpoint:
        callbacks.append(T.Checkpoint(args.checkpoint, history=history, extra={"seed": seed, "lr0": lr0}))
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
        print(f"pybn train: diverged: {exc}")
        return 1
    last = history[-1]
    print(f"epoch {last['epoch'] + 1}: loss {last['loss']:.4f}, val_accuracy {last['val_accuracy']:.4f}")
    test_loss, test_acc = T.evaluate(model, data.X_test, data.y_test)
    print(f"test accuracy: {test_acc:.4f} (test loss {test_loss:.4f}, {len(data.y_test)} examples)")
    if args.plot:
        from ..plot import plot_learning_curves
        plot_learning_curves(history, args.plot)
        print(f"learning curves: {pathlib.Path(args.plot).resolve()}")
    return 0


__all__ = ["add_parser", "run"]
