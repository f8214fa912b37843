/**
 * Turns generated token ids into text as they come. A character may span several byte-fallback
 * tokens (an emoji is four <0xXX> tokens), so bytes go through a streaming UTF-8 decoder that
 * holds an incomplete character back until its last byte arrives.
 */
import type { Tokenizer } from "../model/tokenizer-types.js";

export class TextStream {
  private readonly decoder = new TextDecoder("utf-8");
  constructor(private readonly tokenizer: Tokenizer) {}

  /** Text completed by this token ("" while a character is still incomplete). */
  push(id: number): string {
    return this.decoder.decode(this.tokenizer.tokenBytes(id), { stream: true });
  }

  /** Whatever is left at the end (a replacement character for a truncated sequence). */
  end(): string {
    return this.decoder.decode();
  }
}
