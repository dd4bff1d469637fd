"""PyTorch recipe of Tricks' main job, as a measuring stick (never imported by the project).

Does what `tricks-worker train --model resnet20 --epochs 1` does on Fashion-MNIST (README,
"Expected result"): the same CIFAR ResNet-20 (from docs/torch_resnet.py, 1 input channel),
inputs x/255 normalized by the training set's mean and std, global batch 64 (last partial
batch of each epoch dropped: floor(60000/64) = 937 steps/epoch), reshuffled every epoch, no
augmentation, plain cross-entropy, SGD lr 0.1 momentum 0.9 weight decay 5e-4 on all
parameters, cosine schedule lr_t = 0.5*lr*(1+cos(pi*t/T)) with T = epochs*937 (T does not
shrink with --max-steps), then evaluation on the 10,000 test images in eval mode.

    .venv-torch/bin/python docs/torch_fashion_mnist.py [--epochs 1] [--threads 2] \
        [--no-channels-last] [--seed 0] [--max-steps K] [--data DIR]

Setup (CPU wheel; plain `pip install torch` would pull CUDA):
    python3 -m venv .venv-torch && .venv-torch/bin/pip install "torch==2.13.0+cpu" numpy safetensors

To hold PyTorch to AVX2 (e.g. to compare with an AVX2-only build on an AVX-512 machine):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv-torch/bin/python docs/torch_fashion_mnist.py

Progress (step, epoch, loss, lr, img/s, ETA) goes to stderr every 200 steps; the last line,
on stdout, is one JSON object:
    {"steps", "train_loss", "test_accuracy", "seconds", "images_per_second"}
  train_loss         mean training loss over the last logging window (as tricks-worker reports it)
  seconds            wall time of training + the final test evaluation; reading the IDX files
                     from disk, normalizing them and building the model are excluded
  images_per_second  training images / time spent in training steps (batch gather, forward,
                     backward, optimizer step), i.e. excluding evaluation, as tricks-worker does
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch, torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_resnet import ResNet, read_idx  # noqa: E402  (module has no import-time side effects)


def load(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return read_idx(p)
    sys.exit(f"missing {stem}[.gz] in {data_dir} (try `dpkg -L dataset-fashion-mnist`)")


def fmt_eta(s):
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop after K steps (still evaluates)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    # --- data (not timed) ---
    tr = load(a.data, "train-images-idx3-ubyte").astype(np.float32) / 255
    ytr = load(a.data, "train-labels-idx1-ubyte").astype(np.int64)
    te = load(a.data, "t10k-images-idx3-ubyte").astype(np.float32) / 255
    yte = load(a.data, "t10k-labels-idx1-ubyte").astype(np.int64)
    mean, std = tr.astype(np.float64).mean(), tr.astype(np.float64).std()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    xtr = torch.from_numpy(((tr - mean) / std).astype(np.float32)).unsqueeze(1)
    xte = torch.from_numpy(((te - mean) / std).astype(np.float32)).unsqueeze(1)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)

    model = ResNet(20, in_channels=1, num_classes=10).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    spe = len(xtr) // a.batch
    total = a.epochs * spe
    stop = total if a.max_steps is None else min(a.max_steps, total)
    gen = torch.Generator().manual_seed(a.seed)
    print(f"resnet20 on fashion-mnist: {len(xtr)} train / {len(xte)} test, mean {mean:.4f} std {std:.4f}; "
          f"batch {a.batch}, {spe} steps/epoch, {stop} of {total} steps; threads {a.threads}, "
          f"{'channels_last' if a.channels_last else 'NCHW'}; torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()})", file=sys.stderr, flush=True)

    # --- training + final evaluation (timed) ---
    start = time.perf_counter()
    win_start, win_steps, win_loss = start, 0, 0.0
    compute, last_loss, order = 0.0, float("nan"), None
    model.train()
    for step in range(stop):
        epoch, k = divmod(step, spe)
        if k == 0:
            order = torch.randperm(len(xtr), generator=gen)
        t0 = time.perf_counter()
        idx = order[k * a.batch:(k + 1) * a.batch]
        x = xtr[idx].contiguous(memory_format=fmt)
        y = ytr[idx]
        rate = 0.5 * a.lr * (1 + math.cos(math.pi * step / total))
        for g in opt.param_groups:
            g["lr"] = rate
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        l = loss.item()
        compute += time.perf_counter() - t0
        if not math.isfinite(l):
            sys.exit(f"loss is {l} at step {step}")
        win_loss += l; win_steps += 1
        if (step + 1) % a.log_every == 0 or step + 1 == stop or k == spe - 1:
            now = time.perf_counter()
            last_loss = win_loss / win_steps
            eta = (stop - step - 1) * (now - start) / (step + 1)
            print(f"step {step + 1}/{stop}  epoch {epoch + 1}  loss {last_loss:.4f}  lr {rate:.5f}  "
                  f"{win_steps * a.batch / (now - win_start):.0f} img/s  ETA {fmt_eta(eta)}",
                  file=sys.stderr, flush=True)
            win_start, win_steps, win_loss = now, 0, 0.0

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xte), 1000):
            correct += (model(xte[i:i + 1000].contiguous(memory_format=fmt)).argmax(1) == yte[i:i + 1000]).sum().item()
    seconds = time.perf_counter() - start
    acc = correct / len(xte)
    print(f"test accuracy {acc:.4f}", file=sys.stderr, flush=True)
    print(json.dumps({"steps": stop, "train_loss": round(last_loss, 6), "test_accuracy": acc,
                      "seconds": round(seconds, 3),
                      "images_per_second": round(stop * a.batch / max(compute, 1e-9), 3)}), flush=True)


if __name__ == "__main__":
    main()
