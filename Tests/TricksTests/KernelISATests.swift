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

    /// F(4×4, 3×3)'s forward pass writes its rows as whole vectors where they end inside the
    /// plane (what a vector writes past a row's end is the next row's, written after it) and only
    /// the plane's last row exactly. One image's output, between two others' in one buffer, on
    /// every instruction set the CPU runs and on each kind of row (packed 16 and 32 wide, octets of
    /// planes up to 8 wide, general rows past 32, planes one row high and smaller than a vector),
    /// matches a float64 convolution, and the images before and after it and the floats past the
    /// buffer keep their sentinel bits.
    func testWinograd4ForwardWritesItsOutputAndNothingElse() throws {
        let sentinel: UInt32 = 0x7fc0_dead
        var rng = SplitMix64(key: [12])
        for (h, w) in [(28, 28), (14, 14), (13, 9), (11, 20), (1, 12), (7, 7), (5, 3), (1, 5), (6, 8), (9, 37)] {
            let (cin, cout, plane) = (3, 5, h * w)
            let x = (0..<cin * plane).map { _ in Float(rng.normal()) }
            let weight = (0..<cout * cin * 9).map { _ in Float(rng.normal()) }
            var want = [Double](repeating: 0, count: cout * plane)
            for o in 0..<cout { for c in 0..<cin { for i in 0..<3 { for j in 0..<3 {
                let k = Double(weight[((o * cin + c) * 3 + i) * 3 + j])
                for r in 0..<h { for q in 0..<w {
                    let (ih, iw) = (r - 1 + i, q - 1 + j)
                    if ih >= 0 && ih < h && iw >= 0 && iw < w { want[o * plane + r * w + q] += k * Double(x[c * plane + ih * w + iw]) }
                } }
            } } } }
            let scale = max(1, want.map { abs($0) }.max()!)
            for isa in KernelISA.supported {
                try KernelISA.with(isa) {
                    var wt = [Float](repeating: 0, count: 36 * cin * cout)
                    tk_wino4_weights(weight, Int32(cout), Int32(cin), 0, &wt, 0, Int32(cin))
                    var scratch = [Float](repeating: 0, count: tk_wino4_scratch(Int32(cin), Int32(cout), Int32(h), Int32(w)))
                    var y = [Float](repeating: Float(bitPattern: sentinel), count: 3 * cout * plane + 64)
                    y.withUnsafeMutableBufferPointer { b in
                        tk_wino4_forward(x, 1, Int32(cin), Int32(h), Int32(w), wt, Int32(cout), b.baseAddress! + cout * plane, &scratch)
                    }
                    let mine = y[cout * plane..<2 * cout * plane]
                    let err = zip(mine, want).map { abs(Double($0) - $1) }.max()!
                    XCTAssertLessThanOrEqual(err, 4e-6 * scale * Double(cin * 9).squareRoot(), "\(isa) \(h)×\(w)")
                    let others = Array(y[..<(cout * plane)]) + Array(y[(2 * cout * plane)...])
                    XCTAssertEqual(others.filter { $0.bitPattern != sentinel }.count, 0, "\(isa) \(h)×\(w): written outside its planes")
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
