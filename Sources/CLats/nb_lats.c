#include "nb_lats.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

__attribute__((always_inline)) static inline void collect(nb_lats_tally *t, int c, int k, uint64_t v) {
    if (t->count[c][k] < t->capacity[c][k]) t->inner[c][k][t->count[c][k]++] = v;
    else t->overflowed = 1;
}

/* One value of column c: the brackets it falls in, collected (a count_equal bracket's lower end
 * is counted by the loops instead). Used by the scalar loop and for the rare vectors the vector
 * loop flags. */
__attribute__((always_inline)) static inline void classify(const nb_lats_bounds *b, nb_lats_tally *t, int c,
                                                           uint64_t v) {
    for (int k = 0; k < 3; k++) {
        if (v < b->lo[c][k] || v > b->hi[c][k]) continue;
        if (b->count_equal[c][k] && v == b->lo[c][k]) continue;
        collect(t, c, k, v);
    }
}

/* Every value is below 2^62 (the caller checks `bits`), so with d = v - lo the sign bit of d says
 * v < lo, and the sign bit of d | (w - d) says v is outside [lo, lo + w]. A count_equal bracket
 * tests (lo, hi] instead, with d1 = d - 1 and w = hi - lo - 1 (-1 for an empty (lo, lo]), and
 * counts v == lo as (v < lo + 1) - (v < lo). No compare instructions: they are slow on some
 * cores, and compilers turn them into unpredictable branches. */
static void scan_scalar(const uint64_t *w, size_t records, const nb_lats_bounds *b, nb_lats_tally *t) {
    for (int c = 0; c < 3; c++) {
        const uint64_t lo0 = b->lo[c][0], lo1 = b->lo[c][1], lo2 = b->lo[c][2];
        const uint64_t e0 = b->count_equal[c][0] ? 1 : 0, e1 = b->count_equal[c][1] ? 1 : 0,
                       e2 = b->count_equal[c][2] ? 1 : 0;
        uint64_t h[3];
        for (int k = 0; k < 3; k++) h[k] = b->hi[c][k] > (1ULL << 62) ? (1ULL << 62) : b->hi[c][k];
        const uint64_t w0 = h[0] - lo0 - e0, w1 = h[1] - lo1 - e1, w2 = h[2] - lo2 - e2;
        uint64_t sum = 0, mx = 0, bits = 0, b0 = 0, b1 = 0, b2 = 0, q0 = 0, q1 = 0, q2 = 0;
        for (size_t r = 0; r < records; r++) {
            const uint64_t v = w[3 * r + (size_t)c];
            sum += v;
            bits |= v;
            mx = v > mx ? v : mx;
            const uint64_t d0 = v - lo0, d1 = v - lo1, d2 = v - lo2;
            const uint64_t f0 = d0 - e0, f1 = d1 - e1, f2 = d2 - e2;
            b0 += d0 >> 63;
            b1 += d1 >> 63;
            b2 += d2 >> 63;
            q0 += f0 >> 63;
            q1 += f1 >> 63;
            q2 += f2 >> 63;
            const uint64_t outside = (f0 | (w0 - f0)) & (f1 | (w1 - f1)) & (f2 | (w2 - f2));
            if (__builtin_expect(!(outside >> 63), 0)) classify(b, t, c, v);
        }
        t->sum[c] += sum;
        t->bits |= bits;
        if (mx > t->max[c]) t->max[c] = mx;
        t->below[c][0] += b0;
        t->below[c][1] += b1;
        t->below[c][2] += b2;
        t->equal[c][0] += q0 - b0;
        t->equal[c][1] += q1 - b1;
        t->equal[c][2] += q2 - b2;
    }
}

#if defined(__x86_64__)
/* Four records are twelve words, three 256-bit vectors; lane l of vector q holds column
 * (4q + l) mod 3, and thresholds are laid out the same way, so each vector is handled whole.
 * The chunk is walked once per vector position q, so that one walk's thresholds and counters
 * fit in the 16 vector registers. `eq` (bit k: some column counts bracket k's lower end) is a
 * compile-time constant in each copy, so only those brackets pay for the second count. */
