# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin typed entry points into the C kernels of csrc/.

Design: the only Cython file. It dispatches float/double to the _f32/_f64
C function, releases the GIL around every call and maps a C status to a
Python exception. It checks nothing else: all argument validation lives in
pybn/functional.py, which hands over C-contiguous 1-D views and sizes.
"""
from libc.stdint cimport int64_t
from cython cimport floating


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


cdef inline const floating *_in(const floating[::1] a):
    return NULL if a is None else &a[0]


cdef inline floating *_out(floating[::1] a):
    return NULL if a is None else &a[0]


def batchnorm_forward_train(int64_t outer, int64_t channels, int64_t inner,
                            const floating[::1] x,             # IN
                            const floating[::1] gamma,         # IN, or None
                            const floating[::1] beta,          # IN, or None
                            double momentum, double eps,
                            floating[::1] running_mean,        # IN/OUT, or None
                            floating[::1] running_var,         # IN/OUT, or None
                            floating[::1] y,                   # OUT
                            floating[::1] mean,                # OUT
                            floating[::1] invstd,              # OUT
                            int n_threads):
    cdef const floating *px = _in(x)
    cdef const floating *pg = _in(gamma)
    cdef const floating *pb = _in(beta)
    cdef floating *prm = _out(running_mean)
    cdef floating *prv = _out(running_var)
    cdef floating *py = _out(y)
    cdef floating *pm = _out(mean)
    cdef floating *pi = _out(invstd)
    cdef pybn_status st
    with nogil:
        if floating is float:
            st = pybn_batchnorm_forward_train_f32(outer, channels, inner, px, pg, pb, momentum,
                                                  eps, prm, prv, py, pm, pi, n_threads)
        else:
            st = pybn_batchnorm_forward_train_f64(outer, channels, inner, px, pg, pb, momentum,
                                                  eps, prm, prv, py, pm, pi, n_threads)
    _raise(st, "batch_norm_forward")


def batchnorm_forward_eval(int64_t outer, int64_t channels, int64_t inner,
                           const floating[::1] x,              # IN
                           const floating[::1] gamma,          # IN, or None
                           const floating[::1] beta,           # IN, or None
                           const floating[::1] running_mean,   # IN
                           const floating[::1] running_var,    # IN
                           double eps,
                           floating[::1] y,                    # OUT
                           floating[::1] mean,                 # OUT
                           floating[::1] invstd,               # OUT
                           int n_threads):
    cdef const floating *px = _in(x)
    cdef const floating *pg = _in(gamma)
    cdef const floating *pb = _in(beta)
    cdef const floating *prm = _in(running_mean)
    cdef const floating *prv = _in(running_var)
    cdef floating *py = _out(y)
    cdef floating *pm = _out(mean)
    cdef floating *pi = _out(invstd)
    cdef pybn_status st
    with nogil:
        if floating is float:
            st = pybn_batchnorm_forward_eval_f32(outer, channels, inner, px, pg, pb, prm, prv,
                                                 eps, py, pm, pi, n_threads)
        else:
            st = pybn_batchnorm_forward_eval_f64(outer, channels, inner, px, pg, pb, prm, prv,
                                                 eps, py, pm, pi, n_threads)
    _raise(st, "batch_norm_forward")


def batchnorm_backward(int64_t outer, int64_t channels, int64_t inner,
                       const floating[::1] dy,                 # IN
                       const floating[::1] x,                  # IN
                       const floating[::1] gamma,              # IN, or None
                       const floating[::1] mean,               # IN
                       const floating[::1] invstd,             # IN
                       bint training,
                       floating[::1] dx,                       # OUT, or None
                       floating[::1] dgamma,                   # OUT, or None
                       floating[::1] dbeta,                    # OUT, or None
                       int n_threads):
    cdef const floating *pdy = _in(dy)
    cdef const floating *px = _in(x)
    cdef const floating *pg = _in(gamma)
    cdef const floating *pm = _in(mean)
    cdef const floating *pi = _in(invstd)
    cdef floating *pdx = _out(dx)
    cdef floating *pdg = _out(dgamma)
    cdef floating *pdb = _out(dbeta)
    cdef pybn_status st
    with nogil:
        if floating is float:
            st = pybn_batchnorm_backward_f32(outer, channels, inner, pdy, px, pg, pm, pi,
                                             training, pdx, pdg, pdb, n_threads)
        else:
            st = pybn_batchnorm_backward_f64(outer, channels, inner, pdy, px, pg, pm, pi,
                                             training, pdx, pdg, pdb, n_threads)
    _raise(st, "batch_norm_backward")


cpdef enum SoftmaxOp:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    SOFTMAX_BACKWARD = 2
    LOG_SOFTMAX_BACKWARD = 3


def softmax_family(int op, int64_t outer, int64_t dim, int64_t inner,
                   const floating[::1] a,      # IN: z, or the incoming gradient
                   const floating[::1] b,      # IN: None, or the forward output
                   floating[::1] out,          # OUT
                   int n_threads):
    cdef const floating *pa = _in(a)
    cdef const floating *pb = _in(b)
    cdef floating *po = _out(out)
    cdef pybn_status st = PYBN_EINVAL
    with nogil:
        if floating is float:
            if op == SOFTMAX:
                st = pybn_softmax_f32(outer, dim, inner, pa, po, n_threads)
            elif op == LOG_SOFTMAX:
                st = pybn_log_softmax_f32(outer, dim, inner, pa, po, n_threads)
            elif op == SOFTMAX_BACKWARD:
                st = pybn_softmax_backward_f32(outer, dim, inner, pa, pb, po, n_threads)
            elif op == LOG_SOFTMAX_BACKWARD:
                st = pybn_log_softmax_backward_f32(outer, dim, inner, pa, pb, po, n_threads)
        else:
            if op == SOFTMAX:
                st = pybn_softmax_f64(outer, dim, inner, pa, po, n_threads)
            elif op == LOG_SOFTMAX:
                st = pybn_log_softmax_f64(outer, dim, inner, pa, po, n_threads)
            elif op == SOFTMAX_BACKWARD:
                st = pybn_softmax_backward_f64(outer, dim, inner, pa, pb, po, n_threads)
            elif op == LOG_SOFTMAX_BACKWARD:
                st = pybn_log_softmax_backward_f64(outer, dim, inner, pa, pb, po, n_threads)
    _raise(st, "softmax")


def cross_entropy_labels(int64_t rows, int64_t classes,
                         const floating[::1] logits,       # IN
                         const int64_t[::1] labels,        # IN
                         double label_smoothing, double grad_scale,
                         double[::1] loss,                 # OUT, per row
                         floating[::1] dlogits,            # OUT, or None
                         int n_threads):
    cdef const floating *pz = _in(logits)
    cdef const int64_t *pl = &labels[0] if labels is not None else NULL
    cdef double *ploss = &loss[0] if loss is not None else NULL
    cdef floating *pdz = _out(dlogits)
    cdef int64_t bad_row = -1
    cdef pybn_status st
    with nogil:
        if floating is float:
            st = pybn_softmax_cross_entropy_labels_f32(rows, classes, pz, pl, label_smoothing,
                                                       grad_scale, ploss, pdz, &bad_row, n_threads)
        else:
            st = pybn_softmax_cross_entropy_labels_f64(rows, classes, pz, pl, label_smoothing,
                                                       grad_scale, ploss, pdz, &bad_row, n_threads)
    if st == PYBN_EINVAL and bad_row >= 0:
        raise ValueError(f"target: label {labels[bad_row]} at row {bad_row} is outside "
                         f"[0, {classes})")
    _raise(st, "softmax_cross_entropy")


def cross_entropy_probs(int64_t rows, int64_t classes,
                        const floating[::1] logits,        # IN
                        const floating[::1] target,        # IN
                        double label_smoothing, double grad_scale,
                        double[::1] loss,                  # OUT, per row
                        floating[::1] dlogits,             # OUT, or None
                        int n_threads):
    cdef const floating *pz = _in(logits)
    cdef const floating *pt = _in(target)
    cdef double *ploss = &loss[0] if loss is not None else NULL
    cdef floating *pdz = _out(dlogits)
    cdef pybn_status st
    with nogil:
        if floating is float:
            st = pybn_softmax_cross_entropy_probs_f32(rows, classes, pz, pt, label_smoothing,
                                                      grad_scale, ploss, pdz, n_threads)
        else:
            st = pybn_softmax_cross_entropy_probs_f64(rows, classes, pz, pt, label_smoothing,
                                                      grad_scale, ploss, pdz, n_threads)
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
