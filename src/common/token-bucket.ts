// PLACEHOLDER until wt-rate merges (take theirs): the interface only.
export interface BulkRateLimit {
  readonly bytesPerSecond: number | null;
  take(bytes: number): Promise<void> | void;
  onChange(listener: () => void): () => void;
}
