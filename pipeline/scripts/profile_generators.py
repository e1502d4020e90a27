"""Where a batch-1 generator pass spends its time on a GPU: StyleNAT (fused NA) and StyleSwin
(window attention, PyTorch's SDPA choice), FFHQ-256 paper widths, random weights, TF32 and cuDNN
benchmark on as in `bench stylenat`'s throughput protocol, inference mode.

Per model it prints: the CPU time to issue one pass (synchronised before, not after: the queue
is empty, so this is the Python + launch time; median of 20), the wall time per pass over 50
back-to-back passes, the GPU busy time per pass (sum of kernel times in a torch.profiler trace
of 5 passes) and kernels per pass; and writes the profiler's tables (by self CPU time and by
self CUDA time) to $OUT/profile_<model>.txt. A pass whose issue time exceeds its GPU busy time
is launch-bound: the GPU waits for Python.

    OUT=<dir> PYTHONPATH=src python pipeline/scripts/profile_generators.py
"""

import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat.generator import build_generator

out = os.environ.get("OUT", "/tmp")
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True
p = load_params(overrides={"preset": "paper", "weights": "random"})
for name, backend in [("stylenat", "fused"), ("styleswin", "torch")]:
    m = resolve(p, "stylenat", name, check=False)["model"]
    g = build_generator({**m, "backend": backend}).to(dev).eval()
    z = torch.randn(1, m["style_dim"], device=dev)
    with torch.inference_mode():
        for _ in range(20):
            g(z)
        torch.cuda.synchronize()
        cpu = []
        for _ in range(20):
            torch.cuda.synchronize()
            t = time.perf_counter()
            g(z)
            cpu.append(time.perf_counter() - t)
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t = time.perf_counter()
        a.record()
        for _ in range(50):
            g(z)
        b.record()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / 50
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                g(z)
            torch.cuda.synchronize()
    ka = prof.key_averages()
    gpu_total = sum(e.self_device_time_total for e in ka) / 5 / 1e3
    kernels = sum(e.count for e in ka if e.device_type.name == "CUDA") / 5
    print(f"{name}: issue {sorted(cpu)[10] * 1e3:.2f} ms/pass (CPU), wall {wall * 1e3:.2f} "
          f"ms/pass, GPU busy {gpu_total:.2f} ms/pass, kernels/pass {kernels:.0f}", flush=True)
    with open(f"{out}/profile_{name}.txt", "w") as f:
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=25))
        f.write(ka.table(sort_by="self_device_time_total", row_limit=15))