__attribute__((target("avx2"), always_inline)) static inline void
scan_avx2_lanes(const uint64_t *w, size_t groups, int q, const nb_lats_bounds *b, nb_lats_tally *t, const int eq) {
    __m256i lo[3], one[3], wd[3], sum, mx, bits, below[3], below1[3];
    const __m256i zero = _mm256_setzero_si256();
    for (int k = 0; k < 3; k++) {
        int64_t a[4], h[4], e[4];
        for (int l = 0; l < 4; l++) {
            const int c = (4 * q + l) % 3;
            const uint64_t hi = b->hi[c][k] > (1ULL << 62) ? (1ULL << 62) : b->hi[c][k];
            e[l] = b->count_equal[c][k] ? 1 : 0;
            a[l] = (int64_t)b->lo[c][k];
            h[l] = (int64_t)hi - (int64_t)b->lo[c][k] - e[l];
        }
        lo[k] = _mm256_loadu_si256((const void *)a);
        wd[k] = _mm256_loadu_si256((const void *)h);
        one[k] = _mm256_loadu_si256((const void *)e);
        below[k] = below1[k] = zero;
    }
    sum = mx = bits = zero;
    /* Vectors with a lane in a bracket are listed (branch free) and classified after each block,
     * so that the loop holds no call and no unpredictable branch. */
    enum { BLOCK = 2048 };
    uint32_t flagged[BLOCK];
    for (size_t first = 0; first < groups; first += BLOCK) {
        const size_t last = groups - first < BLOCK ? groups : first + BLOCK;
        size_t n = 0;
        const uint64_t *p = w + 12 * first + 4 * q;
        for (size_t g = first; g < last; g++, p += 12) {
            const __m256i v = _mm256_loadu_si256((const void *)p);
            sum = _mm256_add_epi64(sum, v);
            bits = _mm256_or_si256(bits, v);
            mx = _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(mx), _mm256_castsi256_pd(v),
                                                      _mm256_castsi256_pd(_mm256_sub_epi64(mx, v))));
            __m256i none = _mm256_set1_epi64x(-1);
            for (int k = 0; k < 3; k++) {
                const __m256i d = _mm256_sub_epi64(v, lo[k]);
                below[k] = _mm256_add_epi64(below[k], _mm256_srli_epi64(d, 63));
                __m256i d1 = d;
                if (eq & (1 << k)) {
                    d1 = _mm256_sub_epi64(d, one[k]);
                    below1[k] = _mm256_add_epi64(below1[k], _mm256_srli_epi64(d1, 63));
                }
                none = _mm256_and_si256(none, _mm256_or_si256(d1, _mm256_sub_epi64(wd[k], d1)));
            }
            const uint32_t hits = (uint32_t)~_mm256_movemask_pd(_mm256_castsi256_pd(none)) & 0xf;
            flagged[n] = (uint32_t)(g - first) << 4 | hits;
            n += hits != 0;
        }
        for (size_t i = 0; i < n; i++) {
            const uint64_t *f = w + 12 * (first + (flagged[i] >> 4)) + 4 * q;
            for (uint32_t hits = flagged[i] & 0xf; hits; hits &= hits - 1) {
                const int l = __builtin_ctz(hits);
                classify(b, t, (4 * q + l) % 3, f[l]);
            }
        }
    }
    int64_t x[4], y[4];
    _mm256_storeu_si256((void *)x, sum);
    for (int l = 0; l < 4; l++) t->sum[(4 * q + l) % 3] += (uint64_t)x[l];
    _mm256_storeu_si256((void *)x, bits);
    for (int l = 0; l < 4; l++) t->bits |= (uint64_t)x[l];
    _mm256_storeu_si256((void *)x, mx);
    for (int l = 0; l < 4; l++) {
        const int c = (4 * q + l) % 3;
        if ((uint64_t)x[l] > t->max[c]) t->max[c] = (uint64_t)x[l];
    }
    for (int k = 0; k < 3; k++) {
        _mm256_storeu_si256((void *)x, below[k]);
        _mm256_storeu_si256((void *)y, below1[k]);
        for (int l = 0; l < 4; l++) {
            const int c = (4 * q + l) % 3;
            t->below[c][k] += (uint64_t)x[l];
            if ((eq & (1 << k)) && b->count_equal[c][k]) t->equal[c][k] += (uint64_t)y[l] - (uint64_t)x[l];
        }
    }
}

__attribute__((target("avx2"))) static void scan_avx2(const uint64_t *w, size_t records, const nb_lats_bounds *b,
                                                       nb_lats_tally *t) {
    const size_t groups = records / 4;
    int eq = 0;
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 3; k++)
            if (b->count_equal[c][k]) eq |= 1 << k;
    for (int q = 0; q < 3; q++) {
        switch (eq) {
        case 0: scan_avx2_lanes(w, groups, q, b, t, 0); break;
        case 1: scan_avx2_lanes(w, groups, q, b, t, 1); break;
        case 2: scan_avx2_lanes(w, groups, q, b, t, 2); break;
        case 3: scan_avx2_lanes(w, groups, q, b, t, 3); break;
        case 4: scan_avx2_lanes(w, groups, q, b, t, 4); break;
        case 5: scan_avx2_lanes(w, groups, q, b, t, 5); break;
        case 6: scan_avx2_lanes(w, groups, q, b, t, 6); break;
        default: scan_avx2_lanes(w, groups, q, b, t, 7); break;
        }
    }
    if (records % 4) scan_scalar(w + 12 * groups, records % 4, b, t);
}
#endif

int nb_lats_vectorised(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

void nb_lats_scan(const uint64_t *words, size_t records, const nb_lats_bounds *bounds, nb_lats_tally *tally,
                  int scalar_only) {
#if defined(__x86_64__)
    if (!scalar_only && __builtin_cpu_supports("avx2")) {
        scan_avx2(words, records, bounds, tally);
        return;
    }
#endif
    scan_scalar(words, records, bounds, tally);
}
