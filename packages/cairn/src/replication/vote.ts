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

/**
 * The ballots of the copies other nodes sent: the asker's own answer is skipped, a copy that is
 * not 'found' or that `verify` refuses (it names why) does not vote and is listed in `others`
 * (`; others: n2: damaged (...)`, or '' when every copy voted), for the caller's error message.
 */
export function tally<C extends { nodeId: string; state: string; detail: string }>(
  copies: readonly C[],
  selfId: string,
  verify: (c: C) => { digest: string } | { reason: string },
): { ballots: Ballot[]; byDigest: Map<string, C>; others: string } {
  const ballots: Ballot[] = [];
  const byDigest = new Map<string, C>();
  const other: string[] = [];
  for (const c of copies) {
    if (c.nodeId === selfId) continue;
    if (c.state !== 'found') {
      other.push(`${c.nodeId}: ${c.state}${c.detail ? ` (${c.detail})` : ''}`);
      continue;
    }
    const v = verify(c);
    if ('reason' in v) {
      other.push(`${c.nodeId}: ${v.reason}`);
      continue;
    }
    ballots.push({ nodeId: c.nodeId, digest: v.digest });
    byDigest.set(v.digest, c);
  }
  return { ballots, byDigest, others: other.length ? `; others: ${other.join('; ')}` : '' };
}
