/**
 * Private links: with a shared secret, every connection (client to worker, worker to worker) is
 * TLS keyed from the secret, so nothing crosses the LAN readable or alterable by anyone on it.
 *
 * The construction is TLS 1.2 with an ephemeral ECDH key exchange authenticated by a pre-shared
 * key (RFC 5489, cipher ECDHE-PSK-CHACHA20-POLY1305, RFC 7905): forward secrecy (a later leak of
 * the secret does not open recorded traffic), mutual authentication (only holders of the secret
 * complete the handshake), and AEAD records (any change to a byte in flight fails the record and
 * closes the link). The PSK is HKDF-SHA256 of the secret. Why not TLS 1.3: Node's PSK API hands
 * OpenSSL the pre-1.3 callback, and a 1.3 handshake then still wants a certificate ("no suitable
 * signature algorithm", tried); TLS 1.2 PSK is what Node supports without certificates to manage.
 * Inside the tunnel the HMAC challenge of auth.ts still runs, so a worker counts authentication
 * failures the same way.
 *
 * A worker tells a TLS client from a plain one by the first byte (0x16: a TLS handshake record,
 * 0x4c: "LMSH"), so a mismatch gets a one-line error on both sides instead of a hang.
 */
import * as crypto from "node:crypto";
import * as net from "node:net";
import * as tls from "node:tls";
import { LlameshError } from "../core/errors.js";

/** How a side secures its links: a secret (authentication) and, with it, encryption unless turned off. */
export interface LinkSecurity {
  secret: Buffer | null;
  /** Encrypt the links (default: whenever there is a secret). */
  encrypt: boolean;
}

export function linkSecurity(secret: Buffer | null, encrypt?: boolean): LinkSecurity {
  return { secret, encrypt: secret !== null && encrypt !== false };
}

const CIPHERS = "ECDHE-PSK-CHACHA20-POLY1305";
const IDENTITY = "llamesh-v1";
const TLS_VERSIONS = { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" } as const;

/** The TLS pre-shared key of a secret: HKDF-SHA256, 32 bytes. */
export function pskOf(secret: Buffer): Buffer {
  return Buffer.from(crypto.hkdfSync("sha256", secret, "llamesh", "tls-psk-v1", 32));
}

/**
 * Open a connection to host:port, in TLS when `sec` encrypts. Rejects with a LlameshError naming
 * `label` (cannot connect, timed out, or the worker does not take an encrypted link).
 */
export function connectSocket(host: string, port: number, timeoutMs: number, sec: LinkSecurity, label: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const psk = sec.encrypt && sec.secret ? pskOf(sec.secret) : null;
    const s: net.Socket = psk
      ? tls.connect({ host, port, ...TLS_VERSIONS, ciphers: CIPHERS, pskCallback: () => ({ psk, identity: IDENTITY }), checkServerIdentity: () => undefined })
      : net.connect({ host, port });
    let connected = false;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new LlameshError(`worker ${label}: no answer to connect within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once(psk ? "secureConnect" : "connect", () => {
      connected = true;
      clearTimeout(timer);
      s.removeAllListeners("error");
      s.removeAllListeners("close");
      resolve(s);
    });
    let tcpUp = false;
    if (psk) (s as tls.TLSSocket).once("connect", () => (tcpUp = true));
    const fail = (e: Error | null): void => {
      if (connected) return;
      clearTimeout(timer);
      const code = (e as NodeJS.ErrnoException | null)?.code ?? "";
      if (psk && /BAD_RECORD_MAC|DECRYPTION_FAILED|DECRYPT_ERROR|HANDSHAKE_FAILURE|ALERT/.test(code)) {
        reject(new LlameshError(`worker ${label} does not know the shared secret (the encrypted handshake failed): check --secret-file on both sides`));
      } else if (psk && tcpUp) {
        reject(new LlameshError(`worker ${label} does not ask for the shared secret or runs with encryption off: start it with --secret-file too (without --no-encryption); a client with a secret talks only to workers that prove they know it`));
      } else {
        reject(new LlameshError(`worker ${label}: cannot connect (${code || e?.message || "closed"})`));
      }
    };
    s.once("error", fail);
    s.once("close", () => fail(null));
  });
}

/** What a worker does with a new connection before the protocol starts: encrypted or plain, or refused. */
export class Acceptor {
  private readonly tlsServer: tls.Server | null;

  constructor(
    private readonly sec: LinkSecurity,
    /** A connection ready for frames (decrypted when encrypted). */
    private readonly onSocket: (s: net.Socket, peer: string) => void,
    /** A connection refused before the protocol: why, for the log and the counters. */
    private readonly onRefused: (peer: string, why: string, kind: "tls" | "plain") => void,
  ) {
    if (sec.encrypt && sec.secret) {
      const psk = pskOf(sec.secret);
      this.tlsServer = tls.createServer({ ...TLS_VERSIONS, ciphers: CIPHERS, pskCallback: (_s, id) => (id === IDENTITY ? psk : null) });
      this.tlsServer.on("secureConnection", (s: tls.TLSSocket) => this.onSocket(s, peerOf(s)));
      this.tlsServer.on("tlsClientError", (e: Error, s: tls.TLSSocket) => {
        this.onRefused(peerOf(s), `encrypted handshake failed (${(e as NodeJS.ErrnoException).code ?? "error"}): the client does not know the shared secret`, "tls");
        s.destroy();
      });
    } else {
      this.tlsServer = null;
    }
  }

  /** A raw TCP connection: look at its first byte, then hand it on, wrapped or not, or refuse it. */
  accept(raw: net.Socket): void {
    const peer = peerOf(raw);
    raw.once("error", () => raw.destroy());
    raw.once("data", (first: Buffer) => {
      raw.pause();
      raw.unshift(first);
      const isTls = first[0] === 0x16;
      if (isTls && this.tlsServer) {
        this.tlsServer.emit("connection", raw);
      } else if (isTls) {
        this.onRefused(peer, this.sec.secret ? "a client tried an encrypted link, but this worker runs with --no-encryption" : "a client tried an encrypted link (it has a shared secret), but this worker has none", "plain");
        raw.destroy();
      } else {
        raw.resume();
        this.onSocket(raw, peer);
      }
    });
  }

  close(): void {
    this.tlsServer?.close();
  }
}

function peerOf(s: net.Socket): string {
  return `${s.remoteAddress ?? "?"}:${s.remotePort ?? "?"}`;
}
