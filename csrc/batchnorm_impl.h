/* batchnorm_impl.h - batch-norm kernels for one dtype. Included by
 * batchnorm.c once per dtype with T (the element type) and SFX (the name
 * suffix) defined; it is not a header to include anywhere else.
 *
 * Design: x is viewed as (outer, C, inner). Two layouts of the reduction:
 *   - planes (inner > 1, NCHW): each (o, c) plane is a contiguous run;
 *     one partial sum per plane, combined per channel in order of o;
 *   - rows (inner == 1, (m, C) and channels-last): blocks of PYBN_ROW_BLOCK
 *     rows times tiles of columns; one partial row per block, combined per
 *     channel in order of the blocks.
 * Neither split depends on the thread count, so neither do the results.
 * Sums accumulate in double. The per-element maps (normalize, dx) have a
 * double version, exact to one rounding, and a version in T's arithmetic
 * used while it is within a few ulps (see channel_affine, channel_dx). */

#define FN(name) PYBN_CAT(name, SFX)

/* ---- one contiguous run (planes layout) --------------------------------- */

PYBN_CLONES static double FN(run_sum)(const T *restrict x, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i];
    return s;
}

PYBN_CLONES static double FN(run_sqdev)(const T *restrict x, int64_t n, double mean)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        s += d * d;
    }
    return s;
}

/* sum(x - k) and sum((x - k)^2) in one pass. */
PYBN_CLONES static void FN(run_shifted_sums)(const T *restrict x, int64_t n, double k,
                                             double *restrict s1, double *restrict s2)
{
    double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - k;
        a += d;
        b += d * d;
    }
    *s1 = a;
    *s2 = b;
}

/* sum(dy) and sum(dy * (x - mean)) in one pass. */
PYBN_CLONES static void FN(run_dy_sums_double)(const T *restrict dy, const T *restrict x, int64_t n,
                                        double mean, double *restrict s_dy, double *restrict s_dyxmu)
{
    double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        double g = (double)dy[i];
        a += g;
        b += g * ((double)x[i] - mean);
    }
    *s_dy = a;
    *s_dyxmu = b;
}

/* A short plane's sum(dy) and sum(dy * (x - m)) in T's arithmetic, in
 * BN_SHORT_LANES lanes (element j in lane j % BN_SHORT_LANES) added
 * pairwise at the end: the same bits on every SIMD level, and a short
 * dependency chain (a loop's own lane reduction added its 16 lanes one
 * after another, most of a 7x7 plane's time). Used by small_channel_backward
 * and by channel_sums for float32 planes under a float block, so both
 * schedules give the same bits. For planes under 256 elements a lane adds
 * at most 15 terms, the tail as many, then 5 additions: float sums err by
 * at most (2 + 14 + 5)u = 21u of the sum of the terms' magnitudes
 * (u = 2^-24). */
#define BN_SHORT_LANES 16
typedef T FN(lanes16) __attribute__((vector_size(16 * sizeof(T))));
typedef T FN(lanes8) __attribute__((vector_size(8 * sizeof(T))));
typedef T FN(lanes4) __attribute__((vector_size(4 * sizeof(T))));
typedef T FN(lanes2) __attribute__((vector_size(2 * sizeof(T))));
static inline __attribute__((always_inline)) void FN(short_plane_dy_sums)(const T *restrict g,
                                                                         const T *restrict v, int64_t inner,
                                                                         T m, double *restrict s_dy,
                                                                         double *restrict s_dyxmu)
{
    FN(lanes16) a = {0}, b = {0};
    int64_t j = 0;
    for (; j + BN_SHORT_LANES <= inner; j += BN_SHORT_LANES) {
        FN(lanes16) gv, vv;
        memcpy(&gv, g + j, sizeof gv);
        memcpy(&vv, v + j, sizeof vv);
        a += gv;
        b += gv * (vv - m);
    }
    T ta = 0, tb = 0; /* the last inner % 16 elements, in order */
    for (; j < inner; j++) {
        ta += g[j];
        tb += g[j] * (v[j] - m);
    }
    const FN(lanes8) a8 = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
                          __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    const FN(lanes8) b8 = __builtin_shufflevector(b, b, 0, 1, 2, 3, 4, 5, 6, 7) +
                          __builtin_shufflevector(b, b, 8, 9, 10, 11, 12, 13, 14, 15);
    const FN(lanes4) a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) + __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
    const FN(lanes4) b4 = __builtin_shufflevector(b8, b8, 0, 1, 2, 3) + __builtin_shufflevector(b8, b8, 4, 5, 6, 7);
    const FN(lanes2) a2 = __builtin_shufflevector(a4, a4, 0, 1) + __builtin_shufflevector(a4, a4, 2, 3);
    const FN(lanes2) b2 = __builtin_shufflevector(b4, b4, 0, 1) + __builtin_shufflevector(b4, b4, 2, 3);
    *s_dy = (double)((a2[0] + a2[1]) + ta);
    *s_dyxmu = (double)((b2[0] + b2[1]) + tb);
}

#if BN_FLOAT_BLOCKS
/* float32: the same sums with float arithmetic inside blocks of
 * BN_FB_LANES x BN_FB_ROUNDS elements, twice the SIMD width of double and
 * no conversions; each block's float lanes are then added into double
 * lanes, and the tail is summed in double. mean is a float value (the
 * saved mean), so x - mean and dy*(x - mean) are one rounding each, and a
 * lane's float sum of R = BN_FB_ROUNDS terms errs by at most (R - 1)u of
 * the sum of their magnitudes (u = 2^-24): the block sums err by less than
 * (R + 1)u = 5.4e-7 of sum|dy| and of sum|dy*(x - mean)|, and the double
 * additions after that by nothing of note. Same bits for any thread count
 * or cache size (a run's split into blocks depends on its length only). */
#define BN_FB_LANES 32
#define BN_FB_ROUNDS 8
PYBN_CLONES static void FN(run_dy_sums)(const T *restrict dy, const T *restrict x, int64_t n,
                                        double mean, double *restrict s_dy, double *restrict s_dyxmu)
{
    const int64_t block = BN_FB_LANES * BN_FB_ROUNDS;
    if (n < block) { /* mean is a float value: (float)mean is exact */
        FN(short_plane_dy_sums)(dy, x, n, (float)mean, s_dy, s_dyxmu);
        return;
    }
    const float m = (float)mean;
    double da[BN_FB_LANES] = {0.0}, db[BN_FB_LANES] = {0.0};
    int64_t i = 0;
    for (; i + block <= n; i += block) {
        float fa[BN_FB_LANES] = {0.0f}, fb[BN_FB_LANES] = {0.0f};
        for (int r = 0; r < BN_FB_ROUNDS; r++) {
            const float *restrict g = dy + i + r * BN_FB_LANES, *restrict v = x + i + r * BN_FB_LANES;
#pragma omp simd
            for (int j = 0; j < BN_FB_LANES; j++) {
                fa[j] += g[j];
                fb[j] += g[j] * (v[j] - m);
            }
        }
#pragma omp simd
        for (int j = 0; j < BN_FB_LANES; j++) {
            da[j] += (double)fa[j];
            db[j] += (double)fb[j];
        }
    }
    double a, b;
    FN(run_dy_sums_double)(dy + i, x + i, n - i, mean, &a, &b);
    for (int j = 0; j < BN_FB_LANES; j++) { /* in order of j: fixed */
        a += da[j];
        b += db[j];
    }
    *s_dy = a;
    *s_dyxmu = b;
}
#else
PYBN_CLONES static void FN(run_dy_sums)(const T *restrict dy, const T *restrict x, int64_t n,
                                        double mean, double *restrict s_dy, double *restrict s_dyxmu)
{
    FN(run_dy_sums_double)(dy, x, n, mean, s_dy, s_dyxmu);
}
#endif

