/**
 * Values that arrive before or after someone waits for them, by key: the partial sums of a step
 * (a fast member's sum can come before the slow one asks for it). A wait fails after a deadline,
 * or at once for everyone when the inbox fails (a link is gone). It holds at most `maxValues`
 * values nobody waits for: the members of a step program cannot run ahead of each other by more
 * than a sync or two, so more means a peer sends sums for steps that will never come (refused,
 * and the sender's link closed, instead of buffered).
 */
import { LlameshError } from "../core/errors.js";
import { ProtocolError } from "./protocol.js";

export class Inbox<T> {
  private readonly values = new Map<string, T>();
  private readonly waiters = new Map<string, { resolve: (v: T) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private failed: Error | null = null;

  constructor(
    /** A wait fails after this long (a member hangs). */
    private readonly timeoutMs: number,
    /** Names what a key waits for, in the timeout error. */
    private readonly describe: (key: string) => string,
    /** Values delivered before anyone waits for them, at most. */
    private readonly maxValues = Infinity,
  ) {}

  /** Values delivered and not yet taken. */
  get size(): number {
    return this.values.size;
  }

  put(key: string, v: T): void {
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      clearTimeout(w.timer);
      w.resolve(v);
    } else {
      if (this.values.size >= this.maxValues && !this.values.has(key)) {
        throw new ProtocolError(`${this.values.size} partial sums already wait to be used (at most ${this.maxValues}): a member sends sums ahead of the step program`, "inbox-full");
      }
      this.values.set(key, v);
    }
  }

  /** The value for `key`, at once when it is there, else when it comes. */
  take(key: string): T | Promise<T> {
    const v = this.values.get(key);
    if (v !== undefined) {
      this.values.delete(key);
      return v;
    }
    if (this.failed) throw this.failed;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        reject(new LlameshError(`${this.describe(key)}: nothing within ${this.timeoutMs / 1000} s`));
      }, this.timeoutMs);
      timer.unref();
      this.waiters.set(key, { resolve, reject, timer });
    });
  }

  /** Every wait fails now with `e`, and every later one. */
  fail(e: Error): void {
    if (!this.failed) this.failed = e;
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.waiters.clear();
  }

  get error(): Error | null {
    return this.failed;
  }
}
