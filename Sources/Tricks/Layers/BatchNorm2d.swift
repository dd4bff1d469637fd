import Foundation

/// Batch normalization over NCHW with PyTorch's semantics, optionally synchronized.
///
/// Training mode normalizes with the batch mean and biased variance, with
/// per-channel sums accumulated in Double, and updates the running statistics
/// (`running = 0.9·running + 0.1·batch`, running variance unbiased by n/(n−1)).
/// Inference mode uses the running statistics.
///
/// With a `group` of more than one rank it is SyncBatchNorm: forward all-reduces
/// the per-channel `[Σx, Σx², n]` (2C+1 doubles) and backward `[Σdy, Σdy·x̂]`
/// (2C doubles), so statistics and input gradients cover the whole group's
/// batch. γ/β gradients stay local (they go through the gradient all-reduce).
/// A rank with an empty batch still joins both collectives.
/// See Ioffe & Szegedy 2015 (arXiv 1502.03167); Zhang et al. 2019 (arXiv 1902.04103) §3.
public final class BatchNorm2d: Layer {
    public let channels: Int
    public let eps: Double
    public let momentum: Double
    /// γ, `(C)`.
    public let weight: Parameter
    /// β, `(C)`.
    public let bias: Parameter
    /// `(C)`
    public let runningMean: UnsafeMutablePointer<Float>
    /// `(C)`
    public let runningVar: UnsafeMutablePointer<Float>
    public let numBatchesTracked: UnsafeMutablePointer<Int64>
    /// Ranks whose batches are normalized together; nil or size 1 means local statistics.
    public var group: Communicator?
    public let name: String
    /// Apply ReLU to the output (BN followed by ReLU in one pass, forward and backward).
    public var fusedReLU = false

    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])
    private let xhat = Tensor(shape: [0])            // (N, C, H, W) normalized input
    private var invStd: [Double]                      // (C)
    private var stats: [Double]                       // [Σ·(C), Σ·(C), n] exchange buffer
    private var lastMode = Mode.training
    private var globalCount = 0.0

    public init(_ name: String, _ channels: Int, eps: Double = 1e-5, momentum: Double = 0.1) {
        self.name = name
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        weight = Parameter(name: name + ".weight", shape: [channels], isBiasOrNorm: true)
        bias = Parameter(name: name + ".bias", shape: [channels], isBiasOrNorm: true)
        weight.values.update(repeating: 1)
        runningMean = .allocate(capacity: channels); runningMean.initialize(repeating: 0, count: channels)
        runningVar = .allocate(capacity: channels); runningVar.initialize(repeating: 1, count: channels)
        numBatchesTracked = .allocate(capacity: 1); numBatchesTracked.initialize(to: 0)
        invStd = .init(repeating: 0, count: channels)
        stats = .init(repeating: 0, count: 2 * channels + 1)
    }

    deinit { runningMean.deallocate(); runningVar.deallocate(); numBatchesTracked.deallocate() }

    public var parameters: [Parameter] { [weight, bias] }

    public var state: [StateTensor] {
        [StateTensor(name: weight.name, shape: [channels], storage: .float(weight.value)),
         StateTensor(name: bias.name, shape: [channels], storage: .float(bias.value)),
         StateTensor(name: name + ".running_mean", shape: [channels], storage: .float(runningMean)),
         StateTensor(name: name + ".running_var", shape: [channels], storage: .float(runningVar)),
         StateTensor(name: name + ".num_batches_tracked", shape: [], storage: .int64(numBatchesTracked))]
    }

    private var isSynced: Bool { (group?.size ?? 1) > 1 }

    /// x: `(N, C, H, W)` → y of the same shape.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == channels, "\(name): expected (N, \(channels), H, W), got \(x.shape)")
        let N = x.shape[0], C = channels, P = x.shape[2] * x.shape[3]
        y.resize(x.shape); xhat.resize(x.shape)
        lastMode = mode
        let xp = x.data, yp = y.data, hp = xhat.data
        let gamma = weight.value, beta = bias.value
        if mode == .inference {
            for c in 0..<C {
                let istd = 1 / (Double(runningVar[c]) + eps).squareRoot()
                invStd[c] = istd
                let m = Double(runningMean[c]), s = Float(istd), g = gamma[c], b = beta[c]
                for n in 0..<N {
                    let o = (n * C + c) * P
                    normalize(xp + o, hp + o, yp + o, P, m, s, g, b)
                }
            }
            return y
        }
        // Per-channel Σx and Σx² in Double.
        stats.withUnsafeMutableBufferPointer { st in
            for c in 0..<C {
                var s1 = 0.0, s2 = 0.0
                for n in 0..<N {
                    let (a, b) = Vec.sums(xp + (n * C + c) * P, P)
                    s1 += a; s2 += b
                }
                st[c] = s1; st[C + c] = s2
            }
            st[2 * C] = Double(N * P)
            if isSynced { group!.allreduceSum(st) }
        }
        let count = stats[2 * C]
        globalCount = count
        if count == 0 { return y }  // every rank empty: nothing to normalize or track
        for c in 0..<C {
            let mean = stats[c] / count
            let variance = max(stats[C + c] / count - mean * mean, 0)
            let istd = 1 / (variance + eps).squareRoot()
            invStd[c] = istd
            let m = mean, s = Float(istd), g = gamma[c], b = beta[c]
            for n in 0..<N {
                let o = (n * C + c) * P
                normalize(xp + o, hp + o, yp + o, P, m, s, g, b)
            }
            let unbiased = count > 1 ? variance * count / (count - 1) : variance
            runningMean[c] = Float((1 - momentum) * Double(runningMean[c]) + momentum * mean)
            runningVar[c] = Float((1 - momentum) * Double(runningVar[c]) + momentum * unbiased)
        }
        numBatchesTracked.pointee += 1
        return y
    }

    @inline(__always)
    private func normalize(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                           _ n: Int, _ m: Double, _ s: Float, _ g: Float, _ b: Float) {
        if fusedReLU { Vec.normalizeReLU(x, h, y, n, mean: m, scale: s, gamma: g, beta: b) }
        else { Vec.normalize(x, h, y, n, mean: m, scale: s, gamma: g, beta: b) }
    }

    /// dy: `(N, C, H, W)` → dx; adds into γ and β gradients. With the fused ReLU the mask
    /// is recomputed from x̂ inside both passes rather than applied in a pass of its own.
    public func backward(_ dyIn: Tensor) -> Tensor {
        let N = dyIn.shape[0], C = channels, P = dyIn.shape[2] * dyIn.shape[3]
        dx.resize(dyIn.shape)
        let dyp = dyIn.data, hp = xhat.data, dxp = dx.data
        let gamma = weight.value, beta = bias.value
        stats.withUnsafeMutableBufferPointer { st in
            for c in 0..<C {
                var s1 = 0.0, s2 = 0.0
                for n in 0..<N {
                    let o = (n * C + c) * P
                    let (a, b) = fusedReLU ? Vec.dotSumsReLU(dyp + o, hp + o, P, gamma: gamma[c], beta: beta[c])
                                           : Vec.dotSums(dyp + o, hp + o, P)
                    s1 += a; s2 += b
                }
                st[c] = s1; st[C + c] = s2
                weight.grad[c] += Float(s2)
                bias.grad[c] += Float(s1)
            }
            if lastMode == .training && isSynced {
                st[2 * C] = 0
                group!.allreduceSum(UnsafeMutableBufferPointer(rebasing: st[0..<2 * C]))
            }
        }
        for c in 0..<C {
            let s = Float(Double(gamma[c]) * invStd[c])
            // Training: dx = γ·σ⁻¹·(dy − Σdy/n − x̂·Σ(dy·x̂)/n), sums and n over the whole group.
            // Inference: the statistics are constants, dx = γ·σ⁻¹·dy.
            var mdy: Float = 0, mdyx: Float = 0
            if lastMode == .training {
                let count = max(globalCount, 1)
                mdy = Float(stats[c] / count); mdyx = Float(stats[C + c] / count)
            }
            for n in 0..<N {
                let o = (n * C + c) * P
                if fusedReLU {
                    Vec.bnBackwardReLU(dyp + o, hp + o, dxp + o, P, scale: s, meanDy: mdy, meanDyH: mdyx,
                                       gamma: gamma[c], beta: beta[c])
                } else {
                    Vec.bnBackward(dyp + o, hp + o, dxp + o, P, scale: s, meanDy: mdy, meanDyH: mdyx)
                }
            }
        }
        return dx
    }
}
