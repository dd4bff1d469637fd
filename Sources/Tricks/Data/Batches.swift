/// How training images are perturbed.
public enum Augmentation: String, Codable, Sendable, CaseIterable {
    /// No change.
    case none
    /// Zero-pad 4 pixels, crop back to size at a random offset, flip horizontally with p = ½.
    case standard
}

/// The order of samples in an epoch and the slice of each global batch a rank takes.
///
/// The permutation is seeded by `(seed, epoch)` only and a sample's augmentation by
/// `(seed, epoch, sample index)`, so the global batch at every step is the same for
/// any number of ranks.
public struct BatchPlan: Sendable {
    public let datasetSize: Int
    public let globalBatch: Int
    public let shuffle: Bool
    public let seed: UInt64

    public init(datasetSize: Int, globalBatch: Int, shuffle: Bool, seed: UInt64) {
        self.datasetSize = datasetSize; self.globalBatch = globalBatch; self.shuffle = shuffle; self.seed = seed
    }

    /// ⌊N/B⌋: the last partial batch is dropped.
    public var stepsPerEpoch: Int { datasetSize / globalBatch }

    /// The sample order of one epoch.
    public func order(epoch: Int) -> [Int32] {
        var idx = (0..<datasetSize).map { Int32($0) }
        guard shuffle else { return idx }
        var rng = SplitMix64(key: [seed, UInt64(epoch), 0x5348_5546])
        for i in stride(from: datasetSize - 1, to: 0, by: -1) { idx.swapAt(i, rng.below(i + 1)) }
        return idx
    }

    /// The samples rank `rank` of `size` trains on at step `stepInEpoch` of an epoch with order `order`.
    public func shard(order: [Int32], stepInEpoch: Int, rank: Int, size: Int) -> ArraySlice<Int32> {
        let local = globalBatch / size
        let start = stepInEpoch * globalBatch + rank * local
        return order[start..<start + local]
    }
}

/// Turns uint8 images into normalized float batches: `(x/255 − mean_c)/std_c`, with augmentation.
public struct Preprocessor: Sendable {
    public let mean: [Double]
    public let std: [Double]
    public let augmentation: Augmentation
    public let seed: UInt64
    public let pad = 4

    public init(mean: [Double], std: [Double], augmentation: Augmentation, seed: UInt64) {
        self.mean = mean; self.std = std; self.augmentation = augmentation; self.seed = seed
    }

    /// Fills `x` with mixed samples: x̂ = λ·x_i + (1−λ)·x_j, each side augmented with its own
    /// key, and returns for every row its two labels and λ.
    public func fillMixed(_ set: ImageSet, indices: ArraySlice<Int32>, epoch: Int, mixup: Mixup,
                          into x: Tensor, partner: Tensor, labels: inout [Int32], partnerLabels: inout [Int32],
                          lambdas: inout [Float]) {
        fill(set, indices: indices, epoch: epoch, augment: true, into: x, labels: &labels)
        var partners: [Int32] = []
        lambdas.removeAll(keepingCapacity: true)
        for i in indices {
            let (j, lam) = mixup.pair(sample: Int(i), epoch: epoch, datasetSize: set.count)
            partners.append(Int32(j)); lambdas.append(Float(lam))
        }
        fill(set, indices: partners[...], epoch: epoch, augment: true, into: partner, labels: &partnerLabels)
        let per = x.count / max(indices.count, 1)
        for b in 0..<indices.count {
            let l = lambdas[b], px = x.data + b * per, pp = partner.data + b * per
            for k in 0..<per { px[k] = l * px[k] + (1 - l) * pp[k] }
        }
    }

    /// Fills `x` `(n, C, H, W)` and `labels` with the given samples. `epoch` keys augmentation;
    /// pass `augment: false` for evaluation.
    public func fill(_ set: ImageSet, indices: ArraySlice<Int32>, epoch: Int, augment: Bool,
                     into x: Tensor, labels: inout [Int32]) {
        let C = set.channels, H = set.height, W = set.width, plane = H * W
        x.resize([indices.count, C, H, W])
        labels.removeAll(keepingCapacity: true)
        let scale = std.map { Float(1 / (255 * $0)) }, shift = zip(mean, std).map { Float(-$0 / $1) }
        set.pixels.withUnsafeBufferPointer { px in
            for (b, sIdx) in indices.enumerated() {
                let s = Int(sIdx)
                labels.append(set.labels[s])
                var oy = pad, ox = pad, flip = false
                if augment && augmentation == .standard {
                    var rng = SplitMix64(key: [seed, UInt64(epoch), UInt64(s), 0x4155_47])
                    oy = rng.below(2 * pad + 1); ox = rng.below(2 * pad + 1); flip = rng.below(2) == 1
                }
                for c in 0..<C {
                    let src = px.baseAddress! + (s * C + c) * plane
                    let dst = x.data + (b * C + c) * plane
                    let sc = scale[c], sh = shift[c]
                    for yy in 0..<H {
                        let iy = yy + oy - pad
                        for xx in 0..<W {
                            let ix = (flip ? W - 1 - xx : xx) + ox - pad
                            let inside = iy >= 0 && iy < H && ix >= 0 && ix < W
                            dst[yy * W + xx] = inside ? Float(src[iy * W + ix]) * sc + sh : sh
                        }
                    }
                }
            }
        }
    }
}
