import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// The instruction set of the hand-written kernels (direct and Winograd convolutions, batch
/// norm and the element-wise passes): one choice for the whole process.
///
/// At start the best set the CPU runs is chosen; the environment variable `TRICKS_ISA`
/// (`avx512`, `avx2` or `portable`) lowers it. Every vector path rounds differently from the
/// others only by the order of float32 sums; `portable` is plain C, the reference the vector
/// paths are tested against. No layer reads CPU flags itself.
public enum KernelISA: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case portable = 0, avx2 = 1, avx512 = 2

    /// "portable", "avx2" or "avx512", as `TRICKS_ISA` spells it.
    public var description: String { String(cString: tk_isa_name(rawValue)) }

    /// The set named `name`, or nil.
    public init?(name: String) {
        let v = tk_isa_parse(name)
        guard v >= 0, let isa = KernelISA(rawValue: v) else { return nil }
        self = isa
    }

    /// True when this CPU runs it.
    public var isSupported: Bool { tk_isa_supported(rawValue) != 0 }

    /// Every set this CPU runs, lowest first (tests run each kernel once per entry).
    public static var supported: [KernelISA] { allCases.filter(\.isSupported) }

    /// The best set this CPU runs.
    public static var best: KernelISA { KernelISA(rawValue: tk_isa_best())! }

    /// The set in use.
    public static var current: KernelISA { KernelISA(rawValue: tk_isa())! }

    /// Switches every kernel to `isa`; throws, changing nothing, when the CPU lacks it.
    public static func use(_ isa: KernelISA) throws {
        guard tk_set_isa(isa.rawValue) == 0 else { throw KernelISAError.unsupported(isa, fromEnvironment: false) }
    }

    /// Runs `body` with `isa` in use, then restores the previous set (for tests and comparisons).
    public static func with<T>(_ isa: KernelISA, _ body: () throws -> T) throws -> T {
        let saved = current
        try use(isa)
        defer { try? use(saved) }
        return try body()
    }

    /// Runs the AVX-512 kernels' Winograd register tiling on the AVX2 path (tests: CPUs without
    /// AVX-512 check that tiling's logic, which only its instruction set differs from).
    static var winogradWideTilesOnAVX2 = false {
        didSet { tk_wino_use_wide_tiles(winogradWideTilesOnAVX2 ? 1 : 0) }
    }

    /// Throws when `TRICKS_ISA` names an unknown set or one this CPU lacks (the best set is in
    /// use meanwhile); programs call it at start so that such a request ends them.
    public static func checkEnvironment() throws {
        let requested = getenv("TRICKS_ISA").map { String(cString: $0) } ?? ""
        switch tk_isa_env_error() {
        case 1: throw KernelISAError.unknown(requested)
        case 2: throw KernelISAError.unsupported(KernelISA(name: requested) ?? .portable, fromEnvironment: true)
        default: return
        }
    }
}

/// A request for a kernel instruction set that cannot be honoured.
public enum KernelISAError: Error, CustomStringConvertible {
    case unknown(String)
    case unsupported(KernelISA, fromEnvironment: Bool)

    public var description: String {
        switch self {
        case .unknown(let name):
            return "TRICKS_ISA=\(name): unknown instruction set (use one of \(KernelISA.allCases.map(\.description).joined(separator: ", ")))"
        case .unsupported(let isa, let env):
            return (env ? "TRICKS_ISA=\(isa)" : "kernel instruction set \(isa)")
                + ": this CPU does not support it (it runs \(KernelISA.supported.map(\.description).joined(separator: ", ")))"
        }
    }
}
