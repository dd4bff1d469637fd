import ArgumentParser
import Foundation
import Tricks
import TricksMPI

@main
struct TricksWorker: ParsableCommand {
    static func main() {
        selectBLASKernels()
        do {
            try KernelISA.checkEnvironment()
        } catch {
            FileHandle.standardError.write(Data("tricks-worker: \(error)\n".utf8))
            Foundation.exit(2)
        }
        let args = Array(CommandLine.arguments.dropFirst())
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    /// OpenBLAS reads `OPENBLAS_CORETYPE` once, when it loads. If it fell back to its generic
    /// kernels on a CPU it does not know, restart this process with the right kernel set
    /// (before MPI is initialized, so the launcher sees the same process).
    static func selectBLASKernels() {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(line.split(separator: " ").map(String.init))
        guard let core = BLAS.betterCoreType(cpuFlags: flags) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)   // returns only on failure: carry on with the generic kernels
    }

    static let configuration = CommandConfiguration(
        commandName: "tricks-worker",
        abstract: "Data-parallel CNN training with synchronized batch norm and the bag of tricks.",
        discussion: "Run one process with `tricks-worker train`, or N with `mpirun -np N tricks-worker train`.",
        subcommands: [Train.self, Eval.self, Plot.self, Bench.self, MakeScenes.self, DetectionData.self, SelfTest.self],
        defaultSubcommand: Train.self)
}

extension LRSchedule.Kind: ExpressibleByArgument {}
extension Augmentation: ExpressibleByArgument {}

enum BNMode: String, ExpressibleByArgument, CaseIterable {
    case sync, local
}

