#!/usr/bin/env bash
# On the GPU machine (CUDA toolkit with nvcc, cmake, gcc; no network): builds the two peer
# engines from the sources prepare-peers.sh gathered, timing each build.
#
#   bench/gpu/build-peers.sh [--src DIR] [--build DIR] [--layers N] [--jobs N] [--only ds4|llama]
#
#   --src DIR     ds4.tar.gz, llama.cpp.tar.gz and optional *.patch files (default target/gpu-peers)
#   --build DIR   where the builds go (default /tmp/peers-build). Keep it outside a carried
#                 folder: a later call's carry replaces that folder on the machine.
#   --layers N    the layer count ds4 is compiled for (default 43). ds4 fixes the layer count
#                 at compile time (DS4_N_LAYER) and refuses any other file; for an N-layer
#                 synthetic file it is rebuilt with that constant changed, into ds4-N/.
#   --jobs N      parallel compile jobs (default: all cores)
#   --only X      build one of the two
#
# Results: BUILD/ds4-N/ds4-bench and BUILD/llama/build/bin/llama-bench. A build whose
# binary exists is skipped (delete it to rebuild). Patches: SRC/ds4.patch and
# SRC/llama.cpp.patch are applied with `patch -p1` when present (none is needed today).
# Both builds run at the same time (ds4 compiles 3 files; llama.cpp ~150 CUDA files), so the
# wall time is about llama.cpp's.
set -u
cd "$(dirname "$0")/../.."
src=target/gpu-peers
build=/tmp/peers-build
layers=43
jobs=$(nproc)
only=
while [ $# -gt 0 ]; do
    case $1 in
        --src) src=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --layers) layers=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "build-peers.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $layers in ''|*[!0-9]*) echo "build-peers.sh: --layers must be a number" >&2; exit 2 ;; esac
src=$(cd "$src" && pwd) || exit 2
mkdir -p "$build" && build=$(cd "$build" && pwd) || exit 2

nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
if [ -z "$nvcc" ]; then
    echo "build-peers.sh: nvcc not found" >&2
    exit 1
fi
cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
echo "nvcc: $nvcc ($("$nvcc" --version | tail -1)); CUDA_HOME=$cuda_home; $(nproc) cores, $jobs jobs"

build_ds4() {
    local dir="$build/ds4-$layers"
    if [ -x "$dir/ds4-bench" ]; then echo "ds4: $dir/ds4-bench exists, skipped"; return 0; fi
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    tar xzf "$src/ds4.tar.gz" -C "$dir" --strip-components=1 || return 1
    if [ -f "$src/ds4.patch" ]; then (cd "$dir" && patch -p1 <"$src/ds4.patch") || return 1; fi
    if [ "$layers" != 43 ]; then
        # The one constant behind every per-layer array and the block_count check; the
        # published model has 43 layers, a synthetic prefix of it has fewer.
        sed -i "s/^\(\s*DS4_N_LAYER\s*=\s*\)43,/\1$layers,/" "$dir/ds4.c" || return 1
        grep -q "DS4_N_LAYER *= *$layers," "$dir/ds4.c" || { echo "ds4: layer patch did not apply"; return 1; }
        echo "ds4: DS4_N_LAYER patched to $layers"
    fi
    # `make cuda CUDA_ARCH=sm_90` builds five programs with these flags; only ds4-bench is used.
    local t0=$SECONDS
    make -C "$dir" -j3 ds4-bench CUDA_ARCH=sm_90 CUDA_HOME="$cuda_home" NVCC="$nvcc" >"$dir/build.log" 2>&1
    local rc=$?
    tail -n $((rc ? 40 : 3)) "$dir/build.log"
    echo "ds4: build rc=$rc in $((SECONDS - t0)) s"
    return $rc
}

build_llama() {
    local dir="$build/llama"
    if [ -x "$dir/build/bin/llama-bench" ]; then echo "llama.cpp: $dir/build/bin/llama-bench exists, skipped"; return 0; fi
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    tar xzf "$src/llama.cpp.tar.gz" -C "$dir" --strip-components=1 || return 1
    if [ -f "$src/llama.cpp.patch" ]; then (cd "$dir" && patch -p1 <"$src/llama.cpp.patch") || return 1; fi
    local gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    local t0=$SECONDS
    # Only Hopper machine code (90-real: no PTX, no other architectures); only the targets
    # llama-bench links (ggml, ggml-cuda, llama, common). FlashAttention vector kernels keep
    # llama.cpp's default KV-type set (GGML_CUDA_FA_ALL_QUANTS stays off); NCCL is for
    # several GPUs.
    cmake -S "$dir" -B "$dir/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DCMAKE_CUDA_COMPILER="$nvcc" \
        -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF >"$dir/configure.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then tail -30 "$dir/configure.log"; echo "llama.cpp: configure failed"; return $rc; fi
    cmake --build "$dir/build" --target llama-bench -j "$jobs" >"$dir/build.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then grep -m 20 -i -B2 -A6 'error' "$dir/build.log"; fi
    tail -n 3 "$dir/build.log"
    echo "llama.cpp: build rc=$rc in $((SECONDS - t0)) s"
    return $rc
}

status=0
pids=()
if [ "$only" != llama ]; then build_ds4 & pids+=($!); fi
if [ "$only" != ds4 ]; then build_llama & pids+=($!); fi
for p in "${pids[@]}"; do wait "$p" || status=1; done
ls -l "$build/ds4-$layers/ds4-bench" "$build/llama/build/bin/llama-bench" 2>&1
exit $status
