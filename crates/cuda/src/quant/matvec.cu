// y = W x (and Y = W X for a handful of tokens) with W in its GGUF block layout and f32
// activations: the plain numerics (weights decoded exactly, f32 products and sums).
//
// Determinism. Every output is produced by one warp: its lanes' partial sums, a butterfly
// reduction in a fixed order, no atomics. The result depends only on (W, x, shape), never
// on timing or on how many CTAs run at once.
//
// Quantized types (mv_quant below): persistent warps, each streaming whole row groups through
// a cp.async pipeline in shared memory; GGUF blocks of 34, 66 and 84 bytes are not 16-byte
// aligned, so warps copy whole 16-byte lines and lanes decode their blocks from shared memory.
//
// Float types (mv_float): rows are 16-byte aligned, so lanes load 16 bytes of weights
// directly, 4 or 8 columns each, and each warp owns R rows.
//
// Host-side preconditions (checked in matvec.rs): W starts 16-byte aligned and its buffer
// extends at least to the next 16-byte boundary after the matrix (the staging rounds its
// reads out to whole 16-byte lines); X and its stride are 16-byte aligned; cols is a whole
// number of blocks (and of 4 or 8 for F32 / F16).

#include "dsv4_common.cuh"

#define T_F32 0
#define T_F16 1
#define T_Q8_0 2
#define T_Q2_K 3
#define T_Q4_K 4
#define T_IQ2_XXS 5

#define MV_WARPS 4
#define MV_THREADS (MV_WARPS * DSV4_WARP)
// Quantized kernels: 8 warps per CTA share one shared-memory copy of x.
#define MVQ_WARPS 8
#define MVQ_THREADS (MVQ_WARPS * DSV4_WARP)
// Columns per warp step for the quantized types: one 32-column sub-block per lane.
#define MV_STEP_COLS 1024

// Block geometry: the smallest run of bytes that holds whole columns.
template <int T> struct Blk;
template <> struct Blk<T_Q8_0> { static constexpr int COLS = 32, BYTES = 34; };
template <> struct Blk<T_Q2_K> { static constexpr int COLS = 256, BYTES = 84; };
template <> struct Blk<T_Q4_K> { static constexpr int COLS = 256, BYTES = 144; };
template <> struct Blk<T_IQ2_XXS> { static constexpr int COLS = 256, BYTES = 66; };

// ---- one 32-column sub-block per lane, one function per format -----------------------------
// Every format has one decoder per numerics, used by all kernels below (one token, several
// tokens, expert slots):
//   dec_<fmt>: the plain numerics. Decodes the lane's 32 weights to their exact f32 codes and
//              the affine constants that turn code sums into the sub-block's share of the row
//              sum (Sub below): the block scales come out of the inner sums (one multiply
//              per 16 columns instead of one per weight), and a batch decodes once for all
//              of its tokens.
//   dq_load_<fmt> / dq_apply: the official numerics. The codes as dp4a operands, then exact
//              integer block sums against quantized activations and ds4's per-block f32
//              formulas (FORMATS §3.4-3.7); a batch loads once for all of its tokens.

// The lane's share of a row sum, for x = its 32 activations:
//   a0 · Σ_{i<16} q_i x_i + a1 · Σ_{i≥16} q_i x_i − (b0 · Σ_{i<16} x_i + b1 · Σ_{i≥16} x_i).
// The q_i are small integers, exact in f32. b0 = b1 = 0 for the formats without minimums.
struct Sub {
    float q[32];
    float a0, a1, b0, b1;
};

// Formats with a per-block minimum (the activation sums are needed).
template <int T> struct HasMin { static constexpr bool V = T == T_Q2_K || T == T_Q4_K; };

// Q8_0: p = the 34-byte block (2-byte aligned). The 32 code bytes start at p + 2, which is
// 4-byte aligned for half the lanes only; every lane reads the 9 aligned words around them
// and funnel-shifts, 9 shared loads instead of 16 two-byte ones.
__device__ __forceinline__ void q8_0_words(const u8* p, u32 (&wd)[9], u32& sh) {
    const u8* q = p + 2;
    const u32* aw = reinterpret_cast<const u32*>(reinterpret_cast<u64>(q) & ~(u64)3);
    sh = (u32)(reinterpret_cast<u64>(q) & 3) * 8;  // 0 or 16
#pragma unroll
    for (int k = 0; k < 9; ++k) wd[k] = aw[k];
}

__device__ __forceinline__ void dec_q8_0(const u8* p, Sub& s) {
    u32 wd[9], sh;
    q8_0_words(p, wd, sh);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = __funnelshift_r(wd[k], wd[k + 1], sh) ^ 0x80808080u;
#pragma unroll
        for (int e = 0; e < 4; ++e) s.q[4 * k + e] = sbyte_to_f32(w, e);
    }
    s.a0 = s.a1 = f16_to_f32(lds_u16(p));
    s.b0 = s.b1 = 0.f;
}

// Q4_K scale and minimum of sub-block j (6-bit fields packed in 12 bytes at p + 4).
__device__ __forceinline__ void q4_k_scale(const u8* p, int j, int& scl, int& mn) {
    const u8* sc = p + 4;
    if (j < 4) {
        scl = sc[j] & 63;
        mn = sc[j + 4] & 63;
    } else {
        scl = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

// Q4_K: p = the 144-byte super-block (4-byte aligned), j = sub-block 0..7 (32 columns). Sub-
// block j lives in the low (even j) or high (odd j) nibbles of chunk j/2.
__device__ __forceinline__ void dec_q4_k(const u8* p, int j, Sub& s) {
    int scl, mn;
    q4_k_scale(p, j, scl, mn);
    const u8* q = p + 16 + 32 * (j >> 1);
    const int shift = (j & 1) * 4;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = (lds_u32(q + 4 * k) >> shift) & 0x0F0F0F0Fu;
#pragma unroll
        for (int e = 0; e < 4; ++e) s.q[4 * k + e] = byte_to_f32(w, e);
    }
    s.a0 = s.a1 = f16_to_f32(lds_u16(p)) * (float)scl;
    s.b0 = s.b1 = f16_to_f32(lds_u16(p + 2)) * (float)mn;
}

// Q2_K: p = the 84-byte super-block (4-byte aligned), j = sub-block 0..7; its two 16-column
// halves have their own scale/min bytes. Columns 32j.. are bit pair (j % 4) of the 32 code
// bytes of half j / 4.
__device__ __forceinline__ void dec_q2_k(const u8* p, int j, Sub& s) {
    const float d = f16_to_f32(lds_u16(p + 80)), dmin = f16_to_f32(lds_u16(p + 82));
    const u32 sc0 = p[2 * j], sc1 = p[2 * j + 1];
    const u8* q = p + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = (lds_u32(q + 4 * k) >> shift) & 0x03030303u;
#pragma unroll
        for (int e = 0; e < 4; ++e) s.q[4 * k + e] = byte_to_f32(w, e);
    }
    s.a0 = d * (float)(sc0 & 15);
    s.a1 = d * (float)(sc1 & 15);
    s.b0 = dmin * (float)(sc0 >> 4);
    s.b1 = dmin * (float)(sc1 >> 4);
}

