import Foundation

/// Accumulates wall time per layer and direction, for benchmarks; or, with `checkFinite`, finds
/// the first layer whose output (or, in backward, input or parameter gradient) holds a NaN or an
/// infinity, the way PyTorch's anomaly mode does.
public final class StepProfiler {
    public struct Entry { public var seconds = 0.0; public var calls = 0; public var flops = 0.0 }
    public private(set) var entries: [String: Entry] = [:]
    /// Keys in first-seen order.
    public private(set) var order: [String] = []
    /// Check every layer's results instead of timing them.
    public let checkFinite: Bool
    /// The first layer and direction whose results were not finite (with `checkFinite`).
    public private(set) var firstNonFinite: String?

    public init(checkFinite: Bool = false) { self.checkFinite = checkFinite }

    /// A markdown table of the entries per step: milliseconds, share and GFLOP/s.
    public func table(steps: Int) -> String {
        var out = "| layer (summed over instances) | ms/step | share | GFLOP/s |\n|---|---:|---:|---:|\n"
        let total = entries.values.reduce(0) { $0 + $1.seconds }
        for k in order {
            let e = entries[k]!
            out += String(format: "| %@ | %.2f | %.1f%% | %@ |\n", k, 1e3 * e.seconds / Double(steps), 100 * e.seconds / total,
                          e.flops > 0 ? String(format: "%.1f", e.flops / e.seconds / 1e9) : "")
        }
        return out + String(format: "| **all layers** | %.2f | | |\n", 1e3 * total / Double(steps))
    }

    /// Records `layer` as the first non-finite one unless one was found already or `values` are finite.
    func check(_ values: UnsafeMutablePointer<Float>, _ count: Int, _ layer: Layer, _ x: Tensor, _ what: String) {
        guard firstNonFinite == nil, !Vec.allFinite(values, count) else { return }
        firstNonFinite = "\(what) of \(layerName(layer)) (\(describe(layer, x).0))"
    }

    /// Checks a forward or backward result and, in backward, the layer's parameter gradients.
    func check(_ result: Tensor, _ layer: Layer, _ x: Tensor, backward: Bool) {
        check(result.data, result.count, layer, x, backward ? "the input gradient" : "the forward output")
        if backward { for q in layer.parameters { check(q.grad, q.count, layer, x, "the gradient of \(q.name)") } }
    }

    public func reset() { entries = [:]; order = [] }

    public func measure<T>(_ key: String, flops: Double = 0, _ body: () -> T) -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        if entries[key] == nil { order.append(key) }
        entries[key, default: Entry()].seconds += dt
        entries[key, default: Entry()].calls += 1
        entries[key, default: Entry()].flops += flops
        return r
    }
}

/// A layer's `state_dict` prefix (`layer2.0.conv1`), or its type for layers without parameters.
func layerName(_ l: Layer) -> String {
    if let b = l as? BatchNorm2d { return b.name }
    guard let n = l.parameters.first?.name else { return "\(type(of: l))" }
    return n.hasSuffix(".weight") ? String(n.dropLast(7)) : n
}

/// A short description of a layer for profiles.
func describe(_ l: Layer, _ x: Tensor) -> (String, Double) {
    let shape = x.shape.count == 4 ? "\(x.shape[2])×\(x.shape[3])" : ""
    switch l {
    case let c as Conv2d:
        let g = ConvGeometry(n: x.shape[0], c: c.inChannels, h: x.shape[2], w: x.shape[3], kh: c.kernel, kw: c.kernel,
                             stride: c.stride, pad: c.padding)
        let flops = 2.0 * Double(g.cols * c.outChannels * g.rows)
        return ("conv\(c.kernel)x\(c.kernel) \(c.inChannels)→\(c.outChannels) s\(c.stride) @\(shape)", flops)
    case let b as BatchNorm2d: return ("batchnorm \(b.channels) @\(shape)", 0)
    case is ReLU: return ("relu @\(shape)", 0)
    case is GlobalAvgPool: return ("avgpool", 0)
    case is Linear: return ("linear", 0)
    default: return ("\(type(of: l))", 0)
    }
}

extension Layer {
    /// `forward`, timed (or checked) under `profiler` when one is given: for models built
    /// outside the library.
    public func forward(_ x: Tensor, mode: Mode, profiler: StepProfiler?) -> Tensor { fwd(x, mode, profiler) }

    /// `backward`, timed (or checked) under `profiler`; `x` is the forward input (for the description).
    public func backward(_ dy: Tensor, input x: Tensor, profiler: StepProfiler?) -> Tensor { bwd(dy, x, profiler) }

    /// `forward`, timed under this layer's description when `profiler` is set.
    @inline(__always)
    func fwd(_ x: Tensor, _ mode: Mode, _ p: StepProfiler?) -> Tensor {
        guard let p else { return forward(x, mode: mode) }
        if p.checkFinite { let y = forward(x, mode: mode); p.check(y, self, x, backward: false); return y }
        let (k, f) = describe(self, x)
        return p.measure(k + " fwd", flops: f) { forward(x, mode: mode) }
    }

    /// `backward`, timed when `profiler` is set; `x` is the forward input (for the description).
    @inline(__always)
    func bwd(_ dy: Tensor, _ x: Tensor, _ p: StepProfiler?) -> Tensor {
        guard let p else { return backward(dy) }
        if p.checkFinite { let g = backward(dy); p.check(g, self, x, backward: true); return g }
        let (k, f) = describe(self, x)
        return p.measure(k + " bwd", flops: 2 * f) { backward(dy) }
    }
}

extension BatchNorm2d {
    /// `forward` with a residual added (and the ReLU), timed like `fwd`.
    @inline(__always)
    func fwd(_ x: Tensor, residual: Tensor, _ mode: Mode, _ p: StepProfiler?) -> Tensor {
        guard let p else { return forward(x, residual: residual, mode: mode) }
        if p.checkFinite { let y = forward(x, residual: residual, mode: mode); p.check(y, self, x, backward: false); return y }
        let (k, _) = describe(self, x)
        return p.measure(k + " fwd") { forward(x, residual: residual, mode: mode) }
    }
}
