import Foundation
import Tricks

/// Small valid inputs for each target (the fuzzer's starting corpus) and libFuzzer dictionaries
/// of the formats' tokens, written by `tricks-fuzz --write-seeds DIR` as `DIR/<target>/*` and
/// `DIR/<target>.dict`. Made here rather than kept as binary files.
enum Seeds {
    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255)] }
    static func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16(v >> 16 & 0xFFFF) }
    static func le64(_ v: Int) -> [UInt8] { le32(v & 0xFFFF_FFFF) + le32(v >> 32 & 0xFFFF_FFFF) }
    static func be32(_ v: Int) -> [UInt8] { le32(v).reversed() }

    static func crc32(_ bytes: [UInt8]) -> Int {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return Int(~c)
    }

    /// `(name, bytes)` per target.
    static func all() throws -> [FuzzTarget: [(String, [UInt8])]] {
        [.safetensors: safetensors(), .idx: idx(), .npz: npz(), .image: try images(), .voc: voc()]
    }

    // MARK: safetensors

    static func safetensors() -> [(String, [UInt8])] {
        // Exactly the state the target loads into, with a training checkpoint's metadata.
        let state = [UInt8](SafeTensors.encode(fuzzState, metadata: ["format": "tricks-training-checkpoint/1", "step": "7"]))
        // One tensor of every dtype the reader converts, and an empty one.
        let tensors: [(String, String, [Int], Int)] = [
            ("a", "F64", [2], 8), ("b", "F16", [2], 2), ("c", "BF16", [1, 2], 2), ("d", "I32", [2], 4),
            ("e", "I16", [1], 2), ("f", "I8", [3], 1), ("g", "U8", [1], 1), ("h", "BOOL", [1], 1),
            ("i", "I64", [1], 8), ("j", "F32", [0], 4),
        ]
        var entries: [String] = ["\"__metadata__\":{\"note\":\"dtypes\"}"], body: [UInt8] = [], at = 0
        for (name, dtype, shape, width) in tensors {
            let n = shape.reduce(1, *) * width
            entries.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(at),\(at + n)]}")
            body += (0..<n).map { UInt8(truncatingIfNeeded: 0x3C + 7 * ($0 + at)) }
            at += n
        }
        func file(_ header: String, _ body: [UInt8]) -> [UInt8] {
            var h = Array(header.utf8)
            while h.count % 8 != 0 { h.append(0x20) }
            return le64(h.count) + h + body
        }
        return [("state.safetensors", state), ("dtypes.safetensors", file("{" + entries.joined(separator: ",") + "}", body)),
                ("empty.safetensors", file("{}", []))]
    }

    // MARK: IDX

    static func idx() -> [(String, [UInt8])] {
        func file(_ dims: [Int]) -> [UInt8] {
            [0, 0, 8, UInt8(dims.count)] + dims.flatMap(be32) + (0..<dims.reduce(1, *)).map { UInt8($0 * 37 & 255) }
        }
        return [("images-idx3-ubyte", file([2, 3, 4])), ("labels-idx1-ubyte", file([5])), ("matrix-idx2-ubyte", file([2, 2]))]
    }

    // MARK: npz

    /// A `.npy` file: magic, version, header length (2 bytes in version 1, 4 in 2), the header
    /// padded to a multiple of 64 bytes, the data.
    static func npy(_ descr: String, _ shape: [Int], _ body: [UInt8], major: UInt8 = 1, spaced: Bool = false) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: spaced ? " , " : ", ") + (shape.count == 1 ? "," : "")
        var h = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }".utf8)
        let lead = major == 1 ? 10 : 12
        while (lead + h.count + 1) % 64 != 0 { h.append(0x20) }
        h.append(0x0A)
        return [0x93] + Array("NUMPY".utf8) + [major, 0] + (major == 1 ? le16(h.count) : le32(h.count)) + h + body
    }

    /// A zip archive as `np.savez` writes it; members flagged `deflate` are stored in deflate's
    /// uncompressed blocks (method 8); `zip64` adds the zip64 extra fields and end records.
    static func zip(_ members: [(name: String, bytes: [UInt8], deflate: Bool)], zip64: Bool = false) -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        for m in members {
            var packed = m.bytes
            if m.deflate {
                packed = []
                var at = 0
                repeat {
                    let n = min(65535, m.bytes.count - at)
                    packed += [at + n == m.bytes.count ? 1 : 0] + le16(n) + le16(~n & 0xFFFF) + m.bytes[at..<at + n]
                    at += n
                } while at < m.bytes.count
            }
            let name = Array(m.name.utf8), offset = out.count
            let sizes = zip64 ? le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) : le32(packed.count) + le32(m.bytes.count)
            let common = le16(zip64 ? 45 : 20) + le16(0) + le16(m.deflate ? 8 : 0) + le32(0) + le32(crc32(m.bytes)) + sizes + le16(name.count)
            let localExtra = zip64 ? le16(1) + le16(16) + le64(m.bytes.count) + le64(packed.count) : []
            out += le32(0x0403_4B50) + common + le16(localExtra.count) + name + localExtra + packed
            let centralExtra = zip64 ? le16(1) + le16(24) + le64(m.bytes.count) + le64(packed.count) + le64(offset) : []
            central += le32(0x0201_4B50) + le16(zip64 ? 45 : 20) + common + le16(centralExtra.count) + le16(0) + le16(0) + le16(0)
                + le32(0) + le32(zip64 ? 0xFFFF_FFFF : offset) + name + centralExtra
        }
        let cd = out.count
        out += central
        if zip64 {
            let record = out.count
            out += le32(0x0606_4B50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0)
                + le64(members.count) + le64(members.count) + le64(central.count) + le64(cd)
            out += le32(0x0706_4B50) + le32(0) + le64(record) + le32(1)
            out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(0)
        } else {
            out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(members.count) + le16(members.count) + le32(central.count) + le32(cd) + le16(0)
        }
        return out
    }

    static func npz() -> [(String, [UInt8])] {
        let dataset: [(name: String, bytes: [UInt8], deflate: Bool)] = [
            ("x_train.npy", npy("|u1", [2, 3, 4], (0..<24).map { UInt8($0 * 11) }), false),
            ("y_train.npy", npy("<i8", [2], le64(1) + le64(0)), true),
            ("x_test.npy", npy("|u1", [1, 2, 2, 3], (0..<12).map { UInt8($0 * 21) }), true),
            ("y_test.npy", npy("<i4", [1, 1], le32(2)), false),
        ]
        let other: [(name: String, bytes: [UInt8], deflate: Bool)] = [
            ("big.npy", npy(">u2", [3], [0, 1, 0, 2, 1, 0], major: 2, spaced: true), false),
            ("small.npy", npy("|i1", [2, 2], [0xFF, 1, 0x80, 0x7F]), true),
            ("empty.npy", npy("<u4", [0], []), false),
        ]
        return [("dataset.npz", zip(dataset)), ("dataset64.npz", zip(dataset, zip64: true)), ("dtypes.npz", zip(other)),
                ("no-suffix.npz", zip([("x_train", npy("|u1", [1, 1, 1], [9]), false)])),
                ("labels.npy", npy("<i2", [2, 1], [0xFE, 0xFF, 3, 0])), ("labels-v2.npy", npy(">i8", [1], le64(5).reversed(), major: 2))]
    }

    // MARK: images

    static func images() throws -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        for c in [1, 3, 4] {
            let (w, h) = (5, 3)
            let im = Image(width: w, height: h, channels: c, pixels: (0..<w * h * c).map { UInt8($0 * 29 & 255) })
            out.append(("c\(c).png", try im.encoded(.png)))
            if c != 4 { out.append(("c\(c).jpg", try im.encoded(.jpeg, quality: 50))) }
        }
        return out
    }

    // MARK: VOC

    static func voc() -> [(String, [UInt8])] {
        let boxes = [Box(x0: 47, y0: 239, x1: 195, y1: 371, label: 11), Box(x0: 7, y0: 10, x1: 351, y1: 497, label: 14, difficult: true)]
        let plain = VOCDataset.annotationXML(filename: "000001.jpg", width: 353, height: 500, depth: 3,
                                             boxes: boxes, classes: VOCDataset.vocClasses)
        // Every construct the reader knows: BOM, declaration, doctype, comments, attributes,
        // entities, CDATA, processing instructions, self-closing elements, "273.0" coordinates.
        let rich = """
            \u{FEFF}<?xml version="1.0" encoding="utf-8"?>
            <!DOCTYPE annotation>
            <!-- written by hand -->
            <annotation verified='yes' source="a &amp; b">
              <filename><![CDATA[img 1.jpg]]></filename>
              <source><database>The VOC2007 Database</database><image/></source>
              <size><width>640</width><height>480.0</height><depth>3</depth></size>
              <segmented>0</segmented>
              <?note keep?>
              <object>
                <name>d&#111;g</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
                <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>273.0</xmax><ymax>&#x34;80</ymax></bndbox>
                <part><name>head</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></part>
              </object>
              <object><name>person</name><bndbox><xmin>640</xmin><ymin>480</ymin><xmax>640</xmax><ymax>480</ymax></bndbox></object>
            </annotation>

            """
        return [("plain.xml", Array(plain.utf8)), ("rich.xml", Array(rich.utf8))]
    }

    // MARK: Dictionaries

    /// The tokens of each format, as libFuzzer's `-dict` files spell them.
    static func dictionary(_ target: FuzzTarget) -> [String] {
        switch target {
        case .safetensors:
            return ["{", "}", "[", "]", ":", ",", "\\\"", "\\\"dtype\\\"", "\\\"shape\\\"", "\\\"data_offsets\\\"",
                    "\\\"__metadata__\\\"", "-1", "1e300", "18446744073709551615", "9223372036854775807", "null", "true"]
                + ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3"].map { "\\\"\($0)\\\"" }
        case .idx:
            return ["\\x00\\x00\\x08\\x01", "\\x00\\x00\\x08\\x03", "\\x00\\x00\\x0d\\x03", "\\xff\\xff\\xff\\xff", "\\x7f\\xff\\xff\\xff"]
        case .npz:
            return ["PK\\x03\\x04", "PK\\x01\\x02", "PK\\x05\\x06", "PK\\x06\\x06", "PK\\x06\\x07", "\\x01\\x00",
                    "\\xff\\xff", "\\xff\\xff\\xff\\xff", "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x7f", "\\x93NUMPY\\x01\\x00",
                    "\\x93NUMPY\\x02\\x00", "'descr': ", "'fortran_order': ", "'shape': ", "True", "False", "(", ")", ",",
                    "|u1", "<i8", ">u2", "<i4", "|i1", "<f4", "-1", "x_train", "y_train", "x_test", "y_test", ".npy"]
        case .image:
            return ["\\x89PNG\\x0d\\x0a\\x1a\\x0a", "IHDR", "IDAT", "IEND", "PLTE", "tRNS", "gAMA", "iCCP", "\\x00\\x00\\x00\\x0d",
                    "\\x08\\x03", "\\x10\\x06", "\\x01\\x00", "\\xff\\xd8", "\\xff\\xd9", "\\xff\\xc0", "\\xff\\xc1", "\\xff\\xc2",
                    "\\xff\\xc4", "\\xff\\xda", "\\xff\\xdb", "\\xff\\xdd", "\\xff\\xe0", "\\xff\\xee", "\\xff\\xfe", "Adobe", "JFIF\\x00"]
        case .voc:
            return ["<annotation>", "</annotation>", "<size>", "<width>", "<height>", "<object>", "</object>", "<name>",
                    "<difficult>", "<bndbox>", "<xmin>", "<ymin>", "<xmax>", "<ymax>", "<filename>", "<!--", "-->", "<?", "?>",
                    "<![CDATA[", "]]>", "<!DOCTYPE", "/>", "</", "=\\\"", "='", "&amp;", "&lt;", "&#", "&#x", ";", "\\xef\\xbb\\xbf",
                    "1e7", "-0", "nan", "inf", "0x1p3", "person", "aeroplane"]
        }
    }

    /// Writes `dir/<target>/<seed>` and `dir/<target>.dict` for every target.
    static func write(to dir: String) throws {
        let fm = FileManager.default
        for (target, seeds) in try all() {
            let sub = (dir as NSString).appendingPathComponent(target.rawValue)
            try fm.createDirectory(atPath: sub, withIntermediateDirectories: true)
            for (name, bytes) in seeds {
                try Data(bytes).write(to: URL(fileURLWithPath: (sub as NSString).appendingPathComponent(name)))
            }
            let dict = dictionary(target).map { "\"\($0)\"" }.joined(separator: "\n") + "\n"
            try Data(dict.utf8).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("\(target.rawValue).dict")))
        }
    }
}
