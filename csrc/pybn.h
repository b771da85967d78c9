/* pybn.h - the C API of pybn's kernels: batch normalization and the softmax family.
 *
 * Plain C99, no Python. Conventions (as XNNPACK / oneDNN):
 *   - dtype in the suffix (_f32, _f64); sizes first (int64_t, in elements);
 *     inputs `const T *restrict`; outputs last; optional outputs may be NULL;
 *     the thread count is passed explicitly as the final argument.
 *   - Arrays are C-contiguous. An N-d tensor reduced along one axis is viewed
 *     as (outer, dim, inner): element (o, d, i) is at (o*dim + d)*inner + i.
 *   - Every function returns a pybn_status and never prints or aborts;
 *     PYBN_OK means every requested output is valid; each other status
 *     names the argument that was out of its domain.
 *   - Results are bitwise identical for any n_threads: reductions are split
 *     into blocks whose size does not depend on the thread count and the
 *     partial results are combined in a fixed order.
 *   - Reductions accumulate in double for both dtypes. Batch norm's
 *     per-element maps run in the input's dtype while that costs at most a
 *     few ulps (|mean| <= 16 standard deviations) and in double otherwise;
 *     the softmax family's per-element maps are within a few ulps (its
 *     float exp within 2 ulps, see common.h).
 */
#ifndef PYBN_H
#define PYBN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PYBN_OK = 0,
    PYBN_EINVAL = 1,     /* a size is invalid or a required pointer is NULL */
    PYBN_ENOMEM = 2,     /* a scratch allocation failed */
    PYBN_EEPS = 3,       /* eps is not a finite number > 0 */
    PYBN_EMOMENTUM = 4,  /* momentum is outside [0, 1] (or NaN) */
    PYBN_EBATCH = 5,     /* training with fewer than 2 values per channel */
    PYBN_ESMOOTHING = 6, /* label_smoothing is outside [0, 1] (or NaN) */
    PYBN_ELABEL = 7      /* a label is outside [0, classes): its row in *bad_row */
} pybn_status;

/* ---- batch normalization over x viewed as (outer, channels, inner) ------ */

/* Training forward: per-channel mean and biased variance over outer*inner
 * values (two passes, double accumulators), y = gamma*(x-mean)*invstd + beta.
 * gamma/beta NULL mean 1/0. running_mean/running_var (NULL to skip) are
 * updated in place: r = (1-momentum)*r + momentum*batch, with the unbiased
 * variance. mean/invstd (NULL to skip) receive the batch statistics.
 * EBATCH if outer*inner < 2, EEPS if eps is not finite and > 0, EMOMENTUM
 * if momentum is outside [0, 1]. A NaN or inf anywhere in a channel makes
 * that channel's mean/invstd, y and running averages NaN or inf exactly as
 * the two-pass formulas (and PyTorch) give them. */
pybn_status pybn_batchnorm_forward_train_f32(
    int64_t outer, int64_t channels, int64_t inner,
    const float *restrict x, const float *restrict gamma, const float *restrict beta,
    double momentum, double eps,
    float *restrict running_mean, float *restrict running_var,
    float *restrict y, float *restrict mean, float *restrict invstd, int n_threads);
pybn_status pybn_batchnorm_forward_train_f64(
    int64_t outer, int64_t channels, int64_t inner,
    const double *restrict x, const double *restrict gamma, const double *restrict beta,
    double momentum, double eps,
    double *restrict running_mean, double *restrict running_var,
    double *restrict y, double *restrict mean, double *restrict invstd, int n_threads);

/* Eval forward: normalizes with running_mean/running_var (required).
 * mean/invstd (NULL to skip) receive running_mean and 1/sqrt(running_var+eps). */
pybn_status pybn_batchnorm_forward_eval_f32(
    int64_t outer, int64_t channels, int64_t inner,
    const float *restrict x, const float *restrict gamma, const float *restrict beta,
    const float *restrict running_mean, const float *restrict running_var, double eps,
    float *restrict y, float *restrict mean, float *restrict invstd, int n_threads);
