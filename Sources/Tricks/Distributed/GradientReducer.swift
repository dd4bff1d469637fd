/// Sums gradients over the ranks of a group in flat buckets, starting each bucket's
/// nonblocking all-reduce as soon as the backward pass has produced all of its
/// gradients, so communication overlaps the backward of earlier layers (the
/// scheme of PyTorch DDP and Horovod). `finish()` waits for the last bucket; call
/// it before the optimizer step.
///
/// Buckets are contiguous ranges of the `ParameterStore`'s gradient buffer, formed
/// in reverse parameter order (the order backward produces them) and issued in the
/// same order on every rank. With one rank it does nothing.
public final class GradientReducer {
    public let store: ParameterStore
    public let comm: Communicator
    /// Ranges of the flat gradient buffer, in the order they are reduced.
    public let buckets: [Range<Int>]
    private let bucketOf: [ObjectIdentifier: Int]
    private let sizes: [Int]
    private var pending: [Int]
    private var requests: [CommRequest?]
    private var next = 0

    /// - Parameter bucketBytes: the target bucket size; a bucket closes at the first parameter boundary past it.
    public init(store: ParameterStore, comm: Communicator, bucketBytes: Int = 256 * 1024) {
        self.store = store
        self.comm = comm
        var ranges: [Range<Int>] = [], map: [ObjectIdentifier: Int] = [:], sizes: [Int] = []
        var end = store.count, start = store.count, members = 0
        for (p, off) in zip(store.parameters, store.offsets).reversed() {
            start = off
            map[ObjectIdentifier(p)] = ranges.count
            members += 1
            if (end - start) * 4 >= bucketBytes {
                ranges.append(start..<end); sizes.append(members)
                end = start; members = 0
            }
        }
        if end > 0 || ranges.isEmpty { ranges.append(0..<end); sizes.append(members) }
        buckets = ranges
        bucketOf = map
        self.sizes = sizes
        pending = sizes
        requests = .init(repeating: nil, count: ranges.count)
    }

    /// Resets the bookkeeping for a new backward pass.
    public func beginStep() {
        pending = sizes
        requests = .init(repeating: nil, count: buckets.count)
        next = 0
    }

    /// Records that the gradients of `params` are final; starts every bucket that is now complete
    /// (in bucket order, so all ranks issue the same sequence) and lets earlier ones progress.
    public func gradientsReady(_ params: [Parameter]) {
        guard comm.size > 1 else { return }
        for p in params {
            guard let b = bucketOf[ObjectIdentifier(p)] else { continue }
            pending[b] -= 1
        }
        while next < buckets.count && pending[next] == 0 { start(next); next += 1 }
        for r in requests { _ = r?.test() }
    }

    private func start(_ b: Int) {
        let r = buckets[b]
        comm.label("gradient bucket \(b + 1) of \(buckets.count)")
        requests[b] = comm.startAllreduceSum(UnsafeMutableBufferPointer(start: store.grads + r.lowerBound, count: r.count))
    }

    /// Starts any bucket not started yet and waits for all of them.
    public func finish() {
        guard comm.size > 1 else { return }
        while next < buckets.count { start(next); next += 1 }
        for r in requests { r?.wait() }
    }
}
