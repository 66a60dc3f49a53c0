import torch

# The suite's tensors are small: one intra-op thread is faster and keeps timings of a 2-core CI
# machine stable.  (Kernels with their own threading, e.g. numba prange, are unaffected.)
torch.set_num_threads(1)
