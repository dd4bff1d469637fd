import XCTest
@testable import Tricks

/// N ranks as threads of one process, for unit tests of collectives' users. Collectives sum in
/// rank order; every rank must call them in the same order (as with MPI).
final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let cond = NSCondition()
    private var arrived = 0, generation = 0
    private var slots: [[UInt8]]

    init(size: Int) { self.size = size; slots = .init(repeating: [], count: size) }

    func barrier() {
        cond.lock()
        let g = generation
        arrived += 1
        if arrived == size { arrived = 0; generation += 1; cond.broadcast() } else { while g == generation { cond.wait() } }
        cond.unlock()
    }

    func deposit(_ rank: Int, _ bytes: [UInt8]) { cond.lock(); slots[rank] = bytes; cond.unlock() }
    func slot(_ rank: Int) -> [UInt8] { cond.lock(); defer { cond.unlock() }; return slots[rank] }

    /// Runs `body(rank, communicator)` on `size` threads and waits for all.
    func run(_ body: @escaping @Sendable (Int, Communicator) -> Void) {
        let done = DispatchGroup()
        for r in 0..<size {
            done.enter()
            Thread { body(r, ThreadRank(group: self, rank: r)); done.leave() }.start()
        }
        done.wait()
    }
}

/// Per-rank results written from thread-ranks.
final class PerRank<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [T?]
    init(_ n: Int) { values = .init(repeating: nil, count: n) }
    subscript(r: Int) -> T? {
        get { lock.lock(); defer { lock.unlock() }; return values[r] }
        set { lock.lock(); values[r] = newValue; lock.unlock() }
    }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return values.map { $0! } }
}

final class ThreadRank: Communicator {
    let group: ThreadGroup
    let rank: Int
    var size: Int { group.size }
    init(group: ThreadGroup, rank: Int) { self.group = group; self.rank = rank }

    func sum<T: BinaryFloatingPoint>(_ buffer: UnsafeMutableBufferPointer<T>) {
        group.deposit(rank, Array(UnsafeRawBufferPointer(buffer)))
        group.barrier()
        let parts = (0..<size).map { group.slot($0) }
        group.barrier()
        for i in 0..<buffer.count {
            var s: T = 0
            for p in parts { p.withUnsafeBytes { s += $0.load(fromByteOffset: i * MemoryLayout<T>.stride, as: T.self) } }
            buffer[i] = s
        }
    }
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) { sum(buffer) }
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) { sum(buffer) }
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> CommRequest { sum(buffer); return CompletedRequest() }
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        if rank == root { group.deposit(rank, Array(buffer)) }
        group.barrier()
        if rank != root { group.slot(root).withUnsafeBytes { buffer.copyMemory(from: $0) } }
        group.barrier()
    }
    func barrier() { group.barrier() }
    func subgroup(size k: Int) -> Communicator {
        precondition(k == size || k == 1, "the test group supports the world or single ranks")
        return k == size ? self : SingleProcessCommunicator()
    }
    func abort(_ message: String, code: Int32) -> Never { fatalError(message) }
}

/// The layers a detector needs, against finite differences and float64; initializers against
/// their distributions; `DataParallel` with ranks as threads.
final class DetectorLayerTests: XCTestCase {
    /// Normal values pushed at least 0.1 away from 0 (so finite differences never straddle a kink).
    func awayFromZero(_ shape: [Int], seed: UInt64) -> Tensor {
        let t = GradCheck.randomTensor(shape, seed: seed)
        for i in 0..<t.count where abs(t[i]) < 0.1 { t[i] = t[i] < 0 ? -0.1 - t[i] : 0.1 + t[i] }
        return t
    }

    func testLeakyReLUSigmoidUpsample() {
        GradCheck.checkLayer(LeakyReLU(slope: 0.1), input: awayFromZero([2, 3, 4, 5], seed: 1))
        let lr = LeakyReLU(slope: 0.1).forward(Tensor(shape: [4], values: [-2, -0.5, 0.5, 3]), mode: .training)
        XCTAssertEqual(lr.array, [-0.2, -0.05, 0.5, 3])
        GradCheck.checkLayer(Sigmoid(), input: GradCheck.randomTensor([2, 3, 4, 4], seed: 2, scale: 2), h: 1e-2, tol: 2e-3)
        let s = Sigmoid().forward(Tensor(shape: [5], values: [0, 2, -2, 100, -100]), mode: .training)
        for (got, x) in zip(s.array, [0.0, 2, -2, 100, -100]) { XCTAssertEqual(Double(got), 1 / (1 + exp(-x)), accuracy: 1e-6) }
        let up = Upsample2x()
        GradCheck.checkLayer(up, input: GradCheck.randomTensor([2, 3, 3, 5], seed: 3))
        let x = GradCheck.randomTensor([1, 2, 3, 4], seed: 4)
        let y = up.forward(x, mode: .training)
        XCTAssertEqual(y.shape, [1, 2, 6, 8])
        for c in 0..<2 { for i in 0..<6 { for j in 0..<8 { XCTAssertEqual(y[(c * 6 + i) * 8 + j], x[(c * 3 + i / 2) * 4 + j / 2]) } } }
    }

