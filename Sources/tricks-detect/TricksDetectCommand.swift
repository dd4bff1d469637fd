import ArgumentParser
import Foundation
import Tricks
import TricksDetect
import TricksMPI

@main
struct TricksDetectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tricks-detect",
        abstract: "Train a small YOLOv3-style detector with SyncBatchNorm, random shapes and detection mixup.",
        discussion: "Run one process, or N with `mpirun -np N tricks-detect train` (one image per worker works).",
        subcommands: [DetectTrain.self, DetectEval.self, DetectPredict.self, DetectBench.self], defaultSubcommand: DetectTrain.self)

    static func main() {
        do {
            try KernelISA.checkEnvironment()
            var command = try parseAsRoot(Array(CommandLine.arguments.dropFirst()))
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

enum NormChoice: String, ExpressibleByArgument { case sync, local }
extension LRSchedule.Kind: ExpressibleByArgument {}

struct DetectTrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train",
        abstract: "Train on a VOC-layout set (train or trainval) and report test mAP@0.5 (test or val); the last line is JSON.")

    @Option(help: "A VOC-layout directory. Default: runs/scenes, made from Fashion-MNIST when missing.") var data: String?
    @Option(help: "Global batch size over all ranks.") var batchSize = 8
    @Option(help: "Epochs (sets the schedule's length).") var epochs = 1.0
    @Option(help: "Stop after this many steps without changing the schedule.") var maxSteps: Int?
    @Option(help: "Base learning rate.") var lr = 0.01
    @Option(help: "constant, step or cosine.") var lrSchedule = LRSchedule.Kind.cosine
    @Option(help: "Linear warmup in epochs.") var warmupEpochs = 0.0
    @Option(help: "Epochs after which the step schedule multiplies the rate by 0.1, comma-separated (default: 0.8 and 0.9 of --epochs, GluonCV's 160,180 of 200).")
    var lrSteps: String?
    @Option(help: "sync: BatchNorm statistics over all ranks; local: per rank.") var bn = NormChoice.sync
    @Option(help: "Random input sizes (list, LO:HI in steps of 32, or LO:HI:STEP); default: --data-shape.") var randomShapes: String?
    @Option(help: "Steps between shape draws.") var shapeEvery = 10
    @Option(help: "The input side for evaluation and without random shapes (a multiple of 32).") var dataShape = 128
    @Option(help: "Detection mixup's α; 0 is off.") var mixup = 0.0
    @Option(help: "Turn mixup off for the last this many epochs.") var mixupOffEpochs = 0.0
    @Flag(help: "Label smoothing on the class targets (δ = min(1/K, 1/40)).") var labelSmoothing = false
    @Flag(help: "No colour jitter, expansion, crop or flip.") var noAugment = false
    @Flag(help: "Keep the data order (no shuffle).") var noShuffle = false
    @Option(help: "Channels of the network's stem.") var width = 16
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Option(help: "Write model.safetensors here (rank 0).") var out: String?
    @Flag(help: "Skip the test-set evaluation.") var noEval = false
    @Option(help: "Steps between progress lines.") var logEvery = 20
    @Option(help: "Threads per rank (default: cores / ranks).") var threads: Int?
    @Flag(help: "Check that every rank issues the same collectives in the same order; a mismatch ends the job naming each rank's collective (debugging).")
    var checkCollectives = false
    @Option(help: "With --check-collectives: seconds a rank waits for the others at a collective.") var collectiveTimeout = 120.0
    @Flag(help: "Bit-identical results for any power-of-two number of ranks dividing --micro-shards (every sum over images per micro-shard and along one fixed tree); needs --bn sync and --batch-size divisible by --micro-shards.")
    var deterministic = false
    @Option(help: "With --deterministic: micro-shards per global batch (a power of two).") var microShards = 8

    func validate() throws {
        guard batchSize > 0, epochs > 0, lr > 0, shapeEvery > 0, logEvery > 0, width > 0 else {
            throw ValidationError("--batch-size, --epochs, --lr, --shape-every, --log-every and --width must be positive")
        }
        guard dataShape >= 32, dataShape % 32 == 0 else { throw ValidationError("--data-shape must be a positive multiple of 32, got \(dataShape)") }
        if let m = maxSteps, m <= 0 { throw ValidationError("--max-steps must be positive") }
        guard mixup >= 0 else { throw ValidationError("--mixup must be ≥ 0") }
        if let t = threads, t <= 0 { throw ValidationError("--threads must be positive") }
        guard collectiveTimeout > 0 else { throw ValidationError("--collective-timeout must be positive") }
        if deterministic {
            do { try MicroShards.validate(count: microShards, ranks: 1) } catch TricksError.invalidArgument(let m) { throw ValidationError(m) }
            guard batchSize % microShards == 0 else {
                throw ValidationError("--deterministic needs --batch-size divisible by --micro-shards \(microShards), got \(batchSize)")
            }
            guard bn == .sync else { throw ValidationError("--deterministic needs --bn sync: local statistics depend on the number of ranks") }
        }
        _ = try stepEpochs()
    }

    /// `--lr-steps` as epochs (validated), or the default 0.8 and 0.9 of the run.
    func stepEpochs() throws -> [Double] {
        guard let s = lrSteps else { return [0.8 * epochs, 0.9 * epochs] }
        return try s.split(separator: ",").map {
            guard let v = Double($0.trimmingCharacters(in: .whitespaces)), v > 0 else {
                throw ValidationError("--lr-steps takes positive epochs separated by commas, got '\(s)'")
            }
            return v
        }
    }

    func run() throws {
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        let world: Communicator = mpi ?? SingleProcessCommunicator()
        let comm: Communicator = checkCollectives ? CheckedCommunicator(world, timeout: collectiveTimeout) : world
        let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
        BLAS.setThreads(threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / local))
        do {
            try train(comm)
            mpi?.finalize()
        } catch {
            comm.abort("tricks-detect: rank \(comm.rank): \(error)", code: 2)
        }
    }

    func log(_ comm: Communicator, _ s: String) { if comm.rank == 0 { FileHandleOutput.stderr(s) } }

    func train(_ comm: Communicator) throws {
        let root = data ?? "runs/scenes"
        if data == nil && !FileManager.default.fileExists(atPath: root + "/ImageSets/Main/train.txt") {
            if comm.rank == 0 {
                log(comm, "making the default detection set in \(root) (tricks-worker make-scenes)")
                _ = try SceneMaker(seed: 0).write(to: root, fashion: try DatasetLoader.load(try DatasetLoader.defaultDataPath()),
                                                  trainCount: 4000, testCount: 1000)
            }
            comm.barrier()
        }
        guard batchSize % comm.size == 0 else { throw TricksError.invalidArgument("--batch-size \(batchSize) is not a multiple of the \(comm.size) ranks") }
        let fm = FileManager.default
        let trainSplit = fm.fileExists(atPath: root + "/ImageSets/Main/trainval.txt") ? "trainval" : "train"
        let testSplit = fm.fileExists(atPath: root + "/ImageSets/Main/test.txt") ? "test" : "val"
        let set = try VOCDataset(root: root, split: trainSplit)
        guard set.count >= batchSize else { throw TricksError.invalidArgument("--batch-size \(batchSize) exceeds the \(set.count) training images") }
        let K = set.classes.count
        // Anchors: k-means on the training boxes as the letterbox to --data-shape sizes them.
        var sizes: [(width: Double, height: Double)] = []
        for (i, bs) in set.boxes.enumerated() {
            let s = Double(dataShape) / Double(max(set.sizes[i].width, set.sizes[i].height))
            sizes += bs.map { (max($0.width * s, 1), max($0.height * s, 1)) }
        }
        guard sizes.count >= 9 else {
            throw TricksError.badData("\(root): \(trainSplit) has \(sizes.count) boxes; the nine anchors (k-means over the boxes) need at least 9")
        }
        let anchors = AnchorKMeans.fit(sizes, k: 9, seed: seed)
        let heads = (0..<3).map { h in YOLOHead(stride: YOLONet.strides[h], anchors: anchors[(6 - 3 * h)..<(9 - 3 * h)].map { [$0.width, $0.height] }) }
        let net = YOLONet(numClasses: K, anchorsPerHead: 3, width: width, seed: seed)
        let dp = try DataParallel(store: net.store, state: net.state, norms: net.norms, comm: comm, syncBatchNorm: bn == .sync,
                                  microShards: deterministic ? microShards : nil)
        let opt = SGD(store: net.store, momentum: 0.9, weightDecay: 5e-4, noBiasDecay: true)
        let plan = BatchPlan(datasetSize: set.count, globalBatch: batchSize, shuffle: !noShuffle, seed: seed)
        let spe = plan.stepsPerEpoch
        let total = max(1, Int(epochs * Double(spe)))
        let stop = min(total, maxSteps ?? total)
        let schedule = LRSchedule(kind: lrSchedule, lr: lr, warmupSteps: Int(warmupEpochs * Double(spe)), totalSteps: total,
                                  stepBoundaries: try stepEpochs().map { Int(($0 * Double(spe)).rounded()) })
        var pipe = DetectionPipeline(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], dataShape: dataShape, seed: seed)
        pipe.augment = !noAugment
        if mixup > 0 {
            pipe.mixup = DetectionMixup(alpha: mixup, seed: seed)
            pipe.mixupOffFrom = Int((epochs - mixupOffEpochs).rounded(.up))
        }
        if let r = randomShapes {
            // The last 10% of steps at the largest size (darknet's rule).
            pipe.shapes = try RandomShapes(sizes: try RandomShapes.parseSizes(r), every: shapeEvery, seed: seed, fixedFrom: total - total / 10)
        }
        let loss = YOLOLoss(numClasses: K, heads: heads)
        loss.labelSmoothing = labelSmoothing
        log(comm, "training on \(root) (\(trainSplit): \(set.count) images, \(K) classes), ranks \(comm.size), global batch \(batchSize) (\(batchSize / comm.size) per rank), \(stop) of \(total) steps, BN \(dp.normMode)")
        log(comm, "anchors " + anchors.map { String(format: "%.0f×%.0f", $0.width, $0.height) }.joined(separator: " ")
            + ", lr \(lr) \(lrSchedule.rawValue)" + (lrSchedule == .step ? " at epochs \(try stepEpochs().map { String(format: "%g", $0) }.joined(separator: ","))" : "")
            + (warmupEpochs > 0 ? ", warmup \(warmupEpochs) epochs" : "")
            + ", shapes \(randomShapes ?? "\(dataShape)"), mixup \(mixup > 0 ? "α \(mixup)" : "off"), label smoothing \(labelSmoothing ? "on" : "off")")
        let test = noEval ? nil : try VOCDataset(root: root, split: testSplit, classes: set.classes)
        var metrics: [[String: Any]] = []   // metrics.jsonl in --out: progress lines and evaluations
        var map = (eleven: Double.nan, area: Double.nan), evalSeconds = 0.0
        func evaluate(after step: Int) throws {
            guard let test else { return }
            let t0 = Date()
            defer { evalSeconds += Date().timeIntervalSince(t0) }
            let m = try evaluateMAP(net: net, loss: loss, pipe: pipe, test: test, comm: comm)
            map = (m.eleven, m.area)
            log(comm, String(format: "eval after step %d (epoch %.2f): test mAP@0.5 %.4f (VOC07 11-point), %.4f (area) on %d images",
                             step, Double(step) / Double(spe), map.eleven, map.area, test.count))
            metrics.append(["step": step, "epoch": Double(step) / Double(spe), "map50": map.eleven, "map50_area": map.area])
        }
        let start = Date()
        var window = [0.0, 0.0], lastLoss = Double.nan, order: [Int32] = [], orderEpoch = -1
        for step in 0..<stop {
            let epoch = step / spe
            if epoch != orderEpoch { order = plan.order(epoch: epoch); orderEpoch = epoch }
            let mine = plan.shard(order: order, stepInEpoch: step % spe, rank: comm.rank, size: comm.size).map { Int($0) }
            let batch = try pipe.trainBatch(set, indices: mine, epoch: epoch, step: step)
            dp.beginStep()
            let outs = net.forward(batch.images, mode: .training)
            var l = loss.forward(outputs: outs, boxes: batch.boxes, imageWidth: batch.side, imageHeight: batch.side, normalizer: batchSize).total
            if let ms = dp.microShards { l = ms.batchSum(loss.imageLosses) }   // the whole batch's, in tree order
            guard l.isFinite else { comm.abort("tricks-detect: rank \(comm.rank): loss is \(l) at step \(step); lower --lr", code: 3) }
            net.backward(loss.grads)
            dp.finishGradients()
            opt.step(lr: Float(schedule.rate(at: step)))
            window[0] += l; window[1] += 1
            if (step + 1) % logEvery == 0 || step + 1 == stop {
                if dp.microShards != nil {
                    lastLoss = window[0] / max(window[1], 1)   // every rank holds the batch's loss
                } else {
                    window.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
                    lastLoss = window[0] / max(window[1] / Double(comm.size), 1)
                }
                let t = Date().timeIntervalSince(start)
                log(comm, String(format: "step %d/%d  epoch %d  loss %.4f  lr %.5f  side %d  %.1f img/s  ETA %.0f s", step + 1, stop,
                                 epoch + 1, lastLoss, schedule.rate(at: step), batch.side, Double((step + 1) * batchSize) / t,
                                 t / Double(step + 1) * Double(stop - step - 1)))
                metrics.append(["step": step + 1, "epoch": Double(step + 1) / Double(spe), "loss": lastLoss, "lr": schedule.rate(at: step)])
                window = [0, 0]
            }
            if (step + 1) % spe == 0 && step + 1 < stop { try evaluate(after: step + 1) }
        }
        let trainSeconds = Date().timeIntervalSince(start) - evalSeconds
        if let o = out, comm.rank == 0 {
            try fm.createDirectory(atPath: o, withIntermediateDirectories: true)
            try SafeTensors.save(net.state, to: o + "/model.safetensors", metadata: DetectorSpec(
                classes: set.classes, anchors: heads.map(\.anchors), width: width, dataShape: dataShape).metadata)
        }
        try evaluate(after: stop)
        let seconds = Date().timeIntervalSince(start)
        if let o = out, comm.rank == 0 {
            let lines = try metrics.map { m in
                let finite = m.mapValues { v -> Any in if let d = v as? Double, !d.isFinite { return NSNull() } else { return v } }
                return String(decoding: try JSONSerialization.data(withJSONObject: finite, options: [.sortedKeys]), as: UTF8.self)
            }
            try SafeTensors.writeAtomically(Data((lines.joined(separator: "\n") + "\n").utf8), to: o + "/metrics.jsonl")
        }
        if comm.rank == 0 {
            func j(_ d: Double) -> String { d.isFinite ? String(format: "%.6g", d) : "null" }
            FileHandleOutput.stdout("{\"steps\":\(stop),\"train_loss\":\(j(lastLoss)),\"map50\":\(j(map.eleven)),\"map50_area\":\(j(map.area)),"
                + "\"images_per_second\":\(j(Double(stop * batchSize) / trainSeconds)),\"seconds\":\(j(seconds)),\"ranks\":\(comm.size),\"bn\":\"\(dp.normMode)\"}")
        }
    }
}

