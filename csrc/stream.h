/* stream.h - non-temporal stores: batch norm's per-element passes over
 * planes (normalize, dx), and the copy the softmax family streams its rows
 * out with (private to batchnorm.c and softmax.c).
 *
 * Beyond the last-level cache, a normal store first reads the line it
 * writes (read-for-ownership): a third of the traffic of y = f(x).
 * Streaming stores skip that read and leave the cache to the input.
 * Measured here for y = 1.5x + 0.5 over 25.7 MB: 44 GB/s plain, 52 GB/s
 * streamed (2 threads; 29 vs 48 on one); over 16 MB, which the 32 MB L3
 * holds, plain stores win (93 vs 56 GB/s). So: only beyond the cache.
 *
 * The AVX-512 loops load unmasked and mask only a run's head and tail: on
 * an AMD EPYC (Zen 4), masked loads of the input behind streamed stores
 * held the rows layout's streamed normalize at 9 GB/s, slower than plain
 * stores (1.9x on 6272x1024, 1 thread); unmasked, it matches them at one
 * thread and beats them by 4-18% at two (batch norm, rows and planes).
 */
#ifndef PYBN_STREAM_H
#define PYBN_STREAM_H

#include <stdint.h>
#include <string.h>

#include "common.h"
#include "pybn.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
#define PYBN_HAVE_STREAM 1
#include <immintrin.h>

/* y = x*a + b, rounded after the product and after the sum: exactly the
 * arithmetic of run_affine_t (the kernels are compiled with
 * -ffp-contract=off, so no compiler fuses it there either). Masked plain stores up to y's first 64-byte boundary and for the tail;
 * y must be float-aligned (numpy's arrays are). */
__attribute__((target("avx512f,fma")))
static inline void stream_affine_f32_avx512(const float *restrict x, int64_t n, float a, float b, float *restrict y)
{
    const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    int64_t head = (int64_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(float));
    head = head < n ? head : n;
    int64_t i = 0;
    if (head > 0) {
        const __mmask16 k = (__mmask16)((1u << head) - 1u);
        _mm512_mask_storeu_ps(y, k, _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x), va), vb));
        i = head;
    }
    for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(y + i, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), va), vb));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), va), vb));
    }
}

__attribute__((target("avx2,fma")))
static inline void stream_affine_f32_avx2(const float *restrict x, int64_t n, float a, float b, float *restrict y)
{
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    int64_t i = 0;
    for (; i < n && ((uintptr_t)(y + i) & 31) != 0; i++)
        y[i] = x[i] * a + b;
    for (; i + 8 <= n; i += 8)
        _mm256_stream_ps(y + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), va), vb));
    for (; i < n; i++)
        y[i] = x[i] * a + b;
}

/* dx = (k_dy*dy + k_x*(x - mean)) + k_c, c = {mean, k_dy, k_x, k_c}: each
 * operation rounded, in run_dx_t's order. */
__attribute__((target("avx512f,fma")))
static inline __m512 stream_dx_vec_avx512(const float *restrict dy, const float *restrict x, int64_t i,
                                          const float *restrict c, __mmask16 k)
{
    const __m512 mean = _mm512_set1_ps(c[0]), k_dy = _mm512_set1_ps(c[1]);
    const __m512 k_x = _mm512_set1_ps(c[2]), k_c = _mm512_set1_ps(c[3]);
    const __m512 g = _mm512_maskz_loadu_ps(k, dy + i), v = _mm512_maskz_loadu_ps(k, x + i);
    return _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(k_dy, g), _mm512_mul_ps(k_x, _mm512_sub_ps(v, mean))), k_c);
}

/* Masked at the head and tail only (see stream_rows_vec_avx512). */
__attribute__((target("avx512f,fma")))
static inline void stream_dx_f32_avx512(const float *restrict dy, const float *restrict x, int64_t n,
                                 const float *restrict c, float *restrict dx)
{
    int64_t i = (int64_t)(((64 - ((uintptr_t)dx & 63)) & 63) / sizeof(float));
    i = i < n ? i : n;
    if (i > 0) {
        const __mmask16 k = (__mmask16)((1u << i) - 1u);
        _mm512_mask_storeu_ps(dx, k, stream_dx_vec_avx512(dy, x, 0, c, k));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(dx + i, stream_dx_vec_avx512(dy, x, i, c, (__mmask16)0xFFFF));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dx + i, k, stream_dx_vec_avx512(dy, x, i, c, k));
    }
}

