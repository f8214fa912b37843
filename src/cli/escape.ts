/**
 * Control characters made visible: a random model's text holds ESC, NUL, CR, ... which a
 * terminal would act on (move the cursor, change colours, clear the screen). Every C0 control
 * but newline and tab, DEL, and the C1 controls (U+0080-U+009F, which some terminals also obey,
 * e.g. U+009B as CSI) become `\xNN` / `\uNNNN` escapes, as JavaScript writes them.
 */
export function escapeControls(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x80 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
