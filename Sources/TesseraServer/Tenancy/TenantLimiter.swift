import Foundation
import HTTPTypes
import Synchronization

/// Per-tenant admission before the engine: requests and tokens per minute (token buckets),
/// requests in flight, and the monthly token budget. A refused request costs the engine
/// nothing, and one tenant's buckets never touch another's.
final class TenantLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
        var capacity: Double

        /// Refills at capacity per minute, up to capacity (a changed limit rescales at once).
        mutating func refill(capacity newCapacity: Double, now: ContinuousClock.Instant) {
            let elapsed = now - updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            if newCapacity != capacity { tokens = min(tokens, newCapacity); capacity = newCapacity }
            tokens = min(capacity, tokens + seconds * capacity / 60)
            updated = now
        }

        /// Seconds until `amount` tokens are there.
        func wait(for amount: Double) -> Double { max(0, (amount - tokens) / (capacity / 60)) }
    }

    struct Month {
        var start: Date
        var used: Int
        var loadedAt: ContinuousClock.Instant
    }

    struct State {
        var requests: [Int64: Bucket] = [:]
        var tokens: [Int64: Bucket] = [:]
        var inFlight: [Int64: Int] = [:]
        var months: [Int64: Month] = [:]
    }
    private let state = Mutex(State())

    /// What an admitted request holds: released when it ends, with its actual tokens.
    struct Ticket: Sendable {
        let tenantId: Int64
        let chargedTokens: Int
    }

    /// The first day of this calendar month, UTC.
    static func monthStart(_ date: Date = Date()) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
        return calendar.date(from: calendar.dateComponents([.year, .month], from: date)) ?? date
    }

    /// Tokens this tenant used this month (loaded from the ledger, then kept up as rows are written).
    func monthlyUsed(_ tenantId: Int64, storage: any TesseraStorage) async throws -> Int {
        let start = Self.monthStart()
        if let m = state.withLock({ s -> Month? in
            guard let m = s.months[tenantId], m.start == start, ContinuousClock.now - m.loadedAt < .seconds(30) else { return nil }
            return m
        }) { return m.used }
        // Reload now and then, so rows written by another replica count too.
        let used = try await storage.tokensUsed(tenantId: tenantId, since: start)
        // Rows are counted after their commit, so the ledger's sum already holds every addUsed.
        state.withLock { $0.months[tenantId] = Month(start: start, used: used, loadedAt: .now) }
        return used
    }

    /// Adds a completed computed response's tokens to the tenant's month; returns the new total.
    @discardableResult
    func addUsed(_ tenantId: Int64, tokens: Int) -> Int? {
        state.withLock { s in
            guard var m = s.months[tenantId], m.start == Self.monthStart() else { return nil }
            m.used += tokens
            s.months[tenantId] = m
            return m.used
        }
    }

    /// The cheap part of admission, before the body is parsed: a tenant with every concurrent
    /// slot taken or an empty request bucket is refused here (the same 429 as ``admit``).
    func precheck(_ p: Principal) throws(APIError) {
        let l = p.limits
        guard l.concurrency != nil || l.rpm != nil else { return }
        let now = ContinuousClock.now
        let refusal: APIError? = state.withLock { s in
            if let c = l.concurrency, s.inFlight[p.tenantId, default: 0] >= c {
                return Self.concurrencyLimited(c)
            }
            if let rpm = l.rpm, var b = s.requests[p.tenantId] {
                b.refill(capacity: Double(rpm), now: now)
                s.requests[p.tenantId] = b
                if b.tokens < 1 { return Self.requestsLimited(rpm, seconds: b.wait(for: 1)) }
            }
            return nil
        }
        if let refusal { throw refusal }
    }

    /// Admits a request costing `tokens` (prompt plus max_tokens) or says why not.
    func admit(_ p: Principal, tokens: Int, monthlyUsed: Int?) throws(APIError) -> Ticket {
        let l = p.limits
        if let budget = l.monthlyTokens, let used = monthlyUsed, used >= budget {
            var e = APIError(status: .tooManyRequests,
                             message: "You exceeded your monthly token budget (\(used) of \(budget) tokens used). It resets at the start of next month (UTC).",
                             type: "insufficient_quota", code: "insufficient_quota")
            e.extraHeaders[HTTPField.Name("x-should-retry")!] = "false"
            throw e
        }
        if let tpm = l.tpm, tokens > tpm {
            var e = APIError(status: .tooManyRequests,
                             message: "Request too large: it needs \(tokens) tokens (prompt plus max_tokens) and the limit is \(tpm) tokens per minute. Reduce max_tokens or the prompt.",
                             type: "tokens", code: "rate_limit_exceeded")
            e.extraHeaders[HTTPField.Name("x-should-retry")!] = "false"
            throw e
        }
        let now = ContinuousClock.now
        let refusal: APIError? = state.withLock { s in
            if let c = l.concurrency, s.inFlight[p.tenantId, default: 0] >= c {
                return Self.concurrencyLimited(c)
            }
            var requests = s.requests[p.tenantId]
            if let rpm = l.rpm {
                var b = requests ?? Bucket(tokens: Double(rpm), updated: now, capacity: Double(rpm))
                b.refill(capacity: Double(rpm), now: now)
                if b.tokens < 1 {
                    s.requests[p.tenantId] = b
                    return Self.requestsLimited(rpm, seconds: b.wait(for: 1))
                }
                requests = b
            }
            var tokenBucket = s.tokens[p.tenantId]
            if let tpm = l.tpm {
                var b = tokenBucket ?? Bucket(tokens: Double(tpm), updated: now, capacity: Double(tpm))
                b.refill(capacity: Double(tpm), now: now)
                if b.tokens < Double(tokens) {
                    s.tokens[p.tenantId] = b
                    if let requests { s.requests[p.tenantId] = requests }
                    return Self.rateLimited("Rate limit reached: \(tpm) tokens per minute (this request needs \(tokens)).", type: "tokens",
                                            seconds: b.wait(for: Double(tokens)))
                }
                tokenBucket = b
            }
            if var r = requests { r.tokens -= 1; s.requests[p.tenantId] = r }
            if var t = tokenBucket { t.tokens -= Double(tokens); s.tokens[p.tenantId] = t }
            s.inFlight[p.tenantId, default: 0] += 1
            return nil
        }
        if let refusal { throw refusal }
        return Ticket(tenantId: p.tenantId, chargedTokens: tokens)
    }

    /// Ends an admitted request: frees its slot and refunds the tokens it did not use.
    func release(_ t: Ticket, usedTokens: Int) {
        state.withLock { s in
            s.inFlight[t.tenantId, default: 1] -= 1
            if var b = s.tokens[t.tenantId] {
                b.tokens = min(b.capacity, b.tokens + Double(max(0, t.chargedTokens - usedTokens)))
                s.tokens[t.tenantId] = b
            }
        }
    }

    static func concurrencyLimited(_ c: Int) -> APIError {
        rateLimited("Too many concurrent requests (limit \(c)).", type: "requests", seconds: 1)
    }

    static func requestsLimited(_ rpm: Int, seconds: Double) -> APIError {
        rateLimited("Rate limit reached: \(rpm) requests per minute.", type: "requests", seconds: seconds)
    }

    static func rateLimited(_ message: String, type: String, seconds: Double) -> APIError {
        var e = APIError(status: .tooManyRequests, message: message + " Retry after \(String(format: "%.2f", seconds)) s.", type: type,
                         code: "rate_limit_exceeded")
        let ms = Int((seconds * 1000).rounded(.up))
        e.extraHeaders[HTTPField.Name("retry-after-ms")!] = "\(max(1, ms))"
        e.extraHeaders[.retryAfter] = "\(max(1, Int(seconds.rounded(.up))))"
        return e
    }
}
