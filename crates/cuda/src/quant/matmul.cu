// Y = W X for many tokens under the official numerics, on the int8 tensor cores
// (mma.sync m16n8k32 / m16n8k16 .s8, sm_80+). X is each token's activations already
// quantized the CPU's way (Q8_0-like blocks of 36 bytes for Q8_0 weights, Q8_K blocks of 292
// bytes for the k- and i-quants; numerics.cu), W stays in its GGUF layout.
//
// Agreement with dsv4_quant. Every integer the CPU forms (a 32-column block sum for Q8_0, a
// super-block's scaled sum and min sum for the others) is formed here exactly: the weight
// codes are decoded to int8 (Q2_K with its 4-bit scale already applied, q * sc <= 45), the
// MMA sums 32 products exactly, and scales that do not fit int8 (Q4_K's 6-bit ones,
// IQ2_XXS's 2 ls + 1) multiply the MMA's int32 result. The f32 combines are the CPU's, op for
// op with rounding intrinsics (no FMA contraction), and each output walks its blocks in
// order in one thread, so the result equals the CPU's scalar order bit for bit (the CPU's
// SIMD kernels agree with its scalar ones bitwise, see dsv4_quant's tests).
//
// Min terms (Q2_K, Q4_K): sum_h m_h * bsum_h with bsum_h up to |2048| (or 4096 for Q4_K's
// pairs of halves) is split as bsum = hi * 2^S + lo with lo in [0, 2^S) and hi in int8, and
// both halves go through one m16n8k16 MMA each against the int8 mins: exact as well.
//
// Work split: a CTA computes a tile of BM rows x BN tokens with 4 WN warps, as 4 (rows) x WN
// (tokens), each warp 16 MI rows x 8 NF tokens: 64 x 16 (few tokens per matrix: an expert in
// a prefill chunk; small CTAs also spread short matrices over more SMs), 64 x 32 (experts of
// a long chunk) or 128 x 64 (each weight decoded once per 64 tokens). More accumulators per
// warp would spill under the register caps that keep 16 or 24 warps an SM (MM_KERNEL's MINB).
// Per 256-column step the CTA decodes its rows' weights into shared memory (each weight
// decoded once per CTA and reused by BN tokens) and copies the tokens' activation codes
// beside them; the next step's global loads go into
// registers while the MMAs of this one run. Rows are padded to 272 bytes so that the
// fragment loads hit 32 different banks: word t of rows g of an 8 x 4 lane group, or the
// 16-byte pieces of 8 consecutive rows that one ldmatrix matrix takes (272 = 16 mod 128). Token
// tiles come either densely (tile y = tokens BN y ..) or from a table (expert, first row,
// count) so that one launch serves every expert of a MoE layer.

#include "dsv4_common.cuh"

#define T_Q8_0 2
#define T_Q2_K 3
#define T_Q4_K 4
#define T_IQ2_XXS 5

// Row stride of the int8 tiles: 256 codes + 16 bytes of padding (68 words: 4 g + t covers
// every bank for g < 8, t < 4).
#define MM_STR 272

// Shared memory layout (dynamic; matmul.rs sizes it with the same formula), BM rows, BN tokens:
//   sel   2048      IQ2_XXS selector tables (IQ2_TAB_WORDS u32, iq2_octet)
//   ws    BM x 272  weight codes of the step
//   xs    BN x 272  activation codes of the step
//   wsc   BM x 8    f32: Q8_0 block scales; others: [0] = d, [1] = dmin
//   isc   BM x 8    int: sub-block scales (Q4_K, IQ2_XXS)
//   wm    BM x 16   int8 mins (Q2_K: 16 halves; Q4_K: 8 sub-blocks, zero padded)
//   xsc   BN x 8    f32: Q8_0 block scales; others: [0] = d
//   xlo   BN x 16   int8 low parts of the bsums (see above)
//   xhi   BN x 16   int8 high parts
__host__ __device__ constexpr int mm_smem_bytes(int bm, int bn) {
    return 2048 + bm * MM_STR + bn * MM_STR + bm * 32 + bm * 32 + bm * 16 + bn * 32 + bn * 16 + bn * 16;
}

__device__ __forceinline__ u32 ldg_u32(const u8* p) { return *reinterpret_cast<const u32*>(p); }
__device__ __forceinline__ u32 ldg_u16(const u8* p) { return *reinterpret_cast<const u16*>(p); }
__device__ __forceinline__ u32 ldg_u32_a2(const u8* p) { return ldg_u16(p) | (ldg_u16(p + 2) << 16); }

__device__ __forceinline__ u32 dyn_smem_size() {
    u32 r;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}

