"""Pure tensor functions with autograd (no nn.Module): one file per algorithm, each with its reference."""
