#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Float buffers for tensors and scratch memory.
///
/// Buffers of at least `hugeThreshold` bytes are mapped directly (`mmap`), 2 MiB-aligned,
/// rounded up to whole 2 MiB pages and advised as transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; Linux kernels often grant huge pages only on request). With
/// 4 KiB pages a buffer's physical pages, and so the L2 sets its lines map to, are a matter of
/// chance: kernels that stream several large buffers at once (Winograd's tile buffers) ran 30%
/// faster or slower from one process to the next. A 2 MiB page is physically contiguous, so
/// the mapping is the same every run. Mapping them directly also keeps these long-lived
/// buffers out of malloc's heap and its heuristics. Smaller buffers come from malloc, aligned
/// to a cache line.
enum Memory {
    static let hugePage = 2 << 20
    static let hugeThreshold = 256 << 10

    nonisolated(unsafe) private static var mapped: [UInt: Int] = [:]
    private static let lock = NSLock()

    /// Zero-filled room for `count` floats; release with `free`. (Fresh anonymous mappings are
    /// zero already; only malloc's memory is cleared.)
    static func zeroed(_ count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        if bytes >= hugeThreshold, let p = mapHuge(bytes) { return p.bindMemory(to: Float.self, capacity: count) }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, bytes) == 0, let p = raw else { fatalError("out of memory: \(bytes) bytes") }
        memset(p, 0, bytes)
        return p.bindMemory(to: Float.self, capacity: count)
    }

    static func free(_ p: UnsafeMutablePointer<Float>) {
        let address = UInt(bitPattern: p)
        lock.lock()
        let size = mapped.removeValue(forKey: address)
        lock.unlock()
        if let size { munmap(UnsafeMutableRawPointer(p), size) } else { Foundation.free(p) }
    }

    /// A 2 MiB-aligned anonymous mapping of whole huge pages, or nil if mmap refuses.
    private static func mapHuge(_ bytes: Int) -> UnsafeMutableRawPointer? {
        let size = (bytes + hugePage - 1) / hugePage * hugePage
        guard let raw = mmap(nil, size + hugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != UnsafeMutableRawPointer(bitPattern: UInt.max) else { return nil }
        let start = UInt(bitPattern: raw), aligned = (start + UInt(hugePage) - 1) / UInt(hugePage) * UInt(hugePage)
        if aligned > start { munmap(raw, Int(aligned - start)) }
        let end = start + UInt(size + hugePage)
        if end > aligned + UInt(size) { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), Int(end - aligned - UInt(size))) }
        let p = UnsafeMutableRawPointer(bitPattern: aligned)!
        #if os(Linux)
        _ = madvise(p, size, MADV_HUGEPAGE)
        #endif
        lock.lock()
        mapped[aligned] = size
        lock.unlock()
        return p
    }
}
