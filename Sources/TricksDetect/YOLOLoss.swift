import Foundation
import Tricks

/// One YOLOv3 output scale: its stride (8, 16 or 32) and its anchors, `(width, height)` in input
/// pixels.
public struct YOLOHead: Sendable, Equatable, Codable {
    public var stride: Int
    public var anchors: [[Double]]
    public init(stride: Int, anchors: [[Double]]) { self.stride = stride; self.anchors = anchors }
}

/// Anchor shapes from k-means over the training boxes' `(width, height)`, with 1 − IoU as the
/// distance (Redmon & Farhadi 2017): boxes are compared as if they shared a centre. Seeded
/// k-means++ start; returns the centres sorted by area.
public enum AnchorKMeans {
    static func iou(_ a: (Double, Double), _ b: (Double, Double)) -> Double {
        let inter = min(a.0, b.0) * min(a.1, b.1)
        return inter / (a.0 * a.1 + b.0 * b.1 - inter)
    }

    public static func fit(_ sizes: [(width: Double, height: Double)], k: Int, seed: UInt64, iterations: Int = 100) -> [(width: Double, height: Double)] {
        precondition(sizes.count >= k && k > 0, "k-means needs at least k boxes")
        var rng = SplitMix64(key: [seed, 0x4B4D])
        let pts = sizes.map { ($0.width, $0.height) }
        var centres = [pts[rng.below(pts.count)]]
        while centres.count < k {
            let d = pts.map { p in centres.map { 1 - iou(p, $0) }.min()! }
            let total = d.reduce(0, +)
            var r = rng.uniform() * total, pick = pts.count - 1
            for (i, v) in d.enumerated() { r -= v; if r <= 0 { pick = i; break } }
            centres.append(pts[pick])
        }
        for _ in 0..<iterations {
            var sums = [(Double, Double, Int)](repeating: (0, 0, 0), count: k)
            for p in pts {
                var best = 0, bestIoU = -1.0
                for (j, c) in centres.enumerated() { let o = iou(p, c); if o > bestIoU { bestIoU = o; best = j } }
                sums[best].0 += p.0; sums[best].1 += p.1; sums[best].2 += 1
            }
            let next = (0..<k).map { j in sums[j].2 > 0 ? (sums[j].0 / Double(sums[j].2), sums[j].1 / Double(sums[j].2)) : centres[j] }
            if next.elementsEqual(centres, by: { $0 == $1 }) { break }
            centres = next
        }
        return centres.sorted { $0.0 * $0.1 < $1.0 * $1.1 }.map { (width: $0.0, height: $0.1) }
    }
}

/// YOLOv3's targets and loss over raw head outputs (after GluonCV's `YOLOV3Loss`).
///
/// Each head's output is `(N, A·(5 + K), H, W)`: for anchor `a` the channels `a·(5+K) + 0…4` are
/// `tx, ty, tw, th, to` and then `K` class logits. A ground-truth box is assigned to the
/// anchor (over all heads) whose shape overlaps it best, at the cell holding its centre. For an
/// assigned anchor:
///
/// - centre: BCE(σ(tx), cx/stride − j) + BCE(σ(ty), …), and scale ½(|tw − log(w/aw)| + |th − …|),
///   both × (2 − w·h/(W·H)) (small boxes count more);
/// - objectness: BCE(σ(to), 1);
/// - classes: Σ_k BCE(σ(tc_k), y_k) with y = 1 − δ on the box's class and δ on the others,
///   δ = min(1/K, 1/40) with label smoothing (GluonCV's rule), 0 without;
///
/// all × the box's weight (detection mixup's λ or 1 − λ). Every other anchor gets BCE(σ(to), 0),
/// unless its decoded box overlaps some ground truth by more than `ignoreIoU` (then nothing).
/// The total is divided by `normalizer` (the global number of images, so that summing gradients
/// over ranks gives the mean).
public final class YOLOLoss {
    public let numClasses: Int
    public let heads: [YOLOHead]
    public var ignoreIoU = 0.7
    public var labelSmoothing = false
    /// Each image's loss (its share of `forward`'s total, divided by the normalizer), after `forward`.
    public private(set) var imageLosses: [Double] = []
    /// ∂loss/∂output of each head, filled by `forward`.
    public private(set) var grads: [Tensor] = []