// The IQ2_XXS levels plus 128 (v ^ 0x80), the input sbyte_to_f32 takes (plain numerics);
// the signed ones and iq2_octet are in dsv4_common.cuh.
#define IQ2_POS_B 0x00AB9988u
#define IQ2_NEG_B 0x00556778u

// IQ2_XXS: p = the 66-byte super-block (2-byte aligned), ib = group 0..7 (32 columns).
__device__ __forceinline__ void dec_iq2_xxs(const u8* p, int ib, const u32* tab, Sub& s) {
    const float d = f16_to_f32(lds_u16(p));
    const u32 a = lds_u32_a2(p + 2 + 8 * ib), b = lds_u32_a2(p + 6 + 8 * ib);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        u32 lo, hi;
        iq2_octet<IQ2_POS_B, IQ2_NEG_B>(a, b, k, tab, lo, hi);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            s.q[8 * k + e] = sbyte_to_f32(lo, e);
            s.q[8 * k + 4 + e] = sbyte_to_f32(hi, e);
        }
    }
    // Same f32 operations and order as the reference dequantization.
    s.a0 = s.a1 = (d * (0.5f + (float)(b >> 28))) * 0.25f;
    s.b0 = s.b1 = 0.f;
}

template <int T>
__device__ __forceinline__ void dec_sub(const u8* bp, int jj, const u32* tab, Sub& s) {
    if constexpr (T == T_Q8_0) dec_q8_0(bp, s);
    else if constexpr (T == T_Q4_K) dec_q4_k(bp, jj, s);
    else if constexpr (T == T_Q2_K) dec_q2_k(bp, jj, s);
    else dec_iq2_xxs(bp, jj, tab, s);
}

// Σ over the lane's 32 columns of w·x for a decoded sub-block; xs0, xs1 = sums of x over the
// two 16-column halves (used only by formats with minimums). Two independent FMA chains.
template <int T>
__device__ __forceinline__ float apply_sub(const Sub& s, const float* x, float xs0, float xs1) {
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        s0 = fmaf(s.q[i], x[i], s0);
        s1 = fmaf(s.q[16 + i], x[16 + i], s1);
    }
    if constexpr (HasMin<T>::V) return (s.a0 * s0 + s.a1 * s1) - (s.b0 * xs0 + s.b1 * xs1);
    else return s.a0 * (s0 + s1);  // one scale per sub-block (a0 == a1)
}

// ---- official numerics ----------------------------------------------------------------------
// Activation blocks: Q8_0-like = f32 d + 32 int8 (36 bytes); Q8_K = f32 d + 256 int8 + 16
// int16 bsums (292 bytes); both staged verbatim in shared memory (4-byte aligned). The CPU
// adds the same per-block shares in another grouping, so results agree to f32 rounding.

// The lane's activations, loaded once per item and shared by the G rows: its 32 int8 as 8
// words, the block scale, and (Q8_K) the two 16-column sums of its sub-block.
struct QAct {
    u32 q[8];
    float d;
    int bs0, bs1;
};

// sb = the lane's sub-block in the row; its Q8_0-like block is its own, its Q8_K block the
// super-block's (sub-block sb % 8 of it).
template <int T>
__device__ __forceinline__ void load_qact(const u8* xact, int sb, QAct& a) {
    const u8* ab = T == T_Q8_0 ? xact + sb * Q8_0_BYTES : xact + (sb >> 3) * Q8_K_BYTES;
    const u32* xq = reinterpret_cast<const u32*>(ab + 4 + (T == T_Q8_0 ? 0 : 32 * (sb & 7)));
#pragma unroll
    for (int k = 0; k < 8; ++k) a.q[k] = xq[k];
    a.d = *reinterpret_cast<const float*>(ab);
    if constexpr (T == T_Q8_0) {
        a.bs0 = a.bs1 = 0;
    } else {
        const short* bs = reinterpret_cast<const short*>(ab + Q8_K_BSUMS);
        a.bs0 = bs[2 * (sb & 7)];
        a.bs1 = bs[2 * (sb & 7) + 1];
    }
}

// A lane's weight sub-block decoded for the official numerics (loaded once, applied to each
// token's activations): the 32 codes as 8 words of dp4a operands, and the format's scale
// facts. Every f32 operation of dq_apply is an exactly rounded intrinsic (no FMA contraction,
// here or into the caller's sum), so a product's bits do not depend on the kernel it is
// inlined into: one token or several, a matrix or expert slots.
struct QW {
    u32 w[8];
    float d, dmin;
    int s0, s1;
};

// Q8_0 weights (34-byte block at p, 2-byte aligned) x Q8_0-like activations.
__device__ __forceinline__ void dq_load_q8_0(const u8* p, QW& q) {
    u32 wd[9], sh;
    q8_0_words(p, wd, sh);
#pragma unroll
    for (int k = 0; k < 8; ++k) q.w[k] = __funnelshift_r(wd[k], wd[k + 1], sh);
    q.d = f16_to_f32(lds_u16(p));
}

// Q4_K super-block at p (4-byte aligned), sub-block j, x Q8_K.
__device__ __forceinline__ void dq_load_q4_k(const u8* p, int j, QW& q) {
    q.d = f16_to_f32(lds_u16(p));
    q.dmin = f16_to_f32(lds_u16(p + 2));
    q4_k_scale(p, j, q.s0, q.s1);
    const u8* c = p + 16 + 32 * (j >> 1);
    const int shift = (j & 1) * 4;
#pragma unroll
    for (int k = 0; k < 8; ++k) q.w[k] = (lds_u32(c + 4 * k) >> shift) & 0x0F0F0F0Fu;
}

