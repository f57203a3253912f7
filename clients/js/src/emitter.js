// A tiny event emitter that works the same in browsers and Node.
//
// Unlike Node's EventEmitter, emitting 'error' with no listener does not
// throw, and a listener that throws does not break the emitter's owner: the
// exception is reported (reportError in browsers, console.error elsewhere)
// and the other listeners still run.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map()
  }

  /** Subscribe; returns a function that unsubscribes. */
  on(event, listener) {
    let set = this._listeners.get(event)
    if (!set) {
      set = new Set()
      this._listeners.set(event, set)
    }
    set.add(listener)
    return () => this.off(event, listener)
  }

  /** Subscribe for the next emission only. */
  once(event, listener) {
    const off = this.on(event, (...args) => {
      off()
      listener(...args)
    })
    return off
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener)
  }

  emit(event, ...args) {
    const set = this._listeners.get(event)
    if (!set) return
    for (const listener of [...set]) {
      try {
        listener(...args)
      } catch (error) {
        report(error)
      }
    }
  }
}

function report(error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error)
  else console.error('tandem-client: a listener threw', error)
}
