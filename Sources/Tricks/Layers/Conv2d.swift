/// 2-D convolution without bias over NCHW, as `torch.nn.Conv2d(bias=False)`.
///
/// Forward unfolds the whole batch once (`im2col`, or a plain channel-major copy
/// for 1×1 stride-1 kernels) and runs one GEMM `W (Cout, C·k·k) × col (C·k·k, N·OH·OW)`.
/// Backward recomputes the unfolding instead of caching it, so one scratch
/// matrix serves every layer of the model.
public final class Conv2d: Layer {
    public let inChannels, outChannels, kernel, stride, padding: Int
    /// The weight, `(Cout, Cin, k, k)`.
    public let weight: Parameter
    /// False for a network's first layer: its input gradient is never needed.
    public var needsInputGrad = true
    private let ws: Workspace
    private var input: Tensor?
    private var geometry = ConvGeometry(n: 0, c: 0, h: 0, w: 0, kh: 0, kw: 0, stride: 1, pad: 0)
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])

    public init(_ name: String, _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int = 0, workspace: Workspace) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        weight = Parameter(name: name + ".weight", shape: [outChannels, inChannels, kernel, kernel])
        ws = workspace
    }

    public var parameters: [Parameter] { [weight] }

    private var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }

    /// Fills `col` with the unfolded input for the current geometry.
    private func unfold(_ x: Tensor, _ col: UnsafeMutablePointer<Float>) {
        let g = geometry
        if isPointwise { transposeNC(x.data, n: g.n, c: g.c, plane: g.h * g.w, col) }
        else { im2col(x.data, g, col) }
    }

    /// x: `(N, Cin, H, W)` → `(N, Cout, OH, OW)`.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels,
                     "\(weight.name): expected (N, \(inChannels), H, W), got \(x.shape)")
        let g = ConvGeometry(n: x.shape[0], c: inChannels, h: x.shape[2], w: x.shape[3],
                             kh: kernel, kw: kernel, stride: stride, pad: padding)
        geometry = g
        input = x
        let K = g.rows, L = g.cols, plane = g.oh * g.ow
        y.resize([g.n, outChannels, g.oh, g.ow])
        if L == 0 { return y }
        let col = ws.scratch(0, count: K * L)
        unfold(x, col)
        let out = ws.scratch(1, count: outChannels * L)       // (Cout, N, OH·OW)
        BLAS.gemm(m: outChannels, n: L, k: K, a: weight.value, lda: K, b: col, ldb: L, beta: 0, c: out, ldc: L)
        transposeNC(out, n: outChannels, c: g.n, plane: plane, y.data)
        return y
    }

    /// dy: `(N, Cout, OH, OW)` → dx `(N, Cin, H, W)`; adds into the weight gradient.
    public func backward(_ dyT: Tensor) -> Tensor {
        guard let x = input else { fatalError("\(weight.name): backward before forward") }
        let g = geometry
        let K = g.rows, L = g.cols, plane = g.oh * g.ow
        dx.resize(x.shape)
        if L == 0 { dx.zero(); return dx }
        let dy = ws.scratch(1, count: outChannels * L)        // (Cout, N, OH·OW)
        transposeNC(dyT.data, n: g.n, c: outChannels, plane: plane, dy)
        let col = ws.scratch(0, count: K * L)
        unfold(x, col)
        // dW (Cout, K) += dy (Cout, L) · colᵀ (L, K)
        BLAS.gemm(transB: true, m: outChannels, n: K, k: L, a: dy, lda: L, b: col, ldb: L, beta: 1,
                  c: weight.grad, ldc: K)
        guard needsInputGrad else { return dx }
        // dcol (K, L) = Wᵀ (K, Cout) · dy (Cout, L), written over the unfolded input.
        BLAS.gemm(transA: true, m: K, n: L, k: outChannels, a: weight.value, lda: K, b: dy, ldb: L, beta: 0,
                  c: col, ldc: L)
        if isPointwise {
            transposeNC(col, n: g.c, c: g.n, plane: g.h * g.w, dx.data)
        } else {
            dx.zero()
            col2im(col, g, dx.data)
        }
        return dx
    }
}
