// The small kernels of the layer loop: embedding, the hyper-connection read-out and
// write-back, RMSNorm with RoPE, clamped SwiGLU, the expert gather/scatter and sum. None of
// them moves much data; they exist so that the weight products (quant/matvec.cu) see ready
// inputs. Each takes a chunk of tokens: the token is blockIdx.y (blockIdx.x for the
// one-block-per-token kernels), and a token's vectors follow the previous token's.

#include "dsv4_common.cuh"

// HC counts up to this many streams (Flash has 4).
#define MAX_HC 16

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// Token t's embedding row copied into every HC stream of its S (hc × e). `f16` selects the
// table's element type (F16, else F32).
extern "C" __global__ void embed(const u8* table, int f16, const int* toks, int e, int hc, float* S) {
    DSV4_GRID_ENTRY();
    const long long row = toks[blockIdx.y];
    S += (long long)blockIdx.y * hc * e;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < e; i += gridDim.x * blockDim.x) {
        const long long k = row * e + i;
        const float v = f16 ? f16_to_f32(reinterpret_cast<const u16*>(table)[k])
                            : reinterpret_cast<const float*>(table)[k];
        for (int h = 0; h < hc; ++h) S[h * e + i] = v;
    }
}

// Value k of the mixing projection: the sum, in order, of its `parts` partial dot products
// (hc_proj), or the value itself when parts is 1.
// Up to MAX_PARTS partials are loaded before the first addition: they come from L2, and a
// loop that adds each as it arrives waits out one L2 latency per partial (the decode step's
// HC weights are a chain of such waits on one warp).
#define MAX_PARTS 16
__device__ __forceinline__ float mix_val(const float* m_raw, int k, int parts) {
    if (parts <= MAX_PARTS) {
        float p[MAX_PARTS];
#pragma unroll
        for (int i = 0; i < MAX_PARTS; ++i) p[i] = i < parts ? m_raw[k * parts + i] : 0.0f;
        float v = p[0];
#pragma unroll
        for (int i = 1; i < MAX_PARTS; ++i)
            if (i < parts) v += p[i];
        return v;
    }
    float v = m_raw[k * parts];
    for (int p = 1; p < parts; ++p) v += m_raw[k * parts + p];
    return v;
}

// Stream h's read-out weight pre_h from the mixing values and the state's 1/rms `sflat`.
__device__ __forceinline__ float hc_pre_weight(const float* m_raw, int h, int parts, float sflat, const float* scale,
                                               const float* base, float hc_eps) {
    return sigmoidf_(mix_val(m_raw, h, parts) * sflat * scale[0] + base[h]) + hc_eps;
}

// The state's 1/rms from hc_proj's `parts` partial sums of squares (of n values), added in
// order; up to MAX_PARTS of them loaded before the first addition (see mix_val).
__device__ __forceinline__ float hc_sflat(const double* ss, int parts, int n, float rms_eps) {
    double sum = 0.0;
    if (parts <= MAX_PARTS) {
        double q[MAX_PARTS];
#pragma unroll
        for (int p = 0; p < MAX_PARTS; ++p) q[p] = p < parts ? ss[p] : 0.0;
#pragma unroll
        for (int p = 0; p < MAX_PARTS; ++p)
            if (p < parts) sum += q[p];
    } else {
        for (int p = 0; p < parts; ++p) sum += ss[p];
    }
    return rms_scale_from(sum, n, rms_eps);
}

// Element j of a warp-distributed array (element j lives in lane j % 32, register j / 32),
// fetched by every lane of the warp at once (each its own j); `slots` registers are in use.
__device__ __forceinline__ float warp_elem(const float (&v)[MAX_HC * MAX_HC / 32], int j, int slots) {
    float x = 0.0f;
#pragma unroll
    for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i) {
        if (i >= slots) break;
        const float y = __shfl_sync(0xffffffffu, v[i], j & 31);
        if ((j >> 5) == i) x = y;
    }
    return x;
}

