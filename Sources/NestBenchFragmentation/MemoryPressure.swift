import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

/// Memory held in a place during a run: by a running nb-hold (Harness/pressure/nb-hold.c), or by
/// the place's inflated balloon. `finish()` after the workload gives its metrics and releases it.
public final class PressureSession: Sendable {
    public let spec: MemoryPressureSpec
    public let ready: FragmenterEvent
    /// nb-hold, when it holds the memory.
    let helper: LineProtocolHelper?
    /// The balloon's place and the guest memory it had before inflating.
    let balloon: (place: any BalloonPlace, full: UInt64)?
    public let place: any Place

    init(
        spec: MemoryPressureSpec, ready: FragmenterEvent, helper: LineProtocolHelper?, place: any Place,
        balloon: (place: any BalloonPlace, full: UInt64)? = nil
    ) {
        self.spec = spec
        self.ready = ready
        self.helper = helper
        self.place = place
        self.balloon = balloon
    }

    /// Gives the memory back: nb-hold stopped (SIGTERM, then SIGKILL after 10 s), or the balloon
    /// deflated to the guest's full memory. Returns how it ended.
    @discardableResult
    public func release() async -> (description: String, balloonBytes: UInt64?) {
        if let balloon {
            do {
                let actual = try await balloon.place.balloon(to: nil)
                return ("balloon deflated to \(actual) bytes", actual)
            } catch {
                return ("balloon not deflated: \(error)", nil)
            }
        }
        guard let helper else { return ("nothing held", nil) }
        return (await helper.terminate().description, nil)
    }

    /// MemAvailable of the place, in bytes, or nil.
    static func available(in place: any Place) async -> Double? {
        guard let text = try? await place.read("/proc/meminfo"), let kb = KeyValueFile.meminfo(text)["MemAvailable"] else {
            return nil
        }
        return Double(kb)
    }

    /// Metrics and timeline of the pressure around a workload (call after the workload ended); releases it.
    public func finish() async -> (metrics: [Metric], samples: [TimelineSample], provenance: [String: String]) {
        let atEnd = await Self.available(in: place)
        let holds = helper?.events.filter { $0.kind == "hold" } ?? []
        let (outcome, balloonBytes) = await release()
        let released = await Self.available(in: place)
        let during = [ready.double("available")] + holds.map { $0.double("available") } + [atEnd]
        let how = balloon == nil ? "nb-hold held" : "the balloon took"
        func m(_ name: String, _ value: Double?, _ unit: String, _ detail: String) -> Metric {
            guard let value else {
                return Metric.unavailable(
                    name, unit: unit, polarity: .neutral, source: "pressure",
                    reason: "unavailable: \(place.name)'s /proc/meminfo or the pressure's holder did not report it")
            }
            return Metric(name: name, value: value, unit: unit, polarity: .neutral, source: "pressure", detail: detail)
        }
        var metrics = [
            m("pressure.held_bytes", ready.double("held"), "bytes", "memory \(how) in \(place.name) during the run"),
            m(
                "pressure.available_bytes", ready.double("available"), "bytes",
                "MemAvailable of \(place.name) when the workload started (target \(spec.availableBytes))"),
            m(
                "pressure.available_min_bytes", during.compactMap { $0 }.min(), "bytes",
                "lowest MemAvailable of \(place.name) over the start, \(holds.count) readings during the run and its end"),
            m("pressure.seconds", ready.double("seconds"), "s", "time taken to reach the target"),
            m(
                "pressure.released_available_bytes", released, "bytes",
                "MemAvailable of \(place.name) after the memory was given back"),
        ]
        if let balloon {
            // What the guest has after deflating: all of its memory, or the failure is visible.
            metrics.append(
                balloonBytes.map { Double($0) }.map {
                    Metric(
                        name: "pressure.balloon_released_bytes", value: $0, unit: "bytes", polarity: .neutral,
                        source: "pressure", detail: "\(place.name)'s memory after deflating (full: \(balloon.full))")
                }
                    ?? Metric.unavailable(
                        "pressure.balloon_released_bytes", unit: "bytes", polarity: .neutral, source: "pressure",
                        reason: "unavailable: \(outcome)"))
        }
        let samples = holds.compactMap { e in
            e.double("available").map { TimelineSample(tMillis: e.tMillis, name: "pressure.available_bytes", value: $0) }
        }
        var provenance = [
            "pressure.place": place.name, "pressure.target_available": String(spec.availableBytes),
            "pressure.method": spec.method.rawValue, "pressure.release": outcome,
        ]
        if let helper { provenance["pressure.log"] = helper.logPath }
        return (metrics, samples, provenance)
    }
}

