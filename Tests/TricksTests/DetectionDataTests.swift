import XCTest
@testable import Tricks

/// The detection data path: XML and VOC parsing, box transforms against closed forms (a box
/// and a marked patch move together), detection mixup against a direct computation, random
/// shapes, and the scene maker.
final class DetectionDataTests: XCTestCase {
    // MARK: XML

    func testXMLParsesElementsAttributesEntitiesCommentsAndCDATA() throws {
        let doc = """
        <?xml version="1.0" encoding="utf-8"?>
        <!-- a comment -->
        <annotation kind='voc' n="2">
          <name>a &amp; b &lt;c&gt; &#65;&#x42;</name>
          <empty/>
          <!-- inside -->
          <object><name><![CDATA[x<y]]></name></object>
          <object><name>z</name></object>
        </annotation>
        """
        let root = try XMLNode.parse(Array(doc.utf8), name: "t.xml")
        XCTAssertEqual(root.name, "annotation")
        XCTAssertEqual(root.attributes, ["kind": "voc", "n": "2"])
        XCTAssertEqual(root.child("name")?.text, "a & b <c> AB")
        XCTAssertEqual(root.child("empty")?.children.count, 0)
        XCTAssertEqual(root.all("object").map { $0.child("name")?.text }, ["x<y", "z"])
        XCTAssertEqual(root.at("object/name")?.text, "x<y")
        XCTAssertNil(root.at("object/missing"))
    }

    func testMalformedXMLGivesTheLine() {
        for (text, needle) in [("<a><b></a>", "</a> closes <b>"), ("<a>\n\n<b>", "line 3"), ("", "no root"),
                               ("<a x=1></a>", "not quoted"), ("<a>&bogus;</a>", "unknown entity"),
                               ("<a></a><b/>", "after the root"), ("<a><!-- x</a>", "unterminated"),
                               (String(repeating: "<a>", count: 300), "deeper than 256")] {
            XCTAssertThrowsError(try XMLNode.parse(Array(text.utf8), name: "bad.xml"), text) { e in
                XCTAssertTrue("\(e)".contains("bad.xml") && "\(e)".contains(needle), "\(text): \(e)")
            }
        }
    }

    // MARK: VOC

