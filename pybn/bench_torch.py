"""`pybn bench --torch-step`: one training step of a small CNN in PyTorch,
with torch.nn's batch norm and cross-entropy and with pybn.torch.patch,
timed in interleaved rounds in one process (same shapes, same threads).

The network is conv-BN-ReLU blocks on 32x32 RGB inputs (CIFAR-sized), batch
32, SGD with momentum: the convolutions are PyTorch's in both columns, so
the ratio is what swapping the batch norm and the loss buys end to end.
"""
import copy
import time

__all__ = ["cnn_step"]


def _cnn(torch, width):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


def cnn_step(threads, batch=32, width=32, rounds=30, channels_last=False):
    """Median and best seconds per training step: {"torch": (median, best),
    "pybn": (median, best)}, and the profile share of batch norm."""
    import torch

    from . import torch as pybn_torch
    from ._threads import set_num_threads
    torch.set_num_threads(threads)
    set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    base = _cnn(torch, width)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        base = base.to(memory_format=torch.channels_last)
    models = {"torch": (base, torch.nn.CrossEntropyLoss()),
              "pybn": (pybn_torch.patch(copy.deepcopy(base)), pybn_torch.CrossEntropyLoss())}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, (m, _) in models.items()}

    def step(name):
        model, loss_fn = models[name]
        optimizers[name].zero_grad()
        loss_fn(model(x), y).backward()
        optimizers[name].step()

    times = {name: [] for name in models}
    for _ in range(3):  # warm-up
        for name in models:
            step(name)
    for _ in range(rounds):
        for name in models:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = (values[len(values) // 2], values[0])
    return out


# ---- whole training epochs: pybn's training API against PyTorch ----------------------

# (hidden layers, width, batch size): the three configurations of issue 15
TRAINING_CONFIGS = [(1, 64, 64), (3, 128, 32), (3, 256, 16)]


def training_epochs(threads, rounds=5, dtype="float32"):
    """Seconds per epoch (median, best) of Dense-BatchNorm-ReLU MLPs on the
    digits training split with Adam, in pybn's training API and in PyTorch
    (same architecture, batches and dtype), timed in interleaved rounds:
    {(layers, width, batch): {"pybn": (median, best), "torch": (median, best)}}."""
    import numpy as np
    import torch

    from . import datasets
    from . import train as T
    from ._threads import set_num_threads
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads, user_api="blas"):  # NumPy's matrix products too
        return _training_epochs(threads, rounds, dtype, torch, np, datasets, T, set_num_threads)


def _training_epochs(threads, rounds, dtype, torch, np, datasets, T, set_num_threads):
    torch.set_num_threads(threads)
    set_num_threads(threads)
    split = datasets.split_standardize(*datasets.load_digits(), seed=0)
    X = split.X_train.astype(dtype)
    y = split.y_train
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    results = {}
    for layers, width, batch in TRAINING_CONFIGS:
        model = T.build_mlp(X.shape[1], 10, hidden=[width] * layers, seed=0, dtype=dtype)
        opt = T.build_optimizer("adam", model.parameters(), lr=1e-3)
        blocks = []
        for i in range(layers):
            blocks += [torch.nn.Linear(X.shape[1] if i == 0 else width, width, bias=False),
                       torch.nn.BatchNorm1d(width), torch.nn.ReLU()]
        net = torch.nn.Sequential(*blocks, torch.nn.Linear(width, 10)).to(getattr(torch, dtype))
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(0)
        epoch = [0]

        def pybn_epoch():
            T.fit(model, opt, X, y, epochs=epoch[0] + 1, start_epoch=epoch[0], batch_size=batch, seed=0)
            epoch[0] += 1

        def torch_epoch():
            net.train()
            order = torch.randperm(len(Xt), generator=generator)
            batches = list(order.split(batch))
            if len(batches) > 1 and len(batches[-1]) == 1:  # as pybn: no batch of one
                batches[-2] = torch.cat(batches[-2:])
                batches.pop()
            for idx in batches:
                topt.zero_grad()
                loss_fn(net(Xt[idx]), yt[idx]).backward()
                topt.step()

        times = {"pybn": [], "torch": []}
        for fn in (pybn_epoch, torch_epoch):  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in (("pybn", pybn_epoch), ("torch", torch_epoch)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        results[(layers, width, batch)] = {k: (float(np.median(v)), min(v)) for k, v in times.items()}
    return results
