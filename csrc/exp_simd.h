/* exp_simd.h - sum(exp(z - m)) over a float row, hand-vectorized for
 * AVX-512 and AVX2 (private to softmax.c).
 *
 * The softmax family is bound by this loop: compilers leave libm's expf
 * scalar, and auto-vectorizing pybn_expf() costs the selects its full range
 * needs. Here the row's max m is finite and no entry is NaN (callers check
 * that first), so x = z - m is in [-inf, 0] and only the underflow end
 * needs care. Same algorithm and accuracy as pybn_expf (common.h); the sum
 * is accumulated in double, two vectors of lanes, combined in a fixed order.
 */
#ifndef PYBN_EXP_SIMD_H
#define PYBN_EXP_SIMD_H

#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PYBN_NO_CLONES)
#define PYBN_HAVE_EXP_SIMD 1
#include <immintrin.h>

#define EXP_LO -87.3365447f
#define EXP_MAGIC 12582912.0f

/* 2^n from t = x*log2(e) + magic: bits(t) = bits(magic) + n, and
 * bits(magic) << 23 vanishes, so ((bits(t) + 127) << 23) is 2^n's bits. */
#define EXP_BODY(V, PS, SI, set1, add, sub, mul, fmadd, fnmadd, cast_si, cast_ps, add32, slli) \
    V xc = _mm##PS##_max_ps(x, set1(EXP_LO));                                              \
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
    V v = mul(p, scale);

__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")))
static double exp_sum_f32_avx512(const float *restrict z, int64_t K, float m, float *restrict e)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 live = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
        const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, z + k), vm);
        EXP_BODY(__m512, 512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_add_ps, _mm512_sub_ps,
                 _mm512_mul_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_castps_si512,
                 _mm512_castsi512_ps, _mm512_add_epi32, _mm512_slli_epi32)
        /* exp underflows to 0 below EXP_LO (z = -inf included); dead lanes add 0 */
        const __mmask16 keep = live & _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_GE_OQ);
        v = _mm512_maskz_mov_ps(keep, v);
        if (e)
            _mm512_mask_storeu_ps(e + k, live, v);
        acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        acc_hi = _mm512_add_pd(acc_hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
    double lanes[8];
    _mm512_storeu_pd(lanes, _mm512_add_pd(acc_lo, acc_hi));
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

__attribute__((target("avx2,fma")))
static double exp_sum_f32_avx2(const float *restrict z, int64_t K, float m, float *restrict e)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(z + k), vm);
        EXP_BODY(__m256, 256, _mm256_set1_epi32, _mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps,
                 _mm256_mul_ps, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_castps_si256,
                 _mm256_castsi256_ps, _mm256_add_epi32, _mm256_slli_epi32)
        v = _mm256_and_ps(v, _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_GE_OQ));
        if (e)
            _mm256_storeu_ps(e + k, v);
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(acc_lo, acc_hi));
    double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; k < K; k++) { /* the tail, with the same formula */
        const float v = pybn_expf(z[k] - m);
        if (e)
            e[k] = v;
        s += (double)v;
    }
    return s;
}

#undef EXP_BODY
#endif /* x86-64 gcc */

#endif /* PYBN_EXP_SIMD_H */
