"""Datasets in their real on-disk formats, spike encodings, collation and augmentation.

Every loader returns time-first samples ``[T, ...]``; :func:`pad_collate` batches them to
``[T, B, ...]`` (left padding by default, as the SPSN code).
"""

from .augment import Compose, RandomChannelShift, RandomScale
from .cifar import CIFAR10, CIFAR100, read_cifar_batch, write_cifar_batch
from .collate import pad_collate
from .digits import SpikeTensorDataset, digits_datasets, load_digits_split
from .dvs import DVSCIFAR10, events_to_frames
from .encodings import latency_encode, rate_encode, ttfs_encode
from .idx import MNIST, FashionMNIST, MNISTLike, read_idx, write_idx
from .nmnist import NMNIST, frame_events, read_nmnist_events, write_nmnist_events
from .events import EncodedSpikes, EventBatch
from .registry import DATASETS, DatasetSpec, build_datasets, dataset_spec, supports_events
from .shd import SHD, SSC, SpikeHDF5, bin_spikes, write_spike_hdf5

__all__ = [
    "CIFAR10", "CIFAR100", "Compose", "DATASETS", "DVSCIFAR10", "DatasetSpec", "EncodedSpikes", "EventBatch", "build_datasets", "dataset_spec", "FashionMNIST", "MNIST", "MNISTLike", "NMNIST",
    "RandomChannelShift", "RandomScale", "SHD", "SSC", "SpikeHDF5", "SpikeTensorDataset", "bin_spikes",
    "digits_datasets", "events_to_frames", "frame_events", "latency_encode", "load_digits_split",
    "pad_collate", "rate_encode", "read_cifar_batch", "read_idx", "read_nmnist_events", "supports_events", "ttfs_encode",
    "write_cifar_batch", "write_idx", "write_nmnist_events", "write_spike_hdf5",
]
