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

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  /** performance.now() when the wait started. */
  since: number;
}

/**
 * Keys are numbers or strings (the mesh's are numbers: no string is built per partial sum). One
 * timer serves every wait (armed when a wait starts and none is armed, then re-armed for the
 * oldest wait still open): a sync's wait costs no timer of its own.
 */
export class Inbox<T, K extends string | number = string> {
  private readonly values = new Map<K, T>();
  private readonly waiters = new Map<K, Waiter<T>>();
  private failed: Error | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    /** A wait fails after this long (a member hangs). */
    private readonly timeoutMs: number,
    /** Names what a key waits for, in the timeout error. */
    private readonly describe: (key: K) => string,
    /** Values delivered before anyone waits for them, at most. */
    private readonly maxValues = Infinity,
  ) {}

  /** Values delivered and not yet taken. */
  get size(): number {
    return this.values.size;
  }

  put(key: K, v: T): void {
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      w.resolve(v);
    } else {
      if (this.values.size >= this.maxValues && !this.values.has(key)) {
        throw new ProtocolError(`${this.values.size} partial sums already wait to be used (at most ${this.maxValues}): a member sends sums ahead of the step program`, "inbox-full");
      }
      this.values.set(key, v);
    }
  }

  /** The value for `key`, at once when it is there, else when it comes. */
  take(key: K): T | Promise<T> {
    const v = this.values.get(key);
    if (v !== undefined) {
      this.values.delete(key);
      return v;
    }
    if (this.failed) throw this.failed;
    const since = performance.now();
    if (!this.timer) this.arm(this.timeoutMs);
    return new Promise<T>((resolve, reject) => this.waiters.set(key, { resolve, reject, since }));
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.expire(), ms);
    this.timer.unref();
  }

  /** The timer: fail the waits open for timeoutMs, re-arm for the oldest one left. */
  private expire(): void {
    this.timer = null;
    const now = performance.now();
    let oldest = Infinity;
    for (const [key, w] of this.waiters) {
      if (now - w.since >= this.timeoutMs) {
        this.waiters.delete(key);
        w.reject(new LlameshError(`${this.describe(key)}: nothing within ${this.timeoutMs / 1000} s`));
      } else {
        oldest = Math.min(oldest, w.since);
      }
    }
    if (oldest !== Infinity) this.arm(Math.max(1, oldest + this.timeoutMs - now));
  }

  /** Every wait fails now with `e`, and every later one. */
  fail(e: Error): void {
    if (!this.failed) this.failed = e;
    for (const w of this.waiters.values()) w.reject(e);
    this.waiters.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  get error(): Error | null {
    return this.failed;
  }
}
