/* runtime.c - what the kernels were built with and dispatch to. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "pybn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef PYBN_BUILD_FLAGS
#define PYBN_BUILD_FLAGS "unknown"
#endif

/* The level is decided once, when the library loads, and only read after
 * that. The environment variable PYBN_SIMD=avx2 or =baseline caps it below
 * what the CPU offers, so that tests can run every path on one machine. */
static int dispatch_level = 0;

__attribute__((constructor)) static void decide_dispatch_level(void)
{
    int level = 0;
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        level = 2;
    else if (__builtin_cpu_supports("x86-64-v3"))
        level = 1;
#endif
    const char *cap = getenv("PYBN_SIMD");
    if (cap && strcmp(cap, "avx2") == 0 && level > 1)
        level = 1;
    else if (cap && strcmp(cap, "baseline") == 0)
        level = 0;
    dispatch_level = level;
}

int pybn_dispatch_level(void) { return dispatch_level; }

const char *pybn_simd_level(void)
{
    static const char *names[] = {"baseline", "x86-64-v3 (AVX2+FMA)", "x86-64-v4 (AVX-512)"};
    return names[pybn_dispatch_level()];
}

int pybn_openmp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int pybn_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

const char *pybn_build_flags(void) { return PYBN_BUILD_FLAGS; }

const char *pybn_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}
