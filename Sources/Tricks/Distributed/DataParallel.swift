import Foundation

/// Data-parallel training of one model replica per rank, shaped like PyTorch's
/// `DistributedDataParallel`: one object owns what every replica must agree on.
///
/// - At creation, rank 0's parameters and buffers are broadcast to every rank.
/// - Every batch-norm layer gets its statistics group: all ranks (SyncBatchNorm), groups of
///   `bnGroupSize` consecutive ranks, or none (local BN); `normMode` reports what is in effect.
/// - Gradients are summed over ranks in buckets (`GradientReducer`), overlapped with backward
///   when the model reports finished gradients through `gradientsReady` (or the `hook`
///   closure); `finishGradients()` waits for them. Gradients are *summed*: divide the loss by
///   the global batch (as `SoftmaxCrossEntropy(normalizer:)` does) for the mean over all ranks'
///   samples, or set `average` to divide by the number of ranks instead (each rank's loss
///   averaged over its own samples, as in DDP).
/// - `checkReplicas()` compares a checksum of every rank's parameters with rank 0's.
/// - With `microShards` (the deterministic mode), BatchNorm statistics and gradients are summed
///   per micro-shard and along `MicroShards`' fixed tree instead of by all-reduce, so the model
///   comes out bit for bit the same for every number of ranks (see `MicroShards`); gradients
///   are then reduced after backward, not overlapped with it.
///
/// One step:
///
///     dp.beginStep()                      // zeroes gradients, resets the buckets
///     let l = loss.forward(logits: model.forward(x, mode: .training), labels: y, normalizer: globalBatch)
///     model.backward(loss.grad)           // calling dp.gradientsReady(params) as layers finish, if it can
///     dp.finishGradients()
///     optimizer.step(lr: ...)
public final class DataParallel {
    public let comm: Communicator
    public let store: ParameterStore
    public let state: [StateTensor]
    public let norms: [BatchNorm2d]
    public let reducer: GradientReducer
    /// Divide the summed gradients by the number of ranks in `finishGradients()`.
    public var average = false

    /// How batch norm normalizes under this wrapper.
    public enum NormMode: Hashable, CustomStringConvertible, Sendable {
        /// One process: plain batch norm over its batch.
        case single
        /// Statistics over each rank's batch alone.
        case local
        /// SyncBatchNorm over groups of `ranks` ranks (all of them when it equals the world size).
        case sync(ranks: Int)
        /// Statistics over every rank's batch, summed in a fixed order over `shards` micro-shards.
        case deterministic(ranks: Int, shards: Int)

        public var description: String {
            switch self {
            case .single: return "single process"
            case .local: return "local"
            case .sync(let k): return "sync over \(k) ranks"
            case .deterministic(let k, let s): return "sync over \(k) rank\(k == 1 ? "" : "s"), fixed-order sums over \(s) micro-shards"
            }
        }
    }
    public let normMode: NormMode
    /// Ranks each BatchNorm layer's statistics cover: 1 for local BN (and a single process), k
    /// for SyncBatchNorm over groups of k.
    public var bnGroupSize: Int {
        switch normMode {
        case .sync(let k), .deterministic(let k, _): return k
        default: return 1
        }
    }
    /// The deterministic mode's micro-shards, or nil.
    public let microShards: MicroShards?
    /// The deterministic mode: each parameter's index in the store, and whether its shards have
    /// been added this step (by `gradientsReady`, while they are still in cache).
    private var parameterIndex: [ObjectIdentifier: Int] = [:]
    private var shardsAdded: [Bool] = []

    /// - Parameters:
    ///   - store, state, norms: the model's parameters, its state (parameters and buffers, in a
    ///     fixed order) and its batch-norm layers.
    ///   - syncBatchNorm: synchronize BN statistics over ranks (groups of `bnGroupSize`, which must
    ///     divide the world size; nil means all ranks).
    ///   - broadcast: copy rank 0's state to every rank now (false when the caller will load it).
    ///   - microShards: the deterministic mode with this many micro-shards per global batch (a
    ///     power of two the number of ranks divides; BatchNorm synchronized over all ranks).
    public init(store: ParameterStore, state: [StateTensor], norms: [BatchNorm2d], comm: Communicator,
                syncBatchNorm: Bool = true, bnGroupSize: Int? = nil, bucketBytes: Int = 256 * 1024,
                broadcast: Bool = true, microShards: Int? = nil) throws {
        self.comm = comm; self.store = store; self.state = state; self.norms = norms
        let k = bnGroupSize ?? comm.size
        if microShards == nil, let g = bnGroupSize, !(g > 0 && comm.size % g == 0) {
            throw TricksError.invalidArgument("--bn-group-size \(g) does not divide the number of ranks \(comm.size)")
        }
        self.microShards = try microShards.map { S in
            guard syncBatchNorm && k == comm.size else {
                throw TricksError.invalidArgument("--deterministic needs BatchNorm synchronized over all ranks (--bn sync, no --bn-group-size)")
            }
            return try MicroShards(count: S, comm: comm)
        }
        if let ms = self.microShards {
            store.splitGradients(shards: ms.local)
            norms.forEach { $0.group = nil; $0.shards = ms }
            for (i, p) in store.parameters.enumerated() { parameterIndex[ObjectIdentifier(p)] = i }
            shardsAdded = [Bool](repeating: false, count: store.parameters.count)
            normMode = .deterministic(ranks: comm.size, shards: ms.count)
        } else if comm.size == 1 {
            normMode = .single
            norms.forEach { $0.group = nil }
        } else if syncBatchNorm && k > 1 {
            let group = comm.subgroup(size: k)
            norms.forEach { $0.group = group }
            normMode = .sync(ranks: k)
        } else {
            norms.forEach { $0.group = nil }
            normMode = .local
        }
        reducer = GradientReducer(store: store, comm: comm, bucketBytes: bucketBytes)
        if broadcast { broadcastState() }
    }

