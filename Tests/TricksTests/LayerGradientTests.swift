import XCTest
@testable import Tricks

/// Every layer's backward pass against central finite differences (tolerance stated per test:
/// |fd − backward| ≤ tol·max(1, |backward|), in float32 with step h).
final class LayerGradientTests: XCTestCase {
    /// A 3×3 padding-1 conv with weight `w` and gradient preset to `grad`: its output, input
    /// gradient and accumulated weight gradient for `x` and `dy`, after checking which kernels
    /// it runs on: the Winograd `tile` of its passes (0: direct kernels).
    private func convPasses(_ w: Tensor, stride: Int, x: Tensor, dy: Tensor, grad: Float, tile: Int,
                            file: StaticString = #filePath, line: UInt = #line) -> [[Float]] {
        let conv = Conv2d("c", w.shape[1], w.shape[0], kernel: 3, stride: stride, padding: 1, workspace: Workspace())
        XCTAssertTrue(conv.usesDirectKernel, file: file, line: line)
        XCTAssertTrue(conv.usesDirectInputGrad, file: file, line: line)
        XCTAssertEqual(conv.usesWinograd, tile != 0, file: file, line: line)
        XCTAssertEqual(conv.usesWinograd4, tile == 4, file: file, line: line)
        XCTAssertEqual(conv.usesWinogradWeightGrad, tile != 0, file: file, line: line)
        _ = conv.weight.values.update(from: w.array)
        conv.weight.grads.update(repeating: grad)
        let y = conv.forward(x, mode: .training).array
        let dx = conv.backward(dy).array
        return [y, dx, Array(conv.weight.grads)]
    }

    /// Finite differences for a 3×3 padding-1 conv on every implementation: Winograd F(4×4, 3×3)
    /// and F(2×2, 3×3) (stride 1), the direct kernels and im2col + GEMM.
    private func checkConv3x3BothPaths(_ cin: Int, _ cout: Int, stride: Int, input: [Int], seed: UInt64,
                                       file: StaticString = #filePath, line: UInt = #line) {
        let saved = Self.savedConvSettings()
        Conv2d.winogradAnyPlane = true
        defer { Self.restoreConvSettings(saved) }
        for (direct, tile) in [(true, 4), (true, 2), (true, 0), (false, 0)] where tile == 0 || stride == 1 {
            Conv2d.directConvolution = direct
            Conv2d.useWinograd(tile != 0, tile: tile)
            let c = Conv2d("c", cin, cout, kernel: 3, stride: stride, padding: 1, workspace: Workspace())
            XCTAssertEqual(c.usesDirectKernel, direct, file: file, line: line)
            XCTAssertEqual(c.usesWinograd, tile != 0, file: file, line: line)
            XCTAssertEqual(c.usesWinograd4, tile == 4, file: file, line: line)
            XCTAssertEqual(c.usesWinogradWeightGrad, tile != 0, file: file, line: line)
            _ = c.weight.values.update(from: GradCheck.randomTensor([cout, cin, 3, 3], seed: seed, scale: 0.3).array)
            GradCheck.checkLayer(c, input: GradCheck.randomTensor(input, seed: seed + 1), file: file, line: line)
        }
    }

    private typealias ConvSettings = (Bool, Int, Int, Int, Bool)

    private static func savedConvSettings() -> ConvSettings {
        (Conv2d.directConvolution, Conv2d.winogradMinChannels, Conv2d.winogradWeightGradMinChannels,
         Conv2d.winograd4MinChannels, Conv2d.winogradAnyPlane)
    }

    private static func restoreConvSettings(_ s: ConvSettings) {
        (Conv2d.directConvolution, Conv2d.winogradMinChannels, Conv2d.winogradWeightGradMinChannels,
         Conv2d.winograd4MinChannels, Conv2d.winogradAnyPlane) = s
    }

    func testConv3x3Stride1Pad1() {
        checkConv3x3BothPaths(3, 4, stride: 1, input: [2, 3, 5, 6], seed: 1)
        checkConv3x3BothPaths(2, 3, stride: 1, input: [3, 2, 7, 4], seed: 2)   // odd height: partial tiles
        checkConv3x3BothPaths(2, 2, stride: 1, input: [2, 2, 5, 16], seed: 4)  // F(4×4, 3×3)'s packed rows
        checkConv3x3BothPaths(2, 2, stride: 1, input: [9, 2, 5, 8], seed: 5)   // its octets of 8-wide planes
    }