/// Parses "a,b,c" into numbers.
func doubles(_ s: String, flag: String) throws -> [Double] {
    let parts = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let v = parts.compactMap(Double.init)
    guard v.count == parts.count, !v.isEmpty else { throw ValidationError("\(flag): expected comma-separated numbers, got '\(s)'") }
    return v
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a CIFAR-style ResNet; the last line printed is a JSON summary.")

    @Option(help: "A directory of IDX files (train-*/t10k-*, optionally .gz), an image folder (DIR/train/<class>/*.png|jpg and DIR/val/ or DIR/test/), or an .npz with x_train, y_train, x_test, y_test. Default: Fashion-MNIST from the dataset-fashion-mnist package.")
    var data: String?

    @Option(parsing: .unconditional, help: "Resize an image folder's images to this square size (default: their own size, which they must share).")
    var imageSize: Int?

    @Option(help: "resnet20, resnet32, resnet44, resnet56 or resnet110.")
    var model = "resnet20"

    @Option(parsing: .unconditional, help: "The global batch size, over all ranks.")
    var batchSize = 64

    @Option(parsing: .unconditional, help: "Epochs to train (fractional allowed); sets the schedule's length. Default 10 when --max-steps is not given.")
    var epochs: Double?

    @Option(parsing: .unconditional, help: "Stop after this many steps without changing the schedule's length.")
    var maxSteps: Int?

    @Option(parsing: .unconditional, help: "Base learning rate.")
    var lr = 0.1

    @Option(parsing: .unconditional, help: "SGD momentum.")
    var momentum = 0.9

    @Flag(help: "Nesterov momentum.")
    var nesterov = false

    @Option(parsing: .unconditional, help: "Weight decay.")
    var wd = 5e-4

    @Flag(help: "No weight decay on biases and BN γ/β.")
    var noBiasDecay = false

    @Option(help: "constant, step or cosine.")
    var lrSchedule = LRSchedule.Kind.cosine

    @Option(parsing: .unconditional, help: "Linear warmup length in epochs (fractional allowed).")
    var warmupEpochs = 0.0

    @Option(help: "Comma-separated epochs at which the step schedule multiplies the rate by 0.1.")
    var lrSteps: String?

    @Option(parsing: .unconditional, help: "Label smoothing ε: 1−ε on the true class, ε/(K−1) on the others.")
    var labelSmoothing = 0.0

    @Option(parsing: .unconditional, help: "Mixup α: train on λ·x_i + (1−λ)·x_j with λ ~ Beta(α, α); 0 is off.")
    var mixup = 0.0

    @Option(parsing: .unconditional, help: "Turn mixup off for the last this many epochs.")
    var mixupOffEpochs = 0.0

    @Flag(help: "γ = 0 in the last BN of every residual block at initialization.")
    var zeroGamma = false

    @Option(parsing: .unconditional, help: "Linear scaling: lr = X · batch-size / 256 (overrides --lr).")
    var lrPer256: Double?

    @Option(help: "standard (pad 4, random crop, random flip) or none.")
    var augment = Augmentation.none

    @Flag(help: "Keep file order: step i trains on samples [i·B, (i+1)·B).")
    var noShuffle = false

    @Option(help: "Comma-separated per-channel means of x/255 (default: the training set's).")
    var mean: String?

    @Option(help: "Comma-separated per-channel standard deviations of x/255 (default: the training set's).")
    var std: String?

    @Option(parsing: .unconditional, help: "Number of classes; labels must be below it (default: 1 + the largest label).")
    var numClasses: Int?

    @Option(help: "A safetensors file to load every weight and buffer from before training (strict).")
    var `init`: String?

    @Option(help: "Output directory for model.safetensors and metrics.jsonl.")
    var out: String?

    @Option(help: "Random seed for initialization, shuffling and augmentation.")
    var seed: UInt64 = 0

    @Option(parsing: .unconditional, help: "Steps between progress lines.")
    var logEvery = 50

    @Option(help: "sync: batch-norm statistics over all ranks; local: per rank.")
    var bn = BNMode.sync

    @Option(parsing: .unconditional, help: "With --bn sync: synchronize BN within groups of this many consecutive ranks (default: all).")
    var bnGroupSize: Int?

    @Option(parsing: .unconditional, help: "Compare a checksum of all parameters across ranks every K steps; end the job at the first divergence.")
    var checkReplicas: Int?

    @Option(parsing: .unconditional, help: "Write a training checkpoint into --out every N steps (and at each epoch end).")
    var checkpointEvery: Int?

    @Flag(help: "Check that every rank issues the same collectives in the same order; a mismatch ends the job naming each rank's collective (a debugging mode: one more small all-reduce per collective).")
    var checkCollectives = false

    @Option(parsing: .unconditional, help: "With --check-collectives: seconds a rank waits for the others at a collective before ending the job.")
    var collectiveTimeout = 120.0

    @Option(help: "Continue from DIR/checkpoint.safetensors (model, momentum, step).")
    var resume: String?

    @Option(parsing: .unconditional, help: "Target size in KiB of a gradient all-reduce bucket.")
    var bucketKb = 256

    @Flag(help: "Bit-identical results for any number of ranks: every sum over samples (gradients, SyncBatchNorm's statistics, loss, metrics) per micro-shard and along one fixed tree. Needs --bn sync, a power-of-two rank count dividing --micro-shards, and --batch-size divisible by it. See docs/distributed.md.")
    var deterministic = false

    @Option(parsing: .unconditional, help: "With --deterministic: micro-shards per global batch (a power of two; runs that must agree use the same value).")
    var microShards = 8

    @Option(parsing: .unconditional, help: "BLAS threads per rank (default: the OPENBLAS_NUM_THREADS setting, else cores / ranks on this node).")
    var threads: Int?

    @OptionGroup var winograd: WinogradOptions

    func validate() throws {
        if let t = threads, t <= 0 { throw ValidationError("--threads must be positive") }
        if !(collectiveTimeout > 0) { throw ValidationError("--collective-timeout must be positive, got \(collectiveTimeout)") }
        if let p = `init`, !FileManager.default.fileExists(atPath: p) { throw ValidationError("--init \(p): no such file") }
        // The rest are TrainConfig's rules, the ones Trainer applies for embedders too.
        do { try makeConfig().validate() } catch TricksError.invalidArgument(let m) { throw ValidationError(m) }
    }

    func makeConfig() throws -> TrainConfig {
        var c = TrainConfig()
        c.data = data; c.imageSize = imageSize; c.model = model; c.batchSize = batchSize
        c.epochs = epochs ?? (maxSteps == nil ? TrainConfig().epochs : nil)
        c.maxSteps = maxSteps; c.lr = lr; c.momentum = momentum; c.nesterov = nesterov
        c.weightDecay = wd; c.noBiasDecay = noBiasDecay; c.lrSchedule = lrSchedule
        c.warmupEpochs = warmupEpochs
        c.lrSteps = try lrSteps.map { try doubles($0, flag: "--lr-steps") } ?? []
        c.labelSmoothing = labelSmoothing; c.augment = augment; c.shuffle = !noShuffle
        c.mixup = mixup; c.mixupOffEpochs = mixupOffEpochs; c.zeroGamma = zeroGamma; c.lrPer256 = lrPer256
        c.mean = try mean.map { try doubles($0, flag: "--mean") }
        c.std = try std.map { try doubles($0, flag: "--std") }
        c.numClasses = numClasses; c.initFrom = `init`; c.out = out; c.seed = seed
        c.logEvery = logEvery; c.syncBN = bn == .sync
        c.bnGroupSize = bnGroupSize; c.checkReplicas = checkReplicas; c.bucketBytes = bucketKb * 1024
        c.checkpointEvery = checkpointEvery; c.resume = resume
        c.deterministic = deterministic; c.microShards = microShards
        return c
    }

    func run() throws {
        let config = try makeConfig()
        let env = ProcessInfo.processInfo.environment
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        let world: Communicator = mpi ?? SingleProcessCommunicator()
        let comm: Communicator = checkCollectives ? CheckedCommunicator(world, timeout: collectiveTimeout) : world
        winograd.apply()
        if let t = threads {
            BLAS.setThreads(t)
        } else if env["OPENBLAS_NUM_THREADS"] == nil {
            let localRanks = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
            BLAS.setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks))
        }
        do {
            if let out = config.out, comm.rank == 0 {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            }
            let trainer = try Trainer(config: config, comm: comm)
            let s = try trainer.run()
            if comm.rank == 0 {
                let fields: [(String, String)] = [
                    ("steps", "\(s.steps)"), ("train_loss", json(s.trainLoss)), ("test_accuracy", json(s.testAccuracy)),
                    ("test_loss", json(s.testLoss)), ("images_per_second", json(s.imagesPerSecond)),
                    ("seconds", json(s.seconds)), ("step_ms", json(1e3 * s.stepSeconds)),
                    ("comm_wait_ms", json(1e3 * s.commWaitSeconds)), ("ranks", "\(comm.size)"),
                    ("bn", "\"\(config.syncBN && comm.size > 1 ? "sync" : "local")\""), ("model", "\"\(config.model)\""),
                    ("micro_shards", config.deterministic ? "\(config.microShards)" : "null"),
                ]
                FileHandleOutput.stdout("{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
            }
            mpi?.finalize()
        } catch {
            comm.abort("tricks-worker: rank \(comm.rank): \(error)", code: 2)
        }
    }

    func json(_ d: Double) -> String { d.isFinite ? String(format: "%.6g", d) : "null" }
}

