import CImageIO
import Foundation

/// An 8-bit image, pixels interleaved `(H, W, C)`, C = 1 (gray), 3 (RGB) or 4 (RGBA).
public struct Image: Sendable, Equatable {
    public var width: Int, height: Int, channels: Int
    /// `(H, W, C)` samples, row-major.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0 && [1, 3, 4].contains(channels), "bad image shape")
        precondition(pixels.count == width * height * channels, "pixel count does not match the shape")
        self.width = width; self.height = height; self.channels = channels; self.pixels = pixels
    }

    /// An image of one colour (`fill` has one value per channel).
    public init(width: Int, height: Int, fill: [UInt8]) {
        let p: [UInt8]
        if fill.count == 1 || Set(fill).count == 1 {
            p = [UInt8](repeating: fill[0], count: width * height * fill.count)
        } else {
            p = [UInt8](unsafeUninitializedCapacity: width * height * fill.count) { b, n in
                var k = 0
                for _ in 0..<width * height { for v in fill { b[k] = v; k += 1 } }
                n = k
            }
        }
        self.init(width: width, height: height, channels: fill.count, pixels: p)
    }

    @inlinable public subscript(x: Int, y: Int, c: Int) -> UInt8 {
        get { pixels[(y * width + x) * channels + c] }
        set { pixels[(y * width + x) * channels + c] = newValue }
    }

    // MARK: Files

    public enum Format: String, Sendable { case jpeg, png }

    /// The format a file name's extension names (`.jpg`, `.jpeg`, `.png`, any case).
    public static func format(ofPath path: String) -> Format? {
        switch (path as NSString).pathExtension.lowercased() {
        case "jpg", "jpeg": return .jpeg
        case "png": return .png
        default: return nil
        }
    }

    /// Decodes JPEG or PNG bytes (told apart by their signature); `name` goes into errors.
    public static func decode(_ bytes: [UInt8], name: String) throws -> Image {
        let jpeg = bytes.count >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8
        let png = bytes.count >= 8 && bytes[0] == 0x89 && bytes[1] == 0x50 && bytes[2] == 0x4E && bytes[3] == 0x47
        guard jpeg || png else {
            throw TricksError.badData("\(name): not a JPEG or PNG image (\(bytes.count) bytes, unknown signature)")
        }
        var out: UnsafeMutablePointer<UInt8>?
        var w: Int32 = 0, h: Int32 = 0, c: Int32 = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer { b in
            jpeg ? tk_jpeg_decode(b.baseAddress, b.count, &out, &w, &h, &c, &err, err.count)
                 : tk_png_decode(b.baseAddress, b.count, &out, &w, &h, &c, &err, err.count)
        }
        guard rc == 0, let out else {
            let msg = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw TricksError.badData("\(name): corrupt or unsupported \(jpeg ? "JPEG" : "PNG"): \(msg)")
        }
        defer { tk_image_free(out) }
        let n = Int(w) * Int(h) * Int(c)
        return Image(width: Int(w), height: Int(h), channels: Int(c),
                     pixels: Array(UnsafeBufferPointer(start: out, count: n)))
    }

    /// Reads and decodes a JPEG or PNG file.
    public static func read(_ path: String) throws -> Image {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw TricksError.badData("\(path): cannot read (missing or unreadable)")
        }
        return try decode([UInt8](d), name: path)
    }

    /// The image encoded as JPEG (`quality` 1–100; gray or RGB, alpha refused) or PNG.
    public func encoded(_ format: Format, quality: Int = 90) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var len = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer { p in
            format == .jpeg
                ? tk_jpeg_encode(p.baseAddress, Int32(width), Int32(height), Int32(channels), Int32(quality), &out, &len, &err, err.count)
                : tk_png_encode(p.baseAddress, Int32(width), Int32(height), Int32(channels), &out, &len, &err, err.count)
        }
        guard rc == 0, let out else {
            let msg = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw TricksError.invalidArgument("cannot encode a \(width)×\(height)×\(channels) image as \(format.rawValue): \(msg)")
        }
        defer { tk_image_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: len))
    }

    /// Writes the image atomically, in the format its extension names.
    public func write(_ path: String, quality: Int = 90) throws {
        guard let f = Image.format(ofPath: path) else {
            throw TricksError.invalidArgument("\(path): unknown image extension (use .jpg, .jpeg or .png)")
        }
        try SafeTensors.writeAtomically(Data(encoded(f, quality: quality)), to: path)
    }

    // MARK: Conversions

    /// The image with `n` channels: gray ↔ RGB by ITU-R 601 luma or replication; alpha is dropped
    /// (RGBA → RGB) or set opaque (→ RGBA).
    public func converted(channels n: Int) -> Image {
        if n == channels { return self }
        precondition([1, 3, 4].contains(n))
        var p = [UInt8](repeating: 255, count: width * height * n)
        for i in 0..<width * height {
            let s = i * channels, d = i * n
            if n == 1 {
                let r = Int(pixels[s]), g = Int(pixels[s + 1]), b = Int(pixels[s + 2])
                p[d] = UInt8((299 * r + 587 * g + 114 * b + 500) / 1000)
            } else if channels == 1 {
                p[d] = pixels[s]; p[d + 1] = pixels[s]; p[d + 2] = pixels[s]
            } else {
                p[d] = pixels[s]; p[d + 1] = pixels[s + 1]; p[d + 2] = pixels[s + 2]
            }
        }
        return Image(width: width, height: height, channels: n, pixels: p)
    }

    /// Bilinear resize with pixel centres at half-integers (OpenCV's `INTER_LINEAR`, PyTorch's
    /// `align_corners=False`): output pixel x samples the input at (x + ½)·W/W' − ½, clamped.
    public func resized(width w: Int, height h: Int) -> Image {
        precondition(w > 0 && h > 0)
        if w == width && h == height { return self }
        let c = channels
        func taps(_ n: Int, _ src: Int) -> [(Int, Int, Float)] {
            let scale = Double(src) / Double(n)
            return (0..<n).map { i in
                let s = min(max((Double(i) + 0.5) * scale - 0.5, 0), Double(src - 1))
                let i0 = Int(s), i1 = min(i0 + 1, src - 1)
                return (i0, i1, Float(s - Double(i0)))
            }
        }
        let xs = taps(w, width), ys = taps(h, height)
        var out = [UInt8](repeating: 0, count: w * h * c)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<h {
                    let (y0, y1, fy) = ys[y]
                    for x in 0..<w {
                        let (x0, x1, fx) = xs[x]
                        for k in 0..<c {
                            let a = Float(src[(y0 * width + x0) * c + k]), b = Float(src[(y0 * width + x1) * c + k])
                            let d = Float(src[(y1 * width + x0) * c + k]), e = Float(src[(y1 * width + x1) * c + k])
                            let top = a + (b - a) * fx, bottom = d + (e - d) * fx
                            dst[(y * w + x) * c + k] = UInt8(min(max((top + (bottom - top) * fy).rounded(), 0), 255))
                        }
                    }
                }
            }
        }
        return Image(width: w, height: h, channels: c, pixels: out)
    }

    /// The region `x0..<x0+w`, `y0..<y0+h` (which must lie inside the image).
    public func cropped(x0: Int, y0: Int, width w: Int, height h: Int) -> Image {
        precondition(x0 >= 0 && y0 >= 0 && w > 0 && h > 0 && x0 + w <= width && y0 + h <= height, "crop outside the image")
        let c = channels, W = width
        let out = [UInt8](unsafeUninitializedCapacity: w * h * c) { b, n in
            pixels.withUnsafeBufferPointer { src in
                for y in 0..<h {
                    (b.baseAddress! + y * w * c).initialize(from: src.baseAddress! + ((y0 + y) * W + x0) * c, count: w * c)
                }
            }
            n = w * h * c
        }
        return Image(width: w, height: h, channels: channels, pixels: out)
    }

    /// Copies `other` (same channel count) with its top-left corner at `(x, y)`; parts outside
    /// this image are cut off.
    public mutating func paste(_ other: Image, x: Int, y: Int) {
        precondition(other.channels == channels)
        let sx0 = max(0, -x), sx1 = min(other.width, width - x)
        guard sx1 > sx0 else { return }
        let c = channels, n = (sx1 - sx0) * c, w = width, ow = other.width
        other.pixels.withUnsafeBufferPointer { src in
            pixels.withUnsafeMutableBufferPointer { dst in
                for sy in max(0, -y)..<max(max(0, -y), min(other.height, height - y)) {
                    let d = dst.baseAddress! + ((y + sy) * w + x + sx0) * c
                    d.update(from: src.baseAddress! + (sy * ow + sx0) * c, count: n)
                }
            }
        }
    }

    /// The image mirrored left to right.
    public func flippedHorizontally() -> Image {
        var out = pixels
        for y in 0..<height {
            for x in 0..<width {
                let s = (y * width + x) * channels, d = (y * width + width - 1 - x) * channels
                for c in 0..<channels { out[d + c] = pixels[s + c] }
            }
        }
        return Image(width: width, height: height, channels: channels, pixels: out)
    }
}
