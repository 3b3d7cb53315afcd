// y = W x (and Y = W X for a handful of tokens) with W in its GGUF block layout and f32
// activations: the plain numerics (weights decoded exactly, f32 products and sums).
//
// Work split. A CTA is MV_WARPS warps; each warp owns R consecutive rows for the whole row
// length, so no partial sum ever crosses warps: every output is one warp's butterfly
// reduction of its lanes' partials, in a fixed order, with no atomics. The result depends
// only on (W, x, rows, cols), never on timing.
//
// Quantized types. A warp walks the row in steps of 1024 columns (32 lanes x one 32-column
// sub-block each). For every step it copies the step's bytes of its R rows into shared
// memory with 16-byte coalesced loads (GGUF blocks of 34, 66 and 84 bytes are not 16-byte
// aligned, so lanes cannot load their own blocks with wide loads), then each lane decodes
// its sub-block from shared memory. The loads for step s+1 are issued before step s is
// computed, so a warp keeps up to R x 1.1 KB in flight while it does arithmetic.
// Each lane keeps its 32 activations in registers and reuses them for all R rows, which is
// what keeps activation traffic (4 bytes per column) below the weight traffic.
//
// Float types (F32, F16) are 16-byte aligned in every row: lanes load 16 bytes of weights
// directly, 4 or 8 columns each.
//
// Host-side preconditions (checked in matvec.rs): W starts 16-byte aligned and the
// allocation extends at least to the next 16-byte boundary after the matrix (the staging
// rounds its reads out to whole 16-byte lines); X, Y and their strides are 16-byte aligned
// (X) / any (Y); cols is a whole number of blocks (and of 4 or 8 for F32 / F16).

#include "dsv4_common.cuh"

#define T_F32 0
#define T_F16 1
#define T_Q8_0 2
#define T_Q2_K 3
#define T_Q4_K 4
#define T_IQ2_XXS 5

#define MV_WARPS 4
#define MV_THREADS (MV_WARPS * DSV4_WARP)
// Columns per warp step for the quantized types: one 32-column sub-block per lane.
#define MV_STEP_COLS 1024

// Block geometry: the smallest run of bytes that holds whole columns.
template <int T> struct Blk;
template <> struct Blk<T_Q8_0> { static constexpr int COLS = 32, BYTES = 34; };
template <> struct Blk<T_Q2_K> { static constexpr int COLS = 256, BYTES = 84; };
template <> struct Blk<T_Q4_K> { static constexpr int COLS = 256, BYTES = 144; };
template <> struct Blk<T_IQ2_XXS> { static constexpr int COLS = 256, BYTES = 66; };

// ---- per-sub-block dot products (32 columns, one lane) -------------------------------------
// Each returns sum_i w_i * x_i for the lane's 32 columns, with the block scales factored out
// of the inner sum (one multiply per sub-block instead of one per weight). Two interleaved
// partial sums halve the dependent-FMA chain.

// Q8_0: p = the 34-byte block (2-byte aligned).
__device__ __forceinline__ float dot_q8_0(const u8* p, const float* x) {
    const float d = f16_to_f32(lds_u16(p));
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = lds_u32_a2(p + 2 + 4 * k) ^ 0x80808080u;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (k & 1) s1 = fmaf(sbyte_to_f32(w, e), x[4 * k + e], s1);
            else s0 = fmaf(sbyte_to_f32(w, e), x[4 * k + e], s0);
        }
    }
    return d * (s0 + s1);
}

// Q4_K: p = the 144-byte super-block (4-byte aligned), j = sub-block 0..7 (32 columns),
// xsum = sum of the lane's 32 activations (for the min term).
__device__ __forceinline__ float dot_q4_k(const u8* p, int j, const float* x, float xsum) {
    const float d = f16_to_f32(lds_u16(p)), dmin = f16_to_f32(lds_u16(p + 2));
    const u8* sc = p + 4;
    u32 scl, mn;
    if (j < 4) {
        scl = sc[j] & 63;
        mn = sc[j + 4] & 63;
    } else {
        scl = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    // Sub-block j lives in the low (even j) or high (odd j) nibbles of chunk j/2.
    const u8* q = p + 16 + 32 * (j >> 1);
    const int shift = (j & 1) * 4;
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = (lds_u32(q + 4 * k) >> shift) & 0x0F0F0F0Fu;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (k & 1) s1 = fmaf(byte_to_f32(w, e), x[4 * k + e], s1);
            else s0 = fmaf(byte_to_f32(w, e), x[4 * k + e], s0);
        }
    }
    return (d * (float)scl) * (s0 + s1) - (dmin * (float)mn) * xsum;
}