/* y = (x - mean)*alpha + beta in double: centered, so that a channel whose
 * |mean*alpha| dwarfs y (a near-constant channel with a tiny eps: alpha =
 * gamma/sqrt(eps)) loses nothing to cancellation, as x*alpha + shift did
 * (float64: 1.3e-8 relative, found by the property tests). */
PYBN_CLONES static void FN(run_affine)(const T *restrict x, int64_t n, double mean, double alpha, double beta,
                                       T *restrict y)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] = (T)(((double)x[i] - mean) * alpha + beta);
}

/* The same map with alpha and shift rounded to T, in T's arithmetic: one
 * fused multiply-add per element and no conversions (see channel_affine
 * for when that is as accurate). */
PYBN_CLONES static void FN(run_affine_t)(const T *restrict x, int64_t n, T alpha, T shift,
                                         T *restrict y)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * alpha + shift;
}

/* dx = k_dy*dy + k_x*(x - mean) + k_c */
PYBN_CLONES static void FN(run_dx)(const T *restrict dy, const T *restrict x, int64_t n, double mean,
                                   double k_dy, double k_x, double k_c, T *restrict dx)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        dx[i] = (T)(k_dy * (double)dy[i] + k_x * ((double)x[i] - mean) + k_c);
}

/* The same with the coefficients c = {mean, k_dy, k_x, k_c} rounded to T. */
PYBN_CLONES static void FN(run_dx_t)(const T *restrict dy, const T *restrict x, int64_t n,
                                     const T *restrict c, T *restrict dx)
{
    const T mean = c[0], k_dy = c[1], k_x = c[2], k_c = c[3];
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        dx[i] = k_dy * dy[i] + k_x * (x[i] - mean) + k_c;
}

/* ---- a block of rows, columns [0, w) of a row stride ld (rows layout) ---- */

PYBN_CLONES static void FN(rows_sum)(const T *restrict x, int64_t rows, int64_t w, int64_t ld,
                                     double *restrict acc)
{
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict xr = x + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            acc[c] += (double)xr[c];
    }
}

PYBN_CLONES static void FN(rows_sqdev)(const T *restrict x, int64_t rows, int64_t w, int64_t ld,
                                       const double *restrict mean, double *restrict acc)
{
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict xr = x + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            double d = (double)xr[c] - mean[c];
            acc[c] += d * d;
        }
    }
}

PYBN_CLONES static void FN(rows_shifted_sums)(const T *restrict x, int64_t rows, int64_t w,
                                              int64_t ld, const double *restrict k, int in_t,
                                              double *restrict s1, double *restrict s2)
{
    /* eight rows per sweep: eight streams in flight for a core that is
     * bound by memory latency, an eighth of the accumulator traffic (than
     * four: 1.04-1.21x faster on 1024-4096 columns at 1 thread, 1.00-1.08x
     * at 2, AMD EPYC, interleaved); short rows spaced (bn_sweep_step); a
     * block's rest four, then one, at a time */
    const int64_t sweeps = rows / 8, step = bn_sweep_step(sweeps, w * (int64_t)sizeof(T));
#define BN_SWEEP_ROWS                                                                                      \
    const T *restrict x0 = x + (step == 1 ? 8 * j : j) * ld, *restrict x1 = x0 + step * ld;                \
    const T *restrict x2 = x1 + step * ld, *restrict x3 = x2 + step * ld, *restrict x4 = x3 + step * ld;   \
    const T *restrict x5 = x4 + step * ld, *restrict x6 = x5 + step * ld, *restrict x7 = x6 + step * ld;
#if BN_FLOAT_BLOCKS
    if (in_t) {
        /* float32 on request (BN_SHIFTED_T): a sweep's eight d = x - k and
         * d^2 (k a float) summed pairwise in float, then added in double: at
         * most 4u of the sweep's sum |d| and 6u of its sum d^2, u = 2^-24
         * (channel_stats_in_t says when that is kept); double halves the
         * SIMD width of a pass that one core runs at half the bandwidth */
        float kf[BN_COL_TILE];
        for (int64_t c = 0; c < w; c++)
            kf[c] = (float)k[c];
        for (int64_t j = 0; j < sweeps; j++) {
            BN_SWEEP_ROWS
#pragma omp simd
            for (int64_t c = 0; c < w; c++) {
                const float kc = kf[c];
                const float d0 = x0[c] - kc, d1 = x1[c] - kc, d2 = x2[c] - kc, d3 = x3[c] - kc;
                const float d4 = x4[c] - kc, d5 = x5[c] - kc, d6 = x6[c] - kc, d7 = x7[c] - kc;
                s1[c] += (double)(((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7)));
                s2[c] += (double)(((d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)) +
                                  ((d4 * d4 + d5 * d5) + (d6 * d6 + d7 * d7)));
            }
        }
    }
#endif
    for (int64_t j = 0; j < sweeps && !(BN_FLOAT_BLOCKS && in_t); j++) {
        BN_SWEEP_ROWS
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            const double d0 = (double)x0[c] - k[c], d1 = (double)x1[c] - k[c];
            const double d2 = (double)x2[c] - k[c], d3 = (double)x3[c] - k[c];
            const double d4 = (double)x4[c] - k[c], d5 = (double)x5[c] - k[c];
            const double d6 = (double)x6[c] - k[c], d7 = (double)x7[c] - k[c];
            s1[c] += ((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7));
            s2[c] += ((d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)) + ((d4 * d4 + d5 * d5) + (d6 * d6 + d7 * d7));
        }
    }
#undef BN_SWEEP_ROWS
    int64_t r = 8 * sweeps;
    for (; r + 4 <= rows; r += 4) {
        const T *restrict x0 = x + r * ld, *restrict x1 = x0 + ld, *restrict x2 = x1 + ld;
        const T *restrict x3 = x2 + ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            const double d0 = (double)x0[c] - k[c], d1 = (double)x1[c] - k[c];
            const double d2 = (double)x2[c] - k[c], d3 = (double)x3[c] - k[c];
            s1[c] += (d0 + d1) + (d2 + d3);
            s2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    }
    for (; r < rows; r++) {
        const T *restrict xr = x + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            double d = (double)xr[c] - k[c];
            s1[c] += d;
            s2[c] += d * d;
        }
    }
}

