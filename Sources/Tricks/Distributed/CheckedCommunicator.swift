import Foundation

/// A `Communicator` that checks every collective before it runs (`--check-collectives`): ranks
/// that issue different collectives, or the same ones in a different order, end the job with a
/// message naming what each rank was about to do, instead of hanging or mixing buffers; a rank
/// that never arrives ends it after `timeout` seconds.
///
/// Before each collective the ranks sum a small tag (the collective's kind, element count,
/// description and sequence number, hashed to 32 bits) as 4-bit digits with their squares: the
/// tags agree on every rank exactly when n·Σd² = (Σd)² for every digit d. That exchange is
/// nonblocking and polled, which gives the timeout. Costs one extra small all-reduce per
/// collective: a debugging mode.
///
/// Callers describe their collectives with `Communicator.label(_:)` (SyncBatchNorm names its
/// layer, the gradient reducer its bucket); unlabelled ones are told apart by kind and size.
public final class CheckedCommunicator: Communicator {
    public let inner: Communicator
    /// Seconds a rank waits for every other rank to reach the same collective.
    public let timeout: Double
    private var sequence = 0
    /// The description of the next collective (set by `label`, used once).
    var nextLabel: String?

    public init(_ inner: Communicator, timeout: Double = 120) {
        self.inner = inner; self.timeout = timeout
    }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {
        agree("all-reduce of \(buffer.count) float32"); inner.allreduceSum(buffer)
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {
        agree("all-reduce of \(buffer.count) float64"); inner.allreduceSum(buffer)
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> CommRequest {
        agree("all-reduce of \(buffer.count) float32"); return inner.startAllreduceSum(buffer)
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        agree("broadcast of \(buffer.count) bytes from rank \(root)"); inner.broadcast(buffer, root: root)
    }

    public func barrier() { agree("barrier"); inner.barrier() }

    public func exchange(_ send: UnsafeRawBufferPointer, with partner: Int, into receive: UnsafeMutableRawBufferPointer) {
        // Partners differ by rank, so the tag names the level (the partner's distance), which all ranks share.
        agree("exchange of \(send.count) bytes at distance \(partner ^ rank)")
        inner.exchange(send, with: partner, into: receive)
    }

    public func subgroup(size: Int) -> Communicator {
        agree("split into groups of \(size)")
        return CheckedCommunicator(inner.subgroup(size: size), timeout: timeout)
    }

    public func abort(_ message: String, code: Int32) -> Never { inner.abort(message, code: code) }

    static let digits = 8

    /// Exchanges this collective's tag; ends the job if the ranks' tags differ or the exchange
    /// does not finish within `timeout`.
    private func agree(_ kind: String) {
        sequence += 1
        let what = "collective #\(sequence): " + (nextLabel.map { "\($0), " } ?? "") + kind
        nextLabel = nil
        guard size > 1 else { return }
        var h: UInt64 = 0xCBF2_9CE4_8422_2325   // FNV-1a
        for b in what.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        let key = UInt32(truncatingIfNeeded: h ^ (h >> 32))
        var sums = [Float](repeating: 0, count: 2 * Self.digits)
        for i in 0..<Self.digits {
            let d = Float((key >> (4 * UInt32(i))) & 0xF)
            sums[i] = d; sums[Self.digits + i] = d * d
        }
        sums.withUnsafeMutableBufferPointer { p in
            let request = inner.startAllreduceSum(p)
            let deadline = Date().addingTimeInterval(timeout)
            var pause: UInt32 = 20
            while !request.test() {
                if Date() > deadline {
                    abort("tricks: rank \(rank) waited \(Int(timeout)) s for the other ranks at \(what): some rank is not taking "
                          + "part (it stopped, or waits in a collective of another group)", code: 5)
                }
                usleep(pause); pause = min(2 * pause, 1000)
            }
        }
        let n = Int(size)
        let agreed = (0..<Self.digits).allSatisfy { i in n * Int(sums[Self.digits + i]) == Int(sums[i]) * Int(sums[i]) }
        if !agreed { mismatch(what) }
    }

    /// Gathers every rank's description of the collective it was about to run (each rank has
    /// reached the same tag exchange, so this all-reduce pairs up) and ends the job listing them.
    private func mismatch(_ what: String) -> Never {
        let width = 160
        var text = [Float](repeating: 0, count: size * width)
        for (i, b) in what.utf8.prefix(width).enumerated() { text[rank * width + i] = Float(b) }
        text.withUnsafeMutableBufferPointer { inner.allreduceSum($0) }
        let lines = (0..<size).map { r in
            "  rank \(r): " + String(decoding: text[(r * width)..<((r + 1) * width)].prefix { $0 != 0 }.map { UInt8($0) }, as: UTF8.self)
        }
        if rank == 0 {
            abort("tricks: the ranks issued different collectives (checked by --check-collectives):\n" + lines.joined(separator: "\n"), code: 5)
        }
        inner.barrier()   // rank 0 ends the job
        abort("tricks: rank \(rank): collectives differ across ranks", code: 5)
    }
}

extension Communicator {
    /// Describes the next collective this rank issues on this communicator, for the messages of
    /// `CheckedCommunicator`; costs nothing otherwise (the text is not even built).
    @inline(__always)
    public func label(_ text: @autoclosure () -> String) {
        if let c = self as? CheckedCommunicator { c.nextLabel = text() }
    }
}
