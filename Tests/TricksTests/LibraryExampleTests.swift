import XCTest
import Tricks

/// The README's library example, run as written with four thread-ranks (and no other wiring):
/// replicas that start from different seeds end identical after five steps.
final class LibraryExampleTests: XCTestCase {
    func testReadmeLoopKeepsReplicasIdentical() throws {
        let threads = BLAS.threads
        BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        let ranks = 4, globalBatch = 8, steps = 5
        @Sendable func myBatch(_ step: Int, rank: Int) -> (Tensor, [Int32]) {
            let local = globalBatch / ranks
            let x = Tensor(shape: [local, 3, 8, 8])
            var y: [Int32] = []
            for i in 0..<local {
                var g = SplitMix64(key: [UInt64(step), UInt64(rank * local + i)])
                for k in 0..<192 { x.data[i * 192 + k] = Float(g.normal()) }
                y.append(Int32(g.below(10)))
            }
            return (x, y)
        }
        let out = PerRank<(values: [Float], buffers: [Float])>(ranks)
        ThreadGroup(size: ranks).run { rank, comm in
            // --- the README's example, with resnet8 and 5 steps ---
            let net = try! ResNet(name: "resnet8", inChannels: 3, numClasses: 10, seed: UInt64(rank))
            let dp = try! DataParallel(net, comm: comm)
            let opt = SGD(store: net.store, momentum: 0.9, weightDecay: 5e-4, noBiasDecay: true)
            let schedule = LRSchedule(kind: .cosine, lr: 0.1, warmupSteps: 2, totalSteps: steps)
            let loss = SoftmaxCrossEntropy(labelSmoothing: 0.1)
            for step in 0..<steps {
                let (x, y) = myBatch(step, rank: comm.rank)
                dp.beginStep()
                loss.forward(logits: net.forward(x, mode: .training), labels: y, normalizer: globalBatch)
                net.backward(loss.grad)
                dp.finishGradients()
                opt.step(lr: Float(schedule.rate(at: step)))
            }
            // ---
            let buffers = net.norms.flatMap { bn in (0..<bn.channels).flatMap { [bn.runningMean[$0], bn.runningVar[$0]] } }
            out[rank] = (Array(UnsafeBufferPointer(start: net.store.values, count: net.store.count)), buffers)
        }
        let all = out.all
        for r in 1..<ranks {
            XCTAssertEqual(all[r].values, all[0].values, "rank \(r)'s parameters differ from rank 0's")
            XCTAssertEqual(all[r].buffers, all[0].buffers, "rank \(r)'s BN statistics differ from rank 0's")
        }
        // The replicas moved from rank 0's start.
        let start = try ResNet(name: "resnet8", inChannels: 3, numClasses: 10, seed: 0)
        let moved = zip(all[0].values, UnsafeBufferPointer(start: start.store.values, count: start.store.count)).filter { $0 != $1 }.count
        XCTAssertGreaterThan(moved, all[0].values.count / 2)
    }
}
