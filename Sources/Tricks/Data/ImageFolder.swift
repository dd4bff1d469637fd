import Foundation

/// A classification set stored as image files, one sub-folder per class (the layout
/// torchvision's `ImageFolder` reads), for both splits:
///
///     DIR/train/<class>/*.{png,jpg,jpeg}
///     DIR/val/<class>/…        (or DIR/test/<class>/…)
///
/// Classes are the training split's sub-folders in sorted order; files are taken in sorted
/// order. Images are decoded into memory, resized (bilinear) to `imageSize × imageSize` when
/// given, else they must all share one size; the set is gray when every image is, RGB
/// otherwise (alpha is dropped).
public enum ImageFolder {
    static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// Whether `dir` has the layout (a `train` folder with class sub-folders).
    public static func matches(_ dir: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir + "/train", isDirectory: &isDir), isDir.boolValue else { return false }
        return ((try? subfolders(dir + "/train")) ?? []).isEmpty == false
    }

    static func subfolders(_ dir: String) throws -> [String] {
        let fm = FileManager.default
        let names: [String]
        do { names = try fm.contentsOfDirectory(atPath: dir) } catch {
            throw TricksError.badData("\(dir): cannot list (\(error.localizedDescription))")
        }
        return names.filter { n in
            var isDir: ObjCBool = false
            return !n.hasPrefix(".") && fm.fileExists(atPath: dir + "/" + n, isDirectory: &isDir) && isDir.boolValue
        }.sorted()
    }

    /// The (path, class index) pairs of one split.
    public static func files(_ splitDir: String, classes: [String]) throws -> [(path: String, label: Int)] {
        var out: [(String, Int)] = []
        let present = try subfolders(splitDir)
        if let extra = present.first(where: { !classes.contains($0) }) {
            throw TricksError.badData("\(splitDir)/\(extra): a class folder the training split does not have")
        }
        for (k, c) in classes.enumerated() where present.contains(c) {
            let d = splitDir + "/" + c
            let names = (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []
            let images = names.filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
            out += images.map { (d + "/" + $0, k) }
        }
        guard !out.isEmpty else { throw TricksError.badData("\(splitDir): no .png/.jpg/.jpeg images in its class folders") }
        return out
    }

    /// Loads both splits.
    public static func load(_ dir: String, imageSize: Int? = nil) throws -> DatasetSplits {
        let classes = try subfolders(dir + "/train")
        guard classes.count >= 2 else { throw TricksError.badData("\(dir)/train: \(classes.count) class folder(s); need at least 2") }
        let fm = FileManager.default
        guard let testName = ["val", "test"].first(where: { fm.fileExists(atPath: dir + "/" + $0) }) else {
            throw TricksError.badData("\(dir): no val/ or test/ folder beside train/")
        }
        let trainFiles = try files(dir + "/train", classes: classes)
        let testFiles = try files(dir + "/" + testName, classes: classes)
        for (k, c) in classes.enumerated() where !trainFiles.contains(where: { $0.label == k }) {
            throw TricksError.badData("\(dir)/train/\(c): no images")
        }
        let train = try decode(trainFiles), test = try decode(testFiles)
        let all = train + test
        let gray = all.allSatisfy { $0.channels == 1 }
        let size: (Int, Int)
        if let s = imageSize {
            guard s > 0 else { throw TricksError.invalidArgument("--image-size must be positive, got \(s)") }
            size = (s, s)
        } else {
            let first = (all[0].width, all[0].height)
            if let i = all.firstIndex(where: { ($0.width, $0.height) != first }) {
                let path = i < train.count ? trainFiles[i].path : testFiles[i - train.count].path
                throw TricksError.badData("\(path): \(all[i].width)×\(all[i].height), but \((trainFiles[0].path)) is \(first.0)×\(first.1); pass --image-size to resize them all")
            }
            size = first
        }
        func set(_ images: [Image], _ files: [(path: String, label: Int)]) -> ImageSet {
            let C = gray ? 1 : 3, (W, H) = size, plane = W * H
            var px = [UInt8](repeating: 0, count: images.count * C * plane)
            px.withUnsafeMutableBufferPointer { out in
                Parallel.forEach(images.count) { n in
                    let im = images[n].converted(channels: C).resized(width: W, height: H)
                    for c in 0..<C { for i in 0..<plane { out[(n * C + c) * plane + i] = im.pixels[i * C + c] } }
                }
            }
            return ImageSet(pixels: px, labels: files.map { Int32($0.label) }, count: images.count, channels: C, height: H, width: W)
        }
        var d = DatasetSplits(train: set(train, trainFiles), test: set(test, testFiles), numClasses: classes.count, source: dir)
        d.classNames = classes
        return d
    }

    /// Decodes every file, on all threads; the first failure (in file order) is thrown.
    static func decode(_ files: [(path: String, label: Int)]) throws -> [Image] {
        var results = [Result<Image, Error>](repeating: .failure(TricksError.io("not read")), count: files.count)
        results.withUnsafeMutableBufferPointer { r in
            Parallel.forEach(files.count) { i in r[i] = Result { try Image.read(files[i].path) } }
        }
        return try results.map { try $0.get() }
    }
}
