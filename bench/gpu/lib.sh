# Sourced by the bench/gpu scripts: the output folder ($o), the GPU test switches, the card's
# name in $o/card.txt, and helpers for what they share.
o=${OUT:-/tmp/out}
mkdir -p "$o"
export DSV4_REQUIRE_GPU=1 DSV4_REQUIRE_NVRTC=1 XDG_CACHE_HOME=/tmp/dsv4-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$o/card.txt" 2>&1

# synth_bg BUNDLE LAYERS FILE: the synthetic Flash q2 of LAYERS layers into FILE unless it is
# there, in the background (`wait` for it).
synth_bg() {
    ( [ -s "$3" ] || "$1/dsv4" synth --preset flash --layers "$2" --quant q2 --out "$3" > "$o/synth.log" 2>&1 ) &
}

# big_tmpfs: a 92 GB tmpfs at /mnt/big, for the 43-layer file (86.7 GB).
big_tmpfs() {
    mkdir -p /mnt/big
    mountpoint -q /mnt/big || mount -t tmpfs -o size=92G tmpfs /mnt/big
}

# gpu_tests BUNDLE NAME..: BUNDLE/test_NAME for each name, logs appended to $o/tests.log, then
# the summary lines.
gpu_tests() {
    local b=$1
    shift
    for t in "$@"; do
        (cd "$b" && ./test_$t --test-threads 2 --nocapture) >> "$o/tests.log" 2>&1
        echo "test_$t exit $?"
    done
}

tests_summary() {
    grep -shE "test result|FAIL|panicked" "$o/tests.log" | head -20
}

# model_and_tests BUNDLE LAYERS TEST..: the synthetic Flash q2 of LAYERS layers into $f (the
# 43-layer file in the tmpfs, others in /dev/shm), written in the background while the GPU
# tests named run; then how long the file took and the tests' summary.
model_and_tests() {
    local b=$1 l=$2 t0=$SECONDS
    shift 2
    if [ "$l" = 43 ]; then
        big_tmpfs
        f=/mnt/big/flash-q2-43L.gguf
    else
        f=/dev/shm/flash-q2-${l}L.gguf
    fi
    synth_bg "$b" "$l" "$f"
    gpu_tests "$b" "$@"
    wait
    echo "synth done after $((SECONDS - t0)) s"
    tests_summary
}
