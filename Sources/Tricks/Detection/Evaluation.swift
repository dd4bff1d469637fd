import Foundation

/// A predicted box with its confidence, on image `image` of a set.
public struct ScoredBox: Sendable, Equatable, Codable {
    public var box: Box
    public var score: Double
    public var image: Int
    public init(box: Box, score: Double, image: Int) { self.box = box; self.score = score; self.image = image }
}

/// Greedy non-maximum suppression: boxes in decreasing score order, each dropped when it
/// overlaps an already kept box of the same class (any class with `classAgnostic`) by more
/// than `iouThreshold`; at most `maxKept` survive. Ties in score keep the earlier box first.
public func nonMaximumSuppression(_ boxes: [ScoredBox], iouThreshold: Double, classAgnostic: Bool = false,
                                  maxKept: Int = .max) -> [ScoredBox] {
    let order = boxes.indices.sorted { boxes[$0].score != boxes[$1].score ? boxes[$0].score > boxes[$1].score : $0 < $1 }
    var kept: [ScoredBox] = []
    for i in order {
        let b = boxes[i]
        if kept.contains(where: { (classAgnostic || $0.box.label == b.box.label) && $0.box.iou(b.box) > iouThreshold }) { continue }
        kept.append(b)
        if kept.count == maxKept { break }
    }
    return kept
}

/// Pascal VOC mean average precision at one IoU threshold (0.5 by default), in both of VOC's
/// versions: the 2007 11-point interpolation and the area under the interpolated curve
/// (2010 on). A detection matches the highest-IoU ground truth of its class on its image;
/// the first (highest-scoring) detection to match a box is a true positive, later ones false
/// positives. Boxes marked `difficult` count neither way: detections matched to them are
/// ignored and they are not in the number of positives. Classes without ground truth are left
/// out of the mean.
///
/// Images can be added on different ranks (`add`), the per-detection records combined with
/// `combine(over:)`, and the same numbers come out on every rank.
public struct VOCMeanAP: Sendable {
    public let numClasses: Int
    public let iouThreshold: Double
    /// Per detection: class, score, true positive (1) / false positive (0), image.
    public private(set) var records: [(label: Int, score: Double, tp: Bool, image: Int)] = []
    /// Non-difficult ground-truth boxes per class.
    public private(set) var positives: [Int]

    public init(numClasses: Int, iouThreshold: Double = 0.5) {
        self.numClasses = numClasses; self.iouThreshold = iouThreshold
        positives = .init(repeating: 0, count: numClasses)
    }

    /// Adds one image's predictions (`detections[k].image` is ignored; `image` keys ties) and
    /// ground truth.
    public mutating func add(image: Int, detections: [ScoredBox], groundTruth: [Box]) {
        for g in groundTruth where !g.difficult { positives[g.label] += 1 }
        var taken = [Bool](repeating: false, count: groundTruth.count)
        let order = detections.indices.sorted {
            detections[$0].score != detections[$1].score ? detections[$0].score > detections[$1].score : $0 < $1
        }
        for i in order {
            let d = detections[i]
            guard d.box.label >= 0 && d.box.label < numClasses else { continue }
            var best = -1, bestIoU = 0.0
            for (j, g) in groundTruth.enumerated() where g.label == d.box.label {
                let o = g.iou(d.box)
                if o > bestIoU { bestIoU = o; best = j }
            }
            if best >= 0 && bestIoU >= iouThreshold {
                if groundTruth[best].difficult { continue }
                if !taken[best] { taken[best] = true; records.append((d.box.label, d.score, true, image)); continue }
            }
            records.append((d.box.label, d.score, false, image))
        }
    }

    /// Every rank's records and positives, on every rank (a collective).
    public mutating func combine(over comm: Communicator) {
        guard comm.size > 1 else { return }
        var counts = [Double](repeating: 0, count: comm.size)
        counts[comm.rank] = Double(records.count)
        counts.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        let total = Int(counts.reduce(0, +)), before = Int(counts[..<comm.rank].reduce(0, +))
        // All-gather as a sum: each rank fills its own slots of a zeroed buffer.
        var flat = [Double](repeating: 0, count: 4 * total + numClasses)
        for (k, r) in records.enumerated() {
            let o = 4 * (before + k)
            flat[o] = Double(r.label); flat[o + 1] = r.score; flat[o + 2] = r.tp ? 1 : 0; flat[o + 3] = Double(r.image)
        }
        for c in 0..<numClasses { flat[4 * total + c] = Double(positives[c]) }
        flat.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        records = (0..<total).map { k in (Int(flat[4 * k]), flat[4 * k + 1], flat[4 * k + 2] == 1, Int(flat[4 * k + 3])) }
        positives = (0..<numClasses).map { Int(flat[4 * total + $0]) }
    }

    /// Average precision of each class (nil without positives), 11-point or area.
    public func averagePrecisions(elevenPoint: Bool) -> [Double?] {
        (0..<numClasses).map { c -> Double? in
            guard positives[c] > 0 else { return nil }
            let mine = records.filter { $0.label == c }.sorted {
                $0.score != $1.score ? $0.score > $1.score : ($0.image != $1.image ? $0.image < $1.image : $0.tp && !$1.tp)
            }
            var tp = 0.0, fp = 0.0
            var recall: [Double] = [], precision: [Double] = []
            for r in mine {
                if r.tp { tp += 1 } else { fp += 1 }
                recall.append(tp / Double(positives[c])); precision.append(tp / (tp + fp))
            }
            if elevenPoint {
                var ap = 0.0
                // Thresholds k·0.1 as numpy's arange(0, 1.1, 0.1) makes them (the devkit's and GluonCV's).
                for k in 0...10 {
                    let t = Double(k) * 0.1
                    let p = zip(recall, precision).filter { $0.0 >= t }.map(\.1).max() ?? 0
                    ap += p / 11
                }
                return ap
            }
            // Area under the precision envelope (VOC 2010+).
            let mrec = [0.0] + recall + [1.0]
            var mpre = [0.0] + precision + [0.0]
            for i in stride(from: mpre.count - 2, through: 0, by: -1) { mpre[i] = max(mpre[i], mpre[i + 1]) }
            var ap = 0.0
            for i in 1..<mrec.count where mrec[i] != mrec[i - 1] { ap += (mrec[i] - mrec[i - 1]) * mpre[i] }
            return ap
        }
    }

    /// The mean over classes with ground truth.
    public func meanAP(elevenPoint: Bool) -> Double {
        let aps = averagePrecisions(elevenPoint: elevenPoint).compactMap { $0 }
        return aps.isEmpty ? 0 : aps.reduce(0, +) / Double(aps.count)
    }
}
