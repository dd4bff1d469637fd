import Foundation

/// Times training steps of a ResNet on random inputs and prints tables:
/// the step time, a per-layer breakdown, and each conv GEMM's GFLOP/s beside a
/// raw `cblas_sgemm` of the same shape.
public struct StepBenchmark {
    public var model = "resnet20"
    public var batch = 32
    public var channels = 3
    public var size = 32
    public var classes = 10
    public var steps = 20
    public var warmup = 3
    /// The ranks that share each global batch of `batch` images (each takes batch/size).
    public var comm: Communicator = SingleProcessCommunicator()
    /// Synchronize BN statistics over `comm`.
    public var syncBN = true
    /// Print the per-layer and GEMM tables (single-process runs).
    public var detail = true
    /// The deterministic mode with this many micro-shards (`MicroShards`), or nil.
    public var microShards: Int? = nil

    public init() {}

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    /// Runs the benchmark and returns the printed report.
    public func run() throws -> String {
        guard batch % comm.size == 0 else { throw TricksError.invalidArgument("batch \(batch) not divisible by \(comm.size) ranks") }
        let local = batch / comm.size
        let net = try ResNet(name: model, inChannels: channels, numClasses: classes, seed: 1)
        let dp = try DataParallel(net, comm: comm, syncBatchNorm: syncBN, microShards: microShards)
        let opt = SGD(store: net.store, momentum: 0.9, weightDecay: 5e-4)
        let ce = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        var rng = SplitMix64(key: [7, UInt64(comm.rank)])
        let x = Tensor(shape: [local, channels, size, size])
        for i in 0..<x.count { x[i] = Float(rng.normal()) }
        let labels = (0..<local).map { _ in Int32(rng.below(classes)) }
        var wait = 0.0
        func step() {
            dp.beginStep()
            let logits = net.forward(x, mode: .training)
            ce.forward(logits: logits, labels: labels, normalizer: batch)
            net.backward(ce.grad)
            wait += dp.finishGradients()
            opt.step(lr: 0.01)
        }
        for _ in 0..<warmup { step() }
        comm.barrier()
        wait = 0
        var times: [Double] = []
        for _ in 0..<steps { let t0 = Self.now(); step(); times.append(Self.now() - t0) }
        // The job's step time is the slowest rank's.
        var buf = times.map { $0 / Double(comm.size) }
        var mine = times
        buf.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }     // mean over ranks, per step
        times = buf
        mine.sort()
        times.sort()
        let median = times[times.count / 2]
        var w = [wait / Double(steps) / Double(comm.size)]
        w.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        if !detail {
            return String(format: "| %d | %d | %@ | %.2f | %.2f | %.2f | %.1f |", comm.size, local,
                          microShards.map { "fixed order, \($0) shards" } ?? (syncBN && comm.size > 1 ? "sync" : "local"), 1e3 * median, 1e3 * times[0], 1e3 * w[0],
                          Double(batch) / median)
        }
        // Per-layer breakdown from separate profiled steps (profiling adds a little overhead).
        let prof = StepProfiler()
        net.profiler = prof
        for _ in 0..<steps { step() }
        net.profiler = nil
        var out = "# \(model) training step, batch \(batch), \(channels)×\(size)×\(size), BLAS threads \(BLAS.threads), "
        out += "OpenBLAS kernels \(BLAS.coreName), kernels \(KernelISA.current), " + Conv2d.kernelSummary + "\n\n"
        out += String(format: "%.1f images/s at the median; gradient all-reduce wait after backward %.3f ms/step\n\n",
                      Double(batch) / median, 1e3 * w[0])
        out += "| statistic | ms |\n|---|---:|\n"
        out += String(format: "| median | %.2f |\n| min | %.2f |\n| p90 | %.2f |\n\n", 1e3 * median, 1e3 * times[0],
                      1e3 * times[min(times.count - 1, Int(0.9 * Double(times.count - 1)))])
        out += prof.table(steps: steps) + "\n"
        out += gemmTable(net)
        return out
    }

    /// Raw sgemm GFLOP/s at the GEMM shapes of every distinct convolution.
    func gemmTable(_ net: ResNet) -> String {
        var seen = Set<String>()
        var rows = "Raw `cblas_sgemm` at the shapes an im2col + GEMM conv layer calls (one GEMM per chunk of images; "
            + "every 3×3 layer and the 1×1 stride-2 ones run on the direct kernels or Winograd unless `--im2col` is given; the layer table counts a direct convolution's multiplies):\n\n"
        rows += "| conv | GEMM (M×N×K) | role | sgemm GFLOP/s |\n|---|---|---|---:|\n"
        var h = size
        var convs: [(Conv2d, Int)] = [(net.conv1, h)]
        for stage in net.stages {
            for b in stage {
                convs.append((b.conv1, h))
                if let (dc, _) = b.downsample { convs.append((dc, h)) }
                h = (h + 2 * b.conv1.padding - 3) / b.conv1.stride + 1
                convs.append((b.conv2, h))
            }
        }
        for (c, inH) in convs {
            let oh = (inH + 2 * c.padding - c.kernel) / c.stride + 1
            let g = ConvGeometry(n: batch, c: c.inChannels, h: inH, w: inH, kh: c.kernel, kw: c.kernel,
                                 stride: c.stride, pad: c.padding)
            let K = c.inChannels * c.kernel * c.kernel, L = c.chunkSize(g) * oh * oh, M = c.outChannels
            let name = "conv\(c.kernel)x\(c.kernel) \(c.inChannels)→\(c.outChannels) s\(c.stride) @\(inH)×\(inH)"
            if !seen.insert(name).inserted { continue }
            for (role, m, n, k, ta, tb) in [("forward", M, L, K, false, false), ("weight grad", M, K, L, false, true),
                                            ("input grad", K, L, M, true, false)] {
                let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
                var cc = [Float](repeating: 0, count: m * n)
                let reps = max(3, Int(2e9 / Double(2 * m * n * k)))
                var best = Double.infinity
                for _ in 0..<reps {
                    let t0 = Self.now()
                    BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: ta ? m : k, b: b, ldb: tb ? k : n,
                              beta: 0, c: &cc, ldc: n)
                    best = min(best, Self.now() - t0)
                }
                rows += String(format: "| %@ | %d×%d×%d | %@ | %.1f |\n", name, m, n, k, role, 2.0 * Double(m * n * k) / best / 1e9)
            }
        }
        return rows
    }
}

