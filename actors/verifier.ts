/**
 * The built-in verifying workload: random block writes through NBD, each block stamped with
 * (block, generation) and a filler derived from both, so a read proves which write it holds.
 * It remembers, per block, the last generation acknowledged and the ones sent but not (or not
 * successfully) answered. verify() reads every written block back and tells apart:
 *  - ok: the last acknowledged generation, or a later one whose outcome was unknown;
 *  - lost: an older generation than one acknowledged (an acknowledged write was lost);
 *  - corrupt: bytes that are no generation of this block at all.
 * It also measures the worst stall: the longest time with requests outstanding and none
 * completing.
 */
import { NbdClient, NbdClientError } from '../nbd/client.js';

export interface VerifierOptions {
  uri: string;
  /** Blocks in the working set, from offset 0. */
  blocks: number;
  blockBytes?: number;
  queueDepth?: number;
  /** A FLUSH after this many writes (0: never). */
  flushEvery?: number;
  /** Deterministic block choice. */
  seed?: number;
}

export interface VerifierReport {
  writesSent: number;
  writesAcked: number;
  flushesAcked: number;
  /** Requests the client saw fail, by errno ('connection' when the link to the driver broke). */
  clientErrors: Record<string, number>;
  worstStallMs: number;
  reconnects: number;
}

export interface VerifyResult {
  blocksChecked: number;
  ok: number;
  /** Blocks holding a generation older than one acknowledged: acknowledged writes lost. */
  lost: Array<{ block: number; found: number; acked: number }>;
  /** Blocks whose content is no write of that block. */
  corrupt: number[];
}

const MAGIC = 0x46524545; // "FREE"
const HEADER_BYTES = 16;

export class Verifier {
  private client: NbdClient | null = null;
  private running = false;
  private readonly acked: Int32Array;
  /** Generations sent to each block whose outcome is unknown (in flight, failed, cut off). */
  private readonly uncertain = new Map<number, Set<number>>();
  private readonly nextGeneration: Int32Array;
  /**
   * Blocks with a write in flight. Never two at once to one block: NBD does not order
   * overlapping requests in flight (a file backend's pwrites run on a thread pool), so the older
   * generation may land last, and both are acknowledged — which verify() would call lost.
   */
  private readonly writing: Uint8Array;
  private rng: number;
  private readonly report: VerifierReport = { writesSent: 0, writesAcked: 0, flushesAcked: 0, clientErrors: {}, worstStallMs: 0, reconnects: 0 };
  private lastProgressMs = 0;
  private outstanding = 0;
  private loops: Array<Promise<void>> = [];
  private readonly blockBytes: number;

  constructor(private readonly options: VerifierOptions) {
    this.blockBytes = options.blockBytes ?? 4096;
    this.acked = new Int32Array(options.blocks);
    this.nextGeneration = new Int32Array(options.blocks);
    this.writing = new Uint8Array(options.blocks);
    this.rng = (options.seed ?? 1) >>> 0 || 1;
  }

  /** Start writing at the configured queue depth until stop(). */
  async start(): Promise<void> {
    this.client = await NbdClient.connect(this.options.uri);
    const needed = this.options.blocks * this.blockBytes;
    if (this.client.sizeBytes < needed) throw new Error(`volume is ${this.client.sizeBytes} bytes; the verifier needs ${needed}`);
    this.running = true;
    this.lastProgressMs = Date.now();
    const depth = this.options.queueDepth ?? 8;
    this.loops = Array.from({ length: depth }, (_, i) => this.loop(i === 0));
  }

  /** Stop issuing; wait for what is in flight. */
  async stop(): Promise<VerifierReport> {
    this.running = false;
    await Promise.all(this.loops);
    this.noteStall();
    return { ...this.report, clientErrors: { ...this.report.clientErrors } };
  }

  get progress(): VerifierReport {
    return this.report;
  }

