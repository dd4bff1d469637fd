/// Element-wise kernels written with explicit SIMD so they vectorize and never branch on data.
enum Vec {
    typealias V = SIMD16<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }

    /// y = max(x, 0)
    static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let z = V(repeating: 0)
        while i &+ 16 <= n { let v = load(x + i); store(v.replacing(with: z, where: v .< z), y + i); i &+= 16 }
        while i < n { y[i] = max(x[i], 0); i &+= 1 }
    }

    /// dx = y > 0 ? dy : 0
    static func reluBackward(_ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let z = V(repeating: 0)
        while i &+ 16 <= n {
            store(load(dy + i).replacing(with: z, where: load(y + i) .<= z), dx + i); i &+= 16
        }
        while i < n { dx[i] = y[i] > 0 ? dy[i] : 0; i &+= 1 }
    }

    /// out = a + b
    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i &+ 16 <= n { store(load(a + i) + load(b + i), out + i); i &+= 16 }
        while i < n { out[i] = a[i] + b[i]; i &+= 1 }
    }

    /// out = max(a + b, 0)
    static func addReLU(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let z = V(repeating: 0)
        while i &+ 16 <= n {
            let v = load(a + i) + load(b + i)
            store(v.replacing(with: z, where: v .< z), out + i); i &+= 16
        }
        while i < n { out[i] = max(a[i] + b[i], 0); i &+= 1 }
    }

    /// (Σx, Σx²) in Double.
    static func sums(_ x: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var s1 = SIMD8<Double>(), s2 = SIMD8<Double>()
        var i = 0
        while i &+ 8 <= n {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            s1 += v; s2 += v * v; i &+= 8
        }
        var r1 = s1.sum(), r2 = s2.sum()
        while i < n { let v = Double(x[i]); r1 += v; r2 += v * v; i &+= 1 }
        return (r1, r2)
    }

    /// (Σa, Σa·b) in Double.
    static func dotSums(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var s1 = SIMD8<Double>(), s2 = SIMD8<Double>()
        var i = 0
        while i &+ 8 <= n {
            let va = SIMD8<Double>(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self))
            let vb = SIMD8<Double>(UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
            s1 += va; s2 += va * vb; i &+= 8
        }
        var r1 = s1.sum(), r2 = s2.sum()
        while i < n { let v = Double(a[i]); r1 += v; r2 += v * Double(b[i]); i &+= 1 }
        return (r1, r2)
    }

    /// h = (x − m)·s; y = g·h + b. The mean is split into two floats (m = hi + lo) so that
    /// x − m stays accurate when the mean is large relative to the spread.
    static func normalize(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                          _ n: Int, mean m: Double, scale s: Float, gamma g: Float, beta b: Float) {
        let hi = Float(m), lo = Float(m - Double(hi))
        var i = 0
        let vhi = V(repeating: hi), vlo = V(repeating: lo), vs = V(repeating: s), vg = V(repeating: g), vb = V(repeating: b)
        while i &+ 16 <= n {
            let hv = ((load(x + i) - vhi) - vlo) * vs
            store(hv, h + i); store(vg * hv + vb, y + i); i &+= 16
        }
        while i < n { let hv = ((x[i] - hi) - lo) * s; h[i] = hv; y[i] = g * hv + b; i &+= 1 }
    }

    /// Like `normalize`, then y = max(y, 0).
    static func normalizeReLU(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                              _ n: Int, mean m: Double, scale s: Float, gamma g: Float, beta b: Float) {
        let hi = Float(m), lo = Float(m - Double(hi))
        var i = 0
        let vhi = V(repeating: hi), vlo = V(repeating: lo), vs = V(repeating: s), vg = V(repeating: g), vb = V(repeating: b)
        let z = V(repeating: 0)
        while i &+ 16 <= n {
            let hv = ((load(x + i) - vhi) - vlo) * vs
            let yv = vg * hv + vb
            store(hv, h + i); store(yv.replacing(with: z, where: yv .< z), y + i); i &+= 16
        }
        while i < n { let hv = ((x[i] - hi) - lo) * s; h[i] = hv; y[i] = max(g * hv + b, 0); i &+= 1 }
    }

    /// dx = s·(dy − a − h·c)
    static func bnBackward(_ dy: UnsafePointer<Float>, _ h: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int,
                           scale s: Float, meanDy a: Float, meanDyH c: Float) {
        var i = 0
        let vs = V(repeating: s), va = V(repeating: a), vc = V(repeating: c)
        while i &+ 16 <= n { store(vs * (load(dy + i) - va - load(h + i) * vc), dx + i); i &+= 16 }
        while i < n { dx[i] = s * (dy[i] - a - h[i] * c); i &+= 1 }
    }

    /// y += x
    static func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        add(y, x, y, n)
    }
}
