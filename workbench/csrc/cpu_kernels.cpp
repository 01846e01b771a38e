// CPU kernels of the workbench: MXFP4 expert matmuls that never write a dequantised matrix to memory, and a
// matrix-vector product over bf16 weights. A plain C ABI, loaded through ctypes by workbench/cpu_kernels.py.
//
// MXFP4 layout (gpt-oss): blocks uint8 [O, G, 16], scales uint8 [O, G] for W [O, K = 32 G]; byte i of block
// g holds element 32g+2i in its low nibble and 32g+2i+1 in its high nibble; value = E2M1[code] * 2^(s-127).
//
// Exactness. Each product is E2M1[code] * 2^(s-127) * x with both factors exact in fp32 (E2M1 values have two
// significant bits; the power of two only moves the exponent) and is accumulated in fp32: the numbers a
// dequantise-to-fp32-then-GEMM path multiplies. Only the order of the fp32 additions differs:
//   - per block, the 16 even-element products and the 16 odd-element products are summed lane-wise and the
//     block sum is multiplied by its (exact) power of two before joining the row accumulator;
//   - the row accumulator has 16 (AVX-512) or 8 (AVX2) lanes, reduced pairwise at the end of the row;
//   - on the bf16 dot-product path (vdpbf16ps) each lane first adds two products (elements 2i, 2i+1 of the
//     vector) to its block partial; that instruction treats bf16 inputs below 2^-126 in magnitude as zero
//     (weights never are: E2M1 values are >= 0.5 or 0; activations that small contribute < 1e-37).
//   - the scalar path adds a block's even-element products in order, then its odd ones.
// bf16 values widen to fp32 exactly. Results are fp32, or rounded to bf16 (nearest-even, as torch) on request.
//
// Activation rows are copied once per call into the order the weight decoding produces:
//   fp32 path: per block g, [x[32g+0], x[32g+2], .., x[32g+30], x[32g+1], .., x[32g+31]] (even, then odd);
//   bf16 path: per pair of blocks (2p, 2p+1): [even(2p), even(2p+1), odd(2p), odd(2p+1)], 16 values each,
//              so one 512-bit vector of low nibbles (32 bytes = 2 blocks) meets one vector of activations.
//
// Threads: OpenMP over output rows. The library links libgomp.so.1, which resolves to the copy torch has
// already loaded (same soname), so torch and these kernels share one thread pool.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#define WB_X86 1
#include <immintrin.h>
#else
#define WB_X86 0  // other CPUs: the portable scalar kernels only
#endif

#define WB_ABI_VERSION 2

namespace {

constexpr int QK = 32;      // elements per MXFP4 block
constexpr int QB = QK / 2;  // bytes per block

alignas(64) const float kE2M1[16] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f,
                                     -0.f, -.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};
// The same values as bf16 bit patterns (exact), twice: a 32-entry table for vpermw.
alignas(64) const uint16_t kE2M1bf16[32] = {
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0};

// 2^(s - 127) for every scale byte, exactly as ldexp gives it (s = 0, 1: fp32 subnormals; 255: inf).
struct ScaleTable {
    float v[256];
    ScaleTable() { for (int s = 0; s < 256; ++s) v[s] = std::ldexp(1.0f, s - 127); }
};
const ScaleTable kScale;

inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN -> quiet NaN (torch's rule)
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return 0x7FC0;
    u += 0x7FFF + ((u >> 16) & 1);
    return uint16_t(u >> 16);
}

