import Foundation

/// A detection set in the Pascal VOC layout:
///
///     ROOT/JPEGImages/<id>.jpg            (or the annotation's <filename>)
///     ROOT/Annotations/<id>.xml           object/name, object/difficult, object/bndbox
///     ROOT/ImageSets/Main/<split>.txt     one id per line
///     ROOT/classes.txt                    optional: class names, one per line, in index order
///
/// Class indices follow `classes.txt` when present, else VOC's 20 classes in their usual
/// (alphabetical) order. Boxes are converted to continuous pixel coordinates (see `Box`).
/// Annotations are parsed when the set is opened, so a bad file fails at start; images are
/// decoded when asked for.
public struct VOCDataset: Sendable {
    public static let vocClasses = [
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
        "train", "tvmonitor",
    ]

    public let root: String
    public let split: String
    public let classes: [String]
    public let ids: [String]
    /// Image file of each id.
    public let imagePaths: [String]
    /// Objects of each id, in the annotation's order.
    public let boxes: [[Box]]
    /// `(width, height)` from each annotation's `size`.
    public let sizes: [(width: Int, height: Int)]

    public var count: Int { ids.count }

    /// Opens split `split` (`train`, `val`, `test`, …) under `root`.
    public init(root: String, split: String, classes: [String]? = nil) throws {
        self.root = root; self.split = split
        let listPath = "\(root)/ImageSets/Main/\(split).txt"
        guard let list = FileManager.default.contents(atPath: listPath) else {
            var isDir: ObjCBool = false
            if !FileManager.default.fileExists(atPath: root, isDirectory: &isDir) || !isDir.boolValue {
                throw TricksError.badData("\(root): no such directory")
            }
            throw TricksError.badData("\(listPath): missing (a VOC-layout set lists each split's ids in ImageSets/Main/<split>.txt)")
        }
        if let classes {
            self.classes = classes
        } else if let c = FileManager.default.contents(atPath: "\(root)/classes.txt") {
            self.classes = String(decoding: c, as: UTF8.self).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !self.classes.isEmpty else { throw TricksError.badData("\(root)/classes.txt: no class names") }
        } else {
            self.classes = Self.vocClasses
        }
        let index = Dictionary(self.classes.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        guard index.count == self.classes.count else { throw TricksError.badData("\(root): class names repeat") }
        let ids = String(decoding: list, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.split(separator: " ").first.map(String.init) ?? "" }.filter { !$0.isEmpty }
        guard !ids.isEmpty else { throw TricksError.badData("\(listPath): no image ids") }
        var paths: [String] = [], boxes: [[Box]] = [], sizes: [(Int, Int)] = []
        for id in ids {
            let a = try Self.parseAnnotation(path: "\(root)/Annotations/\(id).xml", classIndex: index)
            paths.append("\(root)/JPEGImages/\(a.filename ?? id + ".jpg")")
            boxes.append(a.boxes); sizes.append(a.size)
        }
        self.ids = ids; self.imagePaths = paths; self.boxes = boxes; self.sizes = sizes
    }

    /// Reads image `i` and its boxes (clipped to the image).
    public func sample(_ i: Int) throws -> DetectionSample {
        var image = try Image.read(imagePaths[i])
        if image.channels == 4 { image = image.converted(channels: 3) }
        if image.width != sizes[i].width || image.height != sizes[i].height {
            throw TricksError.badData("\(imagePaths[i]): image is \(image.width)×\(image.height) but its annotation says \(sizes[i].width)×\(sizes[i].height)")
        }
        return DetectionSample(image: image, boxes: boxes[i])
    }

    /// One annotation file: the image's file name and size, and its objects; `data`, when given,
    /// holds the file's bytes (`path` then only names it in errors).
    public static func parseAnnotation(path: String, classIndex: [String: Int], data: Data? = nil) throws
        -> (filename: String?, size: (width: Int, height: Int), boxes: [Box]) {
        guard let d = data ?? FileManager.default.contents(atPath: path) else {
            throw TricksError.badData("\(path): missing annotation")
        }
        let doc = try XMLNode.parse([UInt8](d), name: path)
        guard doc.name == "annotation" else { throw TricksError.badData("\(path): root element is <\(doc.name)>, not <annotation>") }
        func int(_ n: XMLNode, _ field: String, _ what: String) throws -> Int {
            guard let t = n.at(field)?.text else { throw TricksError.badData("\(path): \(what) has no <\(field)>") }
            // VOC writes some coordinates as "273.0".
            guard let v = Double(t), v.isFinite, v == v.rounded(), abs(v) < 1e7 else {
                throw TricksError.badData("\(path): \(what) <\(field)> is '\(t)', not an integer")
            }
            return Int(v)
        }
        let w = try int(doc, "size/width", "the annotation"), h = try int(doc, "size/height", "the annotation")
        guard w > 0, h > 0 else { throw TricksError.badData("\(path): image size \(w)×\(h)") }
        var boxes: [Box] = []
        for (k, o) in doc.all("object").enumerated() {
            let what = "object \(k + 1)"
            guard let name = o.child("name")?.text, !name.isEmpty else { throw TricksError.badData("\(path): \(what) has no <name>") }
            guard let label = classIndex[name] else {
                throw TricksError.badData("\(path): \(what) is '\(name)', not one of the \(classIndex.count) classes")
            }
            var difficult = false
            if let t = o.child("difficult")?.text {
                guard t == "0" || t == "1" else { throw TricksError.badData("\(path): \(what) <difficult> is '\(t)', not 0 or 1") }
                difficult = t == "1"
            }
            guard let bb = o.child("bndbox") else { throw TricksError.badData("\(path): \(what) has no <bndbox>") }
            let x0 = try int(bb, "xmin", what), y0 = try int(bb, "ymin", what)
            let x1 = try int(bb, "xmax", what), y1 = try int(bb, "ymax", what)
            guard x0 >= 1, y0 >= 1, x1 >= x0, y1 >= y0, x1 <= w, y1 <= h else {
                throw TricksError.badData("\(path): \(what) box (\(x0),\(y0))–(\(x1),\(y1)) is empty or outside the \(w)×\(h) image (VOC boxes are 1-based, inclusive)")
            }
            boxes.append(Box(x0: Double(x0 - 1), y0: Double(y0 - 1), x1: Double(x1), y1: Double(y1), label: label, difficult: difficult))
        }
        return (doc.child("filename")?.text.nilIfEmpty, (w, h), boxes)
    }

    /// The annotation of one image in VOC's format (integer boxes, 1-based inclusive).
    public static func annotationXML(filename: String, width: Int, height: Int, depth: Int,
                                     boxes: [Box], classes: [String]) -> String {
        var s = "<annotation>\n  <folder>JPEGImages</folder>\n  <filename>\(escape(filename))</filename>\n"
        s += "  <size>\n    <width>\(width)</width>\n    <height>\(height)</height>\n    <depth>\(depth)</depth>\n  </size>\n"
        for b in boxes {
            s += "  <object>\n    <name>\(escape(classes[b.label]))</name>\n    <difficult>\(b.difficult ? 1 : 0)</difficult>\n"
            s += "    <bndbox>\n      <xmin>\(Int(b.x0.rounded()) + 1)</xmin>\n      <ymin>\(Int(b.y0.rounded()) + 1)</ymin>\n"
            s += "      <xmax>\(Int(b.x1.rounded()))</xmax>\n      <ymax>\(Int(b.y1.rounded()))</ymax>\n    </bndbox>\n  </object>\n"
        }
        return s + "</annotation>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
