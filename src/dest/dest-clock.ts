// D's clock and timers, injected so the session's timers can be driven by a test (the one clock of src/common).
export type { Clock as DestClock } from '../common/clock.js';
export { SYSTEM_CLOCK } from '../common/clock.js';
