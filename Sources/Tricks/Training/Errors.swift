/// Errors the library reports to its caller with a message that says what and where.
public enum TricksError: Error, CustomStringConvertible, Equatable {
    case invalidArgument(String)
    case badData(String)
    case badCheckpoint(String)
    case io(String)

    public var description: String {
        switch self {
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .badData(let m): return "bad data: \(m)"
        case .badCheckpoint(let m): return "bad checkpoint: \(m)"
        case .io(let m): return "I/O error: \(m)"
        }
    }
}
