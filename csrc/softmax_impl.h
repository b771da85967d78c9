/* softmax_impl.h - softmax-family kernels for one dtype. Included by
 * softmax.c once per dtype with T, SFX and EXP defined, and optionally
 * ROW_MAX, ROW_EXP_SUM, ROWS_SOFTMAX and ROW_LOG_SOFTMAX_BWD
 * (hand-vectorized replacements of the portable row functions); not a
 * header to include anywhere else.
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

/* The sum's lanes are fixed here, not left to the vectorizer: whether the
 * exps are stored (e) then cannot change the sum's order, and the streamed
 * path, which sums without storing, gets the cached path's bits. */
PYBN_CLONES static double FN(row_exp_sum_portable)(const T *restrict z, int64_t K, T m, T *restrict e)
{
    double acc[SM_LANES] = {0.0};
    int64_t k = 0;
    for (; k + SM_LANES <= K; k += SM_LANES) {
#pragma omp simd
        for (int j = 0; j < SM_LANES; j++) {
            const T v = EXP(z[k + j] - m);
            if (e)
                e[k + j] = v;
            acc[j] += (double)v;
        }
    }
    for (int j = 0; k < K; k++, j++) {
        const T v = EXP(z[k] - m);
        if (e)
            e[k] = v;
        acc[j] += (double)v;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
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

/* dz = p * (dp - dot), in T as PyTorch: for float, two roundings after the
 * dot's, an error below 3 ulp of p * max(|dp|, |dot|); double arithmetic
 * here cost the backward a third of its speed (0.53-0.98x PyTorch). */
PYBN_CLONES static void FN(row_softmax_backward)(const T *restrict dp, const T *restrict p,
                                                 int64_t K, double dot, T *restrict dz)
{
    const T dot_t = (T)dot;
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        dz[k] = p[k] * (dp[k] - dot_t);
}

/* dz = dlp - exp(lp) * sum, in T (as above) */
PYBN_CLONES static void FN(row_log_softmax_backward_portable)(const T *restrict dlp, const T *restrict lp,
                                                              int64_t K, double sum, T *restrict dz)
{
    const T sum_t = (T)sum;
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        dz[k] = dlp[k] - EXP(lp[k]) * sum_t;
}

static void FN(row_log_softmax_backward)(const T *restrict dlp, const T *restrict lp, int64_t K, double sum,
                                         T *restrict dz)
{
#ifdef ROW_LOG_SOFTMAX_BWD
    ROW_LOG_SOFTMAX_BWD(dlp, lp, K, sum, dz);
#else
    FN(row_log_softmax_backward_portable)(dlp, lp, K, sum, dz);
#endif
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

/* ---- rows streamed past the cache ---------------------------------------- */

/* When a call's arrays exceed the last-level cache, rows are computed into
 * a small buffer that stays in L1, by the functions the cached path uses,
 * and copied out with streaming stores (stream.h): the output is written
 * once and never read for ownership, and its bits do not depend on the
 * cache size. Which calls stream is measured (stream_rows below). */
#define SM_CHUNK (SM_STREAM_BYTES / (int64_t)sizeof(T))
#define SM_LINE (64 / (int64_t)sizeof(T))

typedef struct {
    T *dst;       /* where buf[0] goes */
    int64_t used; /* values in buf */
    int level;    /* the SIMD level to stream with */
    T buf[SM_CHUNK + SM_LINE];
} FN(streamer);

/* Copies out what is buffered, up to dst's last 64-byte boundary unless
 * `last` (so that lines are streamed whole); the rest moves to the front. */
static void FN(stream_flush)(FN(streamer) *restrict w, int last)
{
    int64_t n = w->used;
    if (!last) {
        const uintptr_t start = (uintptr_t)w->dst, end = (uintptr_t)(w->dst + n) & ~(uintptr_t)63;
        n = end > start ? (int64_t)((end - start) / sizeof(T)) : 0;
    }
    stream_copy(w->level, w->buf, (size_t)n * sizeof(T), w->dst);
    memmove(w->buf, w->buf + n, (size_t)(w->used - n) * sizeof(T));
    w->dst += n;
    w->used -= n;
}

/* A streamer writing from dst on at `level`, and its end: the rest of the
 * buffer copied out and this thread's streaming stores fenced. */
static void FN(stream_begin)(FN(streamer) *restrict w, T *dst, int level)
{
    w->dst = dst;
    w->used = 0;
    w->level = level;
}

static void FN(stream_end)(FN(streamer) *restrict w)
{
    FN(stream_flush)(w, 1);
    stream_fence_if(w->level);
}

/* Room for the next n <= SM_CHUNK output values, in buf. */
static T *FN(stream_room)(FN(streamer) *restrict w, int64_t n)
{
    if (w->used + n > SM_CHUNK + SM_LINE)
        FN(stream_flush)(w, 0); /* leaves fewer than SM_LINE */
    T *p = w->buf + w->used;
    w->used += n;
    return p;
}

/* Whether rows of K stream (log-softmax, or softmax and cross-entropy)
 * when the arrays exceed the cache. Measured on 0.5-1 GB arrays
 * (docs/design.md): rows of 1024 floats and more gain up to 1.3x, shorter
 * rows lose the buffer's copy (0.9x); a row that must be computed twice to
 * stream (a softmax or a cross-entropy row longer than the buffer: its exps
 * are needed after its sum) loses 0.6-0.8x. The backwards, which gained
 * nothing (0.95-1.03x), never stream. Rows that fit the buffer stream only
 * where pybn_stream_buffered() (not on AMD, where they lost); longer
 * log-softmax rows gained on both vendors (0.84-0.95 of plain's time on
 * an AMD EPYC). */
static int FN(stream_rows)(int log_out, int64_t K)
{
    return K * (int64_t)sizeof(T) >= SM_STREAM_MIN_ROW && (K > SM_CHUNK ? log_out : pybn_stream_buffered());
}

/* softmax or log_softmax of `rows` rows (see stream_rows) through w */
static void FN(softmax_rows_streamed)(FN(streamer) *restrict w, const T *restrict z, int64_t rows,
                                      int64_t K, int log_out)
{
    if (K <= SM_CHUNK) {
        const int64_t per_room = SM_CHUNK / K;
        for (int64_t r = 0; r < rows; r += per_room) {
            const int64_t n = rows - r < per_room ? rows - r : per_room;
            FN(softmax_rows)(z + r * K, n, K, log_out, FN(stream_room)(w, n * K));
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++, z += K) { /* log_softmax: chunk by chunk */
        int nan_row;
        const T m = FN(row_max)(z, K, &nan_row);
        const T log_sum = nan_row ? 0 : (T)log(FN(row_exp_sum)(z, K, m, NULL));
        for (int64_t c0 = 0; c0 < K; c0 += SM_CHUNK) {
            const int64_t n = K - c0 < SM_CHUNK ? K - c0 : SM_CHUNK;
            T *p = FN(stream_room)(w, n);
            if (nan_row)
                FN(row_fill_nan)(p, n);
            else
                FN(row_log_softmax)(z + c0, n, m, log_sum, p);
        }
    }
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
            dk[j] = log_grad ? gk[j] - EXP(yk[j]) * (T)s[j] : yk[j] * (gk[j] - (T)s[j]);
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
        const int log_out = op == SM_LOG_SOFTMAX;
        const int level = FN(stream_rows)(log_out, K) ? stream_level(outer * K, 2, sizeof(T), out) : 0;
        if (level) {
            /* each thread streams its share of the rows out and fences it */
            PYBN_TEAM(nt, {
                int64_t lo, hi;
                pybn_share(tasks, &lo, &hi);
                const int64_t r0 = lo * per_task, r1 = hi * per_task < outer ? hi * per_task : outer;
                FN(streamer) w;
                FN(stream_begin)(&w, out + r0 * K, level);
                FN(softmax_rows_streamed)(&w, a + r0 * K, r1 - r0, K, log_out);
                FN(stream_end)(&w);
            });
            return PYBN_OK;
        }
        PYBN_PARALLEL_FOR(nt, t, tasks, {
            const int64_t r0 = t * per_task, n = outer - r0 < per_task ? outer - r0 : per_task;
            FN(softmax_rows)(a + r0 * K, n, K, log_out, out + r0 * K);
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

/* A row's gradient from its exps e, in place. */
static void FN(ce_dz)(T *restrict e, int64_t K, double s, double q_sum, const T *restrict t,
                      int64_t label, double smoothing, double scale)
{
    if (!t && smoothing == 0.0) {
        /* dz = scale * (p - onehot): the softmax's scaling pass, then the
         * label's entry on its own */
        const double e_y = (double)e[label];
        FN(row_scale)(e, K, scale / s);
        e[label] = (T)(scale * (e_y / s - 1.0));
    } else {
        FN(row_ce_grad)(e, K, 1.0 / s, q_sum, t, label, smoothing, scale);
    }
}

/* The loss of one row (label >= 0, or the probability row t) and, unless
 * dz and w are both NULL, its gradient: into dz (cached) or through w
 * (streamed; rows of at most SM_CHUNK). */
static double FN(ce_row)(const T *restrict z, int64_t K, int64_t label, const T *restrict t,
                         double smoothing, double scale, FN(streamer) *restrict w, T *restrict dz)
{
    T *e = w ? FN(stream_room)(w, K) : dz; /* where the exps are kept */
    int nan_row;
    const T m = FN(row_max)(z, K, &nan_row);
    if (nan_row) {
        if (e)
            FN(row_fill_nan)(e, K);
        return NAN;
    }
    const double s = FN(row_exp_sum)(z, K, m, e);
    /* log_softmax(z)_k = (z_k - m) - log(s): subtracting the max first
     * keeps log(s) from vanishing next to a huge m */
    const double log_s = log(s);
    double loss, q_sum = 1.0;
    if (!t) {
        /* as nll_loss: only the labelled term unless smoothing asks for all */
        loss = (1.0 - smoothing) * (log_s - ((double)z[label] - (double)m));
        if (smoothing > 0.0)
            loss -= smoothing * FN(row_mean_log_softmax)(z, K, (double)m, log_s);
    } else {
        loss = FN(row_ce_prob_loss)(z, t, K, (double)m, log_s, smoothing, &q_sum);
    }
    if (e)
        FN(ce_dz)(e, K, s, q_sum, t, label, smoothing, scale);
    return loss;
}

static pybn_status FN(cross_entropy)(int64_t rows, int64_t K, const T *restrict z,
                                     const int64_t *restrict labels, const T *restrict target,
                                     double smoothing, double scale, double *restrict loss,
                                     T *restrict dz, int n_threads)
{
    const int nt = pybn_team_size(rows * K, SM_SMALL_WORK, n_threads);
    const int level = dz && FN(stream_rows)(0, K) ? stream_level(rows * K, target ? 3 : 2, sizeof(T), dz) : 0;
    if (level) {
        PYBN_TEAM(nt, {
            int64_t lo, hi;
            pybn_share(rows, &lo, &hi);
            FN(streamer) w;
            FN(stream_begin)(&w, dz + lo * K, level);
            for (int64_t r = lo; r < hi; r++)
                loss[r] = FN(ce_row)(z + r * K, K, labels ? labels[r] : -1,
                                     labels ? NULL : target + r * K, smoothing, scale, &w, NULL);
            FN(stream_end)(&w);
        });
        return PYBN_OK;
    }
    PYBN_PARALLEL_FOR(nt, r, rows, {
        loss[r] = FN(ce_row)(z + r * K, K, labels ? labels[r] : -1, labels ? NULL : target + r * K,
                             smoothing, scale, NULL, dz ? dz + r * K : NULL);
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