inline float load_as_f32(const void* p, int bf16, int64_t i) {
    return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

enum Isa { SCALAR = 0, AVX2 = 1, AVX512 = 2, AVX512BF16 = 3 };

int detect_isa() {
#if !WB_X86
    return SCALAR;
#else
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
    if (avx512 && __builtin_cpu_supports("avx512bf16")) return AVX512BF16;
    if (avx512) return AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return AVX2;
    return SCALAR;
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Activation layouts
// ---------------------------------------------------------------------------------------------------------

void prep_f32(const void* x, int x_bf16, int64_t K, float* dst) {  // one row, fp32 path order
    for (int64_t g = 0; g < K / QK; ++g)
        for (int i = 0; i < QK; ++i) dst[g * QK + (i & 1) * QB + i / 2] = load_as_f32(x, x_bf16, g * QK + i);
}

void prep_bf16(const uint16_t* x, int64_t K, uint16_t* dst) {  // one row, bf16 path order (K % 64 == 0)
    for (int64_t p = 0; p < K / (2 * QK); ++p)
        for (int h = 0; h < 2; ++h)          // block 2p + h
            for (int i = 0; i < QK; ++i)     // element i of that block
                dst[p * 2 * QK + (i & 1) * QK + h * QB + i / 2] = x[(2 * p + h) * QK + i];
}

// ---------------------------------------------------------------------------------------------------------
// MXFP4 dot products: res[r][o] = sum_k x[r][k] W[o][k] for OB weight rows and RB activation rows, weights
// read packed. brow[o] / srow[o]: row o's blocks and scales; xd[r]: row r in the path's activation order.
// ---------------------------------------------------------------------------------------------------------

template <int OB, int RB>
void dot_scalar(const uint8_t* const* brow, const uint8_t* const* srow, const float* const* xd, int64_t G,
                float (*res)[OB]) {
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) {
            float acc = 0.f;
            for (int64_t g = 0; g < G; ++g) {
                const uint8_t* b = brow[o] + g * QB;
                const float* x = xd[r] + g * QK;
                float part = 0.f;
                for (int i = 0; i < QB; ++i) part += kE2M1[b[i] & 15] * x[i];
                for (int i = 0; i < QB; ++i) part += kE2M1[b[i] >> 4] * x[QB + i];
                acc += part * kScale.v[srow[o][g]];
            }
            res[r][o] = acc;
        }
}

#if WB_X86
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// AVX2: 8 codes per vector. vpermps reads the low 3 bits of each index, so an 8-entry table gives the
// magnitude; the code's sign bit (bit 3) moves to bit 31 and is xor-ed in.
template <int OB, int RB>
__attribute__((target("avx2,fma"))) void dot_avx2(const uint8_t* const* brow, const uint8_t* const* srow,
                                                  const float* const* xd, int64_t G, float (*res)[OB]) {
    const __m256 mag = _mm256_loadu_ps(kE2M1);
    const __m256i m15 = _mm256_set1_epi32(15), sign = _mm256_set1_epi32(8);
    __m256 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
        for (int o = 0; o < OB; ++o) {
            const uint8_t* b = brow[o] + g * QB;
            __m256 w[4];  // E2M1 values of (even 0-7, even 8-15, odd 0-7, odd 8-15)
            for (int h = 0; h < 2; ++h) {
                const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + 8 * h)));
                const __m256i code[2] = {_mm256_and_si256(bytes, m15), _mm256_srli_epi32(bytes, 4)};
                for (int n = 0; n < 2; ++n) {
                    const __m256 m = _mm256_permutevar8x32_ps(mag, code[n]);
                    const __m256i sg = _mm256_slli_epi32(_mm256_and_si256(code[n], sign), 28);
                    w[2 * n + h] = _mm256_xor_ps(m, _mm256_castsi256_ps(sg));
                }
            }
            const __m256 s = _mm256_set1_ps(kScale.v[srow[o][g]]);
            for (int r = 0; r < RB; ++r) {
                const float* x = xd[r] + g * QK;
                __m256 part = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
                for (int q = 1; q < 4; ++q) part = _mm256_fmadd_ps(w[q], _mm256_loadu_ps(x + 8 * q), part);
                acc[o][r] = _mm256_fmadd_ps(part, s, acc[o][r]);
            }
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) res[r][o] = hsum256(acc[o][r]);
}

