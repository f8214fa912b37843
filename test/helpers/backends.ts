/** The kernel backends every engine test runs on: the TS reference, and WebAssembly SIMD where available. */
import type { KernelBackend } from "../../src/kernels/kernels.js";
import { ReferenceBackend } from "../../src/kernels/reference.js";
import { createBackend } from "../../src/kernels/backend.js";
import { after } from "node:test";

export async function testBackends(): Promise<KernelBackend[]> {
  const list: KernelBackend[] = [new ReferenceBackend()];
  const fast = await createBackend({ threads: 2 });
  if (!(fast instanceof ReferenceBackend)) list.push(fast);
  after(() => Promise.all(list.map((b) => b.close())));
  return list;
}
