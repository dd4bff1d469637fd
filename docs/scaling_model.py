#!/usr/bin/env python3
"""An alpha-beta model of one training step's communication, for docs/scaling.md.

    python3 docs/scaling_model.py            # the tables of docs/scaling.md
    python3 docs/scaling_model.py --fit FILE # fit alpha and beta to a `tricks-worker bench --comm` table

A message of n bytes between two ranks costs alpha + n * beta (alpha: latency per message,
beta: seconds per byte, including the addition that follows). With p = log2(N):

  default mode
    SyncBatchNorm: 2 all-reduces per BN layer (forward [sum x, sum x^2, n] in 2C+1 doubles,
      backward [sum dy, sum dy*xhat] in 2C doubles); small, so recursive doubling: p (alpha + n beta).
      With --bn-group-size k they stay inside groups of k ranks (one node): log2(k) exchanges
      over shared memory instead.
    gradients: one all-reduce of G bytes in buckets, bandwidth-optimal (reduce-scatter plus
      all-gather): 2 p alpha + 2 (N-1)/N G beta, overlapped with the backward pass: what is
      exposed is what exceeds OVERLAP of the compute time, and never less than the last bucket.
  deterministic mode
    SyncBatchNorm: the same exchanges along the fixed tree: p (alpha + n beta) each.
    gradients: recursive halving and doubling along the tree after backward, not overlapped:
      2 p alpha + 2 (N-1)/N G beta.
    loss: one 8-byte tree sum: p alpha.

Scaling efficiency (weak scaling, a fixed batch per rank) = compute / (compute + exposed comm).
"""
import math
import re
import sys

# The exchange-and-add of the fixed-order tree between 2 ranks on one node, fitted with --fit to
# two runs of `launch/bench-deterministic.sh` (2026-12-03, 2-core AMD EPYC), the mean of the two:
# alpha in seconds, beta in seconds per byte.
SHM = dict(alpha=0.42e-6, beta=0.46e-9)            # runs: 0.29 and 0.56 us; 0.31 and 0.60 ns/B
TCP_LOOPBACK = dict(alpha=9.8e-6, beta=0.74e-9)     # runs: 10.26 and 9.30 us; 0.67 and 0.81 ns/B

# Networks between nodes. alpha: the TCP stack's cost measured on loopback plus an assumed wire
# and switch latency (10 us for 10 Gb/s Ethernet, 3 us for a 100 Gb/s fabric). beta: the slower
# of the line rate and the software's own rate on loopback (copies and the addition; on this CPU
# 1.35 GB/s, so TCP cannot fill 100 Gb/s: an RDMA transport would, and is not modelled).
def networks():
    a, b = TCP_LOOPBACK["alpha"], TCP_LOOPBACK["beta"]
    return [("10 Gb/s", dict(alpha=a + 10e-6, beta=max(8 / 10e9, b))),
            ("100 Gb/s", dict(alpha=a + 3e-6, beta=max(8 / 100e9, b)))]

# Compute per step and rank, measured (release build, one thread per rank, 2026-12-03): seconds,
# default and deterministic mode with one micro-shard per rank (S = N): resnet20 from
# launch/bench-deterministic.sh (fastest steps, medians over 7 rounds; --micro-shards 1 at 1.025x),
# the detector from tricks-detect bench --batch-size 1 (medians).
MODELS = {
    "resnet20, 32 images/rank": dict(
        compute=61.4e-3, compute_det=62.9e-3, grad_bytes=4 * 272_474,
        bn_channels=[16] * 7 + [32] * 7 + [64] * 7),
    "detector, 1 image/rank (128 px)": dict(
        compute=30.7e-3, compute_det=31.4e-3, grad_bytes=4 * 2_946_135,
        bn_channels=[16, 32, 32, 32, 32, 32, 64, 64, 64, 64, 64, 64, 128, 128, 128, 128, 128]
        + [256] * 7),
}
OVERLAP = 0.6   # share of the step's compute that gradient buckets can hide behind (backward)
BUCKET = 256 * 1024


def msg(net, n):
    return net["alpha"] + n * net["beta"]


def bn_time(net, channels, exchanges):
    # forward (2C+1 doubles) and backward (2C doubles) per layer
    return sum(exchanges * (msg(net, 8 * (2 * c + 1)) + msg(net, 8 * 2 * c)) for c in channels)


def step(model, net, N, deterministic, bn_group=None):
    p = int(math.log2(N))
    m = MODELS[model]
    G = m["grad_bytes"]
    if deterministic:
        compute = m["compute_det"]
        bn = bn_time(net, m["bn_channels"], p)
        grad = 2 * p * net["alpha"] + 2 * (N - 1) / N * G * net["beta"]
        loss = p * net["alpha"]
        comm = bn + grad + loss
    else:
        compute = m["compute"]
        if bn_group:
            bn = bn_time(SHM, m["bn_channels"], int(math.log2(bn_group)))
        else:
            bn = bn_time(net, m["bn_channels"], p)
        grad = 2 * p * net["alpha"] + 2 * (N - 1) / N * G * net["beta"]
        last = 2 * p * net["alpha"] + 2 * (N - 1) / N * min(G, BUCKET) * net["beta"]
        exposed = max(grad - OVERLAP * compute, last)
        comm = bn + exposed
    return compute + comm, compute / (compute + comm), bn


def fit(path):
    """Least squares alpha + n beta over the rows of a bench --comm table (the tree column, 2 ranks)."""
    xs, ys = [], []
    for line in open(path):
        m = re.match(r"\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            xs.append(float(m.group(1))); ys.append(float(m.group(3)) * 1e-6)
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    beta = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    small = [y for x, y in zip(xs, ys) if x <= 1024]
    alpha = min(small)
    print(f"{path}: alpha {alpha * 1e6:.2f} us (smallest messages), beta {beta * 1e9:.3f} ns/B "
          f"({1 / beta / 1e9:.2f} GB/s) from {n} sizes")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--fit":
        for f in sys.argv[2:]:
            fit(f)
        return
    ranks = [8, 16, 32, 64, 128, 256]
    for model in MODELS:
        for name, net in networks():
            print(f"\n**{model}, {name}**: step ms (scaling efficiency)\n")
            print("| mode | " + " | ".join(f"N={n}" for n in ranks) + " |")
            print("|---|" + "---:|" * len(ranks))
            rows = [("default, SyncBN over all", False, None),
                    ("default, --bn-group-size 8", False, 8),
                    ("deterministic", True, None)]
            for label, det, group in rows:
                cells = []
                for N in ranks:
                    t, eff, _ = step(model, net, N, det, group)
                    cells.append(f"{t * 1e3:.1f} ({eff:.0%})")
                print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
