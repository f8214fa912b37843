/** A worker's log names the peer it answered, even when that peer has already gone. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { encodeFrame, MSG } from "../../src/cluster/protocol.js";
import { tempDir } from "../helpers/models.js";
import { spawnWorker } from "./helpers.js";

test("an error answered to a peer that has gone is logged with its address, never undefined", async () => {
  const w = await spawnWorker(["--cache-dir", tempDir("llamesh-cache-")]);
  // a request the worker refuses, from a connection that closes before the answer can be written
  await new Promise<void>((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port: w.port }, () => {
      s.end(encodeFrame(MSG.STEP, 1, Buffer.alloc(16)));
      s.destroy();
      resolve();
    });
    s.once("error", reject);
  });
  const deadline = Date.now() + 5000;
  while (!/error sent to/.test(w.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await w.stop();
  assert.match(w.stderr(), /worker: error sent to 127\.0\.0\.1:\d+: STEP: no handshake yet/);
  assert.doesNotMatch(w.stderr(), /undefined/);
});
