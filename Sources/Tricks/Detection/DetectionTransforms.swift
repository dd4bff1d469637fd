import Foundation

/// How a letterbox moved pixels: original `(x, y)` is at `(x·sx + dx, y·sy + dy)` (sx and sy
/// differ only by the rounding of the resized sides).
public struct LetterboxMap: Sendable, Equatable {
    public var sx: Double, sy: Double, dx: Double, dy: Double
    public init(sx: Double, sy: Double, dx: Double, dy: Double) { self.sx = sx; self.sy = sy; self.dx = dx; self.dy = dy }
    /// A box predicted on the letterboxed image, in the original image's pixels.
    public func unmap(_ b: Box) -> Box { b.mapped(sx: 1 / sx, sy: 1 / sy, dx: -dx / sx, dy: -dy / sy) }
}

/// Geometric and photometric transforms of a detection sample, each moving the boxes with the
/// pixels. The random ones take the generator, so a sample's augmentation is a function of
/// the key that seeded it (`(seed, epoch, sample)`), never of the rank or the batch.
public enum DetectionTransforms {
    /// Resizes so the whole image fits `width × height` with its aspect kept, centred, the rest
    /// filled with `fill` (darknet's letterbox).
    public static func letterbox(_ s: DetectionSample, width: Int, height: Int, fill: [UInt8]) -> (DetectionSample, LetterboxMap) {
        let im = s.image
        let scale = min(Double(width) / Double(im.width), Double(height) / Double(im.height))
        let nw = max(1, min(width, Int((Double(im.width) * scale).rounded())))
        let nh = max(1, min(height, Int((Double(im.height) * scale).rounded())))
        let ox = (width - nw) / 2, oy = (height - nh) / 2
        var canvas = Image(width: width, height: height, fill: Array(fill.prefix(im.channels)) + [UInt8](repeating: 0, count: max(0, im.channels - fill.count)))
        canvas.paste(im.resized(width: nw, height: nh), x: ox, y: oy)
        let sx = Double(nw) / Double(im.width), sy = Double(nh) / Double(im.height)
        let boxes = s.boxes.map { $0.mapped(sx: sx, sy: sy, dx: Double(ox), dy: Double(oy)) }
        return (DetectionSample(image: canvas, boxes: boxes), LetterboxMap(sx: sx, sy: sy, dx: Double(ox), dy: Double(oy)))
    }

    /// Mirrors left to right: `x ↦ W − x`.
    public static func flip(_ s: DetectionSample) -> DetectionSample {
        let w = Double(s.image.width)
        return DetectionSample(image: s.image.flippedHorizontally(), boxes: s.boxes.map {
            var b = $0; b.x0 = w - $0.x1; b.x1 = w - $0.x0; return b
        })
    }

    /// Places the image at a random offset on a canvas up to `maxRatio` times as large (each
    /// side by the same ratio), filled with `fill` (SSD's zoom-out).
    public static func randomExpand(_ s: DetectionSample, maxRatio: Double, fill: [UInt8], rng: inout SplitMix64) -> DetectionSample {
        let ratio = 1 + rng.uniform() * (maxRatio - 1)
        let W = Int(Double(s.image.width) * ratio), H = Int(Double(s.image.height) * ratio)
        let ox = rng.below(W - s.image.width + 1), oy = rng.below(H - s.image.height + 1)
        return expand(s, width: W, height: H, x: ox, y: oy, fill: fill)
    }

    /// The image on a `width × height` canvas at `(x, y)`.
    public static func expand(_ s: DetectionSample, width: Int, height: Int, x: Int, y: Int, fill: [UInt8]) -> DetectionSample {
        var canvas = Image(width: width, height: height, fill: Array(fill.prefix(s.image.channels)))
        canvas.paste(s.image, x: x, y: y)
        return DetectionSample(image: canvas, boxes: s.boxes.map { $0.mapped(sx: 1, sy: 1, dx: Double(x), dy: Double(y)) })
    }

    /// The crop `x…x+w`, `y…y+h`: boxes whose centre lies inside are kept, clipped to it and
    /// shifted; the others are dropped (SSD's rule).
    public static func crop(_ s: DetectionSample, x: Int, y: Int, width w: Int, height h: Int) -> DetectionSample {
        let r = Box(x0: Double(x), y0: Double(y), x1: Double(x + w), y1: Double(y + h), label: -1)
        let boxes = s.boxes.filter { $0.centerX >= r.x0 && $0.centerX < r.x1 && $0.centerY >= r.y0 && $0.centerY < r.y1 }
            .map { $0.mapped(sx: 1, sy: 1, dx: -r.x0, dy: -r.y0).clipped(width: Double(w), height: Double(h)) }
        return DetectionSample(image: s.image.cropped(x0: x, y0: y, width: w, height: h), boxes: boxes)
    }

