import Foundation

/// Boxes and short labels drawn on RGB images, for looking at what a detector is fed or
/// predicts. Text uses a built-in 3×5 pixel font (capitals, digits, `- . / : =`).
extension Image {
    static let font: [Character: [String]] = [
        "A": [".#.", "#.#", "###", "#.#", "#.#"], "B": ["##.", "#.#", "##.", "#.#", "##."],
        "C": [".##", "#..", "#..", "#..", ".##"], "D": ["##.", "#.#", "#.#", "#.#", "##."],
        "E": ["###", "#..", "##.", "#..", "###"], "F": ["###", "#..", "##.", "#..", "#.."],
        "G": [".##", "#..", "#.#", "#.#", ".##"], "H": ["#.#", "#.#", "###", "#.#", "#.#"],
        "I": ["###", ".#.", ".#.", ".#.", "###"], "J": ["..#", "..#", "..#", "#.#", ".#."],
        "K": ["#.#", "#.#", "##.", "#.#", "#.#"], "L": ["#..", "#..", "#..", "#..", "###"],
        "M": ["#.#", "###", "###", "#.#", "#.#"], "N": ["##.", "#.#", "#.#", "#.#", "#.#"],
        "O": [".#.", "#.#", "#.#", "#.#", ".#."], "P": ["##.", "#.#", "##.", "#..", "#.."],
        "Q": [".#.", "#.#", "#.#", "##.", ".##"], "R": ["##.", "#.#", "##.", "#.#", "#.#"],
        "S": [".##", "#..", ".#.", "..#", "##."], "T": ["###", ".#.", ".#.", ".#.", ".#."],
        "U": ["#.#", "#.#", "#.#", "#.#", "###"], "V": ["#.#", "#.#", "#.#", "#.#", ".#."],
        "W": ["#.#", "#.#", "###", "###", "#.#"], "X": ["#.#", "#.#", ".#.", "#.#", "#.#"],
        "Y": ["#.#", "#.#", ".#.", ".#.", ".#."], "Z": ["###", "..#", ".#.", "#..", "###"],
        "0": ["###", "#.#", "#.#", "#.#", "###"], "1": [".#.", "##.", ".#.", ".#.", "###"],
        "2": ["##.", "..#", ".#.", "#..", "###"], "3": ["##.", "..#", ".#.", "..#", "##."],
        "4": ["#.#", "#.#", "###", "..#", "..#"], "5": ["###", "#..", "##.", "..#", "##."],
        "6": [".##", "#..", "###", "#.#", "###"], "7": ["###", "..#", ".#.", ".#.", ".#."],
        "8": ["###", "#.#", "###", "#.#", "###"], "9": ["###", "#.#", "###", "..#", "##."],
        "-": ["...", "...", "###", "...", "..."], ".": ["...", "...", "...", "...", ".#."],
        "/": ["..#", "..#", ".#.", "#..", "#.."], ":": ["...", ".#.", "...", ".#.", "..."],
        "=": ["...", "###", "...", "###", "..."], " ": ["...", "...", "...", "...", "..."],
    ]

