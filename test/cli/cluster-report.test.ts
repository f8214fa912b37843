/**
 * The report of a cluster run, as bin/client prints it: the same text as one machine, one decode
 * speed, and the memory of the whole model.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { runCli, spawnCli, type CliResult, type SpawnedCli } from "../helpers/cli.js";
import { tempDir, tinyModel, tinyShape } from "../helpers/models.js";

const workers: SpawnedCli[] = [];
after(async () => {
  for (const w of workers) w.child.kill("SIGTERM");
  await Promise.all(workers.map((w) => w.done));
});

let runs: Promise<{ single: CliResult; cluster: CliResult }> | undefined;

/** The same greedy run on one machine and on two loopback workers (started once for all tests). */
function bothRuns(): Promise<{ single: CliResult; cluster: CliResult }> {
  runs ??= (async () => {
    const dir = tinyModel(tinyShape({ nLayers: 2 }));
    const cache = tempDir("llamesh-cache-");
    for (const i of [0, 1]) {
      workers.push(spawnCli("worker", ["0", "--host", "127.0.0.1", "-t", "1", "--cache-dir", path.join(cache, String(i))], { env: { LLAMESH_WORKER_GMAC: "1" } }));
    }
    const ports = await Promise.all(workers.map(async (w) => (await w.waitFor(/listening 127\.0\.0\.1:(\d+)/))[1]!));
    const args = [dir, "-n", "20", "-i", "a prompt of several tokens, batched", "--temp", "0", "-t", "1"];
    const single = await runCli("client", args);
    const cluster = await runCli("client", [...args, "--workers", ports.map((p) => `127.0.0.1:${p}`).join(","), "--perf-csv", path.join(cache, "perf.csv")]);
    assert.equal(single.code, 0, single.stderr);
    assert.equal(cluster.code, 0, cluster.stderr);
    return { single, cluster };
  })();
  return runs;
}

test("a cluster run's text is the single machine's (greedy)", async () => {
  const { single, cluster } = await bothRuns();
  assert.equal(cluster.stdout, single.stdout);
});

test(
  "a cluster run reports one decode speed",
  async () => {
    const { cluster } = await bothRuns();
    const speeds = cluster.stderr.split("\n").filter((l) => / tok\/s/.test(l) && !l.startsWith("Prompt:"));
    assert.equal(speeds.length, 1, speeds.join("\n"));
  },
);

test(
  "a cluster run's memory report covers the whole model, per node",
  async () => {
    const { single, cluster } = await bothRuns();
    const params = (r: CliResult): string => /parameters: ([\d.]+) M/.exec(r.stderr)?.[1] ?? "none";
    assert.equal(params(cluster), params(single));
    // and each node's part: the client's, then one line per worker with its weights + KV cache
    const per = cluster.stderr.split("Memory per node (weights + KV cache):\n")[1]?.split("\n") ?? [];
    assert.match(per[0] ?? "", /^  client \(embedding, norms\): [\d.]+ [KMG]?B$/, cluster.stderr);
    const workerLines = per.slice(1).filter((l) => /^  \S+: [\d.]+ [KMG]?B \+ [\d.]+ [KMG]?B$/.test(l));
    assert.equal(workerLines.length, 2, per.join("\n"));
  },
);
