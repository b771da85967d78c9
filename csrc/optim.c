/* optim.c - one optimizer step over one parameter, in place: SGD with
 * momentum, RMSprop and Adam, float32 and float64 (the training API's
 * optimizers, fused: one pass instead of eight NumPy passes). */
#include <math.h>
#include <stdint.h>

#include "common.h"
#include "pybn.h"

/* Elements per task: elementwise, so results do not depend on the split. */
#define OPT_BLOCK 16384
/* A step is a few nanoseconds an element: below this a team costs more
 * than it saves, and its threads, spinning after the region, would compete
 * with the BLAS threads of the next matrix product on a small machine. */
#define OPT_SMALL_WORK ((int64_t)1 << 21)

#define OPT_KERNEL(T, SFX, SQRT)                                                                   \
    PYBN_CLONES static void opt_block_##SFX(int kind, int64_t n, T *restrict w,                   \
                                            const T *restrict g, T *restrict s1, T *restrict s2,  \
                                            T lr, T h1, T h2, T eps, T c1, T c2, T wd)            \
    {                                                                                              \
        if (kind == PYBN_OPT_SGD && s1) {                                                          \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const T grad = g[i] + wd * w[i];                                                   \
                s1[i] = h1 * s1[i] + grad;                                                         \
                w[i] -= lr * s1[i];                                                                \
            }                                                                                      \
        } else if (kind == PYBN_OPT_SGD) {                                                         \
            for (int64_t i = 0; i < n; i++)                                                        \
                w[i] -= lr * (g[i] + wd * w[i]);                                                   \
        } else if (kind == PYBN_OPT_RMSPROP) {                                                     \
            const T keep = (T)1 - h1;                                                              \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const T grad = g[i] + wd * w[i];                                                   \
                s1[i] = h1 * s1[i] + keep * (grad * grad);                                         \
                w[i] -= lr * grad / (SQRT(s1[i]) + eps);                                           \
            }                                                                                      \
        } else {                                                                                   \
            const T keep1 = (T)1 - h1, keep2 = (T)1 - h2;                                          \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const T grad = g[i] + wd * w[i];                                                   \
                s1[i] = h1 * s1[i] + keep1 * grad;                                                 \
                s2[i] = h2 * s2[i] + keep2 * (grad * grad);                                        \
                w[i] -= lr * (s1[i] / c1) / (SQRT(s2[i] / c2) + eps);                              \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    pybn_status pybn_optimizer_step_##SFX(int kind, int64_t n, T *restrict w, const T *restrict g, \
                                          T *restrict s1, T *restrict s2, double lr, double h1,   \
                                          double h2, double eps, double c1, double c2, double wd, \
                                          int n_threads)                                           \
    {                                                                                              \
        if (n < 0 || !w || !g || kind < PYBN_OPT_SGD || kind > PYBN_OPT_ADAM ||                    \
            (kind == PYBN_OPT_RMSPROP && !s1) || (kind == PYBN_OPT_ADAM && (!s1 || !s2)))          \
            return PYBN_EINVAL;                                                                    \
        const int nt = pybn_team_size(n, OPT_SMALL_WORK, n_threads);                              \
        const int64_t blocks = (n + OPT_BLOCK - 1) / OPT_BLOCK;                                    \
        PYBN_PARALLEL_FOR(nt, b, blocks, {                                                         \
            const int64_t at = b * OPT_BLOCK, len = n - at < OPT_BLOCK ? n - at : OPT_BLOCK;       \
            opt_block_##SFX(kind, len, w + at, g + at, s1 ? s1 + at : NULL, s2 ? s2 + at : NULL,   \
                            (T)lr, (T)h1, (T)h2, (T)eps, (T)c1, (T)c2, (T)wd);                      \
        });                                                                                        \
        return PYBN_OK;                                                                            \
    }

OPT_KERNEL(float, f32, sqrtf)
OPT_KERNEL(double, f64, sqrt)