// AVX-512: 16 codes per vector, the whole E2M1 table in one register (vpermps).
template <int OB, int RB>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void dot_avx512(
        const uint8_t* const* brow, const uint8_t* const* srow, const float* const* xd, int64_t G, float (*res)[OB]) {
    const __m512 lut = _mm512_load_ps(kE2M1);
    const __m512i m15 = _mm512_set1_epi32(15);
    __m512 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
        for (int o = 0; o < OB; ++o) {
            const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(brow[o] + g * QB)));
            const __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(bytes, m15), lut);
            const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), lut);
            const __m512 s = _mm512_set1_ps(kScale.v[srow[o][g]]);
            for (int r = 0; r < RB; ++r) {
                const float* x = xd[r] + g * QK;
                const __m512 part = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + QB), _mm512_mul_ps(lo, _mm512_loadu_ps(x)));
                acc[o][r] = _mm512_fmadd_ps(part, s, acc[o][r]);
            }
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) res[r][o] = _mm512_reduce_add_ps(acc[o][r]);
}

// AVX-512 BF16: two blocks per step. 32 packed bytes widen to 32 words; their low and high nibbles index a
// bf16 E2M1 table (vpermw); vdpbf16ps multiplies them with the bf16 activations, two products per fp32 lane
// (lanes 0-7 block 2p, lanes 8-15 block 2p+1), and the block sums are scaled into the accumulator.
template <int OB, int RB>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))) void dot_avx512bf16(
        const uint8_t* const* brow, const uint8_t* const* srow, const uint16_t* const* xd, int64_t G,
        float (*res)[OB]) {
    const __m512i lut = _mm512_load_si512(kE2M1bf16);
    const __m512i m15 = _mm512_set1_epi16(15);
    const __m512 zero = _mm512_setzero_ps();
    __m512 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = zero;
    for (int64_t p = 0; p < G / 2; ++p) {
        for (int o = 0; o < OB; ++o) {
            const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(brow[o] + p * 2 * QB)));
            const __m512bh lo = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(bytes, m15), lut);
            const __m512bh hi = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(bytes, 4), lut);
            const uint8_t* s = srow[o] + 2 * p;
            const __m512 sv = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castps_pd(_mm512_set1_ps(kScale.v[s[0]])), _mm256_castps_pd(_mm256_set1_ps(kScale.v[s[1]])), 1));
            for (int r = 0; r < RB; ++r) {
                const uint16_t* x = xd[r] + p * 2 * QK;
                __m512 part = _mm512_dpbf16_ps(zero, lo, (__m512bh)_mm512_loadu_si512(x));
                part = _mm512_dpbf16_ps(part, hi, (__m512bh)_mm512_loadu_si512(x + QK));
                acc[o][r] = _mm512_fmadd_ps(part, sv, acc[o][r]);
            }
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) res[r][o] = _mm512_reduce_add_ps(acc[o][r]);
}

#endif  // WB_X86

// Activation rows of one group in the chosen path's order.
struct Acts {
    int bf16_path;
    const float* f32;     // [R, K] when !bf16_path
    const uint16_t* b16;  // [R, K] when bf16_path
    int64_t K;
};

