// Shared device helpers, handed to NVRTC as the in-memory header "dsv4_common.cuh".
//
// Kernels include no CUDA header: NVRTC then needs no toolkit include directory on the GPU
// machine, and the compile check needs only libnvrtc. Everything below is plain C++ plus
// PTX, so it builds for any sm_80+ target.

#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

#define DSV4_WARP 32
#define DSV4_FULL_MASK 0xffffffffu

// Programmatic dependent launch (sm_90; launch.rs). A kernel launched with it may start
// while the previous kernel of the stream is still running: grid_wait blocks until that
// kernel has finished and its writes are visible (transitively every earlier one, since each
// of them waited too), and grid_launch_next lets the next kernel's CTAs be scheduled. Every
// kernel that launch.rs may launch so runs DSV4_GRID_ENTRY before it touches memory other
// kernels write or read; only reads of what no kernel writes (weights) may come first. On
// older devices, and for plain launches, both are no-ops.
__device__ __forceinline__ void grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void grid_launch_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#define DSV4_GRID_ENTRY() \
    do {                  \
        grid_wait();      \
        grid_launch_next(); \
    } while (0)

// IEEE binary16 -> binary32 in hardware: exact for every input, subnormals included, so
// weights decode to the same f32 values as the CPU reference.
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// 16 bytes of streamed weights. Weights are read exactly once per matvec, so they bypass L1
// allocation and leave L1 to the activations, which every warp of the SM re-reads.
__device__ __forceinline__ uint4 ld_stream_16(const u8* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Activations: read-only for the kernel's lifetime and shared by all warps, so cached.
__device__ __forceinline__ float4 ld_x4(const float* p) {
    return __ldg(reinterpret_cast<const float4*>(p));
}

// Byte e (0..3) of w, taken as an unsigned integer 0..255, converted to float without the
// quarter-rate I2F unit: the byte becomes the low mantissa bits of 2^23 (exponent byte 0x4B),
// and subtracting 2^23 leaves the integer exactly. PRMT + FADD, both full-rate.
__device__ __forceinline__ float byte_to_f32(u32 w, int e) {
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u + (u32)e)) - 8388608.0f;
}

// The same for signed int8 codes: callers flip the sign bit of each byte first
// (w ^ 0x80808080 maps q to q + 128), and 2^23 + 128 comes off instead.
__device__ __forceinline__ float sbyte_to_f32(u32 w_flipped, int e) {
    return __uint_as_float(__byte_perm(w_flipped, 0x4B000000u, 0x7540u + (u32)e)) - 8388736.0f;
}

// Shared-memory reads at 2-byte alignment: GGUF blocks of 34 and 66 bytes leave the u32
// fields of a block only 2-byte aligned.
__device__ __forceinline__ u16 lds_u16(const u8* p) {
    return *reinterpret_cast<const u16*>(p);
}
__device__ __forceinline__ u32 lds_u32_a2(const u8* p) {
    const u16* q = reinterpret_cast<const u16*>(p);
    return (u32)q[0] | ((u32)q[1] << 16);
}
__device__ __forceinline__ u32 lds_u32(const u8* p) {
    return *reinterpret_cast<const u32*>(p);
}

// Butterfly sum over the warp. The pairing is fixed, so the result (the same in every lane)
// is a deterministic function of the 32 inputs.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(DSV4_FULL_MASK, v, off);
    return v;
}

// Sums each of V = G x NT per-lane values (v[i], i = g * NT + t) over the warp, V a power of
// two up to 32: a transposed butterfly. Round k halves the values a lane carries (lanes with
// bit 4 - k set keep the upper half and send the lower one, their partners the reverse), so
// V - 1 shuffles replace the V x 5 of one butterfly per value; a plain butterfly over the
// remaining lane bits finishes. Afterwards value i sits, complete, in the lanes whose top
// log2(V) bits are i (lane (i << (5 - log2 V)) writes it). A fixed pairing: deterministic.
template <int V>
__device__ __forceinline__ float warp_sum_many(float (&v)[V], int lane) {
    static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V: a power of two up to 32");
#pragma unroll
    for (int h = V / 2, off = 16; h >= 1; h /= 2, off /= 2) {
        const bool up = (lane & off) != 0;
#pragma unroll
        for (int i = 0; i < h; ++i) {
            const float send = up ? v[i] : v[i + h];
            const float keep = up ? v[i + h] : v[i];
            v[i] = keep + __shfl_xor_sync(DSV4_FULL_MASK, send, off);
        }
    }
#pragma unroll
    for (int off = 16 / V; off > 0; off /= 2) v[0] += __shfl_xor_sync(DSV4_FULL_MASK, v[0], off);
    return v[0];
}

// ---- asynchronous global -> shared copies (sm_80+) -----------------------------------------
// A warp can queue several steps of weights this way without holding them in registers and
// without waiting: the copy engine of the SM lands them in shared memory while the warp
// computes on earlier steps. `.cg` caches in L2 only, like the streamed loads above.

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

