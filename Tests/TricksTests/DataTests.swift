import XCTest
@testable import Tricks

/// IDX and NPZ readers on files made here, their error messages, sampling and preprocessing.
final class DataTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "tricks-data-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    static func idx(_ dims: [Int], _ bytes: [UInt8]) -> Data {
        var d: [UInt8] = [0, 0, 8, UInt8(dims.count)]
        for v in dims { d += [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        return Data(d + bytes)
    }

    /// Writes a small IDX dataset: `n` 4×3 images with pixel value = label·10 + position.
    func writeIDX(train: Int = 6, test: Int = 4, gzip: Bool = false) throws {
        for (prefix, n) in [("train", train), ("t10k", test)] {
            let labels = (0..<n).map { UInt8($0 % 3) }
            let pixels = (0..<n * 12).map { UInt8(Int(labels[$0 / 12]) * 10 + $0 % 12) }
            let ip = dir + "/\(prefix)-images-idx3-ubyte", lp = dir + "/\(prefix)-labels-idx1-ubyte"
            try Self.idx([n, 4, 3], pixels).write(to: URL(fileURLWithPath: ip))
            try Self.idx([n], labels).write(to: URL(fileURLWithPath: lp))
            if gzip {
                for p in [ip, lp] {
                    let proc = Process()
                    proc.executableURL = URL(fileURLWithPath: "/bin/gzip")
                    proc.arguments = ["-f", p]
                    try proc.run(); proc.waitUntilExit()
                    XCTAssertEqual(proc.terminationStatus, 0)
                }
            }
        }
    }

    func testIDXPlainAndGzip() throws {
        for gz in [false, true] {
            try writeIDX(gzip: gz)
            let d = try DatasetLoader.load(dir)
            XCTAssertEqual(d.train.count, 6); XCTAssertEqual(d.test.count, 4)
            XCTAssertEqual(d.numClasses, 3)
            XCTAssertEqual([d.train.channels, d.train.height, d.train.width], [1, 4, 3])
            XCTAssertEqual(d.train.labels, [0, 1, 2, 0, 1, 2])
            XCTAssertEqual(d.train.pixels[12 + 5], 15)
        }
    }

    func assertBadData(_ path: String, contains needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DatasetLoader.load(path), file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(needle), "message '\(e)' lacks '\(needle)'", file: file, line: line)
        }
    }

    func testIDXErrors() throws {
        try writeIDX()
        let ip = dir + "/train-images-idx3-ubyte"
        var good = try Data(contentsOf: URL(fileURLWithPath: ip))
        good[0] = 7
        try good.write(to: URL(fileURLWithPath: ip))
        assertBadData(dir, contains: "wrong magic")
        try writeIDX()
        try Data(try Data(contentsOf: URL(fileURLWithPath: ip)).prefix(30)).write(to: URL(fileURLWithPath: ip))
        assertBadData(dir, contains: "truncated")
        try writeIDX()
        try Self.idx([5], [0, 1, 2, 0, 1]).write(to: URL(fileURLWithPath: dir + "/train-labels-idx1-ubyte"))
        assertBadData(dir, contains: "6 images")
        try writeIDX()
        try FileManager.default.removeItem(atPath: dir + "/t10k-labels-idx1-ubyte")
        assertBadData(dir, contains: "missing t10k-labels")
        assertBadData(dir + "/nope", contains: "no such file")
    }

    /// A zip archive with stored (uncompressed) members, as `np.savez` writes.
    static func npy(_ descr: String, _ shape: [Int], _ body: [UInt8]) -> [UInt8] {
        let shapeStr = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeStr), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let h = Array(header.utf8)
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 255), UInt8(h.count >> 8)] + h + body
    }

    static func zip(_ members: [(String, [UInt8])]) -> Data {
        var out: [UInt8] = [], central: [UInt8] = []
        func u16(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255)] }
        func u32(_ v: Int) -> [UInt8] { u16(v & 0xFFFF) + u16(v >> 16) }
        for (name, body) in members {
            let n = Array(name.utf8), off = out.count
            out += u32(0x0403_4B50) + u16(20) + u16(0) + u16(0) + u16(0) + u16(0) + u32(0) + u32(body.count) + u32(body.count)
                + u16(n.count) + u16(0) + n + body
            central += u32(0x0201_4B50) + u16(20) + u16(20) + u16(0) + u16(0) + u16(0) + u16(0) + u32(0)
                + u32(body.count) + u32(body.count) + u16(n.count) + u16(0) + u16(0) + u16(0) + u16(0) + u32(0) + u32(off) + n
        }
        let cd = out.count
        out += central
        out += u32(0x0605_4B50) + u16(0) + u16(0) + u16(members.count) + u16(members.count) + u32(central.count) + u32(cd) + u16(0)
        return Data(out)
    }

    func testNPZWithChannelsLastImagesAndInt64Labels() throws {
        // x: (N, H, W, C) = (3, 2, 2, 3); pixel (n, y, x, c) = 100·c + 10·n + 2y + x.
        var px: [UInt8] = []
        for n in 0..<3 { for y in 0..<2 { for x in 0..<2 { for c in 0..<3 { px.append(UInt8(100 * c + 10 * n + 2 * y + x)) } } } }
        let labels64: [UInt8] = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        let members = [("x_train.npy", Self.npy("|u1", [3, 2, 2, 3], px)), ("y_train.npy", Self.npy("<i8", [3], labels64)),
                       ("x_test.npy", Self.npy("|u1", [1, 2, 2, 3], Array(px.prefix(12)))), ("y_test.npy", Self.npy("|u1", [1], [1]))]
        let path = dir + "/d.npz"
        try Self.zip(members).write(to: URL(fileURLWithPath: path))
        let d = try DatasetLoader.load(path)
        XCTAssertEqual(d.train.labels, [2, 0, 1])
        XCTAssertEqual([d.train.channels, d.train.height, d.train.width], [3, 2, 2])
        XCTAssertEqual(d.numClasses, 3)
        // NCHW: image 1, channel 2, (y 1, x 0) = 200 + 10 + 2.
        XCTAssertEqual(d.train.pixels[(1 * 3 + 2) * 4 + 2], 212)

        let bad = [("x_train.npy", Self.npy("|u1", [3, 2, 2, 3], px)), ("y_train.npy", Self.npy("|u1", [2], [0, 1])),
                   ("x_test.npy", Self.npy("|u1", [1, 2, 2, 3], Array(px.prefix(12)))), ("y_test.npy", Self.npy("|u1", [1], [1]))]
        try Self.zip(bad).write(to: URL(fileURLWithPath: path))
        assertBadData(path, contains: "3 images in x_train but 2 labels")
        try Self.zip(Array(members.prefix(3))).write(to: URL(fileURLWithPath: path))
        assertBadData(path, contains: "missing array 'y_test'")
        try Data(Self.zip(members).prefix(100)).write(to: URL(fileURLWithPath: path))
        assertBadData(path, contains: "not a zip")
    }

    func testBatchPlanNoShuffleAndShardsCoverTheGlobalBatch() {
        let plan = BatchPlan(datasetSize: 50, globalBatch: 8, shuffle: false, seed: 1)
        XCTAssertEqual(plan.stepsPerEpoch, 6)
        let order = plan.order(epoch: 3)
        XCTAssertEqual(Array(plan.shard(order: order, stepInEpoch: 2, rank: 0, size: 1)), Array(16..<24).map(Int32.init))
        let shuffled = BatchPlan(datasetSize: 50, globalBatch: 8, shuffle: true, seed: 1)
        let o = shuffled.order(epoch: 2)
        XCTAssertEqual(Set(o), Set((0..<50).map(Int32.init)))
        XCTAssertNotEqual(o, shuffled.order(epoch: 3))
        XCTAssertEqual(o, shuffled.order(epoch: 2))
        for size in [2, 4, 8] {
            let parts = (0..<size).flatMap { Array(shuffled.shard(order: o, stepInEpoch: 1, rank: $0, size: size)) }
            XCTAssertEqual(parts, Array(shuffled.shard(order: o, stepInEpoch: 1, rank: 0, size: 1)))
        }
    }

    func testPreprocessingNormalizesAndAugmentsDeterministically() {
        let set = ImageSet(pixels: (0..<2 * 3 * 3).map { UInt8($0 * 10) }, labels: [0, 1], count: 2, channels: 1, height: 3, width: 3)
        let prep = Preprocessor(mean: [0.5], std: [0.25], augmentation: .standard, seed: 3)
        let x = Tensor(shape: [0]); var labels: [Int32] = []
        prep.fill(set, indices: [1, 0], epoch: 0, augment: false, into: x, labels: &labels)
        XCTAssertEqual(labels, [1, 0])
        XCTAssertEqual(Double(x[0]), (90.0 / 255 - 0.5) / 0.25, accuracy: 1e-5)
        // Augmented: every output pixel is either a source pixel of the same image or the padding value.
        let a = Tensor(shape: [0]), b = Tensor(shape: [0])
        prep.fill(set, indices: [1], epoch: 5, augment: true, into: a, labels: &labels)
        prep.fill(set, indices: [1], epoch: 5, augment: true, into: b, labels: &labels)
        XCTAssertEqual(a.array, b.array)
        let allowed = Set((9..<18).map { Float(Double($0 * 10) / 255 / 0.25 - 2) }).union([Float(-2)])
        for v in a.array { XCTAssertTrue(allowed.contains { abs($0 - v) < 1e-5 }) }
    }

    func testChannelStatistics() {
        let set = ImageSet(pixels: [0, 255, 0, 255], labels: [0, 1], count: 2, channels: 1, height: 1, width: 2)
        let s = set.channelStatistics()
        XCTAssertEqual(s.mean[0], 0.5, accuracy: 1e-12)
        XCTAssertEqual(s.std[0], 0.5, accuracy: 1e-12)
    }
}
