#!/usr/bin/env bash
# Where chosen kernels of decode_bench's batched steps are bound: ncu on the graph's nodes whose
# names match REGEX (issue rate, stall reasons per issued instruction, occupancy, registers,
# local-memory traffic, DRAM bytes), for each batch size listed.
#   bench/gpu/ncu-kernels.sh BUNDLE MODEL LAYERS BATCHES REGEX OUT [COUNT [DECODE_BENCH_ARGS..]]
# COUNT kernels are profiled per batch size, after skipping the first 2 x COUNT matches.
set -u
B=$1; f=$2; L=$3; NS=$4; RE=$5; o=$6; C=${7:-4}; X=("${@:8}")
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
export XDG_CACHE_HOME=/tmp/dsv4-cache
M=gpu__time_duration.sum,sm__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active
M=$M,sm__warps_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
M=$M,launch__registers_per_thread,launch__grid_size,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem
M=$M,l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum,l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum
M=$M,smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed_op_global_ld.sum,sm__cycles_elapsed.avg,sm__cycles_active.avg
M=$M,"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
for n in ${NS//,/ }; do
    "$NCU" --graph-profiling node --clock-control none --kernel-name "regex:$RE" --launch-skip $((2 * C)) --launch-count "$C" \
      --metrics "$M" --csv --log-file "$o/ncu-k$n.csv" "$B/decode_bench" --model "$f" --layers "$L" --numerics official \
      --prompt 32 --tokens 4 --batch "$n" "${X[@]}" > "$o/ncu-k$n.out" 2> "$o/ncu-k$n.err"
    echo "ncu batch $n rc $?"; tail -2 "$o/ncu-k$n.err"
    python3 "$(dirname "$0")/ncu_summary.py" "$o/ncu-k$n.csv"
done