pybn_status pybn_batchnorm_forward_eval_f64(
    int64_t outer, int64_t channels, int64_t inner,
    const double *restrict x, const double *restrict gamma, const double *restrict beta,
    const double *restrict running_mean, const double *restrict running_var, double eps,
    double *restrict y, double *restrict mean, double *restrict invstd, int n_threads);

/* Backward. With training != 0 the statistics depend on x:
 *   dx = gamma*invstd/n * (n*dy - sum(dy) - xhat*sum(dy*xhat));
 * otherwise dx = gamma*invstd*dy. dgamma = sum(dy*xhat), dbeta = sum(dy).
 * xhat = (x-mean)*invstd is recomputed, not stored. Any output may be NULL. */
pybn_status pybn_batchnorm_backward_f32(
    int64_t outer, int64_t channels, int64_t inner,
    const float *restrict dy, const float *restrict x, const float *restrict gamma,
    const float *restrict mean, const float *restrict invstd, int training,
    float *restrict dx, float *restrict dgamma, float *restrict dbeta, int n_threads);
pybn_status pybn_batchnorm_backward_f64(
    int64_t outer, int64_t channels, int64_t inner,
    const double *restrict dy, const double *restrict x, const double *restrict gamma,
    const double *restrict mean, const double *restrict invstd, int training,
    double *restrict dx, double *restrict dgamma, double *restrict dbeta, int n_threads);

/* ---- softmax family along `dim` of z viewed as (outer, dim, inner) ------- */

/* p = exp(z - max) / sum(exp(z - max)). All -inf or any +inf/NaN: NaN. */
pybn_status pybn_softmax_f32(int64_t outer, int64_t dim, int64_t inner,
    const float *restrict z, float *restrict p, int n_threads);
pybn_status pybn_softmax_f64(int64_t outer, int64_t dim, int64_t inner,
    const double *restrict z, double *restrict p, int n_threads);

/* lp = (z - max) - log(sum(exp(z - max))), in that order. */
pybn_status pybn_log_softmax_f32(int64_t outer, int64_t dim, int64_t inner,
    const float *restrict z, float *restrict lp, int n_threads);
pybn_status pybn_log_softmax_f64(int64_t outer, int64_t dim, int64_t inner,
    const double *restrict z, double *restrict lp, int n_threads);

/* dz = p * (dp - sum(dp * p)) */
pybn_status pybn_softmax_backward_f32(int64_t outer, int64_t dim, int64_t inner,
    const float *restrict dp, const float *restrict p, float *restrict dz, int n_threads);
pybn_status pybn_softmax_backward_f64(int64_t outer, int64_t dim, int64_t inner,
    const double *restrict dp, const double *restrict p, double *restrict dz, int n_threads);

/* dz = dlp - exp(lp) * sum(dlp) */
pybn_status pybn_log_softmax_backward_f32(int64_t outer, int64_t dim, int64_t inner,
    const float *restrict dlp, const float *restrict lp, float *restrict dz, int n_threads);
pybn_status pybn_log_softmax_backward_f64(int64_t outer, int64_t dim, int64_t inner,
    const double *restrict dlp, const double *restrict lp, double *restrict dz, int n_threads);

/* Fused softmax cross-entropy over logits (rows, classes), one pass per row.
 * Targets are integer labels in [0, classes) or a (rows, classes) matrix of
 * probabilities q. With label smoothing s, q becomes (1-s)*q + s/classes.
 * loss[r] (double, required) = -sum_c q_c * log_softmax(z)_c; for labels and
 * s == 0 only the labelled term is formed (as nll_loss, so -inf logits at
 * other classes do not give 0*inf).
 * dlogits (NULL to skip) = grad_scale * (softmax(z)*sum(q) - q).
 * A label out of range: ELABEL, its row in *bad_row (may be NULL);
 * label_smoothing outside [0, 1]: ESMOOTHING. */
pybn_status pybn_softmax_cross_entropy_labels_f32(int64_t rows, int64_t classes,
    const float *restrict logits, const int64_t *restrict labels,
    double label_smoothing, double grad_scale,
    double *restrict loss, float *restrict dlogits, int64_t *restrict bad_row, int n_threads);
