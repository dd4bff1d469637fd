import Foundation

/// One array from a `.npy` file.
public struct NPYArray: Sendable {
    public var descr: String
    public var shape: [Int]
    public var data: Data

    /// Values as Int64, for any integer dtype (`|u1`, `<i8`, `>u2`, ...).
    public func integers(what: String) throws -> [Int64] {
        let kind = descr.dropFirst().first, size = Int(descr.dropFirst(2)) ?? 0
        guard kind == "i" || kind == "u", [1, 2, 4, 8].contains(size) else {
            throw TricksError.badData("\(what): dtype \(descr) is not an integer type")
        }
        let n = shape.reduce(1, *)
        guard data.count >= n * size else { throw TricksError.badData("\(what): truncated array data") }
        let big = descr.first == ">"
        let bytes = [UInt8](data)
        var out = [Int64](repeating: 0, count: n)
        for i in 0..<n {
            var u: UInt64 = 0
            for k in 0..<size {
                let byte = UInt64(bytes[i * size + (big ? k : size - 1 - k)])
                u = u << 8 | byte
            }
            if kind == "i" && size < 8 && u >> (size * 8 - 1) & 1 == 1 { u |= ~0 << (size * 8) }
            out[i] = Int64(bitPattern: u)
        }
        return out
    }
}

/// Readers for NumPy's `.npy` and `.npz` (a zip of `.npy`) files.
public enum NPZ {
    /// Parses a `.npy` file.
    public static func parseNPY(_ d: Data, what: String) throws -> NPYArray {
        let b = [UInt8](d.prefix(12))
        guard b.count >= 10, b[0] == 0x93, Array(b[1...5]) == Array("NUMPY".utf8) else {
            throw TricksError.badData("\(what): not a .npy array (wrong magic)")
        }
        let major = b[6]
        // Version 1 gives the header's length in 2 bytes, later versions in 4.
        guard major == 1 || b.count >= 12 else { throw TricksError.badData("\(what): truncated .npy header") }
        let (hlen, start) = major == 1 ? (Int(b[8]) | Int(b[9]) << 8, 10)
            : (Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24, 12)
        guard d.count >= start + hlen else { throw TricksError.badData("\(what): truncated .npy header") }
        let header = String(decoding: d[d.startIndex + start..<d.startIndex + start + hlen], as: UTF8.self)
        func field(_ key: String) -> Substring? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return header[r.upperBound...].drop(while: { $0 == " " })
        }
        guard let dv = field("descr"), dv.first == "'", let end = dv.dropFirst().firstIndex(of: "'") else {
            throw TricksError.badData("\(what): .npy header without descr")
        }
        let descr = String(dv[dv.index(after: dv.startIndex)..<end])
        if let f = field("fortran_order"), f.hasPrefix("True") {
            throw TricksError.badData("\(what): Fortran-ordered arrays are not supported")
        }
        guard let sv = field("shape"), sv.first == "(", let close = sv.firstIndex(of: ")") else {
            throw TricksError.badData("\(what): .npy header without shape")
        }
        let shape = sv[sv.index(after: sv.startIndex)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.compactMap { Int($0) }
        let body = d.subdata(in: d.startIndex + start + hlen..<d.endIndex)
        let size = Int(descr.dropFirst(2)) ?? 1
        // Bytes the shape needs; nil for a negative or overflowing size.
        let need = shape.reduce(Optional(max(size, 1))) { a, b in
            a.flatMap { b < 0 || $0.multipliedReportingOverflow(by: b).overflow ? nil : $0 * b }
        }
        guard let need, body.count >= need else {
            throw TricksError.badData("\(what): truncated: shape \(shape) needs \(need.map(String.init) ?? "more") bytes, file holds \(body.count)")
        }
        return NPYArray(descr: descr, shape: shape, data: body)
    }