  /** Read back every block written and compare with what was acknowledged. */
  async verify(): Promise<VerifyResult> {
    const client = await this.connected();
    const result: VerifyResult = { blocksChecked: 0, ok: 0, lost: [], corrupt: [] };
    const batch: Array<Promise<void>> = [];
    const check = async (block: number) => {
      const data = await client.read(block * this.blockBytes, this.blockBytes);
      result.blocksChecked++;
      const found = this.generationIn(block, data);
      const acked = this.acked[block];
      if (found === null && acked === 0 && data.every((b) => b === 0)) result.ok++; // every write to it failed
      else if (found === null) result.corrupt.push(block);
      else if (found === acked || (found > acked && this.uncertain.get(block)?.has(found))) result.ok++;
      else if (found < acked) result.lost.push({ block, found, acked });
      else result.corrupt.push(block);
    };
    for (let block = 0; block < this.options.blocks; block++) {
      if (this.nextGeneration[block] === 0) continue;
      batch.push(check(block));
      if (batch.length >= 32) await Promise.all(batch.splice(0));
    }
    await Promise.all(batch);
    return result;
  }

  async close(): Promise<void> {
    await this.client?.disconnect().catch(() => undefined);
    this.client = null;
  }

  private async loop(flusher: boolean): Promise<void> {
    let sinceFlush = 0;
    while (this.running) {
      let client: NbdClient;
      try {
        client = await this.connected();
      } catch {
        await sleep(200);
        continue;
      }
      if (flusher && this.options.flushEvery && sinceFlush >= this.options.flushEvery) {
        sinceFlush = 0;
        await this.track(client.flush(), () => this.report.flushesAcked++);
        continue;
      }
      let block = this.random() % this.options.blocks;
      for (let tries = 0; this.writing[block] && tries < this.options.blocks; tries++) block = (block + 1) % this.options.blocks;
      if (this.writing[block]) {
        // More writers than blocks: wait for one to finish.
        await sleep(1);
        continue;
      }
      this.writing[block] = 1;
      const generation = ++this.nextGeneration[block];
      let set = this.uncertain.get(block);
      if (!set) this.uncertain.set(block, (set = new Set()));
      set.add(generation);
      this.report.writesSent++;
      sinceFlush++;
      await this.track(client.write(block * this.blockBytes, blockContent(block, generation, this.blockBytes)), () => {
        this.report.writesAcked++;
        set.delete(generation);
        if (generation > this.acked[block]) {
          // Generations between the old and the new acknowledged one can no longer be current.
          for (const g of set) if (g < generation) set.delete(g);
          this.acked[block] = generation;
        }
      });
      this.writing[block] = 0;
    }
  }

  private async track(request: Promise<unknown>, onSuccess: () => void): Promise<void> {
    if (this.outstanding++ === 0) this.lastProgressMs = Date.now();
    try {
      await request;
      onSuccess();
    } catch (err) {
      const key = err instanceof NbdClientError && err.errno !== 0 ? `errno ${err.errno}` : 'connection';
      this.report.clientErrors[key] = (this.report.clientErrors[key] ?? 0) + 1;
      if (key === 'connection') this.dropClient();
      else await sleep(10);
    } finally {
      this.noteStall();
      this.outstanding--;
      this.lastProgressMs = Date.now();
    }
  }

  private noteStall(): void {
    if (this.outstanding === 0) return;
    this.report.worstStallMs = Math.max(this.report.worstStallMs, Date.now() - this.lastProgressMs);
  }

  private connecting: Promise<NbdClient> | null = null;

  private connected(): Promise<NbdClient> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= NbdClient.connect(this.options.uri).then(
      (c) => {
        this.client = c;
        this.connecting = null;
        this.report.reconnects++;
        return c;
      },
      (err: unknown) => {
        this.connecting = null;
        throw err;
      },
    );
    return this.connecting;
  }

  private dropClient(): void {
    this.client?.destroy();
    this.client = null;
  }

  /** The generation this block's bytes are, or null if they are no write of this block. */
  private generationIn(block: number, data: Buffer): number | null {
    if (data.readUInt32LE(0) !== MAGIC || data.readUInt32LE(4) !== block) return null;
    const generation = data.readUInt32LE(8);
    return blockContent(block, generation, this.blockBytes).equals(data) ? generation : null;
  }

  private random(): number {
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x >>> 0;
    return this.rng;
  }
}

/** The bytes the verifier writes as `generation` of `block`. */
export function blockContent(block: number, generation: number, blockBytes: number): Buffer {
  const buf = Buffer.allocUnsafe(blockBytes);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(block, 4);
  buf.writeUInt32LE(generation, 8);
  let x = (Math.imul(block + 1, 0x9e3779b1) ^ Math.imul(generation, 0x85ebca6b)) >>> 0 || 1;
  buf.writeUInt32LE(x, 12);
  for (let at = HEADER_BYTES; at < blockBytes; at += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, at);
  }
  return buf;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
