// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Tessera",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Tessera", targets: ["Tessera"]),
        .library(name: "TesseraServer", targets: ["TesseraServer"]),
        .executable(name: "tessera", targets: ["tessera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
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
        // The HTTP layer: OpenAI-compatible routes, tenants and keys, the adapter registry,
        // storage (SQLite through GRDB behind a protocol) and Prometheus metrics.
        .target(
            name: "TesseraServer",
            dependencies: [
                "Tessera",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "MultipartKit", package: "multipart-kit"),
            ]
        ),
        .executableTarget(
            name: "tessera",
            dependencies: [
                "Tessera", "TesseraServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "TesseraTests",
            dependencies: ["Tessera", .product(name: "MetricsTestKit", package: "swift-metrics")],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "TesseraServerTests",
            dependencies: ["TesseraServer", "Tessera"]
        ),
    ]
)
