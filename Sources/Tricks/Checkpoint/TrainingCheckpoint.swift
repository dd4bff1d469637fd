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
    }

    /// Writes the checkpoint into `dir` (temporary file, then rename).
    public static func save(dir: String, model: ResNet, optimizer: SGD, info: Info) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let momentum = StateTensor(name: "optimizer.momentum_buffer", shape: [optimizer.store.count],
                                   storage: .float(optimizer.momentumBuffer))
        try SafeTensors.save(model.state + [momentum], to: (dir as NSString).appendingPathComponent(fileName), metadata: [
            "format": format, "step": "\(info.step)", "model": info.model, "seed": "\(info.seed)",
            "batch_size": "\(info.batchSize)", "has_momentum": optimizer.hasMomentum ? "1" : "0",
        ])
    }

    /// Loads `dir/checkpoint.safetensors` into `model` and `optimizer`; refuses files that are
    /// truncated, of another format, or of another model.
    public static func load(dir: String, model: ResNet, optimizer: SGD) throws -> Info {
        let path = (dir as NSString).appendingPathComponent(fileName)
        guard let d = FileManager.default.contents(atPath: path) else {
            throw TricksError.badCheckpoint("\(path): cannot read file (nothing to resume)")
        }
        let meta = try SafeTensors.metadata(d, path: path)
        guard meta["format"] == format else {
            throw TricksError.badCheckpoint("\(path): not a training checkpoint (format \(meta["format"] ?? "none"), expected \(format))")
        }
        guard let step = meta["step"].flatMap(Int.init), let seed = meta["seed"].flatMap(UInt64.init),
              let batch = meta["batch_size"].flatMap(Int.init), let name = meta["model"] else {
            throw TricksError.badCheckpoint("\(path): metadata lacks step, seed, batch_size or model")
        }
        let momentum = StateTensor(name: "optimizer.momentum_buffer", shape: [optimizer.store.count],
                                   storage: .float(optimizer.momentumBuffer))
        try SafeTensors.load(path, into: model.state + [momentum], data: d)
        optimizer.hasMomentum = meta["has_momentum"] == "1"
        return Info(step: step, model: name, seed: seed, batchSize: batch)
    }
}
