import XCTest
@testable import Tricks

/// SGD against torch.optim.SGD's formulas (computed here in Double) and schedules at their boundaries.
final class OptimTests: XCTestCase {
    func referenceSGD(w0: [Double], grads: [[Double]], lr: [Double], mu: Double, wd: [Double], nesterov: Bool) -> [Double] {
        var w = w0
        var buf = [Double](repeating: 0, count: w.count)
        for (t, g0) in grads.enumerated() {
            for i in 0..<w.count {
                let g = g0[i] + wd[i] * w[i]
                buf[i] = t == 0 ? g : mu * buf[i] + g
                w[i] -= lr[t] * (nesterov ? g + mu * buf[i] : buf[i])
            }
        }
        return w
    }

    func testSGDMatchesFormula() {
        for nesterov in [false, true] {
            for noBiasDecay in [false, true] {
                let conv = Parameter(name: "w", shape: [3])
                let bias = Parameter(name: "b", shape: [2], isBiasOrNorm: true)
                let store = ParameterStore([conv, bias])
                let w0: [Float] = [0.5, -1.0, 2.0, 0.3, -0.4]
                _ = UnsafeMutableBufferPointer(start: store.values, count: 5).update(from: w0)
                let opt = SGD(store: store, momentum: 0.9, nesterov: nesterov, weightDecay: 0.01, noBiasDecay: noBiasDecay)
                let grads: [[Double]] = [[0.1, 0.2, -0.3, 0.4, 0.5], [-0.2, 0.1, 0.0, 0.3, -0.1], [0.05, -0.05, 0.1, 0.2, 0.3]]
                let lrs = [0.1, 0.05, 0.2]
                for (g, lr) in zip(grads, lrs) {
                    for i in 0..<5 { store.grads[i] = Float(g[i]) }
                    opt.step(lr: Float(lr))
                }
                let wd = [0.01, 0.01, 0.01, noBiasDecay ? 0 : 0.01, noBiasDecay ? 0 : 0.01]
                let want = referenceSGD(w0: w0.map(Double.init), grads: grads, lr: lrs, mu: 0.9, wd: wd, nesterov: nesterov)
                for i in 0..<5 {
                    XCTAssertEqual(Double(store.values[i]), want[i], accuracy: 1e-6, "nesterov \(nesterov) noBiasDecay \(noBiasDecay) [\(i)]")
                }
            }
        }
    }

    func testCosineWithWarmupAtBoundaries() {
        let s = LRSchedule(kind: .cosine, lr: 0.4, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(s.rate(at: 0), 0.4 * 1 / 10, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 9), 0.4, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 10), 0.4, accuracy: 1e-12)             // cos(0)
        XCTAssertEqual(s.rate(at: 60), 0.2, accuracy: 1e-12)             // halfway: ½·lr
        XCTAssertEqual(s.rate(at: 35), 0.5 * 0.4 * (1 + cos(Double.pi * 25 / 100)), accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 109), 0.5 * 0.4 * (1 + cos(Double.pi * 99 / 100)), accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 110), 0, accuracy: 1e-12)
    }

    func testStepAndConstant() {
        let s = LRSchedule(kind: .step, lr: 1, totalSteps: 100, stepBoundaries: [30, 60])
        XCTAssertEqual(s.rate(at: 29), 1, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 30), 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 59), 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 60), 0.01, accuracy: 1e-12)
        let c = LRSchedule(kind: .constant, lr: 0.3, warmupSteps: 4, totalSteps: 10)
        XCTAssertEqual(c.rate(at: 1), 0.15, accuracy: 1e-12)
        XCTAssertEqual(c.rate(at: 4), 0.3, accuracy: 1e-12)
        XCTAssertEqual(c.rate(at: 9), 0.3, accuracy: 1e-12)
    }
}