// Q2_K super-block at p (4-byte aligned), sub-block j (16-column halves 2j, 2j+1), x Q8_K.
__device__ __forceinline__ void dq_load_q2_k(const u8* p, int j, QW& q) {
    q.d = f16_to_f32(lds_u16(p + 80));
    q.dmin = f16_to_f32(lds_u16(p + 82));
    q.s0 = p[2 * j];
    q.s1 = p[2 * j + 1];
    const u8* c = p + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
#pragma unroll
    for (int k = 0; k < 8; ++k) q.w[k] = (lds_u32(c + 4 * k) >> shift) & 0x03030303u;
}

// IQ2_XXS super-block at p (2-byte aligned), group ib, x Q8_K.
__device__ __forceinline__ void dq_load_iq2_xxs(const u8* p, int ib, const u32* tab, QW& q) {
    q.d = f16_to_f32(lds_u16(p));
    const u32 wa = lds_u32_a2(p + 2 + 8 * ib), wb = lds_u32_a2(p + 6 + 8 * ib);
#pragma unroll
    for (int k = 0; k < 4; ++k) iq2_octet<IQ2_POS, IQ2_NEG>(wa, wb, k, tab, q.w[2 * k], q.w[2 * k + 1]);
    q.s0 = 2 * (int)(wb >> 28) + 1;
}

template <int T>
__device__ __forceinline__ void dq_load(const u8* bp, int jj, const u32* tab, QW& q) {
    if constexpr (T == T_Q8_0) dq_load_q8_0(bp, q);
    else if constexpr (T == T_Q4_K) dq_load_q4_k(bp, jj, q);
    else if constexpr (T == T_Q2_K) dq_load_q2_k(bp, jj, q);
    else dq_load_iq2_xxs(bp, jj, tab, q);
}

// The sub-block's share of the row sum: exact integer block sums with dp4a, then ds4's
// per-block f32 formulas (FORMATS §3.4-3.7).
template <int T>
__device__ __forceinline__ float dq_apply(const QW& q, const QAct& a) {
    if constexpr (T == T_Q2_K) {
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s0 = __dp4a((int)q.w[k], (int)a.q[k], s0);
            s1 = __dp4a((int)q.w[k + 4], (int)a.q[k + 4], s1);
        }
        const int isum = (q.s0 & 15) * s0 + (q.s1 & 15) * s1;
        const int summs = a.bs0 * (q.s0 >> 4) + a.bs1 * (q.s1 >> 4);
        // CPU: dall * isum - dmin * summs, dall = yd * d, dmin = yd * dmin.
        return __fsub_rn(__fmul_rn(__fmul_rn(a.d, q.d), (float)isum), __fmul_rn(__fmul_rn(a.d, q.dmin), (float)summs));
    } else {
        // Two dp4a chains of 4 (integer sums: exact in any order), half the dependent latency.
        int i0 = 0, i1 = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            i0 = __dp4a((int)q.w[k], (int)a.q[k], i0);
            i1 = __dp4a((int)q.w[k + 4], (int)a.q[k + 4], i1);
        }
        const int isum = i0 + i1;
        if constexpr (T == T_Q8_0) {
            // CPU: acc += (f32(d_w) * d_x) * (f32)isum.
            return __fmul_rn(__fmul_rn(q.d, a.d), (float)isum);
        } else if constexpr (T == T_Q4_K) {
            // CPU: (yd * d) * isum - (yd * dmin) * summs, with isum = sum_j sc_j * s_j and
            // summs = sum_j m_j * (bsums[2j] + bsums[2j+1]).
            return __fsub_rn(__fmul_rn(__fmul_rn(a.d, q.d), (float)(q.s0 * isum)),
                             __fmul_rn(__fmul_rn(a.d, q.dmin), (float)(q.s1 * (a.bs0 + a.bs1))));
        } else {
            // CPU: sumf += (f32(d) * y.d) * bsum per block, result 0.125 * sumf.
            return __fmul_rn(0.125f, __fmul_rn(__fmul_rn(q.d, a.d), (float)(q.s0 * isum)));
        }
    }
}

// ---- quantized kernel body ------------------------------------------------------------------

// First byte of step s of row group rg (its first row); row g of the group starts
// g * row_bytes later. One 64-bit multiply per item; the rows' offsets in their 16-byte lines
// then need only the low address bits.
template <int T, int G>
__device__ __forceinline__ const u8* step_base(const u8* W, i64 row_bytes, int rg, int s) {
    constexpr int STEP_BYTES = MV_STEP_COLS / Blk<T>::COLS * Blk<T>::BYTES;
    return W + (u64)(rg * G) * (u64)row_bytes + (u64)s * STEP_BYTES;
}

// Offset of row g's first byte of the step in its 16-byte line.
__device__ __forceinline__ int line_offset(const u8* base, i64 row_bytes, int g) {
    return (int)(((u32)reinterpret_cast<u64>(base) + (u32)g * (u32)row_bytes) & 15u);
}

// Queues the cp.async copies of one item (row group rg, step s) into the stage at shared
// address `stage`: the whole 16-byte lines that cover each row's step; rows past the end are
// skipped.
template <int T, int G, int BUF, int NL>
__device__ __forceinline__ void mv_issue(const u8* __restrict__ W, i64 row_bytes, int rows, int units,
                                         int rg, int s, int lane, u32 stage) {
    constexpr int UPS = MV_STEP_COLS / Blk<T>::COLS;
    const int nbytes = min(UPS, units - s * UPS) * Blk<T>::BYTES;
    const u8* base = step_base<T, G>(W, row_bytes, rg, s);
    // Rows a whole number of 16-byte lines long (every Flash matrix but the IQ2_XXS ones of
    // 1,024 columns) start the step at one offset in its line: one line count and one
    // address for the group, each row's copies one 64-bit add and a predicated copy away.
    // The general path below costs ~37 instructions a row (this one ~4); its copies were a
    // quarter of the one-token IQ2_XXS kernel's instructions.
    if ((row_bytes & 15) == 0 && rg * G + G <= rows) {
        const int sh = (int)(reinterpret_cast<u64>(base) & 15u);
        const int n16 = (sh + nbytes + 15) >> 4;
        const u8* a = base - sh + 16 * lane;
        const u32 st = stage + (u32)(16 * lane);
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int l = 0; l < NL; ++l)
                cp_async_16_if(lane + DSV4_WARP * l < n16, st + (u32)(g * BUF + 16 * DSV4_WARP * l),
                               a + g * row_bytes + 16 * DSV4_WARP * l);
        return;
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (rg * G + g < rows) {
            const u8* first = base + (i64)g * row_bytes;
            const int sh = (int)(reinterpret_cast<u64>(first) & 15u);
            const u8* a = first - sh;
            const int n16 = (sh + nbytes + 15) >> 4;
#pragma unroll
            for (int l = 0; l < NL; ++l) {
                const int q = lane + DSV4_WARP * l;
                if (q < n16) cp_async_16(stage + (u32)(g * BUF + 16 * q), a + 16 * q);
            }
        }
    }
}

