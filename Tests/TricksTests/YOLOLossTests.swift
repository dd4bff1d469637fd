import XCTest
@testable import Tricks
@testable import TricksDetect

/// YOLOv3's assignment, loss and decoding against direct computations and finite differences;
/// anchor k-means on known clusters.
final class YOLOLossTests: XCTestCase {
    static let heads = [
        YOLOHead(stride: 8, anchors: [[10, 13], [16, 30], [33, 23]]),
        YOLOHead(stride: 16, anchors: [[30, 61], [62, 45], [59, 119]]),
    ]

    /// −y·log σ(t) − (1 − y)·log(1 − σ(t)), computed plainly.
    func bce(_ t: Double, _ y: Double) -> Double {
        let p = 1 / (1 + exp(-t))
        return -y * log(p) - (1 - y) * log(1 - p)
    }

    func testAssignmentPicksTheBestShapedAnchorAtTheCentreCell() {
        let loss = YOLOLoss(numClasses: 3, heads: Self.heads)
        for (w, h, cx, cy) in [(20.0, 30.0, 37.0, 45.0), (60.0, 100.0, 50.0, 70.0), (9.0, 12.0, 3.0, 60.0)] {
            let box = Box(x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2, label: 0)
            var best = (0, 0), bestIoU = -1.0
            for (hi, head) in Self.heads.enumerated() {
                for (ai, an) in head.anchors.enumerated() {
                    let inter = min(w, an[0]) * min(h, an[1]), o = inter / (w * h + an[0] * an[1] - inter)
                    if o > bestIoU { bestIoU = o; best = (hi, ai) }
                }
            }
            let s = Double(Self.heads[best.0].stride)
            let got = loss.assignment(box)
            XCTAssertEqual([got.head, got.anchor, got.row, got.col], [best.0, best.1, Int(cy / s), Int(cx / s)])
        }
    }

    func testLossOfAHandMadeCase() {
        // One head, stride 8, one 16×16 anchor, 2 classes, a 16×16 input (2×2 cells); one 12×12
        // box centred at (8, 8): cell (1, 1), tx* = ty* = 0, tw* = th* = log(12/16).
        let loss = YOLOLoss(numClasses: 2, heads: [YOLOHead(stride: 8, anchors: [[16, 16]])])
        let out = Tensor(shape: [1, 7, 2, 2])
        var g = SplitMix64(seed: 3)
        for i in 0..<out.count { out[i] = Float(g.normal()) }
        let t = { (k: Int, r: Int, c: Int) in Double(out[k * 4 + r * 2 + c]) }
        let box = Box(x0: 2, y0: 2, x1: 14, y1: 14, label: 1)
        let parts = loss.forward(outputs: [out], boxes: [[box]], imageWidth: 16, imageHeight: 16, normalizer: 1)
        let scale = 2 - 144.0 / 256, tw = log(0.75)
        let center = (bce(t(0, 1, 1), 0) + bce(t(1, 1, 1), 0)) * scale
        let size = 0.5 * (abs(t(2, 1, 1) - tw) + abs(t(3, 1, 1) - tw)) * scale
        var obj = bce(t(4, 1, 1), 1)
        for (r, c) in [(0, 0), (0, 1), (1, 0)] {
            // The decoded boxes of the other cells overlap the box by well under 0.7.
            let d = loss.decode(head: 0, anchor: 0, row: r, col: c, (t(0, r, c), t(1, r, c), t(2, r, c), t(3, r, c)))
            XCTAssertLessThan(d.iou(box), 0.7)
            obj += bce(t(4, r, c), 0)
        }
        let cls = bce(t(5, 1, 1), 0) + bce(t(6, 1, 1), 1)
        XCTAssertEqual(parts.center, center, accuracy: 1e-9)
        XCTAssertEqual(parts.scale, size, accuracy: 1e-9)
        XCTAssertEqual(parts.objectness, obj, accuracy: 1e-9)
        XCTAssertEqual(parts.classes, cls, accuracy: 1e-9)
        // Label smoothing: targets 1 − 1/40 and 1/40 for two classes; a normalizer divides all.
        loss.labelSmoothing = true
        let smooth = loss.forward(outputs: [out], boxes: [[box]], imageWidth: 16, imageHeight: 16, normalizer: 4)
        XCTAssertEqual(smooth.classes, (bce(t(5, 1, 1), 1.0 / 40) + bce(t(6, 1, 1), 1 - 1.0 / 40)) / 4, accuracy: 1e-9)
        XCTAssertEqual(smooth.objectness, obj / 4, accuracy: 1e-9)
        // A mixup weight scales every term of its box, not the other cells' objectness.
        var light = box; light.weight = 0.3
        loss.labelSmoothing = false
        let mixed = loss.forward(outputs: [out], boxes: [[light]], imageWidth: 16, imageHeight: 16, normalizer: 1)
        XCTAssertEqual(mixed.center, 0.3 * center, accuracy: 1e-9)
        XCTAssertEqual(mixed.classes, 0.3 * cls, accuracy: 1e-9)
        XCTAssertEqual(mixed.objectness, obj - 0.7 * bce(t(4, 1, 1), 1), accuracy: 1e-9)
    }