__device__ __forceinline__ void cp_async_16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

// The same where `p` holds, nothing otherwise: one predicated instruction, where an `if`
// around cp_async_16 becomes a branch and a reconvergence point per copy.
__device__ __forceinline__ void cp_async_16_if(bool p, u32 dst, const void* src) {
    asm volatile("{ .reg .pred q; setp.ne.b32 q, %2, 0; @q cp.async.cg.shared.global [%0], [%1], 16; }" ::"r"(dst),
                 "l"(src), "r"((int)p)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// No CUDA headers, so no INFINITY macro.
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- block-wide reductions (model kernels) --------------------------------------------------
// Fixed pairing (warp butterfly, then the warps' partials in warp order), so the result is a
// deterministic function of the inputs. Every thread of the block must call them, with
// blockDim.x a multiple of 32; `sh` is 32 elements of shared memory, reused call after call.

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(DSV4_FULL_MASK, v, off);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(DSV4_FULL_MASK, v, off));
    return v;
}

template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* sh, T identity, Op op) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(DSV4_FULL_MASK, v, off));
    __syncthreads();  // the previous call's readers are done with sh
    if (lane == 0) sh[w] = v;
    __syncthreads();
    T t = lane < nw ? sh[lane] : identity;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) t = op(t, __shfl_xor_sync(DSV4_FULL_MASK, t, off));
    return t;
}

