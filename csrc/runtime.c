/* runtime.c - what the kernels were built with and dispatch to. */
#include "pybn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef PYBN_BUILD_FLAGS
#define PYBN_BUILD_FLAGS "unknown"
#endif

const char *pybn_simd_level(void)
{
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3"))
        return "x86-64-v3 (AVX2+FMA)";
#endif
    return "baseline";
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