/// Where the convolutions use Winograd (`train` and `bench`).
struct WinogradOptions: ParsableArguments {
    @Option(help: "Stride-1 3×3 layers with at least this many input and output channels use Winograd F(2×2, 3×3) on planes whose 2×2 tiles fill vectors of 16, where F(4×4, 3×3) does not take them (0: all such layers; a huge value: none).")
    var winogradMinChannels = Conv2d.winogradMinChannels
    @Option(help: "The same threshold for the weight gradient alone (Winograd's pays from narrower layers).")
    var winogradWeightGradMinChannels = Conv2d.winogradWeightGradMinChannels
    @Option(help: "Stride-1 3×3 layers with at least this many input and output channels run their output and input gradient on Winograd F(4×4, 3×3) instead, on planes of any size (a huge value: none).")
    var winograd4MinChannels = Conv2d.winograd4MinChannels
    @Option(help: "Layers with at least this many input and output channels on output planes of at most --gemm-max-plane positions run on im2col + GEMM (a huge value: none).")
    var gemmMinChannels = Conv2d.gemmMinChannels
    @Option(help: "See --gemm-min-channels.")
    var gemmMaxPlane = Conv2d.gemmMaxPlane

    func apply() {
        Conv2d.gemmMinChannels = gemmMinChannels
        Conv2d.gemmMaxPlane = gemmMaxPlane
        Conv2d.winogradMinChannels = winogradMinChannels
        Conv2d.winogradWeightGradMinChannels = winogradWeightGradMinChannels
        Conv2d.winograd4MinChannels = winograd4MinChannels
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps on random data and print a per-layer table (build with -c release).")

    @Option(help: "resnet20, resnet32, ...") var model = "resnet20"
    @Option(help: "Batch size.") var batchSize = 32
    @Option(help: "Input channels.") var channels = 3
    @Option(help: "Input height and width.") var size = 32
    @Option(help: "Timed steps.") var steps = 20
    @Option(help: "BLAS threads.") var threads = 1
    @Option(help: "sync or local batch norm (under mpirun).") var bn = BNMode.sync
    @Flag(help: "Print only one table row (for scripts that compare configurations).") var row = false
    @Option(help: "Floats of unfolded input per conv GEMM (chunking; for tuning).") var columnBudget: Int?
    @Flag(help: "Run every convolution through im2col + GEMM, without the direct 3×3 kernels (for comparison).")
    var im2col = false
    @OptionGroup var winograd: WinogradOptions
    @Flag(help: "Instead of the step: time one 3×3 stride-1 conv, direct kernels vs Winograd, at several widths and plane sizes.")
    var convKernels = false
    @Flag(help: "The step in the deterministic mode (fixed-order sums over --micro-shards).")
    var deterministic = false
    @Option(help: "With --deterministic: micro-shards per global batch.") var microShards = 8
    @Flag(help: "Instead of the step (under mpirun): time all-reduce and the deterministic mode's fixed-order tree by message size.")
    var comm = false
    @Option(help: "With --conv-kernels: the shapes, as comma-separated CHANNELSxSIDE (e.g. 64x56,128x28); default: the CIFAR and Fashion-MNIST ResNets' and a few smaller.")
    var convShapes: String?

    func run() throws {
        if convKernels {
            BLAS.setThreads(threads)
            var k = ConvKernelBenchmark()
            k.batch = batchSize
            if let spec = convShapes {
                k.shapes = try spec.split(separator: ",").map { part in
                    let v = part.split(separator: "x").compactMap { Int($0) }
                    guard v.count == 2, v.allSatisfy({ $0 > 0 }) else {
                        throw ValidationError("--conv-shapes: expected CHANNELSxSIDE items like 64x56, got '\(part)'")
                    }
                    return (v[0], v[1])
                }
            }
            print("# 3×3 stride-1 conv, batch \(batchSize), BLAS threads \(threads), kernels \(KernelISA.current): direct vs Winograd F(2×2, 3×3) and F(4×4, 3×3); best of \(k.reps)\n")
            print(k.run())
            return
        }
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        defer { mpi?.finalize() }
        if comm {
            let c: Communicator = mpi ?? SingleProcessCommunicator()
            let report = try CommBenchmark(comm: c).run()
            if c.rank == 0 { print("# collectives over \(c.size) ranks, mean per call over the ranks\n\n" + report) }
            return
        }
        BLAS.setThreads(threads)
        if let c = columnBudget { Conv2d.columnBudget = c }
        if im2col { Conv2d.directConvolution = false }
        winograd.apply()
        var b = StepBenchmark()
        b.model = model; b.batch = batchSize; b.channels = channels; b.size = size; b.steps = steps
        if let mpi { b.comm = mpi }
        b.syncBN = bn == .sync
        b.microShards = deterministic ? microShards : nil
        b.detail = !row && (mpi?.size ?? 1) == 1
        let report = try b.run()
        if (mpi?.rank ?? 0) == 0 { print(report) }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a checkpoint on the test split; prints one JSON line.")

    @Option(help: "Data, as for train (default: Fashion-MNIST).") var data: String?
    @Option(help: "Resize an image folder's images to this square size, as for train.") var imageSize: Int?
    @Option(help: "resnet20, resnet32, ...") var model = "resnet20"
    @Option(name: .customLong("init"), help: "The safetensors checkpoint to evaluate.") var checkpoint: String
    @Option(help: "Comma-separated per-channel means of x/255 (default: the training set's).") var mean: String?
    @Option(help: "Comma-separated per-channel standard deviations of x/255 (default: the training set's).") var std: String?

    func run() throws {
        var c = TrainConfig()
        c.data = data; c.imageSize = imageSize; c.model = model; c.initFrom = checkpoint; c.maxSteps = 1; c.batchSize = 1
        c.mean = try mean.map { try doubles($0, flag: "--mean") }
        c.std = try std.map { try doubles($0, flag: "--std") }
        do {
            let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in })
            let r = t.evaluate()
            let line = try JSONSerialization.data(withJSONObject: ["test_accuracy": r.accuracy, "test_loss": r.loss, "checkpoint": checkpoint]
                                                  as [String: Any], options: [.sortedKeys])
            print(String(decoding: line, as: UTF8.self))
        } catch {
            FileHandleOutput.stderr("tricks-worker eval: \(error)")
            throw ExitCode(2)
        }
    }
}

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw learning-rate, loss and accuracy curves of runs (their --out directories) as an SVG.")

    @Argument(help: "Run directories holding metrics.jsonl.") var runs: [String]
    @Option(help: "Output SVG file.") var output = "curves.svg"

    func validate() throws { if runs.isEmpty { throw ValidationError("give at least one run directory") } }

    func run() throws {
        do {
            let svg = try MetricsPlot.svg(runs: runs.map { (($0 as NSString).lastPathComponent, ($0 as NSString).appendingPathComponent("metrics.jsonl")) })
            try SafeTensors.writeAtomically(Data(svg.utf8), to: output)
            print("wrote \(output)")
        } catch {
            FileHandleOutput.stderr("tricks-worker plot: \(error)")
            throw ExitCode(2)
        }
    }
}
