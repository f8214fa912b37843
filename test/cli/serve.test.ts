/** `llamesh serve` takes its port before it loads the model. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { spawnCli, runCli } from "../helpers/cli.js";
import { tinyModel, tinyShape } from "../helpers/models.js";

/** A TCP server on a free loopback port; `silent` ones accept connections and never answer. */
async function listen(): Promise<{ port: number; server: net.Server; sockets: net.Socket[] }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => void sockets.push(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as net.AddressInfo).port, server, sockets };
}

async function close(l: { server: net.Server; sockets: net.Socket[] }): Promise<void> {
  for (const s of l.sockets) s.destroy();
  await new Promise<void>((resolve) => l.server.close(() => resolve()));
}

test("a taken port is a one-line error before the model is even looked at", async () => {
  const taken = await listen();
  try {
    // the folder does not exist: an error about the port shows that the port came first
    const r = await runCli("llamesh", ["serve", "/nonexistent/model", "--port", String(taken.port)]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `error: llamesh serve: cannot listen on 127.0.0.1:${taken.port} (EADDRINUSE)\n`);
    const real = await runCli("llamesh", ["serve", tinyModel(tinyShape()), "--port", String(taken.port)]);
    assert.equal(real.code, 1);
    assert.doesNotMatch(real.stderr, /Processed|Loaded|Kernels/, "nothing loaded");
  } finally {
    await close(taken);
  }
});

test("while the model loads the port answers 503; once loaded, 'listening' and the API", async () => {
  // a "worker" that accepts the connection and never answers keeps the loading going
  const silent = await listen();
  const free = await listen();
  const port = free.port;
  await close(free);
  const loading = spawnCli("llamesh", ["serve", tinyModel(tinyShape()), "--port", String(port), "--workers", `127.0.0.1:${silent.port}`]);
  try {
    let res: Response | undefined;
    for (let i = 0; i < 100 && !res; i++) {
      res = await fetch(`http://127.0.0.1:${port}/health`).catch(async () => {
        await new Promise((r) => setTimeout(r, 50));
        return undefined;
      });
    }
    assert.ok(res, `serve never listened: ${loading.stderr()}`);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), { error: { message: "the model is still loading", type: "unavailable_error" } });
    assert.equal(loading.stdout(), "", "'listening' only once requests are served");
  } finally {
    loading.child.kill("SIGKILL");
    await loading.done;
    await close(silent);
  }

  const served = spawnCli("llamesh", ["serve", tinyModel(tinyShape()), "--port", "0", "-t", "1"]);
  try {
    const [, p] = await served.waitFor(/^listening 127\.0\.0\.1:(\d+)\n/);
    assert.match(served.stderr(), new RegExp(`Serving model on http://127\\.0\\.0\\.1:${p}/v1 `));
    const health = await fetch(`http://127.0.0.1:${p}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, "ok");
  } finally {
    served.child.kill("SIGTERM");
    assert.equal((await served.done).code, 0);
  }
});
