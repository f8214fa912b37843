/**
 * The ggml test vectors of fixtures/ (made by fixtures/gen-ggml-fixtures.c from llama.cpp's own
 * ggml, not from llamesh): inputs, ggml's quantizer outputs, random blocks and their ggml
 * dequantization, the CPU backend's activation quantization and dot products.
 */
import * as fs from "node:fs";
import { gunzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { ACT_TYPES, typeInfo, type ActType, type TensorType } from "../../src/kernels/formats.js";

const DIR = fileURLToPath(new URL("../../../test/kernels/fixtures/", import.meta.url));

export interface GgmlFixture {
  type: TensorType;
  act: ActType;
  rows: number;
  cols: number;
  input: Float32Array;
  quant: Uint8Array;
  rand: Uint8Array;
  randRows: number;
  randDequant: Float32Array;
  actBytes: Uint8Array;
  dot: Float32Array;
  dotRand: Float32Array;
}

function read(name: string): Buffer {
  return gunzipSync(fs.readFileSync(DIR + name));
}

function f32(b: Uint8Array): Float32Array {
  const c = new Uint8Array(b); // aligned copy
  return new Float32Array(c.buffer, 0, c.length / 4);
}

let input: Float32Array | undefined;

export function ggmlFixture(type: TensorType): GgmlFixture {
  input ??= f32(read("ggml-input.bin.gz"));
  const b = read(`ggml-${type}.bin.gz`);
  const rec = new Map<string, Uint8Array>();
  for (let p = 0; p < b.length;) {
    const nl = b.readUInt32LE(p);
    const name = b.toString("latin1", p + 4, p + 4 + nl);
    const dl = b.readUInt32LE(p + 4 + nl);
    rec.set(name, new Uint8Array(b.subarray(p + 8 + nl, p + 8 + nl + dl)));
    p += 8 + nl + dl;
  }
  const get = (k: string): Uint8Array => {
    const v = rec.get(k);
    if (!v) throw new Error(`fixture ggml-${type}: no record ${k}`);
    return v;
  };
  const u32 = (k: string): number => new DataView(get(k).buffer, get(k).byteOffset).getUint32(0, true);
  const actId = u32("act_type");
  const act = ACT_TYPES.find((a) => typeInfo(a).ggmlId === actId);
  if (!act) throw new Error(`fixture ggml-${type}: activation type ${actId}`);
  const cols = u32("cols");
  const randDequant = f32(get("rand_dequant"));
  return {
    type, act, rows: u32("rows"), cols, input,
    quant: get("quant"), rand: get("rand"), randRows: randDequant.length / cols, randDequant,
    actBytes: get("act"), dot: f32(get("dot")), dotRand: f32(get("dot_rand")),
  };
}
