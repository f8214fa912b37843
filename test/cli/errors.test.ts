/**
 * Every bad input gets one line naming the file / tensor / flag and what was expected, a
 * non-zero exit code, and no stack trace.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { runCommand } from "../../src/cli/run.js";
import { LlameshError } from "../../src/core/errors.js";
import { runCli } from "../helpers/cli.js";
import { tempDir, tinyModel, tinyShape } from "../helpers/models.js";

/** A fresh tiny F32 model folder (one file) to break. */
function model(): string {
  return tinyModel(tinyShape({ nLayers: 2 }), "F32", 1);
}

function readHeader(file: string): { header: Record<string, unknown>; data: Buffer } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, unknown>, data: buf.subarray(8 + n) };
}

function writeHeader(file: string, header: Record<string, unknown>, data: Buffer): void {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
}

function editTensor(dir: string, name: string, edit: (entry: Record<string, unknown>) => void): void {
  const file = path.join(dir, "model.safetensors");
  const { header, data } = readHeader(file);
  edit(header[name] as Record<string, unknown>);
  writeHeader(file, header, data);
}

async function expectError(args: string[], pattern: RegExp): Promise<void> {
  await assert.rejects(runCommand(args, "client"), (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected a LlameshError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const run = (dir: string, ...extra: string[]) => [dir, "-n", "2", "-i", "hi", ...extra];
const T0 = "model.layers.0.self_attn.q_proj.weight";

test("missing folder", async () => {
  await expectError(run("/nonexistent/llama"), /\/nonexistent\/llama: model folder not found/);
});

test("folder without config.json", async () => {
  const dir = tempDir();
  await expectError(run(dir), /missing config\.json/);
});

test("folder with only PyTorch weights", async () => {
  const dir = model();
  fs.rmSync(path.join(dir, "model.safetensors"));
  fs.writeFileSync(path.join(dir, "pytorch_model.bin"), "x");
  await expectError(run(dir), /weights only in pytorch_model\.bin.*expected \*\.safetensors/);
});

test("folder without tokenizer files", async () => {
  const dir = model();
  fs.rmSync(path.join(dir, "tokenizer.json"));
  await expectError(run(dir), /no tokenizer\.json or tokenizer\.model/);
});

test("config that is not a Llama", async () => {
  const dir = model();
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  cfg["model_type"] = "gpt2";
  cfg["architectures"] = ["GPT2LMHeadModel"];
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg));
  await expectError(run(dir), /config\.json: model_type "gpt2".*not a model llamesh runs \(supported: llama .*qwen3/);
});

test("config with a bad field", async () => {
  const dir = model();
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  cfg["num_hidden_layers"] = "two";
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg));
  await expectError(run(dir), /config\.json: "num_hidden_layers" is "two", expected a positive integer/);
});

test("truncated safetensors file", async () => {
  const dir = model();
  const file = path.join(dir, "model.safetensors");
  fs.truncateSync(file, fs.statSync(file).size - 1000);
  await expectError(run(dir), /model\.safetensors: tensor .* lie outside the file .*truncated/);
});