PYBN_CLONES static void FN(rows_dy_sums)(const T *restrict dy, const T *restrict x, int64_t rows,
                                         int64_t w, int64_t ld, const double *restrict mean,
                                         double *restrict s_dy, double *restrict s_dyxmu)
{
    /* four rows per sweep, short rows spaced (bn_sweep_step) */
    const int64_t sweeps = rows / 4, step = bn_sweep_step(sweeps, w * (int64_t)sizeof(T));
#if BN_FLOAT_BLOCKS
    /* float32: a sweep's four products and sums pairwise in float (at most
     * 3u of the sum of their magnitudes, u = 2^-24), the block's sweeps (at
     * most PYBN_ROW_BLOCK / 4 = 16) added in float, then once in double:
     * at most (3 + 16)u = 1.1e-6 of the block's magnitudes. At one thread
     * these sums are bound by issue, not memory (docs/design.md): adding
     * each sweep in double (widen, load, add, store) cost a quarter of the
     * time. The float mean is converted once (x - mean is one rounding);
     * w is at most a column tile. */
    float mf[BN_COL_TILE], f_dy[BN_COL_TILE], f_dyxmu[BN_COL_TILE];
    for (int64_t c = 0; c < w; c++) {
        mf[c] = (float)mean[c];
        f_dy[c] = 0.0f;
        f_dyxmu[c] = 0.0f;
    }
#endif
    for (int64_t j = 0; j < sweeps; j++) {
        const int64_t r = step == 1 ? 4 * j : j;
        const T *restrict g0 = dy + r * ld, *restrict g1 = g0 + step * ld, *restrict g2 = g1 + step * ld;
        const T *restrict g3 = g2 + step * ld;
        const T *restrict x0 = x + r * ld, *restrict x1 = x0 + step * ld, *restrict x2 = x1 + step * ld;
        const T *restrict x3 = x2 + step * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
#if BN_FLOAT_BLOCKS
            const float m = mf[c];
            f_dy[c] += (g0[c] + g1[c]) + (g2[c] + g3[c]);
            f_dyxmu[c] += (g0[c] * (x0[c] - m) + g1[c] * (x1[c] - m)) + (g2[c] * (x2[c] - m) + g3[c] * (x3[c] - m));
#else
            const double a0 = (double)g0[c], a1 = (double)g1[c], a2 = (double)g2[c], a3 = (double)g3[c];
            s_dy[c] += (a0 + a1) + (a2 + a3);
            s_dyxmu[c] += (a0 * ((double)x0[c] - mean[c]) + a1 * ((double)x1[c] - mean[c])) +
                          (a2 * ((double)x2[c] - mean[c]) + a3 * ((double)x3[c] - mean[c]));
#endif
        }
    }
#if BN_FLOAT_BLOCKS
#pragma omp simd
    for (int64_t c = 0; c < w; c++) {
        s_dy[c] += (double)f_dy[c];
        s_dyxmu[c] += (double)f_dyxmu[c];
    }
#endif
    for (int64_t r = 4 * sweeps; r < rows; r++) {
        const T *restrict dyr = dy + r * ld;
        const T *restrict xr = x + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            double g = (double)dyr[c];
            s_dy[c] += g;
            s_dyxmu[c] += g * ((double)xr[c] - mean[c]);
        }
    }
}

/* y = (x - mean)*alpha + beta in double, per column (see run_affine). */
PYBN_CLONES static void FN(rows_affine)(const T *restrict x, int64_t rows, int64_t w, int64_t ld,
                                        const double *restrict mean, const double *restrict alpha,
                                        const double *restrict beta, T *restrict y)
{
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict xr = x + r * ld;
        T *restrict yr = y + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            yr[c] = (T)(((double)xr[c] - mean[c]) * alpha[c] + beta[c]);
    }
}

PYBN_CLONES static void FN(rows_affine_t)(const T *restrict x, int64_t rows, int64_t w, int64_t ld,
                                          const T *restrict alpha, const T *restrict shift,
                                          T *restrict y)
{
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict xr = x + r * ld;
        T *restrict yr = y + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            yr[c] = xr[c] * alpha[c] + shift[c];
    }
}

PYBN_CLONES static void FN(rows_dx)(const T *restrict dy, const T *restrict x, int64_t rows,
                                    int64_t w, int64_t ld, const double *restrict mean,
                                    const double *restrict k_dy, const double *restrict k_x,
                                    const double *restrict k_c, T *restrict dx)
{
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict dyr = dy + r * ld;
        const T *restrict xr = x + r * ld;
        T *restrict dxr = dx + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            dxr[c] = (T)(k_dy[c] * (double)dyr[c] + k_x[c] * ((double)xr[c] - mean[c]) + k_c[c]);
    }
}

/* coef holds 4 rows of cld: mean, k_dy, k_x, k_c rounded to T. */
PYBN_CLONES static void FN(rows_dx_t)(const T *restrict dy, const T *restrict x, int64_t rows,
                                      int64_t w, int64_t ld, const T *restrict coef, int64_t cld,
                                      T *restrict dx)
{
    const T *restrict mean = coef, *restrict k_dy = coef + cld, *restrict k_x = coef + 2 * cld;
    const T *restrict k_c = coef + 3 * cld;
    for (int64_t r = 0; r < rows; r++) {
        const T *restrict dyr = dy + r * ld;
        const T *restrict xr = x + r * ld;
        T *restrict dxr = dx + r * ld;
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            dxr[c] = k_dy[c] * dyr[c] + k_x[c] * (xr[c] - mean[c]) + k_c[c];
    }
}

/* ---- per-channel reductions ---------------------------------------------- */

/* Per-channel sums of one kind over (outer, C, inner):
 *   BN_SUM: out1 = sum(x);  BN_SQDEV: out1 = sum((x-mean)^2);
 *   BN_DY:  out1 = sum(dy), out2 = sum(dy*(x-mean));
 *   BN_SHIFTED: out1 = sum(x-k), out2 = sum((x-k)^2), k passed as mean. */
