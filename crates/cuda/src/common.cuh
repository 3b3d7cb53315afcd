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

// Exclusive prefix sum over the block of one int per thread, in thread order; `total` gets
// the block's sum. Block-wide (every thread calls it; `wsum` is 32 ints of shared memory,
// free again only after the caller's next barrier).
__device__ __forceinline__ int block_prefix(int v, int* wsum, int& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(DSV4_FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
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
            int incl = run;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(DSV4_FULL_MASK, incl, o);
                if (lane >= o) incl += y;
            }
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

