/**
 * What one connection may cost a worker, in one place. A worker listens on a LAN shared with
 * phones, guests and a flatmate's laptop; without a secret anyone can open a session, and with
 * one any holder of the secret can. Every bound here was chosen so that a legitimate client
 * never meets it, while a peer that sends garbage, never reads, or never finishes costs a few
 * megabytes and a few seconds, then its connection is closed (the worker keeps serving).
 */

/** Largest frame body before the handshake is done (a HELLO, PEER or AUTH is a few hundred bytes). */
export const PREAUTH_MAX_FRAME_BYTES = 64 * 1024;
/** From the first byte to HELLO_OK / PEER_OK (TLS handshake included): otherwise the connection is closed. */
export const HANDSHAKE_DEADLINE_MS = 10_000;
/** Connections that have not finished the handshake, at most; more are closed at once. */
export const MAX_PREAUTH_CONNECTIONS = 64;
/** Connections of any kind, at most (file handles are the limit a low ulimit hits first). */
export const MAX_CONNECTIONS = 512;
/**
 * An authenticated session that sends nothing for this long is closed (the client PINGs an idle
 * session every minute, cluster.ts). Peer links are exempt: they live as long as their mesh.
 */
export const IDLE_TIMEOUT_MS = 5 * 60_000;
/**
 * Bytes written to a connection and not yet taken by the peer, at most: a peer that never reads
 * its replies is closed instead of buffered. Generous for a mesh peer in prefill (a batch of
 * partial sums can be a few MB).
 */
export const MAX_UNREAD_BYTES = 64 * 1024 * 1024;
/** Before the handshake, the same bound is much smaller (only error replies go out). */
export const PREAUTH_MAX_UNREAD_BYTES = 256 * 1024;
/** Error replies one connection may cause; the next one closes it (a client that errs this often is broken). */
export const MAX_ERRORS_PER_CONNECTION = 64;
/** Largest JSON control message (HELLO, SETUP, STATS...; a SETUP of 1,024 layers is ~250 KB). */
export const MAX_JSON_BYTES = 1024 * 1024;
/**
 * A connection whose queue holds more than this stops being read until it is served (TCP pushes
 * back on the sender): a legitimate client has at most one request queued behind a step.
 */
export const QUEUE_PAUSE_BYTES = 16 * 1024 * 1024;
/** Bytes buffered for all connections together (frames in progress and queued); the connection that goes over is closed. */
export const MAX_BUFFERED_BYTES = 256 * 1024 * 1024;
/** Frames received and waiting for the ones before them to be served, at most (then the connection is closed). */
export const MAX_QUEUED_FRAMES = 1024;
/** Bytes of such frames, at most. */
export const MAX_QUEUED_BYTES = 256 * 1024 * 1024;
/** Members of one mesh, at most (a MESH listing more is refused before any link is dialled). */
export const MAX_MEMBERS = 64;
/** Longest host name or label of a member. */
export const MAX_HOST_CHARS = 255;
/** A mesh peer must answer connect and handshake within this long; every failure is reported no sooner (see PEER_FAILURE). */
export const PEER_CONNECT_MS = 5_000;
/**
 * The one text of a failed link to a listed peer, whatever happened (refused, reset, timed out,
 * something else listening, a wrong secret): the worker dials addresses a client gave it, and a
 * reply that told these apart, or came sooner for some, would make it a port scanner.
 */
export const PEER_FAILURE = "no llamesh worker of this cluster completed the handshake there within the deadline (nothing listening, another service, a firewall, or another secret)";
/** Log lines a worker writes about misbehaving peers: a burst of this many, then this many per second. */
export const LOG_BURST = 50;
export const LOG_PER_SECOND = 5;
/** Longest error text sent or logged (it never carries the peer's input, this is a second fence). */
export const MAX_MESSAGE_CHARS = 300;

/** The bounds above as one object: a worker takes overrides (tests shorten the timeouts). */
export interface Limits {
  preauthMaxFrameBytes: number;
  handshakeDeadlineMs: number;
  maxPreauthConnections: number;
  maxConnections: number;
  idleTimeoutMs: number;
  maxUnreadBytes: number;
  preauthMaxUnreadBytes: number;
  maxErrorsPerConnection: number;
  maxQueuedFrames: number;
  maxQueuedBytes: number;
  peerConnectMs: number;
  maxBufferedBytes: number;
  /** Memory the slices of all sessions (and those parked) may take together; default 75% of the machine's. */
  maxMemoryBytes: number;
}

export function limitsWith(over: Partial<Limits> = {}, totalMemory: number): Limits {
  return {
    preauthMaxFrameBytes: PREAUTH_MAX_FRAME_BYTES, handshakeDeadlineMs: HANDSHAKE_DEADLINE_MS, maxPreauthConnections: MAX_PREAUTH_CONNECTIONS,
    maxConnections: MAX_CONNECTIONS, idleTimeoutMs: IDLE_TIMEOUT_MS, maxUnreadBytes: MAX_UNREAD_BYTES, preauthMaxUnreadBytes: PREAUTH_MAX_UNREAD_BYTES,
    maxErrorsPerConnection: MAX_ERRORS_PER_CONNECTION, maxQueuedFrames: MAX_QUEUED_FRAMES, maxQueuedBytes: MAX_QUEUED_BYTES, peerConnectMs: PEER_CONNECT_MS,
    maxBufferedBytes: MAX_BUFFERED_BYTES, maxMemoryBytes: Math.floor(totalMemory * 0.75),
    ...over,
  };
}

/**
 * Text fit for one log line or error reply: control characters (newlines, escapes) replaced,
 * at most `max` characters. For text that may come from the network (a remote's error message).
 */
export function oneLine(s: string, max = MAX_MESSAGE_CHARS): string {
  // eslint-disable-next-line no-control-regex
  const flat = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, " ");
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/**
 * A token bucket for log lines: `take()` says whether a line may be written now; lines refused
 * are counted and reported with the next line that passes ("N lines suppressed").
 */
export class LogLimiter {
  private tokens: number;
  private last = Date.now();
  private dropped = 0;

  constructor(private readonly burst = LOG_BURST, private readonly perSecond = LOG_PER_SECOND) {
    this.tokens = burst;
  }

  /** `line` as it should be written (with a count of those suppressed before it), or null: drop it. */
  admit(line: string): string | null {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) {
      this.dropped++;
      return null;
    }
    this.tokens -= 1;
    const out = this.dropped > 0 ? `${oneLine(line)} (${this.dropped} similar lines suppressed)` : oneLine(line);
    this.dropped = 0;
    return out;
  }
}
