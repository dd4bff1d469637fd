import ArgumentParser
import Foundation
import Tricks
import TricksMPI

/// `make-scenes`: the detection set composed from Fashion-MNIST.
struct MakeScenes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-scenes",
        abstract: "Write a VOC-layout detection set composed from Fashion-MNIST items on textured backgrounds.")

    @Option(help: "Output directory (created; JPEGImages/, Annotations/, ImageSets/Main/{train,test}.txt, classes.txt).")
    var out: String
    @Option(help: "Fashion-MNIST IDX directory (default: the dataset-fashion-mnist package).")
    var data: String?
    @Option(help: "Training scenes.") var trainCount = 4000
    @Option(help: "Test scenes.") var testCount = 1000
    @Option(help: "Seed; the set is a pure function of it.") var seed: UInt64 = 0
    @Option(help: "Smallest canvas side in pixels.") var minSide = 96
    @Option(help: "Largest canvas side in pixels.") var maxSide = 192
    @Option(help: "Most items per scene (at least 1).") var maxObjects = 5
    @Option(help: "Smallest item side in pixels.") var minItem = 12
    @Option(help: "Largest item side in pixels.") var maxItem = 80
    @Option(help: "JPEG quality, 1–100.") var quality = 90
    @Option(help: "Threads (default: all cores).") var threads: Int?

    func validate() throws {
        guard trainCount >= 1, testCount >= 1 else { throw ValidationError("--train-count and --test-count must be at least 1") }
        guard minSide >= 16, maxSide >= minSide, maxSide <= 4096 else { throw ValidationError("need 16 ≤ --min-side ≤ --max-side ≤ 4096") }
        guard maxObjects >= 1 else { throw ValidationError("--max-objects must be at least 1") }
        guard minItem >= 8, maxItem >= minItem, minItem <= minSide else {
            throw ValidationError("need 8 ≤ --min-item ≤ --max-item and --min-item ≤ --min-side")
        }
        guard (1...100).contains(quality) else { throw ValidationError("--quality must be in 1…100") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        BLAS.setThreads(threads ?? ProcessInfo.processInfo.activeProcessorCount)
        do {
            let fashion = try DatasetLoader.load(try data ?? DatasetLoader.defaultDataPath())
            guard fashion.train.channels == 1, fashion.train.height == 28, fashion.train.width == 28, fashion.numClasses == 10 else {
                throw TricksError.badData("\(fashion.source): expected Fashion-MNIST (28×28 gray, 10 classes)")
            }
            var maker = SceneMaker(seed: seed)
            maker.minSide = minSide; maker.maxSide = maxSide; maker.maxObjects = maxObjects
            maker.minItem = minItem; maker.maxItem = maxItem; maker.jpegQuality = quality
            let t0 = Date()
            var last = Date.distantPast
            let n = try maker.write(to: out, fashion: fashion, trainCount: trainCount, testCount: testCount) { done, total in
                if Date().timeIntervalSince(last) > 2 || done == total {
                    last = Date()
                    FileHandleOutput.stderr("make-scenes: \(done)/\(total) scenes")
                }
            }
            print("make-scenes: wrote \(trainCount) training scenes (\(n.train) objects) and \(testCount) test scenes (\(n.test) objects) to \(out) in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s")
        } catch {
            FileHandleOutput.stderr("tricks-worker make-scenes: \(error)")
            throw ExitCode(2)
        }
    }
}

