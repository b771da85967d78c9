"""Optimizers and learning-rate schedules, with PyTorch's calling pattern:
construct with the parameters, call step() after each backward pass.

SGD keeps PyTorch's momentum form v = momentum*v + g; the course's EWMA
form v = beta*v + (1-beta)*g is the same update with lr scaled by (1-beta).
`weight_decay` adds the L2 penalty's gradient weight_decay*w to every
parameter's gradient (gamma and beta included).

A step updates each parameter in one fused pass of a C kernel (the same
arithmetic, in the parameter's precision, as the NumPy formulas below,
which still serve any array the kernel does not take).
"""
import math
import numbers

import numpy as np

from . import _kernels

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "InverseTimeDecay", "ExponentialDecay",
           "StepDecay"]


def _number(value, name, low, high, low_open=False, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a number in {interval}, got {value}")
    return value


class Optimizer:
    """Holds the parameters, the learning rate and per-parameter state."""

    state_names = ()  # per-parameter arrays, saved with state_dict()

    def __init__(self, params, lr, weight_decay=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("params: expected at least one parameter")
        self.lr = _number(lr, "lr", 0.0, math.inf, low_open=True, high_open=True)
        self.weight_decay = _number(weight_decay, "weight_decay", 0.0, math.inf, high_open=True)
        self.state = {name: [np.zeros_like(p.data) for p in self.params] for name in self.state_names}
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        self.t += 1
        for i, p in enumerate(self.params):
            if self._fused(i, p) is None:
                grad = p.grad if not self.weight_decay else p.grad + self.weight_decay * p.data
                self._update(i, p.data, grad)

    def _fused(self, i, p):
        """The kernel's step for parameter i (True), or None: take _update."""
        return None

    def _update(self, i, w, grad):
        raise NotImplementedError

    def state_dict(self):
        state = {"lr": np.array(self.lr), "t": np.array(self.t)}
        for name, arrays in self.state.items():
            state.update({f"{name}.{i}": a.copy() for i, a in enumerate(arrays)})
        return state

    def load_state_dict(self, state):
        expected = {"lr", "t"} | {f"{name}.{i}" for name, arrays in self.state.items()
                                  for i in range(len(arrays))}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"state: missing keys {missing} (saved by another optimizer, "
                             f"or for other parameters?)")
        self.lr = float(state["lr"])
        self.t = int(state["t"])
        for name, arrays in self.state.items():
            for i, a in enumerate(arrays):
                a[...] = state[f"{name}.{i}"]


class SGD(Optimizer):
    """w -= lr * v, v = momentum * v + grad (plain SGD for momentum=0)."""

    state_names = ("velocity",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0, high_open=True)

    def _fused(self, i, p):
        v = self.state["velocity"][i] if self.momentum else None
        return _kernels.optimizer_step(0, p.data, p.grad, v, None, self.lr, self.momentum, 0.0, 0.0, 1.0,
                                       1.0, self.weight_decay)

    def _update(self, i, w, grad):
        if self.momentum:
            v = self.state["velocity"][i]
            v *= self.momentum
            v += grad
            grad = v
        w -= self.lr * grad


class RMSprop(Optimizer):
    """s = beta*s + (1-beta)*grad^2; w -= lr * grad / (sqrt(s) + eps)."""

    state_names = ("square_avg",)

    def __init__(self, params, lr, beta=0.9, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.beta = _number(beta, "beta", 0.0, 1.0, high_open=True)
        self.eps = _number(eps, "eps", 0.0, math.inf, low_open=True, high_open=True)

    def _fused(self, i, p):
        return _kernels.optimizer_step(1, p.data, p.grad, self.state["square_avg"][i], None, self.lr,
                                       self.beta, 0.0, self.eps, 1.0, 1.0, self.weight_decay)

    def _update(self, i, w, grad):
        s = self.state["square_avg"][i]
        s *= self.beta
        s += (1.0 - self.beta) * grad * grad
        w -= self.lr * grad / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Momentum and RMSprop together, with bias correction:
    w -= lr * m_hat / (sqrt(v_hat) + eps)."""

    state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.beta1 = _number(beta1, "beta1", 0.0, 1.0, high_open=True)
        self.beta2 = _number(beta2, "beta2", 0.0, 1.0, high_open=True)
        self.eps = _number(eps, "eps", 0.0, math.inf, low_open=True, high_open=True)

    def _fused(self, i, p):
        return _kernels.optimizer_step(2, p.data, p.grad, self.state["m"][i], self.state["v"][i], self.lr,
                                       self.beta1, self.beta2, self.eps, 1.0 - self.beta1 ** self.t,
                                       1.0 - self.beta2 ** self.t, self.weight_decay)

    def _update(self, i, w, grad):
        m, v = self.state["m"][i], self.state["v"][i]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * grad * grad
        m_hat = m / (1.0 - self.beta1 ** self.t)
        v_hat = v / (1.0 - self.beta2 ** self.t)
        w -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class _Schedule:
    """Sets optimizer.lr = lr_at(epoch) from the initial lr; call step()
    once per epoch (as torch.optim.lr_scheduler)."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a pybn.optim optimizer, got {type(optimizer).__name__} "
                            f"(schedules take the optimizer first, as torch.optim.lr_scheduler: "
                            f"{type(self).__name__}(optimizer, ...), the initial lr being optimizer.lr)")
        self.optimizer = optimizer
        self.initial_lr = optimizer.lr
        self.epoch = 0

    def step(self):
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def lr_at(self, epoch):
        raise NotImplementedError


class InverseTimeDecay(_Schedule):
    """lr = lr0 / (1 + decay_rate * epoch)."""

    def __init__(self, optimizer, decay_rate):
        super().__init__(optimizer)
        self.decay_rate = _number(decay_rate, "decay_rate", 0.0, math.inf, high_open=True)

    def lr_at(self, epoch):
        return self.initial_lr / (1.0 + self.decay_rate * epoch)


class ExponentialDecay(_Schedule):
    """lr = lr0 * gamma**epoch (the course's 0.95**epoch * lr0)."""

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = _number(gamma, "gamma", 0.0, 1.0, low_open=True)

    def lr_at(self, epoch):
        return self.initial_lr * self.gamma ** epoch


class StepDecay(_Schedule):
    """lr = lr0 * gamma**(epoch // step_size): a discrete staircase."""

    def __init__(self, optimizer, step_size, gamma=0.5):
        super().__init__(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size < 1:
            raise ValueError(f"step_size: expected an int >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _number(gamma, "gamma", 0.0, 1.0, low_open=True)

    def lr_at(self, epoch):
        return self.initial_lr * self.gamma ** (epoch // self.step_size)
