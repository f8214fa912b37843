/**
 * Checks of what a client or peer sends a worker, before it is used: integers in range, a model
 * shape that is consistent, a slice inside the model, members that make sense. A failed check is a
 * ProtocolError (answered with an ERROR frame; the connection stays usable).
 */
import { LIMITS, type LlamaConfig, type ModelFamily, type RopeScaling } from "../model/config.js";
import { nodeDims, type NodeSlice, type SliceDesc } from "../engine/slice.js";
import { MAX_HOST_CHARS, oneLine } from "./limits.js";
import { ProtocolError } from "./protocol.js";
import type { MemberInfo } from "./reduce.js";

export function intIn(v: unknown, what: string, min = 0, code = "bad-setup", max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ProtocolError(`${what}: expected an integer between ${min} and ${max}, got ${typeof v === "number" ? v : typeof v}`, code);
  }
  return v;
}

function posNum(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new ProtocolError(`${what}: expected a positive number`, "bad-setup");
  return v;
}

function ropeScalingFrom(v: unknown): RopeScaling | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== "object") throw new ProtocolError("config.ropeScaling: expected an object or null", "bad-setup");
  const o = v as Record<string, unknown>;
  if (o["type"] === "linear") return { type: "linear", factor: posNum(o["factor"], "ropeScaling.factor") };
  if (o["type"] === "llama3") {
    return {
      type: "llama3", factor: posNum(o["factor"], "ropeScaling.factor"), lowFreqFactor: posNum(o["lowFreqFactor"], "ropeScaling.lowFreqFactor"),
      highFreqFactor: posNum(o["highFreqFactor"], "ropeScaling.highFreqFactor"), originalMaxPositions: intIn(o["originalMaxPositions"], "ropeScaling.originalMaxPositions", 1, "bad-setup", LIMITS.seqLen),
    };
  }
  if (o["type"] === "factors") {
    const f = o["factors"];
    if (!Array.isArray(f) || f.length > LIMITS.headDim) throw new ProtocolError("config.ropeScaling.factors: expected a list of at most headDim / 2 numbers", "bad-setup");
    return { type: "factors", factors: f.map((x, i) => posNum(x, `ropeScaling.factors[${i}]`)) };
  }
  throw new ProtocolError("config.ropeScaling: unknown type", "bad-setup");
}

const FAMILIES: readonly ModelFamily[] = ["llama", "mistral", "qwen2", "qwen3"];

/** A model shape from a client, every size within LIMITS (model/config.ts) before anything is built from it. */
export function configFrom(v: unknown): LlamaConfig {
  if (typeof v !== "object" || v === null) throw new ProtocolError("setup: missing config", "bad-setup");
  const o = v as Record<string, unknown>;
  const family = o["family"] as ModelFamily;
  if (!FAMILIES.includes(family)) throw new ProtocolError(`config.family: expected one of ${FAMILIES.join(", ")}`, "bad-setup");
  const window = o["slidingWindow"];
  const c: LlamaConfig = {
    family,
    dim: intIn(o["dim"], "config.dim", 1, "bad-setup", LIMITS.dim),
    hiddenDim: intIn(o["hiddenDim"], "config.hiddenDim", 1, "bad-setup", LIMITS.hiddenDim),
    nLayers: intIn(o["nLayers"], "config.nLayers", 1, "bad-setup", LIMITS.nLayers),
    nHeads: intIn(o["nHeads"], "config.nHeads", 1, "bad-setup", LIMITS.nHeads),
    nKvHeads: intIn(o["nKvHeads"], "config.nKvHeads", 1, "bad-setup", LIMITS.nHeads),
    vocabSize: intIn(o["vocabSize"], "config.vocabSize", 1, "bad-setup", LIMITS.vocabSize),
    seqLen: intIn(o["seqLen"], "config.seqLen", 1, "bad-setup", LIMITS.seqLen),
    normEps: posNum(o["normEps"], "config.normEps"),
    ropeTheta: posNum(o["ropeTheta"], "config.ropeTheta"),
    ropeScaling: ropeScalingFrom(o["ropeScaling"]),
    tiedEmbeddings: o["tiedEmbeddings"] === true,
    headDim: intIn(o["headDim"], "config.headDim", 2, "bad-setup", LIMITS.headDim),
    attnBias: o["attnBias"] === true,
    qkNorm: o["qkNorm"] === true,
    slidingWindow: window === null || window === undefined ? null : intIn(window, "config.slidingWindow", 1, "bad-setup", LIMITS.seqLen),
    bosTokenId: null,
    eosTokenIds: [],
  };
  if (c.nHeads % c.nKvHeads !== 0 || c.headDim % 2 !== 0) throw new ProtocolError("setup: inconsistent config", "bad-setup");
  return c;
}

