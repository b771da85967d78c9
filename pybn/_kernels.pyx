# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The one compiled entry point of each kernel family.

Design (docs/design.md, "The binding"): the only Cython file. Each entry
point takes the public function's arguments and runs the kernel when they
are the plain case: exact ndarrays that are C-contiguous, aligned,
native-endian float32/float64 of matching shapes, out= absent or such an
array apart from the inputs, flags of exact type. It returns None for
anything else: functional.py then converts the arguments to the plain case
(naming any that cannot be) and calls the same entry point again. Sizes
come from the arrays themselves, so no call can read or write out of
bounds. The domain of each scalar (eps, momentum, label_smoothing, labels,
values per channel) is checked once, by the C kernel, whose status is
mapped here to a ValueError naming the argument. The GIL is released around
every kernel call and the thread count is read here, at C speed. Arrays are
passed as raw pointers rather than typed memoryviews: a fused-type
memoryview call costs microseconds, which dominates small problems.
"""
from libc.stdint cimport int64_t

cimport numpy as cnp

cnp.import_array()


class LabelError(ValueError, IndexError):
    """A class label outside [0, classes): a ValueError as pybn's other bad
    arguments, and an IndexError as PyTorch raises for one (so code written
    for torch.nn.functional.cross_entropy catches it from pybn.torch too)."""


cdef extern from "pybn.h" nogil:
    ctypedef enum pybn_status:
        PYBN_OK
        PYBN_EINVAL
        PYBN_ENOMEM
        PYBN_EEPS
        PYBN_EMOMENTUM
        PYBN_EBATCH
        PYBN_ESMOOTHING
        PYBN_ELABEL

    pybn_status pybn_batchnorm_forward_train_f32(
        int64_t, int64_t, int64_t, const float *, const float *, const float *,
        double, double, float *, float *, float *, float *, float *, int)
    pybn_status pybn_batchnorm_forward_train_f64(
        int64_t, int64_t, int64_t, const double *, const double *, const double *,
        double, double, double *, double *, double *, double *, double *, int)
    pybn_status pybn_batchnorm_forward_eval_f32(
        int64_t, int64_t, int64_t, const float *, const float *, const float *,
        const float *, const float *, double, float *, float *, float *, int)
    pybn_status pybn_batchnorm_forward_eval_f64(
        int64_t, int64_t, int64_t, const double *, const double *, const double *,
        const double *, const double *, double, double *, double *, double *, int)
    pybn_status pybn_batchnorm_backward_f32(
        int64_t, int64_t, int64_t, const float *, const float *, const float *,
        const float *, const float *, int, float *, float *, float *, int)
    pybn_status pybn_batchnorm_backward_f64(
        int64_t, int64_t, int64_t, const double *, const double *, const double *,
        const double *, const double *, int, double *, double *, double *, int)

    pybn_status pybn_softmax_f32(int64_t, int64_t, int64_t, const float *, float *, int)
    pybn_status pybn_softmax_f64(int64_t, int64_t, int64_t, const double *, double *, int)
    pybn_status pybn_log_softmax_f32(int64_t, int64_t, int64_t, const float *, float *, int)
    pybn_status pybn_log_softmax_f64(int64_t, int64_t, int64_t, const double *, double *, int)
    pybn_status pybn_softmax_backward_f32(
        int64_t, int64_t, int64_t, const float *, const float *, float *, int)
    pybn_status pybn_softmax_backward_f64(
        int64_t, int64_t, int64_t, const double *, const double *, double *, int)
    pybn_status pybn_log_softmax_backward_f32(
        int64_t, int64_t, int64_t, const float *, const float *, float *, int)
    pybn_status pybn_log_softmax_backward_f64(
        int64_t, int64_t, int64_t, const double *, const double *, double *, int)
    pybn_status pybn_softmax_cross_entropy_labels_f32(
        int64_t, int64_t, const float *, const int64_t *, double, double,
        double *, float *, int64_t *, int)
    pybn_status pybn_softmax_cross_entropy_labels_f64(
        int64_t, int64_t, const double *, const int64_t *, double, double,
        double *, double *, int64_t *, int)
    pybn_status pybn_softmax_cross_entropy_probs_f32(
        int64_t, int64_t, const float *, const float *, double, double,
        double *, float *, int)
    pybn_status pybn_softmax_cross_entropy_probs_f64(
        int64_t, int64_t, const double *, const double *, double, double,
        double *, double *, int)

    pybn_status pybn_optimizer_step_f32(int, int64_t, float *, const float *, float *, float *,
        double, double, double, double, double, double, double, int)
    pybn_status pybn_optimizer_step_f64(int, int64_t, double *, const double *, double *, double *,
        double, double, double, double, double, double, double, int)

    const char *pybn_simd_level()
    int pybn_openmp_max_threads()
    int pybn_openmp_version()
    const char *pybn_build_flags()
    const char *pybn_compiler()
    double pybn_cache_bytes()
    int pybn_stream_buffered()
    int pybn_short_planes_by_channel()


cpdef enum SoftmaxOp:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    SOFTMAX_BACKWARD = 2
    LOG_SOFTMAX_BACKWARD = 3


_TYPENUM = (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)


# ---- threads --------------------------------------------------------------------

cdef int _requested_threads = 0  # 0: OpenMP's default on the calling thread
cdef int _max_threads = 1        # the upper bound, set by pybn._threads at import
cdef bint _teams_started = False  # a call may have started an OpenMP team
cdef bint _forked_child = False   # a fork after that: one thread, for good


cdef inline int _threads() noexcept:
    """The team size of the next kernel call."""
    global _teams_started
    if _forked_child:
        return 1
    cdef int n = _requested_threads if _requested_threads > 0 else pybn_openmp_max_threads()
    if n > _max_threads:
        n = _max_threads
    if n > 1:
        _teams_started = True
        return n
    return 1


def set_thread_bound(int n):
    """At most n threads in any call, whatever is requested or OpenMP's default."""
    global _max_threads
    _max_threads = n if n > 1 else 1