__attribute__((target("avx2,fma")))
static inline void stream_dx_f32_avx2(const float *restrict dy, const float *restrict x, int64_t n,
                               const float *restrict c, float *restrict dx)
{
    const __m256 mean = _mm256_set1_ps(c[0]), k_dy = _mm256_set1_ps(c[1]);
    const __m256 k_x = _mm256_set1_ps(c[2]), k_c = _mm256_set1_ps(c[3]);
    int64_t i = 0;
    for (; i < n && ((uintptr_t)(dx + i) & 31) != 0; i++)
        dx[i] = c[1] * dy[i] + c[2] * (x[i] - c[0]) + c[3];
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(dy + i), v = _mm256_loadu_ps(x + i);
        _mm256_stream_ps(dx + i, _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(k_dy, g), _mm256_mul_ps(k_x, _mm256_sub_ps(v, mean))), k_c));
    }
    for (; i < n; i++)
        dx[i] = c[1] * dy[i] + c[2] * (x[i] - c[0]) + c[3];
}

/* One vector of stream_rows_f32_avx512 at column j; masked (k) at a
 * row's head and tail only: in the body, masked loads of x (behind the
 * streamed stores) ran at a fifth of the bandwidth on an AMD EPYC. */
__attribute__((target("avx512f,fma")))
static inline __m512 stream_rows_vec_avx512(const float *restrict gr, const float *restrict xr, int64_t j,
                                            const float *restrict c, int64_t cld, __mmask16 k)
{
    const __m512 v = _mm512_maskz_loadu_ps(k, xr + j);
    if (gr) {
        const __m512 mean = _mm512_maskz_loadu_ps(k, c + j), k_dy = _mm512_maskz_loadu_ps(k, c + cld + j);
        const __m512 k_x = _mm512_maskz_loadu_ps(k, c + 2 * cld + j);
        const __m512 k_c = _mm512_maskz_loadu_ps(k, c + 3 * cld + j);
        return _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(k_dy, _mm512_maskz_loadu_ps(k, gr + j)),
                                           _mm512_mul_ps(k_x, _mm512_sub_ps(v, mean))), k_c);
    }
    return _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, c + j)), _mm512_maskz_loadu_ps(k, c + cld + j));
}

/* The rows layout: rows of w columns, row stride ld, per-column
 * coefficients. Affine (dy == NULL): y = x*c[j] + c[cld + j]; dx:
 * dx = (k_dy*dy + k_x*(x - mean)) + k_c with c = {mean, k_dy, k_x, k_c}
 * rows of cld. Masked plain stores where a row is not 64-byte aligned. */
__attribute__((target("avx512f,fma")))
static inline void stream_rows_f32_avx512(const float *restrict dy, const float *restrict x, int64_t rows,
                                   int64_t w, int64_t ld, const float *restrict c, int64_t cld,
                                   float *restrict out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict xr = x + r * ld;
        const float *restrict gr = dy ? dy + r * ld : NULL;
        float *restrict yr = out + r * ld;
        int64_t j = (int64_t)(((64 - ((uintptr_t)yr & 63)) & 63) / sizeof(float));
        j = j < w ? j : w;
        if (j > 0) {
            const __mmask16 k = (__mmask16)((1u << j) - 1u);
            _mm512_mask_storeu_ps(yr, k, stream_rows_vec_avx512(gr, xr, 0, c, cld, k));
        }
        for (; j + 16 <= w; j += 16)
            _mm512_stream_ps(yr + j, stream_rows_vec_avx512(gr, xr, j, c, cld, (__mmask16)0xFFFF));
        if (j < w) {
            const __mmask16 k = (__mmask16)((1u << (w - j)) - 1u);
            _mm512_mask_storeu_ps(yr + j, k, stream_rows_vec_avx512(gr, xr, j, c, cld, k));
        }
    }
}
/* one element of stream_rows_f32_*, for heads and tails */
static inline float stream_rows_one(const float *restrict gr, const float *restrict xr, int64_t j,
                                    const float *restrict c, int64_t cld)
{
    if (gr)
        return c[cld + j] * gr[j] + c[2 * cld + j] * (xr[j] - c[j]) + c[3 * cld + j];
    return xr[j] * c[j] + c[cld + j];
}

