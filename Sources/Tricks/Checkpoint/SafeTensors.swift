import Foundation

/// The safetensors format: an 8-byte little-endian header length, a JSON header
/// mapping names to `{dtype, shape, data_offsets}`, then raw little-endian data.
/// Files load in PyTorch with `safetensors.torch.load_file`.
public enum SafeTensors {
    /// A tensor read from a file, converted to the types the library stores.
    public enum Values: Equatable {
        case float([Float])
        case int64([Int64])
    }

    /// Serializes named tensors (in the given order) to bytes.
    public static func encode(_ tensors: [StateTensor], metadata: [String: String] = [:]) -> Data {
        var header = "{"
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            header += "\"__metadata__\":{\(m)},"
        }
        var offset = 0
        var parts: [String] = []
        for t in tensors {
            let bytes: Int
            let dtype: String
            switch t.storage {
            case .float: bytes = 4 * t.count; dtype = "F32"
            case .int64: bytes = 8 * t.count; dtype = "I64"
            }
            parts.append("\(jsonString(t.name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while (h.count % 8) != 0 { h.append(0x20) }
        var out = Data(capacity: 8 + h.count + offset)
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        for t in tensors {
            switch t.storage {
            case .float(let p): out.append(UnsafeBufferPointer(start: p, count: t.count))
            case .int64(let p): out.append(UnsafeBufferPointer(start: p, count: t.count))
            }
        }
        return out
    }

    private static func jsonString(_ s: String) -> String {
        let d = try! JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        return String(decoding: d, as: UTF8.self).dropFirst().dropLast().description
    }

    /// The string metadata (`__metadata__`) of a file's header.
    public static func metadata(_ d: Data, path: String) throws -> [String: String] {
        let n = try headerLength(d, path: path)
        guard let json = try? JSONSerialization.jsonObject(with: d.subdata(in: 8..<8 + n)) as? [String: Any] else {
            throw TricksError.badCheckpoint("\(path): unreadable header (truncated or not safetensors)")
        }
        return json["__metadata__"] as? [String: String] ?? [:]
    }

    /// The header's length from the first 8 bytes, checked against the file's size.
    static func headerLength(_ d: Data, path: String) throws -> Int {
        guard d.count >= 8 else { throw TricksError.badCheckpoint("\(path): too short for a safetensors header") }
        let n = d.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n > 0, n <= UInt64(d.count - 8) else {
            throw TricksError.badCheckpoint("\(path): header length \(n) exceeds file size \(d.count) (truncated or not safetensors)")
        }
        return Int(n)
    }

    /// Parses a file's bytes into named tensors with shapes; F32, F64, F16, BF16 and integer dtypes are accepted.
    public static func decode(_ d: Data, path: String) throws -> [String: (shape: [Int], values: Values)] {
        let n = try headerLength(d, path: path)
        guard let json = try? JSONSerialization.jsonObject(with: d.subdata(in: 8..<8 + n)) as? [String: Any] else {
            throw TricksError.badCheckpoint("\(path): header is not a JSON object")
        }
        let base = 8 + n
        var out: [String: (shape: [Int], values: Values)] = [:]
        var ranges: [(name: String, start: Int, end: Int)] = []
        for (name, v) in json where name != "__metadata__" {
            guard let e = v as? [String: Any], let dtype = e["dtype"] as? String,
                  let shape = (e["shape"] as? [NSNumber])?.map({ $0.intValue }),
                  let offs = (e["data_offsets"] as? [NSNumber])?.map({ $0.intValue }), offs.count == 2 else {
                throw TricksError.badCheckpoint("\(path): malformed entry for \(name)")
            }
            let width: [String: Int] = ["F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                                        "I8": 1, "U8": 1, "BOOL": 1]
            guard let w = width[dtype] else { throw TricksError.badCheckpoint("\(path): \(name) has unsupported dtype \(dtype)") }
            guard offs[0] >= 0, offs[0] <= offs[1], offs[1] <= d.count - base else {
                throw TricksError.badCheckpoint("\(path): \(name) data_offsets \(offs) out of bounds of the \(d.count - base) data bytes (truncated file?)")
            }
            // The element count; nil for a negative or overflowing size.
            let count = shape.reduce(Optional(1)) { a, b in
                a.flatMap { b < 0 || $0.multipliedReportingOverflow(by: b).overflow ? nil : $0 * b }
            }
            guard let count, count == (offs[1] - offs[0]) / w, (offs[1] - offs[0]) % w == 0 else {
                throw TricksError.badCheckpoint("\(path): \(name) has shape \(shape) of \(dtype), which does not match its \(offs[1] - offs[0]) bytes at data_offsets \(offs)")
            }
            ranges.append((name, offs[0], offs[1]))
            let raw = d.subdata(in: base + offs[0]..<base + offs[1])
            let values: Values = raw.withUnsafeBytes { r in
                func load<T>(_ t: T.Type, _ i: Int) -> T { r.loadUnaligned(fromByteOffset: i * w, as: T.self) }
                switch dtype {
                case "F32": return .float((0..<count).map { Float(bitPattern: UInt32(littleEndian: load(UInt32.self, $0))) })
                case "F64": return .float((0..<count).map { Float(Double(bitPattern: UInt64(littleEndian: load(UInt64.self, $0)))) })
                case "F16": return .float((0..<count).map { Float(Float16(bitPattern: UInt16(littleEndian: load(UInt16.self, $0)))) })
                case "BF16": return .float((0..<count).map { Float(bitPattern: UInt32(UInt16(littleEndian: load(UInt16.self, $0))) << 16) })
                case "I64": return .int64((0..<count).map { Int64(littleEndian: load(Int64.self, $0)) })
                case "I32": return .int64((0..<count).map { Int64(Int32(littleEndian: load(Int32.self, $0))) })
                case "I16": return .int64((0..<count).map { Int64(Int16(littleEndian: load(Int16.self, $0))) })
                case "I8": return .int64((0..<count).map { Int64(load(Int8.self, $0)) })
                default: return .int64((0..<count).map { Int64(load(UInt8.self, $0)) })
                }
            }
            out[name] = (shape, values)
        }
        // Tensors may not share bytes (the format lays them out one after another).
        ranges.sort { ($0.start, $0.end) < ($1.start, $1.end) }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.start < a.end {
            throw TricksError.badCheckpoint("\(path): data of \(b.name) [\(b.start), \(b.end)) overlaps \(a.name) [\(a.start), \(a.end))")
        }
        return out
    }

    /// Writes `data` to `path` atomically: a temporary file in the same directory, then rename.
    /// First removes the temporary files of `path` left by writers that no longer run.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        removeStaleTemporaries(of: path)
        let tmp = path + ".tmp-\(getpid())"
        // A failed write (a full disk, say) removes the temporary file and leaves `path` as it was.
        func fail(_ what: String) -> TricksError {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            return .io("cannot \(what): \(reason)")
        }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw fail("create \(tmp)") }
        var written = 0
        let ok = data.withUnsafeBytes { (b: UnsafeRawBufferPointer) -> Bool in
            while written < b.count {
                let k = write(fd, b.baseAddress! + written, b.count - written)
                if k < 0 && errno == EINTR { continue }
                guard k > 0 else { return false }
                written += k
            }
            return true
        }
        guard ok, fsync(fd) == 0 else { let e = fail("write \(path) (\(written) of \(data.count) bytes)"); close(fd); throw e }
        guard close(fd) == 0 else { throw fail("write \(path)") }
        if rename(tmp, path) != 0 { throw fail("rename \(tmp) to \(path)") }
    }

