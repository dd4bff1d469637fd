import Foundation

/// Runs training on one rank of a `Communicator` group: data, model, loss,
/// optimizer, schedule, evaluation, logging, checkpoint.
///
/// Only rank 0 prints and writes files. Every rank issues the same collectives
/// in the same order.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let data: DatasetSplits
    public let model: ResNet
    public let optimizer: SGD
    public let schedule: LRSchedule
    public let plan: BatchPlan
    public let preprocessor: Preprocessor
    /// The step at which training stops (≤ the schedule's T).
    public let stopStep: Int
    /// The step training starts from (0, or the resumed checkpoint's step).
    public private(set) var startStep = 0
    /// Initial broadcast, the BN group, gradient reduction and the replica check.
    public let parallel: DataParallel
    /// The base learning rate in effect (`--lr`, or `--lr-per-256` scaled to the global batch).
    public let lr: Double
    /// Steps before this one train with mixup.
    public let mixupStopStep: Int
    private let loss: SoftmaxCrossEntropy
    private var metrics: [String] = []
    private let log: (String) -> Void

    public init(config: TrainConfig, comm: Communicator, log: @escaping (String) -> Void = FileHandleOutput.stdout) throws {
        self.config = config
        self.comm = comm
        self.log = comm.rank == 0 ? log : { _ in }
        let c = config
        try c.validate(ranks: comm.size)

        var d = try DatasetLoader.load(try c.data ?? DatasetLoader.defaultDataPath(), imageSize: c.imageSize)
        if let k = c.numClasses {
            if let bad = (d.train.labels + d.test.labels).first(where: { $0 >= k }) {
                throw TricksError.badData("\(d.source): label \(bad) out of range for --num-classes \(k)")
            }
            d.numClasses = k
        }
        guard d.train.count >= c.batchSize else {
            throw TricksError.invalidArgument("--batch-size \(c.batchSize) exceeds the \(d.train.count) training samples")
        }
        data = d
        let stats = d.train.channelStatistics()
        let mean = c.mean ?? stats.mean, std = c.std ?? stats.std
        guard mean.count == d.train.channels, std.count == d.train.channels else {
            throw TricksError.invalidArgument("--mean/--std need \(d.train.channels) comma-separated values (one per channel)")
        }
        preprocessor = Preprocessor(mean: mean, std: std, augmentation: c.augment, seed: c.seed)
        plan = BatchPlan(datasetSize: d.train.count, globalBatch: c.batchSize, shuffle: c.shuffle, seed: c.seed)

        model = try ResNet(name: c.model, inChannels: d.train.channels, numClasses: d.numClasses, seed: c.seed)
        if c.zeroGamma { zeroGammaLayers(model).forEach { $0.weight.values.update(repeating: 0) } }
        if let path = c.initFrom, comm.rank == 0 { try SafeTensors.load(path, into: model.state) }
        parallel = try DataParallel(model, comm: comm, syncBatchNorm: c.syncBN, bnGroupSize: c.bnGroupSize,
                                    bucketBytes: c.bucketBytes, microShards: c.deterministic ? c.microShards : nil)
        if c.deterministic { try Trainer.checkSameKernels(comm) }
        optimizer = SGD(store: model.store, momentum: Float(c.momentum), nesterov: c.nesterov,
                        weightDecay: Float(c.weightDecay), noBiasDecay: c.noBiasDecay)
        let spe = plan.stepsPerEpoch
        let total = c.epochs.map { max(1, Int(($0 * Double(spe)).rounded(.down))) } ?? c.maxSteps!
        stopStep = min(total, c.maxSteps ?? total)
        lr = c.lrPer256.map { linearScaledLR(per256: $0, batchSize: c.batchSize) } ?? c.lr
        mixupStopStep = c.mixup > 0 ? total - Int((c.mixupOffEpochs * Double(spe)).rounded()) : 0
        schedule = LRSchedule(kind: c.lrSchedule, lr: lr, warmupSteps: Int((c.warmupEpochs * Double(spe)).rounded()),
                              totalSteps: total, stepBoundaries: c.lrSteps.map { Int(($0 * Double(spe)).rounded()) })
        loss = SoftmaxCrossEntropy(labelSmoothing: c.labelSmoothing)
        if let dir = c.resume { try resume(from: dir) }
    }

    /// Loads a training checkpoint on rank 0 and gives every rank its state.
    private func resume(from dir: String) throws {
        var step: Int64 = 0
        if comm.rank == 0 {
            let info = try TrainingCheckpoint.load(dir: dir, model: model, optimizer: optimizer, continuing: runInfo(step: 0))
            step = Int64(info.step)
            let metricsPath = (dir as NSString).appendingPathComponent("metrics.jsonl")
            if let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) {
                metrics = text.split(separator: "\n").map(String.init).filter { line in
                    guard let d = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                          let s = d["step"] as? Int else { return false }
                    return s <= info.step
                }
            }
        }
        parallel.broadcastState()
        comm.broadcast(UnsafeMutableRawBufferPointer(start: optimizer.momentumBuffer, count: 4 * model.store.count), root: 0)
        var flags: [Int64] = [step, optimizer.hasMomentum ? 1 : 0]
        flags.withUnsafeMutableBytes { comm.broadcast($0, root: 0) }
        startStep = Int(flags[0]); optimizer.hasMomentum = flags[1] == 1
    }

    /// Writes a training checkpoint into `--out` (rank 0).
    public func saveCheckpoint(step: Int) throws {
        guard comm.rank == 0, let out = config.out else { return }
        try TrainingCheckpoint.save(dir: out, model: model, optimizer: optimizer, info: runInfo(step: step))
    }

    /// This run as a checkpoint describes it. A deterministic run's checkpoint does not depend
    /// on the number of ranks, so it records micro-shards instead.
    private func runInfo(step: Int) -> TrainingCheckpoint.Info {
        if let ms = parallel.microShards {
            return .init(step: step, model: config.model, seed: config.seed, batchSize: config.batchSize,
                         trainSamples: data.train.count, microShards: ms.count)
        }
        return .init(step: step, model: config.model, seed: config.seed, batchSize: config.batchSize, trainSamples: data.train.count,
                     ranks: comm.size, bnGroup: parallel.bnGroupSize)
    }

    /// The deterministic mode's bits depend on the kernels: every rank must run the same
    /// instruction set (`KernelISA`), which machines of different CPUs would not by default.
    static func checkSameKernels(_ comm: Communicator) throws {
        guard comm.size > 1 else { return }
        let v = Double(KernelISA.current.rawValue)
        var s = [v, v * v]
        s.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        if Double(comm.size) * s[1] != s[0] * s[0] {
            throw TricksError.invalidArgument("--deterministic needs the same kernels on every rank, but the ranks' CPUs chose "
                                              + "different instruction sets; set TRICKS_ISA to the lowest (this rank: \(KernelISA.current))")
        }
    }

    /// The deterministic mode's sum over the global batch of one value per sample (`values`,
    /// this rank's samples in order): the same on every rank and for any number of ranks.
    private func batchSum(_ values: [Double]) -> Double {
        comm.label("loss, fixed order")
        return parallel.microShards!.batchSum(values)
    }

    /// Test accuracy and mean loss of the current model in inference mode, sharded over ranks.
    /// In the deterministic mode the test set is cut into the micro-shards' count of contiguous
    /// parts, each evaluated in the same chunks whatever rank holds it and summed in tree order.
    public func evaluate() -> (accuracy: Double, loss: Double) {
        if let ms = parallel.microShards { return evaluate(shards: ms) }
        let set = data.test
        let mine = Array(stride(from: comm.rank, to: set.count, by: comm.size).map { Int32($0) })
        let x = Tensor(shape: [0])
        var labels: [Int32] = []
        let ce = SoftmaxCrossEntropy()
        var sums = [0.0, 0.0, 0.0]   // correct, summed loss, count
        var i = 0
        while i < mine.count {
            let chunk = mine[i..<min(i + config.evalBatchSize, mine.count)]
            preprocessor.fill(set, indices: chunk, epoch: 0, augment: false, into: x, labels: &labels)
            let logits = model.forward(x, mode: .inference)
            let K = logits.shape[1]
            sums[1] += ce.forward(logits: logits, labels: labels, normalizer: 1)
            for n in 0..<chunk.count {
                let row = logits.data + n * K
                var best = 0
                for k in 1..<K where row[k] > row[best] { best = k }
                if best == Int(labels[n]) { sums[0] += 1 }
            }
            sums[2] += Double(chunk.count)
            i += chunk.count
        }
        sums.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        return (sums[0] / max(sums[2], 1), sums[1] / max(sums[2], 1))
    }

    private func evaluate(shards ms: MicroShards) -> (accuracy: Double, loss: Double) {
        let set = data.test, S = ms.count
        let x = Tensor(shape: [0])
        var labels: [Int32] = []
        let ce = SoftmaxCrossEntropy()
        let parts = (0..<ms.local).map { _ in UnsafeMutablePointer<Double>.allocate(capacity: 2) }
        defer { parts.forEach { $0.deallocate() } }
        for (j, part) in parts.enumerated() {
            let s = comm.rank * ms.local + j
            let lo = set.count * s / S, hi = set.count * (s + 1) / S
            var correct = 0.0, loss = 0.0
            var i = lo
            while i < hi {
                let chunk = (i..<min(i + config.evalBatchSize, hi)).map { Int32($0) }
                preprocessor.fill(set, indices: chunk[...], epoch: 0, augment: false, into: x, labels: &labels)
                let logits = model.forward(x, mode: .inference)
                let K = logits.shape[1]
                ce.forward(logits: logits, labels: labels, normalizer: 1)
                for n in 0..<chunk.count {
                    loss += ce.rowLosses[n]
                    let row = logits.data + n * K
                    var best = 0
                    for k in 1..<K where row[k] > row[best] { best = k }
                    if best == Int(labels[n]) { correct += 1 }
                }
                i += chunk.count
            }
            part[0] = correct; part[1] = loss
        }
        comm.label("evaluation, fixed order")
        ms.sum(parts, count: 2)
        let n = Double(max(set.count, 1))
        return (parts[0][0] / n, parts[0][1] / n)
    }

    private func record(_ fields: [(String, Any)]) {
        guard comm.rank == 0 else { return }
        let body = fields.map { k, v -> String in
            if let d = v as? Double { return "\"\(k)\":\(d.isFinite ? String(d) : "null")" }
            return "\"\(k)\":\(v)"
        }.joined(separator: ",")
        metrics.append("{\(body)}")
    }

    /// The result of a run.
    public struct Summary: Sendable {
        public var steps: Int
        public var trainLoss: Double
        public var testAccuracy: Double
        public var testLoss: Double
        public var imagesPerSecond: Double
        public var seconds: Double
        /// Mean wall time of a training step (data, forward, backward, reduction, update).
        public var stepSeconds: Double
        /// Mean time per step spent waiting for gradient all-reduces after backward (not overlapped).
        public var commWaitSeconds: Double
    }

    /// A 64-bit FNV-1a hash of every parameter's bits (and, with BN synchronized over all ranks,
    /// every buffer's).
    public func replicaChecksum() -> UInt64 { parallel.checksum() }

    /// Ends the job if any rank's parameters differ from rank 0's.
    func checkReplicas(step: Int) throws {
        let bad = parallel.divergedRanks()
        if !bad.isEmpty {
            let msg = "replicas diverged at step \(step): rank(s) \(bad.map(String.init).joined(separator: ", ")) differ from rank 0"
            if comm.rank == 0 { comm.abort("tricks-worker: \(msg)", code: 4) }
            comm.barrier()   // rank 0 aborts the job
            comm.abort("tricks-worker: rank \(comm.rank): \(msg)", code: 4)
        }
    }

    /// Trains to `stopStep`, evaluating after each epoch and at the end; writes `--out` files on rank 0.
    @discardableResult
    public func run() throws -> Summary {
        let c = config, spe = plan.stepsPerEpoch
        let local = c.batchSize / comm.size
        let deterministic = parallel.microShards != nil
        let x = Tensor(shape: [local, data.train.channels, data.train.height, data.train.width])
        var labels: [Int32] = [], partnerLabels: [Int32] = [], lambdas: [Float] = []
        let partner = Tensor(shape: [0])
        var order: [Int32] = []
        var orderEpoch = -1
        log("training \(c.model) on \(data.source): \(data.train.count) train / \(data.test.count) test images, "
            + "\(data.train.channels)×\(data.train.height)×\(data.train.width), \(data.numClasses) classes")
        log("ranks \(comm.size), global batch \(c.batchSize) (\(local) per rank), \(spe) steps/epoch, "
            + "\(stopStep) of \(schedule.totalSteps) steps, BN \(parallel.normMode)")
        log("kernels \(KernelISA.current) (CPU best \(KernelISA.best); TRICKS_ISA lowers it), BLAS threads \(BLAS.threads): "
            + Conv2d.kernelSummary)
        log("lr \(lr)" + (c.lrPer256.map { " (= \($0) × \(c.batchSize)/256)" } ?? "") + " \(c.lrSchedule.rawValue)"
            + (schedule.warmupSteps > 0 ? ", warmup \(schedule.warmupSteps) steps" : "")
            + (c.labelSmoothing > 0 ? ", label smoothing \(c.labelSmoothing)" : "")
            + (c.mixup > 0 ? ", mixup α=\(c.mixup) until step \(mixupStopStep)" : "")
            + (c.zeroGamma ? ", zero-γ" : "") + (c.noBiasDecay ? ", no bias decay" : ""))
        let start = Date()
        var windowStart = start, windowSteps = 0
        var lossWindow = [0.0, 0.0]   // [Σ of this rank's share of each step's loss, steps]; summed over ranks
        var lastLoss = Double.nan
        var final = (accuracy: Double.nan, loss: Double.nan)
        var computeSeconds = 0.0, commWait = 0.0
        if startStep > 0 { log("resumed from \(config.resume!) at step \(startStep)") }
        if startStep >= stopStep { log("nothing to train: the checkpoint is at step \(startStep) of \(stopStep)") }
        for step in startStep..<max(startStep, stopStep) {
            let epoch = step / spe, inEpoch = step % spe
            if epoch != orderEpoch { order = plan.order(epoch: epoch); orderEpoch = epoch }
            let t0 = Date()
            let shard = plan.shard(order: order, stepInEpoch: inEpoch, rank: comm.rank, size: comm.size)
            let mixing = step < mixupStopStep
            if mixing {
                preprocessor.fillMixed(data.train, indices: shard, epoch: epoch, mixup: Mixup(alpha: c.mixup, seed: c.seed),
                                       into: x, partner: partner, labels: &labels, partnerLabels: &partnerLabels,
                                       lambdas: &lambdas)
            } else {
                preprocessor.fill(data.train, indices: shard, epoch: epoch, augment: true, into: x, labels: &labels)
            }
            func pass() -> Double {
                let logits = model.forward(x, mode: .training)
                var l = loss.forward(logits: logits, labels: labels, mixedWith: mixing ? partnerLabels : nil,
                                     lambdas: mixing ? lambdas : nil, normalizer: c.batchSize)
                // The deterministic mode: the whole batch's loss, in tree order, on every rank.
                if deterministic { l = batchSum(loss.rowLosses) / Double(c.batchSize) }
                model.backward(loss.grad)
                return l
            }
            parallel.beginStep()
            let l = pass()
            commWait += parallel.finishGradients()
            // The summed gradients are the same on every rank, so every rank sees a non-finite
            // value at once and they look for its source together (SyncBatchNorm's collectives
            // run again); nothing is updated or written at this step.
            if !Vec.allFinite(model.store.grads, model.store.count) { stopAtNonFinite(step: step + 1, pass: pass) }
            guard l.isFinite else { comm.abort("rank \(comm.rank): loss is \(l) at step \(step + 1) with finite gradients; lower --lr", code: 3) }
            let rate = schedule.rate(at: step)
            optimizer.step(lr: Float(rate))
            computeSeconds += Date().timeIntervalSince(t0)
            lossWindow[0] += l; lossWindow[1] += 1
            windowSteps += 1
            let isLast = step + 1 == stopStep, epochEnd = inEpoch == spe - 1
            if (step + 1) % c.logEvery == 0 || isLast || epochEnd {
                if deterministic {
                    lastLoss = lossWindow[0] / max(lossWindow[1], 1)   // every rank holds the batch's loss
                } else {
                    lossWindow.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
                    lastLoss = lossWindow[0] / max(lossWindow[1] / Double(comm.size), 1)
                }
                let now = Date()
                let ips = Double(windowSteps * c.batchSize) / now.timeIntervalSince(windowStart)
                let eta = Double(stopStep - step - 1) * now.timeIntervalSince(start) / Double(step + 1 - startStep)
                log(String(format: "step %d/%d  epoch %d  loss %.4f  lr %.5f  %.0f img/s  ETA %@",
                           step + 1, stopStep, epoch + 1, lastLoss, rate, ips, Trainer.duration(eta)))
                record([("step", step + 1), ("epoch", Double(step + 1) / Double(spe)), ("loss", lastLoss),
                        ("lr", rate), ("images_per_second", ips)])
                lossWindow = [0, 0]; windowStart = now; windowSteps = 0
            }
            if let k = c.checkReplicas, (step + 1) % k == 0 { try checkReplicas(step: step + 1) }
            if c.out != nil && (epochEnd || isLast || c.checkpointEvery.map { (step + 1) % $0 == 0 } == true) {
                try saveCheckpoint(step: step + 1)
            }
            if epochEnd || isLast {
                final = evaluate()
                log(String(format: "eval after step %d (epoch %.2f): test accuracy %.4f  test loss %.4f",
                           step + 1, Double(step + 1) / Double(spe), final.accuracy, final.loss))
                record([("step", step + 1), ("epoch", Double(step + 1) / Double(spe)),
                        ("test_accuracy", final.accuracy), ("test_loss", final.loss)])
                try writeMetrics()
            }
        }
        let seconds = Date().timeIntervalSince(start)
        if stopStep <= startStep { final = evaluate() }
        let ran = max(stopStep - startStep, 1)
        let summary = Summary(steps: stopStep, trainLoss: lastLoss, testAccuracy: final.accuracy, testLoss: final.loss,
                              imagesPerSecond: Double(ran * c.batchSize) / max(computeSeconds, 1e-9), seconds: seconds,
                              stepSeconds: computeSeconds / Double(ran), commWaitSeconds: commWait / Double(ran))
        if comm.rank == 0, let out = c.out {
            try SafeTensors.save(model.state, to: (out as NSString).appendingPathComponent("model.safetensors"),
                                 metadata: ["format": "pt", "model": c.model])
        }
        return summary
    }

    /// Where a step's non-finite gradients came from: the step's `pass` (forward, loss,
    /// backward) once more on this rank's batch with every layer's results checked (every rank
    /// runs it, so collectives match), then the lowest rank that found the first non-finite
    /// result ends the job naming the layer.
    public func findNonFinite(pass: () -> Double) -> String? {
        let hook = model.onGradientsReady
        model.onGradientsReady = nil   // no gradient all-reduce in this pass
        model.store.zeroGrad()
        let checker = StepProfiler(checkFinite: true)
        model.profiler = checker
        let l = pass()
        model.profiler = nil
        model.onGradientsReady = hook
        return checker.firstNonFinite ?? (l.isFinite ? nil : "the loss (\(l))")
    }

    private func stopAtNonFinite(step: Int, pass: () -> Double) -> Never {
        let found = findNonFinite(pass: pass)
        var who = [Double](repeating: 0, count: comm.size)
        if found != nil { who[comm.rank] = 1 }
        who.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        let first = who.firstIndex { $0 > 0 }
        let after = "stopped before the update, so the model and the last checkpoint are as after step \(step - 1); lower --lr or check the data"
        if let r = first, r == comm.rank {
            comm.abort("tricks-worker: step \(step): NaN or infinity first appeared in \(found!) on rank \(r); \(after)", code: 3)
        } else if first == nil && comm.rank == 0 {
            comm.abort("tricks-worker: step \(step): the summed gradients hold NaN or infinity, but a second pass over the batch "
                       + "found every layer's results finite; \(after)", code: 3)
        }
        comm.barrier()   // the reporting rank ends the job
        comm.abort("tricks-worker: rank \(comm.rank): non-finite gradients at step \(step)", code: 3)
    }

    private func writeMetrics() throws {
        guard comm.rank == 0, let out = config.out else { return }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let path = (out as NSString).appendingPathComponent("metrics.jsonl")
        try SafeTensors.writeAtomically(Data((metrics.joined(separator: "\n") + "\n").utf8), to: path)
        let svg = try MetricsPlot.svg(runs: [((out as NSString).lastPathComponent, path)])
        try SafeTensors.writeAtomically(Data(svg.utf8), to: (out as NSString).appendingPathComponent("curves.svg"))
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
    }
}
