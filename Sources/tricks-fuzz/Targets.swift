import Foundation
import Tricks

/// The readers of untrusted files, each fed raw bytes by `fuzzOne`.
enum FuzzTarget: String, CaseIterable {
    /// `SafeTensors.metadata`, `decode`, and a strict `load` into a small state dict.
    case safetensors
    /// `IDX.parse`.
    case idx
    /// `NPZ.readArchive` (zip, zip64, deflate) with every array's `integers`, then `NPZ.loadDataset`;
    /// an input that starts like a `.npy` file goes to `NPZ.parseNPY` and `integers` alone.
    case npz
    /// `Image.decode`: JPEG through libjpeg, PNG through libpng (`CImageIO`).
    case image
    /// `VOCDataset.parseAnnotation`: the XML reader and the annotation's fields.
    case voc

    static var names: String { allCases.map(\.rawValue).joined(separator: "|") }
}

/// The state dict the `safetensors` target loads into (the `safetensors` seeds match it).
let fuzzState: [StateTensor] = {
    func floats(_ n: Int) -> StateTensor.Storage {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
        p.initialize(repeating: 0, count: n)
        return .float(p)
    }
    let steps = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    steps.initialize(to: 0)
    return [StateTensor(name: "conv.weight", shape: [2, 1, 3, 3], storage: floats(18)),
            StateTensor(name: "bn.bias", shape: [2], storage: floats(2)),
            StateTensor(name: "bn.num_batches_tracked", shape: [], storage: .int64(steps))]
}()

let vocClassIndex = Dictionary(uniqueKeysWithValues: VOCDataset.vocClasses.enumerated().map { ($1, $0) })

/// Feeds one input to the reader `target` names (a `FuzzTarget`). A thrown error is the right
/// answer to bad bytes and is returned (the fuzzer ignores it); a crash, a trap, a sanitizer
/// report or a hang is a bug.
@discardableResult
func fuzzOne(target: String, data: Data) -> Error? {
    guard let target = FuzzTarget(rawValue: target) else { preconditionFailure("unknown fuzz target \(target)") }
    do {
        switch target {
        case .safetensors:
            let path = "fuzz.safetensors"
            _ = try? SafeTensors.metadata(data, path: path)
            _ = try SafeTensors.decode(data, path: path)
            try SafeTensors.load(path, into: fuzzState, data: data)
        case .idx:
            _ = try IDX.parse(data, path: "fuzz-idx3-ubyte")
        case .npz where data.starts(with: [0x93] + Array("NUMPY".utf8)):
            // A bare `.npy`, the archive's members' format.
            _ = try NPZ.parseNPY(data, what: "fuzz.npy").integers(what: "fuzz.npy")
        case .npz:
            let path = "fuzz.npz"
            for (name, array) in try NPZ.readArchive(path, data: data) {
                _ = try? array.integers(what: "\(path):\(name)")
            }
            _ = try NPZ.loadDataset(path, data: data)
        case .image:
            _ = try Image.decode([UInt8](data), name: "fuzz.img")
        case .voc:
            _ = try VOCDataset.parseAnnotation(path: "fuzz.xml", classIndex: vocClassIndex, data: data)
        }
        return nil
    } catch {
        return error
    }
}
