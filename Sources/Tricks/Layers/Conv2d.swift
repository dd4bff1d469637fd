import CKernels

/// 2-D convolution over NCHW, as `torch.nn.Conv2d` (without bias unless asked).
///
/// 3×3 padding-1 convolutions (most of a ResNet's FLOPs) run on direct kernels
/// (`CKernels`: zero-bordered planes, register-blocked FMAs, no unfolded matrix):
/// output, weight gradient and input gradient at stride 1 or 2 (the stride-2 input gradient as
/// four stride-1 correlations, one per phase of the input). Wide stride-1
/// layers use Winograd instead: F(4×4, 3×3) from `winograd4MinChannels` channels on any plane,
/// F(2×2, 3×3) from `winogradMinChannels` where F(4×4, 3×3) is turned off and it pays.
/// 1×1 stride-2 layers run the same kernel over subsampled planes. Every kernel runs on the
/// instruction set `KernelISA` chose (AVX-512, AVX2 + FMA or portable C).
/// Everything else unfolds chunks of images (`im2col`, or a plain channel-major
/// copy for 1×1 stride-1 kernels) and runs GEMMs `W (Cout, C·k·k) × col (C·k·k, m·OH·OW)`;
/// backward recomputes the unfolding instead of caching it, so one scratch
/// matrix serves every layer of the model.
public final class Conv2d: Layer {
    public let inChannels, outChannels, kernel, stride, padding: Int
    /// The weight, `(Cout, Cin, k, k)`.
    public let weight: Parameter
    /// The bias, `(Cout)`, or nil.
    public let bias: Parameter?
    /// False for a network's first layer: its input gradient is never needed.
    public var needsInputGrad = true
    private let ws: Workspace
    private var input: Tensor?
    private(set) var geometry = ConvGeometry(n: 0, c: 0, h: 0, w: 0, kh: 0, kw: 0, stride: 1, pad: 0)
    private let y = Tensor(shape: [0])
    /// The tensor backward writes the input gradient into and returns. Layers whose gradients
    /// are consumed before the next layer's backward can share one (`ResNet` does), so the
    /// backward pass keeps a few warm buffers instead of a cold one per layer.
    public var gradientBuffer = Tensor(shape: [0])

