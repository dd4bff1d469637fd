import Foundation

/// Geometry-preserving mixup for detection (Zhang et al. 2019, arXiv 1902.04103 §3.1): two
/// images are blended at (0, 0) on a canvas of max(H) × max(W) without resizing either; the
/// boxes of both are kept, weighted λ and 1 − λ, the weight multiplying their loss. λ ~ Beta(α, α)
/// with α = 1.5 by default. Partners and λ are keyed by `(seed, epoch, sample)`, like
/// classification mixup, never by rank.
public struct DetectionMixup: Sendable, Equatable {
    public var alpha: Double
    public var seed: UInt64

    public init(alpha: Double = 1.5, seed: UInt64) { self.alpha = alpha; self.seed = seed }

    /// Sample `i`'s partner (any of the `datasetSize` samples) and λ, the weight of sample `i`.
    public func pair(sample i: Int, epoch: Int, datasetSize: Int) -> (partner: Int, lambda: Double) {
        var rng = SplitMix64(key: [seed, UInt64(epoch), UInt64(i), 0x444D_4958])
        let j = rng.below(datasetSize)
        return (j, min(max(Mixup.beta(alpha, alpha, &rng), 0), 1))
    }

    /// λ·a + (1−λ)·b, each at (0, 0) on a max(H)×max(W) canvas (zero where neither reaches),
    /// with a's boxes weighted λ and b's 1 − λ (on top of any weight they had).
    public static func mix(_ a: DetectionSample, _ b: DetectionSample, lambda: Double) -> DetectionSample {
        precondition(a.image.channels == b.image.channels, "mixup of images with different channel counts")
        let W = max(a.image.width, b.image.width), H = max(a.image.height, b.image.height), C = a.image.channels
        var acc = [Float](repeating: 0, count: W * H * C)
        for (im, w) in [(a.image, Float(lambda)), (b.image, Float(1 - lambda))] {
            for y in 0..<im.height {
                for x in 0..<im.width {
                    for c in 0..<C { acc[(y * W + x) * C + c] += w * Float(im[x, y, c]) }
                }
            }
        }
        let px = acc.map { UInt8(min(max($0.rounded(), 0), 255)) }
        let boxes = a.boxes.map { var t = $0; t.weight *= lambda; return t }
            + b.boxes.map { var t = $0; t.weight *= 1 - lambda; return t }
        return DetectionSample(image: Image(width: W, height: H, channels: C, pixels: px), boxes: boxes)
    }
}
