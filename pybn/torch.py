"""pybn inside PyTorch (the optional `pybn[torch]` extra): batch norm,
softmax, log-softmax and cross-entropy on pybn's kernels, as custom
operators registered with torch.library (autograd, torch.compile and
torch.library.opcheck work; second derivatives too, through PyTorch's ops
when a backward builds a graph), and drop-in modules.

    model = torchvision.models.resnet18()
    pybn.torch.patch(model)          # its BatchNorm layers now run on pybn
    loss_fn = pybn.torch.CrossEntropyLoss()

Zero-copy: contiguous (or channels-last) CPU float32/float64 tensors are
handed to the kernels as NumPy views of their memory, and the kernels'
outputs become tensors without a copy. Anything else (another device, dtype
or layout, a torch.func transform, forward-mode AD or torch.jit.trace,
class weights with label smoothing, targets of more than one dimension per
row) falls back to PyTorch's own op: never an error that PyTorch would not
raise. Modules keep torch.nn's constructors, state_dict keys and
num_batches_tracked, so checkpoints load both ways.
"""
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from . import functional as _pybn

__all__ = ["batch_norm", "softmax", "log_softmax", "cross_entropy", "BatchNorm1d", "BatchNorm2d",
           "BatchNorm3d", "CrossEntropyLoss", "patch", "unpatch"]

_FLOATS = (torch.float32, torch.float64)
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_REDUCTION_NAMES = tuple(_REDUCTIONS)  # by the custom op's int


def _np(t):
    """The NumPy view of a CPU tensor's memory (no copy)."""
    return t.detach().numpy()


def _from(a):
    """A tensor over a NumPy array's memory (no copy)."""
    return torch.from_numpy(a)


# ---- batch norm ----------------------------------------------------------------------


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _channels_last_view(x):
    """(view, axis, restore): a C-contiguous view of x with the channels on
    `axis`, and the permutation that gives a result back x's layout."""
    if x.is_contiguous():
        return x, 1, None
    if x.dim() in _CHANNELS_LAST:
        if x.is_contiguous(memory_format=_CHANNELS_LAST[x.dim()]):
            order = (0, 2, 3, 1) if x.dim() == 4 else (0, 2, 3, 4, 1)
            back = (0, 3, 1, 2) if x.dim() == 4 else (0, 4, 1, 2, 3)
            return x.permute(order), -1, back
    return None, None, None


def _bn_arrays(x, weight, bias):
    view, axis, back = _channels_last_view(x)
    return view, axis, back, (None if weight is None else _np(weight)), (None if bias is None else _np(bias))


def _restore(a, back):
    t = _from(a)
    return t if back is None else t.permute(back)


def _batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """(y, mean, invstd, new running_mean, new running_var) on pybn's kernel."""
    view, axis, back, w, b = _bn_arrays(x, weight, bias)
    rm = _np(running_mean).copy() if running_mean is not None else None
    rv = _np(running_var).copy() if running_var is not None else None
    y, mean, invstd = _pybn.batch_norm_forward(_np(view), w, b, running_mean=rm, running_var=rv,
                                               training=training, momentum=momentum, eps=eps, axis=axis)
    return (_restore(y, back), _from(mean), _from(invstd), x.new_empty(0) if rm is None else _from(rm),
            x.new_empty(0) if rv is None else _from(rv))


def _batch_norm_backward_impl(dy, x, weight, mean, invstd, training):
    view, axis, back, w, _ = _bn_arrays(x, weight, None)
    layout = torch.contiguous_format if back is None else _CHANNELS_LAST[x.dim()]
    dy_view, _, _ = _channels_last_view(dy.contiguous(memory_format=layout))  # dy in x's layout
    dx, dgamma, dbeta = _pybn.batch_norm_backward(_np(dy_view), _np(view), w, _np(mean), _np(invstd),
                                                  training=training, axis=axis)
    return _restore(dx, back), _from(dgamma), _from(dbeta)