    func testDirectConv3x3KernelsMatchFloat64Reference() {
        // Output, input gradient and weight gradient of the direct kernels, once per instruction
        // set this CPU runs (portable C always, AVX2 and AVX-512 where present), against a float64
        // convolution, at shapes that hit the
        // kernels' edges: output channels not a multiple of the 8-channel block or of the
        // 3-channel weight-gradient block, rows shorter and longer than one 48-wide register
        // block, a 1×1 image, images split over several weight-gradient groups, and stride 2
        // (phase planes) with even and odd sizes, where the input gradient runs as four stride-1
        // correlations, one per phase of the input (input channels past one 8-channel block too).
        // The stride-1 shapes run again on Winograd F(2×2, 3×3) and F(4×4, 3×3): odd sizes
        // (partial tiles), rows wider than one 16-tile vector (33, 180), a block holding parts of
        // two images (5×6), tiny planes (1×1), several weight-gradient groups, and the planes
        // 16 and 32 wide whose rows F(4×4, 3×3) packs two or four tile rows to a vector, with
        // heights that end in a partial tile, and 8-wide planes, which it takes eight images to a
        // vector: batches that end in a partial octet, span two weight-gradient groups, or hold
        // one image, planes one row high; and planes of other widths that F(4×4, 3×3) takes as
        // rows of 16 or 32 (9, 14, 20, 28) or in octets (5, 6, 7), their columns past the plane
        // read as zeros and never written; one 28×28 image of 16 channels, whose F(4×4, 3×3) weight
        // gradient sums 56 tiles (not a whole number of 16-tile vectors).
        let shapes: [(n: Int, c: Int, k: Int, h: Int, w: Int, s: Int)] = [
            (2, 3, 5, 5, 6, 1), (1, 9, 12, 1, 1, 1), (2, 4, 3, 7, 33, 1), (3, 1, 2, 180, 180, 1), (2, 16, 16, 8, 8, 1),
            (3, 5, 17, 9, 16, 1), (2, 18, 3, 6, 32, 1), (2, 2, 3, 1, 16, 1),
            (9, 5, 3, 5, 8, 1), (17, 3, 2, 9, 8, 1), (1, 4, 9, 1, 8, 1),
            (3, 4, 5, 7, 7, 1), (2, 6, 9, 14, 14, 1), (2, 3, 4, 28, 28, 1), (2, 5, 7, 11, 20, 1), (10, 3, 3, 3, 5, 1),
            (2, 2, 2, 13, 9, 1), (1, 16, 16, 28, 28, 1),
            (2, 3, 5, 8, 8, 2), (2, 4, 7, 7, 9, 2), (1, 2, 3, 1, 1, 2), (3, 1, 2, 130, 131, 2), (2, 10, 6, 6, 5, 2),
        ]
        let saved = Self.savedConvSettings()
        Conv2d.directConvolution = true
        Conv2d.winogradAnyPlane = true
        let savedISA = KernelISA.current
        defer {
            try? KernelISA.use(savedISA)
            KernelISA.winogradWideTilesOnAVX2 = false
            Self.restoreConvSettings(saved)
        }
        // Every set the CPU runs, and on AVX2 once more with the AVX-512 kernels' Winograd tiles.
        let paths = KernelISA.supported.map { ($0, false) } + (KernelISA.avx2.isSupported ? [(KernelISA.avx2, true)] : [])
        for (isa, wide) in paths { for tile in [0, 2, 4] where !wide || tile != 0 {
            XCTAssertNoThrow(try KernelISA.use(isa))
            XCTAssertEqual(KernelISA.current, isa)
            KernelISA.winogradWideTilesOnAVX2 = wide
            Conv2d.useWinograd(tile != 0, tile: tile)
            for (si, s) in shapes.enumerated() where tile == 0 || s.s == 1 {
                let oh = (s.h - 1) / s.s + 1, ow = (s.w - 1) / s.s + 1
                let x = GradCheck.randomTensor([s.n, s.c, s.h, s.w], seed: 10 + UInt64(si))
                let w = GradCheck.randomTensor([s.k, s.c, 3, 3], seed: 20 + UInt64(si))
                let dy = GradCheck.randomTensor([s.n, s.k, oh, ow], seed: 30 + UInt64(si))
                var y = [Double](repeating: 0, count: s.n * s.k * oh * ow)
                var dx = [Double](repeating: 0, count: x.count)
                var dw = [Double](repeating: 0.5, count: w.count)   // backward adds into the gradient
                for n in 0..<s.n { for o in 0..<s.k { for c in 0..<s.c { for i in 0..<3 { for j in 0..<3 {
                    let wv = Double(w[((o * s.c + c) * 3 + i) * 3 + j])
                    var gw = 0.0
                    for r in 0..<oh {
                        let ih = r * s.s - 1 + i
                        guard ih >= 0 && ih < s.h else { continue }
                        for q in 0..<ow {
                            let iw = q * s.s - 1 + j
                            guard iw >= 0 && iw < s.w else { continue }
                            let xi = ((n * s.c + c) * s.h + ih) * s.w + iw, yi = ((n * s.k + o) * oh + r) * ow + q
                            y[yi] += Double(x[xi]) * wv
                            dx[xi] += Double(dy[yi]) * wv
                            gw += Double(dy[yi]) * Double(x[xi])
                        }
                    }
                    dw[((o * s.c + c) * 3 + i) * 3 + j] += gw
                } } } } }
                let passes = convPasses(w, stride: s.s, x: x, dy: dy, grad: 0.5, tile: tile)
                let (out, gx, gw) = (passes[0], passes[1], passes[2])
                let tag = "\(isa)\(wide ? " (AVX-512 tiles)" : "")\(tile != 0 ? " winograd F(\(tile)×\(tile), 3×3)" : "") \(s)"
                // Float32 sums of `terms` products: error bound 1e-6·√terms relative to the largest
                // value; F(4×4, 3×3)'s transforms (coefficients up to 8 and 1/24) get 4e-6.
                let unit = tile == 4 ? 4e-6 : 1e-6
                let checks = [("y", out, y, s.c * 9, unit), ("dx", gx, dx, s.k * 9, unit), ("dw", gw, dw, s.n * oh * ow, unit)]
                for (name, got, want, terms, unit) in checks {
                    XCTAssertEqual(got.count, want.count, "\(tag) \(name) size")
                    let scale = max(1, want.map { abs($0) }.max() ?? 0)
                    let err = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
                    XCTAssertLessThanOrEqual(err, unit * scale * Double(terms).squareRoot(),
                                             "\(tag) \(name): max error \(err)")
                }
            }
        } }
    }

