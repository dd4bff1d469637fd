import Foundation

/// A group of ranks that exchange buffers: the transport under gradient
/// all-reduce and SyncBatchNorm.
///
/// Every rank issues the same collectives in the same order. The core library
/// only sees this protocol; `SingleProcessCommunicator` is the one-rank world
/// and `TricksMPI.MPICommunicator` the multi-process one. An embedder can
/// supply its own transport.
public protocol Communicator: AnyObject {
    /// This process's index in the group, `0..<size`.
    var rank: Int { get }
    /// Number of ranks in the group.
    var size: Int { get }
    /// Sums `buffer` element-wise over all ranks, in place.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>)
    /// Sums `buffer` element-wise over all ranks, in place.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>)
    /// Starts summing `buffer` over all ranks; the result is there after `wait()`.
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> CommRequest
    /// Copies `root`'s bytes into every rank's `buffer`.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int)
    /// Returns once every rank has called it.
    func barrier()
    /// The group of `size` consecutive ranks this rank belongs to (ranks `k·size ..< (k+1)·size`).
    /// Collective: every rank calls it.
    func subgroup(size: Int) -> Communicator
    /// Ends every rank of the job with `message` and a non-zero exit.
    func abort(_ message: String, code: Int32) -> Never
    /// Sends `send` to rank `partner` and receives as many bytes from it into `receive`. Every
    /// rank calls it at once, paired up (`partner`'s partner is this rank); the fixed-order sums
    /// of `MicroShards` are built on it. A default, made of one broadcast per rank, serves
    /// transports that lack a point-to-point exchange.
    func exchange(_ send: UnsafeRawBufferPointer, with partner: Int, into receive: UnsafeMutableRawBufferPointer)
}

extension Communicator {
    public func exchange(_ send: UnsafeRawBufferPointer, with partner: Int, into receive: UnsafeMutableRawBufferPointer) {
        precondition(send.count == receive.count, "exchange: \(send.count) bytes sent, \(receive.count) expected")
        let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: max(send.count, 1), alignment: 16)
        defer { slot.deallocate() }
        for root in 0..<size {
            if root == rank { slot.copyMemory(from: send) }
            broadcast(UnsafeMutableRawBufferPointer(rebasing: slot[0..<send.count]), root: root)
            if root == partner { receive.copyMemory(from: UnsafeRawBufferPointer(rebasing: slot[0..<send.count])) }
        }
    }
}

/// An outstanding nonblocking collective.
public protocol CommRequest: AnyObject {
    /// Blocks until the collective has completed.
    func wait()
    /// Lets the transport make progress; true once the collective has completed.
    func test() -> Bool
}

/// A request that is already complete.
public final class CompletedRequest: CommRequest {
    public init() {}
    public func wait() {}
    public func test() -> Bool { true }
}

/// The world of one rank: every collective is the identity.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {}
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> CommRequest { CompletedRequest() }
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {}
    public func barrier() {}
    public func subgroup(size: Int) -> Communicator { self }
    public func exchange(_ send: UnsafeRawBufferPointer, with partner: Int, into receive: UnsafeMutableRawBufferPointer) {
        receive.copyMemory(from: send)
    }
    public func abort(_ message: String, code: Int32) -> Never {
        FileHandleOutput.stderr(message)
        exit(code)
    }
}