/// What a checkpoint needs besides its tensors to rebuild the detector: classes, anchors, width.
struct DetectorSpec {
    var classes: [String]
    var anchors: [[[Double]]]
    var width: Int
    var dataShape: Int

    var metadata: [String: String] {
        let a = try! JSONSerialization.data(withJSONObject: anchors), c = try! JSONSerialization.data(withJSONObject: classes)
        return ["detector": "yolo", "classes": String(decoding: c, as: UTF8.self), "anchors": String(decoding: a, as: UTF8.self),
                "width": "\(width)", "data_shape": "\(dataShape)"]
    }

    /// Reads the spec and loads the weights of `path` into a new network.
    static func load(_ path: String) throws -> (DetectorSpec, YOLONet, YOLOLoss) {
        guard let d = FileManager.default.contents(atPath: path) else { throw TricksError.badCheckpoint("\(path): cannot read") }
        let m = try SafeTensors.metadata(d, path: path)
        guard m["detector"] == "yolo", let c = m["classes"], let a = m["anchors"], let w = m["width"].flatMap(Int.init),
              let s = m["data_shape"].flatMap(Int.init),
              let classes = try? JSONSerialization.jsonObject(with: Data(c.utf8)) as? [String],
              let anchors = try? JSONSerialization.jsonObject(with: Data(a.utf8)) as? [[[Double]]], anchors.count == 3 else {
            throw TricksError.badCheckpoint("\(path): not a tricks-detect checkpoint (no detector, classes, anchors or width metadata)")
        }
        let spec = DetectorSpec(classes: classes, anchors: anchors, width: w, dataShape: s)
        let net = YOLONet(numClasses: classes.count, anchorsPerHead: anchors[0].count, width: w)
        try SafeTensors.load(path, into: net.state, data: d)
        let loss = YOLOLoss(numClasses: classes.count, heads: (0..<3).map { YOLOHead(stride: YOLONet.strides[$0], anchors: anchors[$0]) })
        return (spec, net, loss)
    }
}