// The Sinkhorn normalisation of the hc × hc mixing logits in `c` (shared memory), by one warp:
// a softmax within each row, then `iters` column and `iters - 1` row normalisations,
// alternating and starting with a column step. Each lane owns elements lane + 32·i and sums
// its row or column in index order, so the result is that of the plain sequential loops.
__device__ __forceinline__ void sinkhorn_warp(float* c, int hc, int iters, float eps) {
    const int lane = threadIdx.x & 31, nn = hc * hc;
    float v[MAX_HC * MAX_HC / 32] = {};
#pragma unroll
    for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i) {
        const int k = lane + 32 * i;
        if (k < nn) {
            const float* row = c + (k / hc) * hc;
            float mx = neg_inf();
            for (int b = 0; b < hc; ++b) mx = fmaxf(mx, row[b]);
            v[i] = expf(c[k] - mx);
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i)
        if (lane + 32 * i < nn) c[lane + 32 * i] = v[i];
    __syncwarp();
#pragma unroll
    for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i) {
        const int k = lane + 32 * i;
        if (k < nn) {
            const float* row = c + (k / hc) * hc;
            float sum = 0.0f;
            for (int b = 0; b < hc; ++b) sum += row[b];
            v[i] = c[k] / sum + eps;
        }
    }
    // The normalisations keep the elements in registers: a lane gathers its row or column
    // from the owners' registers by shuffles, in index order (the sums of the sequential
    // loops, bit for bit), instead of a shared-memory round trip and two warp barriers a step.
    const int slots = (nn + 31) / 32;
    for (int step = 1; step < 2 * iters; ++step) {
        const bool cols = step & 1;
        float nv[MAX_HC * MAX_HC / 32];
#pragma unroll
        for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i) {
            if (i >= slots) break;
            const int k = lane + 32 * i;
            const int kk = k < nn ? k : 0;
            const int a = kk / hc, b = kk % hc;
            float sum = 0.0f;
            for (int t = 0; t < hc; ++t) sum += warp_elem(v, cols ? t * hc + b : a * hc + t, slots);
            nv[i] = k < nn ? v[i] / (sum + eps) : v[i];
        }
#pragma unroll
        for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i)
            if (i < slots) v[i] = nv[i];
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < MAX_HC * MAX_HC / 32; ++i)
        if (lane + 32 * i < nn) c[lane + 32 * i] = v[i];
    __syncwarp();
}

