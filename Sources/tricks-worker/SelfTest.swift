import ArgumentParser
import Foundation
import Tricks
import TricksMPI

/// Checks that run inside `mpirun` with the real transport. Every rank builds the
/// whole global batch from seeds, so it can compute a float64 reference on the
/// concatenated batch and compare its own slice.
struct SelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Multi-process checks of SyncBatchNorm against a float64 reference (run under mpirun).",
        shouldDisplay: false)

    @Argument(help: "syncbn, collective-mismatch or collective-hang") var what = "syncbn"

    func run() throws {
        let mpi: MPICommunicator? = MPICommunicator.launchedByMPI ? MPICommunicator.world() : nil
        let comm: Communicator = mpi ?? SingleProcessCommunicator()
        switch what {
        case "syncbn": break
        case "collective-mismatch", "collective-hang": return collectives(CheckedCommunicator(comm, timeout: 3), hang: what == "collective-hang")
        default: throw ValidationError("unknown self-test '\(what)'")
        }
        let n = comm.size
        var cases: [(String, [Int], Double, Double)] = [
            ("equal batches", Array(repeating: 2, count: n), 0.5, 2),
            ("unequal batches", (0..<n).map { [3, 1, 4, 2][$0 % 4] }, -1, 1.5),
            ("a rank with one sample", (0..<n).map { $0 == n - 1 ? 1 : 2 }, 0, 1),
            ("large mean, tiny spread", Array(repeating: 2, count: n), 1000, 0.01),
        ]
        if n > 1 { cases.append(("a rank with no samples", (0..<n).map { $0 == 1 ? 0 : 3 }, 0.3, 1)) }
        var failures: [String] = []
        for (name, counts, mean, std) in cases {
            failures += check(comm: comm, name: name, counts: counts, mean: mean, std: std)
        }
        // One layer over steps whose spatial sizes change (random-shape training): buffers sized
        // for one step must not leak into the next, and the running statistics chain on.
        let shared = BatchNorm2d("bn", 3)
        for step in 0..<4 {
            failures += check(comm: comm, name: "shape change, step \(step)", counts: (0..<n).map { 1 + ($0 + step) % 2 },
                              mean: 0.2 * Double(step), std: 1, layer: shared, shapeSalt: 1 + step * 2)
        }
        cases.append(("shape change", [], 0, 0))
        // Every rank's verdict is gathered so the job fails as a whole.
        var bad = [Double(failures.count)]
        bad.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        for f in failures.prefix(5) { FileHandleOutput.stderr("rank \(comm.rank): \(f)") }
        comm.barrier()
        if bad[0] > 0 { comm.abort("syncbn self-test: \(Int(bad[0])) check(s) failed", code: 1) }
        if comm.rank == 0 { FileHandleOutput.stdout("syncbn self-test: \(cases.count) cases passed on \(n) ranks") }
        mpi?.finalize()
    }

    /// A detector's bug under `--check-collectives`: rank 1 skips SyncBatchNorm layer `a.bn`
    /// (without the check its next layer's all-reduce would pair with rank 0's `a.bn`, the same
    /// size, and give wrong statistics silently), or never reaches a collective at all. Either
    /// ends the job with a message; reaching the end is the failure.
    func collectives(_ comm: CheckedCommunicator, hang: Bool) {
        let a = BatchNorm2d("a.bn", 2), b = BatchNorm2d("b.bn", 2)
        a.group = comm; b.group = comm
        let x = Tensor(shape: [1, 2, 2, 2])
        for i in 0..<x.count { x[i] = Float(i) }
        if comm.rank != 1 {
            _ = b.forward(a.forward(x, mode: .training), mode: .training)
        } else if hang {
            sleep(60)
        } else {
            _ = b.forward(x, mode: .training)
        }
        comm.inner.barrier()
        FileHandleOutput.stdout("collective self-test: no error was raised")
        Foundation.exit(0)
    }

    /// Rank r holds `counts[r]` samples of C channels at its own spatial size.
    /// `layer` reuses one layer across calls; `shapeSalt` changes every rank's spatial size.
    func check(comm: Communicator, name: String, counts: [Int], mean: Double, std: Double,
               layer: BatchNorm2d? = nil, shapeSalt: Int = 0) -> [String] {
        let C = 3, rank = comm.rank
        let hw = counts.indices.map { (2 + ($0 + shapeSalt) % 3 + shapeSalt, 3 + ($0 + shapeSalt) % 2) }   // different spatial sizes per rank
        func data(_ r: Int, _ salt: UInt64, _ mu: Double, _ sd: Double) -> [Float] {
            var g = SplitMix64(key: [UInt64(r), salt])
            return (0..<counts[r] * C * hw[r].0 * hw[r].1).map { i in
                let c = (i / (hw[r].0 * hw[r].1)) % C
                return Float(mu + Double(c) * 0.5 + sd * g.normal())
            }
        }
        let xs = counts.indices.map { data($0, 1, mean, std) }, dys = counts.indices.map { data($0, 2, 0, 1) }
        let gamma: [Float] = [1.5, -0.5, 0.8], beta: [Float] = [0.1, 0.0, -0.2]
        // float64 reference over the concatenated batch.
        var s1 = [Double](repeating: 0, count: C), cnt = 0.0
        func eachElement(_ r: Int, _ body: (Int, Int) -> Void) {   // (channel, flat index)
            let P = hw[r].0 * hw[r].1
            for i in 0..<counts[r] * C * P { body((i / P) % C, i) }
        }
        for r in counts.indices { eachElement(r) { c, i in s1[c] += Double(xs[r][i]) }; cnt += Double(counts[r] * hw[r].0 * hw[r].1) }
        let mu = s1.map { $0 / cnt }
        var v = [Double](repeating: 0, count: C)
        for r in counts.indices { eachElement(r) { c, i in v[c] += (Double(xs[r][i]) - mu[c]) * (Double(xs[r][i]) - mu[c]) } }
        v = v.map { $0 / cnt }
        let istd = v.map { 1 / ($0 + 1e-5).squareRoot() }
        var sdy = [Double](repeating: 0, count: C), sdyx = [Double](repeating: 0, count: C)
        for r in counts.indices {
            eachElement(r) { c, i in
                let xh = (Double(xs[r][i]) - mu[c]) * istd[c]
                sdy[c] += Double(dys[r][i]); sdyx[c] += Double(dys[r][i]) * xh
            }
        }
        // The layer under test, on this rank's slice.
        let bn = layer ?? BatchNorm2d("bn", C)
        let rm0 = (0..<C).map { Double(bn.runningMean[$0]) }, rv0 = (0..<C).map { Double(bn.runningVar[$0]) }
        bn.weight.grad.update(repeating: 0, count: C); bn.bias.grad.update(repeating: 0, count: C)
        _ = bn.weight.values.update(from: gamma); _ = bn.bias.values.update(from: beta)
        bn.group = comm
        let x = Tensor(shape: [counts[rank], C, hw[rank].0, hw[rank].1], values: xs[rank])
        let y = bn.forward(x, mode: .training)
        let dx = bn.backward(Tensor(shape: x.shape, values: dys[rank]))
        let grads = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * C)
        defer { grads.deallocate() }
        for c in 0..<C { grads[c] = bn.weight.grad[c]; grads[C + c] = bn.bias.grad[c] }
        comm.allreduceSum(grads)                                        // as the gradient all-reduce does
        var fails: [String] = []
        func expect(_ what: String, _ got: Float, _ want: Double, tol: Double) {
            if !(abs(Double(got) - want) <= tol * max(1, abs(want))) && fails.count < 5 {
                fails.append("\(name): \(what) = \(got), float64 reference \(want)")
            }
        }
        let outTol = std < 0.1 ? 2e-3 : 1e-4
        eachElement(rank) { c, i in
            let xh = (Double(xs[rank][i]) - mu[c]) * istd[c]
            expect("y[\(i)]", y[i], Double(gamma[c]) * xh + Double(beta[c]), tol: outTol)
            let want = Double(gamma[c]) * istd[c] * (Double(dys[rank][i]) - sdy[c] / cnt - xh * sdyx[c] / cnt)
            expect("dx[\(i)]", dx[i], want, tol: outTol)
        }
        for c in 0..<C {
            expect("dgamma[\(c)]", grads[c], sdyx[c], tol: 1e-3)
            expect("dbeta[\(c)]", grads[C + c], sdy[c], tol: 1e-4)
            expect("running_mean[\(c)]", bn.runningMean[c], 0.9 * rm0[c] + 0.1 * mu[c], tol: 1e-6)
            expect("running_var[\(c)]", bn.runningVar[c], 0.9 * rv0[c] + 0.1 * v[c] * cnt / (cnt - 1), tol: 1e-6)
        }
        return fails
    }
}