def request_threads(int n):
    """Every kernel call uses n >= 1 threads (up to the bound); n = 0: OpenMP's default."""
    global _requested_threads
    _requested_threads = n


def requested_threads():
    """The n of the last request_threads(n)."""
    return _requested_threads


def num_threads():
    """The number of threads the next kernel call will use at most."""
    if _forked_child:
        return 1
    cdef int n = _requested_threads if _requested_threads > 0 else pybn_openmp_max_threads()
    return max(1, min(n, _max_threads))


def after_fork_in_child():
    """Registered with os.register_at_fork: GNU OpenMP's thread pool does not
    survive fork, and a child that starts a team after its parent did hangs.
    Such a child runs every kernel on its calling thread, which enters no
    OpenMP region at all."""
    global _forked_child
    if _teams_started:
        _forked_child = True


def forked_single_threaded():
    """Whether this process is a fork whose kernels run on one thread."""
    return bool(_forked_child)


# ---- status ---------------------------------------------------------------------

cdef int _check(pybn_status st, str op, object x, object eps=None, object momentum=None,
                object smoothing=None) except -1:
    """Raise for a status other than PYBN_OK, naming the argument."""
    if st == PYBN_OK:
        return 0
    if st == PYBN_ENOMEM:
        raise MemoryError(f"{op}: the kernel could not allocate its scratch memory")
    if st == PYBN_EEPS:
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
    if st == PYBN_EMOMENTUM:
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
    if st == PYBN_EBATCH:
        raise ValueError(f"x: expected more than 1 value per channel when training, "
                         f"got input of shape {x.shape}")
    if st == PYBN_ESMOOTHING:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {smoothing!r}")
    raise ValueError(f"{op}: the sizes of the array of shape {x.shape} are out of range")


