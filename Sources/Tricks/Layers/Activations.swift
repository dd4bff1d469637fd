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
        // GEMM shapes follow the batch, so with micro-shards each shard runs alone.
        let (k, m) = mode == .training ? shardSplit(N) : (1, N)
        for s in 0..<k where m > 0 {
            BLAS.gemm(transB: true, m: m, n: outFeatures, k: inFeatures, a: x.data + s * m * inFeatures, lda: inFeatures,
                      b: weight.value, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y.data + s * m * outFeatures,
                      ldc: outFeatures)
        }
        return y
    }

    /// The micro-shards of a batch of `n` rows (`ParameterStore.splitGradients`): count, rows each.
    private func shardSplit(_ n: Int) -> (count: Int, size: Int) {
        let k = max(weight.shardGrads.count, 1)
        precondition(n % k == 0, "\(weight.name): \(n) rows do not split into \(k) micro-shards")
        return (k, n / k)
    }

    /// Adds into the weight (and bias) gradient, each micro-shard's rows into its own when split.
    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { fatalError("\(weight.name): backward before forward") }
        let N = x.shape[0]
        dx.resize(x.shape)
        if N == 0 { return dx }
        let (k, m) = shardSplit(N)
        for s in 0..<k {
            let dys = dy.data + s * m * outFeatures, xs = x.data + s * m * inFeatures
            // dW (out, in) += dyᵀ (out, m) · x (m, in)
            BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: m, a: dys, lda: outFeatures,
                      b: xs, ldb: inFeatures, beta: 1, c: k == 1 ? weight.grad : weight.shardGrads[s], ldc: inFeatures)
            if let b = bias {
                let db = k == 1 ? b.grad : b.shardGrads[s]
                for n in 0..<m { for o in 0..<outFeatures { db[o] += dys[n * outFeatures + o] } }
            }
            // dx (m, in) = dy (m, out) · W (out, in)
            BLAS.gemm(m: m, n: inFeatures, k: outFeatures, a: dys, lda: outFeatures, b: weight.value,
                      ldb: inFeatures, beta: 0, c: dx.data + s * m * inFeatures, ldc: inFeatures)
        }
        return dx
    }
}