__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void ldsm_x2(u32 (&r)[2], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

__device__ __forceinline__ void mma_k16(int (&d)[4], u32 a0, u32 a1, u32 b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(b0));
}

// Weight decoding in two halves, so that a step's global loads are in flight while the
// previous step computes: mm_fetch loads the raw words of sub-block j (32 columns) of
// super-block kb (256 columns; Q8_0: block 8 kb + j) of the row at `rp`; mm_unpack turns them
// into 8 int8 code words and the row's scales once the step's shared memory is free.
template <int T> struct Raw;
template <> struct Raw<T_Q8_0> { u32 w[9]; u32 d, sh; };      // codes funnel-shifted by sh
template <> struct Raw<T_Q2_K> { u32 w[8]; u32 sc, dd; };     // codes, scale bytes, d | dmin
template <> struct Raw<T_Q4_K> { u32 w[8]; u32 s[3], dd; };   // codes, packed scales, d | dmin
template <> struct Raw<T_IQ2_XXS> { u32 wa, wb, d; };          // grid indices, signs + scale, d

template <int T>
__device__ __forceinline__ void mm_fetch(const u8* __restrict__ rp, int kb, int j, bool valid, Raw<T>& r) {
    if (!valid) return;
    if constexpr (T == T_Q8_0) {
        const u8* p = rp + (i64)(kb * 8 + j) * 34;
        r.d = ldg_u16(p);
        // The codes start 2-byte aligned: nine aligned words, funnel-shifted at unpack.
        const u8* q = p + 2;
        const u8* aq = reinterpret_cast<const u8*>(reinterpret_cast<u64>(q) & ~(u64)3);
        r.sh = (u32)(reinterpret_cast<u64>(q) & 3) * 8;
#pragma unroll
        for (int k = 0; k < 9; ++k) r.w[k] = ldg_u32(aq + 4 * k);
    } else if constexpr (T == T_Q2_K) {
        const u8* p = rp + (i64)kb * 84;
        r.sc = ldg_u16(p + 2 * j);
        const u8* q = p + 16 + 32 * (j >> 2);
#pragma unroll
        for (int k = 0; k < 8; ++k) r.w[k] = ldg_u32(q + 4 * k);
        r.dd = ldg_u32(p + 80);
    } else if constexpr (T == T_Q4_K) {
        const u8* p = rp + (i64)kb * 144;
#pragma unroll
        for (int k = 0; k < 3; ++k) r.s[k] = ldg_u32(p + 4 + 4 * k);
        const u8* q = p + 16 + 32 * (j >> 1);
#pragma unroll
        for (int k = 0; k < 8; ++k) r.w[k] = ldg_u32(q + 4 * k);
        r.dd = ldg_u32(p);
    } else {
        const u8* p = rp + (i64)kb * 66;
        r.wa = ldg_u32_a2(p + 2 + 8 * j);
        r.wb = ldg_u32_a2(p + 6 + 8 * j);
        r.d = ldg_u16(p);
    }
}

template <int T>
__device__ __forceinline__ void mm_unpack(const Raw<T>& r, int j, bool valid, u32 (&dst)[8], float* wsc, int* isc,
                                          i8* wm, const u32* sel) {
    if (!valid) {
#pragma unroll
        for (int k = 0; k < 8; ++k) dst[k] = 0u;
        if (T == T_Q8_0) wsc[j] = 0.f;
        return;
    }
    if constexpr (T == T_Q8_0) {
        wsc[j] = f16_to_f32((u16)r.d);
#pragma unroll
        for (int k = 0; k < 8; ++k) dst[k] = __funnelshift_r(r.w[k], r.w[k + 1], r.sh);
    } else if constexpr (T == T_Q2_K) {
        const u32 sc0 = r.sc & 255u, sc1 = r.sc >> 8;
        const int shift = 2 * (j & 3);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            // Bytes of q are 0..3 and the scale 0..15: the byte-wise products never carry.
            dst[k] = ((r.w[k] >> shift) & 0x03030303u) * (k < 4 ? (sc0 & 15u) : (sc1 & 15u));
        }
        wm[2 * j] = (i8)(sc0 >> 4);
        wm[2 * j + 1] = (i8)(sc1 >> 4);
        if (j == 0) {
            wsc[0] = f16_to_f32((u16)(r.dd & 0xffffu));
            wsc[1] = f16_to_f32((u16)(r.dd >> 16));
        }
    } else if constexpr (T == T_Q4_K) {
        // Byte i of the 12 packed scale bytes (words picked by selects: a run-time index
        // into r.s would put it in local memory).
        auto sb = [&](int i) -> int {
            const int k = i >> 2;
            const u32 w = k == 0 ? r.s[0] : k == 1 ? r.s[1] : r.s[2];
            return (int)((w >> (8 * (i & 3))) & 255u);
        };
        int scl, mn;
        if (j < 4) {
            scl = sb(j) & 63;
            mn = sb(j + 4) & 63;
        } else {
            scl = (sb(j + 4) & 15) | ((sb(j - 4) >> 6) << 4);
            mn = (sb(j + 4) >> 4) | ((sb(j) >> 6) << 4);
        }
        isc[j] = scl;
        wm[j] = (i8)mn;
        wm[8 + j] = 0;
        const int shift = (j & 1) * 4;
#pragma unroll
        for (int k = 0; k < 8; ++k) dst[k] = (r.w[k] >> shift) & 0x0F0F0F0Fu;
        if (j == 0) {
            wsc[0] = f16_to_f32((u16)(r.dd & 0xffffu));
            wsc[1] = f16_to_f32((u16)(r.dd >> 16));
        }
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k)
            iq2_octet<IQ2_POS, IQ2_NEG>(r.wa, r.wb, k, sel, dst[2 * k], dst[2 * k + 1]);
        isc[j] = 2 * (int)(r.wb >> 28) + 1;
        if (j == 0) wsc[0] = f16_to_f32((u16)r.d);
    }
}

