/// A float32 tensor with a row-major (NCHW for images) shape and a reusable buffer.
///
/// Storage grows but never shrinks: `resize(_:)` to a shape that fits the current
/// capacity allocates nothing, so layers can keep their output and gradient
/// tensors across steps without allocation growth.
public final class Tensor: @unchecked Sendable {
    /// The shape, outermost first, e.g. `[N, C, H, W]`.
    public private(set) var shape: [Int]
    /// The first element; valid for `count` elements.
    public private(set) var data: UnsafeMutablePointer<Float>
    /// Number of allocated elements (≥ `count`).
    public private(set) var capacity: Int

    /// Allocates a zero-filled tensor of the given shape.
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        let n = shape.reduce(1, *)
        capacity = max(n, 1)
        data = Memory.zeroed(capacity)
    }

    /// A tensor holding a copy of `values`.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { Memory.free(data) }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Sets a new shape, reallocating only when it needs more room than the buffer has.
    /// Contents are unspecified afterwards.
    public func resize(_ newShape: [Int]) {
        if newShape == shape { return }
        let n = newShape.reduce(1, *)
        if n > capacity {
            Memory.free(data)
            capacity = n
            data = Memory.zeroed(n)
        }
        shape = newShape
    }

    /// Sets every element to zero.
    public func zero() { data.update(repeating: 0, count: count) }

    /// The elements as a Swift array (a copy).
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// The elements as a buffer pointer.
    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: count) }

    /// Copies shape and values from `other`.
    public func copy(from other: Tensor) {
        resize(other.shape)
        data.update(from: other.data, count: other.count)
    }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }
}
