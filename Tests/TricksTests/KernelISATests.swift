import XCTest
@testable import Tricks

/// The one instruction-set switch of the kernels.
final class KernelISATests: XCTestCase {
    func testNamesSupportAndSwitching() throws {
        for isa in KernelISA.allCases { XCTAssertEqual(KernelISA(name: isa.description), isa) }
        XCTAssertNil(KernelISA(name: "avx1024"))
        XCTAssertEqual(KernelISA.supported.first, .portable)              // plain C runs everywhere
        XCTAssertEqual(KernelISA.supported.last, KernelISA.best)
        XCTAssertTrue(KernelISA.best.isSupported)
        // Without TRICKS_ISA the best set is in use; with it, the set it names.
        let env = ProcessInfo.processInfo.environment["TRICKS_ISA"].flatMap(KernelISA.init(name:))
        XCTAssertEqual(KernelISA.current, env ?? KernelISA.best)
        let saved = KernelISA.current
        for isa in KernelISA.supported {
            let inside = try KernelISA.with(isa) { KernelISA.current }
            XCTAssertEqual(inside, isa)
            XCTAssertEqual(KernelISA.current, saved)
        }
        for isa in KernelISA.allCases where !isa.isSupported {
            XCTAssertThrowsError(try KernelISA.use(isa)) { e in
                XCTAssertTrue("\(e)".contains("this CPU does not support it"), "\(e)")
            }
            XCTAssertEqual(KernelISA.current, saved)
        }
    }
}
