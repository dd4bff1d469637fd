/// Geometry of a 2-D convolution or pooling window over an NCHW batch.
public struct ConvGeometry: Equatable, Sendable {
    public var n, c, h, w: Int
    public var kh, kw, stride, pad: Int
    public var oh: Int { (h + 2 * pad - kh) / stride + 1 }
    public var ow: Int { (w + 2 * pad - kw) / stride + 1 }
    /// Rows of the column matrix: `c·kh·kw`.
    public var rows: Int { c * kh * kw }
    /// Columns of the column matrix: `n·oh·ow`.
    public var cols: Int { n * oh * ow }
}

/// Unfolds an NCHW batch into a column matrix `(C·kh·kw, N·OH·OW)`:
/// row `(c, i, j)`, column `(n, oh, ow)` holds `x[n, c, oh·s − p + i, ow·s − p + j]` (0 outside).
public func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
    if g.stride == 1 && g.oh == g.h && g.ow == g.w { return im2colSame(x, g, col) }
    let (H, W, OH, OW, L) = (g.h, g.w, g.oh, g.ow, g.cols)
    let s = g.stride, p = g.pad
    for c in 0..<g.c {
        for i in 0..<g.kh {
            for j in 0..<g.kw {
                let dst = col + ((c * g.kh + i) * g.kw + j) * L
                // Valid output columns for this kernel column: 0 ≤ ow·s − p + j < W.
                let owLo = max(0, (p - j + s - 1) / s)
                let owHi = W - 1 + p - j < 0 ? 0 : min(OW, (W - 1 + p - j) / s + 1)
                for n in 0..<g.n {
                    let src = x + (n * g.c + c) * H * W
                    for oh in 0..<OH {
                        let d = dst + (n * OH + oh) * OW
                        let ih = oh * s - p + i
                        if ih < 0 || ih >= H || owLo >= owHi {
                            d.update(repeating: 0, count: OW); continue
                        }
                        for k in 0..<owLo { d[k] = 0 }
                        for k in owHi..<OW { d[k] = 0 }
                        let row = src + ih * W - p + j
                        if s == 1 {
                            copyRow(from: row + owLo, to: d + owLo, owHi - owLo)
                        } else {
                            for ow in owLo..<owHi { d[ow] = row[ow &* s] }
                        }
                    }
                }
            }
        }
    }
}

/// dst[0..<n] = src[0..<n]: libc's memmove for long spans (it picks the widest vector
/// unit at run time), SIMD chunks for short rows where a call would not pay.
@inline(__always)
func copyRow(from src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ n: Int) {
    if n >= 64 { dst.update(from: src, count: n); return }
    var k = 0
    while k &+ 8 <= n {
        UnsafeMutableRawPointer(dst + k).storeBytes(of: UnsafeRawPointer(src + k).loadUnaligned(as: SIMD8<Float>.self),
                                                    as: SIMD8<Float>.self)
        k &+= 8
    }
    while k < n { dst[k] = src[k]; k &+= 1 }
}

/// dst[0..<n] += src[0..<n]: OpenBLAS `saxpy` (run-time dispatched to the widest vector
/// unit) for long spans, SIMD chunks for short rows.
@inline(__always)
func addRow(from src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ n: Int) {
    if n >= 64 { BLAS.axpy(n: n, alpha: 1, x: src, y: dst); return }
    var k = 0
    while k &+ 8 <= n {
        let a = UnsafeRawPointer(src + k).loadUnaligned(as: SIMD8<Float>.self)
        let b = UnsafeRawPointer(dst + k).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(dst + k).storeBytes(of: a + b, as: SIMD8<Float>.self)
        k &+= 8
    }
    while k < n { dst[k] += src[k]; k &+= 1 }
}

