import CMPI
import Foundation
import Tricks

/// The `Communicator` over MPI's world (or a sub-communicator of it).
///
/// Create one per process with `MPICommunicator.world()`; it initializes MPI on
/// first use and finalizes at `finalize()`. Errors from MPI abort the whole job.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    let comm: MPI_Comm

    private init(comm: MPI_Comm) {
        self.comm = comm
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r); MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
    }

    /// Initializes MPI (once) and returns the world communicator.
    public static func world() -> MPICommunicator {
        var flag: Int32 = 0
        MPI_Initialized(&flag)
        if flag == 0 {
            var provided: Int32 = 0
            MPI_Init_thread(nil, nil, cmpi_thread_single(), &provided)
        }
        return MPICommunicator(comm: cmpi_comm_world())
    }

    public func subgroup(size groupSize: Int) -> Communicator {
        if groupSize >= size { return self }
        var sub: MPI_Comm? = cmpi_comm_null()
        check(MPI_Comm_split(comm, Int32(rank / groupSize), Int32(rank), &sub), "MPI_Comm_split")
        return MPICommunicator(comm: sub!)
    }

    /// True when this process was started by an MPI launcher (mpirun, srun).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMI_SIZE"] != nil || env["PMIX_RANK"] != nil
    }

    private func check(_ rc: Int32, _ what: String) {
        if rc != cmpi_success() { abort("rank \(rank): \(what) failed (MPI error \(rc))", code: 1) }
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {
        guard size > 1 else { return }
        check(MPI_Allreduce(cmpi_in_place(), buffer.baseAddress, Int32(buffer.count), cmpi_float(), cmpi_sum(), comm),
              "MPI_Allreduce")
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {
        guard size > 1 else { return }
        check(MPI_Allreduce(cmpi_in_place(), buffer.baseAddress, Int32(buffer.count), cmpi_double(), cmpi_sum(), comm),
              "MPI_Allreduce")
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> CommRequest {
        guard size > 1 else { return CompletedRequest() }
        let req = MPIRequest(owner: self)
        check(MPI_Iallreduce(cmpi_in_place(), buffer.baseAddress, Int32(buffer.count), cmpi_float(), cmpi_sum(),
                             comm, &req.request), "MPI_Iallreduce")
        return req
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        guard size > 1 else { return }
        check(MPI_Bcast(buffer.baseAddress, Int32(buffer.count), cmpi_uint8(), Int32(root), comm), "MPI_Bcast")
    }

    public func exchange(_ send: UnsafeRawBufferPointer, with partner: Int, into receive: UnsafeMutableRawBufferPointer) {
        precondition(send.count == receive.count && send.count <= Int(Int32.max), "exchange of \(send.count) bytes")
        if partner == rank { receive.copyMemory(from: send); return }
        check(MPI_Sendrecv(send.baseAddress, Int32(send.count), cmpi_uint8(), Int32(partner), 77,
                           receive.baseAddress, Int32(receive.count), cmpi_uint8(), Int32(partner), 77, comm,
                           cmpi_status_ignore()), "MPI_Sendrecv")
    }

    public func barrier() {
        guard size > 1 else { return }
        check(MPI_Barrier(comm), "MPI_Barrier")
    }

    /// Prints `message` and ends every rank. A rank other than world rank 0 first waits a
    /// second: an error every rank meets (a bad data file, a batch that does not split) is then
    /// reported by rank 0 alone, whose abort ends the others while they wait; an error only this
    /// rank meets is reported a second later.
    public func abort(_ message: String, code: Int32) -> Never {
        var worldRank: Int32 = 0
        MPI_Comm_rank(cmpi_comm_world(), &worldRank)
        if worldRank != 0 { usleep(1_000_000) }
        FileHandleOutput.stderr(message)
        MPI_Abort(cmpi_comm_world(), code)
        exit(code)
    }

    /// Ends MPI; call once, at the end of the process.
    public func finalize() { MPI_Finalize() }
}

final class MPIRequest: CommRequest {
    var request: MPI_Request? = cmpi_request_null()
    let owner: MPICommunicator
    init(owner: MPICommunicator) { self.owner = owner }
    func test() -> Bool {
        var flag: Int32 = 0
        let rc = MPI_Test(&request, &flag, cmpi_status_ignore())
        if rc != cmpi_success() { owner.abort("rank \(owner.rank): MPI_Test failed (MPI error \(rc))", code: 1) }
        return flag != 0
    }

    func wait() {
        let rc = MPI_Wait(&request, cmpi_status_ignore())
        if rc != cmpi_success() { owner.abort("rank \(owner.rank): MPI_Wait failed (MPI error \(rc))", code: 1) }
    }
}
