// Drive the decoders the way a socket would: given byte pieces, collect every message, with the
// decoder already in the phase a vector belongs to.
import { ClientDecoder } from '../../../src/nbd/client-decoder.js';
import type { ClientMessage, ServerMessage } from '../../../src/nbd/codec.js';
import { ServerDecoder } from '../../../src/nbd/server-decoder.js';
import { hex } from './hex.js';

export type ServerPhase = 'clientFlags' | 'options' | 'transmission';
export type ClientPhase = 'greeting' | 'options' | 'transmission' | 'simpleTransmission' | 'exportName' | 'exportNameNoZeroes';

export function serverDecoderIn(phase: ServerPhase, opts: ConstructorParameters<typeof ServerDecoder>[0] = {}): ServerDecoder {
  const d = new ServerDecoder(opts);
  if (phase === 'clientFlags') return d;
  d.push(hex`00000003`);
  d.next();
  if (phase === 'transmission') d.enterTransmission();
  return d;
}

/** Cookies a test client "has outstanding": READs of the given lengths; others are non-reads. */
export function clientDecoderIn(phase: ClientPhase, readLengths: Map<bigint, number> = new Map(), knownCookies?: (c: bigint) => boolean): ClientDecoder {
  const d = new ClientDecoder({
    simpleReplyLength: (cookie) => readLengths.get(cookie) ?? (knownCookies === undefined || knownCookies(cookie) ? 0 : undefined),
  });
  if (phase === 'greeting') return d;
  d.push(hex`4E42444D41474943 49484156454F5054 0003`);
  d.next();
  if (phase === 'transmission') d.enterTransmission(true);
  if (phase === 'simpleTransmission') d.enterTransmission(false);
  if (phase === 'exportName') d.expectExportNameReply(false);
  if (phase === 'exportNameNoZeroes') d.expectExportNameReply(true);
  return d;
}

export function drainAll<T>(d: { push(b: Buffer): void; next(): T | undefined }, pieces: readonly Buffer[]): T[] {
  const out: T[] = [];
  for (const p of pieces) {
    d.push(p);
    for (let m = d.next(); m !== undefined; m = d.next()) out.push(m);
  }
  return out;
}

/** The vector cut in two at every point (and fed byte by byte): each must decode identically. */
export function everySplit(bytes: Buffer): Buffer[][] {
  const out: Buffer[][] = [];
  for (let i = 0; i <= bytes.length; i++) out.push([bytes.subarray(0, i), bytes.subarray(i)]);
  out.push([...bytes].map((b) => Buffer.from([b])));
  return out;
}

export type { ClientMessage, ServerMessage };
