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
