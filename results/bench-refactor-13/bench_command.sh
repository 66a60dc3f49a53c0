#!/bin/bash
# Issue 13 item 7: bench lif and bench speed-vs-t before (8b10726) and after (HEAD), same machine, one run each,
# everything else paused (SIGSTOP) so the two runs see the same idle 2 cores; then bench compile (after only).
export OMP_WAIT_POLICY=PASSIVE
S=/work/main/.venv/bin/spikescan
pkill -STOP -f "spikescan train"; pkill -STOP -f python; sleep 1
for tree in old new; do
  if [ $tree = old ]; then export PYTHONPATH=/work/runs/src-8b10726/src; else export PYTHONPATH=/work/main/src; fi
  cd /tmp
  $S bench lif --impls fused reference --neurons 1000000 --t-forward 8 32 128 --hidden 256 1024 --t-train 100 1000 \
     --no-memory --repeats 7 --threads 2 --out /tmp/ab3-$tree/lif > /tmp/ab3-$tree-lif.log 2>&1
  $S bench speed-vs-t --t-values 100 1000 10000 --backends fused chunked --parts neuron layer --repeats 3 --threads 2 \
     --out /tmp/ab3-$tree/speed > /tmp/ab3-$tree-speed.log 2>&1
done
export PYTHONPATH=/work/main/src

pkill -CONT -f python; pkill -CONT -f "spikescan train"
uptime
echo done