static pybn_status FN(channel_sums)(int64_t outer, int64_t C, int64_t inner, const T *restrict x,
                                    const T *restrict dy, const double *restrict mean, int kind,
                                    double *restrict out1, double *restrict out2, int nt)
{
    const int n_out = kind == BN_SUM || kind == BN_SQDEV ? 1 : 2;
    if (inner > 1) {
        const int64_t planes = outer * C;
        double *partial = (double *)malloc((size_t)(planes * n_out) * sizeof(double));
        if (!partial)
            return PYBN_ENOMEM;
        PYBN_PARALLEL_FOR(nt, p, planes, {
            const int64_t c = p % C;
            const T *xp = x + p * inner;
            if (kind == BN_SUM)
                partial[p] = FN(run_sum)(xp, inner);
            else if (kind == BN_SQDEV)
                partial[p] = FN(run_sqdev)(xp, inner, mean[c]);
            else if (kind == BN_SHIFTED || kind == BN_SHIFTED_T)
                FN(run_shifted_sums)(xp, inner, mean[c], &partial[p], &partial[planes + p]);
            else
                FN(run_dy_sums)(dy + p * inner, xp, inner, mean[c], &partial[p], &partial[planes + p]);
        });
        combine_partials(partial, outer, C, planes, n_out, out1, out2, nt);
        free(partial);
        return PYBN_OK;
    }

    const int64_t blocks = bn_row_blocks(outer);
    const int64_t tiles = bn_col_tiles(C, BN_COL_TILE);
    const int64_t stride = blocks * C; /* between the two outputs' partials */
    double *partial = (double *)calloc((size_t)(stride * n_out), sizeof(double));
    if (!partial)
        return PYBN_ENOMEM;
    PYBN_PARALLEL_FOR(nt, task, blocks * tiles, {
        const bn_tile tl = bn_row_task(task, tiles, BN_COL_TILE, outer, C);
        const int64_t rows = tl.rows, w = tl.w, at = tl.at, c0 = tl.c0;
        double *acc = partial + task / tiles * C + c0;
        if (kind == BN_SUM)
            FN(rows_sum)(x + at, rows, w, C, acc);
        else if (kind == BN_SQDEV)
            FN(rows_sqdev)(x + at, rows, w, C, mean + c0, acc);
        else if (kind == BN_SHIFTED || kind == BN_SHIFTED_T)
            FN(rows_shifted_sums)(x + at, rows, w, C, mean + c0, kind == BN_SHIFTED_T, acc, acc + stride);
        else
            FN(rows_dy_sums)(dy + at, x + at, rows, w, C, mean + c0, acc, acc + stride);
    });
    combine_partials(partial, blocks, C, stride, n_out, out1, out2, nt);
    free(partial);
    return PYBN_OK;
}

/* Whether channel c normalizes in T's arithmetic: y = fma(x, alpha_t,
 * shift_t) errs by at most about (2|y| + 2|shift|) * eps(T), a few ulps of
 * y while |shift| is small, i.e. unless |mean| >> std. Large shifts keep
 * the double path, exact to one rounding whatever the mean. */
static inline int FN(affine_in_t)(double shift) { return fabs(shift) <= BN_T_SHIFT_BOUND; }

/* Whether all (any) channels normalize in T's arithmetic (affine_in_t). */
PYBN_CLONES static void FN(shifts_in_t)(int64_t C, const double *restrict shift, int *all_t, int *any_t)
{
    int all = 1, any = 0;
    for (int64_t c = 0; c < C; c++) {
        const int t = FN(affine_in_t)(shift[c]);
        all &= t;
        any |= t;
    }
    *all_t = all;
    *any_t = any;
}

/* coef = alpha, then shift, rounded to T. */
PYBN_CLONES static void FN(round_to_t)(int64_t C, const double *restrict alpha, const double *restrict shift,
                                       T *restrict coef)
{
    for (int64_t c = 0; c < C; c++)
        coef[c] = (T)alpha[c];
    for (int64_t c = 0; c < C; c++)
        coef[C + c] = (T)shift[c];
}

/* y = alpha[c]*x + shift[c] over (outer, C, inner). The planes layout
 * decides T's arithmetic channel by channel (as forward_by_channel does);
 * the rows layout for all columns at once. */
static void FN(channel_affine)(int64_t outer, int64_t C, int64_t inner, const T *restrict x,
                               const double *restrict mean, const double *restrict alpha,
                               const double *restrict shift, const double *restrict beta,
                               T *restrict y, int after_sums, int nt)
{
    int all_t, any_t;
    FN(shifts_in_t)(C, shift, &all_t, &any_t);
    T *coef = (inner > 1 ? any_t : all_t) ? (T *)malloc((size_t)(2 * C) * sizeof(T)) : NULL;
    if (coef)
        FN(round_to_t)(C, alpha, shift, coef);
    /* after channel_sums, its tasks walked backwards (see PYBN_PARALLEL_SHARES) */
    const int long_runs = (inner > 1 ? inner : C) * (int64_t)sizeof(T) >= BN_AFFINE_STREAM_MIN_RUN;
    if (inner > 1 && coef && all_t && long_runs && FN(stream_planes)(outer, C, inner, x, NULL, coef, y, nt)) {
        /* done, streamed past the cache */
    } else if (inner > 1) {
        PYBN_PARALLEL_SHARES(nt, after_sums, p, outer * C, {
            const int64_t c = p % C;
            if (coef && FN(affine_in_t)(shift[c]))
                FN(run_affine_t)(x + p * inner, inner, coef[c], coef[C + c], y + p * inner);
            else
                FN(run_affine)(x + p * inner, inner, mean[c], alpha[c], beta[c], y + p * inner);
        });
    } else if (coef && long_runs && FN(stream_rows)(outer, C, x, NULL, coef, y, nt)) {
        /* done, streamed past the cache */
    } else {
        const int64_t width = bn_map_width(outer, C, nt), tiles = bn_col_tiles(C, width);
        PYBN_PARALLEL_SHARES(nt, after_sums, task, bn_row_blocks(outer) * tiles, {
            const bn_tile tl = bn_row_task(task, tiles, width, outer, C);
            const int64_t rows = tl.rows, w = tl.w, at = tl.at, c0 = tl.c0;
            if (coef)
                FN(rows_affine_t)(x + at, rows, w, C, coef + c0, coef + C + c0, y + at);
            else
                FN(rows_affine)(x + at, rows, w, C, mean + c0, alpha + c0, beta + c0, y + at);
        });
    }
    free(coef); /* a failed malloc above only meant the double path */
}

/* The dx map's coefficients of one channel from its sums:
 * dx = g*(dy - mean(dy) - xhat*mean(dy*xhat)), xhat = (x-mean)*istd. */
static inline void FN(dx_coefficients)(double s_dy, double s_dyxmu, double istd, double gamma, int training,
                                       int64_t n, double *restrict k)
{
    const double g = gamma * istd;
    k[0] = g;
    k[1] = training ? -g * istd * istd * s_dyxmu / (double)n : 0.0;
    k[2] = training ? -g * s_dy / (double)n : 0.0;
}

/* dgamma, dbeta and the dx map's coefficients (dx_coefficients) of every
 * channel from its sums, in loops without branches that vectorize. */
