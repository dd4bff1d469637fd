import XCTest
@testable import Tricks

/// The deterministic mode's pieces: the fixed tree against an independent recursive one, for
/// 1, 2, 4 and 8 ranks as threads (the transport's default exchange); layers that route each
/// micro-shard's contribution into that shard's gradient, exactly as the shard alone gives it.
final class MicroShardsTests: XCTestCase {
    /// The balanced tree over `leaves`, written independently: left half + right half.
    static func tree<T: BinaryFloatingPoint>(_ leaves: ArraySlice<T>) -> T {
        if leaves.count == 1 { return leaves.first! }
        let mid = leaves.startIndex + leaves.count / 2
        return tree(leaves[..<mid]) + tree(leaves[mid...])
    }

    /// Leaf s, element i: magnitudes from 1e-3 to 1e8 with both signs, so that the grouping
    /// shows in the last bits.
    static func leaves<T: BinaryFloatingPoint>(_ S: Int, _ n: Int, as: T.Type) -> [[T]] {
        var rng = SplitMix64(seed: 9)
        return (0..<S).map { _ in (0..<n).map { _ in T(rng.normal() * pow(10, Double(rng.below(12)) - 3)) } }
    }

    func check<T: BinaryFloatingPoint>(_ type: T.Type, sum: @escaping (MicroShards, [UnsafeMutablePointer<T>], Int) -> Void) throws {
        let S = 8, n = 37
        let data = Self.leaves(S, n, as: T.self)
        let expected = (0..<n).map { i in Self.tree(data.map { $0[i] }[...]) }
        let sequential = (0..<n).map { i in data.map { $0[i] }.reduce(0, +) }
        XCTAssertNotEqual(expected, sequential, "the data should tell the tree from a left-to-right sum")
        for N in [1, 2, 4, 8] {
            let out = PerRank<[T]>(N)
            ThreadGroup(size: N).run { r, comm in
                let ms = try! MicroShards(count: S, comm: comm)
                let parts = (0..<ms.local).map { j -> UnsafeMutablePointer<T> in
                    let p = UnsafeMutablePointer<T>.allocate(capacity: n)
                    p.initialize(from: data[r * ms.local + j], count: n)
                    return p
                }
                sum(ms, parts, n)
                out[r] = Array(UnsafeBufferPointer(start: parts[0], count: n))
                parts.forEach { $0.deallocate() }
            }
            for r in 0..<N {
                XCTAssertEqual(out.all[r].map { Double($0).bitPattern }, expected.map { Double($0).bitPattern },
                               "\(T.self), \(N) ranks, rank \(r): not the tree's sum")
            }
        }
    }

    func testTreeSumIsTheSameForEveryRankCount() throws {
        try check(Float.self) { ms, parts, n in ms.sum(parts, count: n) }
        try check(Double.self) { ms, parts, n in ms.sum(parts, count: n) }
        // Large messages go by recursive halving and doubling: the same tree, the same bits.
        let saved = MicroShards.halvingMinBytes
        defer { MicroShards.halvingMinBytes = saved }
        MicroShards.halvingMinBytes = 0
        try check(Float.self) { ms, parts, n in ms.sum(parts, count: n) }
        try check(Double.self) { ms, parts, n in ms.sum(parts, count: n) }
    }

    func testBatchSumAndRules() throws {
        let values = (0..<16).map { Double($0) * 0.1 + 1e6 * Double($0 % 3) }
        let expected = Self.tree((0..<8).map { s in values[2 * s..<2 * s + 2].reduce(0, +) }[...])
        let out = PerRank<Double>(4)
        ThreadGroup(size: 4).run { r, comm in
            out[r] = try! MicroShards(count: 8, comm: comm).batchSum(Array(values[4 * r..<4 * r + 4]))
        }
        XCTAssertEqual(out.all, [Double](repeating: expected, count: 4))
        XCTAssertThrowsError(try MicroShards.validate(count: 6, ranks: 2))
        XCTAssertThrowsError(try MicroShards.validate(count: 8, ranks: 3))
        XCTAssertThrowsError(try MicroShards.validate(count: 4, ranks: 8))
        XCTAssertNoThrow(try MicroShards.validate(count: 8, ranks: 8))
    }