    func writeVOC(_ dir: String, annotations: [String: String], split: [String], classes: [String]? = nil) throws {
        let fm = FileManager.default
        for sub in ["JPEGImages", "Annotations", "ImageSets/Main"] {
            try fm.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        for (id, xml) in annotations { try xml.write(toFile: "\(dir)/Annotations/\(id).xml", atomically: true, encoding: .utf8) }
        try (split.joined(separator: "\n") + "\n").write(toFile: "\(dir)/ImageSets/Main/train.txt", atomically: true, encoding: .utf8)
        if let classes { try classes.joined(separator: "\n").write(toFile: "\(dir)/classes.txt", atomically: true, encoding: .utf8) }
    }

    func ann(_ objects: String, w: Int = 50, h: Int = 40, filename: String? = nil) -> String {
        "<annotation>\(filename.map { "<filename>\($0)</filename>" } ?? "")<size><width>\(w)</width><height>\(h)</height><depth>3</depth></size>\(objects)</annotation>"
    }

    func testVOCReadsBoxesDifficultAndClassOrder() throws {
        let d = try tempDir()
        let objs = """
        <object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20.0</ymax></bndbox></object>
        <object><name>person</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
        """
        try writeVOC(d, annotations: ["a": ann(objs, filename: "a.png"), "b": ann("")], split: ["a", "b"])
        var im = Image(width: 50, height: 40, fill: [9, 8, 7])
        try im.write(d + "/JPEGImages/a.png")
        let set = try VOCDataset(root: d, split: "train")
        XCTAssertEqual(set.classes, VOCDataset.vocClasses)
        XCTAssertEqual(set.ids, ["a", "b"])
        XCTAssertEqual(set.boxes[0], [
            Box(x0: 0, y0: 1, x1: 10, y1: 20, label: VOCDataset.vocClasses.firstIndex(of: "dog")!, difficult: true),
            Box(x0: 4, y0: 5, x1: 50, y1: 40, label: VOCDataset.vocClasses.firstIndex(of: "person")!, difficult: false),
        ])
        XCTAssertEqual(set.boxes[1], [])
        XCTAssertEqual(set.imagePaths[1], d + "/JPEGImages/b.jpg")
        XCTAssertEqual(try set.sample(0).image, im)
        XCTAssertThrowsError(try set.sample(1)) { XCTAssertTrue("\($0)".contains("b.jpg"), "\($0)") }
        // The wrong size in an annotation is caught when the image is read.
        try writeVOC(d, annotations: ["a": ann(objs, w: 60, filename: "a.png")], split: ["a"])
        XCTAssertThrowsError(try VOCDataset(root: d, split: "train").sample(0)) { XCTAssertTrue("\($0)".contains("60×40"), "\($0)") }
        // classes.txt sets the order.
        try writeVOC(d, annotations: ["a": ann(objs, filename: "a.png")], split: ["a"], classes: ["person", "dog"])
        XCTAssertEqual(try VOCDataset(root: d, split: "train").boxes[0].map(\.label), [1, 0])
        // An annotation written by the library reads back the same.
        im = Image(width: 50, height: 40, fill: [0, 0, 0])
        let boxes = [Box(x0: 3, y0: 4, x1: 20, y1: 30, label: 1), Box(x0: 0, y0: 0, x1: 50, y1: 40, label: 0, difficult: true)]
        let xml = VOCDataset.annotationXML(filename: "c.jpg", width: 50, height: 40, depth: 3, boxes: boxes, classes: ["person", "dog"])
        try writeVOC(d, annotations: ["c": xml], split: ["c"], classes: ["person", "dog"])
        XCTAssertEqual(try VOCDataset(root: d, split: "train").boxes[0], boxes)
    }

    func testVOCErrorsNameTheFileAndTheField() throws {
        let d = try tempDir()
        let box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        let cases: [(String, String)] = [
            (ann("<object><name>unicorn</name>\(box)</object>"), "'unicorn', not one of the 20 classes"),
            (ann("<object><name>dog</name></object>"), "object 1 has no <bndbox>"),
            (ann("<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"), "no <ymax>"),
            (ann("<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>99</ymax></bndbox></object>"), "outside the 50×40 image"),
            (ann("<object><name>dog</name><bndbox><xmin>x</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"), "'x', not an integer"),
            (ann("<object><name>dog</name><difficult>yes</difficult>\(box)</object>"), "<difficult> is 'yes'"),
            (ann("<object>\(box)</object>"), "has no <name>"),
            ("<annotation><object/></annotation>", "no <size/width>"),
            ("<notes/>", "not <annotation>"),
            ("<annotation>", "not closed"),
        ]
        for (xml, needle) in cases {
            try writeVOC(d, annotations: ["a": xml], split: ["a"])
            XCTAssertThrowsError(try VOCDataset(root: d, split: "train"), needle) { e in
                XCTAssertTrue("\(e)".contains("Annotations/a.xml") && "\(e)".contains(needle), "\(needle): \(e)")
            }
        }
        try writeVOC(d, annotations: [:], split: ["missing"])
        XCTAssertThrowsError(try VOCDataset(root: d, split: "train")) { XCTAssertTrue("\($0)".contains("missing.xml"), "\($0)") }
        XCTAssertThrowsError(try VOCDataset(root: d, split: "val")) { XCTAssertTrue("\($0)".contains("ImageSets/Main/val.txt"), "\($0)") }
        XCTAssertThrowsError(try VOCDataset(root: d + "/nope", split: "train")) { XCTAssertTrue("\($0)".contains("no such directory"), "\($0)") }
    }

    // MARK: Transforms

    /// A sample whose single box covers exactly a white patch on a dark, non-uniform background.
    func marked(w: Int = 40, h: Int = 30, box: (Int, Int, Int, Int) = (7, 5, 19, 13)) -> DetectionSample {
        var im = Image(width: w, height: h, fill: [0, 0, 0])
        for y in 0..<h { for x in 0..<w { im[x, y, 1] = UInt8((x * 3 + y) % 60) } }
        for y in box.1..<box.3 { for x in box.0..<box.2 { im[x, y, 0] = 255; im[x, y, 2] = 255 } }
        return DetectionSample(image: im, boxes: [Box(x0: Double(box.0), y0: Double(box.1), x1: Double(box.2), y1: Double(box.3), label: 3)])
    }

    /// The extent of the pixels whose red and blue are both above 128.
    func patchExtent(_ im: Image) -> (Double, Double, Double, Double)? {
        var x0 = Int.max, y0 = Int.max, x1 = -1, y1 = -1
        for y in 0..<im.height { for x in 0..<im.width where im[x, y, 0] > 128 && im[x, y, 2] > 128 {
            x0 = min(x0, x); y0 = min(y0, y); x1 = max(x1, x + 1); y1 = max(y1, y + 1)
        } }
        return x1 < 0 ? nil : (Double(x0), Double(y0), Double(x1), Double(y1))
    }

    func assertBoxOnPatch(_ s: DetectionSample, tolerance: Double = 0, _ what: String, line: UInt = #line) {
        guard let e = patchExtent(s.image) else { return XCTFail("\(what): patch gone", line: line) }
        XCTAssertEqual(s.boxes.count, 1, what, line: line)
        guard let b = s.boxes.first else { return }
        for (got, want) in [(b.x0, e.0), (b.y0, e.1), (b.x1, e.2), (b.y1, e.3)] {
            XCTAssertLessThanOrEqual(abs(got - want), tolerance, "\(what): box \(b) vs patch \(e)", line: line)
        }
    }

    func testFlipExpandCropMoveBoxWithPixels() {
        let s = marked()
        let f = DetectionTransforms.flip(s)
        XCTAssertEqual(f.boxes[0].x0, 40 - 19); XCTAssertEqual(f.boxes[0].x1, 40 - 7)
        assertBoxOnPatch(f, "flip")
        let e = DetectionTransforms.expand(s, width: 70, height: 50, x: 11, y: 17, fill: [1, 2, 3])
        XCTAssertEqual(e.boxes[0], Box(x0: 18, y0: 22, x1: 30, y1: 30, label: 3))
        XCTAssertEqual(e.image[0, 0, 2], 3)
        assertBoxOnPatch(e, "expand")
        let c = DetectionTransforms.crop(s, x: 10, y: 2, width: 20, height: 20)
        XCTAssertEqual(c.boxes[0], Box(x0: 0, y0: 3, x1: 9, y1: 11, label: 3))
        assertBoxOnPatch(c, "crop")
        // A crop that leaves the box's centre out drops it.
        XCTAssertEqual(DetectionTransforms.crop(s, x: 14, y: 0, width: 20, height: 30).boxes, [])
        var rng = SplitMix64(seed: 5)
        for k in 0..<40 {
            let r = DetectionTransforms.randomExpand(s, maxRatio: 3, fill: [0, 0, 0], rng: &rng)
            XCTAssertLessThanOrEqual(r.image.width, 120)
            assertBoxOnPatch(r, "random expand \(k)")
            let q = DetectionTransforms.randomCrop(s, rng: &rng)
            // A crop may cut the patch; the box is the visible part.
            if let b = q.boxes.first { assertBoxOnPatch(DetectionSample(image: q.image, boxes: [b]), "random crop \(k)") }
        }
    }

    func testRandomCropMeetsItsIoUConstraint() {
        // Every window is the whole image or overlaps a box by at least the constraint's IoU,
        // within the scale and aspect limits, and keeps some box's centre.
        let s = marked(w: 60, h: 60, box: (10, 10, 40, 40))
        var rng = SplitMix64(seed: 9)
        var cropped = 0
        for minIoU in [0.3, 0.5, 0.7] {
            for _ in 0..<40 {
                let (x, y, w, h) = DetectionTransforms.randomCropWindow(s, minIoUs: [minIoU], minScale: 0.3, maxAspect: 2, trials: 50, rng: &rng)
                if (x, y, w, h) == (0, 0, 60, 60) { continue }
                cropped += 1
                let win = Box(x0: Double(x), y0: Double(y), x1: Double(x + w), y1: Double(y + h), label: 0)
                XCTAssertGreaterThanOrEqual(win.iou(s.boxes[0]), minIoU)
                XCTAssertTrue(x >= 0 && y >= 0 && x + w <= 60 && y + h <= 60)
                let cx = s.boxes[0].centerX, cy = s.boxes[0].centerY
                XCTAssertTrue(cx >= win.x0 && cx < win.x1 && cy >= win.y0 && cy < win.y1)
                XCTAssertGreaterThanOrEqual(Double(w * h), 0.3 * 0.3 * 3600 * 0.9)
            }
        }
        XCTAssertGreaterThan(cropped, 40)
    }

    func testLetterboxKeepsAspectAndMapsBack() throws {
        let s = marked(w: 40, h: 20, box: (8, 4, 24, 14))
        let (l, map) = DetectionTransforms.letterbox(s, width: 80, height: 80, fill: [128, 128, 128])
        XCTAssertEqual([l.image.width, l.image.height], [80, 80])
        // Scale 2, image 80×40 centred: 20 rows of padding above.
        XCTAssertEqual(map, LetterboxMap(sx: 2, sy: 2, dx: 0, dy: 20))
        XCTAssertEqual(l.boxes[0], Box(x0: 16, y0: 28, x1: 48, y1: 48, label: 3))
        XCTAssertEqual(l.image[5, 5, 0], 128)
        assertBoxOnPatch(l, tolerance: 1, "letterbox")
        let back = map.unmap(l.boxes[0])
        XCTAssertEqual(back, s.boxes[0])
        // Shrinking: 40×20 into 16×32 is scale 0.4, 16×8 at dy = 12.
        let (m, map2) = DetectionTransforms.letterbox(s, width: 16, height: 32, fill: [0, 0, 0])
        XCTAssertEqual(map2.dy, 12)
        XCTAssertEqual(m.boxes[0].x0, 8 * 0.4, accuracy: 1e-12); XCTAssertEqual(m.boxes[0].y1, 14 * 0.4 + 12, accuracy: 1e-12)
    }

    func testClippingDropsBoxesThatShrinkBelowTheMinimum() {
        var s = marked()
        s.boxes = [Box(x0: -5, y0: 2, x1: 3, y1: 10, label: 0), Box(x0: 38, y0: 0, x1: 45, y1: 10, label: 1),
                   Box(x0: 10, y0: 10, x1: 11, y1: 20, label: 2)]
        let c = s.clippedBoxes(minSide: 2)
        XCTAssertEqual(c.boxes, [Box(x0: 0, y0: 2, x1: 3, y1: 10, label: 0), Box(x0: 38, y0: 0, x1: 40, y1: 10, label: 1)])
    }

    func testColorJitterIsKeyedAndKeepsBoxes() {
        let s = marked()
        var a = SplitMix64(key: [1, 2, 3]), b = SplitMix64(key: [1, 2, 3])
        let x = DetectionTransforms.colorJitter(s, rng: &a), y = DetectionTransforms.colorJitter(s, rng: &b)
        XCTAssertEqual(x, y)
        XCTAssertEqual(x.boxes, s.boxes)
        var changed = 0
        var r = SplitMix64(seed: 1)
        for _ in 0..<10 { if DetectionTransforms.colorJitter(s, rng: &r).image != s.image { changed += 1 } }
        XCTAssertGreaterThan(changed, 5)
        // Saturation 0 makes gray: force it through the hue-free path with contrast and brightness off.
        var g = SplitMix64(seed: 0)
        var found = false
        for _ in 0..<200 where !found {
            var probe = g
            let doB = probe.below(2) == 1; _ = probe.uniform()
            let doC = probe.below(2) == 1; _ = probe.uniform()
            let doS = probe.below(2) == 1; _ = probe.uniform()
            let doH = probe.below(2) == 1
            if !doB && !doC && doS && !doH {
                found = true
                let out = DetectionTransforms.colorJitter(s, brightness: 0, contrast: 0, saturation: 1, hue: 0, rng: &g)
                // sat factor in [0, 2]: every pixel lies on the line through its gray level.
                for p in stride(from: 0, to: out.image.pixels.count, by: 3 * 7) {
                    let o = s.image.pixels[p..<p + 3].map(Double.init), n = out.image.pixels[p..<p + 3].map(Double.init)
                    let gray = 0.299 * o[0] + 0.587 * o[1] + 0.114 * o[2]
                    if abs(o[0] - gray) > 20 && n[0] > 0 && n[0] < 255 && n[1] > 0 && n[1] < 255 {
                        let k = (n[0] - gray) / (o[0] - gray)
                        XCTAssertEqual(n[1], gray + (o[1] - gray) * k, accuracy: 2.5)
                    }
                }
            } else { _ = g.next() }
        }
        XCTAssertTrue(found)
    }

    // MARK: Mixup

    func testDetectionMixupCanvasAndWeightsMatchADirectComputation() {
        let a = marked(w: 30, h: 20), b = marked(w: 22, h: 34, box: (2, 3, 9, 30))
        var a2 = a; a2.boxes[0].weight = 0.5
        let lam = 0.3
        let m = DetectionMixup.mix(a2, b, lambda: lam)
        XCTAssertEqual([m.image.width, m.image.height], [30, 34])
        for y in 0..<34 { for x in 0..<30 { for c in 0..<3 {
            var v = 0.0
            if x < 30 && y < 20 { v += lam * Double(a.image[x, y, c]) }
            if x < 22 && y < 34 { v += (1 - lam) * Double(b.image[x, y, c]) }
            XCTAssertLessThanOrEqual(abs(Double(m.image[x, y, c]) - v), 0.5 + 1e-4)
        } } }
        XCTAssertEqual(m.boxes.map(\.weight), [0.5 * lam, 1 - lam].map { $0 })
        XCTAssertEqual(m.boxes.map(\.label), [3, 3])
        XCTAssertEqual(m.boxes[1].x1, 9)
        // Partners and λ are a function of (seed, epoch, sample): Beta(1.5, 1.5) has mean ½ and
        // variance 1/(4·4) = 1/16.
        let mix = DetectionMixup(alpha: 1.5, seed: 7)
        XCTAssertEqual(mix.pair(sample: 3, epoch: 1, datasetSize: 100).partner, mix.pair(sample: 3, epoch: 1, datasetSize: 100).partner)
        let l = (0..<4000).map { mix.pair(sample: $0, epoch: 0, datasetSize: 10).lambda }
        let mean = l.reduce(0, +) / 4000, v = l.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 4000
        XCTAssertEqual(mean, 0.5, accuracy: 0.02)
        XCTAssertEqual(v, 1.0 / 16, accuracy: 0.006)
    }

    // MARK: Random shapes

    func testRandomShapesArePureAndParse() throws {
        XCTAssertEqual(try RandomShapes.parseSizes("320:416"), [320, 352, 384, 416])
        XCTAssertEqual(try RandomShapes.parseSizes("96:160:16", multiple: 16), [96, 112, 128, 144, 160])
        XCTAssertEqual(try RandomShapes.parseSizes("64, 96", multiple: 32), [64, 96])
        for (bad, needle) in [("100", "not a multiple of 32"), ("a,b", "comma-separated"), ("9:3", "empty range"), ("1:2:3:4", "LO:HI")] {
            XCTAssertThrowsError(try RandomShapes.parseSizes(bad)) { XCTAssertTrue("\($0)".contains(needle), "\($0)") }
        }
        let r = try RandomShapes(sizes: [64, 96, 128, 160], every: 10, seed: 3, fixedFrom: 500)
        let draws = (0..<600).map { r.size(atStep: $0) }
        XCTAssertEqual(draws, (0..<600).map { try! RandomShapes(sizes: [64, 96, 128, 160], every: 10, seed: 3, fixedFrom: 500).size(atStep: $0) })
        for s in stride(from: 0, to: 500, by: 10) { XCTAssertEqual(Set(draws[s..<s + 10]).count, 1) }
        XCTAssertEqual(Set(draws[500...]), [160])
        XCTAssertEqual(Set(draws[..<500]), [64, 96, 128, 160])
        let other = try RandomShapes(sizes: [64, 96, 128, 160], every: 10, seed: 4)
        XCTAssertNotEqual((0..<500).map { other.size(atStep: $0) }, Array(draws[..<500]))
    }

    // MARK: Scenes

    static func fashion() throws -> DatasetSplits {
        try DatasetLoader.load(try DatasetLoader.defaultDataPath())
    }

    func testScenesAreDeterministicAndBoxesCoverTheItems() throws {
        let f = try Self.fashion()
        let maker = SceneMaker(seed: 11)
        var objects = 0
        for i in 0..<30 {
            let s = maker.scene(i, split: 0, items: f.train)
            XCTAssertEqual(s, maker.scene(i, split: 0, items: f.train))
            XCTAssertTrue((96...192).contains(s.image.width) && (96...192).contains(s.image.height))
            XCTAssertTrue((1...5).contains(s.boxes.count))
            objects += s.boxes.count
            for b in s.boxes {
                XCTAssertTrue(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= Double(s.image.width) && b.y1 <= Double(s.image.height))
                XCTAssertTrue((0..<10).contains(b.label))
                XCTAssertGreaterThanOrEqual(min(b.width, b.height), 4)
            }
            for (k, b) in s.boxes.enumerated() { for c in s.boxes[(k + 1)...] { XCTAssertLessThanOrEqual(b.iou(c), 0.3) } }
        }
        XCTAssertGreaterThan(objects, 45)
        XCTAssertNotEqual(SceneMaker(seed: 12).scene(0, split: 0, items: f.train), maker.scene(0, split: 0, items: f.train))
        XCTAssertNotEqual(maker.scene(0, split: 1, items: f.test), maker.scene(0, split: 0, items: f.train))
    }

    func testWrittenScenesReadBackAsGenerated() throws {
        let f = try Self.fashion()
        let d = try tempDir()
        let maker = SceneMaker(seed: 2)
        let n = try maker.write(to: d, fashion: f, trainCount: 12, testCount: 5)
        let train = try VOCDataset(root: d, split: "train"), test = try VOCDataset(root: d, split: "test")
        XCTAssertEqual(train.classes, SceneMaker.fashionClasses)
        XCTAssertEqual([train.count, test.count], [12, 5])
        XCTAssertEqual(train.boxes.map(\.count).reduce(0, +), n.train)
        for i in 0..<12 {
            let want = maker.scene(i, split: 0, items: f.train)
            XCTAssertEqual(train.boxes[i], want.boxes)
            let got = try train.sample(i)
            XCTAssertEqual([got.image.width, got.image.height], [want.image.width, want.image.height])
            let mean = zip(got.image.pixels, want.image.pixels).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(got.image.pixels.count)
            XCTAssertLessThan(mean, 6, "JPEG at quality 90 of scene \(i)")
        }
        XCTAssertEqual(test.boxes[3], maker.scene(3, split: 1, items: f.test).boxes)
    }

    // MARK: Pipeline

    func testPipelineBatchesCarryBoxesOnTheirPixelsAtTheDrawnShape() throws {
        let d = try tempDir()
        // Scenes of one marked patch each, so every box can be checked against its pixels.
        try writeVOC(d, annotations: [:], split: [], classes: ["patch"])
        var ids: [String] = []
        for i in 0..<6 {
            let s = marked(w: 40 + 4 * i, h: 30 + 2 * i, box: (5 + i, 4, 20 + i, 16))
            try s.image.write("\(d)/JPEGImages/\(i).png")
            let xml = VOCDataset.annotationXML(filename: "\(i).png", width: s.image.width, height: s.image.height, depth: 3,
                                               boxes: s.boxes.map { var b = $0; b.label = 0; return b }, classes: ["patch"])
            try xml.write(toFile: "\(d)/Annotations/\(i).xml", atomically: true, encoding: .utf8)
            ids.append("\(i)")
        }
        try (ids.joined(separator: "\n")).write(toFile: "\(d)/ImageSets/Main/train.txt", atomically: true, encoding: .utf8)
        let set = try VOCDataset(root: d, split: "train")
        var pipe = DetectionPipeline(mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], dataShape: 64, seed: 1)
        pipe.shapes = try RandomShapes(sizes: [32, 64, 96], every: 2, seed: 1)
        for step in 0..<8 {
            let batch = try pipe.trainBatch(set, indices: [0, 3, 5], epoch: 0, step: step)
            XCTAssertEqual(batch.side, pipe.shapes!.size(atStep: step))
            XCTAssertEqual(batch.images.shape, [3, 3, batch.side, batch.side])
            XCTAssertEqual(try pipe.trainBatch(set, indices: [3], epoch: 0, step: step).images.array,
                           Array(batch.images.array[batch.side * batch.side * 3..<batch.side * batch.side * 6]),
                           "a sample is prepared the same whatever batch holds it")
            for b in 0..<3 {
                let im = DetectionPreview.image(batch, b, mean: pipe.mean, std: pipe.std)
                for box in batch.boxes[b] where box.width >= 3 && box.height >= 3 {
                    // Resampling blurs edges by up to a pixel or so at these scales.
                    let e = patchExtent(im)!
                    XCTAssertLessThanOrEqual(abs(box.x0 - e.0), 2.5); XCTAssertLessThanOrEqual(abs(box.y1 - e.3), 2.5)
                }
            }
        }
        // Evaluation: no augmentation, at dataShape, boxes as the letterbox maps them.
        let ev = try pipe.evalBatch(set, indices: [2])
        XCTAssertEqual(ev.side, 64)
        XCTAssertEqual(ev.maps[0].unmap(ev.boxes[0][0]).x0, set.boxes[2][0].x0, accuracy: 1e-9)
    }
}
