/**
 * `CairnVectorStore`: a LangChain.js `VectorStore` over one Cairn collection.
 *
 * Each document is one Cairn record: its id (the document's `id`, the `ids` option, or a random
 * UUID), the embedding as the vector, and as Cairn metadata the document's LangChain metadata
 * with the page content under one reserved key, `PAGE_CONTENT_KEY`. Keeping the LangChain
 * metadata at the top level makes Cairn filters apply to it directly; reading a record removes
 * the reserved key again, so page content and metadata round-trip unchanged.
 */
import { randomUUID } from 'node:crypto';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import { maximalMarginalRelevance } from '@langchain/core/utils/math';
import { type MaxMarginalRelevanceSearchOptions, VectorStore } from '@langchain/core/vectorstores';
import type { Collection, CollectionInfo, Metric, QueryOptions, Store } from 'cairndb';
import { open } from 'cairndb';

/** The Cairn metadata key that holds a document's page content. */
export const PAGE_CONTENT_KEY = '__lc_page_content';

/** A Cairn filter on the documents' metadata (the `filter` of `Collection.query`). */
export type CairnFilter = NonNullable<QueryOptions['filter']>;

export interface CairnVectorStoreArgs {
  /** An open store; or `dir` to open one (closed again by `close()`). */
  store?: Store;
  dir?: string;
  /** The collection; created on the first write when missing, with the embeddings' dimension. */
  collection: string;
  /** For a collection this creates (default `cosine`). Scores are Cairn's: cosine similarity and
   *  inner product (higher is closer), or Euclidean distance for `l2` (lower is closer). */
  metric?: Metric;
  /** HNSW beam width for searches (Cairn's default when omitted). */
  ef?: number;
}

export class CairnVectorStore extends VectorStore {
  declare FilterType: CairnFilter;
  readonly store: Store;
  readonly collectionName: string;
  readonly metric: Metric;
  readonly #ownsStore: boolean;
  readonly #ef: number | undefined;

  _vectorstoreType(): string {
    return 'cairn';
  }

  /** Use `CairnVectorStore.open` (or `fromTexts`, `fromDocuments`, `fromExistingCollection`). */
  constructor(embeddings: EmbeddingsInterface, store: Store, args: CairnVectorStoreArgs, ownsStore = false) {
    super(embeddings, args);
    this.store = store;
    this.collectionName = args.collection;
    this.metric = args.metric ?? 'cosine';
    this.#ownsStore = ownsStore;
    this.#ef = args.ef;
  }

  static async open(embeddings: EmbeddingsInterface, args: CairnVectorStoreArgs): Promise<CairnVectorStore> {
    if (args.store && args.dir !== undefined) throw new TypeError('give either args.store or args.dir, not both');
    if (args.store) return new CairnVectorStore(embeddings, args.store, args);
    if (typeof args.dir !== 'string') throw new TypeError('args.store or args.dir is required');
    return new CairnVectorStore(embeddings, await open(args.dir), args, true);
  }

