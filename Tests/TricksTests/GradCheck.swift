import XCTest
@testable import Tricks

/// Helpers for finite-difference checks of hand-written backward passes.
///
/// The scalar under test is L = Σ r·y (accumulated in Double) for a fixed random r,
/// so ∂L/∂y = r. Central differences: (L(θ+h) − L(θ−h)) / 2h.
enum GradCheck {
    static func randomTensor(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
        var rng = SplitMix64(seed: seed)
        let t = Tensor(shape: shape)
        for i in 0..<t.count { t[i] = Float(rng.normal() * scale) }
        return t
    }

    static func dot(_ a: Tensor, _ r: Tensor) -> Double {
        var s = 0.0
        for i in 0..<a.count { s += Double(a[i]) * Double(r[i]) }
        return s
    }

    /// Compares `analytic[i]` with central differences of `loss` w.r.t. `values[i]` for sampled i,
    /// and the directional derivative along a random direction over all coordinates.
    static func check(_ name: String, values: UnsafeMutablePointer<Float>, count: Int, analytic: [Float],
                      h: Float, tol: Double, samples: Int = 40, file: StaticString = #filePath, line: UInt = #line,
                      loss: () -> Double) {
        var rng = SplitMix64(seed: 99)
        let idx = count <= samples ? Array(0..<count) : (0..<samples).map { _ in rng.below(count) }
        for i in idx {
            let old = values[i]
            values[i] = old + h; let lp = loss()
            values[i] = old - h; let lm = loss()
            values[i] = old
            let fd = (lp - lm) / (2 * Double(h))
            let a = Double(analytic[i])
            XCTAssertLessThanOrEqual(abs(fd - a), tol * max(1, abs(a)),
                                     "\(name)[\(i)]: finite difference \(fd) vs backward \(a)", file: file, line: line)
        }
        // Directional derivative over all coordinates, along a random unit vector.
        var dir = (0..<count).map { _ in Float(rng.normal()) }
        let norm = dir.reduce(0) { $0 + $1 * $1 }.squareRoot()
        dir = dir.map { $0 / norm }
        let old = (0..<count).map { values[$0] }
        for i in 0..<count { values[i] = old[i] + h * dir[i] }
        let lp = loss()
        for i in 0..<count { values[i] = old[i] - h * dir[i] }
        let lm = loss()
        for i in 0..<count { values[i] = old[i] }
        let fd = (lp - lm) / (2 * Double(h))
        let a = zip(analytic, dir).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertLessThanOrEqual(abs(fd - a), tol * max(1, abs(a)),
                                 "\(name): directional finite difference \(fd) vs backward \(a)", file: file, line: line)
    }

    /// Checks the input gradient and every parameter gradient of `layer` at input `x`.
    static func checkLayer(_ layer: Layer, input x: Tensor, mode: Mode = .training, h: Float = 1e-2, tol: Double = 1e-2,
                           file: StaticString = #filePath, line: UInt = #line) {
        let y0 = layer.forward(x, mode: mode)
        let r = randomTensor(y0.shape, seed: 4242)
        let outShape = y0.shape
        for p in layer.parameters { p.grads.update(repeating: 0) }
        let dy = Tensor(shape: outShape)
        dy.copy(from: r)
        let dx = layer.backward(dy)
        let gx = dx.array
        let gp = layer.parameters.map { $0.grads.map { $0 } }
        // Inference mode must not move running statistics; training mode would, so restore them.
        let snapshot = layer.state.map { t -> [Float] in
            if case .float(let p) = t.storage { return Array(UnsafeBufferPointer(start: p, count: t.count)) }
            return []
        }
        let loss: () -> Double = {
            let v = dot(layer.forward(x, mode: mode), r)
            for (t, s) in zip(layer.state, snapshot) { if case .float(let p) = t.storage { for i in 0..<s.count { p[i] = s[i] } } }
            return v
        }
        check("\(type(of: layer)) dx", values: x.data, count: x.count, analytic: gx, h: h, tol: tol, file: file, line: line, loss: loss)
        for (p, g) in zip(layer.parameters, gp) {
            check(p.name, values: p.value, count: p.count, analytic: g, h: h, tol: tol, file: file, line: line, loss: loss)
        }
    }
}

extension XCTestCase {
    /// A fresh directory under the system temporary directory, removed when the test ends.
    func tempDir() throws -> String {
        let d = NSTemporaryDirectory() + "tricks-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }
}
