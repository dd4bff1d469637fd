import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Tricks
#if canImport(Glibc)
import Glibc
#endif

/// End-to-end training in one process and through the `tricks-worker` binary.
final class TrainingTests: XCTestCase {
    /// A learnable synthetic set: class k brightens quadrant k of an 8×8 image.
    /// Images `side`×`side` (8 by default) whose bright quadrant is the class.
    static func writeToyNPZ(_ path: String, train: Int = 96, test: Int = 48, side: Int = 8) throws {
        var rng = SplitMix64(seed: 77)
        func make(_ n: Int) -> ([UInt8], [UInt8]) {
            var px: [UInt8] = [], labels: [UInt8] = []
            for i in 0..<n {
                let k = i % 3
                labels.append(UInt8(k))
                for y in 0..<side { for x in 0..<side {
                    let q = (y / (side / 2)) * 2 + x / (side / 2)
                    px.append(UInt8(min(255, (q == k ? 160 : 40) + rng.below(60))))
                } }
            }
            return (px, labels)
        }
        let (xt, yt) = make(train), (xs, ys) = make(test)
        try DataTests.zip([("x_train.npy", DataTests.npy("|u1", [train, side, side], xt)), ("y_train.npy", DataTests.npy("|u1", [train], yt)),
                           ("x_test.npy", DataTests.npy("|u1", [test, side, side], xs)), ("y_test.npy", DataTests.npy("|u1", [test], ys))])
            .write(to: URL(fileURLWithPath: path))
    }

