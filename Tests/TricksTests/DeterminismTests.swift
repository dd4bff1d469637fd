import Foundation
import XCTest
@testable import Tricks

/// The deterministic mode (`--deterministic`): the real binary under `mpirun` at np 1, 2, 4 and
/// 8 gives byte-identical model and checkpoint files, and the same logged numbers, for a whole
/// epoch with SyncBatchNorm, augmentation, shuffling and mixup; without the mode the files differ.
final class DeterminismTests: XCTestCase {
    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The logged numbers of a run's metrics.jsonl, without the throughput (a wall-clock figure).
    static func loggedNumbers(_ dir: String) throws -> [String] {
        try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            line.split(separator: ",").filter { !$0.contains("images_per_second") }.joined(separator: ",")
        }
    }

    func testWholeEpochIsBitIdenticalForEveryWorldSize() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz", train: 320, test: 40, side: 8)
        let net = ResNet(depth: 20, inChannels: 1, numClasses: 3, seed: 3)
        try withExtendedLifetime(net) { try SafeTensors.save(net.state, to: d + "/init.safetensors") }
        let base = ["train", "--data", d + "/toy.npz", "--model", "resnet20", "--init", d + "/init.safetensors",
                    "--batch-size", "32", "--epochs", "1", "--lr", "0.1", "--warmup-epochs", "0.3", "--log-every", "3",
                    "--bn", "sync", "--augment", "standard", "--mixup", "0.2", "--label-smoothing", "0.1", "--seed", "11"]
        for np in [1, 2, 4, 8] {
            let r = try MPITests.run(np: np, base + ["--deterministic", "--out", d + "/det\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
            XCTAssertTrue(r.out.contains("fixed-order sums over 8 micro-shards"), r.out)
        }
        let model1 = try Self.bytes(d + "/det1/model.safetensors"), ckpt1 = try Self.bytes(d + "/det1/checkpoint.safetensors")
        let logged1 = try Self.loggedNumbers(d + "/det1")
        XCTAssertGreaterThan(logged1.count, 3)
        for np in [2, 4, 8] {
            let model = try Self.bytes(d + "/det\(np)/model.safetensors")
            let gap = try MPITests.totalDifference(d + "/det\(np)/model.safetensors", d + "/det1/model.safetensors")
            XCTAssertTrue(model == model1, "np=\(np): model.safetensors differs from np=1 (relative difference \(gap))")
            XCTAssertTrue(try Self.bytes(d + "/det\(np)/checkpoint.safetensors") == ckpt1, "np=\(np): checkpoint differs")
            XCTAssertEqual(try Self.loggedNumbers(d + "/det\(np)"), logged1, "np=\(np): logged losses or test metrics differ")
        }
        // A run stopped after 4 steps at np=2 and resumed at np=4 ends where the others do.
        var part = try MPITests.run(np: 2, base + ["--deterministic", "--max-steps", "4", "--out", d + "/part"])
        XCTAssertEqual(part.status, 0, part.err)
        var resume = base
        if let i = resume.firstIndex(of: "--init") { resume.removeSubrange(i...(i + 1)) }
        part = try MPITests.run(np: 4, resume + ["--deterministic", "--resume", d + "/part", "--out", d + "/resumed"])
        XCTAssertEqual(part.status, 0, part.err)
        XCTAssertTrue(part.out.contains("resumed from"), part.out)
        XCTAssertTrue(try Self.bytes(d + "/resumed/model.safetensors") == model1, "stopped at np=2, resumed at np=4: model differs")
        XCTAssertTrue(try Self.bytes(d + "/resumed/checkpoint.safetensors") == ckpt1, "stopped at np=2, resumed at np=4: checkpoint differs")
        // Over TCP, the transport between nodes, as over shared memory.
        let tcp = try MPITests.run(np: 4, base + ["--deterministic", "--out", d + "/tcp4"], mpiFlags: ["--mca", "btl", "tcp,self"])
        XCTAssertEqual(tcp.status, 0, tcp.err)
        XCTAssertTrue(try Self.bytes(d + "/tcp4/model.safetensors") == model1, "np=4 over TCP: model.safetensors differs")
        XCTAssertTrue(try Self.bytes(d + "/tcp4/checkpoint.safetensors") == ckpt1, "np=4 over TCP: checkpoint differs")
        // The control: the default mode on the same runs gives other bits at another world size.
        for np in [1, 4] {
            let r = try MPITests.run(np: np, base + ["--out", d + "/default\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
        }
        XCTAssertFalse(try Self.bytes(d + "/default1/model.safetensors") == Self.bytes(d + "/default4/model.safetensors"),
                       "the default mode agreed to the bit as well: the test would not see a broken deterministic mode")
        // And both modes compute the same step: after one, the deterministic run is the default
        // one up to rounding (over a whole epoch float32 training magnifies rounding too far to
        // compare; a wrong sum would be off by a sample's share, 1/32).
        for mode in ["det", "default"] {
            let r = try MPITests.run(np: 2, base + ["--max-steps", "1", "--out", d + "/one-\(mode)"] + (mode == "det" ? ["--deterministic"] : []))
            XCTAssertEqual(r.status, 0, r.err)
        }
        let oneStep = try MPITests.totalDifference(d + "/one-det/model.safetensors", d + "/one-default/model.safetensors")
        print("deterministic vs default mode after one step, over all tensors: \(oneStep)")
        XCTAssertLessThan(oneStep, 1e-5)
    }

    /// Rank counts the mode cannot serve end the job with the reason, before training.
    func testUnsupportedRankCountsAreRefused() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz", train: 64, test: 16, side: 8)
        let base = ["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "24", "--max-steps", "1", "--deterministic"]
        var r = try MPITests.run(np: 3, base)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--deterministic needs a power-of-two number of ranks (1, 2, 4, …), got 3"), r.err)
        r = try MPITests.run(np: 2, base + ["--micro-shards", "1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--deterministic with 2 ranks needs --micro-shards of at least 2, got 1"), r.err)
        r = try MPITests.run(np: 2, base.map { $0 == "24" ? "20" : $0 })
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--deterministic needs --batch-size divisible by --micro-shards 8, got 20"), r.err)
        r = try MPITests.run(np: 2, base + ["--bn", "local"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--deterministic needs --bn sync"), r.err)
    }

    /// The detector at one image per worker with random shapes, mixup and augmentation: np 1, 2,
    /// 4 and 8 (global batch 8) write the same model.safetensors and log the same losses and mAP.
    func testDetectorIsBitIdenticalForEveryWorldSize() throws {
        let d = try tempDir()
        let m = try CLITests.run(["make-scenes", "--out", d + "/scenes", "--train-count", "32", "--test-count", "8"])
        XCTAssertEqual(m.status, 0, m.err)
        let detect = (CLITests.binary as NSString).deletingLastPathComponent + "/tricks-detect"
        let common = ["train", "--data", d + "/scenes", "--batch-size", "8", "--epochs", "1", "--width", "4",
                      "--data-shape", "64", "--random-shapes", "32,64,96", "--shape-every", "1", "--mixup", "1.5",
                      "--label-smoothing", "--threads", "1", "--lr", "0.05", "--log-every", "1", "--seed", "4"]
        func run(np: Int, _ extra: [String]) throws -> (status: Int32, out: String, err: String) {
            try MPITests.run(np: np, common + extra, program: detect)
        }
        /// The progress and evaluation lines without throughput and time.
        func logged(_ err: String) -> [String] {
            err.split(separator: "\n").filter { $0.hasPrefix("step ") || $0.hasPrefix("eval ") }.map { line in
                line.components(separatedBy: "  ").filter { !$0.contains("img/s") && !$0.hasPrefix("ETA") }.joined(separator: "  ")
            }
        }
        var logs: [Int: [String]] = [:]
        for np in [1, 2, 4, 8] {
            let r = try run(np: np, ["--deterministic", "--out", d + "/det\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
            logs[np] = logged(r.err)
        }
        XCTAssertEqual(logs[1]!.filter { $0.hasPrefix("step ") }.count, 4, logs[1]!.joined(separator: "\n"))
        let sides = Set(logs[1]!.compactMap { line in line.range(of: "side [0-9]+", options: .regularExpression).map { String(line[$0]) } })
        XCTAssertGreaterThan(sides.count, 1, "random shapes should change the side within the epoch: \(sides)")
        let model1 = try Self.bytes(d + "/det1/model.safetensors")
        for np in [2, 4, 8] {
            let gap = try MPITests.totalDifference(d + "/det\(np)/model.safetensors", d + "/det1/model.safetensors")
            XCTAssertTrue(try Self.bytes(d + "/det\(np)/model.safetensors") == model1,
                          "np=\(np): the detector's model.safetensors differs from np=1 (relative difference \(gap))")
            XCTAssertEqual(logs[np]!, logs[1]!, "np=\(np): logged losses or mAP differ")
        }
        // The control: without the mode np=8 × 1 image and one process on 8 differ in the last bits.
        for np in [1, 8] {
            let r = try run(np: np, ["--out", d + "/default\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
        }
        XCTAssertFalse(try Self.bytes(d + "/default1/model.safetensors") == Self.bytes(d + "/default8/model.safetensors"),
                       "the default mode agreed to the bit as well: the test would not see a broken deterministic mode")
    }
}
