/**
 * An arena is one WebAssembly.Memory holding the tensors of a group of layers (weights, KV cache)
 * plus scratch activations. Kernels address everything in it by byte offset ("pointer").
 *
 * Why arenas: a wasm32 memory tops out at 4 GiB, and a 7B model in Q8_0 is 7.2 GB, so the
 * model is spread over several arenas, each with its own instance of the same compiled kernels.
 * The memory is shared so worker threads can run kernels on it in parallel. Its size is fixed at
 * creation (the loader plans it exactly), so views never go stale from growth.
 */
export const WASM_PAGE = 65536;
/** The first bytes of every arena belong to the kernel module (its stack and static data). */
export const ARENA_RESERVED = 65536;
/** Largest arena we create: under the 4 GiB wasm32 limit with room to spare. */
export const MAX_ARENA_BYTES = 3 * 1024 * 1024 * 1024;

export class Arena {
  readonly memory: WebAssembly.Memory;
  readonly bytes: Uint8Array;
  readonly size: number;
  private top = ARENA_RESERVED;

  constructor(size: number, readonly label: string) {
    const pages = Math.ceil((size + ARENA_RESERVED) / WASM_PAGE);
    if (pages * WASM_PAGE > 4 * 1024 * 1024 * 1024 - WASM_PAGE) {
      throw new RangeError(`arena ${label}: ${size} bytes exceed the 4 GiB wasm32 limit`);
    }
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    this.size = pages * WASM_PAGE;
    this.bytes = new Uint8Array(this.memory.buffer);
  }

  /** Bytes handed out so far (including the reserved head). */
  get used(): number {
    return this.top;
  }

  /** Reserve `n` bytes aligned to `align` (64 by default: one cache line). Memory starts zeroed. */
  alloc(n: number, align = 64): number {
    const ptr = Math.ceil(this.top / align) * align;
    if (ptr + n > this.size) {
      throw new RangeError(`arena ${this.label}: out of space (need ${n} bytes at ${ptr}, size ${this.size})`);
    }
    this.top = ptr + n;
    return ptr;
  }

  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  u32(ptr: number, n: number): Uint32Array {
    return new Uint32Array(this.memory.buffer, ptr, n);
  }

  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }

  u8(ptr: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }
}
