/**
 * Encrypted links (secure.ts): with a shared secret every link is TLS keyed from it. A recording
 * proxy in front of a worker (so the client's link and the other worker's mesh link to it pass
 * through) sees neither the prompt, nor the generated text (any of its words), nor a single
 * plaintext frame (no "LMSH" magic, no JSON of the handshake); the same run with --no-encryption on both sides shows
 * all of them, so the test can fail. A side without the secret, or with encryption off against
 * one with it on, is refused with a one-line error on both sides.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { loadSecret } from "../../src/cluster/auth.js";
import { LlameshError } from "../../src/core/errors.js";
import { TextStream } from "../../src/engine/text-stream.js";
import { greedyTokens } from "../../src/engine/generate.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker, type SpawnedWorker } from "./helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());
const quiet = (): void => undefined;

/** A TCP forwarder to `port` that keeps every byte it passes, both ways. */
function recordingProxy(port: number): Promise<{ port: number; bytes: () => Buffer; close: () => void }> {
  return new Promise((resolve) => {
    const seen: Buffer[] = [];
    const sockets: net.Socket[] = [];
    const srv = net.createServer((inbound) => {
      const out = net.connect({ host: "127.0.0.1", port });
      sockets.push(inbound, out);
      inbound.on("data", (d: Buffer) => (seen.push(d), out.write(d)));
      out.on("data", (d: Buffer) => (seen.push(d), inbound.write(d)));
      const end = (): void => void (inbound.destroy(), out.destroy());
      inbound.on("error", end).on("close", end);
      out.on("error", end).on("close", end);
    });
    srv.listen(0, "127.0.0.1", () => resolve({
      port: (srv.address() as net.AddressInfo).port,
      bytes: () => Buffer.concat(seen),
      close: () => { sockets.forEach((x) => x.destroy()); srv.close(); },
    }));
  });
}

async function greedyText(m: LoadedModel, prompt: string, n: number): Promise<{ text: string; tokens: number[] }> {
  const tokens = await greedyTokens(m, m.tokenizer.encode(prompt, true), n);
  const s = new TextStream(m.tokenizer);
  return { text: tokens.map((t) => s.push(t)).join("") + s.end(), tokens };
}

test("encrypted links: a proxy sees no prompt, no generated word, no plaintext frame; --no-encryption would show them", { skip: skipUnless(STORIES) }, async () => {
  const dir = tempDir("llamesh-enc-");
  fs.writeFileSync(`${dir}/secret`, "0123456789abcdef0123456789abcdef\n");
  const secret = loadSecret(`${dir}/secret`)!;
  const prompt = "Once upon a time, in a forest";
  const single = await greedyText(await openModel(STORIES, { backend, maxSeqLen: 96 }), prompt, 30);
  for (const encrypt of [true, false]) {
    const args = ["--cache-dir", tempDir("llamesh-cache-"), "--secret-file", `${dir}/secret`, ...(encrypt ? [] : ["--no-encryption"])];
    const ws: SpawnedWorker[] = await Promise.all([0, 1].map(() => spawnWorker(args)));
    const proxy = await recordingProxy(ws[0]!.port);
    try {
      const m = await openDistributedModel(STORIES, {
        workers: [{ host: "127.0.0.1", port: proxy.port }, { host: "127.0.0.1", port: ws[1]!.port }], secret, encrypt, topology: "mesh", backend, maxSeqLen: 96, log: quiet,
      });
      const got = await greedyText(m, prompt, 30);
      await m.close();
      assert.deepEqual(got.tokens, single.tokens, "the same text through the encrypted cluster");
      const bytes = proxy.bytes();
      assert.ok(bytes.length > 100_000, `the proxy carried the session (${bytes.length} bytes)`);
      const words = [prompt, "forest", ...got.text.split(/\W+/).filter((w) => w.length >= 5)];
      const leaks = [
        ...words.filter((w) => bytes.includes(Buffer.from(w))),
        ...(bytes.includes(Buffer.from("LMSH")) ? ["LMSH frames"] : []),
        ...(bytes.includes(Buffer.from('"fingerprint"')) ? ["the HELLO's JSON"] : []),
      ];
      if (encrypt) assert.deepEqual(leaks, [], "nothing readable on the wire");
      else assert.ok(leaks.includes("LMSH frames") && leaks.includes("the HELLO's JSON"), `plaintext is visible without encryption: ${leaks.join(", ")}`);
    } finally {
      proxy.close();
      await Promise.all(ws.map((w) => w.stop()));
    }
  }
});

test("a side without the secret, or with encryption off against one with it on: a one-line error on both sides", { skip: skipUnless(STORIES) }, async () => {
  const dir = tempDir("llamesh-enc-");
  fs.writeFileSync(`${dir}/secret`, "0123456789abcdef0123456789abcdef\n");
  const secret = loadSecret(`${dir}/secret`)!;
  const encrypted = await spawnWorker(["--cache-dir", tempDir("llamesh-cache-"), "--secret-file", `${dir}/secret`]);
  const plainAuth = await spawnWorker(["--cache-dir", tempDir("llamesh-cache-"), "--secret-file", `${dir}/secret`, "--no-encryption"]);
  const open = await spawnWorker(["--cache-dir", tempDir("llamesh-cache-")]);
  const at = (w: SpawnedWorker) => [{ host: "127.0.0.1", port: w.port }];
  const refused = async (w: SpawnedWorker, opts: { secret: Buffer | null; encrypt?: boolean }, client: RegExp, worker: RegExp): Promise<void> => {
    await assert.rejects(() => openDistributedModel(STORIES, { workers: at(w), ...opts, backend, maxSeqLen: 32, log: quiet, connectTimeoutMs: 5000 }),
      (e: unknown) => e instanceof LlameshError && client.test(e.message) && !e.message.includes("\n"));
    const deadline = Date.now() + 3000;
    while (!worker.test(w.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(w.stderr(), worker);
  };
  // no secret against an encrypting worker
  await refused(encrypted, { secret: null }, new RegExp(`127\\.0\\.0\\.1:${encrypted.port} requires a shared secret`), /error sent to 127\.0\.0\.1:\d+: this worker encrypts its links/);
  // the secret but encryption off, against an encrypting worker
  await refused(encrypted, { secret, encrypt: false }, /encrypts its links: this side must too \(drop --no-encryption\)/, /error sent to 127\.0\.0\.1:\d+: this worker encrypts its links/);
  // encrypting against a worker with encryption off, and against one without a secret
  await refused(plainAuth, { secret }, /does not ask for the shared secret or runs with encryption off/, /refused: a client tried an encrypted link, but this worker runs with --no-encryption/);
  await refused(open, { secret }, /does not ask for the shared secret or runs with encryption off/, /refused: a client tried an encrypted link \(it has a shared secret\), but this worker has none/);
  // the wrong secret: the encrypted handshake fails on both sides
  await refused(encrypted, { secret: Buffer.from("fedcba9876543210fedcba9876543210") }, /does not know the shared secret/, /refused: encrypted handshake failed/);
  await Promise.all([encrypted, plainAuth, open].map((w) => w.stop()));
});
