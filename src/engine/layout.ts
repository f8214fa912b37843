/**
 * Arenas sized from what goes in them. A layout is a function that allocates a component's buffers
 * (weights, KV cache, activations) from an Allocator; it runs twice: once on an ArenaPlan, which
 * only counts, to size the arena exactly, and once on the real Arena, in the same order, so the
 * same offsets come out. The kernel backend's own scratch (backend.scratchBytes, taken by bind()
 * right after the arena is created) is part of the plan. Nothing is guessed, and an arena that
 * would exceed the wasm32 limit is a clear error before any memory is reserved.
 */
import { Arena, ARENA_RESERVED, MAX_ARENA_BYTES } from "../kernels/arena.js";
import type { KernelBackend, Kernels, Ptr } from "../kernels/kernels.js";
import { LlameshError } from "../core/errors.js";

/** Hands out aligned byte ranges: an Arena, or an ArenaPlan that only counts them. */
export interface Allocator {
  alloc(n: number, align?: number): Ptr;
}

/** Counts what a layout allocates, with the Arena's alignment rules. */
export class ArenaPlan implements Allocator {
  private top = ARENA_RESERVED;

  alloc(n: number, align = 64): Ptr {
    const ptr = Math.ceil(this.top / align) * align;
    this.top = ptr + n;
    return ptr;
  }

  /** The size to give `new Arena(size)` for everything allocated so far. */
  get arenaSize(): number {
    return this.top - ARENA_RESERVED;
  }
}

/** Bytes an arena needs for `layout` (with the backend's scratch first), as new Arena() takes them. */
export function plannedSize(backend: KernelBackend, layout: (a: Allocator) => unknown): number {
  const plan = new ArenaPlan();
  plan.alloc(backend.scratchBytes, 64);
  layout(plan);
  return plan.arenaSize;
}

/**
 * An arena exactly the size `layout` needs, bound to the backend, with the layout applied to it.
 * `what` names the component in the error when it cannot fit one wasm32 memory.
 */
export function plannedArena<T>(backend: KernelBackend, label: string, what: string, layout: (a: Allocator) => T, maxBytes = MAX_ARENA_BYTES): { arena: Arena; k: Kernels; value: T } {
  const size = plannedSize(backend, layout);
  if (size > maxBytes) {
    throw new LlameshError(`${what} needs ${(size / 1e9).toFixed(2)} GB in one memory, over the ${(maxBytes / 1e9).toFixed(2)} GB limit of an arena: spread the model over more nodes`);
  }
  const arena = new Arena(size, label);
  const k = backend.bind(arena);
  return { arena, k, value: layout(arena) };
}