// One step's activations for one thread: code words of tokens it copies, and (Q8_K) the scale
// and bsums of one (token, half) slot.
template <int BN, int NTH>
struct ActRaw {
    static constexpr int NW = BN * 64 / NTH, NS = (BN * 16 + NTH - 1) / NTH;
    u32 w[NW];
    float d[NS];
    int b[NS];
};

template <int T, int WN, int NF, int MI>
__device__ __forceinline__ void mm_body(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                        const u8* __restrict__ A, i64 a_stride, float* __restrict__ Y, i64 y_stride,
                                        int tok0, int ntok, const u32* __restrict__ tab_g) {
    constexpr int BN = 8 * WN * NF, NTH = 128 * WN, BM = 64 * MI;
    constexpr int ITEMS = BM * 8 / NTH;  // (row, sub-block) pairs each thread decodes per step
    constexpr bool Q80 = T == T_Q8_0;
    // Shift of the bsum split: Q2_K's halves reach |2048| (hi = bsum >> 4 fits int8), Q4_K's
    // pairs of halves |4096| (>> 5).
    constexpr int SH = T == T_Q4_K ? 5 : 4;
    using AR = ActRaw<BN, NTH>;
    // The next step's loads fly while this one computes, except for Q4_K's wide tile, whose
    // raw words (12 per item) beside its 64 accumulators would spill: it loads each step just
    // before unpacking it.
    constexpr bool PREFETCH = !(T == T_Q4_K && MI == 2);
    extern __shared__ __align__(16) u8 dyn[];
    if (dyn_smem_size() < (u32)mm_smem_bytes(BM, BN)) return;  // the host sized it wrong: outputs stay unwritten
    u32* sel = reinterpret_cast<u32*>(dyn);
    u8* ws = dyn + 2048;
    u8* xs = ws + BM * MM_STR;
    float* wsc = reinterpret_cast<float*>(xs + BN * MM_STR);
    int* isc = reinterpret_cast<int*>(wsc + BM * 8);
    i8* wm = reinterpret_cast<i8*>(isc + BM * 8);
    float* xsc = reinterpret_cast<float*>(wm + BM * 16);
    i8* xlo = reinterpret_cast<i8*>(xsc + BN * 8);
    i8* xhi = xlo + BN * 16;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tq = lane & 3;
    const int wr = (warp & 3) * 16 * MI, wt = (warp >> 2) * (8 * NF);
    const int row0 = blockIdx.x * BM;
    if (T == T_IQ2_XXS) {
        for (int i = tid; i < IQ2_TAB_WORDS; i += NTH) sel[i] = tab_g[i];
    }
    const int nblk = Q80 ? cols / 32 : cols / 256;  // blocks of the activation format
    const int nsteps = (cols + 255) / 256;
    // 32-column blocks in step kb (Q8_0 rows may end inside a step).
    auto blocks_in = [&](int kb) { return Q80 ? min(8, nblk - kb * 8) : 8; };

    Raw<T> wraw[ITEMS];
    AR araw;
    // A thread's weight items, activation words and scale slots are the same every step (NTH
    // is a multiple of 64), so their addresses are formed once and each step adds its offset:
    // item i is (row r0 + i NTH / 8, sub-block tid % 8), word i is word tid % 64 of token
    // tid / 64 + i NTH / 64, slot i is half tid % 16 of token tid / 16 + i NTH / 16.
    static_assert(NTH % 64 == 0, "the per-thread address pattern needs NTH a multiple of 64");
    constexpr i64 ABLK = Q80 ? 8 * Q8_0_BYTES : Q8_K_BYTES;  // activation bytes a step
    const int ij = tid & 7, aw = tid & 63, aj = Q80 ? aw >> 3 : 0, sh = tid & 15;
    const u8* wrow[ITEMS];
#pragma unroll
    for (int i = 0; i < ITEMS; ++i)
        wrow[i] = W + (i64)min(row0 + (tid >> 3) + i * (NTH / 8), rows - 1) * row_bytes;
    const u8* abase =
        A + (i64)(tok0 + (tid >> 6)) * a_stride + (Q80 ? aj * Q8_0_BYTES + 4 + 4 * (aw & 7) : 4 + 4 * aw);
    const u8* sbase = A + (i64)(tok0 + (tid >> 4)) * a_stride;
    const i64 astep = (NTH / 64) * a_stride, sstep = (NTH / 16) * a_stride;
    // Global loads of step kb into registers.
    auto fetch = [&](int kb) {
        const int jn = blocks_in(kb);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) mm_fetch<T>(wrow[i], kb, ij, ij < jn, wraw[i]);
        const u8* ap = abase + kb * ABLK;
#pragma unroll
        for (int i = 0; i < AR::NW; ++i) {
            const int t = (tid >> 6) + i * (NTH / 64);
            araw.w[i] = t < ntok && aj < jn ? ldg_u32(ap + i * astep) : 0u;
        }
        const u8* sp = sbase + kb * ABLK;
#pragma unroll
        for (int i = 0; i < AR::NS; ++i) {
            const int t = (tid >> 4) + i * (NTH / 16);
            const bool ok = t < BN && t < ntok;
            const u8* p = sp + i * sstep;
            float d = 0.f;
            int b = 0;
            if (Q80) {
                if (ok && sh < jn) d = *reinterpret_cast<const float*>(p + sh * Q8_0_BYTES);
            } else if (ok) {
                d = *reinterpret_cast<const float*>(p);
                const short* bs = reinterpret_cast<const short*>(p + Q8_K_BSUMS);
                b = T == T_Q4_K ? (sh < 8 ? (int)bs[2 * sh] + (int)bs[2 * sh + 1] : 0) : (int)bs[sh];
            }
            araw.d[i] = d;
            araw.b[i] = b;
        }
    };

    // Fragment loads by ldmatrix (8 x 16-byte rows a matrix, lane l naming row l % 8 of matrix
    // l / 8): A's four are rows 0-7 / 8-15 by bytes 0-15 / 16-31 of the 16-row slice, as
    // mma's a0..a3; B's are bytes 0-15 / 16-31 of token tile ni, then of ni + 1.
    // IQ2_XXS keeps plain 4-byte loads: with ldmatrix its 32-token tile measured 3% slower
    // (fewer instructions, longer waits on the next step's loads) and its wide tile spills.
    constexpr bool LDSM = T != T_IQ2_XXS;
    const u32 a_frag = smem_addr(ws) + (wr + (lane & 7) + 8 * ((lane >> 3) & 1)) * MM_STR + 16 * (lane >> 4);
    const u32 b_frag = smem_addr(xs) + (wt + (lane & 7) + 8 * (lane >> 4)) * MM_STR + 16 * ((lane >> 3) & 1);

    float facc[MI][NF][4];
    int iacc[MI][NF][4];
    zero_acc(facc);

    if (PREFETCH) fetch(0);
    for (int kb = 0; kb < nsteps; ++kb) {
        const int jn = blocks_in(kb);
        if (!PREFETCH) fetch(kb);
        __syncthreads();  // the last step's fragments are read (first: the IQ2_XXS tables are in)
        // Registers -> shared memory: weights (8 consecutive lanes per row), then activations.
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            const int it = tid + NTH * i, r = it >> 3, j = it & 7;
            u32 v[8];
            mm_unpack<T>(wraw[i], j, j < jn, v, wsc + r * 8, isc + r * 8, wm + r * 16, sel);
            // Two 16-byte stores: 8 lanes of a row write 256 consecutive bytes.
            uint4* dst = reinterpret_cast<uint4*>(ws + r * MM_STR + 32 * j);
            uint4 lo, hi;
            lo.x = v[0]; lo.y = v[1]; lo.z = v[2]; lo.w = v[3];
            hi.x = v[4]; hi.y = v[5]; hi.z = v[6]; hi.w = v[7];
            dst[0] = lo;
            dst[1] = hi;
        }
