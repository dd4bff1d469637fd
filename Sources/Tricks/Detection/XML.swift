import Foundation

/// A minimal XML reader for annotation files: elements, attributes, text, comments, CDATA,
/// processing instructions and the five predefined and numeric entities. No DTDs, no
/// namespaces. Errors give the line.
public struct XMLNode: Sendable, Equatable {
    public var name: String
    public var attributes: [String: String]
    public var children: [XMLNode]
    /// The element's own text (children's text excluded), whitespace-trimmed.
    public var text: String

    /// The first child element called `name`.
    public func child(_ name: String) -> XMLNode? { children.first { $0.name == name } }
    /// All child elements called `name`.
    public func all(_ name: String) -> [XMLNode] { children.filter { $0.name == name } }
    /// The element at a slash-separated path of child names, e.g. `"size/width"`.
    public func at(_ path: String) -> XMLNode? {
        var n: XMLNode? = self
        for part in path.split(separator: "/") { n = n?.child(String(part)) }
        return n
    }

    /// Parses a document and returns its root element.
    public static func parse(_ bytes: [UInt8], name: String) throws -> XMLNode {
        var p = Parser(b: bytes, name: name)
        return try p.document()
    }

    struct Parser {
        let b: [UInt8]
        let name: String
        var i = 0

        func fail(_ m: String) -> TricksError {
            let line = 1 + b[..<min(i, b.count)].reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            return .badData("\(name): malformed XML at line \(line): \(m)")
        }
        func starts(_ s: String) -> Bool {
            let u = Array(s.utf8)
            return i + u.count <= b.count && Array(b[i..<i + u.count]) == u
        }
        mutating func skip(until s: String) throws {
            while i < b.count && !starts(s) { i += 1 }
            guard i < b.count else { throw fail("unterminated construct (expected '\(s)')") }
            i += s.utf8.count
        }
        mutating func space() { while i < b.count, [9, 10, 13, 32].contains(b[i]) { i += 1 } }
        // Comments, processing instructions and a doctype between elements.
        mutating func misc() throws {
            while true {
                space()
                if starts("<!--") { try skip(until: "-->") }
                else if starts("<?") { try skip(until: "?>") }
                else if starts("<!DOCTYPE") { try skip(until: ">") }
                else { return }
            }
        }
        mutating func document() throws -> XMLNode {
            if starts("\u{FEFF}") { i += 3 }
            try misc()
            guard starts("<") else { throw fail(i >= b.count ? "no root element" : "text outside the root element") }
            let root = try element(depth: 0)
            try misc()
            guard i == b.count else { throw fail("content after the root element") }
            return root
        }
        mutating func ident() throws -> String {
            let s = i
            while i < b.count, !([9, 10, 13, 32, 47, 61, 62].contains(b[i])) { i += 1 }   // space / = >
            guard i > s else { throw fail("expected a name") }
            return String(decoding: b[s..<i], as: UTF8.self)
        }
        func decode(_ raw: ArraySlice<UInt8>) throws -> String {
            let s = String(decoding: raw, as: UTF8.self)
            guard s.contains("&") else { return s }
            var out = "", rest = Substring(s)
            while let amp = rest.firstIndex(of: "&") {
                out += rest[..<amp]
                guard let semi = rest[amp...].firstIndex(of: ";") else { throw fail("unterminated entity") }
                let ent = rest[rest.index(after: amp)..<semi]
                switch ent {
                case "lt": out += "<"
                case "gt": out += ">"
                case "amp": out += "&"
                case "quot": out += "\""
                case "apos": out += "'"
                default:
                    let v: UInt32?
                    if ent.hasPrefix("#x") { v = UInt32(ent.dropFirst(2), radix: 16) }
                    else if ent.hasPrefix("#") { v = UInt32(ent.dropFirst()) }
                    else { v = nil }
                    guard let v, let u = Unicode.Scalar(v) else { throw fail("unknown entity &\(ent);") }
                    out.unicodeScalars.append(u)
                }
                rest = rest[rest.index(after: semi)...]
            }
            return out + rest
        }
        mutating func element(depth: Int) throws -> XMLNode {
            guard depth < 256 else { throw fail("elements nested deeper than 256") }
            i += 1   // '<'
            let tag = try ident()
            var attrs: [String: String] = [:]
            while true {
                space()
                guard i < b.count else { throw fail("unterminated tag <\(tag)>") }
                if starts("/>") { i += 2; return XMLNode(name: tag, attributes: attrs, children: [], text: "") }
                if b[i] == 62 { i += 1; break }
                let key = try ident()
                space()
                guard i < b.count, b[i] == 61 else { throw fail("attribute \(key) of <\(tag)> has no value") }
                i += 1; space()
                guard i < b.count, b[i] == 34 || b[i] == 39 else { throw fail("attribute \(key) of <\(tag)> is not quoted") }
                let q = b[i]; i += 1
                let s = i
                while i < b.count && b[i] != q { i += 1 }
                guard i < b.count else { throw fail("unterminated attribute \(key)") }
                attrs[key] = try decode(b[s..<i]); i += 1
            }
            var children: [XMLNode] = [], text = ""
            while true {
                guard i < b.count else { throw fail("element <\(tag)> is not closed") }
                if starts("</") {
                    i += 2
                    let close = try ident()
                    guard close == tag else { throw fail("</\(close)> closes <\(tag)>") }
                    space()
                    guard i < b.count, b[i] == 62 else { throw fail("unterminated </\(tag)>") }
                    i += 1
                    return XMLNode(name: tag, attributes: attrs, children: children,
                                   text: text.trimmingCharacters(in: .whitespacesAndNewlines))
                } else if starts("<!--") { try skip(until: "-->") }
                else if starts("<![CDATA[") {
                    i += 9; let s = i
                    try skip(until: "]]>")
                    text += String(decoding: b[s..<i - 3], as: UTF8.self)
                } else if starts("<?") { try skip(until: "?>") }
                else if b[i] == 60 { children.append(try element(depth: depth + 1)) }
                else {
                    let s = i
                    while i < b.count && b[i] != 60 { i += 1 }
                    text += try decode(b[s..<i])
                }
            }
        }
    }
}