    /// Layers of many channels on small planes (a detector's deep layers) run on im2col + GEMM
    /// (`Conv2d.gemmMinChannels`, `gemmMaxPlane`); output, input gradient and weight gradient
    /// against a float64 convolution on that route and on the direct kernels, and only such
    /// geometries take it.
    func testManyChannelsOnSmallPlanesRunOnGEMM() {
        let saved = (Conv2d.gemmMinChannels, Conv2d.gemmMaxPlane)
        defer { (Conv2d.gemmMinChannels, Conv2d.gemmMaxPlane) = saved }
        Conv2d.gemmMaxPlane = 64
        for (si, s) in [(n: 2, c: 128, k: 128, h: 4, w: 4, s: 1, kernel: 3), (n: 1, c: 128, k: 136, h: 16, w: 16, s: 2, kernel: 3),
                        (n: 2, c: 128, k: 128, h: 8, w: 8, s: 2, kernel: 1)].enumerated() {
            let pad = s.kernel / 2, oh = (s.h + 2 * pad - s.kernel) / s.s + 1, ow = (s.w + 2 * pad - s.kernel) / s.s + 1
            let x = GradCheck.randomTensor([s.n, s.c, s.h, s.w], seed: 40 + UInt64(si))
            let w = GradCheck.randomTensor([s.k, s.c, s.kernel, s.kernel], seed: 50 + UInt64(si), scale: 0.1)
            let dy = GradCheck.randomTensor([s.n, s.k, oh, ow], seed: 60 + UInt64(si))
            var y = [Double](repeating: 0, count: dy.count), dx = [Double](repeating: 0, count: x.count)
            var dw = [Double](repeating: 0, count: w.count)
            for n in 0..<s.n { for o in 0..<s.k { for c in 0..<s.c { for i in 0..<s.kernel { for j in 0..<s.kernel {
                let wi = ((o * s.c + c) * s.kernel + i) * s.kernel + j, wv = Double(w[wi])
                for r in 0..<oh { for q in 0..<ow {
                    let ih = r * s.s - pad + i, iw = q * s.s - pad + j
                    guard ih >= 0 && ih < s.h && iw >= 0 && iw < s.w else { continue }
                    let xi = ((n * s.c + c) * s.h + ih) * s.w + iw, yi = ((n * s.k + o) * oh + r) * ow + q
                    y[yi] += Double(x[xi]) * wv; dx[xi] += Double(dy[yi]) * wv; dw[wi] += Double(dy[yi]) * Double(x[xi])
                } }
            } } } } }
            for gemm in [true, false] {
                Conv2d.gemmMinChannels = gemm ? 128 : Int.max
                let conv = Conv2d("c", s.c, s.k, kernel: s.kernel, stride: s.s, padding: pad, workspace: Workspace())
                _ = conv.weight.values.update(from: w.array)
                let got = [conv.forward(x, mode: .training).array, conv.backward(dy).array, Array(conv.weight.grads)]
                XCTAssertEqual(conv.gemmTakes(conv.geometry), gemm, "\(s)")
                for (name, g, want, terms) in [("y", got[0], y, s.c * 9), ("dx", got[1], dx, s.k * 9), ("dw", got[2], dw, s.n * oh * ow)] {
                    let scale = max(1, want.map { abs($0) }.max() ?? 0)
                    let err = zip(g, want).map { abs(Double($0) - $1) }.max() ?? 0
                    XCTAssertLessThanOrEqual(err, 4e-6 * scale * Double(terms).squareRoot(), "\(gemm ? "GEMM" : "direct") \(s) \(name): max error \(err)")
                }
            }
        }
        // The main job's layers (≤ 64 channels) and large planes keep the direct kernels.
        Conv2d.gemmMinChannels = 128
        let small = Conv2d("c", 64, 64, kernel: 3, stride: 1, padding: 1, workspace: Workspace())
        _ = small.forward(Tensor(shape: [1, 64, 7, 7]), mode: .training)
        XCTAssertFalse(small.gemmTakes(small.geometry))
        let wide = Conv2d("c", 128, 128, kernel: 3, stride: 1, padding: 1, workspace: Workspace())
        _ = wide.forward(Tensor(shape: [1, 128, 9, 9]), mode: .training)
        XCTAssertFalse(wide.gemmTakes(wide.geometry))
    }

