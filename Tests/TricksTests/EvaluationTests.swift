import XCTest
@testable import Tricks

/// Non-maximum suppression and VOC mAP against hand-computed cases, an independent Python
/// implementation (`docs/voc_map.py`) on a few hundred predictions, and sharding over ranks.
final class EvaluationTests: XCTestCase {
    func b(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ label: Int = 0, difficult: Bool = false) -> Box {
        Box(x0: x0, y0: y0, x1: x1, y1: y1, label: label, difficult: difficult)
    }

    func testNonMaximumSuppression() {
        let boxes = [
            ScoredBox(box: b(0, 0, 10, 10), score: 0.9, image: 0),
            ScoredBox(box: b(1, 0, 11, 10), score: 0.8, image: 0),      // IoU 9/11 with the first: dropped
            ScoredBox(box: b(5, 0, 15, 10), score: 0.7, image: 0),      // IoU 1/3 with the first: kept
            ScoredBox(box: b(1, 0, 11, 10, 1), score: 0.6, image: 0),   // another class: kept
            ScoredBox(box: b(30, 30, 40, 40), score: 0.95, image: 0),
        ]
        XCTAssertEqual(nonMaximumSuppression(boxes, iouThreshold: 0.5).map(\.score), [0.95, 0.9, 0.7, 0.6])
        XCTAssertEqual(nonMaximumSuppression(boxes, iouThreshold: 0.5, classAgnostic: true).map(\.score), [0.95, 0.9, 0.7])
        XCTAssertEqual(nonMaximumSuppression(boxes, iouThreshold: 0.3).map(\.score), [0.95, 0.9, 0.6])
        XCTAssertEqual(nonMaximumSuppression(boxes, iouThreshold: 0.5, maxKept: 2).map(\.score), [0.95, 0.9])
        XCTAssertEqual(b(0, 0, 10, 10).iou(b(1, 0, 11, 10)), 90.0 / 110, accuracy: 1e-15)
    }

    func testAPOnAHandComputedCase() {
        // One class, 3 positives on two images (and a difficult box). Detections by score:
        // 0.9 TP (img 0, box A), 0.8 FP (duplicate of A), 0.7 ignored (on the difficult box),
        // 0.6 TP (img 1, box C), 0.5 FP (no overlap). Box B is missed.
        // Precision/recall after each counted detection: (1, 1/3), (1/2, 1/3), (2/3, 2/3), (1/2, 2/3).
        var m = VOCMeanAP(numClasses: 2)
        m.add(image: 0, detections: [
            ScoredBox(box: b(0, 0, 10, 10), score: 0.9, image: 0),
            ScoredBox(box: b(0, 0, 10, 9), score: 0.8, image: 0),
            ScoredBox(box: b(50, 50, 60, 60), score: 0.7, image: 0),
        ], groundTruth: [b(0, 0, 10, 10), b(20, 20, 30, 30), b(50, 50, 60, 60, difficult: true)])
        m.add(image: 1, detections: [
            ScoredBox(box: b(1, 1, 11, 11), score: 0.6, image: 1),     // IoU 81/119 ≥ 0.5
            ScoredBox(box: b(70, 70, 80, 80), score: 0.5, image: 1),
        ], groundTruth: [b(0, 0, 10, 10)])
        XCTAssertEqual(m.positives, [3, 0])
        // Area: envelope 1 on recall (0, 1/3], 2/3 on (1/3, 2/3], 0 after → 1/3 + 2/9.
        let area: Double = 1.0 / 3.0 + 2.0 / 9.0
        XCTAssertEqual(m.averagePrecisions(elevenPoint: false)[0]!, area, accuracy: 1e-12)
        XCTAssertNil(m.averagePrecisions(elevenPoint: false)[1])
        // 11-point: t = 0, .1, .2, .3 → 1 (recall 1/3 ≥ t); t = .4, .5, .6 → 2/3; t ≥ .7 → 0.
        let eleven: Double = (4.0 + 3.0 * 2.0 / 3.0) / 11.0
        XCTAssertEqual(m.averagePrecisions(elevenPoint: true)[0]!, eleven, accuracy: 1e-12)
        XCTAssertEqual(m.meanAP(elevenPoint: false), area, accuracy: 1e-12)
    }

