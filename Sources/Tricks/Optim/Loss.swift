import Foundation

/// Softmax cross-entropy averaged over the batch, with label smoothing as
/// He et al. 2019 (arXiv 1812.01187) §5.2 define it: the target puts 1−ε on the
/// true class and ε/(K−1) on each of the other K−1 classes.
public final class SoftmaxCrossEntropy {
    public var labelSmoothing: Double
    /// ∂loss/∂logits, `(N, K)`, after `forward`.
    public let grad = Tensor(shape: [0])
    /// Each row's loss (not divided by the normalizer), after `forward`.
    public private(set) var rowLosses: [Double] = []

    public init(labelSmoothing: Double = 0) { self.labelSmoothing = labelSmoothing }

    /// The target distribution's value for class `k` given true class `y`.
    @inline(__always)
    func target(_ k: Int, _ y: Int, classes K: Int) -> Double {
        k == y ? 1 - labelSmoothing : labelSmoothing / Double(K - 1)
    }

    /// Returns the mean loss over the batch and fills `grad`; `normalizer` (default N)
    /// divides the summed loss and gradient, so ranks can average over a global batch.
    /// logits: `(N, K)`; labels: N class indices.
    @discardableResult
    public func forward(logits: Tensor, labels: [Int32], normalizer: Int? = nil) -> Double {
        forward(logits: logits, labels: labels, mixedWith: nil, lambdas: nil, normalizer: normalizer)
    }

    /// Mixup's loss, λ·CE(ŷ, y) + (1−λ)·CE(ŷ, y′) per row, each target label-smoothed.
    /// Cross-entropy is linear in the target, so this is CE against the mixed target.
    @discardableResult
    public func forward(logits: Tensor, labels: [Int32], mixedWith partnerLabels: [Int32]?, lambdas: [Float]?,
                        normalizer: Int? = nil) -> Double {
        let N = logits.shape[0], K = logits.shape[1]
        precondition(labels.count == N, "\(labels.count) labels for \(N) rows")
        grad.resize([N, K])
        let denom = Double(normalizer ?? N)
        if rowLosses.count != N { rowLosses = [Double](repeating: 0, count: N) }
        guard N > 0 else { return 0 }
        var total = 0.0
        var p = [Double](repeating: 0, count: K)
        for n in 0..<N {
            var rowLoss = 0.0
            let row = logits.data + n * K
            var mx = -Double.infinity
            for k in 0..<K { mx = max(mx, Double(row[k])) }
            var z = 0.0
            for k in 0..<K { p[k] = Foundation.exp(Double(row[k]) - mx); z += p[k] }
            let logZ = Foundation.log(z) + mx
            let y = Int(labels[n])
            let y2 = partnerLabels.map { Int($0[n]) } ?? y, lam = lambdas.map { Double($0[n]) } ?? 1
            for k in 0..<K {
                let t = lam * target(k, y, classes: K) + (1 - lam) * target(k, y2, classes: K)
                rowLoss -= t * (Double(row[k]) - logZ)
                grad.data[n * K + k] = Float((p[k] / z - t) / denom)
            }
            rowLosses[n] = rowLoss
            total += rowLoss
        }
        return total / denom
    }
}