test("bad header length", async () => {
  const dir = model();
  const file = path.join(dir, "model.safetensors");
  const buf = fs.readFileSync(file);
  buf.writeBigUInt64LE(BigInt(buf.length * 2), 0);
  fs.writeFileSync(file, buf);
  await expectError(run(dir), /model\.safetensors: bad safetensors header length \d+ \(file is \d+ bytes/);
});

test("header that is not JSON", async () => {
  const dir = model();
  const file = path.join(dir, "model.safetensors");
  const buf = fs.readFileSync(file);
  buf.write("#", 8);
  fs.writeFileSync(file, buf);
  await expectError(run(dir), /model\.safetensors: safetensors header is not valid JSON/);
});

test("unknown dtype", async () => {
  const dir = model();
  editTensor(dir, T0, (e) => (e["dtype"] = "I64"));
  await expectError(run(dir), new RegExp(`tensor ${T0} has dtype "I64", expected F32, F16 or BF16`));
});

test("shape and size that disagree", async () => {
  const dir = model();
  editTensor(dir, T0, (e) => (e["shape"] = [64, 65]));
  await expectError(run(dir), new RegExp(`tensor ${T0} has 16384 bytes of data, but shape \\[64,65\\] in F32 needs 16640`));
});

test("missing tensor", async () => {
  const dir = model();
  const file = path.join(dir, "model.safetensors");
  const { header, data } = readHeader(file);
  delete header["model.layers.1.mlp.up_proj.weight"];
  writeHeader(file, header, data);
  await expectError(run(dir), /missing tensor model\.layers\.1\.mlp\.up_proj\.weight \(expected shape \[100, 64\]\)/);
});

test("tensor with the wrong shape", async () => {
  const dir = model();
  editTensor(dir, T0, (e) => {
    e["shape"] = [32, 128];
  });
  await expectError(run(dir), new RegExp(`tensor ${T0} has shape \\[32, 128\\], expected \\[64, 64\\]`));
});

test("shard listed in the index but missing", async () => {
  const dir = tinyModel(tinyShape(), "BF16", 2);
  fs.rmSync(path.join(dir, "model-00002-of-00002.safetensors"));
  await expectError(run(dir), /model-00002-of-00002\.safetensors: file not found/);
});

test("prompt longer than the context", async () => {
  const dir = model();
  await expectError([dir, "-n", "2", "-i", "a long prompt ".repeat(10), "--max-seq-len", "16"], /the prompt is \d+ tokens but the context holds 16 \(--max-seq-len\)/);
});

test("bad flag values", async () => {
  const dir = model();
  await expectError([dir, "-n", "abc", "-i", "x"], /-n "abc" is not valid, expected an integer between 0 and 1000000/);
  await expectError([dir, "-n", "5", "-i", "x", "--temperature", "-1"], /--temperature "-1" is not valid, expected a number between 0 and 100/);
  await expectError([dir, "-n", "5", "-i", "x", "--top-p", "1.5"], /--top-p "1.5" is not valid/);
  await expectError([dir, "-n", "5", "-i", "x", "--threads", "0"], /--threads "0" is not valid, expected an integer between 1 and 256/);
  await expectError([dir, "-n", "5", "-i", "x", "--frobnicate"], /unknown option --frobnicate/);
  await expectError([dir, "-n", "5"], /missing -i <prompt>/);
  await expectError([dir, "-n", "5", "-i"], /-i needs a value/);
  await expectError(["-n", "5", "-i", "x"], /expected one model folder, got none/);
  await expectError([dir, "-n", "5", "-i", "x", "--workers", "127.0.0.1:1", "--topology", "ring"], /--topology "ring" is not valid, expected auto, mesh, scatter or star/);
  await expectError([dir, "-n", "5", "-i", "x", "--topology", "star"], /--topology needs --workers/);
  await expectError([dir, "-n", "5", "-i", "x", "--step-timeout", "5"], /--step-timeout needs --workers/);
  await expectError([dir, "-n", "5", "-i", "x", "--workers", "127.0.0.1:1", "--step-timeout", "0"], /--step-timeout "0" is not valid/);
});

test("the executable prints one line, exits 1, and shows no stack trace", async () => {
  const r = await runCli("client", ["/nonexistent/llama", "-n", "2", "-i", "x"]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "error: /nonexistent/llama: model folder not found\n");
  assert.equal(r.stdout, "");
  const r2 = await runCli("client", [model(), "-n", "2", "-i", "x"], { OMP_NUM_THREADS: "many" });
  assert.equal(r2.code, 1);
  assert.equal(r2.stderr, 'error: OMP_NUM_THREADS="many" is not valid, expected an integer between 1 and 256\n');
});
