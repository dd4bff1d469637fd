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
    /// Epochs; nil trains `maxSteps` steps (and makes that the schedule's length).
    public var epochs: Double? = 10
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
    /// Batch size for evaluation (per rank): a training batch's worth keeps the activations in
    /// cache (500 at 28×28 made 25 MB tensors: 4.5–4.8 s for the test split against 3.6–3.8 s).
    public var evalBatchSize = 64
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
    /// The deterministic mode (`MicroShards`): the same bits for any power-of-two number of
    /// ranks dividing `microShards`, at some cost in speed.
    public var deterministic = false
    /// Micro-shards per global batch in the deterministic mode.
    public var microShards = 8

    public init() {}

    /// Checks every setting that does not need the data; `ranks` (when known) adds the checks
    /// that depend on the world size. The command line and `Trainer` both call it, so an
    /// embedder gets the same rules and the same messages (named by their flags).
    public func validate(ranks: Int? = nil) throws {
        func bad(_ s: String) -> TricksError { .invalidArgument(s) }
        _ = try ResNet.depth(named: model)
        guard batchSize > 0 else { throw bad("--batch-size must be positive, got \(batchSize)") }
        guard epochs != nil || maxSteps != nil else { throw bad("give --epochs or --max-steps") }
        if let e = epochs, !(e > 0 && e.isFinite) { throw bad("--epochs must be positive, got \(e)") }
        if let k = maxSteps, k <= 0 { throw bad("--max-steps must be positive, got \(k)") }
        guard lr > 0 && lr.isFinite else { throw bad("--lr must be positive, got \(lr)") }
        if let r = lrPer256, !(r > 0 && r.isFinite) { throw bad("--lr-per-256 must be positive, got \(r)") }
        guard (0..<1).contains(momentum) else { throw bad("--momentum must be in [0, 1), got \(momentum)") }
        guard weightDecay >= 0 && weightDecay.isFinite else { throw bad("--wd must be ≥ 0, got \(weightDecay)") }
        guard warmupEpochs >= 0 && warmupEpochs.isFinite else { throw bad("--warmup-epochs must be ≥ 0, got \(warmupEpochs)") }
        if let s = lrSteps.first(where: { !($0 > 0 && $0.isFinite) }) { throw bad("--lr-steps must be positive epochs, got \(s)") }
        guard (0..<1).contains(labelSmoothing) else { throw bad("--label-smoothing must be in [0, 1), got \(labelSmoothing)") }
        guard mixup >= 0 && mixup.isFinite else { throw bad("--mixup must be ≥ 0, got \(mixup)") }
        guard mixupOffEpochs >= 0 && mixupOffEpochs.isFinite else { throw bad("--mixup-off-epochs must be ≥ 0, got \(mixupOffEpochs)") }
        if let s = std, let v = s.first(where: { !($0 > 0) }) { throw bad("--std values must be positive, got \(v)") }
        if let k = imageSize, k <= 0 { throw bad("--image-size must be positive, got \(k)") }
        if let k = numClasses, k < 2 { throw bad("--num-classes must be at least 2, got \(k)") }
        guard logEvery > 0 else { throw bad("--log-every must be positive, got \(logEvery)") }
        guard evalBatchSize > 0 else { throw bad("the evaluation batch size must be positive, got \(evalBatchSize)") }
        guard bucketBytes > 0 else { throw bad("--bucket-kb must be positive, got \(bucketBytes / 1024)") }
        if let k = checkReplicas, k <= 0 { throw bad("--check-replicas must be positive, got \(k)") }
        if let k = checkpointEvery, k <= 0 { throw bad("--checkpoint-every must be positive, got \(k)") }
        if checkpointEvery != nil && out == nil { throw bad("--checkpoint-every needs --out DIR") }
        if resume != nil && initFrom != nil { throw bad("give --resume or --init, not both") }
        if let k = bnGroupSize, k <= 0 { throw bad("--bn-group-size must be positive, got \(k)") }
        if deterministic {
            try MicroShards.validate(count: microShards, ranks: 1)
            guard batchSize % microShards == 0 else {
                throw bad("--deterministic needs --batch-size divisible by --micro-shards \(microShards), got \(batchSize)")
            }
            guard syncBN else { throw bad("--deterministic needs --bn sync: local statistics depend on the number of ranks") }
        }
        guard let n = ranks else { return }
        if deterministic {
            try MicroShards.validate(count: microShards, ranks: n)
            if let k = bnGroupSize, k != n {
                throw bad("--deterministic needs BatchNorm over all ranks; --bn-group-size \(k) depends on the number of ranks")
            }
        }
        guard batchSize % n == 0 else { throw bad("--batch-size \(batchSize) is not divisible by the number of ranks \(n)") }
        if let k = bnGroupSize, n % k != 0 { throw bad("--bn-group-size \(k) does not divide the number of ranks \(n)") }
    }
}