    public init(numClasses: Int, heads: [YOLOHead]) {
        self.numClasses = numClasses; self.heads = heads
    }

    /// The loss's parts, each already divided by the normalizer.
    public struct Parts: Sendable {
        public var objectness = 0.0, center = 0.0, scale = 0.0, classes = 0.0
        public var total: Double { objectness + center + scale + classes }
    }

    /// Where box `g` goes: head, anchor, cell row and column.
    public func assignment(_ g: Box) -> (head: Int, anchor: Int, row: Int, col: Int) {
        var best = (0, 0), bestIoU = -1.0
        for (h, head) in heads.enumerated() {
            for (a, an) in head.anchors.enumerated() {
                let o = AnchorKMeans.iou((g.width, g.height), (an[0], an[1]))
                if o > bestIoU { bestIoU = o; best = (h, a) }
            }
        }
        let s = Double(heads[best.0].stride)
        return (best.0, best.1, Int((g.centerY / s).rounded(.down)), Int((g.centerX / s).rounded(.down)))
    }

    @inline(__always) static func bce(_ t: Double, _ y: Double) -> Double { max(t, 0) - t * y + log1p(exp(-abs(t))) }
    @inline(__always) static func sigmoid(_ t: Double) -> Double { t >= 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t)) }

    /// The decoded box of anchor `a` at `(row, col)` of a head from its raw `tx, ty, tw, th`.
    public func decode(head h: Int, anchor a: Int, row: Int, col: Int, _ t: (Double, Double, Double, Double), label: Int = 0) -> Box {
        let s = Double(heads[h].stride), an = heads[h].anchors[a]
        let cx = (Double(col) + Self.sigmoid(t.0)) * s, cy = (Double(row) + Self.sigmoid(t.1)) * s
        let w = an[0] * exp(min(t.2, 20)), hh = an[1] * exp(min(t.3, 20))
        return Box(x0: cx - w / 2, y0: cy - hh / 2, x1: cx + w / 2, y1: cy + hh / 2, label: label)
    }

    /// The loss of a batch: `outputs[h]` is head h's `(N, A·(5+K), H_h, W_h)`, `boxes[n]` image
    /// n's ground truth in input pixels (`difficult` boxes are used like the others), the input
    /// `imageWidth × imageHeight`. Fills `grads`.
    @discardableResult
    public func forward(outputs: [Tensor], boxes: [[Box]], imageWidth: Int, imageHeight: Int, normalizer: Int) -> Parts {
        precondition(outputs.count == heads.count, "one output per head")
        let K = numClasses, C = 5 + K, N = boxes.count
        let delta = labelSmoothing ? min(1 / Double(K), 1.0 / 40) : 0
        let norm = 1 / Double(max(normalizer, 1))
        var parts = Parts()
        imageLosses = [Double](repeating: 0, count: N)
        if grads.count != outputs.count { grads = outputs.map { _ in Tensor(shape: [0]) } }
        for (g, o) in zip(grads, outputs) { g.resize(o.shape); g.zero() }   // reused across steps
        // Positive assignments: (head, n, anchor, row, col) → box index (later boxes win).
        var positive: [[Int: Int]] = .init(repeating: [:], count: heads.count)
        for n in 0..<N {
            for (bi, b) in boxes[n].enumerated() {
                let (h, a, r, c) = assignment(b)
                let H = outputs[h].shape[2], W = outputs[h].shape[3]
                guard r >= 0, r < H, c >= 0, c < W, b.width > 0, b.height > 0 else { continue }
                positive[h][((n * heads[h].anchors.count + a) * H + r) * W + c] = bi
            }
        }
        let area = Double(imageWidth * imageHeight)
        for (h, out) in outputs.enumerated() {
            let A = heads[h].anchors.count, H = out.shape[2], W = out.shape[3], P = H * W, s = Double(heads[h].stride)
            precondition(out.shape[0] == N && out.shape[1] == A * C, "head \(h): expected (\(N), \(A * C), H, W), got \(out.shape)")
            let o = out.data, gr = grads[h].data
            for n in 0..<N { for a in 0..<A { for r in 0..<H { for c in 0..<W {
                let base = (n * A * C + a * C) * P + r * W + c
                @inline(__always) func t(_ k: Int) -> Double { Double(o[base + k * P]) }
                @inline(__always) func add(_ k: Int, _ g: Double) { gr[base + k * P] += Float(g * norm) }
                let key = ((n * A + a) * H + r) * W + c
                if let bi = positive[h][key] {
                    let g = boxes[n][bi], w = g.weight
                    let scaleW = (2 - g.width * g.height / area) * w
                    let tx = g.centerX / s - Double(c), ty = g.centerY / s - Double(r)
                    let tw = log(g.width / heads[h].anchors[a][0]), th = log(g.height / heads[h].anchors[a][1])
                    let center = (Self.bce(t(0), tx) + Self.bce(t(1), ty)) * scaleW * norm
                    parts.center += center
                    add(0, (Self.sigmoid(t(0)) - tx) * scaleW); add(1, (Self.sigmoid(t(1)) - ty) * scaleW)
                    let scale = 0.5 * (abs(t(2) - tw) + abs(t(3) - th)) * scaleW * norm
                    parts.scale += scale
                    add(2, 0.5 * (t(2) > tw ? 1 : t(2) < tw ? -1 : 0) * scaleW)
                    add(3, 0.5 * (t(3) > th ? 1 : t(3) < th ? -1 : 0) * scaleW)
                    let objectness = Self.bce(t(4), 1) * w * norm
                    parts.objectness += objectness
                    add(4, (Self.sigmoid(t(4)) - 1) * w)
                    var classes = 0.0
                    for k in 0..<K {
                        let y = k == g.label ? 1 - delta : delta
                        let term = Self.bce(t(5 + k), y) * w * norm
                        parts.classes += term; classes += term
                        add(5 + k, (Self.sigmoid(t(5 + k)) - y) * w)
                    }
                    imageLosses[n] += center + scale + objectness + classes
                } else {
                    if !boxes[n].isEmpty {
                        let d = decode(head: h, anchor: a, row: r, col: c, (t(0), t(1), t(2), t(3)))
                        if boxes[n].contains(where: { $0.iou(d) > ignoreIoU }) { continue }
                    }
                    let objectness = Self.bce(t(4), 0) * norm
                    parts.objectness += objectness
                    imageLosses[n] += objectness
                    add(4, Self.sigmoid(t(4)))
                }
            } } } }
        }
        return parts
    }

    /// Detections of each image: every anchor and class with σ(to)·σ(tc) above `threshold`,
    /// boxes in input pixels, then per-class non-maximum suppression at `nmsIoU`, at most
    /// `maxPerImage` kept.
    public func detect(outputs: [Tensor], threshold: Double = 0.01, nmsIoU: Double = 0.45, maxPerImage: Int = 100) -> [[ScoredBox]] {
        let K = numClasses, C = 5 + K, N = outputs.first?.shape[0] ?? 0
        return (0..<N).map { n in
            var found: [ScoredBox] = []
            for (h, out) in outputs.enumerated() {
                let A = heads[h].anchors.count, H = out.shape[2], W = out.shape[3], P = H * W, o = out.data
                for a in 0..<A { for r in 0..<H { for c in 0..<W {
                    let base = (n * A * C + a * C) * P + r * W + c
                    let obj = Self.sigmoid(Double(o[base + 4 * P]))
                    if obj < threshold { continue }
                    let geo = (Double(o[base]), Double(o[base + P]), Double(o[base + 2 * P]), Double(o[base + 3 * P]))
                    for k in 0..<K {
                        let score = obj * Self.sigmoid(Double(o[base + (5 + k) * P]))
                        if score >= threshold {
                            found.append(ScoredBox(box: decode(head: h, anchor: a, row: r, col: c, geo, label: k), score: score, image: n))
                        }
                    }
                } } }
            }
            return nonMaximumSuppression(found, iouThreshold: nmsIoU, maxKept: maxPerImage)
        }
    }
}
