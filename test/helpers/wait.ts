// Poll for a condition with a deadline: the one way tests wait (never a fixed sleep standing in for a condition).

/** Resolves once `pred()` holds; fails naming `what` after `timeoutMs`. Checks every `everyMs`. */
export async function waitUntil(pred: () => boolean, what: string, timeoutMs = 30_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
