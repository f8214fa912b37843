/**
 * Checks of what a client or peer sends a worker, before it is used: integers in range, a model
 * shape that is consistent, a slice inside the model, members that make sense. A failed check is a
 * ProtocolError (answered with an ERROR frame; the connection stays usable).
 */
import type { LlamaConfig } from "../model/config.js";
import type { NodeSlice } from "../engine/slice.js";
import { ProtocolError } from "./protocol.js";
import type { MemberInfo } from "./reduce.js";

export function intIn(v: unknown, what: string, min = 0, code = "bad-setup"): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new ProtocolError(`${what}: expected an integer >= ${min}, got ${JSON.stringify(v)}`, code);
  return v;
}

export function configFrom(v: unknown): LlamaConfig {
  if (typeof v !== "object" || v === null) throw new ProtocolError("setup: missing config", "bad-setup");
  const o = v as Record<string, unknown>;
  const c: LlamaConfig = {
    dim: intIn(o["dim"], "config.dim", 1),
    hiddenDim: intIn(o["hiddenDim"], "config.hiddenDim", 1),
    nLayers: intIn(o["nLayers"], "config.nLayers", 1),
    nHeads: intIn(o["nHeads"], "config.nHeads", 1),
    nKvHeads: intIn(o["nKvHeads"], "config.nKvHeads", 1),
    vocabSize: intIn(o["vocabSize"], "config.vocabSize", 1),
    seqLen: intIn(o["seqLen"], "config.seqLen", 1),
    normEps: Number(o["normEps"]),
    ropeTheta: Number(o["ropeTheta"]),
    tiedEmbeddings: o["tiedEmbeddings"] === true,
    headDim: intIn(o["headDim"], "config.headDim", 2),
    bosTokenId: null,
    eosTokenIds: [],
  };
  if (c.nHeads % c.nKvHeads !== 0 || c.headDim * c.nHeads !== c.dim || !(c.ropeTheta > 0)) throw new ProtocolError("setup: inconsistent config", "bad-setup");
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