    func testConv3x3Stride2Pad1() {
        checkConv3x3BothPaths(2, 3, stride: 2, input: [3, 2, 7, 6], seed: 3)
    }

    func testConv1x1Stride2AndStride1() {
        let saved = Conv2d.directConvolution
        defer { Conv2d.directConvolution = saved }
        for (s, direct) in [(1, false), (2, false), (2, true)] {
            Conv2d.directConvolution = direct
            let c = Conv2d("c", 3, 2, kernel: 1, stride: s, padding: 0, workspace: Workspace())
            XCTAssertEqual(c.usesDirectPointwise, s == 2 && direct)
            _ = c.weight.values.update(from: GradCheck.randomTensor([2, 3, 1, 1], seed: 5, scale: 0.5).array)
            GradCheck.checkLayer(c, input: GradCheck.randomTensor([2, 3, 6, 5], seed: 6))
        }
    }

    func testDirectConv1x1Stride2MatchesFloat64Reference() {
        // The 1×1 stride-2 kernels (on every instruction set this CPU runs) against float64: odd and even sizes,
        // input and output channels past one 8-channel block and off the 4×4 weight-gradient
        // tile, a plane shorter than one vector, a 1×1 image; gradients added into a preset one.
        let shapes: [(n: Int, c: Int, k: Int, h: Int, w: Int)] = [(3, 10, 5, 7, 9), (2, 4, 12, 8, 8), (1, 3, 2, 1, 1), (2, 17, 9, 32, 32)]
        let saved = Conv2d.directConvolution
        Conv2d.directConvolution = true
        let savedISA = KernelISA.current
        defer { Conv2d.directConvolution = saved; try? KernelISA.use(savedISA) }
        for isa in KernelISA.supported {
            XCTAssertNoThrow(try KernelISA.use(isa))
            for (si, s) in shapes.enumerated() {
                let oh = (s.h - 1) / 2 + 1, ow = (s.w - 1) / 2 + 1
                let x = GradCheck.randomTensor([s.n, s.c, s.h, s.w], seed: 50 + UInt64(si))
                let w = GradCheck.randomTensor([s.k, s.c, 1, 1], seed: 60 + UInt64(si))
                let dy = GradCheck.randomTensor([s.n, s.k, oh, ow], seed: 70 + UInt64(si))
                var y = [Double](repeating: 0, count: dy.count), dx = [Double](repeating: 0, count: x.count)
                var dw = [Double](repeating: 0.5, count: w.count)
                for n in 0..<s.n { for o in 0..<s.k { for c in 0..<s.c { for r in 0..<oh { for q in 0..<ow {
                    let xi = ((n * s.c + c) * s.h + 2 * r) * s.w + 2 * q, yi = ((n * s.k + o) * oh + r) * ow + q
                    let wv = Double(w[o * s.c + c])
                    y[yi] += Double(x[xi]) * wv
                    dx[xi] += Double(dy[yi]) * wv
                    dw[o * s.c + c] += Double(dy[yi]) * Double(x[xi])
                } } } } }
                let conv = Conv2d("c", s.c, s.k, kernel: 1, stride: 2, workspace: Workspace())
                XCTAssertTrue(conv.usesDirectPointwise)
                _ = conv.weight.values.update(from: w.array)
                conv.weight.grads.update(repeating: 0.5)
                let got = [conv.forward(x, mode: .training).array, conv.backward(dy).array, Array(conv.weight.grads)]
                let tag = "\(isa) \(s)"
                for (name, g, want, terms) in [("y", got[0], y, s.c), ("dx", got[1], dx, s.k), ("dw", got[2], dw, s.n * oh * ow)] {
                    XCTAssertEqual(g.count, want.count, "\(tag) \(name) size")
                    let scale = max(1, want.map { abs($0) }.max() ?? 0)
                    let err = zip(g, want).map { abs(Double($0) - $1) }.max() ?? 0
                    XCTAssertLessThanOrEqual(err, 1e-6 * scale * Double(terms).squareRoot(), "\(tag) \(name): max error \(err)")
                }
            }
        }
    }

