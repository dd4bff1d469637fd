"""VOC mean average precision, written apart from the library (standard library only), to check
`VOCMeanAP` against. The rules are GluonCV's VOCMApMetric / VOC07MApMetric: IoU without the
+1 pixel offset, a match at IoU >= threshold with the highest-IoU ground truth of the class,
detections matched to a `difficult` box ignored, 11-point thresholds as numpy's arange makes them.

    python3 docs/voc_map.py FILE.json
    FILE: {"num_classes": K, "iou": 0.5,
           "images": [{"gt": [[x0, y0, x1, y1, label, difficult], ...],
                       "det": [[x0, y0, x1, y1, label, score], ...]}, ...]}
Prints {"map_area": ..., "map_11": ..., "ap_area": [...], "ap_11": [...]} (null for classes without positives).
"""
import json
import sys


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(spec):
    K, thr = spec["num_classes"], spec.get("iou", 0.5)
    ap_area, ap_11 = [], []
    for c in range(K):
        npos = sum(1 for im in spec["images"] for g in im["gt"] if g[4] == c and not g[5])
        # All detections of class c over the set, by score (ties: image, then position).
        dets = [(d[5], i, k, d) for i, im in enumerate(spec["images"]) for k, d in enumerate(im["det"]) if d[4] == c]
        dets.sort(key=lambda t: (-t[0], t[1], t[2]))
        used = {}
        flags = []
        for score, i, k, d in dets:
            gts = [(j, g) for j, g in enumerate(spec["images"][i]["gt"]) if g[4] == c]
            best, best_iou = -1, 0.0
            for j, g in gts:
                o = iou(d, g)
                if o > best_iou:
                    best, best_iou = j, o
            if best >= 0 and best_iou >= thr:
                if spec["images"][i]["gt"][best][5]:
                    continue
                if not used.get((i, best)):
                    used[(i, best)] = True
                    flags.append(1)
                    continue
            flags.append(0)
        if npos == 0:
            ap_area.append(None)
            ap_11.append(None)
            continue
        tp = fp = 0
        rec, prec = [], []
        for f in flags:
            tp += f
            fp += 1 - f
            rec.append(tp / npos)
            prec.append(tp / (tp + fp))
        a11 = 0.0
        for k in range(11):
            t = k * 0.1
            a11 += max([p for r, p in zip(rec, prec) if r >= t], default=0.0) / 11
        mrec = [0.0] + rec + [1.0]
        mpre = [0.0] + prec + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        area = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
        ap_area.append(area)
        ap_11.append(a11)
    mean = lambda v: sum(x for x in v if x is not None) / max(1, sum(1 for x in v if x is not None))
    return {"map_area": mean(ap_area), "map_11": mean(ap_11), "ap_area": ap_area, "ap_11": ap_11}


with open(sys.argv[1]) as f:
    print(json.dumps(evaluate(json.load(f))))