// By one warp: the HC weights of one site from the mixing values `m_raw` (each as `parts`
// partial sums) scaled by the state's 1/rms `sflat`: pre (into `pre`, and mix[0..hc] when
// mix is not null), then, when mix is not null, post (mix[hc..2hc]) and the Sinkhorn-normed
// comb (mix[2hc..], through `c`, hc·hc floats of shared memory). mix null is the output
// head's read-out (pre only).
// The small case (2·hc + hc·hc <= 32, Flash's hc = 4): lane l computes mixing value l
// (pre, post, then the comb logits), all at once, and the Sinkhorn runs on the comb lanes
// in registers: each lane gathers its row or column by shuffles and adds it in index order,
// the same operations in the same order as sinkhorn_warp (so the same bits), without its
// generic loops over register slots.
// HC = 0: hc known at run time only; HC > 0: hc == HC, so the loops over a row or column
// unroll and a lane's hc shuffles are in flight together (same additions, same order).
template <int HC>
__device__ __forceinline__ void hc_weights_small(const float* m_raw, int parts, float sflat, const float* scale,
                                                 const float* base, float* pre, float* mix, int hc_rt, int iters,
                                                 float hc_eps) {
    const int hc = HC > 0 ? HC : hc_rt;
    const int l = threadIdx.x & 31, nn = hc * hc, off = 2 * hc;
    const bool head = mix == nullptr;
    const int nv = head ? hc : off + nn;
    float val = 0.0f;
    if (l < hc) {
        val = hc_pre_weight(m_raw, l, parts, sflat, scale, base, hc_eps);
        pre[l] = val;
    } else if (l < off && !head) {
        val = 2.0f * sigmoidf_(mix_val(m_raw, l, parts) * sflat * scale[1] + base[l]);
    } else if (l < nv) {
        val = mix_val(m_raw, l, parts) * sflat * scale[2] + base[l];
    }
    if (!head) {
        // Element k = l - off of the comb, row a, column b (lanes outside read element 0).
        const int k = (l >= off && l < off + nn) ? l - off : 0;
        const int a = k / hc, b = k % hc;
        float mx = neg_inf();
#pragma unroll
        for (int t = 0; t < (HC > 0 ? HC : MAX_HC); ++t)
            if (HC > 0 || t < hc) mx = fmaxf(mx, __shfl_sync(DSV4_FULL_MASK, val, off + a * hc + t));
        float v = expf(val - mx);
        float sum = 0.0f;
#pragma unroll
        for (int t = 0; t < (HC > 0 ? HC : MAX_HC); ++t)
            if (HC > 0 || t < hc) sum += __shfl_sync(DSV4_FULL_MASK, v, off + a * hc + t);
        v = v / sum + hc_eps;
        // A lane's source lanes for a row step and a column step.
        const int row0 = off + a * hc, col0 = off + b;
        for (int step = 1; step < 2 * iters; ++step) {
            const bool cols = step & 1;
            const int first = cols ? col0 : row0, stride = cols ? hc : 1;
            sum = 0.0f;
#pragma unroll
            for (int t = 0; t < (HC > 0 ? HC : MAX_HC); ++t)
                if (HC > 0 || t < hc) sum += __shfl_sync(DSV4_FULL_MASK, v, first + t * stride);
            v = v / (sum + hc_eps);
        }
        if (l >= off) val = v;
    }
    if (!head && l < nv) mix[l] = val;
}

__device__ __forceinline__ void hc_weights(const float* m_raw, int parts, float sflat, const float* scale,
                                           const float* base, float* pre, float* mix, int hc, int iters,
                                           float hc_eps, float* c) {
    if (hc == 4) {
        hc_weights_small<4>(m_raw, parts, sflat, scale, base, pre, mix, hc, iters, hc_eps);
        return;
    }
    if (2 * hc + hc * hc <= 32) {
        hc_weights_small<0>(m_raw, parts, sflat, scale, base, pre, mix, hc, iters, hc_eps);
        return;
    }
    const int lane = threadIdx.x & 31;
    for (int h = lane; h < hc; h += 32) {
        pre[h] = hc_pre_weight(m_raw, h, parts, sflat, scale, base, hc_eps);
        if (mix) {
            mix[h] = pre[h];
            mix[hc + h] = 2.0f * sigmoidf_(mix_val(m_raw, hc + h, parts) * sflat * scale[1] + base[hc + h]);
        }
    }
    if (mix) {
        for (int k = lane; k < hc * hc; k += 32)
            c[k] = mix_val(m_raw, 2 * hc + k, parts) * sflat * scale[2] + base[2 * hc + k];
        __syncwarp();
        sinkhorn_warp(c, hc, iters, hc_eps);
        for (int k = lane; k < hc * hc; k += 32) mix[2 * hc + k] = c[k];
    }
}

