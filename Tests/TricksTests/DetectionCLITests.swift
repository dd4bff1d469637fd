import XCTest
@testable import Tricks

/// The data commands end to end through the real binary: an image folder made from
/// Fashion-MNIST PNGs trained by `train --data DIR`, `make-scenes` and `detection-data`.
final class DetectionCLITests: XCTestCase {
    /// `DIR/train/<class>/*.png` and `DIR/test/<class>/*.png` from the first Fashion-MNIST images.
    static func writeImageFolder(_ dir: String, train: Int, test: Int) throws -> DatasetSplits {
        let f = try DetectionDataTests.fashion()
        for (split, set, n) in [("train", f.train, train), ("test", f.test, test)] {
            for i in 0..<n {
                let cls = "class\(set.labels[i])"
                try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/\(cls)", withIntermediateDirectories: true)
                let im = Image(width: 28, height: 28, channels: 1, pixels: Array(set.pixels[i * 784..<(i + 1) * 784]))
                try im.write(String(format: "%@/%@/%@/%05d.png", dir, split, cls, i))
            }
        }
        return f
    }

    func testImageFolderLoadsLosslesslyAndTrains() throws {
        let d = try tempDir()
        let f = try Self.writeImageFolder(d + "/folder", train: 300, test: 100)
        let loaded = try DatasetLoader.load(d + "/folder")
        XCTAssertEqual(loaded.classNames, (0..<10).map { "class\($0)" })
        XCTAssertEqual(loaded.numClasses, 10)
        XCTAssertEqual([loaded.train.count, loaded.test.count], [300, 100])
        XCTAssertEqual([loaded.train.channels, loaded.train.height, loaded.train.width], [1, 28, 28])
        // Files are read class by class in name order: compare as a multiset per class.
        for k in 0..<10 {
            let want = (0..<300).filter { f.train.labels[$0] == k }.map { Array(f.train.pixels[$0 * 784..<($0 + 1) * 784]) }
            let got = (0..<300).filter { loaded.train.labels[$0] == k }.map { Array(loaded.train.pixels[$0 * 784..<($0 + 1) * 784]) }
            XCTAssertEqual(got, want, "class \(k)")
        }
        let small = try DatasetLoader.load(d + "/folder", imageSize: 14)
        XCTAssertEqual([small.train.height, small.train.width], [14, 14])

        let r = try CLITests.run(["train", "--data", d + "/folder", "--model", "resnet8", "--batch-size", "32",
                                  "--max-steps", "6", "--out", d + "/out"])
        XCTAssertEqual(r.status, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data((r.out.split(separator: "\n").last ?? "").utf8)) as? [String: Any]
        XCTAssertEqual(json?["steps"] as? Int, 6)
        let accuracy = try XCTUnwrap(json?["test_accuracy"] as? Double)
        // eval of the written checkpoint gives train's accuracy; a path with a quote stays valid JSON.
        let odd = d + "/out/a \"quoted\" name.safetensors"
        try FileManager.default.copyItem(atPath: d + "/out/model.safetensors", toPath: odd)
        let e = try CLITests.run(["eval", "--data", d + "/folder", "--model", "resnet8", "--init", odd])
        XCTAssertEqual(e.status, 0, e.err)
        let ej = try JSONSerialization.jsonObject(with: Data(e.out.utf8)) as? [String: Any]
        XCTAssertEqual(ej?["checkpoint"] as? String, odd)
        XCTAssertEqual(try XCTUnwrap(ej?["test_accuracy"] as? Double), accuracy, accuracy: 1e-9)
    }

