import XCTest
@testable import Tricks

/// Forward values against float64 references and closed forms.
final class NumericsTests: XCTestCase {
    /// BN training forward, running statistics and num_batches_tracked against a float64 computation.
    func testBatchNormForwardAndRunningStats() {
        let (N, C, P) = (3, 2, 5)
        let x = GradCheck.randomTensor([N, C, 1, P], seed: 21, scale: 2)
        let bn = BatchNorm2d("bn", C)
        _ = bn.weight.values.update(from: [1.3, 0.4]); _ = bn.bias.values.update(from: [-0.5, 0.25])
        for step in 1...2 {
            let y = bn.forward(x, mode: .training)
            for c in 0..<C {
                var v: [Double] = []
                for n in 0..<N { for i in 0..<P { v.append(Double(x[(n * C + c) * P + i])) } }
                let m = v.reduce(0, +) / Double(v.count)
                let varB = v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)
                for n in 0..<N { for i in 0..<P {
                    let want = Double(bn.weight.value[c]) * (Double(x[(n * C + c) * P + i]) - m) / (varB + 1e-5).squareRoot()
                        + Double(bn.bias.value[c])
                    XCTAssertEqual(Double(y[(n * C + c) * P + i]), want, accuracy: 1e-5)
                } }
                // After k identical steps: running = (1 − 0.9^k)·batch + 0.9^k·init.
                let decay = pow(0.9, Double(step))
                XCTAssertEqual(Double(bn.runningMean[c]), (1 - decay) * m, accuracy: 1e-6)
                let unbiased = varB * Double(v.count) / Double(v.count - 1)
                XCTAssertEqual(Double(bn.runningVar[c]), decay * 1 + (1 - decay) * unbiased, accuracy: 1e-5)
            }
            XCTAssertEqual(bn.numBatchesTracked.pointee, Int64(step))
        }
        // Inference uses running statistics and leaves them alone.
        let rm = bn.runningMean[0], rv = bn.runningVar[0]
        let y = bn.forward(x, mode: .inference)
        let want = Double(bn.weight.value[0]) * (Double(x[0]) - Double(rm)) / (Double(rv) + 1e-5).squareRoot() + Double(bn.bias.value[0])
        XCTAssertEqual(Double(y[0]), want, accuracy: 1e-5)
        XCTAssertEqual(bn.runningMean[0], rm)
        XCTAssertEqual(bn.numBatchesTracked.pointee, 2)
    }

    /// A large mean with a tiny spread: float32 sums of squares would lose the variance entirely.
    func testBatchNormVarianceWithLargeMean() {
        let x = Tensor(shape: [4, 1, 16, 16])
        var rng = SplitMix64(seed: 22)
        var v: [Double] = []
        for i in 0..<x.count { x[i] = Float(1000 + 0.01 * rng.normal()); v.append(Double(x[i])) }
        let m = v.reduce(0, +) / Double(v.count)
        let varB = v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)
        let bn = BatchNorm2d("bn", 1)
        _ = bn.forward(x, mode: .training)
        let unbiased = varB * Double(v.count) / Double(v.count - 1)
        XCTAssertEqual(Double(bn.runningVar[0]), 0.9 + 0.1 * unbiased, accuracy: 1e-7)
        XCTAssertEqual(Double(bn.runningMean[0]), 0.1 * m, accuracy: 1e-4)
    }

    /// Label-smoothed cross-entropy against its closed form, and its gradient against finite differences.
    func testCrossEntropyWithLabelSmoothing() {
        let K = 5, eps = 0.2
        let logits = GradCheck.randomTensor([3, K], seed: 23, scale: 2)
        let labels: [Int32] = [0, 3, 4]
        let ce = SoftmaxCrossEntropy(labelSmoothing: eps)
        let loss = ce.forward(logits: logits, labels: labels)
        var want = 0.0
        for n in 0..<3 {
            let row = (0..<K).map { Double(logits[n * K + $0]) }
            let lse = log(row.map { exp($0) }.reduce(0, +))
            for k in 0..<K {
                let t = k == Int(labels[n]) ? 1 - eps : eps / Double(K - 1)
                want -= t * (row[k] - lse)
            }
        }
        XCTAssertEqual(loss, want / 3, accuracy: 1e-9)
        let g = ce.grad.array
        GradCheck.check("dlogits", values: logits.data, count: logits.count, analytic: g, h: 1e-2, tol: 1e-3) {
            SoftmaxCrossEntropy(labelSmoothing: eps).forward(logits: logits, labels: labels)
        }
        // ε = 0 is plain cross-entropy: −log softmax of the true class.
        let plain = SoftmaxCrossEntropy().forward(logits: logits, labels: labels)
        var ref = 0.0
        for n in 0..<3 {
            let row = (0..<K).map { Double(logits[n * K + $0]) }
            ref += log(row.map { exp($0) }.reduce(0, +)) - row[Int(labels[n])]
        }
        XCTAssertEqual(plain, ref / 3, accuracy: 1e-9)
    }

    /// The whole ResNet's gradient on a few coordinates of each kind of parameter.
    func testResNetGradientSpotCheck() {
        let net = ResNet(depth: 8, inChannels: 2, numClasses: 3, seed: 5)
        let x = GradCheck.randomTensor([4, 2, 8, 8], seed: 24)
        let labels: [Int32] = [0, 1, 2, 1]
        let ce = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        net.store.zeroGrad()
        ce.forward(logits: net.forward(x, mode: .training), labels: labels)
        net.backward(ce.grad)
        let grads = Array(UnsafeBufferPointer(start: net.store.grads, count: net.store.count))
        let saved = net.state.map { t -> [Float] in
            if case .float(let p) = t.storage { return Array(UnsafeBufferPointer(start: p, count: t.count)) }
            return []
        }
        let loss: () -> Double = {
            let l = SoftmaxCrossEntropy(labelSmoothing: 0.1).forward(logits: net.forward(x, mode: .training), labels: labels)
            for (t, s) in zip(net.state, saved) { if case .float(let p) = t.storage { for i in 0..<s.count { p[i] = s[i] } } }
            return l
        }
        for (p, off) in zip(net.store.parameters, net.store.offsets) where ["conv1.weight", "bn1.weight", "layer2.0.downsample.0.weight", "layer3.0.bn2.bias", "fc.weight", "fc.bias"].contains(p.name) {
            GradCheck.check(p.name, values: p.value, count: p.count, analytic: Array(grads[off..<off + p.count]),
                            h: 1e-3, tol: 3e-2, samples: 6, loss: loss)
        }
    }

    func testResNetSharedGradientBuffersChangeNothing() {
        // ResNet's backward writes its layers' input gradients into four shared tensors; each
        // layer with a tensor of its own gives the same bits. resnet20 (three blocks a stage,
        // two of them with a downsampling shortcut), two steps so the shared tensors start dirty.
        let x = GradCheck.randomTensor([3, 2, 12, 12], seed: 81)
        let labels: [Int32] = [0, 2, 1]
        var grads: [[Float]] = []
        for own in [false, true] {
            let net = ResNet(depth: 20, inChannels: 2, numClasses: 3, seed: 6)
            if own {
                net.bn1.gradientBuffer = Tensor(shape: [0])
                for b in net.stages.joined() {
                    for l in [b.conv1, b.conv2] + (b.downsample.map { [$0.conv] } ?? []) { l.gradientBuffer = Tensor(shape: [0]) }
                    for l in [b.bn1, b.bn2] + (b.downsample.map { [$0.bn] } ?? []) { l.gradientBuffer = Tensor(shape: [0]) }
                }
            }
            let ce = SoftmaxCrossEntropy()
            var g: [Float] = []
            for _ in 0..<2 {
                net.store.zeroGrad()
                ce.forward(logits: net.forward(x, mode: .training), labels: labels)
                net.backward(ce.grad)
                g += Array(UnsafeBufferPointer(start: net.store.grads, count: net.store.count))
            }
            grads.append(g)
        }
        XCTAssertTrue(grads[0].contains { $0 != 0 })
        XCTAssertTrue(grads[0] == grads[1], "shared gradient tensors change the gradients")
    }
}