struct OpAdd {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct OpMax {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ __forceinline__ double block_sum_d(double v, double* sh) { return block_reduce(v, sh, 0.0, OpAdd()); }
__device__ __forceinline__ float block_sum_f(float v, float* sh) { return block_reduce(v, sh, 0.0f, OpAdd()); }
__device__ __forceinline__ float block_max_f(float v, float* sh) { return block_reduce(v, sh, neg_inf(), OpMax()); }

// Attention's softmax with a sink over a row of n scores at s, in place: each becomes
// e^(s - m), m the largest of the scores and the sink; returns their sum plus e^(sink - m).
// Every thread of the block calls it (attend, attend_chunk).
__device__ __forceinline__ float block_softmax_sink(float* s, int n, float sink, float* shf) {
    float m = sink;
    for (int r = threadIdx.x; r < n; r += blockDim.x) m = fmaxf(m, s[r]);
    m = block_max_f(m, shf);
    float den = 0.0f;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const float e = expf(s[r] - m);
        s[r] = e;
        den += e;
    }
    return block_sum_f(den, shf) + expf(sink - m);
}

// An f32's bits as an unsigned key whose integer order is Rust's f32::total_cmp order
// (-NaN < -inf < ... < -0 < +0 < ... < +inf < NaN): the CPU's selections sort by it.
__device__ __forceinline__ u32 total_order_key(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// 1 / rms from a sum of squares, in the CPU reference's precision (f64 sum, f32 root).
__device__ __forceinline__ float rms_scale_from(double ss, int n, float eps) {
    return 1.0f / sqrtf((float)(ss / (double)n) + eps);
}

// Rotates pair i of a RoPE tail to position p (back from it when `inverse`). The angle is an
// f32 product widened to double for sin/cos, as the CPU reference forms it; each product and
// sum is rounded on its own (no FMA), so the rotation matches the CPU bit for bit.
__device__ __forceinline__ void rope_pair(float* tail, int i, float freq, float p, bool inverse) {
    const double ang = (double)__fmul_rn(p, freq);
    float s = (float)sin(ang);
    const float c = (float)cos(ang);
    if (inverse) s = -s;
    const float a = tail[2 * i], b = tail[2 * i + 1];
    tail[2 * i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    tail[2 * i + 1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// Inclusive prefix sum over the warp's lanes of one int each (integers: any order is exact).
__device__ __forceinline__ int warp_incl_scan(int v, int lane) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(DSV4_FULL_MASK, v, o);
        if (lane >= o) v += y;
    }
    return v;
}

// Exclusive prefix sum over the block of one int per thread, in thread order; `total` gets
// the block's sum. Block-wide (every thread calls it; `wsum` is 32 ints of shared memory,
// free again only after the caller's next barrier).
__device__ __forceinline__ int block_prefix(int v, int* wsum, int& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    const int x = warp_incl_scan(v, lane);
    if (lane == 31) wsum[warp] = x;
    __syncthreads();
    int before = x - v;
    total = 0;
    for (int w = 0; w < nw; ++w) {
        if (w < warp) before += wsum[w];
        total += wsum[w];
    }
    return before;
}

// The rows a token attends to when the indexer's mask applies, as ids: the raw window first
// (ids 0 .. n_raw), then the compressed rows the mask keeps, in row order (id n_raw + c). At
// most `cap` ids (the mask keeps exactly top_k rows; cap only guards the array). Block-wide
// (every thread calls it; `wsum` is 32 ints of shared memory); returns the count, with the
// ids visible to the whole block. The attention then walks these rows only: a long context
// has thousands of compressed rows, of which the mask keeps a few hundred.
__device__ __forceinline__ int select_rows(const u8* mask, int n_raw, int n_comp, int cap, int* ids, int* wsum) {
    const int tid = threadIdx.x, nt = blockDim.x;
    for (int r = tid; r < n_raw && r < cap; r += nt) ids[r] = r;
    // Each thread a contiguous run of the mask, so a prefix sum over threads orders the ids.
    const int seg = (n_comp + nt - 1) / nt;
    const int c0 = min(tid * seg, n_comp), c1 = min(c0 + seg, n_comp);
    int cnt = 0;
    for (int c = c0; c < c1; ++c) cnt += mask[c] != 0;
    int total;
    int at = n_raw + block_prefix(cnt, wsum, total);
    for (int c = c0; c < c1; ++c)
        if (mask[c] && at < cap) ids[at++] = n_raw + c;
    __syncthreads();
    return min(n_raw + total, cap);
}

// Threads of the top-k kernels (one block per token).
#define TOPK_THREADS 512

// mask[c] = whether row c is among the k largest of scores[0..n) (n > k), ranked as the CPU's
// stable sort ranks them: a higher score in f32::total_cmp order, or the same score at a lower
// index. One block: a radix select on the order keys (four 8-bit digits from the top, each
// pass narrowing the prefix of the k-th largest key T with a histogram of the keys still
// matching it), then rows above T are kept and rows equal to T in index order until k are.
// Six passes over the scores, where ranking every row against every other was quadratic in
// the context. Integer counts only, so the result does not depend on timing.
// Shared memory: hist (256 counts), wsum (32), pick (2).
__device__ __forceinline__ void topk_block(const float* scores, int n, int k, u8* mask, int* hist, int* wsum, int* pick) {
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
    u32 prefix = 0, pmask = 0;
    int want = k;  // rows still to take among those whose key matches the prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += nt) hist[i] = 0;
        __syncthreads();
        for (int c = tid; c < n; c += nt) {
            const u32 key = total_order_key(scores[c]);
            if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
        }
        __syncthreads();
        if (warp == 0) {
            // Lane l holds digits 255 - 8l down to 248 - 8l; counts above each lane's run by
            // a scan over lanes; the lane whose run crosses `want` finds the digit.
            int run = 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) run += hist[255 - 8 * lane - i];
            const int incl = warp_incl_scan(run, lane);
            int above = incl - run;
            if (above < want && want <= incl) {
                for (int i = 0; i < 8; ++i) {
                    const int dg = 255 - 8 * lane - i, h = hist[dg];
                    if (above + h >= want) {
                        pick[0] = dg;
                        pick[1] = want - above;
                        break;
                    }
                    above += h;
                }
            }
        }
        __syncthreads();
        prefix |= (u32)pick[0] << shift;
        pmask |= 255u << shift;
        want = pick[1];
        __syncthreads();  // pick and hist are rewritten by the next pass
    }
    // Rows above T are in; `want` rows equal to T, the first ones in index order. Each thread
    // takes a contiguous run, so a prefix sum over threads orders the ties.
    const int seg = (n + nt - 1) / nt, c0 = min(tid * seg, n), c1 = min(c0 + seg, n);
    int ties = 0, all_ties;
    for (int c = c0; c < c1; ++c) ties += total_order_key(scores[c]) == prefix;
    int before = block_prefix(ties, wsum, all_ties);
    for (int c = c0; c < c1; ++c) {
        const u32 key = total_order_key(scores[c]);
        u8 keep = key > prefix;
        if (key == prefix) keep = before++ < want;
        mask[c] = keep;
    }
}

// score = Σ_h (w[h] · w_scale) · relu(q_h · k) for one key row k (dim floats), by one warp,
// every lane returning it; q is heads × dim (fastest for dim a multiple of 32 up to 256). Lane l holds k's
// l-th run of dim / 32 values, forms each head's partial dot over it, and 32 heads' partials
// are finished at once by a transposed butterfly (31 shuffles, where a butterfly per head
// took 160); the weighted terms are then added in head order.
__device__ __forceinline__ float index_score(const float* q, const float* w, float w_scale, const float* k, int heads,
                                             int dim) {
    const int lane = threadIdx.x & 31, per = dim >> 5;
    if ((dim & 31) != 0 || per > 8) {
        // Other widths: a butterfly per head.
        float s = 0.0f;
        for (int h = 0; h < heads; ++h) {
            float acc = 0.0f;
            for (int j = lane; j < dim; j += 32) acc = fmaf(q[(long long)h * dim + j], k[j], acc);
            s += __fmul_rn(__fmul_rn(w[h], w_scale), fmaxf(warp_sum(acc), 0.0f));
        }
        return s;
    }
    float kr[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) kr[e] = e < per ? k[lane * per + e] : 0.0f;
    float s = 0.0f;
    for (int h0 = 0; h0 < heads; h0 += 32) {
        float v[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            float a = 0.0f;
            if (h0 + i < heads) {
                const float* qh = q + (long long)(h0 + i) * dim + lane * per;
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    if (e < per) a = fmaf(qh[e], kr[e], a);
            }
            v[i] = a;
        }
        const float dot = warp_sum_many<32>(v, lane);  // lane i: head h0 + i
        const int hl = h0 + lane;
        const float term = hl < heads ? __fmul_rn(__fmul_rn(w[hl], w_scale), fmaxf(dot, 0.0f)) : 0.0f;
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            const float ti = __shfl_sync(DSV4_FULL_MASK, term, i);
            if (h0 + i < heads) s += ti;
        }
    }
    return s;
}

