/* softmax_impl.h - softmax-family kernels for one dtype. Included by
 * softmax.c once per dtype with T, SFX and EXP defined, and optionally
 * ROW_MAX, ROW_EXP_SUM and ROWS_SOFTMAX (hand-vectorized replacements of
 * the portable row functions); not a header to include anywhere else.
 *
 * Design: z is viewed as (outer, K, inner) and reduced along K.
 *   - rows (inner == 1): a task is one or more whole rows (about
 *     SM_TASK_WORK elements), vectorized along K;
 *   - columns (inner > 1): a task is a tile of up to SM_TILE adjacent
 *     columns of one outer index, vectorized across the tile, so a reduction
 *     along a middle axis needs no transposed copy.
 * A row or column is always reduced by one thread, so results do not depend
 * on the thread count. Sums accumulate in double.
 * Stability: exp(z - max) never overflows; a row whose max is -inf (all
 * -inf) or +inf, or that holds a NaN, gives NaN everywhere, as PyTorch. */

#define FN(name) PYBN_CAT(name, SFX)

/* ---- rows ---------------------------------------------------------------- */

/* max(z) ignoring NaN, and whether the row's softmax is all NaN: a NaN,
 * a +inf or only -inf entries make it so (as PyTorch). Other rows have
 * z - max <= 0 everywhere, which the exp of the fast path relies on. */
PYBN_CLONES static T FN(row_max_portable)(const T *restrict z, int64_t K, int *restrict nan_row)
{
    T m = -INFINITY;
    int nans = 0;
#pragma omp simd reduction(max : m) reduction(| : nans)
    for (int64_t k = 0; k < K; k++) {
        m = z[k] > m ? z[k] : m;
        nans |= z[k] != z[k];
    }
    *nan_row = nans || !isfinite(m);
    return m;
}

static T FN(row_max)(const T *restrict z, int64_t K, int *restrict nan_row)
{
#ifdef ROW_MAX
    return ROW_MAX(z, K, nan_row);
#else
    return FN(row_max_portable)(z, K, nan_row);
#endif
}

static void FN(row_fill_nan)(T *restrict out, int64_t K)
{
    for (int64_t k = 0; k < K; k++)
        out[k] = (T)NAN;
}

PYBN_CLONES static double FN(row_exp_sum_portable)(const T *restrict z, int64_t K, T m, T *restrict e)
{
    double s = 0.0;
    if (e) {
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; k++) {
            T v = EXP(z[k] - m);
            e[k] = v;
            s += (double)v;
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; k++)
            s += (double)EXP(z[k] - m);
    }
    return s;
}

/* sum(exp(z - m)) for a row that is not a NaN row; stores exp(z - m) in e
 * unless e is NULL. */
static double FN(row_exp_sum)(const T *restrict z, int64_t K, T m, T *restrict e)
{
#ifdef ROW_EXP_SUM
    return ROW_EXP_SUM(z, K, m, e);
#else
    return FN(row_exp_sum_portable)(z, K, m, e);
#endif
}

/* p *= scale, in T: for float, one rounding of scale costs < 1 ulp and
 * saves two conversions per element on the row's last pass. */
PYBN_CLONES static void FN(row_scale)(T *restrict p, int64_t K, double scale)
{
    const T scale_t = (T)scale;
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        p[k] *= scale_t;
}

/* lp = (z - m) - log_sum: subtracting the max first keeps z - m exact for
 * the largest entries; adding m + log(sum) first would round it away. */
PYBN_CLONES static void FN(row_log_softmax)(const T *restrict z, int64_t K, T m, T log_sum,
                                            T *restrict lp)
{
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        lp[k] = (z[k] - m) - log_sum;
}

PYBN_CLONES static double FN(row_dot)(const T *restrict a, const T *restrict b, int64_t K)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; k++)
        s += (double)a[k] * (double)b[k];
    return s;
}

PYBN_CLONES static double FN(row_sum)(const T *restrict a, int64_t K)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; k++)
        s += (double)a[k];
    return s;
}

/* mean(log_softmax(z)) = sum(((z - m) - log_s) / K), each term scaled
 * before the sum as the uniform part of a smoothed target is: a plain
 * sum(z) overflows near the dtype's max where the loss does not. */
PYBN_CLONES static double FN(row_mean_log_softmax)(const T *restrict a, int64_t K, double m,
                                                   double log_s)
{
    double s = 0.0;
    const double inv_k = 1.0 / (double)K;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; k++)
        s += (((double)a[k] - m) - log_s) * inv_k;
    return s;
}

