import CZlib
import Foundation

/// Decompression through zlib.
enum Inflate {
    /// Decompresses a gzip stream (windowBits 15+16) or a raw deflate stream (−15).
    /// `expected` sizes the output buffer when known.
    static func decompress(_ input: Data, gzip: Bool, expected: Int? = nil, what: String) throws -> Data {
        var stream = z_stream()
        var rc = czlib_inflate_init2(&stream, gzip ? 15 + 16 : -15)
        guard rc == Z_OK else { throw TricksError.badData("\(what): zlib init failed (\(rc))") }
        defer { inflateEnd(&stream) }
        var out = Data(count: max(expected ?? input.count * 4, 1024))
        var produced = 0
        try input.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: src.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(src.count)
            repeat {
                if produced == out.count { out.count *= 2 }
                rc = out.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) -> Int32 in
                    stream.next_out = dst.bindMemory(to: Bytef.self).baseAddress! + produced
                    stream.avail_out = uInt(dst.count - produced)
                    let r = inflate(&stream, Z_NO_FLUSH)
                    produced = dst.count - Int(stream.avail_out)
                    return r
                }
                if rc == Z_BUF_ERROR && stream.avail_in == 0 {
                    throw TricksError.badData("\(what): compressed stream is truncated")
                }
                if rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR {
                    throw TricksError.badData("\(what): corrupt compressed data (zlib \(rc))")
                }
            } while rc != Z_STREAM_END
        }
        out.count = produced
        return out
    }
}