  #info(): CollectionInfo | undefined {
    return this.store.collections().find((c) => c.name === this.collectionName);
  }

  /** The collection, or undefined before the first write created it. */
  #collection(): Collection | undefined {
    return this.#info() ? this.store.collection(this.collectionName) : undefined;
  }

  async #collectionFor(dim: number): Promise<Collection> {
    const existing = this.#collection();
    if (existing) return existing;
    return this.store.createCollection(this.collectionName, { dim, metric: this.metric });
  }

  async addDocuments(documents: DocumentInterface[], options?: { ids?: string[] }): Promise<string[]> {
    const vectors = await this.embeddings.embedDocuments(documents.map((d) => d.pageContent));
    return this.addVectors(vectors, documents, options);
  }

  /** Write the documents with their vectors in one atomic batch; returns their ids. */
  async addVectors(vectors: number[][], documents: DocumentInterface[], options?: { ids?: string[] }): Promise<string[]> {
    if (vectors.length !== documents.length) throw new TypeError(`vectors (${vectors.length}) and documents (${documents.length}) differ in length`);
    if (options?.ids !== undefined && options.ids.length !== documents.length) {
      throw new TypeError(`options.ids (${options.ids.length}) and documents (${documents.length}) differ in length`);
    }
    if (documents.length === 0) return [];
    const ids = documents.map((d, i) => options?.ids?.[i] ?? d.id ?? randomUUID());
    const records = documents.map((d, i) => {
      if (Object.hasOwn(d.metadata ?? {}, PAGE_CONTENT_KEY)) throw new TypeError(`documents[${i}].metadata must not use the reserved key ${PAGE_CONTENT_KEY}`);
      return { id: ids[i] as string, vector: vectors[i] as number[], metadata: { ...d.metadata, [PAGE_CONTENT_KEY]: d.pageContent } };
    });
    const collection = await this.#collectionFor((vectors[0] as number[]).length);
    await collection.upsert(records);
    return ids;
  }

  async similaritySearchVectorWithScore(query: number[], k: number, filter?: CairnFilter): Promise<[DocumentInterface, number][]> {
    const collection = this.#collection();
    if (!collection) return [];
    const hits = await collection.query(query, { k, ...(filter ? { filter } : {}), ...(this.#ef ? { ef: this.#ef } : {}) });
    return hits.map((h) => [toDocument(h.id, h.metadata), h.score]);
  }

  /**
   * Fetch `fetchK` nearest documents, then pick `k` of them that are near the query and far
   * from each other (`lambda` 1: nearest only, 0: most diverse).
   */
  async maxMarginalRelevanceSearch(query: string, options: MaxMarginalRelevanceSearchOptions<CairnFilter>): Promise<DocumentInterface[]> {
    const collection = this.#collection();
    if (!collection) return [];
    const { k, fetchK = 20, lambda = 0.5, filter } = options;
    const queryVector = await this.embeddings.embedQuery(query);
    const hits = await collection.query(queryVector, { k: Math.max(fetchK, k), ...(filter ? { filter } : {}), ...(this.#ef ? { ef: this.#ef } : {}) });
    const rows = await Promise.all(hits.map((h) => collection.get(h.id)));
    const found = hits.flatMap((h, i) => {
      const row = rows[i];
      return row ? [{ id: h.id, metadata: row.metadata, vector: Array.from(row.vector) }] : [];
    });
    const picked = maximalMarginalRelevance(
      queryVector,
      found.map((f) => f.vector),
      lambda,
      k,
    );
    return picked.map((i) => {
      const f = found[i] as (typeof found)[number];
      return toDocument(f.id, f.metadata);
    });
  }

  async delete(params: { ids: string[] }): Promise<void> {
    if (!params || !Array.isArray(params.ids)) throw new TypeError('delete needs { ids: string[] }');
    const collection = this.#collection();
    if (!collection || params.ids.length === 0) return;
    await collection.delete(params.ids);
  }

  /** Close the store if this vector store opened it (`dir`). */
  async close(): Promise<void> {
    if (this.#ownsStore) await this.store.close();
  }

  static async fromTexts(
    texts: string[],
    metadatas: object[] | object,
    embeddings: EmbeddingsInterface,
    args: CairnVectorStoreArgs,
  ): Promise<CairnVectorStore> {
    const docs = texts.map(
      (pageContent, i) => new Document({ pageContent, metadata: (Array.isArray(metadatas) ? metadatas[i] : metadatas) as Record<string, unknown> }),
    );
    return CairnVectorStore.fromDocuments(docs, embeddings, args);
  }

  static async fromDocuments(docs: DocumentInterface[], embeddings: EmbeddingsInterface, args: CairnVectorStoreArgs): Promise<CairnVectorStore> {
    const store = await CairnVectorStore.open(embeddings, args);
    await store.addDocuments(docs);
    return store;
  }

  /** A vector store over a collection that already exists (`CAIRN_NOT_FOUND` otherwise). */
  static async fromExistingCollection(embeddings: EmbeddingsInterface, args: CairnVectorStoreArgs): Promise<CairnVectorStore> {
    const vs = await CairnVectorStore.open(embeddings, args);
    try {
      const info = vs.store.collection(args.collection);
      return new CairnVectorStore(embeddings, vs.store, { ...args, metric: info.metric }, vs.#ownsStore);
    } catch (e) {
      await vs.close();
      throw e;
    }
  }
}

function toDocument(id: string, stored: Record<string, unknown>): DocumentInterface {
  const { [PAGE_CONTENT_KEY]: pageContent, ...metadata } = stored;
  return new Document({ id, pageContent: typeof pageContent === 'string' ? pageContent : '', metadata });
}
