import CKernels
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
    /// The deterministic mode: statistics over every rank's batch, summed per micro-shard and
    /// along `MicroShards`' fixed tree instead of through `group`, so they come out the same for
    /// any number of ranks; γ and β gradients go into each shard's gradient.
    public var shards: MicroShards?
    public let name: String
    /// Apply ReLU to the output (BN followed by ReLU in one pass, forward and backward).
    public var fusedReLU = false

    private let y = Tensor(shape: [0])
    /// The tensor backward writes the input gradient into and returns (see `Conv2d.gradientBuffer`).
    public var gradientBuffer = Tensor(shape: [0])
    /// The forward's input, read again by backward (which recomputes x̂ from it rather than
    /// keeping a normalized copy): it must not change between the two.
    private var input: Tensor?
    private let mean: UnsafeMutablePointer<Double>    // (C) the mean the forward subtracted
    private let invStd: UnsafeMutablePointer<Double>  // (C)
    private let stats: UnsafeMutablePointer<Double>   // [Σ·(C), Σ·(C), n] exchange buffer
    private let constants: UnsafeMutablePointer<tk_bn_channel>   // (C) what the kernels apply per channel
    private var lastMode = Mode.training
    /// Exchange buffers of micro-shards 1, 2, … (shard 0's is `stats`).
    private var shardStats: [UnsafeMutablePointer<Double>] = []
    private var lastResidual = false
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
        mean = .allocate(capacity: channels); mean.initialize(repeating: 0, count: channels)
        invStd = .allocate(capacity: channels); invStd.initialize(repeating: 0, count: channels)
        stats = .allocate(capacity: 2 * channels + 1); stats.initialize(repeating: 0, count: 2 * channels + 1)
        constants = .allocate(capacity: channels); constants.initialize(repeating: tk_bn_channel(), count: channels)
    }

    deinit {
        runningMean.deallocate(); runningVar.deallocate(); numBatchesTracked.deallocate()
        mean.deallocate(); invStd.deallocate(); stats.deallocate(); constants.deallocate()
        shardStats.forEach { $0.deallocate() }
    }

    /// The exchange buffers of this rank's `k` micro-shards, in shard order.
    private func shardBuffers(_ k: Int) -> [UnsafeMutablePointer<Double>] {
        while shardStats.count < k - 1 {
            let b = UnsafeMutablePointer<Double>.allocate(capacity: 2 * channels + 1)
            b.initialize(repeating: 0, count: 2 * channels + 1)
            shardStats.append(b)
        }
        return [stats] + shardStats.prefix(k - 1)
    }

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
    public func forward(_ x: Tensor, mode: Mode) -> Tensor { forward(x, residual: nil, mode: mode) }

    /// `bn(x) + residual`, then the ReLU when `fusedReLU` (a residual block's output in one pass).
    /// Backward then returns the gradient for x; the residual's own is `dy` where `output > 0`
    /// (with the ReLU) or `dy` itself.
    public func forward(_ x: Tensor, residual: Tensor?, mode: Mode) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == channels, "\(name): expected (N, \(channels), H, W), got \(x.shape)")
        precondition(residual == nil || residual!.shape == x.shape,
                     "\(name): residual \(residual!.shape) does not match input \(x.shape)")
        let N = x.shape[0], C = channels, P = x.shape[2] * x.shape[3]
        y.resize(x.shape)
        input = x
        lastMode = mode
        lastResidual = residual != nil
        let xp = x.data, yp = y.data, rp = residual.map { UnsafePointer($0.data) }
        let relu: Int32 = fusedReLU ? 1 : 0
        let ks = constants, st = stats
        // The kernels take blocks of channels [c0, c1) (every image's runs of them in memory order).
        /// Normalizes channels [c0, c1) with mean and invStd.
        func normalize(_ c0: Int, _ c1: Int) {
            for c in c0..<c1 { setConstants(c) }
            let o = c0 * P
            tk_bn_forward(xp + o, rp.map { $0 + o }, yp + o, N, P, C * P, c1 - c0, ks + c0, relu)
        }
        if mode == .inference {
            Parallel.ranges(C, cost: N * P) { c0, c1 in
                for c in c0..<c1 {
                    mean[c] = Double(runningMean[c])
                    invStd[c] = 1 / (Double(runningVar[c]) + eps).squareRoot()
                }
                normalize(c0, c1)
            }
            return y
        }
        /// Per-channel Σx and Σx² in Double, of `runs` images from x + offset, into b[c] and b[C + c].
        func sums(_ c0: Int, _ c1: Int, offset: Int = 0, runs: Int = N, into b: UnsafeMutablePointer<Double> = st) {
            tk_bn_sums(xp + offset + c0 * P, runs, P, C * P, c1 - c0, b + c0, b + C + c0)
        }
        /// Normalizes channels [c0, c1) with the statistics in `stats` and moves their running statistics.
        func apply(_ c0: Int, _ c1: Int, _ count: Double) {
            for c in c0..<c1 {
                let m = st[c] / count
                let variance = max(st[C + c] / count - m * m, 0)
                mean[c] = m
                invStd[c] = 1 / (variance + eps).squareRoot()
                let unbiased = count > 1 ? variance * count / (count - 1) : variance
                runningMean[c] = Float((1 - momentum) * Double(runningMean[c]) + momentum * m)
                runningVar[c] = Float((1 - momentum) * Double(runningVar[c]) + momentum * unbiased)
            }
            normalize(c0, c1)
        }
        let count: Double
        if let shards {
            // Each micro-shard's sums alone, then the fixed tree over every rank's shards.
            let k = shards.local, m = shards.shardSize(N), parts = shardBuffers(k)
            Parallel.ranges(C, cost: N * P) { c0, c1 in
                for (j, b) in parts.enumerated() { sums(c0, c1, offset: j * m * C * P, runs: m, into: b) }
            }
            for b in parts { b[2 * C] = Double(m * P) }
            shards.comm.label("BatchNorm \(name) forward (Σx, Σx², n), fixed order")
            shards.sum(parts, count: 2 * C + 1)
            count = st[2 * C]
            globalCount = count
            if count == 0 { return y }
            Parallel.ranges(C, cost: N * P) { c0, c1 in apply(c0, c1, count) }
        } else if isSynced {
            // Statistics of every rank's batch: sums, one all-reduce, then normalize.
            Parallel.ranges(C, cost: N * P) { c0, c1 in sums(c0, c1) }
            st[2 * C] = Double(N * P)
            group!.label("SyncBatchNorm \(name) forward (Σx, Σx², n)")
            group!.allreduceSum(UnsafeMutableBufferPointer(start: st, count: 2 * C + 1))
            count = st[2 * C]
            globalCount = count
            if count == 0 { return y }  // every rank empty: nothing to normalize or track
            Parallel.ranges(C, cost: N * P) { c0, c1 in apply(c0, c1, count) }
        } else {
            // Local statistics: a thread's channels normalized right after their sums.
            count = Double(N * P)
            globalCount = count
            if count == 0 { return y }
            Parallel.ranges(C, cost: N * P) { c0, c1 in sums(c0, c1); apply(c0, c1, count) }
        }
        numBatchesTracked.pointee += 1
        return y
    }

    /// Channel c's constants for the kernels from mean, invStd, γ and β: the mean as two floats,
    /// hi + lo, so that x − mean stays accurate in float when the mean is large relative to the
    /// spread. The input gradient's k, a and c are set by backward.
    private func setConstants(_ c: Int) {
        let hi = Float(mean[c])
        constants[c] = tk_bn_channel(hi: hi, lo: Float(mean[c] - Double(hi)), s: Float(invStd[c]),
                                     g: weight.value[c], b: bias.value[c], k: 0, a: 0, c: 0)
    }

    /// The last forward's output (the mask of the ReLU when `fusedReLU`).
    public var output: Tensor { y }

    /// dy: `(N, C, H, W)` → dx; adds into γ and β gradients. x̂ is recomputed from the forward's
    /// input, and with the fused ReLU its mask from x̂ (or, after a residual, from the output)
    /// inside both passes rather than applied in a pass of its own.
    public func backward(_ dyIn: Tensor) -> Tensor {
        guard let x = input else { fatalError("\(name): backward before forward") }
        precondition(dyIn.shape == x.shape, "\(name): gradient \(dyIn.shape) does not match input \(x.shape)")
        let N = dyIn.shape[0], C = channels, P = dyIn.shape[2] * dyIn.shape[3], dx = gradientBuffer
        dx.resize(dyIn.shape)
        let dyp = dyIn.data, xp = x.data, yp = y.data, dxp = dx.data
        let mask: Int32 = !fusedReLU ? 0 : lastResidual ? 2 : 1
        let st = stats, ks = constants
        let training = lastMode == .training
        /// Σdy and Σdy·x̂ of channels [c0, c1) (of `runs` images from offset) into b[c], b[C + c]
        /// and the γ, β gradients dgamma and dbeta.
        func sums(_ c0: Int, _ c1: Int, offset: Int = 0, runs: Int = N, into b: UnsafeMutablePointer<Double> = st,
                  dgamma: UnsafeMutablePointer<Float> = weight.grad, dbeta: UnsafeMutablePointer<Float> = bias.grad) {
            let o = offset + c0 * P
            tk_bn_backward_sums(dyp + o, xp + o, yp + o, runs, P, C * P, c1 - c0, ks + c0, mask, b + c0, b + C + c0)
            for c in c0..<c1 {
                dgamma[c] += Float(b[C + c])
                dbeta[c] += Float(b[c])
            }
        }
        /// dx of channels [c0, c1) from the sums in `stats`.
        /// Training: dx = γ·σ⁻¹·(dy − Σdy/n − x̂·Σ(dy·x̂)/n), sums and n over the whole group.
        /// Inference: the statistics are constants, dx = γ·σ⁻¹·dy.
        func apply(_ c0: Int, _ c1: Int) {
            for c in c0..<c1 {
                ks[c].k = Float(Double(weight.value[c]) * invStd[c])
                if training {
                    let count = max(globalCount, 1)
                    ks[c].a = Float(st[c] / count); ks[c].c = Float(st[C + c] / count)
                } else {
                    ks[c].a = 0; ks[c].c = 0
                }
            }
            let o = c0 * P
            tk_bn_backward_dx(dyp + o, xp + o, yp + o, dxp + o, N, P, C * P, c1 - c0, ks + c0, mask)
        }
        // The forward's constants, with γ and β as they are now.
        for c in 0..<C { setConstants(c) }
        if training, let shards {
            let k = shards.local, m = shards.shardSize(N), parts = shardBuffers(k)
            let dgamma = weight.shardGrads.isEmpty ? [weight.grad] : weight.shardGrads
            let dbeta = bias.shardGrads.isEmpty ? [bias.grad] : bias.shardGrads
            Parallel.ranges(C, cost: N * P) { c0, c1 in
                for (j, b) in parts.enumerated() {
                    sums(c0, c1, offset: j * m * C * P, runs: m, into: b, dgamma: dgamma[j], dbeta: dbeta[j])
                }
            }
            shards.comm.label("BatchNorm \(name) backward (Σdy, Σdy·x̂), fixed order")
            shards.sum(parts, count: 2 * C)
            Parallel.ranges(C, cost: N * P) { c0, c1 in apply(c0, c1) }
        } else if training && isSynced {
            Parallel.ranges(C, cost: N * P) { c0, c1 in sums(c0, c1) }
            st[2 * C] = 0
            group!.label("SyncBatchNorm \(name) backward (Σdy, Σdy·x̂)")
            group!.allreduceSum(UnsafeMutableBufferPointer(start: st, count: 2 * C))
            Parallel.ranges(C, cost: N * P) { c0, c1 in apply(c0, c1) }
        } else {
            // Local sums: a thread's channels' dx right after their sums.
            Parallel.ranges(C, cost: N * P) { c0, c1 in sums(c0, c1); apply(c0, c1) }
        }
        return dx
    }
}
