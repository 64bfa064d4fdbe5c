import type { ChainMember, MemberId } from '../protocol/frames.js';

/** Where a member sits in a chain: who feeds it and whom it feeds. */
export interface ChainPosition {
  index: number;
  predecessor: ChainMember | null;
  successor: ChainMember | null;
}

export function positionIn(chain: readonly ChainMember[], id: MemberId): ChainPosition | null {
  const index = chain.findIndex((m) => m.id === id);
  if (index < 0) return null;
  return {
    index,
    predecessor: index > 0 ? chain[index - 1] : null,
    successor: index < chain.length - 1 ? chain[index + 1] : null,
  };
}

/** Acks needed for a write to succeed: a majority of the chain. */
export function quorumSize(chainLength: number): number {
  return Math.floor(chainLength / 2) + 1;
}

/**
 * The highest version held by at least `quorum` of the given replica versions: with versions
 * sorted high to low, the quorum-th one.
 */
export function quorumVersion(versions: readonly number[], quorum: number): number {
  if (versions.length < quorum || quorum <= 0) return 0;
  const sorted = [...versions].sort((a, b) => b - a);
  return sorted[quorum - 1];
}