// One block per token (m_raw, mix: m_stride, mix_stride floats per token). The HC read-out at
// one site. `m_raw` is the mixing projection of the raw state S (hc × e), each value as
// `m_parts` partial sums (see mix_val): RMSNorm of the flattened state is one scalar, so it
// scales the few logits here instead of the hc·e inputs before the product. Writes the mixing
// to `mix` (pre[hc], post[hc], comb[hc·hc], comb[a·hc + b] = weight of old stream a in new
// stream b) and out = RMSNorm(Σ_h pre_h S_h) · norm_w.
// head != 0: the output head's read-out instead (sigmoid weights with one scale; no post,
// no Sinkhorn, nothing written to mix).
extern "C" __global__ void __launch_bounds__(512) hc_pre(const float* S, const float* m_raw, const float* scale,
                                  const float* base, const float* norm_w, float* out, float* mix,
                                  int hc, int e, int iters, float hc_eps, float rms_eps, int head,
                                  int m_stride, int mix_stride, int m_parts) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    S += (long long)blockIdx.x * hc * e;
    m_raw += (long long)blockIdx.x * m_stride;
    out += (long long)blockIdx.x * e;
    if (mix) mix += (long long)blockIdx.x * mix_stride;
    __shared__ float pre[MAX_HC];
    __shared__ float c[MAX_HC * MAX_HC];
    const int n = hc * e;
    // One block streams the whole state (64 KB on Flash) for a decode token: each thread
    // issues four loads before it adds their squares, in index order (the plain loop's sum),
    // instead of waiting out the memory latency once per element.
    double ss = 0.0;
    const int stride = blockDim.x;
    int i0 = threadIdx.x;
    for (; i0 + 3 * stride < n; i0 += 4 * stride) {
        const float v0 = S[i0], v1 = S[i0 + stride], v2 = S[i0 + 2 * stride], v3 = S[i0 + 3 * stride];
        ss += (double)v0 * (double)v0;
        ss += (double)v1 * (double)v1;
        ss += (double)v2 * (double)v2;
        ss += (double)v3 * (double)v3;
    }
    for (; i0 < n; i0 += stride) ss += (double)S[i0] * (double)S[i0];
    const float sflat = rms_scale_from(block_sum_d(ss, shd), n, rms_eps);
    if (threadIdx.x < 32) hc_weights(m_raw, m_parts, sflat, scale, base, pre, head ? nullptr : mix, hc, iters, hc_eps, c);
    __syncthreads();
    double sx = 0.0;
    for (int i = threadIdx.x; i < e; i += blockDim.x) {
        float x = 0.0f;
        for (int h = 0; h < hc; ++h) x += pre[h] * S[h * e + i];
        out[i] = x;
        sx += (double)x * (double)x;
    }
    const float s = rms_scale_from(block_sum_d(sx, shd), e, rms_eps);
    for (int i = threadIdx.x; i < e; i += blockDim.x) out[i] = out[i] * s * norm_w[i];
}

// Partial dot products of the HC mixing projection: row blockIdx.x of w (F16 when f16, else
// F32; rows of `cols`) with token blockIdx.z's x (cols floats per token), over column slice
// blockIdx.y of gridDim.y equal slices, into out[z · out_stride + row · gridDim.y + slice]
// (hc_pre adds the slices in order). The matrix has few rows and long ones, so the slices give
// the launch enough blocks to stream it at once.
// With `ss`, the row-0 blocks also leave the sum of squares of their slice of x (in double)
// at ss[z · gridDim.y + slice], the partials hc_mix_step adds.
extern "C" __global__ void hc_proj(const u8* w, int f16, const float* x, int cols, float* out, long long out_stride,
                                   double* ss) {
    DSV4_GRID_ENTRY();
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int r = blockIdx.x, parts = gridDim.y, len = cols / parts, c0 = blockIdx.y * len;
    x += (long long)blockIdx.z * cols;
    out += (long long)blockIdx.z * out_stride;
    float acc = 0.0f;
    double sq = 0.0;
    const bool squares = ss && r == 0;
    for (int j = c0 + threadIdx.x; j < c0 + len; j += blockDim.x) {
        const long long k = (long long)r * cols + j;
        const float wv = f16 ? f16_to_f32(reinterpret_cast<const u16*>(w)[k]) : reinterpret_cast<const float*>(w)[k];
        const float xv = x[j];
        acc = fmaf(wv, xv, acc);
        if (squares) sq += (double)xv * (double)xv;
    }
    acc = block_sum_f(acc, shf);
    if (threadIdx.x == 0) out[r * parts + blockIdx.y] = acc;
    if (squares) {
        sq = block_sum_d(sq, shd);
        if (threadIdx.x == 0) ss[(long long)blockIdx.z * parts + blockIdx.y] = sq;
    }
}

// The decode step's HC read-out over many blocks instead of one block per token (hc_pre),
// which left the GPU waiting on one SM per token for its dependent phases: hc_proj (with
// `ss`) leaves the state's sum of squares as per-slice partials; hc_out_step turns them and
// the mixing values into the pre weights and forms Σ_h pre_h S_h with per-block partial sums
// of squares; hc_norm_step applies the RMSNorm and quantizes what the next products read.
// hc_mix_step makes post and comb (the Sinkhorn: a chain of ~40 dependent steps on one warp,
// ~10 µs) on a branch of the step beside them, since only the write-back needs those.
// Partials are added in index order, in double like hc_pre's block sums.

// One warp per token (blockIdx.x): 1/rms of the state from the `parts` partials at
// ss + token · parts, then hc_weights into mix (pre first; the head's pre only, when head).
extern "C" __global__ void hc_mix_step(const float* m_raw, const double* ss, const float* scale, const float* base,
                                       float* mix, int hc, int e, int iters, float hc_eps, float rms_eps, int head,
                                       int m_stride, int mix_stride, int parts) {
    DSV4_GRID_ENTRY();
    __shared__ float pre[MAX_HC];
    __shared__ float c[MAX_HC * MAX_HC];
    const long long t = blockIdx.x;
    m_raw += t * m_stride;
    mix += t * mix_stride;
    const float sflat = hc_sflat(ss + t * parts, parts, hc * e, rms_eps);
    hc_weights(m_raw, parts, sflat, scale, base, pre, head ? nullptr : mix, hc, iters, hc_eps, c);
    if (head) {
        __syncwarp();
        for (int h = threadIdx.x; h < hc; h += 32) mix[h] = pre[h];
    }
}

// out = Σ_h pre_h S_h for token blockIdx.y, column blockIdx.x · blockDim.x + threadIdx.x, the
// pre weights (as hc_mix_step makes them) from the mixing values at m_raw + token · m_stride
// and the state's squares at ss + token · parts; each block's sum of squares of its columns
// into part[token · gridDim.x + blockIdx.x]. The column's hc loads are issued before the pre
// weights' barrier (one after another they were a chain of L2 waits).
extern "C" __global__ void hc_out_step(const float* S, const float* m_raw, const double* ss, const float* scale,
                                       const float* base, float* out, double* part, int hc, int e, int m_stride,
                                       int parts, float rms_eps, float hc_eps) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    __shared__ float pre[MAX_HC];
    const long long t = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    S += t * hc * e;
    float sv[MAX_HC];
#pragma unroll
    for (int h = 0; h < MAX_HC; ++h) sv[h] = (h < hc && i < e) ? S[h * e + i] : 0.0f;
    if (threadIdx.x < hc) {
        const float sflat = hc_sflat(ss + t * parts, parts, hc * e, rms_eps);
        pre[threadIdx.x] = hc_pre_weight(m_raw + t * m_stride, threadIdx.x, parts, sflat, scale, base, hc_eps);
    }
    __syncthreads();
    double sx = 0.0;
    if (i < e) {
        float x = 0.0f;
#pragma unroll
        for (int h = 0; h < MAX_HC; ++h)
            if (h < hc) x += pre[h] * sv[h];
        out[t * e + i] = x;
        sx = (double)x * (double)x;
    }
    sx = block_sum_d(sx, shd);
    if (threadIdx.x == 0) part[t * gridDim.x + blockIdx.x] = sx;
}

// The RMSNorm of hc_out_step's output (its `nparts` partials per token, in order) times
// norm_w. Where the products that read it take quantized activations, it also writes its
// columns in those formats (fa at qa + token · q_stride, fb at qb + token · q_stride; 0: none;
// then 256 threads and e a multiple of 256): no quantization launch before them.
extern "C" __global__ void hc_norm_step(float* out, const double* part, int nparts, const float* norm_w, int e,
                                        float rms_eps, u8* qa, int fa, u8* qb, int fb, long long q_stride) {
    DSV4_GRID_ENTRY();
    __shared__ Q8kShared qsh;
    const long long t = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = 0.0f;
    if (i < e) {
        double sum = 0.0;
        for (int p = 0; p < nparts; ++p) sum += part[t * nparts + p];
        const float s = rms_scale_from(sum, e, rms_eps);
        v = out[t * e + i] * s * norm_w[i];
        out[t * e + i] = v;
    }
    if (fa) quant_slice256(fa, v, qa + t * q_stride, blockIdx.x * blockDim.x, qsh);
    if (fb) quant_slice256(fb, v, qb + t * q_stride, blockIdx.x * blockDim.x, qsh);
}

// The HC write-back of column i: S_new[b] = post[b] · y_i + Σ_a comb[a][b] · S_old[a].
__device__ __forceinline__ void hc_post_col(float* S, float yi, const float* mix, int hc, int e, int i) {
    const float* post = mix + hc;
    const float* comb = mix + 2 * hc;
    float old[MAX_HC];
    for (int a = 0; a < hc; ++a) old[a] = S[a * e + i];
    for (int b = 0; b < hc; ++b) {
        float acc = post[b] * yi;
        for (int a = 0; a < hc; ++a) acc += comb[a * hc + b] * old[a];
        S[b * e + i] = acc;
    }
}

// The HC write-back, one thread per column.
extern "C" __global__ void hc_post(float* S, const float* y, const float* mix, int hc, int e, int mix_stride) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    S += (long long)blockIdx.y * hc * e;
    y += (long long)blockIdx.y * e;
    mix += (long long)blockIdx.y * mix_stride;
    hc_post_col(S, y[i], mix, hc, e, i);
}

// One vector x of d values into y (which may be x), by the whole block: RMSNorm (with learned
// scale w, or plain when w is null; skipped when do_norm is 0), then RoPE of the last
// 2·n_pairs values at position pos (none when n_pairs is 0).
__device__ __forceinline__ void norm_rope_vec(const float* x, float* y, const float* w, int d, int do_norm,
                                              float eps, const float* freqs, int n_pairs, long long pos,
                                              double* shd) {
    float s = 1.0f;
    if (do_norm) {
        double ss = 0.0;
        for (int i = threadIdx.x; i < d; i += blockDim.x) ss += (double)x[i] * (double)x[i];
        s = rms_scale_from(block_sum_d(ss, shd), d, eps);
    }
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = do_norm ? x[i] * s : x[i];
        y[i] = w ? v * w[i] : v;
    }
    __syncthreads();
    float* tail = y + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) rope_pair(tail, i, freqs[i], (float)pos, false);
}

// grid.x = heads, each `d` contiguous values of src, written to dst (which may be src);
// grid.y = tokens, `stride` floats apart, token t at position pos + t (see norm_rope_vec).
// With f (ACT_Q8_0 or ACT_Q8_K; 256 threads, d a multiple of 256) the block also writes its
// head's values in that activation format, token t's row at q + t · q_stride: the decode step's
// q_a output needs no quantization launch before q_b.
extern "C" __global__ void norm_rope(const float* src, float* dst, const float* w, int d, int do_norm,
                                     float eps, const float* freqs, int n_pairs, long long pos,
                                     long long stride, u8* q, int f, long long q_stride) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    __shared__ Q8kShared qsh;
    const float* x = src + blockIdx.y * stride + (long long)blockIdx.x * d;
    float* y = dst + blockIdx.y * stride + (long long)blockIdx.x * d;
    norm_rope_vec(x, y, w, d, do_norm, eps, freqs, n_pairs, pos + blockIdx.y, shd);
    if (!f) return;
    __syncthreads();
    for (int c0 = 0; c0 < d; c0 += blockDim.x)
        quant_slice256(f, y[c0 + threadIdx.x], q + blockIdx.y * q_stride, blockIdx.x * d + c0, qsh);
}

// The decode step's norm and RoPE in one launch, token b = blockIdx.y of a batch at position
// pos[b]: blocks [0, nh) normalise and rotate its query heads in place (q + b · nh · d); block
// nh normalises (kv_norm) and rotates its KV row (kv + b · d) into its session's raw-window
// ring `raws[b]` (slot pos % window); blocks after it, when iq is not null, rotate its indexer
// query heads in place (iq + b · (gridDim.x - nh - 1) · id; no norm). The official numerics'
// roundings, by the bits of `rounding`: 1, the KV row takes the cache's FP8/BF16 round trip;
// 2, each indexer head its Hadamard and FP4 round trip (blocks of at least id threads, id
// floats of dynamic shared memory).
extern "C" __global__ void rope_qkv_step(float* q, int nh, int d, const float* kv, const u64* raws,
                                         const float* kv_norm, int window, float* iq, int id,
                                         float eps, const float* freqs, int n_pairs, const int* posv,
                                         int rounding) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    extern __shared__ float hx[];  // id floats with rounding bit 2
    const int blk = blockIdx.x, b = blockIdx.y;
    const long long pos = posv[b];
    if (blk < nh) {
        float* x = q + ((long long)b * nh + blk) * d;
        norm_rope_vec(x, x, nullptr, d, 1, eps, freqs, n_pairs, pos, shd);
    } else if (blk == nh) {
        float* raw = reinterpret_cast<float*>(raws[b]);
        float* row = raw + (pos % window) * d;
        norm_rope_vec(kv + (long long)b * d, row, kv_norm, d, 1, eps, freqs, n_pairs, pos, shd);
        // The official numerics store the row as the cache does (FP8, then BF16) here, in
        // the block that wrote it, rather than in a one-block launch before the attention.
        if (rounding & 1) {
            __syncthreads();
            kv_round_row(row, d, 2 * n_pairs);
        }
    } else if (iq) {
        const int iq_heads = gridDim.x - nh - 1;
        float* x = iq + ((long long)b * iq_heads + (blk - nh - 1)) * id;
        norm_rope_vec(x, x, nullptr, id, 0, eps, freqs, n_pairs, pos, shd);
        if (rounding & 2) {
            __syncthreads();
            index_round_row(x, id, hx);
        }
    }
}

// The clamped SwiGLU of one value: silu(min(g, c)) · clamp(u, -c, c).
__device__ __forceinline__ float swiglu_val(float g, float u, float clamp) {
    const float gv = fminf(g, clamp);
    const float uv = fminf(fmaxf(u, -clamp), clamp);
    return gv / (1.0f + expf(-gv)) * uv;
}

// Row r (blockIdx.y) of n values: h = swiglu(g, u), times the route weight wk[widx[r]]
// (wk[r] when widx is null) when wk is not null.
extern "C" __global__ void swiglu(const float* g, const float* u, float* h, int n, float clamp,
                                  const float* wk, const int* widx) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long row = blockIdx.y;
    g += row * n;
    u += row * n;
    h += row * n;
    if (wk) wk += widx ? widx[row] : row;
    float r = swiglu_val(g[i], u[i], clamp);
    if (wk) r *= *wk;
    h[i] = r;
}