/* dz = p * (dp - dot) */
PYBN_CLONES static void FN(row_softmax_backward)(const T *restrict dp, const T *restrict p,
                                                 int64_t K, double dot, T *restrict dz)
{
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        dz[k] = (T)((double)p[k] * ((double)dp[k] - dot));
}

/* dz = dlp - exp(lp) * sum */
PYBN_CLONES static void FN(row_log_softmax_backward)(const T *restrict dlp, const T *restrict lp,
                                                     int64_t K, double sum, T *restrict dz)
{
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        dz[k] = (T)((double)dlp[k] - (double)EXP(lp[k]) * sum);
}

/* softmax (log_out == 0) or log_softmax of `rows` rows of K. */
static void FN(softmax_rows_portable)(const T *restrict z, int64_t rows, int64_t K, int log_out,
                                      T *restrict out)
{
    for (int64_t r = 0; r < rows; r++, z += K, out += K) {
        int nan_row;
        const T m = FN(row_max)(z, K, &nan_row);
        if (nan_row)
            FN(row_fill_nan)(out, K);
        else if (!log_out)
            FN(row_scale)(out, K, 1.0 / FN(row_exp_sum)(z, K, m, out));
        else
            FN(row_log_softmax)(z, K, m, (T)log(FN(row_exp_sum)(z, K, m, NULL)), out);
    }
}

static void FN(softmax_rows)(const T *restrict z, int64_t rows, int64_t K, int log_out, T *restrict out)
{
#ifdef ROWS_SOFTMAX
    ROWS_SOFTMAX(z, rows, K, log_out, out);
#else
    FN(softmax_rows_portable)(z, rows, K, log_out, out);
#endif
}

/* ---- column tiles: z + k*inner + j for j < w ------------------------------ */

PYBN_CLONES static void FN(cols_softmax)(const T *restrict z, int64_t K, int64_t inner, int64_t w,
                                         int log_out, T *restrict out)
{
    T m[SM_TILE];
    double s[SM_TILE];
    for (int64_t j = 0; j < w; j++) {
        m[j] = -INFINITY;
        s[j] = 0.0;
    }
    for (int64_t k = 0; k < K; k++) {
        const T *restrict zk = z + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < w; j++)
            m[j] = zk[j] > m[j] ? zk[j] : m[j];
    }
    for (int64_t k = 0; k < K; k++) {
        const T *restrict zk = z + k * inner;
        T *restrict ok = out + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < w; j++) {
            T v = EXP(zk[j] - m[j]);
            if (!log_out)
                ok[j] = v;
            s[j] += (double)v;
        }
    }
    if (log_out) {
        T log_sum[SM_TILE];
        for (int64_t j = 0; j < w; j++)
            log_sum[j] = (T)log(s[j]);
        for (int64_t k = 0; k < K; k++) {
            const T *restrict zk = z + k * inner;
            T *restrict ok = out + k * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; j++)
                ok[j] = (zk[j] - m[j]) - log_sum[j];
        }
    } else {
        for (int64_t j = 0; j < w; j++)
            s[j] = 1.0 / s[j];
        for (int64_t k = 0; k < K; k++) {
            T *restrict ok = out + k * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; j++)
                ok[j] = (T)((double)ok[j] * s[j]);
        }
    }
}

/* log_grad == 0: dz = y*(g - sum(g*y)); otherwise dz = g - exp(y)*sum(g). */
PYBN_CLONES static void FN(cols_backward)(const T *restrict g, const T *restrict y, int64_t K,
                                          int64_t inner, int64_t w, int log_grad, T *restrict dz)
{
    double s[SM_TILE];
    for (int64_t j = 0; j < w; j++)
        s[j] = 0.0;
    for (int64_t k = 0; k < K; k++) {
        const T *restrict gk = g + k * inner;
        const T *restrict yk = y + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < w; j++)
            s[j] += log_grad ? (double)gk[j] : (double)gk[j] * (double)yk[j];
    }
    for (int64_t k = 0; k < K; k++) {
        const T *restrict gk = g + k * inner;
        const T *restrict yk = y + k * inner;
        T *restrict dk = dz + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < w; j++)
            dk[j] = log_grad ? (T)((double)gk[j] - (double)EXP(yk[j]) * s[j])
                             : (T)((double)yk[j] * ((double)gk[j] - s[j]));
    }
}

/* ---- drivers ---------------------------------------------------------------- */

/* One driver for the four ops: a = z (forward) or the incoming gradient,
 * b = NULL (forward) or the forward output. */
