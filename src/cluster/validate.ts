/**
 * Checks of what a client or peer sends a worker, before it is used: integers in range, a model
 * shape that is consistent, a slice inside the model, members that make sense. A failed check is a
 * ProtocolError (answered with an ERROR frame; the connection stays usable).
 */
import { LIMITS, type LlamaConfig, type ModelFamily, type RopeScaling } from "../model/config.js";
import type { NodeSlice } from "../engine/slice.js";
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
    rank: intIn(o["rank"], "member.rank", 0, "bad-mesh"),
    label: typeof o["label"] === "string" ? o["label"] : "?",
    attn: o["attn"] === true,
    ffn: o["ffn"] === true,
    logits: o["logits"] === true,
  };
  if (o["host"] !== undefined) {
    if (typeof o["host"] !== "string") throw new ProtocolError("mesh: member host must be a string", "bad-mesh");
    m.host = o["host"];
    m.port = intIn(o["port"], "member.port", 1, "bad-mesh");
  }
  return m;
}
