# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin typed entry points into the C kernels of csrc/.

Design: the only Cython file. It dispatches float/double to the _f32/_f64
C function, releases the GIL around every call and maps a C status to a
Python exception. Argument validation lives in pybn/functional.py, which
hands over C-contiguous arrays and their sizes; this layer only checks, at
C speed, that each array really is what the C call will read or write
(type, dtype, contiguity, enough elements, writeable), so that no call can
read or write out of bounds. Arrays are passed as raw pointers rather than
typed memoryviews: a fused-type memoryview call costs microseconds, which
dominates small problems. For the same reason each public function has a
plain-case entry point here (see "fast entry points" below) that
functional.py tries before its general path.
"""
from libc.math cimport INFINITY
from libc.stdint cimport int64_t

cimport numpy as cnp

cnp.import_array()


cdef extern from "pybn.h" nogil:
    ctypedef enum pybn_status:
        PYBN_OK
        PYBN_EINVAL
        PYBN_ENOMEM

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

    const char *pybn_simd_level()
    int pybn_openmp_max_threads()
    int pybn_openmp_version()
    const char *pybn_build_flags()
    const char *pybn_compiler()
    double pybn_cache_bytes()



cdef int _raise(pybn_status status, str op) except -1:
    if status == PYBN_ENOMEM:
        raise MemoryError(f"{op}: the kernel could not allocate its scratch memory")
    if status != PYBN_OK:
        raise ValueError(f"{op}: the kernel rejected its arguments (status {<int>status})")
    return 0


cdef int _float_kind(object x, str name) except -1:
    """0 for float32, 1 for float64: the dtype of the call, set by `x`."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if t == cnp.NPY_FLOAT32:
        return 0
    if t == cnp.NPY_FLOAT64:
        return 1
    raise TypeError(f"{name}: expected float32 or float64, got {x.dtype}")