    func testConcatAndAddGradients() {
        let a = GradCheck.randomTensor([2, 3, 2, 3], seed: 5), b = GradCheck.randomTensor([2, 4, 2, 3], seed: 6)
        let cat = Concat()
        let y = cat.forward(a, b)
        XCTAssertEqual(y.shape, [2, 7, 2, 3])
        XCTAssertEqual(y[(1 * 7 + 4) * 6 + 5], b[(1 * 4 + 1) * 6 + 5])
        XCTAssertEqual(y[(1 * 7 + 2) * 6 + 1], a[(1 * 3 + 2) * 6 + 1])
        let r = GradCheck.randomTensor(y.shape, seed: 7)
        let (da, db) = cat.backward(r)
        let ga = da.array, gb = db.array
        let loss = { GradCheck.dot(Concat().forward(a, b), r) }
        GradCheck.check("concat da", values: a.data, count: a.count, analytic: ga, h: 1e-2, tol: 1e-3, loss: loss)
        GradCheck.check("concat db", values: b.data, count: b.count, analytic: gb, h: 1e-2, tol: 1e-3, loss: loss)
        let c = GradCheck.randomTensor([2, 3, 2, 3], seed: 8)
        let add = Add()
        XCTAssertEqual(add.forward(a, c).array, zip(a.array, c.array).map { $0 + $1 })
        let r2 = GradCheck.randomTensor(a.shape, seed: 9)
        let g = add.backward(r2).array
        GradCheck.check("add da", values: a.data, count: a.count, analytic: g, h: 1e-2, tol: 1e-3) { GradCheck.dot(Add().forward(a, c), r2) }
    }

