import Foundation

/// A small, fast, splittable generator (SplitMix64). Every random choice that
/// ranks must agree on is drawn from one seeded by a key such as
/// `(seed, epoch, sample)`, never from per-process state.
public struct SplitMix64: RandomNumberGenerator, Sendable, Codable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator keyed by several integers, e.g. `(seed, epoch, sampleIndex)`.
    public init(key: [UInt64]) {
        var s: UInt64 = 0x9E37_79B9_7F4A_7C15
        for k in key {
            var g = SplitMix64(seed: s ^ k)
            s = g.next() &+ 0x632B_E59B_D9B4_E019
        }
        state = s
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    /// Uniform integer in `0..<n`.
    public mutating func below(_ n: Int) -> Int { Int(next(upperBound: UInt64(n))) }
}
