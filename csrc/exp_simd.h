/* exp_simd.h - the float row pipeline of the softmax family (row max with
 * the NaN-row check, sum(exp(z - m)), softmax and log-softmax of whole
 * rows), hand-vectorized for AVX-512 and AVX2 (private to softmax.c).
 *
 * The softmax family is bound by the exp: compilers leave libm's expf
 * scalar, and auto-vectorizing pybn_expf() costs the selects its full range
 * needs. Here the row's max m is finite and no entry is NaN (callers check
 * that first), so x = z - m is in [-inf, 0] and only the underflow end
 * needs care. Same reduction and polynomial as pybn_expf (common.h). The
 * sum is accumulated in float over blocks of EXP_BLOCK vectors and in
 * double across blocks: a block adds at most 8 terms per lane (error below
 * 1e-6 relative), and converting every vector to double cost a third of
 * the loop on CPUs that split 512-bit operations in two.
 */
#ifndef PYBN_EXP_SIMD_H
#define PYBN_EXP_SIMD_H

#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
#define PYBN_HAVE_EXP_SIMD 1
#include <immintrin.h>

/* x is clamped here: round(-88 * log2(e)) = -127 puts 0 in the exponent
 * field of 2^n, so exp is exactly 0 below about -87.68 (x = -inf
 * included) with no compare; just above, results are subnormal. */
#define EXP_FLOOR -88.0f
#define EXP_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_BLOCK 8

/* 2^n from t = x*log2(e) + magic: bits(t) = bits(magic) + n, and
 * bits(magic) << 23 vanishes, so ((bits(t) + 127) << 23) is 2^n's bits. */
#define EXP_BODY(V, PS, SI, set1, add, sub, mul, fmadd, fnmadd, cast_si, cast_ps, add32, slli) \
    V xc = _mm##PS##_max_ps(x, set1(EXP_FLOOR));                                           \
    V t = fmadd(xc, set1(1.44269504088896341f), set1(EXP_MAGIC));                          \
    V n = sub(t, set1(EXP_MAGIC));                                                          \
    V r = fnmadd(n, set1(0.693359375f), xc);                                                \
    r = fnmadd(n, set1(-2.12194440e-4f), r);                                                \
    V p = fmadd(set1(1.9875691500e-4f), r, set1(1.3981999507e-3f));                        \
    p = fmadd(p, r, set1(8.3334519073e-3f));                                                \
    p = fmadd(p, r, set1(4.1665795894e-2f));                                                \
    p = fmadd(p, r, set1(1.6666665459e-1f));                                                \
    p = fmadd(p, r, set1(5.0000001201e-1f));                                                \
    p = fmadd(mul(p, r), r, add(r, set1(1.0f)));                                            \
    V scale = cast_ps(slli(add32(cast_si(t), SI(127)), 23));                                \
    return mul(p, scale);

#define AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")))
#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* ---- AVX-512 ------------------------------------------------------------- */

/* exp(x) for x <= 0, not NaN. */
AVX512_TARGET static inline __m512 exp_f32_avx512(__m512 x)
{
    EXP_BODY(__m512, 512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_add_ps, _mm512_sub_ps,
             _mm512_mul_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_castps_si512,
             _mm512_castsi512_ps, _mm512_add_epi32, _mm512_slli_epi32)
}

/* The lanes of the 16 floats from k on that lie inside a row of K. */
AVX512_TARGET static inline __mmask16 live16(int64_t K, int64_t k)
{
    return K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
}

/* max(z) ignoring NaN and whether the row is a NaN row (a NaN, a +inf, or
 * only -inf), as row_max() in softmax_impl.h. Four accumulators: a single
 * chain of maxes would wait on its own latency. */
AVX512_TARGET static inline float row_max_f32_avx512(const float *restrict z, int64_t K, int *restrict nan_row)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    __mmask16 nans = 0;
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        const __m512 a = _mm512_loadu_ps(z + k), b = _mm512_loadu_ps(z + k + 16);
        const __m512 c = _mm512_loadu_ps(z + k + 32), d = _mm512_loadu_ps(z + k + 48);
        /* max_ps returns its second operand when either is NaN: NaN is skipped */
        m0 = _mm512_max_ps(a, m0);
        m1 = _mm512_max_ps(b, m1);
        m2 = _mm512_max_ps(c, m2);
        m3 = _mm512_max_ps(d, m3);
        nans |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q);
    }
    for (; k < K; k += 16) {
        const __m512 a = _mm512_mask_loadu_ps(ninf, live16(K, k), z + k);
        m0 = _mm512_max_ps(a, m0);
        nans |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    }
    const float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
    *nan_row = nans != 0 || !isfinite(m);
    return m;
}

/* float block sums into two double vectors, then one fixed-order total */
AVX512_TARGET static inline void add_block_avx512(__m512d *restrict lo, __m512d *restrict hi, __m512 block)
{
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(block)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(block, 1)));
}

