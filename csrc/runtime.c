/* runtime.c - what the kernels were built with and dispatch to. */
#include <pthread.h>
#include <stdio.h>
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

/* The most cache a call's arrays are assumed to find. A larger last level
 * is a server's L3, shared by every core of the socket and every tenant of
 * the host, of which a process on a few cores holds a small part: on a
 * 2-core VM listing a 300 MB L3, batch norm on 50-150 MB arrays ran 1.3-2x
 * faster streamed than with plain stores (so its "cache" held none of
 * them), while on one listing a 32 MB L3, 16 MB stayed cached (plain stores
 * 93 GB/s, streamed 56). */
#define PYBN_CACHE_CAP (32.0 * 1024 * 1024)

static double cache_bytes = PYBN_CACHE_CAP;
static int stream_buffered = 1;
static int short_planes_by_channel = 1;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* The largest cache Linux lists for cpu0 (sysfs, as lscpu reads it), up
 * to PYBN_CACHE_CAP: sysconf(_SC_LEVEL3_CACHE_SIZE) reports the whole
 * socket's L3 in some VMs (320 MB on the 32 MB machine the benchmarks ran
 * on). Read on first use, not at load: only calls past the cache size ask;
 * decides stream_buffered (see pybn_stream_buffered) at the same time. */
static void read_cache_settings(void)
{
    double largest = 0.0;
    for (int index = 0; index < 8; index++) {
        char path[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        double size = 0.0;
        char unit = 0;
        if (fscanf(f, "%lf%c", &size, &unit) >= 1) {
            size *= unit == 'K' ? 1024.0 : unit == 'M' ? 1024.0 * 1024.0 : 1.0;
            largest = size > largest ? size : largest;
        }
        fclose(f);
    }
    if (largest > 0.0)
        cache_bytes = largest < PYBN_CACHE_CAP ? largest : PYBN_CACHE_CAP;
    /* tests set it small to run the streaming paths on small arrays */
    const char *override = getenv("PYBN_CACHE_BYTES");
    const int overridden = override && atof(override) > 0.0;
    if (overridden)
        cache_bytes = atof(override);
    int amd = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    amd = __builtin_cpu_is("amd");
#endif
    stream_buffered = overridden || !amd;
    /* tests set it to run either backward schedule on any CPU */
    const char *schedule = getenv("PYBN_BN_SHORT_PLANES");
    if (schedule && strcmp(schedule, "channel") == 0)
        short_planes_by_channel = 1;
    else if (schedule && strcmp(schedule, "planes") == 0)
        short_planes_by_channel = 0;
    else
        short_planes_by_channel = !amd;
}

double pybn_cache_bytes(void)
{
    pthread_once(&cache_once, read_cache_settings);
    return cache_bytes;
}

/* Whether outputs computed into a cache-resident buffer first (the softmax
 * family's rows up to its buffer) are worth copying out with streaming
 * stores. Measured (docs/design.md): on an Intel Xeon VM they gained
 * 0.9-1.4x (softmax about 1.1x, alternating processes); on an AMD EPYC
 * (Zen 4, interleaved call by call) every case lost, softmax 1.13-1.37x, cross-entropy
 * 1.03-1.13x, log-softmax rows of 1024 up to 1.29x (1 and 2 threads):
 * its plain stores cost no more than the copy saves. So not on AMD, unless
 * PYBN_CACHE_BYTES is set (tests use it to run the streamed paths). */
int pybn_stream_buffered(void)
{
    pthread_once(&cache_once, read_cache_settings);
    return stream_buffered;
}

/* Whether the float32 batch-norm backward runs planes shorter than 16 KB
 * one task per channel (reading each channel's planes at a stride, 3 tensor
 * passes) rather than in memory order (plane sums, then dx: 5 sequential
 * passes). Measured (docs/design.md): on an AMD EPYC (Zen 4) the strided
 * reads ran so far below sequential bandwidth that memory order was
 * 1.1-1.6x faster on 7x7 to 56x56 planes at 1 thread (at 2 up to 1.25x,
 * at worst 2% slower), while 112x112 and 224x224 were even or faster by
 * channel, and float64 gained nothing; on the Intel Xeon VMs the fused
 * schedule is what reached 1.6-2x PyTorch. So not on AMD, unless
 * PYBN_BN_SHORT_PLANES=channel|planes says. */
int pybn_short_planes_by_channel(void)
{
    pthread_once(&cache_once, read_cache_settings);
    return short_planes_by_channel;
}

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
