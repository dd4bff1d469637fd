import Dispatch

/// Work split over the threads the process gives to compute (`BLAS.threads`: one per rank
/// under `mpirun`, the cores otherwise). Ranges are contiguous and every element is computed
/// exactly as on one thread, so results never depend on the thread count.
enum Parallel {
    /// Elements of work below which a range is not worth a thread.
    static let grain = 32_768

    /// Calls `body(lo, hi)` on disjoint ranges covering `0..<count`, concurrently when the
    /// total work (`count · cost` elements) is large enough.
    @inline(__always)
    static func ranges(_ count: Int, cost: Int = 1, _ body: (Int, Int) -> Void) {
        let workers = min(BLAS.threads, count, max(1, count * cost / grain))
        if workers <= 1 { body(0, count); return }
        DispatchQueue.concurrentPerform(iterations: workers) { t in
            body(count * t / workers, count * (t + 1) / workers)
        }
    }
}