__attribute__((target("avx2,fma")))
static inline void stream_rows_f32_avx2(const float *restrict dy, const float *restrict x, int64_t rows,
                                 int64_t w, int64_t ld, const float *restrict c, int64_t cld,
                                 float *restrict out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict xr = x + r * ld;
        const float *restrict gr = dy ? dy + r * ld : NULL;
        float *restrict yr = out + r * ld;
        int64_t j = 0;
        for (; j < w && ((uintptr_t)(yr + j) & 31) != 0; j++)
            yr[j] = stream_rows_one(gr, xr, j, c, cld);
        for (; j + 8 <= w; j += 8) {
            const __m256 v = _mm256_loadu_ps(xr + j);
            __m256 res;
            if (gr)
                res = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(c + cld + j),
                                                                _mm256_loadu_ps(gr + j)),
                                                  _mm256_mul_ps(_mm256_loadu_ps(c + 2 * cld + j),
                                                                _mm256_sub_ps(v, _mm256_loadu_ps(c + j)))),
                                    _mm256_loadu_ps(c + 3 * cld + j));
            else
                res = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(c + j)), _mm256_loadu_ps(c + cld + j));
            _mm256_stream_ps(yr + j, res);
        }
        for (; j < w; j++)
            yr[j] = stream_rows_one(gr, xr, j, c, cld);
    }
}

/* `lines` whole 64-byte lines from src to a 64-byte aligned dst with
 * streaming stores (stream_copy below does the head and the tail). */
__attribute__((target("avx512f")))
static inline void stream_lines_avx512(const char *restrict src, size_t lines, char *restrict dst)
{
    for (size_t i = 0; i < lines * 64; i += 64)
        _mm512_stream_si512((void *)(dst + i), _mm512_loadu_si512((const void *)(src + i)));
}

__attribute__((target("avx2")))
static inline void stream_lines_avx2(const char *restrict src, size_t lines, char *restrict dst)
{
    for (size_t i = 0; i < lines * 64; i += 32)
        _mm256_stream_si256((__m256i *)(dst + i), _mm256_loadu_si256((const __m256i *)(src + i)));
}

static inline void stream_fence(void) { _mm_sfence(); }

#endif /* x86-64 gcc */

/* A copy of `bytes` bytes, streamed at a level from stream_level from
 * dst's first 64-byte line on, with plain stores (memcpy) for the head
 * before it, the tail after the last whole line, and everything at level
 * 0. For outputs computed into a cache-resident buffer first (the softmax
 * family): a copy, so their bits are the buffer's. */
static inline void stream_copy(int level, const void *restrict src, size_t bytes, void *restrict dst)
{
#ifndef PYBN_HAVE_STREAM
    level = 0;
#endif
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t head = (64 - ((uintptr_t)d & 63)) & 63;
    head = level == 0 || head > bytes ? bytes : head; /* level 0: all of it plain */
    memcpy(d, s, head);
    const size_t lines = (bytes - head) / 64;
#ifdef PYBN_HAVE_STREAM
    if (level == 2)
        stream_lines_avx512(s + head, lines, d + head);
    else if (level == 1)
        stream_lines_avx2(s + head, lines, d + head);
#endif
    const size_t done = head + lines * 64;
    memcpy(d + done, s + done, bytes - done);
}

/* Ends the calling thread's streaming stores (level: stream_level's). */
static inline void stream_fence_if(int level)
{
#ifdef PYBN_HAVE_STREAM
    if (level)
        stream_fence();
#else
    (void)level;
#endif
}

/* The SIMD level to stream a pass over `elements` values of `size` bytes
 * in each of `arrays` arrays into y with, or 0 for plain stores: no SIMD
 * streaming here, everything fits the cache, or y is not aligned to its
 * element (an element-aligned y reaches 64-byte boundaries; the Python
 * wrappers ensure one). */
static inline int stream_level(int64_t elements, int arrays, int size, const void *y)
{
#ifdef PYBN_HAVE_STREAM
    const int level = pybn_dispatch_level();
    if (level == 0 || (double)elements * arrays * size <= pybn_cache_bytes() ||
        (uintptr_t)y % (uintptr_t)size != 0)
        return 0;
    return level;
#else
    (void)elements, (void)arrays, (void)size, (void)y;
    return 0;
#endif
}

#endif /* PYBN_STREAM_H */
