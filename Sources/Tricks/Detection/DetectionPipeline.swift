import Foundation

/// A batch as a detector sees it: letterboxed, normalized images and, per image, its boxes in
/// the input's pixels (any number per image), with their classes and loss weights.
public struct DetectionBatch: @unchecked Sendable {
    /// `(N, C, side, side)`: `(x/255 − mean_c)/std_c`.
    public var images: Tensor
    /// The boxes of each image.
    public var boxes: [[Box]]
    /// The input side of this batch (its random shape).
    public var side: Int
    /// The data-set index of each image.
    public var indices: [Int]
    /// How each image was letterboxed (to map predictions back).
    public var maps: [LetterboxMap]
}

/// The detection input pipeline (YOLOv3's, after GluonCV): decode, mixup, colour jitter, random
/// expansion, IoU-constrained random crop, horizontal flip, then letterbox to the step's
/// random shape and normalize. Every random choice is keyed by `(seed, epoch, sample)` and the
/// shape by `(seed, step)`, so a sample is prepared identically whichever rank holds it.
public struct DetectionPipeline: Sendable {
    /// Per-channel mean and std of `x/255`; the mean is also the padding colour.
    public var mean: [Double]
    public var std: [Double]
    public var seed: UInt64
    /// Augment (jitter, expand, crop, flip); off for evaluation.
    public var augment = true
    /// Detection mixup, or nil.
    public var mixup: DetectionMixup?
    /// Epochs from which mixup is off (nil: never).
    public var mixupOffFrom: Int?
    /// Random-shape training, or nil for a fixed `dataShape`.
    public var shapes: RandomShapes?
    /// The input side when shapes do not vary, and for evaluation.
    public var dataShape: Int
    /// Boxes narrower or lower than this (in pixels) after augmentation are dropped.
    public var minBoxSide = 2.0
    public var maxExpand = 4.0

    public init(mean: [Double], std: [Double], dataShape: Int, seed: UInt64) {
        self.mean = mean; self.std = std; self.dataShape = dataShape; self.seed = seed
    }

    var fill: [UInt8] { mean.map { UInt8(min(max(($0 * 255).rounded(), 0), 255)) } }

    /// The input side at `step`.
    public func side(atStep step: Int) -> Int { shapes?.size(atStep: step) ?? dataShape }

    /// Sample `i` of epoch `epoch`, mixed and augmented, before letterboxing.
    public func trainSample(_ data: VOCDataset, _ i: Int, epoch: Int) throws -> DetectionSample {
        var s = try data.sample(i)
        if let m = mixup, mixupOffFrom.map({ epoch < $0 }) ?? true {
            let (j, lambda) = m.pair(sample: i, epoch: epoch, datasetSize: data.count)
            s = DetectionMixup.mix(s, try data.sample(j), lambda: lambda)
        }
        guard augment else { return s }
        var rng = SplitMix64(key: [seed, UInt64(epoch), UInt64(i), 0x4445_5441])
        s = DetectionTransforms.colorJitter(s, rng: &rng)
        if rng.below(2) == 1 { s = DetectionTransforms.randomExpand(s, maxRatio: maxExpand, fill: fill, rng: &rng) }
        s = DetectionTransforms.randomCrop(s, rng: &rng)
        if rng.below(2) == 1 { s = DetectionTransforms.flip(s) }
        return s.clippedBoxes(minSide: minBoxSide)
    }

    /// The training batch of the given samples at `step` (of the whole run) in `epoch`.
    public func trainBatch(_ data: VOCDataset, indices: [Int], epoch: Int, step: Int) throws -> DetectionBatch {
        try assemble(indices, side: side(atStep: step)) { try trainSample(data, $0, epoch: epoch) }
    }

    /// An evaluation batch: no augmentation or mixup, at `dataShape`.
    public func evalBatch(_ data: VOCDataset, indices: [Int]) throws -> DetectionBatch {
        try assemble(indices, side: dataShape) { try data.sample($0) }
    }

    /// Prepares the samples on all threads, letterboxes them to `side` and normalizes.
    public func assemble(_ indices: [Int], side: Int, _ make: (Int) throws -> DetectionSample) throws -> DetectionBatch {
        let C = mean.count, plane = side * side
        let x = Tensor(shape: [indices.count, C, side, side])
        var out = [Result<(boxes: [Box], map: LetterboxMap), Error>](repeating: .failure(TricksError.io("not prepared")), count: indices.count)
        let scale = std.map { Float(1 / (255 * $0)) }, shift = zip(mean, std).map { Float(-$0 / $1) }
        let fill = self.fill, minSide = minBoxSide
        out.withUnsafeMutableBufferPointer { res in
            Parallel.forEach(indices.count) { b in
                res[b] = Result {
                    var s = try make(indices[b])
                    if s.image.channels != C { s.image = s.image.converted(channels: C) }
                    let (l, map) = DetectionTransforms.letterbox(s, width: side, height: side, fill: fill)
                    let dst = x.data + b * C * plane
                    l.image.pixels.withUnsafeBufferPointer { px in
                        for c in 0..<C {
                            for i in 0..<plane { dst[c * plane + i] = Float(px[i * C + c]) * scale[c] + shift[c] }
                        }
                    }
                    return (l.clippedBoxes(minSide: minSide).boxes, map)
                }
            }
        }
        let done = try out.map { try $0.get() }
        return DetectionBatch(images: x, boxes: done.map(\.boxes), side: side, indices: indices, maps: done.map(\.map))
    }
}
