import Foundation

/// max(x, slope·x), element-wise (YOLOv3 uses slope 0.1), as `torch.nn.LeakyReLU`.
public final class LeakyReLU: Layer {
    public let slope: Float
    private var input: Tensor?
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])

    public init(slope: Float = 0.1) { self.slope = slope }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        input = x
        y.resize(x.shape)
        let s = slope, src = x.data, dst = y.data
        for i in 0..<x.count { let v = src[i]; dst[i] = v > 0 ? v : s * v }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("LeakyReLU.backward before forward") }
        dx.resize(dy.shape)
        let s = slope, g = dy.data, src = x.data, dst = dx.data
        for i in 0..<dy.count { dst[i] = src[i] > 0 ? g[i] : s * g[i] }
        return dx
    }
}

/// 1 / (1 + e^(−x)), element-wise.
public final class Sigmoid: Layer {
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])
    public init() {}

    /// σ(x), computed without overflow for large |x|.
    @inline(__always) public static func sigmoid(_ x: Float) -> Float {
        x >= 0 ? 1 / (1 + expf(-x)) : { let e = expf(x); return e / (1 + e) }()
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        y.resize(x.shape)
        for i in 0..<x.count { y.data[i] = Sigmoid.sigmoid(x.data[i]) }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        dx.resize(dy.shape)
        for i in 0..<dy.count { let s = y.data[i]; dx.data[i] = dy.data[i] * s * (1 - s) }
        return dx
    }
}

/// Nearest-neighbour upsampling by 2: `(N, C, H, W)` → `(N, C, 2H, 2W)`, as
/// `torch.nn.Upsample(scale_factor=2, mode="nearest")`. Backward sums each 2×2 block.
public final class Upsample2x: Layer {
    private var inShape: [Int] = []
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])
    public init() {}

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        precondition(x.shape.count == 4, "Upsample2x takes (N, C, H, W)")
        inShape = x.shape
        let H = x.shape[2], W = x.shape[3], planes = x.shape[0] * x.shape[1]
        y.resize([x.shape[0], x.shape[1], 2 * H, 2 * W])
        Parallel.ranges(planes, cost: 4 * H * W) { lo, hi in
            for p in lo..<hi {
                let s = x.data + p * H * W, d = y.data + p * 4 * H * W
                for i in 0..<H {
                    let r0 = d + 2 * i * 2 * W, r1 = r0 + 2 * W
                    for j in 0..<W { let v = s[i * W + j]; r0[2 * j] = v; r0[2 * j + 1] = v }
                    r1.update(from: r0, count: 2 * W)
                }
            }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let H = inShape[2], W = inShape[3], planes = inShape[0] * inShape[1]
        dx.resize(inShape)
        Parallel.ranges(planes, cost: 4 * H * W) { lo, hi in
            for p in lo..<hi {
                let g = dy.data + p * 4 * H * W, d = dx.data + p * H * W
                for i in 0..<H {
                    let r0 = g + 2 * i * 2 * W, r1 = r0 + 2 * W
                    for j in 0..<W { d[i * W + j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]) }
                }
            }
        }
        return dx
    }
}

/// Channel concatenation of two `(N, C₁, H, W)` and `(N, C₂, H, W)` tensors, as
/// `torch.cat([a, b], dim=1)`; backward splits the gradient.
public final class Concat {
    private var ca = 0, cb = 0, plane = 0, n = 0
    private let y = Tensor(shape: [0])
    private let da = Tensor(shape: [0])
    private let db = Tensor(shape: [0])
    public init() {}

    public func forward(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape.count == 4 && b.shape.count == 4 && a.shape[0] == b.shape[0]
                     && a.shape[2] == b.shape[2] && a.shape[3] == b.shape[3], "Concat: shapes \(a.shape) and \(b.shape) differ outside dim 1")
        n = a.shape[0]; ca = a.shape[1]; cb = b.shape[1]; plane = a.shape[2] * a.shape[3]
        y.resize([n, ca + cb, a.shape[2], a.shape[3]])
        for i in 0..<n {
            (y.data + i * (ca + cb) * plane).update(from: a.data + i * ca * plane, count: ca * plane)
            (y.data + (i * (ca + cb) + ca) * plane).update(from: b.data + i * cb * plane, count: cb * plane)
        }
        return y
    }

    /// The gradients of `a` and `b`.
    public func backward(_ dy: Tensor) -> (Tensor, Tensor) {
        da.resize([n, ca, dy.shape[2], dy.shape[3]]); db.resize([n, cb, dy.shape[2], dy.shape[3]])
        for i in 0..<n {
            da.data.advanced(by: i * ca * plane).update(from: dy.data + i * (ca + cb) * plane, count: ca * plane)
            db.data.advanced(by: i * cb * plane).update(from: dy.data + (i * (ca + cb) + ca) * plane, count: cb * plane)
        }
        return (da, db)
    }
}

/// Element-wise sum of two tensors of one shape; the gradient of each is `dy`.
public final class Add {
    private let y = Tensor(shape: [0])
    public init() {}

    public func forward(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "Add: shapes \(a.shape) and \(b.shape) differ")
        y.resize(a.shape)
        for i in 0..<a.count { y.data[i] = a.data[i] + b.data[i] }
        return y
    }

    /// The gradient of both inputs (the same tensor).
    public func backward(_ dy: Tensor) -> Tensor { dy }
}

/// Weight initializers, usable on any layer's parameters (as `torch.nn.init`). Draws come from
/// the generator passed in, so every rank can make the same model from one seed.
public enum Initializer {
    /// `fan_in` and `fan_out` of a weight of shape `(out, in, k…)` or `(out, in)`.
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape.count > 1 ? shape[1] * receptive : shape[0], shape[0] * receptive)
    }

    /// He/Kaiming normal: N(0, gain²/fan), gain √(2/(1+a²)) for a leaky ReLU of slope `a`
    /// (`kaiming_normal_`, mode `fan_in` or `fan_out`).
    public static func kaimingNormal(_ p: Parameter, slope: Double = 0, fanOut: Bool = false, rng: inout SplitMix64) {
        let f = fans(p.shape), fan = Double(fanOut ? f.fanOut : f.fanIn)
        let std = (2 / (1 + slope * slope) / fan).squareRoot()
        for i in 0..<p.count { p.value[i] = Float(rng.normal() * std) }
    }

    /// U(−bound, bound).
    public static func uniform(_ p: Parameter, bound: Double, rng: inout SplitMix64) {
        for i in 0..<p.count { p.value[i] = Float((2 * rng.uniform() - 1) * bound) }
    }

    /// PyTorch's default for `Conv2d` and `Linear`: weight `kaiming_uniform_(a=√5)`, i.e.
    /// U(±1/√fan_in), and bias U(±1/√fan_in).
    public static func pytorchDefault(weight: Parameter, bias: Parameter?, rng: inout SplitMix64) {
        let bound = 1 / Double(fans(weight.shape).fanIn).squareRoot()
        uniform(weight, bound: bound, rng: &rng)
        if let bias { uniform(bias, bound: bound, rng: &rng) }
    }

    public static func constant(_ p: Parameter, _ v: Float) { p.values.update(repeating: v) }
}
