/* softmax.c - softmax, log-softmax, their backward and the fused softmax
 * cross-entropy, float32 and float64, from one dtype template. */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "exp_simd.h"
#include "pybn.h"

/* Columns per task when reducing along a middle axis. */
#define SM_TILE 64

/* The four ops softmax_op() runs. */
enum { SM_SOFTMAX = 0, SM_LOG_SOFTMAX = 1, SM_SOFTMAX_BWD = 2, SM_LOG_SOFTMAX_BWD = 3 };

static int ce_smoothing_ok(double s) { return s >= 0.0 && s <= 1.0; }

/* float rows use the hand-vectorized exp-sum where the CPU has it */
static double exp_sum_f32(const float *restrict z, int64_t K, float m, float *restrict e);

#define T float
#define SFX f32
#define EXP pybn_expf
#define ROW_EXP_SUM exp_sum_f32
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP
#undef ROW_EXP_SUM

static double exp_sum_f32(const float *restrict z, int64_t K, float m, float *restrict e)
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

#define T double
#define SFX f64
#define EXP exp
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP
