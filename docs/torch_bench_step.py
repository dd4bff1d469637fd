"""PyTorch's time for the training step `tricks-worker bench` times, as a measuring stick
(never imported by the project): CIFAR ResNet-20 (docs/torch_resnet.py) at batch 32 on
random 3×32×32 inputs, cross-entropy with label smoothing 0.1, SGD momentum 0.9, weight decay
5e-4; `--threads` intra-op threads (default 1), NCHW or channels_last.

    .venv-torch/bin/python docs/torch_bench_step.py [--steps 30] [--threads 1] [--channels-last]

Prints one JSON line: {"layout", "threads", "median_ms", "min_ms", "p90_ms", "steps", "isa"}.
To hold PyTorch to AVX2 on an AVX-512 machine: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2.
`launch/compare-torch.sh` interleaves it with `tricks-worker bench` in rounds.
"""
import argparse, json, os, statistics, sys, time
import torch, torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_resnet import ResNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ResNet(depth=20, in_channels=3, num_classes=10)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"layout": "channels_last" if a.channels_last else "nchw", "threads": a.threads,
                      "median_ms": round(1e3 * statistics.median(times), 2), "min_ms": round(1e3 * times[0], 2),
                      "p90_ms": round(1e3 * times[int(0.9 * (len(times) - 1))], 2), "steps": a.steps,
                      "isa": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