/// Times one 3×3 stride-1 convolution on the direct kernels, on Winograd F(2×2, 3×3) and on
/// F(4×4, 3×3), interleaved rep by rep, at a list of widths and plane sizes: forward, input
/// gradient and weight gradient separately (the weight gradient alone is a backward pass with
/// `needsInputGrad` off; the input gradient is the full backward minus that). These are the
/// measurements behind `Conv2d.winogradMinChannels`, `winograd4MinChannels`,
/// `winogradWeightGradMinChannels` and `winogradPlane`.
public struct ConvKernelBenchmark {
    public var batch = 32
    public var reps = 15
    /// (channels in = out, plane height = width)
    public var shapes = [(16, 32), (32, 16), (64, 8), (16, 28), (32, 14), (64, 7), (64, 6), (64, 4), (64, 2), (64, 16), (128, 8), (128, 16)]

    public init() {}

    /// Runs the benchmark and returns a markdown table (best of `reps` per cell, ms).
    public func run() -> String {
        let saved = (Conv2d.winogradMinChannels, Conv2d.winogradWeightGradMinChannels, Conv2d.winograd4MinChannels,
                     Conv2d.winogradAnyPlane)
        defer {
            (Conv2d.winogradMinChannels, Conv2d.winogradWeightGradMinChannels, Conv2d.winograd4MinChannels,
             Conv2d.winogradAnyPlane) = saved
        }
        Conv2d.winogradAnyPlane = true
        let tiles = [0, 2, 4]   // direct, F(2×2, 3×3), F(4×4, 3×3)
        func use(_ tile: Int) { Conv2d.useWinograd(tile != 0, tile: tile) }
        var out = "| channels | plane | direct fwd / input / weight | F(2×2) fwd / input / weight | F(4×4) fwd / input / weight | F(2×2) / direct | F(4×4) / direct |\n"
        out += "|---:|---:|---|---|---|---|---|\n"
        for (c, s) in shapes {
            var rng = SplitMix64(seed: 11)
            let x = Tensor(shape: [batch, c, s, s]), dy = Tensor(shape: [batch, c, s, s])
            for i in 0..<x.count { x[i] = Float(rng.normal()); dy[i] = Float(rng.normal()) }
            let layers = tiles.map { tile -> Conv2d in
                use(tile)
                let conv = Conv2d("c", c, c, kernel: 3, stride: 1, padding: 1, workspace: Workspace())
                for i in 0..<conv.weight.count { conv.weight.value[i] = Float(rng.normal()) * 0.05 }
                return conv
            }
            var best = [[Double]](repeating: [.infinity, .infinity, .infinity], count: tiles.count)  // fwd, full bwd, weight grad
            for _ in 0..<reps {
                for (k, tile) in tiles.enumerated() {
                    use(tile)
                    let conv = layers[k]
                    let t0 = StepBenchmark.now()
                    _ = conv.forward(x, mode: .training)
                    let t1 = StepBenchmark.now()
                    conv.needsInputGrad = true
                    _ = conv.backward(dy)
                    let t2 = StepBenchmark.now()
                    conv.needsInputGrad = false
                    _ = conv.backward(dy)
                    let t3 = StepBenchmark.now()
                    best[k][0] = min(best[k][0], t1 - t0)
                    best[k][1] = min(best[k][1], t2 - t1)
                    best[k][2] = min(best[k][2], t3 - t2)
                }
            }
            let t = best.map { [$0[0], max(0, $0[1] - $0[2]), $0[2]] }   // fwd, input grad, weight grad
            func ms(_ v: [Double]) -> String { v.map { String(format: "%.3f", 1e3 * $0) }.joined(separator: " / ") }
            func ratio(_ v: [Double]) -> String { zip(v, t[0]).map { String(format: "%.2f", $0 / $1) }.joined(separator: ", ") }
            out += "| \(c) | \(s)×\(s) | \(ms(t[0])) | \(ms(t[1])) | \(ms(t[2])) | \(ratio(t[1])) | \(ratio(t[2])) |\n"
        }
        return out
    }
}