#pragma unroll
        for (int i = 0; i < AR::NW; ++i) {
            const int it = tid + NTH * i;
            reinterpret_cast<u32*>(xs + (it >> 6) * MM_STR)[it & 63] = araw.w[i];
        }
#pragma unroll
        for (int i = 0; i < AR::NS; ++i) {
            const int it = tid + NTH * i, t = it >> 4, h = it & 15;
            if (it < BN * 16) {
                if (Q80) {
                    if (h < 8) xsc[t * 8 + h] = araw.d[i];
                } else {
                    if (h == 0) xsc[t * 8] = araw.d[i];
                    xlo[t * 16 + h] = (i8)(araw.b[i] & ((1 << SH) - 1));
                    xhi[t * 16 + h] = (i8)(araw.b[i] >> SH);
                }
            }
        }
        __syncthreads();
        if (PREFETCH && kb + 1 < nsteps) fetch(kb + 1);

        zero_acc(iacc);

#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (j < jn) {
                u32 a[MI][4], b[NF][2];
                if (LDSM) {
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi) ldsm_x4(a[mi], a_frag + 16 * mi * MM_STR + 32 * j);
#pragma unroll
                    for (int ni = 0; ni < NF; ni += 2) {
                        if (ni + 1 < NF) {
                            u32 r[4];
                            ldsm_x4(r, b_frag + 8 * ni * MM_STR + 32 * j);
                            b[ni][0] = r[0]; b[ni][1] = r[1]; b[ni + 1][0] = r[2]; b[ni + 1][1] = r[3];
                        } else {
                            ldsm_x2(b[ni], b_frag + 8 * ni * MM_STR + 32 * j);
                        }
                    }
                } else {
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi) {
                        const u8* base = ws + (wr + 16 * mi + g) * MM_STR + 32 * j + 4 * tq;
                        a[mi][0] = *reinterpret_cast<const u32*>(base);
                        a[mi][1] = *reinterpret_cast<const u32*>(base + 8 * MM_STR);
                        a[mi][2] = *reinterpret_cast<const u32*>(base + 16);
                        a[mi][3] = *reinterpret_cast<const u32*>(base + 8 * MM_STR + 16);
                    }