    /// A few hundred random predictions on random ground truth.
    static func randomCase(seed: UInt64, images: Int = 60, classes: Int = 4) -> (gt: [[Box]], det: [[ScoredBox]]) {
        var rng = SplitMix64(seed: seed)
        var gt: [[Box]] = [], det: [[ScoredBox]] = []
        for i in 0..<images {
            var g: [Box] = [], d: [ScoredBox] = []
            for _ in 0..<(1 + rng.below(4)) {
                let x = 100 * rng.uniform(), y = 100 * rng.uniform(), w = 10 + 40 * rng.uniform(), h = 10 + 40 * rng.uniform()
                g.append(Box(x0: x, y0: y, x1: x + w, y1: y + h, label: rng.below(classes), difficult: rng.below(8) == 0))
            }
            for _ in 0..<(2 + rng.below(6)) {
                if rng.below(3) > 0, let t = g.randomElement(using: &rng) {   // near a true box, sometimes the wrong class
                    let j = { (s: Double) in (rng.uniform() - 0.5) * s }
                    let bx = Box(x0: t.x0 + j(12), y0: t.y0 + j(12), x1: t.x1 + j(12), y1: t.y1 + j(12),
                                 label: rng.below(5) == 0 ? rng.below(classes) : t.label)
                    d.append(ScoredBox(box: bx, score: rng.uniform(), image: i))
                } else {
                    let x = 100 * rng.uniform(), y = 100 * rng.uniform()
                    d.append(ScoredBox(box: Box(x0: x, y0: y, x1: x + 20, y1: y + 20, label: rng.below(classes)), score: rng.uniform(), image: i))
                }
            }
            gt.append(g); det.append(d)
        }
        return (gt, det)
    }

    func testMAPEqualsTheIndependentPythonImplementation() throws {
        guard let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return XCTFail("python3 not found (launch/setup.sh installs it)")
        }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/voc_map.py").path
        let d = try tempDir()
        for seed: UInt64 in [1, 2, 3] {
            let (gt, det) = Self.randomCase(seed: seed)
            XCTAssertGreaterThan(det.map(\.count).reduce(0, +), 200)
            var m = VOCMeanAP(numClasses: 4)
            for i in 0..<gt.count { m.add(image: i, detections: det[i], groundTruth: gt[i]) }
            let images = (0..<gt.count).map { i -> [String: Any] in
                ["gt": gt[i].map { [$0.x0, $0.y0, $0.x1, $0.y1, Double($0.label), $0.difficult ? 1.0 : 0.0] },
                 "det": det[i].map { [$0.box.x0, $0.box.y0, $0.box.x1, $0.box.y1, Double($0.box.label), $0.score] }]
            }
            let file = d + "/case\(seed).json"
            try JSONSerialization.data(withJSONObject: ["num_classes": 4, "iou": 0.5, "images": images]).write(to: URL(fileURLWithPath: file))
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = [script, file]
            let out = Pipe(); p.standardOutput = out
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            let r = try JSONSerialization.jsonObject(with: out.fileHandleForReading.readDataToEndOfFile()) as! [String: Any]
            XCTAssertEqual(m.meanAP(elevenPoint: false), r["map_area"] as! Double, accuracy: 1e-6)
            XCTAssertEqual(m.meanAP(elevenPoint: true), r["map_11"] as! Double, accuracy: 1e-6)
            let apA = r["ap_area"] as! [Any], ap11 = r["ap_11"] as! [Any]
            for c in 0..<4 {
                XCTAssertEqual(m.averagePrecisions(elevenPoint: false)[c] ?? -1, (apA[c] as? Double) ?? -1, accuracy: 1e-6)
                XCTAssertEqual(m.averagePrecisions(elevenPoint: true)[c] ?? -1, (ap11[c] as? Double) ?? -1, accuracy: 1e-6)
            }
            XCTAssertTrue((0.05...0.95).contains(m.meanAP(elevenPoint: false)), "a case that tests something: \(m.meanAP(elevenPoint: false))")
        }
    }

    func testShardedOverRanksEqualsOneProcess() {
        let (gt, det) = Self.randomCase(seed: 7)
        var whole = VOCMeanAP(numClasses: 4)
        for i in 0..<gt.count { whole.add(image: i, detections: det[i], groundTruth: gt[i]) }
        let out = PerRank<(Double, Double)>(3)
        ThreadGroup(size: 3).run { r, comm in
            var m = VOCMeanAP(numClasses: 4)
            for i in stride(from: r, to: gt.count, by: 3) { m.add(image: i, detections: det[i], groundTruth: gt[i]) }
            m.combine(over: comm)
            out[r] = (m.meanAP(elevenPoint: false), m.meanAP(elevenPoint: true))
        }
        for (a, e) in out.all {
            XCTAssertEqual(a, whole.meanAP(elevenPoint: false), accuracy: 1e-12)
            XCTAssertEqual(e, whole.meanAP(elevenPoint: true), accuracy: 1e-12)
        }
    }
}