    /// Direct float64 convolution with bias.
    func reference(_ x: Tensor, _ conv: Conv2d) -> [Double] {
        let N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], K = conv.outChannels, k = conv.kernel
        let s = conv.stride, p = conv.padding, OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1
        var out = [Double](repeating: 0, count: N * K * OH * OW)
        for n in 0..<N { for o in 0..<K { for i in 0..<OH { for j in 0..<OW {
            var acc = Double(conv.bias?.value[o] ?? 0)
            for c in 0..<C { for u in 0..<k { for v in 0..<k {
                let yy = i * s - p + u, xx = j * s - p + v
                if yy < 0 || yy >= H || xx < 0 || xx >= W { continue }
                acc += Double(x[((n * C + c) * H + yy) * W + xx]) * Double(conv.weight.value[((o * C + c) * k + u) * k + v])
            } } }
            out[((n * K + o) * OH + i) * OW + j] = acc
        } } } }
        return out
    }

    func testConvWithBiasOnEveryPath() {
        for (k, s) in [(3, 1), (3, 2), (1, 1), (1, 2)] {
            let conv = Conv2d(name: "head", in: 3, out: 5, kernel: k, stride: s, bias: true)
            XCTAssertEqual(conv.padding, k / 2)
            XCTAssertEqual(conv.parameters.map(\.name), ["head.weight", "head.bias"])
            XCTAssertTrue(conv.bias!.isBiasOrNorm)
            var rng = SplitMix64(seed: UInt64(k * 10 + s))
            Initializer.pytorchDefault(weight: conv.weight, bias: conv.bias, rng: &rng)
            let x = GradCheck.randomTensor([2, 3, 6, 7], seed: 11)
            let want = reference(x, conv), got = conv.forward(x, mode: .training).array
            XCTAssertEqual(got.count, want.count)
            for (g, w) in zip(got, want) { XCTAssertEqual(Double(g), w, accuracy: 1e-5, "k \(k) s \(s)") }
            GradCheck.checkLayer(conv, input: x, h: 1e-2, tol: 5e-3)
        }
    }

    func testInitializersMatchTheirDistributions() {
        let p = Parameter(name: "w", shape: [64, 32, 3, 3])
        XCTAssertEqual(Initializer.fans(p.shape).fanIn, 288); XCTAssertEqual(Initializer.fans(p.shape).fanOut, 576)
        var rng = SplitMix64(seed: 1)
        func moments() -> (Double, Double) {
            let v = p.values.map(Double.init), m = v.reduce(0, +) / Double(v.count)
            return (m, v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count))
        }
        Initializer.kaimingNormal(p, rng: &rng)
        var (m, v) = moments()
        XCTAssertEqual(m, 0, accuracy: 0.005); XCTAssertEqual(v, 2.0 / 288, accuracy: 0.03 * 2.0 / 288)
        Initializer.kaimingNormal(p, slope: 0.1, fanOut: true, rng: &rng)
        (m, v) = moments()
        XCTAssertEqual(v, 2.0 / 1.01 / 576, accuracy: 0.03 * 2.0 / 576)
        let b = Parameter(name: "b", shape: [64], isBiasOrNorm: true)
        Initializer.pytorchDefault(weight: p, bias: b, rng: &rng)
        (m, v) = moments()
        let bound = 1 / 288.0.squareRoot()
        XCTAssertEqual(v, bound * bound / 3, accuracy: 0.03 * bound * bound / 3)
        XCTAssertLessThanOrEqual(p.values.map { abs(Double($0)) }.max()!, bound)
        XCTAssertLessThanOrEqual(b.values.map { abs(Double($0)) }.max()!, bound)
        XCTAssertGreaterThan(b.values.map { abs(Double($0)) }.max()!, bound / 2)
    }

    /// Four thread-ranks, each starting from a differently seeded replica: `DataParallel`
    /// broadcasts rank 0's state; one step of two images per rank with SyncBatchNorm gives the
    /// gradients of one process on the eight images; replicas then agree, and a perturbed one
    /// is named.
    func testDataParallelMatchesOneProcessOnTheWholeBatch() throws {
        // Thread-ranks share the kernels' thread pool: one compute thread each.
        let threads = BLAS.threads
        BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        let ranks = 4, local = 2
        let x = GradCheck.randomTensor([ranks * local, 3, 8, 8], seed: 21)
        let labels: [Int32] = (0..<ranks * local).map { Int32($0 % 10) }
        // One process on the whole batch.
        let single = try ResNet(name: "resnet8", inChannels: 3, numClasses: 10, seed: 100)
        let dp1 = try DataParallel(single, comm: SingleProcessCommunicator())
        XCTAssertEqual(dp1.normMode, .single)
        let ce = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        dp1.beginStep()
        ce.forward(logits: single.forward(x, mode: .training), labels: labels, normalizer: ranks * local)
        single.backward(ce.grad)
        dp1.finishGradients()
        let want = Array(UnsafeBufferPointer(start: single.store.grads, count: single.store.count))

        let group = ThreadGroup(size: ranks)
        let out = PerRank<(grads: [Float], mode: DataParallel.NormMode, before: [Int], after: [Int])>(ranks)
        group.run { r, comm in
            let net = try! ResNet(name: "resnet8", inChannels: 3, numClasses: 10, seed: r == 0 ? 100 : 200 + UInt64(r))
            let dp = try! DataParallel(net, comm: comm)
            let xs = Tensor(shape: [local, 3, 8, 8])
            (xs.data).update(from: x.data + r * local * 192, count: local * 192)
            let ce = SoftmaxCrossEntropy(labelSmoothing: 0.1)
            dp.beginStep()
            ce.forward(logits: net.forward(xs, mode: .training), labels: Array(labels[r * local..<(r + 1) * local]), normalizer: ranks * local)
            net.backward(ce.grad)
            dp.finishGradients()
            let g = Array(UnsafeBufferPointer(start: net.store.grads, count: net.store.count))
            let d0 = dp.divergedRanks()
            if r == 2 { net.store.values[5] += 1 }
            let d1 = dp.divergedRanks()
            out[r] = (g, dp.normMode, d0, d1)
        }
        let grads = out.all.map(\.grads), modes = out.all.map(\.mode), checks = out.all.map(\.before), diverged = out.all.map(\.after)
        XCTAssertEqual(Set(modes), [.sync(ranks: 4)])
        XCTAssertEqual(checks, [[Int]](repeating: [], count: ranks))
        XCTAssertEqual(diverged, [[Int]](repeating: [2], count: ranks))
        var num = 0.0, den = 0.0
        for r in 0..<ranks {
            XCTAssertEqual(grads[r], grads[0], "every rank holds the same summed gradient")
            for (a, b) in zip(grads[r], want) { num += Double(a - b) * Double(a - b); den += Double(b) * Double(b) }
        }
        XCTAssertLessThan((num / den).squareRoot(), 1e-5, "gradients of 4 × 2 images with SyncBN vs one process on 8")
    }

    func testDataParallelModesAndErrors() throws {
        let threads = BLAS.threads
        BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        let group = ThreadGroup(size: 2)
        let out = PerRank<(mode: DataParallel.NormMode, error: String, averaged: Float)>(2)
        group.run { r, comm in
            let net = try! ResNet(name: "resnet8", inChannels: 1, numClasses: 3, seed: 1)
            let local = try! DataParallel(net, comm: comm, syncBatchNorm: false)
            var msg = ""
            do { _ = try DataParallel(net, comm: comm, bnGroupSize: 3) } catch { msg = "\(error)" }
            // average: each rank's gradient r + 1 becomes (1 + 2) / 2.
            local.average = true
            local.beginStep()
            net.store.grads.update(repeating: Float(r + 1), count: net.store.count)
            local.finishGradients()
            out[r] = (local.normMode, msg, net.store.grads[0])
        }
        let modes = out.all.map(\.mode), errors = out.all.map(\.error), averaged = out.all.map(\.averaged)
        XCTAssertEqual(modes, [.local, .local])
        XCTAssertTrue(errors.allSatisfy { $0.contains("--bn-group-size 3 does not divide the number of ranks 2") }, "\(errors)")
        XCTAssertEqual(averaged, [1.5, 1.5])
    }
}