cdef void *_data(object a, int typenum, int64_t need, bint writeable, bint optional,
                 str name) except? NULL:
    """The data pointer of `a` after checking it can hold `need` elements of
    `typenum` contiguously; NULL for an optional None."""
    if a is None:
        if optional:
            return NULL
        raise ValueError(f"{name}: required")
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name}: expected dtype {cnp.PyArray_DescrFromType(typenum)}, got {arr.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: expected a C-contiguous array")
    if not cnp.PyArray_ISALIGNED(arr):  # C may assume it (vector loads, streaming stores)
        raise ValueError(f"{name}: expected an array aligned to its element size")
    if cnp.PyArray_SIZE(arr) < need:
        raise ValueError(f"{name}: expected at least {need} elements, got {cnp.PyArray_SIZE(arr)}")
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: expected a writeable array")
    return cnp.PyArray_DATA(arr)


cdef int64_t _volume(int64_t a, int64_t b, int64_t c) except -1:
    if a < 0 or b < 0 or c < 0:
        raise ValueError("sizes must be >= 0")
    if a and b and c and (b > 9223372036854775807 // a or c > 9223372036854775807 // (a * b)):
        raise ValueError("sizes overflow int64")
    return a * b * c


_TYPENUM = (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)


cpdef enum SoftmaxOp:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    SOFTMAX_BACKWARD = 2
    LOG_SOFTMAX_BACKWARD = 3


# ---- the float32/float64 switch, once per kernel ---------------------------------
# kind 0 is float32, 1 is float64; pointers were checked by the caller.

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


# ---- entry points: sizes and arrays prepared by functional.py ---------------------


def batchnorm_forward_train(int64_t outer, int64_t channels, int64_t inner,
                            x, gamma, beta,                    # IN (gamma, beta may be None)
                            double momentum, double eps,
                            running_mean, running_var,         # IN/OUT, or None
                            y, mean, invstd,                   # OUT
                            int n_threads):
    cdef int64_t n = _volume(outer, channels, inner)
    cdef int kind = _float_kind(x, "x")
    cdef int tn = _TYPENUM[kind]
    cdef void *px = _data(x, tn, n, False, False, "x")
    cdef void *pg = _data(gamma, tn, channels, False, True, "gamma")
    cdef void *pb = _data(beta, tn, channels, False, True, "beta")
    cdef void *prm = _data(running_mean, tn, channels, True, True, "running_mean")
    cdef void *prv = _data(running_var, tn, channels, True, True, "running_var")
    cdef void *py = _data(y, tn, n, True, False, "y")
    cdef void *pm = _data(mean, tn, channels, True, True, "mean")
    cdef void *pi = _data(invstd, tn, channels, True, True, "invstd")
    cdef pybn_status st
    with nogil:
        st = _bn_train(kind, outer, channels, inner, px, pg, pb, momentum, eps, prm, prv, py, pm,
                       pi, n_threads)
    _raise(st, "batch_norm_forward")


def batchnorm_forward_eval(int64_t outer, int64_t channels, int64_t inner,
                           x, gamma, beta,                     # IN (gamma, beta may be None)
                           running_mean, running_var,          # IN
                           double eps,
                           y, mean, invstd,                    # OUT
                           int n_threads):
    cdef int64_t n = _volume(outer, channels, inner)
    cdef int kind = _float_kind(x, "x")
    cdef int tn = _TYPENUM[kind]
    cdef void *px = _data(x, tn, n, False, False, "x")
    cdef void *pg = _data(gamma, tn, channels, False, True, "gamma")
    cdef void *pb = _data(beta, tn, channels, False, True, "beta")
    cdef void *prm = _data(running_mean, tn, channels, False, False, "running_mean")
    cdef void *prv = _data(running_var, tn, channels, False, False, "running_var")
    cdef void *py = _data(y, tn, n, True, False, "y")
    cdef void *pm = _data(mean, tn, channels, True, True, "mean")
    cdef void *pi = _data(invstd, tn, channels, True, True, "invstd")
    cdef pybn_status st
    with nogil:
        st = _bn_eval(kind, outer, channels, inner, px, pg, pb, prm, prv, eps, py, pm, pi, n_threads)
    _raise(st, "batch_norm_forward")


def batchnorm_backward(int64_t outer, int64_t channels, int64_t inner,
                       dy, x, gamma, mean, invstd,            # IN (gamma may be None)
                       bint training,
                       dx, dgamma, dbeta,                     # OUT, each may be None
                       int n_threads):
    cdef int64_t n = _volume(outer, channels, inner)
    cdef int kind = _float_kind(x, "x")
    cdef int tn = _TYPENUM[kind]
    cdef void *pdy = _data(dy, tn, n, False, False, "dy")
    cdef void *px = _data(x, tn, n, False, False, "x")
    cdef void *pg = _data(gamma, tn, channels, False, True, "gamma")
    cdef void *pm = _data(mean, tn, channels, False, False, "mean")
    cdef void *pi = _data(invstd, tn, channels, False, False, "invstd")
    cdef void *pdx = _data(dx, tn, n, True, True, "dx")
    cdef void *pdg = _data(dgamma, tn, channels, True, True, "dgamma")
    cdef void *pdb = _data(dbeta, tn, channels, True, True, "dbeta")
    cdef pybn_status st
    with nogil:
        st = _bn_backward(kind, outer, channels, inner, pdy, px, pg, pm, pi, training, pdx, pdg,
                          pdb, n_threads)
    _raise(st, "batch_norm_backward")


def softmax_family(int op, int64_t outer, int64_t dim, int64_t inner,
                   a,        # IN: z, or the incoming gradient
                   b,        # IN: None, or the forward output (backward ops)
                   out,      # OUT
                   int n_threads):
    cdef int64_t n = _volume(outer, dim, inner)
    cdef int kind = _float_kind(a, "a")
    cdef int tn = _TYPENUM[kind]
    cdef void *pa = _data(a, tn, n, False, False, "a")
    cdef void *pb = _data(b, tn, n, False, op < SOFTMAX_BACKWARD, "b")
    cdef void *po = _data(out, tn, n, True, False, "out")
    cdef pybn_status st
    with nogil:
        st = _softmax(kind, op, outer, dim, inner, pa, pb, po, n_threads)
    _raise(st, "softmax")


def cross_entropy_labels(int64_t rows, int64_t classes,
                         logits,                  # IN (rows, classes)
                         labels,                  # IN int64 (rows,)
                         double label_smoothing, double grad_scale,
                         loss,                    # OUT float64 (rows,)
                         dlogits,                 # OUT, or None
                         int n_threads):
    cdef int64_t n = _volume(rows, classes, 1)
    cdef int kind = _float_kind(logits, "logits")
    cdef int tn = _TYPENUM[kind]
    cdef void *pz = _data(logits, tn, n, False, False, "logits")
    cdef int64_t *pl = <int64_t *>_data(labels, cnp.NPY_INT64, rows, False, False, "labels")
    cdef double *ploss = <double *>_data(loss, cnp.NPY_FLOAT64, rows, True, False, "loss")
    cdef void *pdz = _data(dlogits, tn, n, True, True, "dlogits")
    cdef int64_t bad_row = -1
    cdef pybn_status st
    with nogil:
        st = _ce_labels(kind, rows, classes, pz, pl, label_smoothing, grad_scale, ploss, pdz,
                        &bad_row, n_threads)
    if st == PYBN_EINVAL and bad_row >= 0:
        raise ValueError(f"target: label {pl[bad_row]} at row {bad_row} is outside [0, {classes})")
    _raise(st, "softmax_cross_entropy")


def cross_entropy_probs(int64_t rows, int64_t classes,
                        logits,                   # IN (rows, classes)
                        target,                   # IN (rows, classes), logits' dtype
                        double label_smoothing, double grad_scale,
                        loss,                     # OUT float64 (rows,)
                        dlogits,                  # OUT, or None
                        int n_threads):
    cdef int64_t n = _volume(rows, classes, 1)
    cdef int kind = _float_kind(logits, "logits")
    cdef int tn = _TYPENUM[kind]
    cdef void *pz = _data(logits, tn, n, False, False, "logits")
    cdef void *pt = _data(target, tn, n, False, False, "target")
    cdef double *ploss = <double *>_data(loss, cnp.NPY_FLOAT64, rows, True, False, "loss")
    cdef void *pdz = _data(dlogits, tn, n, True, True, "dlogits")
    cdef pybn_status st
    with nogil:
        st = _ce_probs(kind, rows, classes, pz, pt, label_smoothing, grad_scale, ploss, pdz,
                       n_threads)
    _raise(st, "softmax_cross_entropy")


cdef double _sum(const double *p, int64_t n) noexcept nogil:
    cdef double s = 0.0
    cdef int64_t i
    for i in range(n):
        s += p[i]
    return s


# ---- fast entry points: the plain case of each public function ---------------------
# functional.py tries these first, with the public function's arguments.
# Each checks at C speed that the call is the plain case (native-endian
# aligned C-contiguous float32/float64 arrays of matching shapes, out= absent or such
# an array apart from the inputs, scalars of exact type and in range),
# allocates the outputs and runs the kernel; it
# returns None for anything else, which then takes functional.py's general
# path with its conversions and error messages. The plain case skips a dozen
# Python-level helpers: a few microseconds, as much as a small kernel takes.


cdef int _plain_type(object a) noexcept:
    """The type number of a native-endian, aligned, C-contiguous ndarray,
    else -1."""
    if not cnp.PyArray_Check(a):
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


cdef int _split(cnp.ndarray x, object axis, int64_t *outer, int64_t *channels,
                int64_t *inner) except -2:
    """(outer, channels, inner) of x around an int axis in range; 0 when
    `axis` is anything else, or x has no value in some channel."""
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
    channels[0] = dims[ax]
    return channels[0] > 0 and outer[0] * inner[0] > 0


cdef bint _plain_eps_momentum(object eps, object momentum) noexcept:
    if type(eps) is not float or type(momentum) is not float:
        return False
    cdef double e = eps, m = momentum
    return 0.0 < e < INFINITY and 0.0 <= m <= 1.0  # NaN fails both


cdef object _empty_like(cnp.ndarray a):
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)


cdef object _empty_vector(cnp.npy_intp n, int kind):
    return cnp.PyArray_EMPTY(1, &n, _TYPENUM[kind], 0)


cdef object _output_for(object out, cnp.ndarray like, tuple inputs):
    """A fresh array like `like` for out=None; `out` itself when it is a
    plain writeable array of like's dtype and shape that overlaps no input;
    None otherwise (the general path then copies or rejects)."""
    if out is None:
        return _empty_like(like)
    if _plain_kind(out) != _plain_kind(like) or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        return None
    if not _same_shape(<cnp.ndarray>out, like):
        return None
    for a in inputs:
        if a is not None and _overlap(<cnp.ndarray>out, <cnp.ndarray>a):
            return None
    return out


cdef bint _overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether two C-contiguous arrays' bytes intersect."""
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cdef void *_ptr(object a) noexcept:
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def batch_norm_forward_fast(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                            axis, out, int n_threads):
    """(y, mean, invstd) of functional.batch_norm_forward in the plain case, else None.
    y is `out` when that is given and a plain array that overlaps no input."""
    cdef int kind = _plain_kind(x)
    if kind < 0 or type(training) is not bool:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int64_t outer, channels, inner
    if cnp.PyArray_NDIM(xa) < 2 or not _split(xa, axis, &outer, &channels, &inner):
        return None
    if not _plain_eps_momentum(eps, momentum):
        return None
    cdef bint train = training
    if train and outer * inner < 2:
        return None
    if not train and (running_mean is None or running_var is None):
        return None
    for v in (gamma, beta):
        if v is not None and not _plain_vector(v, kind, channels, False):
            return None
    for v in (running_mean, running_var):
        if v is not None and not _plain_vector(v, kind, channels, train):
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
    cdef pybn_status st
    with nogil:
        if train:
            st = _bn_train(kind, outer, channels, inner, px, pg, pb, c_momentum, c_eps, prm, prv,
                           py, pm, pi, n_threads)
        else:
            st = _bn_eval(kind, outer, channels, inner, px, pg, pb, prm, prv, c_eps, py, pm, pi,
                          n_threads)
    _raise(st, "batch_norm_forward")
    return y, mean, invstd


def batch_norm_backward_fast(dy, x, gamma, mean, invstd, training, axis, out, int n_threads):
    """(dx, dgamma, dbeta) of functional.batch_norm_backward in the plain case, else None."""
    cdef int kind = _plain_kind(x)
    if kind < 0 or type(training) is not bool or _plain_kind(dy) != kind:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int64_t outer, channels, inner
    if cnp.PyArray_NDIM(xa) < 2 or not _same_shape(xa, <cnp.ndarray>dy):
        return None
    if not _split(xa, axis, &outer, &channels, &inner):
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
    cdef pybn_status st
    with nogil:
        st = _bn_backward(kind, outer, channels, inner, pdy, px, pg, pm, pi, train, pdx, pdg, pdb,
                          n_threads)
    _raise(st, "batch_norm_backward")
    return dx, dgamma, dbeta


def softmax_fast(int op, z, axis, out, int n_threads):
    """softmax or log_softmax of z along its last axis in the plain case, else None."""
    cdef int kind = _plain_kind(z)
    if kind < 0 or type(axis) is not int or op > LOG_SOFTMAX:
        return None
    cdef cnp.ndarray za = <cnp.ndarray>z
    cdef int nd = cnp.PyArray_NDIM(za)
    if nd < 1 or (axis != -1 and axis != nd - 1):
        return None
    cdef int64_t n = cnp.PyArray_SIZE(za)
    cdef int64_t dim = cnp.PyArray_DIMS(za)[nd - 1]
    if n == 0:
        return None
    result = _output_for(out, za, (z,))
    if result is None:
        return None
    cdef void *pa = _ptr(z)
    cdef void *po = _ptr(result)
    cdef pybn_status st
    with nogil:
        st = _softmax(kind, op, n // dim, dim, 1, pa, NULL, po, n_threads)
    _raise(st, "softmax")
    return result


def cross_entropy_fast(logits, target, reduction, label_smoothing, out, int n_threads):
    """(loss, dlogits) of functional.softmax_cross_entropy in the plain case,
    else None. The loss is the float64 total for "mean" and "sum" (divided
    by the rows for "mean") and the float64 (rows,) losses for "none";
    dlogits is `out` when that is a plain array apart from the inputs."""
    cdef int kind = _plain_kind(logits)
    if kind < 0 or type(label_smoothing) is not float or type(reduction) is not str:
        return None
    cdef double smoothing = label_smoothing
    if not 0.0 <= smoothing <= 1.0:
        return None
    cdef int mode = 0 if reduction == "mean" else (1 if reduction == "sum" else (2 if reduction == "none" else -1))
    cdef cnp.ndarray za = <cnp.ndarray>logits
    if mode < 0 or cnp.PyArray_NDIM(za) != 2:
        return None
    cdef int64_t rows = cnp.PyArray_DIMS(za)[0], classes = cnp.PyArray_DIMS(za)[1]
    if rows < 1 or classes < 1 or not cnp.PyArray_Check(target):
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
    cdef double grad_scale = 1.0 / <double>rows if mode == 0 else 1.0
    cdef void *pz = _ptr(logits)
    cdef void *pt = _ptr(target)
    cdef double *ploss = <double *>_ptr(loss)
    cdef void *pdz = _ptr(dlogits)
    cdef int64_t bad_row = -1
    cdef pybn_status st
    cdef double total = 0.0
    with nogil:
        if labels:
            st = _ce_labels(kind, rows, classes, pz, <int64_t *>pt, smoothing, grad_scale, ploss, pdz,
                            &bad_row, n_threads)
        else:
            st = _ce_probs(kind, rows, classes, pz, pt, smoothing, grad_scale, ploss, pdz, n_threads)
        if st == PYBN_OK and mode < 2:
            total = _sum(ploss, rows)
    if st == PYBN_EINVAL and bad_row >= 0:
        return None  # a label out of range: the general path names it
    _raise(st, "softmax_cross_entropy")
    if mode == 2:
        return loss, dlogits
    return (total / <double>rows if mode == 0 else total), dlogits


def build_info():
    """What the kernels were compiled with and dispatch to on this CPU."""
    return {
        "simd": pybn_simd_level().decode(),
        "openmp_version": pybn_openmp_version(),
        "openmp_max_threads": pybn_openmp_max_threads(),
        "compiler": pybn_compiler().decode(),
        "cache_bytes": int(pybn_cache_bytes()),
        "c_flags": pybn_build_flags().decode().strip(),
    }


cdef int _requested_threads = 0  # 0: OpenMP's default on the calling thread


def request_threads(int n):
    """Every kernel call uses n >= 1 threads; n = 0: OpenMP's default."""
    global _requested_threads
    _requested_threads = n


def requested_threads():
    """The n of the last request_threads(n)."""
    return _requested_threads


def num_threads():
    """The number of threads the next kernel call will use at most."""
    if _requested_threads > 0:
        return _requested_threads
    cdef int n = pybn_openmp_max_threads()
    return n if n > 0 else 1