// log2 of a power of two up to 32, at compile time.
template <int V> struct Log2 { static constexpr int N = V <= 1 ? 0 : 1 + Log2<V / 2>::N; };
template <> struct Log2<1> { static constexpr int N = 0; };

// Work split of the quantized kernels. The rows form groups of G. A CTA's 8 warps work on
// 8 / KS groups at a time ("a round"), KS warps per group (KS = 1, 2, 4 or 8, chosen by the
// host: more when there are too few groups to fill the GPU), each taking every KS-th
// 1024-column step of the group. CTA c handles the rounds of group packs c, c + nctas, ...
// (one wave of persistent CTAs). A warp walks its items, (group, step) pairs, in order and
// copies each item's G x ~1.1 KB (Q8_0) of weights into its shared stage buffer with
// cp.async S items ahead, across round boundaries, so its memory pipeline never drains
// while it computes. Each lane decodes its 32-column sub-block of each of the G rows
// against its 32 activations (loaded once per item, reused for G rows) and accumulates in
// registers. At the end of a round each warp butterfly-reduces its G sums; with KS = 1 it
// writes them, otherwise the KS partials meet in shared memory and the group's first warp
// adds them in warp order. Deterministic: fixed assignment, fixed order, no atomics.
//
// Activations. With `xsm` set (the host found room for all n tokens), the CTA first copies x
// into shared memory, where a lane's 32 activations are 8 float4 chunks. Read straight from
// global memory, each of those 16-byte loads would touch 32 different 128-byte lines (one
// per lane), the dominant L1 cost of the kernel; in shared memory the chunks of sub-block b
// are stored rotated (chunk c at slot c ^ (b % 8)) so the 8 lanes of each quarter-warp hit
// 8 different bank groups and every load takes the minimum 4 wavefronts.
//
// Several tokens decode each sub-block once into registers and pass every token's
// activations over it: the decode work is that of one token, the FMAs grow with n.
//
// Shared memory (all dynamic, laid out by the host, see matvec.rs): [IQ2_XXS tables: 1.5 KiB]
// [partials: 2 x 8 x G x NT floats] [x: n x cols floats if xsm, or the activation blocks]
// [stages: MVQ_WARPS x S x G x BUF bytes].
// The lane's 32 activations of token t (sub-block sb): from the swizzled shared copy `xs_t`
// when staged, else from global memory at X + xoff; and their two 16-column sums for the
// formats with minimums.
template <int T>
__device__ __forceinline__ void load_x(int xsm, const float4* xs_t, i64 xoff, const float* __restrict__ X, int sb,
                                       float (&x)[32], float& xs0, float& xs1) {
    if (xsm) {
#pragma unroll
        for (int q = 0; q < 8; ++q) {
            const float4 v = xs_t[(sb << 3) | (q ^ (sb & 7))];
            x[4 * q] = v.x; x[4 * q + 1] = v.y; x[4 * q + 2] = v.z; x[4 * q + 3] = v.w;
        }
    } else {
        const float* xp = X + xoff + (i64)sb * 32;
#pragma unroll
        for (int q = 0; q < 8; ++q) {
            const float4 v = ld_x4(xp + 4 * q);
            x[4 * q] = v.x; x[4 * q + 1] = v.y; x[4 * q + 2] = v.z; x[4 * q + 3] = v.w;
        }
    }
    xs0 = 0.f;
    xs1 = 0.f;
    if constexpr (HasMin<T>::V) {
#pragma unroll
        for (int q = 0; q < 16; ++q) { xs0 += x[q]; xs1 += x[16 + q]; }
    }
}

// Where token t's input and output rows are: t itself (dense products), or, for the grouped
// expert kernels, pick j = picks[t] of a routing (input row j / x_div, output row
// (j % y_mod) * y_mul + j / y_mod, as the expert-slot kernels place a slot).
struct Rows {
    const int* picks;
    int x_div, y_mod;
    i64 y_mul;
    __device__ __forceinline__ i64 x(int t) const { return picks ? picks[t] / x_div : t; }
    __device__ __forceinline__ i64 y(int t) const {
        if (!picks) return t;
        const int j = picks[t];
        return (i64)(j % y_mod) * y_mul + j / y_mod;
    }
};