// The int8 tensor-core product of one 16 x 32 by 32 x 8 tile into d (mma.sync m16n8k32, sm_80+):
// lane (g = lane / 4, t = lane % 4) holds A rows g and g + 8 at k = 4t.. and 16 + 4t.. (a[0..3]:
// (g, lo), (g + 8, lo), (g, hi), (g + 8, hi)), B column g at k = 4t.. (b0) and 16 + 4t.. (b1),
// and gets D at (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
__device__ __forceinline__ void mma_k32(int (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Every element of a register-resident accumulator array (fully unrolled: the array stays in
// registers).
template <typename T, int A, int B, int C>
__device__ __forceinline__ void zero_acc(T (&v)[A][B][C]) {
#pragma unroll
    for (int a = 0; a < A; ++a)
#pragma unroll
        for (int b = 0; b < B; ++b)
#pragma unroll
            for (int c = 0; c < C; ++c) v[a][b][c] = T(0);
}

template <typename T, int A, int B>
__device__ __forceinline__ void zero_acc(T (&v)[A][B]) {
#pragma unroll
    for (int a = 0; a < A; ++a)
#pragma unroll
        for (int b = 0; b < B; ++b) v[a][b] = T(0);
}

// The BF16 tensor-core product of one 16 x 16 by 16 x 8 tile into d with f32 accumulation
// (mma.sync m16n8k16, sm_80+): lane (g = lane / 4, t = lane % 4) holds A rows g and g + 8 at
// k = 2t.. and 8 + 2t.. (a[0..3]: (g, lo), (g + 8, lo), (g, hi), (g + 8, hi)), B column g at
// k = 2t.. (b0) and 8 + 2t.. (b1), two values per register (the lower k in the low half), and
// gets D at (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The bits of x rounded to BF16 (nearest, ties to even; NaN stays NaN), and back. No CUDA
// header: plain integer arithmetic on the f32 bits.
__device__ __forceinline__ u32 bf16_bits(float x) {
    const u32 b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;  // NaN: keep it one
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ float bf16_value(u32 h) { return __uint_as_float(h << 16); }

// Two values already on the BF16 grid (the official KV rows), packed for an MMA operand.
__device__ __forceinline__ u32 bf16_pack(float lo, float hi) {
    return (__float_as_uint(lo) >> 16) | (__float_as_uint(hi) & 0xffff0000u);
}

// x as hi + mid + lo, three BF16 values whose sum is x exactly for finite x of normal range:
// each step rounds the remainder to 8 significant bits, and the remainder of a rounding is
// exact in f32, so 3 x 8 bits cover f32's 24. A product of one of them with a BF16 value is
// exact in f32: an f32 x BF16 dot product becomes three BF16 MMAs with f32 accumulation.
__device__ __forceinline__ void bf16_split3(float x, u32 (&s)[3]) {
    s[0] = bf16_bits(x);
    const float r1 = x - bf16_value(s[0]);
    s[1] = bf16_bits(r1);
    s[2] = bf16_bits(r1 - bf16_value(s[1]));
}

// The A operand of mma_bf16 in three BF16 parts (a[s], s = hi, mid, lo) from f32 rows g (lo)
// and g + 8 (hi), four values each: this lane's k = 2t, 2t + 1, 8 + 2t, 9 + 2t, in that order
// (the tensor-core attention and F16 products load a row's 4t..4t + 3 as one float4 for them).
__device__ __forceinline__ void bf16_a_parts(float4 lo, float4 hi, u32 (&a)[3][4]) {
    const float v[8] = {lo.x, lo.y, hi.x, hi.y, lo.z, lo.w, hi.z, hi.w};
    u32 parts[8][3];
#pragma unroll
    for (int i = 0; i < 8; ++i) bf16_split3(v[i], parts[i]);
#pragma unroll
    for (int s = 0; s < 3; ++s)
#pragma unroll
        for (int r = 0; r < 4; ++r) a[s][r] = parts[2 * r][s] | (parts[2 * r + 1][s] << 16);
}

// An exact int -> float for |v| < 2^22 on the FP32 pipe (I2F is quarter rate): v lands in the
// low mantissa bits of 1.5 * 2^23.
__device__ __forceinline__ float small_i2f(int v) { return __int_as_float(v + 0x4B400000) - 12582912.0f; }

// ---- the official indexer's scores on the int8 tensor cores --------------------------------
// Under the official numerics every indexer query head and key row has been through the
// Hadamard + FP4 round trip (index_round): in each block of 32 values, v = g 2^s with g on the
// E2M1 grid {0, 0.5, 1, 1.5, 2, 3, 4, 6}, and the block's largest magnitude rounds to 3, 4 or 6
// times 2^s. With e the binary exponent of that magnitude (frexp: amax = f 2^e, f in [0.5, 1);
// e = s + 2 or s + 3), every v 2^(4 - e) is an integer of magnitude below 16: the block is an
// int8 code vector times 2^(e - 4), exactly. A block's dot product is then one exact int32 from
// an m16n8k32 MMA, times the two blocks' powers of two (exact), and the blocks are added in
// order in f32: the dot product rounded once per block, where the f32 kernel (index_score)
// rounds every term. A block holding a non-finite value gets a NaN scale (never a garbage
// code): its heads' dot products are NaN, which the relu (fmaxf) drops as it drops a NaN dot
// product in f32. Heads up to 64 (four 16-row tiles), widths of 32, 64 or 128: the host
// checks (GpuModel::index_fp4_shape).
#define IX_TILES 4
#define IX_BLOCKS 4
// Keys a warp scores in the launches sized by the key count (INDEX_KEYS in forward.rs).
#define IX_KEYS 128

// 8 values (two runs of 4: k = 4t.. and 16 + 4t.. of a 32-value block) of one row, held by the 4
// lanes t of a lane group: their int8 codes packed as the MMA takes them, and the block's
// scale 2^(e - 4) (NaN when the block holds a non-finite value; 0-valued blocks get codes 0).
__device__ __forceinline__ float fp4_codes(float4 lo, float4 hi, u32& wlo, u32& whi) {
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    float amax = 0.0f;
    bool bad = false;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        amax = fmaxf(amax, fabsf(v[i]));
        bad |= !isfinite(v[i]);
    }
    amax = fmaxf(amax, __shfl_xor_sync(DSV4_FULL_MASK, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(DSV4_FULL_MASK, amax, 2));
    bad |= __shfl_xor_sync(DSV4_FULL_MASK, (int)bad, 1) != 0;
    bad |= __shfl_xor_sync(DSV4_FULL_MASK, (int)bad, 2) != 0;
    int e = 0;
    if (!bad) frexpf(amax, &e);
    u32 w[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int code = bad ? 0 : __float2int_rn(ldexpf(v[i], 4 - e));
        w[i >> 2] |= ((u32)code & 255u) << (8 * (i & 3));
    }
    wlo = w[0];
    whi = w[1];
    return bad ? __int_as_float(0x7fc00000) : ldexpf(1.0f, e - 4);
}

// The query side of index_scores_mma, in one lane's MMA fragment layout (lane group g holds
// heads 16 mi + g and 16 mi + g + 8, lane t of it values 4t.. and 16 + 4t.. of each 32-value
// block b): the fp4 codes, the blocks' scales, and the heads' weights times w_scale.
struct IxQuery {
    u32 a[IX_TILES][IX_BLOCKS][4];
    float sq[IX_TILES][IX_BLOCKS][2];
    float wq[IX_TILES][2];
};

// Block b of tile mi of the query fragments (every lane of the warp calls it: fp4_codes
// shuffles within lane groups).
__device__ __forceinline__ void ix_query_block(const float* __restrict__ q, int heads, int dim, int mi, int b, IxQuery& f) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nt = (heads + 15) >> 4, nb = dim >> 5;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int h = 16 * mi + g + 8 * r;
        float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
        // Whole lane groups take part (the shuffles in fp4_codes), rows past the heads as
        // zeros.
        if (mi < nt && b < nb && h < heads) {
            const float* p = q + (long long)h * dim + 32 * b + 4 * t;
            lo = *reinterpret_cast<const float4*>(p);
            hi = *reinterpret_cast<const float4*>(p + 16);
        }
        u32 wl = 0u, wh = 0u;
        f.sq[mi][b][r] = (mi < nt && b < nb) ? fp4_codes(lo, hi, wl, wh) : 0.0f;
        f.a[mi][b][r] = wl;
        f.a[mi][b][2 + r] = wh;
    }
}

__device__ __forceinline__ void ix_query_weights(const float* __restrict__ w, float w_scale, int heads, IxQuery& f) {
    const int g = (threadIdx.x & 31) >> 2, nt = (heads + 15) >> 4;
#pragma unroll
    for (int mi = 0; mi < IX_TILES; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int h = 16 * mi + g + 8 * r;
            f.wq[mi][r] = mi < nt && h < heads ? __fmul_rn(w[h], w_scale) : 0.0f;
        }
}

// The key side of index_scores_mma: keys c < c1 in steps of 8 (k0 = c0, c0 + step, ..)
// against the query fragments f.
__device__ __forceinline__ void ix_scores_keys(const IxQuery& f, const float* __restrict__ keys, long long c0,
                                               long long c1, long long step, int heads, int dim,
                                               float* __restrict__ scores) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nt = (heads + 15) >> 4, nb = dim >> 5;
    const auto& a = f.a;
    const auto& sq = f.sq;
    const auto& wq = f.wq;
    for (long long k0 = c0; k0 < c1; k0 += step) {
        const long long key = k0 + g;
        float sk[IX_BLOCKS];
        u32 bw[IX_BLOCKS][2];
#pragma unroll
        for (int b = 0; b < IX_BLOCKS; ++b) {
            float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
            if (b < nb && key < c1) {
                const float* p = keys + key * dim + 32 * b + 4 * t;
                lo = *reinterpret_cast<const float4*>(p);
                hi = *reinterpret_cast<const float4*>(p + 16);
            }
            sk[b] = fp4_codes(lo, hi, bw[b][0], bw[b][1]);
        }
        // This lane's output columns are keys 2t and 2t + 1 of the step: their scales from the
        // lane groups that loaded them.
        float skc[IX_BLOCKS][2];
#pragma unroll
        for (int b = 0; b < IX_BLOCKS; ++b) {
            skc[b][0] = __shfl_sync(DSV4_FULL_MASK, sk[b], 8 * t);
            skc[b][1] = __shfl_sync(DSV4_FULL_MASK, sk[b], 8 * t + 4);
        }
        float part[2] = {0.0f, 0.0f};
#pragma unroll
        for (int mi = 0; mi < IX_TILES; ++mi) {
            if (mi < nt) {
                float dot[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int b = 0; b < IX_BLOCKS; ++b) {
                    if (b < nb) {
                        int d[4] = {0, 0, 0, 0};
                        mma_k32(d, a[mi][b], bw[b][0], bw[b][1]);
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const float v = __fmul_rn(__fmul_rn(small_i2f(d[e]), sq[mi][b][e >> 1]), skc[b][e & 1]);
                            dot[e] = __fadd_rn(dot[e], v);
                        }
                    }
                }
#pragma unroll
                for (int e = 0; e < 4; ++e) part[e & 1] = __fadd_rn(part[e & 1], __fmul_rn(wq[mi][e >> 1], fmaxf(dot[e], 0.0f)));
            }
        }
        // Across the 8 lane groups (rows g), for each column.
#pragma unroll
        for (int m = 4; m < 32; m <<= 1) {
            part[0] = __fadd_rn(part[0], __shfl_xor_sync(DSV4_FULL_MASK, part[0], m));
            part[1] = __fadd_rn(part[1], __shfl_xor_sync(DSV4_FULL_MASK, part[1], m));
        }
        if (g == 0) {
            const long long k = k0 + 2 * t;
            if (k < c1) scores[k] = part[0];
            if (k + 1 < c1) scores[k + 1] = part[1];
        }
    }
}

