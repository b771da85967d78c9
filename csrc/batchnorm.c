/* batchnorm.c - batch normalization forward (train/eval) and backward,
 * float32 and float64, from one dtype template (batchnorm_impl.h). */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "pybn.h"
#include "stream.h"

/* Columns per task in the rows layout: wide matrices with few rows still
 * split into enough tasks for every thread. Does not change any sum. */
#define BN_COL_TILE 1024

/* The normalize pass (eval, and the training forward's second pass) streams
 * its output past the cache only in rows or planes of at least this many
 * bytes: each run is streamed from its own first aligned line, so the line
 * it shares with the run before it gets plain and streamed stores, which
 * costs most where runs are short. AMD EPYC (32 MB L3), one process,
 * streamed vs plain, interleaved: eval 160x256x14x14 (784-byte planes),
 * 256x512x7x7, 64x384x17x17 and 30000x300 were 1.04-1.65x faster plain
 * (160x256x14x14 0.75x -> 1.23x PyTorch at 1 thread, 0.76x -> 1.04x at 2),
 * training forward of 30000x300, 40000x250, 100000x96 1.13-1.29x; 4000-byte
 * rows and 12.5 KB planes even. The backward's dx keeps streaming every
 * run: plain stores were 0.55-0.84x as fast there on four NCHW shapes. Does
 * not change any result. */
#define BN_AFFINE_STREAM_MIN_RUN 2048

/* Normalization in the input's precision (float arithmetic for float32)
 * while every |shift| = |beta - mean*gamma*invstd| is at most this; see
 * channel_affine(). */
#define BN_T_SHIFT_BOUND 16.0

/* The per-channel reductions channel_sums() can form (BN_SHIFTED_T:
 * BN_SHIFTED with the rows layout's sweeps in float, float32 only). */
enum { BN_SUM = 0, BN_SQDEV = 1, BN_DY = 2, BN_SHIFTED = 3, BN_SHIFTED_T = 4 };

static int bn_eps_ok(double eps) { return eps > 0.0 && isfinite(eps); }

static int64_t bn_row_blocks(int64_t rows) { return (rows + PYBN_ROW_BLOCK - 1) / PYBN_ROW_BLOCK; }

/* Column tiles of `width` over C columns. */
static int64_t bn_col_tiles(int64_t C, int64_t width) { return (C + width - 1) / width; }

/* Task `task` of the rows layout: row block task / tiles times column tile
 * task % tiles (tiles of `width` columns) of an (outer, C) matrix; `at` is
 * its first element. */
typedef struct {
    int64_t rows, w, at, c0;
} bn_tile;

static inline bn_tile bn_row_task(int64_t task, int64_t tiles, int64_t width, int64_t outer, int64_t C)
{
    const int64_t r0 = task / tiles * PYBN_ROW_BLOCK, c0 = task % tiles * width;
    const bn_tile t = {outer - r0 < PYBN_ROW_BLOCK ? outer - r0 : PYBN_ROW_BLOCK,
                       C - c0 < width ? C - c0 : width, r0 * C + c0, c0};
    return t;
}

/* Distance in rows between the rows one sweep of the rows layout's sums
 * adds together, for `sweeps` sweeps over rows of `row_bytes`: adjacent
 * rows (1) for long rows; for short ones, rows a sweep count apart, so each
 * of the sweep's streams runs on sequentially from one sweep to the next
 * instead of ending with its row (a 1 KB row: after 16 lines). Measured
 * (AMD EPYC, float32, interleaved, caches flushed; docs/design.md):
 * 256-700 columns 1.2-1.5x faster at 1 thread and 1.1-1.4x at 2, 1024
 * columns up to 1.14x, 1400 and more even or slower. Any four rows of a
 * block have the float blocks' error bound, and the order is fixed for any
 * thread count. */
#define BN_SPACED_MAX_ROW_BYTES 4096
static inline int64_t bn_sweep_step(int64_t sweeps, int64_t row_bytes)
{
    return row_bytes <= BN_SPACED_MAX_ROW_BYTES && sweeps > 1 ? sweeps : 1;
}

/* Column width of the tasks of the maps (y from x, dx from dy and x):
 * whole rows, one contiguous run per task that the prefetchers follow
 * across pages, unless the rows are too few to share among the threads.
 * Measured against 1024-column tiles on 2048-8192 columns (AMD EPYC, one
 * interleaved run): 1.03-1.3x faster at 1 and 2 threads, never slower
 * beyond noise. The rows a thread maps are still the ones it summed. */
static int64_t bn_map_width(int64_t outer, int64_t C, int nt)
{
    return nt == 1 || bn_row_blocks(outer) >= 4 * nt ? C : BN_COL_TILE;
}

