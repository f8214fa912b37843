/** What the engine needs from a tokenizer, whichever file it came from. */
export interface Tokenizer {
  /** Where it came from, for the report: "tokenizer.json", "tokenizer.model" or "gguf". */
  readonly source: string;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
  /** Token ids for `text`; a BOS id first when `addBos` and the tokenizer has one. */
  encode(text: string, addBos: boolean): number[];
  /**
   * The bytes this token adds to the output text: the piece with "▁" turned into a space,
   * a byte-fallback piece like <0xE2> into that one byte, special/control tokens into nothing.
   * Streaming decodes these bytes with a streaming TextDecoder so a character split over
   * several byte tokens prints correctly.
   */
  tokenBytes(id: number): Uint8Array;
}
