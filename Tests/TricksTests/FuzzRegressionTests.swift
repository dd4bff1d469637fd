import XCTest
@testable import Tricks

/// Inputs on which a reader crashed under libFuzzer and AddressSanitizer (`launch/fuzz.sh`;
/// docs/reliability.md, "Fuzzing"). Before its fix each one trapped (an index out of range, a
/// range with its bounds reversed, a buffer of 2^63 bytes); now each is refused with a message.
///
/// The first is libFuzzer's minimized input; `-minimize_crash` turned the others into that same
/// crash, so they are cut down by hand to the one field that set them off (zip records in order:
/// local header `PK\3\4`, central directory `PK\1\2`, zip64 end record `PK\6\6`, its locator
/// `PK\6\7`, end record `PK\5\6`).
final class FuzzRegressionTests: XCTestCase {
    func bytes(_ base64: String) -> Data { Data(base64Encoded: base64)! }

    func assertBadData<T>(_ body: @autoclosure () throws -> T, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            guard case TricksError.badData(let m) = e else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertTrue(m.contains(needle), m, file: file, line: line)
        }
    }

    // MARK: npz: zip64 fields of 2^63 and more are negative as Int

    /// The locator gives the zip64 end record's offset as 0x9E8A8DABFFFFFB7A: read before the
    /// start of the file (42 bytes: locator and end record).
    func testZip64EndRecordOffsetPast2To63() {
        let d = bytes("UEsGBwAAAAB6+///q42KngEAAABQSwUGAAAAAP////8AAP///////wAA")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip64 record")
    }

    /// The zip64 end record counts 2^64 − 1 entries: `0..<entries` trapped.
    func testZip64EntryCountPast2To63() {
        let d = bytes("UEsGBiwAAAAAAAAALQAtAAAAAAAAAAAA/////////////////////wAAAAAAAAAAAAAAAAAAAABQSwYHAAAAAAAAAAAAAAAAAQAAAFBLBQYAAAAA////////////////AAA=")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip64 record")
    }

    /// The zip64 end record puts the central directory at 2^63: read before the file.
    func testZip64CentralDirectoryOffsetPast2To63() {
        let d = bytes("UEsGBiwAAAAAAAAALQAtAAAAAAAAAAAAAQAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIBQSwYHAAAAAAAAAAAAAAAAAQAAAFBLBQYAAAAA////////////////AAA=")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip64 record")
    }

    /// A central directory entry whose sizes and offset say "in the zip64 field" (0xFFFFFFFF),
    /// with a zip64 extra field of 0 bytes: its 24 bytes were read past the end of the file.
    func testZip64ExtraFieldShorterThanItsFields() {
        let d = bytes("UEsBAi0ALQAAAAAAAAAAAAAAAAD//////////wUABAAAAAAAAAAAAAAA/////3gubnB5AQAAAFBLBQYAAAAAAQABADcAAAAAAAAAAAA=")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip entry x.npy")
    }

    /// The zip64 extra field puts the local header at 2^63: read before the file.
    func testZip64LocalHeaderOffsetPast2To63() {
        let d = bytes("UEsBAi0ALQAAAAAAAAAAAAAAAAAAAAAAAAAAAAUADAAAAAAAAAAAAAAA/////3gubnB5AQAIAAAAAAAAAACAUEsFBgAAAAABAAEAPwAAAAAAAAAAAA==")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip entry x.npy")
    }

    /// The zip64 extra field gives a compressed size of 2^64 − 1 (−1): `start..<start + csize` trapped.
    func testZip64CompressedSizePast2To63() {
        let d = bytes("UEsDBC0AAAAAAAAAAAAAAAAAAAAAAAAAAAAFAAAAeC5ucHlQSwECLQAtAAAAAAAAAAAAAAAAAP////8AAAAABQAMAAAAAAAAAAAAAAAAAAAAeC5ucHkBAAgA//////////9QSwUGAAAAAAEAAQA/AAAAIwAAAAAA")
        assertBadData(try NPZ.readArchive("z.npz", data: d), "z.npz: corrupt zip entry x.npy (zip64 size past 2^63)")
    }

    /// A deflated `x_train.npy` of 47 bytes whose zip64 field states 2^63 − 16 bytes uncompressed:
    /// the output buffer was allocated at the stated size. Now the stated size is only a hint
    /// (at most 1032 times the compressed size) and the member reads.
    func testDeflatedMemberClaimingAnHugeSize() throws {
        let d = bytes("UEsDBC0AAAAIAAAAAAAAAAAALwAAAP////8LAAAAeF90cmFpbi5ucHkBKgDV/5NOVU1QWQEAHwB7J2Rlc2NyJzonfHUxJywnc2hhcGUnOigxLDEsMSl9B1BLAQItAC0AAAAIAAAAAAAAAAAALwAAAP////8LAAwAAAAAAAAAAAAAAAAAAAB4X3RyYWluLm5weQEACADw////////f1BLBQYAAAAAAQABAEUAAABYAAAAAAA=")
        let arrays = try NPZ.readArchive("z.npz", data: d)
        XCTAssertEqual(arrays["x_train"]?.shape, [1, 1, 1])
        XCTAssertEqual(arrays["x_train"]?.data, Data([7]))
        assertBadData(try NPZ.loadDataset("z.npz", data: d), "z.npz: missing array 'y_train' (has: x_train)")
    }

    // MARK: npy

    /// A `.npy` of 10 bytes whose version (0x93) is not 1, so its header length takes 4 bytes:
    /// bytes 10 and 11 were read (libFuzzer's input).
    func testNPYOfVersion2ShorterThanItsHeaderLength() {
        let d = bytes("k05VTVBZk04BAA==")
        XCTAssertEqual(d.count, 10)
        assertBadData(try NPZ.parseNPY(d, what: "a.npy"), "a.npy: truncated .npy header")
    }

    // MARK: The fuzz target

    /// `tricks-fuzz --write-seeds` and `tricks-fuzz TARGET FILE...` (the plain build): the seeds
    /// that make up a valid file of their target read without error, the others with one.
    func testFuzzTargetReadsItsSeeds() throws {
        let program = (CLITests.binary as NSString).deletingLastPathComponent + "/tricks-fuzz"
        let dir = NSTemporaryDirectory() + "tricks-fuzz-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try CLITests.run(["--write-seeds", dir], program: program)
        XCTAssertEqual(w.status, 0, w.err)
        let valid = ["safetensors": ["state.safetensors"],
                     "idx": ["images-idx3-ubyte", "labels-idx1-ubyte", "matrix-idx2-ubyte"],
                     "npz": ["dataset.npz", "dataset64.npz", "labels.npy", "labels-v2.npy"],
                     "image": ["c1.jpg", "c1.png", "c3.jpg", "c3.png", "c4.png"],
                     "voc": ["plain.xml", "rich.xml"]]
        for (target, names) in valid {
            let seeds = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/\(target)").sorted()
            XCTAssertTrue(Set(names).isSubset(of: seeds), "\(target): \(seeds)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/\(target).dict"), target)
            let r = try CLITests.run([target] + seeds.map { "\(dir)/\(target)/\($0)" }, program: program)
            XCTAssertEqual(r.status, 0, r.err)
            for name in seeds {
                let line = r.out.split(separator: "\n").first { $0.hasPrefix("\(dir)/\(target)/\(name): ") } ?? ""
                XCTAssertEqual(line.hasSuffix(": ok"), names.contains(name), "\(target): \(line)")
            }
        }
        let r = try CLITests.run(["nosuchreader", "x"], program: program)
        XCTAssertEqual(r.status, 2)
    }
}