#if WB_X86
// Many rows per expert (prefill), bf16 path: a tile of TO weight rows is decoded once into a cache-resident
// buffer as bf16 values with the block scale folded in (E2M1 * 2^(s-127) is exact in bf16 - the same 8-bit
// exponent as fp32 - when 2 <= s <= 252; a tile with any other scale byte takes the streaming path), then
// every activation row of the group is multiplied against it with vdpbf16ps alone, 4 x 4 outputs at a time.
constexpr int TO = 16;           // weight rows per tile
constexpr int TILE_MIN_ROWS = 8;  // activation rows from which the tile pays

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))) bool decode_tile_bf16(
        const uint8_t* eb, int64_t b_o, const uint8_t* es, int64_t s_o, int64_t o0, int n, int64_t K, uint16_t* tile) {
    const int64_t G = K / QK;
    for (int j = 0; j < n; ++j)
        for (int64_t g = 0; g < G; ++g) {
            const uint8_t sc = es[(o0 + j) * s_o + g];
            if (sc < 2 || sc > 252) return false;
        }
    const __m512i lut = _mm512_load_si512(kE2M1bf16);
    const __m512i m15 = _mm512_set1_epi16(15), m7 = _mm512_set1_epi16(7);
    for (int j = 0; j < n; ++j) {
        const uint8_t* b = eb + (o0 + j) * b_o;
        const uint8_t* s = es + (o0 + j) * s_o;
        uint16_t* w = tile + j * K;
        for (int64_t p = 0; p < G / 2; ++p) {
            const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(b + p * 2 * QB)));
            const __m512i exp = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(short((s[2 * p] - 127) << 7)),
                                                        _mm512_set1_epi16(short((s[2 * p + 1] - 127) << 7)));
            const __m512i code[2] = {_mm512_and_si512(bytes, m15), _mm512_srli_epi16(bytes, 4)};
            for (int h = 0; h < 2; ++h) {  // h = 0: even elements (low nibbles), 1: odd (high nibbles)
                const __m512i v = _mm512_permutexvar_epi16(code[h], lut);
                const __mmask32 nonzero = _mm512_test_epi16_mask(code[h], m7);
                _mm512_storeu_si512(w + p * 2 * QK + h * QK, _mm512_mask_add_epi16(v, nonzero, v, exp));
            }
        }
    }
    return true;
}

// res[r][o] = sum_k x[r][k] tile[o][k] for 4 activation rows and 4 tile rows, both bf16 in the pair order.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))) void tile_4x4(
        const uint16_t* const* x, const uint16_t* const* w, int64_t K, float (*res)[4]) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; ++r)
        for (int o = 0; o < 4; ++o) acc[r][o] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += QK) {
        __m512bh wv[4];
        for (int o = 0; o < 4; ++o) wv[o] = (__m512bh)_mm512_loadu_si512(w[o] + k);
        for (int r = 0; r < 4; ++r) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x[r] + k);
            for (int o = 0; o < 4; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], wv[o], xv);
        }
    }
    for (int r = 0; r < 4; ++r)
        for (int o = 0; o < 4; ++o) res[r][o] = _mm512_reduce_add_ps(acc[r][o]);
}

// Output rows [o0, o1) for activation rows [r0, r1) of one expert through decoded tiles; false if a tile's
// scales are out of the folding range (the caller then streams those rows).
bool rows_tiled(const Acts& a, int64_t r0, int64_t r1, const uint8_t* eb, int64_t b_o, const uint8_t* es,
                int64_t s_o, int64_t o0, int64_t o1, const void* bias, int bias_bf16, float* out, int64_t ldo) {
    const int64_t K = a.K;
    std::vector<uint16_t> tile(size_t(TO * K));
    for (int64_t t0 = o0; t0 < o1; t0 += TO) {
        const int n = int(std::min<int64_t>(TO, o1 - t0));
        if (!decode_tile_bf16(eb, b_o, es, s_o, t0, n, K, tile.data())) return false;
        for (int64_t r = r0; r < r1; r += 4)
            for (int o = 0; o < n; o += 4) {
                const uint16_t* x[4];
                const uint16_t* w[4];
                for (int i = 0; i < 4; ++i) {
                    x[i] = a.b16 + std::min(r + i, r1 - 1) * K;  // short last steps repeat a row
                    w[i] = tile.data() + std::min(o + i, n - 1) * K;
                }
                float res[4][4];
                tile_4x4(x, w, K, res);
                for (int i = 0; i < 4 && r + i < r1; ++i)
                    for (int j = 0; j < 4 && o + j < n; ++j)
                        out[(r + i) * ldo + t0 + o + j] = res[i][j] + (bias ? load_as_f32(bias, bias_bf16, t0 + o + j) : 0.f);
            }
    }
    return true;
}
#endif  // WB_X86

