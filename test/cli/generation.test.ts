/**
 * bin/client as llama.cpp users expect it: Ctrl-C stops with a report, stdout is exactly the
 * model's text, the prompt may come from stdin or a file, a context past the trained one warns.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { runCommand, type RunIo } from "../../src/cli/run.js";
import { LlameshError } from "../../src/core/errors.js";
import { runCli, spawnCli } from "../helpers/cli.js";
import { STORIES, skipUnless, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

/** Enough tokens that a Ctrl-C sent once the first text is out arrives long before the end. */
const LONG = [STORIES, "-n", "5000", "-c", "8192", "-i", "Once upon a time", "--temp", "0", "-t", "1"];

test("Ctrl-C: the report with 'stopped: interrupted' and the speed lines, status 130", { skip: skipUnless(STORIES) }, async () => {
  const c = spawnCli("client", LONG);
  await c.waitFor(/\S/);
  c.child.kill("SIGINT");
  const r = await c.done;
  assert.equal(r.code, 130, r.stderr);
  const m = /Generated: (\d+) tokens \(stopped: interrupted\)\nSpeed: [\d.]+ tok\/s, [\d.]+ ms\/token\nGMAC: [\d.]+\n$/.exec(r.stderr);
  assert.ok(m, r.stderr);
  assert.ok(Number(m[1]) >= 1 && Number(m[1]) < 5000, `generated ${m[1]} tokens`);
  assert.match(r.stderr, /Prompt: 5 tokens in [\d.]+ ms/);
  assert.ok(r.stdout.length > 0);
  // stdout is piped: exactly the text of the tokens it reports, no newline the model did not write
  // (the same command with -n that count: greedy, so the same tokens; the model may itself have
  // just written a newline, so a trailing one alone proves nothing)
  const ref = await runCli("client", LONG.map((a, i) => (LONG[i - 1] === "-n" ? m[1]! : a)));
  assert.equal(ref.code, 0, ref.stderr);
  assert.equal(r.stdout, ref.stdout);
});

test("Ctrl-C before the generation started exits at once, status 130", async () => {
  // -i - waits for stdin, which stays open
  const c = spawnCli("client", [tinyModel(tinyShape()), "-n", "5", "-i", "-"], { keepStdinOpen: true });
  // on a terminal it says so once it waits for stdin; piped, it waits without a word: give it a
  // moment (500 ms was too short on a loaded machine: the SIGINT came before its handler)
  await new Promise((r) => setTimeout(r, 2000));
  c.child.kill("SIGINT");
  const r = await c.done;
  assert.equal(r.code, 130);
  assert.doesNotMatch(r.stderr, /Generated:/);
});

test("Ctrl-C with --workers: the report, the cluster report, the --perf-csv, status 130", { skip: skipUnless(STORIES) }, async () => {
  const cache = tempDir("llamesh-cache-");
  const workers = [0, 1].map((i) =>
    spawnCli("worker", ["0", "--host", "127.0.0.1", "-t", "1", "--cache-dir", path.join(cache, String(i))], { env: { LLAMESH_WORKER_GMAC: "1" } }),
  );
  try {
    const ports = await Promise.all(workers.map(async (w) => (await w.waitFor(/listening 127\.0\.0\.1:(\d+)/))[1]!));
    const csv = path.join(tempDir(), "perf.csv");
    const c = spawnCli("client", [...LONG, "-n", "2000", "--workers", ports.map((p) => `127.0.0.1:${p}`).join(","), "--perf-csv", csv]);
    await c.waitFor(/\S/);
    c.child.kill("SIGINT");
    const r = await c.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /Generated: \d+ tokens \(stopped: interrupted\)\nSpeed: /);
    assert.match(r.stderr, /^Cluster \(/m);
    const rows = fs.readFileSync(csv, "utf8").trimEnd().split("\n");
    assert.equal(rows[0], "pos,n_tokens,layer,operation,node,round_trip_ms,compute_ms,network_ms,bytes_sent,bytes_received");
    assert.ok(rows.length > 1, "rows for the tokens generated");
  } finally {
    for (const w of workers) w.child.kill("SIGTERM");
    await Promise.all(workers.map((w) => w.done));
  }
});

test("stdout is exactly the model's text: -n 0 prints nothing; a shorter run is a prefix of a longer one", { skip: skipUnless(STORIES) }, async () => {
  const run = (n: string) => runCli("client", [STORIES, "-n", n, "-i", "Once upon a time", "--temp", "0"]);
  const [zero, short, long] = await Promise.all([run("0"), run("20"), run("40")]);
  for (const r of [zero, short, long]) assert.equal(r.code, 0, r.stderr);
  assert.equal(zero.stdout, "");
  assert.ok(short.stdout.length > 0);
  // an added newline at the end of the short run would break this (unless the model wrote it)
  assert.ok(long.stdout.startsWith(short.stdout), `${JSON.stringify(short.stdout)} is not a prefix of ${JSON.stringify(long.stdout)}`);
});

