import Foundation

/// Everything needed to continue a run: the model's parameters and buffers, SGD's
/// momentum, and the step. Nothing else is stateful: the sample order, augmentation
/// and mixup draws are pure functions of `(seed, epoch, sample)`, so the step
/// alone restores the sampler and every random stream.
///
/// Stored as `checkpoint.safetensors` (the model tensors under their `state_dict`
/// names plus `optimizer.momentum_buffer`, with the step and a format tag in the
/// header's metadata), written atomically.
public enum TrainingCheckpoint {
    public static let format = "tricks-training-checkpoint/1"
    public static let fileName = "checkpoint.safetensors"

    public struct Info: Equatable, Sendable {
        public var step: Int
        public var model: String
        public var seed: UInt64
        public var batchSize: Int
        /// Training samples of the data set (nil in checkpoints written before it was recorded).
        public var trainSamples: Int?
        /// Ranks, and the size of the groups BatchNorm synchronized over (1: local BN); nil in
        /// older checkpoints.
        public var ranks: Int?
        public var bnGroup: Int?
        /// The deterministic mode's micro-shards (nil: not that mode). Such a run's checkpoint
        /// is the same for any number of ranks and records none.
        public var microShards: Int?

        public init(step: Int, model: String, seed: UInt64, batchSize: Int, trainSamples: Int? = nil, ranks: Int? = nil,
                    bnGroup: Int? = nil, microShards: Int? = nil) {
            self.step = step; self.model = model; self.seed = seed; self.batchSize = batchSize
            self.trainSamples = trainSamples; self.ranks = ranks; self.bnGroup = bnGroup; self.microShards = microShards
        }

        /// Why a run configured as `run` cannot continue from this checkpoint: one phrase per
        /// difference, empty when it can. The model, global batch, seed and data set size fix
        /// the sample order and the schedule; with BatchNorm synchronized over fewer ranks than
        /// all (local or grouped BN) the running statistics differ from rank to rank and the
        /// checkpoint holds rank 0's, so the rank count and groups must match as well.
        public func mismatches(continuing run: Info) -> [String] {
            var why: [String] = []
            if model != run.model { why.append("model \(model), this run \(run.model)") }
            if batchSize != run.batchSize { why.append("global batch size \(batchSize), this run \(run.batchSize)") }
            if seed != run.seed { why.append("seed \(seed), this run \(run.seed)") }
            if let a = trainSamples, let b = run.trainSamples, a != b { why.append("\(a) training samples, this run \(b)") }
            if let g = bnGroup, let n = ranks, let rg = run.bnGroup, let rn = run.ranks {
                let perRank = { (g: Int, n: Int) in g == 1 ? "local BatchNorm" : g == n ? "BatchNorm synchronized over all ranks" : "BatchNorm in groups of \(g) ranks" }
                if (g < n || rg < rn) && (g != rg || n != rn) {
                    why.append("\(n) ranks with \(perRank(g, n)), this run \(rn) with \(perRank(rg, rn)) (per-rank BatchNorm statistics do not carry over)")
                }
            }
            return why
        }
    }

    /// Writes the checkpoint into `dir` (temporary file, then rename).
    public static func save(dir: String, model: ResNet, optimizer: SGD, info: Info) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let momentum = StateTensor(name: "optimizer.momentum_buffer", shape: [optimizer.store.count],
                                   storage: .float(optimizer.momentumBuffer))
        try SafeTensors.save(model.state + [momentum], to: (dir as NSString).appendingPathComponent(fileName), metadata: [
            "format": format, "step": "\(info.step)", "model": info.model, "seed": "\(info.seed)",
            "batch_size": "\(info.batchSize)", "has_momentum": optimizer.hasMomentum ? "1" : "0",
        ].merging([("train_samples", info.trainSamples), ("ranks", info.ranks), ("bn_group", info.bnGroup),
                                  ("micro_shards", info.microShards)].compactMap { k, v in v.map { (k, "\($0)") } },
                  uniquingKeysWith: { a, _ in a }))
    }

    /// Loads `dir/checkpoint.safetensors` into `model` and `optimizer`; refuses files that are
    /// truncated, of another format, of another model, or (given `continuing`) of a run this
    /// one cannot continue (`Info.mismatches`), before anything is loaded.
    public static func load(dir: String, model: ResNet, optimizer: SGD, continuing run: Info? = nil) throws -> Info {
        let path = (dir as NSString).appendingPathComponent(fileName)
        guard let d = FileManager.default.contents(atPath: path) else {
            throw TricksError.badCheckpoint("\(path): cannot read file (nothing to resume)")
        }
        let meta = try SafeTensors.metadata(d, path: path)
        let info = try self.info(meta, path: path)
        if let run {
            let why = info.mismatches(continuing: run)
            if !why.isEmpty { throw TricksError.badCheckpoint("\(path): cannot resume: the checkpoint's run had " + why.joined(separator: "; ")) }
        }
        let momentum = StateTensor(name: "optimizer.momentum_buffer", shape: [optimizer.store.count],
                                   storage: .float(optimizer.momentumBuffer))
        try SafeTensors.load(path, into: model.state + [momentum], data: d)
        optimizer.hasMomentum = meta["has_momentum"] == "1"
        return info
    }

    /// The run described by a checkpoint's header metadata.
    static func info(_ meta: [String: String], path: String) throws -> Info {
        guard meta["format"] == format else {
            throw TricksError.badCheckpoint("\(path): not a training checkpoint (format \(meta["format"] ?? "none"), expected \(format))")
        }
        guard let step = meta["step"].flatMap(Int.init), let seed = meta["seed"].flatMap(UInt64.init),
              let batch = meta["batch_size"].flatMap(Int.init), let name = meta["model"] else {
            throw TricksError.badCheckpoint("\(path): metadata lacks step, seed, batch_size or model")
        }
        return Info(step: step, model: name, seed: seed, batchSize: batch, trainSamples: meta["train_samples"].flatMap(Int.init),
                    ranks: meta["ranks"].flatMap(Int.init), bnGroup: meta["bn_group"].flatMap(Int.init),
                    microShards: meta["micro_shards"].flatMap(Int.init))
    }
}
