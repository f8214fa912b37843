/**
 * Q4_0x4 (formats.ts MatmulType): Q4_0 with each group of four rows interleaved block by block,
 * the layout the relaxed WebAssembly kernels repack a loaded Q4_0 matrix into (assembly/q4x4.ts).
 * Per group of four rows (4 x rb bytes, rb = nb x 18), for each block b, 72 bytes:
 *   0..7   the f16 scale d of rows 0, 1, 2, 3
 *   8..71  four 16-byte vectors V_0..V_3; bytes 4r..4r+3 of V_g are qs[4g..4g+3] of row r
 * These are the reference's two directions; the kernels are tested against them.
 */

const BLOCK = 18;
const GROUP_BLOCK = 72;

/**
 * The layout as a map: calls at(plain, packed) for every byte of rows [0, rows) of nb blocks, with
 * its offset in the Q4_0 rows and in Q4_0x4 (both from the matrix's start; rows % 4 == 0).
 */
function eachByte(rows: number, nb: number, at: (plain: number, packed: number) => void): void {
  if (rows % 4 !== 0) throw new RangeError(`Q4_0x4: ${rows} rows are not whole groups of four`);
  const rb = nb * BLOCK;
  for (let g = 0; g < rows; g += 4) {
    for (let b = 0; b < nb; b++) {
      const o = g * rb + b * GROUP_BLOCK;
      for (let r = 0; r < 4; r++) {
        const s = (g + r) * rb + b * BLOCK;
        at(s, o + 2 * r);
        at(s + 1, o + 2 * r + 1);
        for (let k = 0; k < 16; k++) at(s + 2 + k, o + 8 + 16 * (k >> 2) + 4 * r + (k & 3));
      }
    }
  }
}

/** Rows [0, rows) of Q4_0 (nb blocks each) at src[so..] into Q4_0x4 at dst[dO..] (not overlapping; rows % 4 == 0). */
export function interleaveQ4_0x4(src: Uint8Array, so: number, dst: Uint8Array, dO: number, rows: number, nb: number): void {
  eachByte(rows, nb, (plain, packed) => { dst[dO + packed] = src[so + plain]!; });
}

/** The inverse: rows [0, rows) of Q4_0x4 at src[so..] back to Q4_0 at dst[dO..]. */
export function deinterleaveQ4_0x4(src: Uint8Array, so: number, dst: Uint8Array, dO: number, rows: number, nb: number): void {
  eachByte(rows, nb, (plain, packed) => { dst[dO + plain] = src[so + packed]!; });
}
