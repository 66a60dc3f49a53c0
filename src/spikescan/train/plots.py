"""Training-curve figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(history: list[dict], path, title: str = "") -> None:
    """Loss, accuracy and spike rate per epoch, train and test, into one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split, style in (("train", "-"), ("test", "--")):
        axes[0].plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        axes[1].plot(epochs, [100 * h[f"{split}_acc"] for h in history], style, label=split)
        axes[2].plot(epochs, [h[f"{split}_spike_rate"] for h in history], style, label=split)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("accuracy (%)")
    axes[2].set_ylabel("spikes / neuron / step")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_spike_raster(x, layers, path, dt_ms: float = 1.0, title: str = "") -> None:
    """Raster of one sample: the input ``x [T, n_in]`` and each hidden layer's spikes ``[T, n]``.

    One panel per layer (input first), time in ms on the x axis, neuron index on the y axis;
    graded inputs (counts, normalised pixels) are drawn at every non-zero entry.  A network
    without spiking layers (the ReLU baseline) gets the input panel only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input", x)] + [(f"hidden layer {k + 1}", s) for k, s in enumerate(layers)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.9 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], panels):
        s = s.detach().cpu().reshape(s.shape[0], -1)
        t, n = (s != 0).nonzero(as_tuple=True)
        ax.scatter(t.numpy() * dt_ms, n.numpy(), s=1.5, marker="|", color="k", linewidths=0.6)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_xlim(-0.5 * dt_ms, s.shape[0] * dt_ms)
        rate = float((s != 0).float().mean())
        ax.set_ylabel("neuron")
        ax.set_title(f"{name}: {int((s != 0).sum())} spikes, {rate:.3f} per neuron per step", fontsize=9)
    axes[-1, 0].set_xlabel("time (ms)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