/// `detection-data`: runs the detection input pipeline without a model, to look at it, time it
/// and check that ranks agree.
struct DetectionData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detection-data",
        abstract: "Run the detection input pipeline alone: draw batches (--grid), print what each rank gets (--print), time it (--time) or dump the set (--describe).",
        discussion: "Under mpirun every rank takes its slice of each global batch, as in training.")

    @Option(help: "A VOC-layout directory (e.g. one written by make-scenes).") var data: String
    @Option(help: "The split's list in ImageSets/Main.") var split = "train"
    @Option(help: "Global batch size, over all ranks.") var batchSize = 8
    @Option(help: "Steps to run.") var steps = 4
    @Option(help: "Epoch (keys augmentation, mixup and the shuffle).") var epoch = 0
    @Option(help: "Random input sizes: a list (320,352,416), a range in steps of --shape-multiple (320:608) or LO:HI:STEP. Default: always --data-shape.")
    var randomShapes: String?
    @Option(help: "Steps between shape draws.") var shapeEvery = 10
    @Option(help: "Every random shape must be a multiple of this (the network's stride).") var shapeMultiple = 32
    @Option(help: "The fixed input side (evaluation, and training without --random-shapes).") var dataShape = 128
    @Option(help: "Detection mixup's α (λ ~ Beta(α, α)); 0 is off.") var mixup = 0.0
    @Flag(help: "No colour jitter, expansion, crop or flip.") var noAugment = false
    @Flag(help: "Take samples in order instead of the shuffled epoch order.") var noShuffle = false
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Option(help: "Write a PNG of the batches (rank 0), boxes and class names drawn.") var grid: String?
    @Flag(help: "Print one JSON line per rank and step: side, samples, boxes.") var print = false
    @Flag(help: "Print a table of images/s per stage (decode, augment+mixup, letterbox+normalize).") var time = false
    @Flag(help: "Print one JSON line per image of the split as stored (size, pixel sums, boxes) and stop.") var describe = false
    @Option(help: "Threads (default: all cores, or cores / ranks under mpirun).") var threads: Int?

    func validate() throws {
        guard batchSize >= 1, steps >= 1, epoch >= 0, dataShape >= 8, shapeEvery >= 1, shapeMultiple >= 1 else {
            throw ValidationError("--batch-size, --steps, --shape-every and --shape-multiple must be positive, --epoch ≥ 0, --data-shape ≥ 8")
        }
        guard mixup >= 0 else { throw ValidationError("--mixup must be ≥ 0") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        let comm: Communicator = mpi ?? SingleProcessCommunicator()
        let env = ProcessInfo.processInfo.environment
        let local = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
        BLAS.setThreads(threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / local))
        do {
            try body(comm)
            mpi?.finalize()
        } catch {
            comm.abort("tricks-worker: rank \(comm.rank): \(error)", code: 2)
        }
    }

    func body(_ comm: Communicator) throws {
        let set = try VOCDataset(root: data, split: split)
        if describe {
            if comm.rank == 0 { try describeSet(set) }
            return
        }
        guard batchSize % comm.size == 0 else {
            throw TricksError.invalidArgument("--batch-size \(batchSize) is not a multiple of the \(comm.size) ranks")
        }
        guard set.count >= batchSize else { throw TricksError.invalidArgument("--batch-size \(batchSize) exceeds the \(set.count) images of \(split)") }
        var pipe = DetectionPipeline(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], dataShape: dataShape, seed: seed)
        pipe.augment = !noAugment
        if mixup > 0 { pipe.mixup = DetectionMixup(alpha: mixup, seed: seed) }
        if let r = randomShapes {
            pipe.shapes = try RandomShapes(sizes: try RandomShapes.parseSizes(r, multiple: shapeMultiple), every: shapeEvery, seed: seed)
        }
        let plan = BatchPlan(datasetSize: set.count, globalBatch: batchSize, shuffle: !noShuffle, seed: seed)
        let order = plan.order(epoch: epoch)
        if time { try timeStages(set, pipe, plan: plan, order: order, comm: comm); return }
        var shown: [(step: Int, batch: DetectionBatch)] = []
        for step in 0..<steps {
            let inEpoch = step % plan.stepsPerEpoch
            let mine = plan.shard(order: order, stepInEpoch: inEpoch, rank: comm.rank, size: comm.size).map { Int($0) }
            let batch = try pipe.trainBatch(set, indices: mine, epoch: epoch, step: step)
            if print {
                let boxes = batch.boxes.map { bs in
                    "[" + bs.map { String(format: "[%.2f,%.2f,%.2f,%.2f,%d,%.4f]", $0.x0, $0.y0, $0.x1, $0.y1, $0.label, $0.weight) }
                        .joined(separator: ",") + "]"
                }
                FileHandleOutput.stdout("{\"rank\":\(comm.rank),\"step\":\(step),\"side\":\(batch.side),\"samples\":[\(mine.map(String.init).joined(separator: ","))],\"boxes\":[\(boxes.joined(separator: ","))]}")
            }
            if grid != nil && comm.rank == 0 { shown.append((step, batch)) }
        }
        if let g = grid, comm.rank == 0 {
            let picture = DetectionPreview.grid(shown, classes: set.classes, mean: pipe.mean, std: pipe.std)
            try picture.write(g)
            FileHandleOutput.stderr("detection-data: wrote \(g) (\(picture.width)×\(picture.height))")
        }
        comm.barrier()
    }

    /// Per image: id, size, channels, per-channel pixel sums, SHA-like digest and boxes (as VOC
    /// integers), for comparison with an independent reader.
    func describeSet(_ set: VOCDataset) throws {
        for i in 0..<set.count {
            let s = try set.sample(i)
            var sums = [Int](repeating: 0, count: s.image.channels)
            for (k, v) in s.image.pixels.enumerated() { sums[k % s.image.channels] += Int(v) }
            let boxes = s.boxes.map { "[\(Int($0.x0) + 1),\(Int($0.y0) + 1),\(Int($0.x1)),\(Int($0.y1)),\($0.label),\($0.difficult ? 1 : 0)]" }
            FileHandleOutput.stdout("{\"id\":\"\(set.ids[i])\",\"width\":\(s.image.width),\"height\":\(s.image.height),\"channels\":\(s.image.channels),\"sums\":[\(sums.map(String.init).joined(separator: ","))],\"boxes\":[\(boxes.joined(separator: ","))]}")
        }
    }

    /// Images per second per core for each stage, over `steps` global batches of this rank.
    func timeStages(_ set: VOCDataset, _ pipe: DetectionPipeline, plan: BatchPlan, order: [Int32], comm: Communicator) throws {
        var ids: [Int] = []
        for step in 0..<steps {
            ids += plan.shard(order: order, stepInEpoch: step % plan.stepsPerEpoch, rank: comm.rank, size: comm.size).map { Int($0) }
        }
        BLAS.setThreads(1)   // per core
        func clock(_ f: () throws -> Void) rethrows -> Double {
            let t = DispatchTime.now().uptimeNanoseconds
            try f()
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
        }
        var decoded: [DetectionSample] = []
        let tDecode = try clock { decoded = try ids.map { try set.sample($0) } }
        var aug = pipe
        let tAugment = try clock { for i in ids { _ = try aug.trainSample(set, i, epoch: epoch) } } - tDecode * (pipe.mixup == nil ? 1 : 2)
        aug.augment = false; aug.mixup = nil
        let side = pipe.side(atStep: 0)
        let tLetter = try clock {
            // Batches of this rank's size over the decoded samples (by position in `decoded`).
            let local = max(1, batchSize / comm.size)
            for i in stride(from: 0, to: ids.count, by: local) {
                _ = try aug.assemble(Array(i..<min(i + local, ids.count)), side: side) { decoded[$0] }
            }
        }
        let n = Double(ids.count)
        if comm.rank == 0 {
            Swift.print("# detection input pipeline, \(ids.count) images of \(set.root) (\(split)), one thread, side \(side), mixup \(pipe.mixup.map { "α \($0.alpha)" } ?? "off"), augment \(pipe.augment ? "on" : "off")\n")
            Swift.print("| stage | ms/image | images/s per core |\n|---|---:|---:|")
            for (name, t) in [("decode (JPEG + annotation)", tDecode), ("mixup + jitter + expand + crop + flip", tAugment),
                              ("letterbox + normalize", tLetter), ("all", tDecode * (pipe.mixup == nil ? 1 : 2) + tAugment + tLetter)] {
                Swift.print(String(format: "| %@ | %.3f | %.0f |", name, 1e3 * t / n, n / max(t, 1e-9)))
            }
        }
    }
}
