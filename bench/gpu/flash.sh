#!/usr/bin/env bash
# On the GPU machine: dsv4, antirez's ds4 and llama.cpp on the same synthetic N-layer q2 Flash
# file, same card, one after the other (issue #7).
#
#   bench/gpu/flash.sh LAYERS [options]
#
#   --bundle DIR      dsv4 and copy_bench (scripts/cuda-gpu-bundle's output; default target/gpu-bundle)
#   --peers DIR       build-peers.sh's --build folder (default /tmp/peers-build); ds4 must have
#                     been built there with --layers LAYERS
#   --text FILE       benchmark text (default target/gpu-peers/promessi_sposi.txt)
#   --model-dir DIR   where the GGUF is written; default /mnt/big, a tmpfs mounted here when
#                     it is not one already (the 43-layer file, 86.7 GB, does not fit a 64 GB
#                     disk; RAM holds it). An existing complete file is reused.
#   --ctx A,B,..      context frontiers (default 2048,8192); they must be evenly spaced from
#                     the first, because ds4-bench walks start, start+step, .., max
#   --gen N           decode tokens timed per frontier, every engine (default 64)
#   --engines LIST    any of dsv4,ds4,llama (default all three, in that order); `none` only
#                     records the machine and writes the model (to overlap with build-peers.sh)
#   --limit S         seconds each engine may take, loading included (default 270). The
#                     device tool stops a whole call at 600 s: for 43 layers split the work
#                     over calls on the warm machine (see bench/README.md, "Peer engines").
#   --out DIR         logs and CSVs (default $OUT, else ./flash-out); flash.log is appended to
#                     and each engine's CSV replaced when that engine runs, so calls that
#                     run different engines can share one folder and one summary
#   --dsv4-args "..." extra arguments for `dsv4 bench` (e.g. "--chunk 1024")
#   --llama-args ".." extra arguments for `llama-bench` (e.g. "-r 2": fewer repetitions)
#
# Output files (the device tool brings back at most 8): flash.log (machine, card, driver,
# copy bandwidth, every engine's console output and exit status), dsv4.csv, ds4.csv,
# llama.csv, summary.txt (one table, per-layer figures). An engine that fails or runs out of
# time is logged and the next one still runs; the exit status is 1 if any failed.
#
# What each engine measures at a frontier F (prefill over the interval since the previous
# frontier, decode of --gen greedy tokens after F):
#   dsv4 bench --frontiers F1,F2..   same definition as ds4-bench below
#   ds4-bench --ctx-start/--ctx-max/--step-incr
#   llama-bench -p FIRST -n GEN -d 0,F2,..   (prefill of FIRST tokens on top of depth d, decode
#                                    at depth d; depth 0 stands for the first frontier)
set -u
cd "$(dirname "$0")/../.."
repo=$PWD

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
layers=$1; shift
case $layers in ''|*[!0-9]*) usage ;; esac
bundle=target/gpu-bundle
peers=/tmp/peers-build
text=target/gpu-peers/promessi_sposi.txt
model_dir=/mnt/big
ctx=2048,8192
gen=64
engines=dsv4,ds4,llama
limit=270
out=${OUT:-$repo/flash-out}
dsv4_args=
llama_args=
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
        --bundle) bundle=$2 ;;
        --peers) peers=$2 ;;
        --text) text=$2 ;;
        --model-dir) model_dir=$2 ;;
        --ctx) ctx=$2 ;;
        --gen) gen=$2 ;;
        --engines) engines=$2 ;;
        --limit) limit=$2 ;;
        --out) out=$2 ;;
        --dsv4-args) dsv4_args=$2 ;;
        --llama-args) llama_args=$2 ;;
        *) usage ;;
    esac
    shift 2
done