// Q2_K: p = the 84-byte super-block (4-byte aligned), j = sub-block 0..7; its two 16-column
// halves have their own scale/min bytes; xs0, xs1 = sums of the lane's activations 0..15 and
// 16..31.
__device__ __forceinline__ float dot_q2_k(const u8* p, int j, const float* x, float xs0, float xs1) {
    const float d = f16_to_f32(lds_u16(p + 80)), dmin = f16_to_f32(lds_u16(p + 82));
    const u32 sc0 = p[2 * j], sc1 = p[2 * j + 1];
    // Columns 32j.. are bit pair (j % 4) of the 32 code bytes of half j / 4.
    const u8* q = p + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const u32 w = (lds_u32(q + 4 * k) >> shift) & 0x03030303u;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (k < 4) s0 = fmaf(byte_to_f32(w, e), x[4 * k + e], s0);
            else s1 = fmaf(byte_to_f32(w, e), x[4 * k + e], s1);
        }
    }
    return d * ((float)(sc0 & 15) * s0 + (float)(sc1 & 15) * s1) -
           dmin * ((float)(sc0 >> 4) * xs0 + (float)(sc1 >> 4) * xs1);
}

// IQ2_XXS: p = the 66-byte super-block (2-byte aligned), ib = group 0..7 (32 columns);
// grid = the 256 8-byte magnitude octets, in shared memory.
__device__ __forceinline__ float dot_iq2_xxs(const u8* p, int ib, const float* x, const u64* grid) {
    const float d = f16_to_f32(lds_u16(p));
    const u32 a = lds_u32_a2(p + 2 + 8 * ib), b = lds_u32_a2(p + 6 + 8 * ib);
    // Same f32 operations and order as the reference dequantization.
    const float db = (d * (0.5f + (float)(b >> 28))) * 0.25f;
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const u64 g = grid[(a >> (8 * k)) & 255u];
        const u32 lo = (u32)g, hi = (u32)(g >> 32);
        const u32 sg = (b >> (7 * k)) & 127u;
        // The eighth sign is implied: it makes the count of negative signs even.
        const u32 ks = sg | ((__popc(sg) & 1u) << 7);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const float v = byte_to_f32(e < 4 ? lo : hi, e & 3);
            // Apply the sign to the activation (an XOR of its sign bit): exact, and cheaper
            // than building a signed weight.
            const float xv = __uint_as_float(__float_as_uint(x[8 * k + e]) ^ ((ks << (31 - e)) & 0x80000000u));
            if (e & 1) s1 = fmaf(v, xv, s1);
            else s0 = fmaf(v, xv, s0);
        }
    }
    return db * (s0 + s1);
}

// ---- quantized kernel body ------------------------------------------------------------------

// Where step s of a row lies: the 16-byte line `a` holding its first byte, the offset `sh`
// of that byte in the line, and how many 16-byte lines `n16` cover the step.
template <int T>
__device__ __forceinline__ void step_lines(const u8* W, i64 row_bytes, int row, int s, int units,
                                           const u8*& a, int& sh, int& n16) {
    constexpr int UPS = MV_STEP_COLS / Blk<T>::COLS;
    const int u0 = s * UPS;
    const int nu = min(UPS, units - u0);
    const u8* first = W + (u64)row * (u64)row_bytes + (u64)u0 * Blk<T>::BYTES;
    a = reinterpret_cast<const u8*>(reinterpret_cast<u64>(first) & ~(u64)15);
    sh = (int)(first - a);
    n16 = (sh + nu * Blk<T>::BYTES + 15) >> 4;
}