template <int OB, int RB>
void dot(int isa, const Acts& a, int64_t r0, const uint8_t* const* brow, const uint8_t* const* srow,
         float (*res)[OB]) {
    const int64_t G = a.K / QK;
#if WB_X86
    if (a.bf16_path) {
        const uint16_t* x[RB];
        for (int r = 0; r < RB; ++r) x[r] = a.b16 + (r0 + r) * a.K;
        dot_avx512bf16<OB, RB>(brow, srow, x, G, res);
        return;
    }
#endif
    const float* x[RB];
    for (int r = 0; r < RB; ++r) x[r] = a.f32 + (r0 + r) * a.K;
#if WB_X86
    if (isa >= AVX512) return dot_avx512<OB, RB>(brow, srow, x, G, res);
    if (isa == AVX2) return dot_avx2<OB, RB>(brow, srow, x, G, res);
#endif
    dot_scalar<OB, RB>(brow, srow, x, G, res);
}

// out[r, o] for activation rows [r0, r0 + RB) against weight rows [o0, o1) of one expert.
template <int RB>
void rows_block(int isa, const Acts& a, int64_t r0, const uint8_t* eb, int64_t b_o, const uint8_t* es,
                int64_t s_o, int64_t o0, int64_t o1, const void* bias, int bias_bf16, float* out, int64_t ldo) {
    constexpr int OB = 4;
    float res[RB][OB];
    for (int64_t o = o0; o < o1; o += OB) {
        const uint8_t* b[OB];
        const uint8_t* s[OB];
        const int n = int(std::min<int64_t>(OB, o1 - o));
        for (int j = 0; j < OB; ++j) {
            const int64_t oj = o + std::min(j, n - 1);  // a short last step repeats its last row
            b[j] = eb + oj * b_o, s[j] = es + oj * s_o;
        }
        dot<OB, RB>(isa, a, r0, b, s, res);
        for (int r = 0; r < RB; ++r)
            for (int j = 0; j < n; ++j) out[(r0 + r) * ldo + o + j] = res[r][j] + (bias ? load_as_f32(bias, bias_bf16, o + j) : 0.f);
    }
}

// ---------------------------------------------------------------------------------------------------------
// bf16 weights: res[r][o] = sum_k x[r][k] W[o][k] for OB weight rows and RB activation rows, both bf16,
// products exact in fp32, fp32 accumulation (16 lanes, or 8 with AVX2, reduced pairwise at the end).
// ---------------------------------------------------------------------------------------------------------

template <int OB, int RB>
void gemv_scalar(const uint16_t* const* w, const uint16_t* const* x, int64_t K, float (*res)[OB]) {
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) {
            float acc = 0.f;
            for (int64_t k = 0; k < K; ++k) acc += bf16_to_f32(w[o][k]) * bf16_to_f32(x[r][k]);
            res[r][o] = acc;
        }
}

#if WB_X86
__attribute__((target("avx2,fma"))) inline __m256 widen8(const uint16_t* p) {  // 8 bf16 -> fp32
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}

template <int OB, int RB>
__attribute__((target("avx2,fma"))) void gemv_avx2(const uint16_t* const* w, const uint16_t* const* x, int64_t K,
                                                   float (*res)[OB]) {
    __m256 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xv[RB];
        for (int r = 0; r < RB; ++r) xv[r] = widen8(x[r] + k);
        for (int o = 0; o < OB; ++o) {
            const __m256 wv = widen8(w[o] + k);
            for (int r = 0; r < RB; ++r) acc[o][r] = _mm256_fmadd_ps(wv, xv[r], acc[o][r]);
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) {
            float tail = 0.f;
            for (int64_t t = k; t < K; ++t) tail += bf16_to_f32(w[o][t]) * bf16_to_f32(x[r][t]);
            res[r][o] = hsum256(acc[o][r]) + tail;
        }
}

