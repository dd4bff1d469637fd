import XCTest
@testable import Tricks

/// Multi-process tests: the real `tricks-worker` binary under `mpirun` at np 2, 4 and 8
/// (oversubscribed on a small machine).
final class MPITests: XCTestCase {
    static var mpirun: String? {
        ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts `mpirun -np N tricks-worker ARGS` with the flags a root, oversubscribed run needs and
    /// without the MPI variables a parent process may carry.
    static func launch(np: Int, _ args: [String], stdout: Pipe = Pipe(), stderr: Pipe = Pipe(),
                       program: String = CLITests.binary, mpiFlags: [String] = []) throws -> Process {
        guard let mpirun else { throw XCTSkip("mpirun not installed: run launch/setup.sh") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        var flags = ["--oversubscribe", "-np", "\(np)", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { flags.insert("--allow-run-as-root", at: 0) }
        p.arguments = flags + mpiFlags + [program] + args
        p.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        p.standardOutput = stdout; p.standardError = stderr
        try p.run()
        return p
    }

    static func run(np: Int, _ args: [String], program: String = CLITests.binary,
                    mpiFlags: [String] = []) throws -> (status: Int32, out: String, err: String) {
        let o = Pipe(), e = Pipe()
        let p = try launch(np: np, args, stdout: o, stderr: e, program: program, mpiFlags: mpiFlags)
        let out = o.fileHandleForReading.readDataToEndOfFile(), err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    func testSyncBatchNormMatchesConcatenatedBatch() throws {
        for np in [2, 4, 8] {
            let r = try Self.run(np: np, ["selftest", "syncbn"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
            XCTAssertTrue(r.out.contains("cases passed on \(np) ranks"), "np=\(np): \(r.out)")
        }
    }

    /// Per float tensor of two checkpoints, by name: Σ(a − b)² and Σb².
    static func squaredSums(_ a: String, _ b: String) throws -> [String: (diff: Double, ref: Double)] {
        let da = try SafeTensors.decode(Data(contentsOf: URL(fileURLWithPath: a)), path: a)
        let db = try SafeTensors.decode(Data(contentsOf: URL(fileURLWithPath: b)), path: b)
        var out: [String: (diff: Double, ref: Double)] = [:]
        for (k, va) in da {
            guard case .float(let x) = va.values, case .float(let y)? = db[k]?.values else { continue }
            var num = 0.0, den = 0.0
            for i in 0..<x.count { num += Double(x[i] - y[i]) * Double(x[i] - y[i]); den += Double(y[i]) * Double(y[i]) }
            out[k] = (num, den)
        }
        return out
    }

    /// Per-tensor relative difference ‖a − b‖ / max(‖b‖, tiny) between two checkpoints, by name.
    static func differences(_ a: String, _ b: String) throws -> [String: Double] {
        try squaredSums(a, b).mapValues { $0.diff.squareRoot() / max($0.ref.squareRoot(), 1e-12) }
    }

    /// The relative difference over all float tensors together, ‖a − b‖ / ‖b‖: rounding that the
    /// near-zero batch-norm biases magnify in a few steps weighs by their size, not by theirs alone.
    static func totalDifference(_ a: String, _ b: String) throws -> Double {
        let sums = try squaredSums(a, b)
        precondition(!sums.isEmpty, "no float tensors in common")
        let (num, den) = sums.values.reduce((0.0, 0.0)) { ($0.0 + $1.diff, $0.1 + $1.ref) }
        return num.squareRoot() / max(den.squareRoot(), 1e-12)
    }

    /// Turns Winograd F(4×4, 3×3) off for the multi-step comparisons. Steps amplify rounding
    /// differences through the near-zero batch-norm biases: the direct kernels' (1e-7 of a conv's
    /// output) stay within those tests' tolerances, F(4×4, 3×3)'s (1e-6, on the toy's 8×8 planes)
    /// do not (3e-4 after 5 steps, 8e-2 after 20). testWorldSizeInvarianceOnWinograd covers it
    /// at one step.
    static let noWinograd4 = ["--winograd4-min-channels", "100000"]

    /// Writes the toy data set and a shared initial checkpoint; returns the common training flags.
    func setUpRun(_ d: String, side: Int = 8) throws -> [String] {
        try TrainingTests.writeToyNPZ(d + "/toy.npz", train: 640, test: 64, side: side)
        let net = ResNet(depth: 20, inChannels: 1, numClasses: 3, seed: 3)
        try SafeTensors.save(net.state, to: d + "/init.safetensors")
        return ["train", "--data", d + "/toy.npz", "--model", "resnet20", "--init", d + "/init.safetensors",
                "--batch-size", "32", "--max-steps", "20", "--lr", "0.002", "--log-every", "10"]
    }

    func testWorldSizeInvarianceWithSyncBN() throws {
        let d = try tempDir()
        let base = try setUpRun(d) + ["--no-shuffle", "--augment", "none"] + Self.noWinograd4
        var r = try Self.run(np: 1, base + ["--bn", "sync", "--out", d + "/np1"])
        XCTAssertEqual(r.status, 0, r.err)
        for np in [2, 4, 8] {
            r = try Self.run(np: np, base + ["--bn", "sync", "--check-replicas", "5", "--out", d + "/np\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
            let diff = try Self.differences(d + "/np\(np)/model.safetensors", d + "/np1/model.safetensors")
            XCTAssertEqual(diff.count, ResNet(depth: 20, inChannels: 1, numClasses: 3).state.filter { if case .float = $0.storage { return true }; return false }.count)
            let worst = diff.max { $0.value < $1.value }!
            XCTAssertLessThan(worst.value, 1e-4, "np=\(np): \(worst.key) differs by \(worst.value)")
        }
        // Local BN normalizes each rank's 8 samples alone: the result visibly depends on N.
        r = try Self.run(np: 4, base + ["--bn", "local", "--out", d + "/local4"])
        XCTAssertEqual(r.status, 0, r.err)
        let diff = try Self.differences(d + "/local4/model.safetensors", d + "/np1/model.safetensors")
        XCTAssertGreaterThan(diff.values.max()!, 1e-3)
    }

    func testWorldSizeInvarianceOnWinograd() throws {
        // 16×16 images: every stride-1 3×3 layer of stages 1 and 2 (16×16 and 8×8 planes, the
        // latter eight images to a vector, an octet part-filled at np 8) through Winograd
        // F(4×4, 3×3). One step (forward, backward, the
        // all-reduced gradient, the update) on 1, 2, 4 and 8 ranks agrees to rounding (measured
        // ≤ 1.3e-7 relative per tensor; a wrong transform or a mis-summed gradient group is
        // ≥ 1e-3), and with the direct kernels within F(4×4, 3×3)'s rounding as the batch-norm
        // biases' near-cancelling sums magnify it (measured 1e-2; a wrong kernel is O(1)).
        // Later steps run on weights that differ in the last bits, which F(4×4, 3×3)'s rounding
        // turns into differences of its own size (1e-6 of a conv's output) and those biases, still
        // near zero, magnify to 5e-3 relative; the other world-size tests cover later steps.
        let d = try tempDir()
        let base = try setUpRun(d, side: 16) + ["--no-shuffle", "--augment", "none", "--bn", "sync", "--max-steps", "1"]
        let wino = base + ["--winograd-min-channels", "0", "--winograd-weight-grad-min-channels", "0", "--winograd4-min-channels", "0"]
        var r = try Self.run(np: 1, base + ["--winograd-min-channels", "100000", "--winograd-weight-grad-min-channels", "100000",
                                            "--winograd4-min-channels", "100000", "--out", d + "/direct"])
        XCTAssertEqual(r.status, 0, r.err)
        for np in [1, 2, 4, 8] {
            r = try Self.run(np: np, wino + ["--out", d + "/np\(np)"])
            XCTAssertEqual(r.status, 0, "np=\(np): \(r.err)")
            let ref = np == 1 ? d + "/direct" : d + "/np1"
            let diff = try Self.differences(d + "/np\(np)/model.safetensors", ref + "/model.safetensors")
            let worst = diff.max { $0.value < $1.value }!
            XCTAssertLessThan(worst.value, np == 1 ? 5e-2 : 1e-5, "np=\(np): \(worst.key) differs by \(worst.value)")
            if np == 1 { XCTAssertGreaterThan(worst.value, 0, "identical to the direct kernels: Winograd not in use?") }
        }
    }

    func testWorldSizeInvarianceWithAugmentationAndShuffling() throws {
        // Shuffled, augmented batches sharded over 4 ranks give the same training as one rank:
        // a sample dealt to the wrong rank or augmented differently shows from the first step
        // (it moves that step's gradient by a whole sample's share, 1/32). Compared after 5 steps over all tensors
        // together: per tensor, the near-zero batch-norm biases magnify the ranks' different
        // summation orders (rounding) within a few steps, by how much depending on the kernels'
        // lane counts (measured 1e-6 with AVX-512's 16 lanes, 2e-4 with AVX2's 8); on this toy
        // with augmentation, longer runs amplify rounding by 10³–10⁴ at some schedule lengths.
        let d = try tempDir()
        let base = try setUpRun(d) + ["--augment", "standard", "--seed", "5", "--bn", "sync", "--max-steps", "5"] + Self.noWinograd4
        var r = try Self.run(np: 1, base + ["--out", d + "/np1"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try Self.run(np: 4, base + ["--out", d + "/np4"])
        XCTAssertEqual(r.status, 0, r.err)
        let total = try Self.totalDifference(d + "/np4/model.safetensors", d + "/np1/model.safetensors")
        print("np=4 vs np=1 after 5 steps, over all tensors: \(total)")
        XCTAssertLessThan(total, 1e-5, "np=4 differs from np=1 by \(total) over all tensors")
    }

    func testOnlyRankZeroPrintsAndErrorsEndTheJob() throws {
        let d = try tempDir()
        let base = try setUpRun(d)
        var r = try Self.run(np: 2, base + ["--max-steps", "2"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out.split(separator: "\n").filter { $0.hasPrefix("{\"steps\"") }.count, 1, r.out)
        XCTAssertEqual(r.out.split(separator: "\n").filter { $0.hasPrefix("training resnet20") }.count, 1, r.out)
        // A batch that does not split over the ranks: every rank stops with a clear message.
        r = try Self.run(np: 4, base + ["--batch-size", "30"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--batch-size 30 is not divisible by the number of ranks 4"), r.err)
        // A missing data file.
        r = try Self.run(np: 2, ["train", "--data", d + "/missing.npz", "--max-steps", "1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("missing.npz: no such file"), r.err)
    }

    func testKilledRankEndsTheJobPromptly() throws {
        let d = try tempDir()
        let base = try setUpRun(d)
        let o = Pipe()
        let p = try Self.launch(np: 2, base + ["--max-steps", "100000", "--log-every", "1", "--out", d + "/kill"], stdout: o)
        // Wait for the first progress line, then kill one worker.
        let firstLine = Date()
        var seen = ""
        while !seen.contains("step 1/") && Date().timeIntervalSince(firstLine) < 120 {
            seen += String(decoding: o.fileHandleForReading.availableData, as: UTF8.self)
        }
        XCTAssertTrue(seen.contains("step 1/"), seen)
        let pg = Process()
        pg.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        pg.arguments = ["-9", "-f", "-n", "tricks-worker.*\(d)/kill"]
        try pg.run(); pg.waitUntilExit()
        XCTAssertEqual(pg.terminationStatus, 0, "no worker found to kill")
        let killed = Date()
        while p.isRunning && Date().timeIntervalSince(killed) < 10 { usleep(100_000) }
        let running = p.isRunning
        if running { p.terminate() }
        XCTAssertFalse(running, "mpirun still running 10 s after a rank was killed")
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
    }
}

extension MPITests {
    /// Random shapes, the shuffle, augmentation and mixup are keyed by (seed, step) and
    /// (seed, epoch, sample): at np=4 each step has the same shape as at np=1 and the four ranks'
    /// slices put together are np=1's batch, sample for sample and box for box.
    func testDetectionBatchesAgreeAcrossWorldSizes() throws {
        let d = try tempDir()
        let m = try CLITests.run(["make-scenes", "--out", d, "--train-count", "48", "--test-count", "4"])
        XCTAssertEqual(m.status, 0, m.err)
        let args = ["detection-data", "--data", d, "--batch-size", "8", "--steps", "5", "--random-shapes", "64:160",
                    "--shape-every", "2", "--mixup", "1.5", "--print", "--threads", "1"]
        func parse(_ out: String) throws -> [Int: [(rank: Int, side: Int, samples: [Int], boxes: String)]] {
            var steps: [Int: [(Int, Int, [Int], String)]] = [:]
            for line in out.split(separator: "\n") where line.hasPrefix("{\"rank\"") {
                let j = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                let boxes = try JSONSerialization.data(withJSONObject: j["boxes"]!)
                steps[j["step"] as! Int, default: []].append((j["rank"] as! Int, j["side"] as! Int, j["samples"] as! [Int],
                                                             String(decoding: boxes, as: UTF8.self)))
            }
            return steps
        }
        let one = try CLITests.run(args)
        XCTAssertEqual(one.status, 0, one.err)
        let four = try Self.run(np: 4, args)
        XCTAssertEqual(four.status, 0, four.err)
        let a = try parse(one.out), b = try parse(four.out)
        XCTAssertEqual(a.count, 5); XCTAssertEqual(b.count, 5)
        var sides = Set<Int>()
        for step in 0..<5 {
            guard let whole = a[step]?.first, let parts = b[step]?.sorted(by: { $0.rank < $1.rank }), parts.count == 4 else {
                XCTFail("step \(step) missing"); continue
            }
            sides.insert(whole.side)
            XCTAssertEqual(Set(parts.map(\.side)), [whole.side], "step \(step)")
            XCTAssertEqual(parts.flatMap(\.samples), whole.samples, "step \(step)")
            // Boxes: np=1's list of 8 per-image lists equals the four ranks' lists concatenated.
            let joined = "[" + parts.map { String($0.boxes.dropFirst().dropLast()) }.joined(separator: ",") + "]"
            XCTAssertEqual(joined, whole.boxes, "step \(step)")
        }
        XCTAssertGreaterThan(sides.count, 1, "the shape should change over 5 steps redrawn every 2")
    }
}

extension MPITests {
    /// The detector at one image per worker: `mpirun -np 8` with SyncBatchNorm takes the same
    /// first step as one process on the 8-image batch (to float rounding, over all tensors
    /// together); with local BN (batch statistics of one image) it does not.
    func testDetectorAtOneImagePerWorkerMatchesOneProcess() throws {
        let d = try tempDir()
        let m = try CLITests.run(["make-scenes", "--out", d + "/scenes", "--train-count", "16", "--test-count", "4"])
        XCTAssertEqual(m.status, 0, m.err)
        let detect = (CLITests.binary as NSString).deletingLastPathComponent + "/tricks-detect"
        let common = ["train", "--data", d + "/scenes", "--batch-size", "8", "--max-steps", "1", "--width", "4",
                      "--data-shape", "64", "--mixup", "1.5", "--label-smoothing", "--no-eval", "--threads", "1", "--lr", "0.05"]
        func run(np: Int, _ extra: [String]) throws -> (Int32, String) {
            if np == 1 {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: detect)
                p.arguments = common + extra
                p.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
                let e = Pipe(); p.standardError = e; p.standardOutput = Pipe()
                try p.run()
                let err = String(decoding: e.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                p.waitUntilExit()
                return (p.terminationStatus, err)
            }
            let r = try Self.run(np: np, common + extra, program: detect)
            return (r.status, r.err)
        }
        var r = try run(np: 1, ["--out", d + "/one"])
        XCTAssertEqual(r.0, 0, r.1)
        r = try run(np: 8, ["--out", d + "/sync", "--bn", "sync"])
        XCTAssertEqual(r.0, 0, r.1)
        XCTAssertTrue(r.1.contains("BN sync over 8 ranks"), r.1)
        r = try run(np: 8, ["--out", d + "/local", "--bn", "local"])
        XCTAssertEqual(r.0, 0, r.1)
        func total(_ a: String) throws -> Double {
            let s = try Self.squaredSums(a, d + "/one/model.safetensors")
            return (s.values.map(\.diff).reduce(0, +) / s.values.map(\.ref).reduce(0, +)).squareRoot()
        }
        let sync = try total(d + "/sync/model.safetensors"), local = try total(d + "/local/model.safetensors")
        print("detector, first step at np=8 × 1 image against np=1 × 8, relative difference over all tensors: SyncBN \(sync), local BN \(local)")
        XCTAssertLessThan(sync, 1e-5, "np=8 × 1 image with SyncBN vs one process on 8 images")
        XCTAssertGreaterThan(local, 100 * max(sync, 1e-9), "local BN at one image per worker should differ")
    }
    /// --check-collectives: ranks that issue different collectives end the job naming each one's
    /// (instead of a silently wrong SyncBatchNorm), a rank that never arrives ends it after the
    /// timeout (instead of a hang), and a correct job trains as usual.
    func testCheckedCollectivesNameTheMismatch() throws {
        let t0 = Date()
        let mismatch = try Self.run(np: 2, ["selftest", "collective-mismatch"])
        XCTAssertEqual(mismatch.status, 5, mismatch.err)
        XCTAssertTrue(mismatch.err.contains("rank 0: collective #1: SyncBatchNorm a.bn forward"), mismatch.err)
        XCTAssertTrue(mismatch.err.contains("rank 1: collective #1: SyncBatchNorm b.bn forward"), mismatch.err)
        XCTAssertFalse(mismatch.out.contains("no error was raised"), mismatch.out)
        let t1 = Date()
        let hang = try Self.run(np: 2, ["selftest", "collective-hang"])
        XCTAssertEqual(hang.status, 5, hang.err)
        XCTAssertTrue(hang.err.contains("rank 0 waited 3 s for the other ranks at collective #1: SyncBatchNorm a.bn forward"), hang.err)
        XCTAssertLessThan(Date().timeIntervalSince(t1), 40, "the hung rank sleeps 60 s: the timeout must end the job first")
        XCTAssertLessThan(t1.timeIntervalSince(t0), 40)

        let d = NSTemporaryDirectory() + "tricks-checked-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: d) }
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        let ok = try Self.run(np: 2, ["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "16", "--max-steps", "3",
                                     "--bn", "sync", "--check-collectives", "--check-replicas", "1"])
        XCTAssertEqual(ok.status, 0, ok.err)
    }
}
