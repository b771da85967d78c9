/* softmax.c - softmax, log-softmax, their backward and the fused softmax
 * cross-entropy, float32 and float64, from one dtype template. */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "pybn.h"

static int sm_shape_ok(int64_t outer, int64_t K, int64_t inner)
{
    if (outer < 0 || K < 1 || inner < 1)
        return 0;
    if (outer > 0 && (K > INT64_MAX / outer || inner > INT64_MAX / (outer * K)))
        return 0;
    return 1;
}

/* Columns per task when reducing along a middle axis. */
#define SM_TILE 64

/* The four ops softmax_op() runs. */
enum { SM_SOFTMAX = 0, SM_LOG_SOFTMAX = 1, SM_SOFTMAX_BWD = 2, SM_LOG_SOFTMAX_BWD = 3 };

static int ce_smoothing_ok(double s) { return s >= 0.0 && s <= 1.0; }

#define T float
#define SFX f32
#define EXP pybn_expf
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP

#define T double
#define SFX f64
#define EXP exp
#include "softmax_impl.h"
#undef T
#undef SFX
#undef EXP