PYBN_CLONES static void FN(backward_coefficients)(int64_t C, int64_t n, int training, const T *restrict gamma,
                                                  const T *restrict invstd, const double *restrict s_dy,
                                                  const double *restrict s_dyxmu, T *restrict dgamma,
                                                  T *restrict dbeta, double *restrict k_dy,
                                                  double *restrict k_x, double *restrict k_c)
{
    if (dgamma)
        for (int64_t c = 0; c < C; c++)
            dgamma[c] = (T)(s_dyxmu[c] * (double)invstd[c]);
    if (dbeta)
        for (int64_t c = 0; c < C; c++)
            dbeta[c] = (T)s_dy[c];
    for (int64_t c = 0; c < C; c++) {
        double k[3];
        FN(dx_coefficients)(s_dy[c], s_dyxmu[c], (double)invstd[c], gamma ? (double)gamma[c] : 1.0, training, n, k);
        k_dy[c] = k[0];
        k_x[c] = k[1];
        k_c[c] = k[2];
    }
}

/* Whether dx is computed in T's arithmetic (the rule of channel_dx). */
PYBN_CLONES static int FN(dx_in_t)(int64_t C, const double *restrict mean, const T *restrict invstd)
{
    int ok = 1;
    for (int64_t c = 0; c < C; c++) /* no early exit: it vectorizes */
        ok &= fabs(mean[c] * (double)invstd[c]) <= BN_T_SHIFT_BOUND;
    return ok;
}

/* dx = k_dy[c]*dy + k_x[c]*(x - mean[c]) + k_c[c] over (outer, C, inner). */
static void FN(channel_dx)(int64_t outer, int64_t C, int64_t inner, const T *restrict dy,
                           const T *restrict x, const double *restrict mean,
                           const T *restrict invstd, const double *restrict k_dy,
                           const double *restrict k_x, const double *restrict k_c, T *restrict dx,
                           int nt)
{
    /* As for the forward (channel_affine): in T's precision, rounding the
     * mean to T adds about |k_x*mean|*eps(T) to dx, a few ulps of the
     * k_x*(x - mean) term while |mean| <= BN_T_SHIFT_BOUND standard
     * deviations. Beyond that (a large mean) the double path stays exact. */
    const int t_ok = FN(dx_in_t)(C, mean, invstd);
    T *coef = t_ok ? (T *)malloc((size_t)(4 * C) * sizeof(T)) : NULL; /* NULL: double path */
    if (coef) {
        FN(round_to_t)(C, mean, k_dy, coef);
        FN(round_to_t)(C, k_x, k_c, coef + 2 * C);
    }
    /* the tasks of channel_sums, walked backwards (see PYBN_PARALLEL_SHARES) */
    if (inner > 1 && coef && FN(stream_planes)(outer, C, inner, dy, x, coef, dx, nt)) {
        /* done, streamed past the cache */
    } else if (inner > 1) {
        PYBN_PARALLEL_SHARES(nt, 1, p, outer * C, {
            const int64_t c = p % C;
            if (coef) {
                const T per_channel[4] = {coef[c], coef[C + c], coef[2 * C + c], coef[3 * C + c]};
                FN(run_dx_t)(dy + p * inner, x + p * inner, inner, per_channel, dx + p * inner);
            } else {
                FN(run_dx)(dy + p * inner, x + p * inner, inner, mean[c], k_dy[c], k_x[c], k_c[c],
                           dx + p * inner);
            }
        });
    } else if (coef && FN(stream_rows)(outer, C, dy, x, coef, dx, nt)) {
        /* done, streamed past the cache */
    } else {
        const int64_t width = bn_map_width(outer, C, nt), tiles = bn_col_tiles(C, width);
        PYBN_PARALLEL_SHARES(nt, 1, task, bn_row_blocks(outer) * tiles, {
            const bn_tile tl = bn_row_task(task, tiles, width, outer, C);
            const int64_t rows = tl.rows, w = tl.w, at = tl.at, c0 = tl.c0;
            if (coef)
                FN(rows_dx_t)(dy + at, x + at, rows, w, C, coef + c0, C, dx + at);
            else
                FN(rows_dx)(dy + at, x + at, rows, w, C, mean + c0, k_dy + c0, k_x + c0, k_c + c0,
                            dx + at);
        });
    }
    free(coef);
}

/* mean and invstd = 1/sqrt(var + eps) in double from running statistics.
 * Cloned, as the per-channel loops below: vector sqrt and division matter
 * to small calls, where channels are a good share of the elements. */
PYBN_CLONES static void FN(stats_from_running)(int64_t C, const T *restrict running_mean,
                                               const T *restrict running_var, double eps,
                                               double *restrict mean, double *restrict invstd)
{
    for (int64_t c = 0; c < C; c++) {
        mean[c] = (double)running_mean[c];
        invstd[c] = 1.0 / sqrt((double)running_var[c] + eps);
    }
}

/* alpha = gamma*invstd, shift = beta - mean*alpha; writes mean/invstd out. */
PYBN_CLONES static void FN(affine_from_stats)(int64_t C, const T *restrict gamma, const T *restrict beta,
                                  const double *restrict mean, const double *restrict invstd,
                                  double *restrict alpha, double *restrict shift, double *restrict beta_d,
                                  T *restrict mean_out, T *restrict invstd_out)
{
    /* one loop per output, each without branches: they vectorize (one loop
     * with them all did not, a tenth of a 256x1024 forward at 2 threads) */
    if (gamma)
        for (int64_t c = 0; c < C; c++)
            alpha[c] = (double)gamma[c] * invstd[c];
    else
        for (int64_t c = 0; c < C; c++)
            alpha[c] = 1.0 * invstd[c];
    if (beta)
        for (int64_t c = 0; c < C; c++)
            shift[c] = (double)beta[c] - mean[c] * alpha[c];
    else
        for (int64_t c = 0; c < C; c++)
            shift[c] = 0.0 - mean[c] * alpha[c];
    if (beta_d)
        for (int64_t c = 0; c < C; c++)
            beta_d[c] = beta ? (double)beta[c] : 0.0;
    if (mean_out)
        for (int64_t c = 0; c < C; c++)
            mean_out[c] = (T)mean[c];
    if (invstd_out)
        for (int64_t c = 0; c < C; c++)
            invstd_out[c] = (T)invstd[c];
}

/* ---- one task per channel (planes layout) -------------------------------- */

/* Backward of one channel of small planes (inner < BN_SMALL_PLANE), its
 * plane loops in one call: a call per plane would cost more than the
 * plane's work. Each plane's sums are formed in T's arithmetic in 16
 * fixed lanes (short_plane_dy_sums: for float32 an error below 21u of the
 * plane's sum of magnitudes, the bits channel_sums gives in memory order),
 * and the planes' sums are added in double in order of o, so the results
 * do not depend on the thread count or the schedule. next: ask for the next
 * channel's planes on the way (a plane's successor in memory is the same
 * plane of the next channel; the hardware does not follow such short runs). */