IFS=, read -r -a fr <<<"$ctx"
first=${fr[0]}
last=${fr[${#fr[@]} - 1]}
step=$(( ${#fr[@]} > 1 ? fr[1] - fr[0] : 1 ))
for i in "${!fr[@]}"; do
    if [ "${fr[$i]}" -ne $((first + i * step)) ]; then
        echo "flash.sh: --ctx must be evenly spaced (ds4-bench steps linearly): $ctx" >&2
        exit 2
    fi
done
depths=0
for f in "${fr[@]:1}"; do depths="$depths,$f"; done

mkdir -p "$out" || exit 1
# Appended to, not truncated: several calls (one engine each, say) may share one --out.
log="$out/flash.log"
say() { echo "$*" | tee -a "$log"; }
status=0

say "== flash.sh $layers layers, frontiers $ctx, $gen decode tokens, engines $engines, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
{
    echo "host: $(hostname), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
    nvcc --version 2>/dev/null | tail -1
} 2>&1 | tee -a "$log"

if [ -x "$bundle/copy_bench" ]; then
    say "== device-to-device copy (read + write bytes)"
    timeout 120 "$bundle/copy_bench" --mib 256,2048 --reps 20 2>&1 | tee -a "$log"
else
    say "copy_bench missing in $bundle: no copy bandwidth"
fi

# The model: a tmpfs unless --model-dir names something else. `dsv4 synth` writes to a
# temporary name, renamed when complete, so a file left by a killed run is never reused.
model="$model_dir/flash-q2-${layers}L.gguf"
if [ ! -f "$model" ]; then
    mkdir -p "$model_dir"
    if [ "$model_dir" = /mnt/big ] && ! mountpoint -q /mnt/big; then
        mount -t tmpfs -o size=92G tmpfs /mnt/big 2>&1 | tee -a "$log"
    fi
    say "== dsv4 synth --preset flash --layers $layers --quant q2 -> $model"
    t0=$SECONDS
    if "$bundle/dsv4" synth --preset flash --layers "$layers" --quant q2 --out "$model.part" 2>&1 | tee -a "$log" \
        && mv "$model.part" "$model"; then
        say "synth: $((SECONDS - t0)) s"
    else
        rm -f "$model.part"
        say "synth FAILED: no engine can run"
        exit 1
    fi
fi
ls -l "$model" | tee -a "$log"

gpu_state() {
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv,noheader 2>&1
}

# run NAME CSV CMD...: one engine under the time limit. Its stdout goes to CSV (or, for "-",
# to the log), its stderr to the log as it comes; the CSV is appended to the log afterwards.
run() {
    local name=$1 csv=$2 rc
    shift 2
    say "== $name: $* (limit ${limit} s; GPU before: $(gpu_state))"
    local t0=$SECONDS
    if [ "$csv" = - ]; then
        timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
    else
        timeout --kill-after=15 "$limit" "$@" >"$csv" 2> >(tee -a "$log" >&2)
        rc=$?
        sleep 1 # let the stderr tee drain before the CSV follows it in the log
        tee -a "$log" <"$csv"
    fi
    case $rc in 124 | 137) say "$name: TIMED OUT after $limit s" ;; esac
    say "$name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

for engine in ${engines//,/ }; do
    [ "$engine" = none ] || rm -f "$out/$engine.csv"
    case $engine in
        dsv4)
            # The NVRTC kernel cache goes to /tmp, not the carried tree.
            # shellcheck disable=SC2086
            XDG_CACHE_HOME=/tmp/dsv4-cache run dsv4 "$out/dsv4.csv" "$bundle/dsv4" bench -m "$model" \
                --backend cuda --text "$text" --frontiers "$ctx" --decode "$gen" $dsv4_args
            ;;
        ds4)
            bin="$peers/ds4-$layers/ds4-bench"
            if [ ! -x "$bin" ]; then say "ds4: $bin missing (build-peers.sh --layers $layers)"; status=1; continue; fi
            # Without DS4_CUDA_COPY_MODEL ds4 reads weights over PCIe from a host mapping.
            DS4_CUDA_COPY_MODEL=1 run ds4 - "$bin" -m "$model" --cuda --prompt-file "$text" \
                --ctx-start "$first" --ctx-max "$last" --step-incr "$step" --gen-tokens "$gen" \
                --csv "$out/ds4.csv"
            [ -f "$out/ds4.csv" ] && tee -a "$log" <"$out/ds4.csv"
            ;;
        llama)
            bin="$peers/llama/build/bin/llama-bench"
            if [ ! -x "$bin" ]; then say "llama: $bin missing (build-peers.sh)"; status=1; continue; fi
            # CSV on stdout; the markdown table goes to stderr with the log.
            # shellcheck disable=SC2086
            run llama "$out/llama.csv" "$bin" -m "$model" -p "$first" -n "$gen" -d "$depths" -ngl 99 -o csv -oe md $llama_args
            ;;
        none) ;;
        *) say "unknown engine $engine"; status=1 ;;
    esac
done

[ "$engines" = none ] || python3 "$repo/bench/gpu/summarize.py" --layers "$layers" --dir "$out" 2>&1 | tee "$out/summary.txt" | tee -a "$log"
say "== done, status $status, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit $status