@torch.library.custom_op("pybn::batch_norm", mutates_args=(), device_types="cpu")
def _batch_norm_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                   momentum: float, eps: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, invstd, new running_mean, new running_var): functional, as
    torch.library wants for autograd; batch_norm() copies the new running
    statistics (C values each) into the buffers."""
    return _batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps)


@_batch_norm_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps):
    c = x.shape[1]
    return (torch.empty_like(x), x.new_empty(c), x.new_empty(c),
            x.new_empty(0 if running_mean is None else c), x.new_empty(0 if running_var is None else c))


@torch.library.custom_op("pybn::batch_norm_backward", mutates_args=(), device_types="cpu")
def _batch_norm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                            mean: torch.Tensor, invstd: torch.Tensor,
                            training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _batch_norm_backward_impl(dy, x, weight, mean, invstd, training)


@_batch_norm_backward_op.register_fake
def _(dy, x, weight, mean, invstd, training):
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty(c), x.new_empty(c)


def _bn_setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _, eps = inputs
    _, mean, invstd, _, _ = output
    ctx.save_for_backward(x, weight, mean, invstd)
    ctx.training = training
    ctx.eps = eps
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None


def _bn_differentiable_gradients(ctx, dy, x, weight, mean, invstd):
    """(dx, dweight, dbias) in PyTorch's differentiable ops, for a backward
    that builds a graph (create_graph=True: a gradient penalty, a Hessian):
    the kernels' gradients are constants to autograd, so a second derivative
    through them would be missing, silently."""
    shape = [1] * x.dim()
    shape[1] = -1
    dims = [d for d in range(x.dim()) if d != 1]
    with torch.enable_grad():
        if ctx.training:  # the batch statistics are functions of x
            mean = x.mean(dims, keepdim=True)
            invstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + ctx.eps)
        else:
            # the running statistics: constants (the custom op's autograd
            # would otherwise route their gradient back into this backward)
            mean, invstd = mean.detach().view(shape), invstd.detach().view(shape)
        y = (x - mean) * invstd
        if weight is not None:
            y = y * weight.view(shape)
        wanted = [t for t in (x, weight) if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(y, wanted, dy, create_graph=True) if wanted else ())
    dx = next(grads) if x.requires_grad else None
    dweight = next(grads) if weight is not None and weight.requires_grad else None
    return dx, dweight, dy.sum(dims)


def _bn_gradients(ctx, dy, backward):
    x, weight, mean, invstd = ctx.saved_tensors
    if torch.is_grad_enabled():
        dx, dweight, dbias = _bn_differentiable_gradients(ctx, dy, x, weight, mean, invstd)
    else:
        dx, dweight, dbias = backward(dy, x, weight, mean, invstd, ctx.training)
    # a gradient for each of weight and bias that was given (either may be None)
    return dx, dweight if ctx.has_weight else None, dbias if ctx.has_bias else None, None, None, None, None, None


def _bn_backward(ctx, dy, _dmean, _dinvstd, _drm, _drv):
    return _bn_gradients(ctx, dy, _batch_norm_backward_op)


_batch_norm_op.register_autograd(_bn_backward, setup_context=_bn_setup)


class _BatchNormFunction(torch.autograd.Function):
    """The same forward and backward for eager mode: torch.library's
    dispatch costs about 0.1-0.2 ms a call in Python, as much as the kernel
    at CNN sizes; torch.compile traces the custom op instead."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        out = _batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps)
        _bn_setup(ctx, (x, weight, bias, running_mean, running_var, training, momentum, eps), out)
        ctx.mark_non_differentiable(*out[1:])
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    def backward(ctx, dy, *_):
        if dy is None:  # y did not reach the loss
            return (None,) * 8
        return _bn_gradients(ctx, dy, _batch_norm_backward_impl)


def _eager():
    return not torch.compiler.is_compiling()