PYBN_CLONES static void FN(small_channel_backward)(const T *restrict dy, const T *restrict x, int64_t outer,
                                                   int64_t ld, int64_t inner, double mean, double istd,
                                                   double gamma, int training, int in_t, int next,
                                                   T *restrict dx, double *restrict sums)
{
    const T m = (T)mean;
    const int64_t bytes = inner * (int64_t)sizeof(T);
    double s_dy = 0.0, s_dyxmu = 0.0;
    for (int64_t o = 0; o < outer; o++) {
        const T *restrict g = dy + o * ld, *restrict v = x + o * ld;
        if (next) { /* the same plane of the next channel: it follows this one */
            bn_prefetch(g + inner, bytes);
            bn_prefetch(v + inner, bytes);
        }
        double a, b;
        FN(short_plane_dy_sums)(g, v, inner, m, &a, &b);
        s_dy += a;
        s_dyxmu += b;
    }
    sums[0] = s_dy;
    sums[1] = s_dyxmu;
    if (!dx)
        return;
    double k[3];
    FN(dx_coefficients)(s_dy, s_dyxmu, istd, gamma, training, outer * inner, k);
    const T k_dy = (T)k[0], k_x = (T)k[1], k_c = (T)k[2];
    for (int64_t o = outer - 1; o >= 0; o--) {
        const T *restrict g = dy + o * ld, *restrict v = x + o * ld;
        T *restrict out = dx + o * ld;
        if (in_t) {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                out[j] = k_dy * g[j] + k_x * (v[j] - m) + k_c;
        } else {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                out[j] = (T)(k[0] * (double)g[j] + k[1] * ((double)v[j] - mean) + k[2]);
        }
    }
}

/* Backward, planes layout, one task per channel: the channel's sums over
 * its outer planes in order of o (channel_sums' plane sums, added as
 * combine_partials adds them: the same bits), then dx over the same planes
 * walking backwards, so that they come from this core's cache, which the
 * sums just filled: x and dy are read from memory once, not twice. */
static void FN(backward_by_channel)(int64_t outer, int64_t C, int64_t inner, const T *restrict dy,
                                    const T *restrict x, const T *restrict gamma,
                                    const double *restrict mean, const T *restrict invstd, int training,
                                    T *restrict dx, T *restrict dgamma, T *restrict dbeta, int nt)
{
    const int64_t n = outer * inner, ld = C * inner;
    const int in_t = FN(dx_in_t)(C, mean, invstd);
    const int level = in_t && dx ? FN(bn_stream_level)(outer * C * inner, 3, dx) : 0;
    const int64_t plane_bytes = inner * (int64_t)sizeof(T), ahead = bn_prefetch_ahead(plane_bytes);
    PYBN_TEAM(nt, {
        int64_t lo, hi;
        pybn_share(C, &lo, &hi);
        for (int64_t c = lo; c < hi; c++) {
            if (inner < BN_SMALL_PLANE) {
                double sums[2];
                const double istd = (double)invstd[c];
                FN(small_channel_backward)(dy + c * inner, x + c * inner, outer, ld, inner, mean[c], istd,
                                           gamma ? (double)gamma[c] : 1.0, training, in_t, c + 1 < hi,
                                           dx ? dx + c * inner : NULL, sums);
                if (dgamma)
                    dgamma[c] = (T)(sums[1] * istd);
                if (dbeta)
                    dbeta[c] = (T)sums[0];
                continue;
            }
            double s_dy = 0.0, s_dyxmu = 0.0;
            for (int64_t o = 0; o < outer; o++) {
                const int64_t at = (o * C + c) * inner;
                if (o + ahead < outer) {
                    bn_prefetch(x + at + ahead * ld, plane_bytes);
                    bn_prefetch(dy + at + ahead * ld, plane_bytes);
                }
                double a, b;
                FN(run_dy_sums)(dy + at, x + at, inner, mean[c], &a, &b);
                s_dy += a;
                s_dyxmu += b;
            }
            const double istd = (double)invstd[c];
            double k[3];
            FN(dx_coefficients)(s_dy, s_dyxmu, istd, gamma ? (double)gamma[c] : 1.0, training, n, k);
            if (dgamma)
                dgamma[c] = (T)(s_dyxmu * istd);
            if (dbeta)
                dbeta[c] = (T)s_dy;
            if (!dx)
                continue;
            const T per_channel[4] = {(T)mean[c], (T)k[0], (T)k[1], (T)k[2]};
            for (int64_t o = outer - 1; o >= 0; o--) {
                const int64_t at = (o * C + c) * inner;
                if (level)
                    FN(stream_plane_dx)(level, dy + at, x + at, inner, per_channel, dx + at);
                else if (in_t)
                    FN(run_dx_t)(dy + at, x + at, inner, per_channel, dx + at);
                else
                    FN(run_dx)(dy + at, x + at, inner, mean[c], k[0], k[1], k[2], dx + at);
            }
        }
        stream_fence_if(level);
    });
}

/* One channel's batch statistics from its sums (see batchnorm.c for the
 * one-pass float32 formula): the mean, and the sum of squared deviations. */
static inline void FN(stats_from_sums)(double k, double s1, double s2, int64_t n, double *restrict mean,
                                       double *restrict sq_dev)
{
    const double d = s2 - s1 * (s1 / (double)n);
    *mean = k + s1 / (double)n;
    /* rounding can leave a tiny negative; a NaN (from a NaN or inf in the
     * channel) must stay NaN, as the two-pass variance */
    *sq_dev = d < 0.0 ? 0.0 : d;
}

/* The one-pass shift of channel c: its first value (0 when that is inf or
 * NaN, which then gives the two-pass formulas' inf/NaN). */
static inline double FN(first_value)(const T *restrict x, int64_t c, int64_t inner)
{
    const double first = (double)x[c * inner];
    return isfinite(first) ? first : 0.0;
}

/* The rows layout's float32 shift: each column's mean over the first row
 * block, rounded to float (channel_stats_in_t keeps the sums it gives
 * when that lies within a standard deviation of the column's mean, as a
 * block's mean of independent rows nearly always does). */
static void FN(first_block_means)(int64_t outer, int64_t C, const T *restrict x, double *restrict k)
{
    const int64_t rows = outer < PYBN_ROW_BLOCK ? outer : PYBN_ROW_BLOCK;
    for (int64_t c = 0; c < C; c++)
        k[c] = 0.0;
    FN(rows_sum)(x, rows, C, C, k);
    for (int64_t c = 0; c < C; c++)
        k[c] = (double)(T)(k[c] / (double)rows);
}

/* Whether the float sweeps' sums (BN_SHIFTED_T) give every column's
 * statistics well enough to keep: d = x - k and its square round once, a
 * sweep's pairwise sums in float add at most 4u * sum|d| to s1 and 6u *
 * sum d^2 to s2 (u = 2^-24), so n*var = s2 - s1^2/n errs by at most
 * 14u * n * (var + delta^2), delta = mean - k, and the mean by
 * 4u * sqrt(var + delta^2). Kept when delta^2 <= var: var within 28u =
 * 1.7e-6 relative, the mean within 5.7u standard deviations (the double
 * sums of the planes layout: n * 1.1e-16). Not kept, so summed again in
 * double, for a shift more than a standard deviation off, sums that
 * overflowed float or met inf/NaN, and a var + eps so small that float's
 * underflow (2^-149 a term) would show. */