/* out[c] = sum over b of partial[b*C + c], b in increasing order (and
 * out2 from partial + stride when n_out == 2). Tasks are strips of
 * columns, so the adds run along rows of partial, vectorized. */
#define BN_COMBINE_STRIP 64
PYBN_CLONES static void combine_strip(const double *restrict partial, int64_t blocks, int64_t C,
                                      int64_t w, double *restrict out)
{
    double s[BN_COMBINE_STRIP] = {0.0};
    for (int64_t b = 0; b < blocks; b++) {
        const double *restrict row = partial + b * C;
#pragma omp simd
        for (int64_t j = 0; j < w; j++)
            s[j] += row[j];
    }
    for (int64_t j = 0; j < w; j++)
        out[j] = s[j];
}

static void combine_partials(const double *partial, int64_t blocks, int64_t C, int64_t stride,
                             int n_out, double *out1, double *out2, int nt)
{
    const int64_t strips = (C + BN_COMBINE_STRIP - 1) / BN_COMBINE_STRIP;
    PYBN_PARALLEL_FOR(blocks * C >= PYBN_SMALL_WORK ? nt : 1, t, strips, {
        const int64_t c0 = t * BN_COMBINE_STRIP;
        const int64_t w = C - c0 < BN_COMBINE_STRIP ? C - c0 : BN_COMBINE_STRIP;
        combine_strip(partial + c0, blocks, C, w, out1 + c0);
        if (n_out == 2)
            combine_strip(partial + stride + c0, blocks, C, w, out2 + c0);
    });
}

/* One plane of dx streamed (level from bn_stream_level), c = {mean, k_dy,
 * k_x, k_c}: the arithmetic of run_dx_t. */
static void stream_plane_dx_f32(int level, const float *restrict dy, const float *restrict x, int64_t n,
                                const float *restrict c, float *restrict dx)
{
#ifdef PYBN_HAVE_STREAM
    (level == 2 ? stream_dx_f32_avx512 : stream_dx_f32_avx2)(dy, x, n, c, dx);
#else
    (void)level, (void)dy, (void)x, (void)n, (void)c, (void)dx;
#endif
}

static void stream_plane_affine_f32(int level, const float *restrict x, int64_t n, float a, float b,
                                    float *restrict y)
{
#ifdef PYBN_HAVE_STREAM
    (level == 2 ? stream_affine_f32_avx512 : stream_affine_f32_avx2)(x, n, a, b, y);
#else
    (void)level, (void)x, (void)n, (void)a, (void)b, (void)y;
#endif
}

static void stream_plane_affine_f64(int level, const double *restrict x, int64_t n, double a, double b,
                                    double *restrict y)
{
    (void)level, (void)x, (void)n, (void)a, (void)b, (void)y;
}

static void stream_plane_dx_f64(int level, const double *restrict dy, const double *restrict x, int64_t n,
                                const double *restrict c, double *restrict dx)
{
    (void)level, (void)dy, (void)x, (void)n, (void)c, (void)dx;
}

/* The per-element pass of the planes layout, streamed past the cache
 * (stream.h) when its arrays together exceed it: y = coef[c]*a + coef[C+c]
 * (b == NULL), or dx = coef[C+c]*a + coef[2C+c]*(b - coef[c]) + coef[3C+c]
 * with a = dy, b = x. Returns 0, having done nothing, when that does not
 * apply. Each thread fences its own streaming stores before the team ends. */
static int stream_planes_f32(int64_t outer, int64_t C, int64_t inner, const float *restrict a,
                             const float *restrict b, const float *restrict coef, float *restrict y,
                             int nt)
{
#ifdef PYBN_HAVE_STREAM
    const int level = stream_level(outer * C * inner, b ? 3 : 2, sizeof(float), y);
    if (level == 0)
        return 0;
    const int64_t planes = outer * C;
    PYBN_TEAM(nt, {
        int64_t lo, hi;
        pybn_share(planes, &lo, &hi);
        for (int64_t p = lo; p < hi; p++) {
            const int64_t c = p % C, at = p * inner;
            if (b) {
                const float per_channel[4] = {coef[c], coef[C + c], coef[2 * C + c], coef[3 * C + c]};
                stream_plane_dx_f32(level, a + at, b + at, inner, per_channel, y + at);
            } else {
                stream_plane_affine_f32(level, a + at, inner, coef[c], coef[C + c], y + at);
            }
        }
        stream_fence();
    });
    return 1;
#else
    (void)outer, (void)C, (void)inner, (void)a, (void)b, (void)coef, (void)y, (void)nt;
    return 0;
#endif
}

/* The same for the rows layout of an (outer, C) matrix, in the tasks of
 * the other maps (bn_map_width); coef holds rows of C. */