    public init(_ name: String, _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int = 0, bias: Bool = false, workspace: Workspace) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        weight = Parameter(name: name + ".weight", shape: [outChannels, inChannels, kernel, kernel])
        self.bias = bias ? Parameter(name: name + ".bias", shape: [outChannels], isBiasOrNorm: true) : nil
        ws = workspace
    }

    /// A convolution in one line: `Conv2d(name: "head.0", in: 64, out: 128, kernel: 3)` pads by
    /// `kernel / 2` ("same" at stride 1) unless told otherwise. Layers that run one after another
    /// can share a `workspace` (scratch memory); by default each has its own.
    public convenience init(name: String, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1,
                            padding: Int? = nil, bias: Bool = false, workspace: Workspace = Workspace()) {
        self.init(name, inChannels, outChannels, kernel: kernel, stride: stride, padding: padding ?? kernel / 2,
                  bias: bias, workspace: workspace)
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    private var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }

    /// Use the direct kernels for 3×3 padding-1 layers of stride 1 or 2 and 1×1 stride-2 layers
    /// (on every instruction set, `KernelISA`); false forces im2col + GEMM everywhere, for
    /// comparisons.
    public static var directConvolution = true

    /// True when this layer's output and weight gradient run on the direct 3×3 kernels.
    public var usesDirectKernel: Bool {
        Conv2d.directConvolution && kernel == 3 && (stride == 1 || stride == 2) && padding == 1
    }

    /// True when its input gradient does too; otherwise that is a GEMM and col2im.
    public var usesDirectInputGrad: Bool { usesDirectKernel }

    /// True for 1×1 stride-2 layers without padding (projection shortcuts) on direct kernels:
    /// subsampled planes through the same blocked kernel, no unfolding or transposes.
    public var usesDirectPointwise: Bool {
        Conv2d.directConvolution && kernel == 1 && stride == 2 && padding == 0
    }

    /// Stride-1 direct layers, the ones Winograd can take.
    private var winogradEligible: Bool { usesDirectKernel && stride == 1 }

    /// Stride-1 3×3 layers with at least this many input and output channels run on Winograd
    /// F(2×2, 3×3) (`CKernels/winograd.c`) on planes where it pays (`winogradPlane`): 2.25×
    /// fewer multiplies, but transforms whose cost per tile does not shrink with the channel
    /// count. Measured on an AVX-512 core (`tricks-worker bench --conv-kernels`,
    /// docs/performance.md), output and input gradient take 0.6–0.85× the direct kernels' time
    /// at 32 to 128 channels; at 16, 0.92–1.0×, within that machine's noise, so those layers keep
    /// the direct kernels (on AVX2, 0.4–0.6× from 16 channels: F(4×4, 3×3) takes those layers
    /// first). 0 uses it for every stride-1 3×3 layer on such planes, `Int.max` for none.
    public static var winogradMinChannels = 32

    /// Stride-1 3×3 layers with at least this many input and output channels run their output
    /// and input gradient on Winograd F(4×4, 3×3), on planes of every size (partial tiles at the
    /// edges; rows of 9 to 32 taken as rows of 16 or 32 with zero columns past the plane, a
    /// vector holding four or two tile rows; planes up to 8 wide eight images to a vector; wider
    /// ones row by row): 4× fewer multiplies than the direct kernels, transforms of 6×6 tiles
    /// that cost about what F(2×2, 3×3)'s 4×4 ones do per output. Errors grow with the tile
    /// (about 3e-6 of the output's scale in float32 against 1e-6), as in other libraries that
    /// use it. Takes precedence over F(2×2, 3×3), which it beat on every plane measured on AVX2
    /// (docs/performance.md; 64 channels at 56×56: 0.41× the direct kernels' time against 0.60×).
    public static var winograd4MinChannels = 16

    /// The weight gradient's own threshold: Winograd's weight gradient pays from narrower
    /// layers than its forward pass (no output transform; docs/performance.md).
    public static var winogradWeightGradMinChannels = 16

    /// Layers with at least this many input and output channels whose output planes have at
    /// most `gemmMaxPlane` positions run on im2col + GEMM instead of the direct and Winograd
    /// kernels: a detector's deep layers (256 channels at 4×4 or 8×8) are long GEMMs OpenBLAS
    /// runs near its peak, while the direct kernels' per-image blocking and Winograd's tiles,
    /// mostly padding on such planes, run them at a fraction of it (docs/performance.md).
    /// `Int.max`: never.
    public static var gemmMinChannels = 128
    public static var gemmMaxPlane = 64

    /// True when this geometry goes to im2col + GEMM by `gemmMinChannels` and `gemmMaxPlane`.
    func gemmTakes(_ g: ConvGeometry) -> Bool {
        min(inChannels, outChannels) >= Conv2d.gemmMinChannels && g.oh * g.ow <= Conv2d.gemmMaxPlane
    }

    /// Use Winograd on any plane, not only where `winogradPlane` says it pays (tests).
    public static var winogradAnyPlane = false

    /// Planes where Winograd pays: even sides whose 2×2 tiles fill whole vectors of 16 per image
    /// (8×8, 16×16, 32×32, …). Elsewhere partial tiles and part-filled vectors cost more than
    /// the multiplies saved (14×14: 1.5×, 7×7: 1.0×, 4×4 and 2×2, mostly padding: 1.0–1.6×).
    public static func winogradPlane(h: Int, w: Int) -> Bool {
        h % 2 == 0 && w % 2 == 0 && (h / 2) * (w / 2) % 16 == 0
    }

    /// One line naming the convolution kernels in use and their thresholds (training and bench headers).
    public static var kernelSummary: String {
        guard directConvolution else { return "im2col + GEMM for every conv" }
        func from(_ c: Int) -> String { c == Int.max ? "off" : "≥ \(c) channels" }
        return "direct 3×3 and 1×1 stride-2 kernels; Winograd F(4×4, 3×3) \(from(winograd4MinChannels)), "
            + "else F(2×2, 3×3) \(from(winogradMinChannels)) on planes of whole vectors, weight gradient \(from(winogradWeightGradMinChannels)); "
            + "im2col + GEMM \(from(gemmMinChannels)) on planes ≤ \(gemmMaxPlane)"
    }

    /// True when this layer's output and input gradient run on Winograd F(2×2, 3×3) for inputs
    /// whose planes pass `winogradPlane` (unless F(4×4, 3×3) takes them).
    public var usesWinograd: Bool {
        winogradEligible && min(inChannels, outChannels) >= Conv2d.winogradMinChannels
    }

    /// True when they run on F(4×4, 3×3) (on every plane).
    public var usesWinograd4: Bool {
        winogradEligible && min(inChannels, outChannels) >= Conv2d.winograd4MinChannels
    }

    /// True when its weight gradient runs on Winograd, on the same planes.
    public var usesWinogradWeightGrad: Bool {
        winogradEligible && min(inChannels, outChannels) >= Conv2d.winogradWeightGradMinChannels
    }

    private func winogradPlane(_ g: ConvGeometry) -> Bool {
        Conv2d.winogradAnyPlane || Conv2d.winogradPlane(h: g.h, w: g.w)
    }

    /// The Winograd tile of this geometry's output and input gradient: 4, 2 or none (0).
    private func winogradTile(_ g: ConvGeometry) -> Int {
        if usesWinograd4 { return 4 }
        return usesWinograd && winogradPlane(g) ? 2 : 0
    }

    /// The Winograd tile of this geometry's weight gradient: F(4×4, 3×3) where the output runs on
    /// it (and the weight-gradient threshold allows Winograd), else F(2×2, 3×3) on its planes.
    private func winogradWgradTile(_ g: ConvGeometry) -> Int {
        guard usesWinogradWeightGrad else { return 0 }
        if winogradTile(g) == 4 { return 4 }
        return winogradPlane(g) ? 2 : 0
    }

    /// The weight gradient's tile for a call on `g.n` images. In the deterministic mode (the
    /// gradients split into micro-shards) each shard's weight gradient is a call of its own. On
    /// fewer than 8 images F(4×4, 3×3) pays its transform-domain sums per shard and, on planes
    /// up to 8 wide, fills only part of each eight-image vector; there F(2×2, 3×3) (on planes
    /// whose tiles fill whole vectors) or else the direct kernel run instead, as measured on
    /// resnet20 at shards of 4 images (docs/performance.md). A choice by shape alone, the same
    /// for every number of ranks.
    private func weightGradTile(_ g: ConvGeometry) -> Int {
        let tile = winogradWgradTile(g)
        guard tile == 4 && !weight.shardGrads.isEmpty && g.n < 8 else { return tile }
        if Conv2d.winogradPlane(h: g.h, w: g.w) { return 2 }
        return g.w <= 8 ? 0 : 4
    }

    /// Winograd for every eligible pass of every layer (`true`: F(4×4, 3×3) where it applies,
    /// F(2×2, 3×3) elsewhere), or for none (`false`): all thresholds at once, for comparisons
    /// and tests. `tile` 2 keeps F(4×4, 3×3) off.
    static func useWinograd(_ on: Bool, tile: Int = 4) {
        winogradMinChannels = on ? 0 : Int.max
        winogradWeightGradMinChannels = on ? 0 : Int.max
        winograd4MinChannels = on && tile == 4 ? 0 : Int.max
    }

    /// Images per Winograd weight-gradient group for these shapes and tile.
    static func winogradGroup(cin: Int, cout: Int, h: Int, w: Int, tile: Int = 2) -> Int {
        let group = tile == 4 ? tk_wino4_wgrad_group : tk_wino_wgrad_group
        return Int(group(Int32(cin), Int32(cout), Int32(h), Int32(w)))
    }

    /// Scratch for each thread of the direct kernels (slots 0, 2, 3, …), indexed by
    /// `Parallel.threadIndex`; calls cover at most `images` images.
    private func directScratch(_ g: ConvGeometry, images: Int) -> [UnsafeMutablePointer<Float>] {
        var count = usesDirectPointwise
            ? tk_conv1x1_s2_scratch(Int32(images), Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w))
            : tk_conv3x3_scratch(Int32(images), Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w), Int32(stride))
        if winogradTile(g) == 2 || weightGradTile(g) == 2 {
            count = max(count, tk_wino_scratch(Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w)))
        }
        if winogradTile(g) == 4 {
            count = max(count, tk_wino4_scratch(Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w)))
        }
        if weightGradTile(g) == 4 {
            count = max(count, tk_wino4_wgrad_scratch(Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w)))
        }
        return (0..<max(1, BLAS.threads)).map { ws.scratch($0 == 0 ? 0 : $0 + 1, count: count) }
    }

    /// Threads for the direct kernels: as many as OpenBLAS uses, at most one per item.
    private func directWorkers(_ items: Int) -> Int { max(1, min(BLAS.threads, items)) }

    /// Images per item of the direct and Winograd passes: with several threads about four items
    /// per thread, so a thread held up (another tenant, an interrupt) leaves its remaining items
    /// to the others instead of the whole loop waiting for it; whole octets on planes up to 8
    /// wide, whose Winograd passes put eight images in a vector. One call on one thread.
    private func passChunk(_ g: ConvGeometry) -> Int {
        if BLAS.threads <= 1 { return max(g.n, 1) }
        let unit = winogradTile(g) == 4 && g.w <= 8 ? 8 : 1
        let per = max(unit, (g.n + 4 * BLAS.threads - 1) / (4 * BLAS.threads))
        return (per + unit - 1) / unit * unit
    }

    /// Output (or, with `transposed`, input gradient) through the direct kernels (3×3, or 1×1
    /// stride 2), images split over threads; every image is computed alone, so the thread count never changes a bit.
    private func directPass(_ src: UnsafePointer<Float>, _ g: ConvGeometry, transposed: Bool,
                            _ dst: UnsafeMutablePointer<Float>) {
        let per = passChunk(g), items = (g.n + per - 1) / per
        let workers = directWorkers(items), scratch = directScratch(g, images: per)
        let (cin, cout) = transposed ? (outChannels, g.c) : (g.c, outChannels)
        let (srcPlane, dstPlane) = transposed ? (g.oh * g.ow, g.h * g.w) : (g.h * g.w, g.oh * g.ow)
        let tile = winogradTile(g)
        // The kernels in the Winograd domain, `(16 or 36, K, N)`, rebuilt from the weight at each
        // pass into scratch the layers share (slot 1: the weight gradient's sums, done with by
        // now), so that it stays in cache from layer to layer.
        let transformed = ws.scratch(1, count: (tile == 0 ? 0 : tile == 4 ? 36 : 16) * inChannels * outChannels)
        if tile != 0 {
            let transform = tile == 4 ? tk_wino4_weights : tk_wino_weights
            let rows = transposed ? outChannels : inChannels, parts = directWorkers(rows)
            Parallel.forEach(parts) { t in
                transform(weight.value, Int32(outChannels), Int32(inChannels), transposed ? 1 : 0, transformed,
                          Int32(rows * t / parts), Int32(rows * (t + 1) / parts))
            }
        }
        Parallel.forEach(items, threads: workers) { i in
            let n0 = i * per, n1 = min(g.n, n0 + per), t = Parallel.threadIndex
            let s = src + n0 * cin * srcPlane, d = dst + n0 * cout * dstPlane
            if tile != 0 {
                let run = tile == 4 ? tk_wino4_forward : tk_wino_forward
                run(s, Int32(n1 - n0), Int32(cin), Int32(g.h), Int32(g.w), transformed, Int32(cout), d, scratch[t])
            } else if usesDirectPointwise {
                let run = transposed ? tk_conv1x1_s2_backward_data : tk_conv1x1_s2_forward
                run(s, Int32(n1 - n0), Int32(g.c), Int32(g.h), Int32(g.w), weight.value, Int32(outChannels), d, scratch[t])
            } else if transposed && stride == 2 {
                tk_conv3x3_backward_data_s2(s, Int32(n1 - n0), Int32(g.c), Int32(g.h), Int32(g.w), weight.value,
                                            Int32(outChannels), d, scratch[t])
            } else if transposed {
                tk_conv3x3_backward_data(s, Int32(n1 - n0), Int32(g.c), Int32(g.h), Int32(g.w), weight.value,
                                         Int32(outChannels), d, scratch[t])
            } else {
                tk_conv3x3_forward(s, Int32(n1 - n0), Int32(g.c), Int32(g.h), Int32(g.w), Int32(stride),
                                   weight.value, Int32(outChannels), d, scratch[t])
            }
        }
    }

    /// Weight gradient through the direct kernel. Images go in the kernel's groups; with
    /// several threads each group's sum lands in its own buffer and the buffers are added
    /// in group order, which is exactly the arithmetic of one thread doing all groups.
    private func directWeightGrad(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: ConvGeometry,
                                  into dwOut: UnsafeMutablePointer<Float>) {
        let tile = weightGradTile(g)
        if tile != 0 { return winogradWeightGrad(x, dy, g, tile: tile, into: dwOut) }
        let per = Int(tk_conv3x3_wgrad_group(Int32(g.c), Int32(outChannels), Int32(g.h), Int32(g.w), Int32(stride)))
        let groups = (g.n + per - 1) / per
        let workers = directWorkers(groups), scratch = directScratch(g, images: per)
        let hw = g.h * g.w, ohw = g.oh * g.ow
        func run(_ n0: Int, _ n1: Int, _ dw: UnsafeMutablePointer<Float>, _ s: UnsafeMutablePointer<Float>) {
            tk_conv3x3_backward_weight(x + n0 * g.c * hw, dy + n0 * outChannels * ohw, Int32(n1 - n0),
                                       Int32(g.c), Int32(g.h), Int32(g.w), Int32(stride), Int32(outChannels), dw, s)
        }
        if workers == 1 { run(0, g.n, dwOut, scratch[0]); return }
        let size = weight.count
        let partial = ws.scratch(1, count: groups * size)
        Parallel.forEach(groups, threads: workers) { i in
            (partial + i * size).update(repeating: 0, count: size)
            run(i * per, min(g.n, (i + 1) * per), partial + i * size, scratch[Parallel.threadIndex])
        }
        Conv2d.addInOrder(partial, groups: groups, size: size, into: dwOut, zeroFirst: false)
    }

    /// dst[j] (+)= Σ over i in order of partial[i·size + j]: the group sums added in group order,
    /// element ranges split over threads (each element's sum is the one-thread sum).
    static func addInOrder(_ partial: UnsafeMutablePointer<Float>, groups: Int, size: Int,
                           into dst: UnsafeMutablePointer<Float>, zeroFirst: Bool) {
        Parallel.ranges(size, cost: groups) { lo, hi in
            if zeroFirst { (dst + lo).update(repeating: 0, count: hi - lo) }
            for i in 0..<groups { Vec.addInPlace(dst + lo, partial + i * size + lo, hi - lo) }
        }
    }

    /// Weight gradient through Winograd: the transformed gradient `(16 or 36, Cout, Cin)` is summed
    /// group by group (each group's sum in its own buffer with several threads, added in group
    /// order, the arithmetic of one thread doing all groups), then brought back to 3×3 once.
    private func winogradWeightGrad(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: ConvGeometry, tile: Int,
                                    into dw: UnsafeMutablePointer<Float>) {
        let per = Conv2d.winogradGroup(cin: g.c, cout: outChannels, h: g.h, w: g.w, tile: tile)
        let groups = (g.n + per - 1) / per
        let workers = directWorkers(groups), scratch = directScratch(g, images: per)
        let hw = g.h * g.w, size = (tile == 4 ? 36 : 16) * g.c * outChannels
        let z = ws.scratch(1, count: (workers == 1 ? 1 : groups + 1) * size)
        let wgrad = tile == 4 ? tk_wino4_wgrad : tk_wino_wgrad
        func run(_ n0: Int, _ n1: Int, _ out: UnsafeMutablePointer<Float>, _ s: UnsafeMutablePointer<Float>) {
            wgrad(x + n0 * g.c * hw, dy + n0 * outChannels * hw, Int32(n1 - n0), Int32(g.c),
                  Int32(g.h), Int32(g.w), Int32(outChannels), out, s)
        }
        if workers == 1 {
            run(0, g.n, z, scratch[0])
        } else {
            Parallel.forEach(groups, threads: workers) { i in
                run(i * per, min(g.n, (i + 1) * per), z + (i + 1) * size, scratch[Parallel.threadIndex])
            }
            Conv2d.addInOrder(z + size, groups: groups, size: size, into: z, zeroFirst: true)
        }
        let finish = tile == 4 ? tk_wino4_wgrad_finish : tk_wino_wgrad_finish
        let kernels = outChannels * g.c
        Parallel.ranges(kernels, cost: 36 * 9) { lo, hi in
            finish(z, Int32(outChannels), Int32(g.c), dw, lo, hi)
        }
    }

    /// Images per GEMM: enough columns for an efficient GEMM, few enough that the
    /// unfolded chunk stays in cache. With one image per chunk no transposes are needed.
    public static var columnBudget = 1 << 18

    /// Images per GEMM for a given geometry.
    public func chunkSize(_ g: ConvGeometry) -> Int {
        let plane = g.oh * g.ow
        return max(1, min(g.n, Conv2d.columnBudget / max(g.rows * plane, 1)))
    }

    /// Fills `col` with the unfolded images `n0 ..< n0+count` of `x`.
    private func unfold(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ n0: Int, _ col: UnsafeMutablePointer<Float>) {
        var gc = g
        gc.n = min(g.n - n0, chunkSize(g))
        let src = x + n0 * g.c * g.h * g.w
        if isPointwise { transposeNC(src, n: gc.n, c: g.c, plane: g.h * g.w, col) }
        else { im2col(src, gc, col) }
    }

    /// x: `(N, Cin, H, W)` → `(N, Cout, OH, OW)`.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let out = convolve(x, sharded: mode == .training)
        if let b = bias {
            let plane = out.shape[2] * out.shape[3], C = outChannels
            for i in 0..<out.shape[0] * C {
                let v = b.value[i % C], row = out.data + i * plane
                for k in 0..<plane { row[k] += v }
            }
        }
        return out
    }

    /// dy: `(N, Cout, OH, OW)` → dx `(N, Cin, H, W)`; adds into the weight (and bias) gradient,
    /// or, with the gradients split into micro-shards (`ParameterStore.splitGradients`), each
    /// shard's images into that shard's gradient.
    public func backward(_ dy: Tensor) -> Tensor {
        if let b = bias {
            let plane = dy.shape[2] * dy.shape[3], C = outChannels, n = dy.shape[0]
            let shards = b.shardGrads.isEmpty ? [b.grad] : b.shardGrads, per = n / shards.count
            for (k, dst) in shards.enumerated() {
                for i in k * per * C..<(k + 1) * per * C {
                    let row = dy.data + i * plane
                    var s: Float = 0
                    for j in 0..<plane { s += row[j] }
                    dst[i % C] += s
                }
            }
        }
        return convolveBackward(dy)
    }

    /// The micro-shards of a batch of `n` images: their count and images per shard (1 and `n`
    /// unless the gradients are split).
    private func shardSplit(_ n: Int) -> (count: Int, size: Int) {
        let k = max(weight.shardGrads.count, 1)
        precondition(n % k == 0, "\(weight.name): \(n) images do not split into \(k) micro-shards")
        return (k, n / k)
    }

    private func convolve(_ x: Tensor, sharded: Bool) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels,
                     "\(weight.name): expected (N, \(inChannels), H, W), got \(x.shape)")
        let g = ConvGeometry(n: x.shape[0], c: inChannels, h: x.shape[2], w: x.shape[3],
                             kh: kernel, kw: kernel, stride: stride, pad: padding)
        geometry = g
        input = x
        y.resize([g.n, outChannels, g.oh, g.ow])
        if g.n == 0 || g.oh * g.ow == 0 { return y }
        if (usesDirectKernel || usesDirectPointwise) && !gemmTakes(g) {
            // Every image is computed alone: the same bits for any batch and any split.
            directPass(x.data, g, transposed: false, y.data)
            return y
        }
        // GEMM shapes follow the batch, so with micro-shards each shard runs alone.
        let (k, m) = sharded ? shardSplit(g.n) : (1, g.n)
        var gs = g
        gs.n = m
        for s in 0..<k {
            convolveGEMM(x.data + s * m * g.c * g.h * g.w, gs, y.data + s * m * outChannels * g.oh * g.ow)
        }
        return y
    }

    /// Output of `g.n` images through im2col + GEMM, in chunks of `chunkSize(g)` images.
    private func convolveGEMM(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ yp: UnsafeMutablePointer<Float>) {
        let K = g.rows, plane = g.oh * g.ow, chunk = chunkSize(g)
        let col = ws.scratch(0, count: K * chunk * plane)
        let tmp = ws.scratch(1, count: outChannels * chunk * plane)
        for n0 in Swift.stride(from: 0, to: g.n, by: chunk) {
            let m = min(chunk, g.n - n0), L = m * plane
            unfold(x, g, n0, col)
            let dst = yp + n0 * outChannels * plane
            // (Cout, K) · (K, m·plane) → (Cout, m, plane), then to (m, Cout, plane).
            BLAS.gemm(m: outChannels, n: L, k: K, a: weight.value, lda: K, b: col, ldb: L, beta: 0,
                      c: m == 1 ? dst : tmp, ldc: L)
            if m > 1 { transposeNC(tmp, n: outChannels, c: m, plane: plane, dst) }
        }
    }

    private func convolveBackward(_ dyT: Tensor) -> Tensor {
        guard let x = input else { fatalError("\(weight.name): backward before forward") }
        let g = geometry, dx = gradientBuffer
        dx.resize(x.shape)
        if g.n == 0 || g.oh * g.ow == 0 { dx.zero(); return dx }
        let (k, m) = shardSplit(g.n)
        if k == 1 { backwardPart(x.data, dyT.data, g, dx.data, dw: weight.grad); return dx }
        var gs = g
        gs.n = m
        let inSize = g.c * g.h * g.w, outSize = outChannels * g.oh * g.ow
        // The direct and Winograd input gradients compute every image alone: one pass over the
        // whole batch gives the same bits as one per shard, with fuller vectors.
        let wholeInputGrad = (usesDirectPointwise || (usesDirectKernel && usesDirectInputGrad)) && !gemmTakes(g)
        for (s, dw) in weight.shardGrads.enumerated() {
            backwardPart(x.data + s * m * inSize, dyT.data + s * m * outSize, gs, dx.data + s * m * inSize, dw: dw,
                         inputGrad: !wholeInputGrad)
        }
        if wholeInputGrad && needsInputGrad { directPass(dyT.data, g, transposed: true, dx.data) }
        return dx
    }

    /// Weight gradient (added into `dw`) and, with `inputGrad`, input gradient of `g.n` images.
    private func backwardPart(_ x: UnsafePointer<Float>, _ dyp: UnsafePointer<Float>, _ g: ConvGeometry,
                              _ dxp: UnsafeMutablePointer<Float>, dw: UnsafeMutablePointer<Float>,
                              inputGrad: Bool = true) {
        let K = g.rows, plane = g.oh * g.ow, chunk = chunkSize(g)
        let direct = usesDirectKernel && !gemmTakes(g)
        if usesDirectPointwise && !gemmTakes(g) {
            let s = ws.scratch(0, count: tk_conv1x1_s2_scratch(Int32(g.n), Int32(inChannels), Int32(outChannels),
                                                               Int32(g.h), Int32(g.w)))
            let (n, c, h, w, k) = (Int32(g.n), Int32(inChannels), Int32(g.h), Int32(g.w), Int32(outChannels))
            let packers = directWorkers(g.n), rowTiles = (outChannels + 3) / 4, rowers = directWorkers(rowTiles)
            Parallel.forEach(packers) { t in
                tk_conv1x1_s2_wgrad_pack(x, dyp, n, c, h, w, k, s, Int32(g.n * t / packers),
                                         Int32(g.n * (t + 1) / packers))
            }
            Parallel.forEach(rowers) { t in
                tk_conv1x1_s2_wgrad_rows(n, c, h, w, k, dw, s, Int32(4 * (rowTiles * t / rowers)),
                                         Int32(4 * (rowTiles * (t + 1) / rowers)))
            }
            if needsInputGrad && inputGrad { directPass(dyp, g, transposed: true, dxp) }
            return
        }
        if direct {
            directWeightGrad(x, dyp, g, into: dw)
            if needsInputGrad && usesDirectInputGrad && inputGrad { directPass(dyp, g, transposed: true, dxp) }
            if !needsInputGrad || usesDirectInputGrad { return }
        }
        let col = ws.scratch(0, count: K * chunk * plane)
        let tmp = ws.scratch(1, count: outChannels * chunk * plane)
        if needsInputGrad && !isPointwise { dxp.update(repeating: 0, count: g.n * g.c * g.h * g.w) }
        for n0 in Swift.stride(from: 0, to: g.n, by: chunk) {
            let m = min(chunk, g.n - n0), L = m * plane
            var dy = UnsafeMutablePointer(mutating: dyp + n0 * outChannels * plane)   // (m, Cout, plane)
            if m > 1 { transposeNC(dy, n: m, c: outChannels, plane: plane, tmp); dy = tmp }  // (Cout, m·plane)
            if !direct {
                unfold(x, g, n0, col)
                // dW (Cout, K) += dy (Cout, L) · colᵀ (L, K)
                BLAS.gemm(transB: true, m: outChannels, n: K, k: L, a: dy, lda: L, b: col, ldb: L, beta: 1,
                          c: dw, ldc: K)
            }
            guard needsInputGrad else { continue }
            // dcol (K, L) = Wᵀ (K, Cout) · dy (Cout, L), written over the unfolded input.
            BLAS.gemm(transA: true, m: K, n: L, k: outChannels, a: weight.value, lda: K, b: dy, ldb: L, beta: 0,
                      c: col, ldc: L)
            let dst = dxp + n0 * g.c * g.h * g.w
            if isPointwise {
                transposeNC(col, n: g.c, c: m, plane: g.h * g.w, dst)
            } else {
                var gc = g
                gc.n = m
                col2im(col, gc, dst)
            }
        }
    }
}
