// swift-tools-version: 6.0
// A gateway that links Tessera: it mounts Tessera's OpenAI routes under its own prefix on its
// own Hummingbird router, and calls the Engine directly from a route of its own.
//
// Tessera's C kernels and Swift library are built with unsafe flags (-O3 on the C core,
// -Ounchecked in release), which SwiftPM allows only for root packages and packages
// depended on by path. A gateway therefore depends on a checkout of Tessera by path (a git
// submodule or a vendored copy), as this example does.
import PackageDescription

let package = Package(
    name: "Gateway",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Tessera", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .executableTarget(
            name: "Gateway",
            dependencies: [
                .product(name: "Tessera", package: "Tessera"),
                .product(name: "TesseraServer", package: "Tessera"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
    ]
)
