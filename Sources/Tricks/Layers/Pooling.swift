/// Max pooling over NCHW windows, as `torch.nn.MaxPool2d(kernel, stride, padding)`.
/// Padding never wins the max; ties go to the first element in row-major window order.
public final class MaxPool2d: Layer {
    public let kernel, stride, padding: Int
    private var inShape: [Int] = []
    private var argmax: [Int32] = []
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel; self.stride = stride ?? kernel; self.padding = padding
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let g = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                             kh: kernel, kw: kernel, stride: stride, pad: padding)
        inShape = x.shape
        y.resize([g.n, g.c, g.oh, g.ow])
        let total = y.count
        if argmax.count < total { argmax = .init(repeating: 0, count: total) }
        var o = 0
        for plane in 0..<g.n * g.c {
            let src = x.data + plane * g.h * g.w
            for oh in 0..<g.oh {
                for ow in 0..<g.ow {
                    var best = -Float.infinity, at = -1
                    for i in 0..<kernel {
                        let ih = oh * stride - padding + i
                        if ih < 0 || ih >= g.h { continue }
                        for j in 0..<kernel {
                            let iw = ow * stride - padding + j
                            if iw < 0 || iw >= g.w { continue }
                            let v = src[ih * g.w + iw]
                            if at < 0 || v > best { best = v; at = ih * g.w + iw }
                        }
                    }
                    y.data[o] = best
                    argmax[o] = Int32(at)
                    o += 1
                }
            }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        dx.resize(inShape); dx.zero()
        let planeIn = inShape[2] * inShape[3], planeOut = dy.count / max(inShape[0] * inShape[1], 1)
        for o in 0..<dy.count {
            let plane = o / planeOut
            dx.data[plane * planeIn + Int(argmax[o])] += dy.data[o]
        }
        return dx
    }
}

/// Average pooling, as `torch.nn.AvgPool2d(kernel, stride, padding)` with
/// `count_include_pad=True`: every window divides by kernel².
public final class AvgPool2d: Layer {
    public let kernel, stride, padding: Int
    private var geometry = ConvGeometry(n: 0, c: 0, h: 0, w: 0, kh: 0, kw: 0, stride: 1, pad: 0)
    private let y = Tensor(shape: [0])
    private let dx = Tensor(shape: [0])

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel; self.stride = stride ?? kernel; self.padding = padding
    }

    /// Calls `body(outputIndex, inputIndex)` for every (window, in-bounds element) pair.
    private func eachPair(_ body: (Int, Int) -> Void) {
        let g = geometry
        var o = 0
        for plane in 0..<g.n * g.c {
            let base = plane * g.h * g.w
            for oh in 0..<g.oh {
                for ow in 0..<g.ow {
                    for i in 0..<kernel {
                        let ih = oh * stride - padding + i
                        if ih < 0 || ih >= g.h { continue }
                        for j in 0..<kernel {
                            let iw = ow * stride - padding + j
                            if iw >= 0 && iw < g.w { body(o, base + ih * g.w + iw) }
                        }
                    }
                    o += 1
                }
            }
        }
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        geometry = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                                kh: kernel, kw: kernel, stride: stride, pad: padding)
        y.resize([geometry.n, geometry.c, geometry.oh, geometry.ow]); y.zero()
        let scale = 1 / Float(kernel * kernel)
        let xp = x.data, yp = y.data
        eachPair { o, i in yp[o] += xp[i] * scale }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let g = geometry
        dx.resize([g.n, g.c, g.h, g.w]); dx.zero()
        let scale = 1 / Float(kernel * kernel)
        let dyp = dy.data, dxp = dx.data
        eachPair { o, i in dxp[i] += dyp[o] * scale }
        return dx
    }
}