/// For a stride-1 "same" convolution, row (c, i, j) of an image's column block is the
/// input plane shifted by `(i − p)·W + (j − p)`: one contiguous copy over the valid
/// output rows, then the columns that wrapped around a row edge are set to zero.
func im2colSame(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
    let (H, W, P, L, p) = (g.h, g.w, g.h * g.w, g.cols, g.pad)
    for c in 0..<g.c {
        for i in 0..<g.kh {
            let rowLo = max(0, p - i), rowHi = min(H, H + p - i)
            for j in 0..<g.kw {
                let dj = j - p, shift = (i - p) * W + dj
                let dst0 = col + ((c * g.kh + i) * g.kw + j) * L
                for n in 0..<g.n {
                    let src = x + (n * g.c + c) * P, dst = dst0 + n * P
                    if rowLo > 0 { dst.update(repeating: 0, count: rowLo * W) }
                    if rowHi < H { (dst + rowHi * W).update(repeating: 0, count: (H - rowHi) * W) }
                    guard rowHi > rowLo else { continue }
                    let (start, count) = shiftedSpan(rowLo, rowHi, W, dj)
                    copyRow(from: src + start + shift, to: dst + start, count)
                    // Columns whose source fell off the left or right edge of its row.
                    if dj != 0 {
                        let lo = dj < 0 ? 0 : W - dj, hi = dj < 0 ? -dj : W
                        for r in rowLo..<rowHi { for q in lo..<hi { dst[r * W + q] = 0 } }
                    }
                }
            }
        }
    }
}

/// The output span `[start, start+count)` of rows `rowLo..<rowHi` whose source, shifted by
/// `dj` columns, stays inside the plane: the wrapped elements at the two ends are left out
/// (they are zeroed separately), so no access leaves the plane.
@inline(__always)
func shiftedSpan(_ rowLo: Int, _ rowHi: Int, _ W: Int, _ dj: Int) -> (Int, Int) {
    var start = rowLo * W, count = (rowHi - rowLo) * W
    if dj < 0 { start -= dj; count += dj } else { count -= dj }
    return (start, max(count, 0))
}

/// The adjoint of `im2colSame`: zeroes the wrapped columns of `col` (they are padding),
/// then adds each shifted plane into `dx` with one contiguous pass.
func col2imSame(_ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    let (H, W, P, L, p) = (g.h, g.w, g.h * g.w, g.cols, g.pad)
    for c in 0..<g.c {
        for i in 0..<g.kh {
            let rowLo = max(0, p - i), rowHi = min(H, H + p - i)
            guard rowHi > rowLo else { continue }
            for j in 0..<g.kw {
                let dj = j - p, shift = (i - p) * W + dj
                let src0 = col + ((c * g.kh + i) * g.kw + j) * L
                for n in 0..<g.n {
                    let src = src0 + n * P, dst = dx + (n * g.c + c) * P
                    if dj != 0 {
                        let lo = dj < 0 ? 0 : W - dj, hi = dj < 0 ? -dj : W
                        for r in rowLo..<rowHi { for q in lo..<hi { src[r * W + q] = 0 } }
                    }
                    let (start, count) = shiftedSpan(rowLo, rowHi, W, dj)
                    addRow(from: src + start, to: dst + start + shift, count)
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds each column-matrix entry into the input position it came from.
/// `dx` must be zeroed (or hold gradient to add to) by the caller. Entries of `col` that
/// correspond to padding may be overwritten.
public func col2im(_ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    if g.stride == 1 && g.oh == g.h && g.ow == g.w { return col2imSame(col, g, dx) }
    let (H, W, OH, OW, L) = (g.h, g.w, g.oh, g.ow, g.cols)
    let s = g.stride, p = g.pad
    for c in 0..<g.c {
        for i in 0..<g.kh {
            for j in 0..<g.kw {
                let src = col + ((c * g.kh + i) * g.kw + j) * L
                let owLo = max(0, (p - j + s - 1) / s)
                let owHi = W - 1 + p - j < 0 ? 0 : min(OW, (W - 1 + p - j) / s + 1)
                if owLo >= owHi { continue }
                for n in 0..<g.n {
                    let dst = dx + (n * g.c + c) * H * W
                    for oh in 0..<OH {
                        let ih = oh * s - p + i
                        if ih < 0 || ih >= H { continue }
                        let sr = src + (n * OH + oh) * OW
                        let row = dst + ih * W - p + j
                        if s == 1 {
                            addRow(from: sr + owLo, to: row + owLo, owHi - owLo)
                        } else {
                            for ow in owLo..<owHi { row[ow * s] += sr[ow] }
                        }
                    }
                }
            }
        }
    }
}

/// `(N, C, P)` → `(C, N, P)`: the channel-major copy that one batched GEMM needs.
public func transposeNC(_ x: UnsafePointer<Float>, n: Int, c: Int, plane: Int, _ out: UnsafeMutablePointer<Float>) {
    for i in 0..<n {
        for j in 0..<c {
            (out + (j * n + i) * plane).update(from: x + (i * c + j) * plane, count: plane)
        }
    }
}
