import Crypto
import Foundation
import NestBenchProcess

/// Errors preparing kernels and initramfs images; each names the file.
public struct VMError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// The guest is gone or its agent did not answer in time (the stack must be booted afresh).
    public var unreachable: Bool
    public init(_ message: String, unreachable: Bool = false) {
        self.message = message
        self.unreachable = unreachable
    }
    public var description: String { message }
}

/// Kernel images and NestBench's generated initramfs, cached under `cacheDirectory`.
public struct GuestImages: Sendable {
    /// NestBench's Harness/ directory (for guest/mkinitramfs.sh and guest/init).
    public var harnessDirectory: String
    public var cacheDirectory: String

    public init(harnessDirectory: String, cacheDirectory: String) {
        self.harnessDirectory = harnessDirectory
        self.cacheDirectory = cacheDirectory
    }

    /// The kernel release of a bzImage from its setup header (`kernel_version` at 0x20E), or
    /// nil for anything else (e.g. a vmlinux ELF).
    public static func bzImageVersion(_ data: Data) -> String? {
        guard data.count > 0x400, data[0x202..<0x206].elementsEqual(Array("HdrS".utf8)) else { return nil }
        let offset = Int(data[0x20E]) | Int(data[0x20F]) << 8
        let start = offset + 0x200
        guard offset > 0, start < data.count else { return nil }
        let bytes = data[start...].prefix { $0 != 0 && $0 != 0x20 }.prefix(128)
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    /// Offset of the xz stream (the compressed vmlinux) in a bzImage.
    public static func xzPayloadOffset(_ data: Data) -> Int? {
        let magic: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        return data.firstRange(of: magic).map { $0.lowerBound - data.startIndex }
    }

    static func hash(_ data: Data) -> String {
        SHA256.hash(data: data).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// What to boot for `image`: the uncompressed vmlinux extracted from an xz bzImage (boots
    /// with qboot in ~5 s instead of 13–20 s), else the image itself. Also the kernel release.
    public func bootable(_ image: String) async throws(VMError) -> (kernel: String, release: String?) {
        guard let data = FileManager.default.contents(atPath: image) else {
            throw VMError("\(image): cannot read the kernel image")
        }
        let release = Self.bzImageVersion(data)
        guard release != nil, let offset = Self.xzPayloadOffset(data) else { return (image, release) }
        let dir = "\(cacheDirectory)/kernels/\(Self.hash(data))"
        let vmlinux = dir + "/vmlinux"
        if FileManager.default.fileExists(atPath: vmlinux) { return (vmlinux, release) }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try data[(data.startIndex + offset)...].write(to: URL(fileURLWithPath: dir + "/payload.xz"))
        } catch {
            throw VMError("\(dir): cannot write the kernel cache (\(error))")
        }
        let tmp = "\(vmlinux).\(getpid()).tmp"
        let outcome: ProcessOutcome
        do {
            outcome = try await ProcessRunner.run(
                ProcessSpec(
                    program: "xz", arguments: ["-dc", "--single-stream", dir + "/payload.xz"],
                    environment: ["PATH": "/usr/bin:/bin"], stdoutPath: tmp, stderrPath: dir + "/xz.log",
                    timeoutSeconds: 120))
        } catch {
            throw VMError("\(image): cannot run xz to extract vmlinux (\(error)); install xz-utils")
        }
        try? FileManager.default.removeItem(atPath: dir + "/payload.xz")
        guard outcome.succeeded, rename(tmp, vmlinux) == 0 else {
            return (image, release)  // not an xz kernel after all: boot the bzImage itself
        }
        return (vmlinux, release)
    }

    /// The generated initramfs for a kernel's modules directory (built once, cached by the
    /// hash of the scripts and the module list).
    public func initramfs(modulesDirectory: String) async throws(VMError) -> String {
        let script = harnessDirectory + "/guest/mkinitramfs.sh"
        var key = Data()
        for file in [script, harnessDirectory + "/guest/init", modulesDirectory + "/modules.dep"] {
            guard let d = FileManager.default.contents(atPath: file) else { throw VMError("\(file): missing") }
            key += d
        }
        key += Data(modulesDirectory.utf8)
        let dir = "\(cacheDirectory)/initramfs/\(Self.hash(key))"
        let out = dir + "/initramfs.cpio.gz"
        if FileManager.default.fileExists(atPath: out) { return out }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw VMError("\(dir): cannot create the initramfs cache (\(error))")
        }
        let log = dir + "/build.log"
        let outcome: ProcessOutcome
        do {
            outcome = try await ProcessRunner.run(
                ProcessSpec(
                    program: "/bin/sh", arguments: [script, out, modulesDirectory],
                    environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdoutPath: log, stderrPath: log,
                    timeoutSeconds: 120))
        } catch {
            throw VMError("\(script): \(error)")
        }
        guard outcome.succeeded else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw VMError("\(script) failed (\(outcome.describe(timeout: 120))): \(text.suffix(400))")
        }
        return out
    }
}
