import XCTest
@testable import Tricks

/// The bag of tricks: mixup, zero-γ, linear scaling, and resumable training.
final class TricksTests: XCTestCase {
    /// Partners and λ depend on (seed, epoch, sample) only: the global batch assembled from
    /// 4 ranks' shards is the one a single rank builds, row for row.
    func testMixupPairingIsIndependentOfRanks() {
        let set = ImageSet(pixels: (0..<40 * 4).map { UInt8($0 % 251) }, labels: (0..<40).map { Int32($0 % 5) },
                           count: 40, channels: 1, height: 2, width: 2)
        let prep = Preprocessor(mean: [0.5], std: [0.25], augmentation: .standard, seed: 9)
        let plan = BatchPlan(datasetSize: 40, globalBatch: 8, shuffle: true, seed: 9)
        let mix = Mixup(alpha: 0.2, seed: 9)
        let order = plan.order(epoch: 2)
        func build(_ size: Int) -> ([Float], [Int32], [Int32], [Float]) {
            var xs: [Float] = [], ys: [Int32] = [], ps: [Int32] = [], ls: [Float] = []
            for r in 0..<size {
                let x = Tensor(shape: [0]), p = Tensor(shape: [0])
                var y: [Int32] = [], py: [Int32] = [], lam: [Float] = []
                prep.fillMixed(set, indices: plan.shard(order: order, stepInEpoch: 1, rank: r, size: size), epoch: 2,
                               mixup: mix, into: x, partner: p, labels: &y, partnerLabels: &py, lambdas: &lam)
                xs += x.array; ys += y; ps += py; ls += lam
            }
            return (xs, ys, ps, ls)
        }
        let one = build(1), four = build(4)
        XCTAssertEqual(one.0, four.0); XCTAssertEqual(one.1, four.1)
        XCTAssertEqual(one.2, four.2); XCTAssertEqual(one.3, four.3)
        XCTAssertTrue(one.3.allSatisfy { $0 >= 0 && $0 <= 1 })
        // λ ~ Beta(α, α): mean ½, variance 1/(4(2α+1)).
        var s1 = 0.0, s2 = 0.0
        for i in 0..<20_000 { let l = mix.pair(sample: i, epoch: 0, datasetSize: 40).lambda; s1 += l; s2 += l * l }
        let mean = s1 / 20_000, variance = s2 / 20_000 - mean * mean
        XCTAssertEqual(mean, 0.5, accuracy: 0.01)
        XCTAssertEqual(variance, 1 / (4 * (2 * 0.2 + 1)), accuracy: 0.01)
    }

    /// Label smoothing with mixup against the closed form λ·CE(ŷ, t_i) + (1−λ)·CE(ŷ, t_j).
    func testMixupLossWithLabelSmoothingClosedForm() {
        let K = 4, eps = 0.1
        let logits = GradCheck.randomTensor([2, K], seed: 41, scale: 1.5)
        let y: [Int32] = [1, 3], y2: [Int32] = [2, 3], lam: [Float] = [0.7, 0.25]
        let ce = SoftmaxCrossEntropy(labelSmoothing: eps)
        let got = ce.forward(logits: logits, labels: y, mixedWith: y2, lambdas: lam)
        var want = 0.0
        for n in 0..<2 {
            let row = (0..<K).map { Double(logits[n * K + $0]) }
            let lse = log(row.map { exp($0) }.reduce(0, +))
            func ceTo(_ label: Int32) -> Double {
                (0..<K).reduce(0.0) { $0 - ($1 == Int(label) ? 1 - eps : eps / Double(K - 1)) * (row[$1] - lse) }
            }
            want += Double(lam[n]) * ceTo(y[n]) + (1 - Double(lam[n])) * ceTo(y2[n])
        }
        XCTAssertEqual(got, want / 2, accuracy: 1e-9)
        let g = ce.grad.array
        GradCheck.check("dlogits", values: logits.data, count: logits.count, analytic: g, h: 1e-2, tol: 1e-3) {
            SoftmaxCrossEntropy(labelSmoothing: eps).forward(logits: logits, labels: y, mixedWith: y2, lambdas: lam)
        }
    }

