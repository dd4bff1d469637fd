import CKernels

/// Element-wise kernels of the layers. The loops live in `CKernels`, compiled for AVX-512,
/// AVX2 and baseline x86-64 and chosen by `KernelISA`, with identical rounding on each;
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

    /// Whether no value is a NaN or an infinity (their exponent bits are all ones); an integer max
    /// over the exponents, which the compiler vectorizes.
    static func allFinite(_ x: UnsafePointer<Float>, _ n: Int) -> Bool {
        var m: UInt32 = 0
        x.withMemoryRebound(to: UInt32.self, capacity: n) { b in for i in 0..<n { m = max(m, b[i] & 0x7F80_0000) } }
        return m != 0x7F80_0000
    }

    /// out = a + b
    @inline(__always)
    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_add(a + lo, b + lo, out + lo, hi - lo) }
    }

    /// g += y > 0 ? dy : 0
    @inline(__always)
    static func addReLUBackward(_ g: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                _ n: Int) {
        Parallel.ranges(n) { lo, hi in tk_add_relu_backward(g + lo, dy + lo, y + lo, hi - lo) }
    }

    /// y += x
    @inline(__always)
    static func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        add(y, x, y, n)
    }
}