    /// Reads every `.npy` member of a zip archive, keyed by name without `.npy`; `data`, when
    /// given, holds the file's bytes (`path` then only names it in errors).
    public static func readArchive(_ path: String, data: Data? = nil) throws -> [String: NPYArray] {
        guard let d = data ?? FileManager.default.contents(atPath: path) else {
            throw TricksError.badData("\(path): cannot read file")
        }
        let b = [UInt8](d)
        func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func u64(_ o: Int) -> Int { u32(o) | u32(o + 4) << 32 }
        // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
        var eocd = -1
        var i = b.count - 22
        while i >= max(0, b.count - 65_557) {
            if b[i] == 0x50, b[i + 1] == 0x4B, b[i + 2] == 5, b[i + 3] == 6 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw TricksError.badData("\(path): not a zip/.npz archive (no end-of-directory record; truncated?)") }
        var entries = u16(eocd + 10), cdOffset = u32(eocd + 16)
        // Offsets and sizes are compared as `x <= b.count - n`: zip64 fields can be near 2^64
        // (negative as Int), and `x + n` would overflow.
        if cdOffset == 0xFFFF_FFFF || entries == 0xFFFF, eocd >= 20,
           b[eocd - 20] == 0x50, b[eocd - 19] == 0x4B, b[eocd - 18] == 6, b[eocd - 17] == 7 {
            let z64 = u64(eocd - 12)
            guard z64 >= 0, z64 <= b.count - 56 else { throw TricksError.badData("\(path): corrupt zip64 record") }
            entries = u64(z64 + 32); cdOffset = u64(z64 + 48)
            guard entries >= 0, cdOffset >= 0 else { throw TricksError.badData("\(path): corrupt zip64 record") }
        }
        var out: [String: NPYArray] = [:]
        var p = cdOffset
        for _ in 0..<entries {
            guard p <= b.count - 46, u32(p) == 0x0201_4B50 else { throw TricksError.badData("\(path): corrupt zip central directory") }
            let method = u16(p + 10)
            var csize = u32(p + 20), usize = u32(p + 24)
            let nlen = u16(p + 28), elen = u16(p + 30), clen = u16(p + 32)
            guard p + 46 + nlen + elen + clen <= b.count else { throw TricksError.badData("\(path): corrupt zip central directory") }
            var local = u32(p + 42)
            let name = String(decoding: b[(p + 46)..<(p + 46 + nlen)], as: UTF8.self)
            // zip64 extra field (id 1): the 0xFFFFFFFF fields follow in order.
            var e = p + 46 + nlen
            while e + 4 <= p + 46 + nlen + elen {
                let id = u16(e), sz = u16(e + 2)
                if id == 1 {
                    // Only the 8-byte fields that lie inside this extra field (and the entry).
                    let end = min(e + 4 + sz, p + 46 + nlen + elen)
                    var q = e + 4
                    if usize == 0xFFFF_FFFF, q + 8 <= end { usize = u64(q); q += 8 }
                    if csize == 0xFFFF_FFFF, q + 8 <= end { csize = u64(q); q += 8 }
                    if local == 0xFFFF_FFFF, q + 8 <= end { local = u64(q) }
                }
                e += 4 + sz
            }
            p += 46 + nlen + elen + clen
            guard local >= 0, local <= b.count - 30, u32(local) == 0x0403_4B50 else { throw TricksError.badData("\(path): corrupt zip entry \(name)") }
            let start = local + 30 + u16(local + 26) + u16(local + 28)
            guard csize >= 0, usize >= 0 else { throw TricksError.badData("\(path): corrupt zip entry \(name) (zip64 size past 2^63)") }
            guard csize <= b.count - start else { throw TricksError.badData("\(path): truncated zip entry \(name)") }
            let raw = d.subdata(in: start..<start + csize)
            let member: Data
            switch method {
            case 0: member = raw
            // The stated size only sizes the first buffer: at most deflate's largest ratio, 1032:1.
            case 8: member = try Inflate.decompress(raw, gzip: false, expected: min(usize, 1032 * csize), what: "\(path):\(name)")
            default: throw TricksError.badData("\(path): zip entry \(name) uses unsupported compression \(method)")
            }
            let key = name.hasSuffix(".npy") ? String(name.dropLast(4)) : name
            out[key] = try parseNPY(member, what: "\(path):\(name)")
        }
        return out
    }

    /// Turns images `(N, H, W)` or `(N, H, W, C)` uint8 and integer labels into an `ImageSet`.
    static func imageSet(_ x: NPYArray, _ y: NPYArray, path: String, split: String) throws -> ImageSet {
        guard x.descr == "|u1" else { throw TricksError.badData("\(path): x_\(split) has dtype \(x.descr), expected uint8 (|u1)") }
        guard x.shape.count == 3 || x.shape.count == 4 else {
            throw TricksError.badData("\(path): x_\(split) has shape \(x.shape), expected (N, H, W) or (N, H, W, C)")
        }
        // Labels (N,), or (N, 1) as Keras stores them.
        guard y.shape.count == 1 || (y.shape.count == 2 && y.shape[1] == 1) else {
            throw TricksError.badData("\(path): y_\(split) has shape \(y.shape), expected (N,) or (N, 1)")
        }
        let labels = try y.integers(what: "\(path):y_\(split)")
        let n = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape.count == 4 ? x.shape[3] : 1
        guard labels.count == n else {
            throw TricksError.badData("\(path): \(n) images in x_\(split) but \(labels.count) labels in y_\(split)")
        }
        if let i = labels.firstIndex(where: { $0 < 0 || $0 >= Int64(Int32.max) }) {
            throw TricksError.badData("\(path): y_\(split)[\(i)] is \(labels[i]); labels must be in [0, 2147483647)")
        }
        let src = [UInt8](x.data.prefix(n * h * w * c))
        var pixels = [UInt8](repeating: 0, count: src.count)
        if c == 1 { pixels = src } else {
            for i in 0..<n { for yx in 0..<h * w { for k in 0..<c {
                pixels[(i * c + k) * h * w + yx] = src[(i * h * w + yx) * c + k]
            } } }
        }
        return ImageSet(pixels: pixels, labels: labels.map { Int32($0) }, count: n, channels: c, height: h, width: w)
    }

    /// Loads `x_train`, `y_train`, `x_test`, `y_test` from an `.npz` file (or its bytes, `data`).
    public static func loadDataset(_ path: String, data: Data? = nil) throws -> DatasetSplits {
        let arrays = try readArchive(path, data: data)
        func get(_ k: String) throws -> NPYArray {
            guard let a = arrays[k] else {
                throw TricksError.badData("\(path): missing array '\(k)' (has: \(arrays.keys.sorted().joined(separator: ", ")))")
            }
            return a
        }
        return DatasetSplits(train: try imageSet(get("x_train"), get("y_train"), path: path, split: "train"),
                             test: try imageSet(get("x_test"), get("y_test"), path: path, split: "test"),
                             numClasses: 0, source: path)
    }
}
