#!/bin/bash
# Two 4-GPU fine-tuning jobs of Qwen3-14B on one 8-GPU node, started side by side.
cd "$(dirname "$0")"
mkdir -p logs

CUDA_VISIBLE_DEVICES=0,1,2,3 nohup llamafactory-cli train configs/qwen3_14b_a.yaml > logs/job_a.log 2>&1 &
CUDA_VISIBLE_DEVICES=4,5,6,7 nohup llamafactory-cli train configs/qwen3_14b_b.yaml > logs/job_b.log 2>&1 &
wait
