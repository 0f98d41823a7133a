/**
 * The vote over copies of one damaged record (a leaf: no I/O). Only copies that verified count
 * (their xxh3 matches their bytes and they are the asker's version); the node asking never
 * votes, its copy being the damaged one. A digest held by more than half of the counted copies
 * wins; one verified copy is a majority of one. Anything else (a tie, three different copies)
 * is no majority, and the caller refuses rather than guess.
 */
export interface Ballot {
  nodeId: string;
  /** xxh3-64 of the copy's bytes, 16 hex digits. */
  digest: string;
}

export type VoteResult = { outcome: 'majority'; digest: string; holders: string[]; against: Ballot[] } | { outcome: 'none'; ballots: Ballot[] };

export function majorityVote(ballots: Ballot[]): VoteResult {
  const byDigest = new Map<string, string[]>();
  for (const b of ballots) byDigest.set(b.digest, [...(byDigest.get(b.digest) ?? []), b.nodeId]);
  for (const [digest, holders] of byDigest) {
    if (holders.length * 2 > ballots.length) return { outcome: 'majority', digest, holders, against: ballots.filter((b) => b.digest !== digest) };
  }
  return { outcome: 'none', ballots };
}

/** `n1=0123..., n2=abcd...`: for error messages. */
export function describeBallots(ballots: Ballot[]): string {
  return ballots.map((b) => `${b.nodeId}=${b.digest}`).join(', ');
}
