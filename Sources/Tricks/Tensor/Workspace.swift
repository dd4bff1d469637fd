/// Scratch memory shared by the layers of one model: the im2col matrix and the
/// channel-major copies that conv uses. Grows to the largest request, then stays.
public final class Workspace: @unchecked Sendable {
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var capacities: [Int] = []

    public init() {}

    deinit { buffers.forEach { Memory.free($0) } }

    /// Scratch buffer number `slot` with room for at least `count` floats.
    /// Contents are unspecified; a later call for the same slot may return other memory.
    public func scratch(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot {
            buffers.append(Memory.zeroed(1)); capacities.append(1)
        }
        if capacities[slot] < count {
            Memory.free(buffers[slot])
            buffers[slot] = Memory.zeroed(count)
            capacities[slot] = count
        }
        return buffers[slot]
    }

    /// Total floats held, for allocation-growth tests.
    public var totalCapacity: Int { capacities.reduce(0, +) }
}
