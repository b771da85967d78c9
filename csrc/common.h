/* common.h - private helpers shared by the kernel files: run-time SIMD
 * dispatch, the thread-count policy, and the dtype template machinery. */
#ifndef PYBN_COMMON_H
#define PYBN_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Hot loops are compiled three times and the best clone for the CPU is
 * picked when the library loads (GCC ifunc). Clones must be static: gcc
 * exports the ifunc symbol otherwise, even with hidden visibility. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
#define PYBN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYBN_CLONES
#endif

/* What the hand-vectorized kernels use: 2 = AVX-512 (x86-64-v4),
 * 1 = AVX2+FMA (x86-64-v3), 0 = portable C (runtime.c). */
int pybn_dispatch_level(void);

/* Below this many elements a call runs on one thread: starting an OpenMP
 * team costs more than it saves. Results do not depend on it. Kernels
 * with an exp per element (softmax.c) share from fewer. */
#define PYBN_SMALL_WORK ((int64_t)1 << 15)

/* The share [lo, hi) of tasks [0, count) that OpenMP's static schedule
 * gives the calling thread of its team (all of them outside a team). */
static inline void pybn_share(int64_t count, int64_t *lo, int64_t *hi)
{
#ifdef _OPENMP
    const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int64_t team = 1, t = 0;
#endif
    const int64_t q = count / team, r = count % team;
    *lo = t * q + (t < r ? t : r);
    *hi = *lo + q + (t < r);
}

/* for (var in [0, count)) body, over nt threads, each taking one
 * contiguous share of the tasks and walking it forwards (backwards == 0)
 * or backwards. Two passes over the same data with the same task count
 * give each thread the same share, so a second pass that walks backwards
 * starts on what the first left in that thread's cache. With one thread
 * no parallel region is entered at all: even under if(0), GOMP_parallel
 * builds a team and ends it with a futex syscall, about half a
 * microsecond, as much as a small kernel's work. The body is the last
 * argument, in braces. */
#define PYBN_PARALLEL_SHARES(nt, backwards, var, count, ...)                             \
    do {                                                                                 \
        const int pybn_nt_ = (nt), pybn_back_ = (backwards);                             \
        const int64_t pybn_count_ = (count);                                             \
        if (pybn_nt_ > 1) {                                                              \
            _Pragma("omp parallel num_threads(pybn_nt_)")                                \
            {                                                                            \
                int64_t pybn_lo_, pybn_hi_;                                              \
                pybn_share(pybn_count_, &pybn_lo_, &pybn_hi_);                           \
                for (int64_t pybn_i_ = pybn_lo_; pybn_i_ < pybn_hi_; pybn_i_++) {        \
                    const int64_t var = pybn_back_ ? pybn_hi_ - 1 - (pybn_i_ - pybn_lo_) \
                                                   : pybn_i_;                            \
                    __VA_ARGS__                                                          \
                }                                                                        \
            }                                                                            \
        } else {                                                                         \
            for (int64_t pybn_i_ = 0; pybn_i_ < pybn_count_; pybn_i_++) {                \
                const int64_t var = pybn_back_ ? pybn_count_ - 1 - pybn_i_ : pybn_i_;    \
                __VA_ARGS__                                                              \
            }                                                                            \
        }                                                                                \
    } while (0)

/* body run by each of nt threads (in a team when nt > 1; once, on the
 * calling thread and with no parallel region, otherwise), for bodies that
 * take their share themselves (pybn_share) and must end it with a fence. */
#define PYBN_TEAM(nt, ...)                                   \
    do {                                                     \
        const int pybn_team_nt_ = (nt);                      \
        if (pybn_team_nt_ > 1) {                             \
            _Pragma("omp parallel num_threads(pybn_team_nt_)") \
            {                                                \
                __VA_ARGS__                                  \
            }                                                \
        } else {                                             \
            __VA_ARGS__                                      \
        }                                                    \
    } while (0)