    func testImageFolderErrors() throws {
        let d = try tempDir()
        _ = try Self.writeImageFolder(d + "/f", train: 40, test: 10)
        // A corrupt file names itself.
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: d + "/f/train/class0/zzz.png"))
        var r = try CLITests.run(["train", "--data", d + "/f", "--max-steps", "1", "--model", "resnet8", "--batch-size", "8"])
        XCTAssertEqual(r.status, 2, r.err)
        XCTAssertTrue(r.err.contains("f/train/class0/zzz.png") && r.err.contains("not a JPEG or PNG"), r.err)
        try FileManager.default.removeItem(atPath: d + "/f/train/class0/zzz.png")
        // Mixed sizes without --image-size.
        try Image(width: 20, height: 28, fill: [3]).write(d + "/f/test/class1/odd.png")
        r = try CLITests.run(["train", "--data", d + "/f", "--max-steps", "1", "--model", "resnet8", "--batch-size", "8"])
        XCTAssertEqual(r.status, 2, r.err)
        XCTAssertTrue(r.err.contains("odd.png: 20×28") && r.err.contains("--image-size"), r.err)
        // A class the training split lacks; no test split.
        try FileManager.default.createDirectory(atPath: d + "/f/test/class99", withIntermediateDirectories: true)
        XCTAssertThrowsError(try DatasetLoader.load(d + "/f", imageSize: 28)) { XCTAssertTrue("\($0)".contains("class99"), "\($0)") }
        try FileManager.default.removeItem(atPath: d + "/f/test")
        XCTAssertThrowsError(try DatasetLoader.load(d + "/f")) { XCTAssertTrue("\($0)".contains("no val/ or test/"), "\($0)") }
        r = try CLITests.run(["train", "--image-size", "32", "--max-steps", "1", "--data", d + "/nonexistent-folder"])
        XCTAssertEqual(r.status, 2, r.err)
    }

    func testMakeScenesAndDetectionData() throws {
        let d = try tempDir()
        var r = try CLITests.run(["make-scenes", "--out", d + "/scenes", "--train-count", "40", "--test-count", "10", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("wrote 40 training scenes"), r.out)
        let set = try VOCDataset(root: d + "/scenes", split: "train")
        XCTAssertEqual(set.count, 40)
        // The same seed writes the same annotations.
        r = try CLITests.run(["make-scenes", "--out", d + "/again", "--train-count", "40", "--test-count", "10", "--seed", "5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try VOCDataset(root: d + "/again", split: "train").boxes, set.boxes)

        r = try CLITests.run(["detection-data", "--data", d + "/scenes", "--batch-size", "4", "--steps", "3",
                              "--random-shapes", "64:128", "--shape-every", "1", "--mixup", "1.5", "--grid", d + "/grid.png", "--print"])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        let grid = try Image.read(d + "/grid.png")
        XCTAssertGreaterThan(grid.width, 4 * 64)
        r = try CLITests.run(["detection-data", "--data", d + "/scenes", "--describe"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out.split(separator: "\n").count, 40)

        for (args, needle) in [(["--random-shapes", "100,128"], "100 is not a multiple of 32"),
                               (["--batch-size", "0"], "--batch-size"),
                               (["--split", "val"], "ImageSets/Main/val.txt")] {
            r = try CLITests.run(["detection-data", "--data", d + "/scenes"] + args)
            XCTAssertNotEqual(r.status, 0, needle)
            XCTAssertTrue(r.err.contains(needle), "\(needle): \(r.err)")
        }
        try Data([0xFF, 0xD8, 0xFF, 0x00]).write(to: URL(fileURLWithPath: set.imagePaths[0]))
        r = try CLITests.run(["detection-data", "--data", d + "/scenes", "--no-shuffle", "--steps", "1"])
        XCTAssertEqual(r.status, 2, r.err)
        XCTAssertTrue(r.err.contains("train_000000.jpg"), r.err)
        r = try CLITests.run(["make-scenes", "--out", d + "/x", "--data", d + "/nonexistent"])
        XCTAssertEqual(r.status, 2, r.err)
        XCTAssertTrue(r.err.contains("nonexistent"), r.err)
    }
}

extension DetectionCLITests {
    static var detect: String { (CLITests.binary as NSString).deletingLastPathComponent + "/tricks-detect" }

    static func runDetect(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try CLITests.run(args, program: detect)
    }

    /// train → checkpoint → eval gives train's own mAP (weights, BN statistics, anchors and
    /// classes all travel in the file); predict writes JSON and a picture; bad input fails clearly.
    func testDetectorTrainEvalPredict() throws {
        let d = try tempDir()
        XCTAssertEqual(try CLITests.run(["make-scenes", "--out", d + "/s", "--train-count", "24", "--test-count", "6"]).status, 0)
        var r = try Self.runDetect(["train", "--data", d + "/s", "--batch-size", "4", "--max-steps", "6", "--width", "4",
                                    "--data-shape", "64", "--random-shapes", "64:96", "--shape-every", "2", "--threads", "1",
                                    "--out", d + "/run"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("ETA"), r.err)
        let train = try JSONSerialization.jsonObject(with: Data((r.out.split(separator: "\n").last ?? "").utf8)) as! [String: Any]
        XCTAssertEqual(train["steps"] as? Int, 6)
        r = try Self.runDetect(["eval", "--checkpoint", d + "/run/model.safetensors", "--data", d + "/s"])
        XCTAssertEqual(r.status, 0, r.err)
        let ev = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(ev["map50"] as! Double, train["map50"] as! Double, accuracy: 1e-9)
        XCTAssertEqual(ev["images"] as? Int, 6)
        // Per-class APs whose mean (over classes with ground truth) is the mAP.
        let ap = (ev["ap50"] as? [String: Any] ?? [:]).values.compactMap { $0 as? Double }
        XCTAssertFalse(ap.isEmpty)
        XCTAssertEqual(ap.reduce(0, +) / Double(max(ap.count, 1)), ev["map50"] as! Double, accuracy: 1e-9)
        let image = d + "/s/JPEGImages/test_000000.jpg"
        r = try Self.runDetect(["predict", "--checkpoint", d + "/run/model.safetensors", "--threshold", "0.001", "--draw", d + "/pred", image])
        XCTAssertEqual(r.status, 0, r.err)
        let p = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(p["image"] as? String, image)
        XCTAssertNotNil(p["detections"] as? [[String: Any]])
        let drawn = try Image.read(d + "/pred/test_000000.png"), src = try Image.read(image)
        XCTAssertEqual([drawn.width, drawn.height], [2 * src.width, 2 * src.height])
        r = try Self.runDetect(["predict", "--checkpoint", d + "/s/classes.txt", image])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("classes.txt") && r.err.contains("not safetensors"), r.err)
        r = try Self.runDetect(["train", "--data", d + "/s", "--data-shape", "100"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("multiple of 32"), r.err)
    }
}
