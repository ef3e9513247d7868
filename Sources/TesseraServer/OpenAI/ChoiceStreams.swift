import Foundation
import Synchronization
import Tessera

/// The engine streams of one HTTP request's choices (prompts × n), merged into one sequence of
/// (choice index, event) that a handler can peek at before it commits to a status and that the
/// response body then drains. Cancelling it cancels every choice in the engine.
final class ChoiceStreams: Sendable {
    enum Item: Sendable {
        case event(choice: Int, EngineEvent)
        case failed(choice: Int, Error)
        /// Every choice has ended.
        case end
    }

    private struct State {
        var buffer: [Item] = []
        var waiter: CheckedContinuation<Item, Never>?
        var open: Int
        var tasks: [Task<Void, Never>] = []
    }
    private let state: Mutex<State>

    /// Submits every request and starts pumping their events.
    init(engine: Engine, requests: [EngineRequest]) {
        state = Mutex(State(open: requests.count))
        var tasks: [Task<Void, Never>] = []
        for (i, r) in requests.enumerated() {
            let stream = engine.submit(r)
            tasks.append(Task { [self] in
                do {
                    for try await event in stream { push(.event(choice: i, event)) }
                    push(.end, choice: i)
                } catch {
                    push(.failed(choice: i, error))
                    push(.end, choice: i)
                }
            })
        }
        state.withLock { $0.tasks = tasks }
    }

    private func push(_ item: Item, choice: Int? = nil) {
        let resume: (CheckedContinuation<Item, Never>, Item)? = state.withLock { s in
            var item = item
            if case .end = item {
                s.open -= 1
                guard s.open == 0 else { return nil }
                item = .end
            }
            if let w = s.waiter {
                s.waiter = nil
                return (w, item)
            }
            s.buffer.append(item)
            return nil
        }
        if let (w, item) = resume { w.resume(returning: item) }
    }

    /// The next item; `.end` once every choice has ended (and forever after).
    func next() async -> Item {
        await withCheckedContinuation { (c: CheckedContinuation<Item, Never>) in
            let ready: Item? = state.withLock { s in
                if !s.buffer.isEmpty { return s.buffer.removeFirst() }
                if s.open == 0 { return .end }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    /// Puts an item back at the front (after peeking).
    func pushBack(_ item: Item) { state.withLock { $0.buffer.insert(item, at: 0) } }

    /// Cancels every choice still running (the client went away).
    func cancel() {
        for t in state.withLock({ $0.tasks }) { t.cancel() }
    }
}
