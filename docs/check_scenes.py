"""Reads a VOC-layout detection set (e.g. one written by `tricks-worker make-scenes`) with
Pillow and xml.etree, independently of the library, and compares it with what the library
reads (`tricks-worker detection-data --describe`): image sizes, channels, per-channel pixel
sums and boxes.

    python docs/check_scenes.py DIR [--split train] [--binary .build/release/tricks-worker]

Needs Pillow. Exits 1 on any difference.
"""
import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from PIL import Image


def read_set(root, split):
    classes_path = f"{root}/classes.txt"
    with open(classes_path) as f:
        classes = [l.strip() for l in f if l.strip()]
    with open(f"{root}/ImageSets/Main/{split}.txt") as f:
        ids = [l.split()[0] for l in f if l.strip()]
    out = []
    for i in ids:
        ann = ET.parse(f"{root}/Annotations/{i}.xml").getroot()
        name = ann.findtext("filename") or f"{i}.jpg"
        img = Image.open(f"{root}/JPEGImages/{name}")
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        bands = img.split()
        sums = [sum(v * c for v, c in enumerate(b.histogram())) for b in bands]
        boxes = []
        for o in ann.findall("object"):
            bb = o.find("bndbox")
            boxes.append([int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")]
                         + [classes.index(o.findtext("name")), int(o.findtext("difficult") or 0)])
        out.append({"id": i, "width": img.width, "height": img.height, "channels": len(bands),
                    "sums": sums, "boxes": boxes})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--binary", default=".build/release/tricks-worker")
    a = ap.parse_args()
    mine = read_set(a.root, a.split)
    run = subprocess.run([a.binary, "detection-data", "--data", a.root, "--split", a.split, "--describe"],
                         capture_output=True, text=True, check=True)
    theirs = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
    if len(mine) != len(theirs):
        sys.exit(f"{len(mine)} images read here, {len(theirs)} by the library")
    bad, same_pixels, worst = 0, 0, 0.0
    boxes = 0
    for p, q in zip(mine, theirs):
        for k in ("id", "width", "height", "channels", "boxes"):
            if p[k] != q[k]:
                bad += 1
                print(f"{p['id']}: {k} differs: {p[k]} vs {q[k]}")
        n = p["width"] * p["height"]
        diff = max(abs(x - y) / n for x, y in zip(p["sums"], q["sums"]))
        worst = max(worst, diff)
        same_pixels += p["sums"] == q["sums"]
        boxes += len(p["boxes"])
    print(f"{len(mine)} images, {boxes} boxes: sizes, channels and boxes "
          f"{'identical' if bad == 0 else f'differ in {bad} fields'}; per-channel pixel sums identical in "
          f"{same_pixels}/{len(mine)} images, largest mean difference {worst:.4f} levels")
    sys.exit(1 if bad or worst > 0.5 else 0)


main()
