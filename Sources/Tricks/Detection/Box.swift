import Foundation

/// An object's box in continuous pixel coordinates: pixel `(i, j)` covers `[i, i+1) × [j, j+1)`,
/// so a box over pixels `x0…x1−1` has width `x1 − x0`. (VOC's 1-based inclusive
/// `xmin…xmax` is `x0 = xmin − 1`, `x1 = xmax`.)
public struct Box: Sendable, Equatable, Codable {
    public var x0: Double, y0: Double, x1: Double, y1: Double
    /// Index of the class in the data set's class list.
    public var label: Int
    /// VOC's `difficult` flag: excluded from evaluation and, by convention, from training.
    public var difficult: Bool
    /// Multiplies this box's loss (detection mixup gives λ and 1 − λ; 1 otherwise).
    public var weight: Double

    public init(x0: Double, y0: Double, x1: Double, y1: Double, label: Int, difficult: Bool = false, weight: Double = 1) {
        self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1
        self.label = label; self.difficult = difficult; self.weight = weight
    }

    public var width: Double { x1 - x0 }
    public var height: Double { y1 - y0 }
    public var area: Double { max(width, 0) * max(height, 0) }
    public var centerX: Double { (x0 + x1) / 2 }
    public var centerY: Double { (y0 + y1) / 2 }

    /// The box under `x ↦ sx·x + dx`, `y ↦ sy·y + dy`.
    public func mapped(sx: Double, sy: Double, dx: Double, dy: Double) -> Box {
        var b = self
        b.x0 = x0 * sx + dx; b.x1 = x1 * sx + dx; b.y0 = y0 * sy + dy; b.y1 = y1 * sy + dy
        return b
    }

    /// The part inside `[0, w) × [0, h)` (possibly empty).
    public func clipped(width w: Double, height h: Double) -> Box {
        var b = self
        b.x0 = min(max(x0, 0), w); b.x1 = min(max(x1, 0), w)
        b.y0 = min(max(y0, 0), h); b.y1 = min(max(y1, 0), h)
        return b
    }

    /// Intersection over union (0 when either box is empty).
    public func iou(_ o: Box) -> Double {
        let iw = min(x1, o.x1) - max(x0, o.x0), ih = min(y1, o.y1) - max(y0, o.y0)
        if iw <= 0 || ih <= 0 { return 0 }
        let inter = iw * ih, union = area + o.area - inter
        return union > 0 ? inter / union : 0
    }
}

/// One image of a detection set and its objects.
public struct DetectionSample: Sendable, Equatable {
    public var image: Image
    public var boxes: [Box]
    public init(image: Image, boxes: [Box]) { self.image = image; self.boxes = boxes }

    /// Clips every box to the image and drops those left narrower or lower than `minSide`
    /// pixels.
    public func clippedBoxes(minSide: Double) -> DetectionSample {
        var s = self
        s.boxes = boxes.map { $0.clipped(width: Double(image.width), height: Double(image.height)) }
            .filter { $0.width >= minSide && $0.height >= minSide }
        return s
    }
}
