#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Line-buffered writes to the standard streams.
public enum FileHandleOutput {
    public static func stderr(_ s: String) {
        FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
    }
    public static func stdout(_ s: String) {
        print(s)
        fflush(Glibc.stdout)
    }
}
