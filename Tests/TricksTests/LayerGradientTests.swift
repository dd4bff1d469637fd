import XCTest
@testable import Tricks

/// Every layer's backward pass against central finite differences (tolerance stated per test:
/// |fd − backward| ≤ tol·max(1, |backward|), in float32 with step h).
final class LayerGradientTests: XCTestCase {
    func testConv3x3Stride1Pad1() {
        let ws = Workspace()
        let c = Conv2d("c", 3, 4, kernel: 3, stride: 1, padding: 1, workspace: ws)
        _ = c.weight.values.update(from: GradCheck.randomTensor([4, 3, 3, 3], seed: 1, scale: 0.3).array)
        GradCheck.checkLayer(c, input: GradCheck.randomTensor([2, 3, 5, 6], seed: 2))
    }

    func testConv3x3Stride2Pad1() {
        let c = Conv2d("c", 2, 3, kernel: 3, stride: 2, padding: 1, workspace: Workspace())
        _ = c.weight.values.update(from: GradCheck.randomTensor([3, 2, 3, 3], seed: 3, scale: 0.3).array)
        GradCheck.checkLayer(c, input: GradCheck.randomTensor([3, 2, 7, 6], seed: 4))
    }

    func testConv1x1Stride2AndStride1() {
        for s in [1, 2] {
            let c = Conv2d("c", 3, 2, kernel: 1, stride: s, padding: 0, workspace: Workspace())
            _ = c.weight.values.update(from: GradCheck.randomTensor([2, 3, 1, 1], seed: 5, scale: 0.5).array)
            GradCheck.checkLayer(c, input: GradCheck.randomTensor([2, 3, 6, 5], seed: 6))
        }
    }

    func testConvChunkedMatchesSingleChunkAndReference() {
        // The chunked GEMM path (several images per GEMM) and the one-image path agree with a
        // direct float64 convolution.
        let x = GradCheck.randomTensor([5, 3, 6, 6], seed: 7)
        let w = GradCheck.randomTensor([4, 3, 3, 3], seed: 8)
        var ref = [Double](repeating: 0, count: 5 * 4 * 3 * 3)
        for n in 0..<5 { for o in 0..<4 { for oh in 0..<3 { for ow in 0..<3 {
            var s = 0.0
            for c in 0..<3 { for i in 0..<3 { for j in 0..<3 {
                let ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j
                if ih >= 0 && ih < 6 && iw >= 0 && iw < 6 {
                    s += Double(x[((n * 3 + c) * 6 + ih) * 6 + iw]) * Double(w[((o * 3 + c) * 3 + i) * 3 + j])
                }
            } } }
            ref[((n * 4 + o) * 3 + oh) * 3 + ow] = s
        } } } }
        let saved = Conv2d.columnBudget
        defer { Conv2d.columnBudget = saved }
        for budget in [1, 27 * 9 * 2, 1 << 20] {
            Conv2d.columnBudget = budget
            let c = Conv2d("c", 3, 4, kernel: 3, stride: 2, padding: 1, workspace: Workspace())
            _ = c.weight.values.update(from: w.array)
            let y = c.forward(x, mode: .training)
            for i in 0..<ref.count { XCTAssertEqual(Double(y[i]), ref[i], accuracy: 1e-4, "budget \(budget) at \(i)") }
            GradCheck.checkLayer(c, input: x)
        }
    }

    func testBatchNormTrainingMode() {
        let bn = BatchNorm2d("bn", 3)
        _ = bn.weight.values.update(from: [1.5, -0.7, 0.9])
        _ = bn.bias.values.update(from: [0.1, 0.2, -0.3])
        GradCheck.checkLayer(bn, input: GradCheck.randomTensor([4, 3, 3, 2], seed: 9), h: 1e-2, tol: 2e-2)
    }

    func testBatchNormWithFusedReLU() {
        for mode in [Mode.training, .inference] {
            let bn = BatchNorm2d("bn", 3)
            bn.fusedReLU = true
            _ = bn.weight.values.update(from: [1.5, -0.7, 0.9])
            _ = bn.bias.values.update(from: [0.3, 0.2, -0.1])
            let x = GradCheck.randomTensor([4, 3, 3, 2], seed: 31)
            let y = bn.forward(x, mode: mode)
            XCTAssertTrue(y.array.allSatisfy { $0 >= 0 })
            XCTAssertTrue(y.array.contains(0))
            GradCheck.checkLayer(bn, input: x, mode: mode, h: 1e-3, tol: 2e-2)
        }
    }

    func testBatchNormInferenceMode() {
        let bn = BatchNorm2d("bn", 2)
        _ = bn.weight.values.update(from: [1.5, -0.7])
        bn.runningMean[0] = 0.3; bn.runningMean[1] = -0.2
        bn.runningVar[0] = 2.0; bn.runningVar[1] = 0.5
        GradCheck.checkLayer(bn, input: GradCheck.randomTensor([3, 2, 2, 2], seed: 10), mode: .inference)
    }

    func testReLU() {
        let x = GradCheck.randomTensor([2, 3, 4, 5], seed: 11)
        for i in 0..<x.count where abs(x[i]) < 0.05 { x[i] = 0.5 }   // keep away from the kink
        GradCheck.checkLayer(ReLU(), input: x, h: 1e-2)
    }

    func testMaxPool() {
        let x = GradCheck.randomTensor([2, 2, 6, 6], seed: 12)
        GradCheck.checkLayer(MaxPool2d(kernel: 3, stride: 2, padding: 1), input: x, h: 1e-3)
        GradCheck.checkLayer(MaxPool2d(kernel: 2), input: x, h: 1e-3)
    }

    func testAvgPool() {
        GradCheck.checkLayer(AvgPool2d(kernel: 3, stride: 2, padding: 1), input: GradCheck.randomTensor([2, 2, 5, 5], seed: 13))
        GradCheck.checkLayer(AvgPool2d(kernel: 2), input: GradCheck.randomTensor([1, 3, 4, 4], seed: 14))
    }

    func testGlobalAvgPool() {
        GradCheck.checkLayer(GlobalAvgPool(), input: GradCheck.randomTensor([3, 4, 3, 5], seed: 15))
    }

    func testLinear() {
        let l = Linear("fc", 5, 3)
        _ = l.weight.values.update(from: GradCheck.randomTensor([3, 5], seed: 16).array)
        _ = l.bias!.values.update(from: [0.1, -0.2, 0.3])
        GradCheck.checkLayer(l, input: GradCheck.randomTensor([4, 5], seed: 17))
    }

    func testBasicBlockWithProjection() {
        let ws = Workspace()
        let b = BasicBlock("layer2.0", 2, 3, stride: 2, workspace: ws)
        var rng = SplitMix64(seed: 18)
        for p in b.parameters where !p.isBiasOrNorm { for i in 0..<p.count { p.value[i] = Float(rng.normal() * 0.4) } }
        for bn in b.norms { for i in 0..<bn.channels { bn.bias.value[i] = 0.5 } }   // keep ReLUs off their kink
        GradCheck.checkLayer(b, input: GradCheck.randomTensor([3, 2, 6, 6], seed: 19), h: 5e-3, tol: 3e-2)
    }
}
