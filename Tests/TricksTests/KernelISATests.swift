import XCTest
import CKernels
@testable import Tricks

/// The one instruction-set switch of the kernels.
final class KernelISATests: XCTestCase {
    func testNamesSupportAndSwitching() throws {
        for isa in KernelISA.allCases { XCTAssertEqual(KernelISA(name: isa.description), isa) }
        XCTAssertNil(KernelISA(name: "avx1024"))
        XCTAssertEqual(KernelISA.supported.first, .portable)              // plain C runs everywhere
        XCTAssertEqual(KernelISA.supported.last, KernelISA.best)
        XCTAssertTrue(KernelISA.best.isSupported)
        // Without TRICKS_ISA the best set is in use; with it, the set it names.
        let env = ProcessInfo.processInfo.environment["TRICKS_ISA"].flatMap(KernelISA.init(name:))
        XCTAssertEqual(KernelISA.current, env ?? KernelISA.best)
        let saved = KernelISA.current
        for isa in KernelISA.supported {
            let inside = try KernelISA.with(isa) { KernelISA.current }
            XCTAssertEqual(inside, isa)
            XCTAssertEqual(KernelISA.current, saved)
        }
        for isa in KernelISA.allCases where !isa.isSupported {
            XCTAssertThrowsError(try KernelISA.use(isa)) { e in
                XCTAssertTrue("\(e)".contains("this CPU does not support it"), "\(e)")
            }
            XCTAssertEqual(KernelISA.current, saved)
        }
    }

    /// The Winograd weight gradient's last step, Gᵀ z G per kernel, runs sixteen kernels to a
    /// vector with a scalar loop for the rest: on every instruction set the CPU runs, a range
    /// done at once has the bits of the same kernels done one at a time, and both match a float64
    /// Gᵀ z G added to what was there.
    func testWinogradWeightGradFinishAgreesWithItselfAndFloat64() throws {
        let (cout, cin) = (17, 5)      // 85 kernels: five vectors of sixteen and five more
        let kernels = cout * cin
        let g2: [[Double]] = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
        let g4: [[Double]] = [[0.25, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
                              [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1]]
        var rng = SplitMix64(key: [11])
        for (g, finish) in [(g2, tk_wino_wgrad_finish), (g4, tk_wino4_wgrad_finish)] {
            let n = g.count
            let z = (0..<n * n * kernels).map { _ in Float(rng.normal()) }
            let start = (0..<9 * kernels).map { _ in Float(rng.normal()) }
            var reference = [Double](repeating: 0, count: 9 * kernels)
            for p in 0..<kernels {
                for i in 0..<3 {
                    for k in 0..<3 {
                        var s = 0.0
                        for a in 0..<n { for b in 0..<n { s += g[a][i] * Double(z[(a * n + b) * kernels + p]) * g[b][k] } }
                        reference[p * 9 + i * 3 + k] = Double(start[p * 9 + i * 3 + k]) + s
                    }
                }
            }
            for isa in KernelISA.supported {
                try KernelISA.with(isa) {
                    var whole = start, single = start
                    finish(z, Int32(cout), Int32(cin), &whole, 0, kernels)
                    for p in 0..<kernels { finish(z, Int32(cout), Int32(cin), &single, p, p + 1) }
                    XCTAssertEqual(whole.map(\.bitPattern), single.map(\.bitPattern), "F(\(n - 2)×\(n - 2), 3×3), \(isa)")
                    let err = zip(whole, reference).map { abs(Double($0) - $1) }.max()!
                    XCTAssertLessThan(err, 1e-5, "F(\(n - 2)×\(n - 2), 3×3), \(isa)")
                }
            }
        }
    }

    /// The pool's thread index, by which the layers pick per-thread scratch: 0 on the calling
    /// thread, and within one loop never two threads with the same index at once. The loop is
    /// the pool's first in the process, so it also checks that the worker it starts joins it
    /// (one that read the loop's generation as already seen used to sit that loop out).
    func testPoolThreadIndicesAreDistinctWithinALoop() {
        XCTAssertEqual(Parallel.threadIndex, 0)
        let threads = max(2, BLAS.threads), items = 64
        let held = (0..<threads).map { _ in NSLock() }, note = NSLock()
        var ran = Set<pthread_t>(), clash = false
        Parallel.forEach(items, threads: threads) { _ in
            let t = Parallel.threadIndex
            // Another thread running with the same index would find its lock taken.
            let mine = t >= 0 && t < threads && held[t].try()
            note.lock(); ran.insert(pthread_self()); clash = clash || !mine; note.unlock()
            guard mine else { return }
            usleep(200)
            held[t].unlock()
        }
        XCTAssertGreaterThan(ran.count, 1, "the loop ran on one thread")
        XCTAssertFalse(clash)
        XCTAssertEqual(Parallel.threadIndex, 0)
    }
}