    /// Removes `path.tmp-PID` files whose process no longer runs on this machine: what a writer
    /// killed mid-write (SIGKILL, a lost node) leaves. `path` itself is untouched by such a kill,
    /// but the next run has another PID and would never replace the file, and each is as large as
    /// `path`. A temporary file of a live process, this one's or another's, is left alone.
    static func removeStaleTemporaries(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let prefix = (path as NSString).lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.isEmpty ? "." : dir) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = pid_t(name.dropFirst(prefix.count)), pid > 0, pid != getpid(), !isRunning(pid) else { continue }
            unlink((dir as NSString).appendingPathComponent(name))
        }
    }

    /// Whether process `pid` runs on this machine: it exists and is not a zombie (a killed
    /// writer not yet reaped by its parent still answers `kill(pid, 0)`).
    static func isRunning(_ pid: pid_t) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return false }
        // /proc/PID/stat: "PID (command) STATE …"; the command may hold spaces and parentheses.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// Saves a model's state dict.
    public static func save(_ state: [StateTensor], to path: String, metadata: [String: String] = [:]) throws {
        try writeAtomically(encode(state, metadata: metadata), to: path)
    }

    /// Loads a state dict into `state` strictly: every tensor must be present with the right
    /// shape, and no unexpected tensor may be present (like `load_state_dict(strict=True)`).
    public static func load(_ path: String, into state: [StateTensor], data: Data? = nil) throws {
        guard let d = data ?? FileManager.default.contents(atPath: path) else {
            throw TricksError.badCheckpoint("\(path): cannot read file")
        }
        let file = try decode(d, path: path)
        let missing = state.map(\.name).filter { file[$0] == nil }
        let expected = Set(state.map(\.name))
        let unexpected = file.keys.filter { !expected.contains($0) }.sorted()
        if !missing.isEmpty || !unexpected.isEmpty {
            var m = "\(path): does not match the model"
            if !missing.isEmpty { m += "; missing: \(missing.prefix(8).joined(separator: ", "))\(missing.count > 8 ? ", ..." : "")" }
            if !unexpected.isEmpty { m += "; unexpected: \(unexpected.prefix(8).joined(separator: ", "))\(unexpected.count > 8 ? ", ..." : "")" }
            throw TricksError.badCheckpoint(m)
        }
        for t in state {
            let (shape, values) = file[t.name]!
            guard shape == t.shape else {
                throw TricksError.badCheckpoint("\(path): \(t.name) has shape \(shape), the model expects \(t.shape)")
            }
            switch (t.storage, values) {
            case (.float(let p), .float(let v)): v.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: v.count) }
            case (.float(let p), .int64(let v)): for i in 0..<v.count { p[i] = Float(v[i]) }
            case (.int64(let p), .int64(let v)): for i in 0..<v.count { p[i] = v[i] }
            case (.int64(let p), .float(let v)): for i in 0..<v.count { p[i] = Int64(v[i]) }
            }
        }
    }
}
