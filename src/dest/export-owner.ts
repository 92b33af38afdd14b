// D's NBD export of the migrating disk, owned by D: started at Prepare, started again after a restart, stopped
// at the end. Starts and stops run one after another, so a stop issued while a start is under way stops it.
import type { BlockStore } from './block-store.js';

/** How the export is served (the CLI's NBD server); none: D serves no export. */
export interface DestExport {
  /** Serve `store`; resolves with the URIs a hypervisor or NBD client connects to. */
  start(store: BlockStore): Promise<string[]>;
  stop(): Promise<void>;
}

export const NO_EXPORT: DestExport = { start: async () => [], stop: async () => {} };

export class ExportOwner {
  readonly #x: DestExport;
  #queue: Promise<unknown> = Promise.resolve();
  #running = false;

  constructor(x: DestExport) {
    this.#x = x;
  }

  start(store: BlockStore): Promise<string[]> {
    return this.#then(async () => {
      const uris = await this.#x.start(store);
      this.#running = true;
      return uris;
    });
  }

  stop(): Promise<void> {
    return this.#then(async () => {
      if (!this.#running) return;
      this.#running = false;
      await this.#x.stop();
    });
  }

  #then<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }
}
