"""Spike-rate regularisation."""

from __future__ import annotations

from typing import Sequence

import torch


def spike_rate_regularizer(spikes: Sequence[torch.Tensor], theta_reg: float) -> torch.Tensor:
    """SPSN eq. 21: ``relu( sum_n mean_t S_n[t] - theta_reg * N )^2``.

    ``spikes`` are the hidden layers' spike trains ``[T, B, ...]`` (readout excluded); ``N`` is
    the number of hidden neurons over all layers; ``mean_t S_n[t]`` is neuron n's firing
    probability per step, averaged over the batch too.  ``theta_reg`` is therefore a per-step
    probability (0.4 for SPSN-SB, 0.1 for SPSN-GS in the paper): the penalty is zero while the
    network's mean firing per step stays below ``theta_reg``.
    """
    if not spikes:
        raise ValueError("spikes must hold at least one hidden layer's spike train")
    if not 0.0 <= theta_reg <= 1.0:
        raise ValueError(f"theta_reg must be a per-step probability in [0, 1], got {theta_reg}")
    total_rate = 0.0
    n = 0
    for s in spikes:
        per_neuron = s.reshape(s.shape[0], s.shape[1], -1).mean(dim=(0, 1))
        total_rate = total_rate + per_neuron.sum()
        n += per_neuron.numel()
    return torch.relu(total_rate - theta_reg * n) ** 2
