/* batchnorm.c - batch normalization forward (train/eval) and backward,
 * float32 and float64, from one dtype template (batchnorm_impl.h). */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "pybn.h"

/* Columns per task in the rows layout: wide matrices with few rows still
 * split into enough tasks for every thread. Does not change any sum. */
#define BN_COL_TILE 1024

/* Normalization in the input's precision (float arithmetic for float32)
 * while every |shift| = |beta - mean*gamma*invstd| is at most this; see
 * channel_affine(). */
#define BN_T_SHIFT_BOUND 16.0

/* The per-channel reductions channel_sums() can form. */
enum { BN_SUM = 0, BN_SQDEV = 1, BN_DY = 2 };

static int bn_eps_ok(double eps) { return eps > 0.0 && isfinite(eps); }

#define T float
#define SFX f32
#include "batchnorm_impl.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "batchnorm_impl.h"
#undef T
#undef SFX
