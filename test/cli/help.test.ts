/**
 * --help everywhere, naming the command actually run; a missing command is a usage error (status
 * 1, usage on stderr), as git and llama.cpp's tools do; asking for help is not (status 0, stdout).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { runCli, type Bin } from "../helpers/cli.js";

async function expectUsage(bin: Bin, args: string[], head: RegExp): Promise<void> {
  const r = await runCli(bin, args);
  assert.equal(r.code, 0, `${bin} ${args.join(" ")}: ${r.stderr}`);
  assert.match(r.stdout, head, `${bin} ${args.join(" ")}`);
  assert.equal(r.stderr, "");
}

test("--help and -h name the command that was run", async () => {
  await Promise.all([
    expectUsage("client", ["--help"], /^usage: client <model-dir> /),
    expectUsage("client", ["-h"], /^usage: client <model-dir> /),
    expectUsage("llamesh", ["run", "--help"], /^usage: llamesh run <model-dir> /),
    expectUsage("llamesh", ["serve", "--help"], /^usage: llamesh serve <model-dir> /),
    expectUsage("llamesh", ["bench", "--help"], /^usage: llamesh bench gmac /),
    expectUsage("llamesh", ["bench", "gmac", "-h"], /^usage: llamesh bench gmac /),
    expectUsage("worker", ["--help"], /^usage: worker <port> /),
    expectUsage("llamesh", ["--help"], /^usage: llamesh <command> /),
    expectUsage("llamesh", ["help"], /^usage: llamesh <command> /),
    expectUsage("llamesh", ["help", "run"], /^usage: llamesh run <model-dir> /),
  ]);
});

test("--help wins over other arguments, even bad ones", async () => {
  await expectUsage("client", ["/nonexistent", "-n", "abc", "--help"], /^usage: client /);
  await expectUsage("llamesh", ["serve", "--port", "70000", "-h"], /^usage: llamesh serve /);
});

test("the usage says -t is --threads and --temp is --temperature", async () => {
  const r = await runCli("client", ["--help"]);
  assert.match(r.stdout, /-t is --threads, --temp is --temperature/);
  assert.match(r.stdout, /\[-t\|--threads N\]/);
});

test("llamesh without a command: usage on stderr, status 1", async () => {
  const r = await runCli("llamesh", []);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^usage: llamesh <command> /);
  const bench = await runCli("llamesh", ["bench"]);
  assert.equal(bench.code, 1);
  assert.match(bench.stderr, /^usage: llamesh bench gmac /);
  const unknown = await runCli("llamesh", ["frobnicate"]);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr, 'error: llamesh: unknown command "frobnicate" (expected run, serve, tokenize or bench; see llamesh --help)\n');
});

test("llamesh tokenize --help reaches tokenize", async () => {
  await expectUsage("llamesh", ["tokenize", "--help"], /^usage: llamesh tokenize /);
});
