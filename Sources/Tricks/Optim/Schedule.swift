import Foundation

/// A learning-rate schedule: a pure function of the (0-based) step.
public struct LRSchedule: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// `lr` at every step.
        case constant
        /// `lr·0.1^k` after the k-th boundary in `stepBoundaries` (in steps).
        case step
        /// Linear warmup then cosine decay (Loshchilov & Hutter 2016; He et al. 2019 §3.1, §5.1).
        case cosine
    }
    public var kind: Kind
    /// The base rate.
    public var lr: Double
    /// Warmup steps W: the rate is `lr·(i+1)/W` for i < W (every kind).
    public var warmupSteps: Int
    /// T, the total number of steps.
    public var totalSteps: Int
    /// Steps at which `step` multiplies the rate by 0.1.
    public var stepBoundaries: [Int]

    public init(kind: Kind, lr: Double, warmupSteps: Int = 0, totalSteps: Int, stepBoundaries: [Int] = []) {
        self.kind = kind; self.lr = lr; self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps; self.stepBoundaries = stepBoundaries
    }

    /// The rate at step i.
    public func rate(at i: Int) -> Double {
        if i < warmupSteps { return lr * Double(i + 1) / Double(warmupSteps) }
        switch kind {
        case .constant:
            return lr
        case .step:
            return lr * pow(0.1, Double(stepBoundaries.filter { i >= $0 }.count))
        case .cosine:
            let span = totalSteps - warmupSteps
            guard span > 0 else { return lr }
            let t = Double(min(i - warmupSteps, span)) / Double(span)
            return 0.5 * lr * (1 + cos(Double.pi * t))
        }
    }
}