template <int T, int R, int NT>
__device__ __forceinline__ void mv_quant(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                         const float* __restrict__ X, i64 x_stride,
                                         float* __restrict__ Y, i64 y_stride, int n,
                                         const u64* __restrict__ grid_g) {
    constexpr int UPS = MV_STEP_COLS / Blk<T>::COLS;
    constexpr int STEP_BYTES = UPS * Blk<T>::BYTES;
    // A step's first byte can sit up to 14 bytes into its line (blocks have even sizes).
    constexpr int BUF = (STEP_BYTES + 14 + 15) / 16 * 16;
    constexpr int NL = (BUF / 16 + DSV4_WARP - 1) / DSV4_WARP;
    __shared__ __align__(16) u8 sbuf[MV_WARPS][R][BUF];
    __shared__ u64 grid_s[T == T_IQ2_XXS ? 256 : 1];

    if (T == T_IQ2_XXS) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) grid_s[i] = grid_g[i];
        __syncthreads();
    }
    const int lane = threadIdx.x & (DSV4_WARP - 1), warp = threadIdx.x / DSV4_WARP;
    const int row0 = (blockIdx.x * MV_WARPS + warp) * R;
    if (row0 >= rows) return;  // warp-uniform; no block-wide barrier follows
    const int units = cols / Blk<T>::COLS;
    const int nsteps = (units + UPS - 1) / UPS;
    const int nsub = cols / 32;

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;

    uint4 pf[R][NL];
    // Prologue: step 0 in flight.
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (row0 + r < rows) {
            const u8* a; int sh, n16;
            step_lines<T>(W, row_bytes, row0 + r, 0, units, a, sh, n16);
#pragma unroll
            for (int l = 0; l < NL; ++l) {
                const int q = lane + DSV4_WARP * l;
                if (q < n16) pf[r][l] = ld_stream_16(a + 16 * q);
            }
        }
    }

    for (int s = 0; s < nsteps; ++s) {
        int shs[R];
        __syncwarp();  // every lane is done reading the previous step's bytes
#pragma unroll
        for (int r = 0; r < R; ++r) {
            shs[r] = 0;
            if (row0 + r < rows) {
                const u8* a; int n16;
                step_lines<T>(W, row_bytes, row0 + r, s, units, a, shs[r], n16);
#pragma unroll
                for (int l = 0; l < NL; ++l) {
                    const int q = lane + DSV4_WARP * l;
                    if (q < n16) *reinterpret_cast<uint4*>(&sbuf[warp][r][16 * q]) = pf[r][l];
                }
            }
        }
        __syncwarp();
        if (s + 1 < nsteps) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (row0 + r < rows) {
                    const u8* a; int sh, n16;
                    step_lines<T>(W, row_bytes, row0 + r, s + 1, units, a, sh, n16);
#pragma unroll
                    for (int l = 0; l < NL; ++l) {
                        const int q = lane + DSV4_WARP * l;
                        if (q < n16) pf[r][l] = ld_stream_16(a + 16 * q);
                    }
                }
            }
        }

        const int sb = s * DSV4_WARP + lane;  // this lane's 32-column sub-block in the row
        if (sb < nsub) {
            // Offset of the lane's block in the step, and its sub-block inside a super-block.
            const int unit = Blk<T>::COLS == 32 ? lane : (lane >> 3);
            const int j = lane & 7;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                if (t < n) {
                    float x[32];
                    const float* xp = X + (i64)t * x_stride + (i64)sb * 32;
#pragma unroll
                    for (int i = 0; i < 8; ++i) {
                        const float4 v = ld_x4(xp + 4 * i);
                        x[4 * i] = v.x; x[4 * i + 1] = v.y; x[4 * i + 2] = v.z; x[4 * i + 3] = v.w;
                    }
                    float xs0 = 0.f, xs1 = 0.f;
                    if (T == T_Q2_K || T == T_Q4_K) {
#pragma unroll
                        for (int i = 0; i < 16; ++i) { xs0 += x[i]; xs1 += x[16 + i]; }
                    }
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        if (row0 + r < rows) {
                            const u8* p = &sbuf[warp][r][shs[r] + unit * Blk<T>::BYTES];
                            float v;
                            if (T == T_Q8_0) v = dot_q8_0(p, x);
                            else if (T == T_Q4_K) v = dot_q4_k(p, j, x, xs0 + xs1);
                            else if (T == T_Q2_K) v = dot_q2_k(p, j, x, xs0, xs1);
                            else v = dot_iq2_xxs(p, j, x, grid_s);
                            acc[r][t] += v;
                        }
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
            if (lane == 0 && row0 + r < rows && t < n) Y[(i64)t * y_stride + row0 + r] = v;
        }
}