    mutating func set(_ x: Int, _ y: Int, _ colour: [UInt8]) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        for c in 0..<min(channels, colour.count) { self[x, y, c] = colour[c] }
    }

    /// Draws the outline of `box` (`thickness` pixels, inside the box's edges).
    public mutating func drawBox(_ box: Box, colour: [UInt8], thickness: Int = 1) {
        let x0 = Int(box.x0.rounded()), y0 = Int(box.y0.rounded())
        let x1 = Int(box.x1.rounded()) - 1, y1 = Int(box.y1.rounded()) - 1
        guard x1 >= x0, y1 >= y0 else { return }
        for t in 0..<thickness {
            for x in x0...x1 { set(x, y0 + t, colour); set(x, y1 - t, colour) }
            for y in y0...y1 { set(x0 + t, y, colour); set(x1 - t, y, colour) }
        }
    }

    /// Writes `text` (capitalized) with its top-left corner at `(x, y)`, each font pixel
    /// `scale × scale`, on a filled background strip.
    public mutating func drawText(_ text: String, x: Int, y: Int, colour: [UInt8], background: [UInt8], scale: Int = 1) {
        let chars = Array(text.uppercased())
        let w = chars.count * 4 * scale + scale, h = 7 * scale
        for yy in 0..<h { for xx in 0..<w { set(x + xx, y + yy, background) } }
        for (k, ch) in chars.enumerated() {
            guard let g = Image.font[ch] ?? Image.font["."] else { continue }
            for (r, row) in g.enumerated() {
                for (col, bit) in row.enumerated() where bit == "#" {
                    for sy in 0..<scale { for sx in 0..<scale {
                        set(x + scale + (k * 4 + col) * scale + sx, y + scale + r * scale + sy, colour)
                    } }
                }
            }
        }
    }

    /// Nearest-neighbour enlargement by an integer factor.
    public func zoomed(_ f: Int) -> Image {
        if f == 1 { return self }
        var out = [UInt8](repeating: 0, count: width * f * height * f * channels)
        for y in 0..<height * f { for x in 0..<width * f { for c in 0..<channels {
            out[(y * width * f + x) * channels + c] = pixels[((y / f) * width + x / f) * channels + c]
        } } }
        return Image(width: width * f, height: height * f, channels: channels, pixels: out)
    }

    /// A distinct colour per class index.
    public static func classColour(_ k: Int) -> [UInt8] {
        let palette: [[UInt8]] = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                                  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]]
        return palette[((k % palette.count) + palette.count) % palette.count]
    }
}

/// Pictures of detection batches.
public enum DetectionPreview {
    /// Image `b` of `batch` back in 8-bit RGB (undoing the normalization).
    public static func image(_ batch: DetectionBatch, _ b: Int, mean: [Double], std: [Double]) -> Image {
        let C = batch.images.shape[1], S = batch.side, plane = S * S
        var im = Image(width: S, height: S, fill: [0, 0, 0])
        let src = batch.images.data + b * C * plane
        for i in 0..<plane {
            for c in 0..<3 {
                let k = min(c, C - 1)
                let v = (Double(src[k * plane + i]) * std[k] + mean[k]) * 255
                im.pixels[i * 3 + c] = UInt8(min(max(v.rounded(), 0), 255))
            }
        }
        return im
    }

    /// One row per batch, each image enlarged `zoom` times with its boxes and class names (and
    /// the box's weight when it is not 1), a caption `STEP n SIDE s` above each row.
    public static func grid(_ batches: [(step: Int, batch: DetectionBatch)], classes: [String],
                            mean: [Double], std: [Double], zoom: Int = 2) -> Image {
        let gap = 6, caption = 9 * 2
        let rows = batches.map { row -> [Image] in
            (0..<row.batch.indices.count).map { b in
                var im = image(row.batch, b, mean: mean, std: std).zoomed(zoom)
                for box in row.batch.boxes[b] {
                    let z = box.mapped(sx: Double(zoom), sy: Double(zoom), dx: 0, dy: 0)
                    let colour = Image.classColour(box.label)
                    im.drawBox(z, colour: colour, thickness: 2)
                    var name = box.label >= 0 && box.label < classes.count ? classes[box.label] : "\(box.label)"
                    if box.weight < 0.995 { name += String(format: " %.2f", box.weight).replacingOccurrences(of: "0.", with: ".") }
                    im.drawText(name, x: Int(z.x0.rounded()), y: max(0, Int(z.y0.rounded()) - 14), colour: [0, 0, 0], background: colour, scale: 2)
                }
                return im
            }
        }
        let W = rows.map { r in r.reduce(gap) { $0 + $1.width + gap } }.max() ?? 1
        let H = rows.map { r in (r.map(\.height).max() ?? 0) + caption + gap }.reduce(gap, +)
        var canvas = Image(width: W, height: H, fill: [255, 255, 255])
        var y = gap
        for (k, r) in rows.enumerated() {
            canvas.drawText("STEP \(batches[k].step) SIDE \(batches[k].batch.side)", x: gap, y: y, colour: [0, 0, 0], background: [255, 255, 255], scale: 2)
            var x = gap
            for im in r { canvas.paste(im, x: x, y: y + caption); x += im.width + gap }
            y += (r.map(\.height).max() ?? 0) + caption + gap
        }
        return canvas
    }
}