/** Streams that record what was written; `tty` says whether stderr claims to be a terminal. */
function fakeIo(tty: boolean): RunIo & { out: string; err: string } {
  const io = {
    out: "",
    err: "",
    stdout: { write: (t: string) => (io.out += t), isTTY: tty },
    stderr: { write: (t: string) => (io.err += t), isTTY: tty },
    stdin: { async *[Symbol.asyncIterator]() {} },
  };
  return io;
}

test("on a terminal, a text without a final newline gets one on stderr (stdout stays exact)", async () => {
  const dir = tinyModel(tinyShape());
  const args = [dir, "-n", "6", "-i", "abc", "--temp", "0", "-t", "1"];
  const plain = fakeIo(false);
  const tty = fakeIo(true);
  assert.equal(await runCommand(args, "client", plain), 0);
  assert.equal(await runCommand(args, "client", tty), 0);
  assert.equal(tty.out, plain.out, "the same text on stdout either way");
  assert.ok(plain.out.length > 0);
  const before = (err: string): string => err.slice(0, err.search(/Prompt: \d+ tokens in/));
  assert.match(before(plain.err), /generating up to 6\n$/);
  assert.match(before(tty.err), plain.out.endsWith("\n") ? /generating up to 6\n$/ : /generating up to 6\n\n$/);
});

test("-i - reads the prompt from stdin, -f FILE from a file: the same as -i TEXT", async () => {
  const dir = tinyModel(tinyShape());
  const common = ["-n", "8", "--temp", "0", "-t", "1"];
  const file = path.join(tempDir(), "prompt.txt");
  fs.writeFileSync(file, "It was a dark night\n"); // the final newline is dropped, as llama.cpp does
  const [direct, stdin, viaFile, viaLongFlag] = await Promise.all([
    runCli("client", [dir, ...common, "-i", "It was a dark night"]),
    runCli("client", [dir, ...common, "-i", "-"], {}, 60_000, "It was a dark night\n"),
    runCli("client", [dir, ...common, "-f", file]),
    runCli("client", [dir, ...common, "--file", file]),
  ]);
  for (const r of [direct, stdin, viaFile, viaLongFlag]) {
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Prompt: 21 tokens; generating up to 8/); // BOS, "▁" and one piece per character
    assert.equal(r.stdout, direct.stdout);
  }
});

async function expectError(args: string[], pattern: RegExp): Promise<void> {
  await assert.rejects(runCommand(args, "client", fakeIo(false)), (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected a LlameshError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test("prompt sources: clear errors", async () => {
  const dir = tinyModel(tinyShape());
  const folder = tempDir();
  const binary = path.join(folder, "bad.txt");
  fs.writeFileSync(binary, Buffer.from([0x61, 0xff, 0xfe, 0x62]));
  await expectError([dir, "-f", "/nonexistent/prompt.txt"], /^client: --file \/nonexistent\/prompt\.txt: file not found/);
  await expectError([dir, "-f", folder], /--file .*: is a folder, expected a text file/);
  await expectError([dir, "-f", binary], /--file .*bad\.txt: not valid UTF-8 text/);
  await expectError([dir, "-i", "x", "-f", binary], /give the prompt once: -i <prompt> or -f <file>, not both/);
  await expectError([dir, "-n", "5"], /missing -i <prompt> \(the text to continue; -i - reads it from stdin, -f FILE from a file\)/);
});

test("--max-seq-len past the trained context: a warning, and it runs", async () => {
  const dir = tinyModel(tinyShape({ seqLen: 64 }));
  const [past, within] = await Promise.all([
    runCli("client", [dir, "-n", "2", "-i", "abc", "--max-seq-len", "128", "-t", "1"]),
    runCli("client", [dir, "-n", "2", "-i", "abc", "--max-seq-len", "64", "-t", "1"]),
  ]);
  assert.equal(past.code, 0, past.stderr);
  assert.match(past.stderr, /^Warning: --max-seq-len 128 is beyond the model's trained context \(64 tokens\): text past position 64 may degrade$/m);
  assert.match(past.stderr, /Generated: 2 tokens/);
  assert.equal(within.code, 0, within.stderr);
  assert.doesNotMatch(within.stderr, /Warning/);
});

test("an over-long prompt: raise --max-seq-len only up to the trained context", async () => {
  const dir = tinyModel(tinyShape({ seqLen: 64 }));
  // the byte tokenizer: BOS, "▁", then one piece per character
  await expectError([dir, "-n", "2", "-i", "x".repeat(29), "--max-seq-len", "16"],
    /^the prompt is 31 tokens but the context holds 16 \(--max-seq-len\): shorten the prompt or raise --max-seq-len \(up to 64, the model's trained context\)$/);
  await expectError([dir, "-n", "2", "-i", "x".repeat(79)],
    /^the prompt is 81 tokens but the context holds 64 \(--max-seq-len\): shorten the prompt: it does not fit in the model's trained context of 64 tokens either$/);
  await expectError([dir, "-n", "2", "-i", "x".repeat(79), "--max-seq-len", "32"], /it does not fit in the model's trained context of 64 tokens either$/);
});
