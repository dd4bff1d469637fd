"""The PyTorch twin of Tricks' CIFAR ResNet, for checkpoint interchange.

    python docs/torch_resnet.py check RUN_DIR/model.safetensors [--data DIR]   # load strictly, evaluate
    python docs/torch_resnet.py export OUT.safetensors [--depth 20]           # a PyTorch-initialized file for --init

Needs torch, numpy and safetensors. State-dict names are torchvision style, so
`load_state_dict(strict=True)` works in both directions.
"""
import argparse, gzip, os, sys
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import load_file, save_file


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, depth=20, in_channels=1, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False); self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for k, w in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (k > 0 and i == 0) else 1)); cin = w
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["check", "export"])
    ap.add_argument("file")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    if a.cmd == "export":
        torch.manual_seed(0)
        m = ResNet(a.depth)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, a.file)
        print(f"wrote {a.file} ({len(m.state_dict())} tensors)")
        return
    sd = load_file(a.file)
    depth = 6 * len({k.split(".")[1] for k in sd if k.startswith("layer1.")}) + 2
    m = ResNet(depth, sd["conv1.weight"].shape[1], sd["fc.weight"].shape[0])
    m.load_state_dict(sd, strict=True)
    print(f"loaded {a.file} into ResNet-{depth} with strict=True ({len(sd)} tensors)")
    tr = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).astype(np.float64) / 255
    te = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")).astype(np.float32) / 255
    y = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    x = torch.from_numpy((te - tr.mean()) / tr.std()).float().unsqueeze(1)
    m.eval()
    with torch.no_grad():
        acc = (m(x).argmax(1).numpy() == y).mean()
    print(f"test accuracy in PyTorch: {acc:.4f}")


if __name__ == "__main__":
    main()
