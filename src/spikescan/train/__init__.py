"""Training: loop, readout losses, spike-rate regulariser, metrics, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import readout_cross_entropy, reduce_time
from .loop import TrainConfig, train
from .models import FeedForwardSNN, make_neuron
from .recorder import record_spikes
from .regularizers import spike_rate_regularizer

__all__ = [
    "FeedForwardSNN", "TrainConfig", "load_checkpoint", "make_neuron", "readout_cross_entropy",
    "record_spikes", "reduce_time", "save_checkpoint", "spike_rate_regularizer", "train",
]
