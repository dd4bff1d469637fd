import CKernels

/// Work split over the threads the process gives to compute (`BLAS.threads`: one per rank
/// under `mpirun`, the cores otherwise), on the kernels' fork-join pool (`CKernels/pool.c`:
/// workers spin briefly between loops instead of sleeping, so a loop costs no wake-up). Ranges
/// are contiguous and every element is computed exactly as on one thread, so results never
/// depend on the thread count.
enum Parallel {
    /// Elements of work below which a range is not worth a thread.
    static let grain = 32_768

    /// Calls `body(i)` for every `i` in `0..<count`, on up to `threads` threads (the caller's
    /// included); returns when all calls have returned.
    static func forEach(_ count: Int, threads: Int = BLAS.threads, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads <= 1 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { p in
                tk_parallel(Int32(count), Int32(threads), { ctx, i in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(i))
                }, p)
            }
        }
    }

    /// The calling thread's index inside a `forEach` body: 0 for the thread that called
    /// `forEach`, 1 ..< `BLAS.threads` for the pool's workers. Items go to whichever thread is
    /// free first, so scratch memory is chosen by this index, never by the item.
    static var threadIndex: Int { Int(tk_thread_index()) }

    /// Calls `body(lo, hi)` on disjoint ranges covering `0..<count`, concurrently when the
    /// total work (`count · cost` elements) is large enough.
    @inline(__always)
    static func ranges(_ count: Int, cost: Int = 1, _ body: (Int, Int) -> Void) {
        let workers = min(BLAS.threads, count, max(1, count * cost / grain))
        if workers <= 1 { body(0, count); return }
        forEach(workers) { t in body(count * t / workers, count * (t + 1) / workers) }
    }
}
