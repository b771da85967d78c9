/* softmax.c - softmax, log-softmax, their backward and the fused softmax
 * cross-entropy, float32 and float64, from one dtype template. */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "exp_simd.h"
#include "pybn.h"
#include "stream.h"

/* An exp costs about as much as twenty multiply-adds, so two threads pay
 * from fewer elements than in batch norm (measured: 64x128 softmax 3.7 ->
 * 2.8 us, batch norm slower at that size). */
#define SM_SMALL_WORK ((int64_t)1 << 12)

/* Columns per task when reducing along a middle axis. */
#define SM_TILE 64

/* The four ops softmax_op() runs. */
enum { SM_SOFTMAX = 0, SM_LOG_SOFTMAX = 1, SM_SOFTMAX_BWD = 2, SM_LOG_SOFTMAX_BWD = 3 };

static int ce_smoothing_ok(double s) { return s >= 0.0 && s <= 1.0; }

/* Lanes of the portable exp sum (softmax_impl.h, which adds them pairwise:
 * eight). */
#define SM_LANES 8

/* The buffer a thread computes rows into before streaming them out: well
 * inside L1, and a few rows of most class counts. */
#define SM_STREAM_BYTES 16384

/* Rows shorter than this many bytes never stream (softmax_impl.h). */
#define SM_STREAM_MIN_ROW 4096

/* Rows per task: about this many elements, so that short rows are not one
 * task each and long rows still spread over the threads. */
#define SM_TASK_WORK 4096

/* float rows use the hand-vectorized pipeline where the CPU has it */
static float simd_row_max_f32(const float *restrict z, int64_t K, int *restrict nan_row);
static double simd_exp_sum_f32(const float *restrict z, int64_t K, float m, float *restrict e);
static void simd_softmax_rows_f32(const float *restrict z, int64_t rows, int64_t K, int log_out, float *restrict out);
static void simd_log_softmax_backward_f32(const float *restrict dlp, const float *restrict lp, int64_t K,
                                          double sum, float *restrict dz);

#define T float
#define SFX f32
#define EXP pybn_expf
#define ROW_MAX simd_row_max_f32
#define ROW_EXP_SUM simd_exp_sum_f32
#define ROWS_SOFTMAX simd_softmax_rows_f32
#define ROW_LOG_SOFTMAX_BWD simd_log_softmax_backward_f32
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP
#undef ROW_MAX
#undef ROW_EXP_SUM
#undef ROWS_SOFTMAX
#undef ROW_LOG_SOFTMAX_BWD

static float simd_row_max_f32(const float *restrict z, int64_t K, int *restrict nan_row)
{
#ifdef PYBN_HAVE_EXP_SIMD
    const int level = pybn_dispatch_level();
    if (level == 2)
        return row_max_f32_avx512(z, K, nan_row);
    if (level == 1)
        return row_max_f32_avx2(z, K, nan_row);
#endif
    return row_max_portable_f32(z, K, nan_row);
}

static double simd_exp_sum_f32(const float *restrict z, int64_t K, float m, float *restrict e)
{
#ifdef PYBN_HAVE_EXP_SIMD
    const int level = pybn_dispatch_level();
    if (level == 2)
        return exp_sum_f32_avx512(z, K, m, e);
    if (level == 1)
        return exp_sum_f32_avx2(z, K, m, e);
#endif
    return row_exp_sum_portable_f32(z, K, m, e);
}

static void simd_softmax_rows_f32(const float *restrict z, int64_t rows, int64_t K, int log_out, float *restrict out)
{
#ifdef PYBN_HAVE_EXP_SIMD
    const int level = pybn_dispatch_level();
    if (level == 2) {
        softmax_rows_f32_avx512(z, rows, K, log_out, out);
        return;
    }
    if (level == 1) {
        softmax_rows_f32_avx2(z, rows, K, log_out, out);
        return;
    }
#endif
    softmax_rows_portable_f32(z, rows, K, log_out, out);
}

static void simd_log_softmax_backward_f32(const float *restrict dlp, const float *restrict lp, int64_t K,
                                          double sum, float *restrict dz)
{
#ifdef PYBN_HAVE_EXP_SIMD
    const int level = pybn_dispatch_level();
    if (level == 2) {
        log_softmax_backward_f32_avx512(dlp, lp, K, (float)sum, dz);
        return;
    }
    if (level == 1) {
        log_softmax_backward_f32_avx2(dlp, lp, K, (float)sum, dz);
        return;
    }
#endif
    row_log_softmax_backward_portable_f32(dlp, lp, K, sum, dz);
}

#define T double
#define SFX f64
#define EXP pybn_exp
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP
