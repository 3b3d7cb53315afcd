// Small utility kernels.

#include "dsv4_common.cuh"

// Keeps one thread busy for `cycles` SM clocks. Benchmarks launch it first so that the
// kernels queued behind it start back to back, without host launch latency in the timing.
extern "C" __global__ void dsv4_spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}