#pragma unroll
                    for (int ni = 0; ni < NF; ++ni) {
                        const u8* base = xs + (wt + 8 * ni + g) * MM_STR + 32 * j + 4 * tq;
                        b[ni][0] = *reinterpret_cast<const u32*>(base);
                        b[ni][1] = *reinterpret_cast<const u32*>(base + 16);
                    }
                }
                if (T == T_Q2_K) {
                    // The scales are inside the codes: the whole step sums in the MMA.
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                        for (int ni = 0; ni < NF; ++ni) mma_k32(iacc[mi][ni], a[mi], b[ni][0], b[ni][1]);
                } else {
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi) {
                        const int ra = wr + 16 * mi + g;
#pragma unroll
                        for (int ni = 0; ni < NF; ++ni) {
                            int d[4] = {0, 0, 0, 0};
                            mma_k32(d, a[mi], b[ni][0], b[ni][1]);
#pragma unroll
                            for (int e = 0; e < 4; ++e) {
                                const int r = ra + 8 * (e >> 1), t = wt + 8 * ni + 2 * tq + (e & 1);
                                if (Q80) {
                                    // CPU: acc + (f32(d_w) * d_x) * (f32)isum, blocks in order
                                    // (|isum| < 2^24: the conversion is exact).
                                    const float sc = __fmul_rn(wsc[r * 8 + j], xsc[t * 8 + j]);
                                    facc[mi][ni][e] = __fadd_rn(facc[mi][ni][e], __fmul_rn(sc, (float)d[e]));
                                } else {
                                    iacc[mi][ni][e] += isc[r * 8 + j] * d[e];
                                }
                            }
                        }
                    }
                }
            }
        }

        if (!Q80) {
            // The step's min sums (Q2_K, Q4_K), one fragment pair at a time (few registers
            // live beside the accumulators), and the per-super-block combine.
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const i8* mb = wm + (wr + 16 * mi + g) * 16 + 4 * tq;
#pragma unroll
                for (int ni = 0; ni < NF; ++ni) {
                    int mlo[4] = {0, 0, 0, 0}, mhi[4] = {0, 0, 0, 0};
                    if (T != T_IQ2_XXS) {
                        const u32 a0 = *reinterpret_cast<const u32*>(mb), a1 = *reinterpret_cast<const u32*>(mb + 8 * 16);
                        const int t = wt + 8 * ni + g;
                        mma_k16(mlo, a0, a1, *reinterpret_cast<const u32*>(xlo + t * 16 + 4 * tq));
                        mma_k16(mhi, a0, a1, *reinterpret_cast<const u32*>(xhi + t * 16 + 4 * tq));
                    }
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int r = wr + 16 * mi + g + 8 * (e >> 1), t = wt + 8 * ni + 2 * tq + (e & 1);
                        const float yd = xsc[t * 8], d = wsc[r * 8];
                        float v;
                        if (T == T_IQ2_XXS) {
                            // CPU: sumf + (f32(d) * y.d) * (f32)bsum.
                            v = __fmul_rn(__fmul_rn(d, yd), (float)iacc[mi][ni][e]);
                        } else {
                            // CPU: (y.d * d) * isum - (y.d * dmin) * summs.
                            const int summs = mhi[e] * (1 << SH) + mlo[e];
                            v = __fsub_rn(__fmul_rn(__fmul_rn(yd, d), (float)iacc[mi][ni][e]),
                                          __fmul_rn(__fmul_rn(yd, wsc[r * 8 + 1]), (float)summs));
                        }
                        facc[mi][ni][e] = __fadd_rn(facc[mi][ni][e], v);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NF; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = row0 + wr + 16 * mi + g + 8 * (e >> 1), t = wt + 8 * ni + 2 * tq + (e & 1);
                if (r < rows && t < ntok) {
                    const float v = facc[mi][ni][e];
                    Y[(i64)(tok0 + t) * y_stride + r] = T == T_IQ2_XXS ? __fmul_rn(0.125f, v) : v;
                }
            }
}

