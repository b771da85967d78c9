/* common.h - private helpers shared by the kernel files: run-time SIMD
 * dispatch, the thread-count policy, and the dtype template machinery. */
#ifndef PYBN_COMMON_H
#define PYBN_COMMON_H

#include <stdint.h>

/* Hot loops are compiled three times and the best clone for the CPU is
 * picked when the library loads (GCC ifunc). Clones must be static: gcc
 * exports the ifunc symbol otherwise, even with hidden visibility. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
#define PYBN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYBN_CLONES
#endif

/* Below this many elements a call runs on one thread: starting an OpenMP
 * team costs more than it saves. Results do not depend on it. */
#define PYBN_SMALL_WORK ((int64_t)1 << 15)

/* Rows per partial-sum block when reducing over rows of a (rows, C) matrix.
 * Fixed, so that the summation order does not depend on the thread count. */
#define PYBN_ROW_BLOCK 64

static inline int pybn_team_size(int64_t work, int n_threads)
{
    if (n_threads < 1 || work < PYBN_SMALL_WORK)
        return 1;
    return n_threads;
}

/* Two-level paste so that the dtype suffix macro expands first. */
#define PYBN_CAT_(a, b) a##_##b
#define PYBN_CAT(a, b) PYBN_CAT_(a, b)

#endif /* PYBN_COMMON_H */
