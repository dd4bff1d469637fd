/// A trainable tensor with its gradient.
///
/// Values and gradients live in the flat buffers of a `ParameterStore` once the
/// model packs them (one contiguous buffer each, so gradients can be reduced in
/// a few large collectives); before packing each parameter owns its memory.
public final class Parameter: @unchecked Sendable {
    /// The `state_dict` name, e.g. `layer1.0.conv1.weight`.
    public let name: String
    public let shape: [Int]
    public let count: Int
    /// True for biases and batch-norm γ/β: excluded from weight decay by `--no-bias-decay`.
    public let isBiasOrNorm: Bool
    public internal(set) var value: UnsafeMutablePointer<Float>
    public internal(set) var grad: UnsafeMutablePointer<Float>
    /// In the deterministic mode (`ParameterStore.splitGradients`), the gradient of each of this
    /// rank's micro-shards, in shard order (the first is `grad`); layers add shard s's
    /// contribution into `shardGrads[s]`. Empty otherwise.
    public internal(set) var shardGrads: [UnsafeMutablePointer<Float>] = []
    private var owned: Bool

    public init(name: String, shape: [Int], isBiasOrNorm: Bool = false) {
        self.name = name
        self.shape = shape
        self.isBiasOrNorm = isBiasOrNorm
        count = shape.reduce(1, *)
        value = .allocate(capacity: count); value.initialize(repeating: 0, count: count)
        grad = .allocate(capacity: count); grad.initialize(repeating: 0, count: count)
        owned = true
    }

    deinit { if owned { value.deallocate(); grad.deallocate() } }

    /// Moves values and gradients into the store's memory.
    func rebind(value v: UnsafeMutablePointer<Float>, grad g: UnsafeMutablePointer<Float>) {
        v.update(from: value, count: count)
        g.update(from: grad, count: count)
        if owned { value.deallocate(); grad.deallocate() }
        value = v; grad = g; owned = false
    }

    public var values: UnsafeMutableBufferPointer<Float> { .init(start: value, count: count) }
    public var grads: UnsafeMutableBufferPointer<Float> { .init(start: grad, count: count) }
}

/// All parameters of a model in two contiguous buffers: values and gradients.
public final class ParameterStore: @unchecked Sendable {
    public let parameters: [Parameter]
    public let count: Int
    /// Offsets of each parameter in the flat buffers, in `parameters` order.
    public let offsets: [Int]
    public let values: UnsafeMutablePointer<Float>
    public let grads: UnsafeMutablePointer<Float>

    public init(_ parameters: [Parameter]) {
        self.parameters = parameters
        var offs: [Int] = []
        var total = 0
        for p in parameters { offs.append(total); total += p.count }
        count = total
        offsets = offs
        values = .allocate(capacity: max(total, 1)); values.initialize(repeating: 0, count: max(total, 1))
        grads = .allocate(capacity: max(total, 1)); grads.initialize(repeating: 0, count: max(total, 1))
        for (p, o) in zip(parameters, offs) { p.rebind(value: values + o, grad: grads + o) }
    }

    /// Gradient buffers of micro-shards 1, 2, … (shard 0's is `grads`), after `splitGradients`.
    public private(set) var shardGradBuffers: [UnsafeMutablePointer<Float>] = []

    deinit { values.deallocate(); grads.deallocate(); shardGradBuffers.dropFirst().forEach { $0.deallocate() } }

    /// Gives every parameter one gradient buffer per micro-shard of this rank (the deterministic
    /// mode, `MicroShards`): shard 0's is the usual `grads`, so the tree sum of the shards lands
    /// where the optimizer reads. With one shard `shardGrads` is `[grad]`: layers still make
    /// the mode's choices of kernels, which depend on shapes alone.
    public func splitGradients(shards: Int) {
        precondition(shards >= 1)
        shardGradBuffers.dropFirst().forEach { $0.deallocate() }
        shardGradBuffers = [grads] + (1..<shards).map { _ in
            let b = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            b.initialize(repeating: 0, count: max(count, 1))
            return b
        }
        for (p, o) in zip(parameters, offsets) { p.shardGrads = shardGradBuffers.map { $0 + o } }
    }

    /// Sets every gradient to zero (every micro-shard's, when split).
    public func zeroGrad() {
        grads.update(repeating: 0, count: count)
        for b in shardGradBuffers.dropFirst() { b.update(repeating: 0, count: count) }
    }
}

/// One named tensor of a model's state: a parameter or a buffer
/// (`running_mean`, `running_var`, `num_batches_tracked`).
public struct StateTensor: @unchecked Sendable {
    public enum Storage {
        case float(UnsafeMutablePointer<Float>)
        case int64(UnsafeMutablePointer<Int64>)
    }
    public let name: String
    public let shape: [Int]
    public let storage: Storage
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, shape: [Int], storage: Storage) {
        self.name = name; self.shape = shape; self.storage = storage
    }
}

/// Whether layers normalize with batch statistics (and update running ones) or use running ones.
public enum Mode: Sendable {
    case training, inference
}

/// A layer with a hand-written backward pass.
///
/// `forward` caches what `backward` needs, often a reference to its input rather than
/// a copy (so the input must not change before `backward`); `backward` *adds* into parameter
/// gradients and returns the gradient with respect to the input. The returned
/// tensors belong to the layer and are overwritten by the next call.
public protocol Layer: AnyObject {
    func forward(_ x: Tensor, mode: Mode) -> Tensor
    func backward(_ dy: Tensor) -> Tensor
    /// Trainable parameters, in `state_dict` order.
    var parameters: [Parameter] { get }
    /// Parameters and buffers, in `state_dict` order.
    var state: [StateTensor] { get }
}

public extension Layer {
    var parameters: [Parameter] { [] }
    var state: [StateTensor] { parameters.map { StateTensor(name: $0.name, shape: $0.shape, storage: .float($0.value)) } }
}
