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
dominates small problems.
"""
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
        if kind == 0:
            st = pybn_batchnorm_forward_train_f32(
                outer, channels, inner, <float *>px, <float *>pg, <float *>pb, momentum, eps,
                <float *>prm, <float *>prv, <float *>py, <float *>pm, <float *>pi, n_threads)
        else:
            st = pybn_batchnorm_forward_train_f64(
                outer, channels, inner, <double *>px, <double *>pg, <double *>pb, momentum, eps,
                <double *>prm, <double *>prv, <double *>py, <double *>pm, <double *>pi, n_threads)
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
        if kind == 0:
            st = pybn_batchnorm_forward_eval_f32(
                outer, channels, inner, <float *>px, <float *>pg, <float *>pb, <float *>prm,
                <float *>prv, eps, <float *>py, <float *>pm, <float *>pi, n_threads)
        else:
            st = pybn_batchnorm_forward_eval_f64(
                outer, channels, inner, <double *>px, <double *>pg, <double *>pb, <double *>prm,
                <double *>prv, eps, <double *>py, <double *>pm, <double *>pi, n_threads)
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
        if kind == 0:
            st = pybn_batchnorm_backward_f32(
                outer, channels, inner, <float *>pdy, <float *>px, <float *>pg, <float *>pm,
                <float *>pi, training, <float *>pdx, <float *>pdg, <float *>pdb, n_threads)
        else:
            st = pybn_batchnorm_backward_f64(
                outer, channels, inner, <double *>pdy, <double *>px, <double *>pg, <double *>pm,
                <double *>pi, training, <double *>pdx, <double *>pdg, <double *>pdb, n_threads)
    _raise(st, "batch_norm_backward")


cpdef enum SoftmaxOp:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    SOFTMAX_BACKWARD = 2
    LOG_SOFTMAX_BACKWARD = 3


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
    cdef pybn_status st = PYBN_EINVAL
    with nogil:
        if kind == 0:
            if op == SOFTMAX:
                st = pybn_softmax_f32(outer, dim, inner, <float *>pa, <float *>po, n_threads)
            elif op == LOG_SOFTMAX:
                st = pybn_log_softmax_f32(outer, dim, inner, <float *>pa, <float *>po, n_threads)
            elif op == SOFTMAX_BACKWARD:
                st = pybn_softmax_backward_f32(outer, dim, inner, <float *>pa, <float *>pb,
                                               <float *>po, n_threads)
            elif op == LOG_SOFTMAX_BACKWARD:
                st = pybn_log_softmax_backward_f32(outer, dim, inner, <float *>pa, <float *>pb,
                                                   <float *>po, n_threads)
        else:
            if op == SOFTMAX:
                st = pybn_softmax_f64(outer, dim, inner, <double *>pa, <double *>po, n_threads)
            elif op == LOG_SOFTMAX:
                st = pybn_log_softmax_f64(outer, dim, inner, <double *>pa, <double *>po, n_threads)
            elif op == SOFTMAX_BACKWARD:
                st = pybn_softmax_backward_f64(outer, dim, inner, <double *>pa, <double *>pb,
                                               <double *>po, n_threads)
            elif op == LOG_SOFTMAX_BACKWARD:
                st = pybn_log_softmax_backward_f64(outer, dim, inner, <double *>pa, <double *>pb,
                                                   <double *>po, n_threads)
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
        if kind == 0:
            st = pybn_softmax_cross_entropy_labels_f32(rows, classes, <float *>pz, pl, label_smoothing,
                                                       grad_scale, ploss, <float *>pdz, &bad_row,
                                                       n_threads)
        else:
            st = pybn_softmax_cross_entropy_labels_f64(rows, classes, <double *>pz, pl,
                                                       label_smoothing, grad_scale, ploss,
                                                       <double *>pdz, &bad_row, n_threads)
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
        if kind == 0:
            st = pybn_softmax_cross_entropy_probs_f32(rows, classes, <float *>pz, <float *>pt,
                                                      label_smoothing, grad_scale, ploss,
                                                      <float *>pdz, n_threads)
        else:
            st = pybn_softmax_cross_entropy_probs_f64(rows, classes, <double *>pz, <double *>pt,
                                                      label_smoothing, grad_scale, ploss,
                                                      <double *>pdz, n_threads)
    _raise(st, "softmax_cross_entropy")


def build_info():
    """What the kernels were compiled with and dispatch to on this CPU."""
    return {
        "simd": pybn_simd_level().decode(),
        "openmp_version": pybn_openmp_version(),
        "openmp_max_threads": pybn_openmp_max_threads(),
        "compiler": pybn_compiler().decode(),
        "c_flags": pybn_build_flags().decode().strip(),
    }


def openmp_max_threads():
    return pybn_openmp_max_threads()