template <int OB, int RB>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void gemv_avx512(
        const uint16_t* const* w, const uint16_t* const* x, int64_t K, float (*res)[OB]) {
    __m512 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
        __m512 xv[RB];
        for (int r = 0; r < RB; ++r)
            xv[r] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x[r] + k)), 16));
        for (int o = 0; o < OB; ++o) {
            const __m512 wv =
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w[o] + k)), 16));
            for (int r = 0; r < RB; ++r) acc[o][r] = _mm512_fmadd_ps(wv, xv[r], acc[o][r]);
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) res[r][o] = _mm512_reduce_add_ps(acc[o][r]);
}

// vdpbf16ps: 32 products per instruction, two per fp32 lane.
template <int OB, int RB>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))) void gemv_avx512bf16(
        const uint16_t* const* w, const uint16_t* const* x, int64_t K, float (*res)[OB]) {
    __m512 acc[OB][RB];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) acc[o][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        const __mmask32 m = K - k >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << (K - k)) - 1);
        __m512bh xv[RB];
        for (int r = 0; r < RB; ++r) xv[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, x[r] + k);
        for (int o = 0; o < OB; ++o) {
            const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w[o] + k);
            for (int r = 0; r < RB; ++r) acc[o][r] = _mm512_dpbf16_ps(acc[o][r], wv, xv[r]);
        }
    }
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < RB; ++r) res[r][o] = _mm512_reduce_add_ps(acc[o][r]);
}

#endif  // WB_X86

template <int RB>
void gemv_rows(int isa, const uint16_t* x, int64_t r0, int64_t K, const uint16_t* W, int64_t ldw, int64_t o0,
               int64_t o1, const void* bias, int bias_bf16, void* out, int out_bf16, int64_t ldo) {
    constexpr int OB = 4;
    const uint16_t* xr[RB];
    for (int r = 0; r < RB; ++r) xr[r] = x + (r0 + r) * K;
    float res[RB][OB];
    for (int64_t o = o0; o < o1; o += OB) {
        const int n = int(std::min<int64_t>(OB, o1 - o));
        const uint16_t* wr[OB];
        for (int j = 0; j < OB; ++j) wr[j] = W + (o + std::min(j, n - 1)) * ldw;
#if WB_X86
        if (isa == AVX512BF16) gemv_avx512bf16<OB, RB>(wr, xr, K, res);
        else if (isa == AVX512) gemv_avx512<OB, RB>(wr, xr, K, res);
        else if (isa == AVX2) gemv_avx2<OB, RB>(wr, xr, K, res);
        else
#endif
            gemv_scalar<OB, RB>(wr, xr, K, res);
        for (int r = 0; r < RB; ++r)
            for (int j = 0; j < n; ++j) {
                const float v = res[r][j] + (bias ? load_as_f32(bias, bias_bf16, o + j) : 0.f);
                const int64_t at = (r0 + r) * ldo + o + j;
                if (out_bf16) static_cast<uint16_t*>(out)[at] = f32_to_bf16(v);
                else static_cast<float*>(out)[at] = v;
            }
    }
}

}  // namespace

