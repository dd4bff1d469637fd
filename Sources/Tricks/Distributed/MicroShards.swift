import Foundation

/// Sums that come out bit for bit the same for any number of ranks: the deterministic mode
/// (`--deterministic`).
///
/// Float addition is not associative, so a sum over samples depends on how it is grouped, and
/// `MPI_Allreduce` promises no grouping at all. In this mode every global batch is cut into
/// `count` (S) micro-shards of consecutive samples, the same cut whatever the number of ranks
/// N: rank r holds shards `r·S/N ..< (r+1)·S/N`. Every quantity that sums over samples (weight
/// gradients, BatchNorm's Σx, Σx², Σdy, Σdy·x̂, the loss, the metrics) is computed per shard
/// alone, always the same computation on the same shapes, and the S partial results are then
/// combined along one fixed balanced binary tree: leaves in shard order, pairs (0, 1), (2, 3),
/// … at the first level, and so on up. A rank adds its own shards' subtree locally; ranks then
/// complete the tree by recursive doubling, exchanging subtree sums with the rank whose index
/// differs in one bit (`Communicator.exchange`). Both partners compute `a + b` and `b + a`,
/// which IEEE addition makes equal, so every rank ends with the tree's root, and with one rank
/// the local tree is the whole tree: the same additions in the same shape for every N.
///
/// N must be a power of two dividing S (S itself a power of two), and the per-rank batch a
/// multiple of S/N.
public final class MicroShards {
    /// S: micro-shards per global batch.
    public let count: Int
    public let comm: Communicator
    /// Shards this rank holds: S / N.
    public var local: Int { count / comm.size }
    private var scratch = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    // (the exchange buffer of recursive doubling, the padded working copy of halving-doubling)
    private var scratchBytes = 64

    /// Throws when `count` is not a power of two or the ranks cannot split it evenly.
    public init(count: Int, comm: Communicator) throws {
        try MicroShards.validate(count: count, ranks: comm.size)
        self.count = count; self.comm = comm
    }

    deinit { scratch.deallocate() }

    /// The deterministic mode's rules on S and the rank count N, with messages named by flags.
    public static func validate(count S: Int, ranks N: Int) throws {
        func pow2(_ x: Int) -> Bool { x > 0 && x & (x - 1) == 0 }
        guard pow2(S) else { throw TricksError.invalidArgument("--micro-shards must be a power of two, got \(S)") }
        guard pow2(N) else {
            throw TricksError.invalidArgument("--deterministic needs a power-of-two number of ranks (1, 2, 4, …), got \(N)")
        }
        guard N <= S else {
            throw TricksError.invalidArgument("--deterministic with \(N) ranks needs --micro-shards of at least \(N), got \(S) "
                                              + "(every run that must agree has to use the same value)")
        }
    }

    /// Sums `parts` (this rank's shards' partial results, in shard order, `local` of them)
    /// element-wise along the tree; the root lands in `parts[0]` on every rank.
    public func sum(_ parts: [UnsafeMutablePointer<Float>], count n: Int) { treeSum(parts, n) }

    /// `sum` for Double partials.
    public func sum(_ parts: [UnsafeMutablePointer<Double>], count n: Int) { treeSum(parts, n) }

    private func treeSum<T: BinaryFloatingPoint>(_ parts: [UnsafeMutablePointer<T>], _ n: Int) {
        precondition(parts.count == local, "\(parts.count) partial results for \(local) local shards")
        MicroShards.localTree(parts, n)
        sumAcrossRanks(parts[0], count: n)
    }

    /// This rank's subtree: level by level, each pair's right child added into its left; the
    /// subtree's sum lands in `parts[0]`. (Element by element, so a parameter's slice of the
    /// gradient buffers can be added alone, while it is still in cache.)
    public static func localTree<T: BinaryFloatingPoint>(_ parts: [UnsafeMutablePointer<T>], _ n: Int) {
        var width = 1
        while width < parts.count {
            for i in stride(from: 0, to: parts.count, by: 2 * width) { MicroShards.add(parts[i], parts[i + width], n) }
            width *= 2
        }
    }

    /// The levels of the tree above the ranks' subtrees: `sum` once every rank holds its
    /// subtree's sum in `buffer`.
    public func sumAcrossRanks<T: BinaryFloatingPoint>(_ buffer: UnsafeMutablePointer<T>, count n: Int) {
        // The sibling subtree lives on the rank whose index differs in one bit.
        guard comm.size > 1 else { return }
        if n * MemoryLayout<T>.stride >= MicroShards.halvingMinBytes && n >= comm.size {
            halvingDoubling(buffer, n)
        } else {
            recursiveDoubling(buffer, n)
        }
    }