    /// Wraps a `ResNet`: its parameters, state and BN layers, with its backward hook connected.
    public convenience init(_ model: ResNet, comm: Communicator, syncBatchNorm: Bool = true, bnGroupSize: Int? = nil,
                            bucketBytes: Int = 256 * 1024, broadcast: Bool = true, microShards: Int? = nil) throws {
        try self.init(store: model.store, state: model.state, norms: model.norms, comm: comm, syncBatchNorm: syncBatchNorm,
                      bnGroupSize: bnGroupSize, bucketBytes: bucketBytes, broadcast: broadcast, microShards: microShards)
        model.onGradientsReady = hook
    }

    /// The closure to give a model's backward pass (`gradientsReady`).
    public var hook: ([Parameter]) -> Void {
        if microShards != nil { return { [weak self] in self?.addShards($0) } }
        return { [reducer] in reducer.gradientsReady($0) }
    }

    /// The deterministic mode: adds the finished parameters' micro-shard gradients along this
    /// rank's subtree now, while they are in cache (the ranks' levels follow in `finishGradients`).
    private func addShards(_ params: [Parameter]) {
        guard let ms = microShards, ms.local > 1 else { return }
        for p in params {
            guard let i = parameterIndex[ObjectIdentifier(p)], !shardsAdded[i] else { continue }
            MicroShards.localTree(p.shardGrads, p.count)
            shardsAdded[i] = true
        }
    }

    /// Copies rank 0's parameters and buffers to every rank.
    public func broadcastState() { DataParallel.broadcast(state, comm: comm) }

    /// Copies rank 0's values of `state` to every rank.
    public static func broadcast(_ state: [StateTensor], comm: Communicator) {
        guard comm.size > 1 else { return }
        for t in state {
            switch t.storage {
            case .float(let p): comm.broadcast(UnsafeMutableRawBufferPointer(start: p, count: 4 * t.count), root: 0)
            case .int64(let p): comm.broadcast(UnsafeMutableRawBufferPointer(start: p, count: 8 * t.count), root: 0)
            }
        }
    }

    /// Zeroes the gradients and starts a new round of buckets.
    public func beginStep() {
        store.zeroGrad()
        reducer.beginStep()
        for i in shardsAdded.indices { shardsAdded[i] = false }
    }

    /// Records that `params`' gradients are final (called from the backward pass).
    public func gradientsReady(_ params: [Parameter]) {
        if microShards != nil { addShards(params) } else { reducer.gradientsReady(params) }
    }

    /// Sums every gradient over the ranks (starting buckets not started yet) and waits; with
    /// `average`, divides by the number of ranks. Returns the seconds spent waiting.
    @discardableResult
    public func finishGradients() -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        if let ms = microShards {
            precondition(!average, "the deterministic mode sums gradients; divide the loss by the global batch instead of averaging")
            addShards(store.parameters)   // those the backward pass did not report
            comm.label("gradients, fixed order")
            ms.sumAcrossRanks(store.grads, count: store.count)
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
        }
        reducer.finish()
        if average && comm.size > 1 {
            let s = 1 / Float(comm.size)
            for i in 0..<store.count { store.grads[i] *= s }
        }
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }

    /// A 64-bit FNV-1a hash of every parameter's bits and, when batch-norm statistics are shared
    /// by all ranks, every buffer's (local BN's running statistics differ by design).
    public func checksum() -> UInt64 {
        let buffersAgree: Bool
        switch normMode {
        case .single: buffersAgree = true
        case .local: buffersAgree = false
        case .sync(let k): buffersAgree = k == comm.size
        case .deterministic: buffersAgree = true
        }
        let parameterNames = Set(store.parameters.map(\.name))
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ p: UnsafeRawPointer, _ n: Int) {
            let b = p.assumingMemoryBound(to: UInt8.self)
            for i in 0..<n { h = (h ^ UInt64(b[i])) &* 0x100_0000_01B3 }
        }
        for t in state {
            switch t.storage {
            case .float(let p):
                if !buffersAgree && !parameterNames.contains(t.name) { continue }
                mix(p, 4 * t.count)
            case .int64(let p): mix(p, 8 * t.count)
            }
        }
        return h
    }

    /// The ranks whose parameters and buffers differ from rank 0's (empty when all agree). A
    /// collective: every rank must call it at the same step.
    public func divergedRanks() -> [Int] {
        guard comm.size > 1 else { return [] }
        let mine = checksum()
        var root = mine
        withUnsafeMutableBytes(of: &root) { comm.broadcast($0, root: 0) }
        var diverged = [Double](repeating: 0, count: comm.size)
        diverged[comm.rank] = root == mine ? 0 : 1
        diverged.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        return diverged.indices.filter { diverged[$0] != 0 }
    }
}