PYBN_CLONES static int FN(channel_stats_in_t)(int64_t C, int64_t n, double eps, const double *restrict k,
                                              const double *restrict s1, const double *restrict s2)
{
    int ok = 1;
    for (int64_t c = 0; c < C; c++) { /* no early exit: it vectorizes */
        double mean, sq_dev;
        FN(stats_from_sums)(k[c], s1[c], s2[c], n, &mean, &sq_dev);
        const double delta = s1[c] / (double)n, var = sq_dev / (double)n;
        ok &= isfinite(s1[c]) & isfinite(s2[c]) & (delta * delta <= var) & (var + eps >= 0x1p-100);
    }
    return ok;
}

/* stats_from_sums over every channel, in place: s1 becomes the mean, s2
 * the sum of squared deviations. */
PYBN_CLONES static void FN(stats_from_sums_all)(int64_t C, int64_t n, const double *restrict k,
                                                double *restrict s1, double *restrict s2)
{
    for (int64_t c = 0; c < C; c++)
        FN(stats_from_sums)(k[c], s1[c], s2[c], n, &s1[c], &s2[c]);
}

/* The running averages' next values, from a batch's mean and (biased) var. */
static inline T FN(next_running_mean)(T running, double mean, double momentum)
{
    return (T)((1.0 - momentum) * (double)running + momentum * mean);
}

static inline T FN(next_running_var)(T running, double var, int64_t n, double momentum)
{
    return (T)((1.0 - momentum) * (double)running + momentum * var * (double)n / (double)(n - 1));
}

/* Running averages of channel c, and its invstd, from its mean and var. */
static inline double FN(update_running)(int64_t c, double mean, double var, int64_t n, double momentum,
                                        double eps, T *restrict running_mean, T *restrict running_var)
{
    if (running_mean)
        running_mean[c] = FN(next_running_mean)(running_mean[c], mean, momentum);
    if (running_var)
        running_var[c] = FN(next_running_var)(running_var[c], var, n, momentum);
    return 1.0 / sqrt(var + eps);
}

/* update_running over every channel, one loop per output so that each
 * vectorizes (a loop of update_running's conditional stores does not):
 * sq_dev (n * var) becomes invstd. */
PYBN_CLONES static void FN(running_and_invstd)(int64_t C, const double *restrict mean, double *restrict sq_dev,
                                               int64_t n, double momentum, double eps,
                                               T *restrict running_mean, T *restrict running_var)
{
    if (running_mean)
        for (int64_t c = 0; c < C; c++)
            running_mean[c] = FN(next_running_mean)(running_mean[c], mean[c], momentum);
    if (running_var)
        for (int64_t c = 0; c < C; c++)
            running_var[c] = FN(next_running_var)(running_var[c], sq_dev[c] / (double)n, n, momentum);
    for (int64_t c = 0; c < C; c++)
        sq_dev[c] = 1.0 / sqrt(sq_dev[c] / (double)n + eps);
}

/* Training forward, planes layout, one task per channel: its statistics
 * over its outer planes (plane sums added in order of o, as channel_sums
 * and combine_partials add them: the same bits), then y over the same
 * planes walking backwards, from the cache the statistics filled: x is
 * read from memory once, not twice. */
static void FN(forward_by_channel)(int64_t outer, int64_t C, int64_t inner, const T *restrict x,
                                   const T *restrict gamma, const T *restrict beta, double momentum,
                                   double eps, T *restrict running_mean, T *restrict running_var,
                                   T *restrict y, T *restrict mean_out, T *restrict invstd_out, int nt)
{
    const int64_t n = outer * inner, ld = C * inner;
    const int level = FN(bn_stream_level)(outer * C * inner, 2, y);
    const int64_t plane_bytes = inner * (int64_t)sizeof(T), ahead = bn_prefetch_ahead(plane_bytes);
    PYBN_TEAM(nt, {
        int64_t lo, hi;
        pybn_share(C, &lo, &hi);
        for (int64_t c = lo; c < hi; c++) {
            const T *restrict xc = x + c * inner;
            double mean, sq_dev = 0.0;
            if (BN_ONE_PASS_STATS) {
                const double k = FN(first_value)(x, c, inner);
                double s1 = 0.0, s2 = 0.0;
                for (int64_t o = 0; o < outer; o++) {
                    if (o + ahead < outer)
                        bn_prefetch(xc + (o + ahead) * ld, plane_bytes);
                    double a, b;
                    FN(run_shifted_sums)(xc + o * ld, inner, k, &a, &b);
                    s1 += a;
                    s2 += b;
                }
                FN(stats_from_sums)(k, s1, s2, n, &mean, &sq_dev);
            } else {
                double s = 0.0;
                for (int64_t o = 0; o < outer; o++) {
                    if (o + ahead < outer)
                        bn_prefetch(xc + (o + ahead) * ld, plane_bytes);
                    s += FN(run_sum)(xc + o * ld, inner);
                }
                mean = s / (double)n;
                for (int64_t o = 0; o < outer; o++)
                    sq_dev += FN(run_sqdev)(xc + o * ld, inner, mean);
            }
            const double istd = FN(update_running)(c, mean, sq_dev / (double)n, n, momentum, eps,
                                                   running_mean, running_var);
            double alpha, shift;
            FN(affine_from_stats)(1, gamma ? gamma + c : NULL, beta ? beta + c : NULL, &mean, &istd, &alpha,
                                  &shift, NULL, mean_out ? mean_out + c : NULL, invstd_out ? invstd_out + c : NULL);
            const int in_t = FN(affine_in_t)(shift);
            for (int64_t o = outer - 1; o >= 0; o--) {
                const int64_t at = o * ld + c * inner;
                if (in_t && level)
                    FN(stream_plane_affine)(level, x + at, inner, (T)alpha, (T)shift, y + at);
                else if (in_t)
                    FN(run_affine_t)(x + at, inner, (T)alpha, (T)shift, y + at);
                else
                    FN(run_affine)(x + at, inner, mean, alpha, beta ? (double)beta[c] : 0.0, y + at);
            }
        }
        stream_fence_if(level);
    });
}

/* ---- public entry points -------------------------------------------------- */

