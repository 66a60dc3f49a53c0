#!/bin/bash
# Issue 13, item 7: bench lif and bench speed-vs-t before (8b10726) and after (this tree), same machine, one run each, interleaved.
export OMP_WAIT_POLICY=PASSIVE
S=/work/main/.venv/bin/spikescan
pkill -STOP -f "spikescan train"
for tree in old new; do
  if [ $tree = old ]; then export PYTHONPATH=/work/runs/src-8b10726/src; else export PYTHONPATH=/work/main/src; fi
  cd /tmp
  $S bench lif --impls fused reference --neurons 1000000 --t-forward 8 32 128 --hidden 256 1024 --t-train 100 1000 \
     --no-memory --repeats 5 --threads 2 --out /tmp/ab-$tree/lif > /tmp/ab-$tree-lif.log 2>&1
  $S bench speed-vs-t --t-values 100 1000 10000 --backends fused chunked --parts neuron layer --repeats 3 --threads 2 \
     --out /tmp/ab-$tree/speed > /tmp/ab-$tree-speed.log 2>&1
done
pkill -CONT -f "spikescan train"
echo done
