import Foundation
import Logging
import Synchronization

/// Writes usage rows by group commit: a request's row goes into the next transaction, and the
/// request's response ends only once that transaction committed (a few milliseconds). Rows
/// that arrive while a transaction runs wait for the next one, written as one batch, so the
/// database sees one commit per batch rather than one per request.
final class UsageLedger: Sendable {
    private struct State {
        var pending: [(UsageRecord, CheckedContinuation<Void, Never>?)] = []
        var writing = false
    }
    private let state = Mutex(State())
    private let storage: any TesseraStorage
    private let logger: Logger
    /// Called once a row is committed (budgets, metrics).
    private let committed: @Sendable (UsageRecord) -> Void

    init(storage: any TesseraStorage, logger: Logger, committed: @escaping @Sendable (UsageRecord) -> Void) {
        self.storage = storage
        self.logger = logger
        self.committed = committed
    }

    /// Returns once the row is committed.
    func record(_ row: UsageRecord) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let lead: Bool = state.withLock { s in
                s.pending.append((row, c))
                if s.writing { return false }
                s.writing = true
                return true
            }
            if lead { Task { await self.drain() } }
        }
    }

    /// Commits batches until none is pending.
    private func drain() async {
        while true {
            let batch: [(UsageRecord, CheckedContinuation<Void, Never>?)] = state.withLock { s in
                let b = s.pending
                s.pending.removeAll()
                if b.isEmpty { s.writing = false }
                return b
            }
            if batch.isEmpty { return }
            let rows = batch.map(\.0)
            var attempt = 0
            while true {
                do {
                    try await storage.recordUsage(rows)
                    rows.forEach(committed)
                    break
                } catch {
                    attempt += 1
                    if attempt >= 3 {
                        logger.error("usage rows not written", metadata: ["rows": "\(rows.count)", "error": "\(error)"])
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(20 * attempt))
                }
            }
            for (_, c) in batch { c?.resume() }
        }
    }
}

/// The audit trail's writer: entries go to the database in the background (an admin action
/// awaits its own entry); authentication failures are counted per key prefix and minute and
/// added to that minute's one row, so a flood of bad keys cannot fill the disk.
final class Auditor: Sendable {
    private struct State {
        var failures: [String: Int] = [:]  // "prefix|minute" -> count not yet written
        var flushing = false
    }
    private let state = Mutex(State())
    private let storage: any TesseraStorage
    private let logger: Logger

    init(storage: any TesseraStorage, logger: Logger) {
        self.storage = storage
        self.logger = logger
    }

    func record(actor: String, action: String, target: String, result: String) async {
        do { try await storage.appendAudit([AuditEntry(actor: actor, action: action, target: target, result: result)]) } catch {
            logger.error("audit entry not written", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    /// Records in the background (engine and store events that no request waits on).
    func post(actor: String, action: String, target: String, result: String) {
        Task { await record(actor: actor, action: action, target: target, result: result) }
    }

    /// A failed authentication: only the presented key's first 8 characters are kept.
    func authenticationFailed(presentedKey: String?) {
        let prefix = presentedKey.map { String($0.prefix(8)) } ?? "(none)"
        let minute = (Date().timeIntervalSince1970 / 60).rounded(.down) * 60
        let lead: Bool = state.withLock { s in
            s.failures["\(prefix)|\(Int(minute))", default: 0] += 1
            if s.flushing { return false }
            s.flushing = true
            return true
        }
        if lead { Task { await flushFailures() } }
    }

    private func flushFailures() async {
        // Gather a few milliseconds of failures into one write.
        try? await Task.sleep(for: .milliseconds(200))
        while true {
            let batch: [String: Int] = state.withLock { s in
                let b = s.failures
                s.failures.removeAll()
                if b.isEmpty { s.flushing = false }
                return b
            }
            if batch.isEmpty { return }
            for (key, count) in batch {
                let parts = key.split(separator: "|")
                guard parts.count == 2, let minute = Double(parts[1]) else { continue }
                do {
                    try await storage.recordAuthFailures(actor: "key:\(parts[0])", minute: Date(timeIntervalSince1970: minute), count: count)
                } catch {
                    logger.error("audit entry not written", metadata: ["action": "auth.failed", "error": "\(error)"])
                }
            }
        }
    }
}