// score[c] = Σ_h (w[h] · w_scale) · relu(q_h · k_c) for one token's keys c < c1 in steps of 8
// (keys k0 .. k0 + 7 for k0 = c0, c0 + step, ..), by one warp; q is heads × dim, keys rows of
// dim. Heads are summed in a fixed order (each lane its rows, then lane groups in a
// butterfly): deterministic.
__device__ void index_scores_mma(const float* __restrict__ q, const float* __restrict__ w, float w_scale,
                                 const float* __restrict__ keys, long long c0, long long c1, long long step, int heads,
                                 int dim, float* __restrict__ scores) {
    IxQuery f;
    ix_query_weights(w, w_scale, heads, f);
#pragma unroll
    for (int mi = 0; mi < IX_TILES; ++mi)
#pragma unroll
        for (int b = 0; b < IX_BLOCKS; ++b) ix_query_block(q, heads, dim, mi, b, f);
    ix_scores_keys(f, keys, c0, c1, step, heads, dim, scores);
}

// ---- the official numerics' roundings (dsv4_model::numerics), shared by model/numerics.cu
// and the decode step's rope_qkv_step (model/ops.cu) ----

// |v| with NaN as 0, so a max over it ignores NaN as Rust's f32::max does.
__device__ __forceinline__ float abs_nn(float v) { return v != v ? 0.0f : fabsf(v); }