/// mAP@0.5 of `net` on `test` at the pipeline's data shape, sharded over ranks: blocks of 16
/// consecutive images dealt round-robin, each run as one batch whatever rank holds it, so every
/// image's detections (and the mAP) are the same for any number of ranks.
func evaluateMAP(net: YOLONet, loss: YOLOLoss, pipe: DetectionPipeline, test: VOCDataset, comm: Communicator) throws
    -> (eleven: Double, area: Double, perClass: [Double?]) {
    var metric = VOCMeanAP(numClasses: loss.numClasses)
    for block in stride(from: comm.rank * 16, to: test.count, by: comm.size * 16) {
        let ids = Array(block..<min(block + 16, test.count))
        let b = try pipe.evalBatch(test, indices: ids)
        let found = loss.detect(outputs: net.forward(b.images, mode: .inference))
        for (k, i) in ids.enumerated() {
            metric.add(image: i, detections: found[k].map { d in var d = d; d.box = b.maps[k].unmap(d.box); return d },
                       groundTruth: test.boxes[i])
        }
    }
    metric.combine(over: comm)
    return (metric.meanAP(elevenPoint: true), metric.meanAP(elevenPoint: false), metric.averagePrecisions(elevenPoint: true))
}

struct DetectEval: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval",
        abstract: "mAP@0.5 of a checkpoint on a VOC-layout split; prints one JSON line with per-class AP.")
    @Option(help: "A model.safetensors written by tricks-detect train.") var checkpoint: String
    @Option(help: "A VOC-layout directory (default: runs/scenes).") var data: String?
    @Option(help: "The split (default: test, else val).") var split: String?

    func run() throws {
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        let comm: Communicator = mpi ?? SingleProcessCommunicator()
        do {
            let (spec, net, loss) = try DetectorSpec.load(checkpoint)
            let root = data ?? "runs/scenes"
            let name = split ?? (FileManager.default.fileExists(atPath: root + "/ImageSets/Main/test.txt") ? "test" : "val")
            let test = try VOCDataset(root: root, split: name, classes: spec.classes)
            let pipe = DetectionPipeline(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], dataShape: spec.dataShape, seed: 0)
            let m = try evaluateMAP(net: net, loss: loss, pipe: pipe, test: test, comm: comm)
            if comm.rank == 0 {
                // Per class, the VOC07 11-point AP (null for a class without ground truth in the split).
                let perClass = Dictionary(uniqueKeysWithValues: zip(spec.classes, m.perClass.map { $0.map { $0 as Any } ?? NSNull() }))
                let line = try JSONSerialization.data(withJSONObject: ["map50": m.eleven, "map50_area": m.area, "images": test.count,
                                                                       "split": name, "ap50": perClass] as [String: Any], options: [.sortedKeys])
                FileHandleOutput.stdout(String(decoding: line, as: UTF8.self))
            }
            mpi?.finalize()
        } catch {
            comm.abort("tricks-detect eval: rank \(comm.rank): \(error)", code: 2)
        }
    }
}