    func testConvChunkedMatchesSingleChunkAndReference() {
        // The chunked GEMM path (several images per GEMM) and the one-image path agree with a
        // direct float64 convolution.
        let x = GradCheck.randomTensor([5, 3, 6, 6], seed: 7)
        let w = GradCheck.randomTensor([4, 3, 3, 3], seed: 8)
        var ref = [Double](repeating: 0, count: 5 * 4 * 3 * 3)
        for n in 0..<5 { for o in 0..<4 { for oh in 0..<3 { for ow in 0..<3 {
            var s = 0.0
            for c in 0..<3 { for i in 0..<3 { for j in 0..<3 {
                let ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j
                if ih >= 0 && ih < 6 && iw >= 0 && iw < 6 {
                    s += Double(x[((n * 3 + c) * 6 + ih) * 6 + iw]) * Double(w[((o * 3 + c) * 3 + i) * 3 + j])
                }
            } } }
            ref[((n * 4 + o) * 3 + oh) * 3 + ow] = s
        } } } }
        let saved = (Conv2d.columnBudget, Conv2d.directConvolution)
        Conv2d.directConvolution = false
        defer { (Conv2d.columnBudget, Conv2d.directConvolution) = saved }
        for budget in [1, 27 * 9 * 2, 1 << 20] {
            Conv2d.columnBudget = budget
            let c = Conv2d("c", 3, 4, kernel: 3, stride: 2, padding: 1, workspace: Workspace())
            _ = c.weight.values.update(from: w.array)
            let y = c.forward(x, mode: .training)
            for i in 0..<ref.count { XCTAssertEqual(Double(y[i]), ref[i], accuracy: 1e-4, "budget \(budget) at \(i)") }
            GradCheck.checkLayer(c, input: x)
        }
    }

