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