template <int T, int G, int NT, int S, bool QA>
__device__ __forceinline__ void mv_quant(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                         const float* __restrict__ X, i64 x_stride,
                                         float* __restrict__ Y, i64 y_stride, int n,
                                         const u32* __restrict__ tab_g, int ks, int xsm,
                                         Rows rw = Rows{nullptr, 1, 1, 0}) {
    constexpr int UPS = MV_STEP_COLS / Blk<T>::COLS;
    constexpr int STEP_BYTES = UPS * Blk<T>::BYTES;
    // A step's first byte can sit up to 14 bytes into its line (blocks have even sizes), and
    // the Q8_0 decoder reads up to 4 bytes past a block: both must stay inside the stage.
    constexpr int BUF = (STEP_BYTES + 14 + 4 + 15) / 16 * 16;
    constexpr int NL = (BUF / 16 + DSV4_WARP - 1) / DSV4_WARP;
    constexpr int TAB_BYTES = T == T_IQ2_XXS ? IQ2_TAB_WORDS * 4 : 0;
    constexpr int PART_BYTES = 2 * MVQ_WARPS * G * NT * 4;
    extern __shared__ __align__(16) u8 dyn[];
    u32* tab_s = reinterpret_cast<u32*>(dyn);
    float* part = reinterpret_cast<float*>(dyn + TAB_BYTES);
    u8* xbase = dyn + TAB_BYTES + PART_BYTES;
    float4* xs = reinterpret_cast<float4*>(xbase);
    // Quantized activations: 36 bytes per 32 columns (Q8_0-like) or 292 per 256 (Q8_K).
    // Several tokens' blocks lie act_pad bytes apart (x_stride bytes apart in global memory).
    const int act_bytes = !QA ? 0 : T == T_Q8_0 ? cols / 32 * Q8_0_BYTES : cols / 256 * Q8_K_BYTES;
    const int act_pad = (act_bytes + 15) / 16 * 16;
    u8* xact = xbase;
    u8* stages = xbase + (QA ? NT * act_pad : xsm ? n * cols * 4 : 0);

    const int lane = threadIdx.x & (DSV4_WARP - 1), warp = threadIdx.x / DSV4_WARP;
    const int units = cols / Blk<T>::COLS;
    const int nsteps = max(1, (units + UPS - 1) / UPS);
    const int nsub = cols / 32;
    const int groups = (rows + G - 1) / G;
    const int gpc = MVQ_WARPS / ks;               // groups per round
    const int slot = warp / ks, kslice = warp - slot * ks;
    const int npacks = (groups + gpc - 1) / gpc;  // rounds over the whole launch
    const int nctas = gridDim.x, cta = blockIdx.x;
    const int rounds = npacks > cta ? (npacks - cta + nctas - 1) / nctas : 0;  // same for all warps
    const int my_steps = (nsteps - kslice + ks - 1) / ks;                      // >= 1: ks <= nsteps
    const int items = rounds * my_steps;
    u8* my_stages = stages + warp * (S * G * BUF);
    const u32 stage0 = smem_addr(my_stages);
    // Group of round r: (r * nctas + cta) * gpc + slot, i.e. g0 + r * gstride.
    const int g0 = cta * gpc + slot, gstride = nctas * gpc;

    // The producer's position (item j + S - 1) as (round, step index), advanced one item at a
    // time, so the loop divides nothing.
    int pr_r = 0, pr_s = 0;
    // Prologue: items 0 .. S-2 in flight; one commit group per item (empty past the end)
    // keeps "item j = the S-th newest group" when it is waited for.
#pragma unroll
    for (int j = 0; j < S - 1; ++j) {
        if (j < items) {
            const int rg = g0 + pr_r * gstride;
            if (rg < groups)
                mv_issue<T, G, BUF, NL>(W, row_bytes, rows, units, rg, kslice + pr_s * ks, lane,
                                        stage0 + (u32)(j * G * BUF));
            if (++pr_s == my_steps) pr_s = 0, ++pr_r;
        }
        cp_async_commit();
    }

    // Activations (and the IQ2_XXS tables) are staged while the first weight copies are in
    // flight: the two memory latencies overlap instead of adding up.
    if (T == T_IQ2_XXS) {
        for (int i = threadIdx.x; i < IQ2_TAB_WORDS; i += blockDim.x) tab_s[i] = tab_g[i];
    }
    // Weights and tables are written by no kernel, so their copies may precede the wait for
    // the kernel that writes the activations (launch.rs).
    DSV4_GRID_ENTRY();
    if (QA) {
        // Verbatim copy, 4 bytes a thread (block sizes are multiples of 4, not of 16).
        for (int t = 0; t < n && t < NT; ++t) {
            const u32* src = reinterpret_cast<const u32*>(reinterpret_cast<const u8*>(X) + rw.x(t) * x_stride);
            u32* dst = reinterpret_cast<u32*>(xact + t * act_pad);
#pragma unroll 4
            for (int k = threadIdx.x; k < act_bytes / 4; k += blockDim.x) dst[k] = __ldg(src + k);
        }
    } else if (xsm) {
        // Token t's chunk k (4 columns) of sub-block b sits at t * cols / 4 + 8b + (k ^ b % 8).
        const int c4 = cols / 4;
        for (int t = 0; t < n; ++t) {
#pragma unroll 4
            for (int k = threadIdx.x; k < c4; k += blockDim.x) {
                const int b = k >> 3, c = k & 7;
                xs[t * c4 + ((b << 3) | (c ^ (b & 7)))] = ld_x4(X + rw.x(t) * x_stride + 4 * k);
            }
        }
    }
    __syncthreads();

    float acc[G][NT];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[g][t] = 0.f;

    int stage = 0;  // j % S
    int r = 0, si = 0;  // item j's round and step index
    for (int j = 0; j < items; ++j) {
        {
            if (j + S - 1 < items) {
                const int rg = g0 + pr_r * gstride;
                const int st = stage == 0 ? S - 1 : stage - 1;  // (j + S - 1) % S
                if (rg < groups)
                    mv_issue<T, G, BUF, NL>(W, row_bytes, rows, units, rg, kslice + pr_s * ks, lane,
                                            stage0 + (u32)(st * G * BUF));
                if (++pr_s == my_steps) pr_s = 0, ++pr_r;
            }
            cp_async_commit();
        }
        cp_async_wait<S - 1>();
        __syncwarp();  // every lane's copies of item j have landed

        const int rg = g0 + r * gstride;
        const int s = kslice + si * ks;
        const u8* sp = my_stages + stage * (G * BUF);
        const int sb = s * DSV4_WARP + lane;  // this lane's 32-column sub-block in the row
        if (rg < groups && sb < nsub) {
            // The lane's block within the step, and its sub-block inside a super-block.
            const int unit = Blk<T>::COLS == 32 ? lane : (lane >> 3);
            const int jj = lane & 7;
            const u8* base = step_base<T, G>(W, row_bytes, rg, s);
            const u8* bps[G];
#pragma unroll
            for (int g = 0; g < G; ++g)
                bps[g] = sp + g * BUF + line_offset(base, (row_bytes & 15) == 0 ? 0 : row_bytes, g) + unit * Blk<T>::BYTES;
            if constexpr (QA) {
                // Each sub-block decoded once, then every token's activations applied to it
                // (rows past the end decode a neighbour and are never written).
                QW wq[G];
#pragma unroll
                for (int g = 0; g < G; ++g) dq_load<T>(bps[g], jj, tab_s, wq[g]);
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    if (t < n) {
                        QAct xa;
                        load_qact<T>(xact + t * act_pad, sb, xa);
#pragma unroll
                        for (int g = 0; g < G; ++g) acc[g][t] = __fadd_rn(acc[g][t], dq_apply<T>(wq[g], xa));
                    }
                }
            } else if constexpr (NT == 1) {
                float x[32], xs0, xs1;
                load_x<T>(xsm, xs, 0, X, sb, x, xs0, xs1);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    if (rg * G + g < rows) {
                        Sub w;
                        dec_sub<T>(bps[g], jj, tab_s, w);
                        acc[g][0] += apply_sub<T>(w, x, xs0, xs1);
                    }
                }
            } else {
                // Several tokens: each sub-block is decoded once, then every token's
                // activations pass over it (rows past the end decode a neighbour and are
                // never written).
                Sub w[G];
#pragma unroll
                for (int g = 0; g < G; ++g) dec_sub<T>(bps[g], jj, tab_s, w[g]);
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    if (t < n) {
                        float x[32], xs0, xs1;
                        load_x<T>(xsm, xs + t * (cols / 4), rw.x(t) * x_stride, X, sb, x, xs0, xs1);
#pragma unroll
                        for (int g = 0; g < G; ++g) acc[g][t] += apply_sub<T>(w[g], x, xs0, xs1);
                    }
                }
            }
        }
        __syncwarp();  // stage j % S is refilled by the next iteration's issue
        stage = stage + 1 == S ? 0 : stage + 1;

        if (si == my_steps - 1) {  // the warp's last step of this round: reduce and reset
            constexpr int V = G * NT, LV = Log2<V>::N;
            float v[V];
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    v[g * NT + t] = acc[g][t];
                    acc[g][t] = 0.f;
                }
            const float sum = warp_sum_many<V>(v, lane);
            // This lane holds value i = lane >> (5 - LV); the first lane of each run writes.
            const int i = lane >> (5 - LV);
            const int g = i / NT, t = i - g * NT;
            const int row = rg * G + g;
            const bool writer = (lane & ((32 >> LV) - 1)) == 0;
            if (ks == 1) {
                if (writer && row < rows && t < n) Y[rw.y(t) * y_stride + row] = sum;
            } else {
                if (writer) part[((r & 1) * MVQ_WARPS + warp) * V + i] = sum;
                // Partials of a round live in buffer r % 2, so the next round's writes never
                // meet this round's reads and one barrier per round suffices.
                __syncthreads();
                if (kslice == 0 && lane < V) {
                    const int g2 = lane / NT, t2 = lane - g2 * NT;
                    const int row2 = rg * G + g2;
                    const float* p0 = part + ((r & 1) * MVQ_WARPS + warp) * V + lane;
                    float tot = 0.f;
                    for (int k = 0; k < ks; ++k) tot += p0[k * V];
                    if (row2 < rows && t2 < n) Y[rw.y(t2) * y_stride + row2] = tot;
                }
            }
        }
        if (++si == my_steps) si = 0, ++r;
    }
    cp_async_wait<0>();  // no copy may outlive the CTA's shared memory
}