// Entry points: mm_<type>_n<BN>, grid (ceil(rows / BM), token tiles, groups), 256 threads (BN
// 16 or 32, BM 64) or 512 (BN 64, BM 128),
// mm_smem_bytes(BM, BN) bytes of dynamic shared memory. Without `tiles`, tile y is tokens
// BN y .. min(BN (y + 1), n) of one matrix; with it, tile y is tiles[3y .. 3y + 3] =
// (expert, first token, count): the expert's matrix is expert_bytes after the previous one
// (a stacked tensor), and a negative expert skips the tile. Token t of a tile reads its
// activations at A + (first + t) a_stride and writes Y[(first + t) y_stride + row]. Group z
// (blockIdx.z: the output projection's head groups, each its own matrix over its own slice of
// the inputs, in one launch) shifts W by z gw bytes, A by z ga bytes and Y by z gy floats.
#define MM_ARGS                                                                                 \
    const u8 *__restrict__ W, i64 row_bytes, int rows, int cols, i64 expert_bytes,              \
        const u8 *__restrict__ A, i64 a_stride, float *__restrict__ Y, i64 y_stride, int n,     \
        const int *__restrict__ tiles, const u32 *__restrict__ iq2_tab, i64 gw, i64 ga, i64 gy
// (WN, NF, MI): 16 tokens = (2, 1, 1), 64 rows x 16 tokens on 256 threads; 64 tokens =
// (4, 2, 2), 128 rows x 64 tokens on 512 threads. MINB CTAs an SM for the 256-thread tiles:
// IQ2_XXS 3 (80 registers, 24 warps an SM; its loop waits on loads and barriers, and the
// extra warps cut the prefill's expert products by 8% on an H100, where 4 CTAs spill and lose
// half of that); the others 2 (128 registers: Q8_0 at 3 took 16% more instructions for no
// gain, Q2_K and Q4_K spill). The wide tile: 1 (128 registers, 16 warps).
#define MM_KERNEL(NAME, T, WN, NF, MI, MINB)                                                    \
    extern "C" __global__ void __launch_bounds__(128 * WN, MINB) NAME(MM_ARGS) {                \
        constexpr int BN = 8 * WN * NF;                                                         \
        int ex = 0, tok0, ntok;                                                                 \
        if (tiles) {                                                                            \
            ex = tiles[3 * blockIdx.y];                                                         \
            tok0 = tiles[3 * blockIdx.y + 1];                                                   \
            ntok = tiles[3 * blockIdx.y + 2];                                                   \
            if (ex < 0) return;                                                                 \
        } else {                                                                                \
            tok0 = blockIdx.y * BN;                                                             \
            ntok = min(BN, n - tok0);                                                           \
        }                                                                                       \
        if (ntok <= 0) return;                                                                  \
        const i64 z = blockIdx.z;                                                               \
        mm_body<T, WN, NF, MI>(W + (i64)ex * expert_bytes + z * gw, row_bytes, rows, cols,      \
                               A + z * ga, a_stride, Y + z * gy, y_stride, tok0, ntok, iq2_tab);   \
    }
