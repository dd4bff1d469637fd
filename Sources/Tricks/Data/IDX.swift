import Foundation

/// The IDX format of MNIST and Fashion-MNIST: a big-endian magic
/// `0x0000 | type | ndim`, ndim big-endian UInt32 sizes, then the data.
public enum IDX {
    /// Reads a whole file, decompressing `.gz`.
    static func read(_ path: String) throws -> Data {
        guard let raw = FileManager.default.contents(atPath: path) else {
            throw TricksError.badData("\(path): cannot read file")
        }
        return path.hasSuffix(".gz") ? try Inflate.decompress(raw, gzip: true, what: path) : raw
    }

    /// Parses an IDX file of unsigned bytes; returns its dimensions and data.
    public static func parse(_ data: Data, path: String) throws -> (dims: [Int], bytes: [UInt8]) {
        let b = [UInt8](data)
        guard b.count >= 4 else { throw TricksError.badData("\(path): file too short for an IDX header") }
        guard b[0] == 0, b[1] == 0 else { throw TricksError.badData("\(path): wrong magic number (not an IDX file)") }
        guard b[2] == 0x08 else { throw TricksError.badData("\(path): IDX element type 0x\(String(b[2], radix: 16)) is not unsigned byte") }
        let nd = Int(b[3])
        guard nd >= 1, b.count >= 4 + 4 * nd else { throw TricksError.badData("\(path): truncated IDX header") }
        var dims: [Int] = []
        for i in 0..<nd {
            let o = 4 + 4 * i
            dims.append(Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]))
        }
        // Sizes whose product overflows are past the end of any file.
        let need = dims.reduce(1) { a, d in a.multipliedReportingOverflow(by: d).overflow ? Int.max : a * d }
        let have = b.count - 4 - 4 * nd
        guard have >= need else {
            throw TricksError.badData("\(path): truncated: header says \(dims) (\(need) bytes), file holds \(have)")
        }
        return (dims, Array(b[(4 + 4 * nd)..<(4 + 4 * nd + need)]))
    }

    static func findFile(_ dir: String, _ stem: String) throws -> String {
        for name in [stem, stem + ".gz"] {
            let p = (dir as NSString).appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        throw TricksError.badData("\(dir): missing \(stem)[.gz]")
    }

    /// Loads one split (`train` or `t10k`).
    public static func loadSplit(_ dir: String, prefix: String) throws -> ImageSet {
        let ip = try findFile(dir, "\(prefix)-images-idx3-ubyte"), lp = try findFile(dir, "\(prefix)-labels-idx1-ubyte")
        let (idims, ibytes) = try parse(read(ip), path: ip)
        let (ldims, lbytes) = try parse(read(lp), path: lp)
        guard idims.count == 3 else { throw TricksError.badData("\(ip): expected 3 dimensions (N, H, W), got \(idims)") }
        guard ldims.count == 1 else { throw TricksError.badData("\(lp): expected 1 dimension, got \(ldims)") }
        guard idims[0] == ldims[0] else {
            throw TricksError.badData("\(dir): \(idims[0]) images in \(ip) but \(ldims[0]) labels in \(lp)")
        }
        return ImageSet(pixels: ibytes, labels: lbytes.map { Int32($0) }, count: idims[0], channels: 1,
                        height: idims[1], width: idims[2])
    }

    /// Loads `train-*` and `t10k-*` files from one directory.
    public static func loadDirectory(_ dir: String) throws -> DatasetSplits {
        DatasetSplits(train: try loadSplit(dir, prefix: "train"), test: try loadSplit(dir, prefix: "t10k"),
                      numClasses: 0, source: dir)
    }
}