struct DetectPredict: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "predict",
        abstract: "Detect objects in image files: one JSON line per image, and with --draw DIR a PNG with the boxes drawn.")
    @Option(help: "A model.safetensors written by tricks-detect train.") var checkpoint: String
    @Option(help: "Keep detections with σ(objectness)·σ(class) at least this.") var threshold = 0.3
    @Option(help: "Write <name>.png with the boxes drawn into this directory.") var draw: String?
    @Option(help: "Write one PNG of every image with its boxes drawn, four to a row.") var grid: String?
    @Option(help: "Write the network's input and raw head outputs (input, head0…head2, strides 32, 16, 8) to this safetensors file (one image; for checking docs/torch_yolo.py).")
    var rawOut: String?
    @Argument(help: "JPEG or PNG files.") var images: [String]

    func validate() throws {
        if rawOut != nil && images.count != 1 { throw ValidationError("--raw-out takes exactly one image, got \(images.count)") }
    }

    func run() throws {
        do {
            let (spec, net, loss) = try DetectorSpec.load(checkpoint)
            let pipe = DetectionPipeline(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], dataShape: spec.dataShape, seed: 0)
            if let d = draw { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
            var drawn: [Image] = []
            for path in images {
                var image = try Image.read(path).converted(channels: 3)
                let b = try pipe.assemble([0], side: spec.dataShape) { _ in DetectionSample(image: image, boxes: []) }
                let outs = net.forward(b.images, mode: .inference)
                if let r = rawOut {
                    let named = [("input", b.images)] + outs.enumerated().map { ("head\($0.offset)", $0.element) }
                    var meta = spec.metadata
                    meta["image"] = path; meta["checkpoint"] = checkpoint; meta["strides"] = YOLONet.strides.map(String.init).joined(separator: ",")
                    try SafeTensors.save(named.map { StateTensor(name: $0.0, shape: $0.1.shape, storage: .float($0.1.data)) }, to: r, metadata: meta)
                }
                let found = loss.detect(outputs: outs, threshold: threshold)[0]
                    .map { d in var d = d; d.box = b.maps[0].unmap(d.box).clipped(width: Double(image.width), height: Double(image.height)); return d }
                let items: [[String: Any]] = found.map { d in
                    ["class": spec.classes[d.box.label], "score": d.score, "box": [d.box.x0, d.box.y0, d.box.x1, d.box.y1]]
                }
                let line = try JSONSerialization.data(withJSONObject: ["image": path, "detections": items] as [String: Any], options: [.sortedKeys])
                FileHandleOutput.stdout(String(decoding: line, as: UTF8.self))
                if draw != nil || grid != nil {
                    for f in found {
                        image.drawBox(f.box, colour: Image.classColour(f.box.label), thickness: 1)
                        image.drawText(String(format: "%@ %.2f", spec.classes[f.box.label], f.score).replacingOccurrences(of: "0.", with: "."),
                                       x: Int(f.box.x0), y: max(0, Int(f.box.y0) - 7), colour: [0, 0, 0], background: Image.classColour(f.box.label))
                    }
                    if let d = draw {
                        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
                        try image.zoomed(2).write("\(d)/\(name).png")
                    }
                    if grid != nil { drawn.append(image) }
                }
            }
            if let g = grid {
                // Cells of the largest image's size, white between them.
                let cols = min(4, drawn.count), rows = (drawn.count + cols - 1) / cols, gap = 4
                let cw = drawn.map(\.width).max()!, ch = drawn.map(\.height).max()!
                var sheet = Image(width: cols * (cw + gap) - gap, height: rows * (ch + gap) - gap, fill: [255, 255, 255])
                for (i, im) in drawn.enumerated() { sheet.paste(im, x: i % cols * (cw + gap), y: i / cols * (ch + gap)) }
                try sheet.zoomed(2).write(g)
            }
        } catch {
            FileHandleOutput.stderr("tricks-detect predict: \(error)")
            throw ExitCode(2)
        }
    }
}
