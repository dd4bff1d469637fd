import Foundation

/// Draws the learning-rate, training-loss and test-accuracy curves of one or more
/// runs (their `metrics.jsonl`) as a standalone SVG, so a warmup + cosine run can
/// be put beside a step-schedule run as in He et al. 2019, Fig. 3.
public enum MetricsPlot {
    public struct Series {
        public var label: String
        public var points: [(Double, Double)]
    }

    /// Reads `(step, lr)`, `(step, loss)` and `(epoch, test_accuracy)` (or `(epoch, map50)`) from a metrics file.
    public static func read(_ path: String) throws -> (lr: [(Double, Double)], loss: [(Double, Double)], acc: [(Double, Double)]) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw TricksError.io("\(path): cannot read metrics")
        }
        var lr: [(Double, Double)] = [], loss: [(Double, Double)] = [], acc: [(Double, Double)] = []
        for line in text.split(separator: "\n") {
            guard let d = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (d["step"] as? NSNumber)?.doubleValue else { continue }
            if let v = (d["lr"] as? NSNumber)?.doubleValue { lr.append((step, v)) }
            if let v = (d["loss"] as? NSNumber)?.doubleValue { loss.append((step, v)) }
            // A classifier's test accuracy, or a detector's test mAP@0.5 (tricks-detect).
            if let v = ((d["test_accuracy"] ?? d["map50"]) as? NSNumber)?.doubleValue, let e = (d["epoch"] as? NSNumber)?.doubleValue {
                acc.append((e, v))
            }
        }
        return (lr, loss, acc)
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]

    /// One panel: axes, ticks and a polyline per series.
    static func panel(_ title: String, xLabel: String, _ series: [Series], x0: Double, y0: Double, w: Double, h: Double) -> String {
        let all = series.flatMap(\.points)
        guard let xmin = all.map(\.0).min(), let xmax = all.map(\.0).max(),
              var ymin = all.map(\.1).min(), var ymax = all.map(\.1).max() else {
            return "<text x='\(x0 + w / 2)' y='\(y0 + h / 2)' text-anchor='middle'>\(title): no data</text>"
        }
        if ymax - ymin < 1e-12 { ymax += 0.5; ymin -= 0.5 }
        let pad = (ymax - ymin) * 0.05
        ymin -= pad; ymax += pad
        let xs = max(xmax - xmin, 1e-12)
        func px(_ x: Double) -> Double { x0 + 50 + (x - xmin) / xs * (w - 60) }
        func py(_ y: Double) -> Double { y0 + h - 30 - (y - ymin) / (ymax - ymin) * (h - 55) }
        var s = "<text x='\(x0 + w / 2)' y='\(y0 + 14)' text-anchor='middle' font-weight='bold'>\(title)</text>\n"
        s += "<rect x='\(x0 + 50)' y='\(y0 + 25)' width='\(w - 60)' height='\(h - 55)' fill='none' stroke='#999'/>\n"
        for k in 0...4 {
            let yv = ymin + (ymax - ymin) * Double(k) / 4, xv = xmin + xs * Double(k) / 4
            s += "<text x='\(x0 + 45)' y='\(py(yv) + 4)' text-anchor='end' font-size='10'>\(String(format: "%.3g", yv))</text>\n"
            s += "<text x='\(px(xv))' y='\(y0 + h - 15)' text-anchor='middle' font-size='10'>\(String(format: "%.4g", xv))</text>\n"
        }
        s += "<text x='\(x0 + w / 2)' y='\(y0 + h - 2)' text-anchor='middle' font-size='11'>\(xLabel)</text>\n"
        for (i, ser) in series.enumerated() where !ser.points.isEmpty {
            let pts = ser.points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            s += "<polyline fill='none' stroke='\(colors[i % colors.count])' stroke-width='1.5' points='\(pts)'/>\n"
            if ser.points.count <= 30 {   // few points (per-epoch accuracy): mark each
                for p in ser.points {
                    s += String(format: "<circle cx='%.1f' cy='%.1f' r='3' fill='%@'/>\n", px(p.0), py(p.1), colors[i % colors.count])
                }
            }
        }
        return s
    }

    /// An SVG with three panels (learning rate, training loss, test accuracy) and a legend.
    public static func svg(runs: [(label: String, metricsPath: String)]) throws -> String {
        let data = try runs.map { try read($0.metricsPath) }
        let w = 380.0, h = 260.0
        var body = ""
        body += panel("learning rate", xLabel: "step", zip(runs, data).map { Series(label: $0.0.label, points: $0.1.lr) },
                      x0: 0, y0: 0, w: w, h: h)
        body += panel("training loss", xLabel: "step", zip(runs, data).map { Series(label: $0.0.label, points: $0.1.loss) },
                      x0: w, y0: 0, w: w, h: h)
        let detector = runs.contains { (try? String(contentsOfFile: $0.metricsPath, encoding: .utf8))?.contains("\"map50\"") == true }
        body += panel(detector ? "test mAP@0.5" : "test accuracy", xLabel: "epoch", zip(runs, data).map { Series(label: $0.0.label, points: $0.1.acc) },
                      x0: 2 * w, y0: 0, w: w, h: h)
        for (i, r) in runs.enumerated() {
            let y = h + 18 + Double(i) * 16
            body += "<line x1='60' y1='\(y - 4)' x2='85' y2='\(y - 4)' stroke='\(colors[i % colors.count])' stroke-width='2'/>"
            body += "<text x='92' y='\(y)' font-size='12'>\(r.label.replacingOccurrences(of: "<", with: "&lt;"))</text>\n"
        }
        let height = h + 24 + Double(runs.count) * 16
        return "<svg xmlns='http://www.w3.org/2000/svg' width='\(Int(3 * w))' height='\(Int(height))' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n\(body)</svg>\n"
    }
}
