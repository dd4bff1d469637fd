import Foundation

/// Mixup (Zhang et al. 2018, arXiv 1710.09412; He et al. 2019 §5.3): train on
/// x̂ = λ·x_i + (1−λ)·x_j with loss λ·CE(ŷ, y_i) + (1−λ)·CE(ŷ, y_j), λ ~ Beta(α, α).
///
/// The partner j and λ of sample i come from a generator keyed by
/// `(seed, epoch, i)`, not from the local batch, so mixup works with one sample
/// per worker and the global batch does not depend on the number of workers.
public struct Mixup: Sendable, Equatable {
    public var alpha: Double
    public var seed: UInt64

    public init(alpha: Double, seed: UInt64) { self.alpha = alpha; self.seed = seed }

    /// The partner index (any of the `datasetSize` training samples) and λ for sample `i`.
    public func pair(sample i: Int, epoch: Int, datasetSize: Int) -> (partner: Int, lambda: Double) {
        var rng = SplitMix64(key: [seed, UInt64(epoch), UInt64(i), 0x4D49_5855])
        let j = rng.below(datasetSize)
        return (j, Self.beta(alpha, alpha, &rng))
    }

    /// A Beta(a, b) draw from two Gamma draws.
    static func beta(_ a: Double, _ b: Double, _ rng: inout SplitMix64) -> Double {
        let x = gamma(a, &rng), y = gamma(b, &rng)
        return x + y > 0 ? x / (x + y) : 0.5
    }

    /// A Gamma(k, 1) draw (Marsaglia & Tsang 2000; k < 1 by boosting).
    static func gamma(_ k: Double, _ rng: inout SplitMix64) -> Double {
        if k < 1 {
            let u = max(rng.uniform(), 1e-300)
            return gamma(k + 1, &rng) * pow(u, 1 / k)
        }
        let d = k - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat { x = rng.normal(); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = rng.uniform()
            if u < 1 - 0.0331 * x * x * x * x { return d * v }
            if log(max(u, 1e-300)) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }
}

/// Zero-γ initialization (Goyal et al. 2017, arXiv 1706.02677; He et al. 2019 §3.1):
/// the BN layers whose γ starts at 0, the last BN of every residual block (`bn2`),
/// so each block starts as its shortcut.
public func zeroGammaLayers(_ model: ResNet) -> [BatchNorm2d] {
    model.stages.flatMap { $0 }.map(\.bn2)
}

/// The linear scaling rule (Goyal et al. 2017; He et al. 2019 §3.1): `per256 · B / 256`
/// for global batch B.
public func linearScaledLR(per256: Double, batchSize: Int) -> Double { per256 * Double(batchSize) / 256 }