#define PYBN_PARALLEL_FOR(nt, var, count, ...) PYBN_PARALLEL_SHARES(nt, 0, var, count, __VA_ARGS__)

/* Rows per partial-sum block when reducing over rows of a (rows, C) matrix.
 * Fixed, so that the summation order does not depend on the thread count. */
#define PYBN_ROW_BLOCK 64

/* (outer, dim, inner) are valid sizes of a view, dim >= 1, and their
 * product fits in int64_t. */
static inline int pybn_shape_ok(int64_t outer, int64_t dim, int64_t inner)
{
    if (outer < 0 || dim < 1 || inner < 1)
        return 0;
    if (outer > 0 && (dim > INT64_MAX / outer || inner > INT64_MAX / (outer * dim)))
        return 0;
    return 1;
}

/* Threads for `work` elements when fewer than `small` run on one. */
static inline int pybn_team_size(int64_t work, int64_t small, int n_threads)
{
    if (n_threads < 1 || work < small)
        return 1;
    return n_threads;
}

/* exp(x) in float, written so that compilers vectorize it (libm's expf is
 * a scalar call). exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2/2,
 * ln2 split in two for an exact reduction; exp(r) by Cephes' degree-6
 * polynomial: relative error below 2e-7 (a few ulp). 2^n is built in the
 * exponent bits, so n stays in [-126, 127]: results that would be
 * subnormal (x < -87.34) are 0, x > 88.72 gives +inf, NaN stays NaN. */
static inline float pybn_expf(float x)
{
    const float lo = -87.3365447f, hi = 88.7228394f;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    /* written so that NaN clamps to lo: the float-to-int conversion below
     * must see a finite n (NaN is restored at the end) */
    float xc = x > lo ? (x < hi ? x : hi) : lo;
    float n = (xc * 1.44269504088896341f + magic) - magic;
    n = n > 127.0f ? 127.0f : n; /* the top 0.35 of the range: r up to ln2 */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* n + 127 in [1, 254] */
    float scale;
    memcpy(&scale, &bits, sizeof scale); /* a register move once compiled */
    float result = p * scale;
    result = x > hi ? (float)INFINITY : result;
    result = x < lo ? 0.0f : result;
    return x != x ? x : result;
}

/* exp(x) in double, written so that compilers vectorize it (libm's exp is
 * a scalar call, which left float64 softmax at a quarter of PyTorch's
 * speed). n = round(x / ln2), r = x - n*ln2 with ln2 split in two (fdlibm's
 * constants, exact products), |r| <= ln2/2; exp(r) by its Taylor series to
 * r^13 (truncation below 2e-16 relative), Horner in double: within about
 * 2 ulp. 2^n is built in the exponent bits as 2^(n-1) * 2 (both exact), so
 * that n reaches 1024 at the top of the range; results below about
 * 4.5e-308 (x < -707.7) are 0, x > 709.78 gives +inf, NaN stays NaN. */
static inline double pybn_exp(double x)
{
    const double lo = -707.7, hi = 709.782712893383973096;
    const double magic = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    double xc = x > lo ? (x < hi ? x : hi) : lo; /* NaN clamps to lo, restored at the end */
    const double n = (xc * 1.44269504088896338700 + magic) - magic;
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    /* bits(n - 1 + magic) - bits(magic) = n - 1, and bits(magic) << 52 vanishes */
    const double t = (n - 1.0) + magic;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023u) << 52; /* n - 1 + 1023 in [1, 2046] */
    double half_scale;
    memcpy(&half_scale, &bits, sizeof half_scale);
    double result = (p * half_scale) * 2.0;
    result = x > hi ? (double)INFINITY : result;
    result = x < lo ? 0.0 : result;
    return x != x ? x : result;
}

/* Two-level paste so that the dtype suffix macro expands first. */
#define PYBN_CAT_(a, b) a##_##b
#define PYBN_CAT(a, b) PYBN_CAT_(a, b)

#endif /* PYBN_COMMON_H */
