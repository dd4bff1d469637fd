/// Everything a training run needs, as a plain value: the CLI builds one from
/// flags, and an embedder can build one in code.
public struct TrainConfig: Codable, Equatable, Sendable {
    /// A directory of IDX files, an image folder or an `.npz` file; nil means Fashion-MNIST from its Debian package.
    public var data: String? = nil
    /// Resize an image folder's images to this square size (nil: their own, which must agree).
    public var imageSize: Int? = nil
    public var model = "resnet20"
    /// The global batch over all ranks.
    public var batchSize = 64
    /// Epochs; nil trains `maxSteps` steps.
    public var epochs: Double? = nil
    /// Stop after this many steps without changing the schedule's length.
    public var maxSteps: Int? = nil
    public var lr = 0.1
    public var momentum = 0.9
    public var nesterov = false
    public var weightDecay = 5e-4
    public var noBiasDecay = false
    public var lrSchedule = LRSchedule.Kind.cosine
    public var warmupEpochs = 0.0
    /// Epochs at which the `step` schedule multiplies the rate by 0.1.
    public var lrSteps: [Double] = []
    public var labelSmoothing = 0.0
    /// Mixup's α; 0 turns mixup off.
    public var mixup = 0.0
    /// Train the last this many epochs without mixup.
    public var mixupOffEpochs = 0.0
    /// γ = 0 in the last BN of every residual block at initialization.
    public var zeroGamma = false
    /// When set, lr = lrPer256 · batchSize / 256 (linear scaling), overriding `lr`.
    public var lrPer256: Double? = nil
    public var augment = Augmentation.none
    public var shuffle = true
    public var mean: [Double]? = nil
    public var std: [Double]? = nil
    /// Labels must be below this; nil takes 1 + the largest label.
    public var numClasses: Int? = nil
    /// A safetensors file to load weights and buffers from before training.
    public var initFrom: String? = nil
    /// Where `model.safetensors` and `metrics.jsonl` go.
    public var out: String? = nil
    public var seed: UInt64 = 0
    /// Steps between progress lines.
    public var logEvery = 50
    /// Batch size for evaluation (per rank).
    public var evalBatchSize = 500
    /// Synchronize BN statistics over all ranks (or over groups of `bnGroupSize`).
    public var syncBN = true
    /// SyncBatchNorm over groups of this many consecutive ranks; nil means all ranks.
    public var bnGroupSize: Int? = nil
    /// Compare a checksum of the parameters across ranks every this many steps.
    public var checkReplicas: Int? = nil
    /// Write a training checkpoint into `out` every this many steps (and at every epoch end).
    public var checkpointEvery: Int? = nil
    /// A directory holding `checkpoint.safetensors` to continue from.
    public var resume: String? = nil
    /// Target size of a gradient all-reduce bucket.
    public var bucketBytes = 256 * 1024

    public init() {}
}
