import XCTest
@testable import Tricks

/// The bad-input matrix: the real binaries, given corrupt or inconsistent data, checkpoints and
/// flags (alone or under `mpirun -np 2`), end promptly with a non-zero status and a message on
/// stderr that names the file and the problem, and leave the files already in `--out` as they were.
///
/// Under `mpirun`, every error is reported once: an error every rank meets by rank 0 (the other
/// ranks wait a second before reporting, and rank 0's abort ends them), one that a single rank
/// meets by that rank.
final class BadInputTests: XCTestCase {
    static var detect: String { (CLITests.binary as NSString).deletingLastPathComponent + "/tricks-detect" }

    // MARK: Running and checking

    struct Outcome {
        var status: Int32
        var out: String
        var err: String
        var seconds: Double
        var timedOut: Bool
    }

    final class Sink: @unchecked Sendable { var data = Data() }

    /// Runs a binary, under `mpirun -np N` when `np` is given (`MPITests.launch`), else alone
    /// (`CLITests.launch`); a run that outlives `timeout` seconds is ended and reported as timed out.
    static func run(_ args: [String], np: Int? = nil, program: String = CLITests.binary, timeout: Double = 60) throws -> Outcome {
        let o = Pipe(), e = Pipe()
        let p = try np.map { try MPITests.launch(np: $0, args, stdout: o, stderr: e, program: program) }
            ?? CLITests.launch(args, program: program, stdout: o, stderr: e)
        let out = Sink(), err = Sink(), readers = DispatchGroup()
        DispatchQueue.global().async(group: readers) { out.data = o.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: readers) { err.data = e.fileHandleForReading.readDataToEndOfFile() }
        let start = Date()
        while p.isRunning && Date().timeIntervalSince(start) < timeout { usleep(20_000) }
        let timedOut = p.isRunning
        if timedOut {
            p.terminate()
            let t = Date()
            while p.isRunning && Date().timeIntervalSince(t) < 5 { usleep(50_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        let seconds = Date().timeIntervalSince(start)
        _ = readers.wait(timeout: .now() + 10)
        return Outcome(status: p.terminationStatus, out: String(decoding: out.data, as: UTF8.self),
                       err: String(decoding: err.data, as: UTF8.self), seconds: seconds, timedOut: timedOut)
    }

    /// Asserts a prompt non-zero exit with `problem` and every string of `names` on stderr, `problem`
    /// on exactly one line.
    func assertFails(_ r: Outcome, _ problem: String, names: [String] = [], np: Int? = nil,
                     file: StaticString = #filePath, line: UInt = #line) {
        let context = "status \(r.status) after \(String(format: "%.1f", r.seconds)) s\nstderr:\n\(r.err)\nstdout tail:\n\(r.out.suffix(600))"
        print("bad input \(np.map { "(mpirun -np \($0)) " } ?? "")expecting '\(problem)': \(context)")
        XCTAssertFalse(r.timedOut, "no exit within the timeout: \(context)", file: file, line: line)
        XCTAssertNotEqual(r.status, 0, "zero exit: \(context)", file: file, line: line)
        for s in names { XCTAssertTrue(r.err.contains(s), "stderr does not name \(s): \(context)", file: file, line: line) }
        let lines = r.err.split(separator: "\n").filter { $0.contains(problem) }
        XCTAssertEqual(lines.count, 1, "'\(problem)' should be printed once: \(context)", file: file, line: line)
    }

    static let knownModel = Data("model bytes from an earlier run\n".utf8)
    static let knownCheckpoint = Data("checkpoint bytes from an earlier run\n".utf8)

    /// An `--out` directory holding `model.safetensors` and `checkpoint.safetensors` of an earlier run.
    func earlierOut(_ dir: String, checkpoint: Bool = true) throws -> String {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.knownModel.write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        if checkpoint { try Self.knownCheckpoint.write(to: URL(fileURLWithPath: dir + "/checkpoint.safetensors")) }
        return dir
    }

    /// Asserts that `earlierOut` still holds exactly the earlier run's files, unchanged.
    func assertUntouched(_ dir: String, checkpoint: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir).sorted()) ?? []
        XCTAssertEqual(names, checkpoint ? ["checkpoint.safetensors", "model.safetensors"] : ["model.safetensors"],
                       "files added to or removed from \(dir)", file: file, line: line)
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/model.safetensors"), Self.knownModel,
                       "model.safetensors overwritten", file: file, line: line)
        if checkpoint {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/checkpoint.safetensors"), Self.knownCheckpoint,
                           "checkpoint.safetensors overwritten", file: file, line: line)
        }
    }

    /// Trains resnet8 for one step on `data`, writing into `out`.
    static func train(_ data: String, out: String, _ extra: [String] = []) -> [String] {
        ["train", "--data", data, "--model", "resnet8", "--batch-size", "8", "--max-steps", "1", "--log-every", "1",
         "--out", out] + extra
    }

    // MARK: IDX

    static func idx(_ dims: [Int], _ body: [UInt8]) -> Data {
        var h: [UInt8] = [0, 0, 0x08, UInt8(dims.count)]
        for d in dims { h += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
        return Data(h + body)
    }

    /// Four IDX files of 16 training and 8 test 8×8 images, labels 0, 1, 2, 0, ….
    func writeIDX(_ dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (prefix, n) in [("train", 16), ("t10k", 8)] {
            try Self.idx([n, 8, 8], (0..<n * 64).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: "\(dir)/\(prefix)-images-idx3-ubyte"))
            try Self.idx([n], (0..<n).map { UInt8($0 % 3) }).write(to: URL(fileURLWithPath: "\(dir)/\(prefix)-labels-idx1-ubyte"))
        }
    }

    func testIDXWrongMagic() throws {
        let d = try tempDir()
        try writeIDX(d + "/idx")
        let f = d + "/idx/train-images-idx3-ubyte"
        var b = try Data(contentsOf: URL(fileURLWithPath: f))
        b.replaceSubrange(0..<4, with: Array("GIF8".utf8))
        try b.write(to: URL(fileURLWithPath: f))
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/idx", out: out))
        assertFails(r, "wrong magic number", names: [f])
        assertUntouched(out)
    }

    func testIDXTruncated() throws {
        let d = try tempDir()
        try writeIDX(d + "/idx")
        let f = d + "/idx/t10k-images-idx3-ubyte"
        try Data(contentsOf: URL(fileURLWithPath: f)).prefix(16 + 300).write(to: URL(fileURLWithPath: f))
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/idx", out: out))
        assertFails(r, "truncated", names: [f, "header says [8, 8, 8] (512 bytes), file holds 300"])
        assertUntouched(out)
    }

    func testIDXHeaderWithAbsurdSizes() throws {
        // Sizes whose product overflows: a truncated file, not a crash.
        let d = try tempDir()
        try writeIDX(d + "/idx")
        let f = d + "/idx/train-images-idx3-ubyte"
        try Self.idx([0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], [1, 2, 3]).write(to: URL(fileURLWithPath: f))
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/idx", out: out))
        assertFails(r, "truncated", names: [f])
        assertUntouched(out)
    }

    func testIDXImageAndLabelCountsDisagreeUnderMPI() throws {
        let d = try tempDir()
        try writeIDX(d + "/idx")
        let f = d + "/idx/train-labels-idx1-ubyte"
        try Self.idx([15], (0..<15).map { UInt8($0 % 3) }).write(to: URL(fileURLWithPath: f))
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/idx", out: out), np: 2)
        assertFails(r, "16 images in", names: [d + "/idx/train-images-idx3-ubyte", "but 15 labels in \(f)"], np: 2)
        assertUntouched(out)
    }

    // MARK: npz

    /// The arrays of a toy `.npz` (16 training and 8 test 8×8 images, 3 classes), by name.
    static func toyArrays() -> [String: [UInt8]] {
        var a: [String: [UInt8]] = [:]
        for (split, n) in [("train", 16), ("test", 8)] {
            a["x_\(split)"] = DataTests.npy("|u1", [n, 8, 8], (0..<n * 64).map { UInt8($0 % 251) })
            a["y_\(split)"] = DataTests.npy("|u1", [n], (0..<n).map { UInt8($0 % 3) })
        }
        return a
    }

    static func writeNPZ(_ arrays: [String: [UInt8]], to path: String) throws {
        try DataTests.zip(arrays.keys.sorted().map { ($0 + ".npy", arrays[$0]!) }).write(to: URL(fileURLWithPath: path))
    }

    func testNPZMissingKey() throws {
        let d = try tempDir()
        var a = Self.toyArrays()
        a["y_test"] = nil
        try Self.writeNPZ(a, to: d + "/toy.npz")
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/toy.npz", out: out))
        assertFails(r, "missing array 'y_test'", names: [d + "/toy.npz"])
        assertUntouched(out)
    }

    func testNPZWrongDtype() throws {
        let d = try tempDir()
        // Images as float32.
        var a = Self.toyArrays()
        a["x_train"] = DataTests.npy("<f4", [16, 8, 8], [UInt8](repeating: 0, count: 16 * 64 * 4))
        try Self.writeNPZ(a, to: d + "/images.npz")
        let out = try earlierOut(d + "/out")
        var r = try Self.run(Self.train(d + "/images.npz", out: out))
        assertFails(r, "x_train has dtype <f4, expected uint8", names: [d + "/images.npz"])
        // Labels as float32.
        a = Self.toyArrays()
        a["y_train"] = DataTests.npy("<f4", [16], [UInt8](repeating: 0, count: 16 * 4))
        try Self.writeNPZ(a, to: d + "/labels.npz")
        r = try Self.run(Self.train(d + "/labels.npz", out: out))
        assertFails(r, "dtype <f4 is not an integer type", names: [d + "/labels.npz:y_train"])
        assertUntouched(out)
    }

    func testNPZWrongRankUnderMPI() throws {
        let d = try tempDir()
        // Images flattened to (N, H·W).
        var a = Self.toyArrays()
        a["x_train"] = DataTests.npy("|u1", [16, 64], (0..<16 * 64).map { UInt8($0 % 251) })
        try Self.writeNPZ(a, to: d + "/images.npz")
        let out = try earlierOut(d + "/out")
        var r = try Self.run(Self.train(d + "/images.npz", out: out), np: 2)
        assertFails(r, "x_train has shape [16, 64], expected (N, H, W) or (N, H, W, C)", names: [d + "/images.npz"], np: 2)
        // Labels as one-hot rows, (N, 3).
        a = Self.toyArrays()
        a["y_train"] = DataTests.npy("|u1", [16, 3], (0..<48).map { UInt8($0 % 3 == 0 ? 1 : 0) })
        try Self.writeNPZ(a, to: d + "/labels.npz")
        r = try Self.run(Self.train(d + "/labels.npz", out: out))
        assertFails(r, "y_train has shape [16, 3], expected (N,) or (N, 1)", names: [d + "/labels.npz"])
        assertUntouched(out)
    }

    // MARK: Labels

    func testLabelAtOrAboveNumClasses() throws {
        // Labels 0, 1, 2 with --num-classes 2, from an .npz and from IDX files.
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let out = try earlierOut(d + "/out")
        var r = try Self.run(Self.train(d + "/toy.npz", out: out, ["--num-classes", "2"]))
        assertFails(r, "label 2 out of range for --num-classes 2", names: [d + "/toy.npz"])
        try writeIDX(d + "/idx")
        r = try Self.run(Self.train(d + "/idx", out: out, ["--num-classes", "2"]), np: 2)
        assertFails(r, "label 2 out of range for --num-classes 2", names: [d + "/idx"], np: 2)
        assertUntouched(out)
    }

    func testNegativeLabelUnderMPI() throws {
        let d = try tempDir()
        var a = Self.toyArrays()
        var labels: [UInt8] = []
        for i in 0..<16 { labels += withUnsafeBytes(of: Int64(i == 5 ? -1 : i % 3).littleEndian) { Array($0) } }
        a["y_train"] = DataTests.npy("<i8", [16], labels)
        try Self.writeNPZ(a, to: d + "/toy.npz")
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/toy.npz", out: out), np: 2)
        assertFails(r, "y_train[5] is -1", names: [d + "/toy.npz"], np: 2)
        assertUntouched(out)
    }

    // MARK: Detection set

    /// A VOC-layout set of four 64×48 JPEG images with three boxes each (two classes).
    func writeVOC(_ root: String) throws {
        let fm = FileManager.default
        for sub in ["JPEGImages", "Annotations", "ImageSets/Main"] {
            try fm.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
        }
        try Data("cat\ndog\n".utf8).write(to: URL(fileURLWithPath: root + "/classes.txt"))
        var ids: [String] = []
        for i in 0..<4 {
            let id = "img\(i)"
            ids.append(id)
            var image = Image(width: 64, height: 48, fill: [40, 90, 160])
            let boxes = (0..<3).map { k in
                Box(x0: Double(4 + 16 * k + i), y0: Double(6 + 4 * k), x1: Double(18 + 16 * k + i), y1: Double(30 + 4 * k), label: (i + k) % 2)
            }
            for b in boxes { image.drawBox(b, colour: [250, 250, 250], thickness: 2) }
            try Data(image.encoded(.jpeg)).write(to: URL(fileURLWithPath: "\(root)/JPEGImages/\(id).jpg"))
            try Data(VOCDataset.annotationXML(filename: id + ".jpg", width: 64, height: 48, depth: 3, boxes: boxes, classes: ["cat", "dog"]).utf8)
                .write(to: URL(fileURLWithPath: "\(root)/Annotations/\(id).xml"))
        }
        try Data((ids.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: root + "/ImageSets/Main/train.txt"))
    }

    /// One training step of a tiny detector on all four images.
    static func detectTrain(_ root: String, out: String) -> [String] {
        ["train", "--data", root, "--batch-size", "4", "--max-steps", "1", "--width", "4", "--data-shape", "64",
         "--no-eval", "--no-augment", "--threads", "1", "--log-every", "1", "--out", out]
    }

    func testDetectionSetIsValidToBeginWith() throws {
        // The set the detection cases spoil trains: their failures are the spoiling's.
        let d = try tempDir()
        try writeVOC(d + "/voc")
        let r = try Self.run(Self.detectTrain(d + "/voc", out: d + "/out"), program: Self.detect)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/out/model.safetensors"))
    }

    func testDetectionCorruptJPEGUnderMPI() throws {
        let d = try tempDir()
        try writeVOC(d + "/voc")
        let f = d + "/voc/JPEGImages/img1.jpg"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: f))
        try bytes.prefix(bytes.count * 2 / 3).write(to: URL(fileURLWithPath: f))
        let out = try earlierOut(d + "/out", checkpoint: false)
        let r = try Self.run(Self.detectTrain(d + "/voc", out: out), np: 2, program: Self.detect)
        assertFails(r, "corrupt or unsupported JPEG", names: [f], np: 2)
        assertUntouched(out, checkpoint: false)
    }

    func testDetectionMissingImage() throws {
        let d = try tempDir()
        try writeVOC(d + "/voc")
        let f = d + "/voc/JPEGImages/img2.jpg"
        try FileManager.default.removeItem(atPath: f)
        let out = try earlierOut(d + "/out", checkpoint: false)
        let r = try Self.run(Self.detectTrain(d + "/voc", out: out), program: Self.detect)
        assertFails(r, "cannot read (missing or unreadable)", names: [f])
        assertUntouched(out, checkpoint: false)
    }

    func testDetectionMissingAnnotationUnderMPI() throws {
        let d = try tempDir()
        try writeVOC(d + "/voc")
        let f = d + "/voc/Annotations/img3.xml"
        try FileManager.default.removeItem(atPath: f)
        let out = try earlierOut(d + "/out", checkpoint: false)
        let r = try Self.run(Self.detectTrain(d + "/voc", out: out), np: 2, program: Self.detect)
        assertFails(r, "missing annotation", names: [f], np: 2)
        assertUntouched(out, checkpoint: false)
    }

    func testDetectionMalformedAnnotation() throws {
        let d = try tempDir()
        try writeVOC(d + "/voc")
        let f = d + "/voc/Annotations/img0.xml"
        let out = try earlierOut(d + "/out", checkpoint: false)
        // Not well-formed: the document stops inside <object>.
        let xml = try String(contentsOfFile: f, encoding: .utf8)
        try Data(xml.prefix(upTo: xml.range(of: "</bndbox>")!.lowerBound).utf8).write(to: URL(fileURLWithPath: f))
        var r = try Self.run(Self.detectTrain(d + "/voc", out: out), program: Self.detect)
        assertFails(r, "malformed XML at line", names: [f])
        // Well-formed, but a coordinate that is not a number.
        try Data(xml.replacingOccurrences(of: "<xmin>5</xmin>", with: "<xmin>five</xmin>").utf8).write(to: URL(fileURLWithPath: f))
        r = try Self.run(Self.detectTrain(d + "/voc", out: out), program: Self.detect)
        assertFails(r, "object 1 <xmin> is 'five', not an integer", names: [f])
        assertUntouched(out, checkpoint: false)
    }

    // MARK: safetensors given to train --init and eval --init

    /// A resnet8 checkpoint for the toy data (1 channel, 3 classes) as header entries and data bytes.
    static func checkpointParts(numClasses: Int = 3) throws -> (header: [String: Any], data: Data) {
        let net = ResNet(depth: 8, inChannels: 1, numClasses: numClasses, seed: 1)
        let d = withExtendedLifetime(net) { SafeTensors.encode(net.state) }   // the state points into net
        let n = d.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = try JSONSerialization.jsonObject(with: d.subdata(in: 8..<8 + n)) as! [String: Any]
        return (header, d.subdata(in: 8 + n..<d.count))
    }

    /// A safetensors file from header entries and data bytes.
    static func safetensors(_ header: [String: Any], _ data: Data) throws -> Data {
        var h = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while h.count % 8 != 0 { h.append(0x20) }
        return withUnsafeBytes(of: UInt64(h.count).littleEndian) { Data($0) } + h + data
    }

    static func entry(_ header: [String: Any], _ name: String) -> [String: Any] { header[name] as! [String: Any] }

    /// Writes the toy data and `bytes` as a checkpoint; checks that `train --init` (under mpirun
    /// when `np` is given) and `eval --init` both refuse it with `problem`.
    func assertCheckpointRefused(_ bytes: Data, _ problem: String, name: String, np: Int? = nil,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let ckpt = d + "/\(name).safetensors"
        try bytes.write(to: URL(fileURLWithPath: ckpt))
        let out = try earlierOut(d + "/out")
        var r = try Self.run(Self.train(d + "/toy.npz", out: out, ["--init", ckpt]), np: np)
        assertFails(r, problem, names: [ckpt], np: np, file: file, line: line)
        assertUntouched(out, file: file, line: line)
        r = try Self.run(["eval", "--data", d + "/toy.npz", "--model", "resnet8", "--init", ckpt])
        assertFails(r, problem, names: [ckpt], file: file, line: line)
        XCTAssertEqual(FileManager.default.contents(atPath: ckpt), bytes, "the checkpoint changed", file: file, line: line)
    }

    func testCheckpointIsValidToBeginWith() throws {
        // The file the checkpoint cases spoil loads: their failures are the spoiling's.
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let (h, data) = try Self.checkpointParts()
        try Self.safetensors(h, data).write(to: URL(fileURLWithPath: d + "/ok.safetensors"))
        let r = try Self.run(["eval", "--data", d + "/toy.npz", "--model", "resnet8", "--init", d + "/ok.safetensors"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("test_accuracy"), r.out)
    }

    func testCheckpointHeaderLengthPastEndUnderMPI() throws {
        let (h, data) = try Self.checkpointParts()
        var b = try Self.safetensors(h, data)
        b.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(b.count).littleEndian) { Array($0) })
        try assertCheckpointRefused(b, "header length \(b.count) exceeds file size \(b.count)", name: "past-end", np: 2)
        // A length no file has (2⁶⁴ − 1): the same message, not a crash.
        b.replaceSubrange(0..<8, with: [UInt8](repeating: 0xFF, count: 8))
        try assertCheckpointRefused(b, "header length 18446744073709551615 exceeds file size", name: "huge-length")
    }

    func testCheckpointOverlappingDataOffsets() throws {
        // fc.bias (3 floats) placed over the first bytes of fc.weight.
        var (h, data) = try Self.checkpointParts()
        var bias = Self.entry(h, "fc.bias")
        let w = (Self.entry(h, "fc.weight")["data_offsets"] as! [Int])[0]
        bias["data_offsets"] = [w, w + 12]
        h["fc.bias"] = bias
        try assertCheckpointRefused(try Self.safetensors(h, data), "overlaps", name: "overlap")
    }

    func testCheckpointDataOffsetsOutOfRange() throws {
        var (h, data) = try Self.checkpointParts()
        var bias = Self.entry(h, "fc.bias")
        bias["data_offsets"] = [data.count, data.count + 12]
        h["fc.bias"] = bias
        try assertCheckpointRefused(try Self.safetensors(h, data),
                                    "fc.bias data_offsets [\(data.count), \(data.count + 12)] out of bounds", name: "out-of-range")
    }

    func testCheckpointWrongDtype() throws {
        var (h, data) = try Self.checkpointParts()
        var weight = Self.entry(h, "fc.weight")
        weight["dtype"] = "F8_E4M3"
        h["fc.weight"] = weight
        try assertCheckpointRefused(try Self.safetensors(h, data), "fc.weight has unsupported dtype F8_E4M3", name: "dtype")
    }

    func testCheckpointMissingTensor() throws {
        var (h, data) = try Self.checkpointParts()
        h["fc.bias"] = nil
        try assertCheckpointRefused(try Self.safetensors(h, data), "does not match the model; missing: fc.bias", name: "missing")
    }

    func testCheckpointWrongShapeUnderMPI() throws {
        // A 4-class model's checkpoint for the 3-class toy data.
        let (h, data) = try Self.checkpointParts(numClasses: 4)
        try assertCheckpointRefused(try Self.safetensors(h, data), "fc.weight has shape [4, 64], the model expects [3, 64]",
                                    name: "shape", np: 2)
    }

    // MARK: A disk that fills while a checkpoint is written

    func testDiskFullWhileWritingCheckpointUnderMPI() throws {
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let mnt = d + "/small"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        guard FileManager.default.isExecutableFile(atPath: "/bin/mount") else { throw XCTSkip("no /bin/mount") }
        let m = try CLITests.run(["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], program: "/bin/mount")
        guard m.status == 0 else { throw XCTSkip("cannot mount a 64 KiB tmpfs (mount: \(m.err.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        addTeardownBlock { _ = try? CLITests.run([mnt], program: "/bin/umount") }
        // resnet8's checkpoint (≈ 0.6 MB) does not fit.
        let out = try earlierOut(mnt + "/out")
        let r = try Self.run(Self.train(d + "/toy.npz", out: out), np: 2)
        assertFails(r, "No space left on device", names: [out + "/checkpoint.safetensors"], np: 2)
        assertUntouched(out)
    }

    // MARK: Flags out of range

    func testFlagsOutOfRange() throws {
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let out = try earlierOut(d + "/out")
        let cases: [([String], String)] = [
            (["--batch-size", "0"], "--batch-size must be positive"),
            (["--epochs=-1"], "--epochs must be positive"),
            (["--lr", "0"], "--lr must be positive"),
            (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
            (["--mixup=-1"], "--mixup must be ≥ 0"),
            // A negative number after a space is the option's value, not a flag.
            (["--epochs", "-1"], "--epochs must be positive, got -1.0"),
            (["--mixup", "-1"], "--mixup must be ≥ 0, got -1.0"),
            (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
            (["--wd", "-0.1"], "--wd must be ≥ 0, got -0.1"),
            (["--warmup-epochs", "-2"], "--warmup-epochs must be ≥ 0"),
        ]
        for (flags, problem) in cases {
            // The flag under test comes last and overrides the defaults of `train`.
            let r = try Self.run(Self.train(d + "/toy.npz", out: out) + flags)
            assertFails(r, problem)
        }
        assertUntouched(out)
    }

    func testBatchNotDivisibleByRanksUnderMPI() throws {
        let d = try tempDir()
        try Self.writeNPZ(Self.toyArrays(), to: d + "/toy.npz")
        let out = try earlierOut(d + "/out")
        let r = try Self.run(Self.train(d + "/toy.npz", out: out, ["--batch-size", "15"]), np: 2)
        assertFails(r, "--batch-size 15 is not divisible by the number of ranks 2", np: 2)
        assertUntouched(out)
    }
}
