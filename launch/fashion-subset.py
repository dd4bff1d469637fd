#!/usr/bin/env python3
"""The first NTRAIN training and NTEST test images of Fashion-MNIST (the Debian package's IDX
files), written as IDX files into DST: a small real data set for launch/kill-trials.sh and
launch/soak.sh.

    python3 launch/fashion-subset.py DST NTRAIN NTEST
"""
import gzip
import os
import struct
import sys

src = "/usr/share/datasets/fashion-mnist"
dst, ntrain, ntest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(dst, exist_ok=True)
for prefix, n in (("train", ntrain), ("t10k", ntest)):
    for kind, dims in (("images-idx3-ubyte", 3), ("labels-idx1-ubyte", 1)):
        with gzip.open(f"{src}/{prefix}-{kind}.gz") as f:
            b = f.read()
        shape = struct.unpack(">" + "I" * dims, b[4:4 + 4 * dims])
        per = 1
        for s in shape[1:]:
            per *= s
        head = 4 + 4 * dims
        with open(f"{dst}/{prefix}-{kind}", "wb") as out:
            out.write(b[:4] + struct.pack(">I", n) + b[8:head] + b[head:head + n * per])
