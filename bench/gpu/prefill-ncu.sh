#!/usr/bin/env bash
# Where a prompt's kernels are bound: ncu on the prefill launches whose names match REGEX
# (time, issue rate, stall reasons per issued instruction, occupancy, DRAM and L2 traffic),
# COUNT of them after skipping SKIP, for one prompt of P tokens.
#   bench/gpu/prefill-ncu.sh BUNDLE MODEL LAYERS P REGEX OUT [COUNT [SKIP]]
set -u
B=$1; f=$2; L=$3; P=$4; RE=$5; o=$6; C=${7:-40}; S=${8:-0}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
export XDG_CACHE_HOME=/tmp/dsv4-cache
M=gpu__time_duration.sum,sm__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active
M=$M,sm__warps_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
M=$M,lts__t_bytes.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem
M=$M,sm__pipe_tensor_op_imma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active
M=$M,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active
M=$M,smsp__inst_executed_op_shared_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,sm__cycles_active.avg
M=$M,"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
"$NCU" --clock-control none --kernel-name "regex:$RE" --launch-skip "$S" --launch-count "$C" \
  --metrics "$M" --csv --log-file "$o/ncu-prefill.csv" "$B/decode_bench" --model "$f" --layers "$L" --numerics official \
  --prompt "$P" --tokens 2 > "$o/ncu-prefill.out" 2> "$o/ncu-prefill.err"
echo "ncu rc $?"; tail -2 "$o/ncu-prefill.err"
python3 "$(dirname "$0")/ncu_summary.py" "$o/ncu-prefill.csv" --first 2
