#!/bin/bash
export OMP_WAIT_POLICY=PASSIVE
pkill -STOP -f "spikescan train"; pkill -STOP -f "python"
sleep 1
for r in 1 2 3 4; do
  PYTHONPATH=/work/runs/src-8b10726/src /work/main/.venv/bin/python /tmp/ab_micro.py old
  PYTHONPATH=/work/main/src /work/main/.venv/bin/python /tmp/ab_micro.py new
done
pkill -CONT -f "python"; pkill -CONT -f "spikescan train"