/// Starts nb-hold in a place and waits until it holds enough to reach the target.
public struct MemoryPressure: Sendable {
    public let harness: HarnessLocator
    public let logger: Logger

    public init(harness: HarnessLocator, logger: Logger) {
        self.harness = harness
        self.logger = logger
    }

    public static func arguments(for spec: MemoryPressureSpec, intervalMillis: Int = 1000) -> [String] {
        [
            "--available", String(spec.availableBytes), "--step", String(spec.stepBytes), "--interval-ms",
            String(intervalMillis), "--timeout-s", String(Int(spec.timeoutSeconds.rounded(.up))),
        ]
    }

    public func start(_ spec: MemoryPressureSpec, directory: String, place: any Place) async throws(FragmentationError)
        -> PressureSession
    {
        if spec.method == .balloon { return try await inflate(spec, place: place) }
        let helper = try await LineProtocolHelper.start(
            "nb-hold", source: "pressure/nb-hold.c", program: "nb-hold", arguments: Self.arguments(for: spec),
            file: "pressure", directory: directory, place: place, harness: harness)
        logger.info(
            "memory pressure started",
            metadata: [
                "pressure.pid": "\(helper.child.pid)", "pressure.available": "\(spec.availableBytes)",
                "pressure.place": "\(place.name)",
            ])
        // nb-hold has its own timeout; this one covers a helper that never starts reporting.
        let ready = try await helper.ready(
            by: ContinuousClock.now + .seconds(spec.timeoutSeconds + 30),
            timeout: "nb-hold did not reach MemAvailable \(spec.availableBytes) within \(Int(spec.timeoutSeconds))s")
        return PressureSession(spec: spec, ready: ready, helper: helper, place: place)
    }

    /// Inflates the place's balloon by what MemAvailable exceeds the target (a guest's memory
    /// given back to the layer below), then reads MemAvailable again.
    func inflate(_ spec: MemoryPressureSpec, place: any Place) async throws(FragmentationError) -> PressureSession {
        guard let balloonPlace = place as? any BalloonPlace else {
            throw FragmentationError(
                "memory_pressure method balloon: \(place.name) has no balloon NestBench controls (a guest layer with balloon: true whose QEMU runs on this machine)"
            )
        }
        let started = ContinuousClock.now
        do {
            let full = try await balloonPlace.balloon(to: nil)
            guard let available = await PressureSession.available(in: place) else {
                throw FragmentationError("memory_pressure: cannot read \(place.name)'s MemAvailable")
            }
            let take = available > Double(spec.availableBytes) ? UInt64(available) - spec.availableBytes : 0
            guard take < full - (64 << 20) else {
                throw FragmentationError(
                    "memory_pressure: \(place.name) would keep under 64 MiB of its \(full) bytes; raise available")
            }
            // Nothing above the target: nothing to take (the balloon stays deflated).
            let actual = take == 0 ? full : try await balloonPlace.balloon(to: full - take)
            guard actual <= full else {
                throw FragmentationError(
                    "memory_pressure method balloon: \(place.name) has \(actual) bytes after inflating, more than the \(full) it had deflated (the balloon had not settled); run again"
                )
            }
            let after = await PressureSession.available(in: place)
            let seconds = (ContinuousClock.now - started).seconds
            var fields = ["held": String(full - actual), "seconds": String(format: "%.3f", seconds)]
            if let after { fields["available"] = String(Int(after)) }
            logger.info(
                "memory pressure: balloon inflated",
                metadata: ["pressure.place": "\(place.name)", "pressure.balloon": "\(full - actual)"])
            return PressureSession(
                spec: spec, ready: FragmenterEvent(kind: "ready", fields: fields), helper: nil, place: place,
                balloon: (balloonPlace, full))
        } catch let error as PlaceError {
            _ = try? await balloonPlace.balloon(to: nil)
            throw FragmentationError("memory_pressure method balloon: \(error)")
        } catch let error as FragmentationError {
            _ = try? await balloonPlace.balloon(to: nil)
            throw error
        } catch {
            _ = try? await balloonPlace.balloon(to: nil)
            throw FragmentationError("memory_pressure method balloon: \(error)")
        }
    }
}