AVX512_TARGET static inline double exp_sum_f32_avx512(const float *restrict z, int64_t K, float m, float *restrict e)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    int64_t k = 0;
    while (K - k >= 16) {
        __m512 block = _mm512_setzero_ps();
        for (int i = 0; i < EXP_BLOCK && K - k >= 16; i++, k += 16) {
            const __m512 v = exp_f32_avx512(_mm512_sub_ps(_mm512_loadu_ps(z + k), vm));
            if (e)
                _mm512_storeu_ps(e + k, v);
            block = _mm512_add_ps(block, v);
        }
        add_block_avx512(&lo, &hi, block);
    }
    if (k < K) {
        const __mmask16 live = live16(K, k);
        const __m512 v = _mm512_maskz_mov_ps(live, exp_f32_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, z + k), vm)));
        if (e)
            _mm512_mask_storeu_ps(e + k, live, v);
        add_block_avx512(&lo, &hi, v);
    }
    double lanes[8];
    _mm512_storeu_pd(lanes, _mm512_add_pd(lo, hi));
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

/* softmax (log_out == 0) or log_softmax of `rows` rows of K floats: the
 * whole row pipeline in one function, so that short rows pay no calls. */
AVX512_TARGET static void softmax_rows_f32_avx512(const float *restrict z, int64_t rows, int64_t K,
                                                  int log_out, float *restrict out)
{
    for (int64_t r = 0; r < rows; r++, z += K, out += K) {
        int nan_row;
        const float m = row_max_f32_avx512(z, K, &nan_row);
        if (nan_row) {
            for (int64_t k = 0; k < K; k += 16)
                _mm512_mask_storeu_ps(out + k, live16(K, k), _mm512_set1_ps(NAN));
        } else if (!log_out) {
            const __m512 scale = _mm512_set1_ps((float)(1.0 / exp_sum_f32_avx512(z, K, m, out)));
            for (int64_t k = 0; k < K; k += 16) {
                const __mmask16 live = live16(K, k);
                _mm512_mask_storeu_ps(out + k, live, _mm512_mul_ps(_mm512_maskz_loadu_ps(live, out + k), scale));
            }
        } else {
            const __m512 vm = _mm512_set1_ps(m);
            const __m512 log_sum = _mm512_set1_ps((float)log(exp_sum_f32_avx512(z, K, m, NULL)));
            for (int64_t k = 0; k < K; k += 16) {
                const __mmask16 live = live16(K, k);
                const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, z + k), vm);
                _mm512_mask_storeu_ps(out + k, live, _mm512_sub_ps(x, log_sum));
            }
        }
    }
}

/* lanes[j] = exp(lp[j]) by pybn_expf for the lanes set in `odd` (those
 * the vectorized exp does not cover), of a vector stored to lanes. */
static inline void exp_odd_lanes(float *restrict lanes, unsigned odd, const float *restrict lp)
{
    for (int j = 0; odd; j++, odd >>= 1)
        if (odd & 1)
            lanes[j] = pybn_expf(lp[j]);
}

/* dz = dlp - exp(lp) * sum over a row of K: the log-softmax backward. Its
 * lp is anything the caller passes, so lanes above 88 (where 2^n would
 * overflow the exponent) or NaN take pybn_expf; below, the clamp above
 * gives exp's 0 as for the forward. */
AVX512_TARGET static void log_softmax_backward_f32_avx512(const float *restrict dlp, const float *restrict lp,
                                                          int64_t K, float sum, float *restrict dz)
{
    const __m512 vs = _mm512_set1_ps(sum), top = _mm512_set1_ps(88.0f);
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 live = live16(K, k);
        const __m512 x = _mm512_maskz_loadu_ps(live, lp + k);
        __m512 e = exp_f32_avx512(_mm512_min_ps(x, top));
        const __mmask16 odd = _mm512_mask_cmp_ps_mask(live, x, top, _CMP_NLE_UQ); /* > 88 or NaN */
        if (odd) {
            float lanes[16];
            _mm512_storeu_ps(lanes, e);
            exp_odd_lanes(lanes, odd, lp + k);
            e = _mm512_loadu_ps(lanes);
        }
        _mm512_mask_storeu_ps(dz + k, live, _mm512_fnmadd_ps(e, vs, _mm512_maskz_loadu_ps(live, dlp + k)));
    }
}

/* ---- AVX2 ---------------------------------------------------------------- */

AVX2_TARGET static inline __m256 exp_f32_avx2(__m256 x)
{
    EXP_BODY(__m256, 256, _mm256_set1_epi32, _mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps,
             _mm256_mul_ps, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_castps_si256,
             _mm256_castsi256_ps, _mm256_add_epi32, _mm256_slli_epi32)
}