static pybn_status FN(softmax_op)(int op, int64_t outer, int64_t K, int64_t inner,
                                  const T *restrict a, const T *restrict b, T *restrict out,
                                  int n_threads)
{
    if (!pybn_shape_ok(outer, K, inner) || !a || !out || (op >= SM_SOFTMAX_BWD && !b))
        return PYBN_EINVAL;
    const int nt = pybn_team_size(outer * K * inner, SM_SMALL_WORK, n_threads);
    if (inner == 1 && op <= SM_LOG_SOFTMAX) {
        /* tasks of whole rows, about SM_TASK_WORK elements each */
        const int64_t per_task = K >= SM_TASK_WORK ? 1 : SM_TASK_WORK / K;
        const int64_t tasks = (outer + per_task - 1) / per_task;
        PYBN_PARALLEL_FOR(nt, t, tasks, {
            const int64_t r0 = t * per_task, n = outer - r0 < per_task ? outer - r0 : per_task;
            FN(softmax_rows)(a + r0 * K, n, K, op == SM_LOG_SOFTMAX, out + r0 * K);
        });
        return PYBN_OK;
    }
    if (inner == 1) {
        PYBN_PARALLEL_FOR(nt, r, outer, {
            const T *ar = a + r * K;
            T *outr = out + r * K;
            if (op == SM_SOFTMAX_BWD)
                FN(row_softmax_backward)(ar, b + r * K, K, FN(row_dot)(ar, b + r * K, K), outr);
            else
                FN(row_log_softmax_backward)(ar, b + r * K, K, FN(row_sum)(ar, K), outr);
        });
        return PYBN_OK;
    }
    const int64_t tiles = (inner + SM_TILE - 1) / SM_TILE;
    PYBN_PARALLEL_FOR(nt, task, outer * tiles, {
        const int64_t o = task / tiles, j0 = (task % tiles) * SM_TILE;
        const int64_t w = inner - j0 < SM_TILE ? inner - j0 : SM_TILE;
        const int64_t at = o * K * inner + j0;
        if (op <= SM_LOG_SOFTMAX)
            FN(cols_softmax)(a + at, K, inner, w, op == SM_LOG_SOFTMAX, out + at);
        else
            FN(cols_backward)(a + at, b + at, K, inner, w, op == SM_LOG_SOFTMAX_BWD, out + at);
    });
    return PYBN_OK;
}

pybn_status FN(pybn_softmax)(int64_t outer, int64_t K, int64_t inner, const T *restrict z,
                             T *restrict p, int n_threads)
{
    return FN(softmax_op)(SM_SOFTMAX, outer, K, inner, z, NULL, p, n_threads);
}

pybn_status FN(pybn_log_softmax)(int64_t outer, int64_t K, int64_t inner, const T *restrict z,
                                 T *restrict lp, int n_threads)
{
    return FN(softmax_op)(SM_LOG_SOFTMAX, outer, K, inner, z, NULL, lp, n_threads);
}

pybn_status FN(pybn_softmax_backward)(int64_t outer, int64_t K, int64_t inner,
                                      const T *restrict dp, const T *restrict p, T *restrict dz,
                                      int n_threads)
{
    return FN(softmax_op)(SM_SOFTMAX_BWD, outer, K, inner, dp, p, dz, n_threads);
}

pybn_status FN(pybn_log_softmax_backward)(int64_t outer, int64_t K, int64_t inner,
                                          const T *restrict dlp, const T *restrict lp,
                                          T *restrict dz, int n_threads)
{
    return FN(softmax_op)(SM_LOG_SOFTMAX_BWD, outer, K, inner, dlp, lp, dz, n_threads);
}

/* ---- fused softmax cross-entropy ------------------------------------------ */

/* dz = scale * (e/sum * q_sum - q), q = (1-s)*t + s/K; t is a one-hot at
 * `label` (t == NULL) or a probability row. e holds exp(z - max) on entry. */
PYBN_CLONES static void FN(row_ce_grad)(T *restrict e, int64_t K, double inv_sum, double q_sum,
                                        const T *restrict t, int64_t label, double smoothing,
                                        double scale)
{
    const double off = smoothing / (double)K, on = 1.0 - smoothing;
#pragma omp simd
    for (int64_t k = 0; k < K; k++) {
        const double tk = t ? (double)t[k] : (double)(k == label);
        e[k] = (T)(scale * ((double)e[k] * inv_sum * q_sum - (on * tk + off)));
    }
}