    /// A layer with gradients split into 4 shards: each shard's gradient, output and input
    /// gradient are bit for bit those of an identical unsplit layer run on that shard alone.
    func routes(_ make: () -> Layer, input: [Int], name: String) throws {
        let split = make(), alone = make()
        var rng = SplitMix64(seed: 5)
        for (a, b) in zip(split.parameters, alone.parameters) {
            for i in 0..<a.count { a.value[i] = Float(rng.normal() * 0.3); b.value[i] = a.value[i] }
        }
        let store = ParameterStore(split.parameters), aloneStore = ParameterStore(alone.parameters)
        store.splitGradients(shards: 4)
        store.zeroGrad()
        let x = GradCheck.randomTensor(input, seed: 1)
        let y = split.forward(x, mode: .training)
        let dy = GradCheck.randomTensor(y.shape, seed: 2)
        let dx = split.backward(dy)
        let per = input.dropFirst().reduce(1, *), perOut = y.shape.dropFirst().reduce(1, *), m = input[0] / 4
        for s in 0..<4 {
            aloneStore.zeroGrad()
            let xs = Tensor(shape: [m] + input.dropFirst())
            xs.data.update(from: x.data + s * m * per, count: m * per)
            let ys = alone.forward(xs, mode: .training)
            XCTAssertEqual(ys.array, Array(UnsafeBufferPointer(start: y.data + s * m * perOut, count: m * perOut)), "\(name): output of shard \(s)")
            let dys = Tensor(shape: ys.shape)
            dys.data.update(from: dy.data + s * m * perOut, count: m * perOut)
            let dxs = alone.backward(dys)
            XCTAssertEqual(dxs.array, Array(UnsafeBufferPointer(start: dx.data + s * m * per, count: m * per)), "\(name): input gradient of shard \(s)")
            for (p, q) in zip(split.parameters, alone.parameters) {
                XCTAssertEqual(Array(UnsafeBufferPointer(start: p.shardGrads[s], count: p.count)), q.grads.map { $0 },
                               "\(name): \(p.name) gradient of shard \(s)")
                XCTAssertTrue(q.grads.contains { $0 != 0 }, "\(name): \(p.name) has no gradient")
            }
        }
    }

    func testLayersRouteEachShardToItsGradient() throws {
        try routes({ Conv2d(name: "direct", in: 4, out: 8, kernel: 3) }, input: [8, 4, 6, 6], name: "3×3 direct")
        try routes({ Conv2d(name: "s2", in: 4, out: 8, kernel: 3, stride: 2) }, input: [8, 4, 6, 6], name: "3×3 stride 2")
        try routes({ Conv2d(name: "down", in: 4, out: 8, kernel: 1, stride: 2) }, input: [8, 4, 6, 6], name: "1×1 stride 2")
        try routes({ Conv2d(name: "gemm", in: 4, out: 6, kernel: 1, bias: true) }, input: [8, 4, 5, 5], name: "1×1 GEMM with bias")
        try routes({ Conv2d(name: "k5", in: 3, out: 5, kernel: 5, bias: true) }, input: [8, 3, 7, 7], name: "5×5 im2col")
        try routes({ Linear("fc", 12, 5) }, input: [8, 12], name: "linear")
    }

    /// BatchNorm in the mode: statistics over all shards, each shard's γ and β gradients its own
    /// share, against float64.
    func testBatchNormShardsAgainstFloat64() throws {
        let N = 8, C = 3, P = 10, L = 4, m = N / L
        let bn = BatchNorm2d("bn", C)
        for c in 0..<C { bn.weight.value[c] = 0.5 + Float(c); bn.bias.value[c] = Float(c) - 1 }
        let store = ParameterStore(bn.parameters)
        store.splitGradients(shards: L)
        store.zeroGrad()
        bn.shards = try MicroShards(count: L, comm: SingleProcessCommunicator())
        let x = GradCheck.randomTensor([N, C, 2, 5], seed: 3, scale: 2), dy = GradCheck.randomTensor([N, C, 2, 5], seed: 4)
        let y = bn.forward(x, mode: .training)
        let dx = bn.backward(dy)
        for c in 0..<C {
            var xs: [Double] = [], dys: [Double] = []
            for n in 0..<N { for p in 0..<P { xs.append(Double(x[(n * C + c) * P + p])); dys.append(Double(dy[(n * C + c) * P + p])) } }
            let mean = xs.reduce(0, +) / Double(xs.count)
            let v = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count), inv = 1 / (v + 1e-5).squareRoot()
            let xh = xs.map { ($0 - mean) * inv }
            let g = Double(bn.weight.value[c]), b = Double(bn.bias.value[c])
            let sdy = dys.reduce(0, +), sdyx = zip(dys, xh).map(*).reduce(0, +), count = Double(xs.count)
            for n in 0..<N {
                for p in 0..<P {
                    let k = n * P + p, i = (n * C + c) * P + p
                    XCTAssertEqual(Double(y[i]), g * xh[k] + b, accuracy: 1e-5)
                    XCTAssertEqual(Double(dx[i]), g * inv * (dys[k] - sdy / count - xh[k] * sdyx / count), accuracy: 1e-5)
                }
            }
            for s in 0..<L {
                let r = s * m * P..<(s + 1) * m * P
                XCTAssertEqual(Double(bn.weight.shardGrads[s][c]), zip(dys[r], xh[r]).map(*).reduce(0, +), accuracy: 1e-5)
                XCTAssertEqual(Double(bn.bias.shardGrads[s][c]), dys[r].reduce(0, +), accuracy: 1e-5)
            }
        }
    }
}