# ---- what the plain case is -----------------------------------------------------


cdef int _plain_type(object a) noexcept:
    """The type number of an exact ndarray (no subclass: a masked array's
    mask would be ignored) that is native-endian, aligned and C-contiguous,
    else -1."""
    if not cnp.PyArray_CheckExact(a):
        return -1
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)
            or not cnp.PyArray_ISALIGNED(arr)):
        return -1
    return cnp.PyArray_TYPE(arr)


cdef int _plain_kind(object a) noexcept:
    """0/1 for a plain (see _plain_type) float32/float64 ndarray, else -1."""
    cdef int t = _plain_type(a)
    return 0 if t == cnp.NPY_FLOAT32 else (1 if t == cnp.NPY_FLOAT64 else -1)


cdef bint _plain_vector(object a, int kind, cnp.npy_intp n, bint writeable) noexcept:
    """`a` is a plain 1-D array of n elements of the call's dtype."""
    if _plain_kind(a) != kind:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == 1 and cnp.PyArray_DIMS(arr)[0] == n
            and (not writeable or cnp.PyArray_ISWRITEABLE(arr)))


cdef bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    cdef int i
    for i in range(nd):
        if cnp.PyArray_DIMS(a)[i] != cnp.PyArray_DIMS(b)[i]:
            return False
    return True


cdef int _split(cnp.ndarray x, object axis, int64_t *outer, int64_t *dim,
                int64_t *inner) except -2:
    """(outer, dim, inner) of x around an int axis in range (1); 0 when
    `axis` is anything else."""
    if type(axis) is not int:
        return 0
    cdef int nd = cnp.PyArray_NDIM(x)
    if not -nd <= axis < nd:
        return 0
    cdef int ax = <int>axis
    if ax < 0:
        ax += nd
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(x)
    cdef int i
    outer[0] = 1
    inner[0] = 1
    for i in range(ax):
        outer[0] *= dims[i]
    for i in range(ax + 1, nd):
        inner[0] *= dims[i]
    dim[0] = dims[ax]
    return 1


cdef inline bint _is_real(object v) noexcept:
    """A Python float (or a subclass such as np.float64): read as a C double."""
    return type(v) is float or (isinstance(v, float) and type(v) is not bool)


cdef object _empty_like(cnp.ndarray a):
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)


cdef object _empty_vector(cnp.npy_intp n, int kind):
    return cnp.PyArray_EMPTY(1, &n, _TYPENUM[kind], 0)


cdef bint _overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether two C-contiguous arrays' bytes intersect."""
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cdef bint _overlaps_any(object a, tuple others) noexcept:
    for b in others:
        if b is not None and _overlap(<cnp.ndarray>a, <cnp.ndarray>b):
            return True
    return False


cdef object _output_for(object out, cnp.ndarray like, tuple inputs):
    """A fresh array like `like` for out=None; `out` itself when it is a
    plain writeable array of like's dtype and shape that overlaps no input;
    None otherwise (functional.py then writes through a fresh array)."""
    if out is None:
        return _empty_like(like)
    if _plain_kind(out) != _plain_kind(like) or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        return None
    if not _same_shape(<cnp.ndarray>out, like) or _overlaps_any(out, inputs):
        return None
    return out


cdef void *_ptr(object a) noexcept:
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef double _sum(const double *p, int64_t n) noexcept nogil:
    cdef double s = 0.0
    cdef int64_t i
    for i in range(n):
        s += p[i]
    return s


# ---- the float32/float64 switch, once per kernel ---------------------------------
# kind 0 is float32, 1 is float64; the entry points below checked the pointers.

