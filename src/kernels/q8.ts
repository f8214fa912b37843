/**
 * The Q8_0 block format (the engine's own weight and activation format).
 *
 * Q8_0 is byte-for-byte the llama.cpp / GGUF layout, so GGUF files load without repacking:
 * a block holds 32 weights as one little-endian f16 scale `d` followed by 32 int8 `q`,
 * 34 bytes in all, and weight i of the block is d * q[i]. A row of n values (n a multiple
 * of 32) is n/32 consecutive blocks.
 */
export const QK8_0 = 32;
export const Q8_0_BLOCK_BYTES = 34;

/** Bytes of one Q8_0 row of `n` values (n must be a multiple of 32). */
export function q8RowBytes(n: number): number {
  return (n / QK8_0) * Q8_0_BLOCK_BYTES;
}

/** Round up to the next multiple of 32: dimensions that are not get zero padding. */
export function pad32(n: number): number {
  return Math.ceil(n / QK8_0) * QK8_0;
}
