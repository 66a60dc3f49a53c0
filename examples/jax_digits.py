"""Train an SPSN network on the embedded 8x8 digits with spikescan's JAX/Flax modules.

    pip install -e ".[jax]"
    python examples/jax_digits.py                # ~97 % test accuracy, ~30 s on 2 CPU cores
    python examples/jax_digits.py --neuron lif   # the exact LIF instead (spsn-gs, plif too)

The same run is ``spikescan train --framework jax``.  The data are the torch main job's (same
split, same rate-coded spikes), the network its ``[Linear -> SPSN] x 3 -> Linear -> LI`` with
the mean-over-time cross-entropy; the loop itself is :func:`spikescan.jax.train.train`: one
``nnx.jit``-compiled step (forward, ``nnx.value_and_grad``, Adam) per batch.  The trained
network is written as ``network.nir`` and loads in the torch side with
``spikescan.export.read``.
"""

import argparse

from spikescan.jax.train import NEURONS, JaxTrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neuron", choices=NEURONS, default="spsn-sb")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/jax-digits")
    a = p.parse_args()
    result = train(JaxTrainConfig(neuron=a.neuron, epochs=a.epochs, seed=a.seed, out_dir=a.out, nir=True))
    print(f"test accuracy {result['test_acc']:.2%} ({result['wall_s']:.0f} s); run folder {a.out}")


if __name__ == "__main__":
    main()