    func testIgnoredAnchorsGetNoObjectnessLoss() {
        // Two anchors at the box's cell: the box goes to anchor 0; anchor 1 predicts the box itself.
        let loss = YOLOLoss(numClasses: 1, heads: [YOLOHead(stride: 8, anchors: [[12, 12], [24, 24]])])
        let out = Tensor(shape: [1, 12, 1, 1])
        out.zero()
        out[6 + 2] = Float(log(12.0 / 24)); out[6 + 3] = Float(log(12.0 / 24)); out[6 + 4] = 0.5
        let box = Box(x0: -2, y0: -2, x1: 10, y1: 10, label: 0)   // centre (4, 4): σ(0)·8 = 4
        loss.forward(outputs: [out], boxes: [[box]], imageWidth: 8, imageHeight: 8, normalizer: 1)
        XCTAssertEqual(loss.grads[0][6 + 4], 0, "anchor 1 overlaps the box (IoU 1 > 0.7): ignored")
        loss.ignoreIoU = 1.0
        loss.forward(outputs: [out], boxes: [[box]], imageWidth: 8, imageHeight: 8, normalizer: 1)
        XCTAssertEqual(Double(loss.grads[0][6 + 4]), 1 / (1 + exp(-0.5)), accuracy: 1e-6)
    }

    func testGradientsMatchFiniteDifferences() {
        let loss = YOLOLoss(numClasses: 3, heads: Self.heads)
        loss.labelSmoothing = true
        let outs = [GradCheck.randomTensor([2, 24, 6, 6], seed: 1), GradCheck.randomTensor([2, 24, 3, 3], seed: 2)]
        let boxes: [[Box]] = [
            [Box(x0: 3, y0: 5, x1: 23, y1: 35, label: 2, weight: 0.6), Box(x0: 10, y0: 2, x1: 46, y1: 44, label: 0, weight: 0.4)],
            [Box(x0: 20, y0: 20, x1: 30, y1: 33, label: 1)],
        ]
        loss.forward(outputs: outs, boxes: boxes, imageWidth: 48, imageHeight: 48, normalizer: 2)
        let analytic = loss.grads.map(\.array)
        for (h, o) in outs.enumerated() {
            GradCheck.check("head \(h)", values: o.data, count: o.count, analytic: analytic[h], h: 1e-2, tol: 2e-3, samples: 80) {
                YOLOLoss(numClasses: 3, heads: Self.heads).with { $0.labelSmoothing = true }
                    .forward(outputs: outs, boxes: boxes, imageWidth: 48, imageHeight: 48, normalizer: 2).total
            }
        }
        // The sampled coordinates include every positive anchor's channels.
        XCTAssertGreaterThan(analytic[0].filter { abs($0) > 0.05 }.count + analytic[1].filter { abs($0) > 0.05 }.count, 10)
    }

    func testDetectDecodesAnEncodedBox() {
        let loss = YOLOLoss(numClasses: 2, heads: Self.heads)
        let outs = [Tensor(shape: [1, 21, 4, 4]), Tensor(shape: [1, 21, 2, 2])]
        for o in outs { for i in 0..<o.count { o[i] = -8 } }        // nothing anywhere
        // A 30×20 box of class 1 centred at (13, 21): head 0, anchor 2 (33×23), cell (2, 1).
        func logit(_ p: Double) -> Float { Float(log(p / (1 - p))) }
        let P = 16, base = 2 * 7 * P + 2 * 4 + 1
        outs[0][base] = logit(13.0 / 8 - 1); outs[0][base + P] = logit(21.0 / 8 - 2)
        outs[0][base + 2 * P] = Float(log(30.0 / 33)); outs[0][base + 3 * P] = Float(log(20.0 / 23))
        outs[0][base + 4 * P] = 4; outs[0][base + 6 * P] = 4
        let found = loss.detect(outputs: outs, threshold: 0.5)
        XCTAssertEqual(found.count, 1)
        XCTAssertEqual(found[0].count, 1)
        let d = found[0][0]
        XCTAssertEqual(d.box.label, 1)
        XCTAssertEqual(d.score, pow(1 / (1 + exp(-4.0)), 2), accuracy: 1e-6)
        for (got, want) in [(d.box.x0, -2.0), (d.box.y0, 11.0), (d.box.x1, 28.0), (d.box.y1, 31.0)] { XCTAssertEqual(got, want, accuracy: 1e-4) }
    }