// clamp(round_half_even(v), -128, 127); NaN gives 0 (dsv4_quant's round_to_i8).
__device__ __forceinline__ int round_i8(float v) {
    if (v != v) return 0;
    return (int)rintf(fminf(fmaxf(v, -128.0f), 127.0f));
}

// The official activations of the quantized products, made where their input is made (the
// decode step's fused launches) or by quant_q8_0 / quant_q8_k, by the same code either way.
// Their block sizes, and where a Q8_K block's 16 sums of 16 codes start (after d and the codes).
#define Q8_0_BYTES 36
#define Q8_K_BYTES 292
#define Q8_K_BSUMS 260
// Q8_0: a warp's 32 values (lane i holds value i) as a 36-byte block at blk, f32 scale
// amax / 127, then 32 codes.
__device__ __forceinline__ void q8_0_warp(float v, u8* blk) {
    const int i = threadIdx.x & 31;
    const float amax = warp_max(abs_nn(v));
    const float d = __fdiv_rn(amax, 127.0f);
    const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
    blk[4 + i] = (u8)(i8)round_i8(__fmul_rn(v, id));
    if (i == 0) *reinterpret_cast<float*>(blk) = d;
}

struct Q8kShared {
    float shf[32];
    float v[256];
    int qs[256];
    int first;
};