/* -sum(((1-s)*t + s/K) * log_softmax(z)) over a probability row, with
 * log_softmax(z) = (z - m) - log_s in that order; and sum(q). */
PYBN_CLONES static double FN(row_ce_prob_loss)(const T *restrict z, const T *restrict t, int64_t K,
                                               double m, double log_s, double smoothing,
                                               double *restrict q_sum)
{
    const double off = smoothing / (double)K, on = 1.0 - smoothing;
    double loss = 0.0, qs = 0.0;
#pragma omp simd reduction(+ : loss, qs)
    for (int64_t k = 0; k < K; k++) {
        const double q = on * (double)t[k] + off;
        loss -= q * (((double)z[k] - m) - log_s);
        qs += q;
    }
    *q_sum = qs;
    return loss;
}

static pybn_status FN(cross_entropy)(int64_t rows, int64_t K, const T *restrict z,
                                     const int64_t *restrict labels, const T *restrict target,
                                     double smoothing, double scale, double *restrict loss,
                                     T *restrict dz, int n_threads)
{
    const int nt = pybn_team_size(rows * K, SM_SMALL_WORK, n_threads);
    PYBN_PARALLEL_FOR(nt, r, rows, {
        const T *zr = z + r * K;
        T *dzr = dz ? dz + r * K : NULL;
        int nan_row;
        const T m = FN(row_max)(zr, K, &nan_row);
        if (nan_row) {
            loss[r] = NAN;
            if (dzr)
                FN(row_fill_nan)(dzr, K);
            continue;
        }
        const double s = FN(row_exp_sum)(zr, K, m, dzr);
        /* log_softmax(z)_k = (z_k - m) - log(s): subtracting the max first
         * keeps log(s) from vanishing next to a huge m */
        const double log_s = log(s);
        double q_sum = 1.0;
        if (labels) {
            const int64_t y = labels[r];
            /* as nll_loss: only the labelled term unless smoothing asks for all */
            loss[r] = (1.0 - smoothing) * (log_s - ((double)zr[y] - (double)m));
            if (smoothing > 0.0)
                loss[r] -= smoothing * FN(row_mean_log_softmax)(zr, K, (double)m, log_s);
        } else {
            loss[r] = FN(row_ce_prob_loss)(zr, target + r * K, K, (double)m, log_s, smoothing, &q_sum);
        }
        if (dzr && labels && smoothing == 0.0) {
            /* dz = scale * (p - onehot): the softmax's scaling pass, then
             * the label's entry on its own */
            const int64_t y = labels[r];
            const double e_y = (double)dzr[y];
            FN(row_scale)(dzr, K, scale / s);
            dzr[y] = (T)(scale * (e_y / s - 1.0));
        } else if (dzr) {
            FN(row_ce_grad)(dzr, K, 1.0 / s, q_sum, labels ? NULL : target + r * K,
                            labels ? labels[r] : -1, smoothing, scale);
        }
    });
    return PYBN_OK;
}

pybn_status FN(pybn_softmax_cross_entropy_labels)(int64_t rows, int64_t K, const T *restrict logits,
                                                  const int64_t *restrict labels,
                                                  double label_smoothing, double grad_scale,
                                                  double *restrict loss, T *restrict dlogits,
                                                  int64_t *restrict bad_row, int n_threads)
{
    if (!pybn_shape_ok(rows, K, 1) || !logits || !labels || !loss)
        return PYBN_EINVAL;
    if (!ce_smoothing_ok(label_smoothing))
        return PYBN_ESMOOTHING;
    for (int64_t r = 0; r < rows; r++) {
        if (labels[r] < 0 || labels[r] >= K) {
            if (bad_row)
                *bad_row = r;
            return PYBN_ELABEL;
        }
    }
    return FN(cross_entropy)(rows, K, logits, labels, NULL, label_smoothing, grad_scale, loss,
                             dlogits, n_threads);
}

pybn_status FN(pybn_softmax_cross_entropy_probs)(int64_t rows, int64_t K, const T *restrict logits,
                                                 const T *restrict target, double label_smoothing,
                                                 double grad_scale, double *restrict loss,
                                                 T *restrict dlogits, int n_threads)
{
    if (!pybn_shape_ok(rows, K, 1) || !logits || !target || !loss)
        return PYBN_EINVAL;
    if (!ce_smoothing_ok(label_smoothing))
        return PYBN_ESMOOTHING;
    return FN(cross_entropy)(rows, K, logits, NULL, target, label_smoothing, grad_scale, loss,
                             dlogits, n_threads);
}

#undef FN