pybn_status FN(pybn_batchnorm_forward_train)(
    int64_t outer, int64_t C, int64_t inner, const T *restrict x, const T *restrict gamma,
    const T *restrict beta, double momentum, double eps, T *restrict running_mean,
    T *restrict running_var, T *restrict y, T *restrict mean, T *restrict invstd, int n_threads)
{
    if (!pybn_shape_ok(outer, C, inner) || !x || !y)
        return PYBN_EINVAL;
    if (outer * inner < 2)
        return PYBN_EBATCH;
    if (!bn_eps_ok(eps))
        return PYBN_EEPS;
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return PYBN_EMOMENTUM;
    const int64_t n = outer * inner;
    const int nt = pybn_team_size(n * C, PYBN_SMALL_WORK, n_threads);
    double *scratch = (double *)malloc((size_t)(5 * C) * sizeof(double));
    if (!scratch)
        return PYBN_ENOMEM;
    double *mean_d = scratch, *var_d = scratch + C, *alpha = scratch + 2 * C, *shift = scratch + 3 * C;
    double *beta_d = scratch + 4 * C;

    if (inner > 1 && bn_by_channel(C, nt)) {
        FN(forward_by_channel)(outer, C, inner, x, gamma, beta, momentum, eps, running_mean, running_var, y,
                               mean, invstd, nt);
        free(scratch);
        return PYBN_OK;
    }
    pybn_status st;
    if (BN_ONE_PASS_STATS) {
        double *k = alpha; /* free until affine_from_stats */
        st = PYBN_EINVAL; /* not yet summed */
        if (BN_FLOAT_BLOCKS && inner == 1) {
            FN(first_block_means)(outer, C, x, k);
            st = FN(channel_sums)(outer, C, inner, x, NULL, k, BN_SHIFTED_T, mean_d, var_d, nt);
            if (st == PYBN_OK && !FN(channel_stats_in_t)(C, n, eps, k, mean_d, var_d))
                st = PYBN_EINVAL; /* summed again in double */
        }
        if (st == PYBN_EINVAL) {
            for (int64_t c = 0; c < C; c++)
                k[c] = FN(first_value)(x, c, inner);
            st = FN(channel_sums)(outer, C, inner, x, NULL, k, BN_SHIFTED, mean_d, var_d, nt);
        }
        if (st == PYBN_OK)
            FN(stats_from_sums_all)(C, n, k, mean_d, var_d);
    } else {
        st = FN(channel_sums)(outer, C, inner, x, NULL, NULL, BN_SUM, mean_d, NULL, nt);
        if (st == PYBN_OK) {
            for (int64_t c = 0; c < C; c++)
                mean_d[c] /= (double)n;
            st = FN(channel_sums)(outer, C, inner, x, NULL, mean_d, BN_SQDEV, var_d, NULL, nt);
        }
    }
    if (st != PYBN_OK) {
        free(scratch);
        return st;
    }
    FN(running_and_invstd)(C, mean_d, var_d, n, momentum, eps, running_mean, running_var); /* var_d: invstd */
    FN(affine_from_stats)(C, gamma, beta, mean_d, var_d, alpha, shift, beta_d, mean, invstd);
    FN(channel_affine)(outer, C, inner, x, mean_d, alpha, shift, beta_d, y, 1, nt);
    free(scratch);
    return PYBN_OK;
}

pybn_status FN(pybn_batchnorm_forward_eval)(
    int64_t outer, int64_t C, int64_t inner, const T *restrict x, const T *restrict gamma,
    const T *restrict beta, const T *restrict running_mean, const T *restrict running_var,
    double eps, T *restrict y, T *restrict mean, T *restrict invstd, int n_threads)
{
    if (!pybn_shape_ok(outer, C, inner) || !x || !y || !running_mean || !running_var ||
        outer * inner < 1)
        return PYBN_EINVAL;
    if (!bn_eps_ok(eps))
        return PYBN_EEPS;
    const int nt = pybn_team_size(outer * inner * C, PYBN_SMALL_WORK, n_threads);
    double *scratch = (double *)malloc((size_t)(5 * C) * sizeof(double));
    if (!scratch)
        return PYBN_ENOMEM;
    double *mean_d = scratch, *invstd_d = scratch + C, *alpha = scratch + 2 * C, *shift = scratch + 3 * C;
    double *beta_d = scratch + 4 * C;
    FN(stats_from_running)(C, running_mean, running_var, eps, mean_d, invstd_d);
    FN(affine_from_stats)(C, gamma, beta, mean_d, invstd_d, alpha, shift, beta_d, mean, invstd);
    FN(channel_affine)(outer, C, inner, x, mean_d, alpha, shift, beta_d, y, 0, nt);
    free(scratch);
    return PYBN_OK;
}

pybn_status FN(pybn_batchnorm_backward)(
    int64_t outer, int64_t C, int64_t inner, const T *restrict dy, const T *restrict x,
    const T *restrict gamma, const T *restrict mean, const T *restrict invstd, int training,
    T *restrict dx, T *restrict dgamma, T *restrict dbeta, int n_threads)
{
    if (!pybn_shape_ok(outer, C, inner) || !dy || !x || !mean || !invstd || outer * inner < 1)
        return PYBN_EINVAL;
    const int64_t n = outer * inner;
    const int nt = pybn_team_size(n * C, PYBN_SMALL_WORK, n_threads);
    double *scratch = (double *)malloc((size_t)(6 * C) * sizeof(double));
    if (!scratch)
        return PYBN_ENOMEM;
    double *mean_d = scratch, *s_dy = scratch + C, *s_dyxmu = scratch + 2 * C;
    double *k_dy = scratch + 3 * C, *k_x = scratch + 4 * C, *k_c = scratch + 5 * C;
    for (int64_t c = 0; c < C; c++)
        mean_d[c] = (double)mean[c];

    const int need_sums = dgamma || dbeta || (dx && training);
    /* float32 planes under 16 KB only where strided reads pay
     * (pybn_short_planes_by_channel: a machine's choice, for any thread
     * count); small planes then always by channel (small_channel_backward
     * sums them its own way) */
    const int fused = sizeof(T) != sizeof(float) || inner * (int64_t)sizeof(T) >= BN_SHORT_PLANE_BYTES ||
                      pybn_short_planes_by_channel();
    if (need_sums && inner > 1 && fused && (inner < BN_SMALL_PLANE || bn_by_channel(C, nt))) {
        FN(backward_by_channel)(outer, C, inner, dy, x, gamma, mean_d, invstd, training, dx, dgamma, dbeta, nt);
        free(scratch);
        return PYBN_OK;
    }
    if (need_sums) {
        pybn_status st = FN(channel_sums)(outer, C, inner, x, dy, mean_d, BN_DY, s_dy, s_dyxmu, nt);
        if (st != PYBN_OK) {
            free(scratch);
            return st;
        }
    }
    FN(backward_coefficients)(C, n, training, gamma, invstd, s_dy, s_dyxmu, dgamma, dbeta, k_dy, k_x, k_c);
    if (dx)
        FN(channel_dx)(outer, C, inner, dy, x, mean_d, invstd, k_dy, k_x, k_c, dx, nt);
    free(scratch);
    return PYBN_OK;
}

#undef FN