    /// Messages of at least this many bytes take `halvingDoubling`, shorter ones `recursiveDoubling`.
    public static var halvingMinBytes = 64 * 1024

    /// Ensures `scratch` holds `bytes`.
    private func scratchSpace(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > scratchBytes {
            scratch.deallocate()
            scratch = .allocate(byteCount: bytes, alignment: 64); scratchBytes = bytes
        }
        return scratch
    }

    /// Every rank swaps its whole subtree sum with its partner at each level and adds:
    /// log₂ N messages of the whole buffer (latency-bound sizes).
    private func recursiveDoubling<T: BinaryFloatingPoint>(_ mine: UnsafeMutablePointer<T>, _ n: Int) {
        let bytes = n * MemoryLayout<T>.stride
        let other = scratchSpace(bytes).bindMemory(to: T.self, capacity: max(n, 1))
        var bit = 1
        while bit < comm.size {
            comm.exchange(UnsafeRawBufferPointer(start: mine, count: bytes), with: comm.rank ^ bit,
                          into: UnsafeMutableRawBufferPointer(start: other, count: bytes))
            MicroShards.add(mine, other, n)
            bit *= 2
        }
    }

    /// The same tree with half the traffic per level (Rabenseifner's all-reduce): recursive
    /// halving, in which a rank keeps half of its segment at each level and adds its partner's
    /// sum of that half (the same two subtree sums recursive doubling adds, so the same bits),
    /// then recursive doubling of the finished segments back to every rank. 2·(N−1)/N of the
    /// buffer sent in all instead of log₂ N times all of it. The buffer is padded to a multiple
    /// of N so that both halves are always the same size.
    private func halvingDoubling<T: BinaryFloatingPoint>(_ mine: UnsafeMutablePointer<T>, _ n: Int) {
        let N = comm.size, stride = MemoryLayout<T>.stride
        let padded = (n + N - 1) / N * N
        let raw = scratchSpace(2 * padded * stride)
        let work = raw.bindMemory(to: T.self, capacity: 2 * padded), other = work + padded
        work.update(from: mine, count: n)
        (work + n).update(repeating: 0, count: padded - n)
        var lo = 0, hi = padded, bit = 1
        var levels: [(lo: Int, hi: Int, keepLow: Bool)] = []
        while bit < N {
            let mid = lo + (hi - lo) / 2, keepLow = comm.rank & bit == 0
            let (keep, give) = keepLow ? (lo, mid) : (mid, lo)
            let half = mid - lo
            comm.exchange(UnsafeRawBufferPointer(start: work + give, count: half * stride), with: comm.rank ^ bit,
                          into: UnsafeMutableRawBufferPointer(start: other, count: half * stride))
            MicroShards.add(work + keep, other, half)
            levels.append((lo, hi, keepLow))
            (lo, hi) = keepLow ? (lo, mid) : (mid, hi)
            bit *= 2
        }
        // Back up the levels: send the finished segment, receive the partner's.
        for (level, l) in levels.enumerated().reversed() {
            let mid = l.lo + (l.hi - l.lo) / 2, half = mid - l.lo
            let (have, get) = l.keepLow ? (l.lo, mid) : (mid, l.lo)
            comm.exchange(UnsafeRawBufferPointer(start: work + have, count: half * stride), with: comm.rank ^ (1 << level),
                          into: UnsafeMutableRawBufferPointer(start: work + get, count: half * stride))
        }
        mine.update(from: work, count: n)
    }

    /// a[i] = a[i] + b[i], element by element (no reassociation can change a lone addition).
    private static func add<T: BinaryFloatingPoint>(_ a: UnsafeMutablePointer<T>, _ b: UnsafePointer<T>, _ n: Int) {
        if T.self == Float.self {
            Vec.addInPlace(UnsafeMutableRawPointer(a).assumingMemoryBound(to: Float.self),
                           UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), n)
        } else {
            for i in 0..<n { a[i] = a[i] + b[i] }
        }
    }

    /// The sum over the global batch of one value per sample, `values` being this rank's
    /// samples in order: per micro-shard in sample order, then along the tree. The same on every
    /// rank and for any number of ranks (the loss and the metrics of the deterministic mode).
    public func batchSum(_ values: [Double]) -> Double {
        let m = shardSize(values.count)
        var parts = (0..<local).map { s in values[s * m..<(s + 1) * m].reduce(0, +) }
        return parts.withUnsafeMutableBufferPointer { p in
            sum((0..<local).map { p.baseAddress! + $0 }, count: 1)
            return p[0]
        }
    }

    /// Splits `n` samples of this rank into its `local` shards: shard s is `s·m ..< (s+1)·m`.
    public func shardSize(_ n: Int) -> Int {
        precondition(n % local == 0, "\(n) samples do not split into \(local) micro-shards")
        return n / local
    }
}
