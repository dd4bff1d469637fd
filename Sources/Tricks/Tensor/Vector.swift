import CKernels

/// Element-wise kernels of the layers. The loops live in `CKernels`, compiled for AVX-512,
/// AVX2 and baseline x86-64 and chosen at load time, with identical rounding on each;
/// whole-tensor operations are split over threads by `Parallel`.
enum Vec {
    /// y = max(x, 0)
    @inline(__always)
    static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_relu(x + lo, y + lo, hi - lo) }
    }

    /// dx = y > 0 ? dy : 0
    @inline(__always)
    static func reluBackward(_ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_relu_backward(dy + lo, y + lo, dx + lo, hi - lo) }
    }

    /// out = a + b
    @inline(__always)
    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_add(a + lo, b + lo, out + lo, hi - lo) }
    }

    /// out = max(a + b, 0)
    @inline(__always)
    static func addReLU(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_add_relu(a + lo, b + lo, out + lo, hi - lo) }
    }

    /// The two sums a C kernel writes into `sums[0]`, `sums[1]`.
    @inline(__always)
    private static func pair(_ kernel: (UnsafeMutablePointer<Double>) -> Void) -> (Double, Double) {
        var s = (0.0, 0.0)
        withUnsafeMutablePointer(to: &s) { $0.withMemoryRebound(to: Double.self, capacity: 2, kernel) }
        return s
    }

    /// (Σx, Σx²) in Double.
    @inline(__always)
    static func sums(_ x: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        pair { tk_sums(x, n, $0) }
    }

    /// (Σa, Σa·b) in Double.
    @inline(__always)
    static func dotSums(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        pair { tk_dot_sums(a, b, n, $0) }
    }

    /// (Σd, Σd·h) with d = dy where g·h + b > 0, else 0: the gradient through the ReLU of
    /// `normalizeReLU`, its mask recomputed from h with the forward's arithmetic.
    @inline(__always)
    static func dotSumsReLU(_ dy: UnsafePointer<Float>, _ h: UnsafePointer<Float>, _ n: Int,
                            gamma g: Float, beta b: Float) -> (Double, Double) {
        pair { tk_dot_sums_relu(dy, h, n, g, b, $0) }
    }

    /// h = (x − m)·s; y = g·h + b. The mean is split into two floats (m = hi + lo) so that
    /// x − m stays accurate when the mean is large relative to the spread.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                          _ n: Int, mean m: Double, scale s: Float, gamma g: Float, beta b: Float) {
        let hi = Float(m)
        tk_normalize(x, h, y, n, hi, Float(m - Double(hi)), s, g, b, 0)
    }

    /// Like `normalize`, then y = max(y, 0).
    @inline(__always)
    static func normalizeReLU(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                              _ n: Int, mean m: Double, scale s: Float, gamma g: Float, beta b: Float) {
        let hi = Float(m)
        tk_normalize(x, h, y, n, hi, Float(m - Double(hi)), s, g, b, 1)
    }

    /// dx = s·(dy − a − h·c)
    @inline(__always)
    static func bnBackward(_ dy: UnsafePointer<Float>, _ h: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int,
                           scale s: Float, meanDy a: Float, meanDyH c: Float) {
        tk_bn_backward(dy, h, dx, n, s, a, c)
    }

    /// Like `bnBackward` with dy masked as in `dotSumsReLU`.
    @inline(__always)
    static func bnBackwardReLU(_ dy: UnsafePointer<Float>, _ h: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int,
                               scale s: Float, meanDy a: Float, meanDyH c: Float, gamma g: Float, beta b: Float) {
        tk_bn_backward_relu(dy, h, dx, n, s, a, c, g, b)
    }

    /// y += x
    @inline(__always)
    static func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        add(y, x, y, n)
    }
}