    func testDirectConv3x3IsIndependentOfThreadCount() {
        // Images split over threads, weight-gradient groups summed in order: 1, 2 and 3 threads
        // give the same bits, for the direct kernels and for Winograd (the shape spans several
        // weight-gradient groups of both).
        // 8-wide planes go to F(4×4, 3×3) in octets of images, whose groups differ.
        let w = GradCheck.randomTensor([24, 24, 3, 3], seed: 42, scale: 0.1)
        let saved = (BLAS.threads, Self.savedConvSettings())
        Conv2d.directConvolution = true
        defer {
            BLAS.setThreads(saved.0)
            Self.restoreConvSettings(saved.1)
        }
        XCTAssertGreaterThan(7 / Conv2d.winogradGroup(cin: 24, cout: 24, h: 32, w: 32), 2)
        XCTAssertGreaterThan(7 / Conv2d.winogradGroup(cin: 24, cout: 24, h: 32, w: 32, tile: 4), 2)
        XCTAssertGreaterThanOrEqual(72 / Conv2d.winogradGroup(cin: 24, cout: 24, h: 8, w: 8, tile: 4), 2)
        for (tile, n, side) in [(0, 7, 32), (2, 7, 32), (4, 7, 32), (4, 72, 8)] {
            let x = GradCheck.randomTensor([n, 24, side, side], seed: 41)
            let dy = GradCheck.randomTensor([n, 24, side, side], seed: 43)
            Conv2d.useWinograd(tile != 0, tile: tile)
            var results: [[[Float]]] = []
            for threads in [1, 2, 3] {
                BLAS.setThreads(threads)
                results.append(convPasses(w, stride: 1, x: x, dy: dy, grad: 0.25, tile: tile))
            }
            for r in results.dropFirst() {
                for (i, name) in ["y", "dx", "dw"].enumerated() {
                    XCTAssertTrue(r[i] == results[0][i], "Winograd tile \(tile) \(side)×\(side) \(name) differs between thread counts")
                }
            }
            XCTAssertNotEqual(results[0][2].max(), 0.25)  // the gradient was accumulated
        }
        // 1×1 stride-2 layers: images packed and weight-gradient rows (not a multiple of the
        // 4-row tile) split over threads.
        let x = GradCheck.randomTensor([7, 24, 15, 15], seed: 44), dy = GradCheck.randomTensor([7, 42, 8, 8], seed: 45)
        let w1 = GradCheck.randomTensor([42, 24, 1, 1], seed: 46, scale: 0.2)
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            BLAS.setThreads(threads)
            let conv = Conv2d("p", 24, 42, kernel: 1, stride: 2, workspace: Workspace())
            XCTAssertTrue(conv.usesDirectPointwise)
            _ = conv.weight.values.update(from: w1.array)
            conv.weight.grads.update(repeating: 0.25)
            results.append(conv.forward(x, mode: .training).array + conv.backward(dy).array + Array(conv.weight.grads))
        }
        XCTAssertTrue(results[1] == results[0] && results[2] == results[0], "1×1 stride-2 passes differ between thread counts")
    }

    func testBatchNormAndElementwiseAreIndependentOfThreadCount() {
        // Channels split over threads (BN) and ranges split over threads (ReLU): 1, 2 and 3 threads
        // give the same bits, in training and inference mode, with and without the fused ReLU.
        let x = GradCheck.randomTensor([8, 12, 24, 24], seed: 51, scale: 3)
        let dy = GradCheck.randomTensor([8, 12, 24, 24], seed: 52)
        let saved = BLAS.threads
        defer { BLAS.setThreads(saved) }
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            BLAS.setThreads(threads)
            var r: [Float] = []
            for fused in [false, true] {
                let bn = BatchNorm2d("bn", 12)
                bn.fusedReLU = fused
                for i in 0..<12 { bn.weight.value[i] = Float(i) * 0.3 - 1; bn.bias.value[i] = Float(i % 3) * 0.2 }
                for mode in [Mode.training, .inference] {
                    r += bn.forward(x, mode: mode).array + bn.backward(dy).array
                    r += Array(bn.weight.grads) + Array(bn.bias.grads)
                    r += Array(UnsafeBufferPointer(start: bn.runningMean, count: 12))
                    r += Array(UnsafeBufferPointer(start: bn.runningVar, count: 12))
                }
            }
            let relu = ReLU()
            r += relu.forward(x, mode: .training).array + relu.backward(dy).array
            results.append(r)
        }
        XCTAssertTrue(results[1] == results[0], "2 threads differ from 1")
        XCTAssertTrue(results[2] == results[0], "3 threads differ from 1")
    }

    func testBatchNormAndElementwiseAgreeOnEveryISA() {
        // The batch norm and element-wise kernels round identically on every instruction set (no
        // FMA contraction, sums in fixed lanes added in a fixed order): each set this CPU runs
        // gives the portable C loops' bits, with runs of 16 and more (the vector lanes) and a
        // tail; and the forward pass matches a float64 batch norm on each.
        let (N, C, H, W) = (3, 5, 7, 9)
        let x = GradCheck.randomTensor([N, C, H, W], seed: 61, scale: 3)
        let r = GradCheck.randomTensor([N, C, H, W], seed: 62)
        let dy = GradCheck.randomTensor([N, C, H, W], seed: 63)
        let savedISA = KernelISA.current
        defer { try? KernelISA.use(savedISA) }
        var results: [KernelISA: [Float]] = [:]
        for isa in KernelISA.supported {
            XCTAssertNoThrow(try KernelISA.use(isa))
            var out: [Float] = []
            for (fused, residual) in [(false, false), (true, false), (true, true)] {
                let bn = BatchNorm2d("bn", C)
                bn.fusedReLU = fused
                for c in 0..<C { bn.weight.value[c] = Float(c) * 0.4 - 0.9; bn.bias.value[c] = Float(c % 3) * 0.3 - 0.2 }
                let y = residual ? bn.forward(x, residual: r, mode: .training) : bn.forward(x, mode: .training)
                let ya = y.array
                out += ya + bn.backward(dy).array + Array(bn.weight.grads) + Array(bn.bias.grads)
                let P = H * W
                for c in 0..<C {
                    var v: [Double] = []
                    for n in 0..<N { for i in 0..<P { v.append(Double(x[(n * C + c) * P + i])) } }
                    let m = v.reduce(0, +) / Double(v.count)
                    let sd = (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count) + 1e-5).squareRoot()
                    for n in 0..<N { for i in 0..<P {
                        let k = (n * C + c) * P + i
                        var want = Double(bn.weight.value[c]) * (Double(x[k]) - m) / sd + Double(bn.bias.value[c])
                        if residual { want += Double(r[k]) }
                        if fused { want = max(want, 0) }
                        XCTAssertEqual(Double(ya[k]), want, accuracy: 1e-5, "\(isa) bn fused \(fused) residual \(residual)")
                    } }
                }
            }
            let relu = ReLU()
            out += relu.forward(x, mode: .training).array + relu.backward(dy).array
            results[isa] = out
        }
        for isa in KernelISA.supported where isa != .portable {
            XCTAssertTrue(results[isa]! == results[.portable]!, "\(isa) differs from portable")
        }
    }

    func testBatchNormBlocksOfManyChannelsAgainstFloat64() {
        // The kernels take channels in blocks, every image's runs of them in memory order, and
        // keep the sums of at most 32 channels at a time: 70 channels (three such groups, split
        // differently by 1, 2 and 3 threads), planes of 21 (a vector and a tail). Forward and
        // backward through the fused ReLU against a float64 batch norm on every instruction set,
        // and the same bits for any thread count.
        let (N, C, P) = (3, 70, 21)
        let x = GradCheck.randomTensor([N, C, 3, 7], seed: 71, scale: 2)
        let dy = GradCheck.randomTensor([N, C, 3, 7], seed: 72)
        let savedISA = KernelISA.current, savedThreads = BLAS.threads
        defer { try? KernelISA.use(savedISA); BLAS.setThreads(savedThreads) }
        for isa in KernelISA.supported {
            XCTAssertNoThrow(try KernelISA.use(isa))
            var bits: [[Float]] = []
            for threads in [1, 2, 3] {
                BLAS.setThreads(threads)
                let bn = BatchNorm2d("bn", C)
                bn.fusedReLU = true
                for c in 0..<C { bn.weight.value[c] = Float(c % 7) * 0.3 - 0.8; bn.bias.value[c] = Float(c % 5) * 0.2 - 0.3 }
                let y = bn.forward(x, mode: .training).array
                let dx = bn.backward(dy).array
                bits.append(y + dx + Array(bn.weight.grads) + Array(bn.bias.grads))
                guard threads == 1 else { continue }
                for c in 0..<C {
                    let idx = (0..<N).flatMap { n in (0..<P).map { (n * C + c) * P + $0 } }
                    let v = idx.map { Double(x[$0]) }, n = Double(v.count)
                    let m = v.reduce(0, +) / n
                    let sd = (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / n + 1e-5).squareRoot()
                    let g = Double(bn.weight.value[c]), b = Double(bn.bias.value[c])
                    let h = v.map { ($0 - m) / sd }
                    let d = zip(idx, h).map { k, hk in g * hk + b > 0 ? Double(dy[k]) : 0 }
                    let md = d.reduce(0, +) / n, mdh = zip(d, h).map { $0 * $1 }.reduce(0, +) / n
                    for (j, k) in idx.enumerated() {
                        XCTAssertEqual(Double(y[k]), max(g * h[j] + b, 0), accuracy: 1e-5, "\(isa) y channel \(c)")
                        XCTAssertEqual(Double(dx[k]), g / sd * (d[j] - md - h[j] * mdh), accuracy: 1e-4, "\(isa) dx channel \(c)")
                    }
                    XCTAssertEqual(Double(bn.weight.grads[c]), n * mdh, accuracy: 1e-4, "\(isa) dγ channel \(c)")
                    XCTAssertEqual(Double(bn.bias.grads[c]), n * md, accuracy: 1e-4, "\(isa) dβ channel \(c)")
                }
            }
            XCTAssertTrue(bits[1] == bits[0] && bits[2] == bits[0], "\(isa): thread counts differ")
        }
    }

    func testBatchNormTrainingMode() {
        let bn = BatchNorm2d("bn", 3)
        _ = bn.weight.values.update(from: [1.5, -0.7, 0.9])
        _ = bn.bias.values.update(from: [0.1, 0.2, -0.3])
        GradCheck.checkLayer(bn, input: GradCheck.randomTensor([4, 3, 3, 2], seed: 9), h: 1e-2, tol: 2e-2)
    }

    func testBatchNormWithFusedReLU() {
        for mode in [Mode.training, .inference] {
            let bn = BatchNorm2d("bn", 3)
            bn.fusedReLU = true
            _ = bn.weight.values.update(from: [1.5, -0.7, 0.9])
            _ = bn.bias.values.update(from: [0.3, 0.2, -0.1])
            let x = GradCheck.randomTensor([4, 3, 3, 2], seed: 31)
            let y = bn.forward(x, mode: mode)
            XCTAssertTrue(y.array.allSatisfy { $0 >= 0 })
            XCTAssertTrue(y.array.contains(0))
            GradCheck.checkLayer(bn, input: x, mode: mode, h: 1e-3, tol: 2e-2)
        }
    }

    func testBatchNormInferenceMode() {
        let bn = BatchNorm2d("bn", 2)
        _ = bn.weight.values.update(from: [1.5, -0.7])
        bn.runningMean[0] = 0.3; bn.runningMean[1] = -0.2
        bn.runningVar[0] = 2.0; bn.runningVar[1] = 0.5
        GradCheck.checkLayer(bn, input: GradCheck.randomTensor([3, 2, 2, 2], seed: 10), mode: .inference)
    }

    func testReLU() {
        let x = GradCheck.randomTensor([2, 3, 4, 5], seed: 11)
        for i in 0..<x.count where abs(x[i]) < 0.05 { x[i] = 0.5 }   // keep away from the kink
        GradCheck.checkLayer(ReLU(), input: x, h: 1e-2)
    }

    func testMaxPool() {
        let x = GradCheck.randomTensor([2, 2, 6, 6], seed: 12)
        GradCheck.checkLayer(MaxPool2d(kernel: 3, stride: 2, padding: 1), input: x, h: 1e-3)
        GradCheck.checkLayer(MaxPool2d(kernel: 2), input: x, h: 1e-3)
    }

    func testAvgPool() {
        GradCheck.checkLayer(AvgPool2d(kernel: 3, stride: 2, padding: 1), input: GradCheck.randomTensor([2, 2, 5, 5], seed: 13))
        GradCheck.checkLayer(AvgPool2d(kernel: 2), input: GradCheck.randomTensor([1, 3, 4, 4], seed: 14))
    }

    func testGlobalAvgPool() {
        GradCheck.checkLayer(GlobalAvgPool(), input: GradCheck.randomTensor([3, 4, 3, 5], seed: 15))
    }

    func testLinear() {
        let l = Linear("fc", 5, 3)
        _ = l.weight.values.update(from: GradCheck.randomTensor([3, 5], seed: 16).array)
        _ = l.bias!.values.update(from: [0.1, -0.2, 0.3])
        GradCheck.checkLayer(l, input: GradCheck.randomTensor([4, 5], seed: 17))
    }

    func testBasicBlockWithProjection() {
        let ws = Workspace()
        let b = BasicBlock("layer2.0", 2, 3, stride: 2, workspace: ws)
        var rng = SplitMix64(seed: 18)
        for p in b.parameters where !p.isBiasOrNorm { for i in 0..<p.count { p.value[i] = Float(rng.normal() * 0.4) } }
        for bn in b.norms { for i in 0..<bn.channels { bn.bias.value[i] = 0.5 } }   // keep ReLUs off their kink
        GradCheck.checkLayer(b, input: GradCheck.randomTensor([3, 2, 6, 6], seed: 19), h: 5e-3, tol: 3e-2)
    }
}
