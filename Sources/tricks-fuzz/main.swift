import Foundation
import Tricks

// One program, two builds (the tests run the first, `launch/fuzz.sh` the second):
//
//   swift build --product tricks-fuzz
//       tricks-fuzz TARGET FILE...      each file through `fuzzOne`, printing the error it throws:
//                                       reproduces a crash the fuzzer found
//   swift build -c debug --product tricks-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
//       TRICKS_FUZZ_TARGET=TARGET tricks-fuzz [libFuzzer flags] [CORPUS_DIR...]
//
// Both write the seed corpora and dictionaries with `tricks-fuzz --write-seeds DIR`.

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("tricks-fuzz: \(message)\n".utf8))
    exit(2)
}

let arguments = CommandLine.arguments
if arguments.count == 3 && arguments[1] == "--write-seeds" {
    do { try Seeds.write(to: arguments[2]) } catch { fail("\(error)") }
    exit(0)
}

#if FUZZING
let fuzzTarget = ProcessInfo.processInfo.environment["TRICKS_FUZZ_TARGET"] ?? ""
guard FuzzTarget(rawValue: fuzzTarget) != nil else {
    fail("set TRICKS_FUZZ_TARGET to one of \(FuzzTarget.names) (got '\(fuzzTarget)')")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzOne(target: fuzzTarget, data: size == 0 ? Data() : Data(bytes: bytes!, count: size))
    return 0
}

// SwiftPM links an executable with `main` defined as this module's entry point (so that tests can
// link executables), which hides libFuzzer's `main`; this calls libFuzzer's driver as its `main` does.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzTestOneInput))
#else
guard arguments.count >= 3, FuzzTarget(rawValue: arguments[1]) != nil else {
    let usage = """
        usage: tricks-fuzz TARGET FILE...     run files through a reader (TARGET: \(FuzzTarget.names));
                                              a thrown error is printed, a bug crashes
               tricks-fuzz --write-seeds DIR  write seed corpora DIR/TARGET/ and dictionaries DIR/TARGET.dict

        """
    if arguments.count == 1 || arguments.contains("-h") || arguments.contains("--help") {
        print(usage, terminator: "")
        exit(0)
    }
    FileHandle.standardError.write(Data(usage.utf8))
    exit(2)
}
for path in arguments.dropFirst(2) {
    guard let data = FileManager.default.contents(atPath: path) else { fail("\(path): cannot read file") }
    if let error = fuzzOne(target: arguments[1], data: data) {
        print("\(path): \(error)")
    } else {
        print("\(path): ok")
    }
}
#endif
