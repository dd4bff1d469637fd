import Foundation

/// Random-shape (multi-scale) training, as in darknet's YOLOv2/v3 and GluonCV: the square input
/// size is redrawn every `every` steps from `sizes`, and fixed at `finalSize` from step
/// `fixedFrom` on. The draw is a pure function of `(seed, step / every)`, so every rank gets
/// the same shape without communicating.
public struct RandomShapes: Sendable, Equatable, Codable {
    public var sizes: [Int]
    public var every: Int
    public var seed: UInt64
    /// From this step on, `finalSize` (nil: never).
    public var fixedFrom: Int?
    public var finalSize: Int

    public init(sizes: [Int], every: Int = 10, seed: UInt64, fixedFrom: Int? = nil, finalSize: Int? = nil) throws {
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 }) else { throw TricksError.invalidArgument("--random-shapes: no positive sizes") }
        guard every >= 1 else { throw TricksError.invalidArgument("--shape-every must be at least 1, got \(every)") }
        self.sizes = sizes; self.every = every; self.seed = seed; self.fixedFrom = fixedFrom
        self.finalSize = finalSize ?? sizes.max()!
    }

    /// The input side at `step` (counted from 0 over the whole run).
    public func size(atStep step: Int) -> Int {
        if let f = fixedFrom, step >= f { return finalSize }
        var rng = SplitMix64(key: [seed, UInt64(step / every), 0x5253_4850])
        return sizes[rng.below(sizes.count)]
    }

    /// Parses `"320,352,416"`, a range `"320:608"` (in steps of `multiple`) or `"96:160:16"`
    /// (in steps of 16). Every size must be a multiple of `multiple` (the network's stride).
    public static func parseSizes(_ text: String, multiple: Int = 32) throws -> [Int] {
        let flag = "--random-shapes"
        var sizes: [Int]
        if text.contains(":") {
            let p = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard p.count == 2 || p.count == 3, let lo = p[0], let hi = p[1], p.count == 2 || p[2] != nil else {
                throw TricksError.invalidArgument("\(flag): expected LO:HI or LO:HI:STEP, got '\(text)'")
            }
            let step = p.count == 3 ? p[2]! : multiple
            guard lo > 0, hi >= lo, step > 0 else { throw TricksError.invalidArgument("\(flag): empty range '\(text)'") }
            sizes = Array(stride(from: lo, through: hi, by: step))
        } else {
            let p = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !p.isEmpty, p.allSatisfy({ $0 != nil && $0! > 0 }) else {
                throw TricksError.invalidArgument("\(flag): expected comma-separated positive sizes, got '\(text)'")
            }
            sizes = p.map { $0! }
        }
        if let bad = sizes.first(where: { $0 % multiple != 0 }) {
            throw TricksError.invalidArgument("\(flag): \(bad) is not a multiple of \(multiple) (the network's stride)")
        }
        return sizes
    }
}