    func testTrainerLearnsToyTaskAndWritesOutputs() throws {
        let d = try tempDir()
        try Self.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 16; c.epochs = 6; c.lr = 0.05
        c.augment = .none; c.out = d + "/out"; c.logEvery = 1000
        var lines: [String] = []
        let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { lines.append($0) })
        let s = try t.run()
        XCTAssertEqual(s.steps, 36)
        XCTAssertGreaterThan(s.testAccuracy, 0.9, "\(lines.joined(separator: "\n"))")
        XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/out/model.safetensors"))
        let metrics = try String(contentsOfFile: d + "/out/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.filter { $0.contains("test_accuracy") }.count, 6)   // one evaluation per epoch
        for m in metrics { XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(m.utf8))) }
        // The automatic plot: well-formed SVG with one curve per panel and a marker per evaluation.
        let svg = try Data(contentsOf: URL(fileURLWithPath: d + "/out/curves.svg"))
        XCTAssertTrue(XMLParser(data: svg).parse())
        let text = String(decoding: svg, as: UTF8.self)
        XCTAssertEqual(text.components(separatedBy: "<polyline").count - 1, 3)
        XCTAssertTrue(text.contains("test accuracy"))
        // The saved model loads back strictly and evaluates to the same accuracy.
        var c2 = c; c2.initFrom = d + "/out/model.safetensors"; c2.out = nil
        let t2 = try Trainer(config: c2, comm: SingleProcessCommunicator(), log: { _ in })
        XCTAssertEqual(t2.evaluate().accuracy, s.testAccuracy, accuracy: 1e-12)
    }

    /// A NaN or infinity stops training at its step, naming the first layer whose results held
    /// one, forward or backward, on one process and under mpirun, and leaves --out untouched.
    func testNonFiniteValuesStopNamingTheLayer() throws {
        let d = try tempDir()
        try Self.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 16; c.maxSteps = 1
        let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in })
        let x = Tensor(shape: [16, 1, 8, 8]); var labels: [Int32] = []
        t.preprocessor.fill(t.data.train, indices: Array(0..<Int32(16))[...], epoch: 0, augment: false, into: x, labels: &labels)
        let ce = SoftmaxCrossEntropy()
        func pass(poisonGradient: Bool) -> Double {
            let l = ce.forward(logits: t.model.forward(x, mode: .training), labels: labels, normalizer: 16)
            if poisonGradient { ce.grad.data[3] = .infinity }
            t.model.backward(ce.grad)
            return l
        }
        XCTAssertNil(t.findNonFinite { pass(poisonGradient: false) })
        XCTAssertEqual(t.findNonFinite { pass(poisonGradient: true) }, "the input gradient of fc (linear)")
        let w = t.model.stages[1][0].conv2.weight
        w.value[5] = .nan
        XCTAssertEqual(t.findNonFinite { pass(poisonGradient: false) }, "the forward output of layer2.0.conv2 (conv3x3 32→32 s1 @4×4)")

        // Through the binary: a NaN weight in the --init file.
        let net = ResNet(depth: 8, inChannels: 1, numClasses: 3)
        net.stages[2][0].conv1.weight.value[0] = .nan
        try SafeTensors.save(net.state, to: d + "/poisoned.safetensors")
        try FileManager.default.createDirectory(atPath: d + "/out", withIntermediateDirectories: true)
        let kept = Data("an earlier run's model".utf8)
        try kept.write(to: URL(fileURLWithPath: d + "/out/model.safetensors"))
        let args = ["train", "--data", d + "/toy.npz", "--model", "resnet8", "--batch-size", "16", "--max-steps", "3",
                    "--init", d + "/poisoned.safetensors", "--out", d + "/out"]
        let expected = "step 1: NaN or infinity first appeared in the forward output of layer3.0.conv1 (conv3x3 32→64 s2 @4×4) on rank 0"
        let one = try CLITests.run(args)
        XCTAssertEqual(one.status, 3, one.err)
        XCTAssertTrue(one.err.contains(expected), one.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: d + "/out/model.safetensors")), kept)
        let two = try MPITests.run(np: 2, args)
        XCTAssertNotEqual(two.status, 0, two.err)
        XCTAssertEqual(two.err.components(separatedBy: "NaN or infinity first appeared").count - 1, 1, two.err)
        XCTAssertTrue(two.err.contains(expected), two.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: d + "/out/model.safetensors")), kept)
    }

    func testMaxStepsKeepsTheScheduleLength() throws {
        let d = try tempDir()
        try Self.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 16; c.epochs = 4; c.maxSteps = 5
        let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in })
        XCTAssertEqual(t.schedule.totalSteps, 24)
        XCTAssertEqual(t.stopStep, 5)
        c.epochs = nil
        XCTAssertEqual(try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in }).schedule.totalSteps, 5)
        c.batchSize = 1000
        XCTAssertThrowsError(try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in }))
    }

    /// Steady-state training steps allocate nothing new: the data segment stays flat (one step's
    /// buffers here are several MB, so a per-step allocation would show).
    func testNoAllocationGrowthAcrossSteps() {
        let net = ResNet(depth: 8, inChannels: 3, numClasses: 10, seed: 1)
        let opt = SGD(store: net.store, momentum: 0.9, weightDecay: 5e-4)
        let ce = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        let x = GradCheck.randomTensor([8, 3, 16, 16], seed: 3)
        let labels: [Int32] = [0, 1, 2, 3, 4, 5, 6, 7]
        func step() {
            net.store.zeroGrad()
            ce.forward(logits: net.forward(x, mode: .training), labels: labels)
            net.backward(ce.grad)
            opt.step(lr: 0.1)
        }
        // Data segment size (heap and anonymous mappings) in bytes, from /proc/self/statm.
        func heap() -> Int {
            let f = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
            return (Int(f.split(separator: " ")[5]) ?? 0) * 4096
        }
        for _ in 0..<3 { step() }
        let before = heap(), ws = net.workspace.totalCapacity
        for _ in 0..<10 { step() }
        XCTAssertEqual(net.workspace.totalCapacity, ws)
        XCTAssertLessThan(heap() - before, 256 * 1024, "heap grew by \(heap() - before) bytes over 10 steps")
    }

    func testLargeBuffersAreHugePageAlignedAndZeroed() {
        // Buffers of 256 KiB and more start on a 2 MiB boundary (whole huge pages, so their
        // cache-set mapping is the same every run); small ones on a cache line; all zero-filled.
        for count in [1, 1000, 65_535, 65_536, 1 << 20, 3_000_001] {
            let t = Tensor(shape: [count])
            let address = UInt(bitPattern: t.data)
            let huge = count * 4 >= 256 << 10
            XCTAssertEqual(address % UInt(huge ? 2 << 20 : 64), 0, "\(count) floats at \(address)")
            XCTAssertEqual(t.array.max(), 0)
            XCTAssertEqual(t.array.min(), 0)
            t[count - 1] = 1   // the whole range is writable
            XCTAssertEqual(t[count - 1], 1)
        }
    }
}
