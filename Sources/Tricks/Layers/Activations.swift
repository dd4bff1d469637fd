/// max(x, 0), element-wise.
public final class ReLU: Layer {
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])
    public init() {}

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        y.resize(x.shape)
        Vec.relu(x.data, y.data, x.count)
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        dx.resize(dy.shape)
        Vec.reluBackward(dy.data, y.data, dx.data, dy.count)
        return dx
    }
}

/// Global average pooling: `(N, C, H, W)` → `(N, C)`.
public final class GlobalAvgPool: Layer {
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])
    private var inShape: [Int] = []
    public init() {}

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let N = x.shape[0], C = x.shape[1], P = x.shape[2] * x.shape[3]
        inShape = x.shape
        y.resize([N, C])
        for i in 0..<N * C {
            let row = x.data + i * P
            var s: Float = 0
            for k in 0..<P { s += row[k] }
            y.data[i] = s / Float(P)
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        dx.resize(inShape)
        let P = inShape[2] * inShape[3]
        for i in 0..<dy.count {
            let v = dy.data[i] / Float(P)
            (dx.data + i * P).update(repeating: v, count: P)
        }
        return dx
    }
}

/// Fully connected layer `y = x·Wᵀ + b`, as `torch.nn.Linear`.
public final class Linear: Layer {
    public let inFeatures, outFeatures: Int
    /// `(out, in)`
    public let weight: Parameter
    /// `(out)`, or nil without bias.
    public let bias: Parameter?
    private var input: Tensor?
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])

    public init(_ name: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures
        weight = Parameter(name: name + ".weight", shape: [outFeatures, inFeatures])
        self.bias = bias ? Parameter(name: name + ".bias", shape: [outFeatures], isBiasOrNorm: true) : nil
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// x: `(N, in)` → `(N, out)`.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let N = x.shape[0]
        precondition(x.count == N * inFeatures, "\(weight.name): expected (N, \(inFeatures)), got \(x.shape)")
        input = x
        y.resize([N, outFeatures])
        if let b = bias {
            for n in 0..<N { (y.data + n * outFeatures).update(from: b.value, count: outFeatures) }
        }
        if N > 0 {
            BLAS.gemm(transB: true, m: N, n: outFeatures, k: inFeatures, a: x.data, lda: inFeatures,
                      b: weight.value, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y.data, ldc: outFeatures)
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { fatalError("\(weight.name): backward before forward") }
        let N = x.shape[0]
        dx.resize(x.shape)
        if N == 0 { return dx }
        // dW (out, in) += dyᵀ (out, N) · x (N, in)
        BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: N, a: dy.data, lda: outFeatures,
                  b: x.data, ldb: inFeatures, beta: 1, c: weight.grad, ldc: inFeatures)
        if let b = bias {
            for n in 0..<N { for o in 0..<outFeatures { b.grad[o] += dy.data[n * outFeatures + o] } }
        }
        // dx (N, in) = dy (N, out) · W (out, in)
        BLAS.gemm(m: N, n: inFeatures, k: outFeatures, a: dy.data, lda: outFeatures, b: weight.value,
                  ldb: inFeatures, beta: 0, c: dx.data, ldc: inFeatures)
        return dx
    }
}
