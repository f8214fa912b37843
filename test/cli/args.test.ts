/** The flag parser: values typed from the specs, llama.cpp's spellings, --help over bad arguments. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseArgs, usageText, type FlagSpecs } from "../../src/cli/args.js";
import { runFlags } from "../../src/cli/run.js";
import { LlameshError } from "../../src/core/errors.js";

const specs = {
  count: { type: "int", aliases: ["-n"], min: 0, max: 10, default: 3, help: "how many" },
  rate: { type: "number", min: 0, help: "how fast" },
  name: { type: "string", help: "what" },
  mode: { type: "string", choices: ["fast", "slow"], help: "how" },
  mode2: { type: "string", choices: ["a", "b", "c"], default: "a", help: "which" },
  quiet: { type: "boolean", help: "say less" },
} as const satisfies FlagSpecs;

test("values are typed from the specs: defaults and booleans are always there, others may be undefined", () => {
  const { flags, positionals, help } = parseArgs(["x", "--rate", "1.5", "-n", "7", "--mode=slow", "y"], specs, "t");
  // compile-time: these assignments need no cast, and the ones marked must not compile
  const count: number = flags.count;
  const rate: number | undefined = flags.rate;
  const mode: "fast" | "slow" | undefined = flags.mode;
  const mode2: "a" | "b" | "c" = flags.mode2;
  const quiet: boolean = flags.quiet;
  // @ts-expect-error a flag without a default may be absent
  const name: string = flags.name;
  // @ts-expect-error an int is a number, not a string
  const wrong: string = flags.count;
  void wrong;
  assert.deepEqual({ count, rate, mode, mode2, quiet, name }, { count: 7, rate: 1.5, mode: "slow", mode2: "a", quiet: false, name: undefined });
  assert.deepEqual(positionals, ["x", "y"]);
  assert.equal(help, false);
  assert.equal(parseArgs([], specs, "t").flags.count, 3, "the default");
  assert.equal(parseArgs(["--quiet"], specs, "t").flags.quiet, true);
});

test("bad values keep their one-line messages; choices are checked", () => {
  const bad = (argv: string[], re: RegExp): void =>
    assert.throws(() => parseArgs(argv, specs, "t"), (e: unknown) => e instanceof LlameshError && re.test(e.message));
  bad(["-n", "11"], /^t: -n "11" is not valid, expected an integer between 0 and 10 \(how many\)$/);
  bad(["--rate", "-1"], /^t: --rate "-1" is not valid, expected a number >= 0 \(how fast\)$/);
  bad(["--mode", "medium"], /^t: --mode "medium" is not valid, expected fast or slow$/);
  bad(["--mode2", "d"], /^t: --mode2 "d" is not valid, expected a, b or c$/);
  bad(["--name"], /^t: --name needs a value \(what\)$/);
  bad(["--bogus"], /^t: unknown option --bogus \(known: --count, --rate, --name, --mode, --mode2, --quiet, --help\)$/);
});

test("--help and -h are known to every command and win over bad arguments", () => {
  assert.equal(parseArgs(["--help"], specs, "t").help, true);
  assert.equal(parseArgs(["-n", "abc", "--bogus", "-h"], specs, "t").help, true);
  // a value that looks like -h is still a value
  const r = parseArgs(["--name", "-h"], specs, "t");
  assert.equal(r.help, false);
  assert.equal(r.flags.name, "-h");
});

test("llama.cpp's spellings: -t is --threads, --temp is --temperature, -c is --max-seq-len", () => {
  const { flags } = parseArgs(["-t", "3", "--temp", "0.5", "-c", "128", "-p", "hi", "-s", "9"], runFlags, "client");
  assert.equal(flags.threads, 3);
  assert.equal(flags.temperature, 0.5);
  assert.equal(flags["max-seq-len"], 128);
  assert.equal(flags.prompt, "hi");
  assert.equal(flags.seed, 9);
  // -t is not the temperature: a fractional -t is a bad thread count
  assert.throws(() => parseArgs(["-t", "0.7"], runFlags, "client"), /-t "0\.7" is not valid, expected an integer between 1 and 256 \(compute threads\)/);
  assert.equal(parseArgs([], runFlags, "client").flags.temperature, 0.8, "the default temperature");
});

test("usage names the command actually run and aligns its continuation lines", () => {
  assert.equal(usageText("client", ["<a> [-x]", "[-y]"], "  text"), "usage: client <a> [-x]\n              [-y]\n  text");
  assert.equal(usageText("llamesh run", ["<a> [-x]", "[-y]"], "  text"), "usage: llamesh run <a> [-x]\n                   [-y]\n  text");
});