// Q8_K: a CTA's 256 values (256 threads, thread i holds value i; every thread calls it) as a
// 292-byte block at blk: f32 d, 256 codes, 16 i16 sums of 16 codes. The scale comes from the
// value at the first index of largest |x|, sign kept: iscale = -127 / max, d = 1 / iscale; an
// all-zero block is all zeros.
__device__ __forceinline__ void q8_k_block(float v, u8* blk, Q8kShared& sh) {
    const int i = threadIdx.x;
    if (i == 0) sh.first = 256;
    sh.v[i] = v;
    const float amax = block_max_f(abs_nn(v), sh.shf);  // its barriers also publish `first` and v
    if (amax == 0.0f) {
        blk[4 + i] = 0;
        if (i < 16) reinterpret_cast<short*>(blk + Q8_K_BSUMS)[i] = 0;
        if (i == 0) *reinterpret_cast<float*>(blk) = 0.0f;
        return;
    }
    if (fabsf(v) == amax) atomicMin(&sh.first, i);  // integer min: order-independent
    __syncthreads();
    const float iscale = __fdiv_rn(-127.0f, sh.v[sh.first]);
    const int q = round_i8(__fmul_rn(iscale, v));
    sh.qs[i] = q;
    blk[4 + i] = (u8)(i8)q;
    __syncthreads();
    if (i < 16) {
        int s = 0;
        for (int k = 0; k < 16; ++k) s += sh.qs[16 * i + k];
        reinterpret_cast<short*>(blk + Q8_K_BSUMS)[i] = (short)s;
    }
    if (i == 0) *reinterpret_cast<float*>(blk) = __fdiv_rn(1.0f, iscale);
}

// Activation formats of the fused launches' quantized outputs (0: none).
#define ACT_Q8_0 1
#define ACT_Q8_K 2

// A 256-thread block's 256 consecutive values (thread i holds value i, column c0 + i of a
// row whose activations start at row_q) into activation format `f`: Q8_0 blocks (a warp each)
// or one Q8_K block. c0 is a multiple of 256. Every thread of the block calls it.
__device__ __forceinline__ void quant_slice256(int f, float v, u8* row_q, int c0, Q8kShared& sh) {
    if (f == ACT_Q8_0) {
        q8_0_warp(v, row_q + (long long)((c0 + (threadIdx.x & ~31)) / 32) * Q8_0_BYTES);
    } else if (f == ACT_Q8_K) {
        q8_k_block(v, row_q + (long long)(c0 / 256) * Q8_K_BYTES, sh);
    }
}

// Nearest E4M3FN value, ties to even, saturating at ±448 (dsv4_quant::fp8::e4m3_round).
__device__ __forceinline__ float e4m3_round(float x) {
    if (x != x) return x;
    const float a = fabsf(x);
    float r;
    if (a >= 448.0f) {
        r = 448.0f;
    } else if (a < 1.0f / 64.0f) {
        r = __fmul_rn(rintf(__fmul_rn(a, 512.0f)), 1.0f / 512.0f);
    } else {
        const u32 bits = __float_as_uint(a);
        r = __uint_as_float((bits + 0x7ffffu + ((bits >> 20) & 1u)) & ~0xfffffu);
    }
    return copysignf(r, x);
}

