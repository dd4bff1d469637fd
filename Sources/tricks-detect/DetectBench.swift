import ArgumentParser
import Foundation
import Tricks
import TricksDetect

/// `bench`: the detector's training step at one input shape on random data, the number
/// `docs/torch_yolo.py --bench` measures for PyTorch (`launch/compare-torch-detect.sh` runs both).
/// One process, no `DataParallel`: the step is forward (training mode), `YOLOLoss` on fixed boxes,
/// backward and the SGD update of `train` (momentum 0.9, weight decay 5e-4, none on biases and BN).
struct DetectBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench",
        abstract: "Time the training step on random input at one shape; prints a header line and one JSON line (build with -c release).")

    @Option(help: "Input side (a multiple of 32).") var side = 128
    @Option(help: "Images per step.") var batchSize = 8
    @Option(help: "Timed steps.") var steps = 20
    @Option(help: "Untimed steps first.") var warmup = 3
    @Option(help: "Threads (BLAS and the kernels).") var threads = 1
    @Option(help: "Channels of the network's stem.") var width = 16
    @Option(help: "Classes.") var classes = 10
    @Option(help: "Seed of the weights and the input.") var seed: UInt64 = 0
    @Option(help: "Layers with at least this many input and output channels on output planes of at most 64 positions run on im2col + GEMM (a huge value: none).")
    var gemmMinChannels = Conv2d.gemmMinChannels
    @Flag(help: "After the timed steps, as many profiled ones: a table of time per layer (after the JSON line).") var profile = false
    @Flag(help: "The deterministic mode's step: one micro-shard per image (as one rank of a job at one image per rank, or one process holding the whole batch).")
    var deterministic = false

    func validate() throws {
        guard side >= 32, side % 32 == 0 else { throw ValidationError("--side must be a positive multiple of 32, got \(side)") }
        guard batchSize > 0, steps > 0, warmup >= 0, threads > 0, width > 0, classes > 0 else {
            throw ValidationError("--batch-size, --steps, --threads, --width and --classes must be positive, --warmup ≥ 0")
        }
    }

    /// YOLOv3's nine COCO anchors (at 416 × 416) scaled to `side`, smallest first.
    static func anchors(side: Int) -> [[Double]] {
        [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
            .map { $0.map { $0 * Double(side) / 416 } }
    }

    /// Three boxes per image, one per head's anchor sizes, shifted a little from image to image;
    /// `docs/torch_yolo.py` makes the same ones.
    static func boxes(batch: Int, side: Int, classes: Int) -> [[Box]] {
        let base: [(cx: Double, cy: Double, w: Double, h: Double)] = [(0.30, 0.30, 0.10, 0.12), (0.60, 0.45, 0.25, 0.20), (0.50, 0.60, 0.60, 0.50)]
        let s = Double(side)
        return (0..<batch).map { n in
            base.enumerated().map { j, b in
                let cx = b.cx + 0.04 * Double(n % 4), cy = b.cy + 0.03 * Double(n % 3)
                return Box(x0: (cx - b.w / 2) * s, y0: (cy - b.h / 2) * s, x1: (cx + b.w / 2) * s, y1: (cy + b.h / 2) * s, label: (n + j) % classes)
            }
        }
    }

    func run() throws {
        BLAS.setThreads(threads)
        Conv2d.gemmMinChannels = gemmMinChannels
        let a = Self.anchors(side: side)
        let heads = (0..<3).map { h in YOLOHead(stride: YOLONet.strides[h], anchors: Array(a[(6 - 3 * h)..<(9 - 3 * h)])) }
        let net = YOLONet(numClasses: classes, anchorsPerHead: 3, width: width, seed: seed)
        let loss = YOLOLoss(numClasses: classes, heads: heads)
        let opt = SGD(store: net.store, momentum: 0.9, weightDecay: 5e-4, noBiasDecay: true)
        let dp = deterministic ? try DataParallel(store: net.store, state: net.state, norms: net.norms, comm: SingleProcessCommunicator(),
                                                  microShards: batchSize) : nil
        var rng = SplitMix64(key: [seed, 0x4245_4E43])
        let x = Tensor(shape: [batchSize, 3, side, side])
        for i in 0..<x.count { x[i] = Float(rng.normal()) }
        let boxes = Self.boxes(batch: batchSize, side: side, classes: classes)
        var last = 0.0
        func step() {
            if let dp { dp.beginStep() } else { net.store.zeroGrad() }
            let outs = net.forward(x, mode: .training)
            let lossOf = { loss.forward(outputs: outs, boxes: boxes, imageWidth: side, imageHeight: side, normalizer: batchSize).total }
            last = net.profiler.map { $0.measure("YOLOLoss forward and gradient", lossOf) } ?? lossOf()
            net.backward(loss.grads)
            dp?.finishGradients()
            opt.step(lr: 0.001)
        }
        for _ in 0..<warmup { step() }
        var times: [Double] = []
        for _ in 0..<steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            step()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        guard last.isFinite else {
            FileHandleOutput.stderr("tricks-detect bench: the loss is \(last) after \(warmup + steps) steps")
            throw ExitCode(3)
        }
        times.sort()
        // The upper middle for an even count, as `tricks-worker bench` and docs/torch_yolo.py take it.
        let median = times[times.count / 2], p90 = times[Int(0.9 * Double(times.count - 1))]
        let cells = YOLONet.strides.map { "\(side / $0)²" }.joined(separator: ", ")
        print("# tricks-detect training step, batch \(batchSize), 3×\(side)×\(side) (head grids \(cells)), width \(width), \(classes) classes, "
              + "threads \(threads), OpenBLAS kernels \(BLAS.coreName), kernels \(KernelISA.current), " + Conv2d.kernelSummary)
        print(String(format: "{\"side\":%d,\"batch\":%d,\"width\":%d,\"classes\":%d,\"threads\":%d,\"steps\":%d,\"median_ms\":%.2f,\"min_ms\":%.2f,\"p90_ms\":%.2f,"
                     + "\"images_per_second\":%.1f,\"loss\":%.4f,\"kernels\":\"%@\",\"deterministic\":%@}", side, batchSize, width, classes, threads, steps,
                     1e3 * median, 1e3 * times[0], 1e3 * p90, Double(batchSize) / median, last, KernelISA.current.description,
                     deterministic ? "true" : "false"))
        if profile {
            let prof = StepProfiler()
            net.profiler = prof
            for _ in 0..<steps { step() }
            net.profiler = nil
            print("\n" + prof.table(steps: steps))
        }
    }
}