cdef pybn_status _bn_train(int kind, int64_t outer, int64_t channels, int64_t inner, void *px,
                           void *pg, void *pb, double momentum, double eps, void *prm, void *prv,
                           void *py, void *pm, void *pi, int n_threads) noexcept nogil:
    if kind == 0:
        return pybn_batchnorm_forward_train_f32(
            outer, channels, inner, <float *>px, <float *>pg, <float *>pb, momentum, eps,
            <float *>prm, <float *>prv, <float *>py, <float *>pm, <float *>pi, n_threads)
    return pybn_batchnorm_forward_train_f64(
        outer, channels, inner, <double *>px, <double *>pg, <double *>pb, momentum, eps,
        <double *>prm, <double *>prv, <double *>py, <double *>pm, <double *>pi, n_threads)


cdef pybn_status _bn_eval(int kind, int64_t outer, int64_t channels, int64_t inner, void *px,
                          void *pg, void *pb, void *prm, void *prv, double eps, void *py, void *pm,
                          void *pi, int n_threads) noexcept nogil:
    if kind == 0:
        return pybn_batchnorm_forward_eval_f32(
            outer, channels, inner, <float *>px, <float *>pg, <float *>pb, <float *>prm,
            <float *>prv, eps, <float *>py, <float *>pm, <float *>pi, n_threads)
    return pybn_batchnorm_forward_eval_f64(
        outer, channels, inner, <double *>px, <double *>pg, <double *>pb, <double *>prm,
        <double *>prv, eps, <double *>py, <double *>pm, <double *>pi, n_threads)


cdef pybn_status _bn_backward(int kind, int64_t outer, int64_t channels, int64_t inner, void *pdy,
                              void *px, void *pg, void *pm, void *pi, bint training, void *pdx,
                              void *pdg, void *pdb, int n_threads) noexcept nogil:
    if kind == 0:
        return pybn_batchnorm_backward_f32(
            outer, channels, inner, <float *>pdy, <float *>px, <float *>pg, <float *>pm,
            <float *>pi, training, <float *>pdx, <float *>pdg, <float *>pdb, n_threads)
    return pybn_batchnorm_backward_f64(
        outer, channels, inner, <double *>pdy, <double *>px, <double *>pg, <double *>pm,
        <double *>pi, training, <double *>pdx, <double *>pdg, <double *>pdb, n_threads)


cdef pybn_status _softmax(int kind, int op, int64_t outer, int64_t dim, int64_t inner, void *pa,
                          void *pb, void *po, int n_threads) noexcept nogil:
    if kind == 0:
        if op == SOFTMAX:
            return pybn_softmax_f32(outer, dim, inner, <float *>pa, <float *>po, n_threads)
        if op == LOG_SOFTMAX:
            return pybn_log_softmax_f32(outer, dim, inner, <float *>pa, <float *>po, n_threads)
        if op == SOFTMAX_BACKWARD:
            return pybn_softmax_backward_f32(outer, dim, inner, <float *>pa, <float *>pb,
                                             <float *>po, n_threads)
        if op == LOG_SOFTMAX_BACKWARD:
            return pybn_log_softmax_backward_f32(outer, dim, inner, <float *>pa, <float *>pb,
                                                 <float *>po, n_threads)
        return PYBN_EINVAL
    if op == SOFTMAX:
        return pybn_softmax_f64(outer, dim, inner, <double *>pa, <double *>po, n_threads)
    if op == LOG_SOFTMAX:
        return pybn_log_softmax_f64(outer, dim, inner, <double *>pa, <double *>po, n_threads)
    if op == SOFTMAX_BACKWARD:
        return pybn_softmax_backward_f64(outer, dim, inner, <double *>pa, <double *>pb,
                                         <double *>po, n_threads)
    if op == LOG_SOFTMAX_BACKWARD:
        return pybn_log_softmax_backward_f64(outer, dim, inner, <double *>pa, <double *>pb,
                                             <double *>po, n_threads)
    return PYBN_EINVAL