/* All-ones in the lanes of the 8 floats from k on that lie inside a row of K. */
AVX2_TARGET static inline __m256i live8(int64_t K, int64_t k)
{
    const int64_t n = K - k < 8 ? K - k : 8;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AVX2_TARGET static inline float row_max_f32_avx2(const float *restrict z, int64_t K, int *restrict nan_row)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = ninf, m1 = ninf, unord = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256 a = _mm256_loadu_ps(z + k), b = _mm256_loadu_ps(z + k + 8);
        m0 = _mm256_max_ps(a, m0); /* the second operand when either is NaN */
        m1 = _mm256_max_ps(b, m1);
        unord = _mm256_or_ps(unord, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    }
    for (; k < K; k += 8) {
        const __m256i live = live8(K, k);
        const __m256 a = _mm256_blendv_ps(ninf, _mm256_maskload_ps(z + k, live), _mm256_castsi256_ps(live));
        m0 = _mm256_max_ps(a, m0);
        unord = _mm256_or_ps(unord, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    }
    m0 = _mm256_max_ps(m0, m1);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float m = _mm_cvtss_f32(m4);
    *nan_row = _mm256_movemask_ps(unord) != 0 || !isfinite(m);
    return m;
}

AVX2_TARGET static inline void add_block_avx2(__m256d *restrict lo, __m256d *restrict hi, __m256 block)
{
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(block)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(block, 1)));
}

AVX2_TARGET static inline double exp_sum_f32_avx2(const float *restrict z, int64_t K, float m, float *restrict e)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    int64_t k = 0;
    while (K - k >= 8) {
        __m256 block = _mm256_setzero_ps();
        for (int i = 0; i < EXP_BLOCK && K - k >= 8; i++, k += 8) {
            const __m256 v = exp_f32_avx2(_mm256_sub_ps(_mm256_loadu_ps(z + k), vm));
            if (e)
                _mm256_storeu_ps(e + k, v);
            block = _mm256_add_ps(block, v);
        }
        add_block_avx2(&lo, &hi, block);
    }
    if (k < K) {
        const __m256i live = live8(K, k);
        const __m256 x = _mm256_sub_ps(_mm256_maskload_ps(z + k, live), vm);
        const __m256 v = _mm256_and_ps(exp_f32_avx2(x), _mm256_castsi256_ps(live));
        if (e)
            _mm256_maskstore_ps(e + k, live, v);
        add_block_avx2(&lo, &hi, v);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(lo, hi));
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

AVX2_TARGET static void softmax_rows_f32_avx2(const float *restrict z, int64_t rows, int64_t K,
                                              int log_out, float *restrict out)
{
    for (int64_t r = 0; r < rows; r++, z += K, out += K) {
        int nan_row;
        const float m = row_max_f32_avx2(z, K, &nan_row);
        if (nan_row) {
            for (int64_t k = 0; k < K; k += 8)
                _mm256_maskstore_ps(out + k, live8(K, k), _mm256_set1_ps(NAN));
        } else if (!log_out) {
            const __m256 scale = _mm256_set1_ps((float)(1.0 / exp_sum_f32_avx2(z, K, m, out)));
            for (int64_t k = 0; k < K; k += 8) {
                const __m256i live = live8(K, k);
                _mm256_maskstore_ps(out + k, live, _mm256_mul_ps(_mm256_maskload_ps(out + k, live), scale));
            }
        } else {
            const __m256 vm = _mm256_set1_ps(m);
            const __m256 log_sum = _mm256_set1_ps((float)log(exp_sum_f32_avx2(z, K, m, NULL)));
            for (int64_t k = 0; k < K; k += 8) {
                const __m256i live = live8(K, k);
                const __m256 x = _mm256_sub_ps(_mm256_maskload_ps(z + k, live), vm);
                _mm256_maskstore_ps(out + k, live, _mm256_sub_ps(x, log_sum));
            }
        }
    }
}

AVX2_TARGET static void log_softmax_backward_f32_avx2(const float *restrict dlp, const float *restrict lp,
                                                      int64_t K, float sum, float *restrict dz)
{
    const __m256 vs = _mm256_set1_ps(sum), top = _mm256_set1_ps(88.0f);
    for (int64_t k = 0; k < K; k += 8) {
        const __m256i live = live8(K, k);
        const __m256 x = _mm256_maskload_ps(lp + k, live);
        __m256 e = exp_f32_avx2(_mm256_min_ps(x, top));
        const int odd = _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(x, top, _CMP_NLE_UQ),
                                                         _mm256_castsi256_ps(live)));
        if (odd) {
            float lanes[8];
            _mm256_storeu_ps(lanes, e);
            exp_odd_lanes(lanes, (unsigned)odd, lp + k);
            e = _mm256_loadu_ps(lanes);
        }
        _mm256_maskstore_ps(dz + k, live, _mm256_fnmadd_ps(e, vs, _mm256_maskload_ps(dlp + k, live)));
    }
}

#undef EXP_BODY
#endif /* x86-64 gcc */

#endif /* PYBN_EXP_SIMD_H */
