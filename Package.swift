// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Tricks",
    products: [
        // The library that detectors embed: tensors, layers, SyncBatchNorm, schedules, tricks.
        .library(name: "Tricks", targets: ["Tricks"]),
        // The MPI transport for the library's `Communicator`.
        .library(name: "TricksMPI", targets: ["TricksMPI"]),
        // A YOLOv3-style detector built on the public API of Tricks.
        .library(name: "TricksDetect", targets: ["TricksDetect"]),
        .executable(name: "tricks-worker", targets: ["tricks-worker"]),
        .executable(name: "tricks-detect", targets: ["tricks-detect"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        // JPEG and PNG in memory, with the libraries' longjmp errors turned into return codes.
        .target(name: "CImageIO", dependencies: ["CJPEG", "CPNG"]),
        // Hand-written convolution kernels (AVX-512 chosen at run time, portable C otherwise).
        .target(name: "CKernels"),
        .target(name: "Tricks", dependencies: ["CBLAS", "CZlib", "CKernels", "CImageIO"]),
        .target(name: "TricksMPI", dependencies: ["Tricks", "CMPI"]),
        .target(name: "TricksDetect", dependencies: ["Tricks"]),
        .executableTarget(name: "tricks-worker", dependencies: [
            "Tricks", "TricksMPI",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "tricks-detect", dependencies: [
            "TricksDetect", "Tricks", "TricksMPI",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Feeds bytes to the file readers: libFuzzer's target built with `-DFUZZING` (launch/fuzz.sh),
        // else `tricks-fuzz TARGET FILE...` to reproduce what it found.
        .executableTarget(name: "tricks-fuzz", dependencies: ["Tricks"]),
        .testTarget(name: "TricksTests", dependencies: ["Tricks", "TricksDetect"]),
    ],
    // Swift 5 language mode: the numerical core shares raw buffers across layers by design.
    swiftLanguageModes: [.v5]
)
