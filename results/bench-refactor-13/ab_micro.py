import sys, time, json, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(2)
from spikescan.ops.lif import lif
try:
    from spikescan.ops.spsn import fused_spsn
except ImportError:
    from spikescan.ops.fused import fused_spsn
try:
    from spikescan.ops import leaky_integrate
except ImportError:
    from spikescan.ops.scan import leaky_integrate
g = torch.Generator().manual_seed(0)
xa = torch.randn(128, 1_000_000, generator=g) * 0.5 + 0.2
xb = (torch.randn(1000, 32, 1024, generator=g) * 0.5 + 0.2).requires_grad_()
xc = (torch.randn(100, 32, 256, generator=g) * 0.5 + 0.2).requires_grad_()
xd = (torch.randn(1000, 32, 128, generator=g)).requires_grad_()
cases = {
    "lif fused forward [128, 1e6]": lambda: lif(xa, 0.2, 0.3, reset="zero", backend="fused"),
    "lif fused train [1000, 32, 1024]": lambda: lif(xb, 0.9, 0.5, backend="fused").sum().backward(),
    "lif sequential train [100, 32, 256]": lambda: lif(xc, 0.9, 0.5, backend="sequential").sum().backward(),
    "spsn fused train [1000, 32, 128]": lambda: fused_spsn(xd, 0.9, 0.95, seed=1).sum().backward(),
    "leaky fused train [1000, 32, 128]": lambda: leaky_integrate(xd, 0.9, backend="fused").square().sum().backward(),
}
out = {}
for name, fn in cases.items():
    for _ in range(2):
        fn()
    ts = []
    for _ in range(7):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    out[name] = min(ts)
print(json.dumps({"tree": sys.argv[1], **out}))
