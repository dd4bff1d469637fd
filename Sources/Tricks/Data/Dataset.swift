import Foundation

/// An image classification set held in memory as uint8 pixels, `(N, C, H, W)`.
public struct ImageSet: Sendable {
    /// `(N, C, H, W)` raw pixels.
    public var pixels: [UInt8]
    public var labels: [Int32]
    public var count: Int, channels: Int, height: Int, width: Int

    public init(pixels: [UInt8], labels: [Int32], count: Int, channels: Int, height: Int, width: Int) {
        self.pixels = pixels; self.labels = labels
        self.count = count; self.channels = channels; self.height = height; self.width = width
    }

    public var imageSize: Int { channels * height * width }

    /// Per-channel mean and standard deviation of `x/255` over the whole set (population std).
    public func channelStatistics() -> (mean: [Double], std: [Double]) {
        var mean = [Double](), std = [Double]()
        let plane = height * width
        for c in 0..<channels {
            var s1 = 0.0, s2 = 0.0
            for n in 0..<count {
                let o = (n * channels + c) * plane
                var a1 = 0, a2 = 0
                for i in 0..<plane { let v = Int(pixels[o + i]); a1 += v; a2 += v * v }
                s1 += Double(a1); s2 += Double(a2)
            }
            let m = Double(count * plane)
            let mu = s1 / m / 255
            mean.append(mu)
            std.append(max(s2 / m / (255 * 255) - mu * mu, 0).squareRoot())
        }
        return (mean, std)
    }
}

/// The train and test splits of one dataset.
public struct DatasetSplits: Sendable {
    public var train: ImageSet
    public var test: ImageSet
    public var numClasses: Int
    /// Where it was read from.
    public var source: String
    /// Class names, when the source has them (an image folder's sub-folders).
    public var classNames: [String]? = nil

    public init(train: ImageSet, test: ImageSet, numClasses: Int, source: String, classNames: [String]? = nil) {
        self.train = train; self.test = test; self.numClasses = numClasses; self.source = source; self.classNames = classNames
    }
}

/// Reads datasets from IDX (MNIST, Fashion-MNIST), `.npz` files or image folders.
public enum DatasetLoader {
    /// Where Debian's `dataset-fashion-mnist` package puts its files.
    public static let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    /// Finds the Fashion-MNIST directory: the package's documented location, else `dpkg -L`.
    public static func defaultDataPath() throws -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: fashionMNISTDirectory + "/train-images-idx3-ubyte.gz")
            || fm.fileExists(atPath: fashionMNISTDirectory + "/train-images-idx3-ubyte") {
            return fashionMNISTDirectory
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg")
        p.arguments = ["-L", "dataset-fashion-mnist"]
        let pipe = Pipe()
        p.standardOutput = pipe; p.standardError = Pipe()
        if (try? p.run()) != nil {
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            if let f = out.split(separator: "\n").first(where: { $0.hasSuffix("train-images-idx3-ubyte.gz") }) {
                return (String(f) as NSString).deletingLastPathComponent
            }
        }
        throw TricksError.badData("no --data given and Fashion-MNIST not found at \(fashionMNISTDirectory); install it with 'apt-get install dataset-fashion-mnist' or pass --data DIR|FILE.npz")
    }

    /// Loads a directory of IDX files, an image folder (`train/<class>/…`, see `ImageFolder`) or
    /// an `.npz` file. `imageSize` resizes an image folder's images (other sources keep theirs).
    public static func load(_ path: String, imageSize: Int? = nil) throws -> DatasetSplits {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TricksError.badData("\(path): no such file or directory")
        }
        let folder = isDir.boolValue && ImageFolder.matches(path)
        if imageSize != nil && !folder {
            throw TricksError.invalidArgument("--image-size applies to image folders (DIR/train/<class>/…); \(path) is not one")
        }
        var splits = !isDir.boolValue ? try NPZ.loadDataset(path)
            : folder ? try ImageFolder.load(path, imageSize: imageSize) : try IDX.loadDirectory(path)
        let all = splits.train.labels + splits.test.labels
        guard let mx = all.max(), let mn = all.min() else { throw TricksError.badData("\(path): no labels") }
        guard mn >= 0 else { throw TricksError.badData("\(path): negative label \(mn)") }
        splits.numClasses = Int(mx) + 1
        guard splits.numClasses >= 2 else { throw TricksError.badData("\(path): fewer than 2 classes") }
        guard splits.train.imageSize == splits.test.imageSize, splits.train.channels == splits.test.channels else {
            throw TricksError.badData("\(path): train and test images differ in shape")
        }
        return splits
    }
}