// ---- float kernel body ----------------------------------------------------------------------

template <int T, int R, int NT>
__device__ __forceinline__ void mv_float(const u8* __restrict__ W, i64 row_bytes, int rows, int cols,
                                         const float* __restrict__ X, i64 x_stride,
                                         float* __restrict__ Y, i64 y_stride, int n) {
    // 16 bytes of weights per lane: 4 f32 or 8 f16 columns.
    constexpr int EPU = T == T_F32 ? 4 : 8;
    const int lane = threadIdx.x & (DSV4_WARP - 1), warp = threadIdx.x / DSV4_WARP;
    const int row0 = (blockIdx.x * MV_WARPS + warp) * R;
    if (row0 >= rows) return;
    const int nunits = cols / EPU;

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;

    // Unrolled so that the loads of several iterations are in flight together.
#pragma unroll 4
    for (int u = lane; u < nunits; u += DSV4_WARP) {
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
            if (lane == 0 && row0 + r < rows && t < n) Y[(i64)t * y_stride + row0 + r] = v;
        }
}

// ---- entry points ---------------------------------------------------------------------------
// One signature for every variant: W (row-major GGUF rows of row_bytes), X[t * x_stride + c],
// Y[t * y_stride + r] for tokens t < n (n <= NT), grid = IQ2_XXS magnitude table (unused by
// the other types). Grid: ceil(rows / (MV_WARPS * R)) CTAs of MV_THREADS threads.
// Names: mv_<type>_r<R>_n<NT>; matvec.rs builds the same names.

#define MV_ARGS                                                                                 \
    const u8 *__restrict__ W, i64 row_bytes, int rows, int cols, const float *__restrict__ X,   \
        i64 x_stride, float *__restrict__ Y, i64 y_stride, int n, const u64 *__restrict__ grid
#define MV_QUANT(NAME, T, R, NT)                                                                \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) NAME(MV_ARGS) {                    \
        mv_quant<T, R, NT>(W, row_bytes, rows, cols, X, x_stride, Y, y_stride, n, grid);        \
    }
#define MV_FLOAT(NAME, T, R, NT)                                                                \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) NAME(MV_ARGS) {                    \
        (void)grid;                                                                             \
        mv_float<T, R, NT>(W, row_bytes, rows, cols, X, x_stride, Y, y_stride, n);              \
    }

// Single token: R by row count (few rows -> R = 1 so more warps share the matrix).
#define MV_ALL_R(M, name, T)                                                                    \
    M(mv_##name##_r1_n1, T, 1, 1)                                                               \
    M(mv_##name##_r2_n1, T, 2, 1)                                                               \
    M(mv_##name##_r4_n1, T, 4, 1)                                                               \
    M(mv_##name##_r2_n4, T, 2, 4)                                                               \
    M(mv_##name##_r2_n8, T, 2, 8)                                                               \
    M(mv_##name##_r2_n16, T, 2, 16)

MV_ALL_R(MV_FLOAT, f32, T_F32)
MV_ALL_R(MV_FLOAT, f16, T_F16)
MV_ALL_R(MV_QUANT, q8_0, T_Q8_0)
MV_ALL_R(MV_QUANT, q2_k, T_Q2_K)
MV_ALL_R(MV_QUANT, q4_k, T_Q4_K)
MV_ALL_R(MV_QUANT, iq2_xxs, T_IQ2_XXS)
