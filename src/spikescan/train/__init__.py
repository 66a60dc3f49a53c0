"""Training: loop, readout losses, spike-rate regulariser, metrics, checkpoints, presets, eval, compare."""

from .checkpoint import load_checkpoint, save_checkpoint
from .compare import compare
from .evaluate import evaluate
from .metrics import WorkloadMeter, summarise as summarise_metrics
from .losses import readout_cross_entropy, readout_logits, reduce_time
from .loop import TrainConfig, train
from .models import NEURONS, FeedForwardSNN, make_neuron
from .presets import PRESETS, preset_config
from .recorder import record_spikes
from .regularizers import spike_rate_regularizer

__all__ = [
    "FeedForwardSNN", "NEURONS", "PRESETS", "TrainConfig", "WorkloadMeter", "compare", "evaluate", "load_checkpoint", "make_neuron",
    "preset_config", "readout_cross_entropy", "readout_logits", "record_spikes", "reduce_time", "save_checkpoint",
    "spike_rate_regularizer", "summarise_metrics", "train",
]
