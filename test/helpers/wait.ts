// Poll for a condition with a deadline: the one way tests wait (never a fixed sleep standing in for a condition).

/** Resolves once `pred()` holds; fails naming `what` after `timeoutMs`. Checks every `everyMs`. */
export async function waitUntil(pred: () => boolean, what: string, timeoutMs = 30_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** waitUntil for a condition that must be asked asynchronously (an API call, say): polled every `everyMs`. */
export async function pollUntil(pred: () => Promise<boolean>, what: string, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** One turn of the event loop (setImmediate: real even where a test fakes setTimeout). */
const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * Let in-memory streams (and anything else on nextTick/setImmediate) run for `n` event-loop turns. No timer is
 * involved, so "nothing more happened after n turns" is the same answer on a loaded machine as on an idle one.
 */
export async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** Resolves once `pred()` holds, checked once per event-loop turn (for tests on a fake clock); fails naming `what`. */
export async function turnsUntil(pred: () => boolean, what: string, maxTurns = 100_000): Promise<void> {
  for (let i = 0; !pred(); i++) {
    if (i >= maxTurns) throw new Error(`gave up after ${maxTurns} event-loop turns waiting for ${what}`);
    await turn();
  }
}

/** p's outcome, or a rejection with the message `what()` (computed when the time runs out) after `ms`. */
export async function withDeadline<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