// The decode step's SwiGLU of the routed and the shared expert together, for a batch of B =
// gridDim.z tokens (token t = blockIdx.z, pick r = blockIdx.y < used + 1). gu holds rows of n
// values, pick-major so that each expert launch writes one run: row k · B + t for k < used the
// routed gate rows, used + k their up rows, 2·used the shared expert's gate, 2·used + 1 its up.
// h gets the routed rows token-major (row t · used + r, scaled by the route weight
// wk[t · used + r]), then the shared expert's (row B · used + t). Where the down projections
// take quantized activations, each block also writes its 256 values of a row in their format
// (routed rows fr at qr + row · q_stride, the shared row fs at qs + t · q_stride; 0: none, then
// n is a multiple of 256): no quantization launches between it and the down projections.
extern "C" __global__ void swiglu_step(const float* gu, float* h, int n, float clamp, const float* wk, int used,
                                       u8* qr, int fr, u8* qs, int fs, long long q_stride) {
    DSV4_GRID_ENTRY();
    __shared__ Q8kShared qsh;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y, t = blockIdx.z, nb = gridDim.z;
    const bool routed = r < used;
    const long long row = routed ? (long long)t * used + r : (long long)nb * used + t;
    float v = 0.0f;
    if (i < n) {
        const float* g = gu + ((long long)(routed ? r : 2 * used) * nb + t) * n;
        const float* u = gu + ((long long)(routed ? used + r : 2 * used + 1) * nb + t) * n;
        v = swiglu_val(g[i], u[i], clamp);
        if (routed) v *= wk[t * used + r];
        h[row * n + i] = v;
    }
    const int f = routed ? fr : fs;
    if (f) quant_slice256(f, v, routed ? qr + row * q_stride : qs + (long long)t * q_stride, blockIdx.x * blockDim.x, qsh);
}

// y_t = Σ_p part p of token t, in order (routed experts in selection order, then the shared
// expert); part p of token t is at (p · chunk + t) · e, or, with `rows` given and p <
// n_routed, at row rows[t n_routed + p] of `routed` (e floats a row: a grouped expert
// launch's outputs, where the products left them).
__device__ __forceinline__ float sum_col(const float* parts, int n_parts, int e, int chunk, long long t, int i,
                                         const float* routed, const int* rows, int n_routed) {
    float acc = 0.0f;
    for (int p = 0; p < n_parts; ++p)
        acc += rows && p < n_routed ? routed[(long long)rows[t * n_routed + p] * e + i] : parts[(p * chunk + t) * e + i];
    return acc;
}

extern "C" __global__ void sum_parts(const float* parts, int n_parts, int e, int chunk, float* y,
                                     const float* routed, const int* rows, int n_routed) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    const long long t = blockIdx.y;
    y[t * e + i] = sum_col(parts, n_parts, e, chunk, t, i, routed, rows, n_routed);
}

// sum_parts then hc_post (token t = blockIdx.y, streams hc · e and mixing mix_stride floats
// apart), without the trip through memory in between.
extern "C" __global__ void sum_post(float* S, const float* parts, int n_parts, int e, int chunk,
                                    const float* mix, int hc, int mix_stride) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    const long long t = blockIdx.y;
    hc_post_col(S + t * hc * e, sum_col(parts, n_parts, e, chunk, t, i, nullptr, nullptr, 0), mix + t * mix_stride,
                hc, e, i);
}

// Row r (blockIdx.y) of dst = row idx[r] of src (rows of `width`): an expert's tokens.
extern "C" __global__ void gather_rows(const float* src, const int* idx, int width, float* dst) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= width) return;
    dst[(long long)blockIdx.y * width + i] = src[(long long)idx[blockIdx.y] * width + i];
}

// Row idx[r] of dst = row r (blockIdx.y) of src: an expert's outputs to their tokens' parts.
extern "C" __global__ void scatter_rows(const float* src, const int* idx, int width, float* dst) {
    DSV4_GRID_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= width) return;
    dst[(long long)idx[blockIdx.y] * width + i] = src[(long long)blockIdx.y * width + i];
}