// Nearest E2M1 value, ties to the even index, saturating at ±6 (dsv4_quant::fp4::e2m1_round).
__device__ __forceinline__ float e2m1_round(float x) {
    if (x != x) return x;
    const float vals[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float a = fabsf(x);
    int idx = 0;
#pragma unroll
    for (int k = 0; k < 7; ++k) {
        const float mid = (vals[k] + vals[k + 1]) * 0.5f;
        if (a > mid || (a == mid && ((k + 1) & 1) == 0)) idx = k + 1;
    }
    return copysignf(vals[idx], x);
}

// Round to BF16 (nearest, ties to even), returned as f32; NaN stays NaN.
__device__ __forceinline__ float bf16_round(float x) {
    if (x != x) return x;
    const u32 b = __float_as_uint(x);
    return __uint_as_float((b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u);
}

// The power-of-two scale that brings amax (already floored) to at most `max`.
__device__ __forceinline__ float pow2_scale(float amax, float max) {
    return ldexpf(1.0f, (int)ceilf(log2f(__fdiv_rn(amax, max))));
}

__device__ __forceinline__ float round_trip(float v, float scale, float max, bool fp8) {
    float s = __fdiv_rn(v, scale);
    if (s == s) s = fminf(fmaxf(s, -max), max);
    return __fmul_rn(fp8 ? e4m3_round(s) : e2m1_round(s), scale);
}

// A KV row as the cache stores it, by a block of any whole number of warps: the first
// d - rope_dim values go through FP8 in blocks of 64 (scale floor 1e-4; a warp per block,
// two values a lane, the blocks spread over the warps), then every value is rounded to BF16.
// The block's threads must all arrive (it has a barrier).
__device__ __forceinline__ void kv_round_row(float* row, int d, int rope_dim) {
    const int nope = d - rope_dim, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int c = 64 * warp; c < nope; c += 64 * nw) {
        const int j0 = c + lane, j1 = c + 32 + lane;
        const float v0 = j0 < nope ? row[j0] : 0.0f, v1 = j1 < nope ? row[j1] : 0.0f;
        const float amax = fmaxf(warp_max(fmaxf(abs_nn(v0), abs_nn(v1))), 1e-4f);
        const float scale = pow2_scale(amax, 448.0f);
        if (j0 < nope) row[j0] = round_trip(v0, scale, 448.0f, true);
        if (j1 < nope) row[j1] = round_trip(v1, scale, 448.0f, true);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < d; j += blockDim.x) row[j] = bf16_round(row[j]);
}

// One row of `dim` values (a power of two from 32 to 1024) by a block of at least `dim`
// threads (those past dim only join the barriers), `hx` shared memory of dim floats: the
// orthonormal Walsh-Hadamard transform (Sylvester order, the CPU's butterflies), then an FP4
// round trip per 32 values (one warp each; scale floor 6·FLT_MIN).
__device__ __forceinline__ void index_round_row(float* row, int dim, float* hx) {
    const int i = threadIdx.x;
    if (i < dim) hx[i] = row[i];
    __syncthreads();
    for (int s = 1; s < dim; s <<= 1) {
        if (i < dim / 2) {
            const int j = (i / s) * 2 * s + i % s;
            const float a = hx[j], b = hx[j + s];
            hx[j] = __fadd_rn(a, b);
            hx[j + s] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    if (i >= dim) return;  // whole warps: dim is a multiple of 32
    const float v = __fmul_rn(hx[i], __fdiv_rn(1.0f, sqrtf((float)dim)));
    const float floor = 6.0f * __int_as_float(0x00800000);
    const float amax = fmaxf(warp_max(abs_nn(v)), floor);
    row[i] = round_trip(v, pow2_scale(amax, 6.0f), 6.0f, false);
}

// ---- IQ2_XXS decoding (matvec.cu, matmul.cu) -------------------------------------------
// IQ2_XXS octets by byte permutation. Each of the 256 grid entries is eight 2-bit level
// indices (0x08, 0x19, 0x2b); `tab` (in shared memory, built by the host: iq2_tables in
// matvec.rs) holds them as PRMT selector nibbles (tab[0..256)), and the 128 sign patterns
// (the eighth sign makes the count of negatives even) as bit 2 of each nibble
// (tab[256..384)). OR-ing the two gives selectors that pick each signed byte out of a
// constant 8-byte table in one PRMT per 4 weights: bytes 0..2 = +levels, 4..6 = -levels. One
// 4-byte lookup per table instead of an 8-byte grid load, a parity count and per-byte
// negation; the tables are 1.5 KB.
#define IQ2_TAB_WORDS 384
// Signed int8 levels (official numerics: dp4a and MMA operands).
#define IQ2_POS 0x002B1908u
#define IQ2_NEG 0x00D5E7F8u

// PRMT in its default mode: the selector nibbles here are 0..6, never with bit 3 (sign
// replication) set, so this is __byte_perm without the mask the compiler adds to clear it.
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

// Byte offsets into the tables, scaled in the shift and the mask (k is a constant once
// unrolled), so each lookup is a shift, one LOP3 and a load.
template <u32 POS, u32 NEG>
__device__ __forceinline__ void iq2_octet(u32 a, u32 b, int k, const u32* tab, u32& lo, u32& hi) {
    const u32 ga = (k == 0 ? a << 2 : a >> (8 * k - 2)) & 0x3fcu;
    // (x & 0x1fc) | 0x400 in one LOP3 (immLut 0xEA = a & b | c), which the compiler does
    // not find on its own.
    u32 gs;
    asm("lop3.b32 %0, %1, 0x1fc, 0x400, 0xEA;" : "=r"(gs) : "r"(k == 0 ? b << 2 : b >> (7 * k - 2)));
    const u8* t = reinterpret_cast<const u8*>(tab);
    const u32 sel = *reinterpret_cast<const u32*>(t + ga) | *reinterpret_cast<const u32*>(t + gs);
    lo = prmt(POS, NEG, sel);
    hi = prmt(POS, NEG, sel >> 16);
}