cdef pybn_status _ce_labels(int kind, int64_t rows, int64_t classes, void *pz, int64_t *pl,
                            double smoothing, double grad_scale, double *ploss, void *pdz,
                            int64_t *bad_row, int n_threads) noexcept nogil:
    if kind == 0:
        return pybn_softmax_cross_entropy_labels_f32(rows, classes, <float *>pz, pl, smoothing,
                                                     grad_scale, ploss, <float *>pdz, bad_row,
                                                     n_threads)
    return pybn_softmax_cross_entropy_labels_f64(rows, classes, <double *>pz, pl, smoothing,
                                                 grad_scale, ploss, <double *>pdz, bad_row,
                                                 n_threads)


cdef pybn_status _ce_probs(int kind, int64_t rows, int64_t classes, void *pz, void *pt,
                           double smoothing, double grad_scale, double *ploss, void *pdz,
                           int n_threads) noexcept nogil:
    if kind == 0:
        return pybn_softmax_cross_entropy_probs_f32(rows, classes, <float *>pz, <float *>pt,
                                                    smoothing, grad_scale, ploss, <float *>pdz,
                                                    n_threads)
    return pybn_softmax_cross_entropy_probs_f64(rows, classes, <double *>pz, <double *>pt,
                                                smoothing, grad_scale, ploss, <double *>pdz,
                                                n_threads)



# ---- entry points ---------------------------------------------------------------
# Each returns None when its arguments are not the plain case (see the
# module docstring); functional.py's function of the same name documents it.


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                       axis, out):
    """(y, mean, invstd), or None. y is `out` when that is a plain array
    apart from the inputs. When training, the running statistics must be
    writeable and overlap neither the inputs nor each other."""
    cdef int kind = _plain_kind(x)
    if kind < 0 or type(training) is not bool or not _is_real(eps) or not _is_real(momentum):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int64_t outer, channels, inner
    if cnp.PyArray_NDIM(xa) < 2 or not _split(xa, axis, &outer, &channels, &inner):
        return None
    if channels == 0 or outer * inner == 0:
        return None
    cdef bint train = training
    if not train and (running_mean is None or running_var is None):
        return None
    for v in (gamma, beta):
        if v is not None and not _plain_vector(v, kind, channels, False):
            return None
    for v in (running_mean, running_var):
        if v is not None and not _plain_vector(v, kind, channels, train):
            return None
    if train and running_mean is not None and (
            _overlaps_any(running_mean, (x, gamma, beta, running_var))):
        return None  # updated in place while read: functional.py names the overlap
    if train and running_var is not None and _overlaps_any(running_var, (x, gamma, beta)):
        return None
    y = _output_for(out, xa, (x, gamma, beta, running_mean, running_var))
    if y is None:
        return None
    mean = _empty_vector(channels, kind)
    invstd = _empty_vector(channels, kind)
    cdef void *px = _ptr(x)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef void *prm = _ptr(running_mean)
    cdef void *prv = _ptr(running_var)
    cdef void *py = _ptr(y)
    cdef void *pm = _ptr(mean)
    cdef void *pi = _ptr(invstd)
    cdef double c_eps = eps, c_momentum = momentum
    cdef int nt = _threads()
    cdef pybn_status st
    with nogil:
        if train:
            st = _bn_train(kind, outer, channels, inner, px, pg, pb, c_momentum, c_eps, prm, prv,
                           py, pm, pi, nt)
        else:
            st = _bn_eval(kind, outer, channels, inner, px, pg, pb, prm, prv, c_eps, py, pm, pi, nt)
    _check(st, "batch_norm_forward", x, eps, momentum)
    return y, mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd, training, axis, out):
    """(dx, dgamma, dbeta), or None."""
    cdef int kind = _plain_kind(x)
    if kind < 0 or type(training) is not bool or _plain_kind(dy) != kind:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int64_t outer, channels, inner
    if cnp.PyArray_NDIM(xa) < 2 or not _same_shape(xa, <cnp.ndarray>dy):
        return None
    if not _split(xa, axis, &outer, &channels, &inner) or channels == 0 or outer * inner == 0:
        return None
    if gamma is not None and not _plain_vector(gamma, kind, channels, False):
        return None
    if not (_plain_vector(mean, kind, channels, False) and _plain_vector(invstd, kind, channels, False)):
        return None
    dx = _output_for(out, xa, (dy, x, gamma, mean, invstd))
    if dx is None:
        return None
    dgamma = _empty_vector(channels, kind)
    dbeta = _empty_vector(channels, kind)
    cdef void *pdy = _ptr(dy)
    cdef void *px = _ptr(x)
    cdef void *pg = _ptr(gamma)
    cdef void *pm = _ptr(mean)
    cdef void *pi = _ptr(invstd)
    cdef void *pdx = _ptr(dx)
    cdef void *pdg = _ptr(dgamma)
    cdef void *pdb = _ptr(dbeta)
    cdef bint train = training
    cdef int nt = _threads()
    cdef pybn_status st
    with nogil:
        st = _bn_backward(kind, outer, channels, inner, pdy, px, pg, pm, pi, train, pdx, pdg, pdb, nt)
    _check(st, "batch_norm_backward", x)
    return dx, dgamma, dbeta


