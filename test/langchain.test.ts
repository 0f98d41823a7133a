// cairndb-langchain: the behaviours of LangChain's standard vector-store integration tests
// (@langchain/standard-tests is not on the registry here), with @langchain/core's fake and
// synthetic embeddings.
import { Document } from '@langchain/core/documents';
import { FakeEmbeddings, SyntheticEmbeddings } from '@langchain/core/utils/testing';
import { open } from 'cairndb';
import { CairnVectorStore, PAGE_CONTENT_KEY } from 'cairndb-langchain';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const embeddings = () => new SyntheticEmbeddings({ vectorSize: 16 });

describe('langchain', () => {
  test('langchain_add_search_delete_round_trip_unchanged', async () => {
    const vs = await CairnVectorStore.open(embeddings(), { dir: tempDir('cairn-lc-'), collection: 'docs' });
    try {
      const docs = [
        new Document({ pageContent: 'the quick brown fox', metadata: { source: 'a', tags: ['x', 'y'], nested: { n: 1, s: 'é' } } }),
        new Document({ pageContent: 'jumps over the lazy dog', metadata: { source: 'b' } }),
        new Document({ pageContent: 'naïve café — ünïcödé ✓', metadata: {} }),
      ];
      const ids = await vs.addDocuments(docs);
      expect(ids).toHaveLength(3);
      expect(new Set(ids).size).toBe(3);

      // The nearest document to a text is the text itself, with content and metadata unchanged.
      for (const [i, d] of docs.entries()) {
        const [top] = await vs.similaritySearch(d.pageContent, 1);
        expect(top).toEqual(new Document({ id: ids[i], pageContent: d.pageContent, metadata: d.metadata }));
        expect(top?.metadata).not.toHaveProperty(PAGE_CONTENT_KEY);
      }
      const scored = await vs.similaritySearchWithScore(docs[1]!.pageContent, 3);
      expect(scored.map(([d]) => d.pageContent)[0]).toBe(docs[1]!.pageContent);
      expect(scored[0]![1]).toBeCloseTo(1, 5);
      for (let i = 1; i < scored.length; i++) expect(scored[i - 1]![1]).toBeGreaterThanOrEqual(scored[i]![1]);

      await vs.delete({ ids: [ids[1] as string] });
      const after = await vs.similaritySearch(docs[1]!.pageContent, 3);
      expect(after.map((d) => d.id).sort()).toEqual([ids[0], ids[2]].sort());
      await expect(vs.addDocuments([new Document({ pageContent: 'x', metadata: { [PAGE_CONTENT_KEY]: 'y' } })])).rejects.toThrow(/reserved key/);
    } finally {
      await vs.close();
    }
  });

  test('langchain_add_vectors_with_ids_overwrites_and_filters', async () => {
    const db = await open(tempDir('cairn-lc-vec-'));
    try {
      const vs = await CairnVectorStore.open(embeddings(), { store: db, collection: 'v', metric: 'l2' });
      const ids = await vs.addVectors(
        [
          [0, 0],
          [1, 0],
          [5, 5],
        ],
        [0, 1, 2].map((i) => new Document({ pageContent: `p${i}`, metadata: { group: i < 2 ? 'near' : 'far', i } })),
        { ids: ['id-0', 'id-1', 'id-2'] },
      );
      expect(ids).toEqual(['id-0', 'id-1', 'id-2']);
      expect(db.collection('v').dim).toBe(2);
      const all = await vs.similaritySearchVectorWithScore([0, 0], 3);
      expect(all.map(([d]) => d.id)).toEqual(['id-0', 'id-1', 'id-2']);
      // Scores are Cairn's l2 distances (float32).
      expect(all.map(([, s]) => s)).toEqual([0, 1, expect.closeTo(Math.hypot(5, 5), 5)]);
      // Cairn filters on the LangChain metadata.
      const far = await vs.similaritySearchVectorWithScore([0, 0], 3, { group: 'far' });
      expect(far.map(([d]) => d.id)).toEqual(['id-2']);
      // Writing an id again replaces the document.
      await vs.addVectors([[0, 0.5]], [new Document({ pageContent: 'p1 again', metadata: { group: 'near', i: 1 } })], { ids: ['id-1'] });
      expect(await db.collection('v').count()).toBe(3);
      const [, second] = await vs.similaritySearchVectorWithScore([0, 0], 2);
      expect(second?.[0]).toEqual(new Document({ id: 'id-1', pageContent: 'p1 again', metadata: { group: 'near', i: 1 } }));
      // A document's own id is used when no ids are given.
      expect(await vs.addVectors([[9, 9]], [new Document({ id: 'own-id', pageContent: 'o', metadata: {} })])).toEqual(['own-id']);
    } finally {
      await db.close();
    }
  });

  test('langchain_mmr_prefers_diverse_documents', async () => {
    const db = await open(tempDir('cairn-lc-mmr-'));
    try {
      const vs = await CairnVectorStore.open(new FakeEmbeddings(), { store: db, collection: 'mmr', metric: 'cosine' });
      // Two near-duplicates close to the query, one different direction.
      await vs.addVectors(
        [
          [1, 0, 0, 0],
          [0.99, 0.01, 0, 0],
          [0.6, 0.8, 0, 0],
        ],
        ['dup-a', 'dup-b', 'other'].map((t) => new Document({ pageContent: t, metadata: { t } })),
        { ids: ['dup-a', 'dup-b', 'other'] },
      );
      // FakeEmbeddings embeds every query as [0.1, 0.2, 0.3, 0.4]: use the vectors directly for the baseline.
      const nearest = await vs.similaritySearchVectorWithScore([1, 0, 0, 0], 2);
      expect(nearest.map(([d]) => d.id)).toEqual(['dup-a', 'dup-b']);
      const vsq = await CairnVectorStore.open(
        { ...new FakeEmbeddings(), embedQuery: async () => [1, 0, 0, 0], embedDocuments: async (t) => t.map(() => [1, 0, 0, 0]) },
        {
          store: db,
          collection: 'mmr',
        },
      );
      const diverse = await vsq.maxMarginalRelevanceSearch('q', { k: 2, fetchK: 3, lambda: 0.3 });
      expect(diverse.map((d) => d.id)).toEqual(['dup-a', 'other']);
      expect(diverse[1]).toEqual(new Document({ id: 'other', pageContent: 'other', metadata: { t: 'other' } }));
      const filtered = await vsq.maxMarginalRelevanceSearch('q', { k: 2, fetchK: 3, lambda: 0.3, filter: { t: 'dup-b' } });
      expect(filtered.map((d) => d.id)).toEqual(['dup-b']);
    } finally {
      await db.close();
    }
  });

  test('langchain_from_texts_documents_existing_collection_and_retriever', async () => {
    const dir = tempDir('cairn-lc-from-');
    const texts = ['alpha apples', 'beta bananas', 'gamma grapes'];
    const a = await CairnVectorStore.fromTexts(texts, [{ n: 0 }, { n: 1 }, { n: 2 }], embeddings(), { dir, collection: 'fruit' });
    const top = await a.similaritySearch('beta bananas', 1);
    expect(top.map((d) => [d.pageContent, d.metadata])).toEqual([['beta bananas', { n: 1 }]]);
    await a.close();

    const b = await CairnVectorStore.fromExistingCollection(embeddings(), { dir, collection: 'fruit' });
    try {
      expect(b.metric).toBe('cosine');
      const retriever = b.asRetriever({ k: 2, filter: { n: 2 } });
      const got = await retriever.invoke('anything at all');
      expect(got.map((d) => [d.pageContent, d.metadata])).toEqual([['gamma grapes', { n: 2 }]]);
      const plain = await b.asRetriever(3).invoke('alpha apples');
      expect(plain[0]?.pageContent).toBe('alpha apples');
      expect(plain).toHaveLength(3);
    } finally {
      await b.close();
    }
    await expect(CairnVectorStore.fromExistingCollection(embeddings(), { dir, collection: 'missing' })).rejects.toMatchObject({ code: 'CAIRN_NOT_FOUND' });

    const c = await CairnVectorStore.fromDocuments([new Document({ pageContent: 'solo', metadata: { k: 'v' } })], embeddings(), {
      dir: tempDir('cairn-lc-docs-'),
      collection: 'one',
    });
    try {
      expect((await c.similaritySearch('solo', 5)).map((d) => [d.pageContent, d.metadata])).toEqual([['solo', { k: 'v' }]]);
    } finally {
      await c.close();
    }
  });
});

describe('langchain README', () => {
  test('langchain_readme_example_runs', async () => {
    const { readFileSync, writeFileSync, rmSync } = await import('node:fs');
    const { execFileSync } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const pkg = fileURLToPath(new URL('../packages/langchain/', import.meta.url));
    const readme = readFileSync(`${pkg}README.md`, 'utf8');
    const code = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(code).toBeDefined();
    // Inside the package, so that its imports resolve as they would for a user.
    const file = `${pkg}readme-example.tmp.mjs`;
    writeFileSync(file, code as string);
    try {
      const out = execFileSync(process.execPath, [file], { encoding: 'utf8' });
      expect(out).toContain("Scrubbing finds and repairs silent corruption { topic: 'repair' }");
      expect(out).toContain("[ 'Cairn fsyncs every acknowledged write' ]");
    } finally {
      rmSync(file, { force: true });
    }
  });
});