    func testZeroGammaSetsExactlyTheLastBNOfEachBlock() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet20"; c.batchSize = 16; c.maxSteps = 1; c.zeroGamma = true
        let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in })
        var zeroed: [String] = []
        for bn in t.model.norms {
            let all0 = bn.weight.values.allSatisfy { $0 == 0 }, all1 = bn.weight.values.allSatisfy { $0 == 1 }
            XCTAssertTrue(all0 || all1, bn.name)
            if all0 { zeroed.append(bn.name) }
        }
        let want = (1...3).flatMap { k in (0..<3).map { "layer\(k).\($0).bn2" } }
        XCTAssertEqual(zeroed, want)
    }

    func testLinearScaling() throws {
        XCTAssertEqual(linearScaledLR(per256: 0.1, batchSize: 1024), 0.4, accuracy: 1e-12)
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 32; c.maxSteps = 1; c.lrPer256 = 0.2
        var lines: [String] = []
        let t = try Trainer(config: c, comm: SingleProcessCommunicator(), log: { lines.append($0) })
        XCTAssertEqual(t.lr, 0.025, accuracy: 1e-12)
        XCTAssertEqual(t.schedule.rate(at: 0), 0.5 * 0.025 * (1 + cos(0)), accuracy: 1e-12)
        try t.run()
        XCTAssertTrue(lines.contains { $0.contains("lr 0.025 (= 0.2 × 32/256)") }, lines.joined(separator: "\n"))
    }

    /// A run stopped and resumed ends with the same weights, bit for bit, as one that was not.
    func testResumeIsBitIdentical() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 16; c.epochs = 2; c.lr = 0.05
        c.augment = .standard; c.mixup = 0.2; c.labelSmoothing = 0.1; c.warmupEpochs = 0.5; c.logEvery = 1000
        var straight = c; straight.out = d + "/straight"
        try Trainer(config: straight, comm: SingleProcessCommunicator(), log: { _ in }).run()
        var first = c; first.out = d + "/resumed"; first.maxSteps = 5; first.checkpointEvery = 5
        try Trainer(config: first, comm: SingleProcessCommunicator(), log: { _ in }).run()
        var second = c; second.out = d + "/resumed"; second.resume = d + "/resumed"
        let t = try Trainer(config: second, comm: SingleProcessCommunicator(), log: { _ in })
        XCTAssertEqual(t.startStep, 5)
        try t.run()
        let a = try Data(contentsOf: URL(fileURLWithPath: d + "/straight/model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: d + "/resumed/model.safetensors"))
        XCTAssertEqual(a, b)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: d + "/straight/checkpoint.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: d + "/resumed/checkpoint.safetensors")))
    }

    /// A resumed run refuses a checkpoint of another batch size, seed, data set size or (with
    /// per-rank BatchNorm) rank count, naming what differs, and leaves the model untouched.
    func testResumeRefusesAnotherRun() throws {
        let d = try tempDir()
        try TrainingTests.writeToyNPZ(d + "/toy.npz")
        try TrainingTests.writeToyNPZ(d + "/bigger.npz", train: 112)
        var c = TrainConfig()
        c.data = d + "/toy.npz"; c.model = "resnet8"; c.batchSize = 16; c.epochs = 1; c.maxSteps = 2; c.out = d + "/run"
        c.checkpointEvery = 2; c.logEvery = 1000
        try Trainer(config: c, comm: SingleProcessCommunicator(), log: { _ in }).run()
        var again = c; again.resume = d + "/run"; again.maxSteps = nil
        XCTAssertEqual(try Trainer(config: again, comm: SingleProcessCommunicator(), log: { _ in }).startStep, 2)
        let cases: [(String, (inout TrainConfig) -> Void)] = [
            ("global batch size 16, this run 32", { $0.batchSize = 32 }),
            ("seed 0, this run 3", { $0.seed = 3 }),
            ("96 training samples, this run 112", { $0.data = d + "/bigger.npz" }),
            ("model resnet8, this run resnet14", { $0.model = "resnet14" }),
        ]
        for (expected, change) in cases {
            var r = again
            change(&r)
            XCTAssertThrowsError(try Trainer(config: r, comm: SingleProcessCommunicator(), log: { _ in }), expected) { e in
                XCTAssertTrue("\(e)".contains(expected) && "\(e)".contains("cannot resume"), "\(e)")
            }
        }
        // Per-rank BatchNorm statistics: 4 ranks of local BN against 2, or against sync BN.
        let local4 = TrainingCheckpoint.Info(step: 1, model: "resnet8", seed: 0, batchSize: 16, trainSamples: 96, ranks: 4, bnGroup: 1)
        var run = local4
        XCTAssertEqual(local4.mismatches(continuing: run), [])
        run.ranks = 2
        XCTAssertEqual(local4.mismatches(continuing: run).count, 1)
        run.ranks = 4; run.bnGroup = 4
        XCTAssertTrue(local4.mismatches(continuing: run).first?.contains("local BatchNorm") == true)
        let sync4 = TrainingCheckpoint.Info(step: 1, model: "resnet8", seed: 0, batchSize: 16, trainSamples: 96, ranks: 4, bnGroup: 4)
        run.ranks = 8; run.bnGroup = 8   // SyncBatchNorm over all ranks computes the same at any rank count
        XCTAssertEqual(sync4.mismatches(continuing: run), [])
        var old = sync4; old.ranks = nil; old.bnGroup = nil; old.trainSamples = nil   // written before these were recorded
        XCTAssertEqual(old.mismatches(continuing: run), [])
    }

    /// TrainConfig's defaults are the command line's and pass its own rules; each rule refuses
    /// with a message that names the flag.
    func testTrainConfigValidation() throws {
        XCTAssertNoThrow(try TrainConfig().validate(ranks: 1))
        XCTAssertEqual(TrainConfig().epochs, 10)
        let cases: [(String, (inout TrainConfig) -> Void)] = [
            ("--batch-size must be positive", { $0.batchSize = 0 }),
            ("give --epochs or --max-steps", { $0.epochs = nil }),
            ("--epochs must be positive", { $0.epochs = -1 }),
            ("--max-steps must be positive", { $0.maxSteps = 0 }),
            ("--lr must be positive", { $0.lr = 0 }),
            ("--momentum must be in [0, 1)", { $0.momentum = 1.5 }),
            ("--wd must be ≥ 0", { $0.weightDecay = -1 }),
            ("--label-smoothing must be in [0, 1)", { $0.labelSmoothing = 1.5 }),
            ("--mixup must be ≥ 0", { $0.mixup = -1 }),
            ("--warmup-epochs must be ≥ 0", { $0.warmupEpochs = -0.5 }),
            ("--lr-steps must be positive", { $0.lrSteps = [3, -1] }),
            ("--std values must be positive", { $0.std = [0] }),
            ("--checkpoint-every needs --out", { $0.checkpointEvery = 5 }),
            ("give --resume or --init, not both", { $0.resume = "a"; $0.initFrom = "b" }),
            ("unknown model 'resnet21'", { $0.model = "resnet21" }),
            ("--log-every must be positive", { $0.logEvery = 0 }),
        ]
        for (expected, change) in cases {
            var c = TrainConfig()
            change(&c)
            XCTAssertThrowsError(try c.validate(), expected) { XCTAssertTrue("\($0)".contains(expected), "\($0)") }
        }
        var c = TrainConfig()
        c.batchSize = 64
        XCTAssertNoThrow(try c.validate(ranks: 8))
        XCTAssertThrowsError(try c.validate(ranks: 3)) { XCTAssertTrue("\($0)".contains("not divisible by the number of ranks 3"), "\($0)") }
        c.bnGroupSize = 3
        XCTAssertThrowsError(try c.validate(ranks: 4)) { XCTAssertTrue("\($0)".contains("does not divide the number of ranks 4"), "\($0)") }
    }

    func testTruncatedOrForeignCheckpointIsRefused() throws {
        let d = try tempDir()
        let net = ResNet(depth: 8, inChannels: 1, numClasses: 3)
        let opt = SGD(store: net.store, momentum: 0.9)
        try TrainingCheckpoint.save(dir: d, model: net, optimizer: opt, info: .init(step: 7, model: "resnet8", seed: 1, batchSize: 16))
        XCTAssertEqual(try TrainingCheckpoint.load(dir: d, model: net, optimizer: opt).step, 7)
        let path = d + "/" + TrainingCheckpoint.fileName
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try TrainingCheckpoint.load(dir: d, model: net, optimizer: opt)) { e in
            XCTAssertTrue("\(e)".contains("truncated"), "\(e)")
        }
        try SafeTensors.save(net.state, to: path)   // a model file, not a training checkpoint
        XCTAssertThrowsError(try TrainingCheckpoint.load(dir: d, model: net, optimizer: opt)) { e in
            XCTAssertTrue("\(e)".contains("not a training checkpoint"), "\(e)")
        }
        let other = ResNet(depth: 14, inChannels: 1, numClasses: 3)
        try TrainingCheckpoint.save(dir: d, model: net, optimizer: opt, info: .init(step: 7, model: "resnet8", seed: 1, batchSize: 16))
        XCTAssertThrowsError(try TrainingCheckpoint.load(dir: d, model: other, optimizer: SGD(store: other.store)))
    }
}