    /// SSD's IoU-constrained random crop (Liu et al. 2016; GluonCV's
    /// `random_crop_with_constraints`): for each minimum IoU in `minIoUs` (and "no constraint"),
    /// up to `trials` crops of scale `minScale…1` and aspect within `1/maxAspect…maxAspect`
    /// are drawn until one overlaps some box by at least that IoU (and every box containing a
    /// centre survives); one of the constraints that found a crop is chosen at random. The whole
    /// image is a candidate, so the result always exists.
    public static func randomCrop(_ s: DetectionSample, minIoUs: [Double] = [0.1, 0.3, 0.5, 0.7, 0.9],
                                  minScale: Double = 0.3, maxAspect: Double = 2, trials: Int = 50,
                                  rng: inout SplitMix64) -> DetectionSample {
        let (x, y, w, h) = randomCropWindow(s, minIoUs: minIoUs, minScale: minScale, maxAspect: maxAspect, trials: trials, rng: &rng)
        return crop(s, x: x, y: y, width: w, height: h)
    }

    /// The window `randomCrop` cuts: `(x, y, width, height)`.
    public static func randomCropWindow(_ s: DetectionSample, minIoUs: [Double], minScale: Double, maxAspect: Double,
                                        trials: Int, rng: inout SplitMix64) -> (Int, Int, Int, Int) {
        let W = s.image.width, H = s.image.height
        guard !s.boxes.isEmpty else { return (0, 0, W, H) }
        var candidates: [(Int, Int, Int, Int)] = [(0, 0, W, H)]
        for minIoU in minIoUs {
            for _ in 0..<trials {
                let scale = minScale + rng.uniform() * (1 - minScale)
                let lo = max(1 / maxAspect, scale * scale), hi = min(maxAspect, 1 / (scale * scale))
                let aspect = lo + rng.uniform() * (hi - lo)
                let cw = Int(Double(W) * scale * aspect.squareRoot()), ch = Int(Double(H) * scale / aspect.squareRoot())
                guard cw >= 1, ch >= 1, cw <= W, ch <= H else { continue }
                let cx = rng.below(W - cw + 1), cy = rng.below(H - ch + 1)
                let r = Box(x0: Double(cx), y0: Double(cy), x1: Double(cx + cw), y1: Double(cy + ch), label: -1)
                guard s.boxes.map({ $0.iou(r) }).max()! >= minIoU else { continue }
                guard !crop(s, x: cx, y: cy, width: cw, height: ch).boxes.isEmpty else { continue }
                candidates.append((cx, cy, cw, ch)); break
            }
        }
        return candidates[rng.below(candidates.count)]
    }

    /// Photometric distortion (SSD's and GluonCV's `random_color_distort`): each of brightness
    /// (±`brightness` levels), contrast (×`1 ± contrast`), saturation (×`1 ± saturation`) and hue
    /// (±`hue` degrees, a rotation in YIQ) applied with probability ½. Boxes do not move.
    public static func colorJitter(_ s: DetectionSample, brightness: Double = 32, contrast: Double = 0.5,
                                   saturation: Double = 0.5, hue: Double = 18, rng: inout SplitMix64) -> DetectionSample {
        let doB = rng.below(2) == 1, b = (rng.uniform() * 2 - 1) * brightness
        let doC = rng.below(2) == 1, c = 1 + (rng.uniform() * 2 - 1) * contrast
        let doS = rng.below(2) == 1, sat = 1 + (rng.uniform() * 2 - 1) * saturation
        let doH = rng.below(2) == 1, h = (rng.uniform() * 2 - 1) * hue * Double.pi / 180
        guard doB || doC || doS || doH else { return s }
        var im = s.image
        let ch = im.channels, n = im.width * im.height
        var f = im.pixels.map { Double($0) }
        if doB { for i in 0..<f.count { f[i] += b } }
        if doC {
            // Towards or away from the mean gray level.
            var mean = 0.0
            for p in 0..<n {
                let k = p * ch
                mean += ch >= 3 ? 0.299 * f[k] + 0.587 * f[k + 1] + 0.114 * f[k + 2] : f[k]
            }
            mean /= Double(n)
            for i in 0..<f.count { f[i] = mean + (f[i] - mean) * c }
        }
        if ch >= 3 && doS {
            for p in 0..<n {
                let k = p * ch, gray = 0.299 * f[k] + 0.587 * f[k + 1] + 0.114 * f[k + 2]
                for j in 0..<3 { f[k + j] = gray + (f[k + j] - gray) * sat }
            }
        }
        if ch >= 3 && doH {
            // RGB → YIQ, rotate (I, Q) by h, back.
            let cs = cos(h), sn = sin(h)
            for p in 0..<n {
                let k = p * ch, r = f[k], g = f[k + 1], bl = f[k + 2]
                let y = 0.299 * r + 0.587 * g + 0.114 * bl
                let i0 = 0.596 * r - 0.274 * g - 0.322 * bl, q0 = 0.211 * r - 0.523 * g + 0.312 * bl
                let i1 = i0 * cs - q0 * sn, q1 = i0 * sn + q0 * cs
                f[k] = y + 0.956 * i1 + 0.621 * q1
                f[k + 1] = y - 0.272 * i1 - 0.647 * q1
                f[k + 2] = y - 1.106 * i1 + 1.703 * q1
            }
        }
        for i in 0..<f.count { im.pixels[i] = UInt8(min(max(f[i].rounded(), 0), 255)) }
        return DetectionSample(image: im, boxes: s.boxes)
    }
}