def _transformed(*tensors):
    """Whether a torch.func transform (vmap, grad, jvp, ...), forward-mode
    AD or torch.jit.trace runs over this call: pybn's ops have no batching
    or forward-mode rules (PyTorch's have), and a trace of a Python
    autograd.Function cannot be saved, so such calls take PyTorch's op.
    Asked in eager mode only: torch.compile runs the custom ops."""
    if not _eager():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None or torch.jit.is_tracing():
        return True
    return any(t is not None and fwAD.unpack_dual(t).tangent is not None for t in tensors)


def _bn_supported(x, weight, bias, running_mean, running_var):
    if (x.device.type != "cpu" or x.dtype not in _FLOATS or x.layout != torch.strided or x.dim() < 2
            or _transformed(x, weight, bias)):
        return False
    if _channels_last_view(x)[0] is None:
        return False
    for t in (weight, bias, running_mean, running_var):
        if t is not None and (t.device.type != "cpu" or t.dtype != x.dtype or not t.is_contiguous()
                              or t.dim() != 1 or t.shape[0] != x.shape[1]):
            return False
    return True


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """torch.nn.functional.batch_norm on pybn's kernels (same arguments and
    semantics, running statistics updated in place); PyTorch's own op for
    what pybn does not cover."""
    if not _bn_supported(x, weight, bias, running_mean, running_var) or (
            (running_mean is None) != (running_var is None)) or (
            not training and (running_mean is None or running_var is None)) or (
            training and x.numel() // x.shape[1] < 2) or x.numel() == 0:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    op = _BatchNormFunction.apply if _eager() else _batch_norm_op
    y, _, _, new_mean, new_var = op(x, weight, bias, running_mean, running_var, training, float(momentum),
                                    float(eps))
    if training:
        with torch.no_grad():
            if running_mean is not None:
                running_mean.copy_(new_mean)
            if running_var is not None:
                running_var.copy_(new_var)
    return y


# ---- softmax family ------------------------------------------------------------------


# The softmax family's backward in PyTorch's ops, differentiable through
# the saved output (which autograd links to the forward): for create_graph.
_softmax_family_differentiable_gradient = {
    "softmax": lambda grad, out, dim: out * (grad - (grad * out).sum(dim, keepdim=True)),
    "log_softmax": lambda grad, out, dim: grad - out.exp() * grad.sum(dim, keepdim=True),
}


def _softmax_family(name):
    """The custom op pybn::NAME (softmax or log_softmax) and its backward."""
    def forward_on_kernel(z, dim):
        return _from(getattr(_pybn, name)(_np(z), axis=dim))

    def backward_on_kernel(grad, out, dim):
        return _from(getattr(_pybn, f"{name}_backward")(_np(grad.contiguous()), _np(out), axis=dim))

    @torch.library.custom_op(f"pybn::{name}", mutates_args=(), device_types="cpu")
    def op(z: torch.Tensor, dim: int) -> torch.Tensor:
        return forward_on_kernel(z, dim)

    @op.register_fake
    def _(z, dim):
        return torch.empty_like(z, memory_format=torch.contiguous_format)

    @torch.library.custom_op(f"pybn::{name}_backward", mutates_args=(), device_types="cpu")
    def op_backward(grad: torch.Tensor, out: torch.Tensor, dim: int) -> torch.Tensor:
        return backward_on_kernel(grad, out, dim)

    @op_backward.register_fake
    def _(grad, out, dim):
        return torch.empty_like(out, memory_format=torch.contiguous_format)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.dim = inputs[1]

    def gradient(ctx, grad, on_kernel):
        (out,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # building a graph: see _bn_differentiable_gradients
            return _softmax_family_differentiable_gradient[name](grad, out, ctx.dim), None
        return on_kernel(grad, out, ctx.dim), None

    def backward(ctx, grad):
        return gradient(ctx, grad, op_backward)

    op.register_autograd(backward, setup_context=setup)

    class Eager(torch.autograd.Function):
        """The same op for eager mode, without torch.library's dispatch cost."""

        @staticmethod
        def forward(ctx, z, dim):
            out = forward_on_kernel(z, dim)
            setup(ctx, (z, dim), out)
            return out

        @staticmethod
        def backward(ctx, grad):
            return gradient(ctx, grad, backward_on_kernel)

    return op, Eager.apply


_softmax_op, _softmax_eager = _softmax_family("softmax")
_log_softmax_op, _log_softmax_eager = _softmax_family("log_softmax")


def _softmax_supported(z, dim, dtype):
    # a dim out of range goes to PyTorch, which raises its IndexError
    return (dtype is None and z.device.type == "cpu" and z.dtype in _FLOATS and z.layout == torch.strided
            and z.is_contiguous() and z.dim() >= 1 and isinstance(dim, int) and -z.dim() <= dim < z.dim()
            and not _transformed(z))


def softmax(z, dim, dtype=None):
    """torch.softmax on pybn's kernels (PyTorch's op otherwise)."""
    if not _softmax_supported(z, dim, dtype):
        return torch.softmax(z, dim, dtype=dtype)
    return (_softmax_eager if _eager() else _softmax_op)(z, dim % z.dim())


def log_softmax(z, dim, dtype=None):
    """torch.log_softmax on pybn's kernels (PyTorch's op otherwise)."""
    if not _softmax_supported(z, dim, dtype):
        return torch.log_softmax(z, dim, dtype=dtype)
    return (_log_softmax_eager if _eager() else _log_softmax_op)(z, dim % z.dim())


# ---- cross-entropy -------------------------------------------------------------------


def _cross_entropy_impl(logits, target, label_smoothing, reduction):
    mode = _REDUCTION_NAMES[reduction]
    loss, dlogits = _pybn.softmax_cross_entropy(_np(logits), _np(target), reduction=mode,
                                                label_smoothing=label_smoothing)
    loss = torch.from_numpy(loss) if mode == "none" else torch.tensor(loss, dtype=logits.dtype)
    return loss, _from(dlogits)


@torch.library.custom_op("pybn::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float,
                      reduction: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, dlogits): one fused pass; dlogits is the gradient of the loss
    (per row for reduction 'none'), kept for backward."""
    return _cross_entropy_impl(logits, target, label_smoothing, reduction)


@_cross_entropy_op.register_fake
def _(logits, target, label_smoothing, reduction):
    loss = logits.new_empty(logits.shape[0]) if reduction == 0 else logits.new_empty(())
    return loss, torch.empty_like(logits)


def _ce_setup(ctx, inputs, output):
    logits, target, label_smoothing, reduction = inputs
    # logits and target only for a backward that builds a graph (references,
    # no copies: the loss of a batch keeps its logits alive until backward)
    ctx.save_for_backward(output[1], logits, target)
    ctx.label_smoothing = label_smoothing
    ctx.reduction = reduction


def _ce_backward(ctx, grad_loss, _grad_dlogits):
    dlogits, logits, target = ctx.saved_tensors
    if torch.is_grad_enabled():  # building a graph: see _bn_differentiable_gradients
        with torch.enable_grad():
            loss = F.cross_entropy(logits, target, label_smoothing=ctx.label_smoothing,
                                   reduction=_REDUCTION_NAMES[ctx.reduction])
            (grad,) = torch.autograd.grad(loss, logits, grad_loss, create_graph=True)
        return grad, None, None, None
    grad = grad_loss.unsqueeze(1) * dlogits if ctx.reduction == 0 else grad_loss * dlogits
    return grad, None, None, None


_cross_entropy_op.register_autograd(_ce_backward, setup_context=_ce_setup)


class _CrossEntropyFunction(torch.autograd.Function):
    """The fused op for eager mode (see _BatchNormFunction)."""

    @staticmethod
    def forward(ctx, logits, target, label_smoothing, reduction):
        out = _cross_entropy_impl(logits, target, label_smoothing, reduction)
        _ce_setup(ctx, (logits, target, label_smoothing, reduction), out)
        ctx.mark_non_differentiable(out[1])
        return out

    @staticmethod
    def backward(ctx, grad_loss, _grad_dlogits):
        return _ce_backward(ctx, grad_loss, None)


def _ce(*args):
    return (_CrossEntropyFunction.apply if _eager() else _cross_entropy_op)(*args)[0]


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy on pybn's fused kernel: class
    indices or probabilities, label smoothing, class weights, ignore_index
    and the three reductions; PyTorch's op for what pybn does not cover."""
    labels = target.dtype in (torch.int64, torch.uint8)  # PyTorch refuses other integer targets
    supported = (input.device.type == "cpu" and input.dtype in _FLOATS and input.dim() == 2
                 and input.is_contiguous() and input.layout == torch.strided and reduction in _REDUCTIONS
                 and target.device.type == "cpu" and (
                     (labels and target.dim() == 1 and target.shape[0] == input.shape[0]) or
                     # probabilities: PyTorch differentiates them too, and
                     # raises for an ignore_index
                     (not labels and target.dtype == input.dtype and target.shape == input.shape
                      and weight is None and not target.requires_grad and ignore_index == -100)))
    supported = supported and 0.0 <= label_smoothing <= 1.0  # else PyTorch raises its own error
    supported = supported and not _transformed(input, target, weight)
    if supported and weight is not None:
        supported = (label_smoothing == 0.0 and weight.dtype == input.dtype and weight.device.type == "cpu"
                     and weight.shape == (input.shape[1],))
    if not supported or input.shape[0] == 0:
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
    if not labels:
        return _ce(input, target.contiguous(), float(label_smoothing), _REDUCTIONS[reduction])
    target = target.to(torch.int64).contiguous()
    ignored = target == ignore_index
    # eager: one fused call when nothing is ignored; traced code takes the
    # general path below, which has no data-dependent branch
    if weight is None and _eager() and not bool(ignored.any()):
        return _ce(input, target, float(label_smoothing), _REDUCTIONS[reduction])
    # per-row losses, then PyTorch's weighting: ignored rows count 0, and
    # "mean" divides by the total weight of the rows that count
    rows = _ce(input, torch.where(ignored, 0, target), float(label_smoothing), 0)
    row_weight = (~ignored).to(input.dtype)
    if weight is not None:
        row_weight = row_weight * weight[torch.where(ignored, 0, target)]
    losses = rows * row_weight
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / row_weight.sum()


# ---- modules ---------------------------------------------------------------------------


class _PybnBatchNorm:
    """forward of torch.nn's _BatchNorm, with the normalization on pybn."""

    def forward(self, input):
        self._check_input_dim(input)
        # as torch.nn.modules.batchnorm._BatchNorm.forward
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
            else:
                exponential_average_factor = self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if use_running else None,
                          self.running_var if use_running else None, self.weight, self.bias, bn_training,
                          exponential_average_factor, self.eps)


class BatchNorm1d(_PybnBatchNorm, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on pybn's kernels."""


class BatchNorm2d(_PybnBatchNorm, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on pybn's kernels."""


class BatchNorm3d(_PybnBatchNorm, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on pybn's kernels."""


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss on pybn's fused kernel."""

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


_SWAPS = {torch.nn.BatchNorm1d: BatchNorm1d, torch.nn.BatchNorm2d: BatchNorm2d,
          torch.nn.BatchNorm3d: BatchNorm3d}


def patch(model):
    """Make every torch.nn.BatchNorm1d/2d/3d of `model` (itself included)
    run on pybn, in place: the same module objects, parameters, buffers and
    optimizer references; only their class changes. Returns the model."""
    for module in model.modules():
        if type(module) in _SWAPS:
            module.__class__ = _SWAPS[type(module)]
    return model


def unpatch(model):
    """Undo patch(): the batch-norm layers run on PyTorch's kernels again."""
    back = {pybn_cls: torch_cls for torch_cls, pybn_cls in _SWAPS.items()}
    for module in model.modules():
        if type(module) in back:
            module.__class__ = back[type(module)]
    return model