extern "C" {

int wb_abi_version() { return WB_ABI_VERSION; }

// The best kernels this CPU and OS support: 0 scalar, 1 AVX2+FMA, 2 AVX-512 F/BW/VL, 3 the same + BF16.
int wb_best_isa() { return detect_isa(); }

// out[r, o] = sum_k x[r, k] W_{e(r)}[o, k] + bias_{e(r)}[o] in fp32, activation rows grouped by expert:
// group g holds rows group_rows[g] .. group_rows[g+1]-1 and uses expert group_expert[g].
//   x       [R, K] row-major, fp32 or bf16 (x_bf16); K a multiple of 32.
//   W_e     blocks + e*b_e: uint8 [O, K/32, 16] with row stride b_o bytes (a row's blocks contiguous),
//           scales + e*s_e: uint8 [O, K/32] with row stride s_o.
//   bias    fp32 or bf16 (bias_bf16) [., O] with row stride bias_e elements, or NULL.
//   out     fp32, row stride ldo.
//   isa     <= wb_best_isa(); the bf16 dot-product path is taken when isa is 3, x is bf16 and K % 64 == 0.
void wb_mxfp4_linear(const void* x, int x_bf16, int64_t K, const int64_t* group_rows, const int64_t* group_expert,
                     int64_t n_groups, const uint8_t* blocks, int64_t b_e, int64_t b_o, const uint8_t* scales,
                     int64_t s_e, int64_t s_o, int64_t O, const void* bias, int bias_bf16, int64_t bias_e,
                     float* out, int64_t ldo, int isa, int threads) {
    const int64_t R = group_rows[n_groups];
    Acts a{isa == AVX512BF16 && x_bf16 && K % (2 * QK) == 0, nullptr, nullptr, K};
    std::vector<float> xf;
    std::vector<uint16_t> xb;
    if (a.bf16_path) {
        xb.resize(size_t(R * K));
        for (int64_t r = 0; r < R; ++r) prep_bf16(static_cast<const uint16_t*>(x) + r * K, K, xb.data() + r * K);
        a.b16 = xb.data();
    } else {
        xf.resize(size_t(R * K));
        for (int64_t r = 0; r < R; ++r)
            prep_f32(static_cast<const char*>(x) + r * K * (x_bf16 ? 2 : 4), x_bf16, K, xf.data() + r * K);
        a.f32 = xf.data();
    }
    // work items: (group, chunk of output rows), handed out dynamically
    const int64_t chunk = 64, per_group = (O + chunk - 1) / chunk, items = n_groups * per_group;
    threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, items)));  // an idle thread only costs a barrier wait
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t g = it / per_group, o0 = (it % per_group) * chunk, o1 = std::min(O, o0 + chunk);
        const int64_t e = group_expert[g];
        const uint8_t* eb = blocks + e * b_e;
        const uint8_t* es = scales + e * s_e;
        const void* be = bias ? static_cast<const char*>(bias) + e * bias_e * (bias_bf16 ? 2 : 4) : nullptr;
        int64_t r = group_rows[g];
        const int64_t r1 = group_rows[g + 1];
#if WB_X86
        if (a.bf16_path && r1 - r >= TILE_MIN_ROWS &&
            rows_tiled(a, r, r1, eb, b_o, es, s_o, o0, o1, be, bias_bf16, out, ldo))
            continue;
#endif
        for (; r + 4 <= r1; r += 4) rows_block<4>(isa, a, r, eb, b_o, es, s_o, o0, o1, be, bias_bf16, out, ldo);
        for (; r + 2 <= r1; r += 2) rows_block<2>(isa, a, r, eb, b_o, es, s_o, o0, o1, be, bias_bf16, out, ldo);
        for (; r < r1; ++r) rows_block<1>(isa, a, r, eb, b_o, es, s_o, o0, o1, be, bias_bf16, out, ldo);
    }
}

// out[r, o] = sum_k x[r, k] W[o, k] + bias[o] for bf16 x [R, K] and W [O, K] (row stride ldw), fp32
// accumulation; bias fp32 or bf16 or NULL; out fp32 or bf16 (rounded to nearest even), row stride ldo.
void wb_bf16_linear(const uint16_t* x, int64_t R, int64_t K, const uint16_t* W, int64_t ldw, int64_t O,
                    const void* bias, int bias_bf16, void* out, int out_bf16, int64_t ldo, int isa, int threads) {
    const int64_t chunk = 64, items = (O + chunk - 1) / chunk;
    threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t o0 = it * chunk, o1 = std::min(O, o0 + chunk);
        int64_t r = 0;
        for (; r + 4 <= R; r += 4) gemv_rows<4>(isa, x, r, K, W, ldw, o0, o1, bias, bias_bf16, out, out_bf16, ldo);
        for (; r + 2 <= R; r += 2) gemv_rows<2>(isa, x, r, K, W, ldw, o0, o1, bias, bias_bf16, out, out_bf16, ldo);
        for (; r < R; ++r) gemv_rows<1>(isa, x, r, K, W, ldw, o0, o1, bias, bias_bf16, out, out_bf16, ldo);
    }
}

}  // extern "C"