/// Times the collectives one step issues, by message size: `MPI_Allreduce` (what the default mode
/// uses) and the deterministic mode's fixed-order tree (`MicroShards.sum`, recursive doubling over
/// the ranks), for fitting the α-β model of docs/scaling.md. Prints a markdown table (rank 0).
public struct CommBenchmark {
    public var comm: Communicator
    /// Message sizes in bytes.
    public var sizes: [Int] = [4, 64, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
    /// Seconds to spend per size and collective (at least 5 repetitions).
    public var seconds = 0.3

    public init(comm: Communicator) { self.comm = comm }

    public func run() throws -> String {
        let shards = try MicroShards(count: comm.size, comm: comm)
        var out = "| bytes | all-reduce µs | fixed-order tree µs |\n|---:|---:|---:|\n"
        for bytes in sizes {
            let n = max(bytes / 4, 1)
            let buf = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { buf.deallocate() }
            buf.initialize(repeating: 1, count: n)
            func time(_ body: () -> Void) -> Double {
                body(); body()   // warm up
                // Every rank runs the same count: rank 0's estimate, broadcast.
                var reps = 5
                let t0 = StepBenchmark.now()
                for _ in 0..<5 { body() }
                var est = [Double(max(5, min(100_000, Int(seconds / max((StepBenchmark.now() - t0) / 5, 1e-7)))))]
                est.withUnsafeMutableBytes { comm.broadcast($0, root: 0) }
                reps = Int(est[0])
                comm.barrier()
                let t1 = StepBenchmark.now()
                for _ in 0..<reps { body() }
                var mean = [(StepBenchmark.now() - t1) / Double(reps) / Double(comm.size)]
                mean.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }   // the ranks' mean
                return mean[0] * 1e6
            }
            let ar = time { comm.allreduceSum(UnsafeMutableBufferPointer(start: buf, count: n)) }
            let tree = time { shards.sum([buf], count: n) }
            out += String(format: "| %d | %.2f | %.2f |\n", 4 * n, ar, tree)
        }
        return out
    }
}