def softmax_family(int op, a, b, axis, out):
    """One of the four softmax ops along `axis` of a (b: None for the
    forward ops, the forward output for the backward ones), or None."""
    cdef int kind = _plain_kind(a)
    if kind < 0 or op < SOFTMAX or op > LOG_SOFTMAX_BACKWARD:
        return None
    cdef cnp.ndarray aa = <cnp.ndarray>a
    if cnp.PyArray_NDIM(aa) < 1:
        return None
    if (b is None) != (op <= LOG_SOFTMAX):
        return None
    if b is not None and (_plain_kind(b) != kind or not _same_shape(aa, <cnp.ndarray>b)):
        return None
    cdef int64_t outer, dim, inner
    if not _split(aa, axis, &outer, &dim, &inner):
        return None
    result = _output_for(out, aa, (a, b))
    if result is None:
        return None
    if cnp.PyArray_SIZE(aa) == 0:
        return result  # an empty axis or batch: nothing to normalize
    cdef void *pa = _ptr(a)
    cdef void *pb = _ptr(b)
    cdef void *po = _ptr(result)
    cdef int nt = _threads()
    cdef pybn_status st
    with nogil:
        st = _softmax(kind, op, outer, dim, inner, pa, pb, po, nt)
    _check(st, "softmax", a)
    return result


