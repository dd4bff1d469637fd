"""The PyTorch twin of tricks-detect's YOLOv3-style detector (TricksDetect.YOLONet), for checking
its numerics and timing its training step; a measuring stick, never imported by the project.

    python docs/torch_yolo.py CKPT                      # load strictly, print the spec
    python docs/torch_yolo.py CKPT IMAGE                # preprocess as `tricks-detect predict`, print head statistics
    python docs/torch_yolo.py CKPT --raw RAW [IMAGE]    # Tricks' outputs against the mirror's, on Tricks' input
    python docs/torch_yolo.py --bench [--side 128] [--batch-size 8] [--steps 20] [--threads 1]
                                      [--width 16] [--classes 10] [--channels-last]

CKPT is a model.safetensors written by `tricks-detect train --out DIR`; the network is built from
its metadata (classes, width, anchors, data_shape) and loaded with `load_state_dict(strict=True)`:
state-dict names are the same on both sides. RAW comes from
`tricks-detect predict --checkpoint CKPT --raw-out RAW IMAGE`: the network input Tricks used
(`input`) and its three raw head outputs (`head0`…`head2`, strides 32, 16, 8). The mirror runs
its forward in eval mode on that input and prints, per head, the largest absolute difference,
that difference relative to the head's largest |output|, and both sides' distance from a
float64 run of the mirror. With IMAGE too it also compares its own preprocessing (the letterbox
of DetectionPipeline: bilinear resize with half-pixel centres, rounded to uint8, centred on a
canvas of round(255·mean), then (x/255 − mean)/std) with Tricks' input. Decoding is Pillow's:
the same pixels as Tricks' libpng for PNG; JPEG decoders can differ in the last bit (Pillow's
libjpeg-turbo and the system's agreed on the scenes tried), so PNG is the safer test image.

--bench times what `tricks-detect bench` times: on random N×3×S×S input after --warmup (3)
untimed steps, forward in training mode, the loss on three fixed synthetic boxes per image (the
same boxes and anchors, YOLOv3's COCO anchors scaled by S/416), backward, and SGD (momentum 0.9,
weight decay 5e-4 except on biases and BN) with `torch.set_num_threads(--threads)`. The loss is a
vectorised YOLOLoss (BCE on centre offsets, objectness and classes, L1 on log sizes, the
small-box weight, no objectness loss for anchors whose decoded box overlaps a ground truth by
more than 0.7), with the positive assignments computed once, as the boxes do not change. It is
not Tricks' code and costs a little more, but both are small beside the network: at the
defaults about 1.3 ms of a 170 ms step in Tricks (forward and gradients), 2.8 ms in PyTorch
(forward and backward). Prints one JSON line with median_ms (the upper middle of the sorted
times, as Tricks takes it) and min_ms. To hold PyTorch to AVX2 on an AVX-512 machine:
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 (launch/compare-torch-detect.sh does this).

Needs torch, numpy, safetensors and, to read images, Pillow.
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_resnet import BasicBlock  # noqa: E402  (Tricks' BasicBlock: ReLU after BN1 and after the sum; 1×1 + BN shortcut)

STRIDES = [32, 16, 8]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]   # tricks-detect's, fixed


class ConvUnit(nn.Module):
    """Conv (no bias, padding k//2) → BatchNorm (eps 1e-5, momentum 0.1) → leaky ReLU 0.1."""
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


class Head(nn.Module):
    def __init__(self, cin, mid, out):
        super().__init__()
        self.reduce = ConvUnit(cin, mid, 1)
        self.expand = ConvUnit(mid, 2 * mid, 3)
        self.out = nn.Conv2d(2 * mid, out, 1, bias=True)


class YOLONet(nn.Module):
    """Stem, five stride-2 BasicBlocks (2w…16w, 16w channels), heads at strides 32, 16, 8 joined
    top-down by 1×1 units, nearest 2× upsampling and cat([backbone tap, upsampled], dim=1)."""
    def __init__(self, num_classes, anchors_per_head=3, width=16, in_channels=3):
        super().__init__()
        w = width
        ch = [w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]
        self.stem = ConvUnit(in_channels, w, 3)
        self.backbone = nn.Sequential(*[BasicBlock(ch[i], ch[i + 1], 2) for i in range(5)])
        out = anchors_per_head * (5 + num_classes)
        head_in, mid = [ch[5], ch[4] + 4 * w, ch[3] + 2 * w], [8 * w, 4 * w, 2 * w]
        self.head0, self.head1, self.head2 = (Head(head_in[h], mid[h], out) for h in range(3))
        self.lateral0 = ConvUnit(mid[0], 4 * w, 1)
        self.lateral1 = ConvUnit(mid[1], 2 * w, 1)
        self.num_classes, self.anchors_per_head = num_classes, anchors_per_head

    def init_like_tricks(self):
        """YOLONet.initialize's distributions (not its draws): He-normal fan-out convs, BN 1/0,
        output convs N(0, 0.01²) with objectness bias −4."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for h in (self.head0, self.head1, self.head2):
            nn.init.normal_(h.out.weight, 0, 0.01)
            nn.init.zeros_(h.out.bias)
            with torch.no_grad():
                h.out.bias.view(self.anchors_per_head, -1)[:, 4] = -4
        return self

    def forward(self, x):
        a = self.stem(x)
        taps = []
        for b in self.backbone:
            a = b(a)
            taps.append(a)
        heads, laterals = [self.head0, self.head1, self.head2], [self.lateral0, self.lateral1]
        r = heads[0].reduce(taps[4])
        outs = [heads[0].out(heads[0].expand(r))]
        for h in (1, 2):
            l = F.interpolate(laterals[h - 1](r), scale_factor=2, mode="nearest")
            r = heads[h].reduce(torch.cat([taps[4 - h], l], dim=1))
            outs.append(heads[h].out(heads[h].expand(r)))
        return outs


def read_spec(path):
    """The checkpoint's metadata, as DetectorSpec.load reads it."""
    with safe_open(path, "pt") as f:
        m = f.metadata() or {}
    if m.get("detector") != "yolo" or not all(k in m for k in ("classes", "anchors", "width", "data_shape")):
        sys.exit(f"torch_yolo: {path}: not a tricks-detect checkpoint (no detector, classes, anchors, width or data_shape metadata)")
    return {"classes": json.loads(m["classes"]), "anchors": json.loads(m["anchors"]),
            "width": int(m["width"]), "data_shape": int(m["data_shape"])}


def load(path):
    if not os.path.isfile(path):
        sys.exit(f"torch_yolo: {path}: no such file")
    spec = read_spec(path)
    model = YOLONet(len(spec["classes"]), len(spec["anchors"][0]), spec["width"])
    sd = load_file(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        want = set(model.state_dict())
        missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
        sys.exit(f"torch_yolo: {path}: does not match the model" + (f"; missing: {', '.join(missing[:8])}" if missing else "")
                 + (f"; unexpected: {', '.join(unexpected[:8])}" if unexpected else "") + ("" if missing or unexpected else f": {e}"))
    return spec, model.eval()


def round_half_away(x):
    """Swift's `rounded()` for the non-negative values met here (Python's round() is half-even)."""
    return np.floor(np.asarray(x, np.float64) + 0.5)


def resize_bilinear(img, w, h):
    """Image.resized: half-pixel centres, clamped taps, float32 blends, rounded to uint8."""
    H, W = img.shape[:2]
    if (w, h) == (W, H):
        return img

    def taps(n, src):
        s = np.minimum(np.maximum((np.arange(n, dtype=np.float64) + 0.5) * (src / n) - 0.5, 0), src - 1)
        i0 = s.astype(np.int64)
        return i0, np.minimum(i0 + 1, src - 1), (s - i0).astype(np.float32)

    x0, x1, fx = taps(w, W)
    y0, y1, fy = taps(h, H)
    f = img.astype(np.float32)
    fx, fy = fx[None, :, None], fy[:, None, None]
    a, b = f[y0][:, x0], f[y0][:, x1]
    d, e = f[y1][:, x0], f[y1][:, x1]
    top, bottom = a + (b - a) * fx, d + (e - d) * fx
    v = top + (bottom - top) * fy
    return np.clip(round_half_away(v), 0, 255).astype(np.uint8)


def preprocess(path, side):
    """`tricks-detect predict`'s input: RGB, letterboxed to side × side, normalized; (1, 3, S, S)."""
    from PIL import Image
    if not os.path.isfile(path):
        sys.exit(f"torch_yolo: {path}: no such file")
    img = np.asarray(Image.open(path).convert("RGB"))
    H, W = img.shape[:2]
    scale = min(side / W, side / H)
    nw = max(1, min(side, int(round_half_away(W * scale))))
    nh = max(1, min(side, int(round_half_away(H * scale))))
    ox, oy = (side - nw) // 2, (side - nh) // 2
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = [int(round_half_away(m * 255)) for m in MEAN]
    canvas[oy:oy + nh, ox:ox + nw] = resize_bilinear(img, nw, nh)
    scale_c = np.array([1 / (255 * s) for s in STD], np.float32)
    shift_c = np.array([-m / s for m, s in zip(MEAN, STD)], np.float32)
    x = canvas.astype(np.float32) * scale_c + shift_c
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def stats(name, t, anchors=0):
    t = t.double()
    line = f"{name}: {tuple(t.shape)}  mean {t.mean():.6f}  std {t.std():.6f}  min {t.min():.6f}  max {t.max():.6f}"
    if anchors:   # a head: channel 4 of each anchor's 5 + K
        N, C, H, W = t.shape
        line += f"  max σ(objectness) {torch.sigmoid(t.view(N, anchors, C // anchors, H, W)[:, :, 4]).max():.4f}"
    return line


def compare(spec, model, raw_path, image):
    if not os.path.isfile(raw_path):
        sys.exit(f"torch_yolo: {raw_path}: no such file")
    raw = load_file(raw_path)
    missing = [k for k in ["input", "head0", "head1", "head2"] if k not in raw]
    if missing:
        sys.exit(f"torch_yolo: {raw_path}: missing {', '.join(missing)} (write it with tricks-detect predict --raw-out)")
    x = raw["input"]
    print(f"input {tuple(x.shape)} from {raw_path}")
    if image:
        mine = preprocess(image, spec["data_shape"])
        d = (mine - x).abs()
        print(f"preprocessing of {image}: max |Δ| {d.max():.3g} against Tricks' input ({int((d > 0).sum())} of {d.numel()} values differ)")
    with torch.no_grad():
        outs = model(x)
        ref = model.double()(x.double())
        model.float()
    print("| head | stride | shape | max abs Δ | Δ / max abs | Tricks vs float64 | PyTorch vs float64 |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for h in range(3):
        t, p, r = raw[f"head{h}"].double(), outs[h].double(), ref[h]
        scale = t.abs().max().item()
        d = (t - p).abs().max().item()
        print(f"| head{h} | {STRIDES[h]} | {tuple(t.shape)} | {d:.3g} | {d / scale:.3g} | {(t - r).abs().max().item() / scale:.3g} | "
              f"{(p - r).abs().max().item() / scale:.3g} |")


# ---- the training step benchmark ----

def bench_anchors(side):
    a = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
    a = [[v * side / 416 for v in p] for p in a]
    return [a[6 - 3 * h:9 - 3 * h] for h in range(3)]


def bench_boxes(batch, side, classes):
    """DetectBench.boxes: (x0, y0, x1, y1, label) in pixels, three per image."""
    base = [(0.30, 0.30, 0.10, 0.12), (0.60, 0.45, 0.25, 0.20), (0.50, 0.60, 0.60, 0.50)]
    out = []
    for n in range(batch):
        bs = []
        for j, (cx, cy, w, h) in enumerate(base):
            cx, cy = cx + 0.04 * (n % 4), cy + 0.03 * (n % 3)
            bs.append(((cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side, (n + j) % classes))
        out.append(bs)
    return out


def wh_iou(a, b):
    inter = min(a[0], b[0]) * min(a[1], b[1])
    return inter / (a[0] * a[1] + b[0] * b[1] - inter)


class YOLOLoss:
    """YOLOLoss's terms, vectorised, for fixed boxes (the positives are found once)."""
    def __init__(self, anchors, boxes, side, classes, ignore_iou=0.7):
        self.anchors, self.side, self.K, self.ignore = anchors, side, classes, ignore_iou
        N, A = len(boxes), len(anchors[0])
        self.gt = torch.tensor([[b[:4] for b in bs] for bs in boxes], dtype=torch.float32)   # (N, G, 4)
        self.targets = []
        for h, s in enumerate(STRIDES):
            H = W = side // s
            z = lambda *shape: torch.zeros(N, A, *shape, H, W)
            t = {"pos": z(), "tx": z(), "ty": z(), "tw": z(), "th": z(), "sw": z(), "wt": z(), "cls": z(classes)}
            self.targets.append(t)
        for n, bs in enumerate(boxes):
            for (x0, y0, x1, y1, label) in bs:
                w, hh = x1 - x0, y1 - y0
                best = max(((h, a) for h in range(3) for a in range(A)), key=lambda p: wh_iou((w, hh), anchors[p[0]][p[1]]))
                h, a = best
                s = STRIDES[h]
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                r, c = int(math.floor(cy / s)), int(math.floor(cx / s))
                t = self.targets[h]
                t["pos"][n, a, r, c] = 1
                t["tx"][n, a, r, c], t["ty"][n, a, r, c] = cx / s - c, cy / s - r
                t["tw"][n, a, r, c] = math.log(w / anchors[h][a][0])
                t["th"][n, a, r, c] = math.log(hh / anchors[h][a][1])
                t["sw"][n, a, r, c] = 2 - w * hh / (side * side)
                t["wt"][n, a, r, c] = 1
                t["cls"][n, a, :, r, c] = 0
                t["cls"][n, a, label, r, c] = 1

    def __call__(self, outs):
        N = outs[0].shape[0]
        bce = lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none")
        total = 0
        for h, out in enumerate(outs):
            t, s = self.targets[h], STRIDES[h]
            A, H, W = t["pos"].shape[1], out.shape[2], out.shape[3]
            o = out.reshape(N, A, 5 + self.K, H, W)
            pos, sw = t["pos"], t["sw"]
            center = (bce(o[:, :, 0], t["tx"]) + bce(o[:, :, 1], t["ty"])) * sw
            scale = 0.5 * ((o[:, :, 2] - t["tw"]).abs() + (o[:, :, 3] - t["th"]).abs()) * sw
            cls = bce(o[:, :, 5:], t["cls"]).sum(2)
            with torch.no_grad():   # the ignore mask: decoded boxes against every ground truth of the image
                an = torch.tensor(self.anchors[h], dtype=o.dtype)
                cols = torch.arange(W, dtype=o.dtype).view(1, 1, 1, W)
                rows = torch.arange(H, dtype=o.dtype).view(1, 1, H, 1)
                cx, cy = (cols + torch.sigmoid(o[:, :, 0])) * s, (rows + torch.sigmoid(o[:, :, 1])) * s
                bw = an[:, 0].view(1, A, 1, 1) * torch.exp(o[:, :, 2].clamp(max=20))
                bh = an[:, 1].view(1, A, 1, 1) * torch.exp(o[:, :, 3].clamp(max=20))
                d = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).view(N, -1, 1, 4)
                g = self.gt.view(N, 1, -1, 4)
                iw = (torch.minimum(d[..., 2], g[..., 2]) - torch.maximum(d[..., 0], g[..., 0])).clamp(min=0)
                ih = (torch.minimum(d[..., 3], g[..., 3]) - torch.maximum(d[..., 1], g[..., 1])).clamp(min=0)
                inter = iw * ih
                union = (d[..., 2] - d[..., 0]) * (d[..., 3] - d[..., 1]) + (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1]) - inter
                ignored = ((inter / union).amax(-1) > self.ignore).view(N, A, H, W)
                neg = (1 - pos) * (~ignored).to(o.dtype)
            obj = bce(o[:, :, 4], pos) * (pos * t["wt"] + neg)
            total = total + ((center + scale + cls) * pos * t["wt"] + obj).sum()
        return total / N


def bench(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = YOLONet(a.classes, 3, a.width).init_like_tricks().train()
    x = torch.randn(a.batch_size, 3, a.side, a.side)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = YOLOLoss(bench_anchors(a.side), bench_boxes(a.batch_size, a.side, a.classes), a.side, a.classes)
    decay = [p for p in model.parameters() if p.dim() > 1]
    other = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0}], lr=0.001, momentum=0.9)
    times, last = [], float("nan")
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
        last = loss.item()
    times.sort()
    print(json.dumps({"side": a.side, "batch": a.batch_size, "width": a.width, "classes": a.classes, "threads": a.threads,
                      "layout": "channels_last" if a.channels_last else "nchw", "steps": a.steps,
                      "median_ms": round(1e3 * times[len(times) // 2], 2), "min_ms": round(1e3 * times[0], 2),
                      "p90_ms": round(1e3 * times[int(0.9 * (len(times) - 1))], 2),
                      "images_per_second": round(a.batch_size / times[len(times) // 2], 1), "loss": round(last, 4),
                      "isa": torch.backends.cpu.get_cpu_capability()}))


def main():
    ap = argparse.ArgumentParser(description="PyTorch twin of tricks-detect's YOLONet: output check and step benchmark.")
    ap.add_argument("checkpoint", nargs="?", help="model.safetensors from tricks-detect train --out")
    ap.add_argument("image", nargs="?", help="a PNG (or JPEG) to preprocess as tricks-detect predict does")
    ap.add_argument("--raw", help="RAW.safetensors from tricks-detect predict --raw-out: compare outputs on its input")
    ap.add_argument("--bench", action="store_true", help="time the training step instead (no checkpoint)")
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_intermixed_args()
    if a.bench:
        if a.checkpoint or a.raw:
            ap.error("--bench takes no checkpoint, image or --raw")
        if a.side < 32 or a.side % 32 or min(a.batch_size, a.steps, a.threads, a.width, a.classes) < 1 or a.warmup < 0:
            ap.error("--side must be a positive multiple of 32; --batch-size, --steps, --threads, --width, --classes positive")
        return bench(a)
    if not a.checkpoint:
        ap.error("give a checkpoint (or --bench)")
    torch.set_num_threads(a.threads)
    spec, model = load(a.checkpoint)
    print(f"loaded {a.checkpoint} with strict=True: {len(spec['classes'])} classes, width {spec['width']}, "
          f"data shape {spec['data_shape']}, anchors per head {len(spec['anchors'][0])}")
    if a.raw:
        return compare(spec, model, a.raw, a.image)
    if a.image:
        x = preprocess(a.image, spec["data_shape"])
        print(stats("input", x))
        with torch.no_grad():
            for h, o in enumerate(model(x)):
                print(stats(f"head{h} (stride {STRIDES[h]})", o, model.anchors_per_head))


if __name__ == "__main__":
    main()