static int stream_rows_f32(int64_t outer, int64_t C, const float *restrict a, const float *restrict b,
                           const float *restrict coef, float *restrict y, int nt)
{
#ifdef PYBN_HAVE_STREAM
    const int level = stream_level(outer * C, b ? 3 : 2, sizeof(float), y);
    if (level == 0)
        return 0;
    const int64_t width = bn_map_width(outer, C, nt), tiles = bn_col_tiles(C, width);
    PYBN_TEAM(nt, {
        int64_t lo, hi;
        pybn_share(bn_row_blocks(outer) * tiles, &lo, &hi);
        for (int64_t task = lo; task < hi; task++) {
            const bn_tile t = bn_row_task(task, tiles, width, outer, C);
            /* affine: a = x; dx: a = dy, b = x */
            (level == 2 ? stream_rows_f32_avx512 : stream_rows_f32_avx2)(
                b ? a + t.at : NULL, b ? b + t.at : a + t.at, t.rows, t.w, C, coef + t.c0, C, y + t.at);
        }
        stream_fence();
    });
    return 1;
#else
    (void)outer, (void)C, (void)a, (void)b, (void)coef, (void)y, (void)nt;
    return 0;
#endif
}

static int bn_stream_level_f32(int64_t elements, int arrays, const float *y)
{
    return stream_level(elements, arrays, sizeof(float), y);
}

static int bn_stream_level_f64(int64_t elements, int arrays, const double *y)
{
    (void)elements, (void)arrays, (void)y;
    return 0;
}

/* One task per channel reads its planes at a stride of C planes: runs too
 * short for the hardware prefetcher to catch up with (a 14x14 plane is 13
 * cache lines, then a jump of C planes). So the task asks for the plane
 * BN_PREFETCH_BYTES ahead itself, up to that many bytes of it (beyond, the
 * hardware prefetcher has the run in hand). */
#define BN_PREFETCH_BYTES 4096
static inline int64_t bn_prefetch_ahead(int64_t plane_bytes)
{
    return (BN_PREFETCH_BYTES + plane_bytes - 1) / plane_bytes;
}

static inline void bn_prefetch(const void *run, int64_t bytes)
{
    const char *p = (const char *)run;
    bytes = bytes < BN_PREFETCH_BYTES ? bytes : BN_PREFETCH_BYTES;
    for (int64_t b = 0; b < bytes; b += 64)
        __builtin_prefetch(p + b, 0, 3);
}

/* Planes shorter than this are small: the backward computes them with
 * plane sums of its own (small_channel_backward), always by channel. */
#define BN_SMALL_PLANE 256

/* float32 planes shorter than this many bytes run the backward one task
 * per channel only where pybn_short_planes_by_channel() (runtime.c). */
#define BN_SHORT_PLANE_BYTES 16384

/* Whether the planes layout runs one task per channel (fused passes): with
 * one thread always; with more, when the channels share out evenly enough
 * that no thread waits long for another. Changes no result. */
static int bn_by_channel(int64_t C, int nt) { return nt == 1 || C % nt == 0 || C >= 8 * (int64_t)nt; }

static int stream_rows_f64(int64_t outer, int64_t C, const double *restrict a, const double *restrict b,
                           const double *restrict coef, double *restrict y, int nt)
{
    (void)outer, (void)C, (void)a, (void)b, (void)coef, (void)y, (void)nt;
    return 0;
}

static int stream_planes_f64(int64_t outer, int64_t C, int64_t inner, const double *restrict a,
                             const double *restrict b, const double *restrict coef, double *restrict y,
                             int nt)
{
    (void)outer, (void)C, (void)inner, (void)a, (void)b, (void)coef, (void)y, (void)nt;
    return 0; /* float only: the measured case */
}

/* float32 statistics in one pass over x: sums of d = x - k and d^2 in
 * double, k = the channel's first value. var = (sum(d^2) - sum(d)^2/n)/n
 * then loses about eps(double) * (1 + (k - mean)^2/var) relative, and any
 * sample lies within sqrt(n - 1) standard deviations of its mean
 * (Samuelson), so the loss stays below n * 1.1e-16: invisible in float32.
 * float64 keeps two passes (sum, then squared deviations), exact to the
 * last bits whatever n. */
#define T float
#define SFX f32
#define BN_ONE_PASS_STATS 1
#define BN_FLOAT_BLOCKS 1
#include "batchnorm_impl.h"
#undef T
#undef SFX
#undef BN_ONE_PASS_STATS
#undef BN_FLOAT_BLOCKS

#define T double
#define SFX f64
#define BN_ONE_PASS_STATS 0
#define BN_FLOAT_BLOCKS 0
#include "batchnorm_impl.h"
#undef T
#undef SFX
#undef BN_ONE_PASS_STATS
#undef BN_FLOAT_BLOCKS
