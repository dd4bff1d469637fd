import XCTest
@testable import Tricks

/// The safetensors byte format, strict loading and its error messages.
final class CheckpointTests: XCTestCase {
    func testByteFormat() throws {
        let w = UnsafeMutablePointer<Float>.allocate(capacity: 3); defer { w.deallocate() }
        w[0] = 1.5; w[1] = -2; w[2] = 0.25
        let n = UnsafeMutablePointer<Int64>.allocate(capacity: 1); defer { n.deallocate() }
        n.pointee = 7
        let d = SafeTensors.encode([StateTensor(name: "a.weight", shape: [3], storage: .float(w)),
                                    StateTensor(name: "a.num_batches_tracked", shape: [], storage: .int64(n))])
        let hlen = d.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(hlen % 8, 0)
        let header = try JSONSerialization.jsonObject(with: d.subdata(in: 8..<8 + hlen)) as! [String: [String: Any]]
        XCTAssertEqual(header["a.weight"]?["dtype"] as? String, "F32")
        XCTAssertEqual(header["a.weight"]?["shape"] as? [Int], [3])
        XCTAssertEqual(header["a.weight"]?["data_offsets"] as? [Int], [0, 12])
        XCTAssertEqual(header["a.num_batches_tracked"]?["dtype"] as? String, "I64")
        XCTAssertEqual(header["a.num_batches_tracked"]?["shape"] as? [Int], [])
        XCTAssertEqual(header["a.num_batches_tracked"]?["data_offsets"] as? [Int], [12, 20])
        XCTAssertEqual(d.count, 8 + hlen + 20)
        // Little-endian IEEE floats, then the int64.
        XCTAssertEqual(Array(d[(8 + hlen)..<(8 + hlen + 4)]), [0, 0, 0xC0, 0x3F])
        XCTAssertEqual(Array(d[(8 + hlen + 12)..<(8 + hlen + 20)]), [7, 0, 0, 0, 0, 0, 0, 0])
    }

    func testRoundTripAndStrictErrors() throws {
        let a = ResNet(depth: 8, inChannels: 1, numClasses: 4, seed: 1)
        let b = ResNet(depth: 8, inChannels: 1, numClasses: 4, seed: 2)
        a.bn1.numBatchesTracked.pointee = 9
        a.bn1.runningVar[2] = 3.5
        let path = NSTemporaryDirectory() + "ckpt-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafeTensors.save(a.state, to: path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"))
        try SafeTensors.load(path, into: b.state)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: a.store.values, count: a.store.count)),
                       Array(UnsafeBufferPointer(start: b.store.values, count: b.store.count)))
        XCTAssertEqual(b.bn1.numBatchesTracked.pointee, 9)
        XCTAssertEqual(b.bn1.runningVar[2], 3.5)
        XCTAssertEqual(a.state.map(\.name).prefix(7), ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                       "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight"])

        let other = ResNet(depth: 8, inChannels: 1, numClasses: 5, seed: 1)
        XCTAssertThrowsError(try SafeTensors.load(path, into: other.state)) { e in
            XCTAssertTrue("\(e)".contains("fc.weight has shape [4, 64]"), "\(e)")
        }
        let deeper = ResNet(depth: 14, inChannels: 1, numClasses: 4, seed: 1)
        XCTAssertThrowsError(try SafeTensors.load(path, into: deeper.state)) { e in
            XCTAssertTrue("\(e)".contains("missing: layer1.1.conv1.weight"), "\(e)")
        }
        XCTAssertThrowsError(try SafeTensors.load(path, into: Array(b.state.dropLast()))) { e in
            XCTAssertTrue("\(e)".contains("unexpected: fc.bias"), "\(e)")
        }
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count - 10).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SafeTensors.load(path, into: b.state)) { e in
            XCTAssertTrue("\(e)".contains("truncated"), "\(e)")
        }
        try Data("not a checkpoint at all".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SafeTensors.load(path, into: b.state))
    }

    /// A run killed with SIGKILL while it writes a checkpoint (the bytes go to
    /// `checkpoint.safetensors.tmp-PID`, then a rename) leaves the previous checkpoint complete;
    /// resuming from it ends with the model and checkpoint of an uninterrupted run, byte for
    /// byte, and removes the killed writer's temporary file.
    /// A killed writer not yet reaped is a zombie: it still answers kill(pid, 0), but its
    /// temporary files are stale all the same.
    func testZombieWriterCountsAsGone() throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        XCTAssertEqual(posix_spawn(&pid, "/bin/true", nil, nil, argv, environ), 0)
        var state = ""
        for _ in 0..<200 {   // until it has exited (and, unreaped, become a zombie)
            usleep(10_000)
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")") {
                state = String(stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1))
                if state == "Z" { break }
            }
        }
        XCTAssertEqual(state, "Z")
        XCTAssertEqual(kill(pid, 0), 0, "a zombie still answers kill(pid, 0)")
        XCTAssertFalse(SafeTensors.isRunning(pid))
        XCTAssertTrue(SafeTensors.isRunning(getpid()))
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        XCTAssertFalse(SafeTensors.isRunning(pid))
    }

    func testKilledWhileWritingCheckpointResumesBitExact() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        let args = ["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "16", "--epochs", "4",
                    "--checkpoint-every", "1", "--log-every", "1000", "--augment", "standard"]
        let straight = try CLITests.run(args + ["--out", d + "/straight"])
        XCTAssertEqual(straight.status, 0, straight.err)
        // Every step writes a checkpoint; kill as soon as a temporary file is there beside an
        // earlier checkpoint. A kill that lands just after the rename leaves no temporary file
        // and is tried again.
        let out = d + "/out"
        func temporaries() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).filter { $0.hasPrefix("checkpoint.safetensors.tmp-") }
        }
        var left: [String] = []
        for _ in 0..<10 where left.isEmpty {
            try? FileManager.default.removeItem(atPath: out)
            let p = try CLITests.launch(args + ["--out", out])
            let start = Date()
            while p.isRunning && Date().timeIntervalSince(start) < 30 {
                if !temporaries().isEmpty && FileManager.default.fileExists(atPath: out + "/checkpoint.safetensors") {
                    kill(p.processIdentifier, SIGKILL)
                    break
                }
            }
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { left = temporaries() }
        }
        XCTAssertEqual(left.count, 1, "no kill landed during a checkpoint write in 10 tries")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/model.safetensors"))
        // The checkpoint there is whole and loads.
        let net = ResNet(depth: 8, inChannels: 1, numClasses: 3)
        let info = try TrainingCheckpoint.load(dir: out, model: net, optimizer: SGD(store: net.store))
        XCTAssertGreaterThan(info.step, 0)
        XCTAssertLessThan(info.step, 24)
        let r = try CLITests.run(args + ["--out", out, "--resume", out])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("resumed from \(out) at step \(info.step)"), r.out)
        for f in ["model.safetensors", "checkpoint.safetensors"] {
            XCTAssertEqual(FileManager.default.contents(atPath: out + "/" + f), FileManager.default.contents(atPath: d + "/straight/" + f), f)
        }
        XCTAssertEqual(temporaries(), [], "the killed run's temporary file is still there")
    }
}