def cross_entropy(logits, target, reduction, label_smoothing, out):
    """(loss, dlogits), or None. The loss is the float64 total for "mean"
    and "sum" (divided by the rows for "mean") and the float64 (rows,)
    losses for "none"; dlogits is `out` when that is a plain array apart
    from the inputs. Targets: int64 labels (rows,) or probabilities of
    logits' shape and dtype."""
    cdef int kind = _plain_kind(logits)
    if kind < 0 or not _is_real(label_smoothing) or type(reduction) is not str:
        return None
    cdef int mode = 0 if reduction == "mean" else (1 if reduction == "sum" else (2 if reduction == "none" else -1))
    cdef cnp.ndarray za = <cnp.ndarray>logits
    if mode < 0 or cnp.PyArray_NDIM(za) != 2:
        return None
    cdef int64_t rows = cnp.PyArray_DIMS(za)[0], classes = cnp.PyArray_DIMS(za)[1]
    if rows < 1 or classes < 1 or not cnp.PyArray_CheckExact(target):
        return None
    cdef cnp.ndarray ta = <cnp.ndarray>target
    cdef bint labels = (_plain_type(ta) == cnp.NPY_INT64 and cnp.PyArray_NDIM(ta) == 1
                        and cnp.PyArray_DIMS(ta)[0] == rows)
    if not labels and (_plain_kind(ta) != kind or not _same_shape(za, ta)):
        return None
    dlogits = _output_for(out, za, (logits, target))
    if dlogits is None:
        return None
    loss = _empty_vector(rows, 1)
    cdef double smoothing = label_smoothing
    cdef double grad_scale = 1.0 / <double>rows if mode == 0 else 1.0
    cdef void *pz = _ptr(logits)
    cdef void *pt = _ptr(target)
    cdef double *ploss = <double *>_ptr(loss)
    cdef void *pdz = _ptr(dlogits)
    cdef int64_t bad_row = -1
    cdef int nt = _threads()
    cdef pybn_status st
    cdef double total = 0.0
    with nogil:
        if labels:
            st = _ce_labels(kind, rows, classes, pz, <int64_t *>pt, smoothing, grad_scale, ploss, pdz,
                            &bad_row, nt)
        else:
            st = _ce_probs(kind, rows, classes, pz, pt, smoothing, grad_scale, ploss, pdz, nt)
        if st == PYBN_OK and mode < 2:
            total = _sum(ploss, rows)
    if st == PYBN_ELABEL:
        raise LabelError(f"target: label {(<int64_t *>pt)[bad_row]} at row {bad_row} "
                         f"is outside [0, {classes})")
    _check(st, "softmax_cross_entropy", logits, None, None, label_smoothing)
    if mode == 2:
        return loss, dlogits
    return (total / <double>rows if mode == 0 else total), dlogits


def optimizer_step(int kind, w, g, s1, s2, double lr, double h1, double h2, double eps, double c1,
                   double c2, double wd):
    """One fused optimizer step in place (see pybn.h), or None when the
    arrays are not plain, writeable, alike in dtype and size, and apart."""
    cdef int dtype = _plain_kind(w)
    if dtype < 0 or _plain_kind(g) != dtype or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>w):
        return None
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(<cnp.ndarray>w)
    if cnp.PyArray_SIZE(<cnp.ndarray>g) != n:
        return None
    for state in (s1, s2):
        if state is not None and (_plain_kind(state) != dtype or cnp.PyArray_SIZE(<cnp.ndarray>state) != n
                                  or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>state)):
            return None
    if _overlaps_any(w, (g, s1, s2)) or (s1 is not None and _overlaps_any(s1, (g, s2))) or (
            s2 is not None and _overlaps_any(s2, (g,))):
        return None
    cdef void *pw = _ptr(w)
    cdef void *pg = _ptr(g)
    cdef void *p1 = _ptr(s1)
    cdef void *p2 = _ptr(s2)
    cdef int nt = _threads()
    cdef pybn_status st
    with nogil:
        if dtype == 0:
            st = pybn_optimizer_step_f32(kind, n, <float *>pw, <float *>pg, <float *>p1, <float *>p2, lr, h1,
                                         h2, eps, c1, c2, wd, nt)
        else:
            st = pybn_optimizer_step_f64(kind, n, <double *>pw, <double *>pg, <double *>p1, <double *>p2, lr,
                                         h1, h2, eps, c1, c2, wd, nt)
    if st != PYBN_OK:
        raise ValueError(f"optimizer step: the kernel rejected kind {kind} (status {<int>st})")
    return True


def build_info():
    """What the kernels were compiled with and dispatch to on this CPU."""
    return {
        "simd": pybn_simd_level().decode(),
        "openmp_version": pybn_openmp_version(),
        "openmp_max_threads": pybn_openmp_max_threads(),
        "compiler": pybn_compiler().decode(),
        "cache_bytes": int(pybn_cache_bytes()),
        "stream_buffered": bool(pybn_stream_buffered()),
        "short_planes_by_channel": bool(pybn_short_planes_by_channel()),
        "c_flags": pybn_build_flags().decode().strip(),
    }