pybn_status pybn_softmax_cross_entropy_labels_f64(int64_t rows, int64_t classes,
    const double *restrict logits, const int64_t *restrict labels,
    double label_smoothing, double grad_scale,
    double *restrict loss, double *restrict dlogits, int64_t *restrict bad_row, int n_threads);
pybn_status pybn_softmax_cross_entropy_probs_f32(int64_t rows, int64_t classes,
    const float *restrict logits, const float *restrict target,
    double label_smoothing, double grad_scale,
    double *restrict loss, float *restrict dlogits, int n_threads);
pybn_status pybn_softmax_cross_entropy_probs_f64(int64_t rows, int64_t classes,
    const double *restrict logits, const double *restrict target,
    double label_smoothing, double grad_scale,
    double *restrict loss, double *restrict dlogits, int n_threads);

/* ---- optimizer steps (one parameter of n elements, in place) ------------- */

enum { PYBN_OPT_SGD = 0, PYBN_OPT_RMSPROP = 1, PYBN_OPT_ADAM = 2 };

/* g' = g + wd*w, then, in the parameter's precision:
 *   SGD (h1 = momentum): s1 = h1*s1 + g'; w -= lr*s1 (s1 NULL: w -= lr*g');
 *   RMSprop (h1 = beta): s1 = h1*s1 + (1-h1)*g'^2; w -= lr*g'/(sqrt(s1) + eps);
 *   Adam (h1, h2 = beta1, beta2; c1, c2 the bias corrections 1 - beta^t):
 *     s1 = h1*s1 + (1-h1)*g'; s2 = h2*s2 + (1-h2)*g'^2;
 *     w -= lr*(s1/c1)/(sqrt(s2/c2) + eps).
 * w, g, s1, s2 must not overlap. */
pybn_status pybn_optimizer_step_f32(int kind, int64_t n, float *restrict w, const float *restrict g,
    float *restrict s1, float *restrict s2, double lr, double h1, double h2, double eps,
    double c1, double c2, double wd, int n_threads);
pybn_status pybn_optimizer_step_f64(int kind, int64_t n, double *restrict w, const double *restrict g,
    double *restrict s1, double *restrict s2, double lr, double h1, double h2, double eps,
    double c1, double c2, double wd, int n_threads);

/* ---- runtime information ------------------------------------------------- */

/* The SIMD level the hand-vectorized kernels dispatch to on this CPU:
 * "x86-64-v4 (AVX-512)", "x86-64-v3 (AVX2+FMA)" or "baseline"; the
 * environment variable PYBN_SIMD=avx2|baseline caps it (for testing). */
const char *pybn_simd_level(void);
/* The last-level cache size in bytes the kernels assume: float32 batch
 * norm streams outputs past the cache when a pass's arrays exceed it. From
 * sysfs, at most 32 MiB (a larger L3 is shared by a whole server socket;
 * 32 MiB when unknown); PYBN_CACHE_BYTES overrides it (for testing). */
double pybn_cache_bytes(void);
/* Whether outputs first computed into a cache-resident buffer (softmax
 * rows) are streamed out of it past the cache: not on AMD CPUs, where it
 * was measured to lose, unless PYBN_CACHE_BYTES is set (runtime.c). */
int pybn_stream_buffered(void);
/* Whether the float32 batch-norm backward computes planes shorter than
 * 16 KB one task per channel: not on AMD CPUs, where memory order was measured
 * faster, unless PYBN_BN_SHORT_PLANES=channel|planes says (runtime.c). */
int pybn_short_planes_by_channel(void);
/* OpenMP's default team size for the calling thread (1 without OpenMP). */
int pybn_openmp_max_threads(void);
/* The OpenMP version macro the kernels were compiled with (0 without OpenMP). */
int pybn_openmp_version(void);
/* Compiler and flags of the kernel build. */
const char *pybn_build_flags(void);
const char *pybn_compiler(void);

#ifdef __cplusplus
}
#endif
#endif /* PYBN_H */
