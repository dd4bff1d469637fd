import XCTest
@testable import Tricks

/// The `tricks-worker` binary: the final JSON line, output files, and clear errors with a non-zero exit.
final class CLITests: XCTestCase {
    static var binary: String {
        var products = Bundle(for: CLITests.self).bundleURL
        if products.pathExtension == "xctest" { products.deleteLastPathComponent() }
        return products.appendingPathComponent("tricks-worker").path
    }

    /// Starts the binary without any inherited MPI launcher variables.
    static func launch(_ args: [String], environment: [String: String] = [:], program: String = binary,
                       stdout: Pipe = Pipe(), stderr: Pipe = Pipe()) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        env["OPENBLAS_NUM_THREADS"] = "1"
        env.merge(environment) { $1 }
        p.environment = env
        p.standardOutput = stdout; p.standardError = stderr
        try p.run()
        return p
    }

    /// Runs the binary without any inherited MPI launcher variables.
    static func run(_ args: [String], environment: [String: String] = [:], program: String = binary) throws -> (status: Int32, out: String, err: String) {
        let o = Pipe(), e = Pipe()
        let p = try launch(args, environment: environment, program: program, stdout: o, stderr: e)
        let out = o.fileHandleForReading.readDataToEndOfFile(), err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    func testTrainPrintsJSONSummaryAndWritesCheckpoint() throws {
        let d = NSTemporaryDirectory() + "tricks-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: d) }
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        let r = try Self.run(["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "16",
                              "--max-steps", "4", "--out", d + "/out", "--label-smoothing", "0.1", "--nesterov",
                              "--lr-schedule", "step", "--lr-steps", "1,2", "--no-bias-decay"])
        XCTAssertEqual(r.status, 0, r.err)
        let last = r.out.split(separator: "\n").last.map(String.init) ?? ""
        let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
        XCTAssertEqual(json?["steps"] as? Int, 4)
        for k in ["train_loss", "test_accuracy", "images_per_second"] { XCTAssertNotNil(json?[k] as? Double, k) }
        let net = ResNet(depth: 8, inChannels: 1, numClasses: 3)
        XCTAssertNoThrow(try SafeTensors.load(d + "/out/model.safetensors", into: net.state))
        XCTAssertEqual(net.bn1.numBatchesTracked.pointee, 4)
    }

    func testErrorsAreClearAndNonZero() throws {
        var r = try Self.run(["train", "--batch-size", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--batch-size must be positive"), r.err)
        r = try Self.run(["train", "--data", "/nonexistent/data.npz", "--max-steps", "1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("/nonexistent/data.npz: no such file"), r.err)
        r = try Self.run(["train", "--frobnicate"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("frobnicate"), r.err)
        r = try Self.run(["train", "--model", "resnet21", "--data", "/nonexistent"])
        XCTAssertNotEqual(r.status, 0)
        r = try Self.run(["train", "--help"])
        XCTAssertEqual(r.status, 0)
        for flag in ["--data", "--model", "--batch-size", "--epochs", "--max-steps", "--lr", "--momentum", "--nesterov",
                     "--wd", "--no-bias-decay", "--lr-schedule", "--warmup-epochs", "--lr-steps", "--label-smoothing",
                     "--augment", "--no-shuffle", "--mean", "--std", "--init", "--out", "--seed"] {
            XCTAssertTrue(r.out.contains(flag), "help lacks \(flag)")
        }
    }

    func testKernelInstructionSetFromEnvironment() throws {
        // TRICKS_ISA lowers the kernels' instruction set; the training header names the set in
        // use; an unknown name, or a set this CPU lacks, ends the program with a clear message.
        let d = NSTemporaryDirectory() + "tricks-isa-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: d) }
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        let args = ["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "8", "--max-steps", "1"]
        for isa in KernelISA.supported {
            let r = try Self.run(args, environment: ["TRICKS_ISA": isa.description])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.out.contains("kernels \(isa) (CPU best \(KernelISA.best)"), r.out)
        }
        var r = try Self.run(args, environment: ["TRICKS_ISA": "sse9"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("TRICKS_ISA=sse9: unknown instruction set"), r.err)
        for isa in KernelISA.allCases where !isa.isSupported {
            r = try Self.run(args, environment: ["TRICKS_ISA": isa.description])
            XCTAssertEqual(r.status, 2)
            XCTAssertTrue(r.err.contains("TRICKS_ISA=\(isa): this CPU does not support it"), r.err)
        }
    }
}
