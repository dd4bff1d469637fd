import Foundation

/// A detection set anyone can make without a download: scenes composed from Fashion-MNIST
/// items on textured, coloured backgrounds, written in the VOC layout.
///
/// Each scene is a canvas of `minSide…maxSide` pixels a side (width and height drawn apart, so
/// aspects vary) with `1…maxObjects` items of the ten classes, each scaled to `minItem…maxItem`
/// pixels, tinted, and placed where it overlaps earlier items only moderately (IoU ≤ `maxIoU`
/// and covering at most `maxCover` of any earlier box). A box is the tight extent of the item's
/// visible pixels. Training scenes use training items, test scenes test items. Everything is
/// a pure function of `(seed, split, scene index)`.
public struct SceneMaker: Sendable {
    public static let fashionClasses = [
        "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankleboot",
    ]

    public var minSide = 96, maxSide = 192
    public var maxObjects = 5
    public var minItem = 12, maxItem = 80
    public var maxIoU = 0.3, maxCover = 0.4
    public var jpegQuality = 90
    public var seed: UInt64 = 0

    public init(seed: UInt64 = 0) { self.seed = seed }

    /// Scene `index` of a split drawn from `items` (`(N, 1, 28, 28)` gray Fashion-MNIST).
    public func scene(_ index: Int, split: UInt64, items: ImageSet) -> DetectionSample {
        var rng = SplitMix64(key: [seed, split, UInt64(index), 0x5343_454E])
        let W = minSide + rng.below(maxSide - minSide + 1), H = minSide + rng.below(maxSide - minSide + 1)
        var canvas = background(width: W, height: H, rng: &rng)
        var boxes: [Box] = []
        let wanted = 1 + rng.below(maxObjects)
        var tries = 0
        while boxes.count < wanted && tries < 30 * wanted {
            tries += 1
            let item = rng.below(items.count)
            let side = minItem + rng.below(min(maxItem, min(W, H)) - minItem + 1)
            let x = rng.below(W - side + 1), y = rng.below(H - side + 1)
            let tint = Self.saturatedColour(&rng)
            let mask = itemMask(items, item, side: side)
            // The tight box of the visible pixels.
            var bx0 = side, by0 = side, bx1 = 0, by1 = 0
            for yy in 0..<side { for xx in 0..<side where mask[yy * side + xx] > 0.1 {
                bx0 = min(bx0, xx); by0 = min(by0, yy); bx1 = max(bx1, xx + 1); by1 = max(by1, yy + 1)
            } }
            guard bx1 - bx0 >= 4, by1 - by0 >= 4 else { continue }
            let box = Box(x0: Double(x + bx0), y0: Double(y + by0), x1: Double(x + bx1), y1: Double(y + by1),
                          label: Int(items.labels[item]))
            let crowded = boxes.contains { old in
                let iw = min(old.x1, box.x1) - max(old.x0, box.x0), ih = min(old.y1, box.y1) - max(old.y0, box.y0)
                let inter = max(iw, 0) * max(ih, 0)
                return old.iou(box) > maxIoU || inter > maxCover * old.area || inter > maxCover * box.area
            }
            if crowded { continue }
            let shade = 0.55 + 0.45 * rng.uniform()
            for yy in 0..<side {
                for xx in 0..<side {
                    let a = mask[yy * side + xx]
                    if a <= 0 { continue }
                    for c in 0..<3 {
                        let bg = Double(canvas[x + xx, y + yy, c])
                        let fg = tint[c] * (shade + (1 - shade) * a)
                        canvas[x + xx, y + yy, c] = UInt8(min(max((bg * (1 - a) + fg * a).rounded(), 0), 255))
                    }
                }
            }
            boxes.append(box)
        }
        return DetectionSample(image: canvas, boxes: boxes)
    }

    /// The item's intensity in 0…1, resized to `side × side`, as an opacity mask.
    func itemMask(_ items: ImageSet, _ i: Int, side: Int) -> [Double] {
        let plane = items.height * items.width
        let src = Image(width: items.width, height: items.height, channels: 1,
                        pixels: Array(items.pixels[i * items.imageSize..<i * items.imageSize + plane]))
        return src.resized(width: side, height: side).pixels.map { min(Double($0) / 200, 1) }
    }

