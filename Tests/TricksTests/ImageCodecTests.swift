import XCTest
@testable import Tricks

/// JPEG and PNG decoding against files written by other encoders: PNGs by a minimal writer in
/// this file (stored deflate blocks, its own CRC-32 and Adler-32), JPEGs by Pillow
/// (`docs/make_image_fixtures.py`); both compared with the closed-form pixels they hold.
final class ImageCodecTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path

    // MARK: An independent PNG writer

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 255), UInt8((v >> 8) & 255), UInt8(v & 255)] }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let td = Array(type.utf8) + data
        return be32(UInt32(data.count)) + td + be32(crc32(td))
    }

    /// A PNG of the given raw scanlines (each already prefixed by its filter byte).
    static func png(width: Int, height: Int, depth: UInt8, colorType: UInt8, scanlines: [UInt8],
                    extra: [[UInt8]] = []) -> [UInt8] {
        var z: [UInt8] = [0x78, 0x01]
        var at = 0
        repeat {
            let n = min(65535, scanlines.count - at), last: UInt8 = at + n == scanlines.count ? 1 : 0
            z += [last, UInt8(n & 255), UInt8(n >> 8), UInt8(~n & 255), UInt8((~n >> 8) & 255)]
            z += scanlines[at..<at + n]
            at += n
        } while at < scanlines.count
        var a: UInt32 = 1, b: UInt32 = 0
        for v in scanlines { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
        z += be32(b << 16 | a)
        let ihdr = be32(UInt32(width)) + be32(UInt32(height)) + [depth, colorType, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr)
            + extra.flatMap { $0 } + chunk("IDAT", z) + chunk("IEND", [])
    }

    /// Rows of `pixels` (`row` bytes each), alternating filter 0 (none) and 1 (sub, `bpp` bytes back).
    static func filtered(_ pixels: [UInt8], row: Int, bpp: Int) -> [UInt8] {
        var out: [UInt8] = []
        for y in 0..<pixels.count / row {
            let r = Array(pixels[y * row..<(y + 1) * row])
            if y % 2 == 0 { out += [0] + r } else {
                out += [1] + (0..<row).map { i in r[i] &- (i >= bpp ? r[i - bpp] : 0) }
            }
        }
        return out
    }

    static func pattern(_ w: Int, _ h: Int, _ c: Int) -> [UInt8] {
        var p: [UInt8] = []
        for y in 0..<h { for x in 0..<w { for k in 0..<c { p.append(UInt8((x * 37 + y * 11 + k * 80 + x * y) & 255)) } } }
        return p
    }

    func testPNGDecodesGrayRGBAndRGBAByteForByte() throws {
        for (c, type): (Int, UInt8) in [(1, 0), (3, 2), (4, 6)] {
            let w = 13, h = 7, px = Self.pattern(w, h, c)
            let file = Self.png(width: w, height: h, depth: 8, colorType: type, scanlines: Self.filtered(px, row: w * c, bpp: c))
            let im = try Image.decode(file, name: "t.png")
            XCTAssertEqual([im.width, im.height, im.channels], [w, h, c])
            XCTAssertEqual(im.pixels, px, "channels \(c)")
        }
    }

    func testPNGPaletteAndLowBitGrayExpand() throws {
        // A 4-entry palette, 8-bit indices; with tRNS the result has alpha.
        let pal: [UInt8] = [10, 20, 30, 200, 100, 50, 0, 255, 0, 255, 255, 255]
        let w = 5, h = 3
        let idx = (0..<w * h).map { UInt8($0 % 4) }
        let lines = (0..<h).flatMap { y in [0] + idx[y * w..<(y + 1) * w] }
        var im = try Image.decode(Self.png(width: w, height: h, depth: 8, colorType: 3, scanlines: lines,
                                           extra: [Self.chunk("PLTE", pal)]), name: "p.png")
        XCTAssertEqual(im.channels, 3)
        XCTAssertEqual(im.pixels, idx.flatMap { Array(pal[Int($0) * 3..<Int($0) * 3 + 3]) })
        let alpha: [UInt8] = [0, 128, 255, 7]
        im = try Image.decode(Self.png(width: w, height: h, depth: 8, colorType: 3, scanlines: lines,
                                       extra: [Self.chunk("PLTE", pal), Self.chunk("tRNS", alpha)]), name: "p.png")
        XCTAssertEqual(im.channels, 4)
        XCTAssertEqual(im.pixels, idx.flatMap { Array(pal[Int($0) * 3..<Int($0) * 3 + 3]) + [alpha[Int($0)]] })
        // 4-bit gray: two pixels a byte, widened by ×17.
        let g4: [UInt8] = [0x0F, 0x3C, 0x90]   // values 0,15,3,12,9,(0 pad)
        im = try Image.decode(Self.png(width: 5, height: 1, depth: 4, colorType: 0, scanlines: [0] + g4), name: "g.png")
        XCTAssertEqual(im.pixels, [0, 15, 3, 12, 9].map { UInt8($0 * 17) })
    }

    func testPNGErrorsNameTheFileAndTheProblem() throws {
        let px = Self.pattern(4, 4, 3)
        let good = Self.png(width: 4, height: 4, depth: 8, colorType: 2, scanlines: Self.filtered(px, row: 12, bpp: 3))
        func fails(_ bytes: [UInt8], _ needle: String, line: UInt = #line) {
            XCTAssertThrowsError(try Image.decode(bytes, name: "dir/x.png"), line: line) { e in
                let m = "\(e)"
                XCTAssertTrue(m.contains("dir/x.png") && m.contains(needle), m, line: line)
            }
        }
        fails(Array(good.prefix(good.count - 30)), "truncated")
        var crc = good; crc[40] ^= 0xFF   // inside IDAT
        fails(crc, "PNG")
        fails(Self.png(width: 2, height: 1, depth: 16, colorType: 2, scanlines: [0] + [UInt8](repeating: 9, count: 12)), "16 bits")
        fails(Self.png(width: 2, height: 1, depth: 8, colorType: 4, scanlines: [0, 1, 2, 3, 4]), "gray with alpha")
        fails(Array("hello, world".utf8), "not a JPEG or PNG")
        fails([], "not a JPEG or PNG")
        XCTAssertThrowsError(try Image.read("/nonexistent/y.png")) { XCTAssertTrue("\($0)".contains("/nonexistent/y.png")) }
    }

    func testPNGRoundTripIsExact() throws {
        for c in [1, 3, 4] {
            let im = Image(width: 31, height: 9, channels: c, pixels: Self.pattern(31, 9, c))
            XCTAssertEqual(try Image.decode(try im.encoded(.png), name: "r.png"), im)
        }
    }

    /// Pillow-written JPEGs of `R = 4x, G = 5y, B = 128 + 2(x − y)` and gray `6x + 3y`.
    func testJPEGFixturesFromAnotherEncoderDecodeWithinTolerance() throws {
        func clamp(_ v: Int) -> Double { Double(min(max(v, 0), 255)) }
        for (name, meanTol) in [("pattern-rgb.jpg", 1.5), ("pattern-rgb-420.jpg", 3.0), ("pattern-rgb-progressive.jpg", 1.5)] {
            let im = try Image.read(Self.fixtures + "/" + name)
            XCTAssertEqual([im.width, im.height, im.channels], [64, 48, 3], name)
            var err = 0.0, worst = 0.0
            for y in 0..<48 { for x in 0..<64 {
                for (k, want) in [clamp(4 * x), clamp(5 * y), clamp(128 + 2 * (x - y))].enumerated() {
                    let d = abs(Double(im[x, y, k]) - want); err += d; worst = max(worst, d)
                }
            } }
            XCTAssertLessThan(err / Double(64 * 48 * 3), meanTol, name)
            XCTAssertLessThan(worst, 40, name)
        }
        let g = try Image.read(Self.fixtures + "/pattern-gray.jpg")
        XCTAssertEqual([g.width, g.height, g.channels], [40, 30, 1])
        var err = 0.0
        for y in 0..<30 { for x in 0..<40 { err += abs(Double(g[x, y, 0]) - clamp(6 * x + 3 * y)) } }
        XCTAssertLessThan(err / 1200, 1.5)
        XCTAssertThrowsError(try Image.read(Self.fixtures + "/pattern-cmyk.jpg")) { e in
            XCTAssertTrue("\(e)".contains("pattern-cmyk.jpg") && "\(e)".contains("unsupported"), "\(e)")
        }
    }

    func testJPEGTruncatedOrCorruptIsAnError() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/pattern-rgb.jpg")))
        for cut in [bytes.count / 2, bytes.count - 3, 200] {
            XCTAssertThrowsError(try Image.decode(Array(bytes.prefix(cut)), name: "cut.jpg")) { e in
                XCTAssertTrue("\(e)".contains("cut.jpg") && "\(e)".contains("JPEG"), "\(e)")
            }
        }
        XCTAssertThrowsError(try Image.decode([0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0], name: "bad.jpg"))
    }

    func testJPEGRoundTripOfASmoothImage() throws {
        var px: [UInt8] = []
        for y in 0..<40 { for x in 0..<56 { px += [UInt8(x * 4), UInt8(y * 5), UInt8(100 + x - y)] } }
        let im = Image(width: 56, height: 40, channels: 3, pixels: px)
        let back = try Image.decode(try im.encoded(.jpeg, quality: 95), name: "r.jpg")
        XCTAssertEqual([back.width, back.height, back.channels], [56, 40, 3])
        let mean = zip(back.pixels, px).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(px.count)
        XCTAssertLessThan(mean, 2)
        XCTAssertThrowsError(try Image(width: 2, height: 2, channels: 4, pixels: [UInt8](repeating: 0, count: 16)).encoded(.jpeg))
    }

    func testResizeMatchesHalfPixelBilinearInFloat64() {
        let src = Image(width: 7, height: 5, channels: 3, pixels: Self.pattern(7, 5, 3))
        let w = 11, h = 3
        let out = src.resized(width: w, height: h)
        for y in 0..<h { for x in 0..<w { for c in 0..<3 {
            func coord(_ i: Int, _ n: Int, _ s: Int) -> (Int, Int, Double) {
                let v = min(max((Double(i) + 0.5) * Double(s) / Double(n) - 0.5, 0), Double(s - 1))
                return (Int(v.rounded(.down)), min(Int(v.rounded(.down)) + 1, s - 1), v - v.rounded(.down))
            }
            let (x0, x1, fx) = coord(x, w, 7), (y0, y1, fy) = coord(y, h, 5)
            let p = { (xx: Int, yy: Int) in Double(src[xx, yy, c]) }
            let want = (p(x0, y0) * (1 - fx) + p(x1, y0) * fx) * (1 - fy) + (p(x0, y1) * (1 - fx) + p(x1, y1) * fx) * fy
            XCTAssertLessThanOrEqual(abs(Double(out[x, y, c]) - want), 0.51)
        } } }
        // Gray ↔ RGB.
        let rgb = Image(width: 1, height: 1, channels: 3, pixels: [200, 100, 50])
        let luma: Int = (299 * 200 + 587 * 100 + 114 * 50 + 500) / 1000
        XCTAssertEqual(rgb.converted(channels: 1).pixels, [UInt8(luma)])
        XCTAssertEqual(Image(width: 1, height: 1, channels: 1, pixels: [9]).converted(channels: 3).pixels, [9, 9, 9])
    }
}