// ---- float kernel body ----------------------------------------------------------------------

// ks warps share a row set (ks = 1, 2 or 4, chosen by the host: more when the matrix has
// too few rows to give every SM several warps): warp k of a set takes the 32-unit column
// chunks k, k + ks, ..., and the set's first warp adds the ks partial sums in warp order.
// With ks = 1 this is one warp per row set over all columns. Deterministic either way.
template <int T, int R, int NT>
__device__ __forceinline__ void mv_float(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                         const float* __restrict__ X, i64 x_stride,
                                         float* __restrict__ Y, i64 y_stride, int n, int ks) {
    DSV4_GRID_ENTRY();
    // 16 bytes of weights per lane: 4 f32 or 8 f16 columns.
    constexpr int EPU = T == T_F32 ? 4 : 8;
    __shared__ float part[MV_WARPS * R * NT];
    const int lane = threadIdx.x & (DSV4_WARP - 1), warp = threadIdx.x / DSV4_WARP;
    const int set = warp / ks, k = warp - set * ks;
    const int row0 = (blockIdx.x * (MV_WARPS / ks) + set) * R;
    const int nunits = cols / EPU;

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;

    // Unrolled so that the loads of several iterations are in flight together.
#pragma unroll 4
    for (int u = k * DSV4_WARP + lane; u < nunits && row0 < rows; u += DSV4_WARP * ks) {
        uint4 w[R];
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (row0 + r < rows) w[r] = ld_stream_16(W + (u64)(row0 + r) * (u64)row_bytes + 16 * (u64)u);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            if (t < n) {
                float x[EPU];
                const float* xp = X + (i64)t * x_stride + (i64)u * EPU;
#pragma unroll
                for (int i = 0; i < EPU / 4; ++i) {
                    const float4 v = ld_x4(xp + 4 * i);
                    x[4 * i] = v.x; x[4 * i + 1] = v.y; x[4 * i + 2] = v.z; x[4 * i + 3] = v.w;
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (row0 + r < rows) {
                        const u32 ws[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
                        float s = acc[r][t];
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            if (T == T_F32) {
                                s = fmaf(__uint_as_float(ws[i]), x[i], s);
                            } else {
                                s = fmaf(f16_to_f32((u16)(ws[i] & 0xffffu)), x[2 * i], s);
                                s = fmaf(f16_to_f32((u16)(ws[i] >> 16)), x[2 * i + 1], s);
                            }
                        }
                        acc[r][t] = s;
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float v = warp_sum(acc[r][t]);
            if (ks == 1) {
                if (lane == 0 && row0 + r < rows && t < n) Y[(i64)t * y_stride + row0 + r] = v;
            } else if (lane == 0) {
                part[(warp * R + r) * NT + t] = v;
            }
        }
    if (ks > 1) {
        __syncthreads();
        if (k == 0 && lane < R * NT) {
            const int r = lane / NT, t = lane - r * NT;
            float v = 0.f;
            for (int kk = 0; kk < ks; ++kk) v += part[((warp + kk) * R + r) * NT + t];
            if (row0 + r < rows && t < n) Y[(i64)t * y_stride + row0 + r] = v;
        }
    }
}

// ---- entry points ---------------------------------------------------------------------------
// One signature for every variant: W (row-major GGUF rows of row_bytes), X[t * x_stride + c],
// Y[t * y_stride + r] for tokens t < n (n <= NT), tab = the IQ2_XXS selector tables (unused
// by the other types), ks = warps per row group (row set for the float types) and xsm = x
// staged in shared memory (quantized types only). matvec.rs builds the same names and launch shapes:
//   quantized: mv_<type>_g<G>_n<NT> (and mvq_<type>_g<G>, mvq_<type>_g2_n<NT> for quantized
//              activations, x_stride then in bytes), any
//              number of CTAs of 256 threads (one wave is best), ks in {1, 2, 4, 8} and at
//              most ceil(cols / 1024), dynamic shared memory as laid out above mv_quant;
//   float:     mv_<type>_r<R>_n<NT>, ceil(rows / (4 / ks * R)) CTAs of 128 threads, ks in
//              {1, 2, 4}.

#define MV_ARGS                                                                                 \
    const u8 *__restrict__ W, i64 row_bytes, int rows, int cols, const float *__restrict__ X,   \
        i64 x_stride, float *__restrict__ Y, i64 y_stride, int n, const u32 *__restrict__ tab,  \
        int ks, int xsm
// QA: quantized activations (X holds the activation blocks' bytes, token t's at
// t * x_stride BYTES, NT tokens at most); otherwise f32 rows.
#define MV_Q(NAME, T, G, NT, S, QA)                                                             \
    extern "C" __global__ void __launch_bounds__(MVQ_THREADS) NAME(MV_ARGS) {                   \
        mv_quant<T, G, NT, S, QA>(W, row_bytes, rows, cols, X, x_stride, Y, y_stride, n, tab, ks, \
                                  xsm);                                                         \
    }
#define MV_QUANT(NAME, T, G, NT, S) MV_Q(NAME, T, G, NT, S, false)
#define MV_QACT(NAME, T, G, NT, S) MV_Q(NAME, T, G, NT, S, true)
// Float kernels: the grid's second dimension takes token groups of NT (tokens y·NT .. of n),
// each group the same per-token arithmetic, so a few-row matrix still fills the GPU.
#define MV_FLOAT(NAME, T, R, NT)                                                                \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) NAME(MV_ARGS) {                    \
        (void)tab;                                                                             \
        (void)xsm;                                                                              \
        const int t0 = blockIdx.y * NT;                                                         \
        mv_float<T, R, NT>(W, row_bytes, rows, cols, X + t0 * x_stride, x_stride, Y + t0 * y_stride, \
                           y_stride, n - t0, ks);                                               \
    }

// Float types: one token with 1, 2 or 4 rows per warp (few rows -> fewer rows per warp, so
// more warps share the matrix), and 2 rows per warp for 4, 8, 16 tokens.
#define MV_FLOAT_ALL(name, T)                                                                   \
    MV_FLOAT(mv_##name##_r1_n1, T, 1, 1)                                                        \
    MV_FLOAT(mv_##name##_r2_n1, T, 2, 1)                                                        \
    MV_FLOAT(mv_##name##_r4_n1, T, 4, 1)                                                        \
    MV_FLOAT(mv_##name##_r2_n4, T, 2, 4)                                                        \
    MV_FLOAT(mv_##name##_r2_n8, T, 2, 8)                                                        \
    MV_FLOAT(mv_##name##_r2_n16, T, 2, 16)

// Quantized types: one token with groups of 2 rows and four stages in flight per warp, or
// groups of 4 rows (more activation reuse, for matrices with rows to spare) and S4 stages
// (as many as fit ~72 KB: fewer for the wide Q8_0 steps); several tokens with groups of 2
// rows and two stages (their registers go to the decoded weights and per-token sums). The
// official numerics take the same two single-token shapes. matvec.rs mirrors the stage
// counts (`stages`) to size shared memory.
#define MV_QUANT_ALL(name, T, S4)                                                               \
    MV_QUANT(mv_##name##_g2_n1, T, 2, 1, 4)                                                     \
    MV_QUANT(mv_##name##_g4_n1, T, 4, 1, S4)                                                    \
    MV_QUANT(mv_##name##_g2_n4, T, 2, 4, 2)                                                     \
    MV_QUANT(mv_##name##_g2_n8, T, 2, 8, 2)                                                     \
    MV_QUANT(mv_##name##_g2_n16, T, 2, 16, 2)                                                   \
    MV_QACT(mvq_##name##_g2, T, 2, 1, 4)                                                        \
    MV_QACT(mvq_##name##_g4, T, 4, 1, S4)                                                       \
    MV_QACT(mvq_##name##_g2_n2, T, 2, 2, 2)                                                     \
    MV_QACT(mvq_##name##_g2_n4, T, 2, 4, 2)                                                     \
    MV_QACT(mvq_##name##_g2_n8, T, 2, 8, 2)                                                     \
    MV_QACT(mvq_##name##_g2_n16, T, 2, 16, 2)

MV_FLOAT_ALL(f32, T_F32)
MV_FLOAT_ALL(f16, T_F16)
MV_QUANT_ALL(q8_0, T_Q8_0, 2)
MV_QUANT_ALL(q2_k, T_Q2_K, 4)
MV_QUANT_ALL(q4_k, T_Q4_K, 3)
MV_QUANT_ALL(iq2_xxs, T_IQ2_XXS, 4)

// ---- expert products chosen on the device ----------------------------------------------------
// One product per slot j = blockIdx.y of a stacked expert tensor (n_expert matrices of
// `expert_bytes`, one after another from W): expert ids[j] (skipped when out of range), input
// row j / x_div (`x_stride` BYTES apart: f32 rows, or quantized activation rows), output row
// (j % y_mod) * y_mul + j / y_mod (`y_stride` floats apart). Each slot is the one-token
// product of its expert, computed exactly as the one-token kernels above compute it for the
// same split; the slots never share an output.
#define MVX_ARGS                                                                                \
    MV_ARGS, const int *__restrict__ ids, int n_expert, i64 expert_bytes, int x_div, int y_mod, \
        i64 y_mul
#define MVX_SLOT                                                                                \
    const int j = blockIdx.y;                                                                   \
    grid_wait(); /* the ids are the routing's output */                                         \
    const int ex = ids[j];                                                                      \
    if (ex < 0 || ex >= n_expert) return;                                                       \
    const u8* Wj = W + (i64)ex * expert_bytes;                                                  \
    const float* Xj = reinterpret_cast<const float*>(reinterpret_cast<const u8*>(X) +          \
                                                     (i64)(j / x_div) * x_stride);              \
    float* Yj = Y + ((i64)(j % y_mod) * y_mul + j / y_mod) * y_stride;
#define MVX_Q(NAME, T, G, S, QA)                                                                 \
    extern "C" __global__ void __launch_bounds__(MVQ_THREADS) NAME(MVX_ARGS) {                  \
        MVX_SLOT                                                                                \
        mv_quant<T, G, 1, S, QA>(Wj, row_bytes, rows, cols, Xj, 0, Yj, 0, 1, tab, ks, xsm);      \
    }
#define MVX_FLOAT(NAME, T)                                                                      \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) NAME(MVX_ARGS) {                   \
        (void)tab;                                                                              \
        (void)xsm;                                                                              \
        MVX_SLOT                                                                                \
        mv_float<T, 2, 1>(Wj, row_bytes, rows, cols, Xj, 0, Yj, 0, 1, ks);                      \
    }
// Slot kernels of the quantized types: groups of 2 rows (S = 4) or 4 rows (S4 stages, as the
// one-token kernels), both numerics.
#define MVX_QUANT_ALL(name, T, S4)                                                              \
    MVX_Q(mvx_##name##_g2, T, 2, 4, false)                                                      \
    MVX_Q(mvx_##name##_g4, T, 4, S4, false)                                                     \
    MVX_Q(mvxq_##name##_g2, T, 2, 4, true)                                                      \
    MVX_Q(mvxq_##name##_g4, T, 4, S4, true)

MVX_FLOAT(mvx_f32, T_F32)
MVX_FLOAT(mvx_f16, T_F16)
MVX_QUANT_ALL(q8_0, T_Q8_0, 2)
MVX_QUANT_ALL(q2_k, T_Q2_K, 4)
MVX_QUANT_ALL(q4_k, T_Q4_K, 3)
MVX_QUANT_ALL(iq2_xxs, T_IQ2_XXS, 4)

// ---- grouped expert products ----------------------------------------------------------------
// The expert-slot products of several tokens, each expert's weights read once for up to NT of
// its picks: slot s = blockIdx.y is the table entry at table + s * (2 + NT): [expert id, count,
// picks...] (an id out of range or a count of 0 skips the slot). Pick j of the routing reads
// input row j / x_div and writes output row (j % y_mod) * y_mul + j / y_mod, as slot j of the
// MVX kernels. Every pick gets the bits of its MVX slot launched with the same split (`ks`):
// the same per-sub-block arithmetic, summed in the same order (the row group size G and the
// pick's place in its entry change neither). Plain numerics take f32 rows x_stride floats
// apart, the official quantized ones x_stride bytes apart.
//   mvg[q]_<type>_n16: tables the host wrote once (every token picks every matrix: the output
//     groups, the shared expert's pair), read before the wait for the previous kernel;
//   mvg[q]_<type>_g4_n4: the routed picks, grouped on the device after the routing
//     (moe.cu's group_picks): the entry is read after the wait. Few picks share a routed
//     expert (at 32 tokens 1.4 on average), so entries are short and keep the one-token
//     slots' groups of 4 rows and copy stages.
#define MVG_ARGS                                                                                \
    MV_ARGS, const int *__restrict__ table, int n_expert, i64 expert_bytes, int x_div, int y_mod,  \
        i64 y_mul
// With WAIT (routed picks), an entry of one pick (two thirds of the busy entries at 32 tokens)
// takes the one-token body, whose registers fit without the spills of the NT-token one, and
// an entry of two (a quarter) a two-token body.
// One entry's products with the NT2-token body (`We`, `rw`: the entry's expert and rows).
#define MVG_BODY(T, G, NT2, S, QA, CNT)                                                         \
    mv_quant<T, G, NT2, S, QA>(We, row_bytes, rows, cols, X, x_stride, Y, y_stride, CNT, tab, ks, xsm, rw)
#define MVG_QUANT(NAME, T, G, NT, S, QA, WAIT, MINB)                                            \
    extern "C" __global__ void __launch_bounds__(MVQ_THREADS, MINB) NAME(MVG_ARGS) {            \
        (void)n;                                                                                \
        if (WAIT) grid_wait();                                                                  \
        const int* ent = table + (i64)blockIdx.y * (2 + NT);                                    \
        const int ex = ent[0], cnt = min(ent[1], NT);                                           \
        if (ex < 0 || ex >= n_expert || cnt <= 0) return;                                       \
        const Rows rw{ent + 2, x_div, y_mod, y_mul};                                            \
        const u8* We = W + (i64)ex * expert_bytes;                                              \
        if (WAIT && cnt == 1)                                                                   \
            MVG_BODY(T, G, 1, S, QA, 1);                                                        \
        else if (WAIT && cnt == 2)                                                              \
            MVG_BODY(T, G, 2, S, QA, 2);                                                        \
        else                                                                                    \
            MVG_BODY(T, G, NT, S, QA, cnt);                                                     \
    }
// MINB: CTAs an SM must hold for the official g4_n4 kernel. IQ2_XXS (the routed gate and up)
// is held to 3 at the cost of a few spills in its loop (99 registers allowed only 2); the
// others spill far more under that bound (Q2_K's loop doubles its local traffic), so they keep 2.
#define MVG_QUANT_ALL(name, T, S4, MINB)                                                        \
    MVG_QUANT(mvg_##name##_n16, T, 2, 16, 2, false, false, 1)                                   \
    MVG_QUANT(mvgq_##name##_n16, T, 2, 16, 2, true, false, 1)                                   \
    MVG_QUANT(mvg_##name##_g4_n4, T, 4, 4, S4, false, true, 1)                                  \
    MVG_QUANT(mvgq_##name##_g4_n4, T, 4, 4, S4, true, true, MINB)

MVG_QUANT_ALL(q8_0, T_Q8_0, 2, 2)
MVG_QUANT_ALL(q2_k, T_Q2_K, 4, 2)
MVG_QUANT_ALL(q4_k, T_Q4_K, 3, 2)
MVG_QUANT_ALL(iq2_xxs, T_IQ2_XXS, 4, 3)