    /// Two colours blended along a random sinusoidal grating and blotchy value noise, plus grain.
    func background(width W: Int, height H: Int, rng: inout SplitMix64) -> Image {
        let c1 = (0..<3).map { _ in 40 + 170 * rng.uniform() }, c2 = (0..<3).map { _ in 40 + 170 * rng.uniform() }
        let angle = rng.uniform() * .pi, freq = 0.03 + 0.15 * rng.uniform(), phase = rng.uniform() * 2 * .pi
        let cell = 12 + rng.below(20)
        let gw = W / cell + 2, gh = H / cell + 2
        let grid = (0..<gw * gh).map { _ in rng.uniform() }
        var im = Image(width: W, height: H, fill: [0, 0, 0])
        let (ca, sa) = (cos(angle), sin(angle))
        for y in 0..<H {
            for x in 0..<W {
                let g = 0.5 + 0.5 * sin(freq * (Double(x) * ca + Double(y) * sa) + phase)
                let fx = Double(x) / Double(cell), fy = Double(y) / Double(cell)
                let ix = Int(fx), iy = Int(fy), tx = fx - Double(ix), ty = fy - Double(iy)
                let n = grid[iy * gw + ix] * (1 - tx) * (1 - ty) + grid[iy * gw + ix + 1] * tx * (1 - ty)
                    + grid[(iy + 1) * gw + ix] * (1 - tx) * ty + grid[(iy + 1) * gw + ix + 1] * tx * ty
                let t = 0.6 * g + 0.4 * n
                let grain = Double(Int(rng.next() % 17) - 8)
                for c in 0..<3 {
                    im[x, y, c] = UInt8(min(max((c1[c] * (1 - t) + c2[c] * t + grain).rounded(), 0), 255))
                }
            }
        }
        return im
    }

    static func saturatedColour(_ rng: inout SplitMix64) -> [Double] {
        // A random hue at full saturation, value 0.75–1.
        let h = rng.uniform() * 6, v = 190 + 65 * rng.uniform()
        let f = h - Double(Int(h)), q = v * (1 - f), t = v * f
        switch Int(h) {
        case 0: return [v, t, 0]
        case 1: return [q, v, 0]
        case 2: return [0, v, t]
        case 3: return [0, q, v]
        case 4: return [t, 0, v]
        default: return [v, 0, q]
        }
    }

    /// Writes `trainCount` training and `testCount` test scenes under `dir` in the VOC layout
    /// (JPEGImages, Annotations, ImageSets/Main/{train,test}.txt, classes.txt); returns the
    /// number of objects written per split. `progress` is called with scenes done so far.
    public func write(to dir: String, fashion: DatasetSplits, trainCount: Int, testCount: Int,
                      progress: ((Int, Int) -> Void)? = nil) throws -> (train: Int, test: Int) {
        let fm = FileManager.default
        for sub in ["JPEGImages", "Annotations", "ImageSets/Main"] {
            do { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
            catch { throw TricksError.io("cannot create \(dir)/\(sub): \(error.localizedDescription)") }
        }
        try SafeTensors.writeAtomically(Data((Self.fashionClasses.joined(separator: "\n") + "\n").utf8), to: "\(dir)/classes.txt")
        var objects = [0, 0]
        let total = trainCount + testCount
        var done = 0
        for (splitIndex, (name, count, items)) in [("train", trainCount, fashion.train), ("test", testCount, fashion.test)].enumerated() {
            let ids = (0..<count).map { String(format: "%@_%06d", name, $0) }
            var counts = [Int](repeating: 0, count: count)
            var failure: Error?
            let lock = NSLock()
            let chunk = 64
            for start in stride(from: 0, to: count, by: chunk) {
                let end = min(start + chunk, count)
                counts.withUnsafeMutableBufferPointer { cc in
                    Parallel.forEach(end - start) { k in
                        let i = start + k
                        let s = scene(i, split: UInt64(splitIndex), items: items)
                        do {
                            try s.image.write("\(dir)/JPEGImages/\(ids[i]).jpg", quality: jpegQuality)
                            let xml = VOCDataset.annotationXML(filename: "\(ids[i]).jpg", width: s.image.width, height: s.image.height,
                                                               depth: 3, boxes: s.boxes, classes: Self.fashionClasses)
                            try SafeTensors.writeAtomically(Data(xml.utf8), to: "\(dir)/Annotations/\(ids[i]).xml")
                        } catch {
                            lock.lock(); failure = failure ?? error; lock.unlock()
                        }
                        cc[i] = s.boxes.count
                    }
                }
                if let failure { throw failure }
                done += end - start
                progress?(done, total)
            }
            objects[splitIndex] = counts.reduce(0, +)
            try SafeTensors.writeAtomically(Data((ids.joined(separator: "\n") + "\n").utf8), to: "\(dir)/ImageSets/Main/\(name).txt")
        }
        return (objects[0], objects[1])
    }
}
