import Foundation

/// Accumulates wall time per layer and direction, for benchmarks.
public final class StepProfiler {
    public struct Entry { public var seconds = 0.0; public var calls = 0; public var flops = 0.0 }
    public private(set) var entries: [String: Entry] = [:]
    /// Keys in first-seen order.
    public private(set) var order: [String] = []

    public init() {}

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
    /// `forward`, timed under this layer's description when `profiler` is set.
    @inline(__always)
    func fwd(_ x: Tensor, _ mode: Mode, _ p: StepProfiler?) -> Tensor {
        guard let p else { return forward(x, mode: mode) }
        let (k, f) = describe(self, x)
        return p.measure(k + " fwd", flops: f) { forward(x, mode: mode) }
    }

    /// `backward`, timed when `profiler` is set; `x` is the forward input (for the description).
    @inline(__always)
    func bwd(_ dy: Tensor, _ x: Tensor, _ p: StepProfiler?) -> Tensor {
        guard let p else { return backward(dy) }
        let (k, f) = describe(self, x)
        return p.measure(k + " bwd", flops: 2 * f) { backward(dy) }
    }
}

extension BatchNorm2d {
    /// `forward` with a residual added (and the ReLU), timed like `fwd`.
    @inline(__always)
    func fwd(_ x: Tensor, residual: Tensor, _ mode: Mode, _ p: StepProfiler?) -> Tensor {
        guard let p else { return forward(x, residual: residual, mode: mode) }
        let (k, _) = describe(self, x)
        return p.measure(k + " fwd") { forward(x, residual: residual, mode: mode) }
    }
}