export function sliceFrom(v: unknown, c: LlamaConfig): NodeSlice {
  if (typeof v !== "object" || v === null) throw new ProtocolError("setup: missing slice", "bad-setup");
  const o = v as Record<string, unknown>;
  const s: NodeSlice = {
    kv0: intIn(o["kv0"], "slice.kv0"), kv1: intIn(o["kv1"], "slice.kv1"),
    hb0: intIn(o["hb0"], "slice.hb0"), hb1: intIn(o["hb1"], "slice.hb1"),
    v0: intIn(o["v0"], "slice.v0"), v1: intIn(o["v1"], "slice.v1"),
  };
  if (s.kv0 > s.kv1 || s.kv1 > c.nKvHeads || s.hb0 > s.hb1 || s.hb1 * 32 > Math.ceil(c.hiddenDim / 32) * 32 || s.v0 > s.v1 || s.v1 > c.vocabSize) {
    throw new ProtocolError("setup: slice outside the model", "bad-setup");
  }
  return s;
}

export function memberFrom(v: unknown): MemberInfo {
  if (typeof v !== "object" || v === null) throw new ProtocolError("mesh: bad member", "bad-mesh");
  const o = v as Record<string, unknown>;
  const m: MemberInfo = {
    rank: intIn(o["rank"], "member.rank", 0, "bad-mesh", 1 << 16),
    // shown in errors and logs: one line, bounded
    label: typeof o["label"] === "string" ? oneLine(o["label"], 80) : "?",
    attn: o["attn"] === true,
    ffn: o["ffn"] === true,
    logits: o["logits"] === true,
  };
  if (o["host"] !== undefined) {
    const host = o["host"];
    if (typeof host !== "string" || host.length < 1 || host.length > MAX_HOST_CHARS || !/^[A-Za-z0-9._:%\-]+$/.test(host)) {
      throw new ProtocolError(`mesh: a member host must be a host name or address of at most ${MAX_HOST_CHARS} characters`, "bad-mesh");
    }
    m.host = host;
    m.port = intIn(o["port"], "member.port", 1, "bad-mesh", 65535);
  }
  return m;
}

/** The fields a worker builds from, the same in both configs (a SETUP against the worker's own --model). */
export function sameConfig(a: LlamaConfig, model: unknown): boolean {
  let b: LlamaConfig;
  try {
    b = configFrom(model);
  } catch {
    return false;
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Bytes a node's slice takes (weights, KV cache, scratch, RoPE table), from the sizes alone, so a
 * SETUP can be refused before anything is allocated. A lower bound of what ModelSlice allocates
 * (its alignment padding aside), computed in floating point: no size here can overflow.
 */
export function sliceBytesNeeded(c: LlamaConfig, s: NodeSlice, descs: readonly SliceDesc[], seqLen: number, batch: number, slots: number): number {
  const d = nodeDims(c, s);
  const weights = descs.reduce((t, x) => t + x.bytes, 0);
  const kv = c.nLayers * 2 * slots * seqLen * d.kvRows * 2;
  const scratch = 4 * batch * (3 * d.dimP + 2 * d.qRowsP + 2 * d.kvRowsP + 2 * d.hRows) + 4 * Math.max(1, d.nHeads) * seqLen + 4 * seqLen * c.headDim + 4 * Math.min(batch, slots) * d.vRowsP;
  return weights + kv + scratch;
}
