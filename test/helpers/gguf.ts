/** Shared by the GGUF tests: one-line error checks and byte positions in a GGUF file's tensor infos. */
import assert from "node:assert/strict";
import { LlameshError } from "../../src/core/errors.js";

/** `fn` throws a one-line LlameshError whose message holds every fragment. */
export function assertLlamesh(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected LlameshError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    assert.ok(!e.message.includes("\n"), "one-line message");
    return true;
  });
}

/** Byte position of the fields after a tensor's name in the tensor infos. */
export function tensorInfoAt(b: Buffer, name: string): { nDims: number; typeAt: number; offsetAt: number } {
  const needle = Buffer.concat([Buffer.from([name.length, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(name)]);
  const p = b.indexOf(needle);
  assert.ok(p > 0, `tensor info ${name} not found`);
  const at = p + needle.length;
  const nDims = b.readUInt32LE(at);
  const typeAt = at + 4 + 8 * nDims;
  return { nDims, typeAt, offsetAt: typeAt + 4 };
}
