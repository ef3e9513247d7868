// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Tessera",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Tessera", targets: ["Tessera"]),
        .executable(name: "tessera", targets: ["tessera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        // OpenBLAS's CBLAS interface, found through pkg-config.
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // The C compute core: CPU kernels for everything that is not a matmul.
        .target(
            name: "TesseraKernels",
            cSettings: [
                // Kernels are built optimised even in debug builds (tests run the real math);
                // per-ISA variants are chosen at run time (target_clones), so no -march here.
                .unsafeFlags(["-O3", "-fno-math-errno"]),
            ]
        ),
        .target(
            name: "Tessera",
            dependencies: [
                "CBLAS", "TesseraKernels",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "tessera",
            dependencies: [
                "Tessera",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "TesseraTests",
            dependencies: ["Tessera", .product(name: "MetricsTestKit", package: "swift-metrics")],
            exclude: ["Fixtures"]
        ),
    ]
)