    func testAnchorKMeansFindsKnownClusters() {
        var g = SplitMix64(seed: 4)
        let centres: [(Double, Double)] = [(10, 12), (30, 60), (90, 45)]
        var sizes: [(width: Double, height: Double)] = []
        for i in 0..<600 {
            let c = centres[i % 3]
            sizes.append((c.0 * (1 + 0.08 * g.normal()), c.1 * (1 + 0.08 * g.normal())))
        }
        let found = AnchorKMeans.fit(sizes, k: 3, seed: 1)
        XCTAssertEqual(found.map { $0.width * $0.height }, found.map { $0.width * $0.height }.sorted())
        for (f, c) in zip(found, centres) {
            XCTAssertEqual(f.width, c.0, accuracy: 0.05 * c.0); XCTAssertEqual(f.height, c.1, accuracy: 0.05 * c.1)
        }
        XCTAssertEqual(AnchorKMeans.fit(sizes, k: 3, seed: 1).map(\.width), found.map(\.width))
    }
}

extension YOLOLoss {
    func with(_ f: (YOLOLoss) -> Void) -> YOLOLoss { f(self); return self }
}

/// The detector network: shapes, and parameter gradients through upsampling, concatenation,
/// shared taps and the backbone against finite differences, in inference mode (fixed batch
/// statistics) and training mode. A stem weight moves some 30,000 pre-activations across
/// their ReLU kinks, so per-coordinate differences of the early layers stay noisy at any h
/// float32 allows; they are checked along a random direction over all their coordinates, the
/// later layers coordinate by coordinate.
final class YOLONetTests: XCTestCase {
    func gradients(_ net: YOLONet, _ x: Tensor, _ mode: Mode, _ rs: inout [Tensor]) -> [Float] {
        let outs = net.forward(x, mode: mode)
        if rs.isEmpty { rs = outs.enumerated().map { GradCheck.randomTensor($0.element.shape, seed: 50 + UInt64($0.offset)) } }
        net.store.zeroGrad()
        net.backward(rs)
        return Array(UnsafeBufferPointer(start: net.store.grads, count: net.store.count))
    }

    func check(_ net: YOLONet, _ x: Tensor, _ mode: Mode, _ params: [Parameter], h: Float, tol: Double, samples: Int = 12) {
        var rs: [Tensor] = []
        let analytic = gradients(net, x, mode, &rs)
        let loss: () -> Double = { zip(net.forward(x, mode: mode), rs).map { GradCheck.dot($0, $1) }.reduce(0, +) }
        for p in params {
            let off = net.store.offsets[net.store.parameters.firstIndex { $0 === p }!]
            GradCheck.check("\(p.name) (\(mode))", values: p.value, count: p.count, analytic: Array(analytic[off..<off + p.count]),
                            h: h, tol: tol, samples: samples, loss: loss)
        }
    }

    func testShapesAndGradients() {
        let net = YOLONet(numClasses: 2, anchorsPerHead: 2, width: 4, seed: 1)
        let x = GradCheck.randomTensor([2, 3, 64, 64], seed: 5)
        let outs = net.forward(x, mode: .training)
        XCTAssertEqual(outs.map(\.shape), [[2, 14, 2, 2], [2, 14, 4, 4], [2, 14, 8, 8]])
        XCTAssertEqual(Double(outs[0][4 * 4]), -4, accuracy: 0.5, "objectness starts near its −4 prior")
        // Inference mode with non-trivial running statistics.
        var rng = SplitMix64(seed: 9)
        for bn in net.norms {
            for c in 0..<bn.channels { bn.runningMean[c] = Float(0.2 * rng.normal()); bn.runningVar[c] = Float(0.5 + rng.uniform()) }
        }
        check(net, x, .inference, [net.stem.conv.weight, net.stem.bn.weight, net.blocks[0].conv2.weight, net.blocks[2].conv1.weight], h: 1e-3, tol: 5e-2, samples: 0)
        check(net, x, .inference, [net.blocks[3].downsample!.conv.weight, net.blocks[3].conv2.weight, net.blocks[4].bn2.weight,
                                    net.heads[0].out.weight, net.heads[1].reduce.conv.weight, net.heads[2].out.bias!,
                                    net.lateral[0].conv.weight, net.lateral[1].bn.bias], h: 1e-3, tol: 3e-2)
        check(net, x, .training, [net.heads[0].out.weight, net.heads[1].expand.conv.weight, net.heads[2].out.bias!,
                                   net.heads[2].reduce.bn.weight], h: 5e-3, tol: 3e-2)
        XCTAssertEqual(Set(net.store.parameters.map(\.name)).count, net.store.parameters.count, "parameter names are unique")
        XCTAssertEqual(net.norms.count, 1 + 5 * 3 + 6 + 2)
    }
}
