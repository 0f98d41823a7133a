/**
 * A backup target in an S3-compatible bucket under a prefix. A PutObject is atomic (readers see
 * the whole object or none), so no temp objects are needed; ordering comes from the manager,
 * which puts the manifest only after every chunk put has succeeded.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';

import { CairnError } from '../errors.js';
import type { BackupTarget, TargetEntry } from './target.js';
import type { S3Settings } from './types.js';

function s3Error(what: string, e: unknown): CairnError {
  const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  return new CairnError(
    'CAIRN_IO',
    `S3 ${what} failed: ${err?.name ?? 'Error'}${err?.$metadata?.httpStatusCode ? ` (HTTP ${err.$metadata.httpStatusCode})` : ''}: ${err?.message ?? String(e)}`,
    { cause: e },
  );
}

export class S3Target implements BackupTarget {
  readonly url: string;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #client: S3Client;

  constructor(url: string, bucket: string, prefix: string, settings: S3Settings | undefined) {
    this.url = url;
    this.#bucket = bucket;
    this.#prefix = prefix;
    const env = process.env;
    // The SDK warns once per process on Node < 22 that versions published after January 2027
    // will need Node 22. Cairn supports Node 20 and pins the SDK's major version, so the
    // warning is noise for its users; this is the SDK's documented switch
    // (@aws-sdk/core emitWarningIfUnsupportedVersion). An explicit setting is left alone.
    env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const config: S3ClientConfig = {
      region: settings?.region ?? env.AWS_REGION ?? 'us-east-1',
      // Checksums only where S3 requires them: S3-compatible servers differ in the newer ones.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
    };
    const endpoint = settings?.endpoint ?? env.CAIRN_S3_ENDPOINT ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
    if (endpoint) config.endpoint = endpoint;
    if (settings?.forcePathStyle ?? endpoint !== undefined) config.forcePathStyle = true;
    if (settings?.credentials) config.credentials = settings.credentials;
    this.#client = new S3Client(config);
  }

  async list(prefix: string): Promise<TargetEntry[]> {
    const out: TargetEntry[] = [];
    let token: string | undefined;
    do {
      let r: ListObjectsV2CommandOutput;
      try {
        r = await this.#client.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: this.#prefix + prefix, ContinuationToken: token }));
      } catch (e) {
        throw s3Error(`list ${this.url}/${prefix}`, e);
      }
      for (const o of r.Contents ?? []) if (o.Key) out.push({ key: o.Key.slice(this.#prefix.length), size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      const r = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (e) {
      if (
        e instanceof NoSuchKey ||
        (e as { name?: string }).name === 'NoSuchKey' ||
        (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404
      )
        return undefined;
      throw s3Error(`get ${this.url}/${key}`, e);
    }
  }

  async put(key: string, data: Buffer): Promise<void> {
    try {
      await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key, Body: data, ContentLength: data.length }));
    } catch (e) {
      throw s3Error(`put ${this.url}/${key}`, e);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
    } catch (e) {
      throw s3Error(`delete ${this.url}/${key}`, e);
    }
  }

  async cleanDebris(): Promise<void> {}

  async close(): Promise<void> {
    this.#client.destroy();
  }
}