#define MM_ALL(name, T, MINB)                                                                   \
    MM_KERNEL(mm_##name##_n16, T, 2, 1, 1, MINB)                                                \
    MM_KERNEL(mm_##name##_n32, T, 2, 2, 1, MINB)                                                \
    MM_KERNEL(mm_##name##_n64, T, 4, 2, 2, 1)

MM_ALL(q8_0, T_Q8_0, 2)
MM_ALL(q2_k, T_Q2_K, 2)
MM_ALL(q4_k, T_Q4_K, 2)
MM_ALL(iq2_xxs, T_IQ2_XXS, 3)

// ---- float weights (F16, F32) over many tokens -------------------------------------------------
// The plain f32 product (no quantization, FMA in f32) for the small float matrices of the
// model (HC projections 24 x 16384, router, compressors, indexer): a warp owns R rows and a
// batch of up to 16 tokens; its lanes stride the row in 16-byte weight units (4 f32 or 8 f16
// columns), accumulate every (row, token) pair in registers and meet in a warp butterfly. The
// grid spans token batches as well as rows (grid.y), so a 24-row matrix over a 256-token
// chunk still runs 96 warps at once where one launch per 16 tokens ran 6. Deterministic: a
// fixed assignment and order; X rows 16-byte aligned (x_stride a multiple of 4 floats).
template <bool F16, int R>
__device__ __forceinline__ void mmf_body(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                         const float* __restrict__ X, i64 x_stride, float* __restrict__ Y,
                                         i64 y_stride, int n) {
    constexpr int EPU = F16 ? 8 : 4, NT = 16;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * 4 + warp) * R, t0 = blockIdx.y * NT;
    if (row0 >= rows) return;
    const int nt = min(NT, n - t0);
    const int units = cols / EPU;
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    for (int u = lane; u < units; u += 32) {
        uint4 w[R];
#pragma unroll
        for (int r = 0; r < R; ++r)
            w[r] = ld_stream_16(W + (u64)min(row0 + r, rows - 1) * (u64)row_bytes + 16 * (u64)u);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            if (t < nt) {
                const float* xp = X + (i64)(t0 + t) * x_stride + (i64)u * EPU;
                float x[EPU];
#pragma unroll
                for (int i = 0; i < EPU / 4; ++i) {
                    const float4 v = ld_x4(xp + 4 * i);
                    x[4 * i] = v.x; x[4 * i + 1] = v.y; x[4 * i + 2] = v.z; x[4 * i + 3] = v.w;
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const u32 ws[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
                    float s = acc[r][t];
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        if (F16) {
                            s = fmaf(f16_to_f32((u16)(ws[i] & 0xffffu)), x[2 * i], s);
                            s = fmaf(f16_to_f32((u16)(ws[i] >> 16)), x[2 * i + 1], s);
                        } else {
                            s = fmaf(__uint_as_float(ws[i]), x[i], s);
                        }
                    }
                    acc[r][t] = s;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0 && row0 + r < rows && t < nt) Y[(i64)(t0 + t) * y_stride + row0 + r] = v;
        }
}

// mmf_<f16|f32>_r<R>: grid (ceil(rows / (4 R)), ceil(n / 16)), 128 threads.
#define MMF_KERNEL(NAME, F16, R)                                                                \
    extern "C" __global__ void __launch_bounds__(128) NAME(const u8* __restrict__ W, i64 row_bytes, \
                                                           int rows, int cols,                  \
                                                           const float* __restrict__ X,         \
                                                           i64 x_stride, float* __restrict__ Y, \
                                                           i64 y_stride, int n) {               \
        mmf_body<F16, R>(W, row_bytes, rows, cols, X, x_stride, Y, y_stride, n);                \
    }
MMF_KERNEL(mmf_f16_r1, true, 1)
MMF_KERNEL(mmf_f16_r2, true, 2)
MMF_KERNEL(mmf_f32_r1, false, 1)
MMF_KERNEL(mmf_f32_r2, false, 2)

// ---- F16 weights over many tokens on the BF16 tensor cores ---------------------------------
// The same product as mmf_f16 to f32 accuracy, not in its order: each f32 activation as three
// BF16 parts (bf16_split3), each F16 weight as two (the nearest BF16 and the exact rest: an F16
// significand has 11 bits, a BF16 one 8), so all six part products are exact. Per 16 columns
// they go smallest first into a fresh accumulator (the MMA adds with truncation; chained over
// a whole row its error grew several-fold past the f32 kernel's), and the steps are added in
// f32 with rounding. Within each 16 columns lane t loads columns 4t..4t + 3 (one float4 of X,
// 8 bytes of W) for the MMA's k = 2t, 2t + 1, 8 + 2t, 9 + 2t: a dot product does not depend on
// the order of its k.
//
// A warp owns 32 tokens x 32 rows (2 x 4 tiles) over the columns of its split; a block's 4
// warps take 128 consecutive tokens of the same rows. grid (ceil(rows / 32), ceil(n / 128),
// splits), 128 threads; split z covers columns z kchunk .. (z + 1) kchunk (kchunk a multiple of
// 16, cols a multiple of 16). One split writes Y; several write their partial sums to P
// (split-major, n x rows each) for mmf_reduce, which adds them in split order: deterministic.
// X rows 16-byte aligned (x_stride a multiple of 4), W rows 8-byte aligned.
__device__ __forceinline__ void split_f16x4(uint2 w, u32 (&hi)[2], u32 (&lo)[2]) {
    const u32 ws[2] = {w.x, w.y};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float a = f16_to_f32((u16)(ws[i] & 0xffffu)), b = f16_to_f32((u16)(ws[i] >> 16));
        const u32 ah = bf16_bits(a), bh = bf16_bits(b);
        hi[i] = ah | (bh << 16);
        lo[i] = bf16_bits(a - bf16_value(ah)) | (bf16_bits(b - bf16_value(bh)) << 16);
    }
}

extern "C" __global__ void __launch_bounds__(128) mmf16_mma(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                                            const float* __restrict__ X, i64 x_stride,
                                                            float* __restrict__ Y, i64 y_stride, int n, int kchunk,
                                                            float* __restrict__ P) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int r0 = blockIdx.x * 32, t0 = (blockIdx.y * 4 + warp) * 32;
    if (t0 >= n) return;
    const int k0 = blockIdx.z * kchunk, k1 = min(cols, k0 + kchunk);
    const float* xr[2][2];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int t = t0 + 16 * mi + g + 8 * h;
            xr[mi][h] = t < n ? X + (i64)t * x_stride + 4 * tq : nullptr;
        }
    const u8* wr[4];
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
        const int r = r0 + 8 * ni + g;
        wr[ni] = r < rows ? W + (i64)r * row_bytes + 8 * tq : nullptr;
    }
    float acc[2][4][4];
    zero_acc(acc);
    for (int k = k0; k < k1; k += 16) {
        u32 a[2][3][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
            float4 lo = make_float4(0.0f, 0.0f, 0.0f, 0.0f), hi = lo;
            if (xr[mi][0]) lo = *reinterpret_cast<const float4*>(xr[mi][0] + k);
            if (xr[mi][1]) hi = *reinterpret_cast<const float4*>(xr[mi][1] + k);
            bf16_a_parts(lo, hi, a[mi]);
        }
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
            uint2 w = make_uint2(0u, 0u);
            if (wr[ni]) w = *reinterpret_cast<const uint2*>(wr[ni] + 2 * (i64)k);
            u32 wh[2], wl[2];
            split_f16x4(w, wh, wl);
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                mma_bf16(part, a[mi][2], wl[0], wl[1]);
                mma_bf16(part, a[mi][2], wh[0], wh[1]);
                mma_bf16(part, a[mi][1], wl[0], wl[1]);
                mma_bf16(part, a[mi][1], wh[0], wh[1]);
                mma_bf16(part, a[mi][0], wl[0], wl[1]);
                mma_bf16(part, a[mi][0], wh[0], wh[1]);
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mi][ni][e] += part[e];
            }
        }
    }
    float* out = gridDim.z > 1 ? P + (i64)blockIdx.z * n * rows : Y;
    const i64 stride = gridDim.z > 1 ? rows : y_stride;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int t = t0 + 16 * mi + g + 8 * (e >> 1), r = r0 + 8 * ni + 2 * tq + (e & 1);
                if (t < n && r < rows) out[(i64)t * stride + r] = acc[mi][ni][e];
            }
}

// Y[t][r] = the sum over splits z of P[z][t][r] (z in order), one thread per output.
extern "C" __global__ void mmf_reduce(const float* __restrict__ P, int splits, int rows, int n, float* __restrict__ Y,
                                      i64 y_stride) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)n * rows) return;
    const int t = (int)(i / rows), r = (int)(i - (i64)t * rows);
    float s = 0.0f;
    for (int z = 0; z < splits; ++z) s += P[(i64)z * n * rows + i];
    Y[(i64)t * y_stride + r] = s;
}
